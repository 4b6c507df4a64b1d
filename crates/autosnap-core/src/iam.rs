//! The least-privilege IAM policy `autosnap iam-policy` prints, generated from
//! one table: which statement each feature needs. Creating and deleting are
//! separate statements, so a role made for `backup` cannot delete anything;
//! deletes are allowed only on resources tagged `autosnap:managed=true`
//! (`ec2:ResourceTag/autosnap:managed`, which DeleteSnapshot and
//! DeregisterImage support). Describe calls cannot be scoped to resources in
//! IAM, so they are the only statement on `*`; no action is a wildcard.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use serde_json::{json, Value};

use crate::tags;

/// A feature a role can be made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Feature {
    /// Create and copy snapshots (`snapshot create|copy`, policy `run` without prune).
    Backup,
    /// Volumes from snapshots, AMIs restored from S3.
    Restore,
    /// Delete autosnap's snapshots and AMIs (`prune`, `snapshot delete`).
    Prune,
    /// AMI backups: create, encrypt, register, store, metadata, safe deregistration.
    Ami,
    /// Archives through the EBS direct APIs into an S3 repository.
    Archive,
    /// Source accounts of copies into a backup account: share autosnap's snapshots with it and
    /// remove the share (not part of `all`).
    Share,
    /// The backup account's own role: copy shared snapshots in with its key, list and prune
    /// autosnap's copies there (not part of `all`: a role in another account).
    BackupAccount,
}

impl Feature {
    pub const ALL: [Feature; 5] = [
        Feature::Backup,
        Feature::Restore,
        Feature::Prune,
        Feature::Ami,
        Feature::Archive,
    ];

    /// Features asked for by name only (`all` leaves them out).
    pub const BY_NAME_ONLY: [Feature; 2] = [Feature::Share, Feature::BackupAccount];

    pub fn name(self) -> &'static str {
        match self {
            Feature::Backup => "backup",
            Feature::Restore => "restore",
            Feature::Prune => "prune",
            Feature::Ami => "ami",
            Feature::Archive => "archive",
            Feature::Share => "share",
            Feature::BackupAccount => "backup-account",
        }
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown feature '{0}': expected backup, restore, prune, ami, archive, share, \
     backup-account or all"
)]
pub struct UnknownFeature(pub String);

/// Parses one `--for` value; `all` expands to every feature.
pub fn parse_features(s: &str) -> Result<Vec<Feature>, UnknownFeature> {
    match s.trim().to_ascii_lowercase().as_str() {
        "all" => Ok(Feature::ALL.to_vec()),
        other => Feature::ALL
            .iter()
            .chain(&Feature::BY_NAME_ONLY)
            .copied()
            .find(|f| f.name() == other)
            .map(|f| vec![f])
            .ok_or_else(|| UnknownFeature(s.to_string())),
    }
}

impl FromStr for Feature {
    type Err = UnknownFeature;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Feature::ALL
            .iter()
            .chain(&Feature::BY_NAME_ONLY)
            .copied()
            .find(|f| f.name() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| UnknownFeature(s.to_string()))
    }
}

/// What to scope resources to. Empty lists use the documented defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyScope {
    /// S3 buckets for AMI metadata, stored AMIs and archive repositories.
    pub buckets: Vec<String>,
    /// KMS key ARNs used for encryption; default: any key, but only through EC2/EBS.
    pub kms_key_arns: Vec<String>,
}

/// The placeholder bucket name when none is given.
pub const BUCKET_PLACEHOLDER: &str = "BUCKET-NAME";

#[derive(Clone, Copy)]
enum Res {
    Any,
    Ec2(&'static [&'static str]),
    Buckets,
    BucketObjects,
    /// Lock objects of repositories in the buckets (`locks/` under any prefix).
    BucketLocks,
    KmsKeys,
    /// Recycle Bin retention rules.
    RbinRules,
}

#[derive(Clone, Copy)]
enum Cond {
    None,
    /// Tag on create: CreateTags only as part of these actions.
    CreateAction(&'static [&'static str]),
    /// Only on resources autosnap created.
    Managed,
    /// The CreateTags request itself marks the resource as autosnap's.
    RequestTagManaged,
    /// KMS keys used only through EC2 (and EBS direct for archives).
    ViaEc2,
    /// KMS keys used only through S3 (SSE-KMS objects: metadata documents, repositories on
    /// buckets encrypted with a KMS key).
    ViaS3,
    /// Only with an encryption context naming an autosnap repository: the key can unwrap
    /// repository keys and nothing else encrypted under it.
    RepositoryContext,
    /// Grants only for AWS resources (EBS).
    GrantForAwsResource,
    /// Only volumes a restore test made (they carry its run tag).
    RestoreTestVolume,
    /// CreateTags that set only the restore-test result tags.
    RestoreTestResultTags,
}

struct Rule {
    sid: &'static str,
    features: &'static [Feature],
    actions: &'static [&'static str],
    resource: Res,
    condition: Cond,
}

use Feature::{Ami, Archive, Backup, BackupAccount, Prune, Restore, Share};

/// The KMS encryption context key that names an archive repository: `GenerateDataKey` and
/// `Decrypt` of a repository's key carry `{"autosnap:repository": <repository id>}` (format
/// version 2, docs/repository-format.md).
pub const REPOSITORY_CONTEXT_KEY: &str = "autosnap:repository";

const SNAPSHOTS: &[&str] = &["snapshot/*"];
const IMAGES_AND_SNAPSHOTS: &[&str] = &["image/*", "snapshot/*"];

/// The table: every statement, and the features that need it.
const RULES: &[Rule] = &[
    Rule {
        sid: "AutosnapDescribe",
        features: &[Backup, Restore, Prune, Ami, Archive],
        actions: &[
            "ec2:DescribeImages",
            "ec2:DescribeInstances",
            // Every delete reads the snapshots' locks first (and deletes nothing without them).
            "ec2:DescribeLockedSnapshots",
            "ec2:DescribeSnapshotTierStatus",
            "ec2:DescribeSnapshots",
            "ec2:DescribeTags",
            "ec2:DescribeVolumes",
        ],
        resource: Res::Any,
        condition: Cond::None,
    },
    Rule {
        // Backup and prune plan AMI policies: which instances and templates use an AMI.
        sid: "AutosnapDescribeForAmis",
        features: &[Backup, Prune, Ami, Restore],
        actions: &[
            "ec2:DescribeLaunchTemplateVersions",
            "ec2:DescribeLaunchTemplates",
            "ec2:DescribeStoreImageTasks",
        ],
        resource: Res::Any,
        condition: Cond::None,
    },
    Rule {
        // Plans say whether a deletion goes to the Recycle Bin; `snapshot|ami list
        // --recycle-bin` lists it. Listing cannot be scoped to resources.
        sid: "AutosnapListRecycleBin",
        features: &[Backup, Restore, Prune, Ami, Archive],
        actions: &[
            "ec2:ListImagesInRecycleBin",
            "ec2:ListSnapshotsInRecycleBin",
            "rbin:ListRules",
        ],
        resource: Res::Any,
        condition: Cond::None,
    },
    Rule {
        // ListRules leaves out the tags that decide what a rule retains: one GetRule each.
        sid: "AutosnapReadRecycleBinRules",
        features: &[Backup, Restore, Prune, Ami, Archive],
        actions: &["rbin:GetRule"],
        resource: Res::RbinRules,
        condition: Cond::None,
    },
    Rule {
        // `snapshot recover` and `ami recover`.
        sid: "AutosnapRecoverFromRecycleBin",
        features: &[Restore],
        actions: &[
            "ec2:RestoreImageFromRecycleBin",
            "ec2:RestoreSnapshotFromRecycleBin",
        ],
        resource: Res::Ec2(IMAGES_AND_SNAPSHOTS),
        condition: Cond::None,
    },
    Rule {
        sid: "AutosnapCreateSnapshots",
        features: &[Backup],
        actions: &[
            "ec2:CopySnapshot",
            "ec2:CreateSnapshot",
            "ec2:CreateSnapshots",
        ],
        resource: Res::Ec2(&["snapshot/*", "volume/*", "instance/*"]),
        condition: Cond::None,
    },
    Rule {
        sid: "AutosnapTagSnapshotsOnCreate",
        features: &[Backup],
        actions: &["ec2:CreateTags"],
        resource: Res::Ec2(SNAPSHOTS),
        condition: Cond::CreateAction(&["CopySnapshot", "CreateSnapshot", "CreateSnapshots"]),
    },
    Rule {
        // CreateSnapshots tags a whole instance set alike; each snapshot then gets its own
        // volume's id and tags, only on snapshots already marked as autosnap's.
        sid: "AutosnapTagManagedSnapshots",
        features: &[Backup],
        actions: &["ec2:CreateTags"],
        resource: Res::Ec2(SNAPSHOTS),
        condition: Cond::Managed,
    },
    Rule {
        // Copies into a backup account: share autosnap's snapshots with it (and remove the
        // share), and the `autosnap:shared-with` tag that lets a later run find the share.
        sid: "AutosnapShareManagedSnapshots",
        features: &[Share],
        actions: &[
            "ec2:CreateTags",
            "ec2:DeleteTags",
            "ec2:ModifySnapshotAttribute",
        ],
        resource: Res::Ec2(SNAPSHOTS),
        condition: Cond::Managed,
    },
    Rule {
        sid: "AutosnapBackupAccountDescribe",
        features: &[BackupAccount],
        actions: &["ec2:DescribeSnapshots"],
        resource: Res::Any,
        condition: Cond::None,
    },
    Rule {
        // The source snapshot (another account's, shared) and the new copy.
        sid: "AutosnapBackupAccountCopy",
        features: &[BackupAccount],
        actions: &["ec2:CopySnapshot"],
        resource: Res::Ec2(SNAPSHOTS),
        condition: Cond::None,
    },
    Rule {
        sid: "AutosnapBackupAccountTagOnCopy",
        features: &[BackupAccount],
        actions: &["ec2:CreateTags"],
        resource: Res::Ec2(SNAPSHOTS),
        condition: Cond::CreateAction(&["CopySnapshot"]),
    },
    Rule {
        // Retention of the copies: only snapshots autosnap made there.
        sid: "AutosnapBackupAccountPrune",
        features: &[BackupAccount],
        actions: &["ec2:DeleteSnapshot"],
        resource: Res::Ec2(SNAPSHOTS),
        condition: Cond::Managed,
    },
    Rule {
        // Backup: AMI policies (kind = "ami") create, encrypt and copy AMIs.
        sid: "AutosnapCreateImages",
        features: &[Backup, Ami],
        actions: &[
            "ec2:CopyImage",
            "ec2:CreateImage",
            "ec2:CreateStoreImageTask",
            "ec2:RegisterImage",
        ],
        resource: Res::Ec2(&["image/*", "snapshot/*", "instance/*", "volume/*"]),
        condition: Cond::None,
    },
    Rule {
        sid: "AutosnapTagImagesOnCreate",
        features: &[Backup, Ami],
        actions: &["ec2:CreateTags"],
        resource: Res::Ec2(IMAGES_AND_SNAPSHOTS),
        condition: Cond::CreateAction(&["CopyImage", "CreateImage", "RegisterImage"]),
    },
    Rule {
        sid: "AutosnapRestoreVolumes",
        features: &[Restore],
        actions: &["ec2:CreateVolume"],
        resource: Res::Ec2(&["volume/*", "snapshot/*"]),
        condition: Cond::None,
    },
    Rule {
        sid: "AutosnapTagVolumesOnCreate",
        features: &[Restore],
        actions: &["ec2:CreateTags"],
        resource: Res::Ec2(&["volume/*"]),
        condition: Cond::CreateAction(&["CreateVolume"]),
    },
    Rule {
        // `test-restore` and `restore_test`: the test volume goes to the source volume's zone,
        // else the region's first.
        sid: "AutosnapRestoreTestZones",
        features: &[Restore],
        actions: &["ec2:DescribeAvailabilityZones"],
        resource: Res::Any,
        condition: Cond::None,
    },
    Rule {
        // A restore test deletes its own volumes, and those a dead test left: only volumes
        // carrying a restore test's run tag.
        sid: "AutosnapDeleteRestoreTestVolumes",
        features: &[Restore],
        actions: &["ec2:DeleteVolume"],
        resource: Res::Ec2(&["volume/*"]),
        condition: Cond::RestoreTestVolume,
    },
    Rule {
        // A restore test records its result on the backup: those two tags and no others.
        sid: "AutosnapTagRestoreTestResults",
        features: &[Restore],
        actions: &["ec2:CreateTags"],
        resource: Res::Ec2(SNAPSHOTS),
        condition: Cond::RestoreTestResultTags,
    },
    Rule {
        sid: "AutosnapRestoreImages",
        features: &[Restore],
        actions: &["ec2:CreateRestoreImageTask", "ec2:RegisterImage"],
        resource: Res::Ec2(IMAGES_AND_SNAPSHOTS),
        condition: Cond::None,
    },
    Rule {
        // Restored AMIs get their original tags back after the task, and only
        // in a request that also marks them as autosnap's.
        sid: "AutosnapRetagRestoredImages",
        features: &[Restore],
        actions: &["ec2:CreateTags"],
        resource: Res::Ec2(IMAGES_AND_SNAPSHOTS),
        condition: Cond::RequestTagManaged,
    },
    Rule {
        // Locking protects a backup, so it belongs with creating it; only autosnap's.
        sid: "AutosnapLockManagedSnapshots",
        features: &[Backup],
        actions: &["ec2:LockSnapshot"],
        resource: Res::Ec2(SNAPSHOTS),
        condition: Cond::Managed,
    },
    Rule {
        // Moving a backup to the archive tier is part of keeping it (`archive_after`).
        sid: "AutosnapArchiveManagedSnapshots",
        features: &[Backup],
        actions: &["ec2:ModifySnapshotTier"],
        resource: Res::Ec2(SNAPSHOTS),
        condition: Cond::Managed,
    },
    Rule {
        // Bringing an archived snapshot back is what a restore needs first.
        sid: "AutosnapRestoreArchivedSnapshots",
        features: &[Restore],
        actions: &["ec2:RestoreSnapshotTier"],
        resource: Res::Ec2(SNAPSHOTS),
        condition: Cond::None,
    },
    Rule {
        // Removing a lock makes a snapshot deletable: it goes with deleting, never backup.
        sid: "AutosnapUnlockManagedSnapshots",
        features: &[Prune],
        actions: &["ec2:UnlockSnapshot"],
        resource: Res::Ec2(SNAPSHOTS),
        condition: Cond::Managed,
    },
    Rule {
        sid: "AutosnapDeleteManagedSnapshots",
        features: &[Prune, Ami],
        actions: &["ec2:DeleteSnapshot"],
        resource: Res::Ec2(SNAPSHOTS),
        condition: Cond::Managed,
    },
    Rule {
        sid: "AutosnapDeregisterManagedImages",
        features: &[Prune, Ami],
        actions: &["ec2:DeregisterImage"],
        resource: Res::Ec2(&["image/*"]),
        condition: Cond::Managed,
    },
    Rule {
        // The S3 image tasks read and write snapshots through the EBS direct APIs; restore
        // tests read every block.
        sid: "AutosnapEbsDirectRead",
        features: &[Ami, Archive, Restore],
        actions: &[
            "ebs:GetSnapshotBlock",
            "ebs:ListChangedBlocks",
            "ebs:ListSnapshotBlocks",
        ],
        resource: Res::Ec2(SNAPSHOTS),
        condition: Cond::None,
    },
    Rule {
        sid: "AutosnapEbsDirectWrite",
        features: &[Restore, Archive],
        actions: &[
            "ebs:CompleteSnapshot",
            "ebs:PutSnapshotBlock",
            "ebs:StartSnapshot",
        ],
        resource: Res::Ec2(SNAPSHOTS),
        condition: Cond::None,
    },
    Rule {
        sid: "AutosnapBucketList",
        features: &[Ami, Restore, Archive],
        actions: &["s3:GetBucketLocation", "s3:ListBucket"],
        resource: Res::Buckets,
        condition: Cond::None,
    },
    Rule {
        sid: "AutosnapBucketRead",
        features: &[Ami, Restore, Archive],
        actions: &["s3:GetObject"],
        resource: Res::BucketObjects,
        condition: Cond::None,
    },
    Rule {
        sid: "AutosnapBucketWrite",
        features: &[Ami, Archive],
        actions: &[
            "s3:AbortMultipartUpload",
            "s3:PutObject",
            "s3:PutObjectTagging",
        ],
        resource: Res::BucketObjects,
        condition: Cond::None,
    },
    Rule {
        // A restore holds a shared repository lock: it writes and removes its lock object,
        // and nothing else, in the bucket.
        sid: "AutosnapRepositoryLocks",
        features: &[Restore],
        actions: &["s3:DeleteObject", "s3:PutObject"],
        resource: Res::BucketLocks,
        condition: Cond::None,
    },
    Rule {
        // CreateStoreImageTask needs it (AWS's documented list); archives forget and gc.
        sid: "AutosnapBucketDelete",
        features: &[Ami, Archive],
        actions: &["s3:DeleteObject"],
        resource: Res::BucketObjects,
        condition: Cond::None,
    },
    Rule {
        sid: "AutosnapKmsUseThroughEc2",
        features: &[Backup, Restore, Ami, Archive, BackupAccount],
        actions: &[
            "kms:Decrypt",
            "kms:DescribeKey",
            "kms:Encrypt",
            "kms:GenerateDataKeyWithoutPlaintext",
            "kms:ReEncryptFrom",
            "kms:ReEncryptTo",
        ],
        resource: Res::KmsKeys,
        condition: Cond::ViaEc2,
    },
    Rule {
        sid: "AutosnapKmsGrantsForEbs",
        features: &[Backup, Restore, Ami, Archive, BackupAccount],
        actions: &["kms:CreateGrant"],
        resource: Res::KmsKeys,
        condition: Cond::GrantForAwsResource,
    },
    Rule {
        // SSE-KMS: metadata documents written with --kms-key, and objects of buckets whose
        // default encryption is a KMS key.
        sid: "AutosnapKmsUseThroughS3",
        features: &[Ami, Restore, Archive],
        actions: &["kms:Decrypt", "kms:GenerateDataKey"],
        resource: Res::KmsKeys,
        condition: Cond::ViaS3,
    },
    Rule {
        // `repo init --kms-key` makes the repository key (GenerateDataKey) and every command
        // that opens the repository unwraps it (Decrypt), directly, not through a service:
        // allowed only with the repository encryption context, so the role cannot decrypt
        // anything else encrypted under the key.
        sid: "AutosnapKmsRepositoryKeys",
        features: &[Restore, Archive],
        actions: &["kms:Decrypt", "kms:GenerateDataKey"],
        resource: Res::KmsKeys,
        condition: Cond::RepositoryContext,
    },
    Rule {
        // autosnap checks a key before encrypting with it (a bad key would
        // otherwise only surface as a failed copy) and before making a repository key.
        sid: "AutosnapKmsCheckKeys",
        features: &[Ami, Restore, Archive],
        actions: &["kms:DescribeKey"],
        resource: Res::KmsKeys,
        condition: Cond::None,
    },
];

fn resource_value(r: Res, scope: &PolicyScope) -> Value {
    let buckets: Vec<String> = if scope.buckets.is_empty() {
        vec![BUCKET_PLACEHOLDER.to_string()]
    } else {
        scope.buckets.clone()
    };
    match r {
        Res::Any => json!("*"),
        Res::Ec2(kinds) => {
            let arns: Vec<String> = kinds
                .iter()
                .map(|k| {
                    if k.starts_with("image/") || k.starts_with("snapshot/") {
                        // Images and snapshots have no account in their ARN.
                        format!("arn:aws:ec2:*::{k}")
                    } else {
                        format!("arn:aws:ec2:*:*:{k}")
                    }
                })
                .collect();
            json!(arns)
        }
        Res::Buckets => json!(buckets
            .iter()
            .map(|b| format!("arn:aws:s3:::{b}"))
            .collect::<Vec<_>>()),
        Res::BucketObjects => json!(buckets
            .iter()
            .map(|b| format!("arn:aws:s3:::{b}/*"))
            .collect::<Vec<_>>()),
        Res::BucketLocks => json!(buckets
            .iter()
            .map(|b| format!("arn:aws:s3:::{b}/*locks/*"))
            .collect::<Vec<_>>()),
        Res::RbinRules => json!("arn:aws:rbin:*:*:rule/*"),
        Res::KmsKeys => {
            if scope.kms_key_arns.is_empty() {
                json!("arn:aws:kms:*:*:key/*")
            } else {
                json!(scope.kms_key_arns)
            }
        }
    }
}

fn condition_value(c: Cond) -> Option<Value> {
    match c {
        Cond::None => None,
        Cond::CreateAction(actions) => Some(json!({
            "StringEquals": { "ec2:CreateAction": actions }
        })),
        Cond::Managed => Some(json!({
            "StringEquals": { format!("ec2:ResourceTag/{}", tags::MANAGED): tags::MANAGED_VALUE }
        })),
        Cond::RequestTagManaged => Some(json!({
            "StringEquals": { format!("aws:RequestTag/{}", tags::MANAGED): tags::MANAGED_VALUE }
        })),
        Cond::ViaEc2 => Some(json!({
            "StringLike": { "kms:ViaService": ["ec2.*.amazonaws.com", "ebs.*.amazonaws.com"] }
        })),
        Cond::ViaS3 => Some(json!({
            "StringLike": { "kms:ViaService": "s3.*.amazonaws.com" }
        })),
        Cond::RepositoryContext => Some(json!({
            "StringLike": { format!("kms:EncryptionContext:{REPOSITORY_CONTEXT_KEY}"): "*" }
        })),
        Cond::GrantForAwsResource => Some(json!({
            "Bool": { "kms:GrantIsForAWSResource": "true" }
        })),
        Cond::RestoreTestVolume => Some(json!({
            "Null": { format!("ec2:ResourceTag/{}", crate::restore_test::RUN_TAG): "false" }
        })),
        Cond::RestoreTestResultTags => Some(json!({
            "ForAllValues:StringEquals": {
                "aws:TagKeys": [crate::restore_test::RESULT_TAG, crate::restore_test::PASSED_TAG]
            }
        })),
    }
}

/// An IAM policy document; fields serialize in the order IAM documents use.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyDocument {
    #[serde(rename = "Version")]
    pub version: &'static str,
    #[serde(rename = "Statement")]
    pub statements: Vec<PolicyStatement>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyStatement {
    #[serde(rename = "Sid")]
    pub sid: &'static str,
    #[serde(rename = "Effect")]
    pub effect: &'static str,
    #[serde(rename = "Action")]
    pub actions: Vec<&'static str>,
    #[serde(rename = "Resource")]
    pub resource: Value,
    #[serde(rename = "Condition", skip_serializing_if = "Option::is_none")]
    pub condition: Option<Value>,
}

impl PolicyDocument {
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("policy serializes")
    }
}

/// The policy document for the given features (duplicates ignored).
pub fn iam_policy(features: &[Feature], scope: &PolicyScope) -> PolicyDocument {
    let wanted: BTreeSet<Feature> = features.iter().copied().collect();
    let statements = RULES
        .iter()
        .filter(|rule| rule.features.iter().any(|f| wanted.contains(f)))
        .map(|rule| PolicyStatement {
            sid: rule.sid,
            effect: "Allow",
            actions: rule
                .actions
                .iter()
                .copied()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            resource: resource_value(rule.resource, scope),
            condition: condition_value(rule.condition),
        })
        .collect();
    PolicyDocument {
        version: "2012-10-17",
        statements,
    }
}

/// Every action a policy allows, for summaries and tests.
pub fn policy_actions(policy: &Value) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for s in policy["Statement"].as_array().into_iter().flatten() {
        let sid = s["Sid"].as_str().unwrap_or_default().to_string();
        for a in s["Action"].as_array().into_iter().flatten() {
            out.entry(a.as_str().unwrap_or_default().to_string())
                .or_default()
                .push(sid.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actions(features: &[Feature]) -> BTreeMap<String, Vec<String>> {
        policy_actions(&iam_policy(features, &PolicyScope::default()).to_value())
    }

    #[test]
    fn valid_policy_json_for_every_feature() {
        for f in Feature::ALL {
            let p = iam_policy(&[f], &PolicyScope::default());
            let text = serde_json::to_string(&p).unwrap();
            assert!(text.starts_with("{\"Version\":\"2012-10-17\",\"Statement\":[{\"Sid\""));
            let back: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(back["Version"], "2012-10-17");
            let stmts = back["Statement"].as_array().unwrap();
            assert!(!stmts.is_empty(), "{f}");
            let mut sids = BTreeSet::new();
            for s in stmts {
                assert_eq!(s["Effect"], "Allow");
                assert!(
                    sids.insert(s["Sid"].as_str().unwrap().to_string()),
                    "unique Sid"
                );
                assert!(!s["Action"].as_array().unwrap().is_empty());
                assert!(s.get("Resource").is_some());
            }
        }
    }

    #[test]
    fn no_wildcard_actions_and_star_resource_only_for_describes() {
        let p = iam_policy(&Feature::ALL, &PolicyScope::default()).to_value();
        for s in p["Statement"].as_array().unwrap() {
            for a in s["Action"].as_array().unwrap() {
                let a = a.as_str().unwrap();
                assert!(!a.contains('*'), "wildcard action {a}");
                assert!(a.contains(':'), "{a}");
            }
            if s["Resource"] == "*" {
                for a in s["Action"].as_array().unwrap() {
                    let a = a.as_str().unwrap();
                    // Describes and the Recycle Bin's lists cannot be scoped to resources.
                    assert!(a.contains(":Describe") || a.contains(":List"), "{a} on *");
                }
            }
        }
    }

    #[test]
    fn recycle_bin_reads_for_every_feature_and_recover_with_restore() {
        for f in Feature::ALL {
            let a = actions(&[f]);
            for read in [
                "rbin:ListRules",
                "rbin:GetRule",
                "ec2:ListSnapshotsInRecycleBin",
            ] {
                assert!(a.contains_key(read), "{f} lacks {read}");
            }
        }
        let restore = actions(&[Feature::Restore]);
        assert!(restore.contains_key("ec2:RestoreSnapshotFromRecycleBin"));
        assert!(restore.contains_key("ec2:RestoreImageFromRecycleBin"));
        assert!(!actions(&[Feature::Prune]).contains_key("ec2:RestoreSnapshotFromRecycleBin"));
        let p = iam_policy(&[Feature::Prune], &PolicyScope::default()).to_value();
        let get = p["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| {
                s["Action"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|a| a == "rbin:GetRule")
            })
            .unwrap();
        assert_eq!(get["Resource"], "arn:aws:rbin:*:*:rule/*");
    }

    #[test]
    fn backup_cannot_delete() {
        let a = actions(&[Feature::Backup]);
        assert!(a.contains_key("ec2:CreateSnapshot"));
        assert!(a.contains_key("ec2:CopySnapshot"));
        for action in a.keys() {
            let verb = action.split(':').nth(1).unwrap();
            assert!(
                !verb.starts_with("Delete") && !verb.starts_with("Deregister"),
                "backup allows {action}"
            );
        }
    }

    #[test]
    fn deletes_are_conditioned_on_the_managed_tag() {
        let p = iam_policy(&[Feature::Prune, Feature::Ami], &PolicyScope::default()).to_value();
        for s in p["Statement"].as_array().unwrap() {
            let acts: Vec<&str> = s["Action"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect();
            if acts
                .iter()
                .any(|a| a.starts_with("ec2:Delete") || a.starts_with("ec2:Deregister"))
            {
                assert_eq!(
                    s["Condition"]["StringEquals"]["ec2:ResourceTag/autosnap:managed"],
                    "true"
                );
            }
        }
    }

    #[test]
    fn archive_tier_actions_go_with_backup_and_restore() {
        assert!(actions(&[Feature::Backup]).contains_key("ec2:ModifySnapshotTier"));
        assert!(!actions(&[Feature::Prune]).contains_key("ec2:ModifySnapshotTier"));
        assert!(actions(&[Feature::Restore]).contains_key("ec2:RestoreSnapshotTier"));
        for f in Feature::ALL {
            assert!(actions(&[f]).contains_key("ec2:DescribeSnapshotTierStatus"));
        }
    }

    #[test]
    fn snapshot_lock_actions_are_split_between_backup_and_prune() {
        let backup = actions(&[Feature::Backup]);
        let prune = actions(&[Feature::Prune]);
        assert!(backup.contains_key("ec2:LockSnapshot"));
        assert!(
            !backup.contains_key("ec2:UnlockSnapshot"),
            "backup cannot unprotect"
        );
        assert!(prune.contains_key("ec2:UnlockSnapshot"));
        for f in Feature::ALL {
            assert!(
                actions(&[f]).contains_key("ec2:DescribeLockedSnapshots"),
                "{f}: deletes and listings read locks"
            );
        }
    }

    #[test]
    fn features_get_what_they_need() {
        let ami = actions(&[Feature::Ami]);
        for need in [
            "ec2:CreateImage",
            "ec2:CopyImage",
            "ec2:RegisterImage",
            "ec2:DeregisterImage",
            "ec2:CreateStoreImageTask",
            "ec2:DescribeStoreImageTasks",
            "ec2:DescribeLaunchTemplateVersions",
            "s3:PutObject",
            "s3:GetObject",
            "s3:ListBucket",
            "ebs:GetSnapshotBlock",
            "kms:CreateGrant",
            "kms:DescribeKey",
        ] {
            assert!(ami.contains_key(need), "ami lacks {need}");
        }
        let restore = actions(&[Feature::Restore]);
        for need in [
            "ec2:CreateRestoreImageTask",
            "ec2:CreateVolume",
            "ebs:PutSnapshotBlock",
        ] {
            assert!(restore.contains_key(need), "restore lacks {need}");
        }
        assert!(!restore.contains_key("ec2:DeleteSnapshot"));
        // A restore writes only its repository lock.
        let p = iam_policy(&[Feature::Restore], &PolicyScope::default()).to_value();
        for s in p["Statement"].as_array().unwrap() {
            let writes = s["Action"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a == "s3:PutObject" || a == "s3:DeleteObject");
            if writes {
                assert_eq!(s["Resource"], json!(["arn:aws:s3:::BUCKET-NAME/*locks/*"]));
            }
        }
        let archive = actions(&[Feature::Archive]);
        for need in [
            "ebs:StartSnapshot",
            "ebs:GetSnapshotBlock",
            "s3:DeleteObject",
        ] {
            assert!(archive.contains_key(need), "archive lacks {need}");
        }
        assert!(!archive.contains_key("ec2:CreateImage"));
    }

    #[test]
    fn s3_is_scoped_to_the_buckets() {
        let scope = PolicyScope {
            buckets: vec!["amis".into()],
            kms_key_arns: vec!["arn:aws:kms:us-east-1:123456789012:key/k".into()],
        };
        let p = iam_policy(&[Feature::Ami], &scope);
        let text = p.to_value().to_string();
        assert!(text.contains("arn:aws:s3:::amis/*"));
        assert!(text.contains("\"arn:aws:s3:::amis\""));
        assert!(!text.contains(BUCKET_PLACEHOLDER));
        assert!(text.contains("key/k"));
        assert!(!text.contains("arn:aws:kms:*:*:key/*"));
        let default = iam_policy(&[Feature::Ami], &PolicyScope::default())
            .to_value()
            .to_string();
        assert!(default.contains(BUCKET_PLACEHOLDER));
        // Backup needs no bucket at all.
        let backup = iam_policy(&[Feature::Backup], &PolicyScope::default())
            .to_value()
            .to_string();
        assert!(!backup.contains("arn:aws:s3"));
    }

    #[test]
    fn kms_repository_keys_only_with_the_repository_context() {
        for features in [&[Feature::Archive][..], &[Feature::Restore][..]] {
            let p = iam_policy(features, &PolicyScope::default()).to_value();
            let statements = p["Statement"].as_array().unwrap();
            let direct: Vec<&Value> = statements
                .iter()
                .filter(|s| s["Sid"] == "AutosnapKmsRepositoryKeys")
                .collect();
            assert_eq!(direct.len(), 1, "{features:?}");
            assert_eq!(
                direct[0]["Action"],
                json!(["kms:Decrypt", "kms:GenerateDataKey"])
            );
            assert_eq!(
                direct[0]["Condition"]["StringLike"]["kms:EncryptionContext:autosnap:repository"],
                "*"
            );
            // Everywhere else Decrypt and GenerateDataKey go through a service.
            for s in statements
                .iter()
                .filter(|s| s["Sid"] != "AutosnapKmsRepositoryKeys")
            {
                let acts = s["Action"].as_array().unwrap();
                if acts
                    .iter()
                    .any(|a| a == "kms:Decrypt" || a == "kms:GenerateDataKey")
                {
                    assert!(
                        s["Condition"]["StringLike"]["kms:ViaService"].is_string()
                            || s["Condition"]["StringLike"]["kms:ViaService"].is_array(),
                        "{s}"
                    );
                }
            }
            let a = policy_actions(&p);
            assert!(a.contains_key("kms:DescribeKey"), "{features:?}");
        }
        // Backup never touches a repository key.
        let backup = actions(&[Feature::Backup]);
        assert!(!backup.contains_key("kms:GenerateDataKey"));
    }

    #[test]
    fn restore_tests_delete_only_their_volumes_and_tag_only_results() {
        let restore = actions(&[Feature::Restore]);
        assert!(restore.contains_key("ec2:DeleteVolume"));
        assert!(restore.contains_key("ebs:GetSnapshotBlock"));
        assert!(restore.contains_key("ec2:DescribeAvailabilityZones"));
        assert!(!actions(&[Feature::Backup]).contains_key("ec2:DeleteVolume"));
        let p = iam_policy(&[Feature::Restore], &PolicyScope::default()).to_value();
        let statement = |sid: &str| {
            p["Statement"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["Sid"] == sid)
                .unwrap()
                .clone()
        };
        let delete = statement("AutosnapDeleteRestoreTestVolumes");
        assert_eq!(
            delete["Condition"]["Null"]["ec2:ResourceTag/autosnap:restore-test-run"],
            "false"
        );
        let tag = statement("AutosnapTagRestoreTestResults");
        assert_eq!(
            tag["Condition"]["ForAllValues:StringEquals"]["aws:TagKeys"],
            json!(["autosnap:restore-test", "autosnap:restore-test-passed"])
        );
    }

    #[test]
    fn feature_parsing() {
        assert_eq!(parse_features("all").unwrap().len(), 5);
        assert_eq!(parse_features("AMI").unwrap(), vec![Feature::Ami]);
        assert!(parse_features("backups").is_err());
    }

    #[test]
    fn backup_accounts_have_features_of_their_own_outside_all() {
        let all = actions(&Feature::ALL);
        assert!(!all.contains_key("ec2:ModifySnapshotAttribute"));
        let share = actions(&[Feature::Share]);
        assert_eq!(
            share.keys().map(String::as_str).collect::<Vec<_>>(),
            [
                "ec2:CreateTags",
                "ec2:DeleteTags",
                "ec2:ModifySnapshotAttribute"
            ]
        );
        let p = iam_policy(&[Feature::Share], &PolicyScope::default()).to_value();
        assert_eq!(
            p["Statement"][0]["Condition"]["StringEquals"]["ec2:ResourceTag/autosnap:managed"],
            "true"
        );
        let backup = actions(&[Feature::BackupAccount]);
        for a in [
            "ec2:CopySnapshot",
            "ec2:CreateTags",
            "ec2:DeleteSnapshot",
            "ec2:DescribeSnapshots",
            "kms:CreateGrant",
            "kms:ReEncryptTo",
        ] {
            assert!(backup.contains_key(a), "{a}");
        }
        assert!(!backup.contains_key("ec2:CreateSnapshot"));
        assert!(!backup.contains_key("ec2:ModifySnapshotAttribute"));
        assert_eq!(
            parse_features("backup-account").unwrap(),
            [Feature::BackupAccount]
        );
        assert_eq!(parse_features("all").unwrap(), Feature::ALL.to_vec());
    }
}

//! AMI backups, the pure part: the description of an AMI the AWS layer fills in,
//! the metadata document kept beside an AMI in S3 (schema in docs/ami-metadata.md),
//! default names, and the plan for deregistering AMIs safely. No AWS, no clock:
//! times come in as parameters.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::tags::{self, Tags};

/// Version of the metadata document this code writes; it reads this one and older.
pub const METADATA_SCHEMA_VERSION: u32 = 1;
/// Folder under the configured prefix where metadata documents live.
pub const METADATA_FOLDER: &str = "ami-metadata";
/// On a restored AMI and its snapshots: the AMI it was restored from.
pub use crate::tags::RESTORED_FROM;

// ---- what EC2 says about an AMI ---------------------------------------------

/// One block device mapping of an AMI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageBlockDevice {
    pub device_name: String,
    pub snapshot_id: Option<String>,
    pub volume_size_gib: Option<i32>,
    pub volume_type: Option<String>,
    pub iops: Option<i32>,
    pub throughput: Option<i32>,
    pub delete_on_termination: Option<bool>,
    pub encrypted: Option<bool>,
    pub kms_key_id: Option<String>,
    /// `ephemeralN` for an instance store volume (no snapshot).
    pub virtual_name: Option<String>,
}

/// An AMI as EC2 describes it: everything autosnap shows, plans with or stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageDetails {
    pub image_id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    /// `pending`, `available`, `failed`, `invalid`, `deregistered`, `disabled`, `error`, `transient`.
    pub state: String,
    /// Why the image is in its state (set on failures).
    pub state_reason: Option<String>,
    /// As EC2 reports it (ISO 8601).
    pub creation_date: Option<String>,
    pub owner_id: Option<String>,
    /// `windows`, or none for Linux/UNIX.
    pub platform: Option<String>,
    pub platform_details: Option<String>,
    pub architecture: Option<String>,
    pub virtualization_type: Option<String>,
    pub ena_support: Option<bool>,
    pub boot_mode: Option<String>,
    pub root_device_name: Option<String>,
    pub root_device_type: Option<String>,
    pub source_instance_id: Option<String>,
    pub source_image_id: Option<String>,
    pub block_device_mappings: Vec<ImageBlockDevice>,
    pub tags: Tags,
}

impl ImageDetails {
    /// The snapshots behind the AMI's mappings, in mapping order.
    pub fn snapshot_ids(&self) -> Vec<String> {
        let mut seen = BTreeSet::new();
        self.block_device_mappings
            .iter()
            .filter_map(|m| m.snapshot_id.clone())
            .filter(|s| seen.insert(s.clone()))
            .collect()
    }

    /// Whether autosnap created it (carries `autosnap:managed=true`).
    pub fn is_managed(&self) -> bool {
        tags::is_managed(&self.tags)
    }

    /// True when the AMI has EBS snapshots and every one is encrypted.
    pub fn is_encrypted(&self) -> bool {
        let ebs: Vec<_> = self
            .block_device_mappings
            .iter()
            .filter(|m| m.snapshot_id.is_some())
            .collect();
        !ebs.is_empty() && ebs.iter().all(|m| m.encrypted == Some(true))
    }

    /// The AMI's snapshots that are not encrypted.
    pub fn unencrypted_snapshots(&self) -> Vec<String> {
        self.block_device_mappings
            .iter()
            .filter(|m| m.encrypted != Some(true))
            .filter_map(|m| m.snapshot_id.clone())
            .collect()
    }

    /// `ami-… (name)` for messages.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => format!("{} ({n})", self.image_id),
            None => self.image_id.clone(),
        }
    }
}

/// One row of `ami list` (its JSON form is documented in docs/json-output.md).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AmiSummary {
    pub image_id: String,
    pub name: Option<String>,
    pub state: String,
    pub creation_date: Option<String>,
    pub architecture: Option<String>,
    pub snapshot_ids: Vec<String>,
    pub encrypted: bool,
    pub tags: Tags,
    pub managed: bool,
}

impl From<&ImageDetails> for AmiSummary {
    fn from(i: &ImageDetails) -> AmiSummary {
        AmiSummary {
            image_id: i.image_id.clone(),
            name: i.name.clone(),
            state: i.state.clone(),
            creation_date: i.creation_date.clone(),
            architecture: i.architecture.clone(),
            snapshot_ids: i.snapshot_ids(),
            encrypted: i.is_encrypted(),
            tags: i.tags.clone(),
            managed: i.is_managed(),
        }
    }
}

// ---- the metadata document ----------------------------------------------------

/// The instance an AMI was made from, as it was when the metadata was collected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInstance {
    pub instance_id: String,
    pub instance_type: Option<String>,
    pub availability_zone: Option<String>,
    pub vpc_id: Option<String>,
    pub subnet_id: Option<String>,
    #[serde(default)]
    pub security_groups: Vec<SecurityGroupRef>,
    /// The ARN of the instance profile.
    pub iam_instance_profile: Option<String>,
    pub key_name: Option<String>,
    pub private_ip_address: Option<String>,
    #[serde(default)]
    pub tags: Tags,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityGroupRef {
    pub group_id: String,
    pub group_name: Option<String>,
}

/// One block device of the AMI, with its snapshot's encryption and tags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataBlockDevice {
    pub device_name: String,
    pub snapshot_id: Option<String>,
    pub volume_size_gib: Option<i32>,
    pub volume_type: Option<String>,
    pub iops: Option<i32>,
    pub throughput: Option<i32>,
    pub delete_on_termination: Option<bool>,
    /// Whether the snapshot is encrypted (false for instance store devices).
    pub encrypted: bool,
    /// The KMS key of an encrypted snapshot (ARN as EC2 reports it).
    pub kms_key_id: Option<String>,
    pub virtual_name: Option<String>,
    /// The snapshot's own tags (re-applied on restore).
    #[serde(default)]
    pub snapshot_tags: Tags,
}

/// Where `ami store` put the AMI's disk image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredImage {
    pub bucket: String,
    pub object_key: String,
    pub stored_at: DateTime<Utc>,
}

/// The metadata document: everything needed to understand, and restore, an AMI
/// without EC2 remembering anything about it. Field names are a stored format:
/// change them only with a new `schema_version` (see docs/ami-metadata.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmiMetadata {
    pub schema_version: u32,
    /// What wrote it, e.g. `autosnap 0.1.0`.
    pub generator: String,
    pub collected_at: DateTime<Utc>,
    pub account_id: String,
    pub region: String,
    pub image_id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub creation_date: Option<String>,
    pub state: String,
    pub platform: Option<String>,
    pub platform_details: Option<String>,
    pub architecture: Option<String>,
    pub virtualization_type: Option<String>,
    pub ena_support: Option<bool>,
    pub boot_mode: Option<String>,
    pub root_device_name: Option<String>,
    pub root_device_type: Option<String>,
    /// True when every EBS snapshot of the AMI is encrypted.
    pub encrypted: bool,
    #[serde(default)]
    pub tags: Tags,
    pub source_instance: Option<SourceInstance>,
    pub block_device_mappings: Vec<MetadataBlockDevice>,
    /// Set once the AMI has been stored with `ami store`.
    #[serde(default)]
    pub stored_image: Option<StoredImage>,
}

/// Facts about one snapshot the metadata needs beyond the AMI's mapping.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotFacts {
    pub encrypted: bool,
    pub kms_key_id: Option<String>,
    pub tags: Tags,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("not an autosnap AMI metadata document: {0}")]
    Malformed(String),
    #[error("AMI metadata schema_version {found} is newer than this autosnap understands ({supported}): upgrade autosnap")]
    TooNew { found: u32, supported: u32 },
    #[error("AMI metadata for {image_id} has no stored image: store the AMI first with `autosnap ami store {image_id} --bucket B`")]
    NotStored { image_id: String },
}

impl AmiMetadata {
    /// Builds the document from what EC2 says about the AMI, its snapshots and
    /// (when known) the instance it was made from.
    pub fn build(
        image: &ImageDetails,
        snapshots: &BTreeMap<String, SnapshotFacts>,
        source_instance: Option<SourceInstance>,
        account_id: &str,
        region: &str,
        generator: &str,
        collected_at: DateTime<Utc>,
    ) -> AmiMetadata {
        let block_device_mappings = image
            .block_device_mappings
            .iter()
            .map(|m| {
                let facts = m.snapshot_id.as_ref().and_then(|s| snapshots.get(s));
                MetadataBlockDevice {
                    device_name: m.device_name.clone(),
                    snapshot_id: m.snapshot_id.clone(),
                    volume_size_gib: m.volume_size_gib,
                    volume_type: m.volume_type.clone(),
                    iops: m.iops,
                    throughput: m.throughput,
                    delete_on_termination: m.delete_on_termination,
                    encrypted: facts.map(|f| f.encrypted).or(m.encrypted).unwrap_or(false),
                    kms_key_id: facts
                        .and_then(|f| f.kms_key_id.clone())
                        .or_else(|| m.kms_key_id.clone()),
                    virtual_name: m.virtual_name.clone(),
                    snapshot_tags: facts.map(|f| f.tags.clone()).unwrap_or_default(),
                }
            })
            .collect::<Vec<_>>();
        let ebs: Vec<_> = block_device_mappings
            .iter()
            .filter(|m| m.snapshot_id.is_some())
            .collect();
        let encrypted = !ebs.is_empty() && ebs.iter().all(|m| m.encrypted);
        AmiMetadata {
            schema_version: METADATA_SCHEMA_VERSION,
            generator: generator.to_string(),
            collected_at,
            account_id: account_id.to_string(),
            region: region.to_string(),
            image_id: image.image_id.clone(),
            name: image.name.clone(),
            description: image.description.clone(),
            creation_date: image.creation_date.clone(),
            state: image.state.clone(),
            platform: image.platform.clone(),
            platform_details: image.platform_details.clone(),
            architecture: image.architecture.clone(),
            virtualization_type: image.virtualization_type.clone(),
            ena_support: image.ena_support,
            boot_mode: image.boot_mode.clone(),
            root_device_name: image.root_device_name.clone(),
            root_device_type: image.root_device_type.clone(),
            encrypted,
            tags: image.tags.clone(),
            source_instance,
            block_device_mappings,
            stored_image: None,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("metadata serializes")
    }

    /// Reads a document, refusing ones from a newer schema.
    pub fn from_json(bytes: &[u8]) -> Result<AmiMetadata, MetadataError> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| MetadataError::Malformed(e.to_string()))?;
        let version = value
            .get("schema_version")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| MetadataError::Malformed("no schema_version".into()))?;
        if version > u64::from(METADATA_SCHEMA_VERSION) {
            return Err(MetadataError::TooNew {
                found: u32::try_from(version).unwrap_or(u32::MAX),
                supported: METADATA_SCHEMA_VERSION,
            });
        }
        serde_json::from_value(value).map_err(|e| MetadataError::Malformed(e.to_string()))
    }

    /// The stored image object, or an error saying how to make one.
    pub fn stored(&self) -> Result<&StoredImage, MetadataError> {
        self.stored_image.as_ref().ok_or(MetadataError::NotStored {
            image_id: self.image_id.clone(),
        })
    }

    /// Tags for an AMI restored from this document: the original's user tags, marked as
    /// autosnap's and as restored from the original ([`tags::restored_tags`]: never the
    /// policy-membership tags, so no policy takes the restored AMI for its backup).
    pub fn restore_image_tags(&self) -> Tags {
        tags::restored_tags(&self.tags, &self.image_id)
    }

    /// Tags for the restored snapshot behind `device_name`: that snapshot's
    /// original user tags, marked the same way.
    pub fn restore_snapshot_tags(&self, device_name: &str) -> Tags {
        let original = self
            .block_device_mappings
            .iter()
            .find(|m| m.device_name == device_name)
            .map(|m| &m.snapshot_tags);
        tags::restored_tags(original.into_iter().flatten(), &self.image_id)
    }
}

/// `PREFIX/ami-metadata/<ami-id>.json` (no leading slash; an empty prefix
/// puts the folder at the bucket's root).
pub fn metadata_key(prefix: &str, image_id: &str) -> String {
    let p = prefix.trim_matches('/');
    if p.is_empty() {
        format!("{METADATA_FOLDER}/{image_id}.json")
    } else {
        format!("{p}/{METADATA_FOLDER}/{image_id}.json")
    }
}

/// The object CreateStoreImageTask writes: `<ami-id>.bin` at the bucket's root.
pub fn stored_object_key(image_id: &str) -> String {
    format!("{image_id}.bin")
}

/// What `ami restore --key K` names: a stored image object or a metadata document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreSource {
    /// `…/ami-….json`: read this metadata document.
    Metadata { key: String },
    /// `ami-….bin`: the metadata document of that AMI, found under the prefix.
    StoredImage { image_id: String },
}

impl RestoreSource {
    pub fn from_key(key: &str) -> Result<RestoreSource, String> {
        let file = key.rsplit('/').next().unwrap_or(key);
        if file.ends_with(".json") {
            return Ok(RestoreSource::Metadata {
                key: key.to_string(),
            });
        }
        if let Some(id) = file.strip_suffix(".bin") {
            if id.parse::<crate::ids::ImageId>().is_ok() {
                return Ok(RestoreSource::StoredImage {
                    image_id: id.to_string(),
                });
            }
        }
        Err(format!(
            "--key '{key}' names neither a stored AMI object (ami-….bin) nor a metadata document (….json)"
        ))
    }
}

// ---- names --------------------------------------------------------------------

/// AMI names: 3 to 128 characters from letters, digits and `( ) [ ] . / - ' @ _` and space.
pub const NAME_MIN: usize = 3;
pub const NAME_MAX: usize = 128;

fn name_char_ok(c: char) -> bool {
    c.is_ascii_alphanumeric() || "()[] ./-'@_".contains(c)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageNameError {
    #[error("AMI name '{0}' must be {NAME_MIN} to {NAME_MAX} characters long")]
    Length(String),
    #[error("AMI name '{name}' contains '{bad}': only letters, digits, spaces and ( ) [ ] . / - ' @ _ are allowed")]
    Character { name: String, bad: char },
}

pub fn validate_image_name(name: &str) -> Result<(), ImageNameError> {
    let n = name.chars().count();
    if !(NAME_MIN..=NAME_MAX).contains(&n) {
        return Err(ImageNameError::Length(name.to_string()));
    }
    if let Some(bad) = name.chars().find(|c| !name_char_ok(*c)) {
        return Err(ImageNameError::Character {
            name: name.to_string(),
            bad,
        });
    }
    Ok(())
}

/// `autosnap-<Name tag or instance id>-<UTC YYYYMMDDTHHMMSSZ>`, with characters
/// AMI names do not allow replaced by `-`.
pub fn default_image_name(instance_id: &str, name_tag: Option<&str>, at: DateTime<Utc>) -> String {
    let subject: String = name_tag
        .filter(|n| !n.trim().is_empty())
        .unwrap_or(instance_id)
        .chars()
        .map(|c| if name_char_ok(c) { c } else { '-' })
        .collect();
    let stamp = at.format("%Y%m%dT%H%M%SZ").to_string();
    // Leave room for the prefix, the stamp and a uniqueness suffix.
    let room = NAME_MAX - "autosnap-".len() - 1 - stamp.len() - 4;
    let subject: String = subject.trim().chars().take(room).collect();
    format!("autosnap-{subject}-{stamp}")
}

/// The name of an AMI made by policy `policy`:
/// `autosnap-<policy>-<Name tag or instance id>-<UTC YYYYMMDDTHHMMSSZ>`, sanitised and
/// shortened like [`default_image_name`].
pub fn policy_image_name(
    policy: &str,
    instance_id: &str,
    name_tag: Option<&str>,
    at: DateTime<Utc>,
) -> String {
    let subject = name_tag
        .filter(|n| !n.trim().is_empty())
        .unwrap_or(instance_id);
    default_image_name(instance_id, Some(&format!("{policy}-{subject}")), at)
}

/// The first of `base`, `base-2`, `base-3`, … that `taken` says is free.
pub fn unique_image_name(base: &str, taken: impl Fn(&str) -> bool) -> String {
    if !taken(base) {
        return base.to_string();
    }
    (2..)
        .map(|n| {
            let suffix = format!("-{n}");
            let keep = NAME_MAX.saturating_sub(suffix.len());
            let head: String = base.chars().take(keep).collect();
            format!("{head}{suffix}")
        })
        .find(|candidate| !taken(candidate))
        .expect("some suffix is free")
}

// ---- safe deregistration ----------------------------------------------------------

/// Something that would break if the AMI were deregistered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ImageUser {
    /// An instance launched from the AMI (pending, running, stopping or stopped).
    Instance {
        instance_id: String,
        state: String,
        name: Option<String>,
    },
    /// A launch template whose default or latest version names the AMI.
    LaunchTemplate {
        launch_template_id: String,
        name: Option<String>,
        version: i64,
        default: bool,
        latest: bool,
    },
}

impl fmt::Display for ImageUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageUser::Instance {
                instance_id,
                state,
                name,
            } => match name {
                Some(n) => write!(f, "instance {instance_id} ({n}, {state})"),
                None => write!(f, "instance {instance_id} ({state})"),
            },
            ImageUser::LaunchTemplate {
                launch_template_id,
                name,
                version,
                default,
                latest,
            } => {
                let which = match (default, latest) {
                    (true, true) => "default and latest",
                    (true, false) => "default",
                    _ => "latest",
                };
                match name {
                    Some(n) => write!(
                        f,
                        "launch template {launch_template_id} ({n}) version {version} ({which})"
                    ),
                    None => write!(
                        f,
                        "launch template {launch_template_id} version {version} ({which})"
                    ),
                }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AmiDeleteAction {
    Deregister,
    Refuse,
    Missing,
}

/// A snapshot of a deregistered AMI that stays, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeptSnapshot {
    pub snapshot_id: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AmiDeleteDecision {
    pub image_id: String,
    pub name: Option<String>,
    pub action: AmiDeleteAction,
    pub reason: String,
    /// Deleted after every planned AMI is deregistered.
    pub delete_snapshots: Vec<String>,
    pub keep_snapshots: Vec<KeptSnapshot>,
}

/// What decides whether a snapshot behind an AMI goes with it: as described in the account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MappedSnapshot {
    pub description: Option<String>,
    pub tags: Tags,
}

/// Whether EC2 or autosnap says the snapshot was made for `image_id`: EC2 names the AMI in
/// the descriptions of the snapshots it makes for one ("Created by CreateImage(i-…) for
/// ami-…", "Copied for DestinationAmi ami-… from SourceAmi …", "… for ami-…"); autosnap's
/// restores, which make the snapshots before the AMI exists, tag them `autosnap:for-image`.
pub fn made_for_image(image_id: &str, description: Option<&str>, snapshot_tags: &Tags) -> bool {
    if snapshot_tags.get(tags::FOR_IMAGE).map(String::as_str) == Some(image_id) {
        return true;
    }
    description.is_some_and(|d| {
        d.ends_with(&format!(" for {image_id}"))
            || d.contains(&format!(" for {image_id} "))
            || d.contains(&format!(" for {image_id}."))
            || d.contains(&format!("DestinationAmi {image_id} "))
    })
}

/// Why snapshot `snapshot_id` behind `image_id` must stay when the AMI goes, or `None` when
/// it goes with it. It goes only when autosnap owns it (`autosnap:managed=true`) and it was
/// made for that AMI ([`made_for_image`]): a snapshot the user owns, or one that existed
/// before the AMI and was registered into it (`ami from-snapshot` of a user's snapshot or of
/// a policy's backup), is never deleted with an AMI, whoever owns the AMI.
pub fn keep_with_image_reason(
    image_id: &str,
    snapshot_id: &str,
    snapshot: Option<&MappedSnapshot>,
) -> Option<String> {
    let Some(snap) = snapshot else {
        return Some(
            "not found among this account's snapshots: it is not autosnap's to delete".into(),
        );
    };
    if !tags::is_managed(&snap.tags) {
        return Some(format!(
            "not created by autosnap (no autosnap:managed=true tag): it is yours and stays; \
             delete it with `autosnap snapshot delete {snapshot_id} --force` if you no longer need it"
        ));
    }
    if !made_for_image(image_id, snap.description.as_deref(), &snap.tags) {
        return Some(format!(
            "not made for {image_id} (neither its description nor an autosnap:for-image tag \
             names it): it existed before the AMI, e.g. a backup registered with `ami \
             from-snapshot`, and stays under its own rules"
        ));
    }
    None
}

/// Decides, with a reason for every requested AMI, what `ami delete` does.
///
/// Rules, in order: the AMI must exist in the account; it must not be used by
/// an instance or by a launch template's default or latest version, and it
/// must carry autosnap's ownership tag — both unless `force`. Each snapshot
/// of a deregistered AMI is deleted unless `keep_snapshots`, another AMI
/// that stays registered uses it (`others` holds every AMI of the account that
/// uses any of the snapshots), or [`keep_with_image_reason`] keeps it (not
/// autosnap's, or not made for that AMI; `snapshots` holds the AMIs'
/// snapshots as described, and `force` never overrides this). A snapshot
/// shared by two AMIs that are both deregistered is deleted once, with the later one.
pub fn plan_ami_deletes(
    requested: &[String],
    found: &[ImageDetails],
    users: &BTreeMap<String, Vec<ImageUser>>,
    others: &[ImageDetails],
    snapshots: &BTreeMap<String, MappedSnapshot>,
    force: bool,
    keep_snapshots: bool,
) -> Vec<AmiDeleteDecision> {
    let mut seen = BTreeSet::new();
    let mut decisions: Vec<AmiDeleteDecision> = requested
        .iter()
        .filter(|id| seen.insert(id.as_str()))
        .map(|id| {
            let decide = |name: Option<String>, action, reason: String| AmiDeleteDecision {
                image_id: id.clone(),
                name,
                action,
                reason,
                delete_snapshots: Vec::new(),
                keep_snapshots: Vec::new(),
            };
            let Some(image) = found.iter().find(|i| &i.image_id == id) else {
                return decide(
                    None,
                    AmiDeleteAction::Missing,
                    "does not exist (or belongs to another account)".into(),
                );
            };
            let name = image.name.clone();
            let using = users.get(id).map(Vec::as_slice).unwrap_or_default();
            if !using.is_empty() && !force {
                let list: Vec<String> = using.iter().map(ToString::to_string).collect();
                return decide(
                    name,
                    AmiDeleteAction::Refuse,
                    format!(
                        "in use by {}: move them to another AMI first, or pass --force",
                        list.join(", ")
                    ),
                );
            }
            if !image.is_managed() && !force {
                return decide(
                    name,
                    AmiDeleteAction::Refuse,
                    "not created by autosnap (no autosnap:managed=true tag): pass --force to deregister it anyway".into(),
                );
            }
            let mut why = vec![if image.is_managed() {
                "created by autosnap".to_string()
            } else {
                "not created by autosnap, deregistering because of --force".to_string()
            }];
            if !using.is_empty() {
                let list: Vec<String> = using.iter().map(ToString::to_string).collect();
                why.push(format!("still used by {} (--force)", list.join(", ")));
            }
            decide(name, AmiDeleteAction::Deregister, why.join("; "))
        })
        .collect();

    let deregistered: BTreeSet<String> = decisions
        .iter()
        .filter(|d| d.action == AmiDeleteAction::Deregister)
        .map(|d| d.image_id.clone())
        .collect();
    // The last deregistered AMI (in request order) that uses each snapshot, and may delete
    // it, deletes it.
    let mut owner_of: BTreeMap<String, String> = BTreeMap::new();
    for d in decisions
        .iter()
        .filter(|d| d.action == AmiDeleteAction::Deregister)
    {
        if let Some(image) = found.iter().find(|i| i.image_id == d.image_id) {
            for s in image.snapshot_ids() {
                if keep_with_image_reason(&d.image_id, &s, snapshots.get(&s)).is_none() {
                    owner_of.insert(s, d.image_id.clone());
                }
            }
        }
    }
    for d in decisions
        .iter_mut()
        .filter(|d| d.action == AmiDeleteAction::Deregister)
    {
        let Some(image) = found.iter().find(|i| i.image_id == d.image_id) else {
            continue;
        };
        for s in image.snapshot_ids() {
            let keep = |reason: String| KeptSnapshot {
                snapshot_id: s.clone(),
                reason,
            };
            if keep_snapshots {
                d.keep_snapshots.push(keep("--keep-snapshots".into()));
                continue;
            }
            let staying: Vec<String> = others
                .iter()
                .chain(found.iter())
                .filter(|o| o.image_id != d.image_id && !deregistered.contains(&o.image_id))
                .filter(|o| o.snapshot_ids().contains(&s))
                .map(ImageDetails::label)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            if !staying.is_empty() {
                d.keep_snapshots
                    .push(keep(format!("also used by AMI {}", staying.join(", "))));
                continue;
            }
            match owner_of.get(&s) {
                Some(owner) if owner == &d.image_id => d.delete_snapshots.push(s),
                Some(other) => d
                    .keep_snapshots
                    .push(keep(format!("also used by AMI {other}, deleted with it"))),
                None => {
                    let reason = keep_with_image_reason(&d.image_id, &s, snapshots.get(&s))
                        .expect("a snapshot no AMI may delete has a reason to stay");
                    d.keep_snapshots.push(keep(reason));
                }
            }
        }
    }
    decisions
}

/// Moves each snapshot of `plan` that a lock in `locks` protects from `delete_snapshots` to
/// `keep_snapshots`, with the lock's reason and what to do: it stays when its AMI goes.
pub fn keep_locked_snapshots(plan: &mut [AmiDeleteDecision], locks: &[crate::lock::SnapshotLock]) {
    for d in plan {
        let mut kept = Vec::new();
        d.delete_snapshots.retain(|s| {
            match crate::lock::blocking(locks, std::slice::from_ref(s)).first() {
                Some(lock) => {
                    kept.push(KeptSnapshot {
                        snapshot_id: s.clone(),
                        reason: format!("{}: {}", lock.reason(), lock.remedy()),
                    });
                    false
                }
                None => true,
            }
        });
        d.keep_snapshots.extend(kept);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 4, 5, 6).unwrap()
    }

    fn tagmap(pairs: &[(&str, &str)]) -> Tags {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn dev(name: &str, snap: &str, encrypted: bool) -> ImageBlockDevice {
        ImageBlockDevice {
            device_name: name.into(),
            snapshot_id: Some(snap.into()),
            volume_size_gib: Some(8),
            volume_type: Some("gp3".into()),
            iops: Some(3000),
            throughput: Some(125),
            delete_on_termination: Some(true),
            encrypted: Some(encrypted),
            kms_key_id: None,
            virtual_name: None,
        }
    }

    fn image(id: &str, managed: bool, snaps: &[&str]) -> ImageDetails {
        let mut tags = tagmap(&[("Name", "web")]);
        if managed {
            tags.insert(tags::MANAGED.into(), "true".into());
        }
        ImageDetails {
            image_id: id.into(),
            name: Some(format!("name-{id}")),
            description: Some("d".into()),
            state: "available".into(),
            state_reason: None,
            creation_date: Some("2026-03-01T04:05:06.000Z".into()),
            owner_id: Some("123456789012".into()),
            platform: None,
            platform_details: Some("Linux/UNIX".into()),
            architecture: Some("x86_64".into()),
            virtualization_type: Some("hvm".into()),
            ena_support: Some(true),
            boot_mode: Some("uefi".into()),
            root_device_name: Some("/dev/xvda".into()),
            root_device_type: Some("ebs".into()),
            source_instance_id: Some("i-0123456789abcdef0".into()),
            source_image_id: None,
            block_device_mappings: snaps
                .iter()
                .enumerate()
                .map(|(n, s)| dev(&format!("/dev/xvd{}", (b'a' + n as u8) as char), s, false))
                .collect(),
            tags,
        }
    }

    fn full_metadata() -> AmiMetadata {
        let mut img = image(
            "ami-0123456789abcdef0",
            true,
            &["snap-00000001", "snap-00000002"],
        );
        img.block_device_mappings[1].encrypted = Some(true);
        img.block_device_mappings.push(ImageBlockDevice {
            device_name: "/dev/sdb".into(),
            snapshot_id: None,
            volume_size_gib: None,
            volume_type: None,
            iops: None,
            throughput: None,
            delete_on_termination: None,
            encrypted: None,
            kms_key_id: None,
            virtual_name: Some("ephemeral0".into()),
        });
        let mut facts = BTreeMap::new();
        facts.insert(
            "snap-00000002".to_string(),
            SnapshotFacts {
                encrypted: true,
                kms_key_id: Some("arn:aws:kms:us-east-1:123456789012:key/k".into()),
                tags: tagmap(&[("Name", "data"), ("aws:backup:source", "x")]),
            },
        );
        let source = SourceInstance {
            instance_id: "i-0123456789abcdef0".into(),
            instance_type: Some("t3.micro".into()),
            availability_zone: Some("us-east-1a".into()),
            vpc_id: Some("vpc-01234567".into()),
            subnet_id: Some("subnet-01234567".into()),
            security_groups: vec![SecurityGroupRef {
                group_id: "sg-01234567".into(),
                group_name: Some("default".into()),
            }],
            iam_instance_profile: Some("arn:aws:iam::123456789012:instance-profile/web".into()),
            key_name: Some("ops".into()),
            private_ip_address: Some("10.0.0.5".into()),
            tags: tagmap(&[("Name", "web")]),
        };
        let mut m = AmiMetadata::build(
            &img,
            &facts,
            Some(source),
            "123456789012",
            "us-east-1",
            "autosnap 0.1.0",
            at(),
        );
        m.stored_image = Some(StoredImage {
            bucket: "backups".into(),
            object_key: stored_object_key("ami-0123456789abcdef0"),
            stored_at: at(),
        });
        m
    }

    #[test]
    fn metadata_round_trips_through_json() {
        let m = full_metadata();
        let text = m.to_json();
        let back = AmiMetadata::from_json(text.as_bytes()).unwrap();
        assert_eq!(back, m);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["schema_version"], 1);
        assert_eq!(
            v["source_instance"]["security_groups"][0]["group_id"],
            "sg-01234567"
        );
        assert_eq!(
            v["block_device_mappings"][1]["kms_key_id"],
            "arn:aws:kms:us-east-1:123456789012:key/k"
        );
        assert_eq!(v["block_device_mappings"][0]["encrypted"], false);
        assert_eq!(v["block_device_mappings"][2]["virtual_name"], "ephemeral0");
        assert_eq!(v["encrypted"], false);
        assert_eq!(v["stored_image"]["object_key"], "ami-0123456789abcdef0.bin");
    }

    #[test]
    fn metadata_refuses_newer_or_malformed_documents() {
        let mut v: serde_json::Value = serde_json::from_str(&full_metadata().to_json()).unwrap();
        v["schema_version"] = 2.into();
        let err = AmiMetadata::from_json(v.to_string().as_bytes()).unwrap_err();
        assert!(
            matches!(err, MetadataError::TooNew { found: 2, .. }),
            "{err}"
        );
        assert!(AmiMetadata::from_json(b"{}").is_err());
        assert!(AmiMetadata::from_json(b"not json").is_err());
        // Unknown fields from a newer minor writer are ignored.
        v["schema_version"] = 1.into();
        v["future_field"] = "x".into();
        assert!(AmiMetadata::from_json(v.to_string().as_bytes()).is_ok());
    }

    #[test]
    fn restore_tags_keep_originals_and_mark_the_restore() {
        let mut m = full_metadata();
        for (k, v) in [
            (tags::POLICY, "web-amis"),
            (tags::SOURCE_INSTANCE, "i-0123456789abcdef0"),
        ] {
            m.tags.insert(k.into(), v.into());
            m.block_device_mappings[1]
                .snapshot_tags
                .insert(k.into(), v.into());
        }
        let t = m.restore_image_tags();
        // Never the policy-membership tags: the restore is not the policy's backup.
        assert!(!t.contains_key(tags::POLICY) && !t.contains_key(tags::SOURCE_INSTANCE));
        assert_eq!(t["Name"], "web");
        assert_eq!(t[tags::MANAGED], "true");
        assert_eq!(t[RESTORED_FROM], "ami-0123456789abcdef0");
        let s = m.restore_snapshot_tags("/dev/xvdb");
        assert_eq!(s["Name"], "data");
        assert!(!s.contains_key("aws:backup:source"));
        assert!(!s.contains_key(tags::POLICY) && !s.contains_key(tags::SOURCE_INSTANCE));
        assert_eq!(s[RESTORED_FROM], "ami-0123456789abcdef0");
        assert_eq!(m.stored().unwrap().bucket, "backups");
    }

    #[test]
    fn keys_and_restore_sources() {
        assert_eq!(
            metadata_key("", "ami-01234567"),
            "ami-metadata/ami-01234567.json"
        );
        assert_eq!(
            metadata_key("/prod/", "ami-01234567"),
            "prod/ami-metadata/ami-01234567.json"
        );
        assert_eq!(
            RestoreSource::from_key("ami-0123456789abcdef0.bin").unwrap(),
            RestoreSource::StoredImage {
                image_id: "ami-0123456789abcdef0".into()
            }
        );
        assert_eq!(
            RestoreSource::from_key("p/ami-metadata/ami-01234567.json").unwrap(),
            RestoreSource::Metadata {
                key: "p/ami-metadata/ami-01234567.json".into()
            }
        );
        assert!(RestoreSource::from_key("disk.img").is_err());
    }

    #[test]
    fn default_names_are_valid_and_unique() {
        let n = default_image_name("i-0123456789abcdef0", Some("web server #1"), at());
        assert_eq!(n, "autosnap-web server -1-20260301T040506Z");
        validate_image_name(&n).unwrap();
        let n = default_image_name("i-0123456789abcdef0", None, at());
        assert_eq!(n, "autosnap-i-0123456789abcdef0-20260301T040506Z");
        let long = "x".repeat(300);
        let n = default_image_name("i-01234567", Some(&long), at());
        assert!(n.len() <= NAME_MAX - 4, "{}", n.len());
        let taken = ["a-name", "a-name-2"];
        assert_eq!(
            unique_image_name("a-name", |c| taken.contains(&c)),
            "a-name-3"
        );
        assert_eq!(unique_image_name("free", |_| false), "free");
        let full = "y".repeat(NAME_MAX);
        let u = unique_image_name(&full, |c| c == full);
        assert_eq!(u.len(), NAME_MAX);
        assert!(u.ends_with("-2"));
    }

    #[test]
    fn name_validation() {
        assert!(validate_image_name("ok").is_err());
        assert!(validate_image_name(&"n".repeat(129)).is_err());
        assert!(matches!(
            validate_image_name("web#1"),
            Err(ImageNameError::Character { bad: '#', .. })
        ));
        validate_image_name("web (prod) [v1] 2026/03/01 o'k @x_y-z.").unwrap();
    }

    #[test]
    fn summary_flags() {
        let mut i = image("ami-01234567", true, &["snap-00000001"]);
        assert!(!AmiSummary::from(&i).encrypted);
        i.block_device_mappings[0].encrypted = Some(true);
        let s = AmiSummary::from(&i);
        assert!(s.encrypted && s.managed);
        assert_eq!(s.snapshot_ids, vec!["snap-00000001"]);
        assert!(i.unencrypted_snapshots().is_empty());
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// A snapshot of autosnap's that CreateImage made for `image_id`.
    fn made_by_create_image(image_id: &str) -> MappedSnapshot {
        MappedSnapshot {
            description: Some(format!(
                "Created by CreateImage(i-0123456789abcdef0) for {image_id}"
            )),
            tags: tagmap(&[(tags::MANAGED, "true")]),
        }
    }

    /// Every snapshot of `images` as made by CreateImage for the first of them that maps it.
    fn made_for_each(images: &[&ImageDetails]) -> BTreeMap<String, MappedSnapshot> {
        let mut out = BTreeMap::new();
        for i in images {
            for s in i.snapshot_ids() {
                out.entry(s)
                    .or_insert_with(|| made_by_create_image(&i.image_id));
            }
        }
        out
    }

    #[test]
    fn delete_plan_every_rule_with_its_reason() {
        let managed = image("ami-00000001", true, &["snap-00000001", "snap-00000002"]);
        let foreign = image("ami-00000002", false, &["snap-00000003"]);
        let used = image("ami-00000003", true, &["snap-00000004"]);
        let sharer = image("ami-00000009", false, &["snap-00000002"]);
        let mut users = BTreeMap::new();
        users.insert(
            "ami-00000003".to_string(),
            vec![
                ImageUser::Instance {
                    instance_id: "i-01234567".into(),
                    state: "running".into(),
                    name: Some("web".into()),
                },
                ImageUser::LaunchTemplate {
                    launch_template_id: "lt-01234567".into(),
                    name: Some("web-lt".into()),
                    version: 3,
                    default: true,
                    latest: true,
                },
            ],
        );
        let found = vec![managed.clone(), foreign.clone(), used.clone()];
        let snapshots = made_for_each(&[&managed, &foreign, &used]);
        let plan = plan_ami_deletes(
            &ids(&[
                "ami-00000001",
                "ami-00000002",
                "ami-00000003",
                "ami-0000000f",
                "ami-00000001",
            ]),
            &found,
            &users,
            std::slice::from_ref(&sharer),
            &snapshots,
            false,
            false,
        );
        assert_eq!(plan.len(), 4, "duplicates collapse");
        assert_eq!(plan[0].action, AmiDeleteAction::Deregister);
        assert_eq!(plan[0].delete_snapshots, ids(&["snap-00000001"]));
        assert_eq!(plan[0].keep_snapshots[0].snapshot_id, "snap-00000002");
        assert!(plan[0].keep_snapshots[0].reason.contains("ami-00000009"));
        assert_eq!(plan[1].action, AmiDeleteAction::Refuse);
        assert!(plan[1].reason.contains("--force"));
        assert_eq!(plan[2].action, AmiDeleteAction::Refuse);
        assert!(
            plan[2]
                .reason
                .contains("instance i-01234567 (web, running)")
                && plan[2].reason.contains(
                    "launch template lt-01234567 (web-lt) version 3 (default and latest)"
                ),
            "{}",
            plan[2].reason
        );
        assert_eq!(plan[3].action, AmiDeleteAction::Missing);

        let forced = plan_ami_deletes(
            &ids(&["ami-00000002", "ami-00000003"]),
            &found,
            &users,
            &[],
            &snapshots,
            true,
            false,
        );
        assert!(forced
            .iter()
            .all(|d| d.action == AmiDeleteAction::Deregister));
        assert!(forced[1].reason.contains("still used by"));

        let kept = plan_ami_deletes(
            &ids(&["ami-00000001"]),
            &found,
            &users,
            &[],
            &snapshots,
            false,
            true,
        );
        assert!(kept[0].delete_snapshots.is_empty());
        assert_eq!(kept[0].keep_snapshots.len(), 2);
    }

    #[test]
    fn snapshot_shared_by_two_deleted_amis_goes_with_the_last() {
        let a = image("ami-0000000a", true, &["snap-00000001", "snap-00000002"]);
        let b = image("ami-0000000b", true, &["snap-00000002"]);
        let mut snapshots = made_for_each(&[&a]);
        // Made for b (as a restore tags them), and registered into a as well.
        snapshots.insert(
            "snap-00000002".into(),
            MappedSnapshot {
                description: None,
                tags: tagmap(&[(tags::MANAGED, "true"), (tags::FOR_IMAGE, "ami-0000000b")]),
            },
        );
        let plan = plan_ami_deletes(
            &ids(&["ami-0000000a", "ami-0000000b"]),
            &[a, b],
            &BTreeMap::new(),
            &[],
            &snapshots,
            false,
            false,
        );
        assert_eq!(plan[0].delete_snapshots, ids(&["snap-00000001"]));
        assert!(plan[0].keep_snapshots[0].reason.contains("deleted with it"));
        assert_eq!(plan[1].delete_snapshots, ids(&["snap-00000002"]));
    }

    #[test]
    fn snapshots_the_user_owns_or_that_predate_the_ami_stay() {
        // A managed AMI (say from `ami from-snapshot`) mapping: the user's own snapshot, a
        // policy's backup registered into it, one CreateImage made for it, one a restore made
        // for it, and one this account cannot see.
        let ami = image(
            "ami-0000000a",
            true,
            &[
                "snap-00000001",
                "snap-00000002",
                "snap-00000003",
                "snap-00000004",
                "snap-00000005",
            ],
        );
        let mut snapshots = BTreeMap::new();
        snapshots.insert(
            "snap-00000001".to_string(),
            MappedSnapshot {
                description: Some("my database, before the upgrade".into()),
                tags: tagmap(&[("Name", "db")]),
            },
        );
        snapshots.insert(
            "snap-00000002".to_string(),
            MappedSnapshot {
                description: Some("autosnap prod-daily vol-0000000a".into()),
                tags: tagmap(&[
                    (tags::MANAGED, "true"),
                    (tags::POLICY, "prod-daily"),
                    (tags::SOURCE_VOLUME, "vol-0000000a"),
                ]),
            },
        );
        snapshots.insert(
            "snap-00000003".to_string(),
            made_by_create_image("ami-0000000a"),
        );
        snapshots.insert(
            "snap-00000004".to_string(),
            MappedSnapshot {
                description: Some("restored from autosnap archive 0123".into()),
                tags: tagmap(&[
                    (tags::MANAGED, "true"),
                    (tags::RESTORED_FROM, "ami-00000009"),
                    (tags::FOR_IMAGE, "ami-0000000a"),
                ]),
            },
        );
        for force in [false, true] {
            let plan = plan_ami_deletes(
                &ids(&["ami-0000000a"]),
                std::slice::from_ref(&ami),
                &BTreeMap::new(),
                &[],
                &snapshots,
                force,
                false,
            );
            assert_eq!(plan[0].action, AmiDeleteAction::Deregister);
            assert_eq!(
                plan[0].delete_snapshots,
                ids(&["snap-00000003", "snap-00000004"]),
                "force = {force}"
            );
            let kept: BTreeMap<&str, &str> = plan[0]
                .keep_snapshots
                .iter()
                .map(|k| (k.snapshot_id.as_str(), k.reason.as_str()))
                .collect();
            assert!(kept["snap-00000001"].contains("not created by autosnap"));
            assert!(kept["snap-00000001"].contains("snapshot delete snap-00000001 --force"));
            assert!(kept["snap-00000002"].contains("not made for ami-0000000a"));
            assert!(kept["snap-00000005"].contains("not found"));
        }
        // A description naming another AMI whose id starts the same does not count.
        assert!(!made_for_image(
            "ami-0000000a",
            Some("Created by CreateImage(i-01234567) for ami-0000000ab"),
            &Tags::new()
        ));
        assert!(made_for_image(
            "ami-0000000a",
            Some("Copied for DestinationAmi ami-0000000a from SourceAmi ami-00000001 for SourceSnapshot snap-00000001. Task created on 1,234."),
            &Tags::new()
        ));
    }

    #[test]
    fn a_locked_snapshot_stays_when_its_ami_goes() {
        use crate::lock::{LockState, SnapshotLock};
        let lock = |id: &str, state| SnapshotLock {
            snapshot_id: id.into(),
            state,
            expires_on: None,
            cool_off_ends: None,
            duration_days: None,
            created_on: None,
        };
        let mut plan = vec![AmiDeleteDecision {
            image_id: "ami-1".into(),
            name: None,
            action: AmiDeleteAction::Deregister,
            reason: "created by autosnap".into(),
            delete_snapshots: vec!["snap-a".into(), "snap-b".into(), "snap-c".into()],
            keep_snapshots: vec![],
        }];
        // A governance lock keeps snap-b; an expired lock on snap-c keeps nothing.
        let locks = [
            lock("snap-b", LockState::Governance),
            lock("snap-c", LockState::Expired),
        ];
        keep_locked_snapshots(&mut plan, &locks);
        assert_eq!(plan[0].delete_snapshots, ["snap-a", "snap-c"]);
        assert_eq!(plan[0].keep_snapshots.len(), 1);
        assert_eq!(plan[0].keep_snapshots[0].snapshot_id, "snap-b");
        assert!(
            plan[0].keep_snapshots[0]
                .reason
                .starts_with("locked (governance)")
                && plan[0].keep_snapshots[0].reason.contains("snapshot unlock"),
            "{:?}",
            plan[0].keep_snapshots
        );
    }
}

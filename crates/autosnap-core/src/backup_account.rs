//! Copies into a separate backup account: the pattern AWS recommends against ransomware (an
//! attacker holding the source account's credentials cannot delete what another account owns).
//!
//! A copy rule names the account (`copy = [{ region = "us-west-2", account = "222222222222",
//! kms_key = "arn:aws:kms:us-west-2:222222222222:key/…" }]`), and a `[[backup_account]]` entry
//! says how autosnap reaches it (its role, assumed from the base credentials). Per backup:
//! 1. the source account shares the snapshot with the backup account (createVolumePermission)
//!    and tags it `autosnap:shared-with=<account>`;
//! 2. the backup account copies it (CopySnapshot from the source Region) with its own KMS key,
//!    tagged with autosnap's ownership tags plus `autosnap:source-account` and
//!    `autosnap:source-snapshot`;
//! 3. once the copy is complete, the share and its tag are removed (a later run removes the
//!    shares whose copies completed after a run stopped waiting).
//!
//! Retention of the copies runs in the backup account, with its role, over the copies autosnap
//! made there for that policy and source account only. Nothing in the source account ever
//! deletes them. This module is the pure part: the config entries, their validation, and the
//! plan of one target's copies there; autosnap-aws does the calls.

use serde::{Deserialize, Serialize};

use crate::accounts::{is_account_id, parse_role_arn};
use crate::config::Secret;
use crate::plan::{BackupDecision, CopyAction};
use crate::policy::{CopyRule, PolicyConfig};

/// On a copy in the backup account: the account its source snapshot is in.
pub const SOURCE_ACCOUNT: &str = "autosnap:source-account";
/// On a source snapshot while it is shared with a backup account for a copy: that account.
pub const SHARED_WITH: &str = "autosnap:shared-with";

/// One `[[backup_account]]` table: an account that receives copies and is not backed up itself.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackupAccountConfig {
    /// The 12-digit account id.
    pub id: String,
    /// The role autosnap assumes there to copy, list and prune the copies.
    pub role_arn: String,
    /// The external id the role's trust policy asks for, if it asks for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<Secret>,
}

impl BackupAccountConfig {
    /// As an [`crate::accounts::Account`], to assume its role like a backed-up account's.
    pub fn as_account(&self) -> crate::accounts::Account {
        crate::accounts::Account {
            id: self.id.clone(),
            name: None,
            role_arn: self.role_arn.clone(),
            external_id: self.external_id.clone(),
            regions: Vec::new(),
            policies: Vec::new(),
        }
    }
}

/// The account and region of a KMS key or alias ARN (`arn:aws:kms:<region>:<account>:key/…`).
pub fn kms_arn_place(arn: &str) -> Option<(&str, &str)> {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(_), Some("kms"), Some(region), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    ((resource.starts_with("key/") || resource.starts_with("alias/")) && is_account_id(account))
        .then_some((region, account))
}

/// A problem with a `[[backup_account]]` entry or a copy rule's `account`: where (the entry,
/// or the policy), which field, and what to do.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{place}: {field} {problem}")]
pub struct BackupAccountError {
    /// `backup_account "222222222222"`, `backup_account #2` or `policy "daily"`.
    pub place: String,
    /// `role_arn`, `copy[0].kms_key`, …
    pub field: String,
    pub problem: String,
}

/// Checks `[[backup_account]]` entries and every copy rule that names an account: the account
/// has an entry (its role), and the rule's `kms_key` is a key of that account in the copy's
/// region (the copy must be encrypted with a key the backup account owns; the AWS managed key
/// `aws/ebs` cannot be used across accounts).
pub fn validate_backup_accounts(
    entries: &[BackupAccountConfig],
    backed_up: &[crate::accounts::AccountConfig],
    policies: &[PolicyConfig],
) -> Result<(), BackupAccountError> {
    let mut seen = std::collections::HashSet::new();
    for (index, a) in entries.iter().enumerate() {
        let place = if is_account_id(&a.id) {
            format!("backup_account \"{}\"", a.id)
        } else {
            format!("backup_account #{}", index + 1)
        };
        let invalid = |field: &str, problem: String| BackupAccountError {
            place: place.clone(),
            field: field.to_owned(),
            problem,
        };
        if !is_account_id(&a.id) {
            return Err(invalid(
                "id",
                format!("'{}' is not an AWS account id: expected 12 digits", a.id),
            ));
        }
        if !seen.insert(a.id.as_str()) {
            return Err(invalid(
                "id",
                "is listed twice: give each backup account one [[backup_account]] entry".into(),
            ));
        }
        if backed_up.iter().any(|b| b.id == a.id) {
            return Err(invalid(
                "id",
                "is also an [[account]] that is backed up: a backup account should hold \
                 nothing but the copies (that is what keeps them out of reach of the source \
                 accounts); use another account for the copies"
                    .into(),
            ));
        }
        match parse_role_arn(&a.role_arn) {
            None => {
                return Err(invalid(
                    "role_arn",
                    format!(
                        "'{}' is not a role ARN such as arn:aws:iam::{}:role/autosnap-backup",
                        a.role_arn, a.id
                    ),
                ))
            }
            Some((account, _)) if account != a.id => {
                return Err(invalid(
                    "role_arn",
                    format!(
                        "'{}' is a role in account {account}, not in {}: the role must be in \
                         the backup account",
                        a.role_arn, a.id
                    ),
                ))
            }
            Some(_) => {}
        }
        if let Some(e) = &a.external_id {
            if e.expose().len() < 2 || e.expose().len() > 1224 {
                return Err(invalid(
                    "external_id",
                    "must be 2 to 1224 characters (STS's limits)".into(),
                ));
            }
        }
    }
    for policy in policies {
        for (i, rule) in policy.copy.iter().enumerate() {
            let Some(account) = &rule.account else {
                continue;
            };
            let invalid = |field: &str, problem: String| BackupAccountError {
                place: format!("policy \"{}\"", policy.name),
                field: format!("copy[{i}].{field}"),
                problem,
            };
            if !entries.iter().any(|e| &e.id == account) {
                return Err(invalid(
                    "account",
                    format!(
                        "is {account}, which has no [[backup_account]] entry: add one with the \
                         role autosnap assumes there, e.g.\n[[backup_account]]\nid = \
                         \"{account}\"\nrole_arn = \"arn:aws:iam::{account}:role/autosnap-backup\""
                    ),
                ));
            }
            let Some(key) = &rule.kms_key else {
                return Err(invalid(
                    "kms_key",
                    format!(
                        "is missing: a copy into account {account} must be encrypted with a KMS \
                         key that account owns; give its ARN, e.g. arn:aws:kms:{}:{account}:key/…",
                        rule.region
                    ),
                ));
            };
            match kms_arn_place(key) {
                None => {
                    return Err(invalid(
                        "kms_key",
                        format!(
                            "'{key}' is not a KMS key ARN: a copy into account {account} needs \
                             the full ARN of a key in that account (an id or alias would be \
                             looked up in the source account), e.g. \
                             arn:aws:kms:{}:{account}:key/…",
                            rule.region
                        ),
                    ))
                }
                Some((_, owner)) if owner != account => {
                    return Err(invalid(
                        "kms_key",
                        format!(
                            "'{key}' is a key of account {owner}: the copy into {account} must \
                             be encrypted with a key {account} owns"
                        ),
                    ))
                }
                Some((region, _)) if region != rule.region => {
                    return Err(invalid(
                        "kms_key",
                        format!(
                            "'{key}' is a key in {region}, but the copies are made in {}: KMS \
                             keys are regional",
                            rule.region
                        ),
                    ))
                }
                Some(_) => {}
            }
            if key.ends_with(":alias/aws/ebs") {
                return Err(invalid(
                    "kms_key",
                    "is the AWS managed key aws/ebs, which cannot be used for a copy shared \
                     across accounts: create a customer managed key in the backup account"
                        .into(),
                ));
            }
        }
    }
    Ok(())
}

/// One target's copies in one backup account and region, as planned.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccountCopies {
    /// The backup account.
    pub account: String,
    pub region: String,
    pub kms_key: String,
    /// The copy to make (its `reason` says why), if any.
    pub copy: Option<CopyAction>,
    /// The copy rule's retention (else the policy's), applied in the backup account.
    pub retention: String,
    /// The copies autosnap made there for this policy, target and source account, newest
    /// first, with their fate.
    pub backups: Vec<BackupDecision>,
    /// Source snapshots still shared with the account whose copy there is complete: `run`
    /// removes their share.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unshare: Vec<String>,
    /// Why the account's copies could not be read (its role, its access): nothing is copied
    /// or deleted there this time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The copy rules of `policy` that go to another account, with their positions.
pub fn account_rules(policy: &PolicyConfig) -> impl Iterator<Item = (usize, &CopyRule)> {
    policy
        .copy
        .iter()
        .enumerate()
        .filter(|(_, r)| r.account.is_some())
}

/// Whether any policy copies into another account.
pub fn any(policies: &[PolicyConfig]) -> bool {
    policies.iter().any(|p| account_rules(p).next().is_some())
}

/// The backup accounts `policies` copy into, each once, in config order.
pub fn accounts_used(policies: &[PolicyConfig]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in policies {
        for (_, r) in account_rules(p) {
            let a = r.account.clone().expect("an account rule");
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(copy: &str) -> PolicyConfig {
        toml::from_str(&format!(
            "name = \"daily\"\nresource = \"volume\"\nschedule = \"1d\"\nselect = [{{ tags = {{ Backup = \"yes\" }} }}]\nretain = {{ daily = 7 }}\ncopy = [{copy}]\n"
        ))
        .unwrap()
    }

    fn entry(id: &str) -> BackupAccountConfig {
        BackupAccountConfig {
            id: id.into(),
            role_arn: format!("arn:aws:iam::{id}:role/autosnap-backup"),
            external_id: None,
        }
    }

    const KEY: &str = "arn:aws:kms:us-west-2:222222222222:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    fn check(entries: &[BackupAccountConfig], copy: &str) -> Result<(), String> {
        validate_backup_accounts(entries, &[], &[policy(copy)]).map_err(|e| e.to_string())
    }

    #[test]
    fn a_copy_into_an_account_needs_its_entry_and_a_key_it_owns() {
        let ok = format!(
            "{{ region = \"us-west-2\", account = \"222222222222\", kms_key = \"{KEY}\" }}"
        );
        assert_eq!(check(&[entry("222222222222")], &ok), Ok(()));
        let msg = check(&[], &ok).unwrap_err();
        assert!(
            msg.starts_with("policy \"daily\": copy[0].account is 222222222222, which has no [[backup_account]] entry"),
            "{msg}"
        );
        let msg = check(
            &[entry("222222222222")],
            "{ region = \"us-west-2\", account = \"222222222222\" }",
        )
        .unwrap_err();
        assert!(msg.contains("copy[0].kms_key is missing"), "{msg}");
        let msg = check(
            &[entry("222222222222")],
            "{ region = \"us-west-2\", account = \"222222222222\", kms_key = \"alias/backup\" }",
        )
        .unwrap_err();
        assert!(msg.contains("is not a KMS key ARN"), "{msg}");
        let other = KEY.replace("222222222222", "111111111111");
        let msg = check(
            &[entry("222222222222")],
            &format!(
                "{{ region = \"us-west-2\", account = \"222222222222\", kms_key = \"{other}\" }}"
            ),
        )
        .unwrap_err();
        assert!(msg.contains("is a key of account 111111111111"), "{msg}");
        let east = KEY.replace("us-west-2", "us-east-1");
        let msg = check(
            &[entry("222222222222")],
            &format!(
                "{{ region = \"us-west-2\", account = \"222222222222\", kms_key = \"{east}\" }}"
            ),
        )
        .unwrap_err();
        assert!(msg.contains("KMS keys are regional"), "{msg}");
        let managed = "arn:aws:kms:us-west-2:222222222222:alias/aws/ebs";
        let msg = check(
            &[entry("222222222222")],
            &format!(
                "{{ region = \"us-west-2\", account = \"222222222222\", kms_key = \"{managed}\" }}"
            ),
        )
        .unwrap_err();
        assert!(msg.contains("AWS managed key aws/ebs"), "{msg}");
    }

    #[test]
    fn backup_account_entries_name_the_account_and_the_field() {
        let bad_role = BackupAccountConfig {
            role_arn: "arn:aws:iam::111111111111:role/x".into(),
            ..entry("222222222222")
        };
        let msg = validate_backup_accounts(&[bad_role], &[], &[])
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("backup_account \"222222222222\": role_arn"),
            "{msg}"
        );
        let msg = validate_backup_accounts(&[entry("2222")], &[], &[])
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("backup_account #1: id"), "{msg}");
        let backed_up = crate::accounts::AccountConfig {
            id: "222222222222".into(),
            role_arn: "arn:aws:iam::222222222222:role/autosnap".into(),
            external_id: None,
            regions: Vec::new(),
            policies: Vec::new(),
        };
        let msg = validate_backup_accounts(&[entry("222222222222")], &[backed_up], &[])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("is also an [[account]]"), "{msg}");
    }

    #[test]
    fn kms_arns_give_their_region_and_account() {
        assert_eq!(kms_arn_place(KEY), Some(("us-west-2", "222222222222")));
        assert_eq!(
            kms_arn_place("arn:aws:kms:eu-west-1:222222222222:alias/backup"),
            Some(("eu-west-1", "222222222222"))
        );
        assert_eq!(kms_arn_place("alias/backup"), None);
        assert_eq!(kms_arn_place("arn:aws:s3:::bucket"), None);
    }
}

//! Backup policies: the `[[policy]]` tables of the config file, their validation, and the
//! questions asked of one policy (which targets it selects, whether a target is due, how
//! healthy it is).
//!
//! ```toml
//! [[policy]]
//! name = "prod-daily"
//! resource = "volume"            # or "instance": one crash-consistent multi-volume set per run
//! select = [{ tags = { Backup = "daily", Env = "prod" } }]
//! exclude = { tags = { NoBackup = "true" }, ids = ["vol-0123456789abcdef0"] }
//! schedule = "0 3 * * *"         # 5-field cron (UTC unless `timezone`) or an interval "6h"
//! timezone = "Europe/Berlin"
//! retain = { last = 3, daily = 7, weekly = 4, monthly = 12, within = "2d" }
//! tags = { Team = "$(tag:Team)", Source = "$(volume-id)" }
//! copy = [{ region = "us-west-2", kms_key = "alias/backup", retain = { daily = 30 } }]
//! regions = ["us-east-1"]        # default: the configured region
//! description = "$(policy) backup of $(name)"
//! ```
//!
//! Selection: a target is selected when all tags of at least one selector match (a value of
//! `"*"` matches any value of that key), and it is not excluded: any `exclude.tags` pair
//! (again `"*"` for any value) or an id in `exclude.ids` excludes it. For an instance policy,
//! volume ids in `exclude.ids` are left out of the instance's set instead
//! ([`crate::plan::CreateAction::exclude_volumes`]).

use std::collections::HashSet;
use std::fmt;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::duration::DurationError;
use crate::ids::{InstanceId, VolumeId};
use crate::plan::Target;
use crate::retention::KeepPolicy;
pub use crate::schedule::{Due, Health, HealthState, Schedule};
use crate::tags::{Tags, AWS_PREFIX, OWN_PREFIX};
use crate::variables::check_template;

/// The value in a selector or exclude tag that matches any value of the key.
pub const ANY_VALUE: &str = "*";

/// The longest policy name (it becomes the value of the `autosnap:policy` tag).
pub const MAX_NAME_CHARS: usize = 128;

/// The shortest `consistency.freeze_timeout` or `hook_timeout` accepted, in seconds (the
/// freeze watchdog refuses a shorter freeze timeout).
pub const MIN_CONSISTENCY_TIMEOUT_SECS: i64 = 1;

/// `consistency.freeze_timeout` when the policy does not set it.
pub const DEFAULT_FREEZE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// `consistency.hook_timeout` when the policy does not set it.
pub const DEFAULT_HOOK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// What a policy backs up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceKind {
    /// One snapshot per EBS volume.
    Volume,
    /// One crash-consistent set of snapshots of all of an instance's volumes.
    Instance,
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResourceKind::Volume => "volume",
            ResourceKind::Instance => "instance",
        })
    }
}

/// One `select` entry: a target matches when it has all these tags.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    pub tags: Tags,
}

/// What a policy leaves out even when a selector matches.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exclude {
    /// Any one of these tags (value `"*"`: any value) excludes a target.
    #[serde(default, skip_serializing_if = "Tags::is_empty")]
    pub tags: Tags,
    /// Targets (or, for instance policies, volumes of the set) left out by id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<String>,
}

impl Exclude {
    /// Whether nothing is excluded.
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty() && self.ids.is_empty()
    }
}

/// A cross-region copy of every backup, with its own retention in that region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyRule {
    pub region: String,
    /// Copy into this other account (a `[[backup_account]]`) instead of this account: see
    /// [`crate::backup_account`]. `kms_key` is then a key ARN of that account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// KMS key (id, ARN or alias) that encrypts the copies; the default EBS key when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key: Option<String>,
    /// Retention of the copies in `region`; the policy's `retain` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain: Option<KeepPolicy>,
    /// The lock put on each copy; the policy's `lock` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<crate::lock::LockPolicy>,
    /// Archive copies this old that retention keeps; the policy's `archive_after` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_after: Option<crate::duration::CalendarDuration>,
}

/// What a backup of an instance is: a set of EBS snapshots, or an AMI.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupKind {
    /// EBS snapshots: one per volume, or one crash-consistent set per instance.
    #[default]
    Snapshot,
    /// An AMI of the instance (CreateImage): its snapshots plus everything needed to launch it.
    Ami,
}

impl BackupKind {
    pub fn is_default(&self) -> bool {
        *self == BackupKind::Snapshot
    }
}

impl fmt::Display for BackupKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackupKind::Snapshot => "snapshot",
            BackupKind::Ami => "ami",
        })
    }
}

/// One `[[policy]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    pub name: String,
    pub resource: ResourceKind,
    /// `snapshot` (default) or `ami` (instance policies only).
    #[serde(default, skip_serializing_if = "BackupKind::is_default")]
    pub kind: BackupKind,
    /// AMI policies: let CreateImage reboot the instance for a consistent image. Off by
    /// default: a scheduled backup should not restart production instances.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reboot: bool,
    /// AMI policies: make every snapshot of each new AMI encrypted (CopyImage with
    /// encryption when CreateImage made unencrypted ones).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub encrypt: bool,
    /// AMI policies: the KMS key for `encrypt` (implies it); the default EBS key when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key: Option<String>,
    pub select: Vec<Selector>,
    #[serde(default, skip_serializing_if = "Exclude::is_empty")]
    pub exclude: Exclude,
    /// Instance policies: leave the root volume out of the set.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exclude_boot: bool,
    pub schedule: Schedule,
    /// IANA time zone the cron schedule is evaluated in (UTC when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    pub retain: KeepPolicy,
    /// Tags put on every backup; values may use variables (see [`crate::variables`]).
    #[serde(default, skip_serializing_if = "Tags::is_empty")]
    pub tags: Tags,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copy: Vec<CopyRule>,
    /// Regions whose targets this policy backs up; the configured region when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
    /// The snapshot description; may use variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Instance policies, when autosnap runs on that instance: filesystem
    /// consistency for its sets (freeze, hooks). Ignored for other instances.
    #[serde(default, skip_serializing_if = "Consistency::is_off")]
    pub consistency: Consistency,
    /// An EBS snapshot lock put on each new backup right after it is created (snapshot
    /// policies; see [`crate::lock::LockPolicy`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<crate::lock::LockPolicy>,
    /// Move backups this old that retention keeps to the EBS Snapshots Archive tier (`run`;
    /// see [`crate::archive_plan`]). Copy rules inherit it unless they set their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_after: Option<crate::duration::CalendarDuration>,
    /// Prove the newest backup of each target restores, this often (snapshot policies; see
    /// [`crate::restore_test`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_test: Option<crate::restore_test::RestoreTestPolicy>,
}

/// `consistency = { freeze = ["/var/lib/db"], pre = ["…"], post = ["…"] }`:
/// freeze these mount paths (and run these hooks) around the instance's
/// CreateSnapshots call when autosnap runs on the instance itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consistency {
    /// Absolute mount paths to freeze.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub freeze: Vec<String>,
    /// Shell commands run before the freeze.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pre: Vec<String>,
    /// Shell commands run after the thaw, always.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub post: Vec<String>,
    /// The watchdog thaws after this long (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze_timeout: Option<String>,
    /// Hooks are killed after this long (default 60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_timeout: Option<String>,
    /// When a pre hook fails: "fail" (no snapshot; default) or "crash" (a
    /// crash-consistent snapshot, tagged so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_hook_failure: Option<String>,
}

impl Consistency {
    pub fn is_off(&self) -> bool {
        self.freeze.is_empty() && self.pre.is_empty() && self.post.is_empty()
    }

    /// `freeze_timeout`, or [`DEFAULT_FREEZE_TIMEOUT`] when it is not set. An error (which
    /// [`PolicyConfig::validate`] reports first) is never replaced by the default.
    pub fn freeze_timeout_or_default(&self) -> Result<std::time::Duration, DurationError> {
        self.freeze_timeout
            .as_deref()
            .map_or(Ok(DEFAULT_FREEZE_TIMEOUT), crate::duration::parse_timeout)
    }

    /// `hook_timeout`, or [`DEFAULT_HOOK_TIMEOUT`] when it is not set.
    pub fn hook_timeout_or_default(&self) -> Result<std::time::Duration, DurationError> {
        self.hook_timeout
            .as_deref()
            .map_or(Ok(DEFAULT_HOOK_TIMEOUT), crate::duration::parse_timeout)
    }
}

/// What is wrong with a policy: which policy, which field, and the problem.
///
/// Displays as `policy "prod-daily": schedule "0 3 * *" is not …`, or `policy #2: name …`
/// when the policy has no name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} {field} {problem}", policy_label(.index, .policy))]
pub struct PolicyError {
    /// Position of the policy in the config (0-based).
    pub index: usize,
    /// Its name (may be empty when that is the problem).
    pub policy: String,
    /// The field, e.g. `schedule`, `copy[0].region`, `tags.Team`.
    pub field: String,
    /// What is wrong, phrased to follow the field name.
    pub problem: String,
}

fn policy_label(index: &usize, name: &str) -> String {
    if name.is_empty() {
        format!("policy #{}:", index + 1)
    } else {
        format!("policy {name:?}:")
    }
}

/// Checks every policy, in order, and returns the first problem.
///
/// `default_region` is the configured region (`aws.region`); policies without `regions` back
/// up that region. When it is unknown (it may come from the environment at run time), the
/// check that a copy does not go to a source region is skipped for such policies.
pub fn validate_policies(
    policies: &[PolicyConfig],
    default_region: Option<&str>,
) -> Result<(), PolicyError> {
    let mut names = HashSet::new();
    for (index, policy) in policies.iter().enumerate() {
        policy.validate_at(index, default_region)?;
        if !names.insert(policy.name.as_str()) {
            return Err(PolicyError {
                index,
                policy: policy.name.clone(),
                field: "name".into(),
                problem: "is used by another policy: policy names must be unique".into(),
            });
        }
    }
    Ok(())
}

impl PolicyConfig {
    /// Checks this policy on its own (uniqueness of names is [`validate_policies`]' job).
    pub fn validate(&self, default_region: Option<&str>) -> Result<(), PolicyError> {
        self.validate_at(0, default_region)
    }

    fn validate_at(&self, index: usize, default_region: Option<&str>) -> Result<(), PolicyError> {
        let fail = |field: &str, problem: String| PolicyError {
            index,
            policy: self.name.clone(),
            field: field.to_owned(),
            problem,
        };

        // name
        if self.name.trim().is_empty() {
            return Err(fail("name", "is empty: give every policy a name".into()));
        }
        if let Some(bad) = self
            .name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        {
            return Err(fail(
                "name",
                format!("contains {bad:?}: use letters, digits, '_', '.' and '-'"),
            ));
        }
        if self.name.chars().count() > MAX_NAME_CHARS {
            return Err(fail(
                "name",
                format!("is longer than {MAX_NAME_CHARS} characters"),
            ));
        }

        // lock: checked here so `config check` refuses it, before any run.
        if let Some(lock) = &self.lock {
            if self.kind == BackupKind::Ami {
                return Err(fail(
                    "lock",
                    "applies to snapshot policies only for now: AMI backups are not locked".into(),
                ));
            }
            lock.request().map_err(|e| fail("lock", e.to_string()))?;
        }
        for (i, rule) in self.copy.iter().enumerate() {
            if let Some(lock) = &rule.lock {
                if self.kind == BackupKind::Ami {
                    return Err(fail(
                        &format!("copy[{i}].lock"),
                        "applies to snapshot policies only for now: AMI backups are not locked"
                            .into(),
                    ));
                }
                lock.request()
                    .map_err(|e| fail(&format!("copy[{i}].lock"), e.to_string()))?;
            }
        }

        if let Some(rt) = &self.restore_test {
            if self.kind == BackupKind::Ami {
                return Err(fail(
                    "restore_test",
                    "applies to snapshot policies only for now: test an AMI's snapshots with \
                     `autosnap test-restore SNAPSHOT_ID`"
                        .into(),
                ));
            }
            rt.validate()
                .map_err(|e| fail("restore_test", e.to_string()))?;
        }

        // archive_after: an archive that is a loss every time is refused before any run.
        let copy_archives = self.copy.iter().enumerate().filter_map(|(i, rule)| {
            let after = rule
                .archive_after
                .as_ref()
                .or(self.archive_after.as_ref())?;
            let field = match rule.archive_after {
                Some(_) => format!("copy[{i}].archive_after"),
                None => "archive_after".to_string(),
            };
            Some((field, after, self.copy_retention(rule)))
        });
        let archives = self
            .archive_after
            .iter()
            .map(|a| ("archive_after".to_string(), a, &self.retain))
            .chain(copy_archives);
        for (field, after, retain) in archives {
            if self.kind == BackupKind::Ami {
                return Err(fail(
                    &field,
                    crate::archive_plan::ArchiveAfterError::Ami.to_string(),
                ));
            }
            crate::archive_plan::validate(after, retain, &self.schedule, self.tz())
                .map_err(|e| fail(&field, e.to_string()))?;
        }

        // consistency
        let c = &self.consistency;
        if !c.is_off() && self.resource != ResourceKind::Instance {
            return Err(fail(
                "consistency",
                "applies to instance policies only (autosnap freezes filesystems on the instance it runs on)".into(),
            ));
        }
        if let Some(p) = c.freeze.iter().find(|p| !p.starts_with('/')) {
            return Err(fail(
                "consistency.freeze",
                format!("has {p:?}: give absolute mount paths such as \"/var/lib/db\""),
            ));
        }
        for (field, value) in [
            ("consistency.freeze_timeout", &c.freeze_timeout),
            ("consistency.hook_timeout", &c.hook_timeout),
        ] {
            if let Some(v) = value {
                match crate::duration::parse_fixed(v) {
                    Err(e) => return Err(fail(field, format!("is {v:?}: {e}"))),
                    // The freeze watchdog refuses less (autosnap-freeze's MIN_FREEZE_TIMEOUT):
                    // say so at `config check` and `plan`, not when the policy first runs.
                    Ok(d) if d < chrono::Duration::seconds(MIN_CONSISTENCY_TIMEOUT_SECS) => {
                        return Err(fail(
                            field,
                            format!(
                                "is {v:?}: give at least {MIN_CONSISTENCY_TIMEOUT_SECS}s (a \
                                 filesystem cannot be frozen and checked in less)"
                            ),
                        ))
                    }
                    Ok(_) => {}
                }
            }
        }
        if let Some(v) = &c.on_hook_failure {
            if v != "fail" && v != "crash" {
                return Err(fail(
                    "consistency.on_hook_failure",
                    format!("is {v:?}: use \"fail\" or \"crash\""),
                ));
            }
        }

        // kind
        if self.kind == BackupKind::Ami {
            if self.resource != ResourceKind::Instance {
                return Err(fail(
                    "kind",
                    "\"ami\" needs resource = \"instance\": an AMI is made of an instance".into(),
                ));
            }
            if !c.is_off() {
                return Err(fail(
                    "consistency",
                    "does not apply to AMI policies: CreateImage cannot run inside a filesystem \
                     freeze; use reboot = true for a consistent image, or kind = \"snapshot\""
                        .into(),
                ));
            }
            if self.exclude_boot {
                return Err(fail(
                    "exclude_boot",
                    "does not apply to AMI policies: an AMI needs its root volume".into(),
                ));
            }
            if let Some(id) = self.exclude.ids.iter().find(|id| id.starts_with("vol-")) {
                return Err(fail(
                    "exclude.ids",
                    format!(
                        "has volume {id:?}: AMI policies back up every volume of an instance; \
                         leave out instances only (i-…), or use kind = \"snapshot\""
                    ),
                ));
            }
            if let Some(k) = &self.kms_key {
                if k.trim().is_empty() {
                    return Err(fail(
                        "kms_key",
                        "is empty: give a key id, ARN or alias".into(),
                    ));
                }
            }
        } else {
            for (field, set) in [
                ("reboot", self.reboot),
                ("encrypt", self.encrypt),
                ("kms_key", self.kms_key.is_some()),
            ] {
                if set {
                    return Err(fail(
                        field,
                        "only applies to AMI policies (kind = \"ami\"); snapshots are \
                         encrypted as their volumes are, or by a copy rule's kms_key"
                            .into(),
                    ));
                }
            }
        }

        // select / exclude
        if self.select.is_empty() {
            return Err(fail(
                "select",
                "is empty: add at least one selector, e.g. select = [{ tags = { Backup = \"daily\" } }]"
                    .into(),
            ));
        }
        for (i, selector) in self.select.iter().enumerate() {
            if selector.tags.is_empty() {
                return Err(fail(
                    &format!("select[{i}]"),
                    "has no tags: a selector needs at least one tag (use \"*\" to match any value)"
                        .into(),
                ));
            }
            if selector.tags.keys().any(|k| k.trim().is_empty()) {
                return Err(fail(
                    &format!("select[{i}].tags"),
                    "has an empty key".into(),
                ));
            }
        }
        if self.exclude.tags.keys().any(|k| k.trim().is_empty()) {
            return Err(fail("exclude.tags", "has an empty key".into()));
        }
        for id in &self.exclude.ids {
            let is_volume = id.parse::<VolumeId>().is_ok();
            let is_instance = id.parse::<InstanceId>().is_ok();
            let ok = match self.resource {
                ResourceKind::Volume => is_volume,
                ResourceKind::Instance => is_volume || is_instance,
            };
            if !ok {
                let expected = match self.resource {
                    ResourceKind::Volume => "a volume id (vol-…)",
                    ResourceKind::Instance => {
                        "an instance id (i-…), or a volume id (vol-…) to leave out of the set"
                    }
                };
                return Err(fail(
                    "exclude.ids",
                    format!("has {id:?}: expected {expected}"),
                ));
            }
        }
        if self.exclude_boot && self.resource == ResourceKind::Volume {
            return Err(fail(
                "exclude_boot",
                "only applies to instance policies (resource = \"instance\"): remove it, or \
                 exclude boot volumes by tag"
                    .into(),
            ));
        }

        // timezone (the schedule itself was checked when it was parsed)
        if let Some(tz) = &self.timezone {
            if tz.parse::<Tz>().is_err() {
                return Err(fail(
                    "timezone",
                    format!(
                        "{tz:?} is not an IANA time zone name such as \"Europe/Berlin\" or \"UTC\""
                    ),
                ));
            }
            if !self.schedule.is_cron() {
                return Err(fail(
                    "timezone",
                    format!(
                        "only applies to cron schedules; schedule {:?} is an interval",
                        self.schedule.as_str()
                    ),
                ));
            }
        }

        // retention
        if let Err(e) = self.retain.validate() {
            return Err(fail("retain", format!("is invalid: {e}")));
        }

        // tags and description
        for (key, value) in &self.tags {
            let field = format!("tags.{key}");
            if key.trim().is_empty() {
                return Err(fail("tags", "has an empty key".into()));
            }
            let lower = key.to_ascii_lowercase();
            if lower.starts_with(AWS_PREFIX) || lower.starts_with(OWN_PREFIX) {
                return Err(fail(
                    "tags",
                    format!("has key {key:?}: the prefixes aws: and autosnap: are reserved"),
                ));
            }
            if key.chars().count() > 128 {
                return Err(fail(
                    "tags",
                    format!("has key {key:?}, longer than 128 characters"),
                ));
            }
            if key.contains("$(") {
                return Err(fail(
                    "tags",
                    format!("has key {key:?}: variables are expanded in values only"),
                ));
            }
            if let Err(e) = check_template(value) {
                return Err(fail(&field, format!("has {e}")));
            }
        }
        if let Some(description) = &self.description {
            if let Err(e) = check_template(description) {
                return Err(fail("description", format!("has {e}")));
            }
        }

        // regions
        let mut seen = HashSet::new();
        for region in &self.regions {
            if let Some(problem) = crate::region::region_problem(region) {
                return Err(fail("regions", problem));
            }
            if !seen.insert(region.as_str()) {
                return Err(fail("regions", format!("lists {region:?} twice")));
            }
        }
        let sources: Vec<&str> = if self.regions.is_empty() {
            default_region.into_iter().collect()
        } else {
            self.regions.iter().map(String::as_str).collect()
        };

        // copies
        let mut copy_regions = HashSet::new();
        for (i, rule) in self.copy.iter().enumerate() {
            if let Some(problem) = crate::region::region_problem(&rule.region) {
                return Err(fail(&format!("copy[{i}].region"), problem));
            }
            // A copy into another account may stay in the source's region.
            if rule.account.is_none() && sources.contains(&rule.region.as_str()) {
                return Err(fail(
                    &format!("copy[{i}].region"),
                    format!(
                        "is {:?}, a region this policy backs up: copies must go to another region",
                        rule.region
                    ),
                ));
            }
            if !copy_regions.insert((rule.account.as_deref(), rule.region.as_str())) {
                return Err(fail(
                    &format!("copy[{i}].region"),
                    format!("{:?} has more than one copy rule", rule.region),
                ));
            }
            if let Some(account) = &rule.account {
                if !crate::accounts::is_account_id(account) {
                    return Err(fail(
                        &format!("copy[{i}].account"),
                        format!("'{account}' is not an AWS account id: expected 12 digits"),
                    ));
                }
                // Copies in another account are pruned there by retention alone for now.
                for (set, field) in [
                    (rule.lock.is_some(), "lock"),
                    (rule.archive_after.is_some(), "archive_after"),
                ] {
                    if set {
                        return Err(fail(
                            &format!("copy[{i}].{field}"),
                            "is not supported on a copy into another account yet: leave it out \
                             (the backup account's own role is what keeps its copies safe)"
                                .into(),
                        ));
                    }
                }
                if self.kind == BackupKind::Ami {
                    return Err(fail(
                        &format!("copy[{i}].account"),
                        "applies to snapshot policies only for now: AMIs are not copied into \
                         another account"
                            .into(),
                    ));
                }
            }
            if let Some(key) = &rule.kms_key {
                if key.trim().is_empty() {
                    return Err(fail(
                        &format!("copy[{i}].kms_key"),
                        "is empty: give a key id, ARN or alias (alias/…), or leave it out for \
                         the default EBS key"
                            .into(),
                    ));
                }
            }
            if let Some(retain) = &rule.retain {
                if let Err(e) = retain.validate() {
                    return Err(fail(
                        &format!("copy[{i}].retain"),
                        format!("is invalid: {e}"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The regions this policy backs up: `regions`, or `default` when that is empty.
    pub fn regions_or(&self, default: &str) -> Vec<String> {
        if self.regions.is_empty() {
            vec![default.to_owned()]
        } else {
            self.regions.clone()
        }
    }

    /// The time zone the schedule is evaluated in (UTC when unset or, before validation,
    /// not a zone name).
    pub fn tz(&self) -> Tz {
        self.timezone
            .as_deref()
            .and_then(|tz| tz.parse().ok())
            .unwrap_or(Tz::UTC)
    }

    /// Whether this policy selects `target`: the right kind, a matching selector, and not
    /// excluded. Regions are not considered here; see [`PolicyConfig::covers`].
    pub fn selects(&self, target: &Target) -> bool {
        target.kind == self.resource
            && self.select.iter().any(|selector| {
                !selector.tags.is_empty() && tags_match_all(&selector.tags, &target.tags)
            })
            && !self.excludes(target)
    }

    /// Whether `exclude` leaves `target` out.
    pub fn excludes(&self, target: &Target) -> bool {
        self.exclude.ids.contains(&target.id)
            || self
                .exclude
                .tags
                .iter()
                .any(|(key, value)| tag_matches(&target.tags, key, value))
    }

    /// Whether `target` is one of this policy's targets: [`selects`](Self::selects) it and it
    /// is in one of the policy's regions (`default_region` when `regions` is empty).
    pub fn covers(&self, target: &Target, default_region: &str) -> bool {
        let in_region = if self.regions.is_empty() {
            target.region == default_region
        } else {
            self.regions.contains(&target.region)
        };
        in_region && self.selects(target)
    }

    /// Volumes of an instance target that `exclude.ids` leaves out of its set.
    pub fn excluded_volumes(&self, target: &Target) -> Vec<String> {
        target
            .volume_ids
            .iter()
            .filter(|v| self.exclude.ids.contains(v))
            .cloned()
            .collect()
    }

    /// Whether a target whose newest backup is `newest` needs one at `now`
    /// (see [`crate::schedule`]).
    pub fn due(&self, newest: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Due {
        self.schedule.due(newest, now, self.tz())
    }

    /// When such a target is due next (`now` when it is due already).
    pub fn next_due(&self, newest: Option<DateTime<Utc>>, now: DateTime<Utc>) -> DateTime<Utc> {
        self.schedule.next_due(newest, now, self.tz())
    }

    /// `ok`, `late` or `missing` for such a target.
    pub fn health(&self, newest: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Health {
        self.schedule.health(newest, now, self.tz())
    }

    /// The retention of the copies made by `rule`: its own, or the policy's.
    pub fn copy_retention<'a>(&'a self, rule: &'a CopyRule) -> &'a KeepPolicy {
        rule.retain.as_ref().unwrap_or(&self.retain)
    }
}

/// Whether `tags` has `key` with `value` (any value when `value` is `"*"`).
fn tag_matches(tags: &Tags, key: &str, value: &str) -> bool {
    match tags.get(key) {
        Some(have) => value == ANY_VALUE || have == value,
        None => false,
    }
}

/// Whether `tags` has every tag of `wanted`.
fn tags_match_all(wanted: &Tags, tags: &Tags) -> bool {
    wanted
        .iter()
        .all(|(key, value)| tag_matches(tags, key, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(id: &str, kind: ResourceKind, tags: &[(&str, &str)]) -> Target {
        Target {
            id: id.into(),
            kind,
            region: "us-east-1".into(),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            name: None,
            volume_ids: Vec::new(),
        }
    }

    fn policy(text: &str) -> PolicyConfig {
        toml::from_str(text).unwrap_or_else(|e| panic!("{text}\n{e}"))
    }

    const BASE: &str = r#"
name = "p"
resource = "volume"
schedule = "1d"
retain = { daily = 7 }
"#;

    #[test]
    fn selection_all_tags_of_any_selector() {
        let p = policy(&format!(
            "{BASE}select = [{{ tags = {{ Backup = \"daily\", Env = \"prod\" }} }}, {{ tags = {{ Critical = \"*\" }} }}]\n\
             exclude = {{ tags = {{ NoBackup = \"true\" }}, ids = [\"vol-0000000b\"] }}"
        ));
        let v = ResourceKind::Volume;
        let cases = [
            (
                target("vol-0000000a", v, &[("Backup", "daily"), ("Env", "prod")]),
                true,
            ),
            (target("vol-0000000a", v, &[("Backup", "daily")]), false),
            (
                target("vol-0000000a", v, &[("Backup", "daily"), ("Env", "dev")]),
                false,
            ),
            (target("vol-0000000a", v, &[("Critical", "")]), true),
            (
                target(
                    "vol-0000000a",
                    v,
                    &[("Critical", "yes"), ("NoBackup", "true")],
                ),
                false,
            ),
            (
                target(
                    "vol-0000000a",
                    v,
                    &[("Critical", "yes"), ("NoBackup", "false")],
                ),
                true,
            ),
            (target("vol-0000000b", v, &[("Critical", "yes")]), false),
            (
                target("i-0000000a", ResourceKind::Instance, &[("Critical", "yes")]),
                false,
            ),
        ];
        for (t, expected) in cases {
            assert_eq!(p.selects(&t), expected, "{t:?}");
        }
    }

    #[test]
    fn covers_checks_regions() {
        let p = policy(&format!("{BASE}select = [{{ tags = {{ B = \"*\" }} }}]"));
        let mut t = target("vol-0000000a", ResourceKind::Volume, &[("B", "1")]);
        assert!(p.covers(&t, "us-east-1"));
        assert!(!p.covers(&t, "eu-west-1"));
        t.region = "eu-west-1".into();
        let p2 = PolicyConfig {
            regions: vec!["eu-west-1".into()],
            ..p
        };
        assert!(p2.covers(&t, "us-east-1"));
    }

    #[test]
    fn kind_display_and_serde() {
        assert_eq!(ResourceKind::Instance.to_string(), "instance");
        assert_eq!(
            serde_json::to_string(&ResourceKind::Volume).unwrap(),
            "\"volume\""
        );
    }

    #[test]
    fn copy_retention_defaults_to_the_policy() {
        let p = policy(&format!(
            "{BASE}select = [{{ tags = {{ B = \"*\" }} }}]\n\
             copy = [{{ region = \"us-west-2\" }}, {{ region = \"eu-west-1\", retain = {{ last = 2 }} }}]"
        ));
        assert_eq!(p.copy_retention(&p.copy[0]).to_string(), "keep daily 7");
        assert_eq!(p.copy_retention(&p.copy[1]).to_string(), "keep last 2");
    }
}

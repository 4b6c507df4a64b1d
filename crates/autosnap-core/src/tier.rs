//! The EBS Snapshots Archive tier: where a snapshot is stored, what EC2 refuses to archive,
//! and the 90-day minimum.
//!
//! AWS's rules (EBS user guide, "Archive Amazon EBS snapshots" and its considerations): only a
//! `completed` snapshot you own can be archived, and not one that a registered AMI uses; an
//! archived snapshot is a full snapshot, is billed for at least 90 days in the archive tier, and
//! must be restored (temporarily for 1–180 days, or permanently) before a volume can be created
//! from it; a restore can take up to 72 hours.

use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use crate::model::Snapshot;

/// The minimum archive period: deleting or permanently restoring earlier is billed for the
/// remaining days.
pub const MIN_ARCHIVE_DAYS: i64 = 90;
/// The longest temporary restore EC2 accepts, in days.
pub const MAX_TEMPORARY_RESTORE_DAYS: i32 = 180;
/// What AWS documents as the longest a restore from the archive tier can take.
pub const RESTORE_HOURS_AT_MOST: i64 = 72;

/// The storage tier DescribeSnapshots reports (`StorageTier`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageTier {
    /// Usable: incremental storage, or a temporarily restored archived snapshot.
    #[default]
    Standard,
    /// Archived: a volume cannot be created from it until it is restored.
    Archive,
    /// A tier this version of autosnap does not know.
    #[serde(untagged)]
    Other(String),
}

impl StorageTier {
    pub fn parse(s: &str) -> StorageTier {
        match s {
            "" | "standard" => StorageTier::Standard,
            "archive" => StorageTier::Archive,
            other => StorageTier::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            StorageTier::Standard => "standard",
            StorageTier::Archive => "archive",
            StorageTier::Other(s) => s,
        }
    }
}

impl fmt::Display for StorageTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why EC2 would refuse to archive a snapshot, found before asking it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveRefusal {
    #[error("it is {0}; only completed snapshots can be archived")]
    NotCompleted(String),
    #[error("it is owned by account {0}; only the owner can archive a snapshot")]
    NotOwned(String),
    #[error("the AMI {0} uses it; deregister or disable the AMI before archiving it")]
    UsedByImage(String),
    #[error("it is already in the archive tier")]
    AlreadyArchived,
}

/// Whether EC2 would archive `snap` for `account`; `image` is a registered AMI that uses it.
pub fn archive_refusal(
    snap: &Snapshot,
    account: Option<&str>,
    image: Option<&str>,
) -> Option<ArchiveRefusal> {
    if snap.storage_tier == StorageTier::Archive {
        return Some(ArchiveRefusal::AlreadyArchived);
    }
    if !snap.is_completed() {
        return Some(ArchiveRefusal::NotCompleted(snap.state.clone()));
    }
    if let (Some(owner), Some(account)) = (snap.owner_id.as_deref(), account) {
        if owner != account {
            return Some(ArchiveRefusal::NotOwned(owner.to_string()));
        }
    }
    image.map(|i| ArchiveRefusal::UsedByImage(i.to_string()))
}

/// How a restore from the archive tier is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "days")]
pub enum RestoreRequest {
    /// Back in the standard tier for this many days (1–180), then archived again.
    Temporary(i32),
    /// Moved back to the standard tier for good (early: billed for the rest of the 90 days).
    Permanent,
}

/// The days of the 90-day minimum still to run for a snapshot archived at `archived`: what
/// deleting or permanently restoring it at `now` is billed for anyway. None when served.
pub fn minimum_days_left(archived: DateTime<Utc>, now: DateTime<Utc>) -> Option<i64> {
    let ends = archived + TimeDelta::days(MIN_ARCHIVE_DAYS);
    if now >= ends {
        return None;
    }
    let left = ends - now;
    // Whole days, rounded up: "1 day" rather than "0 days" for the last hours.
    Some((left.num_hours() + 23) / 24)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tags::Tags;

    fn snap(state: &str, tier: StorageTier, owner: &str) -> Snapshot {
        Snapshot {
            snapshot_id: "snap-1".into(),
            volume_id: None,
            state: state.into(),
            progress: None,
            start_time: None,
            size_gib: Some(8),
            encrypted: false,
            kms_key_id: None,
            description: None,
            owner_id: Some(owner.into()),
            managed: true,
            tags: Tags::default(),
            storage_tier: tier,
            restore_expiry: None,
        }
    }

    #[test]
    fn refusals_in_the_order_ec2_reports_them() {
        let a = Some("111");
        let ok = snap("completed", StorageTier::Standard, "111");
        assert_eq!(archive_refusal(&ok, a, None), None);
        assert_eq!(
            archive_refusal(&ok, a, Some("ami-1")),
            Some(ArchiveRefusal::UsedByImage("ami-1".into()))
        );
        assert_eq!(
            archive_refusal(&snap("pending", StorageTier::Standard, "111"), a, None),
            Some(ArchiveRefusal::NotCompleted("pending".into()))
        );
        assert_eq!(
            archive_refusal(&snap("completed", StorageTier::Standard, "222"), a, None),
            Some(ArchiveRefusal::NotOwned("222".into()))
        );
        assert_eq!(
            archive_refusal(&snap("completed", StorageTier::Archive, "111"), a, None),
            Some(ArchiveRefusal::AlreadyArchived)
        );
    }

    #[test]
    fn minimum_days_left_rounds_up_and_ends() {
        let t = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(minimum_days_left(t, t), Some(90));
        assert_eq!(minimum_days_left(t, t + TimeDelta::days(89)), Some(1));
        assert_eq!(
            minimum_days_left(t, t + TimeDelta::days(89) + TimeDelta::hours(23)),
            Some(1)
        );
        assert_eq!(minimum_days_left(t, t + TimeDelta::days(90)), None);
    }

    #[test]
    fn tier_parses_and_serializes() {
        assert_eq!(StorageTier::parse("archive"), StorageTier::Archive);
        assert_eq!(StorageTier::parse(""), StorageTier::Standard);
        assert_eq!(
            serde_json::to_string(&StorageTier::Archive).unwrap(),
            "\"archive\""
        );
        assert_eq!(
            serde_json::to_string(&StorageTier::Other("x".into())).unwrap(),
            "\"x\""
        );
    }
}

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

/// us-east-1 prices in US dollars, from AWS's "Pricing and billing for archiving Amazon EBS
/// snapshots" (https://docs.aws.amazon.com/ebs/latest/userguide/snapshot-archive-pricing.html),
/// as of 2026-12-03; docs/protecting-backups.md has the same table. Other regions differ.
pub mod price {
    /// Standard tier, per GB-month (incremental: only changed blocks are billed).
    pub const STANDARD_GB_MONTH: f64 = 0.05;
    /// Archive tier, per GB-month (a full snapshot: every written block).
    pub const ARCHIVE_GB_MONTH: f64 = 0.0125;
    /// Restoring from the archive tier, per GB, once per restore.
    pub const RETRIEVAL_GB: f64 = 0.03;
    /// Where and when these prices hold, for every figure autosnap prints.
    pub const AS_OF: &str = "us-east-1 prices as of 2026-12-03";
}

/// What archiving one snapshot costs, at most: EC2 does not report how many blocks a snapshot
/// holds, so the volume's size is the bound (an archived snapshot is a full snapshot).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ArchiveCost {
    pub size_gib: i32,
    /// Per month in the archive tier.
    pub archive_month: f64,
    /// Per month in the standard tier if the snapshot were full; incremental ones cost less,
    /// which is why archiving daily incrementals can cost more than keeping them.
    pub standard_month_if_full: f64,
    /// One restore from the archive tier.
    pub restore: f64,
    /// The least it costs once archived: 90 days in the archive tier.
    pub minimum: f64,
}

impl ArchiveCost {
    pub fn of(size_gib: i32) -> ArchiveCost {
        let gb = f64::from(size_gib.max(0));
        let archive_month = gb * price::ARCHIVE_GB_MONTH;
        ArchiveCost {
            size_gib,
            archive_month,
            standard_month_if_full: gb * price::STANDARD_GB_MONTH,
            restore: gb * price::RETRIEVAL_GB,
            minimum: archive_month * MIN_ARCHIVE_DAYS as f64 / 30.0,
        }
    }

    /// `at most $0.10/month archived (vs $0.40 if full in standard), $0.24 per restore,
    /// at least $0.30 for the 90-day minimum (us-east-1 prices as of …)`.
    pub fn describe(&self) -> String {
        format!(
            "at most ${:.2}/month archived for {} GiB (vs ${:.2}/month for a full snapshot in \
             standard; an incremental one costs less), ${:.2} per restore, at least ${:.2} for \
             the {MIN_ARCHIVE_DAYS}-day minimum ({})",
            self.archive_month,
            self.size_gib,
            self.standard_month_if_full,
            self.restore,
            self.minimum,
            price::AS_OF
        )
    }
}

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

/// `archived 40 days ago: the remaining 50 days of the 90-day minimum are billed anyway`, for a
/// snapshot archived at `archived` and deleted at `now`; None once the minimum is served.
pub fn early_deletion_charge(archived: DateTime<Utc>, now: DateTime<Utc>) -> Option<String> {
    let left = minimum_days_left(archived, now)?;
    let ago = (now - archived).num_days();
    Some(format!(
        "archived {ago} days ago: the remaining {left} days of the {MIN_ARCHIVE_DAYS}-day \
         minimum are billed anyway"
    ))
}

/// Notes on each deletion in `plan` whose snapshot was archived (`archived`: snapshot id to
/// archive completion time) less than 90 days ago. The deletion stays: the charge is reported.
pub fn note_early_deletions(
    plan: &mut crate::plan::Plan,
    archived: &std::collections::HashMap<String, DateTime<Utc>>,
) {
    let now = plan.now;
    for p in &mut plan.policies {
        for t in &mut p.targets {
            for g in &mut t.groups {
                for b in g.backups.iter_mut().filter(|b| b.delete) {
                    b.archive_charge = b
                        .snapshot_ids
                        .iter()
                        .filter_map(|id| archived.get(id.as_str()))
                        .find_map(|t| early_deletion_charge(*t, now));
                }
            }
        }
    }
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
    fn archive_cost_from_the_price_table() {
        let c = ArchiveCost::of(100);
        // AWS's own examples: 100 GiB archived is $1.25 a month and $3 to restore.
        assert!((c.archive_month - 1.25).abs() < 1e-9);
        assert!((c.restore - 3.0).abs() < 1e-9);
        assert!((c.standard_month_if_full - 5.0).abs() < 1e-9);
        assert!((c.minimum - 3.75).abs() < 1e-9);
        let d = c.describe();
        assert!(
            d.contains("$1.25/month") && d.contains("$3.00 per restore"),
            "{d}"
        );
        assert!(d.contains("us-east-1 prices as of"), "{d}");
    }

    #[test]
    fn early_deletion_charge_counts_days_left() {
        let now = DateTime::parse_from_rfc3339("2026-06-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let c = early_deletion_charge(now - TimeDelta::days(40), now).unwrap();
        assert!(
            c.starts_with("archived 40 days ago: the remaining 50 days"),
            "{c}"
        );
        assert_eq!(early_deletion_charge(now - TimeDelta::days(90), now), None);
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

//! `archive_after`: which kept backups a policy moves to the EBS Snapshots Archive tier, with
//! the cost trade-off of each, and why the others old enough stay where they are.
//!
//! ```toml
//! [[policy]]
//! archive_after = "90d"                                  # the source region's backups
//! copy = [{ region = "us-west-2", archive_after = "30d" }] # a copy rule's own (else the policy's)
//! ```
//!
//! A backup is archived when retention keeps it, it is at least `archive_after` old, and none of
//! these holds (each is a line in the plan):
//! * it is the newest backup of its group: the next incremental snapshot builds on it, so
//!   archiving it frees little standard storage (AWS, "Archiving incremental snapshots of a single
//!   volume") and the backup a restore most likely wants would take up to 72 hours to use;
//! * retention lets it go before it has spent the 90-day minimum in the archive tier: the rest
//!   would be billed anyway. This is decided by applying the group's retention at `now + 90
//!   days` to the backups that stay plus the backups the schedule will make until then;
//! * it is already archived, being archived, restored from the archive (temporarily, or for good
//!   by someone who wanted it back), not `completed`, or used by an AMI (EC2 refuses those).
//!
//! A snapshot lock does not stop archiving: AWS documents no rule against archiving a locked
//! snapshot, and a lock only makes a backup live longer, which is what the archive tier is for.
//!
//! Sizes: an archived snapshot is a full snapshot (every block written to the volume when it was
//! taken). EC2 reports that size as `FullSnapshotSizeInBytes` on DescribeSnapshots where it knows
//! it; otherwise the volume's size is used, an upper bound. Prices are [`crate::tier::price`].
//!
//! `run` does create → copy → archive → prune; `prune` never archives. Pure: the AWS layer reads
//! [`SnapshotFacts`] for [`candidates`], [`plan_archives`] decides.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::duration::CalendarDuration;
use crate::plan::{BackupDecision, Plan};
use crate::policy::PolicyConfig;
use crate::retention::{apply, Count, KeepPolicy, RetentionItem};
use crate::schedule::Schedule;
use crate::tier::{price, StorageTier, MIN_ARCHIVE_DAYS, RESTORE_HOURS_AT_MOST};

/// The shortest `archive_after`: a backup younger than a day is the one a restore most
/// likely needs, and it cannot wait up to 72 hours.
pub const MIN_ARCHIVE_AFTER: TimeDelta = TimeDelta::days(1);

/// More future backups than this are not projected (a schedule of minutes over 90 days); the
/// projection then ends early, which can only make a backup look longer-lived.
const MAX_PROJECTED: usize = 20_000;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// What is wrong with an `archive_after`. Phrased to follow the field name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveAfterError {
    #[error(
        "is {0:?}: give a fixed length in days or weeks (e.g. \"90d\"); months and years vary \
         in length"
    )]
    NotFixed(String),
    #[error(
        "is {0:?}: give at least 1d (the newest backups are the ones restores need, and an \
         archived snapshot takes up to 72 hours to restore)"
    )]
    TooShort(String),
    #[error(
        "applies to snapshot policies only: EC2 does not archive a snapshot that a registered \
         AMI uses"
    )]
    Ami,
    #[error(
        "is {after:?}, but retention ({retain}) keeps a backup about {kept_days} days at most: \
         every archived backup would be deleted before its {MIN_ARCHIVE_DAYS} days in the archive \
         tier (which are billed anyway). Keep backups longer (e.g. monthly = 6), or drop \
         archive_after"
    )]
    AlwaysEarly {
        after: String,
        retain: String,
        kept_days: i64,
    },
}

/// Checks an `archive_after` against the retention of the backups it applies to and the
/// schedule that makes them; returns its length.
pub fn validate(
    after: &CalendarDuration,
    retain: &KeepPolicy,
    schedule: &Schedule,
    tz: Tz,
) -> Result<TimeDelta, ArchiveAfterError> {
    let written = after.to_string();
    let length = after
        .fixed()
        .ok_or_else(|| ArchiveAfterError::NotFixed(written.clone()))?;
    if length < MIN_ARCHIVE_AFTER {
        return Err(ArchiveAfterError::TooShort(written));
    }
    if let Some(kept) = longest_kept(retain, schedule, tz) {
        if kept < length + TimeDelta::days(MIN_ARCHIVE_DAYS) {
            return Err(ArchiveAfterError::AlwaysEarly {
                after: written,
                retain: retain.to_string(),
                kept_days: kept.num_days(),
            });
        }
    }
    Ok(length)
}

/// An upper bound of how long `retain` keeps any backup while `schedule` keeps making new
/// ones; `None` when some rule can keep a backup for ever (a tag rule, an unlimited count).
///
/// A bucket rule keeping N (daily = 7) lets a backup go once N newer buckets have a backup; a
/// new bucket starts at least every max(bucket length, longest gap between scheduled backups),
/// so N + 1 of those is a bound. `last = N`: N + 1 gaps. `within = D`: D and one gap (the
/// window follows the newest backup); `within_daily = D`: D, a gap and a bucket.
pub fn longest_kept(retain: &KeepPolicy, schedule: &Schedule, tz: Tz) -> Option<TimeDelta> {
    if !retain.keep_tags.is_empty() {
        return None;
    }
    let gap = longest_gap(schedule, tz)?;
    let counts = [
        (TimeDelta::zero(), retain.last),
        (TimeDelta::hours(1), retain.hourly),
        (TimeDelta::days(1), retain.daily),
        (TimeDelta::weeks(1), retain.weekly),
        (TimeDelta::days(31), retain.monthly),
        (TimeDelta::days(366), retain.yearly),
    ];
    let mut longest = TimeDelta::zero();
    for (bucket, count) in counts {
        match count {
            Count::Off | Count::N(0) => {}
            Count::Unlimited => return None,
            Count::N(n) => longest = longest.max(bucket.max(gap) * (n as i32 + 1)),
        }
    }
    let withins = [
        (TimeDelta::zero(), retain.within),
        (TimeDelta::hours(1), retain.within_hourly),
        (TimeDelta::days(1), retain.within_daily),
        (TimeDelta::weeks(1), retain.within_weekly),
        (TimeDelta::days(31), retain.within_monthly),
        (TimeDelta::days(366), retain.within_yearly),
    ];
    for (bucket, within) in withins {
        if let Some(d) = within.filter(|d| !d.is_zero()) {
            longest = longest.max(at_most(&d) + gap + bucket);
        }
    }
    Some(longest)
}

/// A calendar duration's longest length (months of 31 days, years of 366).
fn at_most(d: &CalendarDuration) -> TimeDelta {
    let fixed = CalendarDuration {
        years: 0,
        months: 0,
        ..*d
    }
    .fixed()
    .unwrap_or(TimeDelta::MAX / 4);
    fixed + TimeDelta::days(31 * i64::from(d.months) + 366 * i64::from(d.years))
}

/// The longest time between two scheduled backups: the interval, or for a cron schedule the
/// longest gap among its slots over a year (from a fixed date: the core reads no clock).
fn longest_gap(schedule: &Schedule, tz: Tz) -> Option<TimeDelta> {
    if let Some(interval) = schedule.interval() {
        return Some(interval);
    }
    let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single()?;
    let end = start + TimeDelta::days(400);
    let mut previous = schedule.next_slot(start, tz)?;
    let mut gap = TimeDelta::zero();
    for _ in 0..2_000 {
        let Some(next) = schedule.next_slot(previous, tz) else {
            break;
        };
        gap = gap.max(next - previous);
        previous = next;
        if previous > end {
            break;
        }
    }
    (gap > TimeDelta::zero()).then_some(gap)
}

/// What EC2 says about one snapshot that may be archived: DescribeSnapshots,
/// DescribeSnapshotTierStatus, and the AMIs the inventory found using it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotFacts {
    pub snapshot_id: String,
    pub state: String,
    pub storage_tier: StorageTier,
    /// DescribeSnapshotTierStatus' `LastTieringOperationStatus` (`archival-in-progress`, …).
    pub last_tiering: Option<String>,
    /// The volume's size: an upper bound of the full snapshot.
    pub volume_size_gib: Option<i32>,
    /// `FullSnapshotSizeInBytes`, where EC2 reports it.
    pub full_size_bytes: Option<i64>,
    /// A registered AMI that uses it.
    pub used_by_image: Option<String>,
}

/// Where a size figure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SizeSource {
    /// EC2's `FullSnapshotSizeInBytes`: what the archive tier bills.
    FullSnapshotSize,
    /// The volume's size: an upper bound (EC2 did not report the full snapshot size).
    VolumeSize,
}

/// The cost trade-off of archiving one backup, from [`crate::tier::price`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArchiveFigures {
    /// The full snapshot's size in GiB (billed as GB).
    pub size_gib: f64,
    pub size_from: SizeSource,
    /// Per month in the standard tier if it held every block; an incremental snapshot holds
    /// only the blocks changed since the one before, so it costs this or less.
    pub standard_month_at_most: f64,
    /// Per month in the archive tier.
    pub archive_month: f64,
    /// Per GB restored from the archive tier.
    pub retrieval_per_gb: f64,
    /// One restore of this backup.
    pub retrieval: f64,
    /// The least it costs once archived: the 90-day minimum.
    pub minimum: f64,
    pub minimum_days: i64,
    /// `us-east-1 prices as of …`.
    pub prices: &'static str,
}

impl ArchiveFigures {
    pub fn of(size_gib: f64, size_from: SizeSource) -> ArchiveFigures {
        let archive_month = size_gib * price::ARCHIVE_GB_MONTH;
        ArchiveFigures {
            size_gib,
            size_from,
            standard_month_at_most: size_gib * price::STANDARD_GB_MONTH,
            archive_month,
            retrieval_per_gb: price::RETRIEVAL_GB,
            retrieval: size_gib * price::RETRIEVAL_GB,
            minimum: archive_month * MIN_ARCHIVE_DAYS as f64 / 30.0,
            minimum_days: MIN_ARCHIVE_DAYS,
            prices: price::AS_OF,
        }
    }

    /// `$0.40/mo → $0.10/mo for 8 GiB (volume size, an upper bound), retrieval $0.03/GB
    /// ($0.24 a restore), billed ≥ 90 days ($0.30)`.
    pub fn describe(&self) -> String {
        let from = match self.size_from {
            SizeSource::FullSnapshotSize => "full snapshot size",
            SizeSource::VolumeSize => "volume size, an upper bound",
        };
        format!(
            "${:.2}/mo → ${:.2}/mo for {} GiB ({from}; standard is less for an incremental \
             snapshot), retrieval ${:.2}/GB (${:.2} a restore, up to {RESTORE_HOURS_AT_MOST} \
             hours), billed ≥ {} days (${:.2})",
            self.standard_month_at_most,
            self.archive_month,
            gib(self.size_gib),
            self.retrieval_per_gb,
            self.retrieval,
            self.minimum_days,
            self.minimum,
        )
    }
}

/// `8`, or `7.5` for a size that is not whole.
fn gib(size: f64) -> String {
    if (size - size.round()).abs() < 0.005 {
        format!("{}", size.round() as i64)
    } else {
        format!("{size:.2}")
    }
}

/// One backup old enough to archive: archived by `run`, or left where it is and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArchiveDecision {
    pub backup_id: String,
    pub snapshot_ids: Vec<String>,
    pub time: DateTime<Utc>,
    /// Whole days since it was taken.
    pub age_days: i64,
    /// The retention rules that keep it.
    pub kept_by: Vec<String>,
    /// `run` archives it.
    pub archive: bool,
    /// Why it is not archived (when `archive` is false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_archived: Option<String>,
    /// The cost trade-off, when the sizes are known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<ArchiveFigures>,
}

impl ArchiveDecision {
    /// `snap-… (95 days old, kept by monthly snapshot): $0.40/mo → $0.10/mo …`, or why not.
    pub fn describe(&self) -> String {
        let kept = if self.kept_by.is_empty() {
            String::new()
        } else {
            format!(", kept by {}", self.kept_by.join(", "))
        };
        let head = format!("{} ({} days old{kept})", self.backup_id, self.age_days);
        match (&self.not_archived, &self.cost) {
            (Some(why), _) => format!("{head}: {why}"),
            (None, Some(cost)) => format!("{head}: {}", cost.describe()),
            (None, None) => head,
        }
    }
}

/// The `archive_after` and retention of a plan's group: group 0 is the source region, group
/// i is this account's copy rule i − 1 (whose own `archive_after` wins over the policy's).
fn group_rule(policy: &PolicyConfig, group: usize) -> Option<(TimeDelta, &KeepPolicy)> {
    let (after, retain) = match group {
        0 => (policy.archive_after.as_ref(), &policy.retain),
        i => {
            // Copies into other accounts have no group here (see `TargetPlan::account_copies`).
            let rule = policy
                .copy
                .iter()
                .filter(|r| r.account.is_none())
                .nth(i - 1)?;
            (
                rule.archive_after
                    .as_ref()
                    .or(policy.archive_after.as_ref()),
                policy.copy_retention(rule),
            )
        }
    };
    Some((after?.fixed()?, retain))
}

/// The newest backup of a group dated at or before `now`: never archived.
fn newest(backups: &[BackupDecision], now: DateTime<Utc>) -> Option<&str> {
    backups
        .iter()
        .filter(|b| b.time <= now)
        .max_by_key(|b| b.time)
        .map(|b| b.backup_id.as_str())
}

/// The backups of a group that are old enough and kept: the ones to ask EC2 about.
fn old_enough(
    backups: &[BackupDecision],
    after: TimeDelta,
    now: DateTime<Utc>,
) -> impl Iterator<Item = &BackupDecision> {
    backups.iter().filter(move |b| {
        b.keep && !b.delete && b.time > DateTime::UNIX_EPOCH && b.time <= now - after
    })
}

/// The snapshots whose facts [`plan_archives`] needs, by region.
pub fn candidates(plan: &Plan, policies: &[PolicyConfig]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in &plan.policies {
        let Some(policy) = policies.iter().find(|c| c.name == p.policy) else {
            continue;
        };
        for t in &p.targets {
            for (i, g) in t.groups.iter().enumerate() {
                let Some((after, _)) = group_rule(policy, i) else {
                    continue;
                };
                let ids = out.entry(g.region.clone()).or_default();
                for b in old_enough(&g.backups, after, plan.now) {
                    ids.extend(b.snapshot_ids.iter().map(|s| s.to_string()));
                }
            }
        }
    }
    out.retain(|_, ids| !ids.is_empty());
    out
}

/// Decides, for every group of a policy with `archive_after`, which backups `run` archives
/// (`GroupPlan::archives`). `facts`: what EC2 said about [`candidates`], by snapshot id.
pub fn plan_archives(
    plan: &mut Plan,
    policies: &[PolicyConfig],
    facts: &HashMap<String, SnapshotFacts>,
) {
    let now = plan.now;
    for p in &mut plan.policies {
        let Some(policy) = policies.iter().find(|c| c.name == p.policy) else {
            continue;
        };
        let tz = policy.tz();
        for t in &mut p.targets {
            let creates = t.create.is_some();
            for (i, g) in t.groups.iter_mut().enumerate() {
                let Some((after, retain)) = group_rule(policy, i) else {
                    continue;
                };
                let future = projected(&policy.schedule, tz, now, creates);
                g.archives = decide(&g.backups, after, retain, &future, facts, now);
            }
        }
    }
}

/// The times of the backups `schedule` will make after `now` and within the archive minimum
/// (and one at `now` when this run creates one).
fn projected(schedule: &Schedule, tz: Tz, now: DateTime<Utc>, creates: bool) -> Vec<DateTime<Utc>> {
    let end = now + TimeDelta::days(MIN_ARCHIVE_DAYS);
    let mut out = Vec::new();
    if creates {
        out.push(now);
    }
    let mut at = now;
    while out.len() < MAX_PROJECTED {
        let next = match schedule.interval() {
            Some(interval) => at + interval,
            None => match schedule.next_slot(at, tz) {
                Some(t) => t,
                None => break,
            },
        };
        if next > end {
            break;
        }
        out.push(next);
        at = next;
    }
    out
}

/// Whether retention still keeps each backup at `at`, given the backups that stay and those
/// the schedule makes until then; by backup id.
fn kept_at(
    retain: &KeepPolicy,
    staying: &[&BackupDecision],
    future: &[DateTime<Utc>],
    at: DateTime<Utc>,
) -> HashMap<String, bool> {
    let mut items: Vec<RetentionItem> = staying
        .iter()
        .map(|b| RetentionItem {
            id: b.backup_id.to_string(),
            time: b.time,
            tags: Vec::new(),
        })
        .collect();
    items.extend(
        future
            .iter()
            .filter(|t| **t <= at)
            .enumerate()
            .map(|(n, t)| RetentionItem {
                id: format!("\u{0}future-{n}"),
                time: *t,
                tags: Vec::new(),
            }),
    );
    // Retention's `now` is exclusive: a backup made at `at` counts.
    apply(retain, &items, at + TimeDelta::nanoseconds(1))
        .into_iter()
        .map(|d| (d.id, d.keep))
        .collect()
}

/// Why EC2 would refuse, or autosnap will not, archive a backup made of these snapshots.
fn refusal(snapshots: &[&SnapshotFacts]) -> Option<String> {
    for s in snapshots {
        if s.last_tiering.as_deref() == Some("archival-in-progress") {
            return Some(format!("{} is being archived", s.snapshot_id));
        }
        match s.last_tiering.as_deref() {
            Some(op) if op.starts_with("temporary-restore") => {
                return Some(format!(
                    "{} is restored from the archive tier for now and goes back by itself",
                    s.snapshot_id
                ))
            }
            Some(op) if op.starts_with("permanent-restore") => {
                return Some(format!(
                    "{} was restored from the archive tier for good: autosnap does not archive \
                     it again (`autosnap snapshot archive` does)",
                    s.snapshot_id
                ))
            }
            _ => {}
        }
        if s.state != "completed" {
            return Some(format!(
                "{} is {}; only completed snapshots can be archived",
                s.snapshot_id, s.state
            ));
        }
        if let Some(image) = &s.used_by_image {
            return Some(format!(
                "the AMI {image} uses {}; EC2 archives no snapshot of a registered AMI",
                s.snapshot_id
            ));
        }
    }
    None
}

fn decide(
    backups: &[BackupDecision],
    after: TimeDelta,
    retain: &KeepPolicy,
    future: &[DateTime<Utc>],
    facts: &HashMap<String, SnapshotFacts>,
    now: DateTime<Utc>,
) -> Vec<ArchiveDecision> {
    let newest = newest(backups, now);
    let staying: Vec<&BackupDecision> = backups
        .iter()
        .filter(|b| !b.delete && b.time > DateTime::UNIX_EPOCH)
        .collect();
    let horizon = now + TimeDelta::days(MIN_ARCHIVE_DAYS);
    let mut at_horizon: Option<HashMap<String, bool>> = None;
    // Retention on each of the 90 days, worked out once per group when some backup needs it.
    let mut by_day: Vec<Option<HashMap<String, bool>>> = vec![None; MIN_ARCHIVE_DAYS as usize + 1];
    let mut out = Vec::new();
    for b in old_enough(backups, after, now) {
        let ids: Vec<String> = b.snapshot_ids.iter().map(|s| s.to_string()).collect();
        let known: Vec<&SnapshotFacts> = ids.iter().filter_map(|id| facts.get(id)).collect();
        // Already in the archive tier: nothing to do, nothing to say.
        if !known.is_empty()
            && known.len() == ids.len()
            && known.iter().all(|s| s.storage_tier == StorageTier::Archive)
        {
            continue;
        }
        let cost = (known.len() == ids.len() && !ids.is_empty())
            .then(|| figures(&known))
            .flatten();
        let mut decision = ArchiveDecision {
            backup_id: b.backup_id.to_string(),
            snapshot_ids: ids.clone(),
            time: b.time,
            age_days: (now - b.time).num_days(),
            kept_by: b.reasons.clone(),
            archive: false,
            not_archived: None,
            cost,
        };
        decision.not_archived = if newest == Some(b.backup_id.as_str()) {
            Some(
                "the newest backup of its target: the next snapshot is an increment on it, so \
                 archiving frees little, and a restore of it would wait up to 72 hours"
                    .to_string(),
            )
        } else if known.len() != ids.len() {
            Some("EC2 did not describe all its snapshots (deleted since?)".to_string())
        } else if let Some(why) = refusal(&known) {
            Some(why)
        } else if b.reasons.iter().any(|r| r.starts_with("has tags")) {
            // Kept by a tag for as long as it carries it: past any minimum.
            None
        } else {
            let kept = at_horizon
                .get_or_insert_with(|| kept_at(retain, &staying, future, horizon))
                .get(b.backup_id.as_str())
                .copied()
                .unwrap_or(false);
            (!kept).then(|| {
                let day = (1..=MIN_ARCHIVE_DAYS)
                    .find(|d| {
                        let at = now + TimeDelta::days(*d);
                        !by_day[*d as usize]
                            .get_or_insert_with(|| kept_at(retain, &staying, future, at))
                            .get(b.backup_id.as_str())
                            .copied()
                            .unwrap_or(false)
                    })
                    .unwrap_or(MIN_ARCHIVE_DAYS);
                let billed = decision
                    .cost
                    .as_ref()
                    .map(|c| {
                        format!(
                            " (${:.2} for {} days it would not be kept)",
                            c.archive_month * (MIN_ARCHIVE_DAYS - day) as f64 / 30.0,
                            MIN_ARCHIVE_DAYS - day
                        )
                    })
                    .unwrap_or_default();
                format!(
                    "retention lets it go in about {day} days ({}), before the \
                     {MIN_ARCHIVE_DAYS}-day archive minimum ends: the rest would be billed \
                     anyway{billed}",
                    (now + TimeDelta::days(day)).format("%Y-%m-%d")
                )
            })
        };
        decision.archive = decision.not_archived.is_none();
        out.push(decision);
    }
    out
}

/// The figures of a backup from its snapshots' sizes; None when a size is unknown.
fn figures(snapshots: &[&SnapshotFacts]) -> Option<ArchiveFigures> {
    let mut total = 0.0;
    let mut from = SizeSource::FullSnapshotSize;
    for s in snapshots {
        match (s.full_size_bytes, s.volume_size_gib) {
            (Some(bytes), _) if bytes >= 0 => total += bytes as f64 / GIB,
            (_, Some(gib)) => {
                total += f64::from(gib.max(0));
                from = SizeSource::VolumeSize;
            }
            _ => return None,
        }
    }
    Some(ArchiveFigures::of(total, from))
}

/// Every archive `run` would make, with its policy, target and region.
pub fn archives(plan: &Plan) -> impl Iterator<Item = (&str, &str, &str, &ArchiveDecision)> {
    plan.policies.iter().flat_map(|p| {
        p.targets.iter().flat_map(move |t| {
            t.groups.iter().flat_map(move |g| {
                g.archives.iter().filter(|a| a.archive).map(move |a| {
                    (
                        p.policy.as_str(),
                        t.target_id.as_str(),
                        g.region.as_str(),
                        a,
                    )
                })
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Snapshot;
    use crate::plan::{plan, BackupBuilder, Inventory, PlanOptions, Target};
    use crate::policy::ResourceKind;
    use crate::tags::Tags;

    const REGION: &str = "us-east-1";
    const VOLUME: &str = "vol-0000000000000000a";

    fn day(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(&format!("{s}T03:00:00Z"))
            .unwrap()
            .with_timezone(&Utc)
    }

    fn now() -> DateTime<Utc> {
        day("2026-12-03")
    }

    fn policy(extra: &str) -> PolicyConfig {
        let text = format!(
            "name = \"p\"\nresource = \"volume\"\nselect = [{{ tags = {{ B = \"1\" }} }}]\n\
             schedule = \"0 3 * * *\"\n{extra}\n"
        );
        let p: PolicyConfig = toml::from_str(&text).unwrap();
        p.validate(Some(REGION)).unwrap();
        p
    }

    fn snapshot(id: &str, start: DateTime<Utc>) -> Snapshot {
        let tags: Tags = [
            ("autosnap:managed", "true"),
            ("autosnap:policy", "p"),
            ("autosnap:source-volume", VOLUME),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Snapshot {
            snapshot_id: id.into(),
            volume_id: Some(VOLUME.into()),
            state: "completed".into(),
            progress: None,
            start_time: Some(start),
            size_gib: Some(8),
            encrypted: false,
            kms_key_id: None,
            description: None,
            owner_id: None,
            managed: true,
            tags,
            storage_tier: StorageTier::Standard,
            restore_expiry: None,
        }
    }

    /// Month-end backups from August, plus the newest (yesterday's).
    fn backups() -> Vec<(&'static str, DateTime<Utc>)> {
        vec![
            ("snap-aug", day("2026-08-31")),
            ("snap-sep", day("2026-09-30")),
            ("snap-oct", day("2026-10-31")),
            ("snap-nov", day("2026-11-30")),
            ("snap-new", day("2026-12-02")),
        ]
    }

    fn facts(ids: &[&str]) -> HashMap<String, SnapshotFacts> {
        ids.iter()
            .map(|id| {
                (
                    id.to_string(),
                    SnapshotFacts {
                        snapshot_id: id.to_string(),
                        state: "completed".into(),
                        volume_size_gib: Some(8),
                        ..Default::default()
                    },
                )
            })
            .collect()
    }

    fn planned(p: &PolicyConfig, facts: &HashMap<String, SnapshotFacts>) -> Plan {
        let mut builder = BackupBuilder::keeping_all_tags();
        let inventory = Inventory {
            targets: vec![Target {
                id: VOLUME.into(),
                kind: ResourceKind::Volume,
                region: REGION.into(),
                tags: [("B".to_string(), "1".to_string())].into_iter().collect(),
                name: None,
                volume_ids: Vec::new(),
            }],
            backups: backups()
                .into_iter()
                .map(|(id, t)| builder.snapshot(&snapshot(id, t), REGION, Vec::new()))
                .collect(),
        };
        let mut plan = plan(
            std::slice::from_ref(p),
            &inventory,
            REGION,
            now(),
            &PlanOptions::default(),
        );
        plan_archives(&mut plan, std::slice::from_ref(p), facts);
        plan
    }

    fn decisions(plan: &Plan) -> Vec<ArchiveDecision> {
        plan.policies[0].targets[0].groups[0].archives.clone()
    }

    #[test]
    fn archives_what_retention_keeps_past_the_minimum_and_says_why_not_the_rest() {
        let p = policy("retain = { monthly = 6 }\narchive_after = \"30d\"");
        let all: Vec<&str> = backups().iter().map(|(id, _)| *id).collect();
        let plan = planned(&p, &facts(&all));
        // Candidates: kept and at least 30 days old.
        let asked = candidates(&plan, std::slice::from_ref(&p));
        assert_eq!(asked[REGION], vec!["snap-oct", "snap-sep", "snap-aug"]);

        let d = decisions(&plan);
        let by = |id: &str| d.iter().find(|a| a.backup_id == id).unwrap().clone();
        // October's is kept as a monthly past 2027-03-03 (90 days from now): archived.
        let oct = by("snap-oct");
        assert!(oct.archive, "{oct:?}");
        assert_eq!(oct.age_days, 33);
        assert_eq!(oct.kept_by, vec!["monthly snapshot"]);
        let cost = oct.cost.clone().unwrap();
        assert_eq!(cost.size_from, SizeSource::VolumeSize);
        assert!((cost.archive_month - 0.10).abs() < 1e-9);
        assert!((cost.standard_month_at_most - 0.40).abs() < 1e-9);
        assert!((cost.retrieval - 0.24).abs() < 1e-9);
        let line = oct.describe();
        assert!(
            line.starts_with(
                "snap-oct (33 days old, kept by monthly snapshot): $0.40/mo → $0.10/mo for 8 GiB"
            ),
            "{line}"
        );
        assert!(line.contains("retrieval $0.03/GB"), "{line}");
        assert!(line.contains("billed ≥ 90 days ($0.30)"), "{line}");
        // September's leaves the six months on 2027-03-01 (the March backup is the sixth newer
        // month): 88 days, before the minimum ends.
        let sep = by("snap-sep");
        assert!(!sep.archive);
        let why = sep.not_archived.unwrap();
        assert!(
            why.starts_with("retention lets it go in about 88 days (2027-03-01)"),
            "{why}"
        );
        assert!(why.contains("$0.01 for 2 days"), "{why}");
        // August's: the February backup is the sixth newer month.
        let aug = by("snap-aug");
        assert!(aug
            .not_archived
            .unwrap()
            .starts_with("retention lets it go in about 60 days (2027-02-01)"));
        // Too young: not listed.
        assert!(d
            .iter()
            .all(|a| a.backup_id != "snap-nov" && a.backup_id != "snap-new"));
        assert_eq!(archives(&plan).count(), 1);
    }

    #[test]
    fn never_the_newest_nor_archived_busy_restored_or_ami_snapshots() {
        let p = policy("retain = { monthly = 24 }\narchive_after = \"30d\"");
        let mut f = facts(&["snap-aug", "snap-sep", "snap-oct", "snap-nov", "snap-new"]);
        f.get_mut("snap-aug").unwrap().storage_tier = StorageTier::Archive;
        f.get_mut("snap-sep").unwrap().last_tiering = Some("archival-in-progress".into());
        f.get_mut("snap-oct").unwrap().used_by_image = Some("ami-1".into());
        let plan = planned(&p, &f);
        let d = decisions(&plan);
        // Already archived: nothing to say; a second run is a no-op.
        assert!(d.iter().all(|a| a.backup_id != "snap-aug"), "{d:?}");
        let why = |id: &str| {
            d.iter()
                .find(|a| a.backup_id == id)
                .and_then(|a| a.not_archived.clone())
                .unwrap()
        };
        assert_eq!(why("snap-sep"), "snap-sep is being archived");
        assert!(why("snap-oct").contains("the AMI ami-1 uses snap-oct"));
        assert_eq!(archives(&plan).count(), 0);

        // A target no longer backed up: its newest backup is old, and stays.
        // Built from a planned decision, so that fields other work adds need no edit here.
        let template = plan.policies[0].targets[0].groups[0].backups[0].clone();
        let kept = |id: &str, t: DateTime<Utc>| BackupDecision {
            backup_id: id.into(),
            snapshot_ids: smallvec::smallvec![id.into()],
            time: t,
            keep: true,
            reasons: vec!["monthly snapshot".into()],
            delete: false,
            protected: None,
            ..template.clone()
        };
        let group = [
            kept("snap-new", day("2026-11-30")),
            kept("snap-nov", day("2026-10-31")),
        ];
        let mut f = facts(&["snap-new", "snap-nov"]);
        f.get_mut("snap-nov").unwrap().last_tiering = Some("temporary-restore-completed".into());
        let retain: KeepPolicy = toml::from_str("monthly = 24").unwrap();
        let d = decide(&group, TimeDelta::days(1), &retain, &[], &f, now());
        assert!(
            d[0].not_archived
                .as_deref()
                .unwrap()
                .starts_with("the newest backup of its target"),
            "{d:?}"
        );
        assert!(
            d[1].not_archived
                .as_deref()
                .unwrap()
                .contains("restored from the archive tier for now"),
            "{d:?}"
        );
    }

    #[test]
    fn copy_rules_inherit_archive_after_or_set_their_own() {
        let after = |p: &PolicyConfig, g: usize| group_rule(p, g).map(|(a, _)| a.num_days());
        let p = policy(
            "retain = { monthly = 24 }\narchive_after = \"30d\"\n\
             copy = [{ region = \"us-west-2\" }, { region = \"eu-west-1\", archive_after = \"60d\" }]",
        );
        assert_eq!(
            (after(&p, 0), after(&p, 1), after(&p, 2)),
            (Some(30), Some(30), Some(60))
        );
        // Only the copies archived: the source region keeps its backups in the standard tier.
        let p = policy(
            "retain = { monthly = 24 }\n\
             copy = [{ region = \"us-west-2\", archive_after = \"45d\" }]",
        );
        assert_eq!((after(&p, 0), after(&p, 1)), (None, Some(45)));
    }

    #[test]
    fn full_snapshot_size_is_used_when_ec2_reports_it() {
        let p = policy("retain = { monthly = 24 }\narchive_after = \"30d\"");
        let mut f = facts(&["snap-aug", "snap-sep", "snap-oct", "snap-nov", "snap-new"]);
        f.get_mut("snap-oct").unwrap().full_size_bytes = Some(2 * 1024 * 1024 * 1024);
        let plan = planned(&p, &f);
        let oct = decisions(&plan)
            .into_iter()
            .find(|a| a.backup_id == "snap-oct")
            .unwrap();
        let cost = oct.cost.unwrap();
        assert_eq!(cost.size_from, SizeSource::FullSnapshotSize);
        assert!((cost.size_gib - 2.0).abs() < 1e-9);
        assert!(cost.describe().contains("for 2 GiB (full snapshot size;"));
    }

    #[test]
    fn validation_refuses_an_archive_that_is_always_a_loss() {
        let schedule: Schedule = "0 3 * * *".parse().unwrap();
        let tz = Tz::UTC;
        let keep = |t: &str| -> KeepPolicy { toml::from_str(t).unwrap() };
        let d = |s: &str| -> CalendarDuration { s.parse().unwrap() };
        // Daily backups kept 7 days never see 30 + 90 days.
        let e = validate(&d("30d"), &keep("daily = 7"), &schedule, tz).unwrap_err();
        assert!(
            matches!(e, ArchiveAfterError::AlwaysEarly { kept_days: 8, .. }),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("keeps a backup about 8 days at most"),
            "{e}"
        );
        // Monthlies kept a year do.
        assert_eq!(
            validate(&d("90d"), &keep("daily = 7\nmonthly = 12"), &schedule, tz).unwrap(),
            TimeDelta::days(90)
        );
        // A weekly schedule keeps `last = 20` for 20 weeks and more.
        let weekly: Schedule = "0 3 * * 1".parse().unwrap();
        assert!(validate(&d("14d"), &keep("last = 20"), &weekly, tz).is_ok());
        assert!(validate(&d("14d"), &keep("last = 20"), &schedule, tz).is_err());
        // A tag rule or an unlimited count can keep a backup for ever.
        assert!(validate(
            &d("30d"),
            &keep("daily = 7\ntags = [[\"keep\"]]"),
            &schedule,
            tz
        )
        .is_ok());
        assert!(validate(&d("30d"), &keep("yearly = \"unlimited\""), &schedule, tz).is_ok());
        assert!(matches!(
            validate(&d("3mo"), &keep("monthly = 12"), &schedule, tz),
            Err(ArchiveAfterError::NotFixed(_))
        ));
        assert!(matches!(
            validate(&d("12h"), &keep("monthly = 12"), &schedule, tz),
            Err(ArchiveAfterError::TooShort(_))
        ));
    }

    #[test]
    fn a_policy_or_copy_rule_that_always_loses_is_refused_with_its_field() {
        let text = "name = \"p\"\nresource = \"volume\"\nselect = [{ tags = { B = \"1\" } }]\n\
                    schedule = \"0 3 * * *\"\nretain = { monthly = 12 }\narchive_after = \"30d\"\n\
                    copy = [{ region = \"us-west-2\", retain = { daily = 7 } }]\n";
        let p: PolicyConfig = toml::from_str(text).unwrap();
        let e = p.validate(Some(REGION)).unwrap_err();
        assert_eq!(e.field, "archive_after", "{e}");
        assert!(e.to_string().contains("retention (keep daily 7)"), "{e}");
        let text = text.replace(
            "retain = { daily = 7 }",
            "retain = { daily = 7 }, archive_after = \"10d\"",
        );
        let e = toml::from_str::<PolicyConfig>(&text)
            .unwrap()
            .validate(Some(REGION))
            .unwrap_err();
        assert_eq!(e.field, "copy[0].archive_after", "{e}");
    }
}

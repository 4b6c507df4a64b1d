//! Carrying out a plan: create the due backups, copy them once they are
//! complete, and delete what retention let go. Targets are worked on
//! concurrently (bounded), each EC2 action is paced by a token bucket, and
//! copies respect EC2's 20 concurrent copies per destination region. One
//! target's failure is recorded and the others go on.
//!
//! Safety: deletions in a group are skipped when the step they depended on
//! failed (the plan's retention assumed the new backup or copy exists).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use autosnap_core::ami::ImageDetails;
use autosnap_core::model::Snapshot;
use autosnap_core::plan::{AmiCreate, CopySource, CreateAction, Plan, PolicyPlan, TargetPlan};
use autosnap_core::policy::{BackupKind, ResourceKind};
use autosnap_core::tags::{self, Tags};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::stream::{self, StreamExt};
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::ami::{ImageCopy, PollSchedule};
use crate::ami_flow::{
    backup_image_names, create_backup_image, free_name, remove_image, remove_owned_image, AmiWait,
    BackupImageRequest, ImageFlowError, ImageWait, ImageWaits, QuietWaits,
};
use crate::ec2::{Ec2, SnapshotQuery, Unobserved};
use crate::rate::{paced, Ec2RateLimits, Pacing};
use crate::{AwsContext, AwsError};

/// Targets worked on at once.
pub const TARGET_CONCURRENCY: usize = 16;
/// EC2 allows 20 concurrent snapshot copies into one region.
pub const COPIES_PER_REGION: usize = 20;
pub use crate::rate::THROTTLED_RETRIES;

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Create due backups (and copy them); off for `prune`.
    pub create: bool,
    /// Copy backups to the policies' copy regions.
    pub copy: bool,
    /// Delete what retention does not keep.
    pub prune: bool,
    /// Move what `archive_after` chose to the archive tier (after copies, before pruning).
    pub archive: bool,
    /// How long to wait for a new backup to complete before copying it, and
    /// for a copy to complete.
    pub wait_timeout: Duration,
    /// How much of EC2's request budget to use (see [`crate::rate`]).
    pub pacing: Pacing,
    /// No step starts after this instant (`--time-limit`): requests in flight finish, waits
    /// stop, and what did not start is reported in [`RunReport::left`].
    pub stop_at: Option<std::time::Instant>,
}

impl RunOptions {
    /// Whether the time limit has passed: no new step may start.
    pub fn out_of_time(&self) -> bool {
        self.stop_at.is_some_and(|t| std::time::Instant::now() >= t)
    }
}

/// Runs `wait` until it ends or the time limit passes (`None`: the limit cut it short).
async fn until_stop<T>(opts: &RunOptions, wait: impl std::future::Future<Output = T>) -> Option<T> {
    match opts.stop_at {
        Some(t) => tokio::time::timeout_at(t.into(), wait).await.ok(),
        None => Some(wait.await),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Created {
    pub policy: String,
    pub target_id: String,
    pub region: String,
    pub snapshot_ids: Vec<String>,
    pub set_id: Option<String>,
    /// AMI policies: the new AMI (its snapshots are `snapshot_ids`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Copied {
    pub policy: String,
    pub target_id: String,
    pub from_region: String,
    pub to_region: String,
    /// The snapshot copied. AMI policies: the AMI, deprecated there for `source_image_id`
    /// (kept for one release).
    pub source_snapshot_id: String,
    /// The copy. AMI policies: the new AMI, deprecated there for `image_id`.
    pub snapshot_id: String,
    /// AMI policies: the AMI copied (absent for snapshots).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_image_id: Option<String>,
    /// AMI policies: the copy (absent for snapshots).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Deleted {
    pub policy: String,
    pub target_id: String,
    pub region: String,
    pub backup_id: String,
    pub snapshot_ids: Vec<String>,
    /// AMI backups: snapshots of the AMI that stay, each with why (not autosnap's, or not
    /// made for the AMI).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kept_snapshots: Vec<String>,
}

/// A backup moved to the archive tier (`archive_after`).
#[derive(Debug, Clone, Serialize)]
pub struct Archived {
    pub policy: String,
    pub target_id: String,
    pub region: String,
    pub backup_id: String,
    pub snapshot_ids: Vec<String>,
    /// The plan's cost trade-off for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<autosnap_core::archive_plan::ArchiveFigures>,
}

/// A backup retention would remove, kept because an EBS snapshot lock protects it. Not a
/// failure: the lock is doing its job, and the next prune after it expires deletes it.
#[derive(Debug, Clone, Serialize)]
pub struct LockedBackup {
    pub policy: String,
    pub target_id: String,
    pub region: String,
    pub backup_id: String,
    /// `locked (governance) until …` for each locked snapshot of the backup.
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub policy: String,
    pub target_id: String,
    pub region: String,
    /// `create`, `copy`, `lock` (a policy's lock not set) or `delete`.
    pub action: &'static str,
    pub error: String,
}

/// A step a run did not start because its time limit had passed; the next run does it (it
/// plans again from what exists).
#[derive(Debug, Clone, Serialize)]
pub struct NotStarted {
    pub policy: String,
    pub target_id: String,
    pub region: String,
    /// `create`, `copy`, `archive`, `delete` or `restore_test`; in a backup account
    /// `account_copy`, `account_unshare` or `account_delete`.
    pub action: &'static str,
    /// The backup the step was for, when it exists already (a copy's source, an archive, a
    /// deletion).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    /// The backup account of an `account_*` step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
}

/// What a run did, for output and the exit code.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunReport {
    pub created: Vec<Created>,
    pub copied: Vec<Copied>,
    pub deleted: Vec<Deleted>,
    /// Backups moved to the archive tier.
    pub archived: Vec<Archived>,
    /// Backups retention would remove that a snapshot lock keeps.
    pub locked: Vec<LockedBackup>,
    /// Groups whose deletions were skipped because an earlier step failed.
    pub skipped_prunes: Vec<String>,
    pub failures: Vec<Failure>,
    /// Steps not started because the run's time limit passed (absent when none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub left: Vec<NotStarted>,
    /// Copies into backup accounts (copy rules with `account`), and their retention there.
    #[serde(skip_serializing_if = "crate::backup_account::BackupAccountReport::is_empty")]
    pub backup_accounts: crate::backup_account::BackupAccountReport,
}

impl RunReport {
    pub fn successes(&self) -> usize {
        self.created.len()
            + self.copied.len()
            + self.deleted.len()
            + self.archived.len()
            + self.backup_accounts.successes()
    }

    fn merge(&mut self, other: RunReport) {
        self.created.extend(other.created);
        self.copied.extend(other.copied);
        self.deleted.extend(other.deleted);
        self.archived.extend(other.archived);
        self.locked.extend(other.locked);
        self.skipped_prunes.extend(other.skipped_prunes);
        self.failures.extend(other.failures);
        self.left.extend(other.left);
        self.backup_accounts.merge(other.backup_accounts);
    }
}

/// Told each action as it is recorded in the report, so that a run stopped midway (Ctrl-C in
/// `run`, a shutdown timeout in `daemon`) can still say what it did. Each action is also logged
/// as it happens. `()` listens to nothing (`prune`: it is not stopped midway).
pub trait RunObserver: Send + Sync {
    fn created(&self, _created: &Created) {}
    fn copied(&self, _copied: &Copied) {}
    fn deleted(&self, _deleted: &Deleted) {}
    fn archived(&self, _archived: &Archived) {}
}

impl RunObserver for () {}

/// Takes an instance's set itself, on the instance autosnap runs on (with a
/// filesystem freeze and hooks). `None`: not this target, the executor takes
/// a plain crash-consistent set. The tags given already carry the set id.
pub trait LocalSnapshotter: Send + Sync {
    fn take<'a>(
        &'a self,
        policy: &'a str,
        create: &'a CreateAction,
        tags: &'a Tags,
    ) -> Option<BoxFuture<'a, Result<Vec<Snapshot>, LocalSnapshotError>>>;
}

/// Why a [`LocalSnapshotter`] took no set: its own typed error, made text only in the report.
pub type LocalSnapshotError = Box<dyn std::error::Error + Send + Sync>;

struct Regions {
    clients: HashMap<String, Ec2>,
    limits: HashMap<String, Ec2RateLimits>,
    copy_slots: HashMap<String, Semaphore>,
}

impl Regions {
    fn ec2(&self, region: &str) -> &Ec2 {
        &self.clients[region]
    }
    fn limits(&self, region: &str) -> &Ec2RateLimits {
        &self.limits[region]
    }
}

/// Executes the plan's actions allowed by `opts`.
pub async fn execute(
    ctx: &AwsContext,
    plan: &Plan,
    opts: &RunOptions,
    observer: &dyn RunObserver,
    local: Option<&dyn LocalSnapshotter>,
) -> Result<RunReport, AwsError> {
    let mut names = BTreeSet::new();
    for p in &plan.policies {
        for t in &p.targets {
            names.insert(t.region.clone());
            for c in &t.copies {
                names.insert(c.to_region.clone());
            }
            for g in &t.groups {
                names.insert(g.region.clone());
            }
        }
    }
    let mut regions = Regions {
        clients: HashMap::new(),
        limits: HashMap::new(),
        copy_slots: HashMap::new(),
    };
    for r in names {
        let limits = Ec2RateLimits::new(opts.pacing);
        let ec2 = ctx
            .ec2_in(&r)
            .await?
            .with_tag_pacing(limits.create_tags.clone());
        regions.clients.insert(r.clone(), ec2);
        regions.limits.insert(r.clone(), limits);
        regions
            .copy_slots
            .insert(r.clone(), Semaphore::new(COPIES_PER_REGION));
    }
    let regions = Arc::new(regions);

    let work: Vec<(&PolicyPlan, &TargetPlan)> = plan
        .policies
        .iter()
        .flat_map(|p| p.targets.iter().map(move |t| (p, t)))
        .collect();
    let reports: Vec<RunReport> = stream::iter(work)
        .map(|(p, t)| {
            let regions = regions.clone();
            async move { run_target(&regions, p, t, plan.now, opts, observer, local).await }
        })
        .buffer_unordered(TARGET_CONCURRENCY)
        .collect()
        .await;
    let mut report = RunReport::default();
    for r in reports {
        report.merge(r);
    }
    Ok(report)
}

async fn run_target(
    regions: &Regions,
    policy: &PolicyPlan,
    target: &TargetPlan,
    now: DateTime<Utc>,
    opts: &RunOptions,
    observer: &dyn RunObserver,
    local: Option<&dyn LocalSnapshotter>,
) -> RunReport {
    if policy.kind == BackupKind::Ami {
        return run_ami_target(regions, policy, target, opts, observer).await;
    }
    let mut report = RunReport::default();
    let fail = |report: &mut RunReport, region: &str, action: &'static str, e: String| {
        record_failure(report, policy, target, region, action, e)
    };
    // Regions whose retention must not run because a step it relied on failed.
    let mut blocked: BTreeSet<String> = BTreeSet::new();

    let left = |report: &mut RunReport, region: &str, action: &'static str, b: Option<String>| {
        record_left(report, policy, target, region, action, b)
    };

    // 1. Create.
    let mut created: Vec<Snapshot> = Vec::new();
    let create_step = target.create.as_ref().filter(|_| opts.create);
    let create_left = create_step.is_some() && opts.out_of_time();
    if let Some(create) = create_step.filter(|_| create_left) {
        left(&mut report, &create.region, "create", None);
    } else if let Some(create) = create_step {
        let ec2 = regions.ec2(&create.region);
        let bucket = &regions.limits(&create.region).create_snapshot;
        // Plain snapshots are crash-consistent; a local snapshotter (freeze,
        // hooks) sets its own consistency tag.
        let mut crash_tags = create.tags.clone();
        crash_tags.insert(tags::CONSISTENCY.into(), "crash".into());
        let mut throttles = 0;
        let result = loop {
            bucket.acquire().await;
            let result = match create.kind {
                ResourceKind::Volume => ec2
                    .create_snapshot(&create.target_id, &create.description, &crash_tags)
                    .await
                    .map(|s| (vec![s], None)),
                ResourceKind::Instance => {
                    let set = tags::set_id(&create.target_id, now);
                    let mut t = crash_tags.clone();
                    t.insert(tags::SET_ID.into(), set.clone());
                    let mut local_tags = create.tags.clone();
                    local_tags.insert(tags::SET_ID.into(), set.clone());
                    let local_fut = local.and_then(|l| l.take(&policy.policy, create, &local_tags));
                    let taken = if let Some(fut) = local_fut {
                        fut.await
                            .map(|s| (s, Some(set)))
                            .map_err(|e| AwsError::Failed {
                                what: format!("a consistent snapshot of {}", create.target_id),
                                detail: e.to_string(),
                            })
                    } else {
                        ec2.create_snapshot_set(
                            &create.target_id,
                            create.exclude_boot,
                            &create.exclude_volumes,
                            create.copy_tags_from_volumes,
                            &create.description,
                            &t,
                        )
                        .await
                        .map(|s| (s, Some(set)))
                    };
                    taken
                }
            };
            // A throttled call did nothing at EC2: slow every task down, then try again.
            match result {
                Err(AwsError::Throttled { .. }) if throttles < THROTTLED_RETRIES => {
                    throttles += 1;
                    tracing::info!(
                    "policy {}: EC2 is throttling snapshots of {}: slowing down (retry {throttles})",
                    policy.policy,
                    create.target_id
                );
                    bucket.throttled().await;
                }
                result => break result,
            }
        };
        match result {
            Ok((snaps, set_id)) => {
                let ids: Vec<String> = snaps.iter().map(|s| s.snapshot_id.clone()).collect();
                tracing::info!(
                    "policy {}: created {} of {}",
                    policy.policy,
                    ids.join(", "),
                    create.target_id
                );
                report.created.push(Created {
                    policy: policy.policy.clone(),
                    target_id: create.target_id.clone(),
                    region: create.region.clone(),
                    snapshot_ids: ids,
                    set_id,
                    image_id: None,
                });
                observer.created(report.created.last().expect("just recorded"));
                // The policy's lock, right away: a pending snapshot can be locked, and its lock
                // counts from completion.
                if let Some(lock) = &create.lock {
                    for s in &snaps {
                        if let Err(e) = lock_backup(ec2, &s.snapshot_id, lock).await {
                            fail(&mut report, &create.region, "lock", e);
                        }
                    }
                }
                created = snaps;
            }
            Err(e) => {
                fail(&mut report, &create.region, "create", e.to_string());
                blocked.insert(create.region.clone());
            }
        }
    }

    // 2. Copy (a new backup only once it is complete).
    if opts.copy {
        for copy in &target.copies {
            let sources: Result<Vec<Snapshot>, AwsError> = match &copy.source {
                CopySource::New => {
                    if created.is_empty() {
                        // The create was not run or failed: nothing to copy.
                        blocked.insert(copy.to_region.clone());
                        if create_left {
                            left(&mut report, &copy.to_region, "copy", None);
                        }
                        continue;
                    }
                    let ids: Vec<String> = created.iter().map(|s| s.snapshot_id.clone()).collect();
                    let wait = regions.ec2(&copy.from_region).wait_snapshots_completed(
                        &ids,
                        opts.wait_timeout,
                        &Unobserved,
                    );
                    match until_stop(opts, wait).await {
                        Some(done) => done,
                        None => {
                            // The new backup is still completing: its copy is the next run's.
                            blocked.insert(copy.to_region.clone());
                            for id in ids {
                                left(&mut report, &copy.to_region, "copy", Some(id));
                            }
                            continue;
                        }
                    }
                }
                CopySource::Existing { backup_id, .. } if opts.out_of_time() => {
                    blocked.insert(copy.to_region.clone());
                    left(
                        &mut report,
                        &copy.to_region,
                        "copy",
                        Some(backup_id.clone()),
                    );
                    continue;
                }
                CopySource::Existing { snapshot_ids, .. } => {
                    regions
                        .ec2(&copy.from_region)
                        .list_snapshots(&SnapshotQuery {
                            snapshot_ids: snapshot_ids.clone(),
                            ..Default::default()
                        })
                        .await
                }
            };
            let sources = match sources {
                Ok(s) => s,
                Err(e) => {
                    fail(&mut report, &copy.to_region, "copy", e.to_string());
                    blocked.insert(copy.to_region.clone());
                    continue;
                }
            };
            for source in sources {
                if opts.out_of_time() {
                    blocked.insert(copy.to_region.clone());
                    left(
                        &mut report,
                        &copy.to_region,
                        "copy",
                        Some(source.snapshot_id.clone()),
                    );
                    continue;
                }
                match copy_one(
                    regions,
                    &source,
                    &copy.from_region,
                    &copy.to_region,
                    copy.kms_key.as_deref(),
                    opts,
                )
                .await
                {
                    Ok(id) => {
                        if let Some(lock) = &copy.lock {
                            let dest = regions.ec2(&copy.to_region);
                            if let Err(e) = lock_backup(dest, &id, lock).await {
                                fail(&mut report, &copy.to_region, "lock", e);
                            }
                        }
                        report.copied.push(Copied {
                            policy: policy.policy.clone(),
                            target_id: target.target_id.clone(),
                            from_region: copy.from_region.clone(),
                            to_region: copy.to_region.clone(),
                            source_snapshot_id: source.snapshot_id.clone(),
                            snapshot_id: id,
                            source_image_id: None,
                            image_id: None,
                        });
                        observer.copied(report.copied.last().expect("just recorded"));
                    }
                    Err(e) => {
                        fail(&mut report, &copy.to_region, "copy", e.to_string());
                        blocked.insert(copy.to_region.clone());
                    }
                }
            }
        }
    }

    // 3. Archive: after the copies (made from the standard tier) and before pruning. A failed
    // archive leaves the backup in the standard tier and blocks nothing.
    if opts.archive {
        for group in &target.groups {
            for a in group.archives.iter().filter(|a| a.archive) {
                if opts.out_of_time() {
                    left(
                        &mut report,
                        &group.region,
                        "archive",
                        Some(a.backup_id.clone()),
                    );
                    continue;
                }
                match archive_backup(regions, &group.region, a).await {
                    Ok(()) => {
                        tracing::info!(
                            "policy {}: archived {} of {} in {}",
                            policy.policy,
                            a.backup_id,
                            target.target_id,
                            group.region
                        );
                        report.archived.push(Archived {
                            policy: policy.policy.clone(),
                            target_id: target.target_id.clone(),
                            region: group.region.clone(),
                            backup_id: a.backup_id.clone(),
                            snapshot_ids: a.snapshot_ids.clone(),
                            cost: a.cost.clone(),
                        });
                        observer.archived(report.archived.last().expect("just recorded"));
                    }
                    Err(e) => fail(&mut report, &group.region, "archive", e),
                }
            }
        }
    }

    // 4. Prune.
    if opts.prune {
        for group in &target.groups {
            let doomed: Vec<_> = group.backups.iter().filter(|b| b.delete).collect();
            if doomed.is_empty() {
                continue;
            }
            if blocked.contains(&group.region) {
                report
                    .skipped_prunes
                    .push(skipped_prune(policy, target, &group.region));
                continue;
            }
            let ec2 = regions.ec2(&group.region);
            // One DescribeLockedSnapshots for the group's candidates. If the locks cannot be
            // read, nothing is deleted: a lock must never be found out by a refused delete.
            let candidates: Vec<String> = doomed
                .iter()
                .flat_map(|b| b.snapshot_ids.iter().map(|s| s.to_string()))
                .collect();
            let locks = match ec2.locked_snapshots(&candidates).await {
                Ok(l) => l,
                Err(e) => {
                    fail(
                        &mut report,
                        &group.region,
                        "delete",
                        format!("cannot read snapshot locks, so nothing was deleted: {e}"),
                    );
                    continue;
                }
            };
            for backup in doomed {
                if opts.out_of_time() {
                    left(
                        &mut report,
                        &group.region,
                        "delete",
                        Some(backup.backup_id.to_string()),
                    );
                    continue;
                }
                let ids: Vec<String> = backup.snapshot_ids.iter().map(|s| s.to_string()).collect();
                let blocking = autosnap_core::lock::blocking(&locks, &ids);
                if !blocking.is_empty() {
                    let reason = blocking
                        .iter()
                        .map(|l| format!("{} {}", l.snapshot_id, l.reason()))
                        .collect::<Vec<_>>()
                        .join("; ");
                    tracing::info!(
                        "policy {}: kept {} of {} in {}: {reason}",
                        policy.policy,
                        backup.backup_id,
                        target.target_id,
                        group.region
                    );
                    report.locked.push(LockedBackup {
                        policy: policy.policy.clone(),
                        target_id: target.target_id.clone(),
                        region: group.region.clone(),
                        backup_id: backup.backup_id.to_string(),
                        reason,
                    });
                    continue;
                }
                let mut ok = true;
                for id in &backup.snapshot_ids {
                    let bucket = &regions.limits(&group.region).delete_snapshot;
                    let result =
                        paced(bucket, "DeleteSnapshot", id, || ec2.delete_snapshot(id)).await;
                    if let Err(e) = result {
                        fail(&mut report, &group.region, "delete", e.to_string());
                        ok = false;
                    }
                }
                if ok {
                    tracing::info!(
                        "policy {}: deleted {} of {} in {}",
                        policy.policy,
                        backup.backup_id,
                        target.target_id,
                        group.region
                    );
                    report.deleted.push(Deleted {
                        policy: policy.policy.clone(),
                        target_id: target.target_id.clone(),
                        region: group.region.clone(),
                        backup_id: backup.backup_id.to_string(),
                        snapshot_ids: backup.snapshot_ids.iter().map(|s| s.to_string()).collect(),
                        kept_snapshots: Vec::new(),
                    });
                    observer.deleted(report.deleted.last().expect("just recorded"));
                }
            }
        }
    }
    report
}

/// Archives every snapshot of one backup (ModifySnapshotTier), paced; the error names the
/// snapshot and says what to do.
async fn archive_backup(
    regions: &Regions,
    region: &str,
    backup: &autosnap_core::archive_plan::ArchiveDecision,
) -> Result<(), String> {
    let ec2 = regions.ec2(region);
    let bucket = &regions.limits(region).modify_snapshot_tier;
    for id in &backup.snapshot_ids {
        let result = paced(bucket, "ModifySnapshotTier", id, || {
            ec2.archive_snapshot(id)
        })
        .await;
        if let Err(e) = result {
            return Err(format!(
                "{id} was not archived: {e}; it stays in the standard tier (`autosnap plan` \
                 shows why it was chosen, `autosnap snapshot archive {id}` tries again)"
            ));
        }
    }
    Ok(())
}

/// Puts a policy's lock on a new backup or copy; the error names the snapshot and says what
/// to do.
async fn lock_backup(
    ec2: &Ec2,
    snapshot_id: &str,
    lock: &autosnap_core::lock::LockRequest,
) -> Result<(), String> {
    match ec2.lock_snapshot(snapshot_id, lock).await {
        Ok(l) => {
            tracing::info!("locked {snapshot_id}: {}", l.reason());
            Ok(())
        }
        Err(e) => {
            let length = match lock.length {
                autosnap_core::lock::LockLength::Days(d) => format!("--for {d}d"),
                autosnap_core::lock::LockLength::Until(t) => format!("--until {}", t.to_rfc3339()),
            };
            Err(format!(
                "{snapshot_id} was created but not locked ({}): {e}; lock it with `autosnap \
                 snapshot lock {snapshot_id} --mode {} {length}`",
                lock.describe(),
                lock.mode
            ))
        }
    }
}

/// Logs a failed step of one target and records it in the report.
fn record_failure(
    report: &mut RunReport,
    policy: &PolicyPlan,
    target: &TargetPlan,
    region: &str,
    action: &'static str,
    error: String,
) {
    tracing::warn!(
        "policy {}: {action} for {} in {region} failed: {error}",
        policy.policy,
        target.target_id
    );
    report.failures.push(Failure {
        policy: policy.policy.clone(),
        target_id: target.target_id.clone(),
        region: region.to_string(),
        action,
        error,
    });
}

/// Records a step that did not start because the time limit passed.
fn record_left(
    report: &mut RunReport,
    policy: &PolicyPlan,
    target: &TargetPlan,
    region: &str,
    action: &'static str,
    backup_id: Option<String>,
) {
    tracing::info!(
        "policy {}: time limit reached: {action} for {} in {region} not started",
        policy.policy,
        target.target_id
    );
    report.left.push(NotStarted {
        policy: policy.policy.clone(),
        target_id: target.target_id.clone(),
        region: region.to_string(),
        action,
        backup_id,
        account: None,
    });
}

/// Why a group's deletions did not run.
fn skipped_prune(policy: &PolicyPlan, target: &TargetPlan, region: &str) -> String {
    format!(
        "policy {}: {} in {region}: an earlier step failed, so nothing was deleted",
        policy.policy, target.target_id
    )
}

/// Copies one completed snapshot and waits for the copy, holding one of the
/// destination's copy slots meanwhile.
async fn copy_one(
    regions: &Regions,
    source: &Snapshot,
    from_region: &str,
    to_region: &str,
    kms_key: Option<&str>,
    opts: &RunOptions,
) -> Result<String, AwsError> {
    let _slot = regions.copy_slots[to_region]
        .acquire()
        .await
        .expect("semaphore never closed");
    regions.limits(to_region).copy_snapshot.acquire().await;
    let t = tags::copy_tags(
        &source.tags,
        tags::CopySource::Snapshot(&source.snapshot_id),
        from_region,
    );
    let dest = regions.ec2(to_region);
    let id = dest
        .copy_snapshot_from(
            from_region,
            &source.snapshot_id,
            &format!("autosnap copy of {} from {from_region}", source.snapshot_id),
            source.encrypted || kms_key.is_some(),
            kms_key,
            &t,
        )
        .await?;
    let wait =
        dest.wait_snapshots_completed(std::slice::from_ref(&id), opts.wait_timeout, &Unobserved);
    // Cut by the time limit, the copy goes on in AWS and counts as made.
    until_stop(opts, wait).await.transpose()?;
    Ok(id)
}

// ---- AMI policies ---------------------------------------------------------------------------

/// [`run_target`] for an AMI policy: CreateImage (encrypted by CopyImage when asked),
/// CopyImage to the copy regions, and deregistration with snapshot cleanup on prune.
async fn run_ami_target(
    regions: &Regions,
    policy: &PolicyPlan,
    target: &TargetPlan,
    opts: &RunOptions,
    observer: &dyn RunObserver,
) -> RunReport {
    let mut report = RunReport::default();
    let fail = |report: &mut RunReport, region: &str, action: &'static str, e: String| {
        record_failure(report, policy, target, region, action, e)
    };
    let mut blocked: BTreeSet<String> = BTreeSet::new();
    let left = |report: &mut RunReport, region: &str, action: &'static str, b: Option<String>| {
        record_left(report, policy, target, region, action, b)
    };

    // 1. Create. The AMI is waited for only when a copy or encryption needs it.
    let mut created: Option<ImageDetails> = None;
    let create_step = target.create.as_ref().filter(|_| opts.create);
    let create_left = create_step.is_some() && opts.out_of_time();
    if let Some(create) = create_step.filter(|_| create_left) {
        left(&mut report, &create.region, "create", None);
    } else if let (Some(create), Some(ami)) =
        (create_step, create_step.and_then(|c| c.ami.as_ref()))
    {
        let wait = opts.copy && !target.copies.is_empty();
        match create_ami(regions, create, ami, wait, opts).await {
            Ok(image) => {
                tracing::info!(
                    "policy {}: created AMI {} of {}",
                    policy.policy,
                    image.image_id,
                    create.target_id
                );
                report.created.push(Created {
                    policy: policy.policy.clone(),
                    target_id: create.target_id.clone(),
                    region: create.region.clone(),
                    snapshot_ids: image.snapshot_ids(),
                    set_id: None,
                    image_id: Some(image.image_id.clone()),
                });
                observer.created(report.created.last().expect("just recorded"));
                created = Some(image);
            }
            Err(e) => {
                fail(&mut report, &create.region, "create", e.to_string());
                blocked.insert(create.region.clone());
            }
        }
    }

    // 2. Copy the AMI to other regions.
    if opts.copy {
        for copy in &target.copies {
            let from_new = matches!(copy.source, CopySource::New);
            if opts.out_of_time() && (created.is_some() || create_left || !from_new) {
                blocked.insert(copy.to_region.clone());
                let source = match &copy.source {
                    CopySource::Existing { backup_id, .. } => Some(backup_id.clone()),
                    CopySource::New => created.as_ref().map(|i| i.image_id.clone()),
                };
                left(&mut report, &copy.to_region, "copy", source);
                continue;
            }
            let source = match &copy.source {
                CopySource::New => match &created {
                    Some(image) => Ok(image.clone()),
                    None => {
                        blocked.insert(copy.to_region.clone());
                        continue;
                    }
                },
                CopySource::Existing { backup_id, .. } => {
                    regions.ec2(&copy.from_region).get_image(backup_id).await
                }
            };
            let result = match source {
                Ok(source) => copy_ami(regions, &source, copy, opts)
                    .await
                    .map(|id| (source, id)),
                Err(e) => Err(e),
            };
            match result {
                Ok((source, id)) => {
                    report.copied.push(Copied {
                        policy: policy.policy.clone(),
                        target_id: target.target_id.clone(),
                        from_region: copy.from_region.clone(),
                        to_region: copy.to_region.clone(),
                        source_snapshot_id: source.image_id.clone(),
                        snapshot_id: id.clone(),
                        source_image_id: Some(source.image_id.clone()),
                        image_id: Some(id),
                    });
                    observer.copied(report.copied.last().expect("just recorded"));
                }
                Err(e) => {
                    fail(&mut report, &copy.to_region, "copy", e.to_string());
                    blocked.insert(copy.to_region.clone());
                }
            }
        }
    }

    // 3. Prune: deregister, then delete the snapshots made for the AMI (never one another
    // AMI uses, one the user owns, or one registered into it that existed before it).
    if opts.prune {
        for group in &target.groups {
            let doomed: Vec<_> = group.backups.iter().filter(|b| b.delete).collect();
            if doomed.is_empty() {
                continue;
            }
            if blocked.contains(&group.region) {
                report
                    .skipped_prunes
                    .push(skipped_prune(policy, target, &group.region));
                continue;
            }
            let ec2 = regions.ec2(&group.region);
            for backup in doomed {
                if opts.out_of_time() {
                    left(
                        &mut report,
                        &group.region,
                        "delete",
                        Some(backup.backup_id.to_string()),
                    );
                    continue;
                }
                regions
                    .limits(&group.region)
                    .deregister_image
                    .acquire()
                    .await;
                let cleanup = remove_owned_image(ec2, &backup.backup_id).await;
                if !cleanup.left.is_empty() {
                    fail(&mut report, &group.region, "delete", cleanup.summary());
                    continue;
                }
                tracing::info!(
                    "policy {}: deregistered {} of {} in {} ({})",
                    policy.policy,
                    backup.backup_id,
                    target.target_id,
                    group.region,
                    cleanup.summary()
                );
                report.deleted.push(Deleted {
                    policy: policy.policy.clone(),
                    target_id: target.target_id.clone(),
                    region: group.region.clone(),
                    backup_id: backup.backup_id.to_string(),
                    snapshot_ids: cleanup.deleted_snapshots,
                    kept_snapshots: cleanup.kept_snapshots,
                });
                observer.deleted(report.deleted.last().expect("just recorded"));
            }
        }
    }
    report
}

/// The target's backup AMI ([`crate::ami_flow::create_backup_image`]: a free name near the
/// planned one, encrypted by CopyImage when asked), waited for when `wait`.
async fn create_ami(
    regions: &Regions,
    create: &CreateAction,
    ami: &AmiCreate,
    wait: bool,
    opts: &RunOptions,
) -> Result<ImageDetails, ImageFlowError> {
    let ec2 = regions.ec2(&create.region);
    let name = free_name(ec2, &ami.name).await?;
    let req = BackupImageRequest {
        instance_id: create.target_id.clone(),
        names: backup_image_names(ec2, &create.target_id, name, ami.encrypt).await?,
        description: create.description.clone(),
        no_reboot: !ami.reboot,
        encrypt: ami.encrypt,
        kms_key: ami.kms_key.clone(),
        image_tags: create.tags.clone(),
        snapshot_tags: create.tags.clone(),
        wait,
    };
    let mut waits = RunImageWaits {
        quiet: QuietWaits {
            timeout: opts.wait_timeout,
            poll: PollSchedule::IMAGES,
        },
        // An encryption, once started, is seen through: stopped, it would leave its
        // unencrypted first AMI behind.
        stop_at: opts.stop_at.filter(|_| !ami.encrypt),
    };
    match create_backup_image(ec2, &req, regions.limits(&create.region), &mut waits).await {
        Ok(made) => Ok(made.image),
        // The time limit stopped the wait: the AMI is made and completes in AWS; its copies are
        // left for the next run.
        Err(ImageFlowError::Stopped(s)) => Ok(ec2.get_image(&s.image_id).await?),
        Err(e) => Err(e),
    }
}

/// A policy run's AMI waits: quiet, and stopped at the run's time limit.
struct RunImageWaits {
    quiet: QuietWaits,
    stop_at: Option<std::time::Instant>,
}

impl ImageWaits for RunImageWaits {
    fn wait<'a>(&'a mut self, on: AmiWait<'a>) -> ImageWait<'a> {
        let stop_at = self.stop_at;
        let wait = self.quiet.wait(on);
        Box::pin(async move {
            match stop_at {
                Some(t) => tokio::time::timeout_at(t.into(), wait).await.ok().flatten(),
                None => wait.await,
            }
        })
    }
}

/// CopyImage of `source` into the copy's region (encrypted with its KMS key, or as the
/// source is), tagged like the source plus where it came from; waits for the copy while
/// holding one of the region's copy slots.
async fn copy_ami(
    regions: &Regions,
    source: &ImageDetails,
    copy: &autosnap_core::plan::CopyAction,
    opts: &RunOptions,
) -> Result<String, AwsError> {
    let _slot = regions.copy_slots[&copy.to_region]
        .acquire()
        .await
        .expect("semaphore never closed");
    let dest = regions.ec2(&copy.to_region);
    let t = tags::copy_tags(
        &source.tags,
        tags::CopySource::Image(&source.image_id),
        &copy.from_region,
    );
    let base = source
        .name
        .clone()
        .unwrap_or_else(|| source.image_id.clone());
    let name = free_name(dest, &base).await?;
    regions.limits(&copy.to_region).copy_image.acquire().await;
    let id = dest
        .copy_image(&ImageCopy {
            source_image_id: source.image_id.clone(),
            source_region: copy.from_region.clone(),
            name,
            description: Some(format!(
                "autosnap copy of {} from {}",
                source.image_id, copy.from_region
            )),
            encrypted: source.is_encrypted() || copy.kms_key.is_some(),
            kms_key_id: copy.kms_key.clone(),
            image_tags: t.clone(),
            snapshot_tags: t,
        })
        .await?;
    let available =
        dest.wait_image_available(&id, opts.wait_timeout, PollSchedule::IMAGES, &Unobserved);
    // Cut by the time limit, the copy goes on in AWS and counts as made.
    if let Some(Err(e)) = until_stop(opts, available).await {
        let c = remove_image(dest, &id).await;
        return Err(AwsError::Failed {
            what: format!("copy {id} of AMI {} in {}", source.image_id, copy.to_region),
            detail: format!("{e}; {}", c.summary()),
        });
    }
    Ok(id)
}

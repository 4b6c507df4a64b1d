//! Copies into backup accounts (see [`autosnap_core::backup_account`]): each backup account's
//! role assumed from the base credentials, the listing of its copies that the planner needs,
//! and the share → copy → unshare flow with retention applied there, with its own role.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use autosnap_core::backup_account::{
    account_rules, accounts_used, AccountCopies, BackupAccountConfig, SHARED_WITH, SOURCE_ACCOUNT,
};
use autosnap_core::model::Snapshot;
use autosnap_core::plan::{
    self, BackupBuilder, CopySource, ExistingBackup, Inventory, Plan, PolicyPlan, TargetPlan,
};
use autosnap_core::policy::PolicyConfig;
use autosnap_core::tags::{self, Tags};
use aws_sdk_ec2::types::{OperationType, SnapshotAttributeName};
use futures::stream::{self, StreamExt};
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::ec2::{Ec2, SnapshotQuery, Unobserved};
use crate::execute::{Failure, NotStarted, RunOptions, RunReport, COPIES_PER_REGION};
use crate::rate::{paced, Ec2Budget, Pacing, TokenBucket};
use crate::{AwsContext, AwsError};

/// The backup accounts a command works with, each reached by its role (or why not).
pub struct BackupAccounts {
    contexts: HashMap<String, Result<AwsContext, String>>,
    /// Per backup account and Region: its copy slots and CopySnapshot pacing, shared by every
    /// source account of the command (EC2 counts them per destination account and Region).
    slots: Mutex<HashMap<(String, String), Arc<CopySlot>>>,
}

/// One backup account's copies into one Region: EC2 runs at most [`COPIES_PER_REGION`] at a
/// time there, and CopySnapshot draws from that account's mutating-default bucket.
pub struct CopySlot {
    copies: Semaphore,
    copy_snapshot: TokenBucket,
}

impl BackupAccounts {
    /// No backup accounts (no copy rule names one).
    pub fn none() -> Self {
        BackupAccounts {
            contexts: HashMap::new(),
            slots: Mutex::default(),
        }
    }

    /// Assumes the role of every backup account `policies` copy into, from `base`. An account
    /// whose role cannot be assumed is remembered with the cause: its copies fail, nothing
    /// else does.
    pub async fn connect(
        base: &AwsContext,
        entries: &[BackupAccountConfig],
        policies: &[PolicyConfig],
    ) -> Self {
        let mut contexts = HashMap::new();
        for id in accounts_used(policies) {
            let result = match entries.iter().find(|e| e.id == id) {
                None => Err(format!(
                    "backup account {id} has no [[backup_account]] entry with its role"
                )),
                Some(e) => crate::accounts::assume(base, &e.as_account())
                    .await
                    .map_err(|e| format!("backup account {id}: {e}")),
            };
            if let Err(e) = &result {
                tracing::error!("{e}");
            }
            contexts.insert(id, result);
        }
        BackupAccounts {
            contexts,
            slots: Mutex::default(),
        }
    }

    /// The copy slots and CopySnapshot pacing of `account` in `region` (made on first use).
    fn copy_slot(&self, account: &str, region: &str, pacing: Pacing) -> Arc<CopySlot> {
        let mut slots = self.slots.lock().expect("not poisoned");
        slots
            .entry((account.to_owned(), region.to_owned()))
            .or_insert_with(|| {
                Arc::new(CopySlot {
                    copies: Semaphore::new(COPIES_PER_REGION),
                    copy_snapshot: pacing.bucket(crate::rate::budgets::MUTATING),
                })
            })
            .clone()
    }

    fn context(&self, account: &str) -> Result<&AwsContext, String> {
        match self.contexts.get(account) {
            Some(Ok(ctx)) => Ok(ctx),
            Some(Err(e)) => Err(e.clone()),
            None => Err(format!("backup account {account} was not connected")),
        }
    }
}

/// Lists what the planner needs and fills in every target's `account_copies`: the copies in
/// each backup account (owned by it, tagged for the policy and `source_account`) and the
/// source snapshots still shared with it. A backup account that cannot be read is said on its
/// copies (`error`), and the rest of the plan stands.
pub async fn annotate(
    source: &AwsContext,
    source_account: &str,
    accounts: &BackupAccounts,
    policies: &[PolicyConfig],
    inventory: &Inventory,
    plan: &mut Plan,
) -> Result<(), AwsError> {
    let now = plan.now;
    for policy_plan in &mut plan.policies {
        let Some(policy) = policies.iter().find(|p| p.name == policy_plan.policy) else {
            continue;
        };
        for (_, rule) in account_rules(policy) {
            let account = rule.account.clone().expect("an account rule");
            let kms_key = rule.kms_key.clone().unwrap_or_default();
            let retention = policy.copy_retention(rule).to_string();
            let listed =
                list_copies(accounts, &account, &rule.region, policy, source_account).await;
            let there = match listed {
                Ok(there) => there,
                Err(error) => {
                    for t in &mut policy_plan.targets {
                        t.account_copies.push(AccountCopies {
                            account: account.clone(),
                            region: rule.region.clone(),
                            kms_key: kms_key.clone(),
                            copy: None,
                            retention: retention.clone(),
                            backups: Vec::new(),
                            unshare: Vec::new(),
                            error: Some(error.clone()),
                        });
                    }
                    continue;
                }
            };
            // Source snapshots of this policy shared with the account, per source region.
            let mut shared: HashMap<String, Vec<String>> = HashMap::new();
            for region in policy_plan
                .targets
                .iter()
                .map(|t| t.region.clone())
                .collect::<std::collections::BTreeSet<_>>()
            {
                let ids = source
                    .ec2_in(&region)
                    .await?
                    .list_snapshots(&SnapshotQuery {
                        tags: vec![
                            (tags::POLICY.into(), Some(policy.name.clone())),
                            (SHARED_WITH.into(), Some(account.clone())),
                        ],
                        ..Default::default()
                    })
                    .await?
                    .into_iter()
                    .map(|s| s.snapshot_id)
                    .collect();
                shared.insert(region, ids);
            }
            let targets: Vec<(&str, _, &str, bool)> = policy_plan
                .targets
                .iter()
                .map(|t| {
                    (
                        t.target_id.as_str(),
                        t.kind,
                        t.region.as_str(),
                        t.create.is_some(),
                    )
                })
                .collect();
            let planned =
                plan::plan_account_copies(policy, rule, &targets, &inventory.backups, &there, now);
            for (t, (copy, backups)) in policy_plan.targets.iter_mut().zip(planned) {
                // A share is removed once a completed copy of that snapshot is there.
                let unshare = shared
                    .get(&t.region)
                    .map(|ids| {
                        ids.iter()
                            .filter(|id| {
                                there.iter().any(|b| {
                                    b.copy_of() == Some(id.as_str())
                                        && b.state == plan::BackupState::Completed
                                })
                            })
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                t.account_copies.push(AccountCopies {
                    account: account.clone(),
                    region: rule.region.clone(),
                    kms_key: kms_key.clone(),
                    copy,
                    retention: retention.clone(),
                    backups,
                    unshare,
                    error: None,
                });
            }
        }
    }
    Ok(())
}

/// The copies in `account`'s `region` that autosnap made for `policy` from `source_account`.
async fn list_copies(
    accounts: &BackupAccounts,
    account: &str,
    region: &str,
    policy: &PolicyConfig,
    source_account: &str,
) -> Result<Vec<ExistingBackup>, String> {
    let ctx = accounts.context(account)?;
    let ec2 = ctx
        .ec2_in(region)
        .await
        .map_err(|e| format!("backup account {account}: {e}"))?;
    let snaps = ec2
        .list_snapshots(&SnapshotQuery {
            tags: vec![
                (tags::MANAGED.into(), Some(tags::MANAGED_VALUE.into())),
                (tags::POLICY.into(), Some(policy.name.clone())),
                (SOURCE_ACCOUNT.into(), Some(source_account.to_owned())),
            ],
            ..Default::default()
        })
        .await
        .map_err(|e| format!("cannot list the copies in backup account {account}: {e}"))?;
    let mut builder = BackupBuilder::new(std::slice::from_ref(policy));
    Ok(snaps
        .iter()
        .map(|s| builder.snapshot(s, region, Vec::new()))
        .collect())
}

/// A snapshot copied into a backup account.
#[derive(Debug, Clone, Serialize)]
pub struct AccountCopied {
    pub policy: String,
    pub target_id: String,
    pub account: String,
    pub from_region: String,
    pub to_region: String,
    pub source_snapshot_id: String,
    /// The copy, owned by `account`.
    pub snapshot_id: String,
    /// Whether the share of the source snapshot was removed (the copy completed in time).
    pub unshared: bool,
}

/// A copy deleted in a backup account by its retention.
#[derive(Debug, Clone, Serialize)]
pub struct AccountDeleted {
    pub policy: String,
    pub target_id: String,
    pub account: String,
    pub region: String,
    pub snapshot_id: String,
}

/// What a run did in backup accounts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BackupAccountReport {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub copied: Vec<AccountCopied>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deleted: Vec<AccountDeleted>,
    /// Source snapshots whose share with a backup account was removed (their copy is
    /// complete), other than those copied in this run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unshared: Vec<String>,
}

impl BackupAccountReport {
    pub fn is_empty(&self) -> bool {
        self.copied.is_empty() && self.deleted.is_empty() && self.unshared.is_empty()
    }

    pub fn successes(&self) -> usize {
        self.copied.len() + self.deleted.len() + self.unshared.len()
    }

    pub fn merge(&mut self, other: BackupAccountReport) {
        self.copied.extend(other.copied);
        self.deleted.extend(other.deleted);
        self.unshared.extend(other.unshared);
    }
}

/// Copies into backup accounts in flight at once: each mostly waits for its copy to complete.
/// Each destination account and Region also holds at most [`COPIES_PER_REGION`] of them
/// (EC2's concurrent-copy limit), across every source account of the command.
pub const ACCOUNT_COPIES_IN_FLIGHT: usize = COPIES_PER_REGION;

/// ModifySnapshotAttribute (share, unshare): EC2's bucket of 100, refilling 5 a second
/// (docs/rate-limits.md).
const MODIFY_SNAPSHOT_ATTRIBUTE: Ec2Budget = Ec2Budget {
    capacity: 100,
    refill_per_sec: 5.0,
};

/// What [`execute`] did in backup accounts, what failed (one per step) and what it did not
/// start because the run's time limit passed.
#[derive(Debug, Default)]
pub struct Executed {
    pub report: BackupAccountReport,
    pub failures: Vec<Failure>,
    pub left: Vec<NotStarted>,
}

/// One copy rule's copies of one target into one backup account, as [`execute`] works on it.
struct Entry<'a> {
    policy: &'a PolicyPlan,
    target: &'a TargetPlan,
    copies: &'a AccountCopies,
    /// The source account's client in the target's Region, and the backup account's in the
    /// rule's.
    src: Ec2,
    dest: Ec2,
    /// A copy retention counted on was not made: nothing is deleted there.
    blocked: bool,
}

impl Executed {
    fn fail(
        &mut self,
        e: (&PolicyPlan, &TargetPlan, &AccountCopies),
        action: &'static str,
        error: String,
    ) {
        let (p, t, ac) = e;
        tracing::warn!(
            "policy {}: {action} of {} into account {} in {} failed: {error}",
            p.policy,
            t.target_id,
            ac.account,
            ac.region
        );
        self.failures.push(Failure {
            policy: p.policy.clone(),
            target_id: t.target_id.clone(),
            region: format!("{} (account {})", ac.region, ac.account),
            action,
            error,
        });
    }

    /// A step not started because the time limit passed, in `region` (the backup account's for
    /// a copy or deletion, the source's for an unshare).
    fn left(
        &mut self,
        e: (&PolicyPlan, &TargetPlan, &AccountCopies),
        region: &str,
        action: &'static str,
        backup_id: Option<String>,
    ) {
        let (p, t, ac) = e;
        tracing::info!(
            "policy {}: time limit reached: {action} for {} in {region} (account {}) not started",
            p.policy,
            t.target_id,
            ac.account
        );
        self.left.push(NotStarted {
            policy: p.policy.clone(),
            target_id: t.target_id.clone(),
            region: region.to_owned(),
            action,
            backup_id,
            account: Some(ac.account.clone()),
        });
    }
}

impl<'a> Entry<'a> {
    fn key(&self) -> (&'a PolicyPlan, &'a TargetPlan, &'a AccountCopies) {
        (self.policy, self.target, self.copies)
    }
}

/// Runs `wait` until it ends or the time limit passes (`None`: the limit cut it short).
async fn until_limit<T>(
    opts: &RunOptions,
    wait: impl std::future::Future<Output = T>,
) -> Option<T> {
    match opts.stop_at {
        Some(t) => tokio::time::timeout_at(t.into(), wait).await.ok(),
        None => Some(wait.await),
    }
}

/// Carries out the plan's account copies: shares, copies, unshares and prunes. `done` is the
/// run in the source account (the copies of new backups are made of what it created; a create
/// it left leaves their copies too). The copies start together (at most
/// [`ACCOUNT_COPIES_IN_FLIGHT`], paced) and are waited for together; the report keeps the
/// plan's order. Past `opts.stop_at` no share, copy, unshare or deletion starts, a wait stops,
/// and what did not start is in [`Executed::left`].
pub async fn execute(
    source: &AwsContext,
    source_account: &str,
    accounts: &BackupAccounts,
    plan: &Plan,
    done: &RunReport,
    opts: &RunOptions,
) -> Executed {
    let mut out = Executed::default();
    // Each source Region's AWS managed EBS key, looked up once.
    let mut managed_keys: HashMap<String, Option<(String, String)>> = HashMap::new();
    let mut entries: Vec<Entry> = Vec::new();
    // (entry, source snapshot) for each copy to make.
    let mut jobs: Vec<(usize, Snapshot)> = Vec::new();

    // 1. What each entry copies: its sources, a new backup waited for (until the limit).
    for p in &plan.policies {
        for t in &p.targets {
            for ac in &t.account_copies {
                let key = (p, t, ac);
                if let Some(e) = &ac.error {
                    if opts.copy && (ac.copy.is_some() || t.create.is_some()) || opts.prune {
                        out.fail(key, "copy", e.clone());
                    }
                    continue;
                }
                let backup = match accounts.context(&ac.account) {
                    Ok(ctx) => ctx,
                    Err(e) => {
                        out.fail(key, "copy", e);
                        continue;
                    }
                };
                let (src, dest) = match (
                    source.ec2_in(&t.region).await,
                    backup.ec2_in(&ac.region).await,
                ) {
                    (Ok(s), Ok(d)) => (s, d),
                    (Err(e), _) | (_, Err(e)) => {
                        out.fail(key, "copy", e.to_string());
                        continue;
                    }
                };
                let index = entries.len();
                let mut blocked = false;
                if let (true, Some(copy)) = (opts.copy, &ac.copy) {
                    let sources = match &copy.source {
                        CopySource::New => {
                            let ids: Vec<String> = done
                                .created
                                .iter()
                                .filter(|c| c.policy == p.policy && c.target_id == t.target_id)
                                .flat_map(|c| c.snapshot_ids.clone())
                                .collect();
                            if ids.is_empty() {
                                // The create was not run, failed or was left: nothing to copy.
                                blocked = true;
                                let create_left = done.left.iter().any(|l| {
                                    l.action == "create"
                                        && l.policy == p.policy
                                        && l.target_id == t.target_id
                                });
                                if create_left {
                                    out.left(key, &ac.region, "account_copy", None);
                                }
                                Ok(Vec::new())
                            } else {
                                let wait = src.wait_snapshots_completed(
                                    &ids,
                                    opts.wait_timeout,
                                    &Unobserved,
                                );
                                match until_limit(opts, wait).await {
                                    Some(done) => done,
                                    None => {
                                        // Still completing: its copy is the next run's.
                                        blocked = true;
                                        for id in ids {
                                            out.left(key, &ac.region, "account_copy", Some(id));
                                        }
                                        Ok(Vec::new())
                                    }
                                }
                            }
                        }
                        CopySource::Existing { backup_id, .. } if opts.out_of_time() => {
                            blocked = true;
                            out.left(key, &ac.region, "account_copy", Some(backup_id.clone()));
                            Ok(Vec::new())
                        }
                        CopySource::Existing { snapshot_ids, .. } => {
                            src.list_snapshots(&SnapshotQuery {
                                snapshot_ids: snapshot_ids.clone(),
                                ..Default::default()
                            })
                            .await
                        }
                    };
                    match sources {
                        Err(e) => {
                            out.fail(key, "copy", e.to_string());
                            blocked = true;
                        }
                        Ok(sources) => {
                            for s in sources {
                                // Sharing it would fail at EC2 (or share what the backup
                                // account cannot decrypt): say why instead.
                                if s.encrypted {
                                    let managed = match managed_keys.get(&t.region) {
                                        Some(k) => k.clone(),
                                        None => {
                                            let k = aws_managed_ebs_key(source, &t.region)
                                                .await
                                                .ok()
                                                .flatten();
                                            managed_keys.insert(t.region.clone(), k.clone());
                                            k
                                        }
                                    };
                                    let key_id = s.kms_key_id.as_deref().unwrap_or_default();
                                    if managed.is_some_and(|m| is_key(key_id, &m)) {
                                        out.fail(
                                            key,
                                            "copy",
                                            managed_key_problem(
                                                &format!("snapshot {}", s.snapshot_id),
                                                &ac.account,
                                            ),
                                        );
                                        blocked = true;
                                        continue;
                                    }
                                }
                                jobs.push((index, s));
                            }
                        }
                    }
                }
                entries.push(Entry {
                    policy: p,
                    target: t,
                    copies: ac,
                    src,
                    dest,
                    blocked,
                });
            }
        }
    }

    // 2. The copies, started together and waited for together; results in the plan's order.
    let share_buckets: HashMap<String, TokenBucket> = entries
        .iter()
        .map(|e| {
            (
                e.src.region().to_owned(),
                opts.pacing.bucket(MODIFY_SNAPSHOT_ATTRIBUTE),
            )
        })
        .collect();
    let results: Vec<(usize, String, Result<CopyEnd, String>)> = {
        let entries = &entries;
        let share_buckets = &share_buckets;
        stream::iter(jobs)
            .map(|(index, s)| async move {
                let e = &entries[index];
                let slot = accounts.copy_slot(&e.copies.account, &e.copies.region, opts.pacing);
                let step = CopyStep {
                    src: &e.src,
                    dest: &e.dest,
                    share_bucket: &share_buckets[e.src.region()],
                    slot: &slot,
                    source_account,
                    account: &e.copies.account,
                    kms_key: &e.copies.kms_key,
                };
                let result = copy_into(&step, &s, opts).await;
                (index, s.snapshot_id, result)
            })
            .buffered(ACCOUNT_COPIES_IN_FLIGHT)
            .collect()
            .await
    };
    for (index, source_id, result) in results {
        let e = &mut entries[index];
        let (p, t, ac) = e.key();
        match result {
            Ok(CopyEnd::NotStarted) => {
                e.blocked = true;
                out.left((p, t, ac), &ac.region, "account_copy", Some(source_id));
            }
            Ok(CopyEnd::Made { id, unshared }) => {
                tracing::info!(
                    "policy {}: copied {source_id} into account {} in {} as {id}",
                    p.policy,
                    ac.account,
                    ac.region
                );
                if !unshared {
                    // The wait stopped at the limit: the copy goes on in AWS, and the next run
                    // removes the share once it is complete.
                    let from = t.region.clone();
                    out.left(
                        (p, t, ac),
                        &from,
                        "account_unshare",
                        Some(source_id.clone()),
                    );
                }
                out.report.copied.push(AccountCopied {
                    policy: p.policy.clone(),
                    target_id: t.target_id.clone(),
                    account: ac.account.clone(),
                    from_region: t.region.clone(),
                    to_region: ac.region.clone(),
                    source_snapshot_id: source_id,
                    snapshot_id: id,
                    unshared,
                });
            }
            Err(error) => {
                e.blocked = true;
                out.fail((p, t, ac), "copy", error);
            }
        }
    }

    // 3. Shares whose copies completed after an earlier run stopped waiting, then retention in
    // the backup accounts.
    for e in &entries {
        let (p, t, ac) = e.key();
        if opts.copy {
            for id in &ac.unshare {
                if opts.out_of_time() {
                    out.left(e.key(), &t.region, "account_unshare", Some(id.clone()));
                    continue;
                }
                let bucket = &share_buckets[e.src.region()];
                bucket.acquire().await;
                match unshare(&e.src, id, &ac.account).await {
                    Ok(()) => out.report.unshared.push(id.clone()),
                    Err(err) => out.fail(e.key(), "unshare", err.to_string()),
                }
            }
        }
        if !opts.prune {
            continue;
        }
        let doomed: Vec<_> = ac.backups.iter().filter(|b| b.delete).collect();
        if e.blocked && !doomed.is_empty() {
            // Retention assumed the new copy exists.
            continue;
        }
        for b in doomed {
            if opts.out_of_time() {
                out.left(
                    e.key(),
                    &ac.region,
                    "account_delete",
                    Some(b.backup_id.to_string()),
                );
                continue;
            }
            for id in &b.snapshot_ids {
                match e.dest.delete_snapshot(id).await {
                    Ok(()) => {
                        tracing::info!(
                            "policy {}: deleted copy {id} of {} in account {} ({})",
                            p.policy,
                            t.target_id,
                            ac.account,
                            ac.region
                        );
                        out.report.deleted.push(AccountDeleted {
                            policy: p.policy.clone(),
                            target_id: t.target_id.clone(),
                            account: ac.account.clone(),
                            region: ac.region.clone(),
                            snapshot_id: id.to_string(),
                        })
                    }
                    Err(err) => out.fail(e.key(), "delete", err.to_string()),
                }
            }
        }
    }
    out
}

/// How one copy into a backup account ended.
enum CopyEnd {
    /// The time limit passed before it started (its source may stay shared: the next run
    /// copies it).
    NotStarted,
    /// The copy, owned by the backup account; `unshared` is false when the time limit stopped
    /// the wait for it (the next run removes the share once it is complete).
    Made { id: String, unshared: bool },
}

/// What one copy into a backup account works with.
struct CopyStep<'a> {
    src: &'a Ec2,
    dest: &'a Ec2,
    /// The source account's ModifySnapshotAttribute pacing in the source Region.
    share_bucket: &'a TokenBucket,
    /// The destination's concurrent-copy slots and CopySnapshot pacing.
    slot: &'a CopySlot,
    source_account: &'a str,
    account: &'a str,
    kms_key: &'a str,
}

/// Shares `source` with the backup account, copies it there (CopySnapshot by the backup
/// account, with its key) and, once the copy is complete, removes the share. Holds one of the
/// destination's copy slots from the copy until it completes (or the wait stops at the limit).
async fn copy_into(
    step: &CopyStep<'_>,
    source: &Snapshot,
    opts: &RunOptions,
) -> Result<CopyEnd, String> {
    let CopyStep {
        src,
        dest,
        share_bucket,
        slot,
        source_account,
        account,
        kms_key,
    } = *step;
    let _slot = slot.copies.acquire().await.expect("semaphore never closed");
    if opts.out_of_time() {
        return Ok(CopyEnd::NotStarted);
    }
    share_bucket.acquire().await;
    share(src, &source.snapshot_id, account)
        .await
        .map_err(|e| format!("cannot share {} with {account}: {e}", source.snapshot_id))?;
    let mut t: Tags = source
        .tags
        .iter()
        .filter(|(k, _)| !k.starts_with(tags::AWS_PREFIX) && k.as_str() != SHARED_WITH)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    t.insert(tags::MANAGED.into(), tags::MANAGED_VALUE.into());
    t.insert(tags::SOURCE_SNAPSHOT.into(), source.snapshot_id.clone());
    t.insert(tags::SOURCE_REGION.into(), src.region().to_owned());
    t.insert(SOURCE_ACCOUNT.into(), source_account.to_owned());
    if opts.out_of_time() {
        // Shared (and tagged so) but not copied: the next run copies it and removes the share.
        return Ok(CopyEnd::NotStarted);
    }
    let description = format!(
        "autosnap copy of {} from {source_account} {}",
        source.snapshot_id,
        src.region()
    );
    let id = paced(
        &slot.copy_snapshot,
        "CopySnapshot",
        &source.snapshot_id,
        || {
            dest.copy_snapshot_from(
                src.region(),
                &source.snapshot_id,
                &description,
                true,
                Some(kms_key),
                &t,
            )
        },
    )
    .await
    .map_err(|e| {
        format!(
            "account {account} could not copy {}: {e} (the source stays shared with it; \
             the next run tries again)",
            source.snapshot_id
        )
    })?;
    let wait =
        dest.wait_snapshots_completed(std::slice::from_ref(&id), opts.wait_timeout, &Unobserved);
    match until_limit(opts, wait).await {
        None => {
            return Ok(CopyEnd::Made {
                id,
                unshared: false,
            })
        }
        Some(Err(e)) => {
            return Err(format!(
                "copy {id} of {} in account {account} is not complete: {e}; the next run \
                 removes the share once it is",
                source.snapshot_id
            ))
        }
        Some(Ok(_)) => {}
    }
    if opts.out_of_time() {
        return Ok(CopyEnd::Made {
            id,
            unshared: false,
        });
    }
    share_bucket.acquire().await;
    unshare(src, &source.snapshot_id, account)
        .await
        .map_err(|e| {
            format!(
                "copied as {id}, but the share of {} stays: {e}",
                source.snapshot_id
            )
        })?;
    Ok(CopyEnd::Made { id, unshared: true })
}

/// ModifySnapshotAttribute createVolumePermission add `account`, and the `autosnap:shared-with`
/// tag that lets a later run find the share.
async fn share(src: &Ec2, snapshot_id: &str, account: &str) -> Result<(), AwsError> {
    let mut t = Tags::new();
    t.insert(SHARED_WITH.into(), account.to_owned());
    src.create_tags(&[snapshot_id.to_owned()], &t).await?;
    modify_permission(src, snapshot_id, account, OperationType::Add).await
}

/// Removes the share of `snapshot_id` with `account`, then its tag.
async fn unshare(src: &Ec2, snapshot_id: &str, account: &str) -> Result<(), AwsError> {
    modify_permission(src, snapshot_id, account, OperationType::Remove).await?;
    src.raw()
        .delete_tags()
        .resources(snapshot_id)
        .tags(aws_sdk_ec2::types::Tag::builder().key(SHARED_WITH).build())
        .send()
        .await
        .map_err(|e| {
            AwsError::from_sdk(e, "DeleteTags", Some(("snapshot", snapshot_id)), src.site())
        })?;
    Ok(())
}

async fn modify_permission(
    src: &Ec2,
    snapshot_id: &str,
    account: &str,
    op: OperationType,
) -> Result<(), AwsError> {
    // The OperationType/UserIds form of the call (equivalent to CreateVolumePermission.Add).
    src.raw()
        .modify_snapshot_attribute()
        .snapshot_id(snapshot_id)
        .attribute(SnapshotAttributeName::CreateVolumePermission)
        .operation_type(op)
        .user_ids(account)
        .send()
        .await
        .map_err(|e| {
            AwsError::from_sdk(
                e,
                "ModifySnapshotAttribute",
                Some(("snapshot", snapshot_id)),
                src.site(),
            )
        })?;
    Ok(())
}

/// The AWS managed EBS key (`alias/aws/ebs`) of the account of `ctx` in `region`: its key id and
/// ARN, or `None` when the account has none there. Snapshots encrypted with it cannot be shared
/// with another account.
pub async fn aws_managed_ebs_key(
    ctx: &AwsContext,
    region: &str,
) -> Result<Option<(String, String)>, AwsError> {
    use aws_smithy_types::error::metadata::ProvideErrorMetadata;
    let conf = aws_sdk_kms::config::Builder::from(ctx.sdk_config())
        .region(aws_config::Region::new(region.to_string()))
        .build();
    let client = aws_sdk_kms::Client::from_conf(conf);
    match client
        .describe_key()
        .key_id(AWS_MANAGED_EBS_ALIAS)
        .send()
        .await
    {
        Ok(out) => Ok(out.key_metadata().map(|m| {
            (
                m.key_id().to_owned(),
                m.arn().unwrap_or_default().to_owned(),
            )
        })),
        Err(e) if e.as_service_error().and_then(|s| s.code()) == Some("NotFoundException") => {
            Ok(None)
        }
        Err(e) => Err(AwsError::from_sdk(
            e,
            "DescribeKey",
            Some(("KMS key", AWS_MANAGED_EBS_ALIAS)),
            &ctx.call_site("KMS", region),
        )),
    }
}

/// The alias of the AWS managed key EBS uses by default.
pub const AWS_MANAGED_EBS_ALIAS: &str = "alias/aws/ebs";

/// Whether `key` (a key id or ARN, as EC2 reports a snapshot's or volume's) is `managed`.
pub fn is_key(key: &str, managed: &(String, String)) -> bool {
    let (id, arn) = managed;
    key == id || (!arn.is_empty() && key == arn) || key.ends_with(&format!(":key/{id}"))
}

/// Why `what` (a snapshot or volume) cannot be copied into `account`: it is encrypted with the
/// AWS managed key.
pub fn managed_key_problem(what: &str, account: &str) -> String {
    format!(
        "{what} is encrypted with the AWS managed key aws/ebs, which cannot be shared with \
         another account, so it cannot be copied into {account}: encrypt the volume with a \
         customer managed key whose key policy lets account {account} use it (README, \"Copies \
         into a backup account\")"
    )
}

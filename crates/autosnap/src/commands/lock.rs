//! `autosnap snapshot lock | unlock`: EBS snapshot lock, planned and printed before anything
//! is changed.

use autosnap_aws::rate::{self, Ec2RateLimits};
use autosnap_aws::{Ec2, SnapshotQuery};
use autosnap_core::lock::{LockMode, LockRequest, LockState, SnapshotLock};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::cli::{SnapshotLockArgs, SnapshotUnlockArgs};
use crate::commands::confirm::{self, Consent};
use crate::commands::Env;
use crate::exit::{Exit, UsageError};
use crate::output;

/// The flag that acknowledges compliance mode, for errors that ask for it.
const ACKNOWLEDGE: &str = "pass --i-understand-compliance-is-irreversible";

/// A lock as printed: the state and the times that matter to a person or a script.
#[derive(Debug, Clone, Serialize)]
pub(super) struct LockOut {
    /// `governance`, `compliance-cooloff`, `compliance` or `expired`.
    pub state: String,
    pub until: Option<DateTime<Utc>>,
    /// Compliance mode: until when the lock can still be removed.
    pub cool_off_until: Option<DateTime<Utc>>,
}

impl From<&SnapshotLock> for LockOut {
    fn from(l: &SnapshotLock) -> LockOut {
        LockOut {
            state: l.state.as_str().to_string(),
            until: l.expires_on,
            cool_off_until: l.cool_off_ends,
        }
    }
}

/// The LOCK column: `governance until 2027-01-02 03:04`, `-` when not locked.
pub(super) fn lock_cell(lock: Option<&SnapshotLock>) -> String {
    match lock {
        None => "-".into(),
        Some(l) if l.state == LockState::Expired => "expired".into(),
        Some(l) => match l.expires_on {
            Some(t) => format!("{} until {}", l.state.as_str(), t.format("%Y-%m-%d %H:%M")),
            None => l.state.as_str().to_string(),
        },
    }
}

#[derive(Serialize)]
struct LockResult {
    snapshot_id: String,
    /// `locked`, `would_lock`, `unlocked`, `would_unlock`, `not_locked`, `refused`,
    /// `missing` or `failed`.
    result: &'static str,
    /// The lock after the command (or, for a dry run or a refusal, as it is).
    lock: Option<LockOut>,
    reason: String,
}

fn results_table(results: &[LockResult]) -> comfy_table::Table {
    let mut t = output::table(["SNAPSHOT ID", "RESULT", "LOCK", "REASON"]);
    for r in results {
        let lock = match &r.lock {
            None => "-".to_string(),
            Some(l) => match l.until {
                Some(t) => format!("{} until {}", l.state, t.format("%Y-%m-%d %H:%M")),
                None => l.state.clone(),
            },
        };
        t.add_row([
            r.snapshot_id.clone(),
            r.result.replace('_', " "),
            lock,
            r.reason.clone(),
        ]);
    }
    t
}

fn finish(env: &Env, results: &[LockResult], verb: &str) -> anyhow::Result<Exit> {
    super::finish_snapshot_results(env, results, |r| r.result, || results_table(results), verb)
}

/// The requested ids that exist, and their current locks.
async fn existing(ec2: &Ec2, ids: &[String]) -> anyhow::Result<(Vec<String>, Vec<SnapshotLock>)> {
    let found: Vec<String> = ec2
        .list_snapshots(&SnapshotQuery {
            snapshot_ids: ids.to_vec(),
            ..Default::default()
        })
        .await?
        .into_iter()
        .map(|s| s.snapshot_id)
        .collect();
    let locks = ec2.locked_snapshots(&found).await?;
    Ok((found, locks))
}

pub async fn lock(env: &Env, args: &SnapshotLockArgs) -> anyhow::Result<Exit> {
    let mode: LockMode = args.mode.parse()?;
    let length = match (&args.lock_for, args.until) {
        (Some(d), _) => Ok(d),
        (None, Some(t)) => Err(t),
        (None, None) => unreachable!("clap requires --for or --until"),
    };
    // Checked before any AWS call: a refused compliance lock costs nothing.
    let request = LockRequest::new(
        mode,
        length,
        args.cool_off.as_ref(),
        args.i_understand_compliance_is_irreversible,
        ACKNOWLEDGE,
        Utc::now(),
    )
    .map_err(|e| UsageError(e.to_string()))?;

    let ctx = env.connect().await?;
    let ec2 = ctx.ec2().await?;
    let requested = super::unique_snapshot_ids(&args.ids);
    let (found, locks) = existing(&ec2, &requested).await?;
    let current = |id: &str| locks.iter().find(|l| l.snapshot_id == id);

    let plan_lines: Vec<String> = requested
        .iter()
        .filter(|id| found.contains(id))
        .map(|id| {
            let now = match current(id) {
                Some(l) if l.prevents_deletion() => l.reason(),
                _ => "not locked".into(),
            };
            format!("lock {id} {} (now {now})", request.describe())
        })
        .collect();
    for line in &plan_lines {
        tracing::info!("{line}");
    }
    // Compliance cannot be taken back after its cooling-off: at a terminal, ask.
    let question = confirm::Question {
        skip: args.yes || args.dry_run || mode == LockMode::Governance,
        deletes: plan_lines.len(),
        plan: plan_lines.join("\n"),
        prompt: format!(
            "Lock {} in compliance mode ({})? It cannot be undone after the cooling-off period",
            confirm::count(plan_lines.len(), "snapshot", "snapshots"),
            request.describe()
        ),
    };
    if question
        .ask_about(
            "nothing locked",
            "stopped while locking: the snapshots locked so far stay locked; `autosnap \
             snapshot list` shows which",
        )
        .await?
        == Consent::Refused
    {
        return Ok(confirm::DECLINED);
    }

    // Paced by the same buckets as policy runs (autosnap_aws::rate).
    let limits = Ec2RateLimits::default();
    let mut results = Vec::new();
    for id in &requested {
        let before = current(id);
        let r = if !found.contains(id) {
            LockResult {
                snapshot_id: id.clone(),
                result: "missing",
                lock: None,
                reason: format!(
                    "does not exist in {} (or belongs to another account)",
                    ec2.region()
                ),
            }
        } else if args.dry_run {
            LockResult {
                snapshot_id: id.clone(),
                result: "would_lock",
                lock: before.map(LockOut::from),
                reason: request.describe(),
            }
        } else {
            match rate::paced(&limits.lock_snapshot, "LockSnapshot", id, || {
                ec2.lock_snapshot(id, &request)
            })
            .await
            {
                Ok(after) => {
                    tracing::info!("locked {id}: {}", after.reason());
                    LockResult {
                        snapshot_id: id.clone(),
                        result: "locked",
                        lock: Some(LockOut::from(&after)),
                        reason: request.describe(),
                    }
                }
                Err(e) => LockResult {
                    snapshot_id: id.clone(),
                    result: "failed",
                    lock: before.map(LockOut::from),
                    reason: e.to_string(),
                },
            }
        };
        results.push(r);
    }
    finish(
        env,
        &results,
        if args.dry_run { "would lock" } else { "locked" },
    )
}

pub async fn unlock(env: &Env, args: &SnapshotUnlockArgs) -> anyhow::Result<Exit> {
    let ctx = env.connect().await?;
    let ec2 = ctx.ec2().await?;
    let requested = super::unique_snapshot_ids(&args.ids);
    let (found, locks) = existing(&ec2, &requested).await?;

    // Paced by the same buckets as policy runs (autosnap_aws::rate).
    let limits = Ec2RateLimits::default();
    let mut results = Vec::new();
    for id in &requested {
        let lock = locks.iter().find(|l| &l.snapshot_id == id);
        let row = |result, reason: String| LockResult {
            snapshot_id: id.clone(),
            result,
            lock: lock.map(LockOut::from),
            reason,
        };
        let r = match lock {
            _ if !found.contains(id) => LockResult {
                lock: None,
                ..row(
                    "missing",
                    format!(
                        "does not exist in {} (or belongs to another account)",
                        ec2.region()
                    ),
                )
            },
            None => row("not_locked", "not locked: nothing to do".into()),
            Some(l) if l.state == LockState::Expired => {
                row("not_locked", "its lock has expired: nothing to do".into())
            }
            Some(l) if l.state == LockState::Compliance => row(
                "refused",
                format!(
                    "{}: compliance mode after its cooling-off period cannot be unlocked by \
                     anyone; it can be deleted once the lock expires",
                    l.reason()
                ),
            ),
            Some(l) if args.dry_run => row("would_unlock", l.reason()),
            Some(l) => match rate::paced(&limits.unlock_snapshot, "UnlockSnapshot", id, || {
                ec2.unlock_snapshot(id)
            })
            .await
            {
                Ok(()) => {
                    tracing::info!("unlocked {id} (was {})", l.reason());
                    LockResult {
                        lock: None,
                        ..row("unlocked", format!("was {}", l.reason()))
                    }
                }
                Err(e) => row("failed", e.to_string()),
            },
        };
        results.push(r);
    }
    finish(
        env,
        &results,
        if args.dry_run {
            "would unlock"
        } else {
            "unlocked"
        },
    )
}

//! `autosnap snapshot archive | restore-tier`: the EBS Snapshots Archive tier, planned and
//! printed before anything is changed. What EC2 would refuse is refused here first, with the
//! reason, so nothing is half-done.

use autosnap_aws::tier::TierStatus;
use autosnap_aws::SnapshotQuery;
use autosnap_core::model::Snapshot;
use autosnap_core::tier::{
    archive_refusal, minimum_days_left, ArchiveCost, RestoreRequest, StorageTier, MIN_ARCHIVE_DAYS,
    RESTORE_HOURS_AT_MOST,
};
use chrono::Utc;
use serde::Serialize;

use crate::cli::{SnapshotArchiveArgs, SnapshotRestoreTierArgs};
use crate::commands::Env;
use crate::exit::Exit;
use crate::output;

#[derive(Serialize)]
struct TierResult {
    snapshot_id: String,
    /// `archived`, `would_archive`, `restoring`, `would_restore`, `not_archived`, `refused`,
    /// `missing` or `failed`.
    result: &'static str,
    /// The tier before the command: `standard` or `archive` (null when missing).
    storage_tier: Option<StorageTier>,
    reason: String,
}

fn results_table(results: &[TierResult]) -> comfy_table::Table {
    let mut t = output::table(["SNAPSHOT ID", "RESULT", "TIER", "REASON"]);
    for r in results {
        t.add_row([
            r.snapshot_id.clone(),
            r.result.replace('_', " "),
            r.storage_tier
                .as_ref()
                .map_or_else(|| "-".to_string(), |t| t.to_string()),
            r.reason.clone(),
        ]);
    }
    t
}

fn finish(env: &Env, results: &[TierResult], verb: &str) -> anyhow::Result<Exit> {
    super::finish_snapshot_results(env, results, |r| r.result, || results_table(results), verb)
}

/// What archiving costs in time and money, said before it is done.
fn archive_terms(s: &Snapshot) -> String {
    let size = s
        .size_gib
        .map_or_else(String::new, |g| format!(" (volume {g} GiB)"));
    let cost = s.size_gib.map_or_else(String::new, |g| {
        format!("; {}", ArchiveCost::of(g).describe())
    });
    format!(
        "stored as a full snapshot{size}, billed for at least {MIN_ARCHIVE_DAYS} days in the \
         archive tier (deleting or permanently restoring it earlier is billed for the rest); \
         restoring it before use takes up to {RESTORE_HOURS_AT_MOST} hours{cost}"
    )
}

pub async fn archive(env: &Env, args: &SnapshotArchiveArgs) -> anyhow::Result<Exit> {
    let ctx = env.connect().await?;
    let ec2 = ctx.ec2().await?;
    let requested = super::unique_snapshot_ids(&args.ids);
    let snaps = ec2
        .list_snapshots(&SnapshotQuery {
            snapshot_ids: requested.clone(),
            ..Default::default()
        })
        .await?;
    let found: Vec<String> = snaps.iter().map(|s| s.snapshot_id.clone()).collect();
    let images = ec2.images_using_snapshots(&found).await?;
    let image_of = |id: &str| {
        images
            .iter()
            .find(|i| i.snapshot_ids.iter().any(|s| s == id))
            .map(|i| i.image_id.clone())
    };

    // The plan, each snapshot with what EC2 would say, before anything changes.
    let plan: Vec<(String, Option<&Snapshot>, Option<String>)> = requested
        .iter()
        .map(|id| {
            let snap = snaps.iter().find(|s| &s.snapshot_id == id);
            let refusal = snap.and_then(|s| {
                archive_refusal(s, Some(ec2.account()), image_of(id).as_deref())
                    .map(|r| r.to_string())
            });
            (id.clone(), snap, refusal)
        })
        .collect();
    for (id, snap, refusal) in &plan {
        match (snap, refusal) {
            (Some(s), None) => tracing::info!("archive {id}: {}", archive_terms(s)),
            (Some(_), Some(r)) => tracing::info!("not archiving {id}: {r}"),
            (None, _) => {}
        }
    }

    // Paced by the same bucket as a policy's archive_after (autosnap_aws::rate).
    let limits = autosnap_aws::rate::Ec2RateLimits::default();
    let mut results = Vec::new();
    for (id, snap, refusal) in plan {
        let r = match (snap, refusal) {
            (None, _) => TierResult {
                snapshot_id: id,
                result: "missing",
                storage_tier: None,
                reason: format!(
                    "does not exist in {} (or belongs to another account)",
                    ec2.region()
                ),
            },
            (Some(s), Some(reason)) => TierResult {
                snapshot_id: id,
                result: "refused",
                storage_tier: Some(s.storage_tier.clone()),
                reason,
            },
            (Some(s), None) if args.dry_run => TierResult {
                snapshot_id: id,
                result: "would_archive",
                storage_tier: Some(s.storage_tier.clone()),
                reason: archive_terms(s),
            },
            (Some(s), None) => match autosnap_aws::rate::paced(
                &limits.modify_snapshot_tier,
                "ModifySnapshotTier",
                &id,
                || ec2.archive_snapshot(&id),
            )
            .await
            {
                Ok(_) => {
                    tracing::info!("archiving {id}");
                    TierResult {
                        snapshot_id: id,
                        result: "archived",
                        storage_tier: Some(s.storage_tier.clone()),
                        reason: format!(
                            "archive started (`autosnap snapshot list` shows TIER archive when \
                             done); {}",
                            archive_terms(s)
                        ),
                    }
                }
                Err(e) => TierResult {
                    snapshot_id: id,
                    result: "failed",
                    storage_tier: Some(s.storage_tier.clone()),
                    reason: e.to_string(),
                },
            },
        };
        results.push(r);
    }
    finish(
        env,
        &results,
        if args.dry_run {
            "would archive"
        } else {
            "archived"
        },
    )
}

pub async fn restore_tier(env: &Env, args: &SnapshotRestoreTierArgs) -> anyhow::Result<Exit> {
    let how = match (args.days, args.permanent) {
        (Some(d), _) => RestoreRequest::Temporary(d),
        (None, true) => RestoreRequest::Permanent,
        (None, false) => unreachable!("clap requires --days or --permanent"),
    };
    let ctx = env.connect().await?;
    let ec2 = ctx.ec2().await?;
    let requested = super::unique_snapshot_ids(&args.ids);
    let snaps = ec2
        .list_snapshots(&SnapshotQuery {
            snapshot_ids: requested.clone(),
            ..Default::default()
        })
        .await?;
    let found: Vec<String> = snaps.iter().map(|s| s.snapshot_id.clone()).collect();
    let statuses = if found.is_empty() {
        Vec::new()
    } else {
        ec2.snapshot_tier_status(&found).await?
    };
    let now = Utc::now();
    let what = match how {
        RestoreRequest::Temporary(d) => format!(
            "to the standard tier for {d} day(s), then back to the archive tier; it can take up \
             to {RESTORE_HOURS_AT_MOST} hours"
        ),
        RestoreRequest::Permanent => format!(
            "to the standard tier for good; it can take up to {RESTORE_HOURS_AT_MOST} hours"
        ),
    };

    let limits = autosnap_aws::rate::Ec2RateLimits::default();
    let mut results = Vec::new();
    for id in &requested {
        let snap = snaps.iter().find(|s| &s.snapshot_id == id);
        let status: Option<&TierStatus> = statuses.iter().find(|s| &s.snapshot_id == id);
        let op = status
            .and_then(|s| s.last_operation.as_deref())
            .unwrap_or("");
        let row = |result, reason: String| TierResult {
            snapshot_id: id.clone(),
            result,
            storage_tier: snap.map(|s| s.storage_tier.clone()),
            reason,
        };
        let temporarily_restored = snap
            .is_some_and(|s| s.storage_tier == StorageTier::Standard && s.restore_expiry.is_some());
        let r = match snap {
            None => row(
                "missing",
                format!(
                    "does not exist in {} (or belongs to another account)",
                    ec2.region()
                ),
            ),
            Some(_) if op.ends_with("restore-in-progress") => row(
                "restoring",
                format!(
                    "a restore is already under way ({op}); it can take up to \
                     {RESTORE_HOURS_AT_MOST} hours"
                ),
            ),
            // A temporary restore can be re-timed; anything else in the standard tier is
            // usable already.
            Some(s)
                if s.storage_tier != StorageTier::Archive
                    && !(temporarily_restored && matches!(how, RestoreRequest::Temporary(_))) =>
            {
                row(
                    "not_archived",
                    "in the standard tier: usable as it is, nothing to restore".into(),
                )
            }
            Some(_) => {
                let mut reason = if temporarily_restored {
                    match how {
                        RestoreRequest::Temporary(d) => format!(
                            "restored for a while already: it now stays in the standard tier {d} \
                             day(s) from now"
                        ),
                        RestoreRequest::Permanent => what.clone(),
                    }
                } else {
                    what.clone()
                };
                if how == RestoreRequest::Permanent {
                    if let Some(left) = status
                        .and_then(|s| s.archived_on)
                        .and_then(|t| minimum_days_left(t, now))
                    {
                        reason.push_str(&format!(
                            "; archived less than {MIN_ARCHIVE_DAYS} days ago: the remaining \
                             {left} day(s) of archive storage are billed anyway"
                        ));
                    }
                }
                if args.dry_run {
                    row("would_restore", reason)
                } else {
                    match autosnap_aws::rate::paced(
                        &limits.restore_snapshot_tier,
                        "RestoreSnapshotTier",
                        id,
                        || ec2.restore_snapshot_tier(id, how),
                    )
                    .await
                    {
                        Ok(()) => {
                            tracing::info!("restoring {id}");
                            row(
                                "restoring",
                                format!(
                                    "restore started: {reason}; `autosnap snapshot list` shows \
                                     TIER standard when it is done"
                                ),
                            )
                        }
                        Err(e) => row("failed", e.to_string()),
                    }
                }
            }
        };
        results.push(r);
    }
    finish(
        env,
        &results,
        if args.dry_run {
            "would restore"
        } else {
            "restored"
        },
    )
}

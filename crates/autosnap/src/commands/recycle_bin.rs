//! Recycle Bin: `snapshot list --recycle-bin`, `snapshot recover`, `ami list --recycle-bin`,
//! `ami recover`, and what `plan`, `prune`, `run` and `status` say about where deleted backups
//! go. Reading the rules is never a reason to fail: without them the plan says
//! "Recycle Bin rules unknown (…)" and goes on.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use autosnap_aws::recycle_bin::{BinEntry, RecycleBin};
use autosnap_aws::{AwsContext, AwsError, Ec2, SnapshotQuery};
use autosnap_core::plan::Plan;
use autosnap_core::policy::BackupKind;
use autosnap_core::recycle_bin::{self as bin, BinResource, RegionRules, RetentionRule};
use autosnap_core::tags::Tags;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::cli::RecoverArgs;
use crate::commands::Env;
use crate::exit::{Exit, UsageError};
use crate::output;

// ---- reading the rules --------------------------------------------------------------------

/// A short reason for rules that could not be read: the plan line stays readable, the full
/// error goes to the log.
fn unknown_reason(e: &AwsError) -> String {
    match e {
        AwsError::AccessDenied {
            operation, code, ..
        } => format!("{code}: no permission for rbin:{operation}"),
        other => other.to_string(),
    }
}

/// The rules for `kinds` in `region`: one ListRules per kind (paged) and one GetRule per rule.
async fn region_rules(
    ctx: &AwsContext,
    region: &str,
    kinds: &BTreeSet<BinResource>,
) -> RegionRules {
    let service = RecycleBin::new(ctx, region);
    let mut rules = Vec::new();
    for kind in kinds {
        match service.rules(*kind).await {
            Ok(r) => rules.extend(r),
            Err(e) => {
                tracing::warn!("cannot read the Recycle Bin rules in {region}: {e}");
                return RegionRules::Unknown(unknown_reason(&e));
            }
        }
    }
    RegionRules::Known(rules)
}

/// The tags of the snapshots and AMIs `plan` deletes in `region`, for rules that match on tags.
async fn deletion_tags(
    ec2: &Ec2,
    plan: &Plan,
    region: &str,
) -> Result<HashMap<String, Tags>, AwsError> {
    let mut snapshots = Vec::new();
    let mut images = Vec::new();
    for (p, _, g, b) in plan.deletions() {
        if g.region != region {
            continue;
        }
        if p.kind == BackupKind::Ami {
            images.push(b.backup_id.to_string());
        }
        snapshots.extend(b.snapshot_ids.iter().map(|s| s.to_string()));
    }
    let mut out = HashMap::new();
    if !snapshots.is_empty() {
        let q = SnapshotQuery {
            snapshot_ids: snapshots,
            ..Default::default()
        };
        for s in ec2.list_snapshots(&q).await? {
            out.insert(s.snapshot_id, s.tags);
        }
    }
    if !images.is_empty() {
        for i in ec2.find_images(&images).await? {
            out.insert(i.image_id, i.tags);
        }
    }
    Ok(out)
}

/// Puts on every deletion in `plan` whether the Recycle Bin keeps it, and for how long: per
/// Region with deletions one ListRules per resource type, one GetRule per rule, and (only when
/// a rule matches on tags) one describe of the deleted snapshots and AMIs.
pub(crate) async fn note_plan(ctx: &AwsContext, plan: &mut Plan) {
    let mut rules = BTreeMap::new();
    let mut tags = HashMap::new();
    for (region, kinds) in bin::regions_to_read(plan) {
        let mut found = region_rules(ctx, &region, &kinds).await;
        if let RegionRules::Known(r) = &found {
            if r.iter().any(RetentionRule::reads_tags) {
                let read = match ctx.ec2_in(&region).await {
                    Ok(ec2) => deletion_tags(&ec2, plan, &region).await,
                    Err(e) => Err(e),
                };
                match read {
                    Ok(t) => tags.extend(t),
                    Err(e) => {
                        tracing::warn!("cannot read the tags of deletions in {region}: {e}");
                        found = RegionRules::Unknown(format!("tags not readable: {e}"));
                    }
                }
            }
        }
        rules.insert(region, found);
    }
    bin::note_deletions(plan, &rules, &tags);
}

/// `status`: where one policy's deleted backups go, per Region it keeps backups in.
#[derive(Debug, Serialize)]
pub(crate) struct PolicyDestination {
    pub policy: String,
    pub region: String,
    /// `deleted snapshots → Recycle Bin 7d (rule abc, tagged …)`, `… gone for good …`, or
    /// `Recycle Bin rules unknown (…)`; AMI policies add their AMIs' line.
    pub destination: String,
    /// The rules read (None when they could not be read).
    pub rules: Option<Vec<RetentionRule>>,
}

/// Reads each Region's rules once (for the kinds some selected policy keeps there).
pub(crate) async fn destinations(ctx: &AwsContext, plan: &Plan) -> Vec<PolicyDestination> {
    let mut wanted: BTreeMap<(String, String), BTreeSet<BinResource>> = BTreeMap::new();
    for p in &plan.policies {
        for t in &p.targets {
            for g in &t.groups {
                let kinds = wanted
                    .entry((p.policy.clone(), g.region.clone()))
                    .or_default();
                kinds.insert(BinResource::Snapshot);
                if p.kind == BackupKind::Ami {
                    kinds.insert(BinResource::Image);
                }
            }
        }
    }
    let mut per_region: BTreeMap<String, BTreeSet<BinResource>> = BTreeMap::new();
    for ((_, region), kinds) in &wanted {
        per_region
            .entry(region.clone())
            .or_default()
            .extend(kinds.iter().copied());
    }
    let mut read = BTreeMap::new();
    for (region, kinds) in per_region {
        let rules = region_rules(ctx, &region, &kinds).await;
        read.insert(region, rules);
    }
    wanted
        .into_iter()
        .map(|((policy, region), kinds)| {
            let rules = &read[&region];
            let destination = kinds
                .iter()
                .map(|k| bin::describe_destination(rules, *k))
                .collect::<Vec<_>>()
                .join("; ");
            let known = match rules {
                RegionRules::Known(r) => Some(
                    r.iter()
                        .filter(|r| kinds.contains(&r.resource))
                        .cloned()
                        .collect(),
                ),
                RegionRules::Unknown(_) => None,
            };
            PolicyDestination {
                policy,
                region,
                destination,
                rules: known,
            }
        })
        .collect()
}

/// `status`'s table of [`destinations`].
pub(crate) fn print_destinations(rows: &[PolicyDestination]) {
    if rows.is_empty() {
        return;
    }
    let mut t = output::table(["POLICY", "REGION", "DELETED BACKUPS GO"]);
    for r in rows {
        t.add_row([r.policy.clone(), r.region.clone(), r.destination.clone()]);
    }
    output::print("");
    output::print_table(&t);
}

// ---- list --recycle-bin --------------------------------------------------------------------

#[derive(Serialize)]
struct SnapshotInBin {
    snapshot_id: String,
    volume_id: Option<String>,
    description: Option<String>,
    /// When it was deleted (entered the Recycle Bin).
    deleted_at: Option<DateTime<Utc>>,
    /// When the Recycle Bin deletes it for good unless it is recovered first.
    gone_at: Option<DateTime<Utc>>,
}

#[derive(Serialize)]
struct ImageInBin {
    image_id: String,
    name: Option<String>,
    description: Option<String>,
    deleted_at: Option<DateTime<Utc>>,
    gone_at: Option<DateTime<Utc>>,
}

/// `in 6d` / `in 5h`: how long until the bin deletes it for good.
fn left(gone: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    let Some(gone) = gone else { return "-".into() };
    let secs = (gone - now).num_seconds().max(0);
    match secs {
        s if s < 2 * 3600 => format!("in {}min", s / 60),
        s if s < 2 * 86400 => format!("in {}h", s / 3600),
        s => format!("in {}d", s / 86400),
    }
}

/// `snapshot list --recycle-bin`.
pub async fn list_snapshots(env: &Env) -> anyhow::Result<Exit> {
    let ctx = env.connect().await?;
    let ec2 = ctx.ec2().await?;
    let now = Utc::now();
    let rows: Vec<SnapshotInBin> = ec2
        .snapshots_in_recycle_bin(&[])
        .await?
        .into_iter()
        .map(|e| SnapshotInBin {
            snapshot_id: e.id,
            volume_id: e.volume_id,
            description: e.description,
            deleted_at: e.entered,
            gone_at: e.gone_after,
        })
        .collect();
    output::emit(env.output, &rows, || {
        let mut t = output::table([
            "SNAPSHOT ID",
            "VOLUME",
            "DELETED",
            "GONE FOR GOOD",
            "",
            "DESCRIPTION",
        ]);
        for r in &rows {
            t.add_row([
                r.snapshot_id.clone(),
                output::opt(&r.volume_id),
                output::time(r.deleted_at),
                output::time(r.gone_at),
                left(r.gone_at, now),
                output::opt(&r.description),
            ]);
        }
        t
    })?;
    if rows.is_empty() && env.output != crate::cli::OutputFormat::Json {
        output::print("the Recycle Bin holds no snapshots in this Region");
    }
    Ok(Exit::Success)
}

/// `ami list --recycle-bin`.
pub async fn list_images(env: &Env) -> anyhow::Result<Exit> {
    let ctx = env.connect().await?;
    let ec2 = ctx.ec2().await?;
    let now = Utc::now();
    let rows: Vec<ImageInBin> = ec2
        .images_in_recycle_bin(&[])
        .await?
        .into_iter()
        .map(|e| ImageInBin {
            image_id: e.id,
            name: e.name,
            description: e.description,
            deleted_at: e.entered,
            gone_at: e.gone_after,
        })
        .collect();
    output::emit(env.output, &rows, || {
        let mut t = output::table(["AMI ID", "NAME", "DELETED", "GONE FOR GOOD", ""]);
        for r in &rows {
            t.add_row([
                r.image_id.clone(),
                output::opt(&r.name),
                output::time(r.deleted_at),
                output::time(r.gone_at),
                left(r.gone_at, now),
            ]);
        }
        t
    })?;
    if rows.is_empty() && env.output != crate::cli::OutputFormat::Json {
        output::print("the Recycle Bin holds no AMIs in this Region");
    }
    Ok(Exit::Success)
}

// ---- recover -------------------------------------------------------------------------------

#[derive(Serialize)]
struct RecoverResult {
    /// `snapshot_id` or `image_id` in JSON.
    #[serde(skip)]
    id: String,
    /// `recovered`, `would_recover`, `not_deleted` (it exists: nothing to do), `missing` (not
    /// in the Recycle Bin: deleted for good, never there, or the id is wrong) or `failed`.
    result: &'static str,
    /// When the Recycle Bin would have deleted it for good.
    gone_at: Option<DateTime<Utc>>,
    reason: String,
}

#[derive(Serialize)]
struct Keyed<'a> {
    #[serde(rename = "snapshot_id", skip_serializing_if = "Option::is_none")]
    snapshot_id: Option<&'a str>,
    #[serde(rename = "image_id", skip_serializing_if = "Option::is_none")]
    image_id: Option<&'a str>,
    #[serde(flatten)]
    result: &'a RecoverResult,
}

fn finish(env: &Env, kind: BinResource, results: &[RecoverResult]) -> anyhow::Result<Exit> {
    let (noun, column) = match kind {
        BinResource::Snapshot => ("snapshot(s)", "SNAPSHOT ID"),
        BinResource::Image => ("AMI(s)", "AMI ID"),
    };
    let keyed: Vec<Keyed> = results
        .iter()
        .map(|r| Keyed {
            snapshot_id: (kind == BinResource::Snapshot).then_some(r.id.as_str()),
            image_id: (kind == BinResource::Image).then_some(r.id.as_str()),
            result: r,
        })
        .collect();
    output::emit(env.output, &keyed, || {
        let mut t = output::table([column, "RESULT", "REASON"]);
        for r in results {
            t.add_row([r.id.clone(), r.result.replace('_', " "), r.reason.clone()]);
        }
        t
    })?;
    let bad = results
        .iter()
        .filter(|r| matches!(r.result, "missing" | "failed"))
        .count();
    let ok = results.len() - bad;
    if bad > 0 {
        output::report_failed_items(&format!(
            "recovered {ok} of {} {noun}; {bad} not (see {})",
            results.len(),
            output::field_hint(&["REASON"])
        ));
    }
    Ok(Exit::from_counts(ok, bad))
}

fn unique(ids: &[String]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    ids.iter().filter(|i| seen.insert(*i)).cloned().collect()
}

/// What `recover` does with each id: the plan, printed before anything is restored.
fn plan_recovery(
    kind: BinResource,
    ids: &[String],
    in_bin: &[BinEntry],
    existing: &BTreeSet<String>,
) -> Vec<RecoverResult> {
    let what = match kind {
        BinResource::Snapshot => "snapshot",
        BinResource::Image => "AMI",
    };
    ids.iter()
        .map(|id| match in_bin.iter().find(|e| &e.id == id) {
            Some(e) => RecoverResult {
                id: id.clone(),
                result: "would_recover",
                gone_at: e.gone_after,
                reason: format!(
                    "in the Recycle Bin since {}; deleted for good at {} unless recovered",
                    output::time(e.entered),
                    output::time(e.gone_after)
                ),
            },
            None if existing.contains(id) => RecoverResult {
                id: id.clone(),
                result: "not_deleted",
                gone_at: None,
                reason: format!("the {what} exists: nothing to recover"),
            },
            None => RecoverResult {
                id: id.clone(),
                result: "missing",
                gone_at: None,
                reason: format!(
                    "not in this Region's Recycle Bin: deleted for good (no rule kept it, or its \
                     retention period ended), or no such {what}"
                ),
            },
        })
        .collect()
}

async fn recover(env: &Env, kind: BinResource, args: &RecoverArgs) -> anyhow::Result<Exit> {
    let (prefix, command) = match kind {
        BinResource::Snapshot => ("snap-", "snapshot"),
        BinResource::Image => ("ami-", "ami"),
    };
    if let Some(bad) = args.ids.iter().find(|i| !i.starts_with(prefix)) {
        return Err(UsageError(format!(
            "'{bad}' is not a{} id ({prefix}…): `autosnap {command} list --recycle-bin` shows \
             what can be recovered",
            if kind == BinResource::Image {
                "n AMI"
            } else {
                " snapshot"
            }
        ))
        .into());
    }
    let ids = unique(&args.ids);
    let ctx = env.connect().await?;
    let ec2 = ctx.ec2().await?;
    // The whole bin, not a filter by id: an id not in the bin is then a "missing" row rather
    // than an error for the whole request.
    let (in_bin, existing) = match kind {
        BinResource::Snapshot => {
            let in_bin = ec2.snapshots_in_recycle_bin(&[]).await?;
            let q = SnapshotQuery {
                snapshot_ids: ids.clone(),
                ..Default::default()
            };
            let existing: BTreeSet<String> = ec2
                .list_snapshots(&q)
                .await?
                .into_iter()
                .map(|s| s.snapshot_id)
                .collect();
            (in_bin, existing)
        }
        BinResource::Image => {
            let in_bin = ec2.images_in_recycle_bin(&[]).await?;
            let existing: BTreeSet<String> = ec2
                .find_images(&ids)
                .await?
                .into_iter()
                .map(|i| i.image_id)
                .collect();
            (in_bin, existing)
        }
    };
    let mut results = plan_recovery(kind, &ids, &in_bin, &existing);
    for r in results.iter().filter(|r| r.result == "would_recover") {
        tracing::info!("recover {} from the Recycle Bin", r.id);
    }
    if args.dry_run {
        let exit = finish(env, kind, &results)?;
        if env.output != crate::cli::OutputFormat::Json {
            output::print("dry run: nothing was recovered");
        }
        return Ok(exit);
    }
    for r in results.iter_mut().filter(|r| r.result == "would_recover") {
        let done = match kind {
            BinResource::Snapshot => ec2.restore_snapshot_from_recycle_bin(&r.id).await,
            BinResource::Image => ec2.restore_image_from_recycle_bin(&r.id).await,
        };
        match done {
            Ok(()) => {
                r.result = "recovered";
                r.reason = "recovered from the Recycle Bin".into();
            }
            Err(e) => {
                r.result = "failed";
                r.reason = e.to_string();
            }
        }
    }
    finish(env, kind, &results)
}

/// `snapshot recover ID…`.
pub async fn recover_snapshots(env: &Env, args: &RecoverArgs) -> anyhow::Result<Exit> {
    recover(env, BinResource::Snapshot, args).await
}

/// `ami recover ID…`.
pub async fn recover_images(env: &Env, args: &RecoverArgs) -> anyhow::Result<Exit> {
    recover(env, BinResource::Image, args).await
}

//! `autosnap snapshot list | create | delete | copy`.

use autosnap_aws::rate::{self, Ec2RateLimits};
use autosnap_aws::{AwsError, Ec2, SnapshotQuery};
use autosnap_core::deletion::{plan_deletes, DeleteAction};
use autosnap_core::ids::SnapshotTarget;
use autosnap_core::model::Snapshot;
use autosnap_core::tags::{self, settable_tags, Tags};
use chrono::Utc;
use futures::stream::{self, StreamExt};
use serde::Serialize;

use crate::cli::{SnapshotCopyArgs, SnapshotCreateArgs, SnapshotDeleteArgs, SnapshotListArgs};
use crate::commands::confirm::{self, Consent};
use crate::commands::{report_interrupted, Env, Interrupt};
use crate::exit::{Exit, UsageError};
use crate::output;
use crate::progress::WaitProgress;

pub async fn list(env: &Env, args: &SnapshotListArgs) -> anyhow::Result<Exit> {
    if args.recycle_bin {
        return super::recycle_bin::list_snapshots(env).await;
    }
    let mut tag_filters: Vec<(String, Option<String>)> = args
        .tags
        .iter()
        .map(|t| (t.key.clone(), t.value.clone()))
        .collect();
    if args.managed {
        tag_filters.push((tags::MANAGED.into(), Some(tags::MANAGED_VALUE.into())));
    }

    let ctx = env.connect().await?;
    let ec2 = ctx.ec2().await?;
    let now = Utc::now();
    let mut snaps = ec2
        .list_snapshots(&SnapshotQuery {
            snapshot_ids: vec![],
            volume_ids: args.volumes.iter().map(|v| v.to_string()).collect(),
            tags: tag_filters,
        })
        .await?;
    if let Some(age) = &args.older_than {
        // Calendar arithmetic, so `--older-than 6mo` means six calendar months.
        let cutoff = age.subtract_from(now);
        snaps.retain(|s| s.start_time.is_some_and(|t| t < cutoff));
    }
    // The lock state of every listed snapshot, from one paged DescribeLockedSnapshots. A
    // listing still works without it (say, an IAM policy from before locks): it says so, and
    // the LOCK column and the `lock` field are left out rather than guessed.
    let locks = match ec2.all_locked_snapshots().await {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!("cannot read snapshot locks, so the listing has no lock state: {e}");
            None
        }
    };
    let listed: Vec<ListedSnapshot> = snaps
        .iter()
        .map(|s| ListedSnapshot {
            snapshot: s,
            lock: locks.as_ref().map(|l| {
                l.iter()
                    .find(|l| l.snapshot_id == s.snapshot_id)
                    .map(super::lock::LockOut::from)
            }),
        })
        .collect();
    output::emit(env.output, &listed, || {
        snapshot_table_with(&snaps, locks.as_deref(), now)
    })?;
    Ok(Exit::Success)
}

/// A snapshot in `snapshot list -o json`: its fields and `lock` (null when not locked).
#[derive(Serialize)]
struct ListedSnapshot<'a> {
    #[serde(flatten)]
    snapshot: &'a Snapshot,
    #[serde(skip_serializing_if = "Option::is_none")]
    lock: Option<Option<super::lock::LockOut>>,
}

pub(super) fn snapshot_table(snaps: &[Snapshot], now: chrono::DateTime<Utc>) -> comfy_table::Table {
    snapshot_table_with(snaps, None, now)
}

/// The snapshot table; with `locks`, a LOCK column too.
fn snapshot_table_with(
    snaps: &[Snapshot],
    locks: Option<&[autosnap_core::lock::SnapshotLock]>,
    now: chrono::DateTime<Utc>,
) -> comfy_table::Table {
    let mut header = vec![
        "SNAPSHOT ID",
        "VOLUME",
        "NAME",
        "STATE",
        "STARTED",
        "AGE",
        "SIZE",
        "ENCRYPTED",
        "MANAGED",
        "TIER",
    ];
    if locks.is_some() {
        header.push("LOCK");
    }
    let mut t = output::table(header);
    for s in snaps {
        let state = match (&s.state[..], s.progress_percent()) {
            ("pending", Some(p)) => format!("pending {p}%"),
            (st, _) => st.to_string(),
        };
        let mut row: Vec<String> = vec![
            s.snapshot_id.clone(),
            output::opt(&s.volume_id),
            s.name().unwrap_or("-").to_string(),
            state,
            output::time(s.start_time),
            output::age(s.start_time, now),
            s.size_gib
                .map(|g| format!("{g} GiB"))
                .unwrap_or_else(|| "-".into()),
            output::yes_no(s.encrypted).into(),
            output::yes_no(s.managed).into(),
            tier_cell(s),
        ];
        if let Some(locks) = locks {
            row.push(super::lock::lock_cell(
                locks.iter().find(|l| l.snapshot_id == s.snapshot_id),
            ));
        }
        t.add_row(row);
    }
    t
}

/// `standard`, `archive`, or `standard until …` for an archived snapshot restored for a while.
fn tier_cell(s: &Snapshot) -> String {
    match s.restore_expiry {
        Some(t) if s.storage_tier == autosnap_core::tier::StorageTier::Standard => {
            format!("standard until {}", t.format("%Y-%m-%d %H:%M"))
        }
        _ => s.storage_tier.to_string(),
    }
}

/// A per-item failure, printed to stderr and counted for the exit code.
fn report_failure(what: &str, err: &anyhow::Error) {
    let class = crate::exit::classify_error(err);
    crate::output::report_error(
        class.kind,
        &format!("{what}: {err:#}"),
        class.resource.as_deref(),
    );
}

pub async fn create(env: &Env, args: &SnapshotCreateArgs) -> anyhow::Result<Exit> {
    let paths: Vec<std::path::PathBuf> = args
        .targets
        .iter()
        .filter_map(|t| match t {
            SnapshotTarget::Path(p) => Some(p.clone()),
            _ => None,
        })
        .collect();
    if !paths.is_empty() {
        if paths.len() != args.targets.len() {
            return Err(UsageError(
                "mount paths cannot be mixed with volume or instance ids in one `snapshot create`"
                    .into(),
            )
            .into());
        }
        return super::consistent::create_for_paths(env, args, paths).await;
    }
    let c = &args.consistency;
    if c.freeze || !c.pre.is_empty() || !c.post.is_empty() || !c.volumes.is_empty() {
        return Err(UsageError(
            "--freeze, --pre, --post and --volume apply to mount path targets (e.g. /mnt/data), run on the instance".into(),
        )
        .into());
    }
    let user_tags = settable_tags(&args.tags)?;
    let timeout = if args.wait.wait {
        Some(args.wait.wait_timeout)
    } else {
        None
    };
    let copy_volume_tags = !args.no_copy_tags && env.settings.config.file.defaults.copy_volume_tags;
    let mut base_tags = env.settings.config.file.defaults.tags.clone();
    base_tags.extend(user_tags);
    base_tags.insert(tags::MANAGED.into(), tags::MANAGED_VALUE.into());

    let ctx = env.connect().await?;
    let ec2 = ctx.ec2().await?;
    if args.dry_run {
        return create_dry_run(env, &ec2, args, &base_tags, copy_volume_tags).await;
    }
    let mut interrupt = timeout.map(|_| Interrupt::listen()).transpose()?;

    let mut targets = args.targets.clone();
    targets.dedup();
    // Paced by the same buckets as policy runs (autosnap_aws::rate).
    let limits = &Ec2RateLimits::default();
    let results: Vec<(SnapshotTarget, anyhow::Result<Vec<Snapshot>>)> = stream::iter(targets)
        .map(|target| {
            let ec2 = ec2.clone();
            let base_tags = base_tags.clone();
            async move {
                limits.create_snapshot.acquire().await;
                let r = snapshot_target(&ec2, &target, &base_tags, copy_volume_tags, args).await;
                (target, r)
            }
        })
        .buffered(rate::ONE_OFF_CONCURRENCY)
        .collect()
        .await;

    let mut created = Vec::new();
    let mut failed = 0;
    for (target, r) in results {
        match r {
            Ok(snaps) => {
                for s in &snaps {
                    tracing::info!(
                        "created snapshot {} of {}",
                        s.snapshot_id,
                        output::opt(&s.volume_id)
                    );
                }
                created.extend(snaps);
            }
            Err(e) => {
                failed += 1;
                report_failure(&format!("cannot snapshot {target}"), &e);
            }
        }
    }

    if let (Some(timeout), Some(interrupt), false) =
        (timeout, interrupt.as_mut(), created.is_empty())
    {
        let ids: Vec<String> = created.iter().map(|s| s.snapshot_id.clone()).collect();
        let progress = WaitProgress::new(&format!("{} snapshot(s)", ids.len()), env.progress);
        let waited = interrupt
            .or(ec2.wait_snapshots_completed(&ids, timeout, &progress))
            .await;
        match waited {
            None => {
                progress.finish();
                if let Some(now) = states_soon(&ec2, &ids).await {
                    created = now;
                }
                output::emit(env.output, &created, || {
                    snapshot_table(&created, Utc::now())
                })?;
                report_interrupted(
                    &format!("snapshot(s) {}", ids.join(", ")),
                    "autosnap snapshot list",
                );
                return Ok(Exit::Interrupted);
            }
            Some(Ok(done)) => created = done,
            Some(Err(e)) => {
                progress.finish();
                output::emit(env.output, &created, || {
                    snapshot_table(&created, Utc::now())
                })?;
                return Err(e.into());
            }
        }
        progress.finish();
    }

    // When nothing was created the errors above say everything: no empty table after them
    // (JSON still gets its empty list, so a script always reads valid JSON).
    if !created.is_empty() || failed == 0 || env.output == crate::cli::OutputFormat::Json {
        output::emit(env.output, &created, || {
            snapshot_table(&created, Utc::now())
        })?;
    }
    let succeeded = args.targets.len().saturating_sub(failed);
    Ok(Exit::from_counts(succeeded, failed))
}

/// `snapshot create --dry-run` for volume and instance targets: the plan,
/// per-target errors as the real run reports them, the real run's exit code.
async fn create_dry_run(
    env: &Env,
    ec2: &Ec2,
    args: &SnapshotCreateArgs,
    base_tags: &Tags,
    copy_volume_tags: bool,
) -> anyhow::Result<Exit> {
    let mut targets = args.targets.clone();
    targets.dedup();
    let results: Vec<(SnapshotTarget, anyhow::Result<Vec<PlannedSnapshot>>)> =
        stream::iter(targets)
            .map(|target| async move {
                let r = plan_target(ec2, &target, base_tags, copy_volume_tags, args).await;
                (target, r)
            })
            .buffered(rate::ONE_OFF_CONCURRENCY)
            .collect()
            .await;
    let mut plan = Vec::new();
    let mut failed = 0;
    for (target, r) in results {
        match r {
            Ok(p) => plan.extend(p),
            Err(e) => {
                failed += 1;
                report_failure(&format!("cannot snapshot {target}"), &e);
            }
        }
    }
    if !plan.is_empty() || failed == 0 || env.output == crate::cli::OutputFormat::Json {
        print_snapshot_plan(env, &plan)?;
    }
    let succeeded = args.targets.len().saturating_sub(failed);
    Ok(Exit::from_counts(succeeded, failed))
}

async fn snapshot_target(
    ec2: &Ec2,
    target: &SnapshotTarget,
    base_tags: &Tags,
    copy_volume_tags: bool,
    args: &SnapshotCreateArgs,
) -> anyhow::Result<Vec<Snapshot>> {
    match target {
        SnapshotTarget::Volume(vol) => {
            if args.exclude_boot {
                tracing::debug!(
                    "--exclude-boot only applies to instance targets; ignored for {vol}"
                );
            }
            let volume = ec2.get_volume(vol.as_str()).await?;
            let (description, tags) =
                volume_snapshot_spec(&volume, base_tags, copy_volume_tags, args);
            Ok(vec![
                ec2.create_snapshot(&volume.volume_id, &description, &tags)
                    .await?,
            ])
        }
        SnapshotTarget::Path(_) => unreachable!("mount paths are handled by consistent.rs"),
        SnapshotTarget::Instance(inst) => {
            let info = ec2.get_instance(inst.as_str()).await?;
            let (description, tags) = instance_set_spec(&info, base_tags, args)?;
            Ok(ec2
                .create_snapshot_set(
                    inst.as_str(),
                    args.exclude_boot,
                    &[],
                    copy_volume_tags,
                    &description,
                    &tags,
                )
                .await?)
        }
    }
}

/// The description and tags of a volume's snapshot.
fn volume_snapshot_spec(
    volume: &autosnap_core::model::Volume,
    base_tags: &Tags,
    copy_volume_tags: bool,
    args: &SnapshotCreateArgs,
) -> (String, Tags) {
    let mut tags = if copy_volume_tags {
        tags::copyable_user_tags(&volume.tags)
    } else {
        Tags::new()
    };
    tags.extend(base_tags.clone());
    tags.insert(tags::SOURCE_VOLUME.into(), volume.volume_id.clone());
    if let Some(a) = volume.attachments.first() {
        tags.insert(tags::SOURCE_INSTANCE.into(), a.instance_id.clone());
    }
    let description = args
        .description
        .clone()
        .unwrap_or_else(|| match &volume.name {
            Some(n) => format!("autosnap: {} ({n})", volume.volume_id),
            None => format!("autosnap: {}", volume.volume_id),
        });
    (description, tags)
}

/// The volumes of an instance set: (device, volume id), the boot volume
/// left out with --exclude-boot.
fn set_volumes<'a>(
    info: &'a autosnap_aws::ec2::InstanceInfo,
    args: &SnapshotCreateArgs,
) -> Vec<&'a (String, String)> {
    info.volumes
        .iter()
        .filter(|(dev, _)| !(args.exclude_boot && Some(dev) == info.root_device_name.as_ref()))
        .collect()
}

/// The description and set-wide tags of an instance's multi-volume set;
/// an error if the set would be empty.
fn instance_set_spec(
    info: &autosnap_aws::ec2::InstanceInfo,
    base_tags: &Tags,
    args: &SnapshotCreateArgs,
) -> anyhow::Result<(String, Tags)> {
    let inst = &info.instance_id;
    if set_volumes(info, args).is_empty() {
        return Err(UsageError(format!(
            "instance {inst} has no EBS volumes to snapshot{}",
            if args.exclude_boot {
                " besides its boot volume"
            } else {
                ""
            }
        ))
        .into());
    }
    let started = Utc::now();
    let mut tags = base_tags.clone();
    tags.insert(tags::SOURCE_INSTANCE.into(), inst.to_string());
    tags.insert(tags::SET_ID.into(), tags::set_id(inst.as_str(), started));
    let name = info.tags.get("Name");
    let description = args.description.clone().unwrap_or_else(|| match name {
        Some(n) => format!("autosnap: {inst} ({n}) multi-volume set"),
        None => format!("autosnap: {inst} multi-volume set"),
    });
    Ok((description, tags))
}

/// `snapshot create --dry-run`: one snapshot that would be made.
#[derive(Serialize)]
pub(super) struct PlannedSnapshot {
    pub dry_run: bool,
    /// The TARGET as given (volume, instance or mount path).
    pub target: String,
    pub volume_id: String,
    /// The volume's device on an instance set, else null.
    pub device_name: Option<String>,
    pub size_gib: Option<i32>,
    pub encrypted: bool,
    pub region: String,
    pub description: String,
    pub tags: Tags,
    /// Mount paths: the filesystems that would be frozen around the call.
    pub freeze: Vec<String>,
    /// Mount paths: the hooks that would run (secrets redacted).
    pub pre_hooks: Vec<String>,
    pub post_hooks: Vec<String>,
}

/// What snapshotting `target` would make, found with read-only calls: the
/// same lookups (and so the same errors) as the real run, no CreateSnapshot.
async fn plan_target(
    ec2: &Ec2,
    target: &SnapshotTarget,
    base_tags: &Tags,
    copy_volume_tags: bool,
    args: &SnapshotCreateArgs,
) -> anyhow::Result<Vec<PlannedSnapshot>> {
    match target {
        SnapshotTarget::Volume(vol) => {
            let volume = ec2.get_volume(vol.as_str()).await?;
            let (description, tags) =
                volume_snapshot_spec(&volume, base_tags, copy_volume_tags, args);
            Ok(vec![PlannedSnapshot {
                dry_run: true,
                target: target.to_string(),
                volume_id: volume.volume_id.clone(),
                device_name: None,
                size_gib: Some(volume.size_gib),
                encrypted: volume.encrypted,
                region: ec2.region().to_string(),
                description,
                tags,
                freeze: vec![],
                pre_hooks: vec![],
                post_hooks: vec![],
            }])
        }
        SnapshotTarget::Path(_) => unreachable!("mount paths are handled by consistent.rs"),
        SnapshotTarget::Instance(inst) => {
            let info = ec2.get_instance(inst.as_str()).await?;
            let (description, set_tags) = instance_set_spec(&info, base_tags, args)?;
            let members = set_volumes(&info, args);
            let volumes = ec2
                .list_volumes(&autosnap_aws::VolumeQuery {
                    volume_ids: members.iter().map(|(_, v)| v.clone()).collect(),
                    ..Default::default()
                })
                .await?;
            Ok(members
                .into_iter()
                .map(|(device, volume_id)| {
                    let volume = volumes.iter().find(|v| &v.volume_id == volume_id);
                    // As the real run tags each member: its volume's tags, the set's, its id.
                    let mut tags = match volume {
                        Some(v) if copy_volume_tags => tags::copyable_user_tags(&v.tags),
                        _ => Tags::new(),
                    };
                    tags.extend(set_tags.clone());
                    tags.insert(tags::SOURCE_VOLUME.into(), volume_id.clone());
                    PlannedSnapshot {
                        dry_run: true,
                        target: target.to_string(),
                        volume_id: volume_id.clone(),
                        device_name: Some(device.clone()),
                        size_gib: volume.map(|v| v.size_gib),
                        encrypted: volume.is_some_and(|v| v.encrypted),
                        region: ec2.region().to_string(),
                        description: description.clone(),
                        tags,
                        freeze: vec![],
                        pre_hooks: vec![],
                        post_hooks: vec![],
                    }
                })
                .collect())
        }
    }
}

/// Prints a `snapshot create --dry-run` plan.
pub(super) fn print_snapshot_plan(env: &Env, plan: &[PlannedSnapshot]) -> anyhow::Result<()> {
    super::print_plan(env, plan, || {
        let mut text = format!("would create {} snapshot(s):", plan.len());
        for p in plan {
            text.push_str(&format!(
                "\n  of {}{} ({}{}) in {}{}: \"{}\"\n    tags: {}",
                p.volume_id,
                p.device_name
                    .as_ref()
                    .map(|d| format!(" {d}"))
                    .unwrap_or_default(),
                p.size_gib
                    .map(|g| format!("{g} GiB"))
                    .unwrap_or_else(|| "size unknown".into()),
                if p.encrypted { ", encrypted" } else { "" },
                p.region,
                if p.target == p.volume_id {
                    String::new()
                } else {
                    format!(" (from {})", p.target)
                },
                p.description,
                super::tag_line(&p.tags)
            ));
        }
        // Freeze and hooks are the same for every snapshot of one call.
        if let Some(p) = plan.first() {
            if !p.freeze.is_empty() {
                text.push_str(&format!("\n  would freeze: {}", p.freeze.join(", ")));
            }
            for (phase, hooks) in [("pre", &p.pre_hooks), ("post", &p.post_hooks)] {
                for (i, h) in hooks.iter().enumerate() {
                    text.push_str(&format!("\n  would run {phase} hook {}: {h}", i + 1));
                }
            }
        }
        text
    })
}

#[derive(Serialize)]
struct DeleteResult {
    snapshot_id: String,
    /// `deleted`, `would_delete`, `refused`, `locked`, `missing` or `failed`.
    result: &'static str,
    reason: String,
}

/// What `--dry-run` reports for each snapshot of the plan.
fn planned_deletes(plan: &[autosnap_core::deletion::DeleteDecision]) -> Vec<DeleteResult> {
    plan.iter()
        .map(|d| DeleteResult {
            snapshot_id: d.snapshot_id.clone(),
            result: match d.action {
                DeleteAction::Missing => "missing",
                DeleteAction::Refuse => "refused",
                DeleteAction::Locked => "locked",
                DeleteAction::Delete => "would_delete",
            },
            reason: d.reason.clone(),
        })
        .collect()
}

fn delete_table(results: &[DeleteResult]) -> comfy_table::Table {
    let mut t = output::table(["SNAPSHOT ID", "RESULT", "REASON"]);
    for r in results {
        t.add_row([
            r.snapshot_id.clone(),
            r.result.replace('_', " "),
            r.reason.clone(),
        ]);
    }
    t
}

pub async fn delete(env: &Env, args: &SnapshotDeleteArgs) -> anyhow::Result<Exit> {
    let ctx = env.connect().await?;
    let ec2 = ctx.ec2().await?;
    let requested: Vec<String> = args.ids.iter().map(|i| i.to_string()).collect();
    let found = ec2
        .list_snapshots(&SnapshotQuery {
            snapshot_ids: requested.clone(),
            ..Default::default()
        })
        .await?;
    let found_ids: Vec<String> = found.iter().map(|s| s.snapshot_id.clone()).collect();
    let images = ec2.images_using_snapshots(&found_ids).await?;
    // One DescribeLockedSnapshots for all of them: a locked snapshot is never sent to
    // DeleteSnapshot, and the user learns until when it is locked.
    let locks = ec2.locked_snapshots(&found_ids).await?;
    let plan = plan_deletes(
        &requested,
        &found,
        &images,
        &locks,
        args.force,
        ec2.region(),
    );

    // At a terminal, the dry run's table first, then the question.
    let deletes = plan
        .iter()
        .filter(|d| d.action == DeleteAction::Delete)
        .count();
    let question = confirm::Question {
        skip: args.yes || args.dry_run,
        deletes,
        plan: delete_table(&planned_deletes(&plan)).to_string(),
        prompt: format!(
            "Delete {}?",
            confirm::count(deletes, "snapshot", "snapshots")
        ),
    };
    if question.ask().await? == Consent::Refused {
        return Ok(confirm::DECLINED);
    }

    let limits = &Ec2RateLimits::default();
    let results: Vec<DeleteResult> = stream::iter(plan)
        .map(|d| {
            let ec2 = ec2.clone();
            let dry_run = args.dry_run;
            async move {
                let (result, reason) = match d.action {
                    DeleteAction::Missing => ("missing", d.reason),
                    DeleteAction::Refuse => ("refused", d.reason),
                    DeleteAction::Locked => ("locked", d.reason),
                    DeleteAction::Delete if dry_run => ("would_delete", d.reason),
                    DeleteAction::Delete => match rate::paced(
                        &limits.delete_snapshot,
                        "DeleteSnapshot",
                        &d.snapshot_id,
                        || ec2.delete_snapshot(&d.snapshot_id),
                    )
                    .await
                    {
                        Ok(()) => {
                            tracing::info!("deleted snapshot {}", d.snapshot_id);
                            ("deleted", d.reason)
                        }
                        Err(e) => ("failed", e.to_string()),
                    },
                };
                DeleteResult {
                    snapshot_id: d.snapshot_id,
                    result,
                    reason,
                }
            }
        })
        .buffered(rate::ONE_OFF_CONCURRENCY)
        .collect()
        .await;

    output::emit(env.output, &results, || delete_table(&results))?;
    let ok = results
        .iter()
        .filter(|r| matches!(r.result, "deleted" | "would_delete"))
        .count();
    let bad = results.len() - ok;
    if bad > 0 {
        crate::output::report_failed_items(&format!(
            "{} {ok} of {} snapshot(s); {bad} not deleted (see {})",
            if args.dry_run {
                "would delete"
            } else {
                "deleted"
            },
            results.len(),
            crate::output::field_hint(&["REASON"])
        ));
    }
    Ok(Exit::from_counts(ok, bad))
}

#[derive(Serialize)]
struct CopyResult {
    source_snapshot_id: String,
    source_region: String,
    region: String,
    snapshot_id: Option<String>,
    /// `created`, `exists` or `failed`.
    result: &'static str,
    state: Option<String>,
    detail: Option<String>,
    /// `--dry-run` only: the copy that would be made.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    plan: Option<CopyPlan>,
}

/// What `snapshot copy --dry-run` would ask EC2 for.
#[derive(Serialize, Clone)]
struct CopyPlan {
    dry_run: bool,
    description: String,
    encrypted: bool,
    kms_key: Option<String>,
    tags: Tags,
}

/// How one source fared: the copy's id and `created`/`exists`, or for a dry
/// run `would_copy` and the plan.
struct CopyOutcome {
    snapshot_id: Option<String>,
    result: &'static str,
    plan: Option<CopyPlan>,
}

pub async fn copy(env: &Env, args: &SnapshotCopyArgs) -> anyhow::Result<Exit> {
    if let Some(problem) = autosnap_core::region::region_problem(&args.to_region) {
        return Err(UsageError(format!("--to-region: {problem}")).into());
    }
    let timeout = if args.wait.wait {
        Some(args.wait.wait_timeout)
    } else {
        None
    };
    let ctx = env.connect().await?;
    let source = ctx.ec2().await?;
    let dest = ctx.ec2_in(&args.to_region).await?;
    let timeout = timeout.filter(|_| !args.dry_run);
    let mut interrupt = timeout.map(|_| Interrupt::listen()).transpose()?;
    let encrypt = args.encrypt || args.kms_key.is_some();

    let mut ids: Vec<String> = args.ids.iter().map(|i| i.to_string()).collect();
    ids.dedup();
    let limits = &Ec2RateLimits::default();
    let mut results: Vec<CopyResult> = stream::iter(ids)
        .map(|id| {
            let (source, dest) = (source.clone(), dest.clone());
            async move {
                limits.copy_snapshot.acquire().await;
                let r = copy_one(
                    &source,
                    &dest,
                    &id,
                    encrypt,
                    args.kms_key.as_deref(),
                    args.dry_run,
                )
                .await;
                match r {
                    Ok(done) => CopyResult {
                        source_snapshot_id: id,
                        source_region: source.region().to_string(),
                        region: dest.region().to_string(),
                        snapshot_id: done.snapshot_id,
                        result: done.result,
                        state: None,
                        detail: None,
                        plan: done.plan,
                    },
                    Err(e) => CopyResult {
                        source_snapshot_id: id,
                        source_region: source.region().to_string(),
                        region: dest.region().to_string(),
                        snapshot_id: None,
                        result: "failed",
                        state: None,
                        detail: Some(e.to_string()),
                        plan: None,
                    },
                }
            }
        })
        .buffered(rate::ONE_OFF_CONCURRENCY)
        .collect()
        .await;

    let copies: Vec<String> = results
        .iter()
        .filter_map(|r| r.snapshot_id.clone())
        .collect();
    if args.dry_run {
        return copy_dry_run(env, &dest, &copies, &mut results).await;
    }
    if !copies.is_empty() {
        let states = match (timeout, interrupt.as_mut()) {
            (Some(timeout), Some(interrupt)) => {
                let progress = WaitProgress::new(
                    &format!("{} copie(s) in {}", copies.len(), dest.region()),
                    env.progress,
                );
                let r = interrupt
                    .or(dest.wait_snapshots_completed(&copies, timeout, &progress))
                    .await;
                progress.finish();
                match r {
                    Some(r) => r,
                    None => {
                        let now = states_soon(&dest, &copies).await.unwrap_or_default();
                        for r in &mut results {
                            r.state = now
                                .iter()
                                .find(|s| Some(&s.snapshot_id) == r.snapshot_id.as_ref())
                                .map(|s| s.state.clone());
                        }
                        print_copy_results(env, &results)?;
                        report_interrupted(
                            &format!("copies {} in {}", copies.join(", "), dest.region()),
                            &format!("autosnap snapshot list --region {}", dest.region()),
                        );
                        return Ok(Exit::Interrupted);
                    }
                }
            }
            _ => current_states(&dest, &copies).await,
        };
        match states {
            Ok(snaps) => {
                for r in &mut results {
                    r.state = snaps
                        .iter()
                        .find(|s| Some(&s.snapshot_id) == r.snapshot_id.as_ref())
                        .map(|s| s.state.clone());
                }
            }
            Err(e) if timeout.is_some() => {
                print_copy_results(env, &results)?;
                return Err(e.into());
            }
            Err(e) => tracing::warn!("cannot read the state of the copies: {e}"),
        }
    }

    let failed = results.iter().filter(|r| r.result == "failed").count();
    // When every copy failed the errors below say it all: no table of failures
    // (JSON still prints its list, so a script always gets one document).
    if failed < results.len() || env.output == crate::cli::OutputFormat::Json {
        print_copy_results(env, &results)?;
    }
    Ok(report_copy_failures(&results[..], failed))
}

/// Names each failed copy on stderr; the exit for `failed` failures among them.
fn report_copy_failures(results: &[CopyResult], failed: usize) -> Exit {
    for r in results.iter().filter(|r| r.result == "failed") {
        crate::output::report_error(
            "failed",
            &format!(
                "cannot copy {}: {}",
                r.source_snapshot_id,
                r.detail.as_deref().unwrap_or("")
            ),
            Some(&r.source_snapshot_id),
        );
    }
    Exit::from_counts(results.len() - failed, failed)
}

/// Prints `snapshot copy --dry-run`'s plan (existing copies with their
/// state) and returns the exit code the real run would have.
async fn copy_dry_run(
    env: &Env,
    dest: &Ec2,
    existing: &[String],
    results: &mut [CopyResult],
) -> anyhow::Result<Exit> {
    if !existing.is_empty() {
        if let Ok(snaps) = current_states(dest, existing).await {
            for r in results.iter_mut() {
                r.state = snaps
                    .iter()
                    .find(|s| Some(&s.snapshot_id) == r.snapshot_id.as_ref())
                    .map(|s| s.state.clone());
            }
        }
    }
    super::print_plan(env, &*results, || {
        let mut text = String::new();
        for r in results.iter() {
            let line = match (&r.plan, r.result) {
                (Some(p), _) => format!(
                    "would copy {} ({}) to {}{}: \"{}\"\n  tags: {}",
                    r.source_snapshot_id,
                    r.source_region,
                    r.region,
                    match (&p.kms_key, p.encrypted) {
                        (Some(k), _) => format!(", encrypted with {k}"),
                        (None, true) => ", encrypted".to_string(),
                        (None, false) => String::new(),
                    },
                    p.description,
                    super::tag_line(&p.tags)
                ),
                (None, "exists") => format!(
                    "{} ({}) already has a copy in {}: {} ({}); nothing to copy",
                    r.source_snapshot_id,
                    r.source_region,
                    r.region,
                    output::opt(&r.snapshot_id),
                    output::opt(&r.state)
                ),
                _ => format!(
                    "cannot copy {}: {}",
                    r.source_snapshot_id,
                    r.detail.as_deref().unwrap_or("")
                ),
            };
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(&line);
        }
        text
    })?;
    let failed = results.iter().filter(|r| r.result == "failed").count();
    Ok(report_copy_failures(&results[..], failed))
}

/// The snapshots' states now, for the report after an interrupted wait;
/// `None` if EC2 does not answer within a few seconds (the last known
/// states are printed then).
pub(super) async fn states_soon(ec2: &Ec2, ids: &[String]) -> Option<Vec<Snapshot>> {
    let asked = tokio::time::timeout(std::time::Duration::from_secs(5), current_states(ec2, ids));
    match asked.await {
        Ok(Ok(snaps)) if snaps.len() == ids.len() => Some(snaps),
        _ => None,
    }
}

async fn current_states(ec2: &Ec2, ids: &[String]) -> Result<Vec<Snapshot>, AwsError> {
    ec2.list_snapshots(&SnapshotQuery {
        snapshot_ids: ids.to_vec(),
        ..Default::default()
    })
    .await
}

fn print_copy_results(env: &Env, results: &[CopyResult]) -> anyhow::Result<()> {
    output::emit(env.output, results, || {
        let mut t = output::table(["SOURCE", "REGION", "COPY", "RESULT", "STATE"]);
        for r in results {
            t.add_row([
                format!("{} ({})", r.source_snapshot_id, r.source_region),
                r.region.clone(),
                output::opt(&r.snapshot_id),
                r.result.to_string(),
                output::opt(&r.state),
            ]);
        }
        t
    })
}

/// Copies one snapshot unless a copy of it already exists in the
/// destination (found by its source-snapshot tag): re-running is safe.
async fn copy_one(
    source: &Ec2,
    dest: &Ec2,
    id: &str,
    encrypt: bool,
    kms_key: Option<&str>,
    dry_run: bool,
) -> anyhow::Result<CopyOutcome> {
    let snap = source.get_snapshot(id).await?;
    let existing = dest
        .list_snapshots(&SnapshotQuery {
            tags: vec![
                (tags::SOURCE_SNAPSHOT.into(), Some(id.to_string())),
                (
                    tags::SOURCE_REGION.into(),
                    Some(source.region().to_string()),
                ),
            ],
            ..Default::default()
        })
        .await?;
    if let Some(copy) = existing.iter().find(|s| s.state != "error") {
        tracing::info!(
            "{id} already has a copy in {}: {}",
            dest.region(),
            copy.snapshot_id
        );
        return Ok(CopyOutcome {
            snapshot_id: Some(copy.snapshot_id.clone()),
            result: "exists",
            plan: None,
        });
    }
    if !snap.is_completed() {
        return Err(UsageError(format!(
            "snapshot {id} is {}: only completed snapshots can be copied (wait for it, e.g. `snapshot create --wait`)",
            snap.state
        ))
        .into());
    }
    // The copy carries the source's tags (EC2 does not copy them) plus where
    // it came from, and is autosnap's own.
    let tags = tags::copy_tags(&snap.tags, tags::CopySource::Snapshot(id), source.region());
    let description = format!("autosnap copy of {id} from {}", source.region());
    if dry_run {
        return Ok(CopyOutcome {
            snapshot_id: None,
            result: "would_copy",
            plan: Some(CopyPlan {
                dry_run: true,
                description,
                encrypted: encrypt || snap.encrypted,
                kms_key: kms_key.map(str::to_string),
                tags,
            }),
        });
    }
    let new_id = dest
        .copy_snapshot_from(
            source.region(),
            id,
            &description,
            encrypt || snap.encrypted,
            kms_key,
            &tags,
        )
        .await?;
    tracing::info!("copying {id} to {} as {new_id}", dest.region());
    Ok(CopyOutcome {
        snapshot_id: Some(new_id),
        result: "created",
        plan: None,
    })
}

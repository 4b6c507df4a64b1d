//! `autosnap snapshot create /mnt/data …` on an instance: resolve each path
//! to its EBS volume(s), find this instance through its metadata, then take
//! one snapshot call (one point in time for several volumes), optionally
//! inside a filesystem freeze with pre/post hooks (autosnap-freeze), and tag
//! every snapshot with the consistency achieved.

use std::collections::BTreeSet;
use std::path::PathBuf;

use autosnap_aws::imds;
use autosnap_aws::{AwsContext, AwsError, Ec2};
use autosnap_core::model::Snapshot;
use autosnap_core::tags::{self, settable_tags, Tags};
use autosnap_freeze::{
    install_signal_thaw, redact, with_frozen, AfterCleanup, Consistency, FreezeOptions, FreezePlan,
    HookResult, SystemView, VolumeOverrides, VolumeRef, MIN_FREEZE_TIMEOUT,
};
use chrono::Utc;

use crate::cli::{HookFailure, SnapshotCreateArgs};
use crate::commands::{report_interrupted, Env, Interrupt};
use crate::exit::{Exit, UsageError};
use crate::output;
use crate::progress::WaitProgress;

pub async fn create_for_paths(
    env: &Env,
    args: &SnapshotCreateArgs,
    paths: Vec<PathBuf>,
) -> anyhow::Result<Exit> {
    let c = &args.consistency;
    let freeze_timeout = c.freeze_timeout;
    if freeze_timeout < MIN_FREEZE_TIMEOUT {
        return Err(UsageError(format!(
            "--freeze-timeout {} is below the minimum of {}s: the watchdog's clock starts before \
             the first filesystem is frozen, and freezing flushes each filesystem's unwritten \
             data first, so a shorter timeout only thaws before the snapshot. Use at least {}s \
             (the default is 10s)",
            // Below the minimum, so whole seconds only when it is 0s.
            if c.freeze_timeout.is_zero() {
                "0s".to_owned()
            } else {
                format!("{}ms", c.freeze_timeout.as_millis())
            },
            MIN_FREEZE_TIMEOUT.as_secs(),
            MIN_FREEZE_TIMEOUT.as_secs()
        ))
        .into());
    }
    let hook_timeout = c.hook_timeout;
    let wait = if args.wait.wait {
        Some(args.wait.wait_timeout)
    } else {
        None
    };
    let mut user_tags = settable_tags(&args.tags)?;

    // 1. Paths → mounts → volumes (or Xen device names).
    let mut overrides = VolumeOverrides::default();
    for spec in &c.volumes {
        overrides
            .parse_entry(spec)
            .map_err(|e| UsageError(format!("--volume {spec}: {e}")))?;
    }
    let mounts = SystemView::default()
        .resolve_all(&paths, &overrides)
        .map_err(|e| UsageError(e.to_string()))?;
    for unused in overrides.unused(&mounts) {
        tracing::warn!(
            "--volume for {} matches none of the given paths' mounts",
            unused.display()
        );
    }

    // 2. This instance, and its region when none is configured.
    let me = imds::instance_identity().await?;
    let mut settings = env.settings.aws.clone();
    if settings.region.is_none() {
        settings.region = Some(me.region.clone());
    }
    let ctx = AwsContext::connect(&settings).await?;
    let ec2 = ctx.ec2().await?;
    let instance = ec2.get_instance(&me.instance_id).await?;

    // 3. Every volume must be attached here.
    let mut volume_ids = BTreeSet::new();
    for m in &mounts {
        for v in &m.volumes {
            let id = match v {
                VolumeRef::VolumeId(id) => id.clone(),
                VolumeRef::XenDevice(dev) => instance
                    .volumes
                    .iter()
                    .find(|(name, _)| autosnap_freeze::xen_device_matches(name, dev))
                    .map(|(_, id)| id.clone())
                    .ok_or_else(|| {
                        UsageError(format!(
                            "{} is on Xen device {dev}, which is not in the block-device mapping of {}: state the volume with --volume {}=vol-…",
                            m.mount_point.display(),
                            me.instance_id,
                            m.mount_point.display()
                        ))
                    })?,
            };
            if !instance.volumes.iter().any(|(_, v)| v == &id) {
                return Err(UsageError(format!(
                    "volume {id} (behind {}) is not attached to this instance {}: check --volume",
                    m.mount_point.display(),
                    me.instance_id
                ))
                .into());
            }
            volume_ids.insert(id);
        }
    }
    let volume_ids: Vec<String> = volume_ids.into_iter().collect();
    tracing::info!(
        "{} on {}: volume(s) {}",
        paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        me.instance_id,
        volume_ids.join(", ")
    );

    // 4. Tags (the consistency tag is set when the snapshot is taken).
    let mut base = env.settings.config.file.defaults.tags.clone();
    base.append(&mut user_tags);
    base.insert(tags::MANAGED.into(), tags::MANAGED_VALUE.into());
    base.insert(tags::SOURCE_INSTANCE.into(), me.instance_id.clone());
    let copy_volume_tags = !args.no_copy_tags && env.settings.config.file.defaults.copy_volume_tags;
    if let ([only], true) = (volume_ids.as_slice(), copy_volume_tags) {
        // One volume is snapshotted with CreateSnapshot, which copies no tags: read
        // the volume's own tags now, before any freeze, as `snapshot create vol-…`
        // does (sets of several volumes complete theirs after CreateSnapshots).
        let volume = ec2.get_volume(only).await?;
        let mut with_volume_tags = tags::copyable_user_tags(&volume.tags);
        with_volume_tags.append(&mut base);
        base = with_volume_tags;
    }
    let description = args.description.clone().unwrap_or_else(|| {
        let list: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        format!("autosnap: {} on {}", list.join(", "), me.instance_id)
    });
    let shot = Shot {
        ec2: ec2.clone(),
        instance_id: me.instance_id.clone(),
        root_device: instance.root_device_name.clone(),
        all_volumes: instance.volumes.clone(),
        volume_ids: volume_ids.clone(),
        tags: base,
        copy_volume_tags,
        description,
    };

    if args.dry_run {
        return dry_run(env, args, &shot, &mounts).await;
    }

    // 5. Snapshot, frozen or not. With --wait, Ctrl-C is listened for from
    // here, so a signal while the snapshot is taken ends the wait as soon as
    // it begins and the snapshots are printed, not lost. With a freeze or
    // hooks the signal thread below still ends the process on any signal
    // (after thawing and running post hooks): letting the command go on
    // after a signal that came before the freeze would freeze after the
    // post hooks had run.
    let mut interrupt = wait.map(|_| Interrupt::listen()).transpose()?;
    let hooks = !c.pre.is_empty() || !c.post.is_empty();
    let (mut snaps, consistency) = if c.freeze || hooks {
        let mut plan = FreezePlan::new(
            if c.freeze {
                mounts.iter().map(|m| m.mount_point.clone()).collect()
            } else {
                Vec::new()
            },
            std::env::current_exe()?,
        );
        plan.pre_hooks = c.pre.clone();
        plan.post_hooks = c.post.clone();
        plan.hook_timeout = hook_timeout;
        plan.freeze_timeout = freeze_timeout;
        plan.fallback_to_crash_consistent = c.on_hook_failure == HookFailure::Crash;
        let mut options = FreezeOptions::default().with_force(c.force);
        if let Some((p, _)) = &env.settings.config.path {
            options = options.with_own_path(p.clone());
        }
        plan.freeze_options = options;
        // SIGINT/SIGTERM while frozen: thaw and run post hooks, then exit.
        let ec2 = shot.ec2.clone();
        let frozen = take_frozen(
            &ec2,
            plan,
            AfterCleanup::Terminate,
            move |consistency| async move { shot.take(consistency.as_str()).await },
        )
        .await;
        // Freezing and hooks are over: from here a signal is this command's to answer
        // (Ctrl-C during --wait prints the snapshots).
        autosnap_freeze::continue_after_cleanup();
        match frozen {
            Ok((snaps, report)) => (snaps, report.consistency),
            // A refusal (root filesystem, autosnap's own files, an unsupported filesystem) is
            // the user's to fix: exit 2.
            Err(ConsistentSnapshotError::Freeze(e))
                if matches!(*e.cause, autosnap_freeze::FreezeRunCause::Refused(_)) =>
            {
                return Err(UsageError(e.to_string()).into())
            }
            // EC2's error as it is, so its kind and exit code are the same as without a freeze.
            Err(ConsistentSnapshotError::Snapshot(e)) => return Err(e.into()),
            Err(e) => return Err(e.into()),
        }
    } else {
        (
            shot.take(Consistency::Crash.as_str()).await?,
            Consistency::Crash,
        )
    };
    for s in &mut snaps {
        s.tags
            .insert(tags::CONSISTENCY.into(), consistency.as_str().into());
    }
    eprintln!("consistency: {}", consistency.as_str());

    if let (Some(timeout), Some(interrupt)) = (wait, interrupt.as_mut()) {
        let ids: Vec<String> = snaps.iter().map(|s| s.snapshot_id.clone()).collect();
        let progress = WaitProgress::new(&format!("{} snapshot(s)", ids.len()), env.progress);
        let waited = interrupt
            .or(ec2.wait_snapshots_completed(&ids, timeout, &progress))
            .await;
        progress.finish();
        match waited {
            Some(done) => snaps = done?,
            None => {
                // The filesystems were thawed before the wait began.
                if let Some(now) = super::snapshot::states_soon(&ec2, &ids).await {
                    snaps = now;
                }
                output::emit(env.output, &snaps, || {
                    super::snapshot::snapshot_table(&snaps, Utc::now())
                })?;
                report_interrupted(
                    &format!("snapshot(s) {}", ids.join(", ")),
                    "autosnap snapshot list",
                );
                return Ok(Exit::Interrupted);
            }
        }
    }
    let now = Utc::now();
    output::emit(env.output, &snaps, || {
        super::snapshot::snapshot_table(&snaps, now)
    })?;
    Ok(Exit::Success)
}

/// `snapshot create PATH --dry-run`: the snapshots the call would make, the
/// filesystems it would freeze and the hooks it would run. Nothing is frozen
/// and no hook runs; a freeze the real run would refuse (the root
/// filesystem, autosnap's own files) is refused here too, with its exit code.
async fn dry_run(
    env: &Env,
    args: &SnapshotCreateArgs,
    shot: &Shot,
    mounts: &[autosnap_freeze::ResolvedMount],
) -> anyhow::Result<Exit> {
    let c = &args.consistency;
    let mount_points: Vec<PathBuf> = mounts.iter().map(|m| m.mount_point.clone()).collect();
    if c.freeze {
        let mut options = FreezeOptions::default().with_force(c.force);
        if let Some((p, _)) = &env.settings.config.path {
            options = options.with_own_path(p.clone());
        }
        autosnap_freeze::prepare_freeze(&mount_points, &options)
            .map_err(|e| UsageError(e.to_string()))?;
    }
    let planned = match (c.freeze, c.pre.is_empty()) {
        (false, _) => Consistency::Crash,
        (true, true) => Consistency::Filesystem,
        (true, false) => Consistency::Application,
    };
    let volumes = shot
        .ec2
        .list_volumes(&autosnap_aws::VolumeQuery {
            volume_ids: shot.volume_ids.clone(),
            ..Default::default()
        })
        .await?;
    let set_id = tags::set_id(&shot.instance_id, Utc::now());
    let plan: Vec<super::snapshot::PlannedSnapshot> = shot
        .volume_ids
        .iter()
        .map(|id| {
            let volume = volumes.iter().find(|v| &v.volume_id == id);
            // As Shot::take tags them: one volume alone, or a set with its id
            // and (when copying) each volume's own tags.
            let mut t = match volume {
                Some(v) if shot.volume_ids.len() > 1 && shot.copy_volume_tags => {
                    tags::copyable_user_tags(&v.tags)
                }
                _ => Tags::new(),
            };
            t.extend(shot.tags.clone());
            t.insert(tags::CONSISTENCY.into(), planned.as_str().into());
            if shot.volume_ids.len() > 1 {
                t.insert(tags::SET_ID.into(), set_id.clone());
            }
            t.insert(tags::SOURCE_VOLUME.into(), id.clone());
            let target = mounts
                .iter()
                .filter(|m| {
                    m.volumes.iter().any(|r| match r {
                        VolumeRef::VolumeId(v) => v == id,
                        VolumeRef::XenDevice(_) => false,
                    })
                })
                .map(|m| m.mount_point.display().to_string())
                .next()
                .unwrap_or_else(|| {
                    mount_points
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                });
            super::snapshot::PlannedSnapshot {
                dry_run: true,
                target,
                volume_id: id.clone(),
                device_name: shot
                    .all_volumes
                    .iter()
                    .find(|(_, v)| v == id)
                    .map(|(d, _)| d.clone()),
                size_gib: volume.map(|v| v.size_gib),
                encrypted: volume.is_some_and(|v| v.encrypted),
                region: shot.ec2.region().to_string(),
                description: shot.description.clone(),
                tags: t,
                freeze: if c.freeze {
                    mount_points
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect()
                } else {
                    vec![]
                },
                pre_hooks: c.pre.iter().map(|h| redact(h)).collect(),
                post_hooks: c.post.iter().map(|h| redact(h)).collect(),
            }
        })
        .collect();
    super::snapshot::print_snapshot_plan(env, &plan)?;
    Ok(Exit::Success)
}

/// Everything one snapshot call needs, owned so it can cross into the
/// blocking freeze thread.
struct Shot {
    ec2: Ec2,
    instance_id: String,
    root_device: Option<String>,
    all_volumes: Vec<(String, String)>,
    volume_ids: Vec<String>,
    tags: Tags,
    copy_volume_tags: bool,
    description: String,
}

impl Shot {
    /// One CreateSnapshot (one volume) or CreateSnapshots (several volumes of
    /// this instance at one point in time), tagged with `consistency`.
    async fn take(&self, consistency: &str) -> Result<Vec<Snapshot>, AwsError> {
        let mut t = self.tags.clone();
        t.insert(tags::CONSISTENCY.into(), consistency.into());
        if let [only] = self.volume_ids.as_slice() {
            t.insert(tags::SOURCE_VOLUME.into(), only.clone());
            return Ok(vec![
                self.ec2
                    .create_snapshot(only, &self.description, &t)
                    .await?,
            ]);
        }
        t.insert(
            tags::SET_ID.into(),
            tags::set_id(&self.instance_id, Utc::now()),
        );
        let root_volume = self
            .all_volumes
            .iter()
            .find(|(dev, _)| Some(dev) == self.root_device.as_ref())
            .map(|(_, v)| v.clone());
        let exclude_boot = root_volume
            .as_ref()
            .is_some_and(|r| !self.volume_ids.contains(r));
        let exclude: Vec<String> = self
            .all_volumes
            .iter()
            .map(|(_, v)| v.clone())
            .filter(|v| !self.volume_ids.contains(v) && Some(v) != root_volume.as_ref())
            .collect();
        self.ec2
            .create_snapshot_set(
                &self.instance_id,
                exclude_boot,
                &exclude,
                self.copy_volume_tags,
                &self.description,
                &t,
            )
            .await
    }
}

/// At info, which hook ran (phase and number), how it ended and how long it
/// took; the command line and its output only at debug (-v), with obvious
/// secrets redacted: hooks often carry database passwords.
fn log_hooks(phase: &str, hooks: &[HookResult]) {
    for (index, h) in hooks.iter().enumerate() {
        let number = index + 1;
        let output = match h {
            Ok(out) => {
                tracing::info!(
                    "{phase} hook {number} succeeded in {} ms",
                    out.duration.as_millis()
                );
                Some(out)
            }
            Err(e) => {
                let took = e
                    .output()
                    .map(|o| format!(" after {} ms", o.duration.as_millis()))
                    .unwrap_or_default();
                tracing::error!("{phase} hook {number} failed: {}{took}", e.ending());
                e.output()
            }
        };
        if let Some(out) = output {
            tracing::debug!("{phase} hook {number}: `{}`", redact(&out.command));
            for line in out.stdout.lines().chain(out.stderr.lines()) {
                tracing::debug!("  {phase} hook {number}: {}", redact(line));
            }
        }
    }
}

/// Policies with `consistency = { freeze = […], pre = […], post = […] }`:
/// when `run` or `daemon` runs on an instance a policy backs up, that
/// instance's set is taken inside a freeze with the policy's hooks.
pub struct PolicyFreezer {
    ec2: Ec2,
    instance_id: String,
    policies: Vec<autosnap_core::policy::PolicyConfig>,
    after_cleanup: AfterCleanup,
    /// autosnap's own files (the config): their filesystems are not frozen.
    own_paths: Vec<PathBuf>,
}

impl PolicyFreezer {
    /// `None` when no policy asks for consistency, or when this is not an
    /// EC2 instance (then every set is crash-consistent, as the log says).
    pub async fn detect(
        ctx: &AwsContext,
        policies: &[autosnap_core::policy::PolicyConfig],
        after_cleanup: AfterCleanup,
    ) -> Option<PolicyFreezer> {
        let wanted: Vec<_> = policies
            .iter()
            .filter(|p| !p.consistency.is_off())
            .cloned()
            .collect();
        if wanted.is_empty() {
            return None;
        }
        match imds::instance_identity().await {
            Ok(me) => Some(PolicyFreezer {
                ec2: ctx.ec2().await.ok()?,
                instance_id: me.instance_id,
                policies: wanted,
                after_cleanup,
                own_paths: Vec::new(),
            }),
            Err(e) => {
                tracing::info!(
                    "policy consistency options apply only when autosnap runs on the instance itself: {e}"
                );
                None
            }
        }
    }
}

impl PolicyFreezer {
    /// Files autosnap uses (the config file): a policy may not freeze the
    /// filesystem holding them, as `snapshot create --freeze` may not.
    pub fn with_own_paths(mut self, paths: impl IntoIterator<Item = PathBuf>) -> Self {
        self.own_paths.extend(paths);
        self
    }
}

use autosnap_aws::execute::LocalSnapshotError;

impl autosnap_aws::execute::LocalSnapshotter for PolicyFreezer {
    fn take<'a>(
        &'a self,
        policy: &'a str,
        create: &'a autosnap_core::plan::CreateAction,
        tags: &'a Tags,
    ) -> Option<futures::future::BoxFuture<'a, Result<Vec<Snapshot>, LocalSnapshotError>>> {
        if create.target_id != self.instance_id {
            return None;
        }
        let settings = self
            .policies
            .iter()
            .find(|p| p.name == policy)?
            .consistency
            .clone();
        Some(Box::pin(async move {
            // Config validation refuses a bad duration before any run; should one get this
            // far it is still an error, never a silent default.
            let bad = |field: &'static str| {
                let policy = policy.to_string();
                move |source| ConsistentSnapshotError::Setting {
                    policy,
                    field,
                    source,
                }
            };
            let exe = std::env::current_exe().map_err(ConsistentSnapshotError::OwnExecutable)?;
            let mut plan =
                FreezePlan::new(settings.freeze.iter().map(PathBuf::from).collect(), exe);
            plan.pre_hooks = settings.pre.clone();
            plan.post_hooks = settings.post.clone();
            plan.freeze_timeout = settings
                .freeze_timeout_or_default()
                .map_err(bad("freeze_timeout"))?;
            plan.hook_timeout = settings
                .hook_timeout_or_default()
                .map_err(bad("hook_timeout"))?;
            plan.fallback_to_crash_consistent =
                settings.on_hook_failure.as_deref() == Some("crash");
            plan.freeze_options = self
                .own_paths
                .iter()
                .fold(FreezeOptions::default(), |o, p| o.with_own_path(p.clone()));
            let (ec2, create, tags) = (self.ec2.clone(), create.clone(), tags.clone());
            let (snaps, _) =
                take_frozen(&self.ec2, plan, self.after_cleanup, move |c| async move {
                    let mut t = tags;
                    t.insert(tags::CONSISTENCY.into(), c.as_str().into());
                    ec2.create_snapshot_set(
                        &create.target_id,
                        create.exclude_boot,
                        &create.exclude_volumes,
                        create.copy_tags_from_volumes,
                        &create.description,
                        &t,
                    )
                    .await
                })
                .await?;
            Ok(snaps)
        }))
    }
}

/// Why a consistent set was not taken; made text only where it is reported.
#[derive(Debug, thiserror::Error)]
pub enum ConsistentSnapshotError {
    #[error("cannot find autosnap's own executable, which the freeze watchdog runs: {0}")]
    OwnExecutable(std::io::Error),
    #[error("cannot install the thaw on SIGINT/SIGTERM, so nothing was frozen: {0}")]
    SignalThaw(std::io::Error),
    #[error(transparent)]
    Freeze(#[from] autosnap_freeze::FreezeRunError),
    #[error("the freeze thread stopped unexpectedly: {0}")]
    Thread(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Snapshot(#[from] AwsError),
    #[error("policy {policy:?}: consistency.{field}: {source}")]
    Setting {
        policy: String,
        field: &'static str,
        source: autosnap_core::duration::DurationError,
    },
}

/// Takes snapshots inside `plan`'s freeze and hooks (`snapshot create PATH` and policies with
/// `consistency`): `take` runs on the blocking freeze thread with the consistency planned and
/// tags the snapshots with it; if the freeze did not hold until the thaw, the consistency
/// achieved replaces that tag. Hooks, warnings and the freeze window are logged. A signal while
/// frozen thaws and runs the post hooks, then `after` says whether the process ends.
async fn take_frozen<F, Fut>(
    ec2: &Ec2,
    plan: FreezePlan,
    after: AfterCleanup,
    take: F,
) -> Result<(Vec<Snapshot>, autosnap_freeze::FreezeReport), ConsistentSnapshotError>
where
    F: FnOnce(Consistency) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<Vec<Snapshot>, AwsError>>,
{
    install_signal_thaw(after).map_err(ConsistentSnapshotError::SignalThaw)?;
    let handle = tokio::runtime::Handle::current();
    let outcome =
        tokio::task::spawn_blocking(move || with_frozen(plan, |c| handle.block_on(take(c))))
            .await?;
    let (taken, report) = outcome.inspect_err(|e| {
        log_hooks("pre", &e.pre_hooks);
        log_hooks("post", &e.post_hooks);
    })?;
    log_hooks("pre", &report.pre_hooks);
    log_hooks("post", &report.post_hooks);
    for w in &report.warnings {
        tracing::warn!("{w}");
    }
    if let Some(window) = report.freeze_window {
        tracing::info!(
            "filesystems frozen for {} ms: {}",
            window.as_millis(),
            report
                .frozen_mounts
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let mut snaps = taken?;
    let achieved = report.consistency.as_str();
    if snaps
        .iter()
        .any(|s| s.tags.get(tags::CONSISTENCY).map(String::as_str) != Some(achieved))
    {
        let ids: Vec<String> = snaps.iter().map(|s| s.snapshot_id.clone()).collect();
        let mut t = Tags::new();
        t.insert(tags::CONSISTENCY.into(), achieved.into());
        ec2.create_tags(&ids, &t).await?;
        for s in &mut snaps {
            s.tags.insert(tags::CONSISTENCY.into(), achieved.into());
        }
    }
    if report.post_hooks_failed() {
        tracing::warn!("a post hook failed; the snapshot was taken");
    }
    Ok((snaps, report))
}

//! One consistent snapshot: pre hooks → watchdog → freeze → the caller's
//! action (CreateSnapshots) → thaw → disarm → post hooks, with post hooks run
//! whatever happens once the pre hooks started, and the consistency achieved
//! reported honestly.

use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::guard::{prepare_freeze, FreezeError, FreezeGuard, FreezeOptions};
use crate::hooks::{redact, run_hook_observed, HookError, HookResult};
use crate::registry;
use crate::signals;
use crate::watchdog::{watchdog_command, Watchdog, WatchdogError, WatchdogOutcome};

/// Default `--freeze-timeout`: the watchdog thaws after this.
pub const DEFAULT_FREEZE_TIMEOUT: Duration = Duration::from_secs(10);
/// The shortest freeze timeout accepted: the watchdog's clock starts before
/// the first FIFREEZE, and freezing flushes each filesystem's unwritten data,
/// which takes time. Shorter timeouts only produce thaws before the snapshot.
pub const MIN_FREEZE_TIMEOUT: Duration = Duration::from_secs(1);
/// Default timeout of each hook.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(60);
/// Set for hooks: `pre` or `post`.
pub const HOOK_PHASE_ENV: &str = "AUTOSNAP_HOOK_PHASE";

/// The consistency a snapshot achieved (the value of its consistency tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Consistency {
    /// As if the power had been cut: no freeze held for the whole call.
    Crash,
    /// The filesystems were frozen (flushed, no writes) while the point in
    /// time was set.
    Filesystem,
    /// Pre hooks quiesced the applications and the filesystems were frozen.
    Application,
}

impl Consistency {
    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::Crash => "crash",
            Consistency::Filesystem => "filesystem",
            Consistency::Application => "application",
        }
    }
}

impl fmt::Display for Consistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Consistency {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "crash" => Ok(Consistency::Crash),
            "filesystem" => Ok(Consistency::Filesystem),
            "application" => Ok(Consistency::Application),
            other => Err(format!(
                "unknown consistency {other:?} (expected crash, filesystem or application)"
            )),
        }
    }
}

/// What [`with_frozen`] does.
#[derive(Debug, Clone)]
pub struct FreezePlan {
    /// Paths whose filesystems to freeze (empty: no freeze, crash-consistent).
    pub mounts: Vec<PathBuf>,
    /// Shell commands run in order before the freeze; the first failure stops them.
    pub pre_hooks: Vec<String>,
    /// Shell commands run in order after the thaw, all of them, always (once
    /// the checks passed), even when a pre hook, the freeze or the action failed.
    pub post_hooks: Vec<String>,
    pub hook_timeout: Duration,
    /// After this, the watchdog thaws (counted from just before the freeze).
    pub freeze_timeout: Duration,
    /// When a pre hook fails: take a crash-consistent snapshot (the action
    /// runs, without freezing) instead of failing.
    pub fallback_to_crash_consistent: bool,
    /// `force` and own paths (see [`FreezeOptions`]).
    pub freeze_options: FreezeOptions,
    /// The executable that implements the hidden watchdog subcommand
    /// (`std::env::current_exe()` for the autosnap CLI).
    pub watchdog_exe: PathBuf,
}

impl FreezePlan {
    /// Freeze `mounts` with default timeouts, no hooks, fail closed.
    pub fn new(mounts: Vec<PathBuf>, watchdog_exe: impl Into<PathBuf>) -> Self {
        Self {
            mounts,
            pre_hooks: Vec::new(),
            post_hooks: Vec::new(),
            hook_timeout: DEFAULT_HOOK_TIMEOUT,
            freeze_timeout: DEFAULT_FREEZE_TIMEOUT,
            fallback_to_crash_consistent: false,
            freeze_options: FreezeOptions::default(),
            watchdog_exe: watchdog_exe.into(),
        }
    }
}

/// What happened around the action.
#[derive(Debug)]
pub struct FreezeReport {
    /// The consistency achieved: tag the snapshots with it.
    pub consistency: Consistency,
    /// The filesystems frozen, in freeze order.
    pub frozen_mounts: Vec<PathBuf>,
    /// From the first FIFREEZE to the last FITHAW.
    pub freeze_window: Option<Duration>,
    pub pre_hooks: Vec<HookResult>,
    pub post_hooks: Vec<HookResult>,
    pub watchdog: Option<WatchdogOutcome>,
    /// Why the consistency is lower than planned, and other things to log.
    pub warnings: Vec<String>,
}

impl FreezeReport {
    fn new() -> Self {
        Self {
            consistency: Consistency::Crash,
            frozen_mounts: Vec::new(),
            freeze_window: None,
            pre_hooks: Vec::new(),
            post_hooks: Vec::new(),
            watchdog: None,
            warnings: Vec::new(),
        }
    }

    /// Whether any post hook failed (the snapshot exists; the caller decides
    /// the exit code).
    pub fn post_hooks_failed(&self) -> bool {
        self.post_hooks.iter().any(Result::is_err)
    }
}

/// Why no snapshot was taken.
#[derive(Debug, thiserror::Error)]
pub enum FreezeRunCause {
    /// The checks refused the plan; no hook ran.
    #[error(transparent)]
    Refused(FreezeError),
    #[error("a pre hook failed, so no snapshot was taken: {0}")]
    PreHook(HookError),
    #[error(transparent)]
    Watchdog(WatchdogError),
    #[error(transparent)]
    Freeze(FreezeError),
}

/// [`with_frozen`] failed before the action ran; the hooks' results are kept
/// for the log.
#[derive(Debug, thiserror::Error)]
#[error("{cause}")]
pub struct FreezeRunError {
    #[source]
    pub cause: Box<FreezeRunCause>,
    pub pre_hooks: Vec<HookResult>,
    /// Post hooks that ran anyway (none when the checks refused the plan).
    pub post_hooks: Vec<HookResult>,
}

/// A `with_frozen` in progress, as the signal thread sees it.
#[derive(Debug)]
pub(crate) struct RunState {
    pre_hook_group: AtomicI32,
    post: Mutex<PostHooks>,
}

#[derive(Debug)]
struct PostHooks {
    commands: Vec<String>,
    timeout: Duration,
    ran: bool,
}

impl RunState {
    fn new(commands: Vec<String>, timeout: Duration) -> Self {
        Self {
            pre_hook_group: AtomicI32::new(0),
            post: Mutex::new(PostHooks {
                commands,
                timeout,
                ran: false,
            }),
        }
    }

    /// The process group of the pre hook running now.
    pub(crate) fn running_pre_hook(&self) -> Option<i32> {
        match self.pre_hook_group.load(Ordering::SeqCst) {
            0 => None,
            group => Some(group),
        }
    }

    /// Runs the post hooks unless they already ran (or are running on another
    /// thread, in which case this waits for them and returns `None`).
    pub(crate) fn run_post_hooks_if_pending(&self) -> Option<Vec<HookResult>> {
        let mut post = self.post.lock().unwrap_or_else(|p| p.into_inner());
        if post.ran {
            return None;
        }
        post.ran = true;
        let env = [(HOOK_PHASE_ENV, "post")];
        let results = post
            .commands
            .iter()
            .enumerate()
            .map(|(index, command)| {
                let result = run_hook_observed(command, post.timeout, &env, &|_| {});
                log_hook("post", index + 1, &result);
                result
            })
            .collect();
        Some(results)
    }
}

/// At info: which hook (phase and number), how it ended and how long it
/// took. The command line and output only at debug, redacted: hooks often
/// carry database passwords.
fn log_hook(phase: &str, number: usize, result: &HookResult) {
    let output = match result {
        Ok(output) => {
            tracing::info!(
                phase,
                hook = number,
                duration_ms = output.duration.as_millis() as u64,
                "hook succeeded"
            );
            Some(output)
        }
        Err(error) => {
            tracing::warn!(
                phase,
                hook = number,
                duration_ms = error.output().map(|o| o.duration.as_millis() as u64),
                status = %error.ending(),
                "hook failed"
            );
            error.output()
        }
    };
    if let Some(output) = output {
        tracing::debug!(
            phase,
            hook = number,
            command = %redact(&output.command),
            stdout = %redact(output.stdout.trim_end()),
            stderr = %redact(output.stderr.trim_end()),
            "hook output"
        );
    }
}

/// Runs `action` with the plan's filesystems frozen:
///
/// 1. checks the plan ([`prepare_freeze`]: freezable types, not the root
///    filesystem nor one holding autosnap's own files unless forced) — a
///    refusal returns before anything runs;
/// 2. pre hooks, in order (a failure fails closed: no action, post hooks run,
///    error — or, with `fallback_to_crash_consistent`, the action runs
///    without a freeze and the report says `crash`);
/// 3. starts the watchdog and waits until it is ready;
/// 4. freezes, sorted by mount point;
/// 5. `action(planned consistency)` — the caller's CreateSnapshots, which
///    returns as soon as the point in time is set; the argument is the
///    consistency the snapshot will have if the freeze holds, for its tags;
/// 6. thaws in reverse order and disarms the watchdog (or, if a thaw failed,
///    closes its pipe so that it thaws);
/// 7. post hooks, all, always — also when the action panicked, after which
///    the panic continues.
///
/// The report's consistency is lower than the planned one when the freeze
/// did not hold until the thaw (the watchdog's timeout passed while the
/// action ran, or a signal thawed): then re-tag the snapshots.
///
/// The action is a plain closure, so async code runs inside it through a
/// runtime handle, from a thread where blocking is allowed:
///
/// ```ignore
/// // In the CLI (tokio), where `ec2.create_snapshots(..)` is async:
/// let handle = tokio::runtime::Handle::current();
/// let (snapshots, report) = tokio::task::spawn_blocking(move || {
///     autosnap_freeze::with_frozen(plan, |consistency| {
///         // Tag with `consistency` at creation; re-tag if the report says less.
///         handle.block_on(ec2.create_snapshots(instance_id, &volumes, consistency.as_str()))
///     })
/// })
/// .await??;
/// ```
pub fn with_frozen<T>(
    plan: FreezePlan,
    action: impl FnOnce(Consistency) -> T,
) -> Result<(T, FreezeReport), FreezeRunError> {
    signals::wait_if_terminating();
    let result = run_frozen(plan, action);
    // A signal arrived while we ran: the signal thread thawed, ran the post
    // hooks and is ending the process; do not hand control back.
    signals::wait_if_terminating();
    result
}

fn run_frozen<T>(
    plan: FreezePlan,
    action: impl FnOnce(Consistency) -> T,
) -> Result<(T, FreezeReport), FreezeRunError> {
    let refused = |error| FreezeRunError {
        cause: Box::new(FreezeRunCause::Refused(error)),
        pre_hooks: Vec::new(),
        post_hooks: Vec::new(),
    };
    let targets = if plan.mounts.is_empty() {
        Vec::new()
    } else {
        if plan.freeze_timeout < MIN_FREEZE_TIMEOUT {
            return Err(refused(FreezeError::FreezeTimeoutTooShort {
                timeout: plan.freeze_timeout,
                minimum: MIN_FREEZE_TIMEOUT,
            }));
        }
        prepare_freeze(&plan.mounts, &plan.freeze_options).map_err(refused)?
    };

    let run = Arc::new(RunState::new(plan.post_hooks.clone(), plan.hook_timeout));
    let _registration = registry::register_run(&run);
    let mut report = FreezeReport::new();
    let fail = |cause: FreezeRunCause, pre_hooks: Vec<HookResult>| FreezeRunError {
        cause: Box::new(cause),
        pre_hooks,
        post_hooks: run.run_post_hooks_if_pending().unwrap_or_default(),
    };

    // Pre hooks.
    let mut pre_hook_failure = None;
    for (index, command) in plan.pre_hooks.iter().enumerate() {
        let result = run_hook_observed(
            command,
            plan.hook_timeout,
            &[(HOOK_PHASE_ENV, "pre")],
            &|group| {
                run.pre_hook_group
                    .store(group.unwrap_or(0), Ordering::SeqCst)
            },
        );
        log_hook("pre", index + 1, &result);
        let failed = result.is_err();
        report.pre_hooks.push(result);
        if failed {
            pre_hook_failure = report.pre_hooks.pop().and_then(Result::err);
            break;
        }
    }
    if let Some(error) = pre_hook_failure {
        if !plan.fallback_to_crash_consistent {
            return Err(fail(FreezeRunCause::PreHook(error), report.pre_hooks));
        }
        report.warnings.push(format!(
            "{error}; taking a crash-consistent snapshot instead (fallback), without freezing"
        ));
        report.pre_hooks.push(Err(error));
    }
    let pre_hooks_succeeded = report.pre_hooks.iter().all(Result::is_ok);

    // Watchdog, then freeze.
    let mut frozen = None;
    if pre_hooks_succeeded && !targets.is_empty() {
        let mount_points: Vec<PathBuf> = targets.iter().map(|t| t.mount_point.clone()).collect();
        let mut watchdog = match Watchdog::spawn(watchdog_command(
            &plan.watchdog_exe,
            plan.freeze_timeout,
            &mount_points,
        )) {
            Ok(watchdog) => watchdog,
            Err(error) => {
                let pre_hooks = std::mem::take(&mut report.pre_hooks);
                return Err(fail(FreezeRunCause::Watchdog(error), pre_hooks));
            }
        };
        // Before and after every FIFREEZE: is the watchdog still armed, with
        // time left? A slow FIFREEZE (much unwritten data) can outlive it.
        let deadline = watchdog.deadline();
        let timeout = plan.freeze_timeout;
        let freezing = FreezeGuard::freeze_checked(&targets, || {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(format!(
                    "the freeze timeout ({timeout:?}) passed while freezing, so the watchdog \
                     thaws (or has thawed) everything. Raise --freeze-timeout (or the policy's \
                     freeze_timeout): freezing flushes each filesystem's unwritten data first"
                ));
            }
            watchdog.check_armed().map_err(|lapse| lapse.to_string())
        });
        match freezing {
            Ok(guard) => frozen = Some((guard, watchdog)),
            Err(error) => {
                // Whatever was frozen is thawed already; nothing for the watchdog.
                watchdog.disarm();
                let pre_hooks = std::mem::take(&mut report.pre_hooks);
                return Err(fail(FreezeRunCause::Freeze(error), pre_hooks));
            }
        }
    }
    let planned = match (&frozen, plan.pre_hooks.is_empty()) {
        (None, _) => Consistency::Crash,
        (Some(_), true) => Consistency::Filesystem,
        (Some(_), false) => Consistency::Application,
    };

    // The action: nothing else (no logging) happens while frozen.
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| action(planned)));

    report.consistency = planned;
    if let Some((guard, watchdog)) = frozen {
        report.frozen_mounts = guard.mount_points().to_vec();
        let thaw = guard.thaw();
        report.freeze_window = Some(thaw.window);
        report.watchdog = Some(if thaw.failed.is_empty() {
            watchdog.disarm()
        } else {
            watchdog.abandon()
        });
        tracing::info!(
            window_ms = thaw.window.as_millis() as u64,
            mounts = ?report.frozen_mounts,
            "thawed"
        );
        if !thaw.not_frozen.is_empty() {
            report.consistency = Consistency::Crash;
            report.warnings.push(format!(
                "{} thawed before the snapshot call returned (freeze timeout {:?} passed \
                 or a signal thawed it): the snapshots are only crash-consistent",
                crate::guard::join(&thaw.not_frozen),
                plan.freeze_timeout
            ));
        }
        for (mount_point, error) in &thaw.failed {
            report.consistency = Consistency::Crash;
            report.warnings.push(format!(
                "cannot thaw {}: {error}; the watchdog was told to thaw it ({:?})",
                mount_point.display(),
                report.watchdog
            ));
        }
    }
    for warning in &report.warnings {
        tracing::warn!("{warning}");
    }

    report.post_hooks = run.run_post_hooks_if_pending().unwrap_or_default();
    match outcome {
        Ok(value) => Ok((value, report)),
        Err(payload) => {
            signals::wait_if_terminating();
            panic::resume_unwind(payload)
        }
    }
}

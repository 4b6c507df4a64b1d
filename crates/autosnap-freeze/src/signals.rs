//! SIGINT, SIGTERM, SIGHUP and SIGQUIT while filesystems are frozen: thaw at
//! once, from a dedicated thread, even while the main thread is blocked in an
//! AWS call.
//!
//! [`install_signal_thaw`] starts a thread that waits for those signals
//! (`signal_hook::iterator`, so the work happens in a normal thread, not in a
//! signal handler). On each signal it:
//!
//! 1. stops a pre hook in progress (SIGTERM, then SIGKILL, to its process group);
//! 2. thaws every filesystem frozen by a live [`crate::FreezeGuard`];
//! 3. runs the post hooks of every [`crate::with_frozen`] in progress that has
//!    not run them yet (waiting for them if the main thread is running them);
//! 4. with [`AfterCleanup::Terminate`], ends the process the way the signal
//!    would have (same exit status as without a handler). Meanwhile a
//!    [`crate::with_frozen`] on another thread does not return: it waits for
//!    the end, so the caller neither reports a secondary error nor freezes again.
//!
//! # How the CLI uses it
//!
//! Call `install_signal_thaw(AfterCleanup::Terminate)` once, early in a
//! command that may freeze (`snapshot create --freeze`, a policy run on the
//! instance), before the first [`crate::with_frozen`]. The handlers stay for
//! the rest of the process (signal-hook cannot restore the default action, so
//! uninstalling would leave the signals ignored). A long-running command that
//! handles these signals itself (tokio's `signal::ctrl_c` in `daemon`) uses
//! [`AfterCleanup::Continue`] instead, so its own shutdown still runs after
//! the thaw.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::hooks::{kill_group, HOOK_KILL_GRACE};
use crate::ioctl::ThawOutcome;
use crate::registry;

/// The signals that trigger a thaw.
pub const THAW_SIGNALS: [i32; 4] = [SIGINT, SIGTERM, SIGHUP, SIGQUIT];

/// What the signal thread does once it has cleaned up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterCleanup {
    /// End the process as the signal's default action would (exit status
    /// 128 + signal as seen by a shell).
    Terminate,
    /// Return to waiting; the application's own handlers decide.
    Continue,
}

static INSTALLED: OnceLock<()> = OnceLock::new();
/// The signal thread's [`AfterCleanup`]: true for [`AfterCleanup::Terminate`].
/// Set by the first [`install_signal_thaw`]; [`continue_after_cleanup`] clears it.
static TERMINATE_AFTER: AtomicBool = AtomicBool::new(false);
/// Set once a signal is being handled with [`AfterCleanup::Terminate`].
static TERMINATING: AtomicBool = AtomicBool::new(false);

/// Called by `with_frozen` before it starts and before it returns: once the
/// signal thread is terminating the process, the caller must not carry on
/// (report a misleading error, or freeze again), so this thread waits for
/// the end.
pub(crate) fn wait_if_terminating() {
    while TERMINATING.load(Ordering::SeqCst) {
        thread::park();
    }
}

/// Installs the signal thread (once per process; later calls return the mode
/// of the first, which stays in force).
pub fn install_signal_thaw(after: AfterCleanup) -> io::Result<AfterCleanup> {
    if INSTALLED.get().is_some() {
        return Ok(current_mode());
    }
    let mut signals = Signals::new(THAW_SIGNALS)?;
    if INSTALLED.set(()).is_err() {
        return Ok(current_mode());
    }
    TERMINATE_AFTER.store(after == AfterCleanup::Terminate, Ordering::SeqCst);
    thread::Builder::new()
        .name("autosnap-signal-thaw".into())
        .spawn(move || {
            for signal in signals.forever() {
                let mode = current_mode();
                if mode == AfterCleanup::Terminate {
                    TERMINATING.store(true, Ordering::SeqCst);
                }
                cleanup_now();
                if mode == AfterCleanup::Terminate {
                    let _ = signal_hook::low_level::emulate_default_handler(signal);
                    // Not reached for the signals above; never return regardless.
                    std::process::exit(128 + signal);
                }
            }
        })?;
    Ok(after)
}

fn current_mode() -> AfterCleanup {
    if TERMINATE_AFTER.load(Ordering::SeqCst) {
        AfterCleanup::Terminate
    } else {
        AfterCleanup::Continue
    }
}

/// Switches the signal thread to [`AfterCleanup::Continue`] for the rest of
/// the process: for a command whose freezing is over (thawed, post hooks run)
/// and that handles the signals itself from then on, such as `snapshot create
/// PATH --wait` reporting the snapshots it took when Ctrl-C ends its wait.
/// Call it only when the process will not freeze again: a signal that comes
/// before a later freeze would no longer end the process, and that freeze
/// could then run after the post hooks.
pub fn continue_after_cleanup() {
    TERMINATE_AFTER.store(false, Ordering::SeqCst);
}

/// Does what the signal thread does on a signal, without terminating: stop
/// pre hooks, thaw everything frozen, run pending post hooks. For an
/// application that handles termination itself.
pub fn cleanup_now() {
    let runs = registry::runs();
    let groups: Vec<i32> = runs
        .iter()
        .filter_map(|run| run.running_pre_hook())
        .collect();
    for &group in &groups {
        kill_group(group, libc::SIGTERM);
    }
    // Thaw everything before anything slow, logging included (a forced
    // freeze may hold the log file).
    let thawed: Vec<_> = registry::frozen_sets()
        .iter()
        .flat_map(|set| set.thaw_all_early())
        .collect();
    for (mount_point, result) in thawed {
        match result {
            Ok(ThawOutcome::Thawed) => {
                tracing::warn!(mount_point = %mount_point.display(), "signal: thawed")
            }
            Ok(ThawOutcome::NotFrozen) => {}
            Err(error) => tracing::error!(
                mount_point = %mount_point.display(),
                %error,
                "signal: cannot thaw; the watchdog will retry"
            ),
        }
    }
    if !groups.is_empty() {
        let deadline = Instant::now() + HOOK_KILL_GRACE;
        while Instant::now() < deadline && runs.iter().any(|r| r.running_pre_hook().is_some()) {
            thread::sleep(Duration::from_millis(20));
        }
        // Only groups still running: a reaped hook's id may be reused.
        for group in runs.iter().filter_map(|r| r.running_pre_hook()) {
            kill_group(group, libc::SIGKILL);
        }
    }
    for run in runs {
        run.run_post_hooks_if_pending();
    }
}

//! autosnap on the instance (Linux): consistent snapshots of mounted
//! filesystems.
//!
//! - [`resolve`]: a path → its mount → its block device → the EBS volumes
//!   under it (NVMe serials, `/dev/disk/by-id`, partitions, device-mapper/LVM,
//!   md, multi-device btrfs; Xen device names for the caller to map through
//!   instance metadata), read through a [`SystemView`] so fixture trees stand
//!   in for `/proc`, `/sys` and `/dev` in tests.
//! - [`guard`]: FIFREEZE/FITHAW in a fixed order with a [`FreezeGuard`] that
//!   thaws on every path out (return, error, panic); refuses the root
//!   filesystem and the ones holding autosnap's own files unless forced.
//! - [`watchdog`]: a separate process (the autosnap executable re-run with a
//!   hidden subcommand, in its own session) that thaws when autosnap dies —
//!   even by SIGKILL — or overruns the freeze timeout.
//! - [`signals`]: SIGINT/SIGTERM/SIGHUP/SIGQUIT thaw from a dedicated thread.
//! - [`hooks`]: pre/post shell hooks with timeouts and captured output.
//! - [`with_frozen`]: all of it around the caller's CreateSnapshots call.
//!
//! This is the only crate of autosnap with `unsafe` code: the ioctls and a
//! few system calls (setsid, poll, killpg, send), each with its reason.
//! No AWS SDK here: the caller passes the snapshot call in as a closure.
//!
//! # Wiring into the CLI
//!
//! 1. First thing in `main`, before clap, config or logging (the watchdog
//!    must not open log files, which may sit on a filesystem it will thaw):
//!    `if let Some(code) = autosnap_freeze::watchdog_entry(std::env::args_os()) { std::process::exit(code) }`.
//!    This serves the hidden `autosnap __freeze-watchdog --timeout-ms N MOUNT...`
//!    that [`with_frozen`] starts (a clap subcommand marked `hide = true`
//!    calling [`watchdog_main`] works too, but must then skip logging setup).
//! 2. In a command that freezes, once, before freezing:
//!    `install_signal_thaw(AfterCleanup::Terminate)` (or `Continue` where the
//!    command handles SIGINT/SIGTERM itself, e.g. `daemon`).
//! 3. Resolve paths with [`SystemView::resolve_all`] (passing `--volume
//!    MOUNT=VOLUME_ID` as [`VolumeOverrides`]), map [`VolumeRef::XenDevice`]
//!    through the instance metadata's block-device mapping, then call
//!    [`with_frozen`] from a blocking thread with a [`FreezePlan`] whose
//!    `watchdog_exe` is `std::env::current_exe()` and whose own paths include
//!    the config and log files; inside, `Handle::block_on` the CreateSnapshots
//!    call, tagging with the consistency it is given; re-tag when the report's
//!    consistency is lower.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![warn(missing_debug_implementations)]

pub mod blockdev;
pub mod guard;
pub mod harden;
pub mod hooks;
pub mod ioctl;
mod lock;
pub mod mountinfo;
pub mod orchestrate;
mod registry;
pub mod resolve;
pub mod signals;
pub mod watchdog;

pub use guard::{
    prepare_freeze, FreezeError, FreezeGuard, FreezeOptions, FreezeTarget, ThawReport,
};
pub use hooks::{redact, run_hook, run_hook_with_env, HookError, HookOutput, HookResult};
pub use ioctl::ThawOutcome;
pub use lock::LockHolder;
pub use mountinfo::{parse_mountinfo, MountEntry, MountInfoError};
pub use orchestrate::{
    with_frozen, Consistency, FreezePlan, FreezeReport, FreezeRunCause, FreezeRunError,
    DEFAULT_FREEZE_TIMEOUT, DEFAULT_HOOK_TIMEOUT, HOOK_PHASE_ENV, MIN_FREEZE_TIMEOUT,
};
pub use resolve::{
    volume_set, xen_device_matches, ResolveError, ResolvedMount, SystemView, UnmappableReason,
    VolumeOverrides, VolumeRef,
};
pub use signals::{cleanup_now, continue_after_cleanup, install_signal_thaw, AfterCleanup};
pub use watchdog::{
    parse_watchdog_args, watchdog_command, watchdog_entry, watchdog_main, Watchdog, WatchdogError,
    WatchdogLapse, WatchdogOutcome, WATCHDOG_SUBCOMMAND,
};

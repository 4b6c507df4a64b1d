//! Freezing real ext4 and xfs filesystems on loop devices: writes block while
//! frozen and complete after the thaw; the guard, the watchdog, the signal
//! thread and `with_frozen` thaw on every path out, including SIGKILL of the
//! process that froze (and of its whole process group), a hung process past
//! the freeze timeout, SIGTERM and panics.
//!
//! Needs root, loop devices, `mount`, `mkfs.ext4` (e2fsprogs) and `mkfs.xfs`
//! (xfsprogs); skips with the reason elsewhere. Set
//! `AUTOSNAP_REQUIRE_LOOP_TESTS=1` (CI) to turn a skip into a failure.
//!
//! This binary has its own small runner (`harness = false`) because it also
//! plays the other processes of the scenarios, chosen by its first argument:
//! the watchdog (`__freeze-watchdog`, exactly as the autosnap CLI runs it), a
//! writer, and an "autosnap" that freezes and then hangs. The tests run one at
//! a time; each is bounded by a timeout after which every test filesystem is
//! thawed and the run aborts.

mod support;

use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::slice;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use autosnap_freeze::ioctl::{self, ThawOutcome};
use autosnap_freeze::{
    install_signal_thaw, watchdog_entry, with_frozen, AfterCleanup, Consistency, FreezeError,
    FreezeGuard, FreezeOptions, FreezePlan, ResolveError, SystemView, UnmappableReason,
    VolumeOverrides, VolumeRef, Watchdog, WatchdogLapse, WatchdogOutcome, MIN_FREEZE_TIMEOUT,
};
use support::{assert_writable, kill, read_line, spawn_writer, tool_exists, ChildGuard, LoopFs};

pub const WRITE_MODE: &str = "__write";
const HANG_MODE: &str = "__freeze-then-hang";
pub const WRITTEN: &str = "written by the autosnap-freeze loop-device tests\n";

/// A writer still running after this is taken to be blocked by the freeze.
const BLOCKED_FOR: Duration = Duration::from_millis(500);
/// The filesystem must be writable again within this.
const THAW_LIMIT: Duration = Duration::from_secs(10);
/// A freeze timeout long enough that only another mechanism explains a quick thaw.
const LONG_FREEZE_TIMEOUT_MS: u64 = 60_000;
/// Any single test taking longer than this aborts the run (after thawing).
const TEST_LIMIT: Duration = Duration::from_secs(120);

fn main() {
    let args: Vec<OsString> = std::env::args_os().collect();
    if let Some(code) = watchdog_entry(args.clone()) {
        std::process::exit(code);
    }
    match args.get(1).and_then(|a| a.to_str()) {
        Some(WRITE_MODE) => std::process::exit(write_mode(Path::new(&args[2]))),
        Some(HANG_MODE) => std::process::exit(freeze_then_hang_mode(&args[2..])),
        _ => {}
    }
    std::process::exit(run_tests(&args[1..]));
}

// ---------------------------------------------------------------------------
// The other processes of the scenarios.

/// Creates `path`, writes and fsyncs it: blocks while its filesystem is frozen.
fn write_mode(path: &Path) -> i32 {
    let result = fs::File::create(path).and_then(|mut file| {
        file.write_all(WRITTEN.as_bytes())?;
        file.sync_all()
    });
    match result {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("writer: {}: {error}", path.display());
            1
        }
    }
}

/// An "autosnap" that installs the signal thread, freezes through
/// `with_frozen` (watchdog = this binary) and hangs in the action, as if its
/// CreateSnapshots call never returned. Arguments: freeze timeout in ms, a
/// file the post hook appends to, a pre hook (`-` for none), mount points.
fn freeze_then_hang_mode(args: &[OsString]) -> i32 {
    let timeout_ms: u64 = args[0].to_str().unwrap().parse().unwrap();
    let marker = PathBuf::from(&args[1]);
    let pre_hook = args[2].to_str().unwrap();
    let mounts: Vec<PathBuf> = args[3..].iter().map(PathBuf::from).collect();
    install_signal_thaw(AfterCleanup::Terminate).expect("signal thread");
    let mut plan = FreezePlan::new(mounts, std::env::current_exe().unwrap());
    plan.freeze_timeout = Duration::from_millis(timeout_ms);
    plan.post_hooks = vec![format!("echo post >> '{}'", marker.display())];
    if pre_hook != "-" {
        plan.pre_hooks = vec![pre_hook.to_string()];
    }
    let result = with_frozen(plan, |_| {
        println!("frozen");
        std::io::stdout().flush().unwrap();
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    });
    match result {
        Ok(((), _)) => 0,
        Err(error) => {
            eprintln!("freeze-then-hang: {error}");
            1
        }
    }
}

/// Starts the freeze-then-hang "autosnap" in a process group of its own.
fn spawn_hanging_autosnap(
    timeout_ms: u64,
    marker: &Path,
    pre_hook: &str,
    mounts: &[&Path],
) -> (ChildGuard, std::process::ChildStdout) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg(HANG_MODE)
        .arg(timeout_ms.to_string())
        .arg(marker)
        .arg(pre_hook)
        .args(mounts)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawn the hanging autosnap");
    let stdout = child.stdout.take().unwrap();
    (ChildGuard(child), stdout)
}

/// [`spawn_hanging_autosnap`] without a pre hook, with standard error (its
/// own and its watchdog's) captured.
fn spawn_hanging_autosnap_capturing(
    timeout_ms: u64,
    marker: &Path,
    mounts: &[&Path],
) -> (ChildGuard, std::process::ChildStderr) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg(HANG_MODE)
        .arg(timeout_ms.to_string())
        .arg(marker)
        .arg("-")
        .args(mounts)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawn the hanging autosnap");
    let stderr = child.stderr.take().unwrap();
    (ChildGuard(child), stderr)
}

/// Reads all of a child's standard error on a thread; the text arrives once
/// every holder of the pipe (the child and its watchdog) has closed it.
fn collect(stderr: std::process::ChildStderr) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut { stderr }, &mut text);
        let _ = tx.send(text);
    });
    rx
}

/// The pids of `parent`'s children, from /proc.
fn children_of(parent: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let ppid = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            pids.push(pid);
        }
    }
    pids
}

/// Starts the freeze-then-hang "autosnap" and waits until it has frozen.
fn start_hanging_autosnap(timeout_ms: u64, marker: &Path, mounts: &[&Path]) -> ChildGuard {
    let (mut guard, stdout) = spawn_hanging_autosnap(timeout_ms, marker, "-", mounts);
    let line = read_line(stdout, Duration::from_secs(30));
    if line.as_deref() != Some("frozen\n") {
        let status = guard.wait_for(Duration::from_secs(1));
        panic!("the hanging autosnap did not freeze: said {line:?}, status {status:?}");
    }
    guard
}

// ---------------------------------------------------------------------------
// Tests.

fn exe() -> PathBuf {
    std::env::current_exe().unwrap()
}

fn loop_fs(fs_type: &'static str) -> LoopFs {
    let fs = LoopFs::create(fs_type).unwrap_or_else(|e| panic!("{fs_type} on a loop device: {e}"));
    register_mount(&fs.mount_point);
    fs
}

fn freeze_one(fs: &LoopFs) -> FreezeGuard {
    FreezeGuard::freeze_paths(slice::from_ref(&fs.mount_point), &FreezeOptions::default())
        .unwrap_or_else(|e| panic!("freeze {}: {e}", fs.mount_point.display()))
}

fn write_blocks_while_frozen(fs_type: &'static str) {
    let fs = loop_fs(fs_type);
    assert_writable(&fs.path("before"), THAW_LIMIT);

    let guard = freeze_one(&fs);
    assert_eq!(guard.mount_points(), slice::from_ref(&fs.mount_point));
    let mut writer = spawn_writer(&fs.path("during"));
    assert!(
        writer.still_running_after(BLOCKED_FOR),
        "a write completed while frozen"
    );

    let report = guard.thaw();
    assert_eq!(report.thawed, slice::from_ref(&fs.mount_point));
    assert!(report.held_throughout(), "{report:?}");
    assert!(report.window >= BLOCKED_FOR, "window {:?}", report.window);
    let status = writer
        .wait_for(THAW_LIMIT)
        .expect("the blocked write did not complete after thaw");
    assert!(status.success());
    assert_eq!(fs::read_to_string(fs.path("during")).unwrap(), WRITTEN);
    assert_writable(&fs.path("after"), THAW_LIMIT);
}

fn guard_thaws_on_drop_during_a_panic() {
    let fs = loop_fs("ext4");
    let mut writer = None;
    let previous_hook = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        let _guard = freeze_one(&fs);
        let mut blocked = spawn_writer(&fs.path("during"));
        let still_blocked = blocked.still_running_after(BLOCKED_FOR);
        writer = Some((blocked, still_blocked));
        panic!("boom while frozen");
    }));
    panic::set_hook(previous_hook);
    assert!(result.is_err());
    let (mut writer, was_blocked) = writer.unwrap();
    assert!(was_blocked, "a write completed while frozen");
    let status = writer
        .wait_for(THAW_LIMIT)
        .expect("not thawed by the guard's drop");
    assert!(status.success());
}

fn second_freeze_is_refused_and_thawing_twice_is_not_an_error() {
    let fs = loop_fs("ext4");
    let guard = freeze_one(&fs);
    let err =
        FreezeGuard::freeze_paths(slice::from_ref(&fs.mount_point), &FreezeOptions::default())
            .unwrap_err();
    assert!(matches!(err, FreezeError::AlreadyFrozen { .. }), "{err:?}");
    // The refused second guard must not have thawed the first one's freeze.
    let mut writer = spawn_writer(&fs.path("during"));
    assert!(
        writer.still_running_after(BLOCKED_FOR),
        "the failed freeze thawed"
    );

    // Someone else thaws (an operator's fsfreeze -u, the watchdog).
    let dir = ioctl::open_dir(&fs.mount_point).unwrap();
    assert_eq!(ioctl::thaw(dir.as_fd()).unwrap(), ThawOutcome::Thawed);
    assert_eq!(ioctl::thaw(dir.as_fd()).unwrap(), ThawOutcome::NotFrozen);
    assert!(writer.wait_for(THAW_LIMIT).expect("not thawed").success());

    let report = guard.thaw();
    assert_eq!(report.not_frozen, slice::from_ref(&fs.mount_point));
    assert!(report.failed.is_empty() && report.thawed.is_empty());
    assert!(!report.held_throughout());
}

/// A signal's thaw (the signal thread's `cleanup_now`, which a daemon that
/// carries on after SIGTERM also runs) ends the freeze early: the guard's own
/// thaw must report that filesystem as not frozen, so a snapshot taken around
/// it is labelled crash-consistent, not filesystem-consistent.
fn a_signal_thaw_is_reported_as_not_held_by_the_guard() {
    let fs = loop_fs("ext4");
    let guard = freeze_one(&fs);
    let mut writer = spawn_writer(&fs.path("during"));
    assert!(writer.still_running_after(BLOCKED_FOR), "not frozen");

    autosnap_freeze::cleanup_now();
    assert!(writer.wait_for(THAW_LIMIT).expect("not thawed").success());

    let report = guard.thaw();
    assert_eq!(report.not_frozen, slice::from_ref(&fs.mount_point));
    assert!(report.failed.is_empty() && report.thawed.is_empty());
    assert!(!report.held_throughout());
}

fn filesystem_holding_an_own_path_is_refused_unless_forced() {
    let fs = loop_fs("ext4");
    // A log file that does not exist yet counts by its directory.
    let options = FreezeOptions::default().with_own_path(fs.path("logs/autosnap.log"));
    let err = FreezeGuard::freeze_paths(slice::from_ref(&fs.mount_point), &options).unwrap_err();
    match &err {
        FreezeError::HoldsOwnPath { mount_point, .. } => assert_eq!(mount_point, &fs.mount_point),
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("--force"), "{err}");
    assert_writable(&fs.path("never-frozen"), THAW_LIMIT);
    let guard =
        FreezeGuard::freeze_paths(slice::from_ref(&fs.mount_point), &options.with_force(true))
            .expect("forced freeze");
    assert_eq!(guard.thaw().thawed.len(), 1);
}

fn watchdog_thaws_after_its_timeout() {
    let fs = loop_fs("ext4");
    let watchdog = Watchdog::start(
        &exe(),
        Duration::from_millis(2000),
        slice::from_ref(&fs.mount_point),
    )
    .expect("watchdog ready");
    let guard = freeze_one(&fs);
    let frozen_at = Instant::now();
    let mut writer = spawn_writer(&fs.path("during"));
    let status = writer
        .wait_for(THAW_LIMIT)
        .expect("the watchdog did not thaw");
    assert!(status.success());
    let blocked = frozen_at.elapsed();
    assert!(
        blocked >= BLOCKED_FOR,
        "the write was not blocked ({blocked:?})"
    );
    assert_eq!(watchdog.disarm(), WatchdogOutcome::TimedOut);
    let report = guard.thaw();
    assert_eq!(report.not_frozen, slice::from_ref(&fs.mount_point));
}

fn disarmed_watchdog_exits_quietly() {
    let fs = loop_fs("ext4");
    let watchdog = Watchdog::start(
        &exe(),
        Duration::from_secs(30),
        slice::from_ref(&fs.mount_point),
    )
    .expect("watchdog ready");
    let guard = freeze_one(&fs);
    assert!(guard.thaw().held_throughout());
    let started = Instant::now();
    assert_eq!(watchdog.disarm(), WatchdogOutcome::Disarmed);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_writable(&fs.path("after"), THAW_LIMIT);
}

fn with_frozen_ext4_and_xfs_application_consistent() {
    let ext4 = loop_fs("ext4");
    let xfs = loop_fs("xfs");
    let mut expected_order = vec![ext4.mount_point.clone(), xfs.mount_point.clone()];
    expected_order.sort();
    let mut plan = FreezePlan::new(
        vec![xfs.mount_point.clone(), ext4.mount_point.clone()],
        exe(),
    );
    plan.pre_hooks = vec!["echo quiesced".into()];
    // Writes to a filesystem that was frozen: it can only succeed after the thaw.
    plan.post_hooks = vec![format!(
        "echo done > '{}'",
        ext4.path("post-hook").display()
    )];
    plan.hook_timeout = Duration::from_secs(10);
    plan.freeze_timeout = Duration::from_secs(30);

    let (writers, report) = with_frozen(plan, |consistency| {
        assert_eq!(consistency, Consistency::Application);
        let mut on_ext4 = spawn_writer(&ext4.path("during"));
        let mut on_xfs = spawn_writer(&xfs.path("during"));
        assert!(
            on_ext4.still_running_after(BLOCKED_FOR),
            "ext4 write completed while frozen"
        );
        assert!(
            on_xfs.still_running_after(Duration::ZERO),
            "xfs write completed while frozen"
        );
        (on_ext4, on_xfs)
    })
    .expect("with_frozen");

    assert_eq!(report.consistency, Consistency::Application);
    assert_eq!(report.frozen_mounts, expected_order);
    assert!(report.freeze_window.unwrap() >= BLOCKED_FOR);
    assert_eq!(report.watchdog, Some(WatchdogOutcome::Disarmed));
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert_eq!(report.pre_hooks[0].as_ref().unwrap().stdout, "quiesced\n");
    assert!(report.post_hooks[0].is_ok(), "{:?}", report.post_hooks);
    assert_eq!(
        fs::read_to_string(ext4.path("post-hook")).unwrap(),
        "done\n"
    );
    for mut writer in [writers.0, writers.1] {
        assert!(writer
            .wait_for(THAW_LIMIT)
            .expect("write after thaw")
            .success());
    }
}

fn with_frozen_thaws_when_the_action_fails() {
    let fs = loop_fs("xfs");
    let marker = tempfile::tempdir().unwrap();
    let mut plan = FreezePlan::new(vec![fs.mount_point.clone()], exe());
    plan.post_hooks = vec![format!(
        "echo post > '{}'",
        marker.path().join("post").display()
    )];
    let (result, report) = with_frozen(plan, |consistency| -> Result<(), String> {
        assert_eq!(consistency, Consistency::Filesystem);
        Err("dispatch failure: unreachable endpoint".into())
    })
    .expect("with_frozen itself succeeds");
    assert!(result.is_err());
    assert_eq!(report.watchdog, Some(WatchdogOutcome::Disarmed));
    assert_eq!(
        fs::read_to_string(marker.path().join("post")).unwrap(),
        "post\n"
    );
    assert_writable(&fs.path("after"), THAW_LIMIT);
}

fn with_frozen_reports_crash_when_the_freeze_timeout_passes() {
    let fs = loop_fs("ext4");
    let mut plan = FreezePlan::new(vec![fs.mount_point.clone()], exe());
    plan.freeze_timeout = MIN_FREEZE_TIMEOUT;
    let (planned, report) = with_frozen(plan, |consistency| {
        std::thread::sleep(MIN_FREEZE_TIMEOUT + Duration::from_millis(1200));
        consistency
    })
    .expect("with_frozen");
    assert_eq!(planned, Consistency::Filesystem);
    assert_eq!(report.consistency, Consistency::Crash);
    assert_eq!(report.watchdog, Some(WatchdogOutcome::TimedOut));
    assert!(
        report.warnings[0].contains("crash-consistent"),
        "{:?}",
        report.warnings
    );
    assert_writable(&fs.path("after"), THAW_LIMIT);
}

fn sigkill_of_autosnap_and_its_group_mid_freeze_is_thawed_by_the_watchdog() {
    let fs = loop_fs("ext4");
    let marker_dir = tempfile::tempdir().unwrap();
    let marker = marker_dir.path().join("post");
    let mut autosnap = start_hanging_autosnap(LONG_FREEZE_TIMEOUT_MS, &marker, &[&fs.mount_point]);
    let mut writer = spawn_writer(&fs.path("during"));
    assert!(
        writer.still_running_after(BLOCKED_FOR),
        "a write completed while frozen"
    );

    let killed_at = Instant::now();
    let group = i32::try_from(autosnap.id()).unwrap();
    kill(-group, libc::SIGKILL);
    let status = writer
        .wait_for(THAW_LIMIT)
        .expect("not thawed after SIGKILL of autosnap's process group");
    assert!(status.success());
    // Far sooner than the freeze timeout: the watchdog saw its pipe close.
    assert!(killed_at.elapsed() < Duration::from_secs(10));
    let status = autosnap.wait_for(THAW_LIMIT).expect("autosnap reaped");
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    // SIGKILL leaves no chance for post hooks: documented, and checked here.
    assert!(!marker.exists());
}

fn hung_autosnap_is_thawed_when_the_freeze_timeout_passes() {
    let fs = loop_fs("xfs");
    let marker_dir = tempfile::tempdir().unwrap();
    let marker = marker_dir.path().join("post");
    let mut autosnap = start_hanging_autosnap(3000, &marker, &[&fs.mount_point]);
    let frozen_at = Instant::now();
    let mut writer = spawn_writer(&fs.path("during"));
    let status = writer
        .wait_for(THAW_LIMIT)
        .expect("the watchdog did not thaw a hung autosnap");
    assert!(status.success());
    assert!(
        frozen_at.elapsed() >= BLOCKED_FOR,
        "{:?}",
        frozen_at.elapsed()
    );
    assert!(
        autosnap.still_running_after(Duration::ZERO),
        "autosnap should still hang"
    );
}

fn sigterm_mid_freeze_thaws_and_runs_post_hooks() {
    let fs = loop_fs("ext4");
    let marker_dir = tempfile::tempdir().unwrap();
    let marker = marker_dir.path().join("post");
    let mut autosnap = start_hanging_autosnap(LONG_FREEZE_TIMEOUT_MS, &marker, &[&fs.mount_point]);
    let mut writer = spawn_writer(&fs.path("during"));
    assert!(
        writer.still_running_after(BLOCKED_FOR),
        "a write completed while frozen"
    );

    let signalled_at = Instant::now();
    kill(i32::try_from(autosnap.id()).unwrap(), libc::SIGTERM);
    let status = writer
        .wait_for(THAW_LIMIT)
        .expect("not thawed after SIGTERM");
    assert!(status.success());
    assert!(signalled_at.elapsed() < Duration::from_secs(10));
    let status = autosnap
        .wait_for(THAW_LIMIT)
        .expect("autosnap did not exit on SIGTERM");
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status}");
    assert_eq!(fs::read_to_string(&marker).unwrap(), "post\n");
}

fn loop_mount_resolves_through_the_real_proc_and_sys() {
    let fs = loop_fs("ext4");
    assert_writable(&fs.path("file"), THAW_LIMIT);
    let view = SystemView::default();
    let err = view
        .resolve(&fs.path("file"), &VolumeOverrides::new())
        .unwrap_err();
    match &err {
        ResolveError::Unmappable {
            mount_point,
            reason: UnmappableReason::LoopDevice { backing_file },
            ..
        } => {
            assert_eq!(mount_point, &fs.mount_point);
            assert!(
                backing_file
                    .as_deref()
                    .is_some_and(|f| f.ends_with("disk.img")),
                "{backing_file:?}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    let mut overrides = VolumeOverrides::new();
    overrides.insert(&fs.mount_point, "vol-0123456789abcdef0");
    let resolved = view.resolve(&fs.path("file"), &overrides).unwrap();
    assert_eq!(resolved.mount_point, fs.mount_point);
    assert_eq!(resolved.fs_type, "ext4");
    assert!(
        resolved.device.starts_with("/dev/loop"),
        "{}",
        resolved.device
    );
    assert_eq!(
        resolved.volumes,
        [VolumeRef::VolumeId("vol-0123456789abcdef0".into())]
    );
    assert!(resolved.from_override && !resolved.is_root);
    resolved.ensure_freezable().unwrap();
}

fn sigterm_during_a_pre_hook_stops_it_and_runs_post_hooks() {
    let fs = loop_fs("ext4");
    let marker_dir = tempfile::tempdir().unwrap();
    let marker = marker_dir.path().join("post");
    let hook_pid = marker_dir.path().join("pre.pid");
    let pre_hook = format!("echo $$ > '{}'; sleep 60", hook_pid.display());
    let (mut autosnap, _stdout) = spawn_hanging_autosnap(
        LONG_FREEZE_TIMEOUT_MS,
        &marker,
        &pre_hook,
        &[&fs.mount_point],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let pid: i32 = loop {
        if let Some(pid) = fs::read_to_string(&hook_pid)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            break pid;
        }
        assert!(Instant::now() < deadline, "the pre hook never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    kill(i32::try_from(autosnap.id()).unwrap(), libc::SIGTERM);
    let status = autosnap
        .wait_for(THAW_LIMIT)
        .expect("autosnap did not exit on SIGTERM");
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status}");
    assert_eq!(fs::read_to_string(&marker).unwrap(), "post\n");
    // The pre hook's shell was stopped with its process group.
    let gone = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < gone {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the pre hook survived"
    );
    // Nothing was ever frozen.
    assert_writable(&fs.path("after"), THAW_LIMIT);
}

fn slow_first_freeze_past_the_deadline_leaves_later_filesystems_unfrozen() {
    // The first filesystem's image lives on `host`: while `host` is frozen,
    // FIFREEZE of the first one waits (it must write its data through the
    // loop device into the frozen host) — a FIFREEZE as slow as we like.
    let host = loop_fs("ext4");
    let order = tempfile::tempdir().unwrap();
    let slow = LoopFs::create_with(
        "ext4",
        Some(&host.mount_point),
        Some(&order.path().join("1-slow")),
    )
    .unwrap_or_else(|e| panic!("ext4 on a loop device on a loop device: {e}"));
    register_mount(&slow.mount_point);
    let later = LoopFs::create_with("ext4", None, Some(&order.path().join("2-later")))
        .unwrap_or_else(|e| panic!("ext4 on a loop device: {e}"));
    register_mount(&later.mount_point);

    let host_frozen = freeze_one(&host);
    // Unwritten data on the slow one, which its FIFREEZE must flush.
    fs::write(slow.path("dirty"), vec![7u8; 4 << 20]).unwrap();
    let marker_dir = tempfile::tempdir().unwrap();
    let (mut autosnap, stderr) = spawn_hanging_autosnap_capturing(
        MIN_FREEZE_TIMEOUT.as_millis() as u64,
        &marker_dir.path().join("post"),
        &[&slow.mount_point, &later.mount_point],
    );
    let stderr = collect(stderr);
    // Once its watchdog exists, autosnap's deadline is at most the timeout away.
    let deadline = Instant::now() + Duration::from_secs(30);
    while children_of(autosnap.id()).is_empty() {
        assert!(
            autosnap.still_running_after(Duration::from_millis(10)),
            "autosnap exited before starting its watchdog"
        );
        assert!(Instant::now() < deadline, "no watchdog started");
    }
    // Let the deadline pass with the first FIFREEZE still stuck, then let it finish.
    std::thread::sleep(MIN_FREEZE_TIMEOUT + Duration::from_millis(500));
    drop(host_frozen);

    let status = autosnap
        .wait_for(THAW_LIMIT)
        .expect("autosnap went on (froze the later filesystem?) instead of failing");
    assert_eq!(status.code(), Some(1), "{status}");
    let stderr = stderr.recv_timeout(THAW_LIMIT).expect("stderr closed");
    let slow_name = slow.mount_point.display().to_string();
    let later_name = later.mount_point.display().to_string();
    assert!(
        stderr.contains(&format!(
            "stopped freezing at {slow_name} (its FIFREEZE returned too late)"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("freeze timeout"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "Thawed {slow_name} and did not freeze {later_name}"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("no snapshot was taken"), "{stderr}");
    assert_writable(&slow.path("after"), THAW_LIMIT);
    assert_writable(&later.path("after"), THAW_LIMIT);
    // Post hooks still ran (the failure came after the pre hooks).
    assert_eq!(
        fs::read_to_string(marker_dir.path().join("post")).unwrap(),
        "post\n"
    );
}

fn watchdog_keeps_watching_after_it_fires() {
    let fs = loop_fs("ext4");
    let mut watchdog =
        Watchdog::start(&exe(), MIN_FREEZE_TIMEOUT, slice::from_ref(&fs.mount_point))
            .expect("watchdog ready");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match watchdog.check_armed() {
            Ok(()) => {}
            Err(WatchdogLapse::Fired) => break,
            Err(other) => panic!("the watchdog ended instead of firing: {other}"),
        }
        assert!(Instant::now() < deadline, "the watchdog never fired");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A FIFREEZE that lands after the watchdog fired (the parent's freeze
    // raced the timeout): nothing of ours will thaw it.
    let dir = ioctl::open_dir(&fs.mount_point).unwrap();
    ioctl::freeze(dir.as_fd()).expect("freeze after the watchdog fired");
    let mut writer = spawn_writer(&fs.path("during"));
    assert!(
        writer.still_running_after(BLOCKED_FOR),
        "a write completed while frozen"
    );
    // The parent dies (its end of the channel closes): the watchdog, still
    // watching after firing, thaws again.
    let pid = watchdog.pid();
    drop(watchdog);
    let status = writer
        .wait_for(THAW_LIMIT)
        .expect("still frozen after the parent of a fired watchdog died");
    assert!(status.success());
    assert!(
        !Path::new(&format!("/proc/{pid}/cmdline")).exists()
            || fs::read(format!("/proc/{pid}/cmdline")).unwrap().is_empty(),
        "the watchdog lingers after thawing"
    );
}

fn two_processes_cannot_freeze_one_filesystem_at_once() {
    let fs = loop_fs("ext4");
    let marker_dir = tempfile::tempdir().unwrap();
    let mut first = start_hanging_autosnap(
        LONG_FREEZE_TIMEOUT_MS,
        &marker_dir.path().join("first"),
        &[&fs.mount_point],
    );
    let (mut second, stderr) = spawn_hanging_autosnap_capturing(
        LONG_FREEZE_TIMEOUT_MS,
        &marker_dir.path().join("second"),
        &[&fs.mount_point],
    );
    let stderr = collect(stderr);
    let status = second
        .wait_for(THAW_LIMIT)
        .expect("the second autosnap did not give up");
    assert_eq!(status.code(), Some(1), "{status}");
    let stderr = stderr.recv_timeout(THAW_LIMIT).expect("stderr closed");
    assert!(
        stderr.contains(&format!(
            "{} is already being frozen by autosnap pid {}",
            fs.mount_point.display(),
            first.id()
        )),
        "the error names the holder: {stderr}"
    );
    // The first freeze still holds: the second touched nothing.
    let mut writer = spawn_writer(&fs.path("during"));
    assert!(
        writer.still_running_after(BLOCKED_FOR),
        "the second autosnap thawed the first one's freeze"
    );
    kill(i32::try_from(first.id()).unwrap(), libc::SIGTERM);
    assert!(writer.wait_for(THAW_LIMIT).expect("thawed").success());
    first.wait_for(THAW_LIMIT).expect("first autosnap exits");
    // Once the first is gone, the filesystem can be frozen again.
    let (mut third, _stdout) = spawn_hanging_autosnap(
        LONG_FREEZE_TIMEOUT_MS,
        &marker_dir.path().join("third"),
        "-",
        &[&fs.mount_point],
    );
    let line = read_line(_stdout, Duration::from_secs(30));
    assert_eq!(line.as_deref(), Some("frozen\n"));
    kill(i32::try_from(third.id()).unwrap(), libc::SIGTERM);
    third.wait_for(THAW_LIMIT).expect("third autosnap exits");
    assert_writable(&fs.path("after"), THAW_LIMIT);
}

// ---------------------------------------------------------------------------
// The runner.

struct Test {
    name: &'static str,
    needs: &'static [&'static str],
    run: fn(),
}

const TESTS: &[Test] = &[
    Test {
        name: "loop_mount_resolves_through_the_real_proc_and_sys",
        needs: &[],
        run: loop_mount_resolves_through_the_real_proc_and_sys,
    },
    Test {
        name: "ext4_write_blocks_while_frozen_and_completes_after_thaw",
        needs: &[],
        run: || write_blocks_while_frozen("ext4"),
    },
    Test {
        name: "xfs_write_blocks_while_frozen_and_completes_after_thaw",
        needs: &["mkfs.xfs"],
        run: || write_blocks_while_frozen("xfs"),
    },
    Test {
        name: "guard_thaws_on_drop_during_a_panic",
        needs: &[],
        run: guard_thaws_on_drop_during_a_panic,
    },
    Test {
        name: "second_freeze_is_refused_and_thawing_twice_is_not_an_error",
        needs: &[],
        run: second_freeze_is_refused_and_thawing_twice_is_not_an_error,
    },
    Test {
        name: "filesystem_holding_an_own_path_is_refused_unless_forced",
        needs: &[],
        run: filesystem_holding_an_own_path_is_refused_unless_forced,
    },
    Test {
        name: "watchdog_thaws_after_its_timeout",
        needs: &[],
        run: watchdog_thaws_after_its_timeout,
    },
    Test {
        name: "disarmed_watchdog_exits_quietly",
        needs: &[],
        run: disarmed_watchdog_exits_quietly,
    },
    Test {
        name: "with_frozen_ext4_and_xfs_application_consistent",
        needs: &["mkfs.xfs"],
        run: with_frozen_ext4_and_xfs_application_consistent,
    },
    Test {
        name: "with_frozen_thaws_when_the_action_fails",
        needs: &["mkfs.xfs"],
        run: with_frozen_thaws_when_the_action_fails,
    },
    Test {
        name: "with_frozen_reports_crash_when_the_freeze_timeout_passes",
        needs: &[],
        run: with_frozen_reports_crash_when_the_freeze_timeout_passes,
    },
    Test {
        name: "sigkill_of_autosnap_and_its_group_mid_freeze_is_thawed_by_the_watchdog",
        needs: &[],
        run: sigkill_of_autosnap_and_its_group_mid_freeze_is_thawed_by_the_watchdog,
    },
    Test {
        name: "hung_autosnap_is_thawed_when_the_freeze_timeout_passes",
        needs: &["mkfs.xfs"],
        run: hung_autosnap_is_thawed_when_the_freeze_timeout_passes,
    },
    Test {
        name: "sigterm_mid_freeze_thaws_and_runs_post_hooks",
        needs: &[],
        run: sigterm_mid_freeze_thaws_and_runs_post_hooks,
    },
    Test {
        name: "sigterm_during_a_pre_hook_stops_it_and_runs_post_hooks",
        needs: &[],
        run: sigterm_during_a_pre_hook_stops_it_and_runs_post_hooks,
    },
    Test {
        name: "slow_first_freeze_past_the_deadline_leaves_later_filesystems_unfrozen",
        needs: &[],
        run: slow_first_freeze_past_the_deadline_leaves_later_filesystems_unfrozen,
    },
    Test {
        name: "watchdog_keeps_watching_after_it_fires",
        needs: &[],
        run: watchdog_keeps_watching_after_it_fires,
    },
    Test {
        name: "a_signal_thaw_is_reported_as_not_held_by_the_guard",
        needs: &[],
        run: a_signal_thaw_is_reported_as_not_held_by_the_guard,
    },
    Test {
        name: "two_processes_cannot_freeze_one_filesystem_at_once",
        needs: &[],
        run: two_processes_cannot_freeze_one_filesystem_at_once,
    },
];

/// Mount points of the test filesystems, thawed if a test overruns.
static MOUNTS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

fn register_mount(mount_point: &Path) {
    MOUNTS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(mount_point.to_path_buf());
}

/// Runs the tests like libtest does (filters, `--list`, `--exact`, summary line).
fn run_tests(args: &[OsString]) -> i32 {
    let args: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let exact = args.iter().any(|a| a == "--exact");
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let selected: Vec<&Test> = TESTS
        .iter()
        .filter(|t| {
            filters.is_empty()
                || filters.iter().any(|f| {
                    if exact {
                        t.name == f.as_str()
                    } else {
                        t.name.contains(f.as_str())
                    }
                })
        })
        .collect();
    if args.iter().any(|a| a == "--list") {
        for test in &selected {
            println!("{}: test", test.name);
        }
        return 0;
    }
    let require = std::env::var("AUTOSNAP_REQUIRE_LOOP_TESTS").is_ok_and(|v| v == "1");
    let started = Instant::now();
    println!("\nrunning {} tests", selected.len());
    let environment_skip = support::skip_reason();
    let (mut passed, mut failed, mut ignored) = (0, 0, 0);
    let mut failures = Vec::new();
    for test in &selected {
        let missing = test.needs.iter().find(|tool| !tool_exists(tool));
        let skip = environment_skip
            .clone()
            .or_else(|| missing.map(|tool| format!("{tool} not found (Debian: xfsprogs)")));
        if let Some(reason) = skip {
            if require {
                println!(
                    "test {} ... FAILED (AUTOSNAP_REQUIRE_LOOP_TESTS=1 but {reason})",
                    test.name
                );
                failed += 1;
                failures.push(test.name);
            } else {
                println!("test {} ... ignored, {reason}", test.name);
                ignored += 1;
            }
            continue;
        }
        print!("test {} ... ", test.name);
        let _ = std::io::stdout().flush();
        let test_started = Instant::now();
        if run_bounded(test) {
            println!("ok ({:.1}s)", test_started.elapsed().as_secs_f64());
            passed += 1;
        } else {
            println!("FAILED");
            failed += 1;
            failures.push(test.name);
        }
        MOUNTS.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
    if !failures.is_empty() {
        println!("\nfailures:");
        for name in &failures {
            println!("    {name}");
        }
    }
    println!(
        "\ntest result: {}. {passed} passed; {failed} failed; {ignored} ignored; 0 measured; {} filtered out; finished in {:.2}s\n",
        if failed == 0 { "ok" } else { "FAILED" },
        TESTS.len() - selected.len(),
        started.elapsed().as_secs_f64()
    );
    i32::from(failed > 0) * 101
}

/// Runs one test, catching its panic; aborts the whole run (after thawing
/// every test filesystem) if it takes longer than [`TEST_LIMIT`].
fn run_bounded(test: &Test) -> bool {
    let (done, finished) = mpsc::channel::<()>();
    let name = test.name;
    std::thread::spawn(move || {
        if finished.recv_timeout(TEST_LIMIT).is_err() {
            eprintln!(
                "\n{name} ran over {TEST_LIMIT:?}: thawing the test filesystems and aborting"
            );
            for mount in MOUNTS.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                if let Ok(dir) = ioctl::open_dir(mount) {
                    let _ = ioctl::thaw(dir.as_fd());
                }
            }
            std::process::abort();
        }
    });
    let result = panic::catch_unwind(test.run);
    let _ = done.send(());
    result.is_ok()
}

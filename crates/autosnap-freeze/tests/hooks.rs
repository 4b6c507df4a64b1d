//! Hooks and the parts of `with_frozen` that need no root: hook order,
//! fail-closed and fallback behaviour, post hooks after a panic, refusals
//! before anything runs. (Freezing itself is tested in `tests/loopdev`.)

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use autosnap_freeze::hooks::HOOK_OUTPUT_LIMIT;
use autosnap_freeze::{
    run_hook, run_hook_with_env, with_frozen, Consistency, FreezeError, FreezePlan, FreezeRunCause,
    HookError, MIN_FREEZE_TIMEOUT,
};

const TIMEOUT: Duration = Duration::from_secs(20);

fn process_alive(pid: i32) -> bool {
    // A zombie still answers kill(0); check /proc for its state instead.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.split_whitespace().nth(2).is_none_or(|s| s != "Z"),
        Err(_) => false,
    }
}

fn read_pid(path: &Path) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(text) = fs::read_to_string(path) {
            if let Ok(pid) = text.trim().parse() {
                return pid;
            }
        }
        assert!(Instant::now() < deadline, "no pid in {}", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn success_captures_stdout_and_stderr() {
    let output = run_hook("echo to-stdout; echo to-stderr >&2", TIMEOUT).unwrap();
    assert_eq!(output.stdout, "to-stdout\n");
    assert_eq!(output.stderr, "to-stderr\n");
    assert!(output.status.unwrap().success());
    assert!(!output.truncated);
}

#[test]
fn exit_status_is_a_typed_error_with_the_output() {
    let err = run_hook(
        "echo partial; echo 'lock wait timeout' >&2; exit 3",
        TIMEOUT,
    )
    .unwrap_err();
    match &err {
        HookError::Failed { code, output } => {
            assert_eq!(*code, 3);
            assert_eq!(output.stdout, "partial\n");
        }
        other => panic!("unexpected {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains("exit status 3"), "{message}");
    assert!(message.contains("lock wait timeout"), "{message}");
}

#[test]
fn death_by_signal_is_reported() {
    let err = run_hook("kill -9 $$", TIMEOUT).unwrap_err();
    assert!(
        matches!(err, HookError::Killed { signal: 9, .. }),
        "{err:?}"
    );
}

#[test]
fn timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("background.pid");
    let command = format!(
        "sleep 60 & echo $! > {}; echo waiting; wait",
        pid_file.display()
    );
    let started = Instant::now();
    let err = run_hook(&command, Duration::from_millis(300)).unwrap_err();
    let elapsed = started.elapsed();
    match &err {
        HookError::TimedOut { timeout, output } => {
            assert_eq!(*timeout, Duration::from_millis(300));
            assert_eq!(output.stdout, "waiting\n");
            assert_eq!(output.status, None);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    let background = read_pid(&pid_file);
    let deadline = Instant::now() + Duration::from_secs(5);
    while process_alive(background) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !process_alive(background),
        "the hook's background sleep survived"
    );
}

#[test]
fn a_background_process_holding_the_output_does_not_block() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("holder.pid");
    let command = format!("sleep 30 & echo $! > {}; echo started", pid_file.display());
    let started = Instant::now();
    let output = run_hook(&command, TIMEOUT).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(output.stdout, "started\n");
    let holder = read_pid(&pid_file);
    assert!(
        process_alive(holder),
        "a successful hook's background process is left running"
    );
    let _ = std::process::Command::new("kill")
        .arg(holder.to_string())
        .status();
}

#[test]
fn long_output_is_truncated() {
    let output = run_hook("head -c 200000 /dev/zero | tr '\\0' a", TIMEOUT).unwrap();
    assert!(output.truncated);
    assert_eq!(output.stdout.len(), HOOK_OUTPUT_LIMIT);
}

#[test]
fn environment_reaches_the_hook() {
    let output = run_hook_with_env(
        "echo $AUTOSNAP_TEST_VALUE",
        TIMEOUT,
        &[("AUTOSNAP_TEST_VALUE", "x y")],
    )
    .unwrap();
    assert_eq!(output.stdout, "x y\n");
}

/// A journal of hook runs, as lines in a file.
struct Journal {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Journal {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        Self { _dir: dir, path }
    }

    fn hook(&self, word: &str) -> String {
        format!(
            "echo \"{word} $AUTOSNAP_HOOK_PHASE\" >> {}",
            self.path.display()
        )
    }

    fn failing_hook(&self, word: &str) -> String {
        format!("{}; echo refused >&2; exit 7", self.hook(word))
    }

    fn lines(&self) -> Vec<String> {
        fs::read_to_string(&self.path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// A plan that freezes nothing (no root needed); the watchdog is never started.
fn plan(pre: &[String], post: &[String]) -> FreezePlan {
    let mut plan = FreezePlan::new(Vec::new(), "/nonexistent/autosnap");
    plan.pre_hooks = pre.to_vec();
    plan.post_hooks = post.to_vec();
    plan.hook_timeout = TIMEOUT;
    plan
}

#[test]
fn hooks_run_in_order_around_the_action() {
    let journal = Journal::new();
    let plan = plan(
        &[journal.hook("pre1"), journal.hook("pre2")],
        &[journal.hook("post1"), journal.hook("post2")],
    );
    let (value, report) = with_frozen(plan, |consistency| {
        fs::write(journal.path.with_extension("action"), consistency.as_str()).unwrap();
        42
    })
    .unwrap();
    assert_eq!(value, 42);
    assert_eq!(
        journal.lines(),
        ["pre1 pre", "pre2 pre", "post1 post", "post2 post"]
    );
    // Nothing frozen: crash-consistent, even with hooks.
    assert_eq!(report.consistency, Consistency::Crash);
    assert_eq!(
        fs::read_to_string(journal.path.with_extension("action")).unwrap(),
        "crash"
    );
    assert_eq!(report.pre_hooks.len(), 2);
    assert_eq!(report.post_hooks.len(), 2);
    assert!(report.freeze_window.is_none());
    assert!(report.watchdog.is_none());
}

#[test]
fn a_failing_pre_hook_fails_closed_and_post_hooks_still_run() {
    let journal = Journal::new();
    let plan = plan(
        &[journal.failing_hook("pre1"), journal.hook("pre2")],
        &[journal.failing_hook("post1"), journal.hook("post2")],
    );
    let mut called = false;
    let err = with_frozen(plan, |_| called = true).unwrap_err();
    assert!(!called, "the action ran after a failed pre hook");
    assert!(matches!(
        *err.cause,
        FreezeRunCause::PreHook(HookError::Failed { code: 7, .. })
    ));
    assert!(err.to_string().contains("no snapshot was taken"), "{err}");
    // The second pre hook did not run; every post hook did, even after one failed.
    assert_eq!(journal.lines(), ["pre1 pre", "post1 post", "post2 post"]);
    assert_eq!(err.post_hooks.len(), 2);
    assert!(err.post_hooks[0].is_err() && err.post_hooks[1].is_ok());
}

#[test]
fn fallback_takes_a_crash_consistent_snapshot() {
    let journal = Journal::new();
    let mut plan = plan(&[journal.failing_hook("pre1")], &[journal.hook("post1")]);
    plan.fallback_to_crash_consistent = true;
    let (planned, report) = with_frozen(plan, |consistency| consistency).unwrap();
    assert_eq!(planned, Consistency::Crash);
    assert_eq!(report.consistency, Consistency::Crash);
    assert_eq!(report.pre_hooks.len(), 1);
    assert!(report.pre_hooks[0].is_err());
    assert!(
        report.warnings[0].contains("crash-consistent"),
        "{:?}",
        report.warnings
    );
    assert_eq!(journal.lines(), ["pre1 pre", "post1 post"]);
}

#[test]
fn post_hooks_run_when_the_action_panics() {
    let journal = Journal::new();
    let plan = plan(&[journal.hook("pre1")], &[journal.hook("post1")]);
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        with_frozen(plan, |_| -> () { panic!("CreateSnapshots exploded") })
    }));
    let payload = caught.unwrap_err();
    assert_eq!(
        payload.downcast_ref::<&str>(),
        Some(&"CreateSnapshots exploded")
    );
    assert_eq!(journal.lines(), ["pre1 pre", "post1 post"]);
}

#[test]
fn refusals_happen_before_any_hook() {
    let journal = Journal::new();
    for (mount, expect_root) in [("/", true), ("/proc", false)] {
        let mut plan = plan(&[journal.hook("pre")], &[journal.hook("post")]);
        plan.mounts = vec![PathBuf::from(mount)];
        let err = with_frozen(plan, |_| ()).unwrap_err();
        match (&*err.cause, expect_root) {
            (FreezeRunCause::Refused(FreezeError::RootFilesystem { .. }), true) => {}
            (FreezeRunCause::Refused(FreezeError::Unsupported { fs_type, .. }), false) => {
                assert_eq!(fs_type, "proc")
            }
            (other, _) => panic!("{mount}: unexpected {other:?}"),
        }
        assert!(err.post_hooks.is_empty());
    }
    assert!(journal.lines().is_empty(), "{:?}", journal.lines());
}

#[test]
fn a_freeze_timeout_below_the_minimum_is_refused_before_any_hook() {
    let journal = Journal::new();
    let mut plan = plan(&[journal.hook("pre")], &[journal.hook("post")]);
    plan.mounts = vec![PathBuf::from("/")];
    plan.freeze_timeout = Duration::ZERO;
    let err = with_frozen(plan, |_| ()).unwrap_err();
    match &*err.cause {
        FreezeRunCause::Refused(FreezeError::FreezeTimeoutTooShort { timeout, minimum }) => {
            assert_eq!(*timeout, Duration::ZERO);
            assert_eq!(*minimum, MIN_FREEZE_TIMEOUT);
        }
        other => panic!("unexpected {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains("below the minimum of 1s"), "{message}");
    assert!(journal.lines().is_empty(), "no hook ran");
}

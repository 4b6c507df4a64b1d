//! Destructive commands run from a terminal show their plan and ask before
//! deleting: only `y`/`yes` goes ahead; anything else, end of input or
//! Ctrl-C deletes nothing, says so and exits 1; `--yes` skips the question.
//! Without a terminal (scripts, cron: every other test) nothing is asked.
//!
//! autosnap runs with stdin and stderr on a pseudo-terminal and stdout on a
//! pipe, as in `autosnap … -o json > out.json` typed at a shell.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::support::{TestBed, REGION};
use autosnap_repo::{
    ArchiveSource, Credentials, ImportOptions, LocalBackend, Repository, SourceKind,
};
use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};

/// How long a test waits for the question (or the end) before failing.
const PATIENCE: Duration = Duration::from_secs(60);
const QUESTION: &str = "[y/N]";

/// autosnap with stdin and stderr on a terminal; what the terminal shows is
/// read as it comes.
struct OnTerminal {
    child: Child,
    master: File,
    shown: mpsc::Receiver<Vec<u8>>,
    screen: String,
}

struct Finished {
    code: Option<i32>,
    stdout: String,
    /// Everything the terminal showed: the plan, the question, the echoed
    /// answer and what followed.
    screen: String,
}

impl OnTerminal {
    fn start(mut cmd: Command) -> OnTerminal {
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("open a pty");
        grantpt(&master).expect("grantpt");
        unlockpt(&master).expect("unlockpt");
        let name = ptsname(&master, Vec::new()).expect("ptsname");
        let terminal = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(name.to_str().expect("pty name"))
            .expect("open the terminal side");
        cmd.stdin(terminal.try_clone().expect("dup"))
            .stderr(terminal)
            .stdout(Stdio::piped());
        let child = cmd.spawn().expect("start autosnap");
        // The command holds our copies of the terminal side: dropping it lets
        // reads of the master end once autosnap has exited.
        drop(cmd);
        let master = File::from(master);
        let mut reader = master.try_clone().expect("dup master");
        let (tx, shown) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Linux answers EIO once no process holds the terminal side.
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                if tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        OnTerminal {
            child,
            master,
            shown,
            screen: String::new(),
        }
    }

    /// Reads the terminal until it shows `text`; panics with what it showed
    /// if autosnap ends first or PATIENCE runs out.
    fn until_shown(&mut self, text: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.screen.contains(text) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.shown.recv_timeout(left) {
                Ok(bytes) => self.screen.push_str(&String::from_utf8_lossy(&bytes)),
                Err(e) => panic!(
                    "the terminal never showed {text:?} ({e}); it showed:\n{}",
                    self.screen
                ),
            }
        }
    }

    /// Types on the terminal.
    fn type_in(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).expect("type");
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{name} failed");
    }

    fn finish(mut self) -> Finished {
        let mut stdout = String::new();
        self.child
            .stdout
            .take()
            .expect("stdout")
            .read_to_string(&mut stdout)
            .expect("read stdout");
        let status = self.child.wait().expect("wait for autosnap");
        let deadline = Instant::now() + PATIENCE;
        // The reader ends (the channel closes) when the terminal side is closed.
        while let Ok(bytes) = self
            .shown
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.screen.push_str(&String::from_utf8_lossy(&bytes));
        }
        Finished {
            code: status.code(),
            stdout,
            screen: self.screen.replace("\r\n", "\n"),
        }
    }
}

/// `n` managed snapshots of a new volume (made through autosnap, so it owns them).
fn managed_snapshots(bed: &TestBed, n: usize) -> Vec<String> {
    let vol = bed.volume(1, &[]);
    (0..n)
        .map(|_| {
            bed.json(&["snapshot", "create", &vol])[0]["snapshot_id"]
                .as_str()
                .expect("snapshot id")
                .to_string()
        })
        .collect()
}

fn autosnap(bed: &TestBed, args: &[&str]) -> Command {
    let mut cmd = bed.std_cmd();
    cmd.args(args);
    cmd
}

// ---- snapshot delete -------------------------------------------------------------------------

#[test]
fn snapshot_delete_at_a_terminal_shows_the_plan_and_no_deletes_nothing() {
    let bed = TestBed::start();
    let snaps = managed_snapshots(&bed, 2);
    let mut run = OnTerminal::start(autosnap(
        &bed,
        &["snapshot", "delete", &snaps[0], &snaps[1]],
    ));
    run.until_shown("Delete 2 snapshots? [y/N] ");
    // The dry run's plan is on the screen before the question.
    for id in &snaps {
        assert!(run.screen.contains(id), "plan names {id}:\n{}", run.screen);
    }
    assert!(run.screen.contains("would delete"), "{}", run.screen);
    run.type_in("n\n");
    let done = run.finish();
    assert_eq!(done.code, Some(1), "{}", done.screen);
    assert!(done.screen.contains("nothing deleted"), "{}", done.screen);
    assert!(done.stdout.is_empty(), "no result table: {}", done.stdout);
    for id in &snaps {
        assert!(bed.snapshot_exists(REGION, id), "{id} must still exist");
    }
}

#[test]
fn snapshot_delete_at_a_terminal_yes_deletes() {
    let bed = TestBed::start();
    let snaps = managed_snapshots(&bed, 1);
    let mut run = OnTerminal::start(autosnap(&bed, &["snapshot", "delete", &snaps[0]]));
    run.until_shown("Delete 1 snapshot? [y/N] ");
    run.type_in("yes\n");
    let done = run.finish();
    assert_eq!(done.code, Some(0), "{}", done.screen);
    assert!(done.stdout.contains("deleted"), "{}", done.stdout);
    assert!(!done.screen.contains("nothing deleted"), "{}", done.screen);
    assert!(!bed.snapshot_exists(REGION, &snaps[0]));
}

#[test]
fn end_of_input_or_ctrl_c_at_the_question_deletes_nothing() {
    let bed = TestBed::start();
    let snaps = managed_snapshots(&bed, 1);

    // Ctrl-D: the end of input is not a yes.
    let mut run = OnTerminal::start(autosnap(&bed, &["snapshot", "delete", &snaps[0]]));
    run.until_shown(QUESTION);
    run.type_in("\x04");
    let done = run.finish();
    assert_eq!(done.code, Some(1), "{}", done.screen);
    assert!(
        done.screen.contains("nothing deleted: no answer"),
        "{}",
        done.screen
    );
    assert!(bed.snapshot_exists(REGION, &snaps[0]));

    // Ctrl-C (SIGINT, as the terminal sends it to the foreground process).
    let mut run = OnTerminal::start(autosnap(&bed, &["snapshot", "delete", &snaps[0]]));
    run.until_shown(QUESTION);
    run.signal("INT");
    let done = run.finish();
    assert_eq!(done.code, Some(1), "{}", done.screen);
    assert!(
        done.screen.contains("nothing deleted: interrupted"),
        "{}",
        done.screen
    );
    assert!(bed.snapshot_exists(REGION, &snaps[0]));
}

#[test]
fn yes_flag_at_a_terminal_does_not_ask() {
    let bed = TestBed::start();
    let snaps = managed_snapshots(&bed, 2);
    let run = OnTerminal::start(autosnap(&bed, &["snapshot", "delete", "--yes", &snaps[0]]));
    let done = run.finish();
    assert_eq!(done.code, Some(0), "{}", done.screen);
    assert!(!done.screen.contains(QUESTION), "{}", done.screen);
    assert!(!bed.snapshot_exists(REGION, &snaps[0]));

    let run = OnTerminal::start(autosnap(&bed, &["snapshot", "delete", "-y", &snaps[1]]));
    let done = run.finish();
    assert_eq!(done.code, Some(0), "{}", done.screen);
    assert!(!done.screen.contains(QUESTION), "{}", done.screen);
    assert!(!bed.snapshot_exists(REGION, &snaps[1]));
}

#[test]
fn without_a_terminal_nothing_is_asked_and_the_delete_happens() {
    let bed = TestBed::start();
    let snaps = managed_snapshots(&bed, 1);
    // stdin an empty pipe, as under cron: a question would read its end and refuse.
    let out = bed
        .std_cmd()
        .args(["snapshot", "delete", &snaps[0]])
        .stdin(Stdio::piped())
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains(QUESTION), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("deleted"));
    assert!(!bed.snapshot_exists(REGION, &snaps[0]));
}

#[test]
fn json_at_a_terminal_asks_on_stderr_and_keeps_stdout_one_document() {
    let bed = TestBed::start();
    let snaps = managed_snapshots(&bed, 2);

    let mut run = OnTerminal::start(autosnap(
        &bed,
        &["-o", "json", "snapshot", "delete", &snaps[0]],
    ));
    run.until_shown("Delete 1 snapshot? [y/N] ");
    run.type_in("y\n");
    let done = run.finish();
    assert_eq!(done.code, Some(0), "{}", done.screen);
    let result: serde_json::Value = serde_json::from_str(&done.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", done.stdout));
    assert_eq!(result[0]["snapshot_id"], snaps[0].as_str());
    assert_eq!(result[0]["result"], "deleted");
    assert!(!bed.snapshot_exists(REGION, &snaps[0]));

    // Declined: nothing on stdout, the error object on stderr.
    let mut run = OnTerminal::start(autosnap(
        &bed,
        &["-o", "json", "snapshot", "delete", &snaps[1]],
    ));
    run.until_shown(QUESTION);
    run.type_in("\n");
    let done = run.finish();
    assert_eq!(done.code, Some(1), "{}", done.screen);
    assert!(done.stdout.is_empty(), "{}", done.stdout);
    let line = done
        .screen
        .lines()
        .find(|l| l.starts_with("{\"error\""))
        .unwrap_or_else(|| panic!("no error object:\n{}", done.screen));
    let error: serde_json::Value = serde_json::from_str(line).expect("error object");
    assert_eq!(error["error"]["kind"], "declined");
    assert!(bed.snapshot_exists(REGION, &snaps[1]));
}

#[test]
fn nothing_to_delete_means_no_question() {
    let bed = TestBed::start();
    let vol = bed.volume(1, &[]);
    let foreign = bed.foreign_snapshot(&vol);
    // Refused (autosnap does not own it): the answer would change nothing.
    let run = OnTerminal::start(autosnap(&bed, &["snapshot", "delete", &foreign]));
    let done = run.finish();
    assert_eq!(done.code, Some(1), "{}", done.screen);
    assert!(!done.screen.contains(QUESTION), "{}", done.screen);
    assert!(done.stdout.contains("refused"), "{}", done.stdout);
    assert!(bed.snapshot_exists(REGION, &foreign));
}

// ---- ami delete ------------------------------------------------------------------------------

#[test]
fn ami_delete_at_a_terminal_asks_and_no_keeps_the_ami_and_its_snapshot() {
    let bed = TestBed::start();
    let vol = bed.volume(1, &[]);
    let snap = bed.foreign_snapshot(&vol);
    let ami = bed.image_using(&snap);
    let mut run = OnTerminal::start(autosnap(&bed, &["ami", "delete", "--force", &ami]));
    run.until_shown("Deregister 1 AMI");
    run.until_shown(QUESTION);
    assert!(
        run.screen.contains(&format!("plan: deregister {ami}")),
        "{}",
        run.screen
    );
    run.type_in("n\n");
    let done = run.finish();
    assert_eq!(done.code, Some(1), "{}", done.screen);
    assert!(done.screen.contains("nothing deleted"), "{}", done.screen);
    assert!(bed.image(&ami).is_some(), "{ami} must still be registered");
    assert!(bed.snapshot_exists(REGION, &snap));

    let mut run = OnTerminal::start(autosnap(&bed, &["ami", "delete", "--force", &ami]));
    run.until_shown(QUESTION);
    run.type_in("y\n");
    let done = run.finish();
    assert_eq!(done.code, Some(0), "{}", done.screen);
    assert!(bed.image(&ami).is_none(), "{ami} deregistered");
}

// ---- prune -----------------------------------------------------------------------------------

#[test]
fn prune_at_a_terminal_asks_and_no_deletes_nothing() {
    let bed = TestBed::start();
    let db = bed.volume(8, &[("Backup", "daily")]);
    bed.write_config(
        "autosnap.toml",
        r#"
[[policy]]
name = "p"
resource = "volume"
select = [{ tags = { Backup = "daily" } }]
schedule = "0 3 * * *"
retain = { last = 1 }
"#,
        0o644,
    );
    let ours = |days: i64| {
        let start = (chrono::Utc::now() - chrono::Duration::days(days))
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        bed.snapshot_with_tags(
            REGION,
            &db,
            &[
                ("autosnap:managed", "true"),
                ("autosnap:policy", "p"),
                ("autosnap:source-volume", db.as_str()),
                ("autosnap-testbed:start-time", start.as_str()),
            ],
        )
    };
    let old1 = ours(10);
    let old2 = ours(9);
    let newest = ours(1);

    let mut run = OnTerminal::start(autosnap(&bed, &["prune"]));
    run.until_shown("Delete 2 snapshots? [y/N] ");
    // The plan (on stdout, the same terminal in real life) was printed first;
    // here stdout is a pipe, so it is checked there.
    run.type_in("no\n");
    let done = run.finish();
    assert_eq!(done.code, Some(1), "{}", done.screen);
    assert!(done.screen.contains("nothing deleted"), "{}", done.screen);
    assert!(done.stdout.contains("policy p"), "{}", done.stdout);
    for id in [&old1, &old2, &newest] {
        assert!(bed.snapshot_exists(REGION, id), "{id} must survive");
    }

    // With -o json the plan is not on stdout, so it is shown before the question.
    let mut run = OnTerminal::start(autosnap(&bed, &["-o", "json", "prune"]));
    run.until_shown(QUESTION);
    assert!(run.screen.contains("policy p"), "{}", run.screen);
    run.type_in("y\n");
    let done = run.finish();
    assert_eq!(done.code, Some(0), "{}", done.screen);
    let out: serde_json::Value = serde_json::from_str(&done.stdout).expect("JSON");
    assert_eq!(
        out["report"]["deleted"].as_array().unwrap().len(),
        2,
        "{out}"
    );
    assert!(!bed.snapshot_exists(REGION, &old1));
    assert!(!bed.snapshot_exists(REGION, &old2));
    assert!(bed.snapshot_exists(REGION, &newest));
}

// ---- repo forget, gc, unlock --remove-all (a local repository) -------------------------------

const BLOCK: usize = 524_288;

/// A disk image of `blocks` blocks of a pattern from `seed`.
fn image(dir: &Path, name: &str, blocks: usize, seed: u8) -> PathBuf {
    let data: Vec<u8> = (0..blocks * BLOCK)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i / 4096) as u8)
        .collect();
    let path = dir.join(name);
    std::fs::write(&path, data).unwrap();
    path
}

/// Archives `file` as source `source` through the library.
fn import(repo: &Path, file: &Path, source: &str) -> String {
    let repo = Repository::open(Arc::new(LocalBackend::new(repo)), Credentials::None).unwrap();
    let options = ImportOptions {
        source: Some(ArchiveSource::new(SourceKind::File, source)),
        ..ImportOptions::default()
    };
    repo.import_file(file, options).unwrap().id.to_string()
}

/// Every file under `dir`, relative, sorted.
fn objects(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// A repository with two archives of one disk, the older first.
fn repo_with_two_archives(bed: &TestBed, dir: &Path) -> (PathBuf, String, String) {
    let repo = dir.join("repo");
    bed.json(&["repo", "init", repo.to_str().unwrap()]);
    let older = import(&repo, &image(dir, "a.img", 2, 1), "disk");
    let newer = import(&repo, &image(dir, "b.img", 2, 2), "disk");
    (repo, older, newer)
}

#[test]
fn repo_forget_at_a_terminal_shows_the_plan_and_asks() {
    let bed = TestBed::offline();
    let dir = tempfile::tempdir().unwrap();
    let (repo, older, newer) = repo_with_two_archives(&bed, dir.path());
    let repo_s = repo.to_str().unwrap();
    let forget = ["repo", "forget", repo_s, "--keep-last", "1"];

    let mut run = OnTerminal::start(autosnap(&bed, &forget));
    run.until_shown("Forget 1 archive? [y/N] ");
    assert!(run.screen.contains("would forget"), "{}", run.screen);
    assert!(run.screen.contains(&older), "{}", run.screen);
    run.type_in("n\n");
    let done = run.finish();
    assert_eq!(done.code, Some(1), "{}", done.screen);
    assert!(done.screen.contains("nothing deleted"), "{}", done.screen);
    assert!(repo.join("manifests").join(&older).exists());

    let mut run = OnTerminal::start(autosnap(&bed, &forget));
    run.until_shown(QUESTION);
    run.type_in("y\n");
    let done = run.finish();
    assert_eq!(done.code, Some(0), "{}", done.screen);
    assert!(done.stdout.contains("forgotten"), "{}", done.stdout);
    assert!(!repo.join("manifests").join(&older).exists());
    assert!(repo.join("manifests").join(&newer).exists());
}

#[test]
fn repo_gc_at_a_terminal_names_objects_and_bytes_and_asks() {
    let bed = TestBed::offline();
    let dir = tempfile::tempdir().unwrap();
    let (repo, _older, _newer) = repo_with_two_archives(&bed, dir.path());
    let repo_s = repo.to_str().unwrap();
    // Forgotten without a terminal: no question, as in a script.
    bed.json(&["repo", "forget", repo_s, "--keep-last", "1"]);
    let dry = bed.json(&["repo", "gc", repo_s, "--dry-run"]);
    let unreferenced = dry["chunks_unreferenced"].as_u64().unwrap()
        + dry["blockmaps_unreferenced"].as_u64().unwrap();
    assert!(
        unreferenced > 1,
        "the forgotten archive left objects: {dry}"
    );
    let before = objects(&repo);

    let mut run = OnTerminal::start(autosnap(&bed, &["repo", "gc", repo_s]));
    run.until_shown(QUESTION);
    let asked = run
        .screen
        .lines()
        .find(|l| l.contains(QUESTION))
        .unwrap()
        .to_string();
    // The count and the bytes: `Delete 3 unreferenced objects (24.0 KiB)? [y/N]`.
    assert!(
        asked.starts_with(&format!("Delete {unreferenced} unreferenced objects (")),
        "{asked}"
    );
    assert!(asked.contains("B)? [y/N]"), "{asked}");
    run.type_in("n\n");
    let done = run.finish();
    assert_eq!(done.code, Some(1), "{}", done.screen);
    assert!(done.screen.contains("nothing deleted"), "{}", done.screen);
    assert_eq!(objects(&repo), before, "gc declined: no object removed");

    let mut run = OnTerminal::start(autosnap(&bed, &["repo", "gc", repo_s]));
    run.until_shown(QUESTION);
    run.type_in("y\n");
    let done = run.finish();
    assert_eq!(done.code, Some(0), "{}", done.screen);
    assert!(objects(&repo).len() < before.len());

    // Nothing left to delete: no question.
    let run = OnTerminal::start(autosnap(&bed, &["repo", "gc", repo_s]));
    let done = run.finish();
    assert_eq!(done.code, Some(0), "{}", done.screen);
    assert!(!done.screen.contains(QUESTION), "{}", done.screen);
}

#[test]
fn repo_unlock_remove_all_asks_before_removing_a_live_lock() {
    let bed = TestBed::offline();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let repo_s = repo.to_str().unwrap();
    bed.json(&["repo", "init", repo_s]);
    let now = chrono::Utc::now();
    let lock = serde_json::json!({
        "kind": "shared", "purpose": "archive", "host": "ip-10-0-0-1", "pid": 4242,
        "process": "ab".repeat(16), "created": now, "refreshed": now,
        "expires": now + chrono::Duration::minutes(30),
    });
    std::fs::create_dir_all(repo.join("locks")).unwrap();
    let lock_path = repo
        .join("locks")
        .join("20240101T000000Z-shared-00000000000000aa");
    std::fs::write(&lock_path, serde_json::to_vec(&lock).unwrap()).unwrap();

    let mut run = OnTerminal::start(autosnap(&bed, &["repo", "unlock", repo_s, "--remove-all"]));
    run.until_shown("Remove 1 live lock");
    run.until_shown(QUESTION);
    assert!(run.screen.contains("ip-10-0-0-1"), "{}", run.screen);
    run.type_in("n\n");
    let done = run.finish();
    assert_eq!(done.code, Some(1), "{}", done.screen);
    assert!(lock_path.exists(), "declined: the live lock stays");

    let run = OnTerminal::start(autosnap(
        &bed,
        &["repo", "unlock", repo_s, "--remove-all", "--yes"],
    ));
    let done = run.finish();
    assert_eq!(done.code, Some(0), "{}", done.screen);
    assert!(!done.screen.contains(QUESTION), "{}", done.screen);
    assert!(!lock_path.exists());
}

// ---- snapshot lock (compliance) --------------------------------------------------------------

fn locked(bed: &TestBed, snapshot_id: &str) -> bool {
    let ec2 = bed.ec2(REGION);
    bed.block(async {
        !ec2.describe_locked_snapshots()
            .snapshot_ids(snapshot_id)
            .send()
            .await
            .expect("describe locks")
            .snapshots()
            .is_empty()
    })
}

#[test]
fn compliance_lock_at_a_terminal_asks_and_no_locks_nothing() {
    let bed = TestBed::start();
    let snaps = managed_snapshots(&bed, 1);
    let lock = [
        "snapshot",
        "lock",
        &snaps[0],
        "--mode",
        "compliance",
        "--for",
        "7d",
        "--i-understand-compliance-is-irreversible",
    ];
    let mut run = OnTerminal::start(autosnap(&bed, &lock));
    run.until_shown("[y/N] ");
    assert!(
        run.screen.contains("Lock 1 snapshot in compliance mode"),
        "{}",
        run.screen
    );
    assert!(
        run.screen.contains(&snaps[0]),
        "the plan names it:\n{}",
        run.screen
    );
    assert!(run.screen.contains("irreversible"), "{}", run.screen);
    run.type_in("n\n");
    let done = run.finish();
    assert_eq!(done.code, Some(1), "{}", done.screen);
    assert!(done.screen.contains("nothing locked"), "{}", done.screen);
    assert!(!locked(&bed, &snaps[0]));

    let mut run = OnTerminal::start(autosnap(&bed, &lock));
    run.until_shown("[y/N] ");
    run.type_in("y\n");
    let done = run.finish();
    assert_eq!(done.code, Some(0), "{}", done.screen);
    assert!(locked(&bed, &snaps[0]));

    // Governance can be undone, so it is not asked.
    let other = managed_snapshots(&bed, 1);
    let run = OnTerminal::start(autosnap(
        &bed,
        &[
            "snapshot",
            "lock",
            &other[0],
            "--mode",
            "governance",
            "--for",
            "1d",
        ],
    ));
    let done = run.finish();
    assert_eq!(done.code, Some(0), "{}", done.screen);
    assert!(!done.screen.contains("[y/N]"), "{}", done.screen);
    assert!(locked(&bed, &other[0]));
}

//! Local trust, through the real binary: a config file someone else could
//! have written is refused (it can run hooks as root), wherever it is found;
//! the override flag uses it with a warning; commands that hold repository
//! keys run without core dumps.
//!
//! No AWS calls: `config show` reads and resolves the config and stops.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::TestBed;
use predicates::prelude::*;

/// `O_NONBLOCK` (Linux, x86 and arm): opening a FIFO for writing without a
/// reader then fails with ENXIO instead of waiting.
const O_NONBLOCK: i32 = 0o4000;
const ENXIO: i32 = 6;

const CONFIG: &str = "[aws]\nregion = \"us-east-1\"\n";

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

#[test]
fn a_config_writable_by_others_is_refused_with_the_reason_and_the_fix() {
    let bed = TestBed::offline();
    for mode in [0o666, 0o664, 0o646] {
        let cfg = bed.write_config("cfg.toml", CONFIG, mode);
        let shown = cfg.display().to_string();
        bed.cmd()
            .args(["-c", &shown, "config", "show"])
            .assert()
            .code(2)
            .stderr(predicate::str::contains(format!(
                "refusing config file {shown}"
            )))
            .stderr(predicate::str::contains(format!(
                "writable by other users (mode {mode:04o})"
            )))
            .stderr(predicate::str::contains("can run hooks"))
            .stderr(predicate::str::contains(format!("chmod go-w {shown}")))
            .stderr(predicate::str::contains("--allow-insecure-config"));
    }
    // Fixed as the message says, it is accepted.
    let cfg = bed.home.path().join("cfg.toml");
    chmod(&cfg, 0o644);
    bed.cmd()
        .args(["-c", cfg.to_str().unwrap(), "config", "show"])
        .assert()
        .success();
}

#[test]
fn a_config_owned_by_another_user_is_refused() {
    if !is_root() {
        eprintln!("skipped: needs root to give a file to another user");
        return;
    }
    let bed = TestBed::offline();
    let cfg = bed.write_config("cfg.toml", CONFIG, 0o644);
    std::os::unix::fs::chown(&cfg, Some(65534), None).expect("chown nobody");
    bed.cmd()
        .args(["-c", cfg.to_str().unwrap(), "config", "show"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(format!(
            "refusing config file {}",
            cfg.display()
        )))
        .stderr(predicate::str::contains("uid 65534"))
        .stderr(predicate::str::contains("not by root"))
        .stderr(predicate::str::contains(format!(
            "chown root {}",
            cfg.display()
        )));
}

#[test]
fn the_override_flag_uses_an_untrusted_config_with_a_warning() {
    let bed = TestBed::offline();
    let cfg = bed.write_config("cfg.toml", CONFIG, 0o666);
    let out = bed
        .cmd()
        .args([
            "-c",
            cfg.to_str().unwrap(),
            "--allow-insecure-config",
            "-o",
            "json",
            "config",
            "show",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("WARN"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "using config file {} although it is writable by other users",
            cfg.display()
        )),
        "{stderr}"
    );
    // The file was really used.
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(shown.to_string().contains("us-east-1"), "{shown}");
}

#[test]
fn a_config_in_the_current_directory_gets_the_same_checks() {
    let bed = TestBed::offline();
    bed.write_config("autosnap.toml", CONFIG, 0o666);
    bed.cmd()
        .args(["config", "show"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "refusing config file autosnap.toml",
        ))
        .stderr(predicate::str::contains("chmod go-w autosnap.toml"));

    // A world-writable current directory without the sticky bit: anyone could
    // have put the file there or swapped it.
    chmod(&bed.home.path().join("autosnap.toml"), 0o644);
    chmod(bed.home.path(), 0o777);
    let home = bed.home.path().canonicalize().unwrap();
    bed.cmd()
        .args(["config", "show"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(format!(
            "the directory {} above it is writable by other users (mode 0777) without the sticky bit",
            home.display()
        )))
        .stderr(predicate::str::contains(format!(
            "chmod go-w {}",
            home.display()
        )));
    // With the sticky bit (as /tmp) others cannot replace our file.
    chmod(bed.home.path(), 0o1777);
    bed.cmd().args(["config", "show"]).assert().success();
    chmod(bed.home.path(), 0o700);
}

#[test]
fn a_symlinked_config_is_judged_by_the_file_it_points_to() {
    let bed = TestBed::offline();
    let elsewhere = tempfile::tempdir().unwrap();
    let target = elsewhere.path().join("real.toml");
    std::fs::write(&target, CONFIG).unwrap();
    chmod(&target, 0o666);
    std::os::unix::fs::symlink(&target, bed.home.path().join("autosnap.toml")).unwrap();
    bed.cmd()
        .args(["config", "show"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "writable by other users (mode 0666)",
        ));
}

/// Reads the "Max core file size" soft and hard limits of a process.
fn core_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .expect("core limit line")
        .to_string();
    let fields: Vec<&str> = line.split_whitespace().collect();
    (fields[4].to_string(), fields[5].to_string())
}

#[test]
fn repository_commands_run_without_core_dumps() {
    let bed = TestBed::offline();
    let fifo = bed.home.path().join("passphrase");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(status.success());
    let repo = bed.home.path().join("repo");
    let mut child = bed
        .std_cmd()
        .args(["repo", "init", repo.to_str().unwrap(), "--encrypt"])
        .arg("--password-file")
        .arg(&fifo)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The FIFO has a reader once autosnap opens the passphrase file: by then
    // it holds (or is about to hold) key material.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut writer = loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(O_NONBLOCK)
            .open(&fifo)
        {
            Ok(file) => break file,
            Err(e) if e.raw_os_error() == Some(ENXIO) => {} // no reader yet
            Err(e) => panic!("open the passphrase FIFO: {e}"),
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "autosnap exited before reading its passphrase"
        );
        assert!(
            Instant::now() < deadline,
            "autosnap never read its passphrase"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(
        core_limits(child.id()),
        ("0".to_string(), "0".to_string()),
        "core dumps are still possible while the passphrase is read"
    );
    writer.write_all(b"correct horse battery staple\n").unwrap();
    drop(writer);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

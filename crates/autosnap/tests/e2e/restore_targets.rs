//! Where restores and downloads write, through the real binary: image files are new, private
//! and appear whole (an existing file or a planted symlink is never written through without
//! --force, and --force replaces atomically); devices that are mounted, swap, or claimed are
//! refused; a restore holds a shared repository lock that keeps `repo gc` out.
//!
//! Restores read a local repository filled through the library (no AWS needed); downloads
//! use the test bed. The device tests need root and loop devices: elsewhere they skip with a
//! message, unless AUTOSNAP_REQUIRE_LOOP_TESTS=1 (CI sets it), which turns a skip into a
//! failure.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::support::TestBed;
use autosnap_repo::{
    ArchiveSource, Credentials, ImportOptions, LocalBackend, LockKind, Repository, SourceKind,
};

const BLOCK: usize = 524_288;

/// Deterministic pseudo-random bytes (xorshift).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A local repository (made by `repo init`) holding one archive of a 4-block image with a
/// zero block; returns (repository path, the image's bytes). The archive's source is `disk`.
fn repository(bed: &TestBed, dir: &Path) -> (PathBuf, Vec<u8>) {
    let repo = dir.join("repo");
    ok(run(bed, &["repo", "init", repo.to_str().unwrap()]));
    let mut data = noise(1, BLOCK);
    data.extend(std::iter::repeat_n(0u8, BLOCK));
    data.extend(noise(2, 2 * BLOCK));
    let image = dir.join("source.img");
    std::fs::write(&image, &data).unwrap();
    let library = Repository::open(Arc::new(LocalBackend::new(&repo)), Credentials::None).unwrap();
    library
        .import_file(
            &image,
            ImportOptions {
                source: Some(ArchiveSource::new(SourceKind::File, "disk")),
                ..ImportOptions::default()
            },
        )
        .unwrap();
    std::fs::remove_file(&image).unwrap();
    (repo, data)
}

fn run(bed: &TestBed, args: &[&str]) -> Output {
    bed.cmd().args(args).output().unwrap()
}

/// The same, under `umask 000` (so a mode the program does not set explicitly shows).
fn run_umask_000(bed: &TestBed, args: &[&str]) -> Output {
    let inner = bed.std_cmd();
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "umask 000 && exec \"$@\"", "sh"])
        .arg(inner.get_program())
        .args(args);
    for (key, value) in inner.get_envs() {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    if let Some(dir) = inner.get_current_dir() {
        cmd.current_dir(dir);
    }
    cmd.output().unwrap()
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "autosnap failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A failed run's standard error.
fn failed(out: Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "expected a failure; stderr: {stderr}"
    );
    stderr
}

fn restore_to_file(bed: &TestBed, repo: &Path, target: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "restore",
        "disk",
        "--repo",
        repo.to_str().unwrap(),
        "--to-file",
        target.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run(bed, &args)
}

/// Names in `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn restore_to_file_refuses_an_existing_file_and_leaves_it_byte_identical() {
    let bed = TestBed::offline();
    let dir = tempfile::tempdir().unwrap();
    let (repo, _) = repository(&bed, dir.path());
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let target = out_dir.join("disk.img");
    let old = noise(9, 3000);
    std::fs::write(&target, &old).unwrap();

    let stderr = failed(restore_to_file(&bed, &repo, &target, &[]));
    assert!(stderr.contains("already exists"), "{stderr}");
    assert!(stderr.contains(target.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    assert!(
        std::fs::read(&target).unwrap() == old,
        "the old file is intact"
    );
    assert_eq!(entries(&out_dir), ["disk.img"], "no temp file is left");
}

#[test]
fn restore_to_file_with_force_replaces_atomically() {
    let bed = TestBed::offline();
    let dir = tempfile::tempdir().unwrap();
    let (repo, data) = repository(&bed, dir.path());
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let target = out_dir.join("disk.img");
    let old = noise(9, 3000);
    std::fs::write(&target, &old).unwrap();
    // A reader that opened the old file keeps reading the old bytes: the new image is a new
    // file renamed over it, never the old one truncated and rewritten.
    let old_inode = std::fs::metadata(&target).unwrap().ino();
    let held = std::fs::File::open(&target).unwrap();

    ok(restore_to_file(&bed, &repo, &target, &["--force"]));
    assert!(
        std::fs::read(&target).unwrap() == data,
        "{} holds other bytes",
        target.display()
    );
    assert_ne!(std::fs::metadata(&target).unwrap().ino(), old_inode);
    let mut still = Vec::new();
    std::io::Read::read_to_end(&mut &held, &mut still).unwrap();
    assert!(
        still == old,
        "an open reader of the old file sees the old bytes"
    );
    assert_eq!(entries(&out_dir), ["disk.img"]);

    // A restore that fails half way (a damaged chunk) leaves the file it would replace intact.
    let replaced = std::fs::read(&target).unwrap();
    let chunk = chunk_files(&repo).pop().unwrap();
    let mut damaged = std::fs::read(&chunk).unwrap();
    let last = damaged.len() - 1;
    damaged[last] ^= 0xFF;
    std::fs::write(&chunk, damaged).unwrap();
    let stderr = failed(restore_to_file(&bed, &repo, &target, &["--force"]));
    assert!(stderr.contains("chunk"), "{stderr}");
    assert!(
        std::fs::read(&target).unwrap() == replaced,
        "{} holds other bytes",
        target.display()
    );
    assert_eq!(entries(&out_dir), ["disk.img"], "no temp file is left");
}

#[test]
fn sigkill_mid_restore_leaves_the_old_file_and_a_rerun_completes() {
    let bed = TestBed::offline();
    let dir = tempfile::tempdir().unwrap();
    let (repo, data) = repository(&bed, dir.path());
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let target = out_dir.join("disk.img");
    let old = noise(11, 5000);
    std::fs::write(&target, &old).unwrap();

    // Killed while it waits on a chunk, with --force (so it would replace the file).
    PausedRestore::start(&bed, &repo, &target, &["--force"]).kill();

    // What the user had is untouched; what the killed restore left is private.
    assert!(
        std::fs::read(&target).unwrap() == old,
        "the old file is intact"
    );
    for name in entries(&out_dir).into_iter().filter(|n| n != "disk.img") {
        let path = out_dir.join(&name);
        assert_eq!(mode(&path) & 0o077, 0, "{name} is private");
    }
    // The repository is whole, and a rerun restores the archive (the killed restore's
    // shared lock does not stand in the way of another shared lock).
    ok(run(
        &bed,
        &["repo", "verify", "--read-data", repo.to_str().unwrap()],
    ));
    ok(restore_to_file(&bed, &repo, &target, &["--force"]));
    assert!(
        std::fs::read(&target).unwrap() == data,
        "the rerun restored the archive"
    );
}

/// A restore caught in the middle: one chunk of the repository is replaced by a named pipe,
/// and the restore blocks reading it until the test feeds it or kills the restore.
struct PausedRestore {
    child: std::process::Child,
    pipe: std::fs::File,
    chunk: PathBuf,
    bytes: Vec<u8>,
}

impl PausedRestore {
    /// Starts `restore disk --to-file target` (one block at a time, plus `extra`) and returns
    /// once it has opened the pipe.
    fn start(bed: &TestBed, repo: &Path, target: &Path, extra: &[&str]) -> PausedRestore {
        let chunk = chunk_files(repo).remove(0);
        let bytes = std::fs::read(&chunk).unwrap();
        std::fs::remove_file(&chunk).unwrap();
        assert!(Command::new("mkfifo")
            .arg(&chunk)
            .status()
            .unwrap()
            .success());
        let mut args = vec![
            "restore",
            "disk",
            "--repo",
            repo.to_str().unwrap(),
            "--to-file",
            target.to_str().unwrap(),
            "--concurrency",
            "1",
        ];
        args.extend_from_slice(extra);
        let mut child = bed
            .std_cmd()
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Opening the pipe for writing returns once the restore opened it for reading. A
        // restore that fails first never does: the guard timeout then opens the reading end
        // itself.
        let (opened, wait) = std::sync::mpsc::channel();
        let fifo = chunk.clone();
        std::thread::spawn(move || {
            let writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
            let _ = opened.send(writer);
        });
        match wait.recv_timeout(Duration::from_secs(120)) {
            Ok(pipe) => PausedRestore {
                child,
                pipe,
                chunk,
                bytes,
            },
            Err(_) => {
                let _ = std::fs::File::open(&chunk);
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "the restore never read the chunk: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }

    /// Feeds the chunk; the restore goes on to its end.
    fn resume(mut self) -> Output {
        self.pipe.write_all(&self.bytes).unwrap();
        drop(self.pipe);
        self.child.wait_with_output().unwrap()
    }

    /// SIGKILLs the restore, then puts the chunk back as a file.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        drop(self.pipe);
        std::fs::remove_file(&self.chunk).unwrap();
        std::fs::write(&self.chunk, &self.bytes).unwrap();
    }
}

fn chunk_files(repo: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for sub in std::fs::read_dir(repo.join("chunks")).unwrap() {
        for f in std::fs::read_dir(sub.unwrap().path()).unwrap() {
            let path = f.unwrap().path();
            if path.file_name().unwrap().to_string_lossy().len() == 64 {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn restored_images_are_private_under_umask_000() {
    let bed = TestBed::offline();
    let dir = tempfile::tempdir().unwrap();
    let (repo, data) = repository(&bed, dir.path());
    let target = dir.path().join("disk.img");
    ok(run_umask_000(
        &bed,
        &[
            "restore",
            "disk",
            "--repo",
            repo.to_str().unwrap(),
            "--to-file",
            target.to_str().unwrap(),
        ],
    ));
    assert!(
        std::fs::read(&target).unwrap() == data,
        "{} holds other bytes",
        target.display()
    );
    assert_eq!(mode(&target), 0o600);
}

#[test]
fn a_symlink_at_the_restore_target_is_not_followed() {
    let bed = TestBed::offline();
    let dir = tempfile::tempdir().unwrap();
    let (repo, data) = repository(&bed, dir.path());
    // Another user's file, and a link to it planted where the image will go.
    let victim = dir.path().join("victim");
    let precious = noise(7, 5000);
    std::fs::write(&victim, &precious).unwrap();
    let target = dir.path().join("disk.img");
    std::os::unix::fs::symlink(&victim, &target).unwrap();

    let stderr = failed(restore_to_file(&bed, &repo, &target, &[]));
    assert!(stderr.contains("symbolic link"), "{stderr}");
    assert!(
        std::fs::read(&victim).unwrap() == precious,
        "{} holds other bytes",
        victim.display()
    );
    assert!(std::fs::symlink_metadata(&target).unwrap().is_symlink());

    // --force replaces the link itself; its target is still untouched.
    ok(restore_to_file(&bed, &repo, &target, &["--force"]));
    assert!(!std::fs::symlink_metadata(&target).unwrap().is_symlink());
    assert!(
        std::fs::read(&target).unwrap() == data,
        "{} holds other bytes",
        target.display()
    );
    assert!(
        std::fs::read(&victim).unwrap() == precious,
        "{} holds other bytes",
        victim.display()
    );
}

#[test]
fn force_applies_to_files_only() {
    let bed = TestBed::offline();
    let dir = tempfile::tempdir().unwrap();
    let (repo, _) = repository(&bed, dir.path());
    let out = run(
        &bed,
        &[
            "restore",
            "disk",
            "--repo",
            repo.to_str().unwrap(),
            "--to-device",
            "/dev/null",
            "--force",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--force applies to --to-file only"),
        "{stderr}"
    );
    // A directory is never replaced, --force or not.
    let stderr = failed(restore_to_file(&bed, &repo, dir.path(), &["--force"]));
    assert!(stderr.contains("is a directory"), "{stderr}");
}

#[test]
fn download_refuses_an_existing_file_and_writes_private_images() {
    let bed = TestBed::start();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.img");
    let data = noise(3, BLOCK + 100);
    std::fs::write(&src, &data).unwrap();
    let up = bed.json(&["upload", src.to_str().unwrap(), "--wait"]);
    let snap = up["snapshot_id"].as_str().unwrap().to_string();

    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let target = out_dir.join("disk.img");
    let old = noise(9, 3000);
    std::fs::write(&target, &old).unwrap();
    let stderr = failed(run(&bed, &["download", &snap, target.to_str().unwrap()]));
    assert!(stderr.contains("already exists"), "{stderr}");
    assert!(
        std::fs::read(&target).unwrap() == old,
        "{} holds other bytes",
        target.display()
    );

    // A symlink planted at the target is neither followed nor replaced without --force.
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let link = out_dir.join("link.img");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let stderr = failed(run(&bed, &["download", &snap, link.to_str().unwrap()]));
    assert!(stderr.contains("symbolic link"), "{stderr}");
    assert!(
        std::fs::read(&victim).unwrap() == b"precious",
        "{} changed",
        victim.display()
    );

    ok(run_umask_000(
        &bed,
        &["download", &snap, target.to_str().unwrap(), "--force"],
    ));
    let got = std::fs::read(&target).unwrap();
    assert_eq!(got.len(), 1 << 30);
    assert!(
        got[..data.len()] == data[..],
        "the downloaded image holds the uploaded bytes"
    );
    assert_eq!(mode(&target), 0o600);
    assert_eq!(entries(&out_dir), ["disk.img", "link.img"], "no temp file");
}

#[test]
fn restore_holds_a_shared_lock_that_keeps_gc_out() {
    let bed = TestBed::offline();
    let dir = tempfile::tempdir().unwrap();
    let (repo, data) = repository(&bed, dir.path());
    let library = Repository::open(Arc::new(LocalBackend::new(&repo)), Credentials::None).unwrap();

    // An exclusive lock (a gc at work) stops a restore before it writes anything.
    let gc = library.lock(LockKind::Exclusive, "gc").unwrap();
    let target = dir.path().join("disk.img");
    let stderr = failed(restore_to_file(&bed, &repo, &target, &[]));
    assert!(stderr.contains("exclusive lock for gc"), "{stderr}");
    assert!(!target.exists());
    drop(gc);
    // A shared one (an archive at work) does not.
    let archive = library.lock(LockKind::Shared, "archive").unwrap();
    ok(restore_to_file(&bed, &repo, &target, &[]));
    drop(archive);
    std::fs::remove_file(&target).unwrap();

    // Caught in the middle: the restore waits on a chunk until this test feeds it. Meanwhile
    // its lock is there and gc is refused.
    let restore = PausedRestore::start(&bed, &repo, &target, &[]);
    let locks: Vec<String> = std::fs::read_dir(repo.join("locks"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(
        locks
            .iter()
            .any(|l| l.contains("\"restore\"") && l.contains("\"shared\"")),
        "{locks:?}"
    );
    let stderr = failed(run(&bed, &["repo", "gc", repo.to_str().unwrap()]));
    assert!(stderr.contains("shared lock for restore"), "{stderr}");

    ok(restore.resume());
    assert!(
        std::fs::read(&target).unwrap() == data,
        "{} holds other bytes",
        target.display()
    );
    assert!(
        entries(&repo.join("locks")).is_empty(),
        "the lock is released"
    );
}

// ---------------------------------------------------------------------------------------------
// devices
// ---------------------------------------------------------------------------------------------

fn sh(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn skip(why: String) -> Option<LoopDevice> {
    if std::env::var("AUTOSNAP_REQUIRE_LOOP_TESTS").as_deref() == Ok("1") {
        panic!("loop-device test cannot run: {why}");
    }
    eprintln!("skipped: {why}");
    None
}

/// A loop device over a temp file of `size` bytes filled with 0xAA; unmounted, swapped off
/// and detached on drop.
struct LoopDevice {
    dir: tempfile::TempDir,
    dev: String,
    mounted: Option<PathBuf>,
    swap: bool,
}

impl LoopDevice {
    fn new(size: usize) -> Option<LoopDevice> {
        if sh("id", &["-u"]).ok().as_deref() != Some("0") {
            return skip("needs root (loop devices and mounts)".into());
        }
        let dir = tempfile::tempdir().ok()?;
        let backing = dir.path().join("backing.img");
        std::fs::write(&backing, vec![0xAAu8; size]).ok()?;
        let dev = match sh("losetup", &["--find", "--show", backing.to_str()?]) {
            Ok(d) => d,
            Err(e) => return skip(format!("no loop device: {e}")),
        };
        Some(LoopDevice {
            dir,
            dev,
            mounted: None,
            swap: false,
        })
    }

    fn mount_ext4(&mut self) -> Option<()> {
        if let Err(e) = sh("mkfs.ext4", &["-q", "-F", &self.dev]) {
            skip(format!("mkfs.ext4: {e}"));
            return None;
        }
        let mnt = self.dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        if let Err(e) = sh("mount", &[&self.dev, mnt.to_str().unwrap()]) {
            skip(format!("mount: {e}"));
            return None;
        }
        self.mounted = Some(mnt);
        Some(())
    }

    fn read(&self) -> Vec<u8> {
        std::fs::read(&self.dev).unwrap()
    }

    /// Asserts that no restore wrote here: a restore writes the archive's first block (random
    /// data) at offset 0 first. (A mounted filesystem writes its own blocks meanwhile, so the
    /// device as a whole is not compared.)
    fn assert_not_restored_to(&self, data: &[u8]) {
        let got = self.read();
        assert!(
            got[..BLOCK] != data[..BLOCK],
            "{} holds the archive's first block",
            self.dev
        );
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        if let Some(mnt) = &self.mounted {
            let _ = sh("umount", &[mnt.to_str().unwrap()]);
        }
        if self.swap {
            let _ = sh("swapoff", &[&self.dev]);
        }
        let _ = sh("losetup", &["-d", &self.dev]);
    }
}

fn restore_to_device(bed: &TestBed, repo: &Path, dev: &str) -> Output {
    run(
        bed,
        &[
            "restore",
            "disk",
            "--repo",
            repo.to_str().unwrap(),
            "--to-device",
            dev,
        ],
    )
}

#[test]
fn restore_to_an_unused_loop_device_writes_it_byte_for_byte() {
    let Some(device) = LoopDevice::new(3 * 1024 * 1024) else {
        return;
    };
    let bed = TestBed::offline();
    let dir = tempfile::tempdir().unwrap();
    let (repo, data) = repository(&bed, dir.path());
    ok(restore_to_device(&bed, &repo, &device.dev));
    let got = device.read();
    assert!(
        got[..data.len()] == data[..],
        "the volume, zero block included"
    );
    assert!(
        got[data.len()..].iter().all(|&b| b == 0xAA),
        "nothing past the volume is touched"
    );

    // A device smaller than the volume is refused before anything is written.
    let Some(small) = LoopDevice::new(1024 * 1024) else {
        return;
    };
    let stderr = failed(restore_to_device(&bed, &repo, &small.dev));
    assert!(stderr.contains("at least as large"), "{stderr}");
    assert!(
        small.read().iter().all(|&b| b == 0xAA),
        "the small device is untouched"
    );
}

#[test]
fn restore_refuses_a_mounted_loop_device_by_any_name() {
    let Some(mut device) = LoopDevice::new(8 * 1024 * 1024) else {
        return;
    };
    if device.mount_ext4().is_none() {
        return;
    }
    let mnt = device.mounted.clone().unwrap();
    let kept = noise(5, 10_000);
    std::fs::write(mnt.join("kept"), &kept).unwrap();
    sh("sync", &[]).unwrap();

    let bed = TestBed::offline();
    let dir = tempfile::tempdir().unwrap();
    let (repo, data) = repository(&bed, dir.path());
    // By its name, and through a link of another name (as /dev/disk/by-id/… are): the device
    // number decides.
    let alias = dir.path().join("alias");
    std::os::unix::fs::symlink(&device.dev, &alias).unwrap();
    for dev in [device.dev.as_str(), alias.to_str().unwrap()] {
        let stderr = failed(restore_to_device(&bed, &repo, dev));
        assert!(stderr.contains(dev), "{stderr}");
        assert!(
            stderr.contains(&format!("is mounted at {}", mnt.display())),
            "{stderr}"
        );
        assert!(stderr.contains("unmount it"), "{stderr}");
    }
    device.assert_not_restored_to(&data);
    assert!(std::fs::read(mnt.join("kept")).unwrap() == kept);
}

#[test]
fn restore_refuses_active_swap() {
    let Some(mut device) = LoopDevice::new(8 * 1024 * 1024) else {
        return;
    };
    if let Err(e) = sh("mkswap", &[&device.dev]).and_then(|_| sh("swapon", &[&device.dev])) {
        skip(format!("swap on a loop device: {e}"));
        return;
    }
    device.swap = true;
    let bed = TestBed::offline();
    let dir = tempfile::tempdir().unwrap();
    let (repo, data) = repository(&bed, dir.path());
    let stderr = failed(restore_to_device(&bed, &repo, &device.dev));
    assert!(stderr.contains("is active swap"), "{stderr}");
    device.assert_not_restored_to(&data);
}

#[test]
fn restore_refuses_a_device_mounted_in_another_mount_namespace() {
    let Some(device) = LoopDevice::new(8 * 1024 * 1024) else {
        return;
    };
    if let Err(e) = sh("mkfs.ext4", &["-q", "-F", &device.dev]) {
        skip(format!("mkfs.ext4: {e}"));
        return;
    }
    let mnt = device.dir.path().join("elsewhere");
    std::fs::create_dir(&mnt).unwrap();
    // Mounted where this process's mountinfo cannot see it: only the kernel's O_EXCL refusal
    // tells. The namespace lives until the shell reads its stdin's end.
    let mut holder = match Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount {} {} && echo mounted && read _",
            device.dev,
            mnt.display()
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            skip(format!("unshare: {e}"));
            return;
        }
    };
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    if line.trim() != "mounted" {
        let _ = holder.kill();
        let _ = holder.wait();
        skip("mount in a new mount namespace failed".into());
        return;
    }
    let bed = TestBed::offline();
    let dir = tempfile::tempdir().unwrap();
    let (repo, data) = repository(&bed, dir.path());
    let stderr = failed(restore_to_device(&bed, &repo, &device.dev));
    assert!(stderr.contains("will not open it exclusively"), "{stderr}");
    drop(holder.stdin.take());
    holder.wait().unwrap();
    device.assert_not_restored_to(&data);
}

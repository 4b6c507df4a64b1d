//! Crash safety: an archive stopped at any point leaves a repository that verifies, and a
//! rerun reuses what was stored.

mod common;
mod faults;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use autosnap_repo::{
    Backend, Credentials, EncryptionInit, Error, LocalBackend, LockInfo, LockOptions, Repository,
    VolumeSource,
};
use common::*;

const BLOCKS: u64 = 16;

fn fills() -> Vec<Fill> {
    (0..BLOCKS).map(|i| Fill::Random(1000 + i)).collect()
}

fn run_archive(
    repo: &Repository,
    delay: Duration,
    announce: bool,
) -> autosnap_repo::Result<autosnap_repo::Manifest> {
    let mut volume = VolumeSource::with_size_bytes(BLOCKS * BS as u64);
    volume.volume_id = Some("vol-crash".into());
    let mut writer = repo.begin_archive(source("snap-crash"))?;
    let v = writer.add_volume(volume)?;
    for (i, fill) in fills().into_iter().enumerate() {
        writer.add_block(v, i as u64, &block(fill))?;
        if announce {
            println!("stored {i}");
        }
        std::thread::sleep(delay);
    }
    writer.finish()
}

#[test]
fn stopped_after_n_writes_then_verify_and_rerun() {
    let (backend, repo) = memory_repo(EncryptionInit::None);
    // The lock and 9 more writes succeed, then every write fails: a crash mid-archive.
    backend.set_write_limit(Some(10));
    let mut volume = VolumeSource::with_size_bytes(BLOCKS * BS as u64);
    volume.volume_id = Some("vol-crash".into());
    let mut writer = repo.begin_archive(source("snap-crash")).unwrap();
    let v = writer.add_volume(volume).unwrap();
    let mut failed = None;
    for (i, fill) in fills().into_iter().enumerate() {
        if let Err(e) = writer.add_block(v, i as u64, &block(fill)) {
            failed = Some(e);
            break;
        }
    }
    assert!(matches!(failed, Some(Error::Backend(_))), "{failed:?}");
    // A killed process never releases its lock: leak it like one.
    std::mem::forget(writer);
    backend.set_write_limit(None);

    let stored = names(&*backend, "chunks/").len();
    assert!(
        (5..10).contains(&stored),
        "{stored} chunks stored before the crash"
    );
    assert!(names(&*backend, "manifests/").is_empty());
    let report = repo.verify(true).unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.archives, 0);
    assert_eq!(report.chunks_unreferenced, stored);

    // The rerun reuses every stored chunk.
    let manifest = run_archive(&repo, Duration::ZERO, false).unwrap();
    assert_eq!(manifest.stats.reused_chunks, stored as u64);
    assert_eq!(manifest.stats.new_chunks, BLOCKS - stored as u64);
    assert!(repo.verify(true).unwrap().is_ok());

    // The leaked lock is fresh: gc waits for it, even a gc with a shorter stale limit (the
    // lock's holder declared its expiry)…
    assert!(matches!(repo.gc(false), Err(Error::Locked { .. })));
    let impatient = repo.clone().with_lock_options(LockOptions {
        stale_after: Duration::from_millis(1),
        ..LockOptions::default()
    });
    assert!(matches!(impatient.gc(false), Err(Error::Locked { .. })));
    // …until it expires.
    expire_locks(&*backend);
    let report = repo.gc(false).unwrap();
    assert_eq!(report.stale_locks_removed, 1);
    assert_eq!(
        report.deleted, 0,
        "every stored chunk is referenced by the rerun"
    );
}

/// The child half of `sigkill_during_archive_then_verify_and_resume`.
#[test]
#[ignore = "run as a child process by sigkill_during_archive_then_verify_and_resume"]
fn child_archiver() {
    let Ok(dir) = std::env::var("AUTOSNAP_REPO_CRASH_DIR") else {
        return;
    };
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir));
    let repo = Repository::open(backend, Credentials::None).unwrap();
    run_archive(&repo, Duration::from_millis(50), true).unwrap();
    println!("finished");
}

#[test]
fn sigkill_during_archive_then_verify_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let repo = local_repo(&root, EncryptionInit::None);

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child_archiver",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("AUTOSNAP_REPO_CRASH_DIR", &root)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    for line in stdout.lines() {
        let line = line.unwrap();
        assert_ne!(line, "finished", "the child finished before it was killed");
        if line == "stored 5" {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let count = |prefix: &str| count_files(&root.join(prefix));
    let stored = count("chunks");
    assert!((6..BLOCKS as usize).contains(&stored), "{stored} chunks");
    assert_eq!(count("manifests"), 0);
    assert_eq!(
        count("locks"),
        1,
        "the killed process's lock is left behind"
    );
    let report = repo.verify(true).unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.chunks_unreferenced, stored);

    // Rerun: archives share the lock with the dead process's leftover, and every chunk it
    // stored is reused.
    let manifest = run_archive(&repo, Duration::ZERO, false).unwrap();
    assert_eq!(manifest.stats.reused_chunks, stored as u64);
    assert_eq!(manifest.stats.new_chunks, BLOCKS - stored as u64);
    let out = dir.path().join("restored.img");
    repo.restore_to_file(&manifest, 0, &out).unwrap();
    assert_eq!(sha256_file(&out), sha256(&image(&fills(), None)));
    assert!(repo.verify(true).unwrap().is_ok());
    // The leftover lock holds gc off until it expires: nothing on this host proves that its
    // process is gone (another machine or container may share the host name and pid).
    assert!(matches!(repo.gc(false), Err(Error::Locked { .. })));
    expire_locks(repo.backend().as_ref());
    let report = repo.gc(false).unwrap();
    assert_eq!((report.stale_locks_removed, report.deleted), (1, 0));
    assert_eq!(count("locks"), 0);
}

/// Archives of four one-segment volumes, half of them forgotten: gc has work to do.
fn gc_fixture(root: &Path) -> Vec<(autosnap_repo::Manifest, Vec<Fill>)> {
    let repo = local_repo(root, EncryptionInit::None);
    let mut kept = Vec::new();
    for i in 0..6u64 {
        let fills: Vec<Fill> = (0..4).map(|b| Fill::Random(5000 + 10 * i + b)).collect();
        let mut writer = repo.begin_archive(source(&format!("snap-gc-{i}"))).unwrap();
        let v = writer
            .add_volume(VolumeSource::with_size_bytes(4 * BS as u64))
            .unwrap();
        for (b, fill) in fills.iter().enumerate() {
            writer.add_block(v, b as u64, &block(*fill)).unwrap();
        }
        let manifest = writer.finish().unwrap();
        if i % 2 == 0 {
            repo.backend()
                .delete(&format!("manifests/{}", manifest.id))
                .unwrap();
        } else {
            kept.push((manifest, fills));
        }
    }
    kept
}

/// The child half of `sigkill_during_gc_then_verify_and_rerun`: a gc that announces each
/// delete.
#[test]
#[ignore = "run as a child process by sigkill_during_gc_then_verify_and_rerun"]
fn child_gc() {
    let Ok(dir) = std::env::var("AUTOSNAP_REPO_CRASH_DIR") else {
        return;
    };
    let backend = faults::Hooked::new(Arc::new(LocalBackend::new(dir)));
    backend.after(|op, name| {
        if op == faults::OpKind::Delete && !name.starts_with("locks/") {
            println!("deleted {name}");
            // Pace the deletes so the parent's kill lands among them.
            std::thread::sleep(Duration::from_millis(30));
        }
        faults::After::Keep
    });
    let repo = Repository::open(backend, Credentials::None).unwrap();
    repo.gc(false).unwrap();
    println!("finished");
}

#[test]
fn sigkill_during_gc_then_verify_and_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let kept = gc_fixture(&root);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child_gc",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("AUTOSNAP_REPO_CRASH_DIR", &root)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut deleted = 0;
    for line in stdout.lines() {
        let line = line.unwrap();
        assert_ne!(line, "finished", "the child finished before it was killed");
        if line.starts_with("deleted ") {
            deleted += 1;
            if deleted == 3 {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let repo = Repository::open(
        Arc::new(LocalBackend::new(&root)) as Arc<dyn Backend>,
        Credentials::None,
    )
    .unwrap();
    // The killed gc's exclusive lock holds everyone off until it expires: nothing proves
    // that its process is gone (another machine may share this host name and pid).
    assert!(matches!(repo.verify(false), Err(Error::Locked { .. })));
    assert!(matches!(repo.gc(false), Err(Error::Locked { .. })));
    expire_locks(repo.backend().as_ref());
    let report = repo.verify(true).unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert!(report.chunks_unreferenced > 0, "the kill left garbage");
    for (manifest, fills) in &kept {
        let out = dir.path().join("restored.img");
        repo.restore_to_file(manifest, 0, &out).unwrap();
        assert_eq!(sha256_file(&out), sha256(&image(fills, None)));
    }
    // gc runs again and finishes the job.
    let report = repo.gc(false).unwrap();
    assert!(report.deleted > 0);
    let report = repo.verify(true).unwrap();
    assert!(
        report.is_ok() && report.chunks_unreferenced == 0,
        "{report:?}"
    );
    assert_eq!(report.archives, kept.len());
}

/// Moves every lock's times an hour into the past: what waiting for a leftover lock to
/// expire does.
fn expire_locks(backend: &dyn Backend) {
    for name in names(backend, "locks/") {
        let mut info: LockInfo = serde_json::from_slice(&backend.read(&name).unwrap()).unwrap();
        let hour = chrono::Duration::hours(1);
        info.created -= hour;
        info.refreshed -= hour;
        info.expires = info.expires.map(|e| e - hour);
        backend
            .write(&name, &serde_json::to_vec(&info).unwrap())
            .unwrap();
    }
}

fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| {
            if e.file_type().unwrap().is_dir() {
                count_files(&e.path())
            } else {
                usize::from(!e.file_name().to_string_lossy().starts_with('.'))
            }
        })
        .sum()
}

//! The crash matrix: `archive`, `forget`, `gc` and `restore`, each killed at every one of its
//! backend operations in turn (operation N and all later ones fail; a write in flight leaves a
//! torn temp file), on a local-directory repository. After each crash the repository is
//! reopened as a new process would: `verify --read-data` passes, every archive that existed
//! (and was not meant to be forgotten) restores byte for byte, and the interrupted command
//! runs again to completion with the result a clean run has.

mod common;
mod faults;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use autosnap_core::retention::{Count, KeepPolicy};
use autosnap_repo::{
    ArchiveId, Backend, Credentials, EncryptionInit, LocalBackend, LockInfo, Manifest, Repository,
    VolumeSource,
};
use chrono::{DateTime, TimeZone, Utc};
use common::*;
use faults::Crashing;

/// Lineages and their block counts: `a` is long enough for a restore of 20+ operations.
const LINEAGES: [(&str, usize); 3] = [("a", 24), ("b", 6), ("c", 6)];
const VERSIONS: u64 = 4;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

/// Version `version` of lineage `lineage`: mostly shared compressible blocks, zero blocks,
/// and one block of its own.
fn fills(lineage: usize, blocks: usize, version: u64) -> Vec<Fill> {
    (0..blocks)
        .map(|i| {
            if i as u64 == version {
                Fill::Random(1000 * lineage as u64 + 10 * version + i as u64)
            } else if i % 5 == 4 {
                Fill::Zero
            } else {
                Fill::Text(100 * lineage as u64 + i as u64)
            }
        })
        .collect()
}

fn archive(
    repo: &Repository,
    lineage: usize,
    version: u64,
) -> autosnap_repo::Result<(Manifest, Vec<Fill>)> {
    let (name, blocks) = LINEAGES[lineage];
    let fills = fills(lineage, blocks, version);
    let mut source = source(&format!("snap-{name}-{version}"));
    source.time = Some(t0() + chrono::Duration::hours(version as i64));
    let mut volume = VolumeSource::with_size_bytes((blocks * BS) as u64);
    volume.volume_id = Some(format!("vol-{name}"));
    let mut writer = repo.begin_archive(source)?;
    let v = writer.add_volume(volume)?;
    for (i, fill) in fills.iter().enumerate() {
        writer.add_block(v, i as u64, &block(*fill))?;
    }
    Ok((writer.finish()?, fills))
}

fn keep_last_one() -> KeepPolicy {
    KeepPolicy {
        last: Count::N(1),
        ..KeepPolicy::default()
    }
}

fn forget_now() -> DateTime<Utc> {
    t0() + chrono::Duration::hours(10)
}

fn open(root: &Path) -> Repository {
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(root));
    Repository::open(backend, Credentials::None).unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Moves every lock's times an hour into the past: what waiting for a crashed process's
/// lock to expire does.
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

fn restores(repo: &Repository, manifest: &Manifest, fills: &[Fill], scratch: &Path) {
    let out = scratch.join("check.img");
    repo.restore_to_file(manifest, 0, &out)
        .unwrap_or_else(|e| panic!("restore of {}: {e}", manifest.id));
    assert!(
        std::fs::read(&out).unwrap() == image(fills, None),
        "archive {} does not restore to its bytes",
        manifest.id
    );
}

/// The starting repository: every version of every lineage, and what each holds.
struct Template {
    _dir: tempfile::TempDir,
    root: PathBuf,
    archives: Vec<(Manifest, Vec<Fill>)>,
}

fn template() -> Template {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let repo = local_repo(&root, EncryptionInit::None);
    let mut archives = Vec::new();
    for version in 0..VERSIONS {
        for lineage in 0..LINEAGES.len() {
            archives.push(archive(&repo, lineage, version).unwrap());
        }
    }
    Template {
        _dir: dir,
        root,
        archives,
    }
}

/// One command of the matrix, run against `repo` (opened on a crashing backend).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    Archive,
    Forget,
    Gc,
    Restore,
}

/// Runs `command` in a "process" that crashes at operation `crash_at`; returns whether the
/// command completed and how many operations it attempted.
fn run_crashing(
    root: &Path,
    scratch: &Path,
    command: Command,
    crash_at: Option<u64>,
    newest_a: &Manifest,
) -> (bool, u64) {
    let backend = Arc::new(Crashing::new(
        Arc::new(LocalBackend::new(root)),
        Some(root.to_path_buf()),
        crash_at,
    ));
    let completed = (|| -> autosnap_repo::Result<()> {
        let repo = Repository::open(backend.clone(), Credentials::None)?;
        match command {
            Command::Archive => archive(&repo, 0, VERSIONS).map(drop),
            Command::Forget => repo.forget(&keep_last_one(), forget_now(), false).map(drop),
            Command::Gc => repo.gc(false).map(drop),
            Command::Restore => {
                let manifest = repo.read_manifest(&newest_a.id)?;
                repo.restore_to_file(&manifest, 0, &scratch.join("restored.img"))
                    .map(drop)
            }
        }
    })()
    .is_ok();
    // A crashed process never cleans up: nothing it holds is released after this point.
    (completed, backend.ops())
}

fn manifest_ids(repo: &Repository) -> BTreeSet<ArchiveId> {
    repo.list_archive_ids().unwrap().into_iter().collect()
}

/// Crashes `command` at every operation of a clean run, over a copy of `start`.
fn matrix(start: &Path, archives: &[(Manifest, Vec<Fill>)], command: Command) -> u64 {
    let scratch = tempfile::tempdir().unwrap();
    let newest_a = archives
        .iter()
        .filter(|(m, _)| m.volumes[0].source.volume_id.as_deref() == Some("vol-a"))
        .max_by_key(|(m, _)| m.time)
        .unwrap()
        .clone();
    // The clean run: its operation count and its result.
    let clean_root = scratch.path().join("clean");
    copy_dir(start, &clean_root);
    let (completed, ops) = run_crashing(&clean_root, scratch.path(), command, None, &newest_a.0);
    assert!(completed, "{command:?} fails without a crash");
    let clean_ids = manifest_ids(&open(&clean_root));
    let kept: BTreeSet<ArchiveId> = match command {
        Command::Forget => clean_ids.clone(),
        _ => archives.iter().map(|(m, _)| m.id.clone()).collect(),
    };
    assert!(ops >= 20, "{command:?} has only {ops} operations");

    for crash_at in 0..ops {
        let root = scratch.path().join(format!("crash-{crash_at}"));
        copy_dir(start, &root);
        let before = manifest_ids(&open(&root));
        let (completed, _) =
            run_crashing(&root, scratch.path(), command, Some(crash_at), &newest_a.0);
        let context = format!("{command:?} crashed at operation {crash_at} of {ops}");

        // A new process opens the repository. A crashed gc's exclusive lock holds verify off
        // until it expires (nothing proves its process is gone): wait that out first.
        let repo = open(&root);
        if command == Command::Gc {
            assert!(
                matches!(repo.verify(false), Err(autosnap_repo::Error::Locked { .. }))
                    || !names(repo.backend().as_ref(), "locks/")
                        .iter()
                        .any(|n| n.contains("-exclusive-")),
                "{context}"
            );
        }
        expire_locks(repo.backend().as_ref());
        let report = repo.verify(true).unwrap();
        assert!(report.is_ok(), "{context}: {report:?}");
        let after = manifest_ids(&repo);
        for (manifest, fills) in archives {
            if kept.contains(&manifest.id) {
                assert!(
                    after.contains(&manifest.id),
                    "{context}: lost {}",
                    manifest.id
                );
                restores(&repo, manifest, fills, scratch.path());
            }
        }
        // Manifests appear only by archive, disappear only by forget.
        match command {
            Command::Archive => assert!(after.is_superset(&before), "{context}"),
            Command::Forget => assert!(after.is_subset(&before), "{context}"),
            Command::Gc | Command::Restore => assert_eq!(after, before, "{context}"),
        }
        if command == Command::Archive && completed {
            let new: Vec<_> = after.difference(&before).cloned().collect();
            assert_eq!(new.len(), 1, "{context}");
            let manifest = repo.read_manifest(&new[0]).unwrap();
            restores(
                &repo,
                &manifest,
                &fills(0, LINEAGES[0].1, VERSIONS),
                scratch.path(),
            );
        }

        // The command runs again to completion.
        let (completed, _) = run_crashing(&root, scratch.path(), command, None, &newest_a.0);
        assert!(completed, "{context}: the rerun failed");
        let repo = open(&root);
        let report = repo.verify(true).unwrap();
        assert!(report.is_ok(), "{context}, rerun: {report:?}");
        match command {
            Command::Archive => {
                let new: Vec<_> = manifest_ids(&repo).difference(&before).cloned().collect();
                assert!(!new.is_empty(), "{context}");
                for id in new {
                    let manifest = repo.read_manifest(&id).unwrap();
                    restores(
                        &repo,
                        &manifest,
                        &fills(0, LINEAGES[0].1, VERSIONS),
                        scratch.path(),
                    );
                }
            }
            Command::Forget => assert_eq!(manifest_ids(&repo), clean_ids, "{context}"),
            Command::Gc => assert_eq!(report.chunks_unreferenced, 0, "{context}"),
            Command::Restore => assert!(
                std::fs::read(scratch.path().join("restored.img")).unwrap()
                    == image(&newest_a.1, None),
                "{context}"
            ),
        }
        std::fs::remove_dir_all(&root).unwrap();
    }
    ops
}

#[test]
fn archive_crashes_at_every_operation() {
    let template = template();
    let ops = matrix(&template.root, &template.archives, Command::Archive);
    eprintln!("archive: {ops} crash points");
}

#[test]
fn forget_crashes_at_every_operation() {
    let template = template();
    let ops = matrix(&template.root, &template.archives, Command::Forget);
    eprintln!("forget: {ops} crash points");
}

#[test]
fn gc_crashes_at_every_operation() {
    let template = template();
    // Forget first, so gc has chunks and segments to delete.
    let repo = open(&template.root);
    let plan = repo.forget(&keep_last_one(), forget_now(), false).unwrap();
    let kept: BTreeSet<ArchiveId> = plan.kept().map(|d| d.id.clone()).collect();
    let archives: Vec<_> = template
        .archives
        .iter()
        .filter(|(m, _)| kept.contains(&m.id))
        .cloned()
        .collect();
    let ops = matrix(&template.root, &archives, Command::Gc);
    eprintln!("gc: {ops} crash points");
}

#[test]
fn restore_crashes_at_every_operation() {
    let template = template();
    let ops = matrix(&template.root, &template.archives, Command::Restore);
    eprintln!("restore: {ops} crash points");
}

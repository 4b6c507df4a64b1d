//! The lock protocol under the conditions that break naive locks: a lock deleted between a
//! holder's check and its write, a lock from another machine that shares this one's name and
//! pid, a lock dated in the future, a judge with a shorter patience than the holder's, a long
//! pause, a stalled network, and a lost answer to the manifest write that commits an archive.

mod common;
mod faults;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use autosnap_repo::{
    Backend, Credentials, EncryptionInit, Error, LockKind, LockOptions, MemoryBackend, Repository,
    VolumeSource,
};
use chrono::Utc;
use common::*;
use faults::{After, Before, Hooked, OpKind};

/// A repository over a hooked memory backend.
fn hooked_repo() -> (Arc<MemoryBackend>, Arc<Hooked>, Repository) {
    let memory = Arc::new(MemoryBackend::new());
    Repository::init(memory.clone(), options(EncryptionInit::None)).unwrap();
    let hooked = Hooked::new(memory.clone());
    let repo = Repository::open(hooked.clone(), Credentials::None).unwrap();
    (memory, hooked, repo)
}

/// Stores an archive of one block, then forgets it: its chunk is garbage for gc.
fn orphan_chunk(repo: &Repository, seed: u64) -> String {
    let mut writer = repo.begin_archive(source("snap-orphan")).unwrap();
    let v = writer.add_volume(VolumeSource::ebs(1)).unwrap();
    writer.add_block(v, 0, &block(Fill::Random(seed))).unwrap();
    let manifest = writer.finish().unwrap();
    repo.backend()
        .delete(&format!("manifests/{}", manifest.id))
        .unwrap();
    let id = repo.chunk_id(&block(Fill::Random(seed)));
    let hex = id.to_hex();
    format!("chunks/{}/{hex}", &hex[..2])
}

fn raw_lock(backend: &dyn Backend, name: &str, json: serde_json::Value) {
    backend
        .write(name, &serde_json::to_vec(&json).unwrap())
        .unwrap();
}

fn hostname() -> String {
    autosnap_repo::lock::hostname()
}

#[test]
fn gc_stops_before_deleting_when_its_lock_is_taken_away() {
    let (memory, hooked, repo) = hooked_repo();
    let chunk = orphan_chunk(&repo, 1);
    // Once gc has listed the chunks it would delete, another process removes gc's lock (it
    // judged it stale: this process was suspended, or its clock is wrong). An archive may be
    // deduplicating against the orphan right now.
    let memory2 = memory.clone();
    hooked.after(move |op, name| {
        if op == OpKind::List && name == "chunks/" {
            for lock in names(&*memory2, "locks/") {
                memory2.delete(&lock).unwrap();
            }
        }
        After::Keep
    });
    let err = repo.gc(false).unwrap_err();
    assert!(matches!(err, Error::LockLost { .. }), "{err}");
    assert!(memory.raw(&chunk).is_some(), "gc deleted without its lock");
}

#[test]
fn a_refresh_never_recreates_a_lock_someone_deleted() {
    let (memory, hooked, repo) = hooked_repo();
    let lock = repo.lock(LockKind::Shared, "archive").unwrap();
    let original = lock.name().to_string();
    // Someone deletes the lock object while the refresh is under way (after the refresh's
    // first look at the lock object).
    let memory2 = memory.clone();
    let victim = original.clone();
    let fired = Arc::new(AtomicBool::new(false));
    let fired2 = fired.clone();
    hooked.after(move |op, name| {
        if name == victim && matches!(op, OpKind::Exists | OpKind::Read) {
            memory2.delete(&victim).unwrap();
            fired2.store(true, Ordering::SeqCst);
        }
        After::Keep
    });
    let _ = lock.refresh();
    hooked.clear();
    assert!(fired.load(Ordering::SeqCst), "the refresh never looked");
    assert!(
        memory.raw(&original).is_none(),
        "the refresh wrote the deleted lock object back"
    );
    // Deleted before the refresh looks: the refresh reports the loss and leaves nothing.
    let (memory, _hooked, repo) = hooked_repo();
    let lock = repo.lock(LockKind::Shared, "archive").unwrap();
    memory.delete(&lock.name().to_string()).unwrap();
    let err = lock.refresh().unwrap_err();
    assert!(matches!(err, Error::LockLost { .. }), "{err}");
    drop(lock);
    assert!(names(&*memory, "locks/").is_empty());
}

#[test]
fn a_fresh_lock_with_this_hosts_name_and_a_dead_pid_is_respected() {
    // EC2's default host names repeat across VPCs, and containers share pids: a lock with this
    // host's name and a pid that does not run here may belong to a live process elsewhere.
    let (memory, _hooked, repo) = hooked_repo();
    let now = Utc::now();
    raw_lock(
        &*memory,
        "locks/20240101T000000Z-shared-00000000000000aa",
        serde_json::json!({
            "kind": "shared", "purpose": "archive", "host": hostname(), "pid": u32::MAX - 1,
            "created": now, "refreshed": now,
            "expires": now + chrono::Duration::minutes(30),
        }),
    );
    let err = repo.gc(false).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
}

#[test]
fn a_lock_dated_far_in_the_future_does_not_block_forever() {
    let (memory, _hooked, repo) = hooked_repo();
    let future = Utc::now() + chrono::Duration::days(400);
    raw_lock(
        &*memory,
        "locks/20990101T000000Z-shared-00000000000000bb",
        serde_json::json!({
            "kind": "shared", "purpose": "archive", "host": "elsewhere", "pid": 7,
            "created": future, "refreshed": future,
            "expires": future + chrono::Duration::minutes(30),
        }),
    );
    let report = repo.gc(false).unwrap();
    assert_eq!(report.stale_locks_removed, 1);

    // Within the clock-skew allowance a lock from the future is live.
    let soon = Utc::now() + chrono::Duration::seconds(60);
    raw_lock(
        &*memory,
        "locks/20990101T000000Z-shared-00000000000000cc",
        serde_json::json!({
            "kind": "shared", "purpose": "archive", "host": "elsewhere", "pid": 7,
            "created": soon, "refreshed": soon,
            "expires": soon + chrono::Duration::minutes(30),
        }),
    );
    let err = repo.gc(false).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
}

#[test]
fn a_lock_lives_as_long_as_its_holder_declared_not_as_the_judge_likes() {
    let (memory, _hooked, repo) = hooked_repo();
    let chunk = orphan_chunk(&repo, 2);
    let mut writer = repo.begin_archive(source("snap-live")).unwrap();
    let v = writer.add_volume(VolumeSource::ebs(1)).unwrap();
    // The archive deduplicates against the orphan…
    assert!(!writer.add_block(v, 0, &block(Fill::Random(2))).unwrap().new);
    // …and a gc configured with a short stale limit must still respect the archive's lock,
    // which its holder declared valid for 30 minutes.
    let impatient = repo.clone().with_lock_options(LockOptions {
        stale_after: Duration::from_millis(1),
        ..LockOptions::default()
    });
    std::thread::sleep(Duration::from_millis(5));
    let err = impatient.gc(false).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    assert!(err.to_string().contains("expires 30 min after"), "{err}");
    assert!(memory.raw(&chunk).is_some());
    writer.finish().unwrap();
    assert!(repo.verify(true).unwrap().is_ok());
}

#[test]
fn a_long_pause_in_an_archive_keeps_its_lock_alive() {
    let (memory, _hooked, repo) = hooked_repo();
    let repo = repo.with_lock_options(LockOptions {
        stale_after: Duration::from_millis(600),
        refresh_every: Duration::from_millis(40),
        ..LockOptions::default()
    });
    let chunk = orphan_chunk(&repo, 3);
    let mut writer = repo.begin_archive(source("snap-pause")).unwrap();
    let v = writer.add_volume(VolumeSource::ebs(2)).unwrap();
    assert!(!writer.add_block(v, 0, &block(Fill::Random(3))).unwrap().new);
    // The caller does nothing for more than twice the lock's lifetime (a long
    // ListChangedBlocks, a throttled API): the lock must be kept alive meanwhile.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1500) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let err = repo.gc(false).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    assert!(memory.raw(&chunk).is_some());
    writer.add_block(v, 1, &block(Fill::Random(4))).unwrap();
    let manifest = writer.finish().unwrap();
    assert_eq!(manifest.stats.reused_chunks, 1);
    assert!(repo.verify(true).unwrap().is_ok());
}

#[test]
fn an_archive_whose_lock_cannot_be_refreshed_writes_no_manifest() {
    // The network to the lock objects stalls (every lock write fails) for longer than the
    // lock's lifetime: others may judge it stale, so the archive must stop.
    let (memory, hooked, repo) = hooked_repo();
    let repo = repo.with_lock_options(LockOptions {
        stale_after: Duration::from_millis(400),
        refresh_every: Duration::from_millis(40),
        ..LockOptions::default()
    });
    let mut writer = repo.begin_archive(source("snap-stalled")).unwrap();
    let v = writer.add_volume(VolumeSource::ebs(2)).unwrap();
    writer.add_block(v, 0, &block(Fill::Random(5))).unwrap();
    hooked.before(|op, name| {
        if name.starts_with("locks/") && op.writes() {
            Before::Fail("connection timed out")
        } else {
            Before::Run
        }
    });
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(700) {
        std::thread::sleep(Duration::from_millis(50));
    }
    hooked.clear();
    let err = writer.add_block(v, 1, &block(Fill::Random(6))).unwrap_err();
    assert!(matches!(err, Error::LockLost { .. }), "{err}");
    let err = writer.finish().unwrap_err();
    assert!(matches!(err, Error::LockLost { .. }), "{err}");
    assert!(names(&*memory, "manifests/").is_empty());
    assert!(
        names(&*memory, "locks/").is_empty(),
        "lock released on drop"
    );
}

fn one_block_archive(repo: &Repository) -> autosnap_repo::Result<autosnap_repo::Manifest> {
    let mut writer = repo.begin_archive(source("snap-commit"))?;
    let v = writer.add_volume(VolumeSource::ebs(1))?;
    writer.add_block(v, 0, &block(Fill::Random(9)))?;
    writer.finish()
}

#[test]
fn a_committed_archive_whose_answer_was_lost_is_reported_committed() {
    // The manifest write reached the store, but its answer was lost.
    let (memory, hooked, repo) = hooked_repo();
    hooked.after(|op, name| {
        if op == OpKind::Create && name.starts_with("manifests/") {
            After::LoseResponse
        } else {
            After::Keep
        }
    });
    let manifest = one_block_archive(&repo).unwrap();
    hooked.clear();
    assert_eq!(repo.read_manifest(&manifest.id).unwrap(), manifest);

    // A retried request that met its own first attempt answers "already exists".
    hooked.after(|op, name| {
        if op == OpKind::Create && name.starts_with("manifests/") {
            After::AnswerExisted
        } else {
            After::Keep
        }
    });
    let manifest = one_block_archive(&repo).unwrap();
    hooked.clear();
    assert_eq!(repo.read_manifest(&manifest.id).unwrap(), manifest);
    assert_eq!(names(&*memory, "manifests/").len(), 2);
    assert!(names(&*memory, "locks/").is_empty());

    // The write never happened: the archive failed, and says so.
    let attempts = Arc::new(AtomicUsize::new(0));
    let attempts2 = attempts.clone();
    hooked.before(move |op, name| {
        if op == OpKind::Create && name.starts_with("manifests/") {
            attempts2.fetch_add(1, Ordering::SeqCst);
            Before::Fail("connection reset by peer")
        } else {
            Before::Run
        }
    });
    let err = one_block_archive(&repo).unwrap_err();
    hooked.clear();
    assert!(matches!(err, Error::Backend(_)), "{err}");
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
    assert_eq!(names(&*memory, "manifests/").len(), 2);
}

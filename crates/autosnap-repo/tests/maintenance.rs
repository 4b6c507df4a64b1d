//! verify, forget, gc and the lock protocol between gc and archive.

mod common;

use std::time::Duration;

use autosnap_core::retention::{Count, KeepPolicy};
use autosnap_repo::{
    EncryptionInit, Error, LockKind, LockOptions, Manifest, Repository, VolumeSource,
};
use chrono::{DateTime, Utc};
use common::*;

/// Archives a 4-block volume of `lineage` whose blocks are `fills`, at `time`.
fn archive(repo: &Repository, lineage: &str, time: &str, fills: &[Fill]) -> Manifest {
    let mut s = source(&format!("snap-{lineage}-{time}"));
    s.time = Some(time.parse().unwrap());
    let mut writer = repo.begin_archive(s).unwrap();
    let mut volume = VolumeSource::with_size_bytes((fills.len() * BS) as u64);
    volume.volume_id = Some(lineage.to_owned());
    let v = writer.add_volume(volume).unwrap();
    for (i, fill) in fills.iter().enumerate() {
        writer.add_block(v, i as u64, &block(*fill)).unwrap();
    }
    writer.finish().unwrap()
}

fn chunk_name(repo: &Repository, fill: Fill) -> String {
    let id = repo.chunk_id(&block(fill));
    format!("chunks/{}/{}", &id.to_hex()[..2], id.to_hex())
}

#[test]
fn verify_names_the_archives_a_corrupt_chunk_affects() {
    use Fill::*;
    for encryption in [EncryptionInit::None, passphrase("pw")] {
        let (backend, repo) = memory_repo(encryption);
        let a = archive(
            &repo,
            "vol-a",
            "2024-01-01T00:00:00Z",
            &[Random(1), Random(2)],
        );
        let b = archive(
            &repo,
            "vol-b",
            "2024-01-02T00:00:00Z",
            &[Random(2), Random(3)],
        );
        let _c = archive(&repo, "vol-c", "2024-01-03T00:00:00Z", &[Random(4)]);
        let clean = repo.verify(true).unwrap();
        assert!(clean.is_ok(), "{clean:?}");
        assert_eq!(
            (clean.archives, clean.chunks_stored, clean.chunks_read),
            (3, 4, 4)
        );

        // Corrupt the chunk a and b share.
        let shared = chunk_name(&repo, Random(2));
        let mut raw = backend.raw(&shared).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        backend.put_raw(&shared, raw);

        // Without reading data the structure is intact.
        assert!(repo.verify(false).unwrap().is_ok());
        let report = repo.verify(true).unwrap();
        assert!(!report.is_ok());
        assert_eq!(report.corrupt_chunks.len(), 1);
        assert_eq!(report.corrupt_chunks[0].object, shared);
        // Archives are listed sorted by id (ids made in the same second sort by their
        // random suffix).
        let mut both = vec![a.id.clone(), b.id.clone()];
        both.sort();
        assert_eq!(report.corrupt_chunks[0].archives, both);
        assert_eq!(
            report.damaged_archives().into_iter().collect::<Vec<_>>(),
            both
        );

        // A missing chunk is found without reading data, with its archive.
        autosnap_repo::Backend::delete(&*backend, &chunk_name(&repo, Random(3))).unwrap();
        let report = repo.verify(false).unwrap();
        assert_eq!(report.missing_chunks.len(), 1);
        assert_eq!(report.missing_chunks[0].archives, vec![b.id.clone()]);

        // A broken block map names its archives too.
        let segment = &a.volumes[0].block_map.segments[0];
        let name = format!(
            "blockmaps/{}/{}",
            &segment.id.to_hex()[..2],
            segment.id.to_hex()
        );
        let mut raw = backend.raw(&name).unwrap();
        raw[5] ^= 1;
        backend.put_raw(&name, raw);
        let report = repo.verify(false).unwrap();
        assert_eq!(report.corrupt_blockmaps.len(), 1);
        assert_eq!(report.corrupt_blockmaps[0].archives, vec![a.id.clone()]);
    }
}

fn keep_last(n: u32) -> KeepPolicy {
    KeepPolicy {
        last: Count::N(n),
        ..KeepPolicy::default()
    }
}

#[test]
fn forget_applies_retention_per_lineage_with_reasons() {
    use Fill::*;
    let (_backend, repo) = memory_repo(EncryptionInit::None);
    let a1 = archive(&repo, "vol-a", "2024-01-01T00:00:00Z", &[Random(1)]);
    let a2 = archive(&repo, "vol-a", "2024-01-02T00:00:00Z", &[Random(2)]);
    let a3 = archive(&repo, "vol-a", "2024-01-03T00:00:00Z", &[Random(3)]);
    let b1 = archive(&repo, "vol-b", "2024-01-01T00:00:00Z", &[Random(4)]);
    let now: DateTime<Utc> = "2024-01-10T00:00:00Z".parse().unwrap();

    let mut policy = keep_last(2);
    policy.daily = Count::N(1);
    let plan = repo.forget(&policy, now, true).unwrap();
    assert!(plan.dry_run);
    assert_eq!(plan.policy, "keep last 2, daily 1");
    let rows: Vec<(String, String, bool, Vec<String>)> = plan
        .groups
        .iter()
        .flat_map(|g| {
            g.decisions.iter().map(|d| {
                (
                    g.lineage.clone(),
                    d.id.to_string(),
                    d.keep,
                    d.reasons.clone(),
                )
            })
        })
        .collect();
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        rows,
        vec![
            (
                "vol-a".into(),
                a3.id.to_string(),
                true,
                s(&["last snapshot", "daily snapshot"])
            ),
            (
                "vol-a".into(),
                a2.id.to_string(),
                true,
                s(&["last snapshot"])
            ),
            ("vol-a".into(), a1.id.to_string(), false, s(&[])),
            (
                "vol-b".into(),
                b1.id.to_string(),
                true,
                s(&["last snapshot", "daily snapshot"])
            ),
        ]
    );
    assert_eq!(
        repo.list_archive_ids().unwrap().len(),
        4,
        "dry run deletes nothing"
    );

    let plan = repo.forget(&policy, now, false).unwrap();
    assert_eq!(
        plan.removed().map(|d| d.id.clone()).collect::<Vec<_>>(),
        vec![a1.id.clone()]
    );
    assert_eq!(repo.list_archive_ids().unwrap().len(), 3);

    // An empty policy is refused.
    let err = repo.forget(&KeepPolicy::default(), now, true).unwrap_err();
    assert!(matches!(err, Error::Policy(_)), "{err}");
}

#[test]
fn forget_keeps_tagged_archives() {
    let (_backend, repo) = memory_repo(EncryptionInit::None);
    let mut s = source("snap-tagged");
    s.time = Some("2024-01-01T00:00:00Z".parse().unwrap());
    s.tags.insert("keep".into(), "forever".into());
    let mut writer = repo.begin_archive(s).unwrap();
    let mut v = VolumeSource::ebs(1);
    v.volume_id = Some("vol-a".into());
    writer.add_volume(v).unwrap();
    let tagged = writer.finish().unwrap();
    archive(&repo, "vol-a", "2024-01-05T00:00:00Z", &[Fill::Random(1)]);
    let mut policy = keep_last(1);
    policy.keep_tags = vec![vec!["keep=forever".into()]];
    let plan = repo.forget(&policy, Utc::now(), true).unwrap();
    let decision = plan.kept().find(|d| d.id == tagged.id).unwrap();
    assert_eq!(
        decision.reasons,
        vec!["has tags [keep=forever]".to_string()]
    );
}

#[test]
fn gc_after_forget_deletes_only_unreferenced_chunks() {
    use Fill::*;
    let dir = tempfile::tempdir().unwrap();
    let (backend, repo) = memory_repo(passphrase("pw"));
    let old = archive(
        &repo,
        "vol-a",
        "2024-01-01T00:00:00Z",
        &[Random(1), Random(2), Text(3)],
    );
    let new = archive(
        &repo,
        "vol-a",
        "2024-01-02T00:00:00Z",
        &[Random(1), Random(5), Text(3)],
    );
    assert_eq!(names(&*backend, "chunks/").len(), 4);
    let old_segments = old.volumes[0].block_map.segments.clone();

    // Nothing is garbage yet.
    let report = repo.gc(false).unwrap();
    assert_eq!((report.chunks_unreferenced, report.deleted), (0, 0));

    repo.forget(&keep_last(1), Utc::now(), false).unwrap();
    let dry = repo.gc(true).unwrap();
    assert_eq!(dry.chunks_unreferenced, 1);
    assert_eq!(dry.blockmaps_unreferenced, old_segments.len());
    assert_eq!(dry.deleted, 0);
    assert_eq!(
        names(&*backend, "chunks/").len(),
        4,
        "dry run deletes nothing"
    );

    let report = repo.gc(false).unwrap();
    assert_eq!(report.archives, 1);
    assert_eq!(report.chunks_unreferenced, 1);
    assert_eq!(report.deleted, 1 + old_segments.len());
    let left = names(&*backend, "chunks/");
    assert_eq!(left.len(), 3);
    assert!(
        !left.contains(&chunk_name(&repo, Random(2))),
        "only the chunk unique to the old archive"
    );
    for kept in [Random(1), Random(5), Text(3)] {
        assert!(left.contains(&chunk_name(&repo, kept)));
    }
    assert!(repo.verify(true).unwrap().is_ok());
    let out = dir.path().join("new.img");
    repo.restore_to_file(&new, 0, &out).unwrap();
    assert_eq!(
        sha256_file(&out),
        sha256(&image(&[Random(1), Random(5), Text(3)], None))
    );
}

#[test]
fn gc_waits_for_a_running_archive_and_keeps_what_it_reuses() {
    use Fill::*;
    let (backend, repo) = memory_repo(EncryptionInit::None);
    // An orphan chunk: stored by an interrupted archive, referenced by nothing.
    repo.put_chunk(&block(Random(7))).unwrap();

    // An archive starts and reuses the orphan (has_chunk is true, nothing is uploaded)…
    let mut writer = repo.begin_archive(source("snap-running")).unwrap();
    let v = writer
        .add_volume(VolumeSource::with_size_bytes(2 * BS as u64))
        .unwrap();
    let added = writer.add_block(v, 0, &block(Random(7))).unwrap();
    assert!(!added.new);

    // …so gc, which would delete the orphan, must not run now.
    let err = repo.gc(false).unwrap_err();
    match &err {
        Error::Locked { holder } => {
            assert_eq!(holder.info.kind, LockKind::Shared);
            assert_eq!(holder.info.purpose, "archive");
        }
        other => panic!("{other:?}"),
    }
    assert!(backend.raw(&chunk_name(&repo, Random(7))).is_some());

    // A gc that waits runs once the archive has written its manifest, and keeps the chunk.
    let waiting = repo.clone().with_lock_options(LockOptions {
        wait: Duration::from_secs(30),
        retry_every: Duration::from_millis(20),
        ..LockOptions::default()
    });
    let gc = std::thread::spawn(move || waiting.gc(false));
    std::thread::sleep(Duration::from_millis(100));
    writer.add_block(v, 1, &block(Random(8))).unwrap();
    let manifest = writer.finish().unwrap();
    let report = gc.join().unwrap().unwrap();
    assert_eq!(report.chunks_unreferenced, 0);
    assert_eq!(report.archives, 1);
    assert!(repo.verify(true).unwrap().is_ok());
    assert_eq!(manifest.stats.reused_chunks, 1);

    // And while gc holds the exclusive lock, an archive cannot start.
    let gc_lock = repo.lock(LockKind::Exclusive, "gc").unwrap();
    let err = repo.begin_archive(source("snap-late")).unwrap_err();
    assert!(err.to_string().contains("exclusive lock for gc"), "{err}");
    drop(gc_lock);
    repo.begin_archive(source("snap-late")).unwrap();
}

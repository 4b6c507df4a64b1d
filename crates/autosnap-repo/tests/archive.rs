//! Archive, restore, dedup and incremental archives.

mod common;

use std::sync::Arc;

use autosnap_repo::{
    ArchiveReader, BlockRef, EncryptionInit, Error, ImportOptions, Manifest, Repository,
    VolumeSource,
};
use common::*;

fn import(repo: &Repository, bytes: &[u8], dir: &std::path::Path, name: &str) -> Manifest {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    repo.import_file(&path, ImportOptions::default()).unwrap()
}

#[test]
fn raw_image_round_trips_byte_for_byte() {
    use Fill::*;
    let fills = [
        Random(1),
        Zero,
        Text(2),
        Zero,
        Zero,
        Random(3),
        Random(1),
        Text(4),
        Zero,
        Random(5),
        Zero,
        Random(6),
        Text(7),
    ];
    // Not a multiple of the block size: the tail block is partial.
    let len = 12 * BS + 1000;
    let bytes = image(&fills, Some(len));
    for encryption in [EncryptionInit::None, passphrase("pw")] {
        let dir = tempfile::tempdir().unwrap();
        let repo = local_repo(&dir.path().join("repo"), encryption);
        let manifest = import(&repo, &bytes, dir.path(), "disk.img");

        let volume = &manifest.volumes[0];
        assert_eq!(volume.source.size_bytes, len as u64);
        // 8 non-zero blocks present (the zero ones were never "written"), 7 distinct.
        assert_eq!(manifest.stats.blocks, 8);
        assert_eq!(manifest.stats.zero_blocks, 0);
        assert_eq!(manifest.stats.new_chunks, 7);
        assert_eq!(manifest.stats.reused_chunks, 1);
        assert_eq!(manifest.stats.size_bytes, 8 * BS as u64);
        assert_eq!(manifest.stats.new_bytes, 7 * BS as u64);
        assert!(
            manifest.stats.new_stored_bytes < 7 * BS as u64,
            "text blocks compress"
        );
        // Segments of 4 blocks: indexes 0..13 span 4 segments.
        assert_eq!(volume.block_map.segments.len(), 4);

        let reader = ArchiveReader::new(&repo, manifest.clone());
        let indexes: Vec<u64> = reader.blocks(0).unwrap().map(|b| b.unwrap().0).collect();
        assert_eq!(indexes, vec![0, 2, 5, 6, 7, 9, 11, 12]);

        let out = dir.path().join("restored.img");
        let report = repo.restore_to_file(&manifest, 0, &out).unwrap();
        assert_eq!(report.size_bytes, len as u64);
        assert_eq!(report.blocks_written, 8);
        assert_eq!(sha256_file(&out), sha256(&bytes));
        // No temp file left beside it.
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        assert!(repo.verify(true).unwrap().is_ok());
    }
}

#[test]
fn restore_replaces_an_existing_file_only_when_complete() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, repo) = memory_repo(EncryptionInit::None);
    let manifest = import(
        &repo,
        &image(&[Fill::Random(1), Fill::Random(2)], None),
        dir.path(),
        "a.img",
    );
    let out = dir.path().join("out.img");
    std::fs::write(&out, b"previous content").unwrap();
    // Break one chunk: the restore fails and the old file stays untouched.
    let chunk = names(&*backend, "chunks/")[0].clone();
    let mut raw = backend.raw(&chunk).unwrap();
    raw[10] ^= 1;
    backend.put_raw(&chunk, raw);
    let err = repo.restore_to_file(&manifest, 0, &out).unwrap_err();
    assert!(matches!(err, Error::CorruptChunk { .. }), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), b"previous content");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        2,
        "no temp file left"
    );
}

#[test]
fn identical_blocks_are_stored_once_across_images() {
    use Fill::*;
    let dir = tempfile::tempdir().unwrap();
    let (backend, repo) = memory_repo(EncryptionInit::None);
    let shared = [Random(10), Random(11), Text(12), Random(13), Random(14)];
    let a: Vec<Fill> = shared
        .iter()
        .copied()
        .chain([Random(20), Random(21)])
        .collect();
    let b: Vec<Fill> = [Random(30), Zero]
        .into_iter()
        .chain(shared)
        .chain([Text(31)])
        .collect();

    let ma = import(&repo, &image(&a, None), dir.path(), "a.img");
    assert_eq!(ma.stats.new_chunks, 7);
    let mb = import(&repo, &image(&b, None), dir.path(), "b.img");
    assert_eq!(mb.stats.new_chunks, 2, "only the 2 blocks unique to b");
    assert_eq!(mb.stats.reused_chunks, 5);
    assert_eq!(mb.stats.new_bytes, 2 * BS as u64);
    assert_eq!(names(&*backend, "chunks/").len(), 9);

    // Both restore.
    for (manifest, fills) in [(&ma, &a), (&mb, &b)] {
        let out = dir.path().join("out.img");
        repo.restore_to_file(manifest, 0, &out).unwrap();
        assert_eq!(sha256_file(&out), sha256(&image(fills, None)));
    }
    let archives = repo.list_archives().unwrap();
    assert_eq!(archives.len(), 2);
    assert_eq!(archives[0].id, ma.id, "oldest first");
}

#[test]
fn incremental_archive_stores_only_changed_blocks() {
    use Fill::*;
    let dir = tempfile::tempdir().unwrap();
    let (backend, repo) = memory_repo(EncryptionInit::None);
    // 16 blocks = 4 segments of 4.
    let mut fills: Vec<Fill> = (0..16).map(|i| Random(100 + i)).collect();
    fills[5] = Zero; // never written
    let mut volume = VolumeSource::ebs(0);
    volume.size_bytes = 16 * BS as u64;
    volume.volume_id = Some("vol-1".into());

    let mut writer = repo.begin_archive(source("snap-1")).unwrap();
    let v = writer.add_volume(volume.clone()).unwrap();
    for (i, fill) in fills.iter().enumerate() {
        if *fill != Zero {
            writer.add_block(v, i as u64, &block(*fill)).unwrap();
        }
    }
    let parent = writer.finish().unwrap();
    assert_eq!(parent.stats.blocks, 15);

    // Changes: block 1 rewritten, block 2 became zeros (still present), block 5 written for
    // the first time, block 14 removed. Segment 2 (blocks 8..12) is untouched.
    let chunks_before = names(&*backend, "chunks/").len();
    let chunk_reads_before = backend.reads_under("chunks/");
    let segment_reads_before = backend.reads_under("blockmaps/");
    let mut writer = repo.begin_archive(source("snap-2")).unwrap();
    let v = writer.add_volume_incremental(volume, &parent, 0).unwrap();
    writer.add_block(v, 1, &block(Random(201))).unwrap();
    writer.add_block(v, 2, &block(Zero)).unwrap();
    writer.add_block(v, 5, &block(Random(205))).unwrap();
    writer.remove_block(v, 14).unwrap();
    let child = writer.finish().unwrap();

    assert_eq!(child.parent.as_ref(), Some(&parent.id));
    assert_eq!(child.stats.blocks_added, 3);
    assert_eq!(child.stats.new_chunks, 2);
    assert_eq!(child.stats.new_bytes, 2 * BS as u64);
    assert_eq!(child.stats.blocks, 15, "15 - 1 removed + 1 new");
    assert_eq!(child.stats.zero_blocks, 1);
    assert_eq!(names(&*backend, "chunks/").len(), chunks_before + 2);
    // No chunk was read, and of the block maps only the segments being changed (0, 1, 3):
    // untouched segment 2 is shared by reference. (The lock protocol reads its own objects.)
    assert_eq!(backend.reads_under("chunks/") - chunk_reads_before, 0);
    let segment_reads = backend.reads_under("blockmaps/") - segment_reads_before;
    assert!(segment_reads <= 3, "{segment_reads} segment reads");
    assert_eq!(
        parent.volumes[0].block_map.segments[2],
        child.volumes[0].block_map.segments[2]
    );
    assert_ne!(
        parent.volumes[0].block_map.segments[0].id,
        child.volumes[0].block_map.segments[0].id
    );

    // The child restores to the changed image; the parent is unchanged.
    let mut expected = fills.clone();
    expected[1] = Random(201);
    expected[2] = Zero;
    expected[5] = Random(205);
    expected[14] = Zero;
    let out = dir.path().join("child.img");
    repo.restore_to_file(&child, 0, &out).unwrap();
    assert_eq!(sha256_file(&out), sha256(&image(&expected, None)));
    let entries: Vec<(u64, BlockRef)> = ArchiveReader::new(&repo, child.clone())
        .blocks(0)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        entries[2],
        (2, BlockRef::Zero),
        "a block that became zeros stays present"
    );
    assert!(!entries.iter().any(|(i, _)| *i == 14));
    repo.restore_to_file(&parent, 0, &out).unwrap();
    assert_eq!(sha256_file(&out), sha256(&image(&fills, None)));

    // Forgetting the parent does not break the child: manifests are self-contained.
    let policy = autosnap_core::retention::KeepPolicy {
        last: autosnap_core::retention::Count::N(1),
        ..Default::default()
    };
    let plan = repo.forget(&policy, chrono::Utc::now(), false).unwrap();
    assert_eq!(plan.removed().count(), 1);
    repo.gc(false).unwrap();
    repo.restore_to_file(&child, 0, &out).unwrap();
    assert_eq!(sha256_file(&out), sha256(&image(&expected, None)));
    assert!(repo.verify(true).unwrap().is_ok());
}

#[test]
fn blocks_from_many_threads_within_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let (_backend, repo) = memory_repo(EncryptionInit::None);
    let count = 24u64;
    let fills: Vec<Fill> = (0..count).map(|i| Fill::Random(500 + i)).collect();
    let mut writer = repo.begin_archive(source("snap-mt")).unwrap();
    let v = writer
        .add_volume(VolumeSource::with_size_bytes(count * BS as u64))
        .unwrap();
    let writer = Arc::new(writer);
    // 4 threads take interleaved indexes: arrival order is mixed, but within the window.
    std::thread::scope(|scope| {
        for t in 0..4u64 {
            let writer = writer.clone();
            let fills = &fills;
            scope.spawn(move || {
                for i in (t..count).step_by(4) {
                    writer.add_block(v, i, &block(fills[i as usize])).unwrap();
                }
            });
        }
    });
    let manifest = Arc::try_unwrap(writer).unwrap().finish().unwrap();
    assert_eq!(manifest.stats.blocks, count);
    let out = dir.path().join("mt.img");
    repo.restore_to_file(&manifest, 0, &out).unwrap();
    assert_eq!(sha256_file(&out), sha256(&image(&fills, None)));
}

#[test]
fn writer_rejects_bad_blocks() {
    let (_backend, repo) = memory_repo(EncryptionInit::None);
    let mut writer = repo.begin_archive(source("snap-bad")).unwrap();
    let v = writer
        .add_volume(VolumeSource::with_size_bytes(40 * BS as u64))
        .unwrap();
    let data = block(Fill::Random(1));
    assert!(matches!(
        writer.add_block(v, 40, &data),
        Err(Error::BlockOutOfRange { index: 40, .. })
    ));
    assert!(matches!(
        writer.add_block(v, 0, &data[..100]),
        Err(Error::BadBlockLength { len: 100, .. })
    ));
    assert!(matches!(
        writer.add_block(7, 0, &data),
        Err(Error::NoSuchVolume { .. })
    ));
}

#[test]
fn late_blocks_reopen_written_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, repo) = memory_repo(EncryptionInit::None);
    let fills: Vec<Fill> = (0..24).map(|i| Fill::Random(700 + i)).collect();
    let mut writer = repo.begin_archive(source("snap-late")).unwrap();
    let v = writer
        .add_volume(VolumeSource::with_size_bytes(24 * BS as u64))
        .unwrap();
    // Segments of 4 blocks. Everything but blocks 1, 2 and 13 in order…
    for i in (0..24).filter(|i| ![1, 2, 13].contains(i)) {
        writer.add_block(v, i, &block(fills[i as usize])).unwrap();
    }
    // …which arrive long after their segments were written (stragglers).
    let segments_before = names(&*backend, "blockmaps/").len();
    writer.add_block(v, 2, &block(fills[2])).unwrap();
    writer.add_block(v, 1, &block(fills[1])).unwrap();
    writer.add_block(v, 13, &block(fills[13])).unwrap();
    assert!(
        names(&*backend, "blockmaps/").len() > segments_before,
        "segments rewritten"
    );
    let manifest = writer.finish().unwrap();
    assert_eq!(manifest.stats.blocks, 24);
    let firsts: Vec<u64> = manifest.volumes[0]
        .block_map
        .segments
        .iter()
        .map(|s| s.first_index)
        .collect();
    assert_eq!(firsts, (0..6).map(|s| s * 4).collect::<Vec<_>>());
    let out = dir.path().join("late.img");
    repo.restore_to_file(&manifest, 0, &out).unwrap();
    assert_eq!(sha256_file(&out), sha256(&image(&fills, None)));
    // The superseded segments are garbage for gc, nothing else.
    let report = repo.gc(false).unwrap();
    assert_eq!(report.chunks_unreferenced, 0);
    assert!(report.blockmaps_unreferenced >= 2);
    assert!(repo.verify(true).unwrap().is_ok());
}

#[test]
fn archives_list_oldest_first_by_source_time() {
    let (_backend, repo) = memory_repo(EncryptionInit::None);
    let times = [
        "2024-03-01T00:00:00Z",
        "2024-01-01T00:00:00Z",
        "2024-02-01T00:00:00Z",
    ];
    for (i, t) in times.iter().enumerate() {
        let mut s = source(&format!("snap-{i}"));
        s.time = Some(t.parse().unwrap());
        let mut writer = repo.begin_archive(s).unwrap();
        writer.add_volume(VolumeSource::ebs(1)).unwrap();
        writer.finish().unwrap();
    }
    let listed: Vec<String> = repo
        .list_archives()
        .unwrap()
        .iter()
        .map(|m| m.source.id.clone())
        .collect();
    assert_eq!(listed, ["snap-1", "snap-2", "snap-0"]);
}

#[test]
fn multi_volume_image_archive_keeps_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let (_backend, repo) = memory_repo(EncryptionInit::None);
    let mut s = autosnap_repo::ArchiveSource::new(autosnap_repo::SourceKind::Image, "ami-123");
    s.image_metadata = Some(serde_json::json!({"name": "web", "root_device_name": "/dev/xvda"}));
    s.tags.insert("env".into(), "prod".into());
    let mut writer = repo.begin_archive(s).unwrap();
    let mut root = VolumeSource::ebs(0);
    root.size_bytes = 3 * BS as u64;
    root.device_name = Some("/dev/xvda".into());
    root.volume_id = Some("vol-root".into());
    let mut data = root.clone();
    data.device_name = Some("/dev/xvdb".into());
    data.volume_id = Some("vol-data".into());
    let r = writer.add_volume(root).unwrap();
    let d = writer.add_volume(data).unwrap();
    writer.add_block(r, 0, &block(Fill::Random(1))).unwrap();
    writer.add_block(d, 2, &block(Fill::Random(2))).unwrap();
    let manifest = writer.finish().unwrap();
    assert_eq!(manifest.lineage(), "vol-data+vol-root");
    let read = repo.read_manifest(&manifest.id).unwrap();
    assert_eq!(read, manifest);
    assert_eq!(read.source.image_metadata.as_ref().unwrap()["name"], "web");
    let out = dir.path().join("data.img");
    repo.restore_to_file(&manifest, 1, &out).unwrap();
    let mut expected = vec![0u8; 2 * BS];
    expected.extend(block(Fill::Random(2)));
    assert_eq!(std::fs::read(&out).unwrap(), expected);
}

#[test]
fn repository_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Repository>();
    assert_send_sync::<autosnap_repo::ArchiveWriter>();
    assert_send_sync::<autosnap_repo::ArchiveReader>();
}

#[test]
fn a_16_tib_volume_costs_only_what_is_present() {
    let (_backend, repo) = memory_repo(EncryptionInit::None);
    let volume = VolumeSource::ebs(16 * 1024); // 16 TiB: 33,554,432 block indexes
    let last = (16u64 << 40) / BS as u64 - 1;
    // 32 blocks spread over the volume, each in its own segment, and the very last index.
    let indexes: Vec<u64> = (0..32).map(|i| i * (last / 32)).collect();
    let data = block(Fill::Random(9));

    let mut writer = repo.begin_archive(source("snap-huge")).unwrap();
    let v = writer.add_volume(volume.clone()).unwrap();
    for &i in &indexes {
        writer.add_block(v, i, &data).unwrap();
    }
    writer.add_block(v, last, &block(Fill::Zero)).unwrap();
    let parent = writer.finish().unwrap();
    assert_eq!(parent.volumes[0].block_count(), last + 1);
    assert_eq!(parent.stats.blocks, 33);
    assert_eq!(parent.stats.new_chunks, 1);
    assert_eq!(parent.volumes[0].block_map.segments.len(), 33);

    // An incremental archive changing one block rewrites one segment, shares 32.
    let mut writer = repo.begin_archive(source("snap-huge-2")).unwrap();
    let v = writer.add_volume_incremental(volume, &parent, 0).unwrap();
    writer
        .add_block(v, indexes[7], &block(Fill::Random(10)))
        .unwrap();
    let child = writer.finish().unwrap();
    let (old, new) = (
        &parent.volumes[0].block_map.segments,
        &child.volumes[0].block_map.segments,
    );
    assert_eq!(old.len(), new.len());
    assert_eq!(old.iter().zip(new).filter(|(a, b)| a != b).count(), 1);

    let read: Vec<u64> = ArchiveReader::new(&repo, child)
        .blocks(0)
        .unwrap()
        .map(|b| b.unwrap().0)
        .collect();
    let mut expected = indexes.clone();
    expected.push(last);
    assert_eq!(read, expected);
}

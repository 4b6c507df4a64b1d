//! The archive and restore workflows against in-memory fakes (no test bed, no SDK): round
//! trips, incremental archives, partial failures, crash points and rollbacks.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use autosnap_engine::ports::Repo;
use autosnap_engine::{
    archive_snapshot, plan_image_archive, plan_image_restore, plan_snapshot_archive, restore_image,
    restore_to_snapshot, run_archive, ArchiveError, NoProgress, SnapshotTarget, BLOCK_SIZE,
};
use support::*;

const CONCURRENCY: usize = 4;

/// Both ways a repository is reached: through its blocking backend (a local directory) and
/// through async object calls (S3).
fn both_paths(backend: &Arc<autosnap_repo::MemoryBackend>) -> [Option<MemObjects>; 2] {
    [
        None,
        Some(MemObjects {
            backend: backend.clone(),
            calls: AtomicUsize::new(0),
        }),
    ]
}

fn repo_with<'a>(repo: &'a autosnap_repo::Repository, objects: &'a Option<MemObjects>) -> Repo<'a> {
    match objects {
        Some(o) => Repo::with_objects(repo, o),
        None => Repo::blocking(repo),
    }
}

/// Archives `snapshot` of the fake cloud into `repo`.
async fn archive(
    cloud: &FakeCloud,
    repo: Repo<'_>,
    snapshot: &str,
    concurrency: usize,
) -> Result<autosnap_engine::ArchiveReport, ArchiveError> {
    archive_snapshot(cloud, cloud, repo, snapshot, concurrency, &NoProgress).await
}

async fn restore_all(
    cloud: &FakeCloud,
    repo: Repo<'_>,
    archive_id: &str,
) -> Result<autosnap_engine::RestoreSnapshotReport, ArchiveError> {
    let manifest = autosnap_engine::find_archive(repo.repo, archive_id)?;
    let target = SnapshotTarget::original(&manifest, 0, None);
    restore_to_snapshot(cloud, repo, &manifest, &target, CONCURRENCY, &NoProgress).await
}

/// Restores the archive's only volume and checks that the new snapshot reads as `source`.
async fn assert_restores_as(cloud: &FakeCloud, repo: Repo<'_>, archive_id: &str, source: &str) {
    let restored = restore_all(cloud, repo, archive_id).await.unwrap();
    assert_eq!(cloud.image(&restored.snapshot_id), cloud.image(source));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archived_snapshot_restores_byte_for_byte_on_either_repository_path() {
    let (repo, backend) = memory_repo();
    for (round, objects) in both_paths(&backend).iter().enumerate() {
        let cloud = FakeCloud::default();
        let mut blocks = sparse_blocks(7, round as u64 + 1);
        blocks.insert(20, blocks[&0].clone()); // the same bytes twice: one chunk
        blocks.insert(21, vec![0u8; BLOCK_SIZE]); // written zeros: recorded, not stored
        let source = cloud.add_snapshot(Some(&format!("vol-{round}")), 1, blocks);

        let report = archive(&cloud, repo_with(&repo, objects), &source, CONCURRENCY)
            .await
            .unwrap();
        assert_eq!(report.blocks_read, 9);
        assert_eq!(report.bytes_read, 9 * BLOCK_SIZE as u64);
        assert_eq!(report.new_chunks, 7, "{report:?}");
        assert_eq!(report.snapshot_id.as_deref(), Some(source.as_str()));
        assert_eq!(report.lineage, format!("vol-{round}"));
        assert!(report.parent.is_none());
        assert_eq!(count(&cloud.counts.get_block), 9);

        let restored = restore_all(&cloud, repo_with(&repo, objects), &report.archive_id)
            .await
            .unwrap();
        assert_ne!(restored.snapshot_id, source);
        assert_eq!(cloud.image(&restored.snapshot_id), cloud.image(&source));
        // Unencrypted: the zero block is not sent (it reads as zeros anyway).
        assert_eq!(restored.blocks_written, 8);
        let made = cloud.snapshot(&restored.snapshot_id).unwrap();
        assert_eq!(made.state, "completed");
        assert_eq!(made.completed_with.unwrap().0, 8);
        let tags: BTreeMap<_, _> = made.tags.into_iter().collect();
        assert_eq!(tags["autosnap:restored-from"], source);
        assert_eq!(tags["Name"], "data");
        if let Some(o) = objects {
            assert!(count(&o.calls) > 0, "the async path was taken");
        }
    }
    assert!(repo.verify(true).unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incremental_archive_reads_only_the_changed_blocks() {
    let (repo, _backend) = memory_repo();
    let cloud = FakeCloud::default();
    let first = sparse_blocks(8, 1);
    let parent_snap = cloud.add_snapshot(Some("vol-1"), 1, first.clone());
    let parent = archive(&cloud, Repo::blocking(&repo), &parent_snap, CONCURRENCY)
        .await
        .unwrap();

    let mut second = first;
    second.insert(2, block(900)); // changed
    second.insert(8, block(901)); // changed
    second.remove(&10); // removed
    second.insert(30, block(902)); // added
    let child_snap = cloud.add_snapshot(Some("vol-1"), 1, second);
    let plan = plan_snapshot_archive(&cloud, &repo, &child_snap, None)
        .await
        .unwrap();
    let planned = plan.volumes[0]
        .parent
        .as_ref()
        .expect("built on the parent");
    assert_eq!(planned.archive_id, parent.archive_id);
    assert_eq!(planned.snapshot_id, parent_snap);

    let reads_before = count(&cloud.counts.get_block);
    let report = run_archive(
        &cloud,
        Repo::blocking(&repo),
        plan,
        CONCURRENCY,
        &NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(count(&cloud.counts.get_block) - reads_before, 3);
    assert_eq!(report.blocks_read, 3);
    assert_eq!(report.blocks_removed, 1);
    assert_eq!(report.new_chunks, 3);
    assert_eq!(report.parent.as_deref(), Some(parent.archive_id.as_str()));
    assert_eq!(
        report.parent_snapshot_id.as_deref(),
        Some(parent_snap.as_str())
    );

    assert_restores_as(
        &cloud,
        Repo::blocking(&repo),
        &report.archive_id,
        &child_snap,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_ebs_cannot_compare_with_is_read_in_full_not_trusted() {
    let (repo, _backend) = memory_repo();
    let cloud = FakeCloud::default();
    let blocks = sparse_blocks(5, 1);
    let a = cloud.add_snapshot(Some("vol-1"), 1, blocks.clone());
    archive(&cloud, Repo::blocking(&repo), &a, CONCURRENCY)
        .await
        .unwrap();
    let mut changed = blocks;
    changed.insert(0, block(77));
    let b = cloud.add_snapshot(Some("vol-1"), 1, changed);
    cloud.faults.lock().unwrap().changed_blocks_fail = true;
    let report = archive(&cloud, Repo::blocking(&repo), &b, CONCURRENCY)
        .await
        .unwrap();
    assert_eq!(report.blocks_read, 5, "every block read again");
    assert!(report.parent.is_none());
    assert_eq!(report.new_chunks, 1);
    assert_eq!(report.reused_chunks, 4);
    assert_restores_as(&cloud, Repo::blocking(&repo), &report.archive_id, &b).await;
}

/// A block that cannot be read stops the archive before its manifest: the repository holds
/// no archive that lacks it, and the chunks already stored are reused by the next run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_read_failing_mid_archive_leaves_no_manifest_and_its_chunks_are_reused() {
    let (repo, backend) = memory_repo();
    for (round, objects) in both_paths(&backend).iter().enumerate() {
        let cloud = FakeCloud::default();
        let source = cloud.add_snapshot(Some("vol-1"), 1, sparse_blocks(10, 10 + round as u64));
        let archives_before = repo.scan_archives().unwrap().manifests.len();
        let chunks_before = chunk_names(&backend).len();
        cloud.faults.lock().unwrap().get_block_fails_at = Some(12); // the 7th block
        let err = archive(&cloud, repo_with(&repo, objects), &source, 1)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("block 12"), "{err}");
        assert_eq!(
            repo.scan_archives().unwrap().manifests.len(),
            archives_before
        );
        let stored = chunk_names(&backend).len() - chunks_before;
        assert_eq!(
            stored, 6,
            "one at a time: the six blocks before the failing one"
        );

        cloud.faults.lock().unwrap().get_block_fails_at = None;
        let report = archive(&cloud, repo_with(&repo, objects), &source, 1)
            .await
            .unwrap();
        assert_eq!(report.reused_chunks, 6, "{report:?}");
        assert_eq!(report.new_chunks, 4, "{report:?}");
        assert_restores_as(
            &cloud,
            repo_with(&repo, objects),
            &report.archive_id,
            &source,
        )
        .await;
    }
}

/// A crash point: the repository's storage stops accepting writes in the middle of an
/// archive (a full disk, a killed process). The next archive completes, and a full check of
/// the repository finds nothing damaged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_cut_off_by_failing_writes_completes_next_time_and_the_repository_checks_clean()
{
    for path in 0..2 {
        let (repo, backend) = memory_repo();
        let objects = &both_paths(&backend)[path];
        let cloud = FakeCloud::default();
        let source = cloud.add_snapshot(Some("vol-1"), 1, sparse_blocks(12, 3));
        // The archive's lock and four chunks, then every write fails. One block at a time,
        // so that no block is still being written after the archive has failed.
        backend.set_write_limit(Some(5));
        let err = archive(&cloud, repo_with(&repo, objects), &source, 1)
            .await
            .unwrap_err();
        assert!(matches!(err, ArchiveError::Repo(_)), "{err}");
        assert!(repo.scan_archives().unwrap().manifests.is_empty());
        let left = chunk_names(&backend).len();
        assert_eq!(left, 4, "cut off after four chunks");

        backend.set_write_limit(None);
        let report = archive(&cloud, repo_with(&repo, objects), &source, CONCURRENCY)
            .await
            .unwrap();
        assert_eq!(report.new_chunks + report.reused_chunks, 12);
        assert_eq!(report.reused_chunks as usize, left);
        let check = repo.verify(true).unwrap();
        assert!(check.is_ok(), "{check:?}");
        assert_eq!(check.chunks_unreferenced, 0, "{check:?}");
        assert_restores_as(
            &cloud,
            repo_with(&repo, objects),
            &report.archive_id,
            &source,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_whose_complete_snapshot_fails_names_the_snapshot_it_leaves() {
    let (repo, _backend) = memory_repo();
    let cloud = FakeCloud::default();
    let source = cloud.add_snapshot(Some("vol-1"), 1, sparse_blocks(4, 5));
    let archive = archive(&cloud, Repo::blocking(&repo), &source, CONCURRENCY)
        .await
        .unwrap();
    cloud.faults.lock().unwrap().complete_fails = true;
    let before: Vec<String> = cloud.snapshots.lock().unwrap().keys().cloned().collect();
    let err = restore_all(&cloud, Repo::blocking(&repo), &archive.archive_id)
        .await
        .unwrap_err();
    let ArchiveError::SnapshotIncomplete {
        snapshot_id,
        archive: archive_id,
        ..
    } = &err
    else {
        panic!("not SnapshotIncomplete: {err}");
    };
    assert_eq!(archive_id, &archive.archive_id);
    assert!(
        !before.contains(snapshot_id),
        "a snapshot this restore started"
    );
    let text = err.to_string();
    assert!(
        text.contains(snapshot_id.as_str()) && text.contains("CompleteSnapshot"),
        "{text}"
    );
    // It is left as it was: started, every block written, never completed.
    let left = cloud
        .snapshot(snapshot_id)
        .expect("left behind, not deleted");
    assert_eq!(left.state, "pending");
    assert_eq!(left.blocks.len(), 4);
    assert_eq!(count(&cloud.counts.complete), 1);
}

/// An AMI of two volumes, archived. Returns the fake, the repository, the archive id and the
/// AMI's snapshots.
async fn archived_image(
    repo: &autosnap_repo::Repository,
    cloud: &FakeCloud,
) -> (String, Vec<String>) {
    use autosnap_core::ami::{AmiMetadata, MetadataBlockDevice, METADATA_SCHEMA_VERSION};
    let root = cloud.add_snapshot(Some("vol-root"), 1, sparse_blocks(3, 40));
    let data = cloud.add_snapshot(Some("vol-data"), 1, sparse_blocks(5, 41));
    let device = |name: &str, snapshot: &str| MetadataBlockDevice {
        device_name: name.into(),
        snapshot_id: Some(snapshot.into()),
        volume_size_gib: Some(1),
        volume_type: Some("gp3".into()),
        iops: None,
        throughput: None,
        delete_on_termination: Some(true),
        encrypted: false,
        kms_key_id: None,
        virtual_name: None,
        snapshot_tags: Default::default(),
    };
    let metadata = AmiMetadata {
        schema_version: METADATA_SCHEMA_VERSION,
        generator: "test".into(),
        collected_at: chrono::Utc::now(),
        account_id: ACCOUNT.into(),
        region: REGION.into(),
        image_id: "ami-0123456789abcdef0".into(),
        name: Some("web".into()),
        description: None,
        creation_date: None,
        state: "available".into(),
        platform: None,
        platform_details: None,
        architecture: Some("x86_64".into()),
        virtualization_type: Some("hvm".into()),
        ena_support: Some(true),
        boot_mode: None,
        root_device_name: Some("/dev/xvda".into()),
        root_device_type: Some("ebs".into()),
        encrypted: false,
        tags: Default::default(),
        source_instance: None,
        block_device_mappings: vec![device("/dev/xvda", &root), device("/dev/sdb", &data)],
        stored_image: None,
    };
    let plan = plan_image_archive(cloud, repo, &metadata, None)
        .await
        .unwrap();
    let report = run_archive(cloud, Repo::blocking(repo), plan, CONCURRENCY, &NoProgress)
        .await
        .unwrap();
    (report.archive_id, vec![root, data])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_to_an_ami_deletes_the_snapshots_it_made_when_register_image_fails() {
    let (repo, _backend) = memory_repo();
    let cloud = FakeCloud::default();
    let (archive_id, originals) = archived_image(&repo, &cloud).await;
    let manifest = autosnap_engine::find_archive(&repo, &archive_id).unwrap();
    let plan = plan_image_restore(&cloud, &manifest, Some("web-restored".into()), None)
        .await
        .unwrap();
    assert_eq!(plan.volumes.len(), 2);

    cloud.faults.lock().unwrap().register_fails = true;
    let err = restore_image(
        &cloud,
        &cloud,
        Repo::blocking(&repo),
        &manifest,
        &plan,
        CONCURRENCY,
        &NoProgress,
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ArchiveError::CleanedUp { .. }), "{text}");
    assert!(
        text.contains("RegisterImage of 'web-restored' failed"),
        "{text}"
    );
    assert!(text.contains("deleted the snapshots just made"), "{text}");
    assert_eq!(
        count(&cloud.counts.start),
        2,
        "both volumes were restored first"
    );
    assert_eq!(count(&cloud.counts.delete), 2);
    let left: Vec<String> = cloud.snapshots.lock().unwrap().keys().cloned().collect();
    assert_eq!(left, originals, "only the AMI's own snapshots remain");
    assert!(cloud.images.lock().unwrap().is_empty());

    // The same plan, RegisterImage working: an AMI over two new snapshots, each tagged
    // with the AMI it belongs to.
    cloud.faults.lock().unwrap().register_fails = false;
    let report = restore_image(
        &cloud,
        &cloud,
        Repo::blocking(&repo),
        &manifest,
        &plan,
        CONCURRENCY,
        &NoProgress,
    )
    .await
    .unwrap();
    let images = cloud.images.lock().unwrap().clone();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].image_id, report.image_id);
    assert_eq!(images[0].request.root_device_name, "/dev/xvda");
    for (restored, original) in report.volumes.iter().zip(&originals) {
        let mapping = images[0]
            .request
            .mappings
            .iter()
            .find(|m| m.device_name == restored.device_name)
            .unwrap();
        assert_eq!(mapping.snapshot_id.as_ref(), Some(&restored.snapshot_id));
        assert_eq!(cloud.image(&restored.snapshot_id), cloud.image(original));
        let tags: BTreeMap<_, _> = cloud
            .snapshot(&restored.snapshot_id)
            .unwrap()
            .tags
            .into_iter()
            .collect();
        assert_eq!(tags[autosnap_core::tags::FOR_IMAGE], report.image_id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_to_an_ami_whose_name_is_taken_makes_nothing() {
    let (repo, _backend) = memory_repo();
    let cloud = FakeCloud::default();
    let (archive_id, _) = archived_image(&repo, &cloud).await;
    let manifest = autosnap_engine::find_archive(&repo, &archive_id).unwrap();
    cloud.images.lock().unwrap().push(FakeImage {
        image_id: "ami-00000000000000001".into(),
        request: autosnap_engine::NewImageFromMappings {
            name: "web".into(),
            ..Default::default()
        },
    });
    let err = plan_image_restore(&cloud, &manifest, None, None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ArchiveError::NameTaken { image_id, .. } if image_id == "ami-00000000000000001"),
        "{err}"
    );
    assert_eq!(count(&cloud.counts.start), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_file_downloads_as_the_same_image() {
    use std::os::unix::fs::FileExt;
    let cloud = FakeCloud::default();
    let dir = tempfile::tempdir().unwrap();
    // Two blocks of data, a zero block, data, and a short tail (padded with zeros).
    let mut file = block(1);
    file.extend(block(2));
    file.extend(vec![0u8; BLOCK_SIZE]);
    file.extend(block(3));
    file.extend(&block(4)[..1000]);
    let path = dir.path().join("disk.img");
    std::fs::write(&path, &file).unwrap();

    let options = autosnap_engine::UploadOptions {
        description: Some("uploaded".into()),
        tags: vec![("k".into(), "v".into())],
        concurrency: CONCURRENCY,
    };
    let up = autosnap_engine::upload_file(&cloud, &path, &options, &NoProgress)
        .await
        .unwrap();
    assert_eq!(up.blocks_written, 4);
    assert_eq!(up.zero_blocks_skipped, 1);
    assert_eq!(up.volume_size_gib, 1);
    let snap = cloud.snapshot(&up.snapshot_id).unwrap();
    assert_eq!(
        snap.state, "completed",
        "CompleteSnapshot took the count and checksum"
    );
    assert_eq!(snap.completed_with.unwrap().0, 4);
    assert_eq!(
        snap.blocks.keys().copied().collect::<Vec<_>>(),
        vec![0, 1, 3, 4]
    );
    let mut tail = block(4)[..1000].to_vec();
    tail.resize(BLOCK_SIZE, 0);
    assert_eq!(snap.blocks[&4], tail);

    let out = dir.path().join("back.img");
    let down = autosnap_engine::download_snapshot(
        &cloud,
        &up.snapshot_id,
        &out,
        CONCURRENCY,
        autosnap_repo::Overwrite::Refuse,
        &NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(down.blocks_read, 4);
    let got = std::fs::File::open(&out).unwrap();
    assert_eq!(got.metadata().unwrap().len(), 1 << 30);
    let mut expected = file.clone();
    expected.resize(6 * BLOCK_SIZE, 0);
    let mut head = vec![0u8; 6 * BLOCK_SIZE];
    got.read_exact_at(&mut head, 0).unwrap();
    assert!(head == expected, "the first six blocks differ");
    let mut last = vec![1u8; BLOCK_SIZE];
    got.read_exact_at(&mut last, (1 << 30) - BLOCK_SIZE as u64)
        .unwrap();
    assert!(
        last.iter().all(|&b| b == 0),
        "unwritten blocks read as zeros"
    );
}

/// Never-written blocks of an encrypted snapshot do not read as zeros: a restore with a KMS key
/// writes the zero blocks the archive recorded (and still not the ones never written).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_restore_writes_the_zero_blocks_the_archive_recorded() {
    let (repo, _backend) = memory_repo();
    let cloud = FakeCloud::default();
    let mut blocks = sparse_blocks(3, 8);
    blocks.insert(9, vec![0u8; BLOCK_SIZE]);
    let source = cloud.add_snapshot(Some("vol-1"), 1, blocks);
    let archive = archive(&cloud, Repo::blocking(&repo), &source, CONCURRENCY)
        .await
        .unwrap();
    let manifest = autosnap_engine::find_archive(&repo, &archive.archive_id).unwrap();
    let key = "arn:aws:kms:eu-west-1:111122223333:key/1234".to_string();
    let target = SnapshotTarget::original(&manifest, 0, Some(key.clone()));
    let restored = restore_to_snapshot(
        &cloud,
        Repo::blocking(&repo),
        &manifest,
        &target,
        CONCURRENCY,
        &NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(restored.blocks_written, 4);
    let made = cloud.snapshot(&restored.snapshot_id).unwrap();
    assert!(made.encrypted);
    assert_eq!(made.kms_key.as_deref(), Some(key.as_str()));
    assert_eq!(
        made.blocks.keys().copied().collect::<Vec<_>>(),
        vec![0, 2, 4, 9]
    );
    assert!(made.blocks[&9].iter().all(|&b| b == 0));
}

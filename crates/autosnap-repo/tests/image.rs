//! AMI archives: several volumes and the metadata document in one manifest, incremental per
//! volume lineage, and what verify, forget and gc do with them.

mod common;

use autosnap_core::retention::{Count, KeepPolicy};
use autosnap_repo::{
    latest_volume, ArchiveSource, EncryptionInit, Manifest, Repository, SourceKind, VolumeParent,
    VolumeSource,
};
use common::*;

fn volume(device: &str, volume_id: &str, blocks: u64) -> VolumeSource {
    VolumeSource {
        device_name: Some(device.into()),
        volume_id: Some(volume_id.into()),
        snapshot_id: Some(format!("snap-{volume_id}")),
        ..VolumeSource::with_size_bytes(blocks * BS as u64)
    }
}

fn image_source(ami: &str, time: &str) -> ArchiveSource {
    let mut s = ArchiveSource::new(SourceKind::Image, ami);
    s.time = Some(time.parse().unwrap());
    s.image_metadata = Some(serde_json::json!({ "schema_version": 1, "image_id": ami }));
    s
}

/// An AMI archive of a root and a data volume, each incremental from `parents` when given.
fn archive_image(
    repo: &Repository,
    ami: &str,
    time: &str,
    parents: [Option<(&Manifest, usize)>; 2],
    blocks: [&[(u64, Fill)]; 2],
) -> Manifest {
    let mut writer = repo.begin_archive(image_source(ami, time)).unwrap();
    let mut numbers = Vec::new();
    for (i, (device, vol)) in [("/dev/xvda", "vol-root"), ("/dev/xvdb", "vol-data")]
        .into_iter()
        .enumerate()
    {
        let v = volume(device, vol, 8);
        numbers.push(match parents[i] {
            Some((m, n)) => writer.add_volume_incremental(v, m, n).unwrap(),
            None => writer.add_volume(v).unwrap(),
        });
    }
    for (n, list) in numbers.iter().zip(blocks) {
        for (index, fill) in list {
            writer.add_block(*n, *index, &block(*fill)).unwrap();
        }
    }
    writer.finish().unwrap()
}

#[test]
fn image_archive_is_incremental_per_volume_and_restores_each_device() {
    let dir = tempfile::tempdir().unwrap();
    let (_backend, repo) = memory_repo(EncryptionInit::None);
    // A snapshot archive of the data volume first.
    let mut s = ArchiveSource::new(SourceKind::Snapshot, "snap-data-1");
    s.time = Some("2024-01-01T00:00:00Z".parse().unwrap());
    let mut writer = repo.begin_archive(s).unwrap();
    let v = writer
        .add_volume(volume("/dev/sdf", "vol-data", 8))
        .unwrap();
    writer.add_block(v, 1, &block(Fill::Random(11))).unwrap();
    writer.add_block(v, 5, &block(Fill::Random(12))).unwrap();
    let snapshot_archive = writer.finish().unwrap();

    // The AMI: the root volume is new, the data volume builds on the snapshot archive.
    let found = {
        let all = repo.list_archives().unwrap();
        latest_volume(&all, "vol-data").map(|(m, i)| (m.id.clone(), i))
    };
    assert_eq!(found, Some((snapshot_archive.id.clone(), 0)));
    assert!(repo.latest_volume_archive("vol-root").unwrap().is_none());
    let first = archive_image(
        &repo,
        "ami-1",
        "2024-01-02T00:00:00Z",
        [None, Some((&snapshot_archive, 0))],
        [
            &[(0, Fill::Random(1)), (3, Fill::Zero)],
            &[(5, Fill::Random(13))],
        ],
    );
    assert!(first.is_image());
    assert_eq!(first.device_names(), ["/dev/xvda", "/dev/xvdb"]);
    assert_eq!(first.parent.as_ref(), Some(&snapshot_archive.id));
    assert_eq!(first.volumes[0].parent, None);
    assert_eq!(
        first.volumes[1].parent,
        Some(VolumeParent {
            archive: snapshot_archive.id.clone(),
            volume: 0
        })
    );
    assert_eq!(first.volumes[1].stats.blocks_added, 1);
    assert_eq!(first.volumes[1].stats.blocks, 2, "block 1 is inherited");
    assert_eq!(first.structure_problem(), None);
    assert_eq!(repo.read_manifest(&first.id).unwrap(), first);

    // Each device restores to its own bytes.
    let (data_index, _) = first.volume_by_device("/dev/xvdb").unwrap();
    let out = dir.path().join("data.img");
    repo.restore_to_file(&first, data_index, &out).unwrap();
    let mut expected = vec![0u8; 8 * BS];
    expected[BS..2 * BS].copy_from_slice(&block(Fill::Random(11)));
    expected[5 * BS..6 * BS].copy_from_slice(&block(Fill::Random(13)));
    assert_eq!(sha256_file(&out), sha256(&expected));

    // A second AMI of the same volumes: both volumes are incremental from the first AMI.
    let all = repo.list_archives().unwrap();
    let (root_parent, root_index) = latest_volume(&all, "vol-root").unwrap();
    let (data_parent, data_index) = latest_volume(&all, "vol-data").unwrap();
    assert_eq!((&root_parent.id, root_index), (&first.id, 0));
    assert_eq!((&data_parent.id, data_index), (&first.id, 1));
    let second = archive_image(
        &repo,
        "ami-2",
        "2024-01-03T00:00:00Z",
        [
            Some((root_parent, root_index)),
            Some((data_parent, data_index)),
        ],
        [&[(0, Fill::Random(2))], &[]],
    );
    assert_eq!(second.stats.blocks_added, 1);
    assert_eq!(second.volumes[1].block_map, first.volumes[1].block_map);
    assert_eq!(second.stats.size_bytes, first.stats.size_bytes);

    // Forget everything but the newest of each lineage, then gc: the AMI archive's chunks
    // (inherited ones included) stay, and every volume still restores.
    let policy = KeepPolicy {
        last: Count::N(1),
        ..KeepPolicy::default()
    };
    let plan = repo
        .forget(&policy, "2024-02-01T00:00:00Z".parse().unwrap(), false)
        .unwrap();
    let forgotten: Vec<_> = plan.removed().map(|d| d.id.clone()).collect();
    assert_eq!(forgotten, std::slice::from_ref(&first.id), "{plan:?}");
    repo.gc(false).unwrap();
    let report = repo.verify(true).unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.chunks_unreferenced, 0);
    repo.restore_to_file(&second, 1, &out).unwrap();
    assert_eq!(sha256_file(&out), sha256(&expected));
}

#[test]
fn verify_reports_a_malformed_image_archive() {
    let (_backend, repo) = memory_repo(EncryptionInit::None);
    let mut s = ArchiveSource::new(SourceKind::Image, "ami-bad");
    s.image_metadata = None;
    let mut writer = repo.begin_archive(s).unwrap();
    writer.add_volume(volume("/dev/xvda", "vol-a", 1)).unwrap();
    writer.add_volume(volume("/dev/xvda", "vol-b", 1)).unwrap();
    let manifest = writer.finish().unwrap();
    assert!(manifest
        .structure_problem()
        .unwrap()
        .contains("image_metadata"));
    let report = repo.verify(false).unwrap();
    assert!(!report.is_ok());
    assert_eq!(report.bad_manifests.len(), 1, "{report:?}");

    let mut fixed = manifest.clone();
    fixed.source.image_metadata = Some(serde_json::json!({}));
    assert!(fixed
        .structure_problem()
        .unwrap()
        .contains("more than one volume"));
}

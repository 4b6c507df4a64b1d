//! Mount → device → volume resolution against the fixture trees in
//! `tests/fixtures/` (see the README there for what each mount stands for).

use std::path::{Path, PathBuf};

use autosnap_freeze::{
    volume_set, ResolveError, ResolvedMount, SystemView, UnmappableReason, VolumeOverrides,
    VolumeRef,
};

/// This package's directory, as cargo says when it runs the test: the path compiled in may
/// name another checkout that built into the same (shared) target directory.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

fn fixture(name: &str) -> SystemView {
    SystemView::under(manifest_dir().join("tests/fixtures").join(name))
}

fn nitro(path: &str) -> Result<ResolvedMount, ResolveError> {
    fixture("nitro").resolve_lexical(Path::new(path), &VolumeOverrides::new())
}

fn vol(id: &str) -> VolumeRef {
    VolumeRef::VolumeId(id.to_string())
}

/// Volumes resolved for each path that resolves: path, mount point, fs, device, volumes.
#[test]
fn resolvable_mounts() {
    let cases: &[(&str, &str, &str, &str, &[&str])] = &[
        // NVMe whole disk.
        (
            "/data/pg/base",
            "/data",
            "xfs",
            "/dev/nvme1n1",
            &["vol-01111111111111111"],
        ),
        // NVMe partition → its disk's serial.
        (
            "/srv/app",
            "/srv",
            "ext4",
            "/dev/nvme2n1p1",
            &["vol-02222222222222222"],
        ),
        // Root filesystem on a partition.
        (
            "/etc/fstab",
            "/",
            "ext4",
            "/dev/nvme0n1p1",
            &["vol-0aaaaaaaaaaaaaaa0"],
        ),
        (
            "/boot/efi/EFI",
            "/boot/efi",
            "vfat",
            "/dev/nvme0n1p15",
            &["vol-0aaaaaaaaaaaaaaa0"],
        ),
        // LVM (device-mapper) over two EBS volumes, one of them through a partition.
        (
            "/var/lib/db/mysql",
            "/var/lib/db",
            "xfs",
            "/dev/dm-0",
            &["vol-03333333333333333", "vol-04444444444444444"],
        ),
        // btrfs spanning two volumes (anonymous device 0:50, found by its source).
        (
            "/mnt/pool/a",
            "/mnt/pool",
            "btrfs",
            "/dev/nvme6n1",
            &["vol-06666666666666666", "vol-07777777777777777"],
        ),
        // No readable serial: the /dev/disk/by-id link names the volume;
        // the mount point has an escaped space in mountinfo.
        (
            "/mnt/my archive/2024",
            "/mnt/my archive",
            "ext4",
            "/dev/nvme8n1",
            &["vol-08888888888888888"],
        ),
    ];
    for (path, mount_point, fs_type, device, volumes) in cases {
        let resolved = nitro(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(resolved.path, Path::new(path));
        assert_eq!(resolved.mount_point, Path::new(mount_point), "{path}");
        assert_eq!(resolved.fs_type, *fs_type, "{path}");
        assert_eq!(resolved.device, *device, "{path}");
        let expected: Vec<VolumeRef> = volumes.iter().map(|v| vol(v)).collect();
        assert_eq!(resolved.volumes, expected, "{path}");
        assert!(!resolved.from_override);
        assert_eq!(resolved.is_root, *mount_point == "/", "{path}");
    }
}

#[test]
fn root_filesystem_is_flagged() {
    let root = nitro("/").unwrap();
    assert!(root.is_root);
    assert_eq!(root.mount_point, Path::new("/"));
    assert_eq!(root.source, "/dev/nvme0n1p1");
    assert!(!nitro("/data").unwrap().is_root);
}

#[test]
fn bind_mount_resolves_to_the_filesystem_it_shows() {
    let resolved = nitro("/var/www/index.html").unwrap();
    assert_eq!(resolved.mount_point, Path::new("/var/www"));
    assert_eq!(resolved.bind_root.as_deref(), Some(Path::new("/www")));
    assert_eq!(resolved.volumes, [vol("vol-02222222222222222")]);
    assert_eq!(nitro("/srv").unwrap().bind_root, None);
}

#[test]
fn lvm_source_name_is_kept() {
    let resolved = nitro("/var/lib/db").unwrap();
    assert_eq!(resolved.source, "/dev/mapper/vg--db-data");
}

#[test]
fn lexical_paths_resolve_dot_dot() {
    let resolved = nitro("/srv/../data/./x").unwrap();
    assert_eq!(resolved.mount_point, Path::new("/data"));
    assert!(matches!(
        fixture("nitro").resolve_lexical(Path::new("data"), &VolumeOverrides::new()),
        Err(ResolveError::RelativePath { .. })
    ));
}

#[test]
fn xen_devices_are_returned_for_the_caller_to_map() {
    let xen = fixture("xen");
    let data = xen
        .resolve_lexical(Path::new("/data/x"), &VolumeOverrides::new())
        .unwrap();
    assert_eq!(data.device, "/dev/xvdf");
    assert_eq!(data.volumes, [VolumeRef::XenDevice("xvdf".into())]);
    assert_eq!(data.volumes[0].volume_id(), None);
    // A partition is reported as its disk.
    let root = xen
        .resolve_lexical(Path::new("/home"), &VolumeOverrides::new())
        .unwrap();
    assert!(root.is_root);
    assert_eq!(root.device, "/dev/xvda1");
    assert_eq!(root.volumes, [VolumeRef::XenDevice("xvda".into())]);
    assert!(autosnap_freeze::xen_device_matches("/dev/sda1", "xvda"));
}

#[test]
fn tmpfs_is_a_clear_error() {
    let err = nitro("/tmp/x").unwrap_err();
    assert!(
        matches!(&err, ResolveError::InMemory { mount_point, fs_type, .. } if mount_point == Path::new("/tmp") && fs_type == "tmpfs"),
        "{err:?}"
    );
    assert!(err.to_string().contains("no EBS volume"), "{err}");
}

#[test]
fn nfs_is_a_clear_error() {
    let err = nitro("/mnt/efs/share").unwrap_err();
    match &err {
        ResolveError::Network {
            fs_type,
            source_name,
            ..
        } => {
            assert_eq!(fs_type, "nfs4");
            assert!(source_name.starts_with("fs-0123456789abcdef0.efs."));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("network filesystem"), "{err}");
}

#[test]
fn overlay_is_a_clear_error() {
    let err = nitro("/var/lib/docker/overlay2/4f1c/merged/etc").unwrap_err();
    assert!(
        matches!(&err, ResolveError::Overlay { fs_type, .. } if fs_type == "overlay"),
        "{err:?}"
    );
    assert!(err.to_string().contains("/var/lib/docker"), "{err}");
}

#[test]
fn fuse_and_pseudo_filesystems_are_clear_errors() {
    assert!(matches!(
        nitro("/mnt/remote/x"),
        Err(ResolveError::Fuse { .. })
    ));
    assert!(matches!(nitro("/proc/1"), Err(ResolveError::Pseudo { .. })));
}

#[test]
fn instance_store_is_not_an_ebs_volume() {
    let err = nitro("/mnt/scratch").unwrap_err();
    match &err {
        ResolveError::Unmappable { device, reason, .. } => {
            assert_eq!(device, "nvme5n1");
            assert_eq!(*reason, UnmappableReason::InstanceStore);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("instance-store"), "{err}");
}

#[test]
fn loop_device_needs_an_override() {
    let err = nitro("/mnt/image/file").unwrap_err();
    match &err {
        ResolveError::Unmappable {
            mount_point,
            device,
            reason,
            ..
        } => {
            assert_eq!(mount_point, Path::new("/mnt/image"));
            assert_eq!(device, "loop0");
            assert_eq!(
                *reason,
                UnmappableReason::LoopDevice {
                    backing_file: Some("/var/lib/images/disk.img".into())
                }
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        err.to_string().contains("--volume /mnt/image=VOLUME_ID"),
        "{err}"
    );

    let mut overrides = VolumeOverrides::new();
    overrides
        .parse_entry("/mnt/image=vol-0123456789abcdef0")
        .unwrap();
    let resolved = fixture("nitro")
        .resolve_lexical(Path::new("/mnt/image/file"), &overrides)
        .unwrap();
    assert!(resolved.from_override);
    assert_eq!(resolved.device, "/dev/loop0");
    assert_eq!(resolved.volumes, [vol("vol-0123456789abcdef0")]);
}

#[test]
fn a_stack_that_cannot_be_mapped_names_the_chain() {
    let err = nitro("/mnt/stacked").unwrap_err();
    match &err {
        ResolveError::Unmappable { chain, device, .. } => {
            assert_eq!(chain, "dm-1 → loop1");
            assert_eq!(device, "loop1");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn overrides_take_precedence_over_discovery() {
    let mut overrides = VolumeOverrides::new();
    overrides
        .parse_entry("/data=vol-0ffffffffffffffff")
        .unwrap();
    overrides.parse_entry("/mnt/typo=vol-12345678").unwrap();
    let view = fixture("nitro");
    let resolved = view
        .resolve_lexical(Path::new("/data/x"), &overrides)
        .unwrap();
    assert_eq!(resolved.volumes, [vol("vol-0ffffffffffffffff")]);
    assert_eq!(overrides.unused(&[resolved]), [PathBuf::from("/mnt/typo")]);
    // Overrides do not make a network filesystem snapshottable.
    let mut overrides = VolumeOverrides::new();
    overrides.parse_entry("/mnt/efs=vol-12345678").unwrap();
    assert!(matches!(
        view.resolve_lexical(Path::new("/mnt/efs"), &overrides),
        Err(ResolveError::Network { .. })
    ));
}

#[test]
fn freezability_names_the_filesystem_type() {
    assert!(nitro("/data").unwrap().ensure_freezable().is_ok());
    assert!(nitro("/mnt/pool").unwrap().is_freezable());
    let err = nitro("/boot/efi").unwrap().ensure_freezable().unwrap_err();
    assert!(matches!(&err, ResolveError::UnsupportedFreeze { fs_type, .. } if fs_type == "vfat"));
    assert!(err.to_string().contains("vfat"), "{err}");
    assert!(err.to_string().contains("ext4, xfs, btrfs"), "{err}");
}

#[test]
fn a_volume_set_is_sorted_and_distinct() {
    let mounts: Vec<ResolvedMount> = ["/srv", "/var/www", "/var/lib/db", "/data"]
        .iter()
        .map(|p| nitro(p).unwrap())
        .collect();
    assert_eq!(
        volume_set(&mounts),
        [
            vol("vol-01111111111111111"),
            vol("vol-02222222222222222"),
            vol("vol-03333333333333333"),
            vol("vol-04444444444444444"),
        ]
    );
}

#[test]
fn a_missing_path_is_a_clear_error() {
    let err = SystemView::default()
        .resolve(Path::new("/definitely/not/here"), &VolumeOverrides::new())
        .unwrap_err();
    assert!(
        matches!(&err, ResolveError::PathNotFound { path, .. } if path == Path::new("/definitely/not/here"))
    );
    assert!(err.to_string().contains("no such file"), "{err}");
}

#[test]
fn a_missing_mount_table_is_a_clear_error() {
    let view = SystemView::under("/nonexistent-fixture");
    let err = view
        .resolve_lexical(Path::new("/data"), &VolumeOverrides::new())
        .unwrap_err();
    assert!(matches!(err, ResolveError::Read { .. }), "{err:?}");
}

#[test]
fn device_names_come_from_sys_dev_block() {
    let view = fixture("nitro");
    assert_eq!(view.device_name(259, 5).as_deref(), Some("nvme2n1p1"));
    assert_eq!(view.device_name(253, 0).as_deref(), Some("dm-0"));
    assert_eq!(view.device_name(1, 1), None);
    assert_eq!(view.whole_disk("nvme2n1p1").as_deref(), Some("nvme2n1"));
    assert_eq!(view.whole_disk("nvme2n1").as_deref(), Some("nvme2n1"));
    assert_eq!(view.whole_disk("sdz"), None);
}

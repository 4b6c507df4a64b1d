//! From a path to the EBS volumes that hold it:
//! path → mount (`/proc/self/mountinfo`) → block device (`/sys/dev/block/MAJ:MIN`)
//! → whole disk (through partitions) → the disks under device-mapper, LVM and
//! md stacks (`/sys/block/<dev>/slaves`) → the EBS volume of each disk
//! (the NVMe serial, the `/dev/disk/by-id` links, or a Xen device name that the
//! caller maps through the instance metadata's block-device mapping).
//!
//! Every read goes through a [`SystemView`], whose `/proc`, `/sys` and `/dev`
//! can be fixture trees, so the whole walk is tested without an EC2 instance.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::mountinfo::{mount_for_path, parse_mountinfo, MountEntry, MountInfoError};

/// NVMe model string of an EBS volume on Nitro instances.
pub const EBS_NVME_MODEL: &str = "Amazon Elastic Block Store";
/// NVMe model string of instance-store (ephemeral) disks, which have no snapshots.
pub const INSTANCE_STORE_NVME_MODEL: &str = "Amazon EC2 NVMe Instance Storage";
/// Prefix of the udev links to EBS NVMe disks in `/dev/disk/by-id`.
pub const EBS_BY_ID_PREFIX: &str = "nvme-Amazon_Elastic_Block_Store_";
/// Filesystems whose freeze (FIFREEZE) autosnap supports.
pub const FREEZABLE_FILESYSTEMS: [&str; 3] = ["ext4", "xfs", "btrfs"];

/// Device stacks deeper than this are reported as unmappable (and cycles,
/// which a broken fixture or sysfs could produce, cannot loop forever).
const MAX_STACK_DEPTH: usize = 16;
/// Symlink hops followed when resolving a mount source under `/dev`.
const MAX_LINK_HOPS: usize = 16;

/// Where the kernel's views of the system are read from: `/proc`, `/sys` and
/// `/dev` on a real system, fixture trees in tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemView {
    proc_root: PathBuf,
    sys_root: PathBuf,
    dev_root: PathBuf,
}

impl Default for SystemView {
    fn default() -> Self {
        Self::new("/proc", "/sys", "/dev")
    }
}

/// What holds the data of a mount: an EBS volume id, or a Xen device name
/// that only the instance metadata's block-device mapping can turn into one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum VolumeRef {
    /// `vol-0123456789abcdef0`.
    VolumeId(String),
    /// A kernel disk name on a Xen instance, e.g. `xvdf` (never a partition:
    /// `xvda1` is reported as `xvda`). Match it against the block-device
    /// mapping with [`xen_device_matches`].
    XenDevice(String),
}

impl VolumeRef {
    /// The volume id, when known without instance metadata.
    pub fn volume_id(&self) -> Option<&str> {
        match self {
            VolumeRef::VolumeId(id) => Some(id),
            VolumeRef::XenDevice(_) => None,
        }
    }
}

impl fmt::Display for VolumeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VolumeRef::VolumeId(id) => f.write_str(id),
            VolumeRef::XenDevice(name) => write!(f, "/dev/{name} (Xen device)"),
        }
    }
}

/// A path resolved to its mount, device and volumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedMount {
    /// The path as given.
    pub path: PathBuf,
    /// The mount point of the filesystem holding it.
    pub mount_point: PathBuf,
    pub fs_type: String,
    /// The mount source as mountinfo shows it (`/dev/mapper/vg-db`).
    pub source: String,
    /// The kernel's block device under the filesystem (`/dev/dm-0`,
    /// `/dev/nvme1n1p1`), or the source when an override made it unnecessary
    /// and it could not be found.
    pub device: String,
    /// Set when only a subdirectory of the filesystem is mounted here (a bind
    /// mount or a btrfs subvolume): that directory, inside the filesystem.
    pub bind_root: Option<PathBuf>,
    /// The volumes holding the filesystem, sorted; several for a filesystem
    /// spanning several disks (LVM, md, multi-device btrfs).
    pub volumes: Vec<VolumeRef>,
    /// Whether this is the root filesystem (`/`).
    pub is_root: bool,
    /// Whether `volumes` came from a caller-supplied `MOUNT=VOLUME_ID`.
    pub from_override: bool,
}

impl ResolvedMount {
    /// Whether autosnap can freeze this filesystem (ext4, xfs, btrfs).
    pub fn is_freezable(&self) -> bool {
        FREEZABLE_FILESYSTEMS.contains(&self.fs_type.as_str())
    }

    /// An error naming the filesystem type when it cannot be frozen.
    pub fn ensure_freezable(&self) -> Result<(), ResolveError> {
        if self.is_freezable() {
            Ok(())
        } else {
            Err(ResolveError::UnsupportedFreeze {
                mount_point: self.mount_point.clone(),
                fs_type: self.fs_type.clone(),
            })
        }
    }
}

/// The distinct volumes of several resolved mounts, sorted (one snapshot set).
pub fn volume_set(mounts: &[ResolvedMount]) -> Vec<VolumeRef> {
    let mut volumes: Vec<VolumeRef> = mounts.iter().flat_map(|m| m.volumes.clone()).collect();
    volumes.sort();
    volumes.dedup();
    volumes
}

/// Whether a block-device mapping entry from instance metadata
/// (`/dev/sdf`, `sdf`, `/dev/sda1`, `xvdf`) names the Xen disk `device`
/// (`xvdf`). Xen guests show `sdX` mappings as `xvdX`, and the root mapping
/// often carries a partition number (`/dev/sda1`) for the whole volume.
pub fn xen_device_matches(mapping_name: &str, device: &str) -> bool {
    fn normalise(name: &str) -> String {
        let name = name.strip_prefix("/dev/").unwrap_or(name);
        match name.strip_prefix("sd") {
            Some(rest) => format!("xvd{rest}"),
            None => name.to_string(),
        }
    }
    let mapping = normalise(mapping_name);
    let device = normalise(device);
    match mapping.strip_prefix(&device) {
        Some(rest) => rest.chars().all(|c| c.is_ascii_digit()),
        None => false,
    }
}

/// Caller-supplied `MOUNT=VOLUME_ID` mappings, for device stacks autosnap
/// cannot see through (and loop devices in tests). Several entries for one
/// mount point name several volumes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeOverrides {
    by_mount: BTreeMap<PathBuf, Vec<String>>,
}

impl VolumeOverrides {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses `MOUNT=VOLUME_ID` (`/mnt/data=vol-0123456789abcdef0`); the
    /// volume id may also be a comma-separated list.
    pub fn parse_entry(&mut self, spec: &str) -> Result<(), ResolveError> {
        let bad = |reason: &str| ResolveError::BadOverride {
            spec: spec.to_string(),
            reason: reason.to_string(),
        };
        let (mount, ids) = spec
            .rsplit_once('=')
            .ok_or_else(|| bad("expected MOUNT=VOLUME_ID"))?;
        if !mount.starts_with('/') {
            return Err(bad("the mount point must be an absolute path"));
        }
        for id in ids.split(',') {
            if !is_volume_id(id) {
                return Err(bad(&format!(
                    "{id:?} is not a volume id (vol- followed by 8 or 17 hexadecimal digits)"
                )));
            }
        }
        for id in ids.split(',') {
            self.insert(mount, id);
        }
        Ok(())
    }

    /// Adds one mapping (the volume id is not checked; see [`Self::parse_entry`]).
    pub fn insert(&mut self, mount_point: impl AsRef<Path>, volume_id: impl Into<String>) {
        let key = lexical_normalise(mount_point.as_ref());
        let ids = self.by_mount.entry(key).or_default();
        let id = volume_id.into();
        if !ids.contains(&id) {
            ids.push(id);
        }
    }

    pub fn get(&self, mount_point: &Path) -> Option<&[String]> {
        self.by_mount
            .get(&lexical_normalise(mount_point))
            .map(Vec::as_slice)
    }

    pub fn is_empty(&self) -> bool {
        self.by_mount.is_empty()
    }

    /// Mount points named by an override that none of `mounts` resolved to
    /// (most likely a typo worth a warning).
    pub fn unused(&self, mounts: &[ResolvedMount]) -> Vec<PathBuf> {
        self.by_mount
            .keys()
            .filter(|key| !mounts.iter().any(|m| &m.mount_point == *key))
            .cloned()
            .collect()
    }
}

/// `vol-` followed by 8 or 17 lowercase hexadecimal digits.
pub fn is_volume_id(text: &str) -> bool {
    text.strip_prefix("vol-").is_some_and(|hex| {
        (hex.len() == 8 || hex.len() == 17)
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Why a device cannot be mapped to an EBS volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnmappableReason {
    /// A loop device (backed by a file, not a volume).
    LoopDevice { backing_file: Option<String> },
    /// An NVMe instance-store disk: ephemeral, no snapshots exist for it.
    InstanceStore,
    /// An NVMe disk that is neither EBS nor instance store.
    UnknownNvme {
        model: Option<String>,
        serial: Option<String>,
    },
    /// A stacked device (device-mapper, md) whose underlying devices are not listed.
    NoUnderlyingDevices,
    /// Not a kind of disk autosnap knows how to map.
    UnknownDiskKind,
    /// The device is not in `/sys/block` (neither a disk nor a partition of one).
    NotInSysfs,
    /// A filesystem without a block device of its own (anonymous device),
    /// other than btrfs (ZFS, for example).
    NoBlockDevice,
    /// The device stack is deeper than autosnap follows (or loops).
    TooDeep,
}

impl fmt::Display for UnmappableReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnmappableReason::LoopDevice {
                backing_file: Some(file),
            } => {
                write!(
                    f,
                    "it is a loop device backed by the file {file}, not an EBS volume"
                )
            }
            UnmappableReason::LoopDevice { backing_file: None } => {
                f.write_str("it is a loop device, not an EBS volume")
            }
            UnmappableReason::InstanceStore => f.write_str(
                "it is an instance-store (ephemeral) NVMe disk; EBS snapshots cannot cover it",
            ),
            UnmappableReason::UnknownNvme { model, serial } => write!(
                f,
                "it is an NVMe disk that is not an EBS volume (model {:?}, serial {:?})",
                model.as_deref().unwrap_or("unknown"),
                serial.as_deref().unwrap_or("unknown"),
            ),
            UnmappableReason::NoUnderlyingDevices => {
                f.write_str("it is a stacked device whose underlying devices are not listed")
            }
            UnmappableReason::UnknownDiskKind => {
                f.write_str("autosnap does not know how to map this kind of disk to a volume")
            }
            UnmappableReason::NotInSysfs => {
                f.write_str("it is neither a disk nor a partition listed in /sys/block")
            }
            UnmappableReason::NoBlockDevice => {
                f.write_str("the filesystem has no block device of its own")
            }
            UnmappableReason::TooDeep => {
                write!(
                    f,
                    "the device stack is deeper than {MAX_STACK_DEPTH} levels"
                )
            }
        }
    }
}

/// Why a path could not be resolved to volumes.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("{path}: no such file or directory")]
    PathNotFound {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: the path must be absolute")]
    RelativePath { path: PathBuf },
    #[error("cannot read {file}: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    MountInfo(#[from] MountInfoError),
    #[error("{path}: no mount holds this path (is {proc_root}/self/mountinfo complete?)")]
    NoMount { path: PathBuf, proc_root: PathBuf },
    #[error(
        "{path} is on {mount_point}, a {fs_type} filesystem held in memory: \
         there is no EBS volume to snapshot"
    )]
    InMemory {
        path: PathBuf,
        mount_point: PathBuf,
        fs_type: String,
    },
    #[error(
        "{path} is on {mount_point}, a network filesystem ({fs_type} from {source_name}): \
         it is not on an EBS volume of this instance; back it up where it is served \
         (for EFS, AWS Backup)"
    )]
    Network {
        path: PathBuf,
        mount_point: PathBuf,
        fs_type: String,
        source_name: String,
    },
    #[error(
        "{path} is on {mount_point}, a FUSE filesystem ({fs_type}) served by a userspace \
         process: autosnap cannot tell which volume (if any) holds its data"
    )]
    Fuse {
        path: PathBuf,
        mount_point: PathBuf,
        fs_type: String,
    },
    #[error(
        "{path} is on {mount_point}, an {fs_type} filesystem (a container's merged view): \
         snapshot the filesystem that holds its layers instead (for Docker, the one holding \
         /var/lib/docker)"
    )]
    Overlay {
        path: PathBuf,
        mount_point: PathBuf,
        fs_type: String,
    },
    #[error("{path} is on {mount_point}, a {fs_type} pseudo-filesystem with no data on disk")]
    Pseudo {
        path: PathBuf,
        mount_point: PathBuf,
        fs_type: String,
    },
    #[error(
        "{mount_point} is a {fs_type} filesystem, which autosnap cannot freeze \
         (freezing is supported on {supported}); snapshot it without freezing \
         (crash-consistent)",
        supported = FREEZABLE_FILESYSTEMS.join(", ")
    )]
    UnsupportedFreeze {
        mount_point: PathBuf,
        fs_type: String,
    },
    #[error(
        "cannot map {mount_point} (on {chain}) to an EBS volume: {device} — {reason}; \
         if it is on EBS, name its volume with --volume {mount_point}=VOLUME_ID"
    )]
    Unmappable {
        mount_point: PathBuf,
        /// The device stack walked, e.g. `dm-1 → loop1`.
        chain: String,
        /// The device that could not be mapped.
        device: String,
        reason: UnmappableReason,
    },
    #[error("invalid volume override {spec:?}: {reason}")]
    BadOverride { spec: String, reason: String },
}

/// An internal failure while walking one device, before the mount is known.
struct DeviceFailure {
    device: String,
    reason: UnmappableReason,
}

/// Classes of filesystem types that cannot be on an EBS volume of this instance.
enum FsClass {
    Block,
    InMemory,
    Network,
    Fuse,
    Overlay,
    Pseudo,
}

fn classify(fs_type: &str) -> FsClass {
    const IN_MEMORY: &[&str] = &["tmpfs", "ramfs", "devtmpfs", "hugetlbfs"];
    const NETWORK: &[&str] = &[
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "ncpfs",
        "9p",
        "afs",
        "ceph",
        "glusterfs",
        "lustre",
        "davfs",
        "virtiofs",
    ];
    const OVERLAY: &[&str] = &["overlay", "aufs", "unionfs"];
    const PSEUDO: &[&str] = &[
        "proc",
        "sysfs",
        "cgroup",
        "cgroup2",
        "devpts",
        "securityfs",
        "debugfs",
        "tracefs",
        "mqueue",
        "bpf",
        "pstore",
        "configfs",
        "fusectl",
        "autofs",
        "binfmt_misc",
        "efivarfs",
        "nsfs",
        "rpc_pipefs",
        "selinuxfs",
    ];
    if IN_MEMORY.contains(&fs_type) {
        FsClass::InMemory
    } else if NETWORK.contains(&fs_type) {
        FsClass::Network
    } else if fs_type == "fuse" || fs_type == "fuseblk" || fs_type.starts_with("fuse.") {
        FsClass::Fuse
    } else if OVERLAY.contains(&fs_type) {
        FsClass::Overlay
    } else if PSEUDO.contains(&fs_type) {
        FsClass::Pseudo
    } else {
        FsClass::Block
    }
}

impl SystemView {
    pub fn new(
        proc_root: impl Into<PathBuf>,
        sys_root: impl Into<PathBuf>,
        dev_root: impl Into<PathBuf>,
    ) -> Self {
        Self {
            proc_root: proc_root.into(),
            sys_root: sys_root.into(),
            dev_root: dev_root.into(),
        }
    }

    /// `root/proc`, `root/sys` and `root/dev`: a fixture tree.
    pub fn under(root: impl AsRef<Path>) -> Self {
        let root = root.as_ref();
        Self::new(root.join("proc"), root.join("sys"), root.join("dev"))
    }

    pub fn proc_root(&self) -> &Path {
        &self.proc_root
    }

    pub fn sys_root(&self) -> &Path {
        &self.sys_root
    }

    pub fn dev_root(&self) -> &Path {
        &self.dev_root
    }

    /// The mount table of this process (`<proc>/self/mountinfo`).
    pub fn mounts(&self) -> Result<Vec<MountEntry>, ResolveError> {
        let file = self.proc_root.join("self/mountinfo");
        let text =
            fs::read_to_string(&file).map_err(|source| ResolveError::Read { file, source })?;
        Ok(parse_mountinfo(&text)?)
    }

    /// Resolves a path of this system: symlinks and `..` are resolved through
    /// the real filesystem first (so the path must exist), then the mount,
    /// device and volumes are read through this view.
    pub fn resolve(
        &self,
        path: &Path,
        overrides: &VolumeOverrides,
    ) -> Result<ResolvedMount, ResolveError> {
        let canonical = fs::canonicalize(path).map_err(|source| ResolveError::PathNotFound {
            path: path.to_path_buf(),
            source,
        })?;
        let mounts = self.mounts()?;
        self.resolve_in(&mounts, path, &canonical, overrides)
    }

    /// Resolves each path (see [`Self::resolve`]), reading the mount table once.
    pub fn resolve_all(
        &self,
        paths: &[PathBuf],
        overrides: &VolumeOverrides,
    ) -> Result<Vec<ResolvedMount>, ResolveError> {
        let mounts = self.mounts()?;
        paths
            .iter()
            .map(|path| {
                let canonical =
                    fs::canonicalize(path).map_err(|source| ResolveError::PathNotFound {
                        path: path.clone(),
                        source,
                    })?;
                self.resolve_in(&mounts, path, &canonical, overrides)
            })
            .collect()
    }

    /// Resolves an absolute path taken as it is (only `.` and `..` are
    /// resolved, lexically): for fixture trees, whose paths do not exist on
    /// this machine.
    pub fn resolve_lexical(
        &self,
        path: &Path,
        overrides: &VolumeOverrides,
    ) -> Result<ResolvedMount, ResolveError> {
        if !path.is_absolute() {
            return Err(ResolveError::RelativePath {
                path: path.to_path_buf(),
            });
        }
        let mounts = self.mounts()?;
        self.resolve_in(&mounts, path, &lexical_normalise(path), overrides)
    }

    fn resolve_in(
        &self,
        mounts: &[MountEntry],
        path: &Path,
        canonical: &Path,
        overrides: &VolumeOverrides,
    ) -> Result<ResolvedMount, ResolveError> {
        let entry = mount_for_path(mounts, canonical).ok_or_else(|| ResolveError::NoMount {
            path: path.to_path_buf(),
            proc_root: self.proc_root.clone(),
        })?;
        let mount_point = entry.mount_point.clone();
        let fs_type = entry.fs_type.clone();
        let path_buf = path.to_path_buf();
        match classify(&fs_type) {
            FsClass::Block => {}
            FsClass::InMemory => {
                return Err(ResolveError::InMemory {
                    path: path_buf,
                    mount_point,
                    fs_type,
                })
            }
            FsClass::Network => {
                return Err(ResolveError::Network {
                    path: path_buf,
                    mount_point,
                    fs_type,
                    source_name: entry.source.clone(),
                })
            }
            FsClass::Fuse => {
                return Err(ResolveError::Fuse {
                    path: path_buf,
                    mount_point,
                    fs_type,
                })
            }
            FsClass::Overlay => {
                return Err(ResolveError::Overlay {
                    path: path_buf,
                    mount_point,
                    fs_type,
                })
            }
            FsClass::Pseudo => {
                return Err(ResolveError::Pseudo {
                    path: path_buf,
                    mount_point,
                    fs_type,
                })
            }
        }

        let unmappable = |chain: String, failure: DeviceFailure| ResolveError::Unmappable {
            mount_point: mount_point.clone(),
            chain,
            device: failure.device,
            reason: failure.reason,
        };

        let device_name = self.mounted_device_name(entry);
        let (device, volumes, from_override) = match overrides.get(&mount_point) {
            Some(ids) => {
                let device = match &device_name {
                    Ok(name) => format!("/dev/{name}"),
                    Err(_) => entry.source.clone(),
                };
                let mut volumes: Vec<VolumeRef> =
                    ids.iter().cloned().map(VolumeRef::VolumeId).collect();
                volumes.sort();
                (device, volumes, true)
            }
            None => {
                let name =
                    device_name.map_err(|failure| unmappable(entry.source.clone(), failure))?;
                let members = if entry.fs_type == "btrfs" {
                    self.btrfs_members(&name)
                } else {
                    vec![name.clone()]
                };
                let mut volumes = Vec::new();
                for member in &members {
                    let mut chain = Vec::new();
                    let found = self
                        .volumes_of(member, 0, &mut chain)
                        .map_err(|failure| unmappable(chain.join(" → "), failure))?;
                    volumes.extend(found);
                }
                volumes.sort();
                volumes.dedup();
                (format!("/dev/{name}"), volumes, false)
            }
        };

        Ok(ResolvedMount {
            path: path_buf,
            is_root: mount_point == Path::new("/"),
            mount_point,
            fs_type,
            source: entry.source.clone(),
            device,
            bind_root: entry.is_subtree().then(|| entry.root.clone()),
            volumes,
            from_override,
        })
    }

    /// The kernel name of the block device a mount is on: from its
    /// `major:minor`, or, for anonymous devices (btrfs), from its source.
    fn mounted_device_name(&self, entry: &MountEntry) -> Result<String, DeviceFailure> {
        if entry.major != 0 {
            return self
                .device_name(entry.major, entry.minor)
                .ok_or(DeviceFailure {
                    device: entry.dev(),
                    reason: UnmappableReason::NotInSysfs,
                });
        }
        if entry.fs_type == "btrfs" && entry.source.starts_with("/dev/") {
            if let Some(name) = self.source_device_name(&entry.source) {
                return Ok(name);
            }
        }
        Err(DeviceFailure {
            device: format!("{} ({})", entry.source, entry.dev()),
            reason: UnmappableReason::NoBlockDevice,
        })
    }

    /// The kernel name of the block device `major:minor`: the last component
    /// of the `<sys>/dev/block/MAJ:MIN` link, or `DEVNAME` of its `uevent`.
    pub fn device_name(&self, major: u32, minor: u32) -> Option<String> {
        let link = self.sys_root.join(format!("dev/block/{major}:{minor}"));
        if let Ok(target) = fs::read_link(&link) {
            if let Some(name) = target.file_name() {
                return Some(name.to_string_lossy().into_owned());
            }
        }
        let uevent = fs::read_to_string(link.join("uevent")).ok()?;
        uevent
            .lines()
            .find_map(|line| line.strip_prefix("DEVNAME="))
            .map(|name| name.trim().to_string())
    }

    /// `/dev/mapper/vg-lv` → `dm-0`: follows symlinks under the dev root.
    pub(crate) fn source_device_name(&self, source: &str) -> Option<String> {
        let relative = source.strip_prefix("/dev/")?;
        let mut path = self.dev_root.join(relative);
        for _ in 0..MAX_LINK_HOPS {
            match fs::read_link(&path) {
                Ok(target) => {
                    let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
                    path = lexical_normalise(&parent.join(target));
                }
                Err(_) => break,
            }
        }
        path.file_name().map(|n| n.to_string_lossy().into_owned())
    }

    /// All devices of the multi-device btrfs that `device` belongs to
    /// (`<sys>/fs/btrfs/<fsid>/devices/`), or just `device`.
    fn btrfs_members(&self, device: &str) -> Vec<String> {
        let Ok(filesystems) = fs::read_dir(self.sys_root.join("fs/btrfs")) else {
            return vec![device.to_string()];
        };
        for fs_dir in filesystems.flatten() {
            let members = list_names(&fs_dir.path().join("devices"));
            if members.iter().any(|m| m == device) {
                return members;
            }
        }
        vec![device.to_string()]
    }

    /// The whole disk of a partition (`nvme0n1p1` → `nvme0n1`), or the device
    /// itself when it is a disk.
    pub fn whole_disk(&self, name: &str) -> Option<String> {
        let block = self.sys_root.join("block");
        if block.join(name).is_dir() {
            return Some(name.to_string());
        }
        fs::read_dir(&block).ok()?.flatten().find_map(|disk| {
            disk.path()
                .join(name)
                .join("partition")
                .exists()
                .then(|| disk.file_name().to_string_lossy().into_owned())
        })
    }

    /// The volumes under the device `name` (a disk, a partition or a stacked
    /// device), walking `slaves` down to the disks.
    fn volumes_of(
        &self,
        name: &str,
        depth: usize,
        chain: &mut Vec<String>,
    ) -> Result<Vec<VolumeRef>, DeviceFailure> {
        chain.push(name.to_string());
        let failure = |reason| DeviceFailure {
            device: name.to_string(),
            reason,
        };
        if depth > MAX_STACK_DEPTH {
            return Err(failure(UnmappableReason::TooDeep));
        }
        let disk = self
            .whole_disk(name)
            .ok_or_else(|| failure(UnmappableReason::NotInSysfs))?;
        if disk != name {
            chain.push(disk.clone());
        }
        let disk_dir = self.sys_root.join("block").join(&disk);
        let slaves = list_names(&disk_dir.join("slaves"));
        if !slaves.is_empty() {
            let mut volumes = Vec::new();
            for slave in &slaves {
                volumes.extend(self.volumes_of(slave, depth + 1, chain)?);
            }
            return Ok(volumes);
        }
        let failure = |reason| DeviceFailure {
            device: disk.clone(),
            reason,
        };
        if disk.starts_with("nvme") {
            self.nvme_volume(&disk).map(|v| vec![v]).map_err(failure)
        } else if disk.starts_with("xvd") || disk.starts_with("sd") {
            Ok(vec![VolumeRef::XenDevice(disk)])
        } else if disk.starts_with("loop") {
            let backing_file = read_trimmed(&disk_dir.join("loop/backing_file"));
            Err(failure(UnmappableReason::LoopDevice { backing_file }))
        } else if disk.starts_with("dm-") || disk.starts_with("md") {
            Err(failure(UnmappableReason::NoUnderlyingDevices))
        } else {
            Err(failure(UnmappableReason::UnknownDiskKind))
        }
    }

    /// An NVMe disk's EBS volume: serial `vol0123…` (model "Amazon Elastic
    /// Block Store"), else the `/dev/disk/by-id` link naming the disk.
    fn nvme_volume(&self, disk: &str) -> Result<VolumeRef, UnmappableReason> {
        let device_dir = self.sys_root.join("block").join(disk).join("device");
        let model = read_trimmed(&device_dir.join("model"));
        let serial = read_trimmed(&device_dir.join("serial"));
        if model.as_deref() == Some(INSTANCE_STORE_NVME_MODEL) {
            return Err(UnmappableReason::InstanceStore);
        }
        let is_ebs_model = model.as_deref() == Some(EBS_NVME_MODEL);
        if let Some(id) = serial.as_deref().and_then(volume_id_from_serial) {
            if is_ebs_model || model.is_none() {
                return Ok(VolumeRef::VolumeId(id));
            }
        }
        if let Some(id) = self.volume_from_by_id(disk) {
            return Ok(VolumeRef::VolumeId(id));
        }
        Err(UnmappableReason::UnknownNvme { model, serial })
    }

    /// Looks for `<dev>/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol…` → `disk`.
    fn volume_from_by_id(&self, disk: &str) -> Option<String> {
        let dir = self.dev_root.join("disk/by-id");
        fs::read_dir(&dir).ok()?.flatten().find_map(|link| {
            let name = link.file_name().to_string_lossy().into_owned();
            let rest = name.strip_prefix(EBS_BY_ID_PREFIX)?;
            let target = fs::read_link(link.path()).ok()?;
            if target.file_name()? != disk {
                return None;
            }
            volume_id_from_serial(rest)
        })
    }
}

/// `vol0123456789abcdef0` (an NVMe serial, or the start of a by-id link name
/// such as `vol0123456789abcdef0_1`) → `vol-0123456789abcdef0`.
pub fn volume_id_from_serial(serial: &str) -> Option<String> {
    let rest = serial.trim().strip_prefix("vol")?;
    let rest = rest.strip_prefix('-').unwrap_or(rest);
    let hex: String = rest
        .chars()
        .take_while(|c| c.is_ascii_hexdigit())
        .collect::<String>()
        .to_ascii_lowercase();
    let id = format!("vol-{hex}");
    is_volume_id(&id).then_some(id)
}

fn read_trimmed(path: &Path) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// The sorted names in a directory (empty when it does not exist).
fn list_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Resolves `.` and `..` and drops trailing slashes without touching the filesystem.
pub fn lexical_normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                if !out.pop() || out.as_os_str().is_empty() {
                    out.push("/");
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_become_volume_ids() {
        assert_eq!(
            volume_id_from_serial("vol0123456789abcdef0").as_deref(),
            Some("vol-0123456789abcdef0")
        );
        assert_eq!(
            volume_id_from_serial("vol-0123456789abcdef0 ").as_deref(),
            Some("vol-0123456789abcdef0")
        );
        assert_eq!(
            volume_id_from_serial("vol0123456789abcdef0_1").as_deref(),
            Some("vol-0123456789abcdef0")
        );
        assert_eq!(
            volume_id_from_serial("vol12345678").as_deref(),
            Some("vol-12345678")
        );
        assert_eq!(volume_id_from_serial("AWS1234567890"), None);
        assert_eq!(volume_id_from_serial("vol0123"), None);
    }

    #[test]
    fn volume_id_shape() {
        assert!(is_volume_id("vol-0123456789abcdef0"));
        assert!(is_volume_id("vol-12345678"));
        assert!(!is_volume_id("vol-0123456789ABCDEF0"));
        assert!(!is_volume_id("vol-0123"));
        assert!(!is_volume_id("snap-0123456789abcdef0"));
    }

    #[test]
    fn overrides_parse_and_normalise() {
        let mut overrides = VolumeOverrides::new();
        overrides
            .parse_entry("/mnt/data/=vol-0123456789abcdef0")
            .unwrap();
        overrides
            .parse_entry("/mnt/a=b=vol-11111111,vol-22222222")
            .unwrap();
        assert_eq!(
            overrides.get(Path::new("/mnt/data")),
            Some(&["vol-0123456789abcdef0".to_string()][..])
        );
        assert_eq!(overrides.get(Path::new("/mnt/a=b")).unwrap().len(), 2);
        for bad in [
            "/mnt/data",
            "data=vol-12345678",
            "/mnt/data=vol-xyz",
            "/m=vol-1,snap-1",
        ] {
            let err = overrides.parse_entry(bad).unwrap_err();
            assert!(
                matches!(err, ResolveError::BadOverride { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn xen_names_match_the_block_device_mapping() {
        assert!(xen_device_matches("/dev/sdf", "xvdf"));
        assert!(xen_device_matches("sdf", "xvdf"));
        assert!(xen_device_matches("xvdf", "xvdf"));
        assert!(xen_device_matches("/dev/sda1", "xvda"));
        assert!(!xen_device_matches("/dev/sdg", "xvdf"));
        assert!(!xen_device_matches("/dev/sdfa", "xvdf"));
    }

    #[test]
    fn lexical_normalisation() {
        assert_eq!(
            lexical_normalise(Path::new("/a/./b/../c/")),
            Path::new("/a/c")
        );
        assert_eq!(lexical_normalise(Path::new("/../..")), Path::new("/"));
        assert_eq!(lexical_normalise(Path::new("/")), Path::new("/"));
    }
}

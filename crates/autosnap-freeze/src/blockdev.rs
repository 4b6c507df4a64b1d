//! Whether a block device may be overwritten (`autosnap restore --to-device`), and opening it
//! so that it stays ours while it is written.
//!
//! A device is in use when it or one of its partitions is mounted (matched by `major:minor`
//! in `/proc/self/mountinfo`, and by source name for filesystems on anonymous device numbers
//! such as btrfs), is active swap (`/proc/swaps`), or has holders in sysfs (device-mapper,
//! LVM, md, bcache stacked on it). The root disk is always in use by that definition. The
//! last guard is the kernel's: a block device opened with `O_EXCL` (without `O_CREAT`) fails
//! with `EBUSY` while it is mounted or claimed, also from another mount namespace, and while
//! our descriptor is open nobody else can mount or claim it.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::resolve::{ResolveError, SystemView};

/// One reason a device cannot be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceUse {
    /// `device` (the target or one of its partitions) is mounted at `mount_point`.
    Mounted {
        device: String,
        mount_point: PathBuf,
    },
    /// `device` is active swap.
    Swap { device: String },
    /// Other block devices (device-mapper, md, bcache) are built on `device`.
    Held {
        device: String,
        holders: Vec<String>,
    },
}

impl fmt::Display for DeviceUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceUse::Mounted {
                device,
                mount_point,
            } => {
                write!(f, "{device} is mounted at {}", mount_point.display())?;
                if mount_point == Path::new("/") {
                    f.write_str(" (the root filesystem)")?;
                }
                Ok(())
            }
            DeviceUse::Swap { device } => write!(f, "{device} is active swap"),
            DeviceUse::Held { device, holders } => write!(
                f,
                "{device} is held by {} (device-mapper/LVM, md or bcache built on it)",
                holders.join(", ")
            ),
        }
    }
}

/// Why a restore target device was refused.
#[derive(Debug, thiserror::Error)]
pub enum DeviceTargetError {
    #[error(
        "refusing to write {}: {}; unmount it, swapoff it or remove what is built on it, or \
         restore to another device (--force does not override this)",
        path.display(),
        uses.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    InUse { path: PathBuf, uses: Vec<DeviceUse> },

    #[error(
        "refusing to write {}: the kernel will not open it exclusively, so something holds \
         it (a mount in another mount namespace, a btrfs, LVM or md member, or a program \
         that opened it exclusively); free it, or restore to another device",
        path.display()
    )]
    Busy { path: PathBuf },

    #[error(
        "{} is a {kind}: give a block device (e.g. /dev/xvdf), or write an image file with \
         --to-file",
        path.display()
    )]
    NotADevice { path: PathBuf, kind: &'static str },

    #[error("{} changed while it was being opened; run the restore again", path.display())]
    Changed { path: PathBuf },

    #[error("cannot tell whether {} is in use: {source}", path.display())]
    Inspect {
        path: PathBuf,
        #[source]
        source: Box<ResolveError>,
    },

    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A restore target, open for writing.
#[derive(Debug)]
pub struct DeviceTarget {
    pub file: File,
    /// The device's size in bytes; `None` for a regular file (written in place, may grow).
    pub device_size: Option<u64>,
}

impl SystemView {
    /// Every use of block device `major:minor` and of its partitions (empty: not in use, as
    /// far as mountinfo, swaps and sysfs tell).
    pub fn device_uses(&self, major: u32, minor: u32) -> Result<Vec<DeviceUse>, ResolveError> {
        let name = self
            .device_name(major, minor)
            .unwrap_or_else(|| format!("{major}:{minor}"));
        let dev_dir = self.sys_root().join(format!("dev/block/{major}:{minor}"));
        let mut devices = vec![(name, major, minor, dev_dir.clone())];
        for entry in fs::read_dir(&dev_dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if !path.join("partition").exists() {
                continue;
            }
            let Some((major, minor)) = fs::read_to_string(path.join("dev"))
                .ok()
                .as_deref()
                .and_then(parse_dev)
            else {
                continue;
            };
            let name = entry.file_name().to_string_lossy().into_owned();
            devices.push((name, major, minor, path));
        }
        devices.sort();

        let mounts = self.mounts()?;
        let swaps = self.swap_devices()?;
        let mut uses = Vec::new();
        for (name, major, minor, dir) in &devices {
            for mount in &mounts {
                let by_number = (mount.major, mount.minor) == (*major, *minor);
                // btrfs (and other anonymous-device filesystems) show 0:N; the source names
                // the device.
                let by_source = mount.major == 0
                    && mount.source.starts_with("/dev/")
                    && self.source_device_name(&mount.source).as_deref() == Some(name);
                if by_number || by_source {
                    uses.push(DeviceUse::Mounted {
                        device: name.clone(),
                        mount_point: mount.mount_point.clone(),
                    });
                }
            }
            if swaps.iter().any(|s| s == name) {
                uses.push(DeviceUse::Swap {
                    device: name.clone(),
                });
            }
            let holders = sorted_names(&dir.join("holders"));
            if !holders.is_empty() {
                uses.push(DeviceUse::Held {
                    device: name.clone(),
                    holders,
                });
            }
        }
        Ok(uses)
    }

    /// Kernel names of the block devices in `<proc>/swaps` (swap files are left out).
    fn swap_devices(&self) -> Result<Vec<String>, ResolveError> {
        let file = self.proc_root().join("swaps");
        let text = match fs::read_to_string(&file) {
            Ok(text) => text,
            // No swap support in the kernel: nothing can be swap.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(ResolveError::Read { file, source }),
        };
        Ok(text
            .lines()
            .skip(1)
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let filename = unescape(fields.next()?);
                (fields.next()? == "partition").then_some(filename)
            })
            .filter_map(|filename| self.source_device_name(&filename))
            .collect())
    }

    /// Opens `path` to be overwritten by a restore: a block device that is not in use (see
    /// the module docs), held open with `O_EXCL`, or an existing regular file.
    pub fn open_restore_target(&self, path: &Path) -> Result<DeviceTarget, DeviceTargetError> {
        let io_err = |op| {
            move |source| DeviceTargetError::Io {
                op,
                path: path.to_path_buf(),
                source,
            }
        };
        // Symlinks are followed on purpose: /dev/disk/by-id/… names are links.
        let meta = fs::metadata(path).map_err(io_err("inspect"))?;
        let kind = meta.file_type();
        if kind.is_file() {
            let file = File::options()
                .write(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(path)
                .map_err(io_err("open for writing"))?;
            let opened = file.metadata().map_err(io_err("inspect"))?;
            if !opened.is_file() || opened.ino() != meta.ino() || opened.dev() != meta.dev() {
                return Err(DeviceTargetError::Changed {
                    path: path.to_path_buf(),
                });
            }
            return Ok(DeviceTarget {
                file,
                device_size: None,
            });
        }
        if !kind.is_block_device() {
            let kind = if kind.is_dir() {
                "directory"
            } else if kind.is_char_device() {
                "character device"
            } else if kind.is_fifo() {
                "named pipe"
            } else {
                "socket"
            };
            return Err(DeviceTargetError::NotADevice {
                path: path.to_path_buf(),
                kind,
            });
        }
        let file = match File::options()
            .write(true)
            .custom_flags(libc::O_EXCL | libc::O_CLOEXEC)
            .open(path)
        {
            Ok(file) => file,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                // Say what holds it when we can tell; else the kernel's word.
                let uses = self
                    .device_uses(libc::major(meta.rdev()), libc::minor(meta.rdev()))
                    .unwrap_or_default();
                return Err(if uses.is_empty() {
                    DeviceTargetError::Busy {
                        path: path.to_path_buf(),
                    }
                } else {
                    DeviceTargetError::InUse {
                        path: path.to_path_buf(),
                        uses,
                    }
                });
            }
            Err(e) => return Err(io_err("open for writing")(e)),
        };
        // Judge the device actually opened, not what the path named a moment earlier.
        let rdev = file.metadata().map_err(io_err("inspect"))?.rdev();
        if rdev != meta.rdev() {
            return Err(DeviceTargetError::Changed {
                path: path.to_path_buf(),
            });
        }
        let uses = self
            .device_uses(libc::major(rdev), libc::minor(rdev))
            .map_err(|source| DeviceTargetError::Inspect {
                path: path.to_path_buf(),
                source: Box::new(source),
            })?;
        if !uses.is_empty() {
            return Err(DeviceTargetError::InUse {
                path: path.to_path_buf(),
                uses,
            });
        }
        let mut file = file;
        let size = file
            .seek(SeekFrom::End(0))
            .map_err(io_err("find the size of"))?;
        Ok(DeviceTarget {
            file,
            device_size: Some(size),
        })
    }
}

/// `259:3\n` → (259, 3).
fn parse_dev(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.trim().split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// `/proc/swaps` escapes space, tab, newline and backslash as octal, like mountinfo.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value = bytes[i + 1..i + 4]
                .iter()
                .fold(0u32, |v, b| v * 8 + u32::from(b - b'0'));
            out.push(value as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn sorted_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A fixture system: disk `sdb` (8:16) with partitions sdb1 (8:17) and sdb2 (8:18), and
    /// `loop0` (7:0) without partitions.
    fn fixture(mountinfo: &str, swaps: &str) -> (tempfile::TempDir, SystemView) {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        for (dir, dev) in [
            ("devices/pci0/block/sdb", "8:16"),
            ("devices/pci0/block/sdb/sdb1", "8:17"),
            ("devices/pci0/block/sdb/sdb2", "8:18"),
            ("devices/virtual/block/loop0", "7:0"),
        ] {
            let d = r.join("sys").join(dir);
            fs::create_dir_all(d.join("holders")).unwrap();
            fs::write(d.join("dev"), format!("{dev}\n")).unwrap();
            if dir.ends_with(|c: char| c.is_ascii_digit()) && dir.contains("sdb/") {
                fs::write(d.join("partition"), "1\n").unwrap();
            }
            fs::create_dir_all(r.join("sys/dev/block")).unwrap();
            symlink(
                Path::new("../../").join(dir),
                r.join("sys/dev/block").join(dev),
            )
            .unwrap();
            let name = Path::new(dir).file_name().unwrap();
            fs::create_dir_all(r.join("dev")).unwrap();
            fs::write(r.join("dev").join(name), "").unwrap();
        }
        fs::create_dir_all(r.join("proc/self")).unwrap();
        fs::write(r.join("proc/self/mountinfo"), mountinfo).unwrap();
        fs::write(r.join("proc/swaps"), swaps).unwrap();
        let view = SystemView::under(r);
        (root, view)
    }

    const ROOT_ONLY: &str = "22 1 259:1 / / rw - ext4 /dev/nvme0n1p1 rw\n";
    const NO_SWAP: &str = "Filename\tType\tSize\tUsed\tPriority\n";

    #[test]
    fn an_unused_device_has_no_uses() {
        let (_root, view) = fixture(ROOT_ONLY, NO_SWAP);
        assert_eq!(view.device_uses(8, 16).unwrap(), []);
        assert_eq!(view.device_uses(7, 0).unwrap(), []);
    }

    #[test]
    fn a_mounted_partition_makes_its_disk_in_use() {
        let mountinfo = format!("{ROOT_ONLY}40 22 8:17 / /data rw - ext4 /dev/whatever rw\n");
        let (_root, view) = fixture(&mountinfo, NO_SWAP);
        let uses = view.device_uses(8, 16).unwrap();
        assert_eq!(
            uses,
            [DeviceUse::Mounted {
                device: "sdb1".into(),
                mount_point: "/data".into()
            }]
        );
        // Matched by number: the source name in mountinfo plays no part.
        assert_eq!(view.device_uses(8, 17).unwrap(), uses);
        assert_eq!(view.device_uses(8, 18).unwrap(), []);
    }

    #[test]
    fn the_root_filesystem_is_named() {
        let mountinfo = "22 1 7:0 / / rw - ext4 /dev/loop0 rw\n";
        let (_root, view) = fixture(mountinfo, NO_SWAP);
        let uses = view.device_uses(7, 0).unwrap();
        assert_eq!(uses.len(), 1);
        assert_eq!(
            uses[0].to_string(),
            "loop0 is mounted at / (the root filesystem)"
        );
    }

    #[test]
    fn btrfs_on_an_anonymous_device_is_matched_by_source() {
        let mountinfo = format!("{ROOT_ONLY}41 22 0:45 / /pool rw - btrfs /dev/sdb2 rw\n");
        let (_root, view) = fixture(&mountinfo, NO_SWAP);
        assert_eq!(
            view.device_uses(8, 16).unwrap(),
            [DeviceUse::Mounted {
                device: "sdb2".into(),
                mount_point: "/pool".into()
            }]
        );
    }

    #[test]
    fn swap_and_holders_are_uses() {
        let swaps = format!("{NO_SWAP}/dev/sdb2 partition 1024 0 -2\n/swap\\040file file 1 0 -3\n");
        let (root, view) = fixture(ROOT_ONLY, &swaps);
        fs::create_dir(
            root.path()
                .join("sys/devices/pci0/block/sdb/sdb1/holders/dm-0"),
        )
        .unwrap();
        let uses = view.device_uses(8, 16).unwrap();
        assert_eq!(
            uses,
            [
                DeviceUse::Held {
                    device: "sdb1".into(),
                    holders: vec!["dm-0".into()]
                },
                DeviceUse::Swap {
                    device: "sdb2".into()
                },
            ]
        );
        assert!(uses[0].to_string().contains("held by dm-0"), "{}", uses[0]);
    }

    #[test]
    fn swaps_unescape_octal() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/a\\\\"), "/a\\\\");
        assert_eq!(unescape("/x\\04"), "/x\\04");
    }

    #[test]
    fn only_devices_and_regular_files_are_targets() {
        let view = SystemView::default();
        let dir = tempfile::tempdir().unwrap();
        let err = view.open_restore_target(dir.path()).unwrap_err();
        assert!(
            matches!(
                err,
                DeviceTargetError::NotADevice {
                    kind: "directory",
                    ..
                }
            ),
            "{err}"
        );
        let err = view
            .open_restore_target(Path::new("/dev/null"))
            .unwrap_err();
        assert!(err.to_string().contains("character device"), "{err}");
        let file = dir.path().join("disk.img");
        fs::write(&file, b"old").unwrap();
        let target = view.open_restore_target(&file).unwrap();
        assert_eq!(target.device_size, None);
    }
}

//! `/proc/self/mountinfo`: one line per mount, as documented in proc(5).
//!
//! ```text
//! 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//! (1)(2) (3)   (4)   (5)      (6)      (7)   (8) (9)    (10)         (11)
//! ```
//!
//! (1) mount id, (2) parent id, (3) `major:minor` of the filesystem's device
//! (`st_dev`), (4) the directory of the filesystem mounted here (not `/` for
//! bind mounts of a subdirectory), (5) the mount point, (6) per-mount options,
//! (7) zero or more optional fields, (8) a `-` separator, (9) filesystem type,
//! (10) source, (11) per-superblock options. Space, tab, newline and backslash
//! in paths are escaped as octal (`\040`, `\011`, `\012`, `\134`).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// One mount, one line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_id: u32,
    pub parent_id: u32,
    /// Major number of the filesystem's device (`0` for anonymous devices:
    /// tmpfs, NFS, overlay, btrfs).
    pub major: u32,
    pub minor: u32,
    /// The directory of the filesystem that is mounted here: `/` for a whole
    /// filesystem, a subdirectory for a bind mount of part of it.
    pub root: PathBuf,
    pub mount_point: PathBuf,
    pub mount_options: String,
    /// Optional fields such as `shared:1` or `master:2`.
    pub optional_fields: Vec<String>,
    pub fs_type: String,
    /// The mount source as the kernel shows it: `/dev/nvme1n1p1`, `tmpfs`,
    /// `fs-0123.efs.us-east-1.amazonaws.com:/`, `overlay`.
    pub source: String,
    pub super_options: String,
}

impl MountEntry {
    /// `major:minor`, the name of this device under `/sys/dev/block`.
    pub fn dev(&self) -> String {
        format!("{}:{}", self.major, self.minor)
    }

    /// True when only a subdirectory of the filesystem is mounted here (a bind
    /// mount, or a btrfs subvolume).
    pub fn is_subtree(&self) -> bool {
        self.root != Path::new("/")
    }
}

/// A mountinfo line that could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mountinfo line {line_number} is malformed ({reason}): {line:?}")]
pub struct MountInfoError {
    pub line_number: usize,
    pub line: String,
    pub reason: &'static str,
}

/// Parses the whole text of a mountinfo file. Empty lines are skipped; any
/// malformed line is an error (a partial mount table could pick the wrong
/// mount for a path).
pub fn parse_mountinfo(text: &str) -> Result<Vec<MountEntry>, MountInfoError> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            parse_line(line).map_err(|reason| MountInfoError {
                line_number: index + 1,
                line: line.to_string(),
                reason,
            })
        })
        .collect()
}

fn parse_line(line: &str) -> Result<MountEntry, &'static str> {
    let fields: Vec<&str> = line.split(' ').collect();
    let separator = fields
        .iter()
        .position(|f| *f == "-")
        .ok_or("no ` - ` separator before the filesystem type")?;
    if separator < 6 {
        return Err("fewer than six fields before the separator");
    }
    let after = &fields[separator + 1..];
    if after.len() < 2 {
        return Err("filesystem type or source missing after the separator");
    }
    let mount_id = fields[0].parse().map_err(|_| "mount id is not a number")?;
    let parent_id = fields[1].parse().map_err(|_| "parent id is not a number")?;
    let (major, minor) = fields[2]
        .split_once(':')
        .and_then(|(major, minor)| Some((major.parse().ok()?, minor.parse().ok()?)))
        .ok_or("device is not major:minor")?;
    Ok(MountEntry {
        mount_id,
        parent_id,
        major,
        minor,
        root: PathBuf::from(unescape(fields[3])),
        mount_point: PathBuf::from(unescape(fields[4])),
        mount_options: fields[5].to_string(),
        optional_fields: fields[6..separator].iter().map(|f| f.to_string()).collect(),
        fs_type: after[0].to_string(),
        source: unescape(after[1]).to_string_lossy().into_owned(),
        super_options: after.get(2).map(|s| s.to_string()).unwrap_or_default(),
    })
}

/// Undoes the kernel's octal escapes (`\040` → space). A backslash not
/// followed by three octal digits is kept as it is.
pub fn unescape(field: &str) -> OsString {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && is_octal_escape(&bytes[i + 1..i + 4]) {
            let value = bytes[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, digit| acc * 8 + u32::from(digit - b'0'));
            out.push(value as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    OsString::from_vec(out)
}

fn is_octal_escape(digits: &[u8]) -> bool {
    digits.len() == 3 && digits.iter().all(|d| (b'0'..=b'7').contains(d)) && digits[0] <= b'3'
    // at most \377
}

/// The mount that holds `path` (absolute, already free of symlinks and
/// `..`): the longest mount point that is a prefix of it, component by
/// component. When several mounts share that mount point the last one in the
/// table wins, because it is mounted on top of the others and hides them.
pub fn mount_for_path<'a>(mounts: &'a [MountEntry], path: &Path) -> Option<&'a MountEntry> {
    let mut best: Option<(&MountEntry, usize)> = None;
    for entry in mounts {
        if path.starts_with(&entry.mount_point) {
            let depth = entry.mount_point.components().count();
            if best.is_none_or(|(_, best_depth)| depth >= best_depth) {
                best = Some((entry, depth));
            }
        }
    }
    best.map(|(entry, _)| entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 259:1 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p1 rw,discard
45 27 259:4 / /mnt/my\\040data rw,noatime shared:20 master:3 - xfs /dev/nvme1n1 rw,attr2,inode64
46 27 259:4 /exports/web /srv/web rw,noatime - xfs /dev/nvme1n1 rw,attr2,inode64
47 27 0:45 / /mnt/efs rw,relatime - nfs4 fs-0123.efs.us-east-1.amazonaws.com:/ rw,vers=4.1
";

    #[test]
    fn parses_every_field() {
        let mounts = parse_mountinfo(SAMPLE).unwrap();
        assert_eq!(mounts.len(), 5);
        let root = &mounts[1];
        assert_eq!(root.mount_id, 27);
        assert_eq!(root.parent_id, 1);
        assert_eq!((root.major, root.minor), (259, 1));
        assert_eq!(root.dev(), "259:1");
        assert_eq!(root.root, Path::new("/"));
        assert_eq!(root.mount_point, Path::new("/"));
        assert_eq!(root.mount_options, "rw,relatime");
        assert_eq!(root.optional_fields, vec!["shared:1"]);
        assert_eq!(root.fs_type, "ext4");
        assert_eq!(root.source, "/dev/nvme0n1p1");
        assert_eq!(root.super_options, "rw,discard");
    }

    #[test]
    fn several_optional_fields_and_none() {
        let mounts = parse_mountinfo(SAMPLE).unwrap();
        assert_eq!(mounts[2].optional_fields, vec!["shared:20", "master:3"]);
        assert!(mounts[0].optional_fields.is_empty());
        assert_eq!(mounts[2].fs_type, "xfs");
    }

    #[test]
    fn octal_escapes_in_paths() {
        let mounts = parse_mountinfo(SAMPLE).unwrap();
        assert_eq!(mounts[2].mount_point, Path::new("/mnt/my data"));
        assert_eq!(unescape(r"a\011b\012c\134d"), OsString::from("a\tb\nc\\d"));
        // Not an escape: kept verbatim.
        assert_eq!(unescape(r"a\9b\"), OsString::from(r"a\9b\"));
        assert_eq!(unescape(r"\04"), OsString::from(r"\04"));
    }

    #[test]
    fn bind_mount_shows_its_subtree() {
        let mounts = parse_mountinfo(SAMPLE).unwrap();
        assert!(mounts[3].is_subtree());
        assert_eq!(mounts[3].root, Path::new("/exports/web"));
        assert!(!mounts[2].is_subtree());
    }

    #[test]
    fn longest_prefix_wins_component_wise() {
        let mounts = parse_mountinfo(SAMPLE).unwrap();
        let find = |p: &str| {
            mount_for_path(&mounts, Path::new(p))
                .unwrap()
                .mount_point
                .clone()
        };
        assert_eq!(find("/mnt/my data/x/y"), Path::new("/mnt/my data"));
        assert_eq!(find("/mnt/my data"), Path::new("/mnt/my data"));
        // "/mnt/my datab" is not under "/mnt/my data".
        assert_eq!(find("/mnt/my datab"), Path::new("/"));
        assert_eq!(find("/srv/web/index.html"), Path::new("/srv/web"));
        assert_eq!(find("/etc/passwd"), Path::new("/"));
    }

    #[test]
    fn the_last_of_stacked_mounts_wins() {
        let text = "\
27 1 259:1 / / rw - ext4 /dev/nvme0n1p1 rw
50 27 259:4 / /data rw - xfs /dev/nvme1n1 rw
51 50 0:60 / /data rw - tmpfs tmpfs rw
";
        let mounts = parse_mountinfo(text).unwrap();
        assert_eq!(
            mount_for_path(&mounts, Path::new("/data/f"))
                .unwrap()
                .fs_type,
            "tmpfs"
        );
    }

    #[test]
    fn malformed_lines_are_errors_with_their_number() {
        let err =
            parse_mountinfo("27 1 259:1 / / rw - ext4 /dev/x rw\n\n28 1 259:2 / /a rw ext4\n")
                .unwrap_err();
        assert_eq!(err.line_number, 3);
        assert!(err.to_string().contains("separator"), "{err}");
        let err = parse_mountinfo("x 1 259:1 / / rw - ext4 /dev/x rw").unwrap_err();
        assert_eq!(err.reason, "mount id is not a number");
        let err = parse_mountinfo("1 1 259 / / rw - ext4 /dev/x rw").unwrap_err();
        assert_eq!(err.reason, "device is not major:minor");
        let err = parse_mountinfo("1 1 259:1 / / rw - ext4").unwrap_err();
        assert!(err.reason.contains("source missing"));
    }

    #[test]
    fn missing_super_options_are_tolerated() {
        let mounts = parse_mountinfo("27 1 259:1 / / rw - ext4 /dev/x").unwrap();
        assert_eq!(mounts[0].super_options, "");
    }
}

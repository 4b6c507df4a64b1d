//! Image files that restores and downloads write: a new file appears whole or not at all, is
//! readable by its owner only, and nothing a local user plants next to it is written through.
//!
//! [`ImageFile::create`] checks the target first (an existing file, a symbolic link or
//! anything that is not a regular file is refused unless [`Overwrite::Replace`]; a
//! directory or device always), then opens a temp file in the same directory under a random
//! name with `O_CREAT | O_EXCL | O_NOFOLLOW` and mode 0600: a symlink or file planted at a
//! guessed name makes the open fail instead of redirecting the write. [`ImageFile::persist`]
//! syncs it and moves it into place: with [`Overwrite::Refuse`] through `link(2)`, which fails
//! if the target appeared meanwhile, with [`Overwrite::Replace`] through `rename(2)`, which
//! replaces the old file (or the symlink itself, never its target) atomically, so a crash
//! leaves either the old file or the new one. Dropped before `persist`, the temp is removed.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Mode of image files: they hold a whole disk, so only their owner may read them.
pub const IMAGE_FILE_MODE: u32 = 0o600;

/// Attempts at a free random temp name before giving up (a collision means someone is
/// planting names in the directory).
const TEMP_NAME_ATTEMPTS: usize = 8;

/// What to do when the target path is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overwrite {
    /// Refuse an existing file or symbolic link.
    Refuse,
    /// Replace an existing regular file or symbolic link (the link itself) atomically.
    Replace,
}

/// Why an image file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ImageFileError {
    #[error(
        "{} already exists: choose another path, or give --force to replace it (the old file \
         stays intact until the new one is complete)",
        path.display()
    )]
    Exists { path: PathBuf },

    #[error(
        "{} is a symbolic link to {}; it is not followed: choose another path, or give \
         --force to replace the link itself (its target is never written)",
        path.display(), target.display()
    )]
    Symlink { path: PathBuf, target: PathBuf },

    #[error(
        "{} is a {kind}, not a regular file: give the path of a new image file{hint}",
        path.display()
    )]
    NotAFile {
        path: PathBuf,
        kind: &'static str,
        hint: &'static str,
    },

    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The temp file beside the target could not be made: named by the target, which is
    /// the path the user gave.
    #[error("cannot write {}: cannot create a file in {}: {source}", target.display(), dir.display())]
    CreateIn {
        target: PathBuf,
        dir: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("the random number generator failed: {0}")]
    Random(String),
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ImageFileError + 'a {
    move |source| ImageFileError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Checks that `target` may become the image: free, or (with `Replace`) a regular file or
/// a symbolic link. Never follows a link at `target`.
pub fn check_target(target: &Path, overwrite: Overwrite) -> Result<(), ImageFileError> {
    let meta = match fs::symlink_metadata(target) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("inspect", target)(e)),
    };
    let kind = meta.file_type();
    if kind.is_symlink() {
        if overwrite == Overwrite::Replace {
            return Ok(());
        }
        return Err(ImageFileError::Symlink {
            path: target.to_path_buf(),
            target: fs::read_link(target).unwrap_or_default(),
        });
    }
    if kind.is_file() {
        if overwrite == Overwrite::Replace {
            return Ok(());
        }
        return Err(ImageFileError::Exists {
            path: target.to_path_buf(),
        });
    }
    let (kind, hint) = if kind.is_dir() {
        ("directory", " inside it")
    } else if kind.is_block_device() {
        (
            "block device",
            " (restore onto a device with `autosnap restore --to-device`)",
        )
    } else if kind.is_char_device() {
        ("character device", "")
    } else if kind.is_fifo() {
        ("named pipe", "")
    } else {
        ("socket", "")
    };
    Err(ImageFileError::NotAFile {
        path: target.to_path_buf(),
        kind,
        hint,
    })
}

/// An image file being written: a private temp file beside its target, moved into place by
/// [`ImageFile::persist`], removed if dropped before.
#[derive(Debug)]
pub struct ImageFile {
    file: Arc<File>,
    temp: PathBuf,
    target: PathBuf,
    dir: PathBuf,
    overwrite: Overwrite,
    persisted: bool,
}

impl ImageFile {
    /// Checks `target` (see [`check_target`]) and creates the temp file beside it.
    pub fn create(target: &Path, overwrite: Overwrite) -> Result<ImageFile, ImageFileError> {
        check_target(target, overwrite)?;
        let dir = target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "image".to_owned());
        let mut last_error = None;
        for _ in 0..TEMP_NAME_ATTEMPTS {
            let mut random = [0u8; 8];
            getrandom::fill(&mut random).map_err(|e| ImageFileError::Random(e.to_string()))?;
            let temp = dir.join(format!(".{name}.autosnap-{}.tmp", hex::encode(random)));
            // O_EXCL refuses any existing entry at the name, a symlink included; O_NOFOLLOW
            // says so again for systems where O_EXCL alone would not.
            let opened = File::options()
                .write(true)
                .create_new(true)
                .mode(IMAGE_FILE_MODE)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&temp);
            match opened {
                Ok(file) => {
                    let image = ImageFile {
                        file: Arc::new(file),
                        temp,
                        target: target.to_path_buf(),
                        dir,
                        overwrite,
                        persisted: false,
                    };
                    // The umask can only have removed bits; this makes the mode exactly 0600
                    // whatever it was.
                    image
                        .file
                        .set_permissions(fs::Permissions::from_mode(IMAGE_FILE_MODE))
                        .map_err(io_err("write", &image.target))?;
                    return Ok(image);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_error = Some(e),
                Err(source) => {
                    return Err(ImageFileError::CreateIn {
                        target: target.to_path_buf(),
                        dir,
                        source,
                    })
                }
            }
        }
        Err(ImageFileError::CreateIn {
            target: target.to_path_buf(),
            dir,
            source: last_error.expect("at least one attempt"),
        })
    }

    /// The open temp file (write to it with positional writes).
    pub fn file(&self) -> &Arc<File> {
        &self.file
    }

    /// Where the data is written until [`ImageFile::persist`].
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// The path the image will have.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Syncs the temp file and moves it to the target (see the module docs), then syncs the
    /// directory so the new name survives a crash.
    pub fn persist(mut self) -> Result<(), ImageFileError> {
        self.file
            .sync_all()
            .map_err(io_err("write", &self.target))?;
        match self.overwrite {
            Overwrite::Replace => {
                // The target may have become a directory or device since `create`.
                check_target(&self.target, Overwrite::Replace)?;
                fs::rename(&self.temp, &self.target)
                    .map_err(io_err("move the image into place at", &self.target))?;
            }
            Overwrite::Refuse => match fs::hard_link(&self.temp, &self.target) {
                Ok(()) => {
                    fs::remove_file(&self.temp).map_err(io_err("remove", &self.temp))?;
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    check_target(&self.target, Overwrite::Refuse)?;
                    return Err(io_err("create", &self.target)(e));
                }
                // Filesystems without hard links: check again, then rename (a target created
                // between the two would be replaced).
                Err(_) => {
                    check_target(&self.target, Overwrite::Refuse)?;
                    fs::rename(&self.temp, &self.target)
                        .map_err(io_err("move the image into place at", &self.target))?;
                }
            },
        }
        self.persisted = true;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("sync directory", &self.dir))
    }
}

impl Drop for ImageFile {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, FileExt};

    fn write(image: &ImageFile, data: &[u8]) {
        image.file().write_all_at(data, 0).unwrap();
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_new_image_is_private_and_appears_only_when_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("disk.img");
        let image = ImageFile::create(&target, Overwrite::Refuse).unwrap();
        write(&image, b"data");
        assert!(!target.exists());
        let mode = fs::metadata(image.temp_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o600);
        image.persist().unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"data");
        let mode = fs::metadata(&target).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o600);
        assert_eq!(entries(dir.path()), ["disk.img"]);
    }

    #[test]
    fn dropped_before_persist_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("disk.img");
        let image = ImageFile::create(&target, Overwrite::Refuse).unwrap();
        write(&image, b"partial");
        drop(image);
        assert!(entries(dir.path()).is_empty());
    }

    #[test]
    fn an_existing_file_is_refused_unless_replace() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("disk.img");
        fs::write(&target, b"old").unwrap();
        let err = ImageFile::create(&target, Overwrite::Refuse).unwrap_err();
        assert!(matches!(err, ImageFileError::Exists { .. }), "{err}");
        assert!(err.to_string().contains("--force"), "{err}");
        assert_eq!(fs::read(&target).unwrap(), b"old");

        let image = ImageFile::create(&target, Overwrite::Replace).unwrap();
        write(&image, b"new");
        assert_eq!(fs::read(&target).unwrap(), b"old", "intact until persisted");
        image.persist().unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"new");
        assert_eq!(entries(dir.path()), ["disk.img"]);
    }

    #[test]
    fn a_target_created_while_writing_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("disk.img");
        let image = ImageFile::create(&target, Overwrite::Refuse).unwrap();
        write(&image, b"new");
        fs::write(&target, b"someone else's").unwrap();
        let err = image.persist().unwrap_err();
        assert!(matches!(err, ImageFileError::Exists { .. }), "{err}");
        assert_eq!(fs::read(&target).unwrap(), b"someone else's");
        assert_eq!(entries(dir.path()), ["disk.img"]);
    }

    #[test]
    fn a_symlink_at_the_target_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let target = dir.path().join("disk.img");
        symlink(&victim, &target).unwrap();

        let err = ImageFile::create(&target, Overwrite::Refuse).unwrap_err();
        assert!(matches!(err, ImageFileError::Symlink { .. }), "{err}");
        assert!(err.to_string().contains("victim"), "{err}");

        // Replace swaps the link for the image; the link's target is untouched.
        let image = ImageFile::create(&target, Overwrite::Replace).unwrap();
        write(&image, b"new");
        image.persist().unwrap();
        assert!(!fs::symlink_metadata(&target).unwrap().is_symlink());
        assert_eq!(fs::read(&target).unwrap(), b"new");
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
    }

    #[test]
    fn directories_and_devices_are_refused_even_with_replace() {
        let dir = tempfile::tempdir().unwrap();
        let err = ImageFile::create(dir.path(), Overwrite::Replace).unwrap_err();
        assert!(
            matches!(
                err,
                ImageFileError::NotAFile {
                    kind: "directory",
                    ..
                }
            ),
            "{err}"
        );
        let err = ImageFile::create(Path::new("/dev/null"), Overwrite::Replace).unwrap_err();
        assert!(
            matches!(
                err,
                ImageFileError::NotAFile {
                    kind: "character device",
                    ..
                }
            ),
            "{err}"
        );
    }
}

//! Freezing a set of filesystems in a fixed order and always thawing them:
//! [`prepare_freeze`] checks what may be frozen (before any hook runs), and
//! [`FreezeGuard`] freezes and thaws, on [`FreezeGuard::thaw`], on drop (panics
//! included) and, through the process-wide registry, from the signal thread.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::ioctl::{self, ThawOutcome};
use crate::mountinfo::{mount_for_path, MountEntry};
use crate::registry::{self, Registration};
use crate::resolve::{ResolveError, SystemView, FREEZABLE_FILESYSTEMS};

/// What may be frozen, and with what view of the system.
#[derive(Debug, Clone)]
pub struct FreezeOptions {
    /// Freeze even the root filesystem or one holding an own path.
    pub force: bool,
    /// autosnap's own files (executable, configuration, log, state): the
    /// filesystems holding them are refused unless `force`. Paths that do not
    /// exist yet (a log file about to be created) count by their nearest
    /// existing parent.
    pub own_paths: Vec<PathBuf>,
    /// Where the mount table is read from.
    pub view: SystemView,
}

impl Default for FreezeOptions {
    /// Not forced; the running executable is an own path.
    fn default() -> Self {
        Self {
            force: false,
            own_paths: std::env::current_exe().into_iter().collect(),
            view: SystemView::default(),
        }
    }
}

impl FreezeOptions {
    pub fn with_own_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.own_paths.push(path.into());
        self
    }

    pub fn with_force(mut self, force: bool) -> Self {
        self.force = force;
        self
    }
}

/// A filesystem that passed the checks and will be frozen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreezeTarget {
    /// The path the caller asked for (first one, when several share the filesystem).
    pub requested: PathBuf,
    pub mount_point: PathBuf,
    pub fs_type: String,
    /// `major:minor` of the filesystem (the superblock: bind mounts and btrfs
    /// subvolumes of one filesystem share it, and are frozen once).
    pub dev: (u32, u32),
}

/// Why filesystems could not be frozen.
#[derive(Debug, thiserror::Error)]
pub enum FreezeError {
    #[error("{path}: no such file or directory")]
    NotFound {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    MountTable(#[from] ResolveError),
    #[error("{path}: no mount holds this path")]
    NoMount { path: PathBuf },
    #[error(
        "{mount_point} (holding {path}) is a {fs_type} filesystem, which autosnap cannot freeze \
         (supported: {supported}); leave it out of --freeze to snapshot it crash-consistent",
        supported = FREEZABLE_FILESYSTEMS.join(", ")
    )]
    Unsupported {
        path: PathBuf,
        mount_point: PathBuf,
        fs_type: String,
    },
    #[error(
        "refusing to freeze {mount_point} (holding {path}): it is the root filesystem. While it is \
         frozen every write to it blocks — log lines, temporary files, shells started by hooks, \
         and possibly the very process that must thaw it — which can hang the machine. Move the \
         data to its own volume, or pass --force to freeze it anyway (the watchdog still thaws \
         it after the freeze timeout)"
    )]
    RootFilesystem { path: PathBuf, mount_point: PathBuf },
    #[error(
        "refusing to freeze {mount_point}: it holds {own_path}, which autosnap itself uses; \
         autosnap (or its watchdog) could block writing to it while it is frozen and never thaw \
         it. Keep autosnap's executable, configuration and log on another filesystem, or pass \
         --force"
    )]
    HoldsOwnPath {
        mount_point: PathBuf,
        own_path: PathBuf,
    },
    #[error("cannot open {mount_point} to freeze it: {source}")]
    Open {
        mount_point: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{mount_point} is already frozen by another process (fsfreeze, another backup tool); \
         autosnap will not take it over — thaw it (fsfreeze -u {mount_point}) or wait"
    )]
    AlreadyFrozen { mount_point: PathBuf },
    #[error("freezing {mount_point} needs root (CAP_SYS_ADMIN)")]
    PermissionDenied { mount_point: PathBuf },
    #[error("cannot freeze {mount_point}: {source}")]
    Freeze {
        mount_point: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "stopped freezing at {mount_point} ({when}): {reason}. Thawed {thawed}{left}, so \
         nothing stays frozen without a watchdog; no snapshot was taken",
        when = if *after_freeze { "its FIFREEZE returned too late" } else { "before its FIFREEZE" },
        thawed = if thawed.is_empty() { "nothing".to_string() } else { join(thawed) },
        left = if not_frozen.is_empty() { String::new() } else { format!(" and did not freeze {}", join(not_frozen)) }
    )]
    Unprotected {
        mount_point: PathBuf,
        /// The check failed after this mount's FIFREEZE (else before it).
        after_freeze: bool,
        reason: String,
        /// Frozen and thawed again.
        thawed: Vec<PathBuf>,
        /// Never frozen.
        not_frozen: Vec<PathBuf>,
    },
    #[error(
        "the freeze timeout {timeout:?} is below the minimum of {minimum:?}: the watchdog must \
         outlast its own start and the freeze of every filesystem. Use at least {minimum:?} \
         (--freeze-timeout, or freeze_timeout in a policy)"
    )]
    FreezeTimeoutTooShort {
        timeout: Duration,
        minimum: Duration,
    },
}

/// Paths as a comma-separated list, for messages.
pub(crate) fn join(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks `paths` against the mount table of `options.view` and returns the
/// filesystems to freeze: sorted by mount point, one per filesystem, each of
/// a freezable type, none the root filesystem or holding an own path (unless
/// `force`). Nothing is opened or frozen.
pub fn prepare_freeze(
    paths: &[PathBuf],
    options: &FreezeOptions,
) -> Result<Vec<FreezeTarget>, FreezeError> {
    let mounts = options.view.mounts()?;
    let requested = paths
        .iter()
        .map(|path| {
            std::fs::canonicalize(path)
                .map(|canonical| (path.clone(), canonical))
                .map_err(|source| FreezeError::NotFound {
                    path: path.clone(),
                    source,
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let own = options
        .own_paths
        .iter()
        .filter_map(|path| nearest_existing(path).map(|canonical| (path.clone(), canonical)))
        .collect::<Vec<_>>();
    plan_targets(&mounts, &requested, &own, options.force)
}

/// The existing path itself or its nearest existing ancestor, canonical.
fn nearest_existing(path: &Path) -> Option<PathBuf> {
    path.ancestors().find_map(|p| std::fs::canonicalize(p).ok())
}

/// The checks of [`prepare_freeze`] over already canonical paths
/// (`(as given, canonical)` pairs).
pub(crate) fn plan_targets(
    mounts: &[MountEntry],
    requested: &[(PathBuf, PathBuf)],
    own: &[(PathBuf, PathBuf)],
    force: bool,
) -> Result<Vec<FreezeTarget>, FreezeError> {
    let root_dev = mount_for_path(mounts, Path::new("/")).map(|m| (m.major, m.minor));
    let mut targets: Vec<FreezeTarget> = Vec::new();
    for (path, canonical) in requested {
        let entry = mount_for_path(mounts, canonical)
            .ok_or_else(|| FreezeError::NoMount { path: path.clone() })?;
        let dev = (entry.major, entry.minor);
        if !force {
            if Some(dev) == root_dev {
                return Err(FreezeError::RootFilesystem {
                    path: path.clone(),
                    mount_point: entry.mount_point.clone(),
                });
            }
            for (own_path, own_canonical) in own {
                let holds_it = mount_for_path(mounts, own_canonical)
                    .is_some_and(|m| (m.major, m.minor) == dev);
                if holds_it {
                    return Err(FreezeError::HoldsOwnPath {
                        mount_point: entry.mount_point.clone(),
                        own_path: own_path.clone(),
                    });
                }
            }
        }
        if !FREEZABLE_FILESYSTEMS.contains(&entry.fs_type.as_str()) {
            return Err(FreezeError::Unsupported {
                path: path.clone(),
                mount_point: entry.mount_point.clone(),
                fs_type: entry.fs_type.clone(),
            });
        }
        targets.push(FreezeTarget {
            requested: path.clone(),
            mount_point: entry.mount_point.clone(),
            fs_type: entry.fs_type.clone(),
            dev,
        });
    }
    targets.sort_by(|a, b| a.mount_point.cmp(&b.mount_point));
    let mut seen = Vec::new();
    targets.retain(|t| {
        let first = !seen.contains(&t.dev);
        seen.push(t.dev);
        first
    });
    Ok(targets)
}

/// One filesystem of a frozen set.
#[derive(Debug)]
struct FrozenMount {
    mount_point: PathBuf,
    dir: File,
    frozen: bool,
    /// Thawed by a signal ([`crate::cleanup_now`]) before the guard's own thaw:
    /// the freeze did not last, which the guard's report must say.
    thawed_early: bool,
}

/// The filesystems of one [`FreezeGuard`], shared with the signal thread.
#[derive(Debug)]
pub(crate) struct FrozenSet {
    mounts: Mutex<Vec<FrozenMount>>,
}

impl FrozenSet {
    fn lock(&self) -> MutexGuard<'_, Vec<FrozenMount>> {
        self.mounts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Thaws every filesystem still frozen, in reverse order. Idempotent; a
    /// failed thaw stays marked frozen so that a later call retries it.
    pub(crate) fn thaw_all(&self) -> Vec<(PathBuf, io::Result<ThawOutcome>)> {
        self.thaw_all_by(false)
    }

    /// [`FrozenSet::thaw_all`] on a signal, ahead of the guard's owner: the
    /// filesystems thawed here are remembered as thawed early.
    pub(crate) fn thaw_all_early(&self) -> Vec<(PathBuf, io::Result<ThawOutcome>)> {
        self.thaw_all_by(true)
    }

    fn thaw_all_by(&self, early: bool) -> Vec<(PathBuf, io::Result<ThawOutcome>)> {
        let mut mounts = self.lock();
        let mut results = Vec::new();
        for mount in mounts.iter_mut().rev().filter(|m| m.frozen) {
            let result = ioctl::thaw(mount.dir.as_fd());
            if result.is_ok() {
                mount.frozen = false;
                mount.thawed_early |= early;
            }
            results.push((mount.mount_point.clone(), result));
        }
        results
    }

    /// The filesystems a signal thawed before their owner did.
    fn thawed_early(&self) -> Vec<PathBuf> {
        let mounts = self.lock();
        mounts
            .iter()
            .filter(|m| m.thawed_early)
            .map(|m| m.mount_point.clone())
            .collect()
    }
}

/// What a thaw did, and how long the filesystems were frozen.
#[derive(Debug, Default)]
pub struct ThawReport {
    /// From just before the first FIFREEZE to just after the last FITHAW.
    pub window: Duration,
    pub thawed: Vec<PathBuf>,
    /// Found already thawed (by the watchdog or a signal): the freeze did not
    /// last until this thaw.
    pub not_frozen: Vec<PathBuf>,
    pub failed: Vec<(PathBuf, io::Error)>,
}

impl ThawReport {
    /// Every filesystem was still frozen and is now thawed.
    pub fn held_throughout(&self) -> bool {
        self.not_frozen.is_empty() && self.failed.is_empty()
    }
}

/// Filesystems frozen in a fixed order (sorted by mount point), thawed in
/// reverse order by [`FreezeGuard::thaw`], or on drop — including while a
/// panic unwinds — or by the signal thread ([`crate::install_signal_thaw`]).
/// A process killed outright (SIGKILL) thaws through its [`crate::Watchdog`].
#[derive(Debug)]
pub struct FreezeGuard {
    set: Arc<FrozenSet>,
    started: Instant,
    mount_points: Vec<PathBuf>,
    _registration: Registration,
}

impl FreezeGuard {
    /// Checks `paths` ([`prepare_freeze`]) and freezes them.
    pub fn freeze_paths(paths: &[PathBuf], options: &FreezeOptions) -> Result<Self, FreezeError> {
        Self::freeze(&prepare_freeze(paths, options)?)
    }

    /// Freezes prepared targets in their order (sorted by mount point). All
    /// mount points are opened first, so no path lookup happens while a
    /// filesystem is frozen. If one freeze fails, those already frozen are
    /// thawed before the error is returned.
    pub fn freeze(targets: &[FreezeTarget]) -> Result<Self, FreezeError> {
        Self::freeze_checked(targets, || Ok(()))
    }

    /// [`FreezeGuard::freeze`], asking `still_protected` before and after
    /// every FIFREEZE whether whatever thaws for us (the watchdog) still
    /// covers the filesystems frozen so far. When it says no (its reason),
    /// everything frozen is thawed and nothing more is frozen: a freeze
    /// that outlives its watchdog could stay frozen for ever if the process
    /// then died.
    pub fn freeze_checked(
        targets: &[FreezeTarget],
        mut still_protected: impl FnMut() -> Result<(), String>,
    ) -> Result<Self, FreezeError> {
        let mut sorted: Vec<&FreezeTarget> = targets.iter().collect();
        sorted.sort_by(|a, b| a.mount_point.cmp(&b.mount_point));
        // One freeze per filesystem: a second FIFREEZE would fail with EBUSY.
        let mut seen = Vec::new();
        sorted.retain(|t| {
            let first = !seen.contains(&t.dev);
            seen.push(t.dev);
            first
        });
        let mut mounts = Vec::with_capacity(sorted.len());
        for target in &sorted {
            let dir = ioctl::open_dir(&target.mount_point).map_err(|source| FreezeError::Open {
                mount_point: target.mount_point.clone(),
                source,
            })?;
            mounts.push(FrozenMount {
                mount_point: target.mount_point.clone(),
                dir,
                frozen: false,
                thawed_early: false,
            });
        }
        let mount_points = mounts.iter().map(|m| m.mount_point.clone()).collect();
        let set = Arc::new(FrozenSet {
            mounts: Mutex::new(mounts),
        });
        // Registered before the first freeze, so a signal never misses one.
        let registration = registry::register_frozen(&set);
        let started = Instant::now();
        let failure = {
            let mut mounts = set.lock();
            let mut failure = None;
            for index in 0..mounts.len() {
                let lapse = still_protected().err().map(|reason| (reason, false));
                let lapse = lapse.or_else(|| {
                    let mount = &mut mounts[index];
                    match ioctl::freeze(mount.dir.as_fd()) {
                        Ok(()) => {
                            mount.frozen = true;
                            still_protected().err().map(|reason| (reason, true))
                        }
                        Err(error) => {
                            failure = Some(freeze_error(&mount.mount_point, error));
                            None
                        }
                    }
                });
                if let Some((reason, after_freeze)) = lapse {
                    failure = Some(FreezeError::Unprotected {
                        mount_point: mounts[index].mount_point.clone(),
                        after_freeze,
                        reason,
                        thawed: mounts
                            .iter()
                            .filter(|m| m.frozen)
                            .map(|m| m.mount_point.clone())
                            .collect(),
                        not_frozen: mounts
                            .iter()
                            .filter(|m| !m.frozen)
                            .map(|m| m.mount_point.clone())
                            .collect(),
                    });
                }
                if failure.is_some() {
                    break;
                }
            }
            failure
        };
        let guard = FreezeGuard {
            set,
            started,
            mount_points,
            _registration: registration,
        };
        match failure {
            None => Ok(guard),
            // Dropping the guard thaws whatever was frozen before the failure.
            Some(error) => Err(error),
        }
    }

    /// The frozen mount points, in freeze order.
    pub fn mount_points(&self) -> &[PathBuf] {
        &self.mount_points
    }

    /// When the first FIFREEZE was issued.
    pub fn frozen_at(&self) -> Instant {
        self.started
    }

    /// Thaws in reverse order and reports the freeze window.
    pub fn thaw(self) -> ThawReport {
        let results = self.set.thaw_all();
        let mut report = ThawReport {
            window: self.started.elapsed(),
            ..ThawReport::default()
        };
        for (mount_point, result) in results {
            match result {
                Ok(ThawOutcome::Thawed) => report.thawed.push(mount_point),
                Ok(ThawOutcome::NotFrozen) => report.not_frozen.push(mount_point),
                Err(error) => report.failed.push((mount_point, error)),
            }
        }
        // Thawed or found thawed, in freeze order for readability.
        report.thawed.reverse();
        report.not_frozen.reverse();
        // A signal's thaw left them unmarked, so the loop above did not see them.
        for mount_point in self.set.thawed_early() {
            if !report.not_frozen.contains(&mount_point) {
                report.not_frozen.push(mount_point);
            }
        }
        report
    }
}

impl Drop for FreezeGuard {
    fn drop(&mut self) {
        for (mount_point, result) in self.set.thaw_all() {
            match result {
                Ok(ThawOutcome::Thawed) => {
                    tracing::warn!(mount_point = %mount_point.display(), "thawed on drop");
                }
                Ok(ThawOutcome::NotFrozen) => {}
                Err(error) => tracing::error!(
                    mount_point = %mount_point.display(),
                    %error,
                    "cannot thaw; the watchdog will retry"
                ),
            }
        }
    }
}

fn freeze_error(mount_point: &Path, error: io::Error) -> FreezeError {
    let mount_point = mount_point.to_path_buf();
    match error.raw_os_error() {
        Some(libc::EBUSY) => FreezeError::AlreadyFrozen { mount_point },
        Some(libc::EPERM) | Some(libc::EACCES) => FreezeError::PermissionDenied { mount_point },
        _ => FreezeError::Freeze {
            mount_point,
            source: error,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mountinfo::parse_mountinfo;

    const MOUNTS: &str = "\
27 1 259:1 / / rw - ext4 /dev/nvme0n1p1 rw
40 27 259:3 / /data rw - xfs /dev/nvme1n1 rw
41 27 259:3 /www /srv/www rw - xfs /dev/nvme1n1 rw
42 27 259:4 / /var/lib/db rw - ext4 /dev/nvme2n1 rw
43 27 259:5 / /opt/autosnap rw - ext4 /dev/nvme3n1 rw
44 27 259:6 / /boot/efi rw - vfat /dev/nvme0n1p15 rw
45 27 0:50 /@home /home rw - btrfs /dev/nvme4n1 rw
46 27 0:50 /@logs /var/log rw - btrfs /dev/nvme4n1 rw
";

    fn pairs(paths: &[&str]) -> Vec<(PathBuf, PathBuf)> {
        paths
            .iter()
            .map(|p| (PathBuf::from(p), PathBuf::from(p)))
            .collect()
    }

    fn plan(paths: &[&str], own: &[&str], force: bool) -> Result<Vec<FreezeTarget>, FreezeError> {
        let mounts = parse_mountinfo(MOUNTS).unwrap();
        plan_targets(&mounts, &pairs(paths), &pairs(own), force)
    }

    fn mount_points(targets: &[FreezeTarget]) -> Vec<&str> {
        targets
            .iter()
            .map(|t| t.mount_point.to_str().unwrap())
            .collect()
    }

    #[test]
    fn sorted_and_one_per_filesystem() {
        let targets = plan(
            &["/var/lib/db/x", "/srv/www/index.html", "/data/a", "/data"],
            &[],
            false,
        )
        .unwrap();
        // /srv/www is a bind mount of the filesystem on /data: frozen once.
        assert_eq!(mount_points(&targets), ["/data", "/var/lib/db"]);
        assert_eq!(targets[0].requested, Path::new("/data/a"));
    }

    #[test]
    fn btrfs_subvolumes_of_one_filesystem_are_frozen_once() {
        let targets = plan(&["/var/log", "/home"], &[], false).unwrap();
        assert_eq!(mount_points(&targets), ["/home"]);
    }

    #[test]
    fn refuses_the_root_filesystem_unless_forced() {
        let err = plan(&["/data", "/etc"], &[], false).unwrap_err();
        assert!(
            matches!(&err, FreezeError::RootFilesystem { mount_point, .. } if mount_point == Path::new("/"))
        );
        assert!(err.to_string().contains("--force"), "{err}");
        assert!(err.to_string().contains("root filesystem"), "{err}");
        let targets = plan(&["/etc"], &[], true).unwrap();
        assert_eq!(mount_points(&targets), ["/"]);
    }

    #[test]
    fn refuses_a_filesystem_holding_an_own_path_unless_forced() {
        let own = ["/opt/autosnap/bin/autosnap", "/etc/autosnap/config.toml"];
        let err = plan(&["/opt/autosnap/data"], &own, false).unwrap_err();
        match &err {
            FreezeError::HoldsOwnPath {
                mount_point,
                own_path,
            } => {
                assert_eq!(mount_point, Path::new("/opt/autosnap"));
                assert_eq!(own_path, Path::new("/opt/autosnap/bin/autosnap"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(plan(&["/data"], &own, false).is_ok());
        assert!(plan(&["/opt/autosnap/data"], &own, true).is_ok());
    }

    #[test]
    fn refuses_unsupported_filesystems_naming_the_type() {
        let err = plan(&["/boot/efi"], &[], true).unwrap_err();
        assert!(matches!(&err, FreezeError::Unsupported { fs_type, .. } if fs_type == "vfat"));
        assert!(err.to_string().contains("vfat"), "{err}");
    }
}

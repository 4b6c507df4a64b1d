//! Where repository objects live: the [`Backend`] trait, a local directory
//! ([`LocalBackend`]) and an in-memory double for tests ([`MemoryBackend`]).
//!
//! A backend stores named byte strings ("objects"). Names are relative, `/`-separated paths
//! such as `config`, `keys/3f…`, `chunks/ab/abcd…`, `blockmaps/ab/abcd…`,
//! `manifests/20240101T000000Z-1a2b3c4d` and `locks/…` (see [`validate_name`]).
//!
//! # What every backend must guarantee
//! * **Atomic writes.** After [`Backend::write`] or [`Backend::create`] returns, readers see
//!   the whole new object; before, the old one (or none). A crash never leaves a partial
//!   object under its final name. Local: temp file, `fsync`, rename, `fsync` of the
//!   directory. S3: a single `PutObject` is atomic (multipart uploads become visible only on
//!   `CompleteMultipartUpload`, also atomic).
//! * **Durability.** A write that returned `Ok` survives a crash of this machine.
//! * **Create-only writes.** [`Backend::create`] never replaces an existing object and says
//!   whether it created it. When an answer is lost (a reset connection after the object was
//!   stored, or a retry that meets its own first attempt and answers "already exists"), the
//!   caller cannot tell from the result alone; the one write where that matters, an archive's
//!   manifest, is read back to decide whether the archive was committed. S3: `PutObject` with `If-None-Match: *` (a `412 Precondition
//!   Failed` answer means "already exists" → `Ok(false)`; treat `409 ConditionalRequestConflict`
//!   as a retryable conflict).
//! * **Read-after-write and list-after-write consistency** for new objects, overwrites and
//!   deletes (S3 has been strongly consistent since December 2020). The lock protocol relies
//!   on it: a lock that was written must be seen by a later list.
//! * **Idempotent deletes.** Deleting a missing object is not an error (S3 `DeleteObject`
//!   behaves so).
//! * [`Backend::list`] visits every object under a prefix (recursively), in no particular
//!   order, and may be called for prefixes with millions of objects: it must stream (S3:
//!   `ListObjectsV2` pages), not collect.
//! * Retries with backoff for throttling and 5xx are the backend's job: the repository treats
//!   every error it gets as final for that operation.
//!
//! All methods take `&self`: a backend is shared between threads (`Send + Sync`). An async
//! backend (the AWS SDK) can implement this trait by blocking on its runtime's handle from a
//! thread outside the runtime, or the repository can be called from `spawn_blocking`.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::error::BackendError;

/// One object found by [`Backend::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Full object name, e.g. `chunks/ab/abcd…`.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
}

/// Storage for repository objects. See the [module documentation](self) for the guarantees
/// an implementation must give.
pub trait Backend: Send + Sync + fmt::Debug {
    /// Where the objects are, for messages (`/srv/backup`, `s3://bucket/prefix`).
    fn location(&self) -> String;

    /// The whole object. A missing object is [`BackendError::NotFound`].
    fn read(&self, name: &str) -> Result<Vec<u8>, BackendError>;

    /// The whole object if it has at most `limit` bytes, else [`BackendError::TooLarge`].
    /// Readers of repository objects call this with a limit per kind of object, so that a
    /// huge object planted under a known name cannot exhaust memory. The default reads the
    /// object and then checks; a backend that can learn the size first (a file's metadata,
    /// S3's `Content-Length`) should refuse before reading.
    fn read_at_most(&self, name: &str, limit: u64) -> Result<Vec<u8>, BackendError> {
        let data = self.read(name)?;
        if data.len() as u64 > limit {
            return Err(BackendError::TooLarge {
                name: name.to_owned(),
                size: Some(data.len() as u64),
                limit,
            });
        }
        Ok(data)
    }

    /// Writes (or atomically replaces) an object.
    fn write(&self, name: &str, data: &[u8]) -> Result<(), BackendError>;

    /// Writes an object only if none exists under that name: `Ok(true)` when this call created
    /// it, `Ok(false)` when it already existed (its content is left untouched).
    fn create(&self, name: &str, data: &[u8]) -> Result<bool, BackendError>;

    /// Whether the object exists.
    fn exists(&self, name: &str) -> Result<bool, BackendError>;

    /// Calls `visit` for every object whose name starts with `prefix` (`""` or a prefix
    /// ending in `/`), in no particular order.
    fn list(
        &self,
        prefix: &str,
        visit: &mut dyn FnMut(ObjectInfo) -> Result<(), BackendError>,
    ) -> Result<(), BackendError>;

    /// Deletes an object; deleting a missing object succeeds.
    fn delete(&self, name: &str) -> Result<(), BackendError>;

    /// Removes leftovers of interrupted writes older than `older_than` (a local backend's temp
    /// files); returns how many were removed. Backends without such leftovers return `Ok(0)`
    /// (S3: abandoned multipart uploads are better left to a bucket lifecycle rule).
    fn remove_stale_temporaries(&self, _older_than: Duration) -> Result<u64, BackendError> {
        Ok(0)
    }

    /// [`Backend::create`], except that the new object's *name* may become durable only at
    /// the next [`Backend::sync_dirs`] naming its directory; its content is durable before it
    /// gets the name, so a crash loses the object or keeps it whole. An archive writes its
    /// chunks so and syncs their directories once, before its manifest. Default: `create`.
    fn create_deferred(&self, name: &str, data: &[u8]) -> Result<bool, BackendError> {
        self.create(name, data)
    }

    /// Makes the names in directories `dirs` (such as `chunks/ab`) durable: every object
    /// created there, by this process or another, survives a crash once this returns.
    /// Default: nothing to do (every write is durable when acknowledged).
    fn sync_dirs(&self, _dirs: &[String]) -> Result<(), BackendError> {
        Ok(())
    }

    /// The backend as [`std::any::Any`], for a caller that has a faster path for a backend
    /// type it knows (the AWS layer sends an archive's chunks to S3 without leaving async
    /// code). `None` (the default): use the methods above.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }
}

/// Collects [`Backend::list`] into a vector sorted by name (for small prefixes only).
pub fn list_sorted(backend: &dyn Backend, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError> {
    let mut out = Vec::new();
    backend.list(prefix, &mut |info| {
        out.push(info);
        Ok(())
    })?;
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Checks an object name: non-empty `/`-separated components of ASCII letters, digits, `.`,
/// `_` and `-`, none starting with `.` (names starting with a dot are reserved for a
/// backend's temporaries), at most 1024 bytes.
pub fn validate_name(name: &str) -> Result<(), BackendError> {
    let invalid = |reason| {
        Err(BackendError::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() || name.len() > 1024 {
        return invalid("names have 1 to 1024 bytes");
    }
    for component in name.split('/') {
        if component.is_empty() {
            return invalid("empty path component");
        }
        if component.starts_with('.') {
            return invalid("components must not start with '.'");
        }
        if !component
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return invalid("only ASCII letters, digits, '.', '_' and '-' are allowed");
        }
    }
    Ok(())
}

fn validate_prefix(prefix: &str) -> Result<(), BackendError> {
    if prefix.is_empty() {
        return Ok(());
    }
    match prefix.strip_suffix('/') {
        Some(dir) => validate_name(dir),
        None => Err(BackendError::InvalidName {
            name: prefix.to_owned(),
            reason: "a list prefix is empty or ends with '/'",
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Local directory
// ---------------------------------------------------------------------------------------------

/// Prefix of the temp files a [`LocalBackend`] writes before renaming them into place.
const TEMP_PREFIX: &str = ".tmp-";

/// A repository in a local directory: object `a/b/c` is the file `ROOT/a/b/c`.
///
/// Writes go to a temp file in the target directory, are `fsync`ed, renamed into place (or
/// hard-linked, for create-only writes) and the directory is `fsync`ed, so an object is either
/// complete or absent after a crash. Temp files (`.tmp-…`) are invisible to [`Backend::list`]
/// and removed by [`Backend::remove_stale_temporaries`].
#[derive(Debug, Clone)]
pub struct LocalBackend {
    root: PathBuf,
}

impl LocalBackend {
    /// A backend rooted at `root` (created on the first write if missing).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalBackend { root: root.into() }
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, name: &str) -> Result<PathBuf, BackendError> {
        validate_name(name)?;
        Ok(self.root.join(name))
    }

    /// Creates `dir` and any missing parents, `fsync`ing each parent that gained an entry.
    fn ensure_dir(&self, dir: &Path, name: &str) -> Result<(), BackendError> {
        if dir.is_dir() {
            return Ok(());
        }
        if let Some(parent) = dir.parent() {
            self.ensure_dir(parent, name)?;
        }
        match fs::create_dir(dir) {
            Ok(()) => {
                if let Some(parent) = dir.parent() {
                    sync_dir(parent).map_err(|e| BackendError::io("sync directory of", name, e))?;
                }
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
            Err(e) => Err(BackendError::io("create directory for", name, e)),
        }
    }

    /// Writes `data` to a durable temp file beside `path` and returns the temp file's path.
    fn write_temp(&self, path: &Path, name: &str, data: &[u8]) -> Result<PathBuf, BackendError> {
        let dir = path.parent().unwrap_or(&self.root);
        self.ensure_dir(dir, name)?;
        let mut random = [0u8; 8];
        crate::crypto::random_bytes(&mut random).map_err(|e| BackendError::Io {
            op: "name temp file for",
            name: name.to_owned(),
            source: io::Error::other(e.to_string()),
        })?;
        let temp = dir.join(format!("{TEMP_PREFIX}{}", hex::encode(random)));
        let result = (|| {
            let mut file = File::options().write(true).create_new(true).open(&temp)?;
            file.write_all(data)?;
            file.sync_all()
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&temp);
            return Err(BackendError::io("write", name, e));
        }
        Ok(temp)
    }
}

impl LocalBackend {
    /// [`Backend::create`]; the directory is `fsync`ed only when `sync_name` (else the caller
    /// syncs it later with [`Backend::sync_dirs`]). The file's content is synced either way
    /// before it gets its name, so a name that survives a crash never holds a torn object.
    fn create_synced(
        &self,
        name: &str,
        data: &[u8],
        sync_name: bool,
    ) -> Result<bool, BackendError> {
        let path = self.path(name)?;
        if path.exists() {
            return Ok(false);
        }
        let temp = self.write_temp(&path, name, data)?;
        // A hard link fails if the target exists: an atomic create-only rename.
        let created = match fs::hard_link(&temp, &path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            // File systems without hard links: fall back to exists + rename. Objects written
            // with `create` are content-addressed or uniquely named, so the small race only
            // ever replaces an object with identical content.
            Err(_) if !path.exists() => fs::rename(&temp, &path).map(|()| true),
            Err(_) => Ok(false),
        };
        let _ = fs::remove_file(&temp);
        let created = created.map_err(|e| BackendError::io("create", name, e))?;
        if created && sync_name {
            let dir = path.parent().unwrap_or(&self.root);
            sync_dir(dir).map_err(|e| BackendError::io("sync directory of", name, e))?;
        }
        Ok(created)
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Backend for LocalBackend {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, BackendError> {
        let path = self.path(name)?;
        fs::read(&path).map_err(|e| BackendError::io("read", name, e))
    }

    fn read_at_most(&self, name: &str, limit: u64) -> Result<Vec<u8>, BackendError> {
        use std::io::Read;
        let path = self.path(name)?;
        let file = File::open(&path).map_err(|e| BackendError::io("read", name, e))?;
        let len = file
            .metadata()
            .map_err(|e| BackendError::io("read", name, e))?
            .len();
        let too_large = |size| BackendError::TooLarge {
            name: name.to_owned(),
            size: Some(size),
            limit,
        };
        if len > limit {
            return Err(too_large(len));
        }
        // The file may grow between the stat and the read: never take more than limit + 1.
        let mut data = Vec::with_capacity(len as usize);
        file.take(limit.saturating_add(1))
            .read_to_end(&mut data)
            .map_err(|e| BackendError::io("read", name, e))?;
        if data.len() as u64 > limit {
            return Err(too_large(data.len() as u64));
        }
        Ok(data)
    }

    fn write(&self, name: &str, data: &[u8]) -> Result<(), BackendError> {
        let path = self.path(name)?;
        let temp = self.write_temp(&path, name, data)?;
        if let Err(e) = fs::rename(&temp, &path) {
            let _ = fs::remove_file(&temp);
            return Err(BackendError::io("rename into place", name, e));
        }
        let dir = path.parent().unwrap_or(&self.root);
        sync_dir(dir).map_err(|e| BackendError::io("sync directory of", name, e))
    }

    fn create(&self, name: &str, data: &[u8]) -> Result<bool, BackendError> {
        self.create_synced(name, data, true)
    }

    fn create_deferred(&self, name: &str, data: &[u8]) -> Result<bool, BackendError> {
        self.create_synced(name, data, false)
    }

    fn sync_dirs(&self, dirs: &[String]) -> Result<(), BackendError> {
        for dir in dirs {
            let path = self.path(dir)?;
            match sync_dir(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(BackendError::io("sync directory", dir, e)),
            }
        }
        Ok(())
    }

    fn exists(&self, name: &str) -> Result<bool, BackendError> {
        let path = self.path(name)?;
        match fs::metadata(&path) {
            Ok(meta) => Ok(meta.is_file()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(BackendError::io("stat", name, e)),
        }
    }

    fn list(
        &self,
        prefix: &str,
        visit: &mut dyn FnMut(ObjectInfo) -> Result<(), BackendError>,
    ) -> Result<(), BackendError> {
        validate_prefix(prefix)?;
        let start = self.root.join(prefix);
        walk(&start, prefix, &mut |path, name| {
            if path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'))
            {
                return Ok(());
            }
            let size = fs::metadata(path)
                .map_err(|e| BackendError::io("stat", &name, e))?
                .len();
            visit(ObjectInfo { name, size })
        })
    }

    fn delete(&self, name: &str) -> Result<(), BackendError> {
        let path = self.path(name)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(BackendError::io("delete", name, e)),
        }
    }

    fn remove_stale_temporaries(&self, older_than: Duration) -> Result<u64, BackendError> {
        let now = SystemTime::now();
        let mut removed = 0;
        walk(&self.root, "", &mut |path, _name| {
            let is_temp = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(TEMP_PREFIX));
            if !is_temp {
                return Ok(());
            }
            let old = fs::metadata(path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|modified| now.duration_since(modified).ok())
                .is_some_and(|age| age >= older_than);
            if old && fs::remove_file(path).is_ok() {
                removed += 1;
            }
            Ok(())
        })?;
        Ok(removed)
    }
}

/// Visits every file under `dir` (recursively, sorted per directory) with its object name.
fn walk(
    dir: &Path,
    prefix: &str,
    visit: &mut dyn FnMut(&Path, String) -> Result<(), BackendError>,
) -> Result<(), BackendError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(BackendError::io("list", prefix, e)),
    };
    let mut entries: Vec<_> = entries
        .collect::<Result<_, _>>()
        .map_err(|e| BackendError::io("list", prefix, e))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let Some(file_name) = entry.file_name().to_str().map(str::to_owned) else {
            continue; // not a name this format writes
        };
        let name = format!("{prefix}{file_name}");
        let file_type = entry
            .file_type()
            .map_err(|e| BackendError::io("list", &name, e))?;
        if file_type.is_dir() {
            if !file_name.starts_with('.') {
                walk(&entry.path(), &format!("{name}/"), visit)?;
            }
        } else if file_type.is_file() {
            visit(&entry.path(), name)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------------------------

/// Objects in a map, for tests: counts operations and can inject write failures.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    objects: Mutex<BTreeMap<String, Vec<u8>>>,
    /// Writes (`write` + `create`) still allowed before every write fails; `None`: unlimited.
    write_budget: Mutex<Option<u64>>,
    reads: AtomicU64,
    /// Successful reads per top-level prefix (`chunks/`, `locks/`, `config`, …).
    reads_by_prefix: Mutex<BTreeMap<String, u64>>,
    writes: AtomicU64,
    deletes: AtomicU64,
    exists_checks: AtomicU64,
}

impl MemoryBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }

    /// After `limit` more successful writes, every write fails (a simulated crash or full
    /// disk); `None` lifts the limit.
    pub fn set_write_limit(&self, limit: Option<u64>) {
        *self.write_budget.lock().unwrap() = limit;
    }

    /// Names of all objects, sorted.
    pub fn names(&self) -> Vec<String> {
        self.objects.lock().unwrap().keys().cloned().collect()
    }

    /// The stored bytes of an object, bypassing counters.
    pub fn raw(&self, name: &str) -> Option<Vec<u8>> {
        self.objects.lock().unwrap().get(name).cloned()
    }

    /// Replaces an object's bytes, bypassing checks (to simulate corruption).
    pub fn put_raw(&self, name: &str, data: Vec<u8>) {
        self.objects.lock().unwrap().insert(name.to_owned(), data);
    }

    /// Successful reads so far.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Successful reads so far of objects under `prefix`, a top-level prefix such as
    /// `"chunks/"` or `"locks/"` (or a top-level name such as `"config"`).
    pub fn reads_under(&self, prefix: &str) -> u64 {
        let map = self.reads_by_prefix.lock().unwrap();
        map.get(prefix).copied().unwrap_or(0)
    }

    /// Successful writes (`write` and `create` that wrote) so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Deletes so far.
    pub fn deletes(&self) -> u64 {
        self.deletes.load(Ordering::Relaxed)
    }

    /// [`Backend::exists`] calls so far (a HEAD request each on S3).
    pub fn exists_checks(&self) -> u64 {
        self.exists_checks.load(Ordering::Relaxed)
    }

    fn take_write_budget(&self, name: &str) -> Result<(), BackendError> {
        let mut budget = self.write_budget.lock().unwrap();
        match budget.as_mut() {
            None => Ok(()),
            Some(0) => Err(BackendError::Remote {
                op: "write",
                name: name.to_owned(),
                source: "injected failure: write limit reached".into(),
            }),
            Some(n) => {
                *n -= 1;
                Ok(())
            }
        }
    }
}

impl Backend for MemoryBackend {
    fn location(&self) -> String {
        "memory".to_owned()
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, BackendError> {
        validate_name(name)?;
        let data = self.objects.lock().unwrap().get(name).cloned();
        match data {
            Some(data) => {
                self.reads.fetch_add(1, Ordering::Relaxed);
                let top = match name.find('/') {
                    Some(slash) => &name[..=slash],
                    None => name,
                };
                *self
                    .reads_by_prefix
                    .lock()
                    .unwrap()
                    .entry(top.to_owned())
                    .or_default() += 1;
                Ok(data)
            }
            None => Err(BackendError::NotFound {
                name: name.to_owned(),
            }),
        }
    }

    fn write(&self, name: &str, data: &[u8]) -> Result<(), BackendError> {
        validate_name(name)?;
        self.take_write_budget(name)?;
        self.objects
            .lock()
            .unwrap()
            .insert(name.to_owned(), data.to_vec());
        self.writes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn create(&self, name: &str, data: &[u8]) -> Result<bool, BackendError> {
        validate_name(name)?;
        if self.objects.lock().unwrap().contains_key(name) {
            return Ok(false);
        }
        self.take_write_budget(name)?;
        let mut objects = self.objects.lock().unwrap();
        if objects.contains_key(name) {
            return Ok(false);
        }
        objects.insert(name.to_owned(), data.to_vec());
        self.writes.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    fn exists(&self, name: &str) -> Result<bool, BackendError> {
        validate_name(name)?;
        self.exists_checks.fetch_add(1, Ordering::Relaxed);
        Ok(self.objects.lock().unwrap().contains_key(name))
    }

    fn list(
        &self,
        prefix: &str,
        visit: &mut dyn FnMut(ObjectInfo) -> Result<(), BackendError>,
    ) -> Result<(), BackendError> {
        validate_prefix(prefix)?;
        // Snapshot the matching names so `visit` may call back into the backend.
        let found: Vec<ObjectInfo> = self
            .objects
            .lock()
            .unwrap()
            .range(prefix.to_owned()..)
            .take_while(|(name, _)| name.starts_with(prefix))
            .map(|(name, data)| ObjectInfo {
                name: name.clone(),
                size: data.len() as u64,
            })
            .collect();
        found.into_iter().try_for_each(visit)
    }

    fn delete(&self, name: &str) -> Result<(), BackendError> {
        validate_name(name)?;
        self.objects.lock().unwrap().remove(name);
        self.deletes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(backend: &dyn Backend) {
        assert!(backend.read("config").unwrap_err().is_not_found());
        assert!(!backend.exists("config").unwrap());
        backend.write("config", b"one").unwrap();
        backend.write("config", b"two").unwrap();
        assert_eq!(backend.read("config").unwrap(), b"two");
        assert!(backend.create("chunks/ab/abcd", b"x").unwrap());
        assert!(!backend.create("chunks/ab/abcd", b"y").unwrap());
        assert_eq!(backend.read("chunks/ab/abcd").unwrap(), b"x");
        backend.write("chunks/cd/cdef", b"yy").unwrap();
        let listed = list_sorted(backend, "chunks/").unwrap();
        assert_eq!(
            listed,
            vec![
                ObjectInfo {
                    name: "chunks/ab/abcd".into(),
                    size: 1
                },
                ObjectInfo {
                    name: "chunks/cd/cdef".into(),
                    size: 2
                },
            ]
        );
        assert_eq!(list_sorted(backend, "").unwrap().len(), 3);
        assert!(list_sorted(backend, "manifests/").unwrap().is_empty());
        backend.delete("chunks/ab/abcd").unwrap();
        backend.delete("chunks/ab/abcd").unwrap();
        assert!(!backend.exists("chunks/ab/abcd").unwrap());
        for bad in ["", "/x", "x/", "a//b", "../x", "a/.tmp-1", "a b"] {
            assert!(backend.write(bad, b"").is_err(), "{bad:?}");
        }
        assert!(backend.list("chunks", &mut |_| Ok(())).is_err());
    }

    #[test]
    fn memory_backend_contract() {
        exercise(&MemoryBackend::new());
    }

    #[test]
    fn local_backend_contract() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path().join("repo"));
        exercise(&backend);
        // Temp files are invisible to list and removed when stale.
        fs::write(dir.path().join("repo/chunks/cd/.tmp-0123"), b"partial").unwrap();
        assert_eq!(list_sorted(&backend, "chunks/").unwrap().len(), 1);
        assert_eq!(backend.remove_stale_temporaries(Duration::ZERO).unwrap(), 1);
        assert!(!dir.path().join("repo/chunks/cd/.tmp-0123").exists());
    }

    #[test]
    fn memory_write_limit() {
        let backend = MemoryBackend::new();
        backend.set_write_limit(Some(1));
        backend.write("a", b"1").unwrap();
        assert!(backend.write("b", b"2").is_err());
        assert!(backend.create("c", b"3").is_err());
        backend.set_write_limit(None);
        backend.write("b", b"2").unwrap();
        assert_eq!(backend.writes(), 2);
    }
}

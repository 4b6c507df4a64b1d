//! Repository locks: shared for `archive`, `verify` and `forget`, exclusive for `gc`.
//!
//! A lock is an object `locks/<time>-<kind>-<random>` holding [`LockInfo`] as JSON.
//! Acquiring: write our lock object first, then list `locks/`; if a live lock conflicts
//! (exclusive vs anything) remove ours and retry until [`LockOptions::wait`] runs out, then
//! fail with [`Error::Locked`](crate::Error::Locked). Because both sides write before they
//! look, two conflicting acquirers can never both succeed (they may both back off).
//!
//! A lock is **stale** when its `refreshed` time is more than [`LockOptions::stale_after`]
//! old, or when it was taken on this host by a process that no longer exists (Linux:
//! `/proc/<pid>`). Acquirers delete stale locks. Holders refresh their lock every
//! [`LockOptions::refresh_every`]; a holder that notices it went longer than
//! [`LockOptions::max_refresh_gap`] without refreshing (a suspended machine, a stalled
//! network) stops with [`Error::LockLost`](crate::Error::LockLost) before writing anything
//! that depends on the lock, because a gc may have judged it stale and run meanwhile.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::error::{Error, LockHolder, Result};

/// Prefix of lock objects.
pub const LOCKS_PREFIX: &str = "locks/";

/// Shared locks coexist; an exclusive lock excludes every other lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockKind {
    Shared,
    Exclusive,
}

impl fmt::Display for LockKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LockKind::Shared => "shared",
            LockKind::Exclusive => "exclusive",
        })
    }
}

/// The content of a lock object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub kind: LockKind,
    /// What the holder is doing (`archive`, `gc`, …).
    pub purpose: String,
    pub host: String,
    pub pid: u32,
    pub created: DateTime<Utc>,
    /// Last refresh; a lock not refreshed for `stale_after` is stale.
    pub refreshed: DateTime<Utc>,
}

/// Timing of the lock protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockOptions {
    /// A lock not refreshed for this long is stale (default 30 min).
    pub stale_after: Duration,
    /// Holders refresh their lock this often (default 5 min).
    pub refresh_every: Duration,
    /// How long to wait for a conflicting lock to go away (default 0: fail at once).
    pub wait: Duration,
    /// Pause between attempts while waiting (default 5 s).
    pub retry_every: Duration,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            stale_after: Duration::from_secs(30 * 60),
            refresh_every: Duration::from_secs(5 * 60),
            wait: Duration::ZERO,
            retry_every: Duration::from_secs(5),
        }
    }
}

impl LockOptions {
    /// The longest a holder may go between refreshes and still trust its lock: three
    /// quarters of `stale_after`, leaving a quarter for clock skew between hosts.
    pub fn max_refresh_gap(&self) -> Duration {
        self.stale_after * 3 / 4
    }
}

/// This host's name (Linux: `/proc/sys/kernel/hostname`), or `unknown`.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Whether process `pid` exists on this host (always `true` where that cannot be known).
fn process_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        std::path::Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}

/// Whether `info` is a stale lock, seen from this host at `now`.
pub fn is_stale(info: &LockInfo, now: DateTime<Utc>, options: &LockOptions, host: &str) -> bool {
    let age = now.signed_duration_since(info.refreshed);
    let expired = age.to_std().is_ok_and(|age| age > options.stale_after);
    expired || (info.host == host && !process_alive(info.pid))
}

/// A held lock; released (its object deleted) when dropped.
pub struct RepoLock {
    backend: Arc<dyn Backend>,
    name: String,
    info: Mutex<LockInfo>,
    /// Monotonic time of the last successful refresh.
    last_refresh: Mutex<Instant>,
    options: LockOptions,
    released: AtomicBool,
}

impl fmt::Debug for RepoLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RepoLock")
            .field("name", &self.name)
            .finish()
    }
}

fn conflicts(a: LockKind, b: LockKind) -> bool {
    a == LockKind::Exclusive || b == LockKind::Exclusive
}

impl RepoLock {
    /// Takes a lock of `kind` for `purpose`. Also deletes stale locks it finds; their count is
    /// returned with the lock.
    pub fn acquire(
        backend: Arc<dyn Backend>,
        kind: LockKind,
        purpose: &str,
        options: LockOptions,
    ) -> Result<(RepoLock, u64)> {
        let host = hostname();
        let deadline = Instant::now() + options.wait;
        let mut stale_removed = 0;
        loop {
            let now = Utc::now();
            let info = LockInfo {
                kind,
                purpose: purpose.to_owned(),
                host: host.clone(),
                pid: std::process::id(),
                created: now,
                refreshed: now,
            };
            let mut random = [0u8; 8];
            crate::crypto::random_bytes(&mut random)?;
            let name = format!(
                "{LOCKS_PREFIX}{}-{kind}-{}",
                now.format("%Y%m%dT%H%M%SZ"),
                hex::encode(random)
            );
            backend.create(
                &name,
                &serde_json::to_vec_pretty(&info).expect("serialisable"),
            )?;
            let lock = RepoLock {
                backend: backend.clone(),
                name,
                info: Mutex::new(info),
                last_refresh: Mutex::new(Instant::now()),
                options,
                released: AtomicBool::new(false),
            };

            let mut others = Vec::new();
            backend.list(LOCKS_PREFIX, &mut |object| {
                if object.name != lock.name {
                    others.push(object.name);
                }
                Ok(())
            })?;
            let mut conflict = None;
            for other in others {
                let bytes = match backend.read(&other) {
                    Ok(bytes) => bytes,
                    Err(e) if e.is_not_found() => continue, // released meanwhile
                    Err(e) => return Err(e.into()),
                };
                // Lock objects are written atomically, so one that does not parse was not
                // written by this protocol: it cannot protect anything.
                let Ok(other_info) = serde_json::from_slice::<LockInfo>(&bytes) else {
                    backend.delete(&other)?;
                    stale_removed += 1;
                    continue;
                };
                if is_stale(&other_info, Utc::now(), &options, &host) {
                    backend.delete(&other)?;
                    stale_removed += 1;
                } else if conflict.is_none() && conflicts(kind, other_info.kind) {
                    conflict = Some(LockHolder {
                        name: other,
                        info: other_info,
                        stale_after: humanize(options.stale_after),
                    });
                }
            }
            let Some(holder) = conflict else {
                return Ok((lock, stale_removed));
            };
            lock.release()?;
            if Instant::now() + options.retry_every > deadline {
                return Err(Error::Locked {
                    holder: Box::new(holder),
                });
            }
            std::thread::sleep(options.retry_every);
        }
    }

    /// The lock object's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The lock's kind.
    pub fn kind(&self) -> LockKind {
        self.info.lock().unwrap().kind
    }

    /// Refreshes the lock now. Fails with `LockLost` when the last refresh is longer ago than
    /// [`LockOptions::max_refresh_gap`] or the lock object was deleted (by a gc that judged
    /// it stale); then nothing that relies on the lock may be written.
    pub fn refresh(&self) -> Result<()> {
        let mut last = self.last_refresh.lock().unwrap();
        let gap = last.elapsed();
        if gap > self.options.max_refresh_gap() {
            return Err(Error::LockLost {
                name: self.name.clone(),
                reason: format!(
                    "not refreshed for {}, longer than the {} allowed",
                    humanize(gap),
                    humanize(self.options.max_refresh_gap())
                ),
            });
        }
        match self.backend.exists(&self.name) {
            Ok(true) => {}
            Ok(false) => {
                return Err(Error::LockLost {
                    name: self.name.clone(),
                    reason: "another process removed it as stale".to_owned(),
                })
            }
            Err(e) => return Err(e.into()),
        }
        let bytes = {
            let mut info = self.info.lock().unwrap();
            info.refreshed = Utc::now();
            serde_json::to_vec_pretty(&*info).expect("serialisable")
        };
        self.backend.write(&self.name, &bytes)?;
        *last = Instant::now();
        Ok(())
    }

    /// [`RepoLock::refresh`] if `refresh_every` has passed since the last refresh.
    pub fn refresh_if_due(&self) -> Result<()> {
        let due = self.last_refresh.lock().unwrap().elapsed() >= self.options.refresh_every;
        if due {
            self.refresh()
        } else {
            Ok(())
        }
    }

    /// Deletes the lock object.
    pub fn release(self) -> Result<()> {
        self.released.store(true, Ordering::SeqCst);
        self.backend.delete(&self.name)?;
        Ok(())
    }
}

impl Drop for RepoLock {
    fn drop(&mut self) {
        if !self.released.swap(true, Ordering::SeqCst) {
            let _ = self.backend.delete(&self.name);
        }
    }
}

fn humanize(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 120 {
        format!("{} min", secs / 60)
    } else if secs >= 1 {
        format!("{secs} s")
    } else {
        format!("{} ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemoryBackend;

    fn options() -> LockOptions {
        LockOptions::default()
    }

    #[test]
    fn shared_locks_coexist_and_exclude_exclusive() {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let (a, _) =
            RepoLock::acquire(backend.clone(), LockKind::Shared, "archive", options()).unwrap();
        let (b, _) =
            RepoLock::acquire(backend.clone(), LockKind::Shared, "archive", options()).unwrap();
        let err =
            RepoLock::acquire(backend.clone(), LockKind::Exclusive, "gc", options()).unwrap_err();
        assert!(matches!(err, Error::Locked { .. }), "{err}");
        assert!(err.to_string().contains("shared lock for archive"), "{err}");
        drop(a);
        b.release().unwrap();
        let (gc, _) =
            RepoLock::acquire(backend.clone(), LockKind::Exclusive, "gc", options()).unwrap();
        let err =
            RepoLock::acquire(backend.clone(), LockKind::Shared, "archive", options()).unwrap_err();
        assert!(err.to_string().contains("exclusive lock for gc"), "{err}");
        drop(gc);
        assert!(crate::backend::list_sorted(&*backend, LOCKS_PREFIX)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn stale_locks_are_removed() {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let old = Utc::now() - chrono::Duration::hours(2);
        let info = LockInfo {
            kind: LockKind::Shared,
            purpose: "archive".into(),
            host: "elsewhere".into(),
            pid: 1,
            created: old,
            refreshed: old,
        };
        backend
            .write("locks/old", &serde_json::to_vec(&info).unwrap())
            .unwrap();
        // A dead process on this host is stale at once, whatever its age.
        let dead = LockInfo {
            host: hostname(),
            pid: u32::MAX - 1,
            refreshed: Utc::now(),
            ..info.clone()
        };
        backend
            .write("locks/dead", &serde_json::to_vec(&dead).unwrap())
            .unwrap();
        let (gc, removed) =
            RepoLock::acquire(backend.clone(), LockKind::Exclusive, "gc", options()).unwrap();
        assert_eq!(removed, 2);
        assert!(!backend.exists("locks/old").unwrap());
        drop(gc);
    }

    #[test]
    fn refresh_detects_a_removed_lock_and_a_long_gap() {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let (lock, _) =
            RepoLock::acquire(backend.clone(), LockKind::Shared, "archive", options()).unwrap();
        lock.refresh().unwrap();
        backend.delete(lock.name()).unwrap();
        assert!(matches!(lock.refresh(), Err(Error::LockLost { .. })));

        let short = LockOptions {
            stale_after: Duration::from_millis(40),
            ..options()
        };
        let (lock, _) =
            RepoLock::acquire(backend.clone(), LockKind::Shared, "archive", short).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        let err = lock.refresh().unwrap_err();
        assert!(err.to_string().contains("not refreshed for"), "{err}");
    }

    #[test]
    fn waits_for_a_conflicting_lock() {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let (shared, _) =
            RepoLock::acquire(backend.clone(), LockKind::Shared, "archive", options()).unwrap();
        let waiting = LockOptions {
            wait: Duration::from_secs(5),
            retry_every: Duration::from_millis(10),
            ..options()
        };
        let b = backend.clone();
        let gc = std::thread::spawn(move || {
            RepoLock::acquire(b, LockKind::Exclusive, "gc", waiting).map(|_| ())
        });
        std::thread::sleep(Duration::from_millis(50));
        drop(shared);
        gc.join().unwrap().unwrap();
    }
}

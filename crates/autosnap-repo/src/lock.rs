//! Repository locks: shared for `archive`, `verify` and `forget`, exclusive for `gc`.
//!
//! A lock is an object `locks/<time>-<kind>-<random>` holding [`LockInfo`] as JSON.
//!
//! * **Acquire**: write our lock object first, then list `locks/`. When the listing turns out
//!   to be out of date — a lock in it was stale and got deleted, or vanished before it could
//!   be read — `locks/` is listed again: a refreshing holder may have moved to a successor
//!   object (see below). If a live lock conflicts (exclusive vs anything), remove ours and
//!   retry until [`LockOptions::wait`] runs out, then fail with
//!   [`Error::Locked`](crate::Error::Locked). Because both sides write before they look, and a
//!   holder has at least one lock object at every instant, two conflicting acquirers can
//!   never both succeed (they may both back off).
//! * **Stale**: a lock is stale after the expiry time its holder wrote into it (`expires`,
//!   at most [`MAX_LOCK_LIFETIME`] after its `refreshed`), or when its `refreshed` lies more
//!   than [`LockOptions::clock_skew`] in the future (its holder's clock is wrong, so its times
//!   mean nothing; it will find out at its next refresh). Host names and pids are shown to
//!   people, never used to judge: EC2's default host names repeat across VPCs and containers
//!   share pids.
//! * **Refresh** never rewrites the lock object (a rewrite would recreate a lock that someone
//!   deleted as stale). It writes a *successor* object, then checks that the predecessor is
//!   still there and still ours, then deletes the predecessor. If the predecessor is gone,
//!   the successor is deleted and the holder stops with
//!   [`Error::LockLost`](crate::Error::LockLost). Whoever deleted the predecessor either did
//!   so before that check (the holder sees it) or after it, and then its next listing sees
//!   the successor (acquirers list again after deleting).
//! * **Trust**: a holder trusts its lock only while less than
//!   [`LockOptions::max_refresh_gap`] (¾ of the lifetime) has passed on its monotonic clock
//!   since the start of its last successful refresh; [`RepoLock::check`] is called before
//!   every write that relies on the lock. The last quarter covers clock skew between hosts
//!   and a request in flight.
//! * **Keep-alive**: [`RepoLock::keep_alive_in_background`] refreshes from a thread every
//!   half [`LockOptions::refresh_every`], so a long pause of the caller (a slow listing, a
//!   throttled API) does not let the lock expire.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::error::{Error, LockHolder, Result};

/// Prefix of lock objects.
pub const LOCKS_PREFIX: &str = "locks/";

/// The longest a lock can claim to live after a refresh, whatever its `expires` says: a lock
/// object written by a bug or by hand cannot block the repository for longer.
pub const MAX_LOCK_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// Listings an acquirer makes while it keeps finding stale locks, before it gives up.
const MAX_SURVEYS: usize = 16;

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
    /// For people; never used to judge a lock.
    pub host: String,
    /// For people; never used to judge a lock.
    pub pid: u32,
    /// A random id of the holding process (32 hex digits), the same in all its locks: how a
    /// holder recognises its own lock object. Empty in locks of older versions.
    #[serde(default)]
    pub process: String,
    pub created: DateTime<Utc>,
    /// Last refresh, by the holder's clock.
    pub refreshed: DateTime<Utc>,
    /// When the lock is stale unless refreshed again, by the holder's clock. Locks of older
    /// versions lack it: they expire `stale_after` after `refreshed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<DateTime<Utc>>,
}

/// Timing of the lock protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockOptions {
    /// A lock's lifetime after each refresh, written into it as `expires` (default 30 min).
    pub stale_after: Duration,
    /// Holders refresh their lock this often (default 5 min).
    pub refresh_every: Duration,
    /// How long to wait for a conflicting lock to go away (default 0: fail at once).
    pub wait: Duration,
    /// Pause between attempts while waiting (default 5 s).
    pub retry_every: Duration,
    /// How far another host's clock may run ahead of this one's (default 5 min): a lock
    /// refreshed further in the future than this is stale. Keep it below a quarter of
    /// `stale_after`.
    pub clock_skew: Duration,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            stale_after: Duration::from_secs(30 * 60),
            refresh_every: Duration::from_secs(5 * 60),
            wait: Duration::ZERO,
            retry_every: Duration::from_secs(5),
            clock_skew: Duration::from_secs(5 * 60),
        }
    }
}

impl LockOptions {
    /// The longest a holder may go between refreshes and still trust its lock: three
    /// quarters of `stale_after`, leaving a quarter for clock skew between hosts and for a
    /// request in flight.
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

/// This process's random id (see [`LockInfo::process`]).
pub fn process_id() -> Result<&'static str> {
    static ID: OnceLock<String> = OnceLock::new();
    if let Some(id) = ID.get() {
        return Ok(id);
    }
    let mut random = [0u8; 16];
    crate::crypto::random_bytes(&mut random)?;
    Ok(ID.get_or_init(|| hex::encode(random)))
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// When `info` expires: its declared `expires` (or `refreshed + stale_after` for a lock
/// without one), at most [`MAX_LOCK_LIFETIME`] after `refreshed`.
pub fn expiry(info: &LockInfo, options: &LockOptions) -> DateTime<Utc> {
    let declared = info
        .expires
        .unwrap_or_else(|| info.refreshed + chrono_duration(options.stale_after));
    declared.min(info.refreshed + chrono_duration(MAX_LOCK_LIFETIME))
}

/// Whether `info` is a stale lock at `now`: expired, or refreshed further in the future than
/// the clock-skew allowance.
pub fn is_stale(info: &LockInfo, now: DateTime<Utc>, options: &LockOptions) -> bool {
    info.refreshed > now + chrono_duration(options.clock_skew) || now > expiry(info, options)
}

/// The largest lock object read: a lock is a few hundred bytes of JSON, so anything bigger
/// was not written by this protocol (and is treated like one that does not parse).
pub const MAX_LOCK_LEN: u64 = 4096;

/// Reads and parses one lock object: `Ok(None)` when it does not parse or is too large (it
/// cannot protect anything), `Err(NotFound)` when it is gone.
fn read_lock(
    backend: &dyn Backend,
    name: &str,
) -> std::result::Result<Option<LockInfo>, crate::BackendError> {
    match backend.read_at_most(name, MAX_LOCK_LEN) {
        Ok(bytes) => Ok(serde_json::from_slice::<LockInfo>(&bytes).ok()),
        Err(e) if e.is_too_large() => Ok(None),
        Err(e) => Err(e),
    }
}

/// One lock object found in a repository (for `repo unlock`).
#[derive(Debug, Clone, Serialize)]
pub struct LockEntry {
    /// The object's name (`locks/…`).
    pub name: String,
    /// Its content; `None` when it does not parse (such a lock protects nothing).
    pub info: Option<LockInfo>,
    /// When it stops protecting anything (`None` for one that does not parse).
    pub expires: Option<DateTime<Utc>>,
    /// Expired, dated too far in the future, or unparsable.
    pub stale: bool,
}

/// Every lock object in the repository, oldest name first, judged at `now`.
pub fn list_locks(
    backend: &dyn Backend,
    options: &LockOptions,
    now: DateTime<Utc>,
) -> Result<Vec<LockEntry>> {
    let mut entries = Vec::new();
    for object in crate::backend::list_sorted(backend, LOCKS_PREFIX)? {
        let info = match read_lock(backend, &object.name) {
            Ok(info) => info,
            // Released between the listing and the read.
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        let stale = info
            .as_ref()
            .is_none_or(|info| is_stale(info, now, options));
        let expires = info.as_ref().map(|info| expiry(info, options));
        entries.push(LockEntry {
            name: object.name,
            info,
            expires,
            stale,
        });
    }
    Ok(entries)
}

/// Deletes the named lock objects (deleting one that is already gone succeeds).
pub fn remove_locks<'a>(
    backend: &dyn Backend,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<u64> {
    let mut removed = 0;
    for name in names {
        if !name.starts_with(LOCKS_PREFIX) {
            continue;
        }
        backend.delete(name)?;
        removed += 1;
    }
    Ok(removed)
}

/// A held lock; released (its object deleted) when dropped.
pub struct RepoLock {
    held: Arc<Held>,
    keeper: Mutex<Option<Keeper>>,
}

/// The state a background refresh shares with the holder.
struct Held {
    backend: Arc<dyn Backend>,
    options: LockOptions,
    current: Mutex<Current>,
    /// Why the lock was lost, once it was.
    lost: Mutex<Option<String>>,
    released: AtomicBool,
}

/// The lock object that is ours now.
struct Current {
    name: String,
    info: LockInfo,
    /// Monotonic time when the write of this object started (what trust is measured from).
    written_at: Instant,
}

struct Keeper {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: JoinHandle<()>,
}

impl fmt::Debug for RepoLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RepoLock")
            .field("name", &self.name())
            .finish()
    }
}

fn conflicts(a: LockKind, b: LockKind) -> bool {
    a == LockKind::Exclusive || b == LockKind::Exclusive
}

impl Held {
    /// Writes a new lock object (create-only, fresh name) like `template`, refreshed now.
    fn write_object(&self, template: &LockInfo) -> Result<Current> {
        let written_at = Instant::now();
        let now = Utc::now();
        let info = LockInfo {
            refreshed: now,
            expires: Some(now + chrono_duration(self.options.stale_after)),
            ..template.clone()
        };
        let mut random = [0u8; 8];
        crate::crypto::random_bytes(&mut random)?;
        let name = format!(
            "{LOCKS_PREFIX}{}-{}-{}",
            now.format("%Y%m%dT%H%M%SZ"),
            info.kind,
            hex::encode(random)
        );
        let json = serde_json::to_vec_pretty(&info).expect("serialisable");
        if let Err(e) = self.backend.create(&name, &json) {
            // The write may have happened with its answer lost: do not leave it behind.
            let _ = self.backend.delete(&name);
            return Err(e.into());
        }
        Ok(Current {
            name,
            info,
            written_at,
        })
    }

    fn lose(&self, name: &str, reason: String) -> Error {
        let mut lost = self.lost.lock().unwrap();
        let reason = lost.get_or_insert(reason).clone();
        Error::LockLost {
            name: name.to_owned(),
            reason,
        }
    }

    fn check(&self, current: &Current) -> Result<()> {
        if let Some(reason) = self.lost.lock().unwrap().clone() {
            return Err(Error::LockLost {
                name: current.name.clone(),
                reason,
            });
        }
        if self.released.load(Ordering::SeqCst) {
            return Err(self.lose(&current.name, "it was released".to_owned()));
        }
        let gap = current.written_at.elapsed();
        if gap > self.options.max_refresh_gap() {
            return Err(self.lose(
                &current.name,
                format!(
                    "not refreshed for {}, longer than the {} allowed",
                    humanize(gap),
                    humanize(self.options.max_refresh_gap())
                ),
            ));
        }
        Ok(())
    }

    /// Whether lock object `name` still holds what we wrote.
    fn still_ours(&self, current: &Current) -> Result<bool> {
        match read_lock(&*self.backend, &current.name) {
            Ok(info) => Ok(info.is_some_and(|info| info == current.info)),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn refresh(&self) -> Result<()> {
        let mut current = self.current.lock().unwrap();
        self.check(&current)?;
        let successor = self.write_object(&current.info)?;
        let ours = match self.still_ours(&current) {
            Ok(ours) => ours,
            Err(e) => {
                let _ = self.backend.delete(&successor.name);
                return Err(e);
            }
        };
        if !ours {
            let _ = self.backend.delete(&successor.name);
            return Err(self.lose(
                &current.name,
                "another process removed it as stale (this process was paused for long, \
                 or this host's clock is off)"
                    .to_owned(),
            ));
        }
        let predecessor = std::mem::replace(&mut *current, successor);
        drop(current);
        self.backend.delete(&predecessor.name)?;
        Ok(())
    }

    fn refresh_if_due(&self) -> Result<()> {
        let due = {
            let current = self.current.lock().unwrap();
            self.check(&current)?;
            current.written_at.elapsed() >= self.options.refresh_every
        };
        if due {
            self.refresh()
        } else {
            Ok(())
        }
    }

    /// Lists the other locks, deleting stale ones, until a listing finds none stale. Returns
    /// the first live lock that conflicts with ours.
    fn survey(&self, stale_removed: &mut u64) -> Result<Option<LockHolder>> {
        let (own, kind) = {
            let current = self.current.lock().unwrap();
            (current.name.clone(), current.info.kind)
        };
        let mut last_seen = None;
        for _ in 0..MAX_SURVEYS {
            let mut others = Vec::new();
            self.backend.list(LOCKS_PREFIX, &mut |object| {
                if object.name != own {
                    others.push(object.name);
                }
                Ok(())
            })?;
            // Whether the lock objects changed under this listing: then list again.
            let mut changed = false;
            for other in others {
                // Lock objects are written atomically, so one that does not parse (or is
                // too large) was not written by this protocol: it cannot protect anything.
                let info = match read_lock(&*self.backend, &other) {
                    Ok(info) => info,
                    // Released, or moved to a successor by a refresh (which writes the
                    // successor before deleting this one, so the next listing sees it).
                    Err(e) if e.is_not_found() => {
                        changed = true;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                let stale = info
                    .as_ref()
                    .is_none_or(|info| is_stale(info, Utc::now(), &self.options));
                if stale {
                    self.backend.delete(&other)?;
                    *stale_removed += 1;
                    // Its holder may have been writing a successor (a refresh): look again.
                    changed = true;
                    if let Some(info) = info {
                        last_seen = Some((other, info));
                    }
                    continue;
                }
                let info = info.expect("parsed");
                if conflicts(kind, info.kind) {
                    return Ok(Some(self.holder(other, info)));
                }
            }
            if !changed {
                return Ok(None);
            }
        }
        // The lock objects never stopped changing: assume a conflict rather than loop on.
        let (name, info) = last_seen.unwrap_or_else(|| {
            let now = Utc::now();
            (
                LOCKS_PREFIX.to_owned(),
                LockInfo {
                    kind: LockKind::Exclusive,
                    purpose: "unknown (lock objects kept changing while listed)".to_owned(),
                    host: "unknown".to_owned(),
                    pid: 0,
                    process: String::new(),
                    created: now,
                    refreshed: now,
                    expires: None,
                },
            )
        });
        Ok(Some(self.holder(name, info)))
    }

    fn holder(&self, name: String, info: LockInfo) -> LockHolder {
        // The lifetime this lock declared, which is what decides when it expires.
        let lifetime = (expiry(&info, &self.options) - info.refreshed)
            .to_std()
            .unwrap_or_default();
        LockHolder {
            name,
            info,
            stale_after: humanize(lifetime),
        }
    }
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
        let template = LockInfo {
            kind,
            purpose: purpose.to_owned(),
            host: hostname(),
            pid: std::process::id(),
            process: process_id()?.to_owned(),
            created: Utc::now(),
            refreshed: Utc::now(),
            expires: None,
        };
        let deadline = Instant::now() + options.wait;
        let mut stale_removed = 0;
        loop {
            let held = Held {
                backend: backend.clone(),
                options,
                current: Mutex::new(Current {
                    name: String::new(),
                    info: template.clone(),
                    written_at: Instant::now(),
                }),
                lost: Mutex::new(None),
                released: AtomicBool::new(true),
            };
            let first = held.write_object(&LockInfo {
                created: Utc::now(),
                ..template.clone()
            })?;
            *held.current.lock().unwrap() = first;
            held.released.store(false, Ordering::SeqCst);
            let lock = RepoLock {
                held: Arc::new(held),
                keeper: Mutex::new(None),
            };
            let Some(holder) = lock.held.survey(&mut stale_removed)? else {
                // Someone may have judged our new lock stale meanwhile (this host's clock
                // ahead of theirs): then it protects nothing.
                let current = lock.held.current.lock().unwrap();
                if !lock.held.still_ours(&current)? {
                    return Err(lock.held.lose(
                        &current.name,
                        "another process removed it as stale right after it was taken; \
                         check this host's clock"
                            .to_owned(),
                    ));
                }
                drop(current);
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

    /// The lock object's current name (it changes with every refresh).
    pub fn name(&self) -> String {
        self.held.current.lock().unwrap().name.clone()
    }

    /// The lock's kind.
    pub fn kind(&self) -> LockKind {
        self.held.current.lock().unwrap().info.kind
    }

    /// Fails with `LockLost` unless the lock can still be trusted: not found lost by a
    /// refresh, and refreshed within [`LockOptions::max_refresh_gap`]. Call it before every
    /// write that relies on the lock.
    pub fn check(&self) -> Result<()> {
        let current = self.held.current.lock().unwrap();
        self.held.check(&current)
    }

    /// Refreshes the lock now (see the module documentation). Fails with `LockLost` when the
    /// lock can no longer be trusted or its object was removed by someone else; then nothing
    /// that relies on the lock may be written.
    pub fn refresh(&self) -> Result<()> {
        self.held.refresh()
    }

    /// [`RepoLock::check`], then [`RepoLock::refresh`] if `refresh_every` has passed since the
    /// last refresh.
    pub fn refresh_if_due(&self) -> Result<()> {
        self.held.refresh_if_due()
    }

    /// Refreshes the lock from a background thread until it is released or dropped, so that
    /// long pauses of the caller do not let it expire. A loss found there is reported by the
    /// next [`RepoLock::check`]. Calling it again does nothing.
    pub fn keep_alive_in_background(&self) -> Result<()> {
        let mut keeper = self.keeper.lock().unwrap();
        if keeper.is_some() {
            return Ok(());
        }
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let held = self.held.clone();
        let signal = stop.clone();
        let every = (self.held.options.refresh_every / 2).max(Duration::from_millis(1));
        let thread = std::thread::Builder::new()
            .name("repo-lock".to_owned())
            .spawn(move || {
                let (stopped, wake) = &*signal;
                let mut guard = stopped.lock().unwrap();
                loop {
                    guard = wake
                        .wait_timeout_while(guard, every, |stopped| !*stopped)
                        .unwrap()
                        .0;
                    if *guard {
                        return;
                    }
                    drop(guard);
                    // A failed request is tried again at the next wake-up; a loss is recorded
                    // for the holder's next check.
                    if let Err(Error::LockLost { .. }) = held.refresh_if_due() {
                        return;
                    }
                    guard = stopped.lock().unwrap();
                }
            })
            .map_err(|e| crate::error::io_err("start a thread to refresh", "the lock", e))?;
        *keeper = Some(Keeper { stop, thread });
        Ok(())
    }

    fn stop_keeper(&self) {
        let keeper = self.keeper.lock().unwrap().take();
        if let Some(keeper) = keeper {
            let (stopped, wake) = &*keeper.stop;
            *stopped.lock().unwrap() = true;
            wake.notify_all();
            let _ = keeper.thread.join();
        }
    }

    /// Deletes the lock object.
    pub fn release(self) -> Result<()> {
        self.stop_keeper();
        self.held.released.store(true, Ordering::SeqCst);
        let name = self.name();
        self.held.backend.delete(&name)?;
        Ok(())
    }
}

impl Drop for RepoLock {
    fn drop(&mut self) {
        self.stop_keeper();
        if !self.held.released.swap(true, Ordering::SeqCst) {
            let name = self.name();
            let _ = self.held.backend.delete(&name);
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

    fn info(refreshed: DateTime<Utc>, expires: Option<DateTime<Utc>>) -> LockInfo {
        LockInfo {
            kind: LockKind::Shared,
            purpose: "archive".into(),
            host: "elsewhere".into(),
            pid: 1,
            process: "00".repeat(16),
            created: refreshed,
            refreshed,
            expires,
        }
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
    fn staleness_follows_the_declared_expiry_with_bounds() {
        let now = Utc::now();
        let o = options();
        let min = chrono::Duration::minutes;
        // Declared expiry, whatever the judge's own stale_after.
        assert!(!is_stale(&info(now - min(40), Some(now + min(1))), now, &o));
        assert!(is_stale(&info(now - min(10), Some(now - min(1))), now, &o));
        // Older locks without `expires`: the judge's stale_after.
        assert!(!is_stale(&info(now - min(29), None), now, &o));
        assert!(is_stale(&info(now - min(31), None), now, &o));
        // No lock lives longer than MAX_LOCK_LIFETIME after its refresh.
        let forever = Some(now + chrono::Duration::days(3650));
        assert!(!is_stale(&info(now - min(60), forever), now, &o));
        assert!(is_stale(&info(now - min(25 * 60), forever), now, &o));
        // From the future: live within the clock-skew allowance, stale beyond it.
        assert!(!is_stale(&info(now + min(4), Some(now + min(34))), now, &o));
        assert!(is_stale(&info(now + min(6), Some(now + min(36))), now, &o));
    }

    #[test]
    fn stale_and_unreadable_locks_are_removed() {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let old = Utc::now() - chrono::Duration::hours(2);
        backend
            .write(
                "locks/old",
                &serde_json::to_vec(&info(old, Some(old))).unwrap(),
            )
            .unwrap();
        backend.write("locks/junk", b"not json").unwrap();
        let (gc, removed) =
            RepoLock::acquire(backend.clone(), LockKind::Exclusive, "gc", options()).unwrap();
        assert_eq!(removed, 2);
        assert!(!backend.exists("locks/old").unwrap());
        drop(gc);
    }

    #[test]
    fn listing_judges_each_lock_and_oversized_ones_protect_nothing() {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let (live, _) =
            RepoLock::acquire(backend.clone(), LockKind::Shared, "archive", options()).unwrap();
        let old = Utc::now() - chrono::Duration::hours(2);
        backend
            .write(
                "locks/0-old",
                &serde_json::to_vec(&info(old, Some(old))).unwrap(),
            )
            .unwrap();
        // Valid JSON padded past the limit: never read whole, and judged stale.
        let mut big = serde_json::to_vec(&info(Utc::now(), None)).unwrap();
        big.extend(std::iter::repeat_n(b' ', MAX_LOCK_LEN as usize));
        backend.write("locks/1-big", &big).unwrap();

        let entries = list_locks(&*backend, &options(), Utc::now()).unwrap();
        let judged: Vec<(&str, bool, bool)> = entries
            .iter()
            .map(|e| (e.name.as_str(), e.stale, e.info.is_some()))
            .collect();
        assert_eq!(
            judged,
            vec![
                ("locks/0-old", true, true),
                ("locks/1-big", true, false),
                (live.name().as_str(), false, true),
            ]
        );
        // An oversized lock does not block an exclusive lock either.
        let removed = remove_locks(
            &*backend,
            entries.iter().filter(|e| e.stale).map(|e| e.name.as_str()),
        )
        .unwrap();
        assert_eq!(removed, 2);
        let left = list_locks(&*backend, &options(), Utc::now()).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].name, live.name());
        drop(live);
        backend.write("locks/2-big", &big).unwrap();
        let (gc, removed) =
            RepoLock::acquire(backend.clone(), LockKind::Exclusive, "gc", options()).unwrap();
        assert_eq!(removed, 1);
        drop(gc);
    }

    #[test]
    fn refresh_moves_the_lock_to_a_successor_and_detects_a_removed_lock() {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let (lock, _) =
            RepoLock::acquire(backend.clone(), LockKind::Shared, "archive", options()).unwrap();
        let first = lock.name();
        lock.refresh().unwrap();
        let second = lock.name();
        assert_ne!(first, second);
        let names: Vec<String> = crate::backend::list_sorted(&*backend, LOCKS_PREFIX)
            .unwrap()
            .into_iter()
            .map(|o| o.name)
            .collect();
        assert_eq!(names, vec![second.clone()]);
        backend.delete(&second).unwrap();
        assert!(matches!(lock.refresh(), Err(Error::LockLost { .. })));
        // Once lost, always lost, and nothing of ours is left behind.
        assert!(matches!(lock.check(), Err(Error::LockLost { .. })));
        assert!(crate::backend::list_sorted(&*backend, LOCKS_PREFIX)
            .unwrap()
            .is_empty());

        // A lock replaced by someone else's content is not ours either.
        let (lock, _) =
            RepoLock::acquire(backend.clone(), LockKind::Shared, "archive", options()).unwrap();
        let now = Utc::now();
        backend
            .write(
                &lock.name(),
                &serde_json::to_vec(&info(now, Some(now))).unwrap(),
            )
            .unwrap();
        assert!(matches!(lock.refresh(), Err(Error::LockLost { .. })));
    }

    #[test]
    fn a_long_gap_between_refreshes_loses_the_lock() {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let short = LockOptions {
            stale_after: Duration::from_millis(40),
            ..options()
        };
        let (lock, _) =
            RepoLock::acquire(backend.clone(), LockKind::Shared, "archive", short).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        let err = lock.refresh().unwrap_err();
        assert!(err.to_string().contains("not refreshed for"), "{err}");
        assert!(matches!(lock.check(), Err(Error::LockLost { .. })));
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

    #[test]
    fn lock_objects_carry_the_process_id_and_expiry() {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let (lock, _) =
            RepoLock::acquire(backend.clone(), LockKind::Shared, "archive", options()).unwrap();
        let stored: LockInfo =
            serde_json::from_slice(&backend.read(&lock.name()).unwrap()).unwrap();
        assert_eq!(stored.process, process_id().unwrap());
        assert_eq!(stored.process.len(), 32);
        assert_eq!(
            stored.expires.unwrap() - stored.refreshed,
            chrono::Duration::minutes(30)
        );
    }
}

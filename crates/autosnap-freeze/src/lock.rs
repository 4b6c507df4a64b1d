//! One freeze per filesystem at a time, across processes: each watchdog takes
//! an exclusive `flock` on the mount point directory of every filesystem it
//! watches, before anything is frozen, and holds it as long as it lives.
//!
//! Without it, two autosnap runs (two policies, a cron job and a daemon)
//! could freeze the same filesystem one after the other while the first one's
//! watchdog is still armed, and that watchdog would then thaw the second
//! one's freeze. The lock is on the directory itself (no lock file to
//! create, nothing written to the filesystem) and the kernel drops it when
//! the watchdog exits, however it exits.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

use crate::watchdog::WATCHDOG_SUBCOMMAND;

/// Takes the exclusive lock without waiting: `Ok(false)` when another open
/// file (another watchdog) holds it.
pub(crate) fn try_lock(dir: &File) -> io::Result<bool> {
    // SAFETY: flock takes a descriptor that `dir` keeps open for the call
    // and an integer operation; no memory is passed.
    let rc = unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(error)
    }
}

/// The process holding the `flock` on `dir`, from `/proc/locks`.
pub(crate) fn holder_pid(dir: &File) -> Option<u32> {
    let meta = dir.metadata().ok()?;
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    find_flock_holder(
        &locks,
        libc::major(meta.dev()),
        libc::minor(meta.dev()),
        meta.ino(),
    )
}

/// The pid of the FLOCK on `major:minor:inode` in the text of `/proc/locks`
/// (`1: FLOCK  ADVISORY  WRITE 1234 07:00:12 0 EOF`; device numbers in hex,
/// the inode in decimal; lines with `->` are waiters, not holders).
pub(crate) fn find_flock_holder(locks: &str, major: u32, minor: u32, inode: u64) -> Option<u32> {
    let wanted = format!("{major:02x}:{minor:02x}:{inode}");
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [_, "FLOCK", _, _, pid, device, ..] if *device == wanted => pid.parse().ok(),
            _ => None,
        }
    })
}

/// Who holds a filesystem's freeze lock: a watchdog, and the autosnap that
/// started it when it is still its parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHolder {
    pub pid: u32,
    pub command: String,
    /// The autosnap process the holding watchdog watches, if still alive.
    pub autosnap: Option<(u32, String)>,
}

impl LockHolder {
    /// Looks `pid` up in `/proc`.
    pub(crate) fn describe(pid: u32) -> LockHolder {
        let command = command_line(pid).unwrap_or_else(|| "?".into());
        let autosnap = if command.contains(WATCHDOG_SUBCOMMAND) {
            parent_pid(pid)
                .filter(|&parent| parent > 1)
                .map(|parent| (parent, command_line(parent).unwrap_or_else(|| "?".into())))
        } else {
            None
        };
        LockHolder {
            pid,
            command,
            autosnap,
        }
    }
}

impl fmt::Display for LockHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.autosnap {
            Some((pid, command)) => write!(
                f,
                "autosnap pid {pid} (`{command}`; its freeze watchdog is pid {})",
                self.pid
            ),
            None => write!(f, "pid {} (`{}`)", self.pid, self.command),
        }
    }
}

fn command_line(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let text = raw
        .split(|&b| b == 0)
        .filter(|part| !part.is_empty())
        .map(|part| String::from_utf8_lossy(part).into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    Some(text)
}

fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid …`: comm may hold spaces and parentheses.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCKS: &str = "\
1: POSIX  ADVISORY  WRITE 812 fd:01:1048602 0 EOF
2: FLOCK  ADVISORY  WRITE 4321 07:03:2 0 EOF
2: -> FLOCK  ADVISORY  WRITE 999 07:03:2 0 EOF
3: FLOCK  ADVISORY  WRITE 77 103:01:2 0 EOF
";

    #[test]
    fn finds_the_holder_not_the_waiter() {
        assert_eq!(find_flock_holder(LOCKS, 7, 3, 2), Some(4321));
        // Major 259 is 0x103 in /proc/locks.
        assert_eq!(find_flock_holder(LOCKS, 259, 1, 2), Some(77));
        assert_eq!(find_flock_holder(LOCKS, 7, 4, 2), None);
        // A POSIX lock on the same numbers is not ours.
        assert_eq!(find_flock_holder(LOCKS, 0xfd, 1, 1048602), None);
    }

    #[test]
    fn a_second_open_file_cannot_take_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let first = crate::ioctl::open_dir(dir.path()).unwrap();
        let second = crate::ioctl::open_dir(dir.path()).unwrap();
        assert!(try_lock(&first).unwrap());
        assert!(!try_lock(&second).unwrap());
        assert_eq!(holder_pid(&second), Some(std::process::id()));
        drop(first);
        assert!(try_lock(&second).unwrap());
    }
}

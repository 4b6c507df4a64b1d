//! The two ioctls, on a file descriptor of a directory of the filesystem
//! (its mount point): `FIFREEZE` blocks new writes and flushes the filesystem
//! to a consistent state on disk; `FITHAW` lets writes through again.
//!
//! The kernel lets one userspace freeze hold a filesystem; a second FIFREEZE
//! fails with `EBUSY`, FITHAW on a filesystem that is not frozen fails with
//! `EINVAL`, and both need `CAP_SYS_ADMIN` (`EPERM` otherwise). Any process may
//! thaw what another froze, which is what lets the watchdog thaw for a dead
//! autosnap.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Linux `_IOC` for a read/write ioctl, laid out as on every architecture
/// Rust supports for Linux (direction in the top two bits, size in the next
/// fourteen; on powerpc, mips and sparc the direction field is three bits
/// wide and the size thirteen, which yields the same value for `_IOWR` with a
/// 4-byte argument).
const fn iowr(kind: u8, number: u8, size: usize) -> u32 {
    const READ_WRITE: u32 = 0b11;
    (READ_WRITE << 30) | ((size as u32) << 16) | ((kind as u32) << 8) | number as u32
}

/// `_IOWR('X', 119, int)` from `<linux/fs.h>`.
pub const FIFREEZE: u32 = iowr(b'X', 119, std::mem::size_of::<libc::c_int>());
/// `_IOWR('X', 120, int)` from `<linux/fs.h>`.
pub const FITHAW: u32 = iowr(b'X', 120, std::mem::size_of::<libc::c_int>());

/// What a thaw found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThawOutcome {
    /// It was frozen and is now thawed.
    Thawed,
    /// It was not frozen (`EINVAL`): someone (the watchdog, a signal handler,
    /// an operator running `fsfreeze -u`) thawed it already. Not an error.
    NotFrozen,
}

/// Opens a directory (a mount point) for the freeze ioctls: read-only, so
/// opening it writes nothing, and close-on-exec, so hooks and the watchdog do
/// not inherit it.
pub fn open_dir(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
}

/// FIFREEZE on the filesystem holding `dir`.
pub fn freeze(dir: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: `dir` is a valid open file descriptor for the duration of the
    // borrow; FIFREEZE takes an `int` argument that the kernel ignores, and we
    // pass 0 by value (no pointer is dereferenced).
    let rc = unsafe { libc::ioctl(dir.as_raw_fd(), FIFREEZE as libc::Ioctl, 0 as libc::c_int) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// FITHAW on the filesystem holding `dir`; `EINVAL` (not frozen) is
/// [`ThawOutcome::NotFrozen`], not an error.
pub fn thaw(dir: BorrowedFd<'_>) -> io::Result<ThawOutcome> {
    // SAFETY: as for FIFREEZE: a valid borrowed descriptor and an ignored
    // integer argument passed by value.
    let rc = unsafe { libc::ioctl(dir.as_raw_fd(), FITHAW as libc::Ioctl, 0 as libc::c_int) };
    if rc == 0 {
        return Ok(ThawOutcome::Thawed);
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::EINVAL) {
        Ok(ThawOutcome::NotFrozen)
    } else {
        Err(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_numbers_match_linux_fs_h() {
        assert_eq!(FIFREEZE, 0xC004_5877);
        assert_eq!(FITHAW, 0xC004_5878);
    }
}

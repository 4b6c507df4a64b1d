//! Process hardening for the commands that hold secrets or a freeze: no core
//! dumps, so a crash does not write repository keys or passphrases to disk,
//! and no ptrace attach by other processes of the same user (a
//! non-dumpable process's `/proc` files belong to root). Also the effective
//! user id, for the CLI's checks of whom its configuration comes from.

use std::io;

/// Turns core dumps off for the rest of this process: `RLIMIT_CORE` 0 (soft
/// and hard; children such as hooks inherit it) and `PR_SET_DUMPABLE` 0. Call it before reading keys or
/// freezing. Without `CAP_SYS_RESOURCE` the limit cannot be raised again.
/// Executing another program (the watchdog, hooks) makes that
/// program dumpable again, as the kernel does on exec; the limit stays.
pub fn disable_core_dumps() -> io::Result<()> {
    let none = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit reads the rlimit struct we pass by reference, which
    // lives for the duration of the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &none) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: prctl(PR_SET_DUMPABLE, 0) takes only integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0 as libc::c_ulong) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The effective user id of this process (whose files it trusts).
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid takes no arguments and cannot fail.
    unsafe { libc::geteuid() }
}

/// Whether core dumps are off for this process (both settings of
/// [`disable_core_dumps`]).
pub fn core_dumps_disabled() -> io::Result<bool> {
    // SAFETY: prctl(PR_GET_DUMPABLE) takes no pointer and returns the flag.
    let dumpable = unsafe { libc::prctl(libc::PR_GET_DUMPABLE) };
    if dumpable < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the rlimit struct we own for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(dumpable == 0 && limit.rlim_cur == 0 && limit.rlim_max == 0)
}

//! Core dumps off: checked in this test process (its own binary, one test),
//! through the kernel's own views: prctl and /proc/self/limits.

use autosnap_freeze::harden::{core_dumps_disabled, disable_core_dumps};

#[test]
fn disable_core_dumps_sets_the_limit_and_the_dumpable_flag() {
    assert!(
        !core_dumps_disabled().unwrap(),
        "a fresh test process is dumpable"
    );
    disable_core_dumps().unwrap();
    assert!(core_dumps_disabled().unwrap());
    // SAFETY: PR_GET_DUMPABLE takes no pointer.
    assert_eq!(unsafe { libc::prctl(libc::PR_GET_DUMPABLE) }, 0);
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    let fields: Vec<&str> = core.split_whitespace().collect();
    assert_eq!(&fields[4..6], ["0", "0"], "{core}");
    // The hard limit is 0 too: without CAP_SYS_RESOURCE it cannot be raised.
    let raise = libc::rlimit {
        rlim_cur: 1 << 20,
        rlim_max: 1 << 20,
    };
    // SAFETY: setrlimit reads the struct we pass for the duration of the call.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_CORE, &raise) };
    // Root (CAP_SYS_RESOURCE) may raise a hard limit; anyone else may not.
    // SAFETY: geteuid has no arguments.
    if unsafe { libc::geteuid() } != 0 {
        assert_ne!(rc, 0);
    }
}

//! The thaw watchdog: a separate process that thaws the frozen filesystems
//! when autosnap cannot — killed with SIGKILL, stuck in an AWS call, or past
//! its freeze timeout.
//!
//! # Protocol
//!
//! The parent ([`Watchdog::spawn`]) starts the autosnap executable again as
//! `autosnap __freeze-watchdog --timeout-ms N MOUNT...`, in a session of its
//! own (`setsid`, so signals to autosnap's process group or terminal do not
//! reach it) and with `/` as its working directory. Its stdin and stdout are
//! one end of a socket pair whose other end only the parent holds.
//!
//! 1. The watchdog opens every mount point and takes an exclusive `flock`
//!    on each (before anything is frozen), then writes `ready\n`. The parent
//!    freezes only after reading it. A mount point already locked by another
//!    watchdog — another autosnap freezing the same filesystem — makes it
//!    answer `busy INDEX PID\n` and exit with [`exit_code::BUSY`]: two
//!    freezes of one filesystem never overlap, so one's watchdog cannot thaw
//!    the other's freeze. The locks last as long as the watchdog does.
//! 2. The parent thaws, then writes `thawed\n` ([`Watchdog::disarm`]): the
//!    watchdog exits at once with [`exit_code::DISARMED`], touching nothing.
//! 3. Otherwise the watchdog thaws every listed mount, in reverse order, when
//!    - the timeout passes (counted from `ready`): it writes `fired\n`, and
//!      keeps watching: a FIFREEZE the parent issued as the timeout passed
//!      may land after this thaw, so when the parent then dies (end-of-file)
//!      or a signal comes, it thaws everything again. It exits with
//!      [`exit_code::TIMED_OUT`] on `thawed`, end-of-file or a signal;
//!    - its stdin reaches end-of-file without `thawed` — the parent died, even
//!      by SIGKILL, since the kernel closes a dead process's descriptors:
//!      [`exit_code::PARENT_GONE`];
//!    - it receives SIGTERM, SIGINT, SIGHUP or SIGQUIT: [`exit_code::SIGNALLED`].
//!
//! Thawing a filesystem that is not frozen is harmless (`EINVAL`, ignored),
//! so the watchdog thawing after autosnap already did costs nothing. The
//! watchdog writes to stderr only after it has thawed, so even a stderr
//! redirected to a frozen filesystem cannot block it before the thaw.
//!
//! What it cannot survive: SIGKILL of the watchdog itself (for example
//! systemd killing the whole control group at once; `KillMode=mixed` sends
//! SIGTERM to autosnap alone first, which thaws).

use std::ffi::OsString;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::ioctl::{self, ThawOutcome};
use crate::lock::{self, LockHolder};

/// The hidden subcommand of the autosnap executable that runs [`watchdog_main`].
pub const WATCHDOG_SUBCOMMAND: &str = "__freeze-watchdog";
/// How long [`Watchdog::spawn`] waits for `ready`.
pub const WATCHDOG_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Watchdog::disarm`] waits for the watchdog to exit before killing it.
pub const WATCHDOG_EXIT_TIMEOUT: Duration = Duration::from_secs(5);

const READY: &[u8] = b"ready\n";
const THAWED: &[u8] = b"thawed\n";
const FIRED: &[u8] = b"fired\n";
const BUSY: &str = "busy";

/// Exit codes of the watchdog process.
pub mod exit_code {
    /// Disarmed by `thawed`: it thawed nothing.
    pub const DISARMED: i32 = 0;
    /// It could not start watching (a mount point could not be opened);
    /// the parent must not freeze.
    pub const SETUP_FAILED: i32 = 1;
    /// The timeout passed; it thawed everything.
    pub const TIMED_OUT: i32 = 2;
    /// Its stdin closed without `thawed` (the parent died); it thawed everything.
    pub const PARENT_GONE: i32 = 3;
    /// A termination signal; it thawed everything.
    pub const SIGNALLED: i32 = 4;
    /// Another watchdog holds the lock of a mount point (another autosnap is
    /// freezing that filesystem); the parent must not freeze.
    pub const BUSY: i32 = 5;
    /// Bad arguments.
    pub const USAGE: i32 = 64;
}

/// The command that starts a watchdog for `mounts`: `exe __freeze-watchdog
/// --timeout-ms N MOUNT...`, in a new session (setsid before exec), working
/// directory `/`, stderr inherited. [`Watchdog::spawn`] sets stdin and stdout.
pub fn watchdog_command(exe: &Path, timeout: Duration, mounts: &[PathBuf]) -> Command {
    let mut command = Command::new(exe);
    command
        .arg(WATCHDOG_SUBCOMMAND)
        .arg("--timeout-ms")
        .arg(timeout.as_millis().to_string())
        .args(mounts)
        .current_dir("/")
        .stderr(Stdio::inherit());
    // SAFETY: the closure runs in the forked child before exec and only calls
    // setsid(2), which is async-signal-safe, allocates nothing and takes no lock.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}

/// Parses the arguments that follow [`WATCHDOG_SUBCOMMAND`]:
/// `--timeout-ms N [--] MOUNT...` (mount points absolute).
pub fn parse_watchdog_args(args: &[OsString]) -> Result<(Duration, Vec<PathBuf>), String> {
    let mut timeout = None;
    let mut mounts = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let text = arg.to_string_lossy();
        if text == "--timeout-ms" {
            let value = iter.next().ok_or("--timeout-ms needs a value")?;
            timeout = Some(parse_millis(&value.to_string_lossy())?);
        } else if let Some(value) = text.strip_prefix("--timeout-ms=") {
            timeout = Some(parse_millis(value)?);
        } else if text == "--" {
            mounts.extend(iter.by_ref().map(PathBuf::from));
        } else if text.starts_with('-') {
            return Err(format!("unknown option {text}"));
        } else {
            mounts.push(PathBuf::from(arg));
        }
    }
    let timeout = timeout.ok_or("--timeout-ms is required")?;
    if mounts.is_empty() {
        return Err("at least one mount point is required".into());
    }
    if let Some(relative) = mounts.iter().find(|m| !m.is_absolute()) {
        return Err(format!("{} is not an absolute path", relative.display()));
    }
    Ok((timeout, mounts))
}

fn parse_millis(text: &str) -> Result<Duration, String> {
    text.parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| format!("--timeout-ms: {text:?} is not a number of milliseconds"))
}

/// Runs the watchdog when the process was started as one: when `args` (the
/// whole command line, program name first) has [`WATCHDOG_SUBCOMMAND`] as its
/// first argument, returns `Some(exit code)`; otherwise `None`. Call it first
/// thing in `main`, before parsing options or setting up logging:
///
/// ```no_run
/// if let Some(code) = autosnap_freeze::watchdog_entry(std::env::args_os()) {
///     std::process::exit(code);
/// }
/// ```
pub fn watchdog_entry(args: impl IntoIterator<Item = OsString>) -> Option<i32> {
    let args: Vec<OsString> = args.into_iter().collect();
    if args.get(1).map(|a| a.as_os_str()) != Some(WATCHDOG_SUBCOMMAND.as_ref()) {
        return None;
    }
    Some(match parse_watchdog_args(&args[2..]) {
        Ok((timeout, mounts)) => watchdog_main(timeout, &mounts),
        Err(message) => {
            eprintln!("autosnap {WATCHDOG_SUBCOMMAND}: {message}");
            exit_code::USAGE
        }
    })
}

/// Why the watchdog thawed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    TimedOut,
    ParentGone,
    Signalled,
}

/// The watchdog process's main function (see the module documentation for
/// the protocol); returns its exit code ([`exit_code`]).
pub fn watchdog_main(timeout: Duration, mounts: &[PathBuf]) -> i32 {
    detach();
    let signals = match SignalPipe::install() {
        Ok(signals) => signals,
        Err(error) => {
            eprintln!("autosnap watchdog: cannot install signal handlers: {error}");
            return exit_code::SETUP_FAILED;
        }
    };
    let mut dirs = Vec::with_capacity(mounts.len());
    for (index, mount) in mounts.iter().enumerate() {
        let dir = match ioctl::open_dir(mount) {
            Ok(dir) => dir,
            Err(error) => {
                eprintln!(
                    "autosnap watchdog: cannot open {}: {error}",
                    mount.display()
                );
                return exit_code::SETUP_FAILED;
            }
        };
        match lock::try_lock(&dir) {
            Ok(true) => {}
            Ok(false) => {
                // The parent explains (it names the holder); we only say who.
                let holder = lock::holder_pid(&dir).unwrap_or(0);
                let _ = send(
                    libc::STDOUT_FILENO,
                    format!("{BUSY} {index} {holder}\n").as_bytes(),
                );
                return exit_code::BUSY;
            }
            Err(error) => {
                eprintln!(
                    "autosnap watchdog: cannot lock {}: {error}",
                    mount.display()
                );
                return exit_code::SETUP_FAILED;
            }
        }
        dirs.push((mount.clone(), dir));
    }
    if let Err(error) = send(libc::STDOUT_FILENO, READY) {
        eprintln!("autosnap watchdog: cannot report ready: {error}");
        return exit_code::SETUP_FAILED;
    }
    let deadline = Instant::now() + timeout;

    let mut channel = Channel::default();
    let trigger = match channel.wait(Some(deadline), &signals) {
        None => return exit_code::DISARMED,
        Some(trigger) => trigger,
    };
    // Thaw first, in reverse order; talk afterwards.
    let results = thaw_all(&dirs);
    let (code, why) = match trigger {
        Trigger::TimedOut => {
            let _ = send(libc::STDOUT_FILENO, FIRED);
            (
                exit_code::TIMED_OUT,
                format!("freeze timeout ({timeout:?}) passed"),
            )
        }
        Trigger::ParentGone => (
            exit_code::PARENT_GONE,
            "autosnap exited without thawing".to_string(),
        ),
        Trigger::Signalled => (exit_code::SIGNALLED, "terminated by a signal".to_string()),
    };
    report(&why, trigger == Trigger::TimedOut, results);
    if trigger == Trigger::TimedOut {
        // Keep watching (and keep the locks): a FIFREEZE the parent issued
        // as the timeout passed may land after the thaw above. If the parent
        // dies or we are told to stop without its `thawed`, thaw again.
        if let Some(trigger) = channel.wait(None, &signals) {
            let why = match trigger {
                Trigger::Signalled => "terminated by a signal after the freeze timeout",
                _ => "autosnap exited without thawing, after the freeze timeout",
            };
            report(why, false, thaw_all(&dirs));
        }
    }
    code
}

/// FITHAW on every mount, in reverse order.
fn thaw_all(dirs: &[(PathBuf, std::fs::File)]) -> Vec<(PathBuf, io::Result<ThawOutcome>)> {
    dirs.iter()
        .rev()
        .map(|(mount, dir)| (mount.clone(), ioctl::thaw(dir.as_fd())))
        .collect()
}

/// Says on stderr what a thaw did (only after thawing: stderr may block).
fn report(why: &str, timed_out: bool, results: Vec<(PathBuf, io::Result<ThawOutcome>)>) {
    let mut thawed_any = false;
    for (mount, result) in results {
        match result {
            Ok(ThawOutcome::Thawed) => {
                thawed_any = true;
                eprintln!("autosnap watchdog: {why}: thawed {}", mount.display())
            }
            Ok(ThawOutcome::NotFrozen) => {}
            Err(error) => eprintln!(
                "autosnap watchdog: {why}: cannot thaw {}: {error}; thaw it by hand: fsfreeze -u {}",
                mount.display(),
                mount.display()
            ),
        }
    }
    if !thawed_any && timed_out {
        eprintln!("autosnap watchdog: {why}: nothing was frozen");
    }
}

/// Own session (if `watchdog_command`'s setsid did not already make one),
/// working directory `/`, SIGPIPE ignored (a dead parent is reported by the
/// write, not by killing us).
fn detach() {
    // SAFETY: getsid, getpid, setsid and signal are plain system calls with
    // no memory arguments; SIG_IGN for SIGPIPE has no handler to be unsafe.
    unsafe {
        if libc::getsid(0) != libc::getpid() {
            libc::setsid();
        }
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let _ = std::env::set_current_dir("/");
}

/// What the watchdog has read from the parent so far.
#[derive(Default)]
struct Channel {
    received: Vec<u8>,
}

impl Channel {
    /// Waits on stdin, the signal pipe and the deadline (if any); `None`
    /// means disarmed (`thawed` arrived).
    fn wait(&mut self, deadline: Option<Instant>, signals: &SignalPipe) -> Option<Trigger> {
        loop {
            let wait = match deadline {
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Some(Trigger::TimedOut);
                    }
                    (deadline - now).as_millis().clamp(1, i32::MAX as u128) as i32
                }
                None => -1,
            };
            let mut fds = [
                libc::pollfd {
                    fd: libc::STDIN_FILENO,
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: signals.read_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: `fds` is a valid, exclusively borrowed array of two pollfd
            // structs for the duration of the call, and we pass its exact length.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait) };
            if ready < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // poll itself failing leaves nothing to wait on: thaw.
                return Some(Trigger::ParentGone);
            }
            if fds[1].revents != 0 {
                return Some(Trigger::Signalled);
            }
            if fds[0].revents != 0 {
                let mut chunk = [0u8; 64];
                // SAFETY: reading into a local buffer of exactly `chunk.len()` bytes.
                let n = unsafe {
                    libc::read(
                        libc::STDIN_FILENO,
                        chunk.as_mut_ptr().cast::<libc::c_void>(),
                        chunk.len(),
                    )
                };
                if n < 0 {
                    if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Some(Trigger::ParentGone);
                }
                if n == 0 {
                    return Some(Trigger::ParentGone);
                }
                self.received.extend_from_slice(&chunk[..n as usize]);
                if self.received.windows(THAWED.len()).any(|w| w == THAWED) {
                    return None;
                }
                if self.received.len() > 4096 {
                    self.received.drain(..self.received.len() - THAWED.len());
                }
            }
        }
    }
}

/// Termination signals delivered as bytes on a socket (the self-pipe trick).
struct SignalPipe {
    read: UnixStream,
    _write: UnixStream,
}

impl SignalPipe {
    fn install() -> io::Result<Self> {
        let (read, write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT] {
            signal_hook::low_level::pipe::register(signal, write.try_clone()?)?;
        }
        Ok(Self {
            read,
            _write: write,
        })
    }

    fn read_fd(&self) -> i32 {
        self.read.as_raw_fd()
    }
}

/// Writes a protocol line without raising SIGPIPE: `send(MSG_NOSIGNAL)` on a
/// socket, plain `write` otherwise (stdout being a terminal when run by hand).
fn send(fd: i32, message: &[u8]) -> io::Result<()> {
    // SAFETY: `message` is a valid slice for the duration of the call and we
    // pass its exact length; `fd` is a descriptor we own or were given.
    let sent = unsafe {
        libc::send(
            fd,
            message.as_ptr().cast::<libc::c_void>(),
            message.len(),
            libc::MSG_NOSIGNAL,
        )
    };
    let written = if sent < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOTSOCK) {
        // SAFETY: as above.
        unsafe { libc::write(fd, message.as_ptr().cast::<libc::c_void>(), message.len()) }
    } else {
        sent
    };
    if written < 0 {
        Err(io::Error::last_os_error())
    } else if written as usize != message.len() {
        Err(io::Error::new(io::ErrorKind::WriteZero, "short write"))
    } else {
        Ok(())
    }
}

/// `busy INDEX PID\n`: the mount at INDEX is locked by PID (0: unknown).
fn parse_busy(line: &[u8]) -> Option<(usize, u32)> {
    let text = std::str::from_utf8(line).ok()?;
    let mut words = text.trim_end().split(' ');
    if words.next()? != BUSY {
        return None;
    }
    let index = words.next()?.parse().ok()?;
    let pid = words.next()?.parse().ok()?;
    Some((index, pid))
}

/// How a watchdog ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchdogOutcome {
    /// Disarmed: it thawed nothing.
    Disarmed,
    /// Its timeout passed before it was disarmed and it thawed everything:
    /// the freeze may not have held until the parent's thaw.
    TimedOut,
    /// It saw its stdin close without `thawed` and thawed everything
    /// ([`Watchdog::abandon`]).
    ThawedOnClose,
    /// A signal made it thaw everything.
    Signalled,
    /// It ended otherwise (killed, or an unexpected exit code).
    Exited(ExitStatus),
    /// It did not exit within [`WATCHDOG_EXIT_TIMEOUT`] and was killed.
    Unresponsive,
}

impl WatchdogOutcome {
    fn from_status(status: ExitStatus) -> Self {
        match status.code() {
            Some(exit_code::DISARMED) => WatchdogOutcome::Disarmed,
            Some(exit_code::TIMED_OUT) => WatchdogOutcome::TimedOut,
            Some(exit_code::PARENT_GONE) => WatchdogOutcome::ThawedOnClose,
            Some(exit_code::SIGNALLED) => WatchdogOutcome::Signalled,
            _ => WatchdogOutcome::Exited(status),
        }
    }
}

/// Why a watchdog could not be started.
#[derive(Debug, thiserror::Error)]
pub enum WatchdogError {
    #[error("cannot start the freeze watchdog ({program}): {source}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("the freeze watchdog did not get ready: {detail}; nothing was frozen")]
    NotReady { detail: String },
    #[error(
        "{mount_point} is already being frozen by {holder}: two freezes of one filesystem must \
         not overlap (one's watchdog would thaw the other's freeze); nothing was frozen. Let \
         that run finish, or give the policies different schedules",
        holder = holder.as_ref().map_or_else(|| "another autosnap".to_string(), |h| h.to_string())
    )]
    Busy {
        mount_point: PathBuf,
        holder: Option<LockHolder>,
    },
    #[error("cannot talk to the freeze watchdog: {0}")]
    Io(#[from] io::Error),
}

/// Why the watchdog no longer protects a freeze.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchdogLapse {
    #[error("the freeze watchdog's timeout passed and it thawed")]
    Fired,
    #[error("the freeze watchdog is gone ({0})")]
    Exited(String),
}

/// A running watchdog and the parent's end of its socket. Dropping it
/// without [`Watchdog::disarm`] closes the socket, which makes the watchdog
/// thaw everything it watches.
#[derive(Debug)]
pub struct Watchdog {
    child: Child,
    channel: Option<UnixStream>,
    /// Just before the watchdog was started: its own deadline (counted from
    /// its `ready`) is never earlier than this plus its timeout.
    spawned_at: Instant,
    timeout: Option<Duration>,
    fired: bool,
}

impl Watchdog {
    /// Starts a watchdog with [`watchdog_command`] for `mounts`.
    pub fn start(exe: &Path, timeout: Duration, mounts: &[PathBuf]) -> Result<Self, WatchdogError> {
        Self::spawn(watchdog_command(exe, timeout, mounts))
    }

    /// Starts `command` (built by [`watchdog_command`], possibly adjusted)
    /// with its stdin and stdout on a socket, and waits for `ready`.
    pub fn spawn(mut command: Command) -> Result<Self, WatchdogError> {
        let program = command.get_program().to_string_lossy().into_owned();
        let args: Vec<OsString> = command.get_args().map(OsString::from).collect();
        let (timeout, mounts) = match args.split_first() {
            Some((first, rest)) if first == WATCHDOG_SUBCOMMAND => parse_watchdog_args(rest)
                .map(|(timeout, mounts)| (Some(timeout), mounts))
                .unwrap_or_default(),
            _ => (None, Vec::new()),
        };
        let (parent_end, child_end) = UnixStream::pair()?;
        let child_out = child_end.try_clone()?;
        command
            .stdin(Stdio::from(OwnedFd::from(child_end)))
            .stdout(Stdio::from(OwnedFd::from(child_out)));
        let spawned = command.spawn();
        // The command holds our copies of the child's end: drop them, so that
        // closing `parent_end` is an end-of-file for the watchdog.
        drop(command);
        let spawned_at = Instant::now();
        let child = spawned.map_err(|source| WatchdogError::Spawn { program, source })?;
        let mut watchdog = Watchdog {
            child,
            channel: Some(parent_end),
            spawned_at,
            timeout,
            fired: false,
        };
        match watchdog.await_ready(&mounts) {
            Ok(()) => Ok(watchdog),
            Err(error) => {
                let _ = watchdog.child.kill();
                let _ = watchdog.child.wait();
                watchdog.channel = None;
                Err(error)
            }
        }
    }

    fn await_ready(&mut self, mounts: &[PathBuf]) -> Result<(), WatchdogError> {
        let channel = self.channel.as_mut().expect("channel open until disarmed");
        channel.set_read_timeout(Some(WATCHDOG_READY_TIMEOUT))?;
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while !line.ends_with(b"\n") {
            match channel.read(&mut byte) {
                Ok(0) => {
                    let status = self.child.wait()?;
                    return Err(WatchdogError::NotReady {
                        detail: format!("it exited ({status}); see its message above"),
                    });
                }
                Ok(_) => line.push(byte[0]),
                Err(error)
                    if matches!(
                        error.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(WatchdogError::NotReady {
                        detail: format!("no answer within {WATCHDOG_READY_TIMEOUT:?}"),
                    });
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error.into()),
            }
        }
        if let Some(busy) = parse_busy(&line) {
            let (index, pid) = busy;
            return Err(WatchdogError::Busy {
                mount_point: mounts
                    .get(index)
                    .cloned()
                    .unwrap_or_else(|| PathBuf::from("a mount point")),
                holder: (pid > 0).then(|| LockHolder::describe(pid)),
            });
        }
        if line != READY {
            return Err(WatchdogError::NotReady {
                detail: format!("unexpected answer {:?}", String::from_utf8_lossy(&line)),
            });
        }
        Ok(())
    }

    /// The watchdog's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The moment the watchdog's timeout passes at the earliest (when it
    /// was started through [`watchdog_command`]): freezing anything after it
    /// would be unprotected.
    pub fn deadline(&self) -> Option<Instant> {
        self.timeout.map(|timeout| self.spawned_at + timeout)
    }

    /// Whether the watchdog still protects a freeze: it is running and has
    /// not fired. Does not block.
    pub fn check_armed(&mut self) -> Result<(), WatchdogLapse> {
        if self.fired {
            return Err(WatchdogLapse::Fired);
        }
        if let Some(channel) = self.channel.as_mut() {
            let mut buffer = [0u8; 64];
            let read = channel
                .set_nonblocking(true)
                .and_then(|()| channel.read(&mut buffer));
            let _ = channel.set_nonblocking(false);
            match read {
                Ok(n) if n > 0 && buffer[..n].windows(FIRED.len()).any(|w| w == FIRED) => {
                    self.fired = true;
                    return Err(WatchdogLapse::Fired);
                }
                Ok(0) => {
                    return Err(WatchdogLapse::Exited(
                        "it closed its end of the channel".into(),
                    ))
                }
                _ => {}
            }
        }
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(WatchdogLapse::Exited(status.to_string())),
            Err(error) => Err(WatchdogLapse::Exited(error.to_string())),
        }
    }

    /// Tells the watchdog the filesystems are thawed and waits for it to
    /// exit. Send this only after a successful thaw.
    pub fn disarm(mut self) -> WatchdogOutcome {
        if let Some(channel) = self.channel.take() {
            // A watchdog that already exited (timed out) makes this fail with
            // EPIPE; its exit status says what happened.
            let _ = send(channel.as_raw_fd(), THAWED);
        }
        self.reap(WATCHDOG_EXIT_TIMEOUT)
    }

    /// Closes the socket without `thawed`, so the watchdog thaws everything
    /// it watches (use when our own thaw failed), and waits for it.
    pub fn abandon(mut self) -> WatchdogOutcome {
        self.channel = None;
        self.reap(WATCHDOG_EXIT_TIMEOUT)
    }

    fn reap(&mut self, limit: Duration) -> WatchdogOutcome {
        let deadline = Instant::now() + limit;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return WatchdogOutcome::from_status(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return WatchdogOutcome::Unresponsive;
                }
            }
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if self.channel.take().is_some() {
            // Still armed: closing the socket makes it thaw. Reap it briefly;
            // if it is slow it finishes on its own (and init reaps it).
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_its_arguments() {
        let (timeout, mounts) =
            parse_watchdog_args(&args(&["--timeout-ms", "1500", "/mnt/a", "/mnt/b c"])).unwrap();
        assert_eq!(timeout, Duration::from_millis(1500));
        assert_eq!(mounts, [PathBuf::from("/mnt/a"), PathBuf::from("/mnt/b c")]);
        let (timeout, mounts) =
            parse_watchdog_args(&args(&["--timeout-ms=20", "--", "/x"])).unwrap();
        assert_eq!(timeout, Duration::from_millis(20));
        assert_eq!(mounts, [PathBuf::from("/x")]);
    }

    #[test]
    fn rejects_bad_arguments() {
        for bad in [
            &["/mnt/a"][..],
            &["--timeout-ms", "1000"],
            &["--timeout-ms", "soon", "/mnt/a"],
            &["--timeout-ms", "10", "relative"],
            &["--verbose", "--timeout-ms", "10", "/mnt/a"],
        ] {
            assert!(parse_watchdog_args(&args(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn entry_ignores_other_command_lines() {
        assert_eq!(
            watchdog_entry(args(&["autosnap", "snapshot", "list"])),
            None
        );
        assert_eq!(watchdog_entry(args(&["autosnap"])), None);
        assert_eq!(
            watchdog_entry(args(&["autosnap", WATCHDOG_SUBCOMMAND, "--timeout-ms"])),
            Some(exit_code::USAGE)
        );
    }

    #[test]
    fn the_command_line_round_trips() {
        let mounts = [PathBuf::from("/mnt/a"), PathBuf::from("/mnt/b")];
        let command = watchdog_command(
            Path::new("/usr/bin/autosnap"),
            Duration::from_secs(10),
            &mounts,
        );
        let args: Vec<OsString> = command.get_args().map(OsString::from).collect();
        assert_eq!(args[0], WATCHDOG_SUBCOMMAND);
        let (timeout, parsed) = parse_watchdog_args(&args[1..]).unwrap();
        assert_eq!(timeout, Duration::from_secs(10));
        assert_eq!(parsed, mounts);
        assert_eq!(command.get_current_dir(), Some(Path::new("/")));
    }
}

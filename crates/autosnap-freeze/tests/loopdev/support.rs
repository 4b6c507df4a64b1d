//! Scratch filesystems on loop devices, child processes that write to them,
//! and the checks that decide whether these tests can run here.

use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use autosnap_freeze::ioctl;

/// Why these tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (loop devices, mount, FIFREEZE)".into());
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("no /dev/loop-control (loop devices unavailable)".into());
    }
    for tool in ["losetup", "mount", "umount", "mkfs.ext4"] {
        if !tool_exists(tool) {
            return Some(format!("{tool} not found (Debian: mount, e2fsprogs)"));
        }
    }
    // Attach and detach a tiny image: containers without the privilege fail here.
    let dir = tempfile::tempdir().ok()?;
    let image = dir.path().join("probe.img");
    File::create(&image).and_then(|f| f.set_len(1 << 20)).ok()?;
    match attach(&image) {
        Ok(device) => {
            detach(&device);
            None
        }
        Err(error) => Some(format!("cannot attach a loop device: {error}")),
    }
}

pub fn tool_exists(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run(command: &mut Command) -> Result<String, String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{command:?}: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    } else {
        Err(format!(
            "{command:?}: {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

fn attach(image: &Path) -> Result<String, String> {
    run(Command::new("losetup")
        .arg("--find")
        .arg("--show")
        .arg(image))
}

fn detach(device: &str) {
    let _ = run(Command::new("losetup").arg("-d").arg(device));
}

/// A filesystem on a loop device, mounted in a temporary directory;
/// thawed, unmounted and detached on drop, whatever the test did.
pub struct LoopFs {
    pub mount_point: PathBuf,
    device: String,
    mounted: bool,
    _dir: tempfile::TempDir,
}

impl LoopFs {
    pub fn create(fs_type: &'static str) -> Result<Self, String> {
        Self::create_with(fs_type, None, None)
    }

    /// A filesystem whose image lives in `image_dir` (another test
    /// filesystem, to make its I/O wait on that one) and which is mounted on
    /// `mount_point` (to control the freeze order); temporary ones otherwise.
    pub fn create_with(
        fs_type: &'static str,
        image_dir: Option<&Path>,
        mount_point: Option<&Path>,
    ) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("autosnap-freeze-test.")
            .tempdir_in(image_dir.unwrap_or(&std::env::temp_dir()))
            .map_err(|e| e.to_string())?;
        let image = dir.path().join("disk.img");
        // xfs needs 300 MB; sparse, so it costs nothing.
        let size = if fs_type == "xfs" {
            320 << 20
        } else {
            64 << 20
        };
        File::create(&image)
            .and_then(|f| f.set_len(size))
            .map_err(|e| e.to_string())?;
        let mount_point = match mount_point {
            Some(path) => path.to_path_buf(),
            None => dir.path().join("mnt"),
        };
        fs::create_dir_all(&mount_point).map_err(|e| e.to_string())?;
        let device = attach(&image)?;
        let mut fs = LoopFs {
            mount_point,
            device,
            mounted: false,
            _dir: dir,
        };
        let mkfs = match fs_type {
            "ext4" => run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&fs.device)),
            "xfs" => run(Command::new("mkfs.xfs").args(["-q", "-f"]).arg(&fs.device)),
            other => Err(format!("no mkfs for {other}")),
        };
        mkfs?;
        run(Command::new("mount").arg(&fs.device).arg(&fs.mount_point))?;
        fs.mounted = true;
        Ok(fs)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.mount_point.join(name)
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        if self.mounted {
            // Never leave a frozen filesystem behind, whatever the test did.
            if let Ok(dir) = ioctl::open_dir(&self.mount_point) {
                let _ = ioctl::thaw(dir.as_fd());
            }
            let mut unmounted = false;
            for _ in 0..20 {
                if run(Command::new("umount").arg(&self.mount_point)).is_ok() {
                    unmounted = true;
                    break;
                }
                thread::sleep(Duration::from_millis(100));
            }
            if !unmounted {
                eprintln!(
                    "could not unmount {}; detaching lazily",
                    self.mount_point.display()
                );
                let _ = run(Command::new("umount").arg("-l").arg(&self.mount_point));
            }
        }
        detach(&self.device);
    }
}

/// A child process killed (and reaped) on drop.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// Waits up to `limit` for the child to exit.
    pub fn wait_for(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether it is still running after `period`.
    pub fn still_running_after(&mut self, period: Duration) -> bool {
        self.wait_for(period).is_none()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            // Bounded: a writer blocked on a frozen filesystem dies only once
            // it is thawed (which the LoopFs drop does).
            let _ = self.wait_for(Duration::from_secs(5));
        }
    }
}

/// Starts this test binary as a writer: creates `path`, writes and fsyncs.
pub fn spawn_writer(path: &Path) -> ChildGuard {
    let child = Command::new(std::env::current_exe().unwrap())
        .arg(crate::WRITE_MODE)
        .arg(path)
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn the writer");
    ChildGuard(child)
}

/// Starts a writer, which must complete within `limit` (the filesystem is writable).
pub fn assert_writable(path: &Path, limit: Duration) {
    let mut writer = spawn_writer(path);
    let status = writer.wait_for(limit).unwrap_or_else(|| {
        panic!(
            "a write to {} did not complete within {limit:?}",
            path.display()
        )
    });
    assert!(status.success(), "writer failed: {status}");
    assert_eq!(fs::read_to_string(path).unwrap(), crate::WRITTEN);
}

/// Waits up to `limit` for one line on a child's stdout.
pub fn read_line(stdout: ChildStdout, limit: Duration) -> Option<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    rx.recv_timeout(limit).ok()
}

/// Sends a signal to a process or, with a negative id, a process group.
pub fn kill(pid: i32, signal: i32) {
    assert!(pid != 0 && pid != -1, "refusing to signal {pid}");
    // SAFETY: kill only sends a signal; the id is one of our children (or its group).
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {signal}): {}",
        std::io::Error::last_os_error()
    );
}

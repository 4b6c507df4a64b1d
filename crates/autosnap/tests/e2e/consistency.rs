//! Snapshots of mount paths with a filesystem freeze, through the real
//! binary: a real ext4 filesystem on a loop device stands in for the EBS
//! volume (named with --volume), a fake instance metadata service says which
//! instance this is, and the test bed plays EC2.
//!
//! These tests need root and loop devices. Elsewhere they skip with a
//! message, unless AUTOSNAP_REQUIRE_LOOP_TESTS=1 (CI sets it), which turns a
//! skip into a failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::imds::FakeImds;
use crate::support::{TestBed, REGION};
use predicates::prelude::*;
use serde_json::Value;

/// A small ext4 filesystem on a loop device, mounted in a temp dir;
/// unmounted and detached on drop (thawed first, whatever happened).
struct LoopFs {
    _dir: tempfile::TempDir,
    dev: String,
    mnt: PathBuf,
}

fn sh(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl LoopFs {
    fn new() -> Option<LoopFs> {
        let skip = |why: String| {
            if std::env::var("AUTOSNAP_REQUIRE_LOOP_TESTS").as_deref() == Ok("1") {
                panic!("loop-device test cannot run: {why}");
            }
            eprintln!("skipped: {why}");
            None
        };
        if sh("id", &["-u"]).ok().as_deref() != Some("0") {
            return skip("needs root (loop devices and mounts)".into());
        }
        let dir = tempfile::tempdir().ok()?;
        let image = dir.path().join("fs.img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).ok()?;
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(64 << 20))
            .ok()?;
        let dev = match sh("losetup", &["--find", "--show", image.to_str()?]) {
            Ok(d) => d,
            Err(e) => return skip(format!("no loop device: {e}")),
        };
        let fs = LoopFs {
            _dir: dir,
            dev,
            mnt,
        };
        if let Err(e) = sh("mkfs.ext4", &["-q", &fs.dev]) {
            return skip(format!("mkfs.ext4: {e}"));
        }
        if let Err(e) = sh("mount", &[&fs.dev, fs.mnt.to_str()?]) {
            return skip(format!("mount: {e}"));
        }
        Some(fs)
    }

    /// Whether a write completes within `within` (a frozen filesystem blocks it).
    fn writable_within(&self, within: Duration) -> bool {
        let probe = self.mnt.join("probe");
        let status = Command::new("timeout")
            .arg(format!("{}", within.as_secs_f64()))
            .args([
                "sh",
                "-c",
                &format!(
                    "echo x > '{}' && sync '{}'",
                    probe.display(),
                    probe.display()
                ),
            ])
            .status()
            .expect("timeout");
        status.success()
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let m = self.mnt.to_str().unwrap_or_default();
        let _ = sh("fsfreeze", &["--unfreeze", m]);
        let _ = sh("umount", &[m]);
        let _ = sh("losetup", &["-d", &self.dev]);
    }
}

/// Test bed + an instance whose data volume plays the loop filesystem's role.
struct Scene {
    bed: TestBed,
    imds: FakeImds,
    instance: String,
    volume: String,
    fs: LoopFs,
}

impl Scene {
    fn new(volume_tags: &[(&str, &str)]) -> Option<Scene> {
        let fs = LoopFs::new()?;
        let bed = TestBed::start();
        let (instance, volume) = bed.instance("db");
        if !volume_tags.is_empty() {
            let ec2 = bed.ec2(REGION);
            bed.block(async {
                ec2.create_tags()
                    .resources(&volume)
                    .set_tags(Some(
                        volume_tags
                            .iter()
                            .map(|(k, v)| {
                                aws_sdk_ec2::types::Tag::builder().key(*k).value(*v).build()
                            })
                            .collect(),
                    ))
                    .send()
                    .await
                    .expect("tag volume");
            });
        }
        let imds = FakeImds::start(&instance, REGION);
        Some(Scene {
            bed,
            imds,
            instance,
            volume,
            fs,
        })
    }

    fn mnt(&self) -> &str {
        self.fs.mnt.to_str().unwrap()
    }

    fn cmd(&self) -> assert_cmd::Command {
        assert_cmd::Command::from_std(self.std_cmd())
    }

    fn std_cmd(&self) -> Command {
        let mut c = self.bed.std_cmd();
        c.env_remove("AWS_EC2_METADATA_DISABLED")
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", self.imds.endpoint())
            .args(["snapshot", "create", self.mnt(), "--volume"])
            .arg(format!("{}={}", self.mnt(), self.volume));
        c
    }
}

fn snapshot_json(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "autosnap failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

#[test]
fn freeze_gives_a_filesystem_consistent_snapshot() {
    let Some(s) = Scene::new(&[("Name", "db-data"), ("Team", "storage")]) else {
        return;
    };
    let out = s
        .cmd()
        .args(["--freeze", "--tag", "Team=override", "-o", "json"])
        .output()
        .unwrap();
    let v = snapshot_json(&out);
    let snap = &v[0];
    assert_eq!(snap["volume_id"], s.volume.as_str());
    assert_eq!(snap["tags"]["autosnap:consistency"], "filesystem");
    assert_eq!(
        snap["tags"]["autosnap:source-instance"],
        s.instance.as_str()
    );
    // Like a snapshot of a volume id: its volume, the volume's own tags, --tag winning.
    assert_eq!(snap["tags"]["autosnap:source-volume"], s.volume.as_str());
    assert_eq!(snap["tags"]["Name"], "db-data");
    assert_eq!(snap["tags"]["Team"], "override");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("filesystems frozen for"), "{stderr}");
    assert!(
        s.fs.writable_within(Duration::from_secs(5)),
        "thawed after success"
    );
    // The tag is on the snapshot in EC2, not only in the output.
    let listed = s.bed.json(&[
        "snapshot",
        "list",
        "--tag",
        "autosnap:consistency=filesystem",
    ]);
    assert_eq!(listed.as_array().unwrap().len(), 1);
}

#[test]
fn hooks_make_it_application_consistent() {
    let Some(s) = Scene::new(&[]) else { return };
    let marker = s.bed.home.path().join("post-ran");
    // Hooks often carry passwords: at the default level only which hook ran,
    // how it ended and how long it took are logged.
    let pre = "echo flushing tables -psecret123; MYSQL_PWD=hunter2 true";
    let post = format!("echo unlocking; touch '{}'", marker.display());
    let out = s
        .cmd()
        .args(["--freeze", "--pre", pre, "--post", &post, "-o", "json"])
        .output()
        .unwrap();
    let v = snapshot_json(&out);
    assert_eq!(v[0]["tags"]["autosnap:consistency"], "application");
    assert!(marker.exists());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pre hook 1 succeeded in"), "{stderr}");
    assert!(stderr.contains("post hook 1 succeeded in"), "{stderr}");
    for hidden in [
        "flushing tables",
        "unlocking",
        "secret123",
        "hunter2",
        "MYSQL_PWD",
    ] {
        assert!(
            !stderr.contains(hidden),
            "{hidden:?} logged at info: {stderr}"
        );
    }

    // -v shows the command lines and the output, with the secrets redacted.
    let out = s
        .cmd()
        .args([
            "-v", "--freeze", "--pre", pre, "--post", &post, "-o", "json",
        ])
        .output()
        .unwrap();
    snapshot_json(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("flushing tables -p***"), "{stderr}");
    assert!(stderr.contains("MYSQL_PWD=*** true"), "{stderr}");
    assert!(stderr.contains("unlocking"), "{stderr}");
    for secret in ["secret123", "hunter2"] {
        assert!(!stderr.contains(secret), "{secret:?} logged: {stderr}");
    }
}

#[test]
fn a_freeze_timeout_below_the_minimum_is_refused() {
    // Checked before anything else: no instance, loop device or AWS needed.
    let bed = crate::support::TestBed::offline();
    bed.cmd()
        .args([
            "snapshot",
            "create",
            "/tmp",
            "--freeze",
            "--freeze-timeout",
            "0s",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "--freeze-timeout 0s is below the minimum of 1s",
        ))
        .stderr(predicate::str::contains("Use at least 1s"));
}

#[test]
fn failing_pre_hook_fails_closed_or_falls_back() {
    let Some(s) = Scene::new(&[]) else { return };
    let marker = s.bed.home.path().join("post-ran");
    s.cmd()
        .args(["--freeze", "--pre", "exit 3", "--post"])
        .arg(format!("touch '{}'", marker.display()))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("pre hook failed"));
    assert!(
        marker.exists(),
        "post hooks run even when the pre hook failed"
    );
    assert!(
        s.bed
            .json(&["snapshot", "list"])
            .as_array()
            .unwrap()
            .is_empty(),
        "no snapshot"
    );

    let out = s
        .cmd()
        .args([
            "--freeze",
            "--pre",
            "exit 3",
            "--on-hook-failure",
            "crash",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    let v = snapshot_json(&out);
    assert_eq!(v[0]["tags"]["autosnap:consistency"], "crash");
}

#[test]
fn failed_snapshot_call_thaws_and_runs_post_hooks() {
    let Some(s) = Scene::new(&[("autosnap-testbed:fail", "CreateSnapshot")]) else {
        return;
    };
    let marker = s.bed.home.path().join("post-ran");
    s.cmd()
        .args(["--freeze", "--post"])
        .arg(format!("touch '{}'", marker.display()))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("IncorrectState"));
    assert!(marker.exists());
    assert!(
        s.fs.writable_within(Duration::from_secs(5)),
        "thawed after failure"
    );
}

/// Waits (bounded) until a write to the filesystem blocks: it is frozen.
fn wait_until_frozen(fs: &LoopFs) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while fs.writable_within(Duration::from_millis(300)) {
        assert!(Instant::now() < deadline, "the filesystem was never frozen");
    }
}

#[test]
fn sigkill_mid_freeze_is_thawed_by_the_watchdog() {
    let Some(s) = Scene::new(&[("autosnap-testbed:delay-seconds", "40")]) else {
        return;
    };
    let mut child = s
        .std_cmd()
        .args(["--freeze", "--freeze-timeout", "30s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until_frozen(&s.fs);
    child.kill().unwrap(); // SIGKILL: no chance to thaw itself
    child.wait().unwrap();
    // The watchdog sees its parent vanish and thaws at once, long before
    // the 30 s freeze timeout.
    assert!(
        s.fs.writable_within(Duration::from_secs(15)),
        "still frozen after autosnap was killed"
    );
}

#[test]
fn sigterm_mid_freeze_thaws_and_runs_post_hooks() {
    let Some(s) = Scene::new(&[("autosnap-testbed:delay-seconds", "40")]) else {
        return;
    };
    let marker = s.bed.home.path().join("post-ran");
    let mut child = s
        .std_cmd()
        .args(["--freeze", "--freeze-timeout", "30s", "--post"])
        .arg(format!("touch '{}'", marker.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until_frozen(&s.fs);
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert!(s.fs.writable_within(Duration::from_secs(10)));
    assert!(marker.exists(), "post hook ran on SIGTERM");
}

#[test]
fn refusals_and_metadata_errors_are_explained() {
    let Some(s) = Scene::new(&[]) else { return };
    // The root filesystem is refused without --force.
    let mut c = s.bed.cmd();
    c.env_remove("AWS_EC2_METADATA_DISABLED")
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", s.imds.endpoint())
        .args(["snapshot", "create", "/", "--freeze", "--volume"])
        .arg(format!("/={}", s.volume));
    c.assert()
        .code(2)
        .stderr(predicate::str::contains("root filesystem"));
    // tmpfs has no EBS volume behind it.
    let shm = Path::new("/dev/shm");
    if shm.exists() {
        s.bed
            .cmd()
            .args(["snapshot", "create", "/dev/shm", "--freeze"])
            .assert()
            .code(2)
            .stderr(predicate::str::contains("tmpfs"));
    }
    // Metadata disabled, or unreachable.
    s.bed
        .cmd()
        .args(["snapshot", "create", s.mnt(), "--volume"])
        .arg(format!("{}={}", s.mnt(), s.volume))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("instance metadata is disabled"));
    s.bed
        .cmd()
        .env_remove("AWS_EC2_METADATA_DISABLED")
        .env(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            format!("http://127.0.0.1:{}", crate::support::closed_port()),
        )
        .args(["snapshot", "create", s.mnt(), "--volume"])
        .arg(format!("{}={}", s.mnt(), s.volume))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("cannot read instance metadata"));
    // Freeze flags need mount paths.
    s.bed
        .cmd()
        .args(["snapshot", "create", &s.volume, "--freeze"])
        .assert()
        .code(2);
}

#[test]
fn policy_sets_of_this_instance_are_frozen_others_are_crash_consistent() {
    let Some(s) = Scene::new(&[]) else { return };
    let (other, _) = s.bed.instance("other");
    s.bed.write_config(
        "autosnap.toml",
        &format!(
            r#"
[[policy]]
name = "sets"
resource = "instance"
select = [{{ tags = {{ Name = "db" }} }}, {{ tags = {{ Name = "other" }} }}]
schedule = "6h"
retain = {{ last = 3 }}
consistency = {{ freeze = ["{}"], pre = ["echo quiescing"], freeze_timeout = "20s" }}
"#,
            s.mnt()
        ),
        0o644,
    );
    let out = s
        .bed
        .std_cmd()
        .env_remove("AWS_EC2_METADATA_DISABLED")
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", s.imds.endpoint())
        .args(["-v", "run", "-o", "json"])
        .output()
        .unwrap();
    let v = snapshot_json(&out);
    assert_eq!(v["report"]["created"].as_array().unwrap().len(), 2, "{v}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("quiescing"), "{stderr}");
    assert!(stderr.contains("filesystems frozen for"), "{stderr}");
    let snaps = s
        .bed
        .json(&["snapshot", "list", "--tag", "autosnap:policy=sets"]);
    for snap in snaps.as_array().unwrap() {
        let source = snap["tags"]["autosnap:source-instance"].as_str().unwrap();
        let want = if source == s.instance {
            "application"
        } else {
            "crash"
        };
        assert_eq!(snap["tags"]["autosnap:consistency"], want, "{snap}");
    }
    assert!(snaps
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["tags"]["autosnap:source-instance"] == other.as_str()));
    assert!(s.fs.writable_within(Duration::from_secs(5)));

    // A consistency block on a volume policy is a configuration error.
    s.bed.write_config(
        "autosnap.toml",
        "[[policy]]\nname = \"v\"\nresource = \"volume\"\nselect = [{ tags = { A = \"b\" } }]\nschedule = \"1d\"\nretain = { last = 1 }\nconsistency = { freeze = [\"/data\"] }\n",
        0o644,
    );
    s.bed
        .cmd()
        .arg("plan")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("consistency"));
}

#[test]
fn a_policy_does_not_freeze_the_filesystem_holding_the_config() {
    let Some(s) = Scene::new(&[]) else { return };
    // The config lives on the filesystem the policy would freeze.
    let cfg = s.fs.mnt.join("autosnap.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[[policy]]
name = "self"
resource = "instance"
select = [{{ tags = {{ Name = "db" }} }}]
schedule = "6h"
retain = {{ last = 3 }}
consistency = {{ freeze = ["{}"] }}
"#,
            s.mnt()
        ),
    )
    .unwrap();
    let out = s
        .bed
        .std_cmd()
        .env_remove("AWS_EC2_METADATA_DISABLED")
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", s.imds.endpoint())
        .arg("-c")
        .arg(&cfg)
        .args(["run", "-o", "json"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "refusing to freeze {}: it holds {}",
            s.mnt(),
            cfg.display()
        )),
        "{stderr}"
    );
    assert!(s.fs.writable_within(Duration::from_secs(5)));
}

//! Ctrl-C (SIGINT) or SIGTERM during a `--wait`: autosnap stops waiting,
//! prints what it created and its state on stdout, says on stderr that it
//! continues in AWS, and exits 130. The test bed keeps the resource pending
//! (`autosnap-testbed:state`) so the wait cannot end on its own.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::imds::FakeImds;
use crate::support::{TestBed, REGION};
use aws_sdk_ec2::types::Filter;

/// How long a test waits for autosnap to reach its wait before failing.
const PATIENCE: Duration = Duration::from_secs(60);

/// A running autosnap with its stderr read line by line as it comes.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

struct Finished {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Running {
    fn start(tb: &TestBed, args: &[&str]) -> Running {
        let mut cmd = tb.std_cmd();
        cmd.args(args);
        Running::spawn(cmd)
    }

    fn spawn(mut cmd: std::process::Command) -> Running {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start autosnap");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, lines }
    }

    /// Waits until `ready` holds, polling the test bed; panics with what
    /// autosnap said if it ends first or PATIENCE runs out.
    fn until(&mut self, mut ready: impl FnMut() -> bool) {
        let start = Instant::now();
        while !ready() {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                let said: Vec<String> = self.lines.try_iter().collect();
                panic!("autosnap ended ({status}) before it was waiting: {said:?}");
            }
            assert!(
                start.elapsed() < PATIENCE,
                "autosnap never reached its wait"
            );
            // Poll pace only: readiness is decided by `ready`, not by time.
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for a stderr line containing `text`.
    fn until_said(&mut self, text: &str) -> Vec<String> {
        let mut seen = Vec::new();
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(text);
                    seen.push(line);
                    if hit {
                        return seen;
                    }
                }
                Err(_) => panic!("autosnap never said {text:?}; it said {seen:?}"),
            }
        }
    }

    fn signal(&self, name: &str) {
        let ok = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{name} failed");
    }

    fn finish(mut self, earlier: Vec<String>) -> Finished {
        let mut stdout = String::new();
        let status = self.child.wait().expect("wait for autosnap");
        self.child
            .stdout
            .take()
            .expect("stdout")
            .read_to_string(&mut stdout)
            .expect("read stdout");
        let mut lines = earlier;
        // The reader thread ends at EOF, once the process is gone.
        lines.extend(self.lines.iter());
        Finished {
            code: status.code(),
            stdout,
            stderr: lines.join("\n"),
        }
    }
}

fn snapshots_of(tb: &TestBed, region: &str, volume_id: &str) -> Vec<String> {
    let ec2 = tb.ec2(region);
    tb.block(async {
        ec2.describe_snapshots()
            .filters(
                Filter::builder()
                    .name("volume-id")
                    .values(volume_id)
                    .build(),
            )
            .send()
            .await
            .expect("describe snapshots")
            .snapshots()
            .iter()
            .filter_map(|s| s.snapshot_id().map(String::from))
            .collect()
    })
}

fn volumes_from(tb: &TestBed, snapshot_id: &str) -> Vec<String> {
    let ec2 = tb.ec2(REGION);
    tb.block(async {
        ec2.describe_volumes()
            .filters(
                Filter::builder()
                    .name("snapshot-id")
                    .values(snapshot_id)
                    .build(),
            )
            .send()
            .await
            .expect("describe volumes")
            .volumes()
            .iter()
            .filter_map(|v| v.volume_id().map(String::from))
            .collect()
    })
}

fn assert_continues_in_aws(done: &Finished, id: &str) {
    assert_eq!(done.code, Some(130), "exit code; stderr: {}", done.stderr);
    assert!(
        done.stderr.contains("interrupted") && done.stderr.contains("continues in AWS"),
        "stderr says the work continues in AWS: {}",
        done.stderr
    );
    assert!(
        done.stderr.contains(id),
        "stderr names {id}: {}",
        done.stderr
    );
}

#[test]
fn sigint_during_snapshot_create_wait_prints_the_pending_snapshot_and_exits_130() {
    let tb = TestBed::start();
    let vol = tb.volume(1, &[]);
    let mut run = Running::start(
        &tb,
        &[
            "-q",
            "-o",
            "json",
            "snapshot",
            "create",
            &vol,
            "--tag",
            "autosnap-testbed:state=pending",
            "--wait",
        ],
    );
    run.until(|| !snapshots_of(&tb, REGION, &vol).is_empty());
    let snap = snapshots_of(&tb, REGION, &vol).remove(0);
    run.signal("INT");
    let done = run.finish(vec![]);

    assert_continues_in_aws(&done, &snap);
    let json: serde_json::Value = serde_json::from_str(&done.stdout)
        .unwrap_or_else(|e| panic!("stdout is JSON ({e}): {}", done.stdout));
    let list = json.as_array().expect("a list of snapshots");
    assert_eq!(list.len(), 1, "{json}");
    assert_eq!(list[0]["snapshot_id"], snap.as_str());
    assert_eq!(list[0]["state"], "pending");
    // With -o json the notice on stderr is the error object (docs/json-output.md).
    let notice: serde_json::Value =
        serde_json::from_str(done.stderr.lines().last().unwrap_or_default())
            .unwrap_or_else(|e| panic!("stderr ends with an error object ({e}): {}", done.stderr));
    assert_eq!(notice["error"]["kind"], "interrupted", "{notice}");
    // Interrupting the wait did not cancel anything.
    assert!(tb.snapshot_exists(REGION, &snap));
}

#[test]
fn sigterm_during_snapshot_create_wait_prints_the_table_and_exits_130() {
    let tb = TestBed::start();
    let vol = tb.volume(1, &[]);
    let mut run = Running::start(
        &tb,
        &[
            "snapshot",
            "create",
            &vol,
            "--tag",
            "autosnap-testbed:state=pending",
            "--wait",
        ],
    );
    run.until(|| !snapshots_of(&tb, REGION, &vol).is_empty());
    let snap = snapshots_of(&tb, REGION, &vol).remove(0);
    run.signal("TERM");
    let done = run.finish(vec![]);

    assert_continues_in_aws(&done, &snap);
    let row = done
        .stdout
        .lines()
        .find(|l| l.contains(&snap))
        .unwrap_or_else(|| panic!("the table shows {snap}: {}", done.stdout));
    assert!(row.contains("pending"), "{row}");
}

#[test]
fn sigint_during_volume_create_wait_prints_the_creating_volume_and_exits_130() {
    let tb = TestBed::start();
    let vol = tb.volume(1, &[]);
    let snap = tb.foreign_snapshot(&vol);
    let mut run = Running::start(
        &tb,
        &[
            "-q",
            "-o",
            "json",
            "volume",
            "create",
            "--snapshot",
            &snap,
            "--availability-zone",
            "us-east-1a",
            "--tag",
            "autosnap-testbed:state=creating",
            "--wait",
        ],
    );
    run.until(|| !volumes_from(&tb, &snap).is_empty());
    let new_volume = volumes_from(&tb, &snap).remove(0);
    run.signal("INT");
    let done = run.finish(vec![]);

    assert_continues_in_aws(&done, &new_volume);
    let json: serde_json::Value = serde_json::from_str(&done.stdout)
        .unwrap_or_else(|e| panic!("stdout is JSON ({e}): {}", done.stdout));
    assert_eq!(json["volume_id"], new_volume.as_str(), "{json}");
    assert_eq!(json["state"], "creating", "{json}");
}

#[test]
fn sigint_during_snapshot_copy_wait_prints_the_copy_and_exits_130() {
    let tb = TestBed::start();
    let vol = tb.volume(1, &[]);
    let source = tb.foreign_snapshot(&vol);
    // A copy already under way in the destination (as a first, interrupted
    // `copy` leaves it): the rerun waits on it.
    let dest = "us-west-2";
    let dest_vol = tb.volume_in(dest, 1);
    let copy = tb.snapshot_with_tags(
        dest,
        &dest_vol,
        &[
            ("autosnap:managed", "true"),
            ("autosnap:source-snapshot", &source),
            ("autosnap:source-region", REGION),
            ("autosnap-testbed:state", "pending"),
        ],
    );
    let mut run = Running::start(
        &tb,
        &[
            "-o",
            "json",
            "snapshot",
            "copy",
            &source,
            "--to-region",
            dest,
            "--wait",
        ],
    );
    let said = run.until_said(&copy);
    run.signal("INT");
    let done = run.finish(said);

    assert_continues_in_aws(&done, &copy);
    let json: serde_json::Value = serde_json::from_str(&done.stdout)
        .unwrap_or_else(|e| panic!("stdout is JSON ({e}): {}", done.stdout));
    let list = json.as_array().expect("a list of copies");
    assert_eq!(list.len(), 1, "{json}");
    assert_eq!(list[0]["snapshot_id"], copy.as_str());
    assert_eq!(list[0]["state"], "pending");
    assert_eq!(list[0]["region"], dest);
}

#[test]
fn sigint_during_ami_create_wait_prints_the_pending_ami_and_exits_130() {
    let tb = TestBed::start();
    let (instance, _) = tb.instance("web");
    let mut run = Running::start(
        &tb,
        &[
            "-o",
            "json",
            "ami",
            "create",
            &instance,
            "--tag",
            "autosnap-testbed:state=pending",
            "--wait",
            "--poll-interval",
            "100ms",
        ],
    );
    let said = run.until_said("creating AMI ami-");
    let image = said
        .last()
        .and_then(|l| l.split_whitespace().find(|w| w.starts_with("ami-")))
        .expect("the log names the AMI")
        .to_string();
    run.signal("INT");
    let done = run.finish(said);

    assert_continues_in_aws(&done, &image);
    let json: serde_json::Value = serde_json::from_str(&done.stdout)
        .unwrap_or_else(|e| panic!("stdout is JSON ({e}): {}", done.stdout));
    assert_eq!(json["image_id"], image.as_str(), "{json}");
    assert_eq!(json["state"], "pending", "{json}");
    assert_eq!(json["instance_id"], instance.as_str(), "{json}");
    assert!(tb.image(&image).is_some(), "the AMI still exists");
}

#[test]
fn sigint_during_upload_wait_prints_the_snapshot_and_its_state_and_exits_130() {
    let tb = TestBed::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("disk.img");
    std::fs::write(&file, vec![7u8; 600_000]).expect("write image");
    let mut run = Running::start(
        &tb,
        &[
            "-o",
            "json",
            "upload",
            file.to_str().expect("utf-8 path"),
            "--tag",
            "autosnap-testbed:state=pending",
            "--wait",
        ],
    );
    // Logged once autosnap polls the completed upload: it is in the wait.
    let said = run.until_said("waiting for snapshots");
    run.signal("INT");
    let done = run.finish(said);

    let json: serde_json::Value = serde_json::from_str(&done.stdout)
        .unwrap_or_else(|e| panic!("stdout is JSON ({e}): {}", done.stdout));
    let snap = json["snapshot_id"]
        .as_str()
        .expect("snapshot_id")
        .to_string();
    assert_continues_in_aws(&done, &snap);
    assert_eq!(json["state"], "pending", "{json}");
    assert_eq!(json["blocks_written"], 2, "{json}");
    assert!(tb.snapshot_exists(REGION, &snap));
}

#[test]
fn sigint_during_ami_from_snapshot_wait_prints_the_registered_ami_and_exits_130() {
    let tb = TestBed::start();
    let vol = tb.volume(2, &[]);
    let snap = tb.foreign_snapshot(&vol);
    let mut run = Running::start(
        &tb,
        &[
            "-o",
            "json",
            "ami",
            "from-snapshot",
            &snap,
            "--name",
            "from-backup",
            "--tag",
            "autosnap-testbed:state=pending",
            "--wait",
        ],
    );
    let said = run.until_said("registered AMI ami-");
    let image = said
        .last()
        .and_then(|l| l.split_whitespace().find(|w| w.starts_with("ami-")))
        .expect("the log names the AMI")
        .to_string();
    run.signal("INT");
    let done = run.finish(said);

    assert_continues_in_aws(&done, &image);
    let json: serde_json::Value = serde_json::from_str(&done.stdout)
        .unwrap_or_else(|e| panic!("stdout is JSON ({e}): {}", done.stdout));
    assert_eq!(json["image_id"], image.as_str(), "{json}");
    assert_eq!(json["state"], "pending", "{json}");
    assert_eq!(json["name"], "from-backup", "{json}");
    assert!(tb.image(&image).is_some(), "the AMI still exists");
}

#[test]
fn sigint_during_snapshot_create_of_a_mount_path_wait_prints_the_snapshot_and_exits_130() {
    let tb = TestBed::start();
    let (instance, data_volume) = tb.instance("db");
    let imds = FakeImds::start(&instance, REGION);
    // `/` stands for a mount on this instance; --volume names its volume (no freeze, so
    // nothing on this machine is touched).
    let mut cmd = tb.std_cmd();
    cmd.env_remove("AWS_EC2_METADATA_DISABLED")
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.endpoint())
        .args(["-o", "json", "snapshot", "create", "/", "--volume"])
        .arg(format!("/={data_volume}"))
        .args(["--tag", "autosnap-testbed:state=pending", "--wait"]);
    let mut run = Running::spawn(cmd);
    run.until(|| !snapshots_of(&tb, REGION, &data_volume).is_empty());
    let snap = snapshots_of(&tb, REGION, &data_volume).remove(0);
    run.signal("INT");
    let done = run.finish(vec![]);

    assert_continues_in_aws(&done, &snap);
    let json: serde_json::Value = serde_json::from_str(&done.stdout)
        .unwrap_or_else(|e| panic!("stdout is JSON ({e}): {}", done.stdout));
    let list = json.as_array().expect("a list of snapshots");
    assert_eq!(list.len(), 1, "{json}");
    assert_eq!(list[0]["snapshot_id"], snap.as_str());
    assert_eq!(list[0]["state"], "pending");
    assert_eq!(list[0]["tags"]["autosnap:consistency"], "crash");
    assert!(tb.snapshot_exists(REGION, &snap));
}

/// With hooks (and so the freeze crate's signal thread, which ends the process on a
/// signal while anything is frozen or a hook runs), Ctrl-C during the wait that comes
/// after the post hooks still prints the snapshot and exits 130.
#[test]
fn sigint_during_the_wait_after_hooks_prints_the_snapshot_and_exits_130() {
    let tb = TestBed::start();
    let (instance, data_volume) = tb.instance("db");
    let imds = FakeImds::start(&instance, REGION);
    let mut cmd = tb.std_cmd();
    cmd.env_remove("AWS_EC2_METADATA_DISABLED")
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.endpoint())
        .args(["-o", "json", "snapshot", "create", "/", "--volume"])
        .arg(format!("/={data_volume}"))
        .args(["--pre", "true", "--post", "true"])
        .args(["--tag", "autosnap-testbed:state=pending", "--wait"]);
    let mut run = Running::spawn(cmd);
    run.until(|| !snapshots_of(&tb, REGION, &data_volume).is_empty());
    let snap = snapshots_of(&tb, REGION, &data_volume).remove(0);
    run.signal("INT");
    let done = run.finish(vec![]);

    assert_continues_in_aws(&done, &snap);
    let json: serde_json::Value = serde_json::from_str(&done.stdout)
        .unwrap_or_else(|e| panic!("stdout is JSON ({e}): {}", done.stdout));
    assert_eq!(json[0]["snapshot_id"], snap.as_str(), "{json}");
    assert_eq!(json[0]["state"], "pending");
}

/// The ids in a log line, in order (`ami-…`).
fn image_ids(line: &str) -> Vec<String> {
    line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| w.starts_with("ami-"))
        .map(String::from)
        .collect()
}

#[test]
fn sigint_during_ami_create_encrypt_first_wait_says_what_was_not_done() {
    let tb = TestBed::start();
    tb.bucket("meta");
    let (instance, _) = tb.instance("web");
    let mut run = Running::start(
        &tb,
        &[
            "ami",
            "create",
            &instance,
            "--encrypt",
            "--metadata-bucket",
            "meta",
            "--tag",
            "autosnap-testbed:state=pending",
            "--wait",
            "--poll-interval",
            "100ms",
        ],
    );
    let said = run.until_said("creating AMI ami-");
    let image = image_ids(said.last().expect("a line"))[0].clone();
    run.signal("INT");
    let done = run.finish(said);

    assert_continues_in_aws(&done, &image);
    let row = done
        .stdout
        .lines()
        .find(|l| l.starts_with("STATE"))
        .unwrap_or_else(|| panic!("the table shows the state: {}", done.stdout));
    assert!(row.contains("pending"), "{row}");
    assert!(done.stdout.contains(&image), "{}", done.stdout);
    assert!(
        done.stderr.contains("not done: no encrypted copy was made")
            && done
                .stderr
                .contains("not done: the metadata document was not written")
            && done.stderr.contains("--bucket meta"),
        "stderr names each step not done: {}",
        done.stderr
    );
    assert!(tb.image(&image).is_some(), "the AMI still exists");
}

#[test]
fn sigint_during_ami_create_encrypted_copy_wait_prints_the_copy_and_the_source_left() {
    let tb = TestBed::start();
    let (instance, _) = tb.instance("web");
    let mut run = Running::start(
        &tb,
        &[
            "-o",
            "json",
            "ami",
            "create",
            &instance,
            "--encrypt",
            "--tag",
            "autosnap-testbed:copy-state=pending",
            "--wait",
            "--poll-interval",
            "100ms",
        ],
    );
    let said = run.until_said("encrypting: copying ami-");
    let ids = image_ids(said.last().expect("a line"));
    let (source, copy) = (ids[0].clone(), ids[1].clone());
    run.signal("INT");
    let done = run.finish(said);

    assert_continues_in_aws(&done, &copy);
    let json: serde_json::Value = serde_json::from_str(&done.stdout)
        .unwrap_or_else(|e| panic!("stdout is JSON ({e}): {}", done.stdout));
    assert_eq!(json["image_id"], copy.as_str(), "{json}");
    assert_eq!(json["state"], "pending", "{json}");
    assert_eq!(json["intermediate_image_id"], source.as_str(), "{json}");
    assert!(
        done.stderr
            .contains(&format!("the unencrypted AMI {source} was not removed")),
        "{}",
        done.stderr
    );
    // Nothing was cleaned up behind the user's back: both AMIs are there.
    assert!(tb.image(&source).is_some(), "the unencrypted AMI is left");
    assert!(tb.image(&copy).is_some(), "the copy still exists");
}

fn objects(tb: &TestBed, bucket: &str) -> Vec<String> {
    let s3 = tb.s3();
    tb.block(async {
        s3.list_objects_v2()
            .bucket(bucket)
            .send()
            .await
            .expect("list objects")
            .contents()
            .iter()
            .filter_map(|o| o.key().map(String::from))
            .collect()
    })
}

/// An available AMI of a new instance, with `tags`.
fn available_ami(tb: &TestBed, tags: &[&str]) -> String {
    let (instance, _) = tb.instance("web");
    let mut args = vec![
        "ami",
        "create",
        &instance,
        "--wait",
        "--poll-interval",
        "100ms",
    ];
    for t in tags {
        args.extend(["--tag", t]);
    }
    let json = tb.json(&args);
    json["image_id"].as_str().expect("image_id").to_string()
}

#[test]
fn sigint_during_ami_store_wait_prints_the_task_and_says_no_metadata_was_written() {
    let tb = TestBed::start();
    tb.bucket("amis");
    let ami = available_ami(&tb, &["autosnap-testbed:store-state=InProgress"]);
    let mut run = Running::start(
        &tb,
        &[
            "-o",
            "json",
            "ami",
            "store",
            &ami,
            "--bucket",
            "amis",
            "--poll-interval",
            "100ms",
        ],
    );
    let said = run.until_said(&format!("storing {ami} as s3://amis/"));
    run.signal("INT");
    let done = run.finish(said);

    assert_continues_in_aws(&done, &ami);
    let json: serde_json::Value = serde_json::from_str(&done.stdout)
        .unwrap_or_else(|e| panic!("stdout is JSON ({e}): {}", done.stdout));
    assert_eq!(json["image_id"], ami.as_str(), "{json}");
    assert_eq!(json["object_key"], format!("{ami}.bin").as_str(), "{json}");
    assert_eq!(json["state"], "InProgress", "{json}");
    assert_eq!(json["metadata_key"], serde_json::Value::Null, "{json}");
    assert!(
        done.stderr.contains("metadata document was not written"),
        "{}",
        done.stderr
    );
    assert!(
        !objects(&tb, "amis")
            .iter()
            .any(|k| k.contains("ami-metadata")),
        "no metadata document: {:?}",
        objects(&tb, "amis")
    );
}

#[test]
fn sigint_during_ami_restore_wait_prints_the_restored_ami_and_exits_130() {
    let tb = TestBed::start();
    tb.bucket("amis");
    let ami = available_ami(&tb, &["autosnap-testbed:restore-state=pending"]);
    tb.json(&[
        "ami",
        "store",
        &ami,
        "--bucket",
        "amis",
        "--poll-interval",
        "100ms",
    ]);
    let mut run = Running::start(
        &tb,
        &[
            "-o",
            "json",
            "ami",
            "restore",
            "--bucket",
            "amis",
            "--ami",
            &ami,
            "--name",
            "restored",
            "--poll-interval",
            "100ms",
        ],
    );
    let said = run.until_said(&format!("restoring {ami} from"));
    let restored = image_ids(said.last().expect("a line"))
        .into_iter()
        .find(|id| id != &ami)
        .expect("the log names the new AMI");
    run.signal("INT");
    let done = run.finish(said);

    assert_continues_in_aws(&done, &restored);
    let json: serde_json::Value = serde_json::from_str(&done.stdout)
        .unwrap_or_else(|e| panic!("stdout is JSON ({e}): {}", done.stdout));
    assert_eq!(json["image_id"], restored.as_str(), "{json}");
    assert_eq!(json["source_image_id"], ami.as_str(), "{json}");
    assert_eq!(json["state"], "pending", "{json}");
    assert!(
        done.stderr.contains("original tags were not re-applied")
            && done
                .stderr
                .contains(&format!("ami delete {restored} --force")),
        "{}",
        done.stderr
    );
    assert!(tb.image(&restored).is_some(), "the restored AMI exists");
}

#[test]
fn sigint_while_run_waits_to_copy_prints_the_report_so_far_and_exits_130() {
    let tb = TestBed::start();
    let vol = tb.volume(1, &[("Backup", "daily")]);
    // The new backup stays pending, so the run waits to copy it.
    tb.write_config(
        "autosnap.toml",
        r#"
[[policy]]
name = "dr"
resource = "volume"
select = [{ tags = { Backup = "daily" } }]
schedule = "1d"
retain = { last = 3 }
tags = { "autosnap-testbed:state" = "pending" }
copy = [{ region = "us-west-2", retain = { last = 1 } }]
"#,
        0o644,
    );
    let mut run = Running::start(&tb, &["-o", "json", "run"]);
    run.until(|| !snapshots_of(&tb, REGION, &vol).is_empty());
    let snap = snapshots_of(&tb, REGION, &vol).remove(0);
    // Recorded in the report once the create call has returned (logged).
    let said = run.until_said(&format!("created {snap}"));
    run.signal("INT");
    let done = run.finish(said);

    assert_eq!(done.code, Some(130), "{}", done.stderr);
    assert!(
        done.stderr.contains("continues in AWS") && done.stderr.contains("1 copie(s) not made"),
        "stderr says what continues and what was not done: {}",
        done.stderr
    );
    let json: serde_json::Value = serde_json::from_str(&done.stdout)
        .unwrap_or_else(|e| panic!("stdout is JSON ({e}): {}", done.stdout));
    assert_eq!(json["interrupted"], true, "{json}");
    let created = json["report"]["created"].as_array().expect("created");
    assert_eq!(created.len(), 1, "{json}");
    assert_eq!(created[0]["snapshot_ids"][0], snap.as_str(), "{json}");
    assert_eq!(json["report"]["copied"], serde_json::json!([]), "{json}");
    let west = tb.ec2("us-west-2");
    let copies = tb.block(async {
        west.describe_snapshots()
            .send()
            .await
            .expect("describe snapshots")
            .snapshots()
            .len()
    });
    assert_eq!(copies, 0, "no copy was started");
}

#[test]
fn sigterm_to_daemon_with_work_in_flight_logs_what_it_did_and_left() {
    let tb = TestBed::start();
    let vol = tb.volume(1, &[("Backup", "daily")]);
    tb.write_config(
        "autosnap.toml",
        r#"
[[policy]]
name = "dr"
resource = "volume"
select = [{ tags = { Backup = "daily" } }]
schedule = "1d"
retain = { last = 3 }
tags = { "autosnap-testbed:state" = "pending" }
copy = [{ region = "us-west-2", retain = { last = 1 } }]
"#,
        0o644,
    );
    // The copy can never start (the backup stays pending): the shutdown
    // timeout always runs out, however short.
    let mut run = Running::start(&tb, &["daemon", "--shutdown-timeout", "100ms"]);
    run.until(|| !snapshots_of(&tb, REGION, &vol).is_empty());
    let snap = snapshots_of(&tb, REGION, &vol).remove(0);
    let said = run.until_said(&format!("created {snap}"));
    run.signal("TERM");
    let done = run.finish(said);

    assert!(
        done.stderr.contains("did not finish within")
            && done
                .stderr
                .contains(&format!("stopped run: 1 created ({snap})"))
            && done.stderr.contains("not done: 1 copie(s) not made"),
        "the log says what the stopped run did and left: {}",
        done.stderr
    );
}

#[test]
fn sigint_during_upload_transfer_names_the_unfinished_snapshot_and_exits_130() {
    let tb = TestBed::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("disk.img");
    std::fs::write(&file, vec![7u8; 600_000]).expect("write image");
    let mut run = Running::start(
        &tb,
        &[
            "-o",
            "json",
            "upload",
            file.to_str().expect("utf-8 path"),
            // The test bed holds each block write, so the transfer is under way when
            // the signal comes (the test bed is stopped long before the hold ends).
            "--tag",
            "autosnap-testbed:hold-writes=300",
        ],
    );
    let said = run.until_said("started snapshot snap-");
    let snap = said
        .last()
        .and_then(|l| l.split_whitespace().find(|w| w.starts_with("snap-")))
        .expect("the log names the snapshot")
        .to_string();
    run.signal("INT");
    let done = run.finish(said);

    assert_eq!(done.code, Some(130), "{}", done.stderr);
    let json: serde_json::Value = serde_json::from_str(&done.stdout)
        .unwrap_or_else(|e| panic!("stdout is JSON ({e}): {}", done.stdout));
    assert_eq!(json["snapshot_id"], snap.as_str(), "{json}");
    assert_eq!(json["completed"], false, "{json}");
    assert_eq!(json["state"], "pending", "{json}");
    assert!(
        done.stderr.contains("not completed")
            && done
                .stderr
                .contains(&format!("snapshot delete {snap} --force")),
        "stderr says what became of it and what to do: {}",
        done.stderr
    );
    assert!(tb.snapshot_exists(REGION, &snap));
}

#[test]
fn sigint_during_restore_to_snapshot_names_the_unfinished_snapshot_and_exits_130() {
    let tb = TestBed::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let repo = dir.path().join("repo");
    let repo_s = repo.to_str().expect("utf-8");
    let file = dir.path().join("disk.img");
    std::fs::write(&file, vec![5u8; 600_000]).expect("write image");
    tb.cmd().args(["repo", "init", repo_s]).assert().success();
    let uploaded = tb.json(&["upload", file.to_str().expect("utf-8")]);
    let source = uploaded["snapshot_id"].as_str().expect("id").to_string();
    // The original's tags come back on the restored snapshot: this one holds its writes.
    let ec2 = tb.ec2(REGION);
    tb.block(async {
        ec2.create_tags()
            .resources(&source)
            .tags(
                aws_sdk_ec2::types::Tag::builder()
                    .key("autosnap-testbed:hold-writes")
                    .value("300")
                    .build(),
            )
            .send()
            .await
            .expect("tag snapshot")
    });
    tb.json(&["archive", &source, "--repo", repo_s]);

    let mut run = Running::start(
        &tb,
        &[
            "-o",
            "json",
            "restore",
            &source,
            "--repo",
            repo_s,
            "--to-snapshot",
        ],
    );
    // Logged once StartSnapshot has answered and autosnap holds the id.
    let restored = || -> Vec<String> {
        let ec2 = tb.ec2(REGION);
        tb.block(async {
            ec2.describe_snapshots()
                .filters(
                    Filter::builder()
                        .name("tag:autosnap:restored-from")
                        .values(&source)
                        .build(),
                )
                .send()
                .await
                .expect("describe snapshots")
                .snapshots()
                .iter()
                .filter_map(|s| s.snapshot_id().map(String::from))
                .collect()
        })
    };
    let said = run.until_said("started snapshot snap-");
    let snap = restored().remove(0);
    run.signal("INT");
    let done = run.finish(said);

    assert_eq!(done.code, Some(130), "{}", done.stderr);
    let json: serde_json::Value = serde_json::from_str(&done.stdout)
        .unwrap_or_else(|e| panic!("stdout is JSON ({e}): {}", done.stdout));
    assert_eq!(json["snapshot_id"], snap.as_str(), "{json}");
    assert_eq!(json["completed"], false, "{json}");
    assert!(
        done.stderr.contains("not completed") && done.stderr.contains(&snap),
        "{}",
        done.stderr
    );
}

#[test]
fn sigint_during_restore_to_ami_names_the_snapshots_made_and_exits_130() {
    use aws_sdk_ec2::types::{BlockDeviceMapping, EbsBlockDevice, ResourceType};
    let tb = TestBed::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let repo = dir.path().join("repo");
    let repo_s = repo.to_str().expect("utf-8");
    tb.cmd().args(["repo", "init", repo_s]).assert().success();
    let ec2 = tb.ec2(REGION);
    // Two volumes with data; the data volume's snapshot holds its restored copy's writes.
    let snapshot = |seed: u8, tags: &[(&str, &str)]| -> String {
        let file = dir.path().join(format!("{seed}.img"));
        std::fs::write(&file, vec![seed; 600_000]).expect("write image");
        let uploaded = tb.json(&["upload", file.to_str().expect("utf-8")]);
        let up = uploaded["snapshot_id"].as_str().expect("id").to_string();
        tb.block(async {
            let vol = ec2
                .create_volume()
                .availability_zone("us-east-1a")
                .snapshot_id(&up)
                .send()
                .await
                .expect("volume")
                .volume_id()
                .expect("id")
                .to_string();
            let mut req = ec2.create_snapshot().volume_id(vol);
            if !tags.is_empty() {
                req =
                    req.tag_specifications(crate::support::tag_spec(ResourceType::Snapshot, tags));
            }
            req.send()
                .await
                .expect("snapshot")
                .snapshot_id()
                .expect("id")
                .to_string()
        })
    };
    let root = snapshot(1, &[]);
    let data = snapshot(2, &[("autosnap-testbed:hold-writes", "300")]);
    let mapping = |device: &str, snap: &str| {
        BlockDeviceMapping::builder()
            .device_name(device)
            .ebs(
                EbsBlockDevice::builder()
                    .snapshot_id(snap)
                    .volume_size(1)
                    .build(),
            )
            .build()
    };
    let ami = tb.block(async {
        ec2.register_image()
            .name("web")
            .root_device_name("/dev/xvda")
            .block_device_mappings(mapping("/dev/xvda", &root))
            .block_device_mappings(mapping("/dev/xvdb", &data))
            .send()
            .await
            .expect("register")
            .image_id()
            .expect("id")
            .to_string()
    });
    tb.json(&["archive", &ami, "--repo", repo_s]);

    let mut run = Running::start(
        &tb,
        &[
            "-o", "json", "restore", &ami, "--repo", repo_s, "--to-ami", "--name", "web-r",
        ],
    );
    // The second volume's snapshot is started (its writes are held).
    let said = run.until_said("volume 1");
    run.signal("INT");
    let done = run.finish(said);

    assert_eq!(done.code, Some(130), "{}", done.stderr);
    let json: serde_json::Value = serde_json::from_str(&done.stdout)
        .unwrap_or_else(|e| panic!("stdout is JSON ({e}): {}", done.stdout));
    assert_eq!(json["image_id"], serde_json::Value::Null, "{json}");
    assert_eq!(json["completed"], false, "{json}");
    let snaps = json["snapshots"].as_array().expect("snapshots");
    assert_eq!(snaps.len(), 2, "{json}");
    for s in snaps {
        let id = s["snapshot_id"].as_str().expect("id");
        assert!(tb.snapshot_exists(REGION, id), "{id} exists");
        assert!(
            done.stderr.contains(id),
            "stderr names {id}: {}",
            done.stderr
        );
    }
    assert!(
        done.stderr.contains("no AMI was registered"),
        "{}",
        done.stderr
    );
    let named = tb.block(async {
        ec2.describe_images()
            .filters(Filter::builder().name("name").values("web-r").build())
            .send()
            .await
            .expect("describe images")
            .images()
            .len()
    });
    assert_eq!(named, 0, "no AMI web-r");
}

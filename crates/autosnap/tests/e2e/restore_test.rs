//! Restore tests through the real binary on the test bed: `test-restore` passing on a good
//! snapshot and failing on one whose blocks differ from its archive or whose superblock is
//! damaged (images uploaded with `autosnap upload`), never leaving a volume behind (SIGKILL
//! mid-test, then the next run deletes it; Ctrl-C deletes its own), and policies: `plan`
//! saying when a test is due, `run` testing when due and not when recent, `status`,
//! Prometheus and `status --check`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{TestBed, REGION};
use aws_sdk_ec2::types::Filter;
use serde_json::Value;

const BLOCK: usize = 524_288;
const RUN_TAG: &str = "autosnap:restore-test-run";
const RESULT_TAG: &str = "autosnap:restore-test";
/// How long a test waits for autosnap to reach its volume wait.
const PATIENCE: Duration = Duration::from_secs(60);

/// The first 4 KiB of a real 8 MiB ext4 filesystem (mkfs.ext4 -O metadata_csum).
fn ext4_head() -> Vec<u8> {
    std::fs::read(
        crate::support::repo_root()
            .join("crates/autosnap-core/tests/fixtures/restore_test/ext4-mkfs-8MiB-head.bin"),
    )
    .expect("ext4 fixture")
}

/// Deterministic pseudo-random bytes (xorshift).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A 4-block image: `head` at the start of block 0, random data in blocks 1 and 3, block 2
/// zeros.
fn image_bytes(head: &[u8], seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; 4 * BLOCK];
    data[..head.len()].copy_from_slice(head);
    data[BLOCK..2 * BLOCK].copy_from_slice(&noise(seed, BLOCK));
    data[3 * BLOCK..].copy_from_slice(&noise(seed + 1, BLOCK));
    data
}

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

fn upload(bed: &TestBed, file: &Path) -> String {
    bed.json(&["upload", file.to_str().unwrap(), "--wait"])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Restore-test volumes (carrying the run tag) in the test bed.
fn test_volumes(bed: &TestBed) -> Vec<String> {
    let ec2 = bed.ec2(REGION);
    bed.block(async {
        ec2.describe_volumes()
            .filters(Filter::builder().name("tag-key").values(RUN_TAG).build())
            .send()
            .await
            .expect("describe volumes")
            .volumes()
            .iter()
            .filter_map(|v| v.volume_id().map(String::from))
            .collect()
    })
}

fn tag_of(bed: &TestBed, snapshot: &str, key: &str) -> Option<String> {
    bed.snapshot(snapshot)
        .tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value().map(String::from))
}

fn set_tag(bed: &TestBed, id: &str, key: &str, value: &str) {
    let ec2 = bed.ec2(REGION);
    bed.block(async {
        ec2.create_tags()
            .resources(id)
            .tags(
                aws_sdk_ec2::types::Tag::builder()
                    .key(key)
                    .value(value)
                    .build(),
            )
            .send()
            .await
            .expect("tag")
    });
}

fn delete_tag(bed: &TestBed, id: &str, key: &str) {
    let ec2 = bed.ec2(REGION);
    bed.block(async {
        ec2.delete_tags()
            .resources(id)
            .tags(aws_sdk_ec2::types::Tag::builder().key(key).build())
            .send()
            .await
            .expect("untag")
    });
}

/// Runs `test-restore` with `-o json`; returns (exit code, stdout JSON, stderr).
fn test_restore(bed: &TestBed, args: &[&str]) -> (i32, Value, String) {
    let out = bed
        .cmd()
        .args(["-o", "json", "test-restore"])
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON ({e}): {}\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (out.status.code().unwrap_or(-1), json, stderr)
}

fn init_repo(bed: &TestBed, dir: &Path) -> String {
    let repo = dir.join("repo");
    let repo_s = repo.to_str().unwrap().to_string();
    bed.json(&["repo", "init", &repo_s]);
    repo_s
}

#[test]
fn a_good_snapshot_passes_against_its_archive_and_the_result_is_tagged() {
    let bed = TestBed::start();
    let dir = tempfile::tempdir().unwrap();
    let snap = upload(
        &bed,
        &write(dir.path(), "disk.img", &image_bytes(&ext4_head(), 7)),
    );
    let repo = init_repo(&bed, dir.path());
    bed.json(&["archive", &snap, "--repo", &repo]);

    // A dry run says what it would do and makes nothing.
    let dry = bed.json(&["test-restore", &snap, "--repo", &repo, "--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["backup"]["backup_id"], snap.as_str());
    assert!(dry["report"].is_null());
    assert!(tag_of(&bed, &snap, RESULT_TAG).is_none());

    let (code, out, stderr) = test_restore(&bed, &[&snap, "--repo", &repo]);
    assert_eq!(code, 0, "{out}\n{stderr}");
    let report = &out["report"];
    assert_eq!(report["passed"], true, "{report}");
    let check = &report["snapshots"][0];
    assert_eq!(check["snapshot_id"], snap.as_str());
    // Block 2 is zeros: upload skips it, so three blocks are read and compared.
    assert_eq!(check["blocks_read"], 3, "{check}");
    assert_eq!(check["archive"]["blocks_compared"], 3, "{check}");
    assert_eq!(check["archive"]["mismatched_blocks"], 0);
    assert_eq!(check["filesystem"]["type"], "ext4", "{check}");
    assert_eq!(check["filesystem"]["checksummed"], true);
    assert_eq!(check["volume"]["state"], "available");
    assert_eq!(check["volume"]["availability_zone"], "us-east-1a");
    assert_eq!(check["volume"]["deleted"], true);
    assert!(check["volume"]["volume_id"]
        .as_str()
        .unwrap()
        .starts_with("vol-"));
    assert_eq!(report["recorded"], true);

    let result = tag_of(&bed, &snap, RESULT_TAG).expect("result tag");
    assert!(result.starts_with("passed 20"), "{result}");
    assert!(tag_of(&bed, &snap, "autosnap:restore-test-passed").is_some());
    assert!(test_volumes(&bed).is_empty(), "no volume is left behind");

    // The table names each step.
    let table = bed
        .cmd()
        .args(["test-restore", &snap, "--repo", &repo])
        .assert()
        .success();
    let text = String::from_utf8_lossy(&table.get_output().stdout).to_string();
    assert!(text.contains(&format!("of {snap}: passed")), "{text}");
    assert!(text.contains("3 block(s) compared, 0 differ"), "{text}");
    assert!(text.contains("ext4 superblock intact"), "{text}");
}

/// Stores `file` in the local repository as an archive of `snapshot` (what an archive of it
/// would hold, had the snapshot's data been `file`'s).
fn import_as_archive_of(repo: &str, file: &Path, snapshot: &str) {
    use autosnap_repo::{
        ArchiveSource, Credentials, ImportOptions, LocalBackend, Repository, SourceKind,
        VolumeSource,
    };
    let repo = Repository::open(
        Arc::new(LocalBackend::new(PathBuf::from(repo))),
        Credentials::None,
    )
    .unwrap();
    let len = std::fs::metadata(file).unwrap().len();
    let options = ImportOptions {
        source: Some(ArchiveSource::new(SourceKind::Snapshot, snapshot)),
        volume: Some(VolumeSource {
            snapshot_id: Some(snapshot.to_string()),
            ..VolumeSource::with_size_bytes(len)
        }),
        ..ImportOptions::default()
    };
    repo.import_file(file, options).unwrap();
}

#[test]
fn blocks_that_differ_from_the_archive_fail_the_test_and_the_failure_is_tagged() {
    let bed = TestBed::start();
    let dir = tempfile::tempdir().unwrap();
    let good = image_bytes(&ext4_head(), 11);
    let snap = upload(&bed, &write(dir.path(), "disk.img", &good));
    // The archive says block 3 held other data than the snapshot now returns.
    let mut other = good.clone();
    other[3 * BLOCK + 100] ^= 0xFF;
    let repo = init_repo(&bed, dir.path());
    import_as_archive_of(&repo, &write(dir.path(), "other.img", &other), &snap);

    let (code, out, stderr) = test_restore(&bed, &[&snap, "--repo", &repo]);
    assert_eq!(code, 1, "{out}\n{stderr}");
    let report = &out["report"];
    assert_eq!(report["passed"], false);
    let check = &report["snapshots"][0];
    assert_eq!(check["archive"]["mismatched_blocks"], 1, "{check}");
    assert_eq!(check["archive"]["mismatches"], serde_json::json!([3]));
    let reason = report["reason"].as_str().unwrap();
    assert!(
        reason.contains("1 of 3 block(s) differ from archive"),
        "{reason}"
    );
    // The error object on stderr names the backup and why.
    assert!(stderr.contains("restore_test_failed"), "{stderr}");
    let result = tag_of(&bed, &snap, RESULT_TAG).unwrap();
    assert!(result.starts_with("failed 20"), "{result}");
    assert!(result.contains("differ from archive"), "{result}");
    assert!(tag_of(&bed, &snap, "autosnap:restore-test-passed").is_none());
    assert!(test_volumes(&bed).is_empty());
}

#[test]
fn a_damaged_superblock_fails_and_no_filesystem_is_not_a_failure() {
    let bed = TestBed::start();
    let dir = tempfile::tempdir().unwrap();
    // One bit of the free block count flipped: ext4's magic is intact, its checksum is not.
    let mut head = ext4_head();
    head[1024 + 0x0C] ^= 1;
    let damaged = upload(&bed, &write(dir.path(), "bad.img", &image_bytes(&head, 3)));
    let raw = upload(&bed, &write(dir.path(), "raw.img", &image_bytes(&[], 5)));

    let (code, out, _) = test_restore(&bed, &[&damaged]);
    assert_eq!(code, 1, "{out}");
    let reason = out["report"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("ext4 superblock damaged: checksum"),
        "{reason}"
    );
    // Without --repo nothing is compared; the blocks were still read.
    let check = &out["report"]["snapshots"][0];
    assert!(check["archive"].is_null());
    assert_eq!(check["blocks_read"], 3);

    let (code, out, _) = test_restore(&bed, &[&raw]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["report"]["snapshots"][0]["filesystem"]["type"], "none");
    let text = bed
        .cmd()
        .args(["test-restore", &raw])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert!(String::from_utf8_lossy(&text).contains("no filesystem recognised"));
    assert!(test_volumes(&bed).is_empty());
}

/// Starts `test-restore` on a snapshot whose volumes the test bed holds in `creating`, and
/// waits until its volume exists; returns the child and the volume id.
fn start_held_test(bed: &TestBed, snap: &str) -> (std::process::Child, String) {
    set_tag(bed, snap, "autosnap-testbed:volume-state", "creating");
    let mut child = bed
        .std_cmd()
        .args(["test-restore", snap])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || for _ in BufReader::new(stderr).lines() {});
    let start = Instant::now();
    loop {
        if let Some(v) = test_volumes(bed).into_iter().next() {
            return (child, v);
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("test-restore ended ({status}) before it made its volume");
        }
        assert!(
            start.elapsed() < PATIENCE,
            "test-restore never made a volume"
        );
        // Poll pace only: readiness is the volume existing.
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_test_killed_mid_wait_leaves_its_volume_and_the_next_run_deletes_it() {
    let bed = TestBed::start();
    let dir = tempfile::tempdir().unwrap();
    let snap = upload(
        &bed,
        &write(dir.path(), "disk.img", &image_bytes(&ext4_head(), 1)),
    );
    let (mut child, volume) = start_held_test(&bed, &snap);
    child.kill().unwrap(); // SIGKILL: no cleanup can run
    child.wait().unwrap();
    assert_eq!(test_volumes(&bed), vec![volume.clone()], "the kill left it");

    delete_tag(&bed, &snap, "autosnap-testbed:volume-state");
    let (code, out, stderr) = test_restore(&bed, &[&snap]);
    assert_eq!(code, 0, "{out}\n{stderr}");
    let left = out["left_over_volumes"].as_array().unwrap();
    assert_eq!(left.len(), 1, "{out}");
    assert_eq!(left[0]["volume_id"], volume.as_str());
    assert!(
        left[0]["why"].as_str().unwrap().contains("is gone"),
        "{}",
        left[0]
    );
    assert!(test_volumes(&bed).is_empty(), "{:?}", test_volumes(&bed));
}

#[test]
fn a_restore_test_volume_is_not_a_target_or_unprotected() {
    let bed = TestBed::start();
    let dir = tempfile::tempdir().unwrap();
    let vol = bed.volume(1, &[("Backup", "daily")]);
    bed.write_config("autosnap.toml", POLICY, 0o644);
    let snap = upload(&bed, &write(dir.path(), "disk.img", &image_bytes(&[], 4)));
    // A test held in its wait: its volume exists while `status` runs.
    let (mut child, volume) = start_held_test(&bed, &snap);
    let status = status_json(&bed);
    child.kill().unwrap();
    child.wait().unwrap();
    let unprotected: Vec<&str> = status["unprotected"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["id"].as_str())
        .collect();
    assert!(!unprotected.contains(&volume.as_str()), "{status}");
    assert!(status["policies"][0]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["target_id"] == vol.as_str()));
}

#[test]
fn ctrl_c_mid_wait_deletes_the_volume_and_exits_130() {
    let bed = TestBed::start();
    let dir = tempfile::tempdir().unwrap();
    let snap = upload(&bed, &write(dir.path(), "disk.img", &image_bytes(&[], 2)));
    let (mut child, volume) = start_held_test(&bed, &snap);
    let ok = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(
        !test_volumes(&bed).contains(&volume),
        "its own volume is deleted before it exits"
    );
    assert!(
        tag_of(&bed, &snap, RESULT_TAG).is_none(),
        "nothing recorded"
    );
}

const POLICY: &str = r#"
[[policy]]
name = "p"
resource = "volume"
select = [{ tags = { Backup = "daily" } }]
schedule = "1d"
retain = { last = 3 }
restore_test = { every = "7d" }
"#;

fn status_json(bed: &TestBed) -> Value {
    bed.json(&["status"])
}

fn target_status<'a>(status: &'a Value, volume: &str) -> &'a Value {
    status["policies"][0]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target_id"] == volume)
        .unwrap_or_else(|| panic!("{volume} not in {status}"))
}

#[test]
fn a_policy_run_tests_when_due_skips_a_recent_test_and_status_reports_it() {
    let bed = TestBed::start();
    let vol = bed.volume(1, &[("Backup", "daily")]);
    bed.write_config("autosnap.toml", POLICY, 0o644);

    let plan = bed
        .cmd()
        .arg("plan")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let plan = String::from_utf8_lossy(&plan).to_string();
    assert!(
        plan.contains("+ due: restore test (every 7d): never tested"),
        "{plan}"
    );

    // The first run backs up the volume, then tests that backup.
    let run = bed.json(&["run"]);
    let tests = run["restore_tests"].as_array().expect("restore tests");
    assert_eq!(tests.len(), 1, "{run}");
    assert_eq!(tests[0]["target_id"], vol.as_str());
    assert_eq!(tests[0]["report"]["passed"], true, "{}", tests[0]);
    let backup = tests[0]["report"]["backup_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        run["report"]["created"][0]["snapshot_ids"][0],
        backup.as_str(),
        "it tested the backup the run made"
    );
    assert!(tag_of(&bed, &backup, RESULT_TAG)
        .unwrap()
        .starts_with("passed "));
    assert!(test_volumes(&bed).is_empty());

    // A recent pass: the plan says when the next is due, and the next run does not test.
    let plan = bed.json(&["plan"]);
    let rt = &plan["policies"][0]["targets"][0]["restore_test"];
    assert_eq!(rt["due"], false, "{rt}");
    assert!(
        rt["reason"].as_str().unwrap().starts_with("passed "),
        "{rt}"
    );
    let run = bed.json(&["run"]);
    assert!(run.get("restore_tests").is_none(), "{run}");

    // status: the last pass and its age, the gauge, and a check that passes.
    let status = status_json(&bed);
    let t = target_status(&status, &vol);
    assert_eq!(t["restore_test"]["health"], "passed", "{t}");
    assert!(t["restore_test_age_seconds"].as_i64().unwrap() >= 0);
    assert_eq!(status["ok"], true, "{status}");
    let prom = bed
        .cmd()
        .args(["-o", "prometheus", "status"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let prom = String::from_utf8_lossy(&prom).to_string();
    let gauge = format!(
        "autosnap_restore_test_last_success_timestamp_seconds{{policy=\"p\",target=\"{vol}\",region=\"{REGION}\"}} "
    );
    assert!(prom.contains(&gauge), "{prom}");
    assert!(prom.contains(&format!(
        "autosnap_restore_test_state{{policy=\"p\",target=\"{vol}\",region=\"{REGION}\",state=\"passed\"}} 1"
    )));
    bed.cmd().args(["status", "--check"]).assert().success();

    // A failed test (as a test-restore of a damaged backup records it) fails the check.
    set_tag(
        &bed,
        &backup,
        RESULT_TAG,
        &format!(
            "failed {}: ext4 superblock damaged",
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
        ),
    );
    let status = status_json(&bed);
    assert_eq!(
        target_status(&status, &vol)["restore_test"]["health"],
        "failed"
    );
    assert_eq!(status["ok"], false);
    let check = bed.cmd().args(["status", "--check"]).assert().code(1);
    let stderr = String::from_utf8_lossy(&check.get_output().stderr).to_string();
    assert!(stderr.contains("restore test failed"), "{stderr}");
    let table = bed.cmd().arg("status").assert().success();
    let text = String::from_utf8_lossy(&table.get_output().stdout).to_string();
    assert!(text.contains("RESTORE TEST"), "{text}");
    assert!(text.contains("failed: ext4 superblock damaged"), "{text}");
    // And the next run tests again, without waiting for `every`.
    let run = bed.json(&["run"]);
    assert_eq!(run["restore_tests"][0]["report"]["passed"], true, "{run}");
}

#[test]
fn an_overdue_restore_test_fails_the_check() {
    let bed = TestBed::start();
    let vol = bed.volume(1, &[("Backup", "daily")]);
    bed.write_config("autosnap.toml", POLICY, 0o644);
    // A backup from 20 days ago, tested 20 days ago, and a fresh one never tested.
    let old = (chrono::Utc::now() - chrono::TimeDelta::days(20))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let mk = |start: &str, extra: &[(&str, &str)]| {
        let mut tags = vec![
            ("autosnap:managed", "true"),
            ("autosnap:policy", "p"),
            ("autosnap:source-volume", vol.as_str()),
            ("autosnap-testbed:start-time", start),
        ];
        tags.extend_from_slice(extra);
        bed.snapshot_with_tags(REGION, &vol, &tags)
    };
    let passed = format!("passed {old}");
    mk(&old, &[(RESULT_TAG, passed.as_str())]);
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    mk(&now, &[]);
    let status = status_json(&bed);
    assert_eq!(
        target_status(&status, &vol)["restore_test"]["health"],
        "overdue",
        "{status}"
    );
    bed.cmd().args(["status", "--check"]).assert().code(1);
}

/// The result tag of each snapshot of `volume`.
fn results_of_volume(bed: &TestBed, volume: &str) -> Vec<Option<String>> {
    let ec2 = bed.ec2(REGION);
    bed.block(async {
        ec2.describe_snapshots()
            .filters(Filter::builder().name("volume-id").values(volume).build())
            .send()
            .await
            .expect("describe snapshots")
            .snapshots()
            .iter()
            .map(|s| {
                s.tags()
                    .iter()
                    .find(|t| t.key() == Some(RESULT_TAG))
                    .and_then(|t| t.value().map(String::from))
            })
            .collect()
    })
}

#[test]
fn the_daemon_tests_the_backup_it_made() {
    let bed = TestBed::start();
    let vol = bed.volume(1, &[("Backup", "daily")]);
    bed.write_config("autosnap.toml", POLICY, 0o644);
    let mut child = bed
        .std_cmd()
        .args(["daemon", "--max-sleep", "1s"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait (bounded) for the first round's backup to carry a result.
    let start = Instant::now();
    while !results_of_volume(&bed, &vol).iter().any(Option::is_some) {
        if start.elapsed() > PATIENCE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the daemon recorded no restore test");
        }
        // Poll pace only: readiness is the tag being there.
        std::thread::sleep(Duration::from_millis(200));
    }
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("): passed"), "{log}");
    let results = results_of_volume(&bed, &vol);
    assert_eq!(results.len(), 1, "one backup: {results:?}");
    assert!(results[0].as_deref().unwrap().starts_with("passed "));
    assert!(test_volumes(&bed).is_empty());
}

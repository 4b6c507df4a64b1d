//! EBS snapshot lock through the real binary on the test bed: no command deletes a locked
//! snapshot or even tries to (the test bed counts refused DeleteSnapshot calls in the tag
//! `autosnap-testbed:delete-refused`), and each says why it left the snapshot alone.

mod support;

use aws_sdk_ec2::types::LockMode;
use chrono::{Duration, Utc};
use serde_json::Value;
use support::{TestBed, REGION};

const REFUSED_TAG: &str = "autosnap-testbed:delete-refused";
const LOCK_CREATED_TAG: &str = "autosnap-testbed:lock-created-on";

fn days_ago(days: i64) -> String {
    (Utc::now() - Duration::days(days))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Locks a snapshot directly through EC2, as another tool or person would.
fn lock(bed: &TestBed, snapshot_id: &str, mode: LockMode, days: i32) {
    let ec2 = bed.ec2(REGION);
    bed.block(async {
        ec2.lock_snapshot()
            .snapshot_id(snapshot_id)
            .lock_mode(mode)
            .lock_duration(days)
            .send()
            .await
            .expect("lock snapshot")
    });
}

/// Moves a lock's creation back, so its state is what it would be that much later.
fn age_lock(bed: &TestBed, snapshot_id: &str, days: i64) {
    let ec2 = bed.ec2(REGION);
    bed.block(async {
        ec2.create_tags()
            .resources(snapshot_id)
            .tags(
                aws_sdk_ec2::types::Tag::builder()
                    .key(LOCK_CREATED_TAG)
                    .value(days_ago(days))
                    .build(),
            )
            .send()
            .await
            .expect("tag")
    });
}

/// How many times something asked EC2 to delete this snapshot and was refused.
fn delete_attempts(bed: &TestBed, snapshot_id: &str) -> usize {
    bed.snapshot(snapshot_id)
        .tags()
        .iter()
        .find(|t| t.key() == Some(REFUSED_TAG))
        .and_then(|t| t.value())
        .map_or(0, |v| v.parse().unwrap())
}

fn managed(bed: &TestBed, volume: &str, extra: &[(&str, &str)]) -> String {
    let mut tags = vec![("autosnap:managed", "true")];
    tags.extend_from_slice(extra);
    bed.snapshot_with_tags(REGION, volume, &tags)
}

#[test]
fn snapshot_delete_leaves_locked_snapshots_and_says_until_when() {
    let bed = TestBed::start();
    let vol = bed.volume(1, &[]);
    let governance = managed(&bed, &vol, &[]);
    let compliance = managed(&bed, &vol, &[]);
    let expired = managed(&bed, &vol, &[]);
    let free = managed(&bed, &vol, &[]);
    lock(&bed, &governance, LockMode::Governance, 30);
    lock(&bed, &compliance, LockMode::Compliance, 7);
    lock(&bed, &expired, LockMode::Governance, 1);
    age_lock(&bed, &expired, 2);

    let out = bed
        .cmd()
        .args([
            "snapshot",
            "delete",
            &governance,
            &compliance,
            &expired,
            &free,
        ])
        .args(["--yes", "-o", "json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Two deleted, two refused: the partial-success exit, like any refusal.
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    let results: Value = serde_json::from_str(&stdout).unwrap();
    let results = results.as_array().cloned().unwrap();
    assert!(stderr.contains("2 not deleted"), "{stderr}");
    let row = |id: &str| {
        results
            .iter()
            .find(|r| r["snapshot_id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} in {stdout}"))
    };
    assert_eq!(row(&governance)["result"], "locked");
    let reason = row(&governance)["reason"].as_str().unwrap().to_string();
    assert!(reason.starts_with("locked (governance) until "), "{reason}");
    assert!(
        reason.contains("snapshot unlock"),
        "says what to do: {reason}"
    );
    assert_eq!(row(&compliance)["result"], "locked");
    assert!(row(&compliance)["reason"]
        .as_str()
        .unwrap()
        .starts_with("locked (compliance) until "));
    assert_eq!(
        row(&expired)["result"],
        "deleted",
        "an expired lock protects nothing"
    );
    assert_eq!(row(&free)["result"], "deleted");

    for id in [&governance, &compliance] {
        assert!(bed.snapshot_exists(REGION, id), "{id} must survive");
        assert_eq!(
            delete_attempts(&bed, id),
            0,
            "{id}: DeleteSnapshot never sent"
        );
    }
    assert!(!bed.snapshot_exists(REGION, &free));
    assert!(!bed.snapshot_exists(REGION, &expired));

    // The table says the same to a person.
    let table = bed
        .cmd()
        .args(["snapshot", "delete", &governance, "--dry-run"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("locked (governance) until"), "{text}");
    assert_eq!(delete_attempts(&bed, &governance), 0);
}

const POLICY: &str = r#"
[[policy]]
name = "p"
resource = "volume"
select = [{ tags = { Backup = "daily" } }]
schedule = "0 3 * * *"
retain = { last = 1 }
"#;

#[test]
fn prune_keeps_locked_backups_reports_them_and_succeeds() {
    let bed = TestBed::start();
    let db = bed.volume(1, &[("Backup", "daily")]);
    bed.write_config("autosnap.toml", POLICY, 0o644);
    let backup = |days: i64| {
        let start = days_ago(days);
        managed(
            &bed,
            &db,
            &[
                ("autosnap:policy", "p"),
                ("autosnap:source-volume", db.as_str()),
                ("autosnap-testbed:start-time", start.as_str()),
            ],
        )
    };
    let locked_old = backup(10);
    let expired_old = backup(9);
    let plain_old = backup(8);
    let _newest = backup(1);
    lock(&bed, &locked_old, LockMode::Governance, 30);
    lock(&bed, &expired_old, LockMode::Governance, 1);
    age_lock(&bed, &expired_old, 3);

    let out = bed
        .cmd()
        .args(["prune", "--yes", "-o", "json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "a lock is not a failure: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let report = &report["report"];
    let deleted: Vec<&str> = report["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["backup_id"].as_str().unwrap())
        .collect();
    assert!(deleted.contains(&plain_old.as_str()), "{report}");
    assert!(deleted.contains(&expired_old.as_str()), "{report}");
    assert!(!deleted.contains(&locked_old.as_str()), "{report}");
    assert_eq!(report["failures"].as_array().unwrap().len(), 0, "{report}");
    let locked = report["locked"].as_array().expect("a locked list");
    assert_eq!(locked.len(), 1, "{report}");
    assert_eq!(locked[0]["backup_id"], locked_old.as_str());
    assert!(locked[0]["reason"]
        .as_str()
        .unwrap()
        .contains("locked (governance) until"));
    assert!(bed.snapshot_exists(REGION, &locked_old));
    assert_eq!(
        delete_attempts(&bed, &locked_old),
        0,
        "DeleteSnapshot never sent"
    );

    // A person reading the text report sees it too, and the next prune still leaves it.
    let text = bed.cmd().args(["prune", "--yes"]).output().unwrap();
    assert!(text.status.success());
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(stdout.contains(&format!("kept {locked_old}")), "{stdout}");
    assert!(stdout.contains("locked (governance) until"), "{stdout}");
    assert_eq!(delete_attempts(&bed, &locked_old), 0);
}

#[test]
fn ami_delete_keeps_a_locked_snapshot_of_the_ami() {
    let bed = TestBed::start();
    let vol = bed.volume(1, &[]);
    let snap = managed(&bed, &vol, &[]);
    // `ami from-snapshot` registers the user's snapshot, which then never goes with the AMI;
    // a snapshot made *for* the AMI does: tag it so.
    let ami = bed.image_using(&snap);
    let ec2 = bed.ec2(REGION);
    bed.block(async {
        ec2.create_tags()
            .resources(&snap)
            .tags(
                aws_sdk_ec2::types::Tag::builder()
                    .key("autosnap:for-image")
                    .value(&ami)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        ec2.create_tags()
            .resources(&ami)
            .tags(
                aws_sdk_ec2::types::Tag::builder()
                    .key("autosnap:managed")
                    .value("true")
                    .build(),
            )
            .send()
            .await
            .unwrap()
    });
    lock(&bed, &snap, LockMode::Governance, 30);

    let out = bed
        .cmd()
        .args(["ami", "delete", &ami, "--yes", "-o", "json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Value = serde_json::from_str(&stdout).unwrap();
    let row = &results[0];
    assert_eq!(row["result"], "deregistered", "{stdout}");
    let kept = row["snapshots_kept"].as_array().unwrap();
    assert_eq!(kept.len(), 1, "{stdout}");
    assert_eq!(kept[0]["snapshot_id"], snap.as_str());
    assert!(kept[0]["reason"]
        .as_str()
        .unwrap()
        .starts_with("locked (governance) until"));
    assert!(bed.snapshot_exists(REGION, &snap));
    assert_eq!(delete_attempts(&bed, &snap), 0);
}

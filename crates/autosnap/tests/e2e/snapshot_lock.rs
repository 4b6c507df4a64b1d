//! EBS snapshot lock through the real binary on the test bed: no command deletes a locked
//! snapshot or even tries to (the test bed counts refused DeleteSnapshot calls in the tag
//! `autosnap-testbed:delete-refused`), and each says why it left the snapshot alone.

use crate::support::{TestBed, REGION};
use aws_sdk_ec2::types::LockMode;
use chrono::{Duration, Utc};
use serde_json::Value;

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

    // The plan (and so the dry run and the question) already knows: kept, and why.
    let dry = bed.json(&["prune", "--dry-run"]);
    let decisions = dry["plan"]["policies"][0]["targets"][0]["groups"][0]["backups"]
        .as_array()
        .unwrap()
        .clone();
    let find = |id: &str| {
        decisions
            .iter()
            .find(|d| d["backup_id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(find(&locked_old)["delete"], false, "{dry}");
    assert!(find(&locked_old)["protected"]
        .as_str()
        .unwrap()
        .starts_with("locked (governance) until "));
    assert_eq!(
        find(&expired_old)["delete"],
        true,
        "an expired lock protects nothing"
    );
    assert_eq!(dry["summary"]["deletions"], 2, "{dry}");
    let (code, text, _) = run(&bed, &["plan"]);
    assert_eq!(code, Some(0));
    let line = text.lines().find(|l| l.contains(&locked_old)).unwrap();
    assert!(
        line.contains("keep") && line.contains("protected: locked (governance) until"),
        "{line}"
    );

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
    assert!(bed.snapshot_exists(REGION, &locked_old));
    assert_eq!(
        delete_attempts(&bed, &locked_old),
        0,
        "DeleteSnapshot never sent"
    );

    // The next prune still leaves it, and says why.
    let (code, stdout, _) = run(&bed, &["prune", "--yes"]);
    assert_eq!(code, Some(0));
    let line = stdout.lines().find(|l| l.contains(&locked_old)).unwrap();
    assert!(
        line.contains("protected: locked (governance) until"),
        "{line}"
    );
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

/// The lock EC2 has for a snapshot, as the test bed reports it.
fn lock_state(bed: &TestBed, snapshot_id: &str) -> Option<String> {
    let ec2 = bed.ec2(REGION);
    bed.block(async {
        ec2.describe_locked_snapshots()
            .snapshot_ids(snapshot_id)
            .send()
            .await
            .expect("describe locks")
            .snapshots()
            .first()
            .and_then(|s| s.lock_state())
            .map(|s| s.as_str().to_string())
    })
}

fn run(bed: &TestBed, args: &[&str]) -> (Option<i32>, String, String) {
    let out = bed.cmd().args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn snapshot_lock_unlock_and_list_show_the_lock() {
    let bed = TestBed::start();
    let vol = bed.volume(1, &[]);
    let a = managed(&bed, &vol, &[]);
    let b = managed(&bed, &vol, &[]);

    // A dry run says what it would do and locks nothing.
    let dry = bed.json(&[
        "snapshot",
        "lock",
        &a,
        "--mode",
        "governance",
        "--for",
        "30d",
        "--dry-run",
    ]);
    assert_eq!(dry[0]["result"], "would_lock", "{dry}");
    assert_eq!(dry[0]["reason"], "governance for 30 days");
    assert_eq!(lock_state(&bed, &a), None);

    let out = bed.json(&[
        "snapshot",
        "lock",
        &a,
        "--mode",
        "governance",
        "--for",
        "30d",
    ]);
    assert_eq!(out[0]["result"], "locked", "{out}");
    assert_eq!(out[0]["lock"]["state"], "governance");
    let until: chrono::DateTime<Utc> = out[0]["lock"]["until"].as_str().unwrap().parse().unwrap();
    let expected = Utc::now() + Duration::days(30);
    assert!(
        (until - expected).num_seconds().abs() < 120,
        "{until} vs {expected}"
    );
    assert_eq!(lock_state(&bed, &a).as_deref(), Some("governance"));

    // The listing: a LOCK column for people, a lock object (null when none) for scripts.
    let list = bed.json(&["snapshot", "list"]);
    let row = |id: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|s| s["snapshot_id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(row(&a)["lock"]["state"], "governance", "{list}");
    assert_eq!(row(&a)["lock"]["until"], out[0]["lock"]["until"]);
    assert!(row(&b)["lock"].is_null(), "{list}");
    let (code, table, _) = run(&bed, &["snapshot", "list"]);
    assert_eq!(code, Some(0));
    assert!(table.contains("LOCK"), "{table}");
    let line = table.lines().find(|l| l.contains(&a)).unwrap();
    assert!(line.contains("governance until "), "{line}");
    let line = table.lines().find(|l| l.contains(&b)).unwrap();
    assert!(!line.contains("governance"), "{line}");

    // Unlock: dry run first, then for real; a second unlock has nothing to do.
    let dry = bed.json(&["snapshot", "unlock", &a, "--dry-run"]);
    assert_eq!(dry[0]["result"], "would_unlock", "{dry}");
    assert_eq!(lock_state(&bed, &a).as_deref(), Some("governance"));
    let out = bed.json(&["snapshot", "unlock", &a]);
    assert_eq!(out[0]["result"], "unlocked", "{out}");
    assert_eq!(lock_state(&bed, &a), None);
    let out = bed.json(&["snapshot", "unlock", &a, &b]);
    assert_eq!(out[0]["result"], "not_locked", "{out}");
    assert_eq!(out[1]["result"], "not_locked", "{out}");

    // --until: a date in UTC.
    let out = bed.json(&[
        "snapshot",
        "lock",
        &b,
        "--mode",
        "governance",
        "--until",
        "2099-01-31",
    ]);
    assert_eq!(out[0]["lock"]["until"], "2099-01-31T00:00:00Z", "{out}");
}

#[test]
fn compliance_needs_the_acknowledgement_and_cannot_be_unlocked_after_cool_off() {
    let bed = TestBed::start();
    let vol = bed.volume(1, &[]);
    let s = managed(&bed, &vol, &[]);

    // Without the acknowledgement: a usage error that names the flag; nothing is locked.
    let (code, _, err) = run(
        &bed,
        &[
            "snapshot",
            "lock",
            &s,
            "--mode",
            "compliance",
            "--for",
            "7d",
        ],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--i-understand-compliance-is-irreversible"),
        "{err}"
    );
    assert!(err.contains("irreversible"), "{err}");
    assert_eq!(lock_state(&bed, &s), None);
    // Other invalid locks are refused before any call too.
    for bad in [
        vec!["--mode", "governance", "--for", "7d", "--cool-off", "24h"],
        vec!["--mode", "governance", "--for", "36h"],
        vec!["--mode", "governance", "--until", "2001-01-01"],
        vec!["--mode", "governance"],
    ] {
        let mut args = vec!["snapshot", "lock", s.as_str()];
        args.extend(bad.iter().copied());
        let (code, _, err) = run(&bed, &args);
        assert_eq!(code, Some(2), "{bad:?}: {err}");
        assert_eq!(lock_state(&bed, &s), None, "{bad:?}");
    }

    let ack = "--i-understand-compliance-is-irreversible";
    let out = bed.json(&[
        "snapshot",
        "lock",
        &s,
        "--mode",
        "compliance",
        "--for",
        "7d",
        "--cool-off",
        "24h",
        ack,
    ]);
    assert_eq!(out[0]["lock"]["state"], "compliance-cooloff", "{out}");
    assert!(out[0]["lock"]["cool_off_until"].is_string(), "{out}");
    assert!(
        out[0]["reason"].as_str().unwrap().contains("irreversible"),
        "{out}"
    );
    // Inside the cooling-off period it can still be taken back.
    assert_eq!(
        bed.json(&["snapshot", "unlock", &s])[0]["result"],
        "unlocked"
    );

    bed.json(&[
        "snapshot",
        "lock",
        &s,
        "--mode",
        "compliance",
        "--for",
        "7d",
        "--cool-off",
        "1h",
        ack,
    ]);
    age_lock(&bed, &s, 1); // a day later: the cooling-off is over
    let (code, stdout, err) = run(&bed, &["snapshot", "unlock", &s, "-o", "json"]);
    assert_eq!(code, Some(1), "{stdout}\n{err}");
    let out: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(out[0]["result"], "refused", "{out}");
    assert!(
        out[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("locked (compliance) until"),
        "{out}"
    );
    assert_eq!(lock_state(&bed, &s).as_deref(), Some("compliance"));
}

fn lock_state_in(bed: &TestBed, region: &str, snapshot_id: &str) -> Option<String> {
    let ec2 = bed.ec2(region);
    bed.block(async {
        ec2.describe_locked_snapshots()
            .snapshot_ids(snapshot_id)
            .send()
            .await
            .expect("describe locks")
            .snapshots()
            .first()
            .and_then(|s| s.lock_state())
            .map(|s| s.as_str().to_string())
    })
}

#[test]
fn policy_lock_is_planned_then_set_after_create_and_after_copy() {
    let bed = TestBed::start();
    let _db = bed.volume(1, &[("Backup", "daily")]);
    bed.write_config(
        "autosnap.toml",
        r#"
[[policy]]
name = "locked"
resource = "volume"
select = [{ tags = { Backup = "daily" } }]
schedule = "0 3 * * *"
retain = { last = 3 }
lock = { mode = "governance", for = "30d" }
copy = [{ region = "us-west-2", lock = { mode = "compliance", for = "7d", cool_off = "24h", acknowledge_irreversible = true } }]
"#,
        0o644,
    );
    let (code, plan, err) = run(&bed, &["plan"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(plan.contains("then lock: governance for 30 days"), "{plan}");
    assert!(
        plan.contains(
            "then lock: compliance for 7 days, cooling-off 24h (irreversible after that)"
        ),
        "{plan}"
    );
    let json = bed.json(&["plan"]);
    let t = &json["policies"][0]["targets"][0];
    assert_eq!(t["create"]["lock"]["mode"], "governance", "{t}");
    assert_eq!(t["create"]["lock"]["length"]["days"], 30, "{t}");

    let out = bed.json(&["run"]);
    let report = &out["report"];
    assert_eq!(report["failures"].as_array().unwrap().len(), 0, "{report}");
    let created = report["created"][0]["snapshot_ids"][0].as_str().unwrap();
    let copied = report["copied"][0]["snapshot_id"].as_str().unwrap();
    assert_eq!(
        lock_state_in(&bed, REGION, created).as_deref(),
        Some("governance")
    );
    assert_eq!(
        lock_state_in(&bed, "us-west-2", copied).as_deref(),
        Some("compliance-cooloff")
    );
}

#[test]
fn config_check_refuses_compliance_without_the_acknowledgement() {
    let bed = TestBed::start();
    let policy = |lock: &str| {
        format!(
            "[[policy]]\nname = \"p\"\nresource = \"volume\"\nselect = [{{ tags = {{ A = \"b\" }} }}]\n\
             schedule = \"1d\"\nretain = {{ last = 1 }}\nlock = {lock}\n"
        )
    };
    for (lock, needle) in [
        (
            r#"{ mode = "compliance", for = "30d" }"#,
            "acknowledge_irreversible = true",
        ),
        (
            r#"{ mode = "governance", for = "30d", cool_off = "1h" }"#,
            "compliance mode",
        ),
        (
            r#"{ mode = "governance", for = "1mo" }"#,
            "whole number of days",
        ),
    ] {
        bed.write_config("autosnap.toml", &policy(lock), 0o644);
        let (code, stdout, stderr) = run(&bed, &["config", "check"]);
        assert_ne!(code, Some(0), "{lock}: {stdout}{stderr}");
        let said = format!("{stdout}{stderr}");
        assert!(said.contains("lock"), "{lock}: {said}");
        assert!(said.contains(needle), "{lock}: {said}");
        let (code, _, stderr) = run(&bed, &["plan"]);
        assert_eq!(code, Some(2), "{lock}: {stderr}");
    }
    bed.write_config(
        "autosnap.toml",
        &policy(r#"{ mode = "compliance", for = "30d", acknowledge_irreversible = true }"#),
        0o644,
    );
    let (code, stdout, stderr) = run(&bed, &["plan"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
}

#[test]
fn status_check_flags_a_newest_backup_the_policy_wants_locked() {
    let bed = TestBed::start();
    let _db = bed.volume(1, &[("Backup", "daily")]);
    bed.write_config(
        "autosnap.toml",
        r#"
[[policy]]
name = "locked"
resource = "volume"
select = [{ tags = { Backup = "daily" } }]
schedule = "1d"
retain = { last = 3 }
lock = { mode = "governance", for = "30d" }
"#,
        0o644,
    );
    let run_out = bed.json(&["run"]);
    let created = run_out["report"]["created"][0]["snapshot_ids"][0]
        .as_str()
        .unwrap()
        .to_string();
    let status = bed.json(&["status", "--check"]);
    assert_eq!(status["ok"], true, "{status}");
    assert_eq!(status["unlocked"].as_array().unwrap().len(), 0, "{status}");

    // Someone removes the lock: status --check fails and names the backup.
    bed.json(&["snapshot", "unlock", &created]);
    let (code, stdout, stderr) = run(&bed, &["status", "--check", "-o", "json"]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    let status: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(status["ok"], false);
    assert_eq!(
        status["unlocked"][0]["backup_id"],
        created.as_str(),
        "{status}"
    );
    assert!(stderr.contains("wants locked"), "{stderr}");
    let (_, table, _) = run(&bed, &["status"]);
    assert!(
        table.contains("NOT LOCKED") && table.contains(&created),
        "{table}"
    );
}

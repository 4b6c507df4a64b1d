//! Copies into a separate backup account through the real binary on the test bed: the source
//! account shares each backup with the backup account, the backup account copies it with its
//! own KMS key (its role assumed from the base credentials) and the share is removed once the
//! copy is complete. The copies' retention runs in the backup account; nothing in the source
//! account deletes them. The test bed keeps accounts apart (by the assumed role's account) and
//! lets an account copy another's snapshot only when it is shared with it
//! (testbed/cross_account_copy.py).

use crate::support::{TestBed, ACCOUNT, REGION};
use aws_sdk_ec2::types::{ResourceType, Snapshot};

/// The backup account and the Region its copies go to.
const BACKUP: &str = "222222222222";
const TO: &str = "us-west-2";
const KEY: &str = "arn:aws:kms:us-west-2:222222222222:key/0a1b2c3d-backup";

fn policy(source_keep: u32, copy_keep: u32) -> String {
    format!(
        r#"
[[policy]]
name = "daily"
resource = "volume"
select = [{{ tags = {{ Backup = "daily" }} }}]
schedule = "1d"
retain = {{ last = {source_keep} }}
copy = [{{ region = "{TO}", account = "{BACKUP}", kms_key = "{KEY}", retain = {{ last = {copy_keep} }} }}]

[[backup_account]]
id = "{BACKUP}"
role_arn = "arn:aws:iam::{BACKUP}:role/autosnap-backup"
"#
    )
}

/// IAM CreateRole in `account` (the test bed's `x-moto-account-id` header), trusting the base
/// credentials' account. A raw query-API request: the test bed reads the service from the
/// signature's scope and checks no signature.
fn create_role(bed: &TestBed, account: &str, name: &str) {
    bed.create_role_trusting(account, name, ACCOUNT);
}

/// The snapshots `account` owns in `region` that carry `autosnap:policy=daily`.
fn snapshots_in(bed: &TestBed, account: &str, region: &str) -> Vec<Snapshot> {
    bed.daily_snapshots_in(account, region)
}

fn tag<'a>(s: &'a Snapshot, key: &str) -> Option<&'a str> {
    s.tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

/// The accounts a snapshot of the base account is shared with.
fn shared_with(bed: &TestBed, snapshot_id: &str) -> Vec<String> {
    let ec2 = bed.ec2(REGION);
    bed.block(async {
        ec2.describe_snapshot_attribute()
            .snapshot_id(snapshot_id)
            .attribute(aws_sdk_ec2::types::SnapshotAttributeName::CreateVolumePermission)
            .send()
            .await
            .expect("describe snapshot attribute")
            .create_volume_permissions()
            .iter()
            .filter_map(|p| p.user_id().map(str::to_owned))
            .collect()
    })
}

/// A copy autosnap would have made in the backup account, `days` old, of `source_snapshot`
/// (of `volume` in the base account).
fn seeded_copy(bed: &TestBed, volume: &str, source_snapshot: &str, days: i64) -> String {
    let ec2 = bed.ec2(TO);
    let start = (chrono::Utc::now() - chrono::Duration::days(days))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let (volume, source_snapshot) = (volume.to_string(), source_snapshot.to_string());
    bed.block(async move {
        let vol = ec2
            .create_volume()
            .size(1)
            .availability_zone("us-west-2a")
            .customize()
            .mutate_request(|r| {
                r.headers_mut().insert("x-moto-account-id", BACKUP);
            })
            .send()
            .await
            .expect("volume in the backup account")
            .volume_id
            .expect("id");
        ec2.create_snapshot()
            .volume_id(vol)
            .tag_specifications(crate::support::tag_spec(
                ResourceType::Snapshot,
                &[
                    ("autosnap:managed", "true"),
                    ("autosnap:policy", "daily"),
                    ("autosnap:source-volume", &volume),
                    ("autosnap:source-snapshot", &source_snapshot),
                    ("autosnap:source-region", REGION),
                    ("autosnap:source-account", ACCOUNT),
                    ("autosnap-testbed:start-time", &start),
                ],
            ))
            .customize()
            .mutate_request(|r| {
                r.headers_mut().insert("x-moto-account-id", BACKUP);
            })
            .send()
            .await
            .expect("copy in the backup account")
            .snapshot_id
            .expect("id")
    })
}

fn ids(snaps: &[Snapshot]) -> Vec<String> {
    let mut v: Vec<String> = snaps
        .iter()
        .filter_map(|s| s.snapshot_id().map(str::to_owned))
        .collect();
    v.sort();
    v
}

fn backup_bed(source_keep: u32, copy_keep: u32) -> TestBed {
    let bed = TestBed::start();
    create_role(&bed, BACKUP, "autosnap-backup");
    bed.write_config("autosnap.toml", &policy(source_keep, copy_keep), 0o644);
    bed
}

#[test]
fn a_run_copies_into_the_backup_account_with_its_key_and_removes_the_share() {
    let bed = backup_bed(3, 3);
    let vol = bed.volume(1, &[("Backup", "daily")]);

    let plan = bed.json(&["plan"]);
    let target = &plan["policies"][0]["targets"][0];
    let there = &target["account_copies"][0];
    assert_eq!(there["account"], BACKUP, "{target}");
    assert_eq!(there["region"], TO);
    assert_eq!(there["copy"]["source"]["kind"], "new", "{there}");
    let table = bed.cmd().arg("plan").output().unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains(&format!(
            "+ copy the new backup → {BACKUP} {TO} with key {KEY}"
        )),
        "{table}"
    );
    assert!(
        table.contains("in backup accounts: 1 to copy, 0 to delete"),
        "{table}"
    );

    let run = bed.json(&["run"]);
    let copied = run["report"]["backup_accounts"]["copied"]
        .as_array()
        .unwrap_or_else(|| panic!("no copies into the backup account: {run}"));
    assert_eq!(copied.len(), 1, "{run}");
    assert_eq!(copied[0]["unshared"], true);

    let sources = snapshots_in(&bed, ACCOUNT, REGION);
    assert_eq!(sources.len(), 1);
    let source = sources[0].snapshot_id().unwrap();
    let copies = snapshots_in(&bed, BACKUP, TO);
    assert_eq!(copies.len(), 1, "one copy, owned by the backup account");
    let copy = &copies[0];
    assert_eq!(copy.snapshot_id(), copied[0]["snapshot_id"].as_str());
    assert_eq!(copy.kms_key_id(), Some(KEY), "the backup account's key");
    assert_eq!(copy.encrypted(), Some(true));
    assert_eq!(tag(copy, "autosnap:managed"), Some("true"));
    assert_eq!(tag(copy, "autosnap:source-account"), Some(ACCOUNT));
    assert_eq!(tag(copy, "autosnap:source-snapshot"), Some(source));
    assert_eq!(tag(copy, "autosnap:source-volume"), Some(vol.as_str()));
    assert_eq!(tag(copy, "autosnap:shared-with"), None);
    // The share existed only while the copy was made.
    assert!(shared_with(&bed, source).is_empty(), "still shared");
    assert_eq!(tag(&sources[0], "autosnap:shared-with"), None);
    // Nothing of it in the source account's copy Region.
    assert!(snapshots_in(&bed, ACCOUNT, TO).is_empty());

    // status shows the copy in the backup account.
    let status = bed.json(&["status"]);
    let there = &status["policies"][0]["targets"][0]["account_copies"][0];
    assert_eq!(there["account"], BACKUP, "{status}");
    assert_eq!(there["region"], TO);
    assert_eq!(there["copies"], 1);
    assert!(there["newest_copy"].is_string(), "{there}");
    let table = bed.cmd().arg("status").output().unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains(&format!("→ {BACKUP} {TO}")), "{table}");
}

#[test]
fn a_second_run_finds_the_copy_and_makes_no_second_one() {
    let bed = backup_bed(3, 3);
    bed.volume(1, &[("Backup", "daily")]);
    bed.json(&["run"]);
    assert_eq!(snapshots_in(&bed, BACKUP, TO).len(), 1);

    let plan = bed.json(&["plan"]);
    let there = &plan["policies"][0]["targets"][0]["account_copies"][0];
    assert!(there["copy"].is_null(), "{there}");
    assert_eq!(there["backups"].as_array().unwrap().len(), 1, "{there}");
    let run = bed.json(&["run"]);
    assert!(run["report"]["backup_accounts"].is_null(), "{run}");
    assert_eq!(snapshots_in(&bed, BACKUP, TO).len(), 1, "no second copy");
}

#[test]
fn an_existing_backup_without_a_copy_there_is_copied() {
    // A backup made before the copy rule existed: its newest is copied, nothing older.
    let bed = backup_bed(3, 3);
    let vol = bed.volume(1, &[("Backup", "daily")]);
    bed.policy_backup("daily", &vol, 2, &[]);
    let newest = bed.policy_backup("daily", &vol, 0, &[]);
    let run = bed.json(&["run"]);
    let copied = &run["report"]["backup_accounts"]["copied"];
    assert_eq!(copied.as_array().map(Vec::len), Some(1), "{run}");
    assert_eq!(copied[0]["source_snapshot_id"], newest.as_str());
    assert!(shared_with(&bed, &newest).is_empty());
}

#[test]
fn prune_in_the_backup_account_deletes_an_expired_copy_there_and_nothing_in_the_source() {
    let bed = backup_bed(3, 1);
    let vol = bed.volume(1, &[("Backup", "daily")]);
    let older_source = bed.policy_backup("daily", &vol, 3, &[]);
    let newer_source = bed.policy_backup("daily", &vol, 2, &[]);
    let expired = seeded_copy(&bed, &vol, &older_source, 3);
    let kept = seeded_copy(&bed, &vol, &newer_source, 2);

    let plan = bed.json(&["prune", "--dry-run"]);
    let there = &plan["plan"]["policies"][0]["targets"][0]["account_copies"][0];
    let doomed: Vec<&str> = there["backups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["delete"] == true)
        .map(|b| b["backup_id"].as_str().unwrap())
        .collect();
    assert_eq!(doomed, [expired.as_str()], "{there}");

    let out = bed.json(&["prune", "--yes"]);
    let deleted = &out["report"]["backup_accounts"]["deleted"];
    assert_eq!(deleted.as_array().map(Vec::len), Some(1), "{out}");
    assert_eq!(ids(&snapshots_in(&bed, BACKUP, TO)), [kept]);
    let mut source = vec![older_source, newer_source];
    source.sort();
    assert_eq!(ids(&snapshots_in(&bed, ACCOUNT, REGION)), source);
    assert!(out["report"]["deleted"].as_array().unwrap().is_empty());
}

#[test]
fn the_sources_prune_never_deletes_the_backup_accounts_copies() {
    // The source keeps 1, the backup account 3: the source's old backups go, their copies stay.
    let bed = backup_bed(1, 3);
    let vol = bed.volume(1, &[("Backup", "daily")]);
    let mut copies = Vec::new();
    for days in [3, 2, 1] {
        let s = bed.policy_backup("daily", &vol, days, &[]);
        copies.push(seeded_copy(&bed, &vol, &s, days));
    }
    copies.sort();
    let out = bed.json(&["prune", "--yes"]);
    assert_eq!(
        out["report"]["deleted"].as_array().unwrap().len(),
        2,
        "{out}"
    );
    assert_eq!(snapshots_in(&bed, ACCOUNT, REGION).len(), 1);
    assert!(out["report"]["backup_accounts"].is_null(), "{out}");
    assert_eq!(ids(&snapshots_in(&bed, BACKUP, TO)), copies);
}

#[test]
fn config_check_refuses_a_copy_account_without_a_role_and_the_aws_managed_key() {
    let bed = TestBed::start();
    let no_entry = policy(3, 3).replace("[[backup_account]]", "[[backup_account_not_here]]");
    let no_entry = no_entry
        .split("[[backup_account_not_here]]")
        .next()
        .unwrap()
        .to_string();
    bed.write_config("autosnap.toml", &no_entry, 0o644);
    let out = bed.cmd().args(["config", "check"]).output().unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("copy[0].account is 222222222222, which has no [[backup_account]] entry"),
        "{text}"
    );

    let managed = policy(3, 3).replace(KEY, "arn:aws:kms:us-west-2:222222222222:alias/aws/ebs");
    bed.write_config("autosnap.toml", &managed, 0o644);
    let out = bed.cmd().args(["config", "check"]).output().unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("AWS managed key aws/ebs"), "{text}");
}

/// A volume tagged `Backup=daily` in `account`.
fn volume_in(bed: &TestBed, account: &str) -> String {
    let ec2 = bed.ec2(REGION);
    let account = account.to_string();
    bed.block(async move {
        ec2.create_volume()
            .size(1)
            .availability_zone("us-east-1a")
            .tag_specifications(crate::support::tag_spec(
                ResourceType::Volume,
                &[("Backup", "daily")],
            ))
            .customize()
            .mutate_request(move |r| {
                r.headers_mut().insert("x-moto-account-id", account.clone());
            })
            .send()
            .await
            .expect("create volume")
            .volume_id
            .expect("id")
    })
}

#[test]
fn two_source_accounts_copy_into_a_third_in_one_plan_and_run() {
    const A: &str = "111111111111";
    const C: &str = "333333333333";
    let bed = TestBed::start();
    create_role(&bed, BACKUP, "autosnap-backup");
    let mut config = policy(3, 3);
    let mut vols = Vec::new();
    for id in [A, C] {
        create_role(&bed, id, "autosnap");
        vols.push((id, volume_in(&bed, id)));
        config.push_str(&format!(
            "\n[[account]]\nid = \"{id}\"\nrole_arn = \"arn:aws:iam::{id}:role/autosnap\"\n"
        ));
    }
    bed.write_config("autosnap.toml", &config, 0o644);

    let plan = bed.json(&["plan"]);
    assert_eq!(plan["failed_accounts"], 0, "{plan}");
    for (id, _) in &vols {
        let a = plan["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["account_id"] == *id)
            .unwrap_or_else(|| panic!("no account {id}: {plan}"));
        let there = &a["plan"]["policies"][0]["targets"][0]["account_copies"][0];
        assert_eq!(there["account"], BACKUP, "{a}");
        assert_eq!(there["copy"]["source"]["kind"], "new", "{a}");
        assert_eq!(a["summary"]["account_copies"], 1, "{a}");
    }
    let table = bed.cmd().arg("plan").output().unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert_eq!(
        table
            .matches(&format!("+ copy the new backup → {BACKUP} {TO}"))
            .count(),
        2,
        "{table}"
    );

    let run = bed.json(&["run"]);
    assert_eq!(run["failed_accounts"], 0, "{run}");
    for a in run["accounts"].as_array().unwrap() {
        let copied = &a["report"]["backup_accounts"]["copied"];
        assert_eq!(copied.as_array().map(Vec::len), Some(1), "{a}");
        assert_eq!(copied[0]["unshared"], true, "{a}");
    }
    let copies = snapshots_in(&bed, BACKUP, TO);
    let mut from: Vec<(String, String)> = copies
        .iter()
        .map(|c| {
            (
                tag(c, "autosnap:source-account").unwrap().to_owned(),
                tag(c, "autosnap:source-volume").unwrap().to_owned(),
            )
        })
        .collect();
    from.sort();
    let mut want: Vec<(String, String)> = vols
        .iter()
        .map(|(a, v)| (a.to_string(), v.clone()))
        .collect();
    want.sort();
    assert_eq!(from, want, "one copy of each source account's backup");
    for c in &copies {
        assert_eq!(c.kms_key_id(), Some(KEY));
    }
    // Each source account's plan sees only its own copies there: nothing more to copy.
    let again = bed.json(&["plan"]);
    for a in again["accounts"].as_array().unwrap() {
        let there = &a["plan"]["policies"][0]["targets"][0]["account_copies"][0];
        assert!(there["copy"].is_null(), "{a}");
        assert_eq!(there["backups"].as_array().unwrap().len(), 1, "{a}");
    }
}

/// A volume tagged `Backup=daily` in the base account, encrypted with `key` (None: the test
/// bed's AWS managed key `aws/ebs`, as EC2 does without a key).
fn encrypted_volume(bed: &TestBed, key: Option<&str>) -> String {
    let ec2 = bed.ec2(REGION);
    bed.block(async {
        ec2.create_volume()
            .size(1)
            .availability_zone("us-east-1a")
            .encrypted(true)
            .set_kms_key_id(key.map(str::to_owned))
            .tag_specifications(crate::support::tag_spec(
                ResourceType::Volume,
                &[("Backup", "daily")],
            ))
            .send()
            .await
            .expect("create volume")
            .volume_id
            .expect("id")
    })
}

#[test]
fn config_check_refuses_a_volume_encrypted_with_the_aws_managed_key() {
    let bed = backup_bed(3, 3);
    let own_key = bed.kms_key(None);
    let fine = encrypted_volume(&bed, Some(&own_key));
    let out = bed.cmd().args(["config", "check"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("shareable backups"), "{text}");

    let managed = encrypted_volume(&bed, None);
    let out = bed
        .cmd()
        .args(["config", "check", "-o", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let check = doc
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "shareable backups")
        .unwrap_or_else(|| panic!("{doc}"));
    assert_eq!(check["ok"], false);
    let detail = check["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!(
            "volume {managed} in {REGION} (policy daily) is encrypted with the AWS managed key aws/ebs"
        )) && detail.contains("customer managed key whose key policy lets account 222222222222"),
        "{detail}"
    );
    assert!(!detail.contains(&fine), "{detail}");
}

#[test]
fn a_backup_encrypted_with_the_aws_managed_key_is_neither_shared_nor_copied() {
    let bed = backup_bed(3, 3);
    encrypted_volume(&bed, None);
    let out = bed.cmd().args(["run", "-o", "json"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "the backup is made, its copy is not"
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let failures = doc["report"]["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{doc}");
    assert_eq!(failures[0]["action"], "copy");
    assert!(
        failures[0]["error"]
            .as_str()
            .unwrap()
            .contains("encrypted with the AWS managed key aws/ebs"),
        "{doc}"
    );
    let sources = snapshots_in(&bed, ACCOUNT, REGION);
    assert_eq!(sources.len(), 1);
    assert!(shared_with(&bed, sources[0].snapshot_id().unwrap()).is_empty());
    assert!(snapshots_in(&bed, BACKUP, TO).is_empty());
}

#[test]
fn a_later_run_removes_the_share_of_a_copy_that_completed_after_its_run() {
    // A run that stopped waiting left its source shared (and tagged so); the copy has completed
    // since in the backup account.
    let bed = backup_bed(3, 3);
    let vol = bed.volume(1, &[("Backup", "daily")]);
    let source = bed.policy_backup("daily", &vol, 0, &[("autosnap:shared-with", BACKUP)]);
    let ec2 = bed.ec2(REGION);
    bed.block(async {
        ec2.modify_snapshot_attribute()
            .snapshot_id(&source)
            .attribute(aws_sdk_ec2::types::SnapshotAttributeName::CreateVolumePermission)
            .operation_type(aws_sdk_ec2::types::OperationType::Add)
            .user_ids(BACKUP)
            .send()
            .await
            .expect("share")
    });
    assert_eq!(shared_with(&bed, &source), [BACKUP]);
    seeded_copy(&bed, &vol, &source, 0);

    let plan = bed.json(&["plan"]);
    let there = &plan["policies"][0]["targets"][0]["account_copies"][0];
    assert!(there["copy"].is_null(), "{there}");
    assert_eq!(there["unshare"][0], source.as_str(), "{there}");

    let run = bed.json(&["run"]);
    assert_eq!(
        run["report"]["backup_accounts"]["unshared"][0],
        source.as_str(),
        "{run}"
    );
    assert!(shared_with(&bed, &source).is_empty());
    let sources = snapshots_in(&bed, ACCOUNT, REGION);
    assert_eq!(tag(&sources[0], "autosnap:shared-with"), None);
    // Nothing left to do.
    let again = bed.json(&["plan"]);
    let there = &again["policies"][0]["targets"][0]["account_copies"][0];
    assert!(there["unshare"].is_null(), "{there}");
}

// ---- --time-limit ----------------------------------------------------------------------------

/// `(action, target_id, region, account)` of each step a run left, sorted.
fn left(doc: &serde_json::Value) -> Vec<(String, String, String, Option<String>)> {
    let mut l: Vec<_> = doc["report"]["left"]
        .as_array()
        .unwrap_or_else(|| panic!("no report.left in {doc}"))
        .iter()
        .map(|l| {
            (
                l["action"].as_str().unwrap().to_string(),
                l["target_id"].as_str().unwrap().to_string(),
                l["region"].as_str().unwrap().to_string(),
                l["account"].as_str().map(str::to_owned),
            )
        })
        .collect();
    l.sort();
    l
}

/// `args` with `-o json`: its exit code and report.
fn run_json(bed: &TestBed, args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let out = bed.cmd().args(args).args(["-o", "json"]).output().unwrap();
    let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?} printed no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), doc)
}

#[test]
fn a_limit_of_zero_shares_and_copies_nothing_and_leaves_the_account_copy() {
    // An existing backup with no copy there: no create is due, only the copy into the account.
    let bed = backup_bed(3, 3);
    let vol = bed.volume(1, &[("Backup", "daily")]);
    let source = bed.policy_backup("daily", &vol, 0, &[]);

    let (code, run) = run_json(&bed, &["run", "--time-limit", "0s"]);
    assert_eq!(
        code,
        Some(0),
        "stopped by the limit is not a failure: {run}"
    );
    assert!(run["report"]["backup_accounts"].is_null(), "{run}");
    assert_eq!(
        left(&run),
        vec![(
            "account_copy".into(),
            vol.clone(),
            TO.into(),
            Some(BACKUP.into())
        )]
    );
    assert_eq!(run["report"]["left"][0]["backup_id"], source.as_str());
    // Nothing started in either account: no share, no tag, no copy.
    assert!(
        shared_with(&bed, &source).is_empty(),
        "shared after the limit"
    );
    let sources = snapshots_in(&bed, ACCOUNT, REGION);
    assert_eq!(tag(&sources[0], "autosnap:shared-with"), None);
    assert!(
        snapshots_in(&bed, BACKUP, TO).is_empty(),
        "copied after the limit"
    );
    // The text report names the account.
    let out = bed
        .cmd()
        .args(["run", "--time-limit", "0s"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "not started: policy daily account copy {vol} ({source}) in {TO} (account {BACKUP})"
        )),
        "{text}"
    );

    // Without the limit the next run copies it and removes the share.
    let (code, run) = run_json(&bed, &["run"]);
    assert_eq!(code, Some(0), "{run}");
    let copied = &run["report"]["backup_accounts"]["copied"];
    assert_eq!(copied.as_array().map(Vec::len), Some(1), "{run}");
    assert_eq!(copied[0]["source_snapshot_id"], source.as_str());
    assert_eq!(copied[0]["unshared"], true);
    assert!(run["report"].get("left").is_none(), "{run}");
    assert!(shared_with(&bed, &source).is_empty());
    assert_eq!(snapshots_in(&bed, BACKUP, TO).len(), 1);
}

#[test]
fn a_limit_of_zero_leaves_the_copy_of_the_backup_the_create_would_make() {
    let bed = backup_bed(3, 3);
    let vol = bed.volume(1, &[("Backup", "daily")]);
    let (code, run) = run_json(&bed, &["run", "--time-limit", "0s"]);
    assert_eq!(code, Some(0), "{run}");
    assert_eq!(
        left(&run),
        vec![
            (
                "account_copy".into(),
                vol.clone(),
                TO.into(),
                Some(BACKUP.into())
            ),
            ("create".into(), vol.clone(), REGION.into(), None),
        ]
    );
    assert!(snapshots_in(&bed, ACCOUNT, REGION).is_empty());
    assert!(snapshots_in(&bed, BACKUP, TO).is_empty());
}

#[test]
fn prune_with_a_limit_of_zero_deletes_nothing_in_the_backup_account() {
    let bed = backup_bed(3, 1);
    let vol = bed.volume(1, &[("Backup", "daily")]);
    let older = bed.policy_backup("daily", &vol, 3, &[]);
    let newer = bed.policy_backup("daily", &vol, 2, &[]);
    let expired = seeded_copy(&bed, &vol, &older, 3);
    let kept = seeded_copy(&bed, &vol, &newer, 2);

    let (code, out) = run_json(&bed, &["prune", "--yes", "--time-limit", "0s"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out["report"]["backup_accounts"].is_null(), "{out}");
    assert_eq!(
        left(&out),
        vec![(
            "account_delete".into(),
            vol.clone(),
            TO.into(),
            Some(BACKUP.into())
        )]
    );
    assert_eq!(out["report"]["left"][0]["backup_id"], expired.as_str());
    let mut both = vec![expired.clone(), kept.clone()];
    both.sort();
    assert_eq!(
        ids(&snapshots_in(&bed, BACKUP, TO)),
        both,
        "deleted after the limit"
    );

    let (code, out) = run_json(&bed, &["prune", "--yes"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(ids(&snapshots_in(&bed, BACKUP, TO)), [kept]);
}

/// The test bed holds the new backup `pending` (the policy's tags put its
/// `autosnap-testbed:state` on it), so the wait before its copy into the backup account can
/// only end at the limit: the copy is left, nothing is shared. The limit (20 s) only has to be
/// longer than the run takes to reach its create. Once the backup completes, the next run copies
/// it and removes the share.
#[test]
fn a_run_stopped_waiting_for_its_new_backup_leaves_the_account_copy_to_the_next_run() {
    let bed = TestBed::start();
    create_role(&bed, BACKUP, "autosnap-backup");
    let config = policy(3, 3).replace(
        "schedule = \"1d\"",
        "schedule = \"1d\"\ntags = { \"autosnap-testbed:state\" = \"pending\" }",
    );
    bed.write_config("autosnap.toml", &config, 0o644);
    let vol = bed.volume(1, &[("Backup", "daily")]);

    // A run that ignored its limit would fail its wait (2 min) instead of leaving the copy.
    let (code, first) = run_json(
        &bed,
        &["run", "--time-limit", "20s", "--wait-timeout", "2min"],
    );
    assert_eq!(code, Some(0), "{first}");
    let created = first["report"]["created"].as_array().unwrap();
    assert_eq!(created.len(), 1, "{first}");
    let backup = created[0]["snapshot_ids"][0].as_str().unwrap().to_string();
    assert_eq!(
        left(&first),
        vec![(
            "account_copy".into(),
            vol.clone(),
            TO.into(),
            Some(BACKUP.into())
        )]
    );
    assert_eq!(first["report"]["left"][0]["backup_id"], backup.as_str());
    assert!(
        first["report"]["failures"].as_array().unwrap().is_empty(),
        "{first}"
    );
    assert!(shared_with(&bed, &backup).is_empty());

    let ec2 = bed.ec2(REGION);
    bed.block(async {
        ec2.create_tags()
            .resources(&backup)
            .tags(
                aws_sdk_ec2::types::Tag::builder()
                    .key("autosnap-testbed:state")
                    .value("completed")
                    .build(),
            )
            .send()
            .await
            .expect("complete the backup")
    });
    let (code, second) = run_json(&bed, &["run"]);
    assert_eq!(code, Some(0), "{second}");
    assert_eq!(second["report"]["created"].as_array().unwrap().len(), 0);
    let copied = &second["report"]["backup_accounts"]["copied"];
    assert_eq!(copied[0]["source_snapshot_id"], backup.as_str(), "{second}");
    assert_eq!(copied[0]["unshared"], true);
    assert!(shared_with(&bed, &backup).is_empty());
}

/// `n` volumes tagged `Backup=daily`, each with a backup of today that has no copy in the backup
/// account yet; the test bed holds every copy made of them `pending`
/// (`autosnap-testbed:copy-state`, testbed/cross_account_copy.py). Returns the backups, sorted.
fn backups_with_held_copies(bed: &TestBed, n: usize) -> Vec<String> {
    let mut sources: Vec<String> = (0..n)
        .map(|_| {
            let vol = bed.volume(1, &[("Backup", "daily")]);
            bed.policy_backup(
                "daily",
                &vol,
                0,
                &[("autosnap-testbed:copy-state", "pending")],
            )
        })
        .collect();
    sources.sort();
    sources
}

/// Tags `autosnap-testbed:state=completed` on the copies in the backup account: they complete.
fn complete_copies(bed: &TestBed) {
    let copies = ids(&snapshots_in(bed, BACKUP, TO));
    let ec2 = bed.ec2(TO);
    bed.block(async move {
        ec2.create_tags()
            .set_resources(Some(copies))
            .tags(
                aws_sdk_ec2::types::Tag::builder()
                    .key("autosnap-testbed:state")
                    .value("completed")
                    .build(),
            )
            .customize()
            .mutate_request(|r| {
                r.headers_mut().insert("x-moto-account-id", BACKUP);
            })
            .send()
            .await
            .expect("complete the copies")
    });
}

/// The copy stays pending, so the run's wait for it can only end at the limit: the copy counts
/// as made, the share stays (its unshare is left), and once the copy completes the next run
/// removes the share. The limit (20 s) only has to be longer than the run takes to start the
/// copy.
#[test]
fn a_run_stopped_waiting_for_its_copy_keeps_the_share_for_the_next_run() {
    let bed = backup_bed(3, 3);
    let source = backups_with_held_copies(&bed, 1).remove(0);

    // A run that ignored its limit would fail its wait (2 min) instead.
    let (code, first) = run_json(
        &bed,
        &["run", "--time-limit", "20s", "--wait-timeout", "2min"],
    );
    assert_eq!(code, Some(0), "{first}");
    let copied = &first["report"]["backup_accounts"]["copied"];
    assert_eq!(copied.as_array().map(Vec::len), Some(1), "{first}");
    assert_eq!(copied[0]["source_snapshot_id"], source.as_str());
    assert_eq!(copied[0]["unshared"], false, "{first}");
    let l = &first["report"]["left"];
    assert_eq!(l.as_array().map(Vec::len), Some(1), "{first}");
    assert_eq!(l[0]["action"], "account_unshare");
    assert_eq!(l[0]["backup_id"], source.as_str());
    assert_eq!(l[0]["region"], REGION, "the share is in the source Region");
    assert_eq!(l[0]["account"], BACKUP);
    assert!(first["report"]["failures"].as_array().unwrap().is_empty());
    assert_eq!(shared_with(&bed, &source), [BACKUP], "the share stays");
    assert_eq!(snapshots_in(&bed, BACKUP, TO).len(), 1);

    complete_copies(&bed);
    let (code, second) = run_json(&bed, &["run"]);
    assert_eq!(code, Some(0), "{second}");
    assert_eq!(
        second["report"]["backup_accounts"]["unshared"][0],
        source.as_str(),
        "{second}"
    );
    assert!(
        second["report"]["backup_accounts"]["copied"].is_null(),
        "no second copy: {second}"
    );
    assert!(shared_with(&bed, &source).is_empty());
}

/// Three copies held pending: one at a time, the first wait would last until the limit and
/// the other two would not start. Started together, all three are made before the limit and
/// waited for together; the report lists them in the plan's order.
#[test]
fn the_copies_into_the_backup_account_start_together() {
    let bed = backup_bed(3, 3);
    let sources = backups_with_held_copies(&bed, 3);

    let (code, run) = run_json(
        &bed,
        &["run", "--time-limit", "20s", "--wait-timeout", "2min"],
    );
    assert_eq!(code, Some(0), "{run}");
    let copied = run["report"]["backup_accounts"]["copied"]
        .as_array()
        .unwrap_or_else(|| panic!("nothing copied: {run}"));
    let mut made: Vec<String> = copied
        .iter()
        .map(|c| c["source_snapshot_id"].as_str().unwrap().to_string())
        .collect();
    // The plan's order: its targets, in the order the plan lists them.
    let plan_order: Vec<String> = run["plan"]["policies"][0]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["target_id"].as_str().unwrap().to_string())
        .collect();
    let report_order: Vec<String> = copied
        .iter()
        .map(|c| c["target_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(report_order, plan_order, "{run}");
    made.sort();
    assert_eq!(made, sources, "every copy started: {run}");
    assert_eq!(snapshots_in(&bed, BACKUP, TO).len(), 3);
    let left: Vec<&str> = run["report"]["left"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["action"].as_str().unwrap())
        .collect();
    assert_eq!(left, ["account_unshare"; 3], "{run}");
}

// ---- status -o prometheus --------------------------------------------------------------------

#[test]
fn status_prometheus_has_the_newest_copy_in_each_backup_account() {
    let bed = backup_bed(3, 3);
    let vol = bed.volume(1, &[("Backup", "daily")]);
    let older = bed.policy_backup("daily", &vol, 2, &[]);
    let newer = bed.policy_backup("daily", &vol, 1, &[]);
    seeded_copy(&bed, &vol, &older, 2);
    seeded_copy(&bed, &vol, &newer, 1);

    let status = bed.json(&["status"]);
    let there = &status["policies"][0]["targets"][0]["account_copies"][0];
    let newest = chrono::DateTime::parse_from_rfc3339(there["newest_copy"].as_str().unwrap())
        .unwrap_or_else(|e| panic!("{e}: {there}"))
        .timestamp();
    let out = bed
        .cmd()
        .args(["status", "-o", "prometheus"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let labels = format!(
        "{{policy=\"daily\",target=\"{vol}\",region=\"{REGION}\",backup_account=\"{BACKUP}\",copy_region=\"{TO}\"}}"
    );
    assert!(
        text.contains("# TYPE autosnap_account_copy_newest_timestamp_seconds gauge"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "autosnap_account_copy_newest_timestamp_seconds{labels} {newest}\n"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("autosnap_account_copies{labels} 2\n")),
        "{text}"
    );
}

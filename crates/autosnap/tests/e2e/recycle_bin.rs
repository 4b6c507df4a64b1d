//! Recycle Bin awareness through the real binary on the test bed: what `plan`, `prune` and
//! `status` say about where deleted backups go, `snapshot list --recycle-bin` and
//! `snapshot recover`, the AMI equivalents, and rules that cannot be read.

use crate::support::{rbin, rbin_rule as rule, rbin_tag as pair, TestBed, REGION};
use serde_json::Value;

/// The test bed's stand-in for a caller without rbin:ListRules.
fn deny_list_rules(bed: &TestBed) {
    let client = rbin(bed);
    let period = aws_sdk_rbin::types::RetentionPeriod::builder()
        .retention_period_value(1)
        .retention_period_unit(aws_sdk_rbin::types::RetentionPeriodUnit::Days)
        .build()
        .expect("period");
    bed.block(async {
        client
            .create_rule()
            .resource_type(aws_sdk_rbin::types::ResourceType::EbsSnapshot)
            .retention_period(period)
            .resource_tags(pair("never", "matches"))
            .tags(
                aws_sdk_rbin::types::Tag::builder()
                    .key("autosnap-testbed:deny")
                    .value("rbin:ListRules")
                    .build()
                    .expect("tag"),
            )
            .send()
            .await
            .expect("create rule")
    });
}

const POLICY: &str = r#"
[[policy]]
name = "p"
resource = "volume"
select = [{ tags = { Backup = "daily" } }]
schedule = "0 3 * * *"
retain = { last = 1 }
"#;

/// A backup of `volume` by policy `p`, `days` old, with `extra` tags.
fn backup(bed: &TestBed, volume: &str, days: i64, extra: &[(&str, &str)]) -> String {
    bed.policy_backup("p", volume, days, extra)
}

fn line(text: &str, id: &str) -> String {
    text.lines()
        .find(|l| l.contains(id))
        .unwrap_or_else(|| panic!("{id} not in:\n{text}"))
        .to_string()
}

fn decisions(doc: &Value) -> Vec<Value> {
    doc["plan"]["policies"][0]["targets"][0]["groups"][0]["backups"]
        .as_array()
        .expect("backups")
        .clone()
}

fn decision<'a>(all: &'a [Value], id: &str) -> &'a Value {
    all.iter()
        .find(|d| d["backup_id"] == id)
        .unwrap_or_else(|| panic!("{id} not in {all:?}"))
}

fn stdout(out: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&out.get_output().stdout).to_string()
}

fn ids_in(rows: &Value, key: &str) -> Vec<String> {
    rows.as_array()
        .expect("rows")
        .iter()
        .map(|r| r[key].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn prune_says_which_deletions_are_recoverable_then_list_and_recover_the_snapshot() {
    let bed = TestBed::start();
    let db = bed.volume(1, &[("Backup", "daily")]);
    bed.write_config("autosnap.toml", POLICY, 0o644);
    let newest = backup(&bed, &db, 1, &[]);
    let kept_by_bin = backup(&bed, &db, 10, &[]);
    let excluded = backup(&bed, &db, 20, &[("scratch", "yes")]);
    // A Region-level rule for every snapshot but those tagged scratch=yes.
    let r = rule(
        &bed,
        aws_sdk_rbin::types::ResourceType::EbsSnapshot,
        7,
        &[],
        &[("scratch", "yes")],
    );

    let plan = bed.cmd().args(["plan"]).assert().success();
    let text = stdout(&plan);
    assert!(
        line(&text, &kept_by_bin).contains(&format!("→ Recycle Bin 7d (rule {r})")),
        "{text}"
    );
    assert!(line(&text, &excluded).contains("final"), "{text}");
    assert!(!line(&text, &newest).contains("Recycle Bin"), "{text}");

    let dry = bed.json(&["prune", "--dry-run"]);
    let all = decisions(&dry);
    let bin = &decision(&all, &kept_by_bin)["recycle_bin"];
    assert_eq!(bin["fate"], "recoverable", "{bin}");
    assert_eq!(bin["days"], 7);
    assert_eq!(bin["rule"], r.as_str());
    assert_eq!(decision(&all, &excluded)["recycle_bin"]["fate"], "final");
    assert!(decision(&all, &newest).get("recycle_bin").is_none());

    // status: where this policy's deleted backups go.
    let status = bed.json(&["status"]);
    let dest = &status["recycle_bin"][0];
    assert_eq!(dest["policy"], "p");
    let words = dest["destination"].as_str().unwrap();
    assert!(
        words.contains(&format!("Recycle Bin 7d (rule {r}, all but scratch=yes)")),
        "{words}"
    );

    let pruned = bed.cmd().args(["prune", "--yes"]).assert().success();
    assert!(
        stdout(&pruned).contains(&format!("→ Recycle Bin 7d (rule {r})")),
        "prune prints the plan with the fate: {}",
        stdout(&pruned)
    );
    assert!(!bed.snapshot_exists(REGION, &kept_by_bin));
    assert!(!bed.snapshot_exists(REGION, &excluded));

    let in_bin = bed.json(&["snapshot", "list", "--recycle-bin"]);
    assert_eq!(ids_in(&in_bin, "snapshot_id"), vec![kept_by_bin.clone()]);
    let row = &in_bin[0];
    assert_eq!(row["volume_id"], db.as_str());
    let deleted: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(row["deleted_at"].clone()).unwrap();
    let gone: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(row["gone_at"].clone()).unwrap();
    assert_eq!((gone - deleted).num_days(), 7);
    let table = bed
        .cmd()
        .args(["snapshot", "list", "--recycle-bin"])
        .assert()
        .success();
    assert!(line(&stdout(&table), &kept_by_bin).contains("in 6d"));

    // A dry run recovers nothing; the excluded snapshot is gone for good.
    let dry = bed.json(&["snapshot", "recover", &kept_by_bin, "--dry-run"]);
    assert_eq!(dry[0]["result"], "would_recover");
    assert!(!bed.snapshot_exists(REGION, &kept_by_bin));
    let out = bed
        .cmd()
        .args(["-o", "json", "snapshot", "recover", &kept_by_bin, &excluded])
        .assert()
        .code(3);
    let rows: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(rows[0]["snapshot_id"], kept_by_bin.as_str());
    assert_eq!(rows[0]["result"], "recovered");
    assert_eq!(rows[1]["result"], "missing");
    assert!(bed.snapshot_exists(REGION, &kept_by_bin));
    assert!(!bed.snapshot_exists(REGION, &excluded));
    let listed = bed.json(&["snapshot", "list"]);
    assert!(ids_in(&listed, "snapshot_id").contains(&kept_by_bin));
    let in_bin = bed.json(&["snapshot", "list", "--recycle-bin"]);
    assert!(in_bin.as_array().unwrap().is_empty(), "{in_bin}");
}

#[test]
fn a_tag_level_rule_keeps_only_what_carries_its_tag() {
    let bed = TestBed::start();
    let db = bed.volume(1, &[("Backup", "daily")]);
    bed.write_config("autosnap.toml", POLICY, 0o644);
    backup(&bed, &db, 1, &[]);
    let gold = backup(&bed, &db, 10, &[("tier", "gold")]);
    let plain = backup(&bed, &db, 20, &[]);
    let r = rule(
        &bed,
        aws_sdk_rbin::types::ResourceType::EbsSnapshot,
        30,
        &[("tier", "gold")],
        &[],
    );
    // An AMI rule does not keep snapshots.
    rule(
        &bed,
        aws_sdk_rbin::types::ResourceType::Ec2Image,
        90,
        &[],
        &[],
    );

    let all = decisions(&bed.json(&["prune", "--dry-run"]));
    let g = &decision(&all, &gold)["recycle_bin"];
    assert_eq!(
        (g["fate"].as_str(), g["days"].as_u64()),
        (Some("recoverable"), Some(30))
    );
    assert_eq!(g["rule"], r.as_str());
    assert_eq!(decision(&all, &plain)["recycle_bin"]["fate"], "final");
}

#[test]
fn rules_that_cannot_be_read_are_unknown_and_prune_goes_on() {
    let bed = TestBed::start();
    let db = bed.volume(1, &[("Backup", "daily")]);
    bed.write_config("autosnap.toml", POLICY, 0o644);
    backup(&bed, &db, 1, &[]);
    let old = backup(&bed, &db, 10, &[]);
    deny_list_rules(&bed);

    let plan = bed.cmd().args(["plan"]).assert().success();
    let text = stdout(&plan);
    assert!(
        line(&text, &old).contains("Recycle Bin rules unknown (AccessDeniedException"),
        "{text}"
    );
    let all = decisions(&bed.json(&["prune", "--dry-run"]));
    assert_eq!(decision(&all, &old)["recycle_bin"]["fate"], "unknown");
    let status = bed.json(&["status"]);
    assert!(status["recycle_bin"][0]["destination"]
        .as_str()
        .unwrap()
        .starts_with("Recycle Bin rules unknown"));
    assert!(status["recycle_bin"][0]["rules"].is_null());

    bed.cmd().args(["prune", "--yes"]).assert().success();
    assert!(!bed.snapshot_exists(REGION, &old));
}

/// A managed AMI (tagged as `ami create` tags it) using a new snapshot; returns the AMI id.
fn managed_image(bed: &TestBed, tags: &[(&str, &str)]) -> String {
    let vol = bed.volume(1, &[]);
    let snap = bed.snapshot_with_tags(REGION, &vol, &[("autosnap:managed", "true")]);
    let image = bed.image_using(&snap);
    let ec2 = bed.ec2(REGION);
    let mut all = vec![("autosnap:managed", "true")];
    all.extend_from_slice(tags);
    bed.block(async {
        ec2.create_tags()
            .resources(&image)
            .set_tags(Some(
                all.iter()
                    .map(|(k, v)| aws_sdk_ec2::types::Tag::builder().key(*k).value(*v).build())
                    .collect(),
            ))
            .send()
            .await
            .expect("tag image")
    });
    image
}

#[test]
fn a_deleted_ami_a_rule_keeps_is_listed_in_the_bin_and_recovered() {
    let bed = TestBed::start();
    rule(
        &bed,
        aws_sdk_rbin::types::ResourceType::Ec2Image,
        10,
        &[("keep", "yes")],
        &[],
    );
    let kept = managed_image(&bed, &[("keep", "yes")]);
    let gone = managed_image(&bed, &[]);

    bed.cmd()
        .args(["ami", "delete", &kept, &gone, "--yes"])
        .assert()
        .success();
    assert!(bed.image(&kept).is_none() && bed.image(&gone).is_none());

    let in_bin = bed.json(&["ami", "list", "--recycle-bin"]);
    assert_eq!(ids_in(&in_bin, "image_id"), vec![kept.clone()]);
    let deleted: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(in_bin[0]["deleted_at"].clone()).unwrap();
    let until: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(in_bin[0]["gone_at"].clone()).unwrap();
    assert_eq!((until - deleted).num_days(), 10);

    let dry = bed.json(&["ami", "recover", &kept, "--dry-run"]);
    assert_eq!(dry[0]["image_id"], kept.as_str());
    assert_eq!(dry[0]["result"], "would_recover");
    assert!(bed.image(&kept).is_none());

    let rows = bed.json(&["ami", "recover", &kept]);
    assert_eq!(rows[0]["result"], "recovered");
    assert!(bed.image(&kept).is_some());
    let listed = bed.json(&["ami", "list"]);
    assert!(ids_in(&listed, "image_id").contains(&kept), "{listed}");

    // Not kept by any rule: gone for good, and `recover` says so.
    let out = bed
        .cmd()
        .args(["-o", "json", "ami", "recover", &gone])
        .assert()
        .failure();
    let rows: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(rows[0]["result"], "missing");
    assert!(rows[0]["reason"]
        .as_str()
        .unwrap()
        .contains("deleted for good"));
}

#[test]
fn recover_refuses_an_id_of_the_wrong_kind_before_any_call() {
    let bed = TestBed::offline();
    let out = bed
        .cmd()
        .args(["snapshot", "recover", "ami-0123456789abcdef0"])
        .env("AWS_REGION", REGION)
        .assert()
        .code(2);
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        err.contains("not a snapshot id") && err.contains("snapshot list --recycle-bin"),
        "{err}"
    );
}

/// How many requests of each rbin action the test bed answered (its observation endpoint).
fn rbin_calls(bed: &TestBed) -> std::collections::BTreeMap<String, u64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", bed.port)).expect("connect");
    write!(
        s,
        "GET /_autosnap_testbed/rbin-calls HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
    )
    .expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("response");
    let body = text.split("\r\n\r\n").nth(1).expect("body");
    let rows: Value = serde_json::from_str(body).expect("json");
    rows.as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["region"] == REGION && r["account"] == crate::support::ACCOUNT)
        .map(|r| {
            (
                r["action"].as_str().unwrap().to_string(),
                r["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn the_rules_are_read_once_per_region_not_per_deletion() {
    let bed = TestBed::start();
    let a = bed.volume(1, &[("Backup", "daily")]);
    let b = bed.volume(1, &[("Backup", "daily")]);
    bed.write_config("autosnap.toml", POLICY, 0o644);
    let mut old = Vec::new();
    for vol in [&a, &b] {
        backup(&bed, vol, 1, &[]);
        for days in [5, 6, 7, 8] {
            old.push(backup(&bed, vol, days, &[("tier", "gold")]));
        }
    }
    rule(
        &bed,
        aws_sdk_rbin::types::ResourceType::EbsSnapshot,
        7,
        &[("tier", "gold")],
        &[],
    );
    rule(
        &bed,
        aws_sdk_rbin::types::ResourceType::EbsSnapshot,
        2,
        &[],
        &[],
    );

    let plan = bed.cmd().args(["plan"]).assert().success();
    let text = stdout(&plan);
    for id in &old {
        assert!(line(&text, id).contains("→ Recycle Bin 7d"), "{text}");
    }
    let calls = rbin_calls(&bed);
    // Eight deletions, two rules: one ListRules, one GetRule per rule.
    assert_eq!(calls.get("ListRules"), Some(&1), "{calls:?}");
    assert_eq!(calls.get("GetRule"), Some(&2), "{calls:?}");
}

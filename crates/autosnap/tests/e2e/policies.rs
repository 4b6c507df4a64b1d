//! Backup policies end to end: plan, run, prune, status and daemon through
//! the real binary against the test bed.

use crate::support::{TestBed, REGION};
use chrono::{Duration, Utc};
use predicates::prelude::*;
use serde_json::Value;

fn config(bed: &TestBed, text: &str) {
    bed.write_config("autosnap.toml", text, 0o644);
}

fn rfc3339_days_ago(days: i64) -> String {
    (Utc::now() - Duration::days(days))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Snapshots carrying `autosnap:policy=NAME` in a region.
fn policy_snapshots(bed: &TestBed, region: &str, policy: &str) -> Vec<Value> {
    bed.json(&[
        "snapshot",
        "list",
        "--region",
        region,
        "--tag",
        &format!("autosnap:policy={policy}"),
    ])
    .as_array()
    .unwrap()
    .clone()
}

const DAILY: &str = r#"
[[policy]]
name = "prod-daily"
resource = "volume"
select = [{ tags = { Backup = "daily" } }]
exclude = { tags = { NoBackup = "true" } }
schedule = "0 3 * * *"
retain = { last = 3, daily = 7 }
tags = { Team = "$(tag:Team)", Source = "$(volume-id)", Policy = "$(policy)" }
"#;

#[test]
fn plan_run_is_idempotent_and_expands_tag_variables() {
    let bed = TestBed::start();
    let db = bed.volume(8, &[("Name", "db"), ("Backup", "daily"), ("Team", "data")]);
    let _skipped = bed.volume(4, &[("Backup", "daily"), ("NoBackup", "true")]);
    let _other = bed.volume(4, &[("Name", "scratch")]);
    config(&bed, DAILY);

    let plan = bed.json(&["plan"]);
    let targets = plan["policies"][0]["targets"].as_array().unwrap();
    assert_eq!(
        targets.len(),
        1,
        "only the selected, not excluded volume: {targets:?}"
    );
    let t = &targets[0];
    assert_eq!(t["target_id"], db.as_str());
    assert_eq!(t["due"], true);
    assert!(
        t["due_reason"].as_str().unwrap().contains("no backup"),
        "{t}"
    );
    let tags = &t["create"]["tags"];
    assert_eq!(tags["Team"], "data");
    assert_eq!(tags["Source"], db.as_str());
    assert_eq!(tags["Policy"], "prod-daily");
    assert_eq!(tags["Name"], "db", "volume tags are copied");
    assert_eq!(tags["autosnap:policy"], "prod-daily");
    assert_eq!(tags["autosnap:managed"], "true");

    // The table form explains itself.
    bed.cmd()
        .arg("plan")
        .assert()
        .success()
        .stdout(predicate::str::contains("policy prod-daily"))
        .stdout(predicate::str::contains("due: no backup"))
        .stdout(predicate::str::contains(
            "plan: 1 to create, 0 to copy, 0 to delete",
        ));

    // A dry run changes nothing.
    let dry = bed.json(&["run", "--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["summary"]["creates"], 1);
    assert!(policy_snapshots(&bed, REGION, "prod-daily").is_empty());

    let first = bed.json(&["run"]);
    assert_eq!(first["report"]["created"].as_array().unwrap().len(), 1);
    let snaps = policy_snapshots(&bed, REGION, "prod-daily");
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["volume_id"], db.as_str());
    assert_eq!(snaps[0]["tags"]["Team"], "data");
    assert_eq!(snaps[0]["tags"]["autosnap:source-volume"], db.as_str());

    // Running again creates nothing: the newest backup covers the slot.
    let second = bed.json(&["run"]);
    assert!(
        second["report"]["created"].as_array().unwrap().is_empty(),
        "{second}"
    );
    assert_eq!(policy_snapshots(&bed, REGION, "prod-daily").len(), 1);
    let plan = bed.json(&["plan"]);
    assert_eq!(plan["policies"][0]["targets"][0]["due"], false);
}

#[test]
fn instance_policy_takes_one_set_per_run() {
    let bed = TestBed::start();
    let (inst, vol) = bed.instance("app");
    config(
        &bed,
        r#"
[[policy]]
name = "app-sets"
resource = "instance"
select = [{ tags = { Name = "app" } }]
schedule = "6h"
retain = { last = 2 }
"#,
    );
    let run = bed.json(&["run"]);
    let created = run["report"]["created"].as_array().unwrap();
    assert_eq!(created.len(), 1, "{run}");
    assert_eq!(created[0]["target_id"], inst.as_str());
    let set = created[0]["set_id"].as_str().unwrap().to_string();
    let snaps = policy_snapshots(&bed, REGION, "app-sets");
    assert!(snaps.iter().any(|s| s["volume_id"] == vol.as_str()));
    for s in &snaps {
        assert_eq!(s["tags"]["autosnap:set-id"], set.as_str());
        assert_eq!(s["tags"]["autosnap:source-instance"], inst.as_str());
    }
    let again = bed.json(&["run"]);
    assert!(again["report"]["created"].as_array().unwrap().is_empty());
}

#[test]
fn copies_go_to_their_region_with_the_key_and_their_own_retention() {
    let bed = TestBed::start();
    let db = bed.volume(8, &[("Name", "db"), ("Backup", "daily")]);
    config(
        &bed,
        r#"
[[policy]]
name = "dr"
resource = "volume"
select = [{ tags = { Backup = "daily" } }]
schedule = "0 3 * * *"
retain = { last = 3 }
copy = [{ region = "us-west-2", kms_key = "alias/backup", retain = { last = 1 } }]
"#,
    );
    // An older backup and its copy, made by an earlier run.
    let old = bed.snapshot_with_tags(
        REGION,
        &db,
        &[
            ("autosnap:managed", "true"),
            ("autosnap:policy", "dr"),
            ("autosnap:source-volume", &db),
            ("autosnap-testbed:start-time", &rfc3339_days_ago(2)),
        ],
    );
    let west_vol = bed.volume_in("us-west-2", 8);
    let old_copy = bed.snapshot_with_tags(
        "us-west-2",
        &west_vol,
        &[
            ("autosnap:managed", "true"),
            ("autosnap:policy", "dr"),
            ("autosnap:source-volume", &db),
            ("autosnap:source-snapshot", &old),
            ("autosnap:source-region", REGION),
            ("autosnap-testbed:start-time", &rfc3339_days_ago(2)),
        ],
    );

    let plan = bed.json(&["plan"]);
    let t = &plan["policies"][0]["targets"][0];
    assert_eq!(t["copies"][0]["to_region"], "us-west-2");
    assert_eq!(t["copies"][0]["source"]["kind"], "new");
    assert_eq!(t["copies"][0]["kms_key"], "alias/backup");

    let run = bed.json(&["run"]);
    let copied = run["report"]["copied"].as_array().unwrap();
    assert_eq!(copied.len(), 1, "{run}");
    let new_copy = copied[0]["snapshot_id"].as_str().unwrap().to_string();
    // A snapshot copy has no AMI fields.
    assert!(copied[0].get("source_image_id").is_none(), "{run}");
    assert!(copied[0].get("image_id").is_none(), "{run}");

    let west = policy_snapshots(&bed, "us-west-2", "dr");
    let c = west
        .iter()
        .find(|s| s["snapshot_id"] == new_copy.as_str())
        .expect("the new copy");
    assert_eq!(c["encrypted"], true);
    assert_eq!(c["tags"]["autosnap:source-volume"], db.as_str());
    assert_eq!(c["tags"]["autosnap:source-region"], REGION);

    // The copy region keeps only one backup (its own retention); the source keeps both.
    let after = bed.json(&["run"]);
    let _ = after;
    let west = policy_snapshots(&bed, "us-west-2", "dr");
    let ids: Vec<&str> = west
        .iter()
        .map(|s| s["snapshot_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![new_copy.as_str()],
        "old copy {old_copy} pruned in us-west-2"
    );
    assert_eq!(policy_snapshots(&bed, REGION, "dr").len(), 2);
}

#[test]
fn prune_spares_unmanaged_other_policy_pending_in_use_and_newest() {
    let bed = TestBed::start();
    let db = bed.volume(8, &[("Backup", "daily")]);
    config(
        &bed,
        r#"
[[policy]]
name = "p"
resource = "volume"
select = [{ tags = { Backup = "daily" } }]
schedule = "0 3 * * *"
retain = { last = 1 }
"#,
    );
    let ours = |days: i64, extra: &[(&str, &str)]| {
        let start = rfc3339_days_ago(days);
        let mut tags = vec![
            ("autosnap:managed", "true"),
            ("autosnap:policy", "p"),
            ("autosnap:source-volume", db.as_str()),
            ("autosnap-testbed:start-time", start.as_str()),
        ];
        tags.extend_from_slice(extra);
        bed.snapshot_with_tags(REGION, &db, &tags)
    };
    let old1 = ours(10, &[]);
    let old2 = ours(9, &[]);
    let pending = ours(8, &[("autosnap-testbed:state", "pending")]);
    let in_use = ours(7, &[]);
    let ami = bed.image_using(&in_use);
    let newest = ours(1, &[]);
    let start = rfc3339_days_ago(12);
    let unmanaged = bed.snapshot_with_tags(
        REGION,
        &db,
        &[
            ("autosnap:policy", "p"),
            ("autosnap:source-volume", &db),
            ("autosnap-testbed:start-time", &start),
        ],
    );
    let other_policy = bed.snapshot_with_tags(
        REGION,
        &db,
        &[
            ("autosnap:managed", "true"),
            ("autosnap:policy", "other"),
            ("autosnap:source-volume", &db),
            ("autosnap-testbed:start-time", &start),
        ],
    );

    let dry = bed.json(&["prune", "--dry-run"]);
    let decisions = dry["plan"]["policies"][0]["targets"][0]["groups"][0]["backups"]
        .as_array()
        .unwrap()
        .clone();
    let find = |id: &str| decisions.iter().find(|d| d["backup_id"] == id).cloned();
    assert_eq!(find(&old1).unwrap()["delete"], true);
    assert_eq!(find(&old2).unwrap()["delete"], true);
    assert_eq!(find(&pending).unwrap()["delete"], false);
    assert!(find(&pending).unwrap()["protected"]
        .as_str()
        .unwrap()
        .contains("pending"));
    assert!(find(&in_use).unwrap()["protected"]
        .as_str()
        .unwrap()
        .contains(&ami));
    assert_eq!(find(&newest).unwrap()["keep"], true);
    assert!(
        find(&unmanaged).is_none(),
        "not autosnap's: never a candidate"
    );
    assert!(
        find(&other_policy).is_none(),
        "another policy's backups are not this policy's"
    );
    assert_eq!(dry["summary"]["creates"], 0, "prune never creates");
    assert!(
        bed.snapshot_exists(REGION, &old1),
        "dry run deletes nothing"
    );

    let out = bed.json(&["prune"]);
    let deleted: Vec<&str> = out["report"]["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["backup_id"].as_str().unwrap())
        .collect();
    assert_eq!(deleted.len(), 2, "{out}");
    assert!(deleted.contains(&old1.as_str()) && deleted.contains(&old2.as_str()));
    for id in [&pending, &in_use, &newest, &unmanaged, &other_policy] {
        assert!(bed.snapshot_exists(REGION, id), "{id} must survive");
    }
    assert!(!bed.snapshot_exists(REGION, &old1));
}

#[test]
fn one_failing_target_does_not_stop_the_others() {
    let bed = TestBed::start();
    let good = bed.volume(1, &[("Backup", "daily")]);
    let bad = bed.volume(
        1,
        &[
            ("Backup", "daily"),
            ("autosnap-testbed:fail", "CreateSnapshot"),
        ],
    );
    config(&bed, DAILY);
    let out = bed.cmd().args(["run", "-o", "json"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "partial failure: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["report"]["created"][0]["target_id"], good.as_str());
    assert_eq!(v["report"]["failures"][0]["target_id"], bad.as_str());
    assert_eq!(v["report"]["failures"][0]["action"], "create");
    assert!(v["report"]["failures"][0]["error"]
        .as_str()
        .unwrap()
        .contains("IncorrectState"));
}

#[test]
fn status_reports_coverage_and_check_exit_codes() {
    let bed = TestBed::start();
    let db = bed.volume(8, &[("Name", "db"), ("Backup", "daily")]);
    let loose = bed.volume(2, &[("Name", "loose")]);
    config(&bed, DAILY);

    let before = bed.json(&["status"]);
    assert_eq!(before["policies"][0]["targets"][0]["state"], "missing");
    let unprotected: Vec<&str> = before["unprotected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    assert_eq!(unprotected, vec![loose.as_str()]);
    bed.cmd().args(["status", "--check"]).assert().code(1);

    bed.json(&["run"]);
    let after = bed.json(&["status"]);
    let t = &after["policies"][0]["targets"][0];
    assert_eq!(t["target_id"], db.as_str());
    assert_eq!(t["state"], "ok");
    assert_eq!(t["backup_count"], 1);
    bed.cmd()
        .args(["status", "-o", "prometheus"])
        .assert()
        .success()
        .stdout(predicate::str::contains(format!(
            "autosnap_target_state{{policy=\"prod-daily\",target=\"{db}\",region=\"{REGION}\",state=\"ok\"}} 1"
        )))
        .stdout(predicate::str::contains(format!("autosnap_unprotected{{resource=\"{loose}\"")))
        .stdout(predicate::str::contains("autosnap_status_ok 0"));
    // Still unprotected: the check fails until every volume is covered.
    bed.cmd().args(["status", "--check"]).assert().code(1);
    config(&bed, &format!("{DAILY}\n[[policy]]\nname = \"rest\"\nresource = \"volume\"\nselect = [{{ tags = {{ Name = \"loose\" }} }}]\nschedule = \"1d\"\nretain = {{ last = 1 }}\n"));
    bed.json(&["run"]);
    bed.cmd()
        .args(["status", "--check"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "every volume and instance is covered",
        ));
}

#[test]
fn daemon_runs_due_policies_and_stops_cleanly_on_sigterm() {
    let bed = TestBed::start();
    bed.volume(1, &[("Backup", "daily")]);
    config(&bed, DAILY);
    let child = bed
        .std_cmd()
        .args(["daemon", "--max-sleep", "1s"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait (bounded) for the daemon's first backup to appear.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while policy_snapshots(&bed, REGION, "prod-daily").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon made no backup"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let pid = child.id() as i32;
    assert_eq!(unsafe_free_kill(pid), 0);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("daemon started"), "{stderr}");
    assert!(stderr.contains("daemon stopped"), "{stderr}");
    assert_eq!(
        policy_snapshots(&bed, REGION, "prod-daily").len(),
        1,
        "one backup per slot"
    );
}

/// SIGTERM through the `kill` command (keeps the tests free of `unsafe`).
fn unsafe_free_kill(pid: i32) -> i32 {
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .code()
        .unwrap()
}

#[test]
fn policy_config_errors_name_the_policy_and_field() {
    let bed = TestBed::start();
    for (text, needle) in [
        ("[[policy]]\nname = \"p\"\nresource = \"volume\"\nselect = [{ tags = { A = \"b\" } }]\nschedule = \"0 3 * *\"\nretain = { last = 1 }\n", "schedule"),
        ("[[policy]]\nname = \"p\"\nresource = \"volume\"\nselect = [{ tags = { A = \"b\" } }]\nschedule = \"1d\"\nretain = { }\n", "retain"),
        ("[[policy]]\nname = \"p\"\nresource = \"volume\"\nselect = [{ tags = { A = \"b\" } }]\nschedule = \"1d\"\nretain = { last = 1 }\ntags = { X = \"$(nope)\" }\n", "nope"),
        ("[[policy]]\nname = \"p\"\nresource = \"volume\"\nselect = [{ tags = { A = \"b\" } }]\nschedule = \"1d\"\nretain = { daily = -1 }\n", "daily"),
        ("[[policy]]\nname = \"p\"\nresource = \"volume\"\nselect = [{ tags = { A = \"b\" } }]\nschedule = \"1d\"\nretain = { last = 1 }\ncopy = [{ region = \"us-east-1\" }]\n", "us-east-1"),
        ("[[policy]]\nname = \"p\"\nresource = \"volume\"\nkind = \"ami\"\nselect = [{ tags = { A = \"b\" } }]\nschedule = \"1d\"\nretain = { last = 1 }\n", "kind"),
        ("[[policy]]\nname = \"p\"\nresource = \"instance\"\nencrypt = true\nselect = [{ tags = { A = \"b\" } }]\nschedule = \"1d\"\nretain = { last = 1 }\n", "encrypt"),
        ("[[policy]]\nname = \"p\"\nresource = \"instance\"\nkind = \"ami\"\nexclude_boot = true\nselect = [{ tags = { A = \"b\" } }]\nschedule = \"1d\"\nretain = { last = 1 }\n", "exclude_boot"),
    ] {
        config(&bed, text);
        bed.cmd()
            .arg("plan")
            .assert()
            .code(2)
            .stderr(predicate::str::contains(needle));
    }
    config(&bed, DAILY);
    bed.cmd()
        .args(["plan", "--policy", "nope"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("prod-daily"));
    config(&bed, "");
    bed.cmd()
        .arg("run")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("[[policy]]"));
}

/// Tags resources in `region` (the test bed's backdating controls included).
fn tag(bed: &TestBed, region: &str, id: &str, tags: &[(&str, &str)]) {
    let ec2 = bed.ec2(region);
    bed.block(async {
        let mut req = ec2.create_tags().resources(id);
        for (k, v) in tags {
            req = req.tags(aws_sdk_ec2::types::Tag::builder().key(*k).value(*v).build());
        }
        req.send().await.expect("create tags");
    });
}

/// AMIs carrying `autosnap:policy=NAME` in a region, as `ami list -o json` shows them.
fn policy_amis(bed: &TestBed, region: &str, policy: &str) -> Vec<Value> {
    bed.json(&[
        "ami",
        "list",
        "--region",
        region,
        "--tag",
        &format!("autosnap:policy={policy}"),
    ])
    .as_array()
    .unwrap()
    .clone()
}

#[test]
fn ami_policy_creates_encrypted_amis_copies_them_and_prunes_with_their_snapshots() {
    let bed = TestBed::start();
    let web = bed.instance_with_root("web", &[("Backup", "ami"), ("Team", "frontend")]);
    let key = bed.kms_key(Some("alias/ami-backup"));
    config(
        &bed,
        &format!(
            r#"
[[policy]]
name = "web-ami"
resource = "instance"
kind = "ami"
select = [{{ tags = {{ Backup = "ami" }} }}]
schedule = "0 3 * * *"
retain = {{ last = 1 }}
encrypt = true
kms_key = "{key}"
copy = [{{ region = "us-west-2", retain = {{ last = 1 }} }}]
"#
        ),
    );

    // AMIs earlier runs made, four, three and two days ago; the oldest is still the image
    // of a launch template, so retention must spare it.
    let history = |days: i64, name: &str| {
        let vol = bed.volume(8, &[]);
        let snap = bed.snapshot_with_tags(REGION, &vol, &[("Name", name)]);
        let image = bed.image_using(&snap);
        let own = [
            ("autosnap:managed", "true"),
            ("autosnap:policy", "web-ami"),
            ("autosnap:source-instance", web.as_str()),
        ];
        tag(&bed, REGION, &image, &own);
        tag(&bed, REGION, &snap, &own);
        // Made for the AMI (CreateImage names it in the description; here a tag does).
        tag(
            &bed,
            REGION,
            &snap,
            &[("autosnap:for-image", image.as_str())],
        );
        tag(
            &bed,
            REGION,
            &image,
            &[
                ("Name", name),
                ("autosnap-testbed:start-time", &rfc3339_days_ago(days)),
            ],
        );
        (image, snap)
    };
    let (in_use, _) = history(4, "old-in-use");
    let (older, older_snap) = history(3, "older");
    let (old, old_snap) = history(2, "old");
    bed.launch_template_using("web-lt", &in_use);

    // The plan says what will happen and why.
    let plan = bed.json(&["plan"]);
    let p = &plan["policies"][0];
    assert_eq!(p["kind"], "ami", "{plan}");
    let t = &p["targets"][0];
    assert_eq!(t["target_id"], web.as_str());
    assert_eq!(t["due"], true, "{t}");
    let ami = &t["create"]["ami"];
    assert!(
        ami["name"]
            .as_str()
            .unwrap()
            .starts_with("autosnap-web-ami-web-"),
        "{ami}"
    );
    assert_eq!(ami["encrypt"], true);
    assert_eq!(ami["reboot"], false);
    let decisions: Vec<(String, bool, String)> = t["groups"][0]["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["backup_id"].as_str().unwrap().to_string(),
                b["delete"].as_bool().unwrap(),
                b["protected"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    // Newest first: the newest completed AMI stays until the new one is complete.
    assert_eq!(decisions.len(), 3, "{decisions:?}");
    assert_eq!(
        (
            decisions[0].0.as_str(),
            decisions[0].1,
            decisions[0].2.as_str()
        ),
        (old.as_str(), false, "newest completed backup")
    );
    assert_eq!(
        (decisions[1].0.as_str(), decisions[1].1),
        (older.as_str(), true)
    );
    assert_eq!(
        (decisions[2].0.as_str(), decisions[2].1),
        (in_use.as_str(), false)
    );
    assert!(decisions[2].2.contains("launch template"), "{decisions:?}");
    let text = bed
        .cmd()
        .arg("plan")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("+ create AMI"), "{text}");
    assert!(text.contains(&format!("- delete {older}")), "{text}");

    // Run: one encrypted AMI with the instance's tags, copied to us-west-2; the older AMI is
    // deregistered and its snapshot deleted; the one in use stays.
    let run = bed.json(&["run"]);
    let created = run["report"]["created"].as_array().unwrap();
    assert_eq!(created.len(), 1, "{run}");
    let new = created[0]["image_id"].as_str().unwrap().to_string();
    let image = bed.image(&new).expect("the new AMI");
    let mappings = image.block_device_mappings();
    assert!(!mappings.is_empty());
    for m in mappings.iter().filter_map(|m| m.ebs()) {
        assert_eq!(m.encrypted(), Some(true), "{image:?}");
    }
    let image_tags: std::collections::BTreeMap<&str, &str> = image
        .tags()
        .iter()
        .map(|t| (t.key().unwrap(), t.value().unwrap()))
        .collect();
    assert_eq!(image_tags.get("Team"), Some(&"frontend"));
    assert_eq!(image_tags.get("autosnap:policy"), Some(&"web-ami"));
    assert_eq!(
        image_tags.get("autosnap:source-instance"),
        Some(&web.as_str())
    );

    let here: Vec<String> = policy_amis(&bed, REGION, "web-ami")
        .iter()
        .map(|a| a["image_id"].as_str().unwrap().to_string())
        .collect();
    assert!(here.contains(&new), "{here:?}");
    assert!(here.contains(&in_use), "in use: kept {here:?}");
    assert!(
        here.contains(&old),
        "newest completed until this run: kept {here:?}"
    );
    assert!(!here.contains(&older), "older AMI deregistered: {here:?}");
    assert_eq!(here.len(), 3, "no unencrypted intermediate left: {here:?}");
    assert!(
        !bed.snapshot_exists(REGION, &older_snap),
        "its snapshot went too"
    );

    let copied = run["report"]["copied"].as_array().unwrap();
    assert_eq!(copied.len(), 1, "{run}");
    // An AMI copy names its AMIs in source_image_id and image_id; the snapshot fields stay
    // for a release (deprecated, docs/json-output.md).
    assert_eq!(copied[0]["source_image_id"], new.as_str());
    assert_eq!(copied[0]["source_snapshot_id"], new.as_str());
    let west = policy_amis(&bed, "us-west-2", "web-ami");
    assert_eq!(west.len(), 1, "{west:?}");
    assert_eq!(west[0]["image_id"], copied[0]["image_id"]);
    assert_eq!(west[0]["image_id"], copied[0]["snapshot_id"]);
    assert_eq!(west[0]["tags"]["autosnap:source-image"], new.as_str());
    assert_eq!(west[0]["tags"]["autosnap:source-region"], REGION);
    assert_eq!(west[0]["encrypted"], true);

    // The next run creates and copies nothing (not due), and now that the new AMI is
    // complete, retention lets the previous one go.
    let again = bed.json(&["run"]);
    assert!(
        again["report"]["created"].as_array().unwrap().is_empty(),
        "{again}"
    );
    assert!(
        again["report"]["copied"].as_array().unwrap().is_empty(),
        "{again}"
    );
    let deleted: Vec<&str> = again["report"]["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["backup_id"].as_str().unwrap())
        .collect();
    assert_eq!(deleted, [old.as_str()], "{again}");
    assert!(!bed.snapshot_exists(REGION, &old_snap));
    assert_eq!(policy_amis(&bed, REGION, "web-ami").len(), 2);
}

//! The EBS Snapshots Archive tier through the real binary on the test bed: what `snapshot list`
//! shows, `snapshot archive` refusing what EC2 refuses before asking it, `snapshot restore-tier`,
//! and `volume create` from an archived snapshot saying what to do.

use crate::support::{TestBed, REGION};
use serde_json::Value;

fn managed(bed: &TestBed, volume: &str) -> String {
    bed.snapshot_with_tags(REGION, volume, &[("autosnap:managed", "true")])
}

/// Archives a snapshot directly through EC2, as another tool or person would.
fn archive(bed: &TestBed, snapshot_id: &str) {
    let ec2 = bed.ec2(REGION);
    bed.block(async {
        ec2.modify_snapshot_tier()
            .snapshot_id(snapshot_id)
            .storage_tier(aws_sdk_ec2::types::TargetStorageTier::Archive)
            .send()
            .await
            .expect("archive snapshot")
    });
}

fn tier_of(bed: &TestBed, snapshot_id: &str) -> String {
    bed.snapshot(snapshot_id)
        .storage_tier()
        .map(|t| t.as_str().to_string())
        .unwrap_or_default()
}

fn listed<'a>(rows: &'a Value, id: &str) -> &'a Value {
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["snapshot_id"] == id)
        .unwrap_or_else(|| panic!("{id} not listed in {rows}"))
}

#[test]
fn snapshot_list_shows_the_tier() {
    let bed = TestBed::start();
    let vol = bed.volume(1, &[]);
    let standard = managed(&bed, &vol);
    let archived = managed(&bed, &vol);
    archive(&bed, &archived);

    let out = bed.cmd().args(["snapshot", "list"]).assert().success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(text.contains("TIER"), "{text}");
    let row = |id: &str| text.lines().find(|l| l.contains(id)).unwrap().to_string();
    assert!(row(&archived).contains("archive"), "{text}");
    assert!(row(&standard).contains("standard"), "{text}");

    let rows = bed.json(&["snapshot", "list"]);
    assert_eq!(listed(&rows, &archived)["storage_tier"], "archive");
    assert_eq!(listed(&rows, &standard)["storage_tier"], "standard");
    assert!(listed(&rows, &standard)["restore_expiry"].is_null());
}

fn tag(bed: &TestBed, id: &str, key: &str, value: &str) {
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

fn volume_count(bed: &TestBed) -> usize {
    let ec2 = bed.ec2(REGION);
    bed.block(async { ec2.describe_volumes().send().await.expect("volumes") })
        .volumes()
        .len()
}

fn result_of<'a>(rows: &'a Value, id: &str) -> &'a Value {
    listed(rows, id)
}

#[test]
fn snapshot_archive_refuses_what_ec2_refuses_before_asking_and_states_the_minimum() {
    let bed = TestBed::start();
    let vol = bed.volume(1, &[]);
    let ok = managed(&bed, &vol);
    let behind_ami = managed(&bed, &vol);
    bed.image_using(&behind_ami);
    let already = managed(&bed, &vol);
    archive(&bed, &already);

    // A dry run archives nothing and says what it would cost.
    let dry = bed
        .cmd()
        .args([
            "-o",
            "json",
            "snapshot",
            "archive",
            &ok,
            &behind_ami,
            &already,
            "--dry-run",
        ])
        .assert()
        .code(3);
    let rows: Value = serde_json::from_slice(&dry.get_output().stdout).unwrap();
    assert_eq!(result_of(&rows, &ok)["result"], "would_archive");
    let terms = result_of(&rows, &ok)["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        terms.contains("at least 90 days") && terms.contains("72 hours"),
        "{terms}"
    );
    // The cost trade-off from the price table, for this 1 GiB volume.
    assert!(
        terms.contains("$0.01/month archived for 1 GiB") && terms.contains("$0.03 per restore"),
        "{terms}"
    );
    assert!(terms.contains("us-east-1 prices as of"), "{terms}");
    assert_eq!(tier_of(&bed, &ok), "standard");

    let out = bed
        .cmd()
        .args([
            "-o",
            "json",
            "snapshot",
            "archive",
            &ok,
            &behind_ami,
            &already,
            "snap-0000000000000dead",
        ])
        .assert()
        .code(3);
    let rows: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(result_of(&rows, &ok)["result"], "archived");
    assert_eq!(tier_of(&bed, &ok), "archive");
    // Refused by autosnap with the reason, not "failed" with EC2's error: it never asked.
    let ami = result_of(&rows, &behind_ami);
    assert_eq!(ami["result"], "refused");
    assert!(
        ami["reason"]
            .as_str()
            .unwrap()
            .contains("deregister or disable the AMI"),
        "{ami}"
    );
    assert_eq!(tier_of(&bed, &behind_ami), "standard");
    let again = result_of(&rows, &already);
    assert_eq!(again["result"], "refused");
    assert!(again["reason"]
        .as_str()
        .unwrap()
        .contains("already in the archive tier"));
    assert_eq!(
        result_of(&rows, "snap-0000000000000dead")["result"],
        "missing"
    );
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(stderr.contains("archived 1 of 4"), "{stderr}");
}

#[test]
fn restore_tier_temporary_then_volume_create_works_and_permanent_states_the_charge() {
    let bed = TestBed::start();
    let vol = bed.volume(1, &[]);
    let temp = managed(&bed, &vol);
    let perm = managed(&bed, &vol);
    let standard = managed(&bed, &vol);
    archive(&bed, &temp);
    archive(&bed, &perm);

    let dry = bed.json(&[
        "snapshot",
        "restore-tier",
        &temp,
        "--days",
        "3",
        "--dry-run",
    ]);
    assert_eq!(result_of(&dry, &temp)["result"], "would_restore");
    assert_eq!(tier_of(&bed, &temp), "archive");

    let rows = bed.json(&["snapshot", "restore-tier", &temp, &standard, "--days", "3"]);
    let r = result_of(&rows, &temp);
    assert_eq!(r["result"], "restoring");
    assert!(
        r["reason"].as_str().unwrap().contains("up to 72 hours"),
        "{r}"
    );
    assert_eq!(result_of(&rows, &standard)["result"], "not_archived");
    assert_eq!(tier_of(&bed, &temp), "standard");
    let list = bed.json(&["snapshot", "list"]);
    assert!(listed(&list, &temp)["restore_expiry"].is_string(), "{list}");
    let text = bed.cmd().args(["snapshot", "list"]).assert().success();
    let text = String::from_utf8_lossy(&text.get_output().stdout).to_string();
    let line = text.lines().find(|l| l.contains(&temp)).unwrap();
    assert!(line.contains("standard until"), "{line}");
    bed.cmd()
        .args([
            "volume",
            "create",
            "--snapshot",
            &temp,
            "--availability-zone",
            "us-east-1a",
        ])
        .assert()
        .success();

    let rows = bed.json(&["snapshot", "restore-tier", &perm, "--permanent"]);
    let r = result_of(&rows, &perm)["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        r.contains("less than 90 days ago") && r.contains("billed anyway"),
        "{r}"
    );
    assert_eq!(tier_of(&bed, &perm), "standard");
}

#[test]
fn volume_create_from_an_archived_snapshot_says_to_restore_it_and_creates_nothing() {
    let bed = TestBed::start();
    let vol = bed.volume(1, &[]);
    let snap = managed(&bed, &vol);
    archive(&bed, &snap);
    let before = volume_count(&bed);

    let out = bed
        .cmd()
        .args([
            "volume",
            "create",
            "--snapshot",
            &snap,
            "--availability-zone",
            "us-east-1a",
        ])
        .assert()
        .failure();
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        err.contains(&format!("snapshot {snap} is in the archive tier")),
        "{err}"
    );
    assert!(
        err.contains(&format!("autosnap snapshot restore-tier {snap} --days N")),
        "{err}"
    );
    assert!(err.contains("up to 72 hours"), "{err}");
    assert_eq!(volume_count(&bed), before);

    // While a restore is under way (hours on AWS; held here by the test bed's tag) it says so.
    tag(&bed, &snap, "autosnap-testbed:tiering-hold", "1");
    bed.json(&["snapshot", "restore-tier", &snap, "--days", "1"]);
    let out = bed
        .cmd()
        .args([
            "volume",
            "create",
            "--snapshot",
            &snap,
            "--availability-zone",
            "us-east-1a",
        ])
        .assert()
        .failure();
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(err.contains("a restore of it is under way"), "{err}");
    assert_eq!(volume_count(&bed), before);
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
fn prune_says_what_deleting_an_archived_backup_early_costs() {
    let bed = TestBed::start();
    let db = bed.volume(1, &[("Backup", "daily")]);
    bed.write_config("autosnap.toml", POLICY, 0o644);
    let backup = |days: i64| {
        let start = (chrono::Utc::now() - chrono::Duration::days(days))
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        bed.snapshot_with_tags(
            REGION,
            &db,
            &[
                ("autosnap:managed", "true"),
                ("autosnap:policy", "p"),
                ("autosnap:source-volume", db.as_str()),
                ("autosnap-testbed:start-time", start.as_str()),
            ],
        )
    };
    let early = backup(50);
    let served = backup(200);
    let plain = backup(40);
    let _newest = backup(1);
    archive(&bed, &early);
    archive(&bed, &served);
    // Archived 40 days ago (50 left of the minimum), and 100 days ago (served).
    let ago = |d: i64| {
        (chrono::Utc::now() - chrono::Duration::days(d) - chrono::Duration::hours(1)).to_rfc3339()
    };
    tag(&bed, &early, "autosnap-testbed:archived-on", &ago(40));
    tag(&bed, &served, "autosnap-testbed:archived-on", &ago(100));

    let out = bed.cmd().args(["plan"]).assert().success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    let line = |id: &str| text.lines().find(|l| l.contains(id)).unwrap().to_string();
    assert!(
        line(&early).contains(
            "archived 40 days ago: the remaining 50 days of the 90-day minimum are billed anyway"
        ),
        "{text}"
    );
    assert!(!line(&served).contains("billed anyway"), "{text}");
    assert!(!line(&plain).contains("billed anyway"), "{text}");

    let dry = bed.json(&["prune", "--dry-run"]);
    let decisions = dry["plan"]["policies"][0]["targets"][0]["groups"][0]["backups"]
        .as_array()
        .unwrap()
        .clone();
    let d = decisions.iter().find(|d| d["backup_id"] == early).unwrap();
    assert_eq!(d["delete"], true);
    assert!(
        d["archive_charge"].as_str().unwrap().contains("50 days"),
        "{d}"
    );
    // Deleting still happens: the charge is reported, not a reason to keep it.
    bed.cmd().args(["prune", "--yes"]).assert().success();
    assert!(!bed.snapshot_exists(REGION, &early));
}

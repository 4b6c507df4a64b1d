//! `run --time-limit` and `prune --time-limit` through the real binary on the test bed: after
//! the limit no step starts, the report lists what was left (`left`), the run exits 0, and the
//! next run does the rest without making anything twice.

use crate::support::{TestBed, REGION};
use serde_json::Value;

/// A daily policy with a copy to us-west-2. `extra_tags` go on every backup it makes.
fn config(bed: &TestBed, extra_tags: &str) {
    bed.write_config(
        "autosnap.toml",
        &format!(
            r#"
[[policy]]
name = "dr"
resource = "volume"
select = [{{ tags = {{ Backup = "daily" }} }}]
schedule = "0 3 * * *"
retain = {{ last = 1 }}
tags = {{ {extra_tags} }}
copy = [{{ region = "us-west-2", retain = {{ last = 1 }} }}]
"#
        ),
        0o644,
    );
}

/// autosnap's snapshots of policy `dr` in a region.
fn backups(bed: &TestBed, region: &str) -> Vec<String> {
    bed.json(&[
        "snapshot",
        "list",
        "--region",
        region,
        "--tag",
        "autosnap:policy=dr",
    ])
    .as_array()
    .unwrap()
    .iter()
    .map(|s| s["snapshot_id"].as_str().unwrap().to_string())
    .collect()
}

fn run_json(bed: &TestBed, args: &[&str]) -> (Option<i32>, Value, String) {
    let out = bed
        .cmd()
        .args(args)
        .args(["-o", "json"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?} printed no JSON ({e}): {}\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (out.status.code(), json, stderr)
}

/// `(action, target_id, region)` of each step left.
fn left(report: &Value) -> Vec<(String, String, String)> {
    let mut l: Vec<_> = report["report"]["left"]
        .as_array()
        .unwrap_or_else(|| panic!("no report.left in {report}"))
        .iter()
        .map(|l| {
            (
                l["action"].as_str().unwrap().to_string(),
                l["target_id"].as_str().unwrap().to_string(),
                l["region"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    l.sort();
    l
}

#[test]
fn a_limit_of_zero_starts_nothing_and_lists_every_step_as_left() {
    let bed = TestBed::start();
    let db = bed.volume(1, &[("Backup", "daily")]);
    config(&bed, "");

    let (code, run, stderr) = run_json(&bed, &["run", "--time-limit", "0s"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        run["report"]["created"].as_array().unwrap().len(),
        0,
        "{run}"
    );
    assert_eq!(
        run["report"]["copied"].as_array().unwrap().len(),
        0,
        "{run}"
    );
    assert_eq!(
        left(&run),
        vec![
            ("copy".into(), db.clone(), "us-west-2".into()),
            ("create".into(), db.clone(), REGION.into()),
        ]
    );
    assert!(backups(&bed, REGION).is_empty(), "nothing was created");

    // The text report says so too.
    let out = bed
        .cmd()
        .args(["run", "--time-limit", "0s"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("time limit reached: 2 step(s) not started"),
        "{text}"
    );
    assert!(
        text.contains(&format!("not started: policy dr create {db} in {REGION}")),
        "{text}"
    );
}

#[test]
fn prune_with_a_limit_of_zero_deletes_nothing_and_names_the_backups_left() {
    let bed = TestBed::start();
    let db = bed.volume(1, &[("Backup", "daily")]);
    config(&bed, "");
    let old = bed.policy_backup("dr", &db, 3, &[]);
    let newer = bed.policy_backup("dr", &db, 2, &[]);

    let (code, out, stderr) = run_json(&bed, &["prune", "--time-limit", "0s", "--yes"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        out["report"]["deleted"].as_array().unwrap().len(),
        0,
        "{out}"
    );
    let l = &out["report"]["left"];
    assert_eq!(l.as_array().unwrap().len(), 1, "{out}");
    assert_eq!(l[0]["action"], "delete");
    assert_eq!(l[0]["backup_id"], old.as_str());
    let mut kept = backups(&bed, REGION);
    kept.sort();
    let mut both = vec![old.clone(), newer];
    both.sort();
    assert_eq!(kept, both, "nothing deleted");

    // Without a limit the same prune deletes it.
    let (code, out, _) = run_json(&bed, &["prune", "--yes"]);
    assert_eq!(code, Some(0));
    assert_eq!(out["report"]["deleted"][0]["backup_id"], old.as_str());
    assert!(
        out["report"].get("left").is_none(),
        "no left when complete: {out}"
    );
}

/// The test bed keeps the new backup `pending` (its `autosnap-testbed:state` tag, put on by the
/// policy's tags), so the run's wait before the copy can only end at the limit: the create has
/// started, the copy is left. Once the backup completes, a second run makes the copy and no
/// second backup. The limit (20 s) only has to be longer than it takes the run to reach its
/// create; the test does not depend on how much longer.
#[test]
fn a_run_stopped_by_its_limit_is_finished_by_the_next_run_without_duplicates() {
    let bed = TestBed::start();
    let db = bed.volume(1, &[("Backup", "daily")]);
    config(&bed, r#""autosnap-testbed:state" = "pending""#);

    // A run that ignored its limit would fail its wait (2 min) instead of leaving the copy.
    let (code, first, stderr) = run_json(
        &bed,
        &["run", "--time-limit", "20s", "--wait-timeout", "2min"],
    );
    assert_eq!(
        code,
        Some(0),
        "stopped by the limit is not a failure: {stderr}"
    );
    let created = first["report"]["created"].as_array().unwrap();
    assert_eq!(created.len(), 1, "{first}");
    let backup = created[0]["snapshot_ids"][0].as_str().unwrap().to_string();
    assert_eq!(first["report"]["copied"].as_array().unwrap().len(), 0);
    assert_eq!(
        left(&first),
        vec![("copy".into(), db.clone(), "us-west-2".into())]
    );
    assert_eq!(first["report"]["left"][0]["backup_id"], backup.as_str());
    assert!(first["report"]["failures"].as_array().unwrap().is_empty());

    // The backup completes in EC2.
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

    let (code, second, stderr) = run_json(&bed, &["run"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        second["report"]["created"].as_array().unwrap().len(),
        0,
        "the backup of the stopped run counts: {second}"
    );
    let copied = second["report"]["copied"].as_array().unwrap();
    assert_eq!(copied.len(), 1, "{second}");
    assert_eq!(copied[0]["source_snapshot_id"], backup.as_str());
    assert_eq!(backups(&bed, REGION), vec![backup]);
    assert_eq!(backups(&bed, "us-west-2").len(), 1);
}

/// The same for an AMI policy: the test bed holds the new AMI `pending` (the policy's tags go on
/// it), so the wait before its copy can only end at the limit. The AMI counts as made, its copy is
/// left; once the AMI is available the next run copies it and makes no second AMI.
#[test]
fn an_ami_run_stopped_in_its_wait_leaves_the_copy_to_the_next_run() {
    let bed = TestBed::start();
    let web = bed.instance_with_root("web", &[("Backup", "ami")]);
    bed.write_config(
        "autosnap.toml",
        r#"
[[policy]]
name = "web-ami"
resource = "instance"
kind = "ami"
select = [{ tags = { Backup = "ami" } }]
schedule = "0 3 * * *"
retain = { last = 1 }
tags = { "autosnap-testbed:state" = "pending" }
copy = [{ region = "us-west-2", retain = { last = 1 } }]
"#,
        0o644,
    );

    // A run that ignored its limit would fail its wait (2 min) instead of leaving the copy.
    let (code, first, stderr) = run_json(
        &bed,
        &["run", "--time-limit", "20s", "--wait-timeout", "2min"],
    );
    assert_eq!(code, Some(0), "{first}\n{stderr}");
    let created = first["report"]["created"].as_array().unwrap();
    assert_eq!(created.len(), 1, "{first}");
    let image = created[0]["image_id"].as_str().unwrap().to_string();
    assert_eq!(
        left(&first),
        vec![("copy".into(), web.clone(), "us-west-2".into())]
    );
    assert_eq!(first["report"]["left"][0]["backup_id"], image.as_str());
    assert!(first["report"]["failures"].as_array().unwrap().is_empty());
    assert!(
        bed.image(&image).is_some(),
        "the stopped wait removed nothing"
    );

    let ec2 = bed.ec2(REGION);
    bed.block(async {
        ec2.create_tags()
            .resources(&image)
            .tags(
                aws_sdk_ec2::types::Tag::builder()
                    .key("autosnap-testbed:state")
                    .value("available")
                    .build(),
            )
            .send()
            .await
            .expect("make the AMI available")
    });
    let (code, second, stderr) = run_json(&bed, &["run"]);
    assert_eq!(code, Some(0), "{second}\n{stderr}");
    assert_eq!(second["report"]["created"].as_array().unwrap().len(), 0);
    let copied = second["report"]["copied"].as_array().unwrap();
    assert_eq!(copied.len(), 1, "{second}");
}

/// A due restore test is a step too: past the limit it does not start and is listed as left.
#[test]
fn a_limit_of_zero_leaves_the_due_restore_test() {
    let bed = TestBed::start();
    let vol = bed.volume(1, &[("Backup", "daily")]);
    bed.write_config(
        "autosnap.toml",
        r#"
[[policy]]
name = "p"
resource = "volume"
select = [{ tags = { Backup = "daily" } }]
schedule = "1d"
retain = { last = 3 }
restore_test = { every = "7d" }
"#,
        0o644,
    );

    let (code, run, stderr) = run_json(&bed, &["run", "--time-limit", "0s"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        left(&run),
        vec![
            ("create".into(), vol.clone(), REGION.into()),
            ("restore_test".into(), vol.clone(), REGION.into()),
        ]
    );
    assert!(run.get("restore_tests").is_none(), "no test ran: {run}");
}

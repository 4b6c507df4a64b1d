//! Restored data is the user's, never a policy's backup, and `ami delete` never deletes a
//! snapshot the user owns: end to end through the real binary against the test bed.
//!
//! A restore (`restore --to-snapshot`, `restore --to-ami`, `ami restore`) carries
//! `autosnap:restored-from` and none of the original's policy-membership tags, so the policy
//! whose backup was restored still finds its target due, takes the next backup, and prunes
//! around the restore without ever deleting it.

use std::collections::BTreeMap;
use std::path::Path;

use crate::support::{TestBed, REGION};
use aws_sdk_ec2::types::{BlockDeviceMapping, EbsBlockDevice, ResourceType, Tag};
use chrono::{Duration, Utc};
use serde_json::Value;

const BLOCK: usize = 524_288;
/// Polls quickly: the test bed's images are pending for one describe only.
const FAST: &[&str] = &["--poll-interval", "100ms"];
/// The tags a policy puts on what it owns, apart from the source tag.
const POLICY_TAGS: [&str; 4] = [
    "autosnap:policy",
    "autosnap:source-volume",
    "autosnap:source-instance",
    "autosnap:set-id",
];

fn s(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_string()
}

fn days_ago(days: i64) -> String {
    (Utc::now() - Duration::days(days))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn run_ok(bed: &TestBed, args: &[&str]) -> String {
    let out = bed.cmd().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "autosnap {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn with(base: &[&str], extra: &[&str]) -> Vec<String> {
    base.iter().chain(extra).map(|x| x.to_string()).collect()
}

fn json(bed: &TestBed, args: &[String]) -> Value {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    bed.json(&refs)
}

/// Tags a resource behind autosnap's back.
fn tag(bed: &TestBed, id: &str, pairs: &[(&str, &str)]) {
    let ec2 = bed.ec2(REGION);
    bed.block(async {
        let mut req = ec2.create_tags().resources(id);
        for (k, v) in pairs {
            req = req.tags(Tag::builder().key(*k).value(*v).build());
        }
        req.send().await.expect("create tags");
    });
}

fn to_map(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .map(|t| (t.key().unwrap().to_string(), t.value().unwrap().to_string()))
        .collect()
}

fn snapshot_tags(bed: &TestBed, id: &str) -> BTreeMap<String, String> {
    to_map(bed.snapshot(id).tags())
}

fn image_tags(bed: &TestBed, id: &str) -> BTreeMap<String, String> {
    to_map(bed.image(id).expect("image exists").tags())
}

/// Asserts that `tags` mark a restore of `from` and carry no policy-membership tag.
fn assert_restored(what: &str, tags: &BTreeMap<String, String>, from: &str) {
    assert_eq!(
        tags.get("autosnap:restored-from").map(String::as_str),
        Some(from),
        "{what}: {tags:?}"
    );
    assert_eq!(
        tags.get("autosnap:managed").map(String::as_str),
        Some("true"),
        "{what}: {tags:?}"
    );
    for key in POLICY_TAGS {
        assert!(!tags.contains_key(key), "{what} carries {key}: {tags:?}");
    }
}

/// A volume holding two blocks of data (uploaded, then a volume made from the upload).
fn volume_with_data(bed: &TestBed, dir: &Path, seed: u8, tags: &[(&str, &str)]) -> String {
    let file = dir.join(format!("disk-{seed}.img"));
    let data: Vec<u8> = (0..2 * BLOCK)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    std::fs::write(&file, data).unwrap();
    let uploaded = s(&bed.json(&["upload", file.to_str().unwrap()])["snapshot_id"]);
    let ec2 = bed.ec2(REGION);
    bed.block(async {
        let mut req = ec2
            .create_volume()
            .availability_zone("us-east-1a")
            .snapshot_id(&uploaded);
        if !tags.is_empty() {
            req = req.tag_specifications(crate::support::tag_spec(ResourceType::Volume, tags));
        }
        req.send()
            .await
            .expect("create volume")
            .volume_id()
            .unwrap()
            .to_string()
    })
}

/// The ids of the backups the plan lists for its only policy's only target.
fn planned_backups(target: &Value) -> Vec<String> {
    target["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["backups"].as_array().unwrap().iter())
        .map(|b| s(&b["backup_id"]))
        .collect()
}

fn only_target(plan: &Value) -> Value {
    let targets = plan["policies"][0]["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 1, "{plan}");
    targets[0].clone()
}

fn report_ids(out: &Value, list: &str, field: &str) -> Vec<String> {
    out["report"][list]
        .as_array()
        .unwrap_or_else(|| panic!("no report.{list}: {out}"))
        .iter()
        .map(|d| s(&d[field]))
        .collect()
}

#[test]
fn restore_to_snapshot_is_not_a_backup_and_is_never_pruned() {
    let bed = TestBed::start();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let repo_s = repo.to_str().unwrap();
    run_ok(&bed, &["repo", "init", repo_s]);
    bed.write_config(
        "autosnap.toml",
        r#"
[[policy]]
name = "prod-daily"
resource = "volume"
select = [{ tags = { Backup = "daily" } }]
schedule = "0 3 * * *"
retain = { last = 1 }
"#,
        0o644,
    );
    let vol = volume_with_data(
        &bed,
        dir.path(),
        7,
        &[("Backup", "daily"), ("Team", "data")],
    );

    // A backup the policy made, tagged as `run` tags it, archived; then (test-bed control)
    // dated two days ago, so that the target is due again.
    let backup = bed.snapshot_with_tags(
        REGION,
        &vol,
        &[
            ("autosnap:managed", "true"),
            ("autosnap:policy", "prod-daily"),
            ("autosnap:source-volume", &vol),
            ("Team", "data"),
        ],
    );
    let archive = s(&bed.json(&["archive", &backup, "--repo", repo_s])["archive_id"]);
    tag(
        &bed,
        &backup,
        &[("autosnap-testbed:start-time", &days_ago(2))],
    );
    assert_eq!(only_target(&bed.json(&["plan"]))["due"], true);

    let restored = bed.json(&["restore", &archive, "--repo", repo_s, "--to-snapshot"]);
    let restored = s(&restored["snapshot_id"]);
    let t = snapshot_tags(&bed, &restored);
    assert_restored("the restored snapshot", &t, &backup);
    assert_eq!(t["autosnap:source-archive"], archive);
    assert_eq!(t["Team"], "data", "user tags are re-applied");

    // The restore is not the policy's newest backup: the target is still due.
    let target = only_target(&bed.json(&["plan"]));
    assert_eq!(target["due"], true, "{target}");
    assert_eq!(
        planned_backups(&target),
        std::slice::from_ref(&backup),
        "{target}"
    );

    // The next backup happens; prune removes the old backup, never the restore.
    let run = bed.json(&["run"]);
    let created = report_ids(&run, "created", "target_id");
    assert_eq!(created, std::slice::from_ref(&vol), "{run}");
    let pruned = bed.json(&["prune"]);
    assert_eq!(
        report_ids(&pruned, "deleted", "backup_id"),
        std::slice::from_ref(&backup),
        "{pruned}"
    );
    assert!(!bed.snapshot_exists(REGION, &backup));
    assert!(
        bed.snapshot_exists(REGION, &restored),
        "the restore survives"
    );
    let again = bed.json(&["run"]);
    assert!(
        report_ids(&again, "created", "target_id").is_empty(),
        "{again}"
    );
    assert!(
        bed.snapshot_exists(REGION, &restored),
        "the restore survives"
    );
}

/// Registers an AMI named `name` over `root` (/dev/xvda), like those a policy made.
fn register(bed: &TestBed, name: &str, root: &str) -> String {
    let ec2 = bed.ec2(REGION);
    bed.block(async {
        ec2.register_image()
            .name(name)
            .root_device_name("/dev/xvda")
            .architecture("x86_64".into())
            .virtualization_type("hvm")
            .ena_support(true)
            .block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name("/dev/xvda")
                    .ebs(
                        EbsBlockDevice::builder()
                            .snapshot_id(root)
                            .volume_size(1)
                            .volume_type("gp3".into())
                            .delete_on_termination(true)
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .expect("register image")
            .image_id()
            .unwrap()
            .to_string()
    })
}

#[test]
fn restores_to_an_ami_are_not_backups_and_are_never_pruned() {
    let bed = TestBed::start();
    bed.bucket("amis");
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let repo_s = repo.to_str().unwrap();
    run_ok(&bed, &["repo", "init", repo_s]);
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
"#,
        0o644,
    );

    // An AMI the policy made (its snapshot made for it), archived and stored in S3; then
    // (test-bed control) dated two days ago, so that the target is due again.
    let own = [
        ("autosnap:managed", "true"),
        ("autosnap:policy", "web-ami"),
        ("autosnap:source-instance", web.as_str()),
    ];
    let root = volume_with_data(&bed, dir.path(), 3, &[]);
    let snap = bed.snapshot_with_tags(REGION, &root, &[("Name", "web-root")]);
    let original = register(&bed, "web-golden", &snap);
    tag(&bed, &original, &own);
    tag(&bed, &original, &[("Name", "web")]);
    tag(&bed, &snap, &own);
    tag(&bed, &snap, &[("autosnap:for-image", original.as_str())]);
    let archive = s(&bed.json(&["archive", &original, "--repo", repo_s])["archive_id"]);
    json(
        &bed,
        &with(&["ami", "store", &original, "--bucket", "amis"], FAST),
    );
    tag(
        &bed,
        &original,
        &[("autosnap-testbed:start-time", &days_ago(2))],
    );
    assert_eq!(only_target(&bed.json(&["plan"]))["due"], true);

    // From the archive, and from S3.
    let from_archive = s(&bed.json(&[
        "restore",
        &archive,
        "--repo",
        repo_s,
        "--to-ami",
        "--name",
        "web-from-archive",
    ])["image_id"]);
    let from_s3 = s(&json(
        &bed,
        &with(
            &[
                "ami",
                "restore",
                "--bucket",
                "amis",
                "--ami",
                &original,
                "--name",
                "web-from-s3",
            ],
            FAST,
        ),
    )["image_id"]);
    let mut restored_snapshots = Vec::new();
    for image in [&from_archive, &from_s3] {
        let t = image_tags(&bed, image);
        assert_restored(image, &t, &original);
        assert_eq!(t["Name"], "web", "user tags are re-applied");
        for m in bed.image(image).unwrap().block_device_mappings() {
            let sn = m.ebs().and_then(|e| e.snapshot_id()).unwrap().to_string();
            let t = snapshot_tags(&bed, &sn);
            assert_restored(&format!("snapshot {sn} of {image}"), &t, &original);
            assert_eq!(t["autosnap:for-image"], image.as_str());
            restored_snapshots.push(sn);
        }
    }

    // Neither restore is the policy's newest AMI: the target is still due.
    let target = only_target(&bed.json(&["plan"]));
    assert_eq!(target["due"], true, "{target}");
    assert_eq!(
        planned_backups(&target),
        std::slice::from_ref(&original),
        "{target}"
    );

    // The next AMI is made; prune deregisters the old one, never a restore.
    let run = bed.json(&["run"]);
    assert_eq!(report_ids(&run, "created", "image_id").len(), 1, "{run}");
    let pruned = bed.json(&["prune"]);
    assert_eq!(
        report_ids(&pruned, "deleted", "backup_id"),
        std::slice::from_ref(&original),
        "{pruned}"
    );
    assert!(bed.image(&original).is_none());
    assert!(
        !bed.snapshot_exists(REGION, &snap),
        "made for it: it went too"
    );
    for image in [&from_archive, &from_s3] {
        assert!(bed.image(image).is_some(), "restore {image} survives");
    }
    for sn in &restored_snapshots {
        assert!(bed.snapshot_exists(REGION, sn), "{sn} survives");
    }

    // Deleting a restored AMI deletes the snapshots made for it.
    let res = bed.json(&["ami", "delete", &from_archive, &from_s3]);
    for r in res.as_array().unwrap() {
        assert_eq!(r["result"], "deregistered", "{res}");
        assert!(r["snapshots_kept"].as_array().unwrap().is_empty(), "{res}");
    }
    for sn in &restored_snapshots {
        assert!(!bed.snapshot_exists(REGION, sn), "{sn} went with its AMI");
    }
}

#[test]
fn ami_delete_keeps_snapshots_the_user_owns_or_that_predate_the_ami() {
    let bed = TestBed::start();
    let vol = bed.volume(1, &[]);
    // The user's own snapshot, and a policy's backup, each registered as an AMI by autosnap.
    let mine = bed.foreign_snapshot(&vol);
    let backup = bed.snapshot_with_tags(
        REGION,
        &vol,
        &[
            ("autosnap:managed", "true"),
            ("autosnap:policy", "prod-daily"),
            ("autosnap:source-volume", &vol),
        ],
    );
    let from_mine =
        s(&bed.json(&["ami", "from-snapshot", &mine, "--name", "from-mine"])["image_id"]);
    let from_backup =
        s(&bed.json(&["ami", "from-snapshot", &backup, "--name", "from-backup"])["image_id"]);
    assert_eq!(image_tags(&bed, &from_mine)["autosnap:managed"], "true");

    // The plan says what stays and why, before anything happens.
    let plan = bed.json(&["ami", "delete", &from_mine, &from_backup, "--dry-run"]);
    for r in plan.as_array().unwrap() {
        assert_eq!(r["result"], "would_deregister", "{plan}");
        assert!(
            r["snapshots_deleted"].as_array().unwrap().is_empty(),
            "{plan}"
        );
    }

    let out = bed
        .cmd()
        .args(["ami", "delete", &from_mine, &from_backup, "-o", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("keep {mine} (not created by autosnap")),
        "{stderr}"
    );
    let res: Value = serde_json::from_slice(&out.stdout).unwrap();
    let kept = |i: usize| {
        assert_eq!(res[i]["result"], "deregistered", "{res}");
        assert!(res[i]["snapshots_deleted"].as_array().unwrap().is_empty());
        let k = &res[i]["snapshots_kept"][0];
        (s(&k["snapshot_id"]), s(&k["reason"]))
    };
    let (id, why) = kept(0);
    assert_eq!(id, mine);
    assert!(why.contains("not created by autosnap"), "{why}");
    assert!(
        why.contains(&format!("snapshot delete {mine} --force")),
        "{why}"
    );
    let (id, why) = kept(1);
    assert_eq!(id, backup);
    assert!(
        why.contains(&format!("not made for {from_backup}")),
        "{why}"
    );

    assert!(bed.image(&from_mine).is_none() && bed.image(&from_backup).is_none());
    assert!(
        bed.snapshot_exists(REGION, &mine),
        "the user's snapshot stays"
    );
    assert!(
        bed.snapshot_exists(REGION, &backup),
        "the policy's backup stays"
    );
}

#[test]
fn ami_prune_keeps_a_users_snapshot_registered_into_a_policy_ami() {
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
"#,
        0o644,
    );
    let own = [
        ("autosnap:managed", "true"),
        ("autosnap:policy", "web-ami"),
        ("autosnap:source-instance", web.as_str()),
    ];
    let vol = bed.volume(1, &[]);
    // Two AMIs the policy owns, three and two days old: one over a snapshot made for it, one
    // over a snapshot of the user's (say registered by hand and then tagged).
    let mine = bed.foreign_snapshot(&vol);
    let older = register(&bed, "web-older", &mine);
    tag(&bed, &older, &own);
    tag(
        &bed,
        &older,
        &[("autosnap-testbed:start-time", &days_ago(3))],
    );
    let made = bed.snapshot_with_tags(REGION, &vol, &own);
    let newer = register(&bed, "web-newer", &made);
    tag(&bed, &newer, &own);
    tag(
        &bed,
        &newer,
        &[("autosnap-testbed:start-time", &days_ago(2))],
    );
    tag(&bed, &made, &[("autosnap:for-image", newer.as_str())]);

    // The run makes a new AMI and retention removes both old ones (one now, one at prune).
    let run = bed.json(&["run"]);
    assert_eq!(report_ids(&run, "created", "image_id").len(), 1, "{run}");
    let pruned = bed.json(&["prune"]);
    let deleted: Vec<Value> = [&run, &pruned]
        .iter()
        .flat_map(|r| r["report"]["deleted"].as_array().unwrap().clone())
        .collect();
    let entry = |id: &str| {
        deleted
            .iter()
            .find(|d| d["backup_id"] == id)
            .unwrap_or_else(|| panic!("{id} not deleted: {run}\n{pruned}"))
            .clone()
    };
    let o = entry(&older);
    assert!(o["snapshot_ids"].as_array().unwrap().is_empty(), "{o}");
    let kept = s(&o["kept_snapshots"][0]);
    assert!(
        kept.starts_with(&mine) && kept.contains("not created by autosnap"),
        "{o}"
    );
    assert_eq!(entry(&newer)["snapshot_ids"], serde_json::json!([made]));
    assert!(bed.image(&older).is_none() && bed.image(&newer).is_none());
    assert!(
        bed.snapshot_exists(REGION, &mine),
        "the user's snapshot stays"
    );
    assert!(
        !bed.snapshot_exists(REGION, &made),
        "made for its AMI: gone"
    );
}

//! End-to-end tests of AMI backups: the real `autosnap` binary against the
//! test bed (moto with testbed/ami_tasks.py: CreateImage snapshots the
//! instance's volumes, CopyImage encrypts, the S3 store/restore tasks exist).
//! Each test starts its own emulator.

use crate::support::{TestBed, REGION};
use predicates::prelude::*;
use serde_json::Value;

/// Polls quickly: the test bed's images are pending for one describe only.
const FAST: &[&str] = &["--poll-interval", "100ms"];

fn s(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_string()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(s)
        .collect()
}

fn with(base: &[&str], extra: &[&str]) -> Vec<String> {
    base.iter().chain(extra).map(|x| x.to_string()).collect()
}

fn run_json(bed: &TestBed, args: &[String]) -> Value {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    bed.json(&refs)
}

/// `ami create INSTANCE --wait` plus extra flags; returns the result.
fn create(bed: &TestBed, instance: &str, extra: &[&str]) -> Value {
    run_json(
        bed,
        &with(
            &[
                "ami",
                "create",
                instance,
                "--wait",
                "--poll-interval",
                "100ms",
            ],
            extra,
        ),
    )
}

fn image_tags(bed: &TestBed, ami: &str) -> std::collections::BTreeMap<String, String> {
    bed.image(ami)
        .expect("image exists")
        .tags()
        .iter()
        .map(|t| (t.key().unwrap().to_string(), t.value().unwrap().to_string()))
        .collect()
}

fn snapshot_tags(bed: &TestBed, snap: &str) -> std::collections::BTreeMap<String, String> {
    bed.snapshot(snap)
        .tags()
        .iter()
        .map(|t| (t.key().unwrap().to_string(), t.value().unwrap().to_string()))
        .collect()
}

// ---- help and the IAM policy (no AWS) ------------------------------------------

#[test]
fn ami_help_lists_every_subcommand() {
    let bed = TestBed::offline();
    bed.bare_cmd()
        .args(["ami", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains("from-snapshot"))
        .stdout(predicate::str::contains("restore"));
    for sub in [
        "create",
        "from-snapshot",
        "list",
        "delete",
        "metadata",
        "store",
        "restore",
    ] {
        bed.bare_cmd()
            .args(["ami", sub, "--help"])
            .assert()
            .success()
            .stdout(predicate::str::contains("Usage: autosnap ami"));
    }
    // --kms-key needs --encrypt; restore needs --ami or --key.
    bed.bare_cmd()
        .args([
            "ami",
            "create",
            "i-0123456789abcdef0",
            "--kms-key",
            "alias/x",
        ])
        .assert()
        .code(2);
    bed.bare_cmd()
        .args(["ami", "restore", "--bucket", "b"])
        .assert()
        .code(2);
}

#[test]
fn iam_policy_separates_create_from_delete() {
    let bed = TestBed::offline();
    let out = bed
        .bare_cmd()
        .args(["iam-policy", "--for", "backup"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let backup: Value = serde_json::from_slice(&out.stdout).expect("policy is JSON");
    assert_eq!(backup["Version"], "2012-10-17");
    let actions: Vec<String> = backup["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|st| strings(&st["Action"]))
        .collect();
    assert!(actions.contains(&"ec2:CreateSnapshot".to_string()));
    assert!(
        actions
            .iter()
            .all(|a| !a.contains(":Delete") && !a.contains(":Deregister") && !a.contains('*')),
        "{actions:?}"
    );

    let out = bed
        .bare_cmd()
        .args([
            "iam-policy",
            "--for",
            "ami",
            "--for",
            "prune",
            "--bucket",
            "amis",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let policy: Value = serde_json::from_str(&text).unwrap();
    assert!(text.contains("arn:aws:s3:::amis/*"), "{text}");
    let dereg = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|st| strings(&st["Action"]).contains(&"ec2:DeregisterImage".to_string()))
        .expect("deregister statement");
    assert_eq!(
        dereg["Condition"]["StringEquals"]["ec2:ResourceTag/autosnap:managed"],
        "true"
    );

    // Without --bucket the placeholder is named on stderr.
    bed.bare_cmd()
        .args(["iam-policy"])
        .assert()
        .success()
        .stdout(predicate::str::contains("ebs:StartSnapshot"))
        .stderr(predicate::str::contains("BUCKET-NAME"));
    bed.bare_cmd()
        .args(["iam-policy", "--for", "everything"])
        .assert()
        .code(2);
}

// ---- create ----------------------------------------------------------------------

#[test]
fn ami_create_keeps_the_instance_tags_and_snapshots_every_volume() {
    let bed = TestBed::start();
    let inst = bed.instance_with_root("web", &[("Env", "prod")]);

    // Without --wait the AMI is reported as EC2 has it: pending.
    let quick = bed.json(&["ami", "create", &inst]);
    assert_eq!(quick["state"], "pending");

    let r = create(&bed, &inst, &["--tag", "Ticket=OPS-1", "--no-reboot"]);
    let ami = s(&r["image_id"]);
    let name = s(&r["name"]);
    assert!(name.starts_with("autosnap-web-"), "{name}");
    assert_ne!(name, s(&quick["name"]), "default names are unique");
    assert_eq!(r["state"], "available");
    assert_eq!(r["instance_id"], inst.as_str());
    assert_eq!(r["encrypted"], false);
    let snaps = strings(&r["snapshot_ids"]);
    assert_eq!(snaps.len(), 2, "one snapshot per volume");

    let tags = image_tags(&bed, &ami);
    assert_eq!(tags["Name"], "web");
    assert_eq!(tags["Env"], "prod");
    assert_eq!(tags["Ticket"], "OPS-1");
    assert_eq!(tags["autosnap:managed"], "true");
    assert_eq!(tags["autosnap:source-instance"], inst);
    for snap in &snaps {
        let t = snapshot_tags(&bed, snap);
        assert_eq!(t["Env"], "prod", "snapshots are tagged on create too");
        assert_eq!(t["autosnap:managed"], "true");
    }
    let image = bed.image(&ami).unwrap();
    let sizes: Vec<i32> = image
        .block_device_mappings()
        .iter()
        .map(|m| m.ebs().unwrap().volume_size().unwrap())
        .collect();
    assert_eq!(
        sizes.iter().sum::<i32>(),
        12,
        "8 GiB root + 4 GiB data: {sizes:?}"
    );

    bed.cmd()
        .args(["ami", "create", &inst, "--name", "bad#name"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("only letters"));
    bed.cmd()
        .args(["ami", "create", "i-0123456789abcdef0"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "instance i-0123456789abcdef0 does not exist",
        ));
}

#[test]
fn ami_create_encrypt_leaves_one_encrypted_ami() {
    let bed = TestBed::start();
    let key = bed.kms_key(Some("alias/backup"));
    let inst = bed.instance_with_root("db", &[("Team", "data")]);
    let r = create(
        &bed,
        &inst,
        &[
            "--encrypt",
            "--kms-key",
            "alias/backup",
            "--name",
            "db-encrypted",
        ],
    );
    let ami = s(&r["image_id"]);
    assert_eq!(r["name"], "db-encrypted");
    assert_eq!(r["encrypted"], true);
    let intermediate = s(&r["intermediate_image_id"]);
    assert!(
        bed.image(&intermediate).is_none(),
        "the unencrypted AMI is gone"
    );

    for snap in strings(&r["snapshot_ids"]) {
        let sn = bed.snapshot(&snap);
        assert_eq!(sn.encrypted(), Some(true));
        assert_eq!(sn.kms_key_id(), Some(key.as_str()));
        assert_eq!(snapshot_tags(&bed, &snap)["Team"], "data");
    }
    let tags = image_tags(&bed, &ami);
    assert_eq!(tags["Team"], "data");
    assert_eq!(tags["autosnap:managed"], "true");

    // Only one AMI and only its snapshots remain.
    let list = bed.json(&["ami", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["image_id"], ami.as_str());
    assert_eq!(list[0]["encrypted"], true);
    let managed = bed.json(&["snapshot", "list", "--managed"]);
    let mut left: Vec<String> = managed
        .as_array()
        .unwrap()
        .iter()
        .map(|x| s(&x["snapshot_id"]))
        .collect();
    left.sort();
    let mut want = strings(&r["snapshot_ids"]);
    want.sort();
    assert_eq!(left, want, "the intermediate's snapshots were deleted");
}

#[test]
fn ami_create_refuses_an_unusable_kms_key_before_making_anything() {
    let bed = TestBed::start();
    let inst = bed.instance_with_root("web", &[]);
    bed.cmd()
        .args([
            "ami",
            "create",
            &inst,
            "--encrypt",
            "--kms-key",
            "alias/missing",
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("--kms-key is not usable"))
        .stderr(predicate::str::contains(
            "KMS key alias/missing does not exist in us-east-1",
        ));
    let off = bed.kms_key(Some("alias/off"));
    let kms = bed.kms();
    bed.block(async {
        kms.disable_key()
            .key_id(off.rsplit('/').next().unwrap())
            .send()
            .await
            .unwrap()
    });
    bed.cmd()
        .args([
            "ami",
            "create",
            &inst,
            "--encrypt",
            "--kms-key",
            "alias/off",
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "KMS key alias/off cannot encrypt EBS data: it is Disabled",
        ));
    assert_eq!(bed.json(&["ami", "list"]), serde_json::json!([]));
}

#[test]
fn ami_create_failed_image_is_cleaned_up() {
    let bed = TestBed::start();
    let inst = bed.instance_with_root("flaky", &[("autosnap-testbed:fail", "CreateImage")]);
    bed.cmd()
        .args(["ami", "create", &inst, "--wait"])
        .args(FAST)
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "failed: EC2 reports state 'failed'",
        ))
        .stderr(predicate::str::contains("cleaned up: deregistered ami-"))
        .stderr(predicate::str::contains("deleted snapshots snap-"))
        .stderr(predicate::str::contains("nothing is left behind"));
    assert_eq!(bed.json(&["ami", "list"]), serde_json::json!([]));
    assert_eq!(
        bed.json(&["snapshot", "list", "--managed"]),
        serde_json::json!([])
    );
}

#[test]
fn ami_names_already_taken_are_refused() {
    let bed = TestBed::start();
    let inst = bed.instance_with_root("web", &[]);
    let first = create(&bed, &inst, &["--name", "golden-image"]);
    let ami = s(&first["image_id"]);
    bed.cmd()
        .args(["ami", "create", &inst, "--name", "golden-image"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(format!(
            "AMI name 'golden-image' is already in use by AMI {ami}"
        )));
    let snap = s(&first["snapshot_ids"][0]);
    bed.cmd()
        .args(["ami", "from-snapshot", &snap, "--name", "golden-image"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("already in use"));
}

// ---- from-snapshot -------------------------------------------------------------------

#[test]
fn ami_from_snapshot_registers_with_sensible_defaults() {
    let bed = TestBed::start();
    let vol = bed.volume(6, &[("Name", "root")]);
    let snap = s(&bed.json(&["snapshot", "create", &vol])[0]["snapshot_id"]);
    let r = bed.json(&[
        "ami",
        "from-snapshot",
        &snap,
        "--name",
        "from-snap",
        "--architecture",
        "arm64",
        "--tag",
        "Role=base",
        "--wait",
    ]);
    let ami = s(&r["image_id"]);
    assert_eq!(r["architecture"], "arm64");
    assert_eq!(strings(&r["snapshot_ids"]), vec![snap.clone()]);
    let image = bed.image(&ami).unwrap();
    assert_eq!(image.root_device_name(), Some("/dev/xvda"));
    assert_eq!(image.ena_support(), Some(true));
    assert_eq!(image.boot_mode().map(|b| b.as_str()), Some("uefi"));
    let ebs = image.block_device_mappings()[0].ebs().unwrap();
    assert_eq!(ebs.volume_size(), Some(6), "root size = snapshot size");
    assert_eq!(ebs.volume_type().map(|t| t.as_str()), Some("gp3"));
    let tags = image_tags(&bed, &ami);
    assert_eq!(tags["Role"], "base");
    assert_eq!(tags["autosnap:managed"], "true");
    assert_eq!(tags["autosnap:source-snapshot"], snap);

    bed.cmd()
        .args([
            "ami",
            "from-snapshot",
            &snap,
            "--name",
            "too-small",
            "--size",
            "2",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("smaller than snapshot"));
    bed.cmd()
        .args([
            "ami",
            "from-snapshot",
            "snap-0123456789abcdef0",
            "--name",
            "nope",
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("does not exist"));
}

// ---- metadata ------------------------------------------------------------------------

#[test]
fn ami_metadata_written_to_s3_has_every_field() {
    let bed = TestBed::start();
    bed.bucket("amis");
    bed.kms_key(Some("alias/meta"));
    let ec2 = bed.ec2(REGION);
    let inst = bed.block(async {
        ec2.create_key_pair().key_name("ops").send().await.unwrap();
        let dev = |name: &str, size: i32| {
            aws_sdk_ec2::types::BlockDeviceMapping::builder()
                .device_name(name)
                .ebs(
                    aws_sdk_ec2::types::EbsBlockDevice::builder()
                        .volume_size(size)
                        .volume_type("gp3".into())
                        .build(),
                )
                .build()
        };
        ec2.run_instances()
            .image_id("ami-12345678")
            .min_count(1)
            .max_count(1)
            .instance_type(aws_sdk_ec2::types::InstanceType::T3Small)
            .key_name("ops")
            .block_device_mappings(dev("/dev/sda1", 8))
            .block_device_mappings(dev("/dev/sdf", 5))
            .tag_specifications(crate::support::tag_spec(
                aws_sdk_ec2::types::ResourceType::Instance,
                &[("Name", "api"), ("Env", "prod")],
            ))
            .send()
            .await
            .unwrap()
            .instances()[0]
            .instance_id()
            .unwrap()
            .to_string()
    });
    let r = create(
        &bed,
        &inst,
        &["--metadata-bucket", "amis", "--metadata-prefix", "prod/"],
    );
    let ami = s(&r["image_id"]);
    let key = format!("prod/ami-metadata/{ami}.json");
    assert_eq!(r["metadata"], format!("s3://amis/{key}").as_str());
    assert_eq!(bed.s3_sse("amis", &key).as_deref(), Some("AES256"));

    let doc: Value = serde_json::from_slice(&bed.s3_get("amis", &key)).unwrap();
    let image = bed.image(&ami).unwrap();
    assert_eq!(doc["schema_version"], 1);
    assert!(s(&doc["generator"]).starts_with("autosnap "));
    assert!(doc["collected_at"].is_string());
    assert_eq!(doc["account_id"], crate::support::ACCOUNT);
    assert_eq!(doc["region"], REGION);
    assert_eq!(doc["image_id"], ami.as_str());
    assert_eq!(doc["name"], r["name"]);
    assert_eq!(
        doc["description"],
        format!("autosnap: {inst} (api)").as_str()
    );
    assert_eq!(doc["creation_date"], image.creation_date().unwrap());
    assert_eq!(doc["state"], "available");
    assert_eq!(doc["architecture"], "x86_64");
    assert_eq!(
        doc["virtualization_type"],
        image.virtualization_type().unwrap().as_str()
    );
    assert_eq!(doc["boot_mode"], image.boot_mode().unwrap().as_str());
    assert_eq!(doc["root_device_name"], "/dev/sda1");
    assert_eq!(doc["root_device_type"], "ebs");
    for k in ["platform", "platform_details", "ena_support"] {
        assert!(doc.get(k).is_some(), "field {k} is always present");
    }
    assert_eq!(doc["encrypted"], false);
    assert_eq!(doc["tags"]["Name"], "api");
    assert_eq!(doc["tags"]["autosnap:managed"], "true");

    let src = &doc["source_instance"];
    assert_eq!(src["instance_id"], inst.as_str());
    assert_eq!(src["instance_type"], "t3.small");
    assert_eq!(src["availability_zone"], "us-east-1a");
    assert!(s(&src["vpc_id"]).starts_with("vpc-"));
    assert!(s(&src["subnet_id"]).starts_with("subnet-"));
    assert!(s(&src["security_groups"][0]["group_id"]).starts_with("sg-"));
    assert_eq!(src["key_name"], "ops");
    assert!(src["private_ip_address"].is_string());
    assert!(src.get("iam_instance_profile").is_some());
    assert_eq!(src["tags"]["Env"], "prod");

    let maps = doc["block_device_mappings"].as_array().unwrap();
    assert_eq!(maps.len(), 2);
    let data = maps
        .iter()
        .find(|m| m["device_name"] == "/dev/sdf")
        .expect("data device");
    assert!(strings(&r["snapshot_ids"]).contains(&s(&data["snapshot_id"])));
    assert_eq!(data["volume_size_gib"], 5);
    assert_eq!(data["volume_type"], "gp3");
    assert_eq!(data["iops"], 3000);
    assert!(data.get("throughput").is_some());
    assert_eq!(data["encrypted"], false);
    assert!(data["kms_key_id"].is_null());
    assert_eq!(data["snapshot_tags"]["autosnap:managed"], "true");
    assert!(doc["stored_image"].is_null());

    // `ami metadata` prints the same document, and stores it with SSE-KMS.
    let printed: Value = serde_json::from_slice(
        &bed.cmd()
            .args(["ami", "metadata", &ami])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(
        printed["block_device_mappings"],
        doc["block_device_mappings"]
    );
    let stored = bed.json(&[
        "ami",
        "metadata",
        &ami,
        "--bucket",
        "amis",
        "--sse-kms-key",
        "alias/meta",
    ]);
    assert_eq!(stored["key"], format!("ami-metadata/{ami}.json").as_str());
    assert_eq!(
        bed.s3_sse("amis", &format!("ami-metadata/{ami}.json"))
            .as_deref(),
        Some("aws:kms")
    );
    bed.cmd()
        .args(["ami", "metadata", &ami, "--bucket", "no-such-bucket"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "cannot use S3 bucket no-such-bucket",
        ))
        .stderr(predicate::str::contains(
            "S3 bucket no-such-bucket does not exist",
        ));
}

// ---- list ---------------------------------------------------------------------------

#[test]
fn ami_list_shows_own_amis_with_filters() {
    let bed = TestBed::start();
    let inst = bed.instance_with_root("web", &[("Env", "prod")]);
    let ours = s(&create(&bed, &inst, &["--name", "ours"])["image_id"]);
    let vol = bed.volume(1, &[]);
    let snap = bed.foreign_snapshot(&vol);
    let foreign = bed.image_using(&snap);

    let all = bed.json(&["ami", "list"]);
    let ids: Vec<String> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|x| s(&x["image_id"]))
        .collect();
    assert!(ids.contains(&ours) && ids.contains(&foreign), "{ids:?}");
    let row = all
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["image_id"] == ours.as_str())
        .unwrap();
    for k in [
        "name",
        "state",
        "creation_date",
        "architecture",
        "snapshot_ids",
        "encrypted",
        "tags",
        "managed",
    ] {
        assert!(row.get(k).is_some(), "missing {k}");
    }
    assert_eq!(row["managed"], true);

    let managed = bed.json(&["ami", "list", "--managed"]);
    assert_eq!(managed.as_array().unwrap().len(), 1);
    assert_eq!(managed[0]["image_id"], ours.as_str());
    let tagged = bed.json(&["amis", "ls", "--tag", "Env=prod"]);
    assert_eq!(tagged.as_array().unwrap().len(), 1);
    bed.cmd()
        .args(["ami", "list"])
        .assert()
        .success()
        .stdout(predicate::str::contains("AMI ID"))
        .stdout(predicate::str::contains(ours.as_str()));
}

// ---- delete -------------------------------------------------------------------------

#[test]
fn ami_delete_removes_snapshots_but_keeps_shared_ones() {
    let bed = TestBed::start();
    let inst = bed.instance_with_root("web", &[]);
    let r = create(&bed, &inst, &["--name", "to-delete"]);
    let ami = s(&r["image_id"]);
    let snaps = strings(&r["snapshot_ids"]);
    // Another AMI uses the first snapshot.
    let sharer = bed.image_using(&snaps[0]);

    let plan = bed.json(&["ami", "delete", &ami, "--dry-run"]);
    assert_eq!(plan[0]["result"], "would_deregister");
    assert!(bed.image(&ami).is_some(), "dry run changes nothing");

    let out = bed
        .cmd()
        .args(["ami", "delete", &ami, "-o", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("plan: deregister {ami}")),
        "{stderr}"
    );
    let res: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(res[0]["result"], "deregistered");
    assert_eq!(
        strings(&res[0]["snapshots_deleted"]),
        vec![snaps[1].clone()]
    );
    assert_eq!(
        res[0]["snapshots_kept"][0]["snapshot_id"],
        snaps[0].as_str()
    );
    assert!(s(&res[0]["snapshots_kept"][0]["reason"]).contains(&sharer));
    assert!(bed.image(&ami).is_none());
    assert!(
        bed.snapshot_exists(REGION, &snaps[0]),
        "shared snapshot kept"
    );
    assert!(!bed.snapshot_exists(REGION, &snaps[1]));

    // --keep-snapshots deregisters only.
    let r2 = create(&bed, &inst, &["--name", "keep-snaps"]);
    let res = bed.json(&["ami", "rm", &s(&r2["image_id"]), "--keep-snapshots"]);
    assert_eq!(res[0]["result"], "deregistered");
    for snap in strings(&r2["snapshot_ids"]) {
        assert!(bed.snapshot_exists(REGION, &snap));
    }
}

#[test]
fn ami_delete_refuses_amis_in_use_or_not_ours() {
    let bed = TestBed::start();
    let inst = bed.instance_with_root("web", &[]);
    let used = s(&create(&bed, &inst, &["--name", "in-use"])["image_id"]);
    let launched = bed.launch_from_image(&used);
    let templated = s(&create(&bed, &inst, &["--name", "in-template"])["image_id"]);
    let template = bed.launch_template_using("web-template", &templated);
    let free = s(&create(&bed, &inst, &["--name", "free"])["image_id"]);
    let vol = bed.volume(1, &[]);
    let foreign = bed.image_using(&bed.foreign_snapshot(&vol));

    let out = bed
        .cmd()
        .args([
            "ami", "delete", &used, &templated, &foreign, &free, "-o", "json",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "partial: one of four deregistered"
    );
    let res: Value = serde_json::from_slice(&out.stdout).unwrap();
    let by_id = |id: &str| {
        res.as_array()
            .unwrap()
            .iter()
            .find(|r| r["image_id"] == id)
            .cloned()
            .unwrap()
    };
    let r = by_id(&used);
    assert_eq!(r["result"], "refused");
    assert!(
        s(&r["reason"]).contains(&format!("instance {launched}")),
        "{r}"
    );
    let r = by_id(&templated);
    assert_eq!(r["result"], "refused");
    assert!(
        s(&r["reason"]).contains(&format!(
            "launch template {template} (web-template) version 1 (default and latest)"
        )),
        "{r}"
    );
    let r = by_id(&foreign);
    assert_eq!(r["result"], "refused");
    assert!(s(&r["reason"]).contains("not created by autosnap"));
    assert_eq!(by_id(&free)["result"], "deregistered");
    assert!(bed.image(&used).is_some() && bed.image(&foreign).is_some());

    // All refused: exit 1. --force overrides both rules.
    bed.cmd()
        .args(["ami", "delete", &used])
        .assert()
        .code(1)
        .stdout(predicate::str::contains("refused"));
    let forced = bed.json(&["ami", "delete", &used, &foreign, "--force"]);
    assert!(forced
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["result"] == "deregistered"));
    assert!(bed.image(&used).is_none() && bed.image(&foreign).is_none());
}

// ---- store and restore -----------------------------------------------------------------

#[test]
fn ami_store_and_restore_round_trip_reapplies_tags() {
    let bed = TestBed::start();
    bed.bucket("amis");
    let inst = bed.instance_with_root("web", &[("Env", "prod")]);
    let r = create(&bed, &inst, &["--name", "golden", "--tag", "Team=web"]);
    let ami = s(&r["image_id"]);
    let orig_snap_tags: Vec<_> = strings(&r["snapshot_ids"])
        .iter()
        .map(|sn| snapshot_tags(&bed, sn))
        .collect();

    let out = bed
        .cmd()
        .args(["ami", "store", &ami, "--bucket", "amis", "-o", "json"])
        .args(FAST)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("InProgress 33%"),
        "progress is reported: {stderr}"
    );
    assert!(stderr.contains("Completed 100%"), "{stderr}");
    let stored: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stored["object_key"], format!("{ami}.bin").as_str());
    assert_eq!(stored["state"], "Completed");
    assert!(!bed.s3_get("amis", &format!("{ami}.bin")).is_empty());
    let doc: Value =
        serde_json::from_slice(&bed.s3_get("amis", &format!("ami-metadata/{ami}.json"))).unwrap();
    assert_eq!(doc["stored_image"]["bucket"], "amis");
    assert_eq!(
        doc["stored_image"]["object_key"],
        format!("{ami}.bin").as_str()
    );

    // While the original exists its name is taken: an explicit name is used.
    let restored = run_json(
        &bed,
        &with(
            &[
                "ami",
                "restore",
                "--bucket",
                "amis",
                "--ami",
                &ami,
                "--name",
                "golden-copy",
            ],
            FAST,
        ),
    );
    let new = s(&restored["image_id"]);
    assert_ne!(new, ami);
    assert_eq!(restored["source_image_id"], ami.as_str());
    assert_eq!(restored["name"], "golden-copy");
    assert_eq!(restored["state"], "available");
    let tags = image_tags(&bed, &new);
    for (k, v) in image_tags(&bed, &ami) {
        if k.starts_with("autosnap:") {
            continue;
        }
        assert_eq!(tags.get(&k), Some(&v), "original tag {k} re-applied");
    }
    assert_eq!(tags["autosnap:restored-from"], ami);
    assert_eq!(tags["autosnap:managed"], "true");
    assert!(
        !tags.contains_key("autosnap:source-instance"),
        "a restore is not a backup of the instance: {tags:?}"
    );
    let new_snaps = strings(&restored["snapshot_ids"]);
    assert_eq!(new_snaps.len(), 2);
    for sn in &new_snaps {
        let t = snapshot_tags(&bed, sn);
        assert_eq!(t["autosnap:restored-from"], ami);
        assert_eq!(t["Env"], orig_snap_tags[0]["Env"]);
        assert_eq!(t["Team"], "web");
    }
    bed.cmd()
        .args([
            "ami",
            "restore",
            "--bucket",
            "amis",
            "--ami",
            &ami,
            "--name",
            "golden-copy",
        ])
        .args(FAST)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("already in use by AMI"));

    // With the original gone, --key and the original name work.
    bed.json(&["ami", "delete", &ami]);
    let again = run_json(
        &bed,
        &with(
            &[
                "ami",
                "restore",
                "--bucket",
                "amis",
                "--key",
                &format!("{ami}.bin"),
            ],
            FAST,
        ),
    );
    assert_eq!(again["name"], "golden");
    assert_eq!(image_tags(&bed, &s(&again["image_id"]))["Team"], "web");
}

#[test]
fn ami_restore_encrypt_re_encrypts_the_restored_ami() {
    let bed = TestBed::start();
    bed.bucket("amis");
    let key = bed.kms_key(Some("alias/restore"));
    let inst = bed.instance_with_root("web", &[]);
    let ami = s(&create(&bed, &inst, &["--name", "plain"])["image_id"]);
    run_json(
        &bed,
        &with(&["ami", "store", &ami, "--bucket", "amis"], FAST),
    );
    let r = run_json(
        &bed,
        &with(
            &[
                "ami",
                "restore",
                "--bucket",
                "amis",
                "--ami",
                &ami,
                "--name",
                "plain-encrypted",
                "--encrypt",
                "--kms-key",
                "alias/restore",
            ],
            FAST,
        ),
    );
    assert_eq!(r["encrypted"], true);
    assert_eq!(r["name"], "plain-encrypted");
    assert!(bed.image(&s(&r["intermediate_image_id"])).is_none());
    for sn in strings(&r["snapshot_ids"]) {
        assert_eq!(bed.snapshot(&sn).kms_key_id(), Some(key.as_str()));
        assert_eq!(snapshot_tags(&bed, &sn)["autosnap:restored-from"], ami);
    }
    assert_eq!(image_tags(&bed, &s(&r["image_id"]))["Name"], "web");
}

#[test]
fn ami_restore_failures_name_the_thing_and_the_fix() {
    let bed = TestBed::start();
    bed.bucket("amis");
    let inst = bed.instance_with_root("web", &[]);
    let ami = s(&create(&bed, &inst, &["--name", "not-stored"])["image_id"]);

    bed.cmd()
        .args([
            "ami",
            "restore",
            "--bucket",
            "missing-bucket",
            "--ami",
            &ami,
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "S3 bucket missing-bucket does not exist",
        ));
    bed.cmd()
        .args(["ami", "restore", "--bucket", "amis", "--ami", &ami])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no metadata document there"))
        .stderr(predicate::str::contains(format!(
            "s3://amis/ami-metadata/{ami}.json"
        )));
    // Metadata without a stored image.
    bed.json(&["ami", "metadata", &ami, "--bucket", "amis"]);
    bed.cmd()
        .args(["ami", "restore", "--bucket", "amis", "--ami", &ami])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("has no stored image"))
        .stderr(predicate::str::contains("autosnap ami store"));
    bed.cmd()
        .args(["ami", "restore", "--bucket", "amis", "--key", "disk.img"])
        .assert()
        .code(2);

    // A restore task whose AMI fails is cleaned up.
    let doomed = s(&create(
        &bed,
        &inst,
        &[
            "--name",
            "doomed",
            "--tag",
            "autosnap-testbed:fail=RestoreImageTask",
        ],
    )["image_id"]);
    run_json(
        &bed,
        &with(&["ami", "store", &doomed, "--bucket", "amis"], FAST),
    );
    bed.cmd()
        .args([
            "ami", "restore", "--bucket", "amis", "--ami", &doomed, "--name", "doomed-2",
        ])
        .args(FAST)
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!("restoring {doomed}")))
        .stderr(predicate::str::contains("set to fail"))
        .stderr(predicate::str::contains("nothing is left behind"));
    let names: Vec<String> = bed
        .json(&["ami", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|x| s(&x["name"]))
        .collect();
    assert!(!names.contains(&"doomed-2".to_string()), "{names:?}");
}

#[test]
fn ami_store_failure_writes_no_metadata() {
    let bed = TestBed::start();
    bed.bucket("amis");
    let inst = bed.instance_with_root("web", &[]);
    let ami = s(&create(
        &bed,
        &inst,
        &[
            "--name",
            "unstorable",
            "--tag",
            "autosnap-testbed:fail=StoreImageTask",
        ],
    )["image_id"]);
    bed.cmd()
        .args(["ami", "store", &ami, "--bucket", "amis"])
        .args(FAST)
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "did not complete; no metadata was written",
        ))
        .stderr(predicate::str::contains("set to fail"));
    let s3 = bed.s3();
    let listed = bed.block(async {
        s3.list_objects_v2()
            .bucket("amis")
            .send()
            .await
            .unwrap()
            .key_count()
    });
    assert_eq!(listed, Some(0));
    bed.cmd()
        .args(["ami", "store", &ami, "--bucket", "no-such-bucket"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "S3 bucket no-such-bucket does not exist",
        ));
}

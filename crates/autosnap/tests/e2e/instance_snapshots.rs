//! Instance targets: the snapshots of one crash-consistent set (CreateSnapshots) carry
//! `autosnap:source-volume` and their volume's own tags, as single-volume snapshots do,
//! from `snapshot create i-…` and from a policy run alike.

use std::collections::BTreeMap;

use crate::support::{TestBed, REGION};
use aws_sdk_ec2::types::{BlockDeviceMapping, EbsBlockDevice, InstanceType, Placement, Tag};
use serde_json::Value;

/// An instance with two volumes, tagged `Name=a` and `Name=b` (plus `Team=x` on the
/// first); returns (instance id, volume id of a, volume id of b).
fn instance_with_named_volumes(bed: &TestBed) -> (String, String, String) {
    let ec2 = bed.ec2(REGION);
    let (inst, vols) = bed.block(async {
        let disk = |dev: &str| {
            BlockDeviceMapping::builder()
                .device_name(dev)
                .ebs(EbsBlockDevice::builder().volume_size(2).build())
                .build()
        };
        let out = ec2
            .run_instances()
            .image_id("ami-12345678")
            .min_count(1)
            .max_count(1)
            .instance_type(InstanceType::T3Micro)
            .placement(Placement::builder().availability_zone("us-east-1a").build())
            .block_device_mappings(disk("/dev/sdf"))
            .block_device_mappings(disk("/dev/sdg"))
            .tag_specifications(crate::support::tag_spec(
                aws_sdk_ec2::types::ResourceType::Instance,
                &[("Name", "app"), ("Backup", "sets")],
            ))
            .send()
            .await
            .expect("run instance");
        let inst = &out.instances()[0];
        let by_device: BTreeMap<String, String> = inst
            .block_device_mappings()
            .iter()
            .filter_map(|m| {
                Some((
                    m.device_name()?.to_string(),
                    m.ebs()?.volume_id()?.to_string(),
                ))
            })
            .collect();
        (
            inst.instance_id().expect("id").to_string(),
            (by_device["/dev/sdf"].clone(), by_device["/dev/sdg"].clone()),
        )
    });
    let tag = |vol: &str, tags: &[(&str, &str)]| {
        let ec2 = ec2.clone();
        let vol = vol.to_string();
        let tags: Vec<Tag> = tags
            .iter()
            .map(|(k, v)| Tag::builder().key(*k).value(*v).build())
            .collect();
        bed.block(async move {
            ec2.create_tags()
                .resources(vol)
                .set_tags(Some(tags))
                .send()
                .await
                .expect("tag volume")
        });
    };
    tag(&vols.0, &[("Name", "a"), ("Team", "x")]);
    tag(&vols.1, &[("Name", "b")]);
    (inst, vols.0, vols.1)
}

/// The snapshots of `volume` that autosnap lists, as JSON objects.
fn snapshots_of(bed: &TestBed, volume: &str) -> Vec<Value> {
    bed.json(&["snapshot", "list", "--volume", volume])
        .as_array()
        .expect("array")
        .clone()
}

fn only_snapshot_of(bed: &TestBed, volume: &str) -> Value {
    let snaps = snapshots_of(bed, volume);
    assert_eq!(snaps.len(), 1, "one snapshot of {volume}: {snaps:?}");
    snaps[0].clone()
}

#[test]
fn snapshot_create_of_an_instance_tags_each_snapshot_with_its_volume() {
    let bed = TestBed::start();
    let (inst, a, b) = instance_with_named_volumes(&bed);

    let created = bed.json(&["snapshot", "create", &inst, "--tag", "Team=override"]);
    assert_eq!(created.as_array().unwrap().len(), 2, "{created}");
    // What `snapshot create` printed and what EC2 now holds agree.
    for (vol, name, team) in [(&a, "a", "override"), (&b, "b", "override")] {
        let printed = created
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["volume_id"] == vol.as_str())
            .unwrap_or_else(|| panic!("no snapshot of {vol} printed: {created}"));
        let stored = only_snapshot_of(&bed, vol);
        for s in [printed, &stored] {
            let tags = &s["tags"];
            assert_eq!(tags["autosnap:source-volume"], vol.as_str(), "{s}");
            assert_eq!(tags["autosnap:source-instance"], inst.as_str(), "{s}");
            assert_eq!(tags["Name"], name, "the volume's own Name: {s}");
            // A --tag wins over the volume's tag of the same key.
            assert_eq!(tags["Team"], team, "{s}");
            assert!(tags["autosnap:set-id"].is_string(), "{s}");
        }
    }
}

#[test]
fn no_copy_tags_leaves_the_volume_tags_off_but_not_the_source_volume() {
    let bed = TestBed::start();
    let (inst, a, b) = instance_with_named_volumes(&bed);

    bed.json(&["snapshot", "create", &inst, "--no-copy-tags"]);
    for vol in [&a, &b] {
        let s = only_snapshot_of(&bed, vol);
        let tags = &s["tags"];
        assert_eq!(tags["autosnap:source-volume"], vol.as_str(), "{s}");
        assert!(tags.get("Name").is_none(), "--no-copy-tags: {s}");
        assert!(tags.get("Team").is_none(), "--no-copy-tags: {s}");
    }
}

#[test]
fn policy_run_over_an_instance_tags_each_snapshot_with_its_volume() {
    let bed = TestBed::start();
    let (inst, a, b) = instance_with_named_volumes(&bed);
    bed.write_config(
        "autosnap.toml",
        r#"
[[policy]]
name = "app-sets"
resource = "instance"
select = [{ tags = { Backup = "sets" } }]
schedule = "6h"
retain = { last = 2 }
"#,
        0o644,
    );
    let run = bed.json(&["run"]);
    let created = run["report"]["created"].as_array().unwrap();
    assert_eq!(created.len(), 1, "{run}");
    assert_eq!(created[0]["target_id"], inst.as_str());
    for (vol, name) in [(&a, "a"), (&b, "b")] {
        let s = only_snapshot_of(&bed, vol);
        let tags = &s["tags"];
        assert_eq!(tags["autosnap:source-volume"], vol.as_str(), "{s}");
        assert_eq!(tags["autosnap:policy"], "app-sets", "{s}");
        assert_eq!(tags["Name"], name, "{s}");
        assert_eq!(tags["autosnap:source-instance"], inst.as_str(), "{s}");
    }
    // The next run sees the set as the newest backup: nothing is due.
    let again = bed.json(&["run"]);
    assert!(
        again["report"]["created"].as_array().unwrap().is_empty(),
        "{again}"
    );
}

#[test]
fn backup_iam_policy_lets_autosnap_tag_its_own_snapshots_after_create() {
    // The per-volume tags above are set after CreateSnapshots, so the least-privilege
    // policy must allow CreateTags on snapshots outside a create call, and only on
    // snapshots already marked as autosnap's.
    let bed = TestBed::offline();
    let out = bed
        .bare_cmd()
        .args(["iam-policy", "--for", "backup"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let policy: Value = serde_json::from_slice(&out.stdout).expect("policy is JSON");
    let retag = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|st| {
            st["Action"].to_string().contains("\"ec2:CreateTags\"")
                && st["Condition"]["StringEquals"]
                    .get("ec2:ResourceTag/autosnap:managed")
                    .is_some()
        })
        .unwrap_or_else(|| panic!("no CreateTags on managed snapshots: {policy}"));
    assert_eq!(
        retag["Condition"]["StringEquals"]["ec2:ResourceTag/autosnap:managed"],
        "true"
    );
    let resources = retag["Resource"].to_string();
    assert!(resources.contains("snapshot/"), "{retag}");
    assert!(!resources.contains("volume/"), "{retag}");
}

//! The EBS Snapshots Archive tier through the real binary on the test bed: what `snapshot list`
//! shows, `snapshot archive` refusing what EC2 refuses before asking it, `snapshot restore-tier`,
//! and `volume create` from an archived snapshot saying what to do.

mod support;

use serde_json::Value;
use support::{TestBed, REGION};

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

//! The inventory of the plan benchmark, shared by `benches/plan.rs` and
//! `examples/plan_million.rs` (included with `#[path]`).
//!
//! One volume target with `count` backups by policy `bench`, one every 5 minutes (about 9.5
//! years for 1,000,000) back from [`newest`], listed in an order unrelated to time (a
//! fixed-seed shuffle) but allocated in listing order, as the AWS layer builds them. Each snapshot is filled like the AWS layer fills it from
//! DescribeSnapshots, with the ownership tags autosnap puts on its backups plus the volume's
//! `Name`.

use autosnap_core::model::Snapshot;
use autosnap_core::plan::{BackupBuilder, ExistingBackup, Inventory, Target};
use autosnap_core::policy::{PolicyConfig, ResourceKind};
use autosnap_core::tags::Tags;
use chrono::{DateTime, TimeDelta, TimeZone, Utc};

pub const VOLUME: &str = "vol-0123456789abcdef0";
pub const REGION: &str = "us-east-1";

/// The newest backup's time; the benchmark plans one hour later (not due, nothing created).
pub fn newest() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 6, 1, 3, 0, 0).unwrap()
}

/// Daily at 03:00, the typical retention of `benches/retention.rs`, and a copy rule to a
/// region that holds no copies yet (so the plan also works out a copy).
pub fn policy() -> PolicyConfig {
    let p: PolicyConfig = toml::from_str(
        r#"
name = "bench"
resource = "volume"
select = [{ tags = { Backup = "daily" } }]
schedule = "0 3 * * *"
retain = { last = 3, daily = 7, weekly = 4, monthly = 12, yearly = 5, within = "2d" }
copy = [{ region = "us-west-2" }]
"#,
    )
    .expect("valid policy");
    p.validate(Some(REGION)).expect("valid policy");
    p
}

pub fn inventory(count: usize) -> Inventory {
    let target = Target {
        id: VOLUME.into(),
        kind: ResourceKind::Volume,
        region: REGION.into(),
        tags: Tags::from([
            ("Backup".to_owned(), "daily".to_owned()),
            ("Name".to_owned(), "bench-data".to_owned()),
        ]),
        name: Some("bench-data".into()),
        volume_ids: Vec::new(),
    };
    // The listing order is unrelated to time: a fixed-seed shuffle of the ages (Fisher–Yates
    // with an xorshift generator: deterministic, no extra dependency). The snapshots are
    // allocated in listing order, as the AWS layer allocates them while it reads the pages.
    let mut ages: Vec<usize> = (0..count).collect();
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in (1..ages.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ages.swap(i, (state % (i as u64 + 1)) as usize);
    }
    let newest = newest();
    // As the AWS layer does: each described snapshot becomes the planner's compact record
    // as soon as it is read, so the full descriptions never pile up.
    let mut builder = BackupBuilder::new(&[policy()]);
    let backups: Vec<ExistingBackup> = ages
        .into_iter()
        .map(|n| {
            let snapshot = Snapshot {
                storage_tier: Default::default(),
                restore_expiry: None,
                snapshot_id: format!("snap-{n:017x}"),
                volume_id: Some(VOLUME.into()),
                state: "completed".into(),
                progress: Some("100%".into()),
                start_time: Some(newest - TimeDelta::minutes(5 * n as i64)),
                size_gib: Some(8),
                encrypted: true,
                kms_key_id: None,
                description: Some(format!("autosnap policy bench: {VOLUME} (bench-data)")),
                owner_id: Some("123456789012".into()),
                managed: true,
                tags: Tags::from([
                    ("Name".to_owned(), "bench-data".to_owned()),
                    ("autosnap:managed".to_owned(), "true".to_owned()),
                    ("autosnap:policy".to_owned(), "bench".to_owned()),
                    ("autosnap:source-volume".to_owned(), VOLUME.to_owned()),
                ]),
            };
            builder.snapshot(&snapshot, REGION, Vec::new())
        })
        .collect();
    Inventory {
        targets: vec![target],
        backups,
    }
}

//! Property tests of the planner over random histories: the safety rules hold whatever
//! retention says, and running the plan then planning again creates nothing and deletes the
//! same backups.

use autosnap_core::model::Snapshot;
use autosnap_core::plan::{plan, BackupBuilder, Inventory, Plan, PlanOptions, Target};
use autosnap_core::policy::{PolicyConfig, ResourceKind};
use autosnap_core::tags::Tags;
use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use proptest::prelude::*;

const REGION: &str = "us-east-1";

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 10, 12, 0, 0).unwrap()
}

/// A described snapshot with the AMIs using it, as the AWS layer reads it.
#[derive(Debug, Clone)]
struct ExistingBackup {
    snapshot: Snapshot,
    region: String,
    in_use_by: Vec<String>,
}

#[derive(Debug, Clone)]
struct Raw {
    /// Minutes before `now` (negative: dated in the future).
    age_minutes: i64,
    state: &'static str,
    in_use: bool,
    has_time: bool,
}

fn raw() -> impl Strategy<Value = Raw> {
    (
        -600i64..(40 * 24 * 60),
        prop::sample::select(vec![
            "completed",
            "completed",
            "completed",
            "pending",
            "error",
        ]),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.97),
    )
        .prop_map(|(age_minutes, state, in_use, has_time)| Raw {
            age_minutes,
            state,
            in_use,
            has_time,
        })
}

fn policy(retain: &str, schedule: &str) -> PolicyConfig {
    let text = format!(
        "name = \"p\"\nresource = \"volume\"\nselect = [{{ tags = {{ B = \"*\" }} }}]\n\
         schedule = \"{schedule}\"\nretain = {retain}\n"
    );
    toml::from_str(&text).unwrap()
}

fn retain() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "{ last = 1 }",
        "{ last = 3 }",
        "{ daily = 3 }",
        "{ daily = 7, weekly = 2 }",
        "{ within = \"2d\" }",
        "{ hourly = 5, within_daily = \"7d\" }",
    ])
    .prop_map(str::to_owned)
}

fn target() -> Target {
    Target {
        id: "vol-0000000a".into(),
        kind: ResourceKind::Volume,
        region: REGION.into(),
        tags: Tags::from([("B".to_owned(), "1".to_owned())]),
        name: None,
        volume_ids: Vec::new(),
    }
}

fn backups(raws: &[Raw]) -> Vec<ExistingBackup> {
    raws.iter()
        .enumerate()
        .map(|(n, r)| {
            let tags = Tags::from([
                ("autosnap:managed".to_owned(), "true".to_owned()),
                ("autosnap:policy".to_owned(), "p".to_owned()),
                (
                    "autosnap:source-volume".to_owned(),
                    "vol-0000000a".to_owned(),
                ),
            ]);
            ExistingBackup {
                snapshot: Snapshot {
                    storage_tier: Default::default(),
                    restore_expiry: None,
                    snapshot_id: format!("snap-{n:08x}"),
                    volume_id: None,
                    state: r.state.into(),
                    progress: None,
                    start_time: r
                        .has_time
                        .then(|| now() - TimeDelta::minutes(r.age_minutes)),
                    size_gib: None,
                    encrypted: false,
                    kms_key_id: None,
                    description: None,
                    owner_id: None,
                    managed: true,
                    tags,
                },
                region: REGION.into(),
                in_use_by: if r.in_use {
                    vec!["ami-00000001".into()]
                } else {
                    Vec::new()
                },
            }
        })
        .collect()
}

fn run(policy: &PolicyConfig, backups: Vec<ExistingBackup>) -> Plan {
    let mut builder = BackupBuilder::new(std::slice::from_ref(policy));
    let inventory = Inventory {
        targets: vec![target()],
        backups: backups
            .iter()
            .map(|b| builder.snapshot(&b.snapshot, &b.region, b.in_use_by.clone()))
            .collect(),
    };
    plan(
        std::slice::from_ref(policy),
        &inventory,
        REGION,
        now(),
        &PlanOptions::default(),
    )
}

fn deleted(plan: &Plan) -> Vec<String> {
    plan.deletions()
        .map(|(_, _, _, d)| d.backup_id.to_string())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn safety_rules_hold_whatever_retention_says(
        raws in prop::collection::vec(raw(), 0..40),
        retain in retain(),
        schedule in prop::sample::select(vec!["0 3 * * *", "6h", "*/15 * * * *"]),
    ) {
        let policy = policy(&retain, schedule);
        let backups = backups(&raws);
        let plan = run(&policy, backups.clone());
        let by_id = |id: &str| backups.iter().find(|b| b.snapshot.snapshot_id == id).unwrap();
        for id in deleted(&plan) {
            let b = by_id(&id);
            prop_assert!(b.snapshot.state == "completed" || b.snapshot.state == "error", "{id} {}", b.snapshot.state);
            prop_assert!(b.in_use_by.is_empty(), "{id} is in use");
            let time = b.snapshot.start_time;
            prop_assert!(time.is_some_and(|t| t <= now()), "{id} at {time:?}");
        }
        // The newest completed backup (at or before now) always survives; of several from
        // the same instant, one does.
        let completed: Vec<&ExistingBackup> = backups
            .iter()
            .filter(|b| b.snapshot.state == "completed")
            .filter(|b| b.snapshot.start_time.is_some_and(|t| t <= now()))
            .collect();
        if let Some(newest) = completed.iter().map(|b| b.snapshot.start_time).max() {
            let gone = deleted(&plan);
            prop_assert!(completed
                .iter()
                .filter(|b| b.snapshot.start_time == newest)
                .any(|b| !gone.contains(&b.snapshot.snapshot_id)));
        }
        // Every backup is listed exactly once.
        let listed: usize = plan.policies[0].targets[0].groups[0].backups.len();
        prop_assert_eq!(listed, backups.len());
    }

    #[test]
    fn planning_after_running_creates_nothing_and_deletes_the_same(
        raws in prop::collection::vec(raw(), 0..40),
        retain in retain(),
        schedule in prop::sample::select(vec!["0 3 * * *", "6h", "*/15 * * * *"]),
    ) {
        let policy = policy(&retain, schedule);
        let mut backups = backups(&raws);
        let first = run(&policy, backups.clone());
        for (_, _, create) in first.creates() {
            backups.push(ExistingBackup {
                snapshot: Snapshot {
                    storage_tier: Default::default(),
                    restore_expiry: None,
                    snapshot_id: "snap-ffffffff".into(),
                    volume_id: None,
                    state: "pending".into(),
                    progress: None,
                    start_time: Some(now()),
                    size_gib: None,
                    encrypted: false,
                    kms_key_id: None,
                    description: None,
                    owner_id: None,
                    managed: true,
                    tags: create.tags.clone(),
                },
                region: create.region.clone(),
                in_use_by: Vec::new(),
            });
        }
        let second = run(&policy, backups);
        prop_assert_eq!(second.creates().count(), 0);
        prop_assert_eq!(deleted(&first), deleted(&second));
    }
}

/// The case proptest found: two completed backups from the same instant are the newest; the
/// plan keeps one of them (which one is the planner's choice).
#[test]
fn of_tied_newest_backups_one_survives() {
    let raw = |age_minutes| Raw {
        age_minutes,
        state: "completed",
        in_use: false,
        has_time: true,
    };
    let backups = backups(&[raw(4849), raw(4849), raw(4850)]);
    let plan = run(&policy("{ daily = 3 }", "0 3 * * *"), backups);
    let gone = deleted(&plan);
    assert!(
        !gone.contains(&"snap-00000000".to_string())
            || !gone.contains(&"snap-00000001".to_string()),
        "{gone:?}"
    );
}

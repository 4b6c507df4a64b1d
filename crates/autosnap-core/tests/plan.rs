//! The planner, scenario by scenario: due / not due, idempotent re-runs, tag variables,
//! instance sets, cross-region copies and their retention, what prune spares, future-dated
//! and failed backups, unprotected targets, and the JSON shape of `plan -o json`.

use autosnap_core::ami::{ImageBlockDevice, ImageDetails};
use autosnap_core::model::Snapshot;
use autosnap_core::plan::{
    unprotected, BackupBuilder, BackupDecision, CopySource, GroupPlan, Plan, PlanOptions, Target,
    TargetPlan,
};
use autosnap_core::policy::{BackupKind, PolicyConfig, ResourceKind};
use autosnap_core::schedule::HealthState;
use autosnap_core::tags::Tags;
use chrono::{DateTime, NaiveDateTime, Utc};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A backup as the AWS layer sees it (a described snapshot, its region, the AMIs using it),
/// turned into the planner's compact form by [`plan`], as the AWS layer does.
#[derive(Debug, Clone)]
struct ExistingBackup {
    snapshot: Snapshot,
    region: String,
    in_use_by: Vec<String>,
}

struct Inventory {
    targets: Vec<Target>,
    backups: Vec<ExistingBackup>,
}

fn plan(
    policies: &[PolicyConfig],
    inventory: &Inventory,
    region: &str,
    now: DateTime<Utc>,
    options: &PlanOptions,
) -> Plan {
    let mut builder = BackupBuilder::new(policies);
    let inventory = autosnap_core::plan::Inventory {
        targets: inventory.targets.clone(),
        backups: inventory
            .backups
            .iter()
            .map(|b| builder.snapshot(&b.snapshot, &b.region, b.in_use_by.clone()))
            .collect(),
    };
    autosnap_core::plan::plan(policies, &inventory, region, now, options)
}

const REGION: &str = "us-east-1";
const COPY_REGION: &str = "us-west-2";

/// `"2026-01-10 12:00"` as UTC.
fn t(s: &str) -> DateTime<Utc> {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M")
        .unwrap_or_else(|e| panic!("bad time {s:?}: {e}"))
        .and_utc()
}

fn now() -> DateTime<Utc> {
    t("2026-01-10 12:00")
}

fn tags(pairs: &[(&str, &str)]) -> Tags {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A policy from the body of a `[[policy]]` table.
fn policy(toml_text: &str) -> PolicyConfig {
    let p: PolicyConfig =
        toml::from_str(toml_text).unwrap_or_else(|e| panic!("bad policy:\n{toml_text}\n{e}"));
    p.validate(Some(REGION))
        .unwrap_or_else(|e| panic!("invalid policy: {e}"));
    p
}

/// The daily volume policy most scenarios use.
fn daily(retain: &str) -> PolicyConfig {
    policy(&format!(
        r#"
name = "prod-daily"
resource = "volume"
select = [{{ tags = {{ Backup = "daily" }} }}]
schedule = "0 3 * * *"
retain = {retain}
"#
    ))
}

fn volume(id: &str, extra_tags: &[(&str, &str)]) -> Target {
    let mut t = tags(&[("Backup", "daily")]);
    t.extend(tags(extra_tags));
    Target {
        id: id.into(),
        kind: ResourceKind::Volume,
        region: REGION.into(),
        name: t.get("Name").cloned(),
        tags: t,
        volume_ids: Vec::new(),
    }
}

fn instance(id: &str, volumes: &[&str]) -> Target {
    Target {
        id: id.into(),
        kind: ResourceKind::Instance,
        region: REGION.into(),
        tags: tags(&[("Role", "db")]),
        name: None,
        volume_ids: volumes.iter().map(|v| v.to_string()).collect(),
    }
}

/// A snapshot with the given tags.
fn snapshot(id: &str, time: Option<&str>, state: &str, tags: Tags) -> Snapshot {
    Snapshot {
        storage_tier: Default::default(),
        restore_expiry: None,
        snapshot_id: id.into(),
        volume_id: None,
        state: state.into(),
        progress: None,
        start_time: time.map(t),
        size_gib: Some(8),
        encrypted: false,
        kms_key_id: None,
        description: None,
        owner_id: None,
        managed: autosnap_core::tags::is_managed(&tags),
        tags,
    }
}

/// A completed backup that `policy` made of volume `source`, in `region`.
fn backup(policy: &str, source: &str, id: &str, time: &str, region: &str) -> ExistingBackup {
    ExistingBackup {
        snapshot: snapshot(
            id,
            Some(time),
            "completed",
            tags(&[
                ("autosnap:managed", "true"),
                ("autosnap:policy", policy),
                ("autosnap:source-volume", source),
            ]),
        ),
        region: region.into(),
        in_use_by: Vec::new(),
    }
}

/// A source backup of `vol-0000000a` by `prod-daily` in the source region.
fn b(id: &str, time: &str) -> ExistingBackup {
    backup("prod-daily", "vol-0000000a", id, time, REGION)
}

/// A copy of `source_id` in the copy region.
fn copy_of(source_id: &str, id: &str, time: &str) -> ExistingBackup {
    let mut c = backup("prod-daily", "vol-0000000a", id, time, COPY_REGION);
    c.snapshot
        .tags
        .insert("autosnap:source-snapshot".into(), source_id.into());
    c.snapshot
        .tags
        .insert("autosnap:source-region".into(), REGION.into());
    c
}

/// A member of instance set `set` of `i-0000000a` by `db-sets`.
fn set_member(set: &str, id: &str, time: &str, state: &str) -> ExistingBackup {
    ExistingBackup {
        snapshot: snapshot(
            id,
            Some(time),
            state,
            tags(&[
                ("autosnap:managed", "true"),
                ("autosnap:policy", "db-sets"),
                ("autosnap:source-instance", "i-0000000a"),
                ("autosnap:source-volume", "vol-0000000a"),
                ("autosnap:set-id", set),
            ]),
        ),
        region: REGION.into(),
        in_use_by: Vec::new(),
    }
}

fn run_plan(policies: &[PolicyConfig], targets: Vec<Target>, backups: Vec<ExistingBackup>) -> Plan {
    let inventory = Inventory { targets, backups };
    plan(policies, &inventory, REGION, now(), &PlanOptions::default())
}

fn only_target(plan: &Plan) -> &TargetPlan {
    assert_eq!(plan.policies.len(), 1, "{plan:#?}");
    assert_eq!(plan.policies[0].targets.len(), 1, "{plan:#?}");
    &plan.policies[0].targets[0]
}

fn group<'p>(target: &'p TargetPlan, region: &str) -> &'p GroupPlan {
    target
        .groups
        .iter()
        .find(|g| g.region == region)
        .unwrap_or_else(|| panic!("no group in {region}: {target:#?}"))
}

/// A group as readable lines: `id  keep|delete|protected  reasons`, newest first.
fn lines(group: &GroupPlan) -> Vec<String> {
    group.backups.iter().map(line).collect()
}

fn line(d: &BackupDecision) -> String {
    let verdict = match (&d.protected, d.keep, d.delete) {
        (Some(why), _, _) => format!("protected ({why})"),
        (None, true, _) => "keep".to_owned(),
        (None, false, true) => "delete".to_owned(),
        (None, false, false) => unreachable!("neither kept, deleted nor protected: {d:?}"),
    };
    let mut text = format!("{} {verdict}", d.backup_id);
    if !d.reasons.is_empty() {
        text.push_str(&format!(" [{}]", d.reasons.join(", ")));
    }
    text
}

/// Daily backups at 03:00 from `first` day of January 2026 to `last`, ids `s-DD`.
fn dailies(first: u32, last: u32) -> Vec<ExistingBackup> {
    (first..=last)
        .map(|d| b(&format!("snap-{d:02}"), &format!("2026-01-{d:02} 03:00")))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Due / not due
// ---------------------------------------------------------------------------------------------

#[test]
fn a_target_without_backups_is_due_and_gets_a_create() {
    let plan = run_plan(
        &[daily("{ daily = 7 }")],
        vec![volume("vol-0000000a", &[("Name", "pg-data")])],
        vec![],
    );
    let target = only_target(&plan);
    assert!(target.due);
    assert_eq!(target.due_reason, "no backup yet");
    assert_eq!(target.health.state, HealthState::Missing);
    assert_eq!(target.next_due, now());
    assert_eq!(target.backup_count, 0);
    let create = target.create.as_ref().expect("a create");
    assert_eq!(create.target_id, "vol-0000000a");
    assert_eq!(create.region, REGION);
    assert_eq!(
        create.description,
        "autosnap policy prod-daily: vol-0000000a (pg-data)"
    );
    assert_eq!(plan.creates().count(), 1);
    assert_eq!(plan.deletions().count(), 0);
}

#[test]
fn a_target_whose_slot_is_covered_is_not_due() {
    let plan = run_plan(
        &[daily("{ daily = 7 }")],
        vec![volume("vol-0000000a", &[])],
        dailies(1, 10),
    );
    let target = only_target(&plan);
    assert!(!target.due, "{}", target.due_reason);
    assert_eq!(
        target.due_reason,
        "newest backup 2026-01-10 03:00 UTC covers the 2026-01-10 03:00 UTC slot; \
         next slot 2026-01-11 03:00 UTC"
    );
    assert_eq!(target.next_due, t("2026-01-11 03:00"));
    assert_eq!(target.health.state, HealthState::Ok);
    assert!(target.create.is_none());
    assert_eq!(target.newest_backup, Some(t("2026-01-10 03:00")));
    assert_eq!(target.oldest_backup, Some(t("2026-01-01 03:00")));
    assert_eq!(target.backup_count, 10);
    // Daily 7 of 10: the three oldest go.
    assert_eq!(
        lines(group(target, REGION)),
        [
            "snap-10 protected (newest backup) [daily snapshot]",
            "snap-09 keep [daily snapshot]",
            "snap-08 keep [daily snapshot]",
            "snap-07 keep [daily snapshot]",
            "snap-06 keep [daily snapshot]",
            "snap-05 keep [daily snapshot]",
            "snap-04 keep [daily snapshot]",
            "snap-03 delete",
            "snap-02 delete",
            "snap-01 delete",
        ]
    );
}

#[test]
fn a_missed_slot_makes_the_target_due_and_late() {
    let plan = run_plan(
        &[daily("{ daily = 7 }")],
        vec![volume("vol-0000000a", &[])],
        dailies(1, 9),
    );
    let target = only_target(&plan);
    assert!(target.due);
    assert_eq!(
        target.due_reason,
        "newest backup 2026-01-09 03:00 UTC is before the 2026-01-10 03:00 UTC slot"
    );
    assert_eq!(target.health.state, HealthState::Late);
    assert!(target.create.is_some());
}

// ---------------------------------------------------------------------------------------------
// Idempotence
// ---------------------------------------------------------------------------------------------

/// Plans, "runs" the creates (adds the new backups, pending, dated `now`, with the planned
/// tags) and plans again at the same `now`.
fn plan_run_plan(
    policies: &[PolicyConfig],
    targets: Vec<Target>,
    backups: Vec<ExistingBackup>,
) -> (Plan, Plan) {
    let first = run_plan(policies, targets.clone(), backups.clone());
    let mut after = backups;
    for (n, (_, _, create)) in first.creates().enumerate() {
        after.push(ExistingBackup {
            snapshot: snapshot(
                &format!("snap-new{n:04}"),
                Some("2026-01-10 12:00"),
                "pending",
                create.tags.clone(),
            ),
            region: create.region.clone(),
            in_use_by: Vec::new(),
        });
    }
    let second = run_plan(policies, targets, after);
    (first, second)
}

fn deleted_ids(plan: &Plan) -> Vec<String> {
    plan.deletions()
        .map(|(_, _, _, d)| d.backup_id.to_string())
        .collect()
}

#[test]
fn running_the_plan_twice_creates_nothing_the_second_time() {
    let policies = [
        daily("{ last = 2, within = \"2d\" }"),
        policy(
            r#"
name = "every-6h"
resource = "volume"
select = [{ tags = { Tier = "hot" } }]
schedule = "6h"
retain = { last = 3 }
"#,
        ),
    ];
    let targets = vec![
        volume("vol-0000000a", &[]),
        volume("vol-0000000b", &[("Tier", "hot")]),
        volume("vol-0000000c", &[]),
    ];
    let mut backups = dailies(1, 9);
    backups.push(backup(
        "every-6h",
        "vol-0000000b",
        "snap-hot",
        "2026-01-10 05:00",
        REGION,
    ));
    let (first, second) = plan_run_plan(&policies, targets, backups);

    let creates: Vec<(&str, &str)> = first
        .creates()
        .map(|(p, t, _)| (p.policy.as_str(), t.target_id.as_str()))
        .collect();
    assert_eq!(
        creates,
        [
            ("prod-daily", "vol-0000000a"),
            ("prod-daily", "vol-0000000b"),
            ("prod-daily", "vol-0000000c"),
            ("every-6h", "vol-0000000b"),
        ]
    );
    assert_eq!(second.creates().count(), 0, "{second:#?}");
    for (_, target) in second
        .policies
        .iter()
        .flat_map(|p| p.targets.iter().map(move |t| (p, t)))
    {
        assert!(!target.due, "{}: {}", target.target_id, target.due_reason);
        assert_eq!(target.health.state, HealthState::Ok);
    }
    // What the first plan said run would delete after creating is what the second deletes.
    assert!(!deleted_ids(&first).is_empty());
    assert_eq!(deleted_ids(&first), deleted_ids(&second));
}

#[test]
fn retention_counts_the_backup_about_to_be_created() {
    // last 2: with the new backup, only snap-09 of the existing ones stays.
    let plan = run_plan(
        &[daily("{ last = 2 }")],
        vec![volume("vol-0000000a", &[])],
        dailies(7, 9),
    );
    let target = only_target(&plan);
    assert!(target.create.is_some());
    assert_eq!(
        lines(group(target, REGION)),
        [
            "snap-09 protected (newest completed backup) [last snapshot]",
            "snap-08 delete",
            "snap-07 delete",
        ]
    );
}

#[test]
fn a_backup_dated_exactly_now_is_the_latest_for_within_windows() {
    // Taken at `now` (the run that just happened): it anchors `within 1d`, so snap-09, 33h
    // older, falls outside the window. Were it ignored as "future", snap-09 would anchor the
    // window and be kept.
    let mut backups = dailies(8, 9);
    backups.push(b("snap-now", "2026-01-10 12:00"));
    let plan = run_plan(
        &[daily("{ within = \"1d\" }")],
        vec![volume("vol-0000000a", &[])],
        backups,
    );
    let target = only_target(&plan);
    assert!(!target.due, "{}", target.due_reason);
    assert_eq!(
        lines(group(target, REGION)),
        [
            "snap-now protected (newest backup) [within 1d]",
            "snap-09 delete",
            "snap-08 delete",
        ]
    );
}

#[test]
fn without_creates_prune_keeps_the_newest_backup_and_plans_no_new_copy() {
    // `prune`: the target is due, but nothing is created, so retention must not count a new
    // backup and the newest existing one stays protected.
    let mut backups = dailies(7, 9);
    backups.push(copy_of("snap-08", "snap-c08", "2026-01-08 04:00"));
    let options = PlanOptions {
        include_creates: false,
        ..PlanOptions::default()
    };
    let inventory = Inventory {
        targets: vec![volume("vol-0000000a", &[])],
        backups,
    };
    let plan = plan(
        &[copying("{ last = 1 }", "")],
        &inventory,
        REGION,
        now(),
        &options,
    );
    let target = only_target(&plan);
    assert!(target.due);
    assert!(target.create.is_none());
    assert_eq!(
        lines(group(target, REGION)),
        [
            "snap-09 protected (newest backup) [last snapshot]",
            "snap-08 delete",
            "snap-07 delete",
        ]
    );
    // No "copy the new backup": the newest existing one is copied instead.
    assert_eq!(
        target.copies[0].source,
        CopySource::Existing {
            backup_id: "snap-09".into(),
            snapshot_ids: vec!["snap-09".into()],
        }
    );
}

// ---------------------------------------------------------------------------------------------
// Tags and variables
// ---------------------------------------------------------------------------------------------

#[test]
fn create_tags_layer_volume_default_policy_and_ownership_tags() {
    let p = policy(
        r#"
name = "prod-daily"
resource = "volume"
select = [{ tags = { Backup = "daily" } }]
schedule = "0 3 * * *"
retain = { daily = 7 }
tags = { Team = "$(tag:Team)", Source = "$(volume-id)", Label = "$(name)@$(region) $(date)T$(time)", Owner = "$(tag:Owner)", Instance = "$(instance-id)", Policy = "$(policy)", CostCenter = "backup" }
description = "$(policy): $(name) ($(target-id))"
"#,
    );
    let target = volume(
        "vol-0000000a",
        &[
            ("Name", "pg-data"),
            ("Team", "db"),
            ("CostCenter", "db-team"),
            ("aws:cloudformation:stack-name", "stack"),
        ],
    );
    let options = PlanOptions {
        copy_volume_tags: true,
        default_tags: tags(&[("ManagedBy", "autosnap"), ("CostCenter", "ops")]),
        ..PlanOptions::default()
    };
    let inventory = Inventory {
        targets: vec![target.clone()],
        backups: vec![],
    };
    let planned = plan(
        std::slice::from_ref(&p),
        &inventory,
        REGION,
        t("2026-01-10 12:34"),
        &options,
    );
    let create = only_target(&planned).create.clone().unwrap();
    assert_eq!(
        create.tags,
        tags(&[
            // the volume's own tags (not aws:)
            ("Backup", "daily"),
            ("Name", "pg-data"),
            // default tags override the volume's; policy tags override both
            ("ManagedBy", "autosnap"),
            ("CostCenter", "backup"),
            // policy tags, expanded
            ("Team", "db"),
            ("Source", "vol-0000000a"),
            ("Label", "pg-data@us-east-1 2026-01-10T123400"),
            ("Owner", ""),
            ("Instance", ""),
            ("Policy", "prod-daily"),
            // ownership
            ("autosnap:managed", "true"),
            ("autosnap:policy", "prod-daily"),
            ("autosnap:source-volume", "vol-0000000a"),
        ])
    );
    assert_eq!(create.description, "prod-daily: pg-data (vol-0000000a)");
    assert!(!create.copy_tags_from_volumes);

    // Without copy_volume_tags the volume's tags stay behind.
    let options = PlanOptions {
        copy_volume_tags: false,
        default_tags: Tags::new(),
        ..PlanOptions::default()
    };
    let planned = plan(&[p], &inventory, REGION, now(), &options);
    let create = only_target(&planned).create.clone().unwrap();
    assert!(!create.tags.contains_key("Name"), "{:?}", create.tags);
    assert!(!create.tags.contains_key("Backup"), "{:?}", create.tags);
    assert_eq!(create.tags["CostCenter"], "backup");
}

// ---------------------------------------------------------------------------------------------
// Instance sets
// ---------------------------------------------------------------------------------------------

fn sets_policy(retain: &str) -> PolicyConfig {
    policy(&format!(
        r#"
name = "db-sets"
resource = "instance"
select = [{{ tags = {{ Role = "db" }} }}]
exclude = {{ ids = ["vol-0000000c"] }}
exclude_boot = true
schedule = "0 3 * * *"
retain = {retain}
"#
    ))
}

#[test]
fn instance_sets_are_kept_or_removed_as_a_whole() {
    let backups = vec![
        // set-4: newest, both completed
        set_member("set-4", "snap-4a", "2026-01-10 03:00", "completed"),
        set_member("set-4", "snap-4b", "2026-01-10 03:01", "completed"),
        // set-3: the set's time is its earliest snapshot
        set_member("set-3", "snap-3b", "2026-01-09 03:02", "completed"),
        set_member("set-3", "snap-3a", "2026-01-09 03:00", "completed"),
        // set-2 and set-1: beyond last = 2
        set_member("set-2", "snap-2a", "2026-01-08 03:00", "completed"),
        set_member("set-2", "snap-2b", "2026-01-08 03:00", "completed"),
        set_member("set-1", "snap-1a", "2026-01-07 03:00", "completed"),
        set_member("set-1", "snap-1b", "2026-01-07 03:00", "pending"),
    ];
    let plan = run_plan(
        &[sets_policy("{ last = 2 }")],
        vec![instance(
            "i-0000000a",
            &["vol-0000000a", "vol-0000000b", "vol-0000000c"],
        )],
        backups,
    );
    let target = only_target(&plan);
    assert!(!target.due, "{}", target.due_reason);
    assert_eq!(target.backup_count, 4);
    let g = group(target, REGION);
    assert_eq!(
        lines(g),
        [
            "set-4 protected (newest backup) [last snapshot]",
            "set-3 keep [last snapshot]",
            "set-2 delete",
            // one pending snapshot protects the whole set
            "set-1 protected (pending)",
        ]
    );
    let set3 = &g.backups[1];
    assert_eq!(set3.time, t("2026-01-09 03:00"));
    assert_eq!(set3.snapshot_ids.as_slice(), ["snap-3a", "snap-3b"]);
    let deleted: Vec<Vec<String>> = plan
        .deletions()
        .map(|(_, _, _, d)| d.snapshot_ids.iter().map(|s| s.to_string()).collect())
        .collect();
    assert_eq!(deleted, [vec!["snap-2a".to_owned(), "snap-2b".to_owned()]]);
}

#[test]
fn one_snapshot_used_by_an_ami_protects_its_set() {
    let mut in_use = set_member("set-1", "snap-1b", "2026-01-07 03:00", "completed");
    in_use.in_use_by = vec!["ami-0000000000000001a".into()];
    let backups = vec![
        set_member("set-2", "snap-2a", "2026-01-10 03:00", "completed"),
        set_member("set-1", "snap-1a", "2026-01-07 03:00", "completed"),
        in_use,
    ];
    let plan = run_plan(
        &[sets_policy("{ last = 1 }")],
        vec![instance("i-0000000a", &["vol-0000000a"])],
        backups,
    );
    assert_eq!(
        lines(group(only_target(&plan), REGION)),
        [
            "set-2 protected (newest backup) [last snapshot]",
            "set-1 protected (used by AMI ami-0000000000000001a)",
        ]
    );
}

#[test]
fn instance_creates_carry_the_set_options() {
    let plan = run_plan(
        &[sets_policy("{ last = 2 }")],
        vec![instance(
            "i-0000000a",
            &["vol-0000000a", "vol-0000000b", "vol-0000000c"],
        )],
        vec![],
    );
    let create = only_target(&plan).create.clone().unwrap();
    assert_eq!(create.kind, ResourceKind::Instance);
    assert!(create.exclude_boot);
    assert_eq!(create.exclude_volumes, ["vol-0000000c"]);
    assert!(create.copy_tags_from_volumes);
    assert_eq!(create.tags["autosnap:source-instance"], "i-0000000a");
    assert!(!create.tags.contains_key("autosnap:source-volume"));
    assert!(
        !create.tags.contains_key("autosnap:set-id"),
        "added by the executor"
    );
    assert!(
        !create.tags.contains_key("Role"),
        "instance tags are not copied"
    );
}

// ---------------------------------------------------------------------------------------------
// Copies
// ---------------------------------------------------------------------------------------------

fn copying(retain: &str, copy_retain: &str) -> PolicyConfig {
    policy(&format!(
        r#"
name = "prod-daily"
resource = "volume"
select = [{{ tags = {{ Backup = "daily" }} }}]
schedule = "0 3 * * *"
retain = {retain}
copy = [{{ region = "{COPY_REGION}", kms_key = "alias/backup"{copy_retain} }}]
"#
    ))
}

#[test]
fn a_planned_create_is_copied_once_it_completes() {
    let plan = run_plan(
        &[copying("{ daily = 7 }", "")],
        vec![volume("vol-0000000a", &[])],
        dailies(1, 9),
    );
    let target = only_target(&plan);
    assert!(target.create.is_some());
    assert_eq!(target.copies.len(), 1);
    let copy = &target.copies[0];
    assert_eq!(copy.source, CopySource::New);
    assert_eq!(copy.from_region, REGION);
    assert_eq!(copy.to_region, COPY_REGION);
    assert_eq!(copy.kms_key.as_deref(), Some("alias/backup"));
    assert_eq!(copy.reason, "copy the new backup after it completes");
}

#[test]
fn the_newest_completed_backup_without_a_copy_is_copied() {
    let mut backups = dailies(8, 10);
    backups.push(copy_of("snap-08", "snap-c08", "2026-01-08 04:00"));
    let plan = run_plan(
        &[copying("{ daily = 7 }", "")],
        vec![volume("vol-0000000a", &[])],
        backups,
    );
    let target = only_target(&plan);
    assert!(target.create.is_none());
    assert_eq!(target.copies.len(), 1, "{target:#?}");
    assert_eq!(
        target.copies[0].source,
        CopySource::Existing {
            backup_id: "snap-10".into(),
            snapshot_ids: vec!["snap-10".into()],
        }
    );
    assert_eq!(
        target.copies[0].reason,
        "newest completed backup snap-10 (2026-01-10 03:00 UTC) has no copy in us-west-2"
    );
    // snap-09 is never copied after the fact.
    assert_eq!(plan.copies().count(), 1);
}

#[test]
fn nothing_is_copied_when_the_newest_completed_backup_has_a_copy() {
    let mut backups = dailies(8, 10);
    backups.push(copy_of("snap-10", "snap-c10", "2026-01-10 04:00"));
    // A newer backup still pending is not copied yet.
    let mut pending = b("snap-11", "2026-01-10 11:00");
    pending.snapshot.state = "pending".into();
    backups.push(pending);
    let plan = run_plan(
        &[copying("{ daily = 7 }", "")],
        vec![volume("vol-0000000a", &[])],
        backups,
    );
    let target = only_target(&plan);
    assert!(target.create.is_none());
    assert!(target.copies.is_empty(), "{:#?}", target.copies);
}

#[test]
fn older_backups_are_never_backfilled() {
    // The newest completed backup (snap-10) has no copy, but a newer one (dated in the
    // future, so it is not a candidate) does: copying snap-10 now would be a backfill.
    let mut backups = dailies(9, 10);
    backups.push(b("snap-99", "2026-01-11 03:00"));
    backups.push(copy_of("snap-99", "snap-c99", "2026-01-10 05:00"));
    let plan = run_plan(
        &[copying("{ daily = 7 }", "")],
        vec![volume("vol-0000000a", &[])],
        backups,
    );
    let target = only_target(&plan);
    assert!(target.copies.is_empty(), "{:#?}", target.copies);
}

#[test]
fn a_partly_copied_set_gets_its_missing_snapshots_copied() {
    let p = policy(&format!(
        r#"
name = "db-sets"
resource = "instance"
select = [{{ tags = {{ Role = "db" }} }}]
schedule = "1d"
retain = {{ last = 3 }}
copy = [{{ region = "{COPY_REGION}" }}]
"#
    ));
    let mut copied = set_member("set-1", "snap-c1a", "2026-01-10 04:00", "completed");
    copied.region = COPY_REGION.into();
    copied
        .snapshot
        .tags
        .insert("autosnap:source-snapshot".into(), "snap-1a".into());
    let backups = vec![
        set_member("set-1", "snap-1a", "2026-01-10 03:00", "completed"),
        set_member("set-1", "snap-1b", "2026-01-10 03:00", "completed"),
        copied,
    ];
    let plan = run_plan(
        &[p],
        vec![instance("i-0000000a", &["vol-0000000a"])],
        backups,
    );
    let target = only_target(&plan);
    assert!(target.create.is_none(), "{}", target.due_reason);
    assert_eq!(
        target.copies[0].source,
        CopySource::Existing {
            backup_id: "set-1".into(),
            snapshot_ids: vec!["snap-1b".into()],
        }
    );
    assert_eq!(
        target.copies[0].reason,
        "1 of 2 snapshots of the newest completed backup set-1 (2026-01-10 03:00 UTC) have no \
         copy in us-west-2"
    );
    // The copy region's group holds the copied set.
    assert_eq!(
        lines(group(target, COPY_REGION)),
        ["set-1 protected (newest backup) [last snapshot]"]
    );
}

#[test]
fn copies_have_their_own_retention_in_their_region() {
    let mut backups = dailies(6, 10);
    for d in 6..=10 {
        backups.push(copy_of(
            &format!("snap-{d:02}"),
            &format!("snap-c{d:02}"),
            &format!("2026-01-{d:02} 04:00"),
        ));
    }
    let plan = run_plan(
        &[copying("{ daily = 7 }", ", retain = { last = 2 }")],
        vec![volume("vol-0000000a", &[])],
        backups,
    );
    let target = only_target(&plan);
    assert!(target.copies.is_empty(), "{:#?}", target.copies);
    let source = group(target, REGION);
    assert_eq!(source.retention, "keep daily 7");
    assert!(
        source.backups.iter().all(|d| !d.delete),
        "{:?}",
        lines(source)
    );
    let copies = group(target, COPY_REGION);
    assert_eq!(copies.retention, "keep last 2");
    assert_eq!(
        lines(copies),
        [
            "snap-c10 protected (newest backup) [last snapshot]",
            "snap-c09 keep [last snapshot]",
            "snap-c08 delete",
            "snap-c07 delete",
            "snap-c06 delete",
        ]
    );
    let deleted: Vec<(&str, &str)> = plan
        .deletions()
        .map(|(_, _, g, d)| (g.region.as_str(), d.backup_id.as_str()))
        .collect();
    assert_eq!(
        deleted,
        [
            (COPY_REGION, "snap-c08"),
            (COPY_REGION, "snap-c07"),
            (COPY_REGION, "snap-c06")
        ]
    );
}

#[test]
fn copy_retention_defaults_to_the_policys() {
    let mut backups = dailies(10, 10);
    backups.push(copy_of("snap-10", "snap-c10", "2026-01-10 04:00"));
    let plan = run_plan(
        &[copying("{ daily = 7 }", "")],
        vec![volume("vol-0000000a", &[])],
        backups,
    );
    assert_eq!(
        group(only_target(&plan), COPY_REGION).retention,
        "keep daily 7"
    );
}

// ---------------------------------------------------------------------------------------------
// What prune spares
// ---------------------------------------------------------------------------------------------

#[test]
fn prune_spares_unmanaged_other_policy_in_use_pending_and_newest_snapshots() {
    let mut unmanaged = b("snap-unmanaged", "2026-01-01 03:00");
    unmanaged.snapshot.tags.remove("autosnap:managed");
    let mut managed_false = b("snap-managed-false", "2026-01-01 03:00");
    managed_false
        .snapshot
        .tags
        .insert("autosnap:managed".into(), "false".into());
    let other_policy = backup(
        "other",
        "vol-0000000a",
        "snap-other",
        "2026-01-01 03:00",
        REGION,
    );
    let other_region = backup(
        "prod-daily",
        "vol-0000000a",
        "snap-eu",
        "2026-01-01 03:00",
        "eu-west-1",
    );
    let other_volume = backup(
        "prod-daily",
        "vol-0000000f",
        "snap-vol-f",
        "2026-01-01 03:00",
        REGION,
    );
    let mut in_use = b("snap-in-use", "2026-01-02 03:00");
    in_use.in_use_by = vec!["ami-0000000000000002b".into()];
    let mut pending = b("snap-pending", "2026-01-03 03:00");
    pending.snapshot.state = "pending".into();
    let backups = vec![
        unmanaged,
        managed_false,
        other_policy,
        other_region,
        other_volume,
        in_use,
        pending,
        b("snap-old", "2026-01-04 03:00"),
        b("snap-newest", "2026-01-10 03:00"),
    ];
    let plan = run_plan(
        &[daily("{ last = 1 }")],
        vec![volume("vol-0000000a", &[])],
        backups,
    );
    let target = only_target(&plan);
    assert_eq!(
        lines(group(target, REGION)),
        [
            "snap-newest protected (newest backup) [last snapshot]",
            "snap-old delete",
            "snap-pending protected (pending)",
            "snap-in-use protected (used by AMI ami-0000000000000002b)",
        ]
    );
    assert_eq!(deleted_ids(&plan), ["snap-old"]);
}

#[test]
fn the_newest_completed_backup_is_kept_while_a_newer_one_is_pending() {
    let mut backups = dailies(8, 9);
    let mut pending = b("snap-10", "2026-01-10 03:00");
    pending.snapshot.state = "pending".into();
    backups.push(pending);
    let plan = run_plan(
        &[daily("{ last = 1 }")],
        vec![volume("vol-0000000a", &[])],
        backups,
    );
    let target = only_target(&plan);
    assert!(
        !target.due,
        "a pending backup counts: {}",
        target.due_reason
    );
    assert_eq!(
        lines(group(target, REGION)),
        [
            "snap-10 protected (pending, newest backup) [last snapshot]",
            "snap-09 protected (newest completed backup)",
            "snap-08 delete",
        ]
    );
}

#[test]
fn backups_dated_in_the_future_are_protected_and_do_not_count() {
    let mut backups = dailies(8, 9);
    backups.push(b("snap-future", "2026-01-12 03:00"));
    let plan = run_plan(
        &[daily("{ last = 1 }")],
        vec![volume("vol-0000000a", &[])],
        backups,
    );
    let target = only_target(&plan);
    // The future backup does not cover today's slot.
    assert!(target.due);
    assert_eq!(
        target.due_reason,
        "newest backup 2026-01-09 03:00 UTC is before the 2026-01-10 03:00 UTC slot"
    );
    assert_eq!(target.newest_backup, Some(t("2026-01-09 03:00")));
    // A create is planned, so the new backup is the newest; snap-09 is the newest completed.
    assert_eq!(
        lines(group(target, REGION)),
        [
            "snap-future protected (dated in the future) [last snapshot]",
            "snap-09 protected (newest completed backup)",
            "snap-08 delete",
        ]
    );
}

#[test]
fn failed_backups_do_not_count_as_newest_but_are_pruned() {
    let mut backups = dailies(7, 9);
    let mut failed = b("snap-10", "2026-01-10 03:00");
    failed.snapshot.state = "error".into();
    backups.push(failed);
    let mut old_failed = b("snap-06", "2026-01-06 03:00");
    old_failed.snapshot.state = "error".into();
    backups.push(old_failed);
    let plan = run_plan(
        &[daily("{ last = 2 }")],
        vec![volume("vol-0000000a", &[])],
        backups,
    );
    let target = only_target(&plan);
    assert!(target.due, "a failed snapshot does not cover the slot");
    assert_eq!(target.newest_backup, Some(t("2026-01-09 03:00")));
    assert_eq!(target.health.state, HealthState::Late);
    assert_eq!(
        lines(group(target, REGION)),
        [
            "snap-10 keep [last snapshot]",
            "snap-09 protected (newest completed backup)",
            "snap-08 delete",
            "snap-07 delete",
            "snap-06 delete",
        ]
    );
}

#[test]
fn backups_without_a_start_time_are_listed_last_and_never_deleted() {
    let mut backups = dailies(9, 10);
    let mut timeless = b("snap-timeless", "2026-01-01 03:00");
    timeless.snapshot.start_time = None;
    backups.push(timeless);
    let plan = run_plan(
        &[daily("{ last = 1 }")],
        vec![volume("vol-0000000a", &[])],
        backups,
    );
    let g = group(only_target(&plan), REGION);
    assert_eq!(
        lines(g),
        [
            "snap-10 protected (newest backup) [last snapshot]",
            "snap-09 delete",
            "snap-timeless protected (start time unknown) [start time unknown]",
        ]
    );
    assert_eq!(g.backups[2].time, DateTime::<Utc>::UNIX_EPOCH);
}

#[test]
fn retention_tags_match_key_value_and_key() {
    let mut backups = dailies(1, 10);
    backups[0].snapshot.tags.insert("Keep".into(), "yes".into());
    backups[1].snapshot.tags.insert("Keep".into(), "no".into());
    backups[2]
        .snapshot
        .tags
        .insert("Legal".into(), "hold-42".into());
    let plan = run_plan(
        &[daily("{ last = 1, tags = [[\"Keep=yes\"], [\"Legal\"]] }")],
        vec![volume("vol-0000000a", &[])],
        backups,
    );
    let kept: Vec<String> = group(only_target(&plan), REGION)
        .backups
        .iter()
        .filter(|d| !d.delete)
        .map(line)
        .collect();
    assert_eq!(
        kept,
        [
            "snap-10 protected (newest backup) [last snapshot]",
            "snap-03 keep [has tags [Legal]]",
            "snap-01 keep [has tags [Keep=yes]]",
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Targets
// ---------------------------------------------------------------------------------------------

#[test]
fn targets_are_selected_by_kind_region_tags_and_exclusions_and_sorted() {
    let p = policy(
        r#"
name = "prod-daily"
resource = "volume"
select = [{ tags = { Backup = "daily" } }, { tags = { Critical = "*" } }]
exclude = { tags = { NoBackup = "true" }, ids = ["vol-0000000e"] }
schedule = "0 3 * * *"
retain = { daily = 7 }
"#,
    );
    let mut elsewhere = volume("vol-0000000d", &[]);
    elsewhere.region = "eu-west-1".into();
    let targets = vec![
        volume("vol-0000000c", &[]),
        volume("vol-0000000a", &[("NoBackup", "true")]),
        elsewhere,
        volume("vol-0000000e", &[]),
        Target {
            tags: tags(&[("Critical", "yes")]),
            ..volume("vol-0000000b", &[])
        },
        Target {
            tags: tags(&[("Backup", "weekly")]),
            ..volume("vol-0000000f", &[])
        },
        Target {
            tags: tags(&[("Backup", "daily")]),
            ..instance("i-0000000a", &[])
        },
    ];
    let plan = run_plan(&[p], targets, vec![]);
    let ids: Vec<&str> = plan.policies[0]
        .targets
        .iter()
        .map(|t| t.target_id.as_str())
        .collect();
    assert_eq!(ids, ["vol-0000000b", "vol-0000000c"]);
}

#[test]
fn unprotected_lists_what_no_policy_covers() {
    let volumes_policy = daily("{ daily = 7 }");
    let sets = sets_policy("{ last = 2 }"); // Role=db instances, excludes vol-0000000c
    let mut elsewhere = volume("vol-00000010", &[]);
    elsewhere.region = "eu-west-1".into();
    let targets = vec![
        volume("vol-0000000a", &[]), // covered by prod-daily
        Target {
            tags: Tags::new(),
            ..volume("vol-0000000b", &[])
        }, // in the db set
        Target {
            tags: Tags::new(),
            ..volume("vol-0000000c", &[])
        }, // excluded from the set
        Target {
            tags: Tags::new(),
            ..volume("vol-0000000d", &[])
        }, // nothing
        elsewhere,                   // region not backed up
        instance("i-0000000a", &["vol-0000000b", "vol-0000000c"]), // covered by db-sets
        Target {
            tags: Tags::new(),
            ..instance("i-0000000b", &["vol-0000000a"])
        }, // its only volume is covered
        Target {
            tags: Tags::new(),
            ..instance("i-0000000c", &["vol-0000000d"])
        }, // nothing
        Target {
            tags: Tags::new(),
            ..instance("i-0000000d", &[])
        }, // no volumes
    ];
    let ids: Vec<&str> = unprotected(&[volumes_policy, sets], &targets, REGION)
        .into_iter()
        .map(|t| t.id.as_str())
        .collect();
    assert_eq!(
        ids,
        [
            "vol-0000000c",
            "vol-0000000d",
            "vol-00000010",
            "i-0000000c",
            "i-0000000d"
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// The JSON form (`plan -o json`)
// ---------------------------------------------------------------------------------------------

#[test]
fn plan_json_shape() {
    let mut backups = dailies(1, 9);
    backups.push(copy_of("snap-09", "snap-c09", "2026-01-09 04:00"));
    let plan = run_plan(
        &[copying("{ daily = 7 }", "")],
        vec![volume("vol-0000000a", &[("Name", "pg-data")])],
        backups,
    );
    let json = serde_json::to_value(&plan).unwrap();
    assert_eq!(json["now"], "2026-01-10T12:00:00Z");
    let p = &json["policies"][0];
    assert_eq!(p["policy"], "prod-daily");
    assert_eq!(p["resource"], "volume");
    assert_eq!(p["schedule"], "0 3 * * *");
    assert_eq!(p["retention"], "keep daily 7");
    let t = &p["targets"][0];
    assert_eq!(t["target_id"], "vol-0000000a");
    assert_eq!(t["kind"], "volume");
    assert_eq!(t["name"], "pg-data");
    assert_eq!(t["due"], true);
    assert_eq!(t["health"]["state"], "late");
    assert_eq!(t["newest_backup"], "2026-01-09T03:00:00Z");
    assert_eq!(t["backup_count"], 9);
    assert_eq!(t["create"]["tags"]["autosnap:policy"], "prod-daily");
    assert_eq!(t["create"]["exclude_boot"], false);
    assert_eq!(
        t["copies"][0]["source"],
        serde_json::json!({ "kind": "new" })
    );
    assert_eq!(t["copies"][0]["to_region"], "us-west-2");
    let g = &t["groups"][0];
    assert_eq!(g["region"], "us-east-1");
    let newest = &g["backups"][0];
    assert_eq!(newest["backup_id"], "snap-09");
    assert_eq!(newest["snapshot_ids"], serde_json::json!(["snap-09"]));
    assert_eq!(newest["time"], "2026-01-09T03:00:00Z");
    assert_eq!(newest["keep"], true);
    assert_eq!(newest["delete"], false);
    assert_eq!(newest["reasons"], serde_json::json!(["daily snapshot"]));
    assert_eq!(newest["protected"], "newest completed backup");
    let oldest = &g["backups"][8];
    assert_eq!(oldest["delete"], true);
    assert_eq!(oldest["protected"], serde_json::Value::Null);
    assert_eq!(t["groups"][1]["region"], "us-west-2");

    let existing = CopySource::Existing {
        backup_id: "set-1".into(),
        snapshot_ids: vec!["snap-1".into()],
    };
    assert_eq!(
        serde_json::to_value(existing).unwrap(),
        serde_json::json!({ "kind": "existing", "backup_id": "set-1", "snapshot_ids": ["snap-1"] })
    );
}

#[test]
fn policies_keep_config_order() {
    let second = policy(
        r#"
name = "a-first-alphabetically"
resource = "volume"
select = [{ tags = { Backup = "daily" } }]
schedule = "1d"
retain = { last = 1 }
"#,
    );
    let plan = run_plan(
        &[daily("{ daily = 7 }"), second],
        vec![volume("vol-0000000a", &[])],
        vec![],
    );
    let names: Vec<&str> = plan.policies.iter().map(|p| p.policy.as_str()).collect();
    assert_eq!(names, ["prod-daily", "a-first-alphabetically"]);
}

// ---------------------------------------------------------------------------------------------
// AMI policies
// ---------------------------------------------------------------------------------------------

/// An AMI that `web-ami` made of `i-0000000a`, with its one snapshot.
fn ami(id: &str, created: &str, state: &str, extra: &[(&str, &str)]) -> ImageDetails {
    let mut t = tags(&[
        ("autosnap:managed", "true"),
        ("autosnap:policy", "web-ami"),
        ("autosnap:source-instance", "i-0000000a"),
    ]);
    t.extend(tags(extra));
    ImageDetails {
        image_id: id.into(),
        name: Some(format!("name-{id}")),
        description: None,
        state: state.into(),
        state_reason: None,
        creation_date: Some(format!("{}:00.000Z", created.replace(' ', "T"))),
        owner_id: None,
        platform: None,
        platform_details: None,
        architecture: None,
        virtualization_type: None,
        ena_support: None,
        boot_mode: None,
        root_device_name: None,
        root_device_type: None,
        source_instance_id: None,
        source_image_id: None,
        block_device_mappings: vec![ImageBlockDevice {
            device_name: "/dev/xvda".into(),
            snapshot_id: Some(format!("snap-of-{id}")),
            volume_size_gib: None,
            volume_type: None,
            iops: None,
            throughput: None,
            delete_on_termination: None,
            encrypted: None,
            kms_key_id: None,
            virtual_name: None,
        }],
        tags: t,
    }
}

#[test]
fn ami_policies_keep_and_delete_amis_and_copy_them_whole() {
    let p = policy(
        r#"
name = "web-ami"
resource = "instance"
kind = "ami"
select = [{ tags = { Role = "db" } }]
schedule = "0 3 * * *"
retain = { last = 1 }
encrypt = true
copy = [{ region = "us-west-2", retain = { last = 1 } }]
"#,
    );
    let policies = std::slice::from_ref(&p);
    let mut b = BackupBuilder::new(policies);
    let lt = "launch template lt-1 (web) version 3 (default and latest)".to_string();
    let backups = vec![
        b.image(
            &ami("ami-3", "2026-01-10 03:00", "available", &[]),
            REGION,
            vec![],
        ),
        b.image(
            &ami("ami-2", "2026-01-09 03:00", "available", &[]),
            REGION,
            vec![],
        ),
        b.image(
            &ami("ami-1", "2026-01-08 03:00", "available", &[]),
            REGION,
            vec![lt],
        ),
        b.image(
            &ami("ami-0", "2026-01-07 03:00", "pending", &[]),
            REGION,
            vec![],
        ),
        // The snapshot behind an AMI carries the policy's tags too, but is not a backup of
        // an AMI policy.
        b.snapshot(
            &snapshot(
                "snap-of-ami-3",
                Some("2026-01-10 03:00"),
                "completed",
                tags(&[
                    ("autosnap:managed", "true"),
                    ("autosnap:policy", "web-ami"),
                    ("autosnap:source-instance", "i-0000000a"),
                ]),
            ),
            REGION,
            vec!["ami-3".into()],
        ),
        // A copy of an older AMI in the copy region.
        b.image(
            &ami(
                "ami-w2",
                "2026-01-09 04:00",
                "available",
                &[("autosnap:source-image", "ami-2")],
            ),
            COPY_REGION,
            vec![],
        ),
    ];
    let inventory = autosnap_core::plan::Inventory {
        targets: vec![instance("i-0000000a", &["vol-0000000a"])],
        backups,
    };
    let plan =
        autosnap_core::plan::plan(policies, &inventory, REGION, now(), &PlanOptions::default());
    assert_eq!(plan.policies[0].kind, BackupKind::Ami);
    let target = only_target(&plan);
    assert!(!target.due, "{}", target.due_reason);
    assert_eq!(
        lines(group(target, REGION)),
        [
            "ami-3 protected (newest backup) [last snapshot]",
            "ami-2 delete",
            "ami-1 protected (in use by launch template lt-1 (web) version 3 (default and latest))",
            "ami-0 protected (pending)",
        ]
    );
    let doomed = group(target, REGION)
        .backups
        .iter()
        .find(|d| d.backup_id == "ami-2")
        .unwrap();
    assert_eq!(doomed.snapshot_ids.as_slice(), ["snap-of-ami-2"]);
    // The newest AMI has no copy yet: it is copied whole, by its id.
    assert_eq!(target.copies.len(), 1);
    assert_eq!(
        target.copies[0].source,
        CopySource::Existing {
            backup_id: "ami-3".into(),
            snapshot_ids: vec![],
        }
    );

    // When due, the create is an AMI with the policy's options and the instance's tags.
    let later = t("2026-01-11 04:00");
    let plan =
        autosnap_core::plan::plan(policies, &inventory, REGION, later, &PlanOptions::default());
    let create = only_target(&plan).create.clone().expect("due");
    let ami = create.ami.expect("an AMI");
    assert_eq!(ami.name, "autosnap-web-ami-i-0000000a-20260111T040000Z");
    assert!(ami.encrypt && !ami.reboot && ami.kms_key.is_none());
    assert_eq!(create.tags["Role"], "db");
    assert_eq!(create.tags["autosnap:source-instance"], "i-0000000a");
    assert!(!create.exclude_boot && create.exclude_volumes.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Restored resources
// ---------------------------------------------------------------------------------------------

/// A restored snapshot or AMI carries `autosnap:restored-from`. Restores made before that
/// rule also carried the original's `autosnap:policy` and source tags; even then the planner
/// must not take one for a backup: it is not the newest backup (the target stays due), it is
/// not counted, and retention never deletes it.
#[test]
fn restored_resources_are_never_backups() {
    let restored_tags = |from: &str| {
        tags(&[
            ("autosnap:managed", "true"),
            ("autosnap:policy", "prod-daily"),
            ("autosnap:source-volume", "vol-0000000a"),
            ("autosnap:restored-from", from),
        ])
    };
    // Yesterday's backup, then a restore of it this morning (newer than the 03:00 slot).
    let mut backups = dailies(1, 9);
    backups.push(ExistingBackup {
        snapshot: snapshot(
            "snap-restored",
            Some("2026-01-10 08:00"),
            "completed",
            restored_tags("snap-09"),
        ),
        region: REGION.into(),
        in_use_by: Vec::new(),
    });
    let plan = run_plan(
        &[daily("{ last = 1 }")],
        vec![volume("vol-0000000a", &[])],
        backups,
    );
    let target = only_target(&plan);
    assert!(target.due, "{}", target.due_reason);
    assert_eq!(target.newest_backup, Some(t("2026-01-09 03:00")));
    assert_eq!(target.backup_count, 9);
    assert!(target.create.is_some());
    let listed: Vec<&str> = group(target, REGION)
        .backups
        .iter()
        .map(|d| d.backup_id.as_str())
        .collect();
    assert!(!listed.contains(&"snap-restored"), "{listed:?}");
    assert!(!deleted_ids(&plan).contains(&"snap-restored".to_string()));

    // The same for an AMI policy and a restored AMI.
    let p = policy(
        r#"
name = "web-ami"
resource = "instance"
kind = "ami"
select = [{ tags = { Role = "db" } }]
schedule = "0 3 * * *"
retain = { last = 1 }
"#,
    );
    let policies = std::slice::from_ref(&p);
    let mut b = BackupBuilder::new(policies);
    let inventory = autosnap_core::plan::Inventory {
        targets: vec![instance("i-0000000a", &["vol-0000000a"])],
        backups: vec![
            b.image(
                &ami("ami-1", "2026-01-09 03:00", "available", &[]),
                REGION,
                vec![],
            ),
            b.image(
                &ami(
                    "ami-restored",
                    "2026-01-10 08:00",
                    "available",
                    &[("autosnap:restored-from", "ami-1")],
                ),
                REGION,
                vec![],
            ),
        ],
    };
    let plan =
        autosnap_core::plan::plan(policies, &inventory, REGION, now(), &PlanOptions::default());
    let target = only_target(&plan);
    assert!(target.due, "{}", target.due_reason);
    assert_eq!(target.backup_count, 1);
    assert!(!deleted_ids(&plan).contains(&"ami-restored".to_string()));
    assert!(group(target, REGION)
        .backups
        .iter()
        .all(|d| d.backup_id != "ami-restored"));
}

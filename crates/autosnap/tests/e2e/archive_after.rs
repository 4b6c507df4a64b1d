//! A policy's `archive_after` through the real binary on the test bed: `plan` shows which kept
//! backups `run` archives with their cost figures and why the others stay, `run` archives them
//! (and not the newest, those retention deletes now or lets go within the 90-day minimum), a
//! second run archives nothing, `prune` never archives, and `config check` refuses an
//! `archive_after` that retention makes a loss every time.

use crate::support::{TestBed, REGION};
use serde_json::Value;

/// Every 60 days, so the newest backup (35 days old) is not due and a run creates nothing.
/// `within = "100d"` keeps what is younger than 100 days before the newest backup; the tag keeps
/// the rest for good.
const POLICY: &str = r#"
[[policy]]
name = "p"
resource = "volume"
select = [{ tags = { Backup = "daily" } }]
schedule = "60d"
retain = { within = "100d", tags = [["Keep=forever"]] }
archive_after = "30d"
"#;

struct Backups {
    /// 200 days old, kept by its tag: archived.
    tagged_old: String,
    /// 60 days old, kept by its tag: archived.
    tagged: String,
    /// 45 days old, kept by `within`: the next backup (in 60 days) moves the window past it,
    /// before it has been 90 days in the archive tier. Stays.
    within: String,
    /// 150 days old, kept by nothing: deleted by the run, never archived.
    doomed: String,
    /// 35 days old, the newest: stays.
    newest: String,
}

fn backups(bed: &TestBed) -> Backups {
    let vol = bed.volume(8, &[("Backup", "daily")]);
    let backup = |days: i64, keep: bool| {
        let extra: &[(&str, &str)] = if keep { &[("Keep", "forever")] } else { &[] };
        bed.policy_backup("p", &vol, days, extra)
    };
    Backups {
        tagged_old: backup(200, true),
        tagged: backup(60, true),
        within: backup(45, false),
        doomed: backup(150, false),
        newest: backup(35, false),
    }
}

fn tier_of(bed: &TestBed, snapshot_id: &str) -> String {
    bed.snapshot(snapshot_id)
        .storage_tier()
        .map(|t| t.as_str().to_string())
        .unwrap_or_default()
}

fn archives(plan: &Value) -> Vec<Value> {
    plan["policies"][0]["targets"][0]["groups"][0]["archives"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn entry<'a>(archives: &'a [Value], id: &str) -> &'a Value {
    archives
        .iter()
        .find(|a| a["backup_id"] == id)
        .unwrap_or_else(|| panic!("{id} not among {archives:?}"))
}

#[test]
fn plan_shows_each_archive_with_its_cost_and_why_the_others_stay() {
    let bed = TestBed::start();
    let b = backups(&bed);
    bed.write_config("autosnap.toml", POLICY, 0o644);

    let out = bed.cmd().args(["plan"]).assert().success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    let line = |id: &str, mark: &str| {
        text.lines()
            .find(|l| l.contains(mark) && l.contains(id))
            .unwrap_or_else(|| panic!("no '{mark}' line for {id}:\n{text}"))
            .to_string()
    };
    let old = line(&b.tagged_old, "~ archive");
    assert!(
        old.contains(&format!(
            "{} (200 days old, kept by has tags [Keep=forever]): $0.40/mo → $0.10/mo for 8 GiB \
             (volume size, an upper bound;",
            b.tagged_old
        )),
        "{old}"
    );
    assert!(
        old.contains(
            "retrieval $0.03/GB ($0.24 a restore, up to 72 hours), billed ≥ 90 days ($0.30)"
        ),
        "{old}"
    );
    line(&b.tagged, "~ archive");
    let within = line(&b.within, "not archived");
    assert!(
        within.contains("retention lets it go in about 60 days")
            && within.contains("before the 90-day archive minimum ends"),
        "{within}"
    );
    assert!(
        line(&b.newest, "not archived").contains("the newest backup of its target"),
        "{text}"
    );
    // Retention deletes it: a deletion, not an archive.
    assert!(line(&b.doomed, "- delete").contains("no rule keeps it"));
    assert!(!text.contains(&format!("archive {}", b.doomed)), "{text}");
    assert!(
        text.contains("plan: 0 to create, 0 to copy, 2 to archive, 1 to delete"),
        "{text}"
    );

    // The same in JSON (docs/json-output.md).
    let plan = bed.json(&["plan"]);
    let a = archives(&plan);
    let old = entry(&a, &b.tagged_old);
    assert_eq!(old["archive"], true);
    assert_eq!(old["age_days"], 200);
    assert_eq!(old["snapshot_ids"][0], b.tagged_old.as_str());
    assert_eq!(old["cost"]["size_gib"], 8.0);
    assert_eq!(old["cost"]["size_from"], "volume_size");
    assert_eq!(old["cost"]["archive_month"], 0.1);
    assert_eq!(old["cost"]["standard_month_at_most"], 0.4);
    assert_eq!(old["cost"]["retrieval_per_gb"], 0.03);
    assert_eq!(old["cost"]["minimum_days"], 90);
    let within = entry(&a, &b.within);
    assert_eq!(within["archive"], false);
    assert!(within["not_archived"]
        .as_str()
        .unwrap()
        .starts_with("retention lets it go in about 60 days"));

    // Planning changed nothing.
    assert_eq!(tier_of(&bed, &b.tagged_old), "standard");
}

#[test]
fn run_archives_the_old_kept_backups_and_a_second_run_does_nothing() {
    let bed = TestBed::start();
    let b = backups(&bed);
    bed.write_config("autosnap.toml", POLICY, 0o644);

    let out = bed.cmd().args(["run"]).assert().success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(
        text.contains("done: 0 created, 0 copied, 2 archived, 1 deleted, 0 failed"),
        "{text}"
    );
    assert!(
        text.contains(&format!("archived {} of ", b.tagged_old)),
        "{text}"
    );
    assert_eq!(tier_of(&bed, &b.tagged_old), "archive");
    assert_eq!(tier_of(&bed, &b.tagged), "archive");
    assert_eq!(tier_of(&bed, &b.within), "standard");
    assert_eq!(tier_of(&bed, &b.newest), "standard");
    assert!(!bed.snapshot_exists(REGION, &b.doomed));

    // Archived backups are not planned again: the second run archives nothing.
    let again = bed.json(&["run"]);
    let report = &again["report"];
    assert_eq!(report["archived"].as_array().unwrap().len(), 0, "{again}");
    assert_eq!(report["failures"].as_array().unwrap().len(), 0, "{again}");
    assert_eq!(again["summary"]["archives"], 0, "{again}");
    let a = archives(&again["plan"]);
    assert!(
        a.iter().all(|x| x["backup_id"] != b.tagged_old.as_str()),
        "{a:?}"
    );
    // What stays, stays for the same reasons.
    assert_eq!(entry(&a, &b.within)["archive"], false);
    assert_eq!(entry(&a, &b.newest)["archive"], false);
}

#[test]
fn run_reports_archives_in_json() {
    let bed = TestBed::start();
    let b = backups(&bed);
    bed.write_config("autosnap.toml", POLICY, 0o644);
    let out = bed.json(&["run"]);
    let archived = out["report"]["archived"].as_array().unwrap();
    let mut ids: Vec<&str> = archived
        .iter()
        .map(|a| a["backup_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    let mut want = vec![b.tagged_old.as_str(), b.tagged.as_str()];
    want.sort_unstable();
    assert_eq!(ids, want, "{out}");
    let one = &archived[0];
    assert_eq!(one["policy"], "p");
    assert_eq!(one["region"], REGION);
    assert_eq!(one["cost"]["archive_month"], 0.1);
}

#[test]
fn prune_never_archives() {
    let bed = TestBed::start();
    let b = backups(&bed);
    bed.write_config("autosnap.toml", POLICY, 0o644);
    let out = bed.cmd().args(["prune", "--yes"]).assert().success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(!text.contains("~ archive"), "{text}");
    assert_eq!(tier_of(&bed, &b.tagged_old), "standard");
    assert!(!bed.snapshot_exists(REGION, &b.doomed));
}

#[test]
fn config_check_refuses_an_archive_after_that_retention_always_makes_a_loss() {
    let bed = TestBed::start();
    let text = POLICY
        .replace("schedule = \"60d\"", "schedule = \"0 3 * * *\"")
        .replace(
            "retain = { within = \"100d\", tags = [[\"Keep=forever\"]] }",
            "retain = { daily = 7 }",
        );
    bed.write_config("autosnap.toml", &text, 0o644);
    let out = bed.cmd().args(["config", "check"]).assert().failure();
    // `config check` prints its table of checks on standard output.
    let err = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(
        err.contains("archive_after is \"30d\", but retention (keep daily 7) keeps a backup about 8 days at most"),
        "{err}"
    );
    assert!(err.contains("Keep backups longer"), "{err}");
}

#[test]
fn iam_policy_for_backups_lets_autosnap_archive_its_own_snapshots() {
    let bed = TestBed::offline();
    let doc = bed.json(&["iam-policy", "--for", "backup"]);
    let statement = doc["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            s["Action"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == "ec2:ModifySnapshotTier"))
        })
        .unwrap_or_else(|| panic!("no ModifySnapshotTier in {doc}"));
    // Scoped like the other writes: autosnap's own snapshots only.
    assert!(
        statement["Condition"]
            .to_string()
            .contains("autosnap:managed"),
        "{statement}"
    );
}

#[test]
fn a_locked_backup_is_archived_too() {
    // A lock forbids deleting a snapshot, not moving it to the archive tier (AWS documents no
    // rule against it): the locked backup is archived like the others, and stays locked.
    let bed = TestBed::start();
    let b = backups(&bed);
    bed.write_config("autosnap.toml", POLICY, 0o644);
    bed.cmd()
        .args([
            "snapshot",
            "lock",
            &b.tagged_old,
            "--mode",
            "governance",
            "--for",
            "30d",
        ])
        .assert()
        .success();
    let out = bed.json(&["run"]);
    let archived: Vec<&str> = out["report"]["archived"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["backup_id"].as_str().unwrap())
        .collect();
    assert!(archived.contains(&b.tagged_old.as_str()), "{out}");
    assert_eq!(tier_of(&bed, &b.tagged_old), "archive");
    let rows = bed.json(&["snapshot", "list"]);
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["snapshot_id"] == b.tagged_old.as_str())
        .unwrap()
        .clone();
    assert!(row.to_string().contains("governance"), "{row}");
}

fn tier_in(bed: &TestBed, region: &str, snapshot_id: &str) -> String {
    let ec2 = bed.ec2(region);
    bed.block(async {
        ec2.describe_snapshots()
            .snapshot_ids(snapshot_id)
            .send()
            .await
            .expect("describe snapshots")
            .snapshots()
            .first()
            .and_then(|s| s.storage_tier().map(|t| t.as_str().to_string()))
            .unwrap_or_default()
    })
}

#[test]
fn a_copy_rule_archives_the_copies_in_its_region() {
    // Only the copy rule has archive_after: the copies in us-west-2 are archived as they age,
    // the source region's backups stay in the standard tier.
    const COPY_REGION: &str = "us-west-2";
    let bed = TestBed::start();
    let vol = bed.volume(8, &[("Backup", "daily")]);
    let start = |days: i64| {
        (chrono::Utc::now() - chrono::Duration::days(days))
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    };
    let source_old = start(200);
    let source_new = start(35);
    fn own<'a>(vol: &'a str, at: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![
            ("autosnap:managed", "true"),
            ("autosnap:policy", "p"),
            ("autosnap:source-volume", vol),
            ("autosnap-testbed:start-time", at),
            ("Keep", "forever"),
        ]
    }
    let old = bed.snapshot_with_tags(REGION, &vol, &own(&vol, &source_old));
    let newest = bed.snapshot_with_tags(REGION, &vol, &own(&vol, &source_new));
    let there = bed.volume_in(COPY_REGION, 8);
    let copy = |of: &str, at: &str| {
        let mut tags = own(&vol, at);
        tags.push(("autosnap:source-snapshot", of));
        bed.snapshot_with_tags(COPY_REGION, &there, &tags)
    };
    let old_copy = copy(&old, &source_old);
    let newest_copy = copy(&newest, &source_new);
    let policy = POLICY.replace(
        "archive_after = \"30d\"",
        "copy = [{ region = \"us-west-2\", archive_after = \"30d\" }]",
    );
    bed.write_config("autosnap.toml", &policy, 0o644);

    let out = bed.cmd().args(["plan"]).assert().success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    let west = text
        .split("backups in us-west-2")
        .nth(1)
        .unwrap_or_else(|| panic!("no us-west-2 group:\n{text}"));
    assert!(
        west.contains(&format!("~ archive {old_copy} (200 days old")),
        "{text}"
    );
    assert!(!text.contains(&format!("archive {old} ")), "{text}");

    let out = bed.json(&["run"]);
    let archived = out["report"]["archived"].as_array().unwrap();
    assert_eq!(archived.len(), 1, "{out}");
    assert_eq!(archived[0]["backup_id"], old_copy.as_str());
    assert_eq!(archived[0]["region"], COPY_REGION);
    assert_eq!(tier_in(&bed, COPY_REGION, &old_copy), "archive");
    assert_eq!(tier_in(&bed, COPY_REGION, &newest_copy), "standard");
    assert_eq!(tier_in(&bed, REGION, &old), "standard");
}

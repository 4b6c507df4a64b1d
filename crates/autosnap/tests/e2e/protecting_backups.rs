//! The four protections together, through the real binary on the test bed: one policy with a
//! snapshot lock, `archive_after` and `restore_test`, in a Region whose Recycle Bin keeps
//! deleted snapshots. `plan` must say each of them, for the right backups, in one plan (the
//! plan shown in docs/protecting-backups.md).

use crate::support::{rbin_rule, TestBed};

/// Due (the newest backup is 35 days old, the schedule 30 days), so the plan creates one backup
/// and locks it; `within = "100d"` keeps what is younger than 100 days before the newest, the
/// tag keeps the rest for good.
const POLICY: &str = r#"
[[policy]]
name = "p"
resource = "volume"
select = [{ tags = { Backup = "daily" } }]
schedule = "30d"
retain = { within = "100d", tags = [["Keep=forever"]] }
lock = { mode = "governance", for = "30d" }
archive_after = "30d"
restore_test = { every = "7d" }
"#;

#[test]
fn one_policy_plans_lock_archive_recycle_bin_and_restore_test() {
    let bed = TestBed::start();
    let rule = rbin_rule(
        &bed,
        aws_sdk_rbin::types::ResourceType::EbsSnapshot,
        7,
        &[],
        &[],
    );
    let vol = bed.volume(8, &[("Backup", "daily")]);
    let backup = |days: i64, keep: bool| {
        let extra: &[(&str, &str)] = if keep { &[("Keep", "forever")] } else { &[] };
        bed.policy_backup("p", &vol, days, extra)
    };
    let old_kept = backup(200, true);
    let doomed = backup(150, false);
    let newest = backup(35, false);
    bed.write_config("autosnap.toml", POLICY, 0o644);

    let out = bed.cmd().args(["plan"]).assert().success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    // Shown with --nocapture: the excerpt in docs/protecting-backups.md comes from here.
    println!("{text}");
    let line = |needle: &str, id: &str| {
        text.lines()
            .find(|l| l.contains(needle) && l.contains(id))
            .unwrap_or_else(|| panic!("no line with '{needle}' and '{id}' in:\n{text}"))
            .to_string()
    };
    // 1. The backup the run creates is locked right after.
    line("+ create", &vol);
    assert!(
        text.lines()
            .any(|l| l.trim() == "then lock: governance for 30 days"),
        "{text}"
    );
    // 2. Where the deletion goes: the Region-level rule keeps it 7 days.
    let delete = line("- delete", &doomed);
    assert!(
        delete.contains("Recycle Bin 7d") && delete.contains(&rule),
        "{delete}"
    );
    // 3. The old backup the tag keeps goes to the archive tier, with its figures.
    let archive = line("~ archive", &old_kept);
    assert!(
        archive.contains("/mo →") && archive.contains("billed ≥ 90 days"),
        "{archive}"
    );
    // The newest is the incremental base: never archived, never deleted.
    assert!(!text.contains(&format!("~ archive {newest}")), "{text}");
    assert!(!line("keep", &newest).contains("- delete"), "{text}");
    // 4. No restore test has run yet: one is due.
    assert!(
        text.lines()
            .any(|l| l.to_lowercase().contains("restore test") && l.contains("due")),
        "{text}"
    );
}

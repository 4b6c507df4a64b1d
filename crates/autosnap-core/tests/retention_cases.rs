//! Table-driven retention cases with readable expected outputs.
//!
//! Every case applies one policy to the same fixed group of 50 backups ([`backups`]) at two
//! `now`s and compares the result with `tests/retention_cases/<case>.txt`, which lists every
//! backup with its decision and reasons, newest first:
//!
//! ```text
//! keep    b50  2021-03-13 03:00:00.000 Sat  [a]     daily snapshot, weekly snapshot
//! remove  b49  2021-03-12 03:00:00.000 Fri
//! ```
//!
//! * [`NOW_AFTER`] is after every backup, so `latest` is the newest backup (b50).
//! * [`NOW_MID`] makes b48–b50 future-dated, so `latest` is b47 and the within-windows are
//!   anchored there, while count rules still see (and keep) the future-dated backups.
//!
//! After an intended change of behaviour, regenerate the files with
//! `AUTOSNAP_BLESS=1 cargo test -p autosnap-core --test retention_cases` and review the diff:
//! the files are the specification a reviewer reads. When they were first written, every file
//! was also checked line by line against a separate implementation of restic's algorithm on
//! Go's own `time.AddDate` and `ISOWeek` (restic's reasons, plus autosnap's "newest backup").

use std::fmt::Write as _;

use autosnap_core::retention::{apply, Decision, KeepPolicy, RetentionItem};
use chrono::{DateTime, NaiveDateTime, Utc};
use rstest::rstest;

/// After every backup of the fixture.
const NOW_AFTER: &str = "2021-03-14 00:00:00.000";
/// After b47 (2021-03-10 21:00), before b48 (2021-03-11 03:00).
const NOW_MID: &str = "2021-03-11 00:00:00.000";

fn time(s: &str) -> DateTime<Utc> {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
        .unwrap_or_else(|e| panic!("bad time {s:?}: {e}"))
        .and_utc()
}

/// The fixture: 50 backups from June 2019 to March 2021, chosen to exercise every rule.
///
/// * sparse early history with empty months (2019–2020), a leap day (b10), 31 March (b11);
/// * ISO week boundaries: b06 Sun 2019-12-29 is 2019-W52, b07–b09 (30 Dec 2019 – 1 Jan 2020)
///   are 2020-W01; b16 Sun 2020-12-27 is 2020-W52, b17–b20 (28 Dec 2020 – Sun 3 Jan 2021) are
///   2020-W53, b21 Mon 2021-01-04 00:00 is 2021-W01; b26/b27 Sat/Sun and b28 Mon;
/// * a dense tail in March 2021: several backups per day and per hour, an empty day
///   (2021-03-05), equal times (b35 and b36) and a sub-second difference (b37);
/// * tags `keep`, `a` and `b` on some backups.
///
/// The input order is deliberately not chronological: odd-numbered ids first, then even ones
/// (so b35 comes before b36, which sorts it first among the two equal times).
fn backups() -> Vec<RetentionItem> {
    let table: [(&str, &str, &[&str]); 50] = [
        ("b01", "2019-06-01 03:00:00", &[]),
        ("b02", "2019-06-15 03:00:00", &[]),
        ("b03", "2019-07-01 03:00:00", &["keep"]),
        ("b04", "2019-08-20 03:00:00", &[]),
        ("b05", "2019-11-30 03:00:00", &[]),
        ("b06", "2019-12-29 23:30:00", &[]),
        ("b07", "2019-12-30 00:30:00", &[]),
        ("b08", "2019-12-31 12:00:00", &[]),
        ("b09", "2020-01-01 00:00:00", &[]),
        ("b10", "2020-02-29 03:00:00", &["a"]),
        ("b11", "2020-03-31 03:00:00", &[]),
        ("b12", "2020-05-01 03:00:00", &["a", "b"]),
        ("b13", "2020-07-04 03:00:00", &["b"]),
        ("b14", "2020-09-30 03:00:00", &[]),
        ("b15", "2020-11-15 03:00:00", &["keep"]),
        ("b16", "2020-12-27 03:00:00", &[]),
        ("b17", "2020-12-28 03:00:00", &[]),
        ("b18", "2020-12-31 23:00:00", &[]),
        ("b19", "2021-01-01 03:00:00", &[]),
        ("b20", "2021-01-03 23:59:59", &[]),
        ("b21", "2021-01-04 00:00:00", &[]),
        ("b22", "2021-01-15 03:00:00", &[]),
        ("b23", "2021-01-31 03:00:00", &[]),
        ("b24", "2021-02-01 03:00:00", &[]),
        ("b25", "2021-02-14 03:00:00", &["a"]),
        ("b26", "2021-02-27 03:00:00", &[]),
        ("b27", "2021-02-28 03:00:00", &[]),
        ("b28", "2021-03-01 03:00:00", &[]),
        ("b29", "2021-03-02 03:00:00", &[]),
        ("b30", "2021-03-03 03:00:00", &[]),
        ("b31", "2021-03-03 15:00:00", &[]),
        ("b32", "2021-03-04 03:00:00", &[]),
        ("b33", "2021-03-06 03:00:00", &[]),
        ("b34", "2021-03-07 03:00:00", &[]),
        ("b35", "2021-03-08 03:00:00", &[]),
        ("b36", "2021-03-08 03:00:00", &["keep"]),
        ("b37", "2021-03-08 03:00:00.5", &[]),
        ("b38", "2021-03-09 03:00:00", &[]),
        ("b39", "2021-03-09 03:40:00", &[]),
        ("b40", "2021-03-09 04:10:00", &[]),
        ("b41", "2021-03-10 00:00:00", &[]),
        ("b42", "2021-03-10 01:00:00", &[]),
        ("b43", "2021-03-10 02:00:00", &[]),
        ("b44", "2021-03-10 02:59:59", &[]),
        ("b45", "2021-03-10 03:00:00", &["a", "b"]),
        ("b46", "2021-03-10 09:00:00", &[]),
        ("b47", "2021-03-10 21:00:00", &[]),
        ("b48", "2021-03-11 03:00:00", &[]),
        ("b49", "2021-03-12 03:00:00", &[]),
        ("b50", "2021-03-13 03:00:00", &["a"]),
    ];
    let items: Vec<RetentionItem> = table
        .iter()
        .map(|(id, t, tags)| RetentionItem {
            id: (*id).to_owned(),
            time: time(t),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        })
        .collect();
    let (odd, even): (Vec<_>, Vec<_>) =
        items.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
    odd.into_iter().chain(even).map(|(_, item)| item).collect()
}

/// Renders decisions as the expected files show them.
fn render(items: &[RetentionItem], decisions: &[Decision]) -> String {
    let mut out = String::new();
    for d in decisions {
        let item = items
            .iter()
            .find(|i| i.id == d.id)
            .expect("decision for unknown id");
        let tags = if item.tags.is_empty() {
            String::new()
        } else {
            format!("[{}]", item.tags.join(", "))
        };
        let line = format!(
            "{:<6}  {}  {} {:<8}  {}",
            if d.keep { "keep" } else { "remove" },
            d.id,
            d.time.format("%Y-%m-%d %H:%M:%S%.3f %a"),
            tags,
            d.reasons.join(", ")
        );
        writeln!(out, "{}", line.trim_end()).unwrap();
    }
    out
}

/// Runs one case at both `now`s and compares with (or, when blessing, writes) its file.
fn check_case(name: &str, policy_toml: &str) {
    let policy: KeepPolicy = toml::from_str(policy_toml)
        .unwrap_or_else(|e| panic!("case {name}: bad policy {policy_toml:?}: {e}"));
    let items = backups();

    let mut actual = format!(
        "policy: {{ {} }}\nmeans:  {policy}\n",
        policy_toml.replace('\n', ", ")
    );
    for (now, note) in [
        (NOW_AFTER, "after every backup"),
        (NOW_MID, "b48, b49 and b50 are in the future"),
    ] {
        let decisions = apply(&policy, &items, time(now));
        assert_eq!(
            decisions.len(),
            items.len(),
            "case {name}: one decision per backup"
        );
        let kept = decisions.iter().filter(|d| d.keep).count();
        write!(
            actual,
            "\nnow: {now} ({note}): keep {kept}, remove {}\n{}",
            items.len() - kept,
            render(&items, &decisions)
        )
        .unwrap();
    }

    let path = manifest_dir()
        .join("tests/retention_cases")
        .join(format!("{name}.txt"));
    if std::env::var_os("AUTOSNAP_BLESS").is_some() {
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "case {name}: cannot read {}: {e}\n(new case? run with AUTOSNAP_BLESS=1 and review it)",
            path.display()
        )
    });
    if expected != actual {
        let mut diff = String::new();
        for (line, (want, got)) in expected.lines().zip(actual.lines()).enumerate() {
            if want != got {
                writeln!(
                    diff,
                    "line {}:\n  expected: {want}\n  actual:   {got}",
                    line + 1
                )
                .unwrap();
            }
        }
        panic!(
            "case {name} differs from {}:\n{diff}\n--- actual ---\n{actual}",
            path.display()
        );
    }
}

#[rstest]
// Count rules on their own.
#[case::last_1("last-1", "last = 1")]
#[case::last_10("last-10", "last = 10")]
#[case::last_100("last-100", "last = 100")]
#[case::last_unlimited("last-unlimited", r#"last = "unlimited""#)]
#[case::hourly_5("hourly-5", "hourly = 5")]
#[case::hourly_unlimited("hourly-unlimited", r#"hourly = "unlimited""#)]
#[case::daily_3("daily-3", "daily = 3")]
#[case::daily_10("daily-10", "daily = 10")]
#[case::daily_100("daily-100", "daily = 100")]
#[case::weekly_3("weekly-3", "weekly = 3")]
#[case::weekly_10("weekly-10", "weekly = 10")]
#[case::weekly_unlimited("weekly-unlimited", r#"weekly = "unlimited""#)]
#[case::monthly_6("monthly-6", "monthly = 6")]
#[case::monthly_100("monthly-100", "monthly = 100")]
#[case::yearly_2("yearly-2", "yearly = 2")]
#[case::yearly_10("yearly-10", "yearly = 10")]
// Count rules together: one backup can satisfy several rules.
#[case::last_2_daily_5("last-2-daily-5", "last = 2\ndaily = 5")]
#[case::daily_7_weekly_5("daily-7-weekly-5", "daily = 7\nweekly = 5")]
#[case::daily_3_weekly_2_monthly_yearly_unlimited(
    "daily-3-weekly-2-monthly-yearly-unlimited",
    "daily = 3\nweekly = 2\nmonthly = \"unlimited\"\nyearly = \"unlimited\""
)]
#[case::hourly_4_monthly_3("hourly-4-monthly-3", "hourly = 4\nmonthly = 3")]
#[case::typical(
    "typical",
    "last = 3\ndaily = 7\nweekly = 4\nmonthly = 12\nyearly = 5\nwithin = \"2d\""
)]
// Tags.
#[case::tags_keep("tags-keep", r#"tags = [["keep"]]"#)]
#[case::tags_a_and_b("tags-a-and-b", r#"tags = [["a", "b"]]"#)]
#[case::tags_a_or_b("tags-a-or-b", r#"tags = [["a"], ["b"]]"#)]
#[case::tags_and_last("tags-keep-last-2", "tags = [[\"keep\"]]\nlast = 2")]
// keep-within, with calendar arithmetic.
#[case::within_1d("within-1d", r#"within = "1d""#)]
#[case::within_2d("within-2d", r#"within = "2d""#)]
#[case::within_7d("within-7d", r#"within = "7d""#)]
#[case::within_1mo("within-1mo", r#"within = "1mo""#)]
#[case::within_1mo14d("within-1mo14d", r#"within = "1mo14d""#)]
#[case::within_1y1mo1d("within-1y1mo1d", r#"within = "1y1mo1d""#)]
#[case::within_13d23h("within-13d23h", r#"within = "13d23h""#)]
#[case::within_2mo2h("within-2mo2h", r#"within = "2mo2h""#)]
#[case::within_1y2mo3d4h("within-1y2mo3d4h", r#"within = "1y2mo3d4h""#)]
#[case::within_9999y("within-9999y", r#"within = "9999y""#)]
// keep-within-<period>.
#[case::within_hourly_1d("within-hourly-1d", r#"within_hourly = "1d""#)]
#[case::within_daily_7d("within-daily-7d", r#"within_daily = "7d""#)]
#[case::within_weekly_1mo("within-weekly-1mo", r#"within_weekly = "1mo""#)]
#[case::within_monthly_1y("within-monthly-1y", r#"within_monthly = "1y""#)]
#[case::within_yearly_9999y("within-yearly-9999y", r#"within_yearly = "9999y""#)]
#[case::within_all(
    "within-all",
    "within = \"1h\"\nwithin_hourly = \"1d\"\nwithin_daily = \"7d\"\nwithin_weekly = \"1mo\"\nwithin_monthly = \"1y\"\nwithin_yearly = \"9999y\""
)]
// Everything at once.
#[case::everything(
    "everything",
    "last = 2\nhourly = 3\ndaily = 4\nweekly = 3\nmonthly = 2\nyearly = 1\nwithin = \"12h\"\nwithin_daily = \"4d\"\nwithin_monthly = \"3mo\"\ntags = [[\"keep\"], [\"a\", \"b\"]]"
)]
fn retention_case(#[case] name: &str, #[case] policy: &str) {
    check_case(name, policy);
}

/// Every case file belongs to a case (a stale file would otherwise go unnoticed).
#[test]
fn no_orphan_case_files() {
    let this_file = include_str!("retention_cases.rs");
    let dir = manifest_dir().join("tests/retention_cases");
    for entry in std::fs::read_dir(dir).unwrap() {
        let file_name = entry.unwrap().file_name().into_string().unwrap();
        let name = file_name.strip_suffix(".txt").expect("only .txt files");
        assert!(
            this_file.contains(&format!("(\"{name}\""))
                || this_file.contains(&format!("\"{name}\",")),
            "tests/retention_cases/{file_name} has no case"
        );
    }
}

/// This package's directory, as cargo says when it runs the test: the path compiled in may
/// name another checkout that built into the same (shared) target directory.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

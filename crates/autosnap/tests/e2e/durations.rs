//! One duration grammar for every flag and config field (README "Durations"): `mo` for
//! months, `min` for minutes, and a bare `m` refused with an error naming both readings.
//! Flags are parsed by clap, so a bad duration is a usage error (exit 2) that names the flag
//! before anything runs: the offline cases below have no AWS to reach.

use crate::support::{TestBed, REGION};
use chrono::{DateTime, Duration, TimeZone, Utc};
use predicates::prelude::*;
use serde_json::{json, Value};

/// Every duration flag, with the rest of a command line that would otherwise be valid.
const DURATION_FLAGS: &[(&[&str], &str)] = &[
    (&["snapshot", "list"], "--older-than"),
    (
        &["snapshot", "create", "vol-0123456789abcdef0", "--wait"],
        "--wait-timeout",
    ),
    (&["snapshot", "create", "/mnt/data"], "--freeze-timeout"),
    (&["snapshot", "create", "/mnt/data"], "--hook-timeout"),
    (
        &[
            "volume",
            "create",
            "--snapshot",
            "snap-0123456789abcdef0",
            "--availability-zone",
            "us-east-1a",
            "--wait",
        ],
        "--wait-timeout",
    ),
    (
        &["ami", "create", "i-0123456789abcdef0", "--wait"],
        "--wait-timeout",
    ),
    (
        &["ami", "create", "i-0123456789abcdef0", "--wait"],
        "--poll-interval",
    ),
    (
        &["ami", "store", "ami-0123456789abcdef0", "--bucket", "b"],
        "--wait-timeout",
    ),
    (&["run"], "--wait-timeout"),
    (&["daemon"], "--wait-timeout"),
    (&["daemon"], "--max-sleep"),
    (&["daemon"], "--retry-after"),
    (&["daemon"], "--shutdown-timeout"),
    (&["retention", "simulate", "--input", "-"], "--keep-within"),
    (
        &["retention", "simulate", "--input", "-"],
        "--keep-within-hourly",
    ),
    (
        &["retention", "simulate", "--input", "-"],
        "--keep-within-daily",
    ),
    (
        &["retention", "simulate", "--input", "-"],
        "--keep-within-weekly",
    ),
    (
        &["retention", "simulate", "--input", "-"],
        "--keep-within-monthly",
    ),
    (
        &["retention", "simulate", "--input", "-"],
        "--keep-within-yearly",
    ),
    (
        &["repo", "forget", "no-such-repo", "--dry-run"],
        "--keep-within",
    ),
    (
        &[
            "ami",
            "restore",
            "--bucket",
            "b",
            "--ami",
            "ami-0123456789abcdef0",
        ],
        "--wait-timeout",
    ),
    (
        &[
            "ami",
            "restore",
            "--bucket",
            "b",
            "--ami",
            "ami-0123456789abcdef0",
        ],
        "--poll-interval",
    ),
];

#[test]
fn a_bare_m_is_refused_by_every_duration_flag_naming_both_readings() {
    let bed = TestBed::offline();
    for (command, flag) in DURATION_FLAGS {
        let out = bed
            .cmd()
            .args(*command)
            .args([*flag, "30m"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{command:?} {flag} 30m: {stderr}"
        );
        assert!(
            stderr.contains(&format!("invalid value '30m' for '{flag} <DURATION>'")),
            "{command:?} {flag}: the error names the flag: {stderr}"
        );
        assert!(
            stderr.contains("\"30m\" is ambiguous: write 30min for minutes or 30mo for months"),
            "{command:?} {flag}: {stderr}"
        );
    }
}

#[test]
fn mo_and_min_are_accepted_by_every_duration_flag() {
    let bed = TestBed::offline();
    for (command, flag) in DURATION_FLAGS {
        // Months where a fixed length is needed are refused by name; everything else parses,
        // and the command then fails (or not) for reasons of its own, never the duration
        // (here quickly: the sandbox has no region or credentials).
        let fixed_length = !flag.starts_with("--keep-within") && *flag != "--older-than";
        for value in ["1mo", "90min", "1h30min"] {
            let out = bed
                .bare_cmd()
                .args(*command)
                .args([*flag, value])
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            let refused = stderr.contains(&format!("invalid value '{value}' for '{flag}"));
            if fixed_length && value == "1mo" {
                assert!(
                    refused && stderr.contains("has months or years, whose length varies"),
                    "{command:?} {flag} {value}: {stderr}"
                );
            } else {
                assert!(!refused, "{command:?} {flag} {value}: {stderr}");
            }
        }
    }
}

#[test]
fn other_bad_durations_are_usage_errors_naming_the_flag() {
    let bed = TestBed::offline();
    for (args, expected) in [
        (
            vec!["daemon", "--max-sleep", "0s"],
            "invalid value '0s' for '--max-sleep <DURATION>': duration \"0s\" is zero",
        ),
        (
            vec!["snapshot", "list", "--older-than", "soon"],
            "invalid value 'soon' for '--older-than <DURATION>': invalid duration \"soon\"",
        ),
        (
            vec!["run", "--wait-timeout", "2x"],
            "unknown unit \"x\"; units: y (years), mo (months), w (weeks), d (days), h (hours), \
             min (minutes), s (seconds), ms (milliseconds)",
        ),
    ] {
        bed.cmd()
            .args(&args)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(expected));
    }
}

/// Daily backups at 03:00 for `days` days ending on Saturday 2026-01-31.
fn daily(days: i64) -> Value {
    let newest: DateTime<Utc> = Utc.with_ymd_and_hms(2026, 1, 31, 3, 0, 0).unwrap();
    Value::Array(
        (0..days)
            .map(|i| {
                let t = newest - Duration::days(i);
                json!({"id": format!("b{i:03}"), "time": t.to_rfc3339(), "tags": []})
            })
            .collect(),
    )
}

fn kept(bed: &TestBed, rules: &[&str]) -> Vec<(String, Value)> {
    let out = bed
        .bare_cmd()
        .args(["retention", "simulate", "--input", "-", "-o", "json"])
        .args(rules)
        .write_stdin(daily(400).to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{rules:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["keep"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["id"].as_str().unwrap().to_owned(), k["reasons"].clone()))
        .collect()
}

#[test]
fn keep_within_mo_is_restics_keep_within_m() {
    let bed = TestBed::offline();
    // restic's `--keep-within 6m`: newest (2026-01-31 03:00) minus 6 calendar months is
    // 2025-07-31 03:00, and a backup is kept when strictly newer: 2025-08-01 back to the newest,
    // 184 days.
    let within = kept(&bed, &["--keep-within", "6mo"]);
    assert_eq!(within.len(), 184);
    assert_eq!(
        within.first().unwrap(),
        &("b000".to_owned(), json!(["within 6mo"]))
    );
    assert_eq!(
        within.last().unwrap(),
        &("b183".to_owned(), json!(["within 6mo"]))
    );
    // `--keep-within-monthly 1y1mo`: newest minus 1y1mo is 2024-12-31 03:00, the last backup of
    // December 2024, which is on the edge and so outside: the newest backup of each month from
    // January 2025 (b365, 2025-01-31) to January 2026 is kept, 13 months.
    let monthly = kept(&bed, &["--keep-within-monthly", "1y1mo"]);
    assert_eq!(monthly.len(), 13, "{monthly:?}");
    assert_eq!(
        monthly.last().unwrap(),
        &("b365".to_owned(), json!(["monthly within 1y1mo"]))
    );
    // Minutes and months are different windows, and the reason says which.
    let minutes = kept(&bed, &["--keep-within", "90min"]);
    assert_eq!(minutes, vec![("b000".to_owned(), json!(["within 90min"]))]);
}

#[test]
fn older_than_takes_minutes_and_calendar_months() {
    let bed = TestBed::start();
    let volume = bed.volume(1, &[]);
    let aged = |age: Duration| {
        let start = (Utc::now() - age).to_rfc3339();
        bed.snapshot_with_tags(
            REGION,
            &volume,
            &[("autosnap-testbed:start-time", start.as_str())],
        )
    };
    let recent = aged(Duration::minutes(45));
    let two_hours = aged(Duration::hours(2));
    let old = aged(Duration::days(200));
    let listed = |older_than: &str| -> Vec<String> {
        let mut ids: Vec<String> = bed
            .json(&["snapshot", "list", "--older-than", older_than])
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["snapshot_id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    let sorted = |mut ids: Vec<String>| {
        ids.sort();
        ids
    };
    assert_eq!(
        listed("90min"),
        sorted(vec![two_hours.clone(), old.clone()])
    );
    assert_eq!(listed("6mo"), vec![old.clone()]);
    assert_eq!(listed("30min"), sorted(vec![recent, two_hours, old]));
}

const POLICY: &str = r#"
[[policy]]
name = "db"
resource = "instance"
select = [{ tags = { Backup = "daily" } }]
schedule = "0 3 * * *"
"#;

/// `config check` of one policy with these `retain` rules and further lines.
fn config_check(bed: &TestBed, retain: &str, policy_lines: &str) -> std::process::Output {
    let path = bed.write_config(
        "autosnap.toml",
        &format!("[aws]\nregion = \"{REGION}\"\n{POLICY}retain = {retain}\n{policy_lines}\n"),
        0o600,
    );
    bed.bare_cmd()
        .args(["-c", path.to_str().unwrap(), "config", "check"])
        .output()
        .unwrap()
}

/// What `config check` said: its report of the file is on stdout (its table) or, when the
/// file cannot be read at all, on stderr.
fn said(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn config_check_refuses_a_bad_duration_naming_the_policy_and_field() {
    let bed = TestBed::offline();
    for (lines, expected) in [
        (
            "consistency = { freeze = [\"/data\"], freeze_timeout = \"ten\" }",
            "policy \"db\": consistency.freeze_timeout is \"ten\": invalid duration \"ten\"",
        ),
        (
            "consistency = { pre = [\"true\"], hook_timeout = \"2m\" }",
            "policy \"db\": consistency.hook_timeout is \"2m\": \"2m\" is ambiguous: write 2min \
             for minutes or 2mo for months",
        ),
        (
            "consistency = { freeze = [\"/data\"], freeze_timeout = \"1mo\" }",
            "policy \"db\": consistency.freeze_timeout is \"1mo\": duration \"1mo\" has months",
        ),
    ] {
        let out = config_check(&bed, "{ last = 3 }", lines);
        let report = said(&out);
        assert_eq!(out.status.code(), Some(2), "{lines}: {report}");
        assert!(report.contains(expected), "{lines}:\n{report}");
    }
}

#[test]
fn a_retention_window_written_with_restics_m_says_to_write_mo() {
    let bed = TestBed::offline();
    let out = config_check(&bed, "{ last = 3, within = \"6m\" }", "");
    let report = said(&out);
    assert_eq!(out.status.code(), Some(2), "{report}");
    assert!(
        report.contains("\"6m\" is ambiguous: write 6min for minutes or 6mo for months"),
        "{report}"
    );
    assert!(report.contains("(in policy \"db\")"), "{report}");

    // Written with mo (and the timeouts with s and min), the config file is valid; the check
    // goes on to credentials, which this sandbox does not have.
    let out = config_check(
        &bed,
        "{ last = 3, within = \"6mo\" }",
        "consistency = { freeze = [\"/data\"], freeze_timeout = \"30s\", hook_timeout = \"2min\" }",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("autosnap.toml is valid"), "{stdout}");
}

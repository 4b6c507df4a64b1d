//! `autosnap retention simulate` through the real binary (offline).

use crate::support::TestBed;
use chrono::{DateTime, Duration, TimeZone, Utc};
use predicates::prelude::*;
use serde_json::{json, Value};

/// Daily backups at 03:00 for `days` days ending on Saturday 2026-01-31.
fn daily(days: i64) -> Value {
    let newest: DateTime<Utc> = Utc.with_ymd_and_hms(2026, 1, 31, 3, 0, 0).unwrap();
    Value::Array(
        (0..days)
            .map(|i| {
                let t = newest - Duration::days(i);
                json!({"id": format!("b{i:02}"), "time": t.to_rfc3339(), "tags": if i == 40 { vec!["keep"] } else { vec![] }})
            })
            .collect(),
    )
}

fn write_input(bed: &TestBed, v: &Value) -> String {
    let p = bed.home.path().join("backups.json");
    std::fs::write(&p, v.to_string()).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn worked_example_daily_and_weekly() {
    let bed = TestBed::offline();
    let input = write_input(&bed, &daily(60));
    let out = bed
        .bare_cmd()
        .args([
            "retention",
            "simulate",
            "--input",
            &input,
            "--keep-daily",
            "7",
            "--keep-weekly",
            "5",
        ])
        .args(["--now", "2026-02-01T00:00:00Z", "-o", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let kept: Vec<&str> = v["keep"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    // 7 dailies (Jan 25–31). The 5 newest ISO weeks' newest backups are
    // Jan 31 (Sat) and Jan 25 (Sun), both dailies already, then the Sundays
    // Jan 18, 11 and 4: 7 + 3 (retention.md: "3 or 4 depending on the weekday").
    assert_eq!(
        kept,
        vec!["b00", "b01", "b02", "b03", "b04", "b05", "b06", "b13", "b20", "b27"]
    );
    let reasons = |i: usize| v["keep"][i]["reasons"].clone();
    assert_eq!(reasons(0), json!(["daily snapshot", "weekly snapshot"]));
    assert_eq!(reasons(1), json!(["daily snapshot"]));
    assert_eq!(reasons(6), json!(["daily snapshot", "weekly snapshot"]));
    assert_eq!(reasons(7), json!(["weekly snapshot"]));
    assert_eq!(v["remove"].as_array().unwrap().len(), 60 - 10);
    assert!(v["remove"][0].get("reasons").is_none());
}

#[test]
fn within_tags_and_stdin() {
    let bed = TestBed::offline();
    let out = bed
        .bare_cmd()
        .args([
            "retention",
            "simulate",
            "--input",
            "-",
            "--keep-within",
            "2d",
            "--keep-tag",
            "keep",
        ])
        .args(["--now", "2026-02-01T00:00:00Z", "-o", "json"])
        .write_stdin(daily(60).to_string())
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let kept: Vec<(&str, &Value)> = v["keep"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["id"].as_str().unwrap(), &k["reasons"]))
        .collect();
    // within 2d of the newest (Jan 31 03:00): strictly after Jan 29 03:00.
    assert_eq!(kept[0], ("b00", &json!(["within 2d"])));
    assert_eq!(kept[1], ("b01", &json!(["within 2d"])));
    assert_eq!(kept[2], ("b40", &json!(["has tags [keep]"])));
    assert_eq!(kept.len(), 3);
}

#[test]
fn table_lists_every_backup_with_its_decision() {
    let bed = TestBed::offline();
    let input = write_input(&bed, &daily(3));
    bed.bare_cmd()
        .args([
            "retention",
            "simulate",
            "--input",
            &input,
            "--keep-last",
            "1",
            "--now",
            "2026-02-01T00:00:00Z",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("b00"))
        .stdout(predicate::str::contains("last snapshot"))
        .stdout(predicate::str::contains("b02"))
        .stdout(predicate::str::contains("remove"))
        .stdout(predicate::str::contains("1 kept, 2 removed"));
}

#[test]
fn bad_input_and_rules_are_usage_errors() {
    let bed = TestBed::offline();
    let input = write_input(&bed, &daily(3));
    // No rule at all.
    bed.bare_cmd()
        .args(["retention", "simulate", "--input", &input])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--keep-"));
    // Negative count, bad duration, bad time.
    for args in [
        vec!["--keep-daily", "-1"],
        vec!["--keep-within", "2x"],
        vec!["--keep-last", "1", "--now", "yesterday"],
    ] {
        bed.bare_cmd()
            .args(["retention", "simulate", "--input", &input])
            .args(&args)
            .assert()
            .code(2);
    }
    // Not JSON, missing file.
    let bad = bed.home.path().join("bad.json");
    std::fs::write(&bad, "[{\"id\": 1}]").unwrap();
    bed.bare_cmd()
        .args(["retention", "simulate", "--keep-last", "1", "--input"])
        .arg(&bad)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("JSON array"));
    bed.bare_cmd()
        .args([
            "retention",
            "simulate",
            "--keep-last",
            "1",
            "--input",
            "/nonexistent.json",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("/nonexistent.json"));
    // "unlimited" is a count.
    bed.bare_cmd()
        .args([
            "retention",
            "simulate",
            "--input",
            &input,
            "--keep-daily",
            "unlimited",
            "--now",
            "2026-02-01T00:00:00Z",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("3 kept, 0 removed"));
}

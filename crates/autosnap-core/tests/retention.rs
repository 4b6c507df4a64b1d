//! Focused retention tests: the worked example of `shared/notes/retention.md`, week and month
//! boundaries, future-dated backups, ties, safety rules, and the policy's config form.

use autosnap_core::duration::CalendarDuration;
use autosnap_core::retention::{
    apply, Count, Decision, KeepPolicy, PolicyError, RetentionItem, REASON_EMPTY_POLICY,
    REASON_NEWEST,
};
use chrono::{DateTime, Datelike, NaiveDateTime, TimeDelta, Utc, Weekday};

fn time(s: &str) -> DateTime<Utc> {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
        .unwrap_or_else(|e| panic!("bad time {s:?}: {e}"))
        .and_utc()
}

fn item(id: &str, t: &str) -> RetentionItem {
    RetentionItem {
        id: id.to_owned(),
        time: time(t),
        tags: Vec::new(),
    }
}

fn tagged(id: &str, t: &str, tags: &[&str]) -> RetentionItem {
    RetentionItem {
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        ..item(id, t)
    }
}

fn policy(toml_text: &str) -> KeepPolicy {
    toml::from_str(toml_text).unwrap_or_else(|e| panic!("bad policy {toml_text:?}: {e}"))
}

/// `(id, reasons)` of the kept backups, newest first.
fn kept(decisions: &[Decision]) -> Vec<(&str, Vec<&str>)> {
    decisions
        .iter()
        .filter(|d| d.keep)
        .map(|d| {
            (
                d.id.as_str(),
                d.reasons.iter().map(String::as_str).collect(),
            )
        })
        .collect()
}

fn kept_ids(decisions: &[Decision]) -> Vec<&str> {
    decisions
        .iter()
        .filter(|d| d.keep)
        .map(|d| d.id.as_str())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The worked example: daily backups at 03:00 for 60 days, keep-daily 7, keep-weekly 5.
// ---------------------------------------------------------------------------------------------

/// 60 daily backups at 03:00, the newest on `newest_day`; id `dNN` counts back from the newest
/// (`d00` is the newest).
fn sixty_dailies(newest_day: &str) -> Vec<RetentionItem> {
    let newest = time(&format!("{newest_day} 03:00:00"));
    (0..60)
        .map(|n| RetentionItem {
            id: format!("d{n:02}"),
            time: newest - TimeDelta::days(n),
            tags: Vec::new(),
        })
        .collect()
}

#[test]
fn worked_example_with_newest_on_a_wednesday() {
    // 2024-05-15 is a Wednesday. The 7 newest days are Thu 9 May … Wed 15 May. The weekly
    // rule keeps Wed 15 (week 20) and Sun 12 (week 19) — both already dailies — then
    // Sun 5 May, Sun 28 Apr and Sun 21 Apr: 7 + 3 = 10.
    let items = sixty_dailies("2024-05-15");
    let decisions = apply(
        &policy("daily = 7\nweekly = 5"),
        &items,
        time("2024-06-01 00:00:00"),
    );
    let both = vec!["daily snapshot", "weekly snapshot"];
    let daily = vec!["daily snapshot"];
    let weekly = vec!["weekly snapshot"];
    assert_eq!(
        kept(&decisions),
        vec![
            ("d00", both.clone()), // Wed 15 May
            ("d01", daily.clone()),
            ("d02", daily.clone()),
            ("d03", both), // Sun 12 May
            ("d04", daily.clone()),
            ("d05", daily.clone()),
            ("d06", daily),          // Thu 9 May
            ("d10", weekly.clone()), // Sun 5 May
            ("d17", weekly.clone()), // Sun 28 Apr
            ("d24", weekly),         // Sun 21 Apr
        ]
    );
}

#[test]
fn worked_example_with_newest_on_a_sunday() {
    // When the newest backup is a Sunday, the 7 dailies are exactly one ISO week, so the
    // weekly rule adds 4 more Sundays: 7 + 4 = 11.
    let items = sixty_dailies("2024-05-12");
    let decisions = apply(
        &policy("daily = 7\nweekly = 5"),
        &items,
        time("2024-06-01 00:00:00"),
    );
    assert_eq!(
        kept_ids(&decisions),
        vec!["d00", "d01", "d02", "d03", "d04", "d05", "d06", "d07", "d14", "d21", "d28"]
    );
    assert_eq!(decisions[0].reasons, ["daily snapshot", "weekly snapshot"]);
    assert_eq!(decisions[7].reasons, ["weekly snapshot"]);
}

#[test]
fn worked_example_total_is_ten_or_eleven_for_every_weekday() {
    // 2024-05-13 is a Monday; try a newest backup on each day of that week.
    for offset in 0..7 {
        let newest = time("2024-05-13 03:00:00") + TimeDelta::days(offset);
        let items = sixty_dailies(&newest.format("%Y-%m-%d").to_string());
        let decisions = apply(
            &policy("daily = 7\nweekly = 5"),
            &items,
            time("2024-06-01 00:00:00"),
        );
        let total = decisions.iter().filter(|d| d.keep).count();
        let expected = if newest.weekday() == Weekday::Sun {
            11
        } else {
            10
        };
        assert_eq!(total, expected, "newest on {}", newest.weekday());
        // The 7 newest are always kept as dailies.
        assert!(decisions[..7]
            .iter()
            .all(|d| d.reasons[0] == "daily snapshot"));
        // Only 5 weekly reasons in total, and no "oldest": the rules ran out of count.
        let weekly = decisions
            .iter()
            .filter(|d| d.reasons.iter().any(|r| r == "weekly snapshot"))
            .count();
        assert_eq!(weekly, 5);
        assert!(decisions
            .iter()
            .all(|d| d.reasons.iter().all(|r| !r.starts_with("oldest"))));
    }
}

// ---------------------------------------------------------------------------------------------
// Buckets and the "oldest" rule.
// ---------------------------------------------------------------------------------------------

#[test]
fn iso_weeks_run_monday_to_sunday() {
    let items = vec![
        item("sat", "2024-05-11 12:00:00"),
        item("sun-late", "2024-05-12 23:59:59"),
        item("mon-early", "2024-05-13 00:00:00"),
    ];
    let decisions = apply(&policy("weekly = 2"), &items, time("2024-06-01 00:00:00"));
    // Monday starts a new week; Saturday and Sunday share one, and Sunday is the newer.
    assert_eq!(kept_ids(&decisions), vec!["mon-early", "sun-late"]);
}

#[test]
fn iso_week_53_spans_the_year_boundary() {
    // Thu 31 Dec 2020 … Sun 3 Jan 2021 are all 2020-W53; Mon 4 Jan 2021 is 2021-W01;
    // Sun 27 Dec 2020 is 2020-W52.
    let items = vec![
        item("w52-sun", "2020-12-27 12:00:00"),
        item("w53-thu", "2020-12-31 12:00:00"),
        item("w53-sun", "2021-01-03 12:00:00"),
        item("w01-mon", "2021-01-04 12:00:00"),
    ];
    let decisions = apply(
        &policy("weekly = \"unlimited\""),
        &items,
        time("2021-02-01 00:00:00"),
    );
    assert_eq!(kept_ids(&decisions), vec!["w01-mon", "w53-sun", "w52-sun"]);
    // The yearly rule, by contrast, uses the calendar year (and keeps the oldest backup,
    // since an unlimited count never runs out).
    let decisions = apply(
        &policy("yearly = \"unlimited\""),
        &items,
        time("2021-02-01 00:00:00"),
    );
    assert_eq!(
        kept(&decisions),
        vec![
            ("w01-mon", vec!["yearly snapshot"]),
            ("w53-thu", vec!["yearly snapshot"]),
            ("w52-sun", vec!["oldest yearly snapshot"]),
        ]
    );
}

#[test]
fn iso_week_1_can_start_in_december() {
    // Mon 30 Dec 2019 … Sun 5 Jan 2020 is 2020-W01; Sun 29 Dec 2019 is 2019-W52.
    let items = vec![
        item("w52", "2019-12-29 12:00:00"),
        item("w01-dec", "2019-12-30 12:00:00"),
        item("w01-jan", "2020-01-01 12:00:00"),
    ];
    let decisions = apply(&policy("weekly = 5"), &items, time("2020-02-01 00:00:00"));
    assert_eq!(
        kept(&decisions),
        vec![
            ("w01-jan", vec!["weekly snapshot"]),
            ("w52", vec!["weekly snapshot"]),
        ]
    );
}

#[test]
fn oldest_backup_is_kept_while_a_rule_has_count_left() {
    let items = vec![
        item("newest", "2024-05-15 20:00:00"),
        item("middle", "2024-05-15 12:00:00"),
        item("oldest", "2024-05-15 03:00:00"),
    ];
    let decisions = apply(&policy("daily = 7"), &items, time("2024-06-01 00:00:00"));
    assert_eq!(
        kept(&decisions),
        vec![
            ("newest", vec!["daily snapshot"]),
            ("oldest", vec!["oldest daily snapshot"]),
        ]
    );
    // With no count left, the oldest is not kept.
    let decisions = apply(&policy("daily = 1"), &items, time("2024-06-01 00:00:00"));
    assert_eq!(kept_ids(&decisions), vec!["newest"]);
    // An oldest backup in a bucket of its own gets the plain reason.
    let mut items = items;
    items.push(item("older-day", "2024-05-14 03:00:00"));
    let decisions = apply(&policy("daily = 7"), &items, time("2024-06-01 00:00:00"));
    assert_eq!(
        kept(&decisions),
        vec![
            ("newest", vec!["daily snapshot"]),
            ("older-day", vec!["daily snapshot"]),
        ]
    );
}

#[test]
fn empty_periods_do_not_use_up_counts() {
    // Three backups on days far apart: daily = 3 keeps all three, whatever the gaps.
    let items = vec![
        item("a", "2024-05-15 03:00:00"),
        item("b", "2024-03-01 03:00:00"),
        item("c", "2023-01-01 03:00:00"),
        item("d", "2022-01-01 03:00:00"),
    ];
    let decisions = apply(&policy("daily = 3"), &items, time("2024-06-01 00:00:00"));
    assert_eq!(kept_ids(&decisions), vec!["a", "b", "c"]);
}

#[test]
fn within_period_rules_mark_the_oldest_inside_their_window() {
    let items = vec![
        item("n", "2024-05-15 20:00:00"),
        item("m", "2024-05-15 10:00:00"),
        item("o", "2024-05-15 03:00:00"),
    ];
    let decisions = apply(
        &policy(r#"within_daily = "7d""#),
        &items,
        time("2024-06-01 00:00:00"),
    );
    assert_eq!(
        kept(&decisions),
        vec![
            ("n", vec!["daily within 7d"]),
            ("o", vec!["oldest daily within 7d"]),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Within-windows: strictness, calendar arithmetic, future-dated backups.
// ---------------------------------------------------------------------------------------------

#[test]
fn within_is_strict_and_uses_calendar_months() {
    // latest = 31 March 12:00; 31 March − 1 month normalises to 3 March 12:00 (not 28 Feb).
    let items = vec![
        item("latest", "2023-03-31 12:00:00"),
        item("just-inside", "2023-03-03 12:00:00.001"),
        item("on-the-edge", "2023-03-03 12:00:00"),
        item("feb-28", "2023-02-28 12:00:00"),
    ];
    let decisions = apply(
        &policy(r#"within = "1mo""#),
        &items,
        time("2023-04-01 00:00:00"),
    );
    assert_eq!(
        kept(&decisions),
        vec![
            ("latest", vec!["within 1mo"]),
            ("just-inside", vec!["within 1mo"]),
        ]
    );
}

#[test]
fn within_hours_are_absolute_after_days() {
    // latest − 1d2h = 2023-03-01 12:00 − 1 day − 2 hours = 2023-02-28 10:00.
    let items = vec![
        item("latest", "2023-03-01 12:00:00"),
        item("in", "2023-02-28 10:00:01"),
        item("out", "2023-02-28 10:00:00"),
    ];
    let decisions = apply(
        &policy(r#"within = "1d2h""#),
        &items,
        time("2023-03-02 00:00:00"),
    );
    assert_eq!(kept_ids(&decisions), vec!["latest", "in"]);
}

#[test]
fn future_dated_backups_do_not_anchor_within_windows() {
    let items = vec![
        item("future", "2024-07-01 00:00:00"),
        item("at-now", "2024-06-01 00:00:00"),
        item("latest", "2024-05-31 12:00:00"),
        item("in", "2024-05-30 13:00:00"),
        item("out", "2024-05-30 12:00:00"),
    ];
    let now = time("2024-06-01 00:00:00");
    let decisions = apply(&policy(r#"within = "1d""#), &items, now);
    // `latest` is the newest backup strictly before now; backups at or after now are
    // inside every window (they are newer than latest).
    assert_eq!(
        kept_ids(&decisions),
        vec!["future", "at-now", "latest", "in"]
    );

    // A within-period rule: the future-dated backups take the newest buckets.
    let decisions = apply(&policy(r#"within_daily = "1d""#), &items, now);
    assert_eq!(
        kept(&decisions),
        vec![
            ("future", vec!["daily within 1d"]),
            ("at-now", vec!["daily within 1d"]),
            ("latest", vec!["daily within 1d"]),
            ("in", vec!["daily within 1d"]),
        ]
    );
}

#[test]
fn with_no_backup_before_now_every_window_covers_everything() {
    let items = vec![
        item("a", "2024-07-02 00:00:00"),
        item("b", "2024-07-01 00:00:00"),
        item("c", "2020-07-01 00:00:00"),
    ];
    let decisions = apply(
        &policy("within = \"1h\"\nwithin_yearly = \"1h\""),
        &items,
        time("2020-07-01 00:00:00"), // c is exactly at now, so not before it
    );
    assert_eq!(
        kept(&decisions),
        vec![
            ("a", vec!["within 1h", "yearly within 1h"]),
            ("b", vec!["within 1h"]),
            ("c", vec!["within 1h", "yearly within 1h"]),
        ]
    );
}

#[test]
fn huge_within_saturates_and_keeps_everything() {
    let items = vec![
        item("a", "2024-05-15 03:00:00"),
        item("b", "1970-01-01 00:00:00"),
    ];
    let decisions = apply(
        &policy(r#"within = "4294967295y""#),
        &items,
        time("2024-06-01 00:00:00"),
    );
    assert!(decisions.iter().all(|d| d.keep));
}

// ---------------------------------------------------------------------------------------------
// Ordering, ties, tags and the safety rules.
// ---------------------------------------------------------------------------------------------

#[test]
fn equal_times_keep_their_input_order() {
    let items = vec![
        item("second-input", "2024-05-15 03:00:00"),
        item("older", "2024-05-14 03:00:00"),
        item("third-input", "2024-05-15 03:00:00"),
    ];
    let decisions = apply(&policy("daily = 5"), &items, time("2024-06-01 00:00:00"));
    let order: Vec<&str> = decisions.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(order, ["second-input", "third-input", "older"]);
    // The first of equal times is the one the bucket keeps.
    assert_eq!(kept_ids(&decisions), vec!["second-input", "older"]);
}

#[test]
fn tags_need_every_tag_of_one_list() {
    let items = vec![
        tagged("ab", "2024-05-15 03:00:00", &["a", "b", "x"]),
        tagged("a", "2024-05-14 03:00:00", &["a"]),
        tagged("b", "2024-05-13 03:00:00", &["b"]),
        tagged("none", "2024-05-12 03:00:00", &[]),
    ];
    let now = time("2024-06-01 00:00:00");
    let decisions = apply(&policy(r#"tags = [["a", "b"]]"#), &items, now);
    assert_eq!(kept(&decisions), vec![("ab", vec!["has tags [a, b]"])]);
    let decisions = apply(&policy(r#"tags = [["a"], ["b"]]"#), &items, now);
    assert_eq!(
        kept(&decisions),
        vec![
            ("ab", vec!["has tags [a]", "has tags [b]"]),
            ("a", vec!["has tags [a]"]),
            ("b", vec!["has tags [b]"]),
        ]
    );
}

#[test]
fn the_newest_backup_is_never_removed() {
    // A tags-only policy would remove an untagged newest backup; autosnap keeps it.
    let items = vec![
        item("newest", "2024-05-15 03:00:00"),
        tagged("tagged", "2024-05-14 03:00:00", &["keep"]),
        item("old", "2024-05-13 03:00:00"),
    ];
    let decisions = apply(
        &policy(r#"tags = [["keep"]]"#),
        &items,
        time("2024-06-01 00:00:00"),
    );
    assert_eq!(
        kept(&decisions),
        vec![
            ("newest", vec![REASON_NEWEST]),
            ("tagged", vec!["has tags [keep]"]),
        ]
    );
}

#[test]
fn an_empty_policy_keeps_everything() {
    let items = vec![
        item("a", "2024-05-15 03:00:00"),
        item("b", "2024-05-14 03:00:00"),
    ];
    for empty in [
        KeepPolicy::default(),
        policy("last = 0\ndaily = 0\nwithin = \"0d\""),
    ] {
        let decisions = apply(&empty, &items, time("2024-06-01 00:00:00"));
        assert_eq!(
            kept(&decisions),
            vec![
                ("a", vec![REASON_EMPTY_POLICY]),
                ("b", vec![REASON_EMPTY_POLICY]),
            ]
        );
    }
}

#[test]
fn no_backups_no_decisions() {
    let decisions = apply(&policy("daily = 7"), &[], time("2024-06-01 00:00:00"));
    assert!(decisions.is_empty());
}

#[test]
fn reasons_follow_rule_order() {
    let items = vec![tagged("x", "2024-05-15 03:00:00", &["keep"])];
    let everything = policy(
        "last = 1\nhourly = 1\ndaily = 1\nweekly = 1\nmonthly = 1\nyearly = 1\nwithin = \"1d\"\n\
         within_hourly = \"1d\"\nwithin_daily = \"1d\"\nwithin_weekly = \"1d\"\n\
         within_monthly = \"1d\"\nwithin_yearly = \"1d\"\ntags = [[\"keep\"]]",
    );
    let decisions = apply(&everything, &items, time("2024-06-01 00:00:00"));
    assert_eq!(
        decisions[0].reasons,
        [
            "has tags [keep]",
            "within 1d",
            "last snapshot",
            "hourly snapshot",
            "daily snapshot",
            "weekly snapshot",
            "monthly snapshot",
            "yearly snapshot",
            "hourly within 1d",
            "daily within 1d",
            "weekly within 1d",
            "monthly within 1d",
            "yearly within 1d",
        ]
    );
}

#[test]
fn decisions_serialise_for_plan_json() {
    let items = vec![item("snap-1", "2024-05-15 03:00:00")];
    let decisions = apply(&policy("last = 1"), &items, time("2024-06-01 00:00:00"));
    assert_eq!(
        serde_json::to_string(&decisions).unwrap(),
        r#"[{"id":"snap-1","time":"2024-05-15T03:00:00Z","keep":true,"reasons":["last snapshot"]}]"#
    );
    // And the simulate input format deserialises straight into items.
    let input: Vec<RetentionItem> =
        serde_json::from_str(r#"[{"id": "a", "time": "2024-05-15T05:00:00+02:00"}]"#).unwrap();
    assert_eq!(input, vec![item("a", "2024-05-15 03:00:00")]);
}

// ---------------------------------------------------------------------------------------------
// The policy as configuration.
// ---------------------------------------------------------------------------------------------

#[test]
fn policy_parses_from_an_inline_toml_table() {
    #[derive(serde::Deserialize)]
    struct Config {
        retain: KeepPolicy,
    }
    let config: Config = toml::from_str(
        r#"retain = { last = 3, daily = 7, weekly = 4, monthly = 12, yearly = "unlimited", within = "2d", within_daily = "7d", tags = [["keep"], ["a", "b"]] }"#,
    )
    .unwrap();
    let d = |s: &str| Some(s.parse::<CalendarDuration>().unwrap());
    assert_eq!(
        config.retain,
        KeepPolicy {
            last: Count::N(3),
            daily: Count::N(7),
            weekly: Count::N(4),
            monthly: Count::N(12),
            yearly: Count::Unlimited,
            within: d("2d"),
            within_daily: d("7d"),
            keep_tags: vec![vec!["keep".into()], vec!["a".into(), "b".into()]],
            ..KeepPolicy::default()
        }
    );
    assert_eq!(config.retain.validate(), Ok(()));
    assert_eq!(
        config.retain.to_string(),
        "keep last 3, daily 7, weekly 4, monthly 12, yearly unlimited, within 2d, \
         daily within 7d, tags [keep], tags [a, b]"
    );
}

#[test]
fn policy_accepts_keep_tags_as_an_alias() {
    let p = policy(r#"keep_tags = [["x"]]"#);
    assert_eq!(p.keep_tags, vec![vec!["x".to_owned()]]);
}

#[test]
fn policy_rejects_bad_input_with_useful_messages() {
    let cases = [
        ("dialy = 7", "unknown field `dialy`"),
        ("daily = -1", "counts cannot be negative"),
        ("daily = \"lots\"", "invalid count \"lots\""),
        (
            "within = \"2x\"",
            "invalid duration \"2x\": unknown unit \"x\"",
        ),
        (
            "within = \"6m\"",
            "\"6m\" is ambiguous: write 6min for minutes or 6mo for months",
        ),
        ("within = \"-2d\"", "durations cannot be negative"),
        ("within = 2", "invalid type"),
        ("tags = \"keep\"", "invalid type"),
    ];
    for (text, expected) in cases {
        let err = toml::from_str::<KeepPolicy>(text).unwrap_err().to_string();
        assert!(err.contains(expected), "{text:?}: {err}");
    }
}

#[test]
fn policy_round_trips_through_toml_and_json() {
    let original = policy(
        "last = 3\ndaily = \"unlimited\"\nwithin = \"1y2mo3d4h\"\nwithin_weekly = \"1mo\"\ntags = [[\"a\"]]",
    );
    let text = toml::to_string(&original).unwrap();
    assert_eq!(toml::from_str::<KeepPolicy>(&text).unwrap(), original);
    let json = serde_json::to_string(&original).unwrap();
    assert_eq!(
        json,
        r#"{"last":3,"daily":"unlimited","within":"1y2mo3d4h","within_weekly":"1mo","tags":[["a"]]}"#
    );
    assert_eq!(serde_json::from_str::<KeepPolicy>(&json).unwrap(), original);
}

#[test]
fn emptiness_and_validation() {
    assert!(KeepPolicy::default().is_empty());
    assert!(policy("last = 0\nwithin = \"0d\"\nwithin_yearly = \"0y\"").is_empty());
    assert!(!policy("last = 1").is_empty());
    assert!(!policy(r#"within_hourly = "1h""#).is_empty());
    assert!(!policy(r#"tags = [["x"]]"#).is_empty());

    assert_eq!(KeepPolicy::default().validate(), Err(PolicyError::Empty));
    assert_eq!(
        policy("tags = [[\"x\"], []]").validate(),
        Err(PolicyError::EmptyTagList { index: 1 })
    );
    assert_eq!(
        policy("tags = [[\"x\", \"\"]]").validate(),
        Err(PolicyError::EmptyTag { index: 0 })
    );
    let message = PolicyError::Empty.to_string();
    assert!(
        message.contains("the retention policy is empty"),
        "{message}"
    );
    assert!(PolicyError::EmptyTagList { index: 1 }
        .to_string()
        .contains("tags[1] is an empty list"));
}

#[test]
fn policy_display() {
    let cases = [
        (
            "last = 3\ndaily = 7\nwithin = \"2d\"",
            "keep last 3, daily 7, within 2d",
        ),
        ("hourly = \"unlimited\"", "keep hourly unlimited"),
        (
            "within_monthly = \"1y\"\nlast = 0",
            "keep monthly within 1y",
        ),
        ("tags = [[\"a\", \"b\"]]", "keep tags [a, b]"),
        ("", "empty policy (keeps everything)"),
    ];
    for (text, expected) in cases {
        assert_eq!(policy(text).to_string(), expected, "{text:?}");
    }
}

//! Schedules: due / next due / health for cron expressions (UTC and Europe/Berlin across
//! daylight-saving changes, month ends, every 15 minutes) and intervals, each at fixed `now`s.

use autosnap_core::schedule::{HealthState, Schedule};
use chrono::{DateTime, NaiveDateTime, Utc};
use chrono_tz::Tz;

/// `"2026-01-03 03:00"` or `"2026-01-03 03:00:05"`, UTC.
fn t(s: &str) -> DateTime<Utc> {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M"))
        .unwrap_or_else(|e| panic!("bad time {s:?}: {e}"))
        .and_utc()
}

const BERLIN: Tz = chrono_tz::Europe::Berlin;

struct Case {
    name: &'static str,
    schedule: &'static str,
    tz: Tz,
    newest: Option<&'static str>,
    now: &'static str,
    due: bool,
    reason: &'static str,
    next_due: &'static str,
    health: HealthState,
    /// A fragment of the health reason.
    health_reason: &'static str,
}

const CASES: &[Case] = &[
    Case {
        name: "daily cron, no backup",
        schedule: "0 3 * * *",
        tz: Tz::UTC,
        newest: None,
        now: "2026-01-03 10:00",
        due: true,
        reason: "no backup yet",
        next_due: "2026-01-03 10:00",
        health: HealthState::Missing,
        health_reason: "no backup yet",
    },
    Case {
        name: "daily cron, yesterday's backup, today's slot passed",
        schedule: "0 3 * * *",
        tz: Tz::UTC,
        newest: Some("2026-01-02 03:00"),
        now: "2026-01-03 10:00",
        due: true,
        reason: "newest backup 2026-01-02 03:00 UTC is before the 2026-01-03 03:00 UTC slot",
        next_due: "2026-01-03 10:00",
        health: HealthState::Late,
        health_reason: "which passed 7h ago (grace 1h)",
    },
    Case {
        name: "daily cron, today's backup covers today's slot",
        schedule: "0 3 * * *",
        tz: Tz::UTC,
        newest: Some("2026-01-03 03:00:05"),
        now: "2026-01-03 10:00",
        due: false,
        reason: "newest backup 2026-01-03 03:00:05 UTC covers the 2026-01-03 03:00 UTC slot; \
                 next slot 2026-01-04 03:00 UTC",
        next_due: "2026-01-04 03:00",
        health: HealthState::Ok,
        health_reason: "covers the 2026-01-03 03:00 UTC slot",
    },
    Case {
        name: "daily cron, exactly at the slot",
        schedule: "0 3 * * *",
        tz: Tz::UTC,
        newest: Some("2026-01-02 03:00"),
        now: "2026-01-03 03:00",
        due: true,
        reason: "newest backup 2026-01-02 03:00 UTC is before the 2026-01-03 03:00 UTC slot",
        next_due: "2026-01-03 03:00",
        health: HealthState::Ok,
        health_reason: "the 2026-01-03 03:00 UTC slot passed 0s ago, within its grace of 1h",
    },
    Case {
        name: "daily cron, one second before the slot",
        schedule: "0 3 * * *",
        tz: Tz::UTC,
        newest: Some("2026-01-02 03:00"),
        now: "2026-01-03 02:59:59",
        due: false,
        reason: "newest backup 2026-01-02 03:00 UTC covers the 2026-01-02 03:00 UTC slot; \
                 next slot 2026-01-03 03:00 UTC",
        next_due: "2026-01-03 03:00",
        health: HealthState::Ok,
        health_reason: "covers",
    },
    Case {
        name: "daily cron, grace ends after one hour",
        schedule: "0 3 * * *",
        tz: Tz::UTC,
        newest: Some("2026-01-02 03:00"),
        now: "2026-01-03 04:00:01",
        due: true,
        reason: "newest backup 2026-01-02 03:00 UTC is before the 2026-01-03 03:00 UTC slot",
        next_due: "2026-01-03 04:00:01",
        health: HealthState::Late,
        health_reason: "which passed 1h ago (grace 1h)",
    },
    Case {
        name: "daily cron, two slots missed is late even inside today's grace",
        schedule: "0 3 * * *",
        tz: Tz::UTC,
        newest: Some("2026-01-01 03:00"),
        now: "2026-01-03 03:10",
        due: true,
        reason: "newest backup 2026-01-01 03:00 UTC is before the 2026-01-03 03:00 UTC slot",
        next_due: "2026-01-03 03:10",
        health: HealthState::Late,
        health_reason: "is before the 2026-01-02 03:00 UTC slot",
    },
    Case {
        name: "a backup dated in the future does not count",
        schedule: "0 3 * * *",
        tz: Tz::UTC,
        newest: Some("2026-01-04 03:00"),
        now: "2026-01-03 10:00",
        due: true,
        reason: "no backup yet",
        next_due: "2026-01-03 10:00",
        health: HealthState::Missing,
        health_reason: "no backup yet",
    },
    // Europe/Berlin, spring forward on 2026-03-29: 02:00 CET jumps to 03:00 CEST.
    // A 02:30 job runs at the first minute after the gap, 03:00 CEST = 01:00 UTC.
    Case {
        name: "Berlin 02:30, spring forward: before the shifted slot",
        schedule: "30 2 * * *",
        tz: BERLIN,
        newest: Some("2026-03-28 01:30"),
        now: "2026-03-29 00:59",
        due: false,
        reason: "newest backup 2026-03-28 01:30 UTC covers the 2026-03-28 01:30 UTC \
                 (02:30 Europe/Berlin) slot; next slot 2026-03-29 01:00 UTC (03:00 Europe/Berlin)",
        next_due: "2026-03-29 01:00",
        health: HealthState::Ok,
        health_reason: "covers",
    },
    Case {
        name: "Berlin 02:30, spring forward: the slot after the gap",
        schedule: "30 2 * * *",
        tz: BERLIN,
        newest: Some("2026-03-28 01:30"),
        now: "2026-03-29 01:00",
        due: true,
        reason: "newest backup 2026-03-28 01:30 UTC is before the 2026-03-29 01:00 UTC \
                 (03:00 Europe/Berlin) slot",
        next_due: "2026-03-29 01:00",
        health: HealthState::Ok,
        health_reason: "within its grace of 1h",
    },
    Case {
        name: "Berlin 03:00, the day after spring forward is 01:00 UTC",
        schedule: "0 3 * * *",
        tz: BERLIN,
        newest: Some("2026-03-29 01:00"),
        now: "2026-03-30 00:30",
        due: false,
        reason: "newest backup 2026-03-29 01:00 UTC covers the 2026-03-29 01:00 UTC \
                 (03:00 Europe/Berlin) slot; next slot 2026-03-30 01:00 UTC (03:00 Europe/Berlin)",
        next_due: "2026-03-30 01:00",
        health: HealthState::Ok,
        health_reason: "covers",
    },
    // Fall back on 2026-10-25: 03:00 CEST goes back to 02:00 CET; 02:30 happens twice.
    Case {
        name: "Berlin 02:30, fall back: runs once, at the first 02:30",
        schedule: "30 2 * * *",
        tz: BERLIN,
        newest: Some("2026-10-25 00:30"),
        now: "2026-10-25 01:45",
        due: false,
        reason: "newest backup 2026-10-25 00:30 UTC covers the 2026-10-25 00:30 UTC \
                 (02:30 Europe/Berlin) slot; next slot 2026-10-26 01:30 UTC (02:30 Europe/Berlin)",
        next_due: "2026-10-26 01:30",
        health: HealthState::Ok,
        health_reason: "covers",
    },
    Case {
        name: "Berlin 03:00, fall back: the slot moves from 01:00 to 02:00 UTC",
        schedule: "0 3 * * *",
        tz: BERLIN,
        newest: Some("2026-10-24 01:00"),
        now: "2026-10-25 01:30",
        due: false,
        reason: "newest backup 2026-10-24 01:00 UTC covers the 2026-10-24 01:00 UTC \
                 (03:00 Europe/Berlin) slot; next slot 2026-10-25 02:00 UTC (03:00 Europe/Berlin)",
        next_due: "2026-10-25 02:00",
        health: HealthState::Ok,
        health_reason: "covers",
    },
    Case {
        name: "Berlin midnight is the previous day in UTC",
        schedule: "0 0 * * *",
        tz: BERLIN,
        newest: Some("2026-01-01 23:00"),
        now: "2026-01-02 23:00",
        due: true,
        reason: "newest backup 2026-01-01 23:00 UTC is before the 2026-01-02 23:00 UTC \
                 (2026-01-03 00:00 Europe/Berlin) slot",
        next_due: "2026-01-02 23:00",
        health: HealthState::Ok,
        health_reason: "within its grace",
    },
    // Month ends.
    Case {
        name: "the 31st skips short months",
        schedule: "0 3 31 * *",
        tz: Tz::UTC,
        newest: Some("2026-03-31 03:00"),
        now: "2026-04-30 12:00",
        due: false,
        reason: "newest backup 2026-03-31 03:00 UTC covers the 2026-03-31 03:00 UTC slot; \
                 next slot 2026-05-31 03:00 UTC",
        next_due: "2026-05-31 03:00",
        health: HealthState::Ok,
        health_reason: "covers",
    },
    Case {
        name: "last day of February",
        schedule: "0 3 L * *",
        tz: Tz::UTC,
        newest: Some("2026-01-31 03:00"),
        now: "2026-02-28 12:00",
        due: true,
        reason: "newest backup 2026-01-31 03:00 UTC is before the 2026-02-28 03:00 UTC slot",
        next_due: "2026-02-28 12:00",
        health: HealthState::Late,
        health_reason: "passed 9h ago (grace 1h)",
    },
    Case {
        name: "monthly on the 1st, new year",
        schedule: "0 0 1 * *",
        tz: Tz::UTC,
        newest: Some("2025-12-01 00:00"),
        now: "2026-01-01 00:30",
        due: true,
        reason: "newest backup 2025-12-01 00:00 UTC is before the 2026-01-01 00:00 UTC slot",
        next_due: "2026-01-01 00:30",
        health: HealthState::Ok,
        health_reason: "passed 30min ago, within its grace of 1h",
    },
    // Every 15 minutes: grace is a quarter of 15 minutes.
    Case {
        name: "every 15 minutes, before the next slot",
        schedule: "*/15 * * * *",
        tz: Tz::UTC,
        newest: Some("2026-01-03 10:00"),
        now: "2026-01-03 10:14:59",
        due: false,
        reason: "newest backup 2026-01-03 10:00 UTC covers the 2026-01-03 10:00 UTC slot; \
                 next slot 2026-01-03 10:15 UTC",
        next_due: "2026-01-03 10:15",
        health: HealthState::Ok,
        health_reason: "covers",
    },
    Case {
        name: "every 15 minutes, within the grace",
        schedule: "*/15 * * * *",
        tz: Tz::UTC,
        newest: Some("2026-01-03 10:00"),
        now: "2026-01-03 10:18",
        due: true,
        reason: "newest backup 2026-01-03 10:00 UTC is before the 2026-01-03 10:15 UTC slot",
        next_due: "2026-01-03 10:18",
        health: HealthState::Ok,
        health_reason: "passed 3min ago, within its grace of 3min45s",
    },
    Case {
        name: "every 15 minutes, past the grace",
        schedule: "*/15 * * * *",
        tz: Tz::UTC,
        newest: Some("2026-01-03 10:00"),
        now: "2026-01-03 10:19",
        due: true,
        reason: "newest backup 2026-01-03 10:00 UTC is before the 2026-01-03 10:15 UTC slot",
        next_due: "2026-01-03 10:19",
        health: HealthState::Late,
        health_reason: "which passed 4min ago (grace 3min45s)",
    },
    // Intervals.
    Case {
        name: "interval, due",
        schedule: "6h",
        tz: Tz::UTC,
        newest: Some("2026-01-03 03:00"),
        now: "2026-01-03 10:00",
        due: true,
        reason: "newest backup is 7h old, interval 6h",
        next_due: "2026-01-03 10:00",
        health: HealthState::Ok,
        health_reason: "newest backup is 7h old, interval 6h",
    },
    Case {
        name: "interval, exactly one interval old",
        schedule: "6h",
        tz: Tz::UTC,
        newest: Some("2026-01-03 04:00"),
        now: "2026-01-03 10:00",
        due: true,
        reason: "newest backup is 6h old, interval 6h",
        next_due: "2026-01-03 10:00",
        health: HealthState::Ok,
        health_reason: "6h old",
    },
    Case {
        name: "interval, not due",
        schedule: "6h",
        tz: Tz::UTC,
        newest: Some("2026-01-03 08:00"),
        now: "2026-01-03 10:00",
        due: false,
        reason: "newest backup is 2h old; due in 4h",
        next_due: "2026-01-03 14:00",
        health: HealthState::Ok,
        health_reason: "2h old",
    },
    Case {
        name: "interval, late after interval + 1h",
        schedule: "6h",
        tz: Tz::UTC,
        newest: Some("2026-01-03 02:59"),
        now: "2026-01-03 10:00",
        due: true,
        reason: "newest backup is 7h1min old, interval 6h",
        next_due: "2026-01-03 10:00",
        health: HealthState::Late,
        health_reason: "newest backup is 7h1min old, interval 6h (grace 1h)",
    },
    Case {
        name: "30-minute interval, grace 7min30s",
        schedule: "30min",
        tz: Tz::UTC,
        newest: Some("2026-01-03 09:22"),
        now: "2026-01-03 10:00",
        due: true,
        reason: "newest backup is 38min old, interval 30min",
        next_due: "2026-01-03 10:00",
        health: HealthState::Late,
        health_reason: "(grace 7min30s)",
    },
    Case {
        name: "daily interval, not due, minutes",
        schedule: "1d",
        tz: Tz::UTC,
        newest: Some("2026-01-02 10:20"),
        now: "2026-01-03 10:00",
        due: false,
        reason: "newest backup is 23h40min old; due in 20min",
        next_due: "2026-01-03 10:20",
        health: HealthState::Ok,
        health_reason: "23h40min old, interval 1d",
    },
];

#[test]
fn due_next_due_and_health() {
    let mut failures = Vec::new();
    for case in CASES {
        let schedule: Schedule = case.schedule.parse().unwrap();
        let newest = case.newest.map(t);
        let now = t(case.now);
        let due = schedule.due(newest, now, case.tz);
        let next = schedule.next_due(newest, now, case.tz);
        let health = schedule.health(newest, now, case.tz);
        let mut problems = Vec::new();
        if due.due != case.due {
            problems.push(format!("due: got {}, want {}", due.due, case.due));
        }
        if due.reason != case.reason {
            problems.push(format!(
                "reason:\n    got  {:?}\n    want {:?}",
                due.reason, case.reason
            ));
        }
        if next != t(case.next_due) {
            problems.push(format!("next due: got {next}, want {}", case.next_due));
        }
        if health.state != case.health {
            problems.push(format!(
                "health: got {} ({}), want {}",
                health.state, health.reason, case.health
            ));
        }
        if !health.reason.contains(case.health_reason) {
            problems.push(format!(
                "health reason {:?} lacks {:?}",
                health.reason, case.health_reason
            ));
        }
        if !problems.is_empty() {
            failures.push(format!("{}:\n  {}", case.name, problems.join("\n  ")));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn previous_and_next_slots() {
    let s: Schedule = "*/15 * * * *".parse().unwrap();
    let now = t("2026-01-03 10:15:00");
    assert_eq!(s.previous_slot(now, Tz::UTC), Some(t("2026-01-03 10:15")));
    assert_eq!(s.next_slot(now, Tz::UTC), Some(t("2026-01-03 10:30")));
    // Fractional seconds: the slot we are in is not "next".
    let now = now + chrono::TimeDelta::milliseconds(500);
    assert_eq!(s.previous_slot(now, Tz::UTC), Some(t("2026-01-03 10:15")));
    assert_eq!(s.next_slot(now, Tz::UTC), Some(t("2026-01-03 10:30")));
    let interval: Schedule = "6h".parse().unwrap();
    assert_eq!(interval.previous_slot(now, Tz::UTC), None);
    assert_eq!(interval.interval(), Some(chrono::TimeDelta::hours(6)));
}

#[test]
fn parses_and_displays_the_original_text() {
    for text in [
        "0 3 * * *",
        "*/15 * * * *",
        "0 3 * * MON-FRI",
        "@daily",
        "6h",
        "1h30min",
        "1w",
        "30min",
        "90s1h",
    ] {
        let s: Schedule = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(s.to_string(), text);
        assert_eq!(serde_json::to_string(&s).unwrap(), format!("{text:?}"));
    }
    assert!("0 3 * * *".parse::<Schedule>().unwrap().is_cron());
    assert!(!"6h".parse::<Schedule>().unwrap().is_cron());
}

#[test]
fn bad_schedules_say_what_would_work() {
    let cases = [
        (
            "0 3 * *",
            "schedule \"0 3 * *\" is not a cron expression (a cron expression has 5 fields \
             (minute hour day-of-month month day-of-week), this has 4) or an interval like \"6h\"",
        ),
        (
            "0 0 3 * * *",
            "schedule \"0 0 3 * * *\" is not a cron expression (a cron expression has 5 fields",
        ),
        (
            "61 3 * * *",
            "schedule \"61 3 * * *\" is not a cron expression (number out of bounds: minute 0-59",
        ),
        (
            "6x",
            "schedule \"6x\" is not a cron expression like \"0 3 * * *\" or an interval \
             (unknown unit \"x\"",
        ),
        (
            "daily",
            "schedule \"daily\" is not a cron expression like \"0 3 * * *\" or an interval",
        ),
        ("30s", "an interval must be at least one minute"),
        ("0min", "an interval must be at least one minute"),
        (
            "30m",
            "schedule \"30m\" is not a cron expression like \"0 3 * * *\" or an interval \
             (\"30m\" is ambiguous: write 30min for minutes or 30mo for months)",
        ),
        (
            "1mo",
            "(months and years have no fixed length: for a monthly or yearly backup use a cron \
             expression such as \"0 3 1 * *\")",
        ),
        ("0 0 31 2 *", "schedule \"0 0 31 2 *\" never fires"),
        (
            "",
            "is not a cron expression like \"0 3 * * *\" or an interval (it is empty",
        ),
    ];
    for (text, expected) in cases {
        let message = text.parse::<Schedule>().unwrap_err().to_string();
        assert!(
            message.contains(expected),
            "{text:?}:\n  got  {message}\n  want {expected}"
        );
    }
}

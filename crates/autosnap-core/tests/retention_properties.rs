//! Property tests: invariants of the retention engine over random groups and policies, and
//! single-rule results checked against independent, simpler formulations of the rules.

use std::collections::HashSet;

use autosnap_core::duration::{parse_fixed, CalendarDuration};
use autosnap_core::retention::{apply, Count, Decision, KeepPolicy, RetentionItem};
use chrono::{DateTime, Datelike, Months, NaiveDate, TimeDelta, TimeZone, Utc};
use proptest::prelude::*;

/// The earliest time generated; everything is within a few years after it.
fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2019, 12, 20, 0, 0, 0).unwrap()
}

const TAGS: [&str; 3] = ["a", "b", "keep"];

/// Offsets (in seconds) that mix dense clusters (many backups per hour/day) with sparse
/// history over three years, so every bucket kind sees both collisions and gaps.
fn offset() -> impl Strategy<Value = i64> {
    prop_oneof![
        0i64..(3 * 365 * 86_400), // anywhere in three years
        0i64..(3 * 86_400),       // a dense few days at the start
        (2 * 365 * 86_400i64)..(2 * 365 * 86_400 + 21 * 86_400), // three dense weeks later
    ]
}

fn tags() -> impl Strategy<Value = Vec<String>> {
    proptest::sample::subsequence(TAGS.to_vec(), 0..=TAGS.len())
        .prop_map(|tags| tags.into_iter().map(str::to_owned).collect())
}

/// A group of backups with ids `i0`, `i1`, … (times may repeat).
fn items(max: usize) -> impl Strategy<Value = Vec<RetentionItem>> {
    proptest::collection::vec((offset(), tags()), 0..max).prop_map(|raw| {
        raw.into_iter()
            .enumerate()
            .map(|(n, (offset, tags))| RetentionItem {
                id: format!("i{n}"),
                time: base() + TimeDelta::seconds(offset),
                tags,
            })
            .collect()
    })
}

/// Like [`items`], but with distinct times.
fn items_with_distinct_times(max: usize) -> impl Strategy<Value = Vec<RetentionItem>> {
    items(max).prop_map(|mut items| {
        let mut seen = HashSet::new();
        items.retain(|item| seen.insert(item.time));
        items
    })
}

/// Somewhere from before the first possible backup to after the last: with future-dated
/// backups, and sometimes with none before `now`.
fn now() -> impl Strategy<Value = DateTime<Utc>> {
    (-30i64 * 86_400..(3 * 365 + 30) * 86_400).prop_map(|s| base() + TimeDelta::seconds(s))
}

fn count() -> impl Strategy<Value = Count> {
    prop_oneof![
        3 => Just(Count::Off),
        2 => (1u32..6).prop_map(Count::N),
        1 => Just(Count::Unlimited),
    ]
}

fn calendar_duration() -> impl Strategy<Value = CalendarDuration> {
    (0u32..2, 0u32..14, 0u32..40, 0u32..50).prop_map(|(years, months, days, hours)| {
        CalendarDuration {
            years,
            months,
            days,
            hours,
            ..CalendarDuration::default()
        }
    })
}

fn within() -> impl Strategy<Value = Option<CalendarDuration>> {
    prop_oneof![3 => Just(None), 1 => calendar_duration().prop_map(Some)]
}

fn tag_lists() -> impl Strategy<Value = Vec<Vec<String>>> {
    let list = proptest::sample::subsequence(TAGS.to_vec(), 1..=2)
        .prop_map(|tags| tags.into_iter().map(str::to_owned).collect::<Vec<_>>());
    prop_oneof![3 => Just(Vec::new()), 1 => proptest::collection::vec(list, 1..3)]
}

/// Any policy, including empty ones.
fn policy() -> impl Strategy<Value = KeepPolicy> {
    (
        (count(), count(), count(), count(), count(), count()),
        (within(), within(), within(), within(), within(), within()),
        tag_lists(),
    )
        .prop_map(|(c, w, keep_tags)| KeepPolicy {
            last: c.0,
            hourly: c.1,
            daily: c.2,
            weekly: c.3,
            monthly: c.4,
            yearly: c.5,
            within: w.0,
            within_hourly: w.1,
            within_daily: w.2,
            within_weekly: w.3,
            within_monthly: w.4,
            within_yearly: w.5,
            keep_tags,
        })
}

fn kept_ids(decisions: &[Decision]) -> HashSet<&str> {
    decisions
        .iter()
        .filter(|d| d.keep)
        .map(|d| d.id.as_str())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn one_explained_decision_per_backup_newest_first(
        policy in policy(), items in items(60), now in now()
    ) {
        let decisions = apply(&policy, &items, now);
        prop_assert_eq!(decisions.len(), items.len());
        let ids: HashSet<&str> = decisions.iter().map(|d| d.id.as_str()).collect();
        prop_assert_eq!(ids.len(), items.len());
        for pair in decisions.windows(2) {
            prop_assert!(pair[0].time >= pair[1].time, "not newest first");
        }
        for d in &decisions {
            prop_assert_eq!(d.keep, !d.reasons.is_empty(), "{:?}", d);
        }
    }

    #[test]
    fn applying_the_policy_to_the_kept_set_keeps_all_of_it(
        policy in policy(), items in items(60), now in now()
    ) {
        let first = apply(&policy, &items, now);
        let kept = kept_ids(&first);
        let kept_items: Vec<RetentionItem> =
            items.iter().filter(|i| kept.contains(i.id.as_str())).cloned().collect();
        let second = apply(&policy, &kept_items, now);
        prop_assert!(second.iter().all(|d| d.keep), "policy {policy}: {second:?}");
    }

    #[test]
    fn adding_an_older_backup_never_removes_a_newer_kept_one(
        policy in policy(),
        items in items(60).prop_filter("need a backup", |i| !i.is_empty()),
        older_by in 1i64..(400 * 86_400),
        now in now(),
    ) {
        let before = apply(&policy, &items, now);
        let oldest_before = before.last().unwrap().clone();
        let mut more = items.clone();
        more.push(RetentionItem {
            id: "added".to_owned(),
            time: oldest_before.time - TimeDelta::seconds(older_by),
            tags: Vec::new(),
        });
        let after = apply(&policy, &more, now);
        let kept_after = kept_ids(&after);
        for d in before.iter().filter(|d| d.keep) {
            // The previous oldest may have been kept only for being the oldest; every other
            // kept backup, and every reason other than "oldest …", must survive.
            let only_for_being_oldest = d.id == oldest_before.id
                && d.reasons.iter().all(|r| r.starts_with("oldest "));
            prop_assert!(
                only_for_being_oldest || kept_after.contains(d.id.as_str()),
                "policy {policy}: {} ({:?}) no longer kept", d.id, d.reasons
            );
        }
    }

    #[test]
    fn result_does_not_depend_on_input_order(
        policy in policy(),
        (items, shuffled) in items_with_distinct_times(60)
            .prop_flat_map(|items| (Just(items.clone()), Just(items).prop_shuffle())),
        now in now(),
    ) {
        prop_assert_eq!(apply(&policy, &items, now), apply(&policy, &shuffled, now));
    }

    #[test]
    fn a_non_empty_policy_keeps_the_newest_and_an_empty_one_keeps_everything(
        policy in policy(),
        items in items(60).prop_filter("need a backup", |i| !i.is_empty()),
        now in now(),
    ) {
        let decisions = apply(&policy, &items, now);
        prop_assert!(decisions[0].keep);
        if policy.is_empty() {
            prop_assert!(decisions.iter().all(|d| d.keep));
        }
    }

    /// A single count rule against a direct formulation: the newest backup of each of the N
    /// newest buckets, plus the oldest backup if fewer than N buckets came before it.
    /// Buckets are computed here with strftime patterns, independently of the engine.
    #[test]
    fn a_single_count_rule_keeps_the_newest_of_the_newest_buckets(
        rule in 0usize..6, n in 1u32..8, unlimited in proptest::bool::weighted(0.2),
        items in items(60), now in now(),
    ) {
        let count = if unlimited { Count::Unlimited } else { Count::N(n) };
        let mut policy = KeepPolicy::default();
        let (name, pattern) = match rule {
            0 => { policy.last = count; ("last", "") }
            1 => { policy.hourly = count; ("hourly", "%Y-%m-%d %H") }
            2 => { policy.daily = count; ("daily", "%Y-%m-%d") }
            3 => { policy.weekly = count; ("weekly", "%G-W%V") }
            4 => { policy.monthly = count; ("monthly", "%Y-%m") }
            _ => { policy.yearly = count; ("yearly", "%Y") }
        };
        let limit = if unlimited { usize::MAX } else { n as usize };

        // Newest first, equal times in input order.
        let mut sorted: Vec<(usize, &RetentionItem)> = items.iter().enumerate().collect();
        sorted.sort_by(|a, b| b.1.time.cmp(&a.1.time).then(a.0.cmp(&b.0)));
        let bucket = |position: usize, item: &RetentionItem| {
            if pattern.is_empty() { position.to_string() } else { item.time.format(pattern).to_string() }
        };
        let mut expected: Vec<(String, String)> = Vec::new();
        let mut buckets_seen: Vec<String> = Vec::new();
        for (position, (_, item)) in sorted.iter().enumerate() {
            let key = bucket(position, item);
            let is_new = buckets_seen.last() != Some(&key);
            let is_oldest = position + 1 == sorted.len();
            if is_new {
                if buckets_seen.len() < limit {
                    expected.push((item.id.clone(), format!("{name} snapshot")));
                }
                buckets_seen.push(key);
            } else if is_oldest && buckets_seen.len() < limit {
                // Same bucket as the previous backup, but the oldest, with count left.
                expected.push((item.id.clone(), format!("oldest {name} snapshot")));
            }
        }

        let decisions = apply(&policy, &items, now);
        let actual: Vec<(String, String)> = decisions
            .iter()
            .filter(|d| d.keep)
            .map(|d| (d.id.clone(), d.reasons.join("; ")))
            .collect();
        prop_assert_eq!(actual, expected);
    }

    /// keep-within with days and hours only, against plain absolute arithmetic.
    #[test]
    fn within_days_and_hours_keeps_backups_after_latest_minus_d(
        days in 0u32..40, hours in 0u32..72, items in items(60), now in now(),
    ) {
        prop_assume!(days + hours > 0);
        let policy = KeepPolicy {
            within: Some(CalendarDuration { days, hours, ..CalendarDuration::default() }),
            ..KeepPolicy::default()
        };
        let latest = items.iter().map(|i| i.time).filter(|t| *t < now).max();
        let threshold = latest.map(|l| l - TimeDelta::days(days.into()) - TimeDelta::hours(hours.into()));
        let decisions = apply(&policy, &items, now);
        for d in &decisions {
            let inside = threshold.is_none_or(|t| d.time > t);
            prop_assert_eq!(d.keep, inside, "{:?} latest {:?}", d, latest);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Durations.
// ---------------------------------------------------------------------------------------------

fn any_time() -> impl Strategy<Value = DateTime<Utc>> {
    // 1900 … 2100, with sub-second precision.
    (-2_208_988_800i64..4_102_444_800, 0u32..1_000_000_000)
        .prop_map(|(s, ns)| DateTime::from_timestamp(s, ns).unwrap())
}

fn days_in_month(year: i32, month: u32) -> u32 {
    let next = if month == 12 {
        NaiveDate::from_ymd_opt(year + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(year, month + 1, 1)
    };
    (next.unwrap() - NaiveDate::from_ymd_opt(year, month, 1).unwrap()).num_days() as u32
}

proptest! {
    #[test]
    fn duration_display_parses_back(
        d in (any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>()),
        e in (any::<u32>(), any::<u32>(), any::<u32>()),
    ) {
        let d = CalendarDuration {
            years: d.0, months: d.1, days: d.2, hours: d.3, minutes: e.0, seconds: e.1, millis: e.2,
        };
        prop_assert_eq!(d.to_string().parse::<CalendarDuration>(), Ok(d));
    }

    #[test]
    fn days_and_hours_are_absolute(t in any_time(), days in 0u32..2000, hours in 0u32..20_000) {
        let d = CalendarDuration { days, hours, ..CalendarDuration::default() };
        let expected = t - TimeDelta::days(days.into()) - TimeDelta::hours(hours.into());
        prop_assert_eq!(d.subtract_from(t), expected);
    }

    /// Years and months move the calendar month and keep the day; a day the target month does
    /// not have overflows into the following month (31 March − 1mo = 3 March, or 2 March).
    #[test]
    fn months_keep_the_day_or_overflow(t in any_time(), years in 0u32..50, months in 0u32..30) {
        let d = CalendarDuration { years, months, ..CalendarDuration::default() };
        let total = 12 * years + months;
        let result = d.subtract_from(t);
        prop_assert_eq!(result.time(), t.time());
        // The target month, found by chrono from the 1st of t's month.
        let first = t.date_naive().with_day(1).unwrap();
        let target = first.checked_sub_months(Months::new(total)).unwrap();
        let dim = days_in_month(target.year(), target.month());
        if t.day() <= dim {
            prop_assert_eq!(result.date_naive(), target.with_day(t.day()).unwrap());
        } else {
            let overflow = target.checked_add_months(Months::new(1)).unwrap();
            prop_assert_eq!(result.date_naive(), overflow.with_day(t.day() - dim).unwrap());
        }
    }

    #[test]
    fn fixed_lengths_scale_by_their_unit(
        n in 0u32..1_000_000,
        unit in proptest::sample::select(vec!["ms", "s", "min", "h", "d", "w"]),
    ) {
        let millis = match unit {
            "ms" => 1, "s" => 1_000, "min" => 60_000, "h" => 3_600_000, "d" => 86_400_000,
            _ => 604_800_000,
        };
        prop_assert_eq!(
            parse_fixed(&format!("{n}{unit}")),
            Ok(TimeDelta::milliseconds(i64::from(n) * millis))
        );
    }
}

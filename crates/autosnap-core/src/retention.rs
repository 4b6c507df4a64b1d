//! The retention engine: which backups of one group a policy keeps, and why.
//!
//! This implements `shared/notes/retention.md`, which follows restic's `forget` policy so that
//! the same words mean the same thing in both tools. In short, for one group of backups:
//!
//! 1. Sort newest first (stable for equal times).
//! 2. `latest` is the newest backup time strictly before `now`; backups dated in the future
//!    are ignored for it. With no such backup, every within-window covers everything.
//! 3. Walk the list once. Each rule decides on its own and the rules are ORed; every rule
//!    that keeps a backup adds its reason:
//!    * `tags`: keep when all tags of one of the tag lists are present (`has tags [a, b]`);
//!    * `within D`: keep when `time > latest − D` (`within 2d`);
//!    * count rules `last`, `hourly` … `yearly`: while the rule has count left, keep a backup
//!      whose bucket (hour, day, ISO week, month, year; every backup is its own bucket for
//!      `last`) differs from the bucket of the last backup this rule kept, and use up one
//!      count (`daily snapshot`). The oldest backup of the group is kept too while the rule
//!      has count left (`oldest daily snapshot` when that is the only reason);
//!    * `within_hourly D` … `within_yearly D`: the same bucket test, without a count, for the
//!      backups inside `time > latest − D` (`daily within 7d`, `oldest daily within 7d`).
//!
//! Two safety rules of autosnap's own sit on top (they never change what restic would keep,
//! they only keep more):
//! * an empty policy keeps everything (reason `policy is empty`); [`KeepPolicy::validate`]
//!   rejects empty policies before they get here;
//! * the newest backup of a group is always kept (reason `newest backup`). Only a policy made
//!   of `tags` alone can otherwise remove it.
//!
//! Everything is pure: `now` is a parameter, there is no I/O, and times are UTC, so bucket
//! keys are computed in UTC.
//!
//! [`apply`] takes [`RetentionItem`]s (id, time, tags) and returns [`Decision`]s;
//! [`apply_indexed`] takes anything [`Retainable`] and returns [`Verdict`]s that name backups
//! by position, which lets the planner judge a million EBS snapshots without copying them.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::duration::CalendarDuration;

/// Reason given to every backup when [`apply`] is called with an empty policy.
pub const REASON_EMPTY_POLICY: &str = "policy is empty";
/// Reason given to the newest backup when no rule kept it (autosnap's own safety rule).
pub const REASON_NEWEST: &str = "newest backup";

// ---------------------------------------------------------------------------------------------
// Count
// ---------------------------------------------------------------------------------------------

/// How many buckets a count rule (`last`, `daily`, …) keeps.
///
/// Written as a non-negative integer or `"unlimited"`; `0` turns the rule off. `N(0)` behaves
/// exactly like [`Count::Off`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Count {
    /// The rule is off.
    #[default]
    Off,
    /// Keep this many buckets.
    N(u32),
    /// Keep one backup from every bucket.
    Unlimited,
}

impl Count {
    /// Whether the rule is off (`Off` or `N(0)`).
    pub fn is_off(&self) -> bool {
        matches!(self, Count::Off | Count::N(0))
    }
}

impl From<u32> for Count {
    fn from(n: u32) -> Self {
        if n == 0 {
            Count::Off
        } else {
            Count::N(n)
        }
    }
}

/// Why a count could not be parsed. Every variant names the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CountError {
    /// A negative number.
    #[error(
        "invalid count {input:?}: counts cannot be negative; use a positive number, \
         \"unlimited\", or 0 to turn the rule off"
    )]
    Negative { input: String },
    /// Neither a number nor `unlimited`.
    #[error(
        "invalid count {input:?}: expected a non-negative number or \"unlimited\" \
         (0 turns the rule off)"
    )]
    Invalid { input: String },
    /// Larger than 4294967295.
    #[error("invalid count {input:?}: the number is too large; use \"unlimited\" instead")]
    TooLarge { input: String },
}

impl Count {
    /// Interprets a signed integer (as TOML and JSON deliver them).
    fn from_i128(n: i128, input: impl FnOnce() -> String) -> Result<Self, CountError> {
        if n < 0 {
            return Err(CountError::Negative { input: input() });
        }
        u32::try_from(n)
            .map(Count::from)
            .map_err(|_| CountError::TooLarge { input: input() })
    }
}

impl FromStr for Count {
    type Err = CountError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let trimmed = input.trim();
        if trimmed.eq_ignore_ascii_case("unlimited") {
            return Ok(Count::Unlimited);
        }
        let digits = trimmed.strip_prefix(['-', '+']).unwrap_or(trimmed);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CountError::Invalid {
                input: input.to_owned(),
            });
        }
        match trimmed.parse::<i128>() {
            Ok(n) => Count::from_i128(n, || input.to_owned()),
            // All digits but beyond i128: a (silly) large number, or a large negative one.
            Err(_) if trimmed.starts_with('-') => Err(CountError::Negative {
                input: input.to_owned(),
            }),
            Err(_) => Err(CountError::TooLarge {
                input: input.to_owned(),
            }),
        }
    }
}

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Count::Off => f.write_str("0"),
            Count::N(n) => write!(f, "{n}"),
            Count::Unlimited => f.write_str("unlimited"),
        }
    }
}

/// Serialised as an integer, or the string `"unlimited"`.
impl Serialize for Count {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Count::Off => serializer.serialize_u32(0),
            Count::N(n) => serializer.serialize_u32(*n),
            Count::Unlimited => serializer.serialize_str("unlimited"),
        }
    }
}

/// Accepts an integer (`7`), or a string holding `"unlimited"` or an integer.
impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CountVisitor;

        impl Visitor<'_> for CountVisitor {
            type Value = Count;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative integer or \"unlimited\"")
            }

            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Count, E> {
                Count::from_i128(n.into(), || n.to_string()).map_err(E::custom)
            }

            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Count, E> {
                Count::from_i128(n.into(), || n.to_string()).map_err(E::custom)
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<Count, E> {
                s.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_any(CountVisitor)
    }
}

// ---------------------------------------------------------------------------------------------
// Policy
// ---------------------------------------------------------------------------------------------

/// A retention policy: which backups of one group to keep.
///
/// In TOML it reads like
/// `{ last = 3, daily = 7, weekly = 4, monthly = 12, within = "2d", within_daily = "7d", tags = [["keep"]] }`.
/// Every field is optional; counts accept integers or `"unlimited"`, durations the grammar of
/// [`crate::duration`] (`2d`, `1y2mo3d4h`; months are `mo`, what restic writes `m`). A count
/// of 0 and a zero duration turn their rule off. Unknown fields are rejected.
///
/// With the `clap` feature it is also the `--keep-…` flags of the CLI (`--keep-last`,
/// `--keep-within-daily`, `--keep-tag a,b`, …): one definition for config file and command line.
/// A count flag left out is off, as a count left out of the config file is.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(deny_unknown_fields)]
pub struct KeepPolicy {
    /// Keep the newest N backups.
    #[serde(default, skip_serializing_if = "Count::is_off")]
    #[cfg_attr(
        feature = "clap",
        arg(
            id = "keep_last",
            long = "keep-last",
            value_name = "N",
            default_value = "0",
            hide_default_value = true,
            help = "Keep the N newest backups (a count or `unlimited`)"
        )
    )]
    pub last: Count,
    /// Keep the newest backup of each of the newest N hours that have backups.
    #[serde(default, skip_serializing_if = "Count::is_off")]
    #[cfg_attr(
        feature = "clap",
        arg(
            id = "keep_hourly",
            long = "keep-hourly",
            value_name = "N",
            default_value = "0",
            hide_default_value = true,
            help = "Keep the newest backup of each of the N newest hours that have backups"
        )
    )]
    pub hourly: Count,
    /// Keep the newest backup of each of the newest N days that have backups.
    #[serde(default, skip_serializing_if = "Count::is_off")]
    #[cfg_attr(
        feature = "clap",
        arg(
            id = "keep_daily",
            long = "keep-daily",
            value_name = "N",
            default_value = "0",
            hide_default_value = true,
            help = "Keep the newest backup of each of the N newest days that have backups"
        )
    )]
    pub daily: Count,
    /// Keep the newest backup of each of the newest N ISO weeks (Monday–Sunday) with backups.
    #[serde(default, skip_serializing_if = "Count::is_off")]
    #[cfg_attr(
        feature = "clap",
        arg(
            id = "keep_weekly",
            long = "keep-weekly",
            value_name = "N",
            default_value = "0",
            hide_default_value = true,
            help = "Keep the newest backup of each of the N newest ISO weeks that have backups"
        )
    )]
    pub weekly: Count,
    /// Keep the newest backup of each of the newest N months that have backups.
    #[serde(default, skip_serializing_if = "Count::is_off")]
    #[cfg_attr(
        feature = "clap",
        arg(
            id = "keep_monthly",
            long = "keep-monthly",
            value_name = "N",
            default_value = "0",
            hide_default_value = true,
            help = "Keep the newest backup of each of the N newest months that have backups"
        )
    )]
    pub monthly: Count,
    /// Keep the newest backup of each of the newest N years that have backups.
    #[serde(default, skip_serializing_if = "Count::is_off")]
    #[cfg_attr(
        feature = "clap",
        arg(
            id = "keep_yearly",
            long = "keep-yearly",
            value_name = "N",
            default_value = "0",
            hide_default_value = true,
            help = "Keep the newest backup of each of the N newest years that have backups"
        )
    )]
    pub yearly: Count,
    /// Keep every backup newer than `latest − within`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "clap",
        arg(
            id = "keep_within",
            long = "keep-within",
            value_name = "DURATION",
            help = "Keep every backup newer than the newest backup minus DURATION (e.g. 2d, 1y2mo3d4h; mo = months)"
        )
    )]
    pub within: Option<CalendarDuration>,
    /// Keep the newest backup of every hour newer than `latest − within_hourly`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "clap",
        arg(
            id = "keep_within_hourly",
            long = "keep-within-hourly",
            value_name = "DURATION",
            help = "Keep one backup per hour within DURATION of the newest"
        )
    )]
    pub within_hourly: Option<CalendarDuration>,
    /// Keep the newest backup of every day newer than `latest − within_daily`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "clap",
        arg(
            id = "keep_within_daily",
            long = "keep-within-daily",
            value_name = "DURATION",
            help = "Keep one backup per day within DURATION of the newest"
        )
    )]
    pub within_daily: Option<CalendarDuration>,
    /// Keep the newest backup of every ISO week newer than `latest − within_weekly`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "clap",
        arg(
            id = "keep_within_weekly",
            long = "keep-within-weekly",
            value_name = "DURATION",
            help = "Keep one backup per ISO week within DURATION of the newest"
        )
    )]
    pub within_weekly: Option<CalendarDuration>,
    /// Keep the newest backup of every month newer than `latest − within_monthly`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "clap",
        arg(
            id = "keep_within_monthly",
            long = "keep-within-monthly",
            value_name = "DURATION",
            help = "Keep one backup per month within DURATION of the newest"
        )
    )]
    pub within_monthly: Option<CalendarDuration>,
    /// Keep the newest backup of every year newer than `latest − within_yearly`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "clap",
        arg(
            id = "keep_within_yearly",
            long = "keep-within-yearly",
            value_name = "DURATION",
            help = "Keep one backup per year within DURATION of the newest"
        )
    )]
    pub within_yearly: Option<CalendarDuration>,
    /// Keep every backup that carries all tags of at least one of these lists.
    #[serde(
        default,
        rename = "tags",
        alias = "keep_tags",
        skip_serializing_if = "Vec::is_empty"
    )]
    #[cfg_attr(feature = "clap", arg(id = "keep_tag", long = "keep-tag", value_name = "TAG[,TAG]",
        value_parser = parse_tag_list,
        help = "Keep backups carrying all of these tags (comma-separated); repeatable"))]
    pub keep_tags: Vec<Vec<String>>,
}

/// One `--keep-tag` value: comma-separated tags, trimmed, empty names dropped (`a, b,` is
/// `[a, b]`; `,` is an empty list, which [`KeepPolicy::validate`] refuses).
pub fn parse_tag_list(list: &str) -> Result<Vec<String>, std::convert::Infallible> {
    Ok(list
        .split(',')
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect())
}

/// A policy given as `--keep-…` flags that is not usable: the [`PolicyError`] and which flags
/// to give.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}: give at least one --keep-… rule (for example --keep-daily 7)")]
pub struct KeepFlagsError(pub PolicyError);

/// Why a policy is not usable. Messages name the field; the caller adds which policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// No rule is set, so the policy says nothing about what to keep.
    #[error(
        "the retention policy is empty: set at least one of last, hourly, daily, weekly, \
         monthly, yearly (a count or \"unlimited\"), within, within_hourly, within_daily, \
         within_weekly, within_monthly, within_yearly (a duration such as \"7d\") or tags"
    )]
    Empty,
    /// `tags = [[]]`: an empty list would match every backup.
    #[error(
        "retention tags[{index}] is an empty list, which would keep every backup; \
         list at least one tag, e.g. tags = [[\"keep\"]]"
    )]
    EmptyTagList { index: usize },
    /// `tags = [[""]]`.
    #[error("retention tags[{index}] contains an empty tag name")]
    EmptyTag { index: usize },
}

/// Bucketing periods shared by the count rules and the within-rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Period {
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Period {
    fn name(self) -> &'static str {
        match self {
            Period::Hourly => "hourly",
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
            Period::Yearly => "yearly",
        }
    }

    /// The bucket a time falls into, as one integer (UTC):
    /// hourly `YYYYMMDDHH`, daily `YYYYMMDD`, weekly `IIIIWW` (ISO year and week),
    /// monthly `YYYYMM`, yearly `YYYY`.
    fn key(self, t: &DateTime<Utc>) -> i64 {
        let year = i64::from(t.year());
        let month = i64::from(t.month());
        let day = i64::from(t.day());
        match self {
            Period::Hourly => ((year * 100 + month) * 100 + day) * 100 + i64::from(t.hour()),
            Period::Daily => (year * 100 + month) * 100 + day,
            Period::Weekly => {
                let week = t.iso_week();
                i64::from(week.year()) * 100 + i64::from(week.week())
            }
            Period::Monthly => year * 100 + month,
            Period::Yearly => year,
        }
    }
}

impl KeepPolicy {
    /// The count rules in evaluation order, with their period (`None` for `last`).
    fn count_rules(&self) -> [(Option<Period>, Count); 6] {
        [
            (None, self.last),
            (Some(Period::Hourly), self.hourly),
            (Some(Period::Daily), self.daily),
            (Some(Period::Weekly), self.weekly),
            (Some(Period::Monthly), self.monthly),
            (Some(Period::Yearly), self.yearly),
        ]
    }

    /// The within-rules with a period, in evaluation order.
    fn within_rules(&self) -> [(Period, Option<CalendarDuration>); 5] {
        [
            (Period::Hourly, self.within_hourly),
            (Period::Daily, self.within_daily),
            (Period::Weekly, self.within_weekly),
            (Period::Monthly, self.within_monthly),
            (Period::Yearly, self.within_yearly),
        ]
    }

    /// Whether no rule is set (counts off, durations absent or zero, no tag lists).
    pub fn is_empty(&self) -> bool {
        let active = |d: &Option<CalendarDuration>| d.is_some_and(|d| !d.is_zero());
        self.count_rules().iter().all(|(_, count)| count.is_off())
            && !active(&self.within)
            && self.within_rules().iter().all(|(_, d)| !active(d))
            && self.keep_tags.is_empty()
    }

    /// [`Self::validate`] for a policy read from the `--keep-…` flags: the error says which
    /// flags to give.
    pub fn validate_flags(&self) -> Result<(), KeepFlagsError> {
        self.validate().map_err(KeepFlagsError)
    }

    /// Checks the policy can be used: not empty, and no empty tag list or tag name.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.is_empty() {
            return Err(PolicyError::Empty);
        }
        for (index, tags) in self.keep_tags.iter().enumerate() {
            if tags.is_empty() {
                return Err(PolicyError::EmptyTagList { index });
            }
            if tags.iter().any(|tag| tag.is_empty()) {
                return Err(PolicyError::EmptyTag { index });
            }
        }
        Ok(())
    }
}

/// One line for plan output, e.g. `keep last 3, daily 7, weekly 4, within 2d, tags [keep]`.
impl fmt::Display for KeepPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("empty policy (keeps everything)");
        }
        let mut parts: Vec<String> = Vec::new();
        for (period, count) in self.count_rules() {
            if !count.is_off() {
                parts.push(format!("{} {count}", period.map_or("last", Period::name)));
            }
        }
        if let Some(d) = self.within.filter(|d| !d.is_zero()) {
            parts.push(format!("within {d}"));
        }
        for (period, within) in self.within_rules() {
            if let Some(d) = within.filter(|d| !d.is_zero()) {
                parts.push(format!("{} within {d}", period.name()));
            }
        }
        for tags in &self.keep_tags {
            parts.push(format!("tags [{}]", tags.join(", ")));
        }
        write!(f, "keep {}", parts.join(", "))
    }
}

// ---------------------------------------------------------------------------------------------
// Applying a policy
// ---------------------------------------------------------------------------------------------

/// One backup of a group, as the engine sees it.
///
/// Deserialises from `{"id": "...", "time": "RFC 3339", "tags": ["..."]}` (tags optional).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionItem {
    /// Identifies the backup in the decisions (a snapshot id, an AMI id, a set id…).
    pub id: String,
    /// When the backup was taken.
    pub time: DateTime<Utc>,
    /// Its tags, as plain strings (for EC2, the caller decides how to render key/value tags).
    #[serde(default)]
    pub tags: Vec<String>,
}

/// What the policy decided for one backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The backup's [`RetentionItem::id`].
    pub id: String,
    /// The backup's [`RetentionItem::time`].
    pub time: DateTime<Utc>,
    /// Whether the backup is kept.
    pub keep: bool,
    /// Every rule that keeps it, in rule order (empty when removed), e.g.
    /// `["daily snapshot", "weekly snapshot", "within 2d"]`.
    pub reasons: Vec<String>,
}

/// A count rule's state during the walk.
struct CountState {
    /// `None` for `last`, whose every backup is a bucket of its own.
    period: Option<Period>,
    /// Buckets left to keep; `None` means unlimited.
    remaining: Option<u32>,
    /// Bucket of the last backup this rule kept.
    last_key: Option<i64>,
    reason: String,
    oldest_reason: String,
}

/// A within-rule with a period, during the walk.
struct WithinBucketState {
    period: Period,
    /// Backups strictly after this time are inside the window; `None` means all of them.
    threshold: Option<DateTime<Utc>>,
    last_key: Option<i64>,
    reason: String,
    oldest_reason: String,
}

/// Whether `t` is inside a window that starts (exclusively) at `threshold`.
fn inside(threshold: Option<DateTime<Utc>>, t: &DateTime<Utc>) -> bool {
    threshold.is_none_or(|threshold| *t > threshold)
}

/// What the engine needs to know about one backup: its time and whether it carries a tag.
///
/// [`RetentionItem`] implements it; the planner implements it for EBS snapshots and
/// multi-volume sets so that it can apply a policy without copying every backup first.
pub trait Retainable {
    /// When the backup was taken.
    fn time(&self) -> DateTime<Utc>;
    /// Whether the backup carries `tag` (as the `tags` rule spells it).
    fn has_tag(&self, tag: &str) -> bool;
}

impl Retainable for RetentionItem {
    fn time(&self) -> DateTime<Utc> {
        self.time
    }

    fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}

/// What the policy decided for the backup at `index` of the input; see [`apply_indexed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Position of the backup in the input slice.
    pub index: usize,
    /// Whether the backup is kept.
    pub keep: bool,
    /// Every rule that keeps it, in rule order (empty when removed).
    pub reasons: Vec<String>,
}

/// Applies `policy` to one group of backups and explains every decision.
///
/// Returns one [`Decision`] per item, newest first (items with equal times keep their input
/// order). `now` only decides which backups are dated in the future (those at or after `now`
/// are not considered for `latest`, which anchors the within-windows). Runs in
/// `O(n log n)` for the sort and one linear walk.
pub fn apply(policy: &KeepPolicy, items: &[RetentionItem], now: DateTime<Utc>) -> Vec<Decision> {
    apply_indexed(policy, items, now)
        .into_iter()
        .map(|verdict| {
            let item = &items[verdict.index];
            Decision {
                id: item.id.clone(),
                time: item.time,
                keep: verdict.keep,
                reasons: verdict.reasons,
            }
        })
        .collect()
}

/// [`apply`] for any [`Retainable`] backups: the same decisions, newest first, naming each
/// backup by its position in `items` instead of copying an id.
pub fn apply_indexed<T: Retainable>(
    policy: &KeepPolicy,
    items: &[T],
    now: DateTime<Utc>,
) -> Vec<Verdict> {
    // 1. Newest first. Sorting (time, input position) pairs with the position as tie-breaker
    //    is a stable sort by time, and compact enough to be fast for millions of items.
    let mut order: Vec<(DateTime<Utc>, usize)> = items
        .iter()
        .enumerate()
        .map(|(index, item)| (item.time(), index))
        .collect();
    order.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));

    if policy.is_empty() {
        return order
            .iter()
            .map(|&(_, index)| verdict(index, vec![REASON_EMPTY_POLICY.to_owned()]))
            .collect();
    }

    // 2. `latest`: the newest backup strictly before `now`; future-dated ones do not count.
    let latest = order.iter().map(|(t, _)| *t).find(|t| *t < now);
    let threshold_of = |d: CalendarDuration| latest.map(|latest| d.subtract_from(latest));

    // The rules, prepared once. A zero duration or a count of 0 turns a rule off.
    let within = policy
        .within
        .filter(|d| !d.is_zero())
        .map(|d| (threshold_of(d), format!("within {d}")));
    let mut counts: Vec<CountState> = policy
        .count_rules()
        .into_iter()
        .filter(|(_, count)| !count.is_off())
        .map(|(period, count)| {
            let reason = format!("{} snapshot", period.map_or("last", Period::name));
            CountState {
                period,
                remaining: match count {
                    Count::N(n) => Some(n),
                    Count::Off | Count::Unlimited => None,
                },
                last_key: None,
                oldest_reason: format!("oldest {reason}"),
                reason,
            }
        })
        .collect();
    let mut within_buckets: Vec<WithinBucketState> = policy
        .within_rules()
        .into_iter()
        .filter_map(|(period, d)| Some((period, d.filter(|d| !d.is_zero())?)))
        .map(|(period, d)| {
            let reason = format!("{} within {d}", period.name());
            WithinBucketState {
                period,
                threshold: threshold_of(d),
                last_key: None,
                oldest_reason: format!("oldest {reason}"),
                reason,
            }
        })
        .collect();
    let tag_rules: Vec<(&[String], String)> = policy
        .keep_tags
        .iter()
        .map(|tags| (tags.as_slice(), format!("has tags [{}]", tags.join(", "))))
        .collect();

    // 3. One walk, newest to oldest.
    let oldest_position = order.len().saturating_sub(1);
    let mut verdicts = Vec::with_capacity(order.len());
    for (position, &(time, index)) in order.iter().enumerate() {
        let item = &items[index];
        let is_oldest = position == oldest_position;
        let mut reasons = Vec::new();

        // keep-tag: uncounted; every matching tag list adds a reason.
        for (tags, reason) in &tag_rules {
            if tags.iter().all(|tag| item.has_tag(tag)) {
                reasons.push(reason.clone());
            }
        }

        // keep-within: every backup strictly inside the window.
        if let Some((threshold, reason)) = &within {
            if inside(*threshold, &time) {
                reasons.push(reason.clone());
            }
        }

        // Count rules: a new bucket (or the oldest backup) while count is left.
        for rule in &mut counts {
            if rule.remaining == Some(0) {
                continue;
            }
            // `last` puts every backup in a bucket of its own: its position is unique.
            let key = rule.period.map_or(position as i64, |p| p.key(&time));
            let new_bucket = rule.last_key != Some(key);
            if new_bucket || is_oldest {
                rule.last_key = Some(key);
                if let Some(remaining) = &mut rule.remaining {
                    *remaining -= 1;
                }
                let reason = if new_bucket {
                    &rule.reason
                } else {
                    &rule.oldest_reason
                };
                reasons.push(reason.clone());
            }
        }

        // Within-rules with a period: the same bucket test, inside their window, uncounted.
        for rule in &mut within_buckets {
            if !inside(rule.threshold, &time) {
                continue;
            }
            let key = rule.period.key(&time);
            let new_bucket = rule.last_key != Some(key);
            if new_bucket || is_oldest {
                rule.last_key = Some(key);
                let reason = if new_bucket {
                    &rule.reason
                } else {
                    &rule.oldest_reason
                };
                reasons.push(reason.clone());
            }
        }

        verdicts.push(verdict(index, reasons));
    }

    // autosnap's safety rule: never remove the newest backup of a group.
    if let Some(newest) = verdicts.first_mut() {
        if !newest.keep {
            newest.keep = true;
            newest.reasons.push(REASON_NEWEST.to_owned());
        }
    }
    verdicts
}

/// A verdict for the item at `index`: kept exactly when some rule gave a reason.
fn verdict(index: usize, reasons: Vec<String>) -> Verdict {
    Verdict {
        index,
        keep: !reasons.is_empty(),
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn parses_counts() {
        let cases = [
            ("0", Count::Off),
            ("7", Count::N(7)),
            ("+7", Count::N(7)),
            (" 12 ", Count::N(12)),
            ("unlimited", Count::Unlimited),
            ("Unlimited", Count::Unlimited),
            ("4294967295", Count::N(u32::MAX)),
        ];
        for (input, expected) in cases {
            assert_eq!(input.parse::<Count>(), Ok(expected), "{input}");
        }
    }

    #[test]
    fn rejects_bad_counts() {
        let cases = [
            ("-1", "invalid count \"-1\": counts cannot be negative"),
            (
                "-99999999999999999999999999999999999999999",
                "invalid count",
            ),
            (
                "",
                "invalid count \"\": expected a non-negative number or \"unlimited\"",
            ),
            ("seven", "invalid count \"seven\": expected"),
            ("1.5", "invalid count \"1.5\": expected"),
            ("-", "invalid count \"-\": expected"),
            (
                "4294967296",
                "invalid count \"4294967296\": the number is too large",
            ),
        ];
        for (input, expected) in cases {
            let message = input.parse::<Count>().unwrap_err().to_string();
            assert!(message.starts_with(expected), "{input:?}: {message}");
        }
        assert!(matches!(
            "-99999999999999999999999999999999999999999".parse::<Count>(),
            Err(CountError::Negative { .. })
        ));
    }

    #[test]
    fn count_zero_is_off() {
        assert!(Count::N(0).is_off());
        assert!(Count::Off.is_off());
        assert!(!Count::N(1).is_off());
        assert!(!Count::Unlimited.is_off());
        assert_eq!(Count::from(0), Count::Off);
        assert_eq!(Count::from(3), Count::N(3));
    }

    #[test]
    fn count_serde() {
        #[derive(Deserialize, Serialize)]
        struct W {
            c: Count,
        }
        let parse = |s: &str| toml::from_str::<W>(s).map(|w| w.c);
        assert_eq!(parse("c = 3").unwrap(), Count::N(3));
        assert_eq!(parse("c = 0").unwrap(), Count::Off);
        assert_eq!(parse("c = \"unlimited\"").unwrap(), Count::Unlimited);
        assert_eq!(parse("c = \"5\"").unwrap(), Count::N(5));
        let err = parse("c = -1").unwrap_err().to_string();
        assert!(err.contains("counts cannot be negative"), "{err}");
        assert!(parse("c = 1.5").is_err());
        assert!(parse("c = true").is_err());
        let json = |c: Count| serde_json::to_string(&W { c }).unwrap();
        assert_eq!(json(Count::N(4)), r#"{"c":4}"#);
        assert_eq!(json(Count::Unlimited), r#"{"c":"unlimited"}"#);
    }

    #[test]
    fn bucket_keys() {
        let t = Utc.with_ymd_and_hms(2021, 1, 3, 23, 59, 59).unwrap(); // a Sunday
        assert_eq!(Period::Hourly.key(&t), 2021010323);
        assert_eq!(Period::Daily.key(&t), 20210103);
        assert_eq!(Period::Weekly.key(&t), 202053); // ISO week 53 of 2020
        assert_eq!(Period::Monthly.key(&t), 202101);
        assert_eq!(Period::Yearly.key(&t), 2021);
        let monday = Utc.with_ymd_and_hms(2021, 1, 4, 0, 0, 0).unwrap();
        assert_eq!(Period::Weekly.key(&monday), 202101);
    }
}

//! When a policy wants a backup: a 5-field cron expression or a plain interval, and the
//! questions autosnap asks of it — is a target due now, when is it due next, is it late.
//!
//! Everything takes `now` and the time of the target's newest backup as parameters; nothing
//! reads the clock.
//!
//! # Cron (`"0 3 * * *"`)
//! Five fields (minute, hour, day of month, month, day of week), Vixie-cron semantics (when
//! both day fields are restricted, either may match), plus croner's extensions (`L`, `W`,
//! `#`, `@daily`, …). Evaluated in the policy's time zone (UTC unless the policy sets
//! `timezone`); all results are in UTC. Around daylight-saving changes a fixed-time job
//! (`30 2 * * *`) runs once a day: in a skipped hour at the first minute after the gap, in a
//! repeated hour at its first occurrence.
//!
//! * The *slot* is the latest time at or before `now` that the expression matches.
//! * **Due** when there is no backup, or the newest backup is before the slot.
//! * **Next due**: `now` when due, otherwise the first slot after `now`.
//! * **Late** when a slot passed more than its grace period ago and no backup was taken at
//!   or after it. A slot's grace is a quarter of the time until the slot after it, at most
//!   one hour: 1 h for a daily job, 3 min 45 s for `*/15 * * * *`.
//!
//! # Interval (`"6h"`, `"1d"`, `"30min"`)
//! A duration of fixed length in the grammar of [`crate::duration`] (`1h30min`, `1w`; no
//! months or years, and a bare `m` is refused as ambiguous); at least one minute.
//!
//! * **Due** when there is no backup, or the newest backup is at least one interval old.
//! * **Next due**: `now` when due, otherwise newest + interval.
//! * **Late** when the newest backup is older than interval + grace, where the grace is a
//!   quarter of the interval, at most one hour.
//!
//! # Both
//! * **Missing** (health) when there is no backup at all.
//! * A backup dated after `now` is ignored: it does not make a target "not due".

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, TimeDelta, TimeZone, Timelike, Utc};
pub use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::duration::{parse_fixed, DurationError};

/// The shortest interval a schedule accepts.
pub const MIN_INTERVAL: TimeDelta = TimeDelta::minutes(1);
/// The longest grace period: a slot (or interval) may overrun by this much before it is late.
pub const MAX_GRACE: TimeDelta = TimeDelta::hours(1);

/// A policy's schedule: a cron expression or an interval, as written in the config.
///
/// Serde reads and writes the original text; [`Display`](fmt::Display) shows it too.
#[derive(Clone)]
pub struct Schedule {
    text: String,
    kind: ScheduleKind,
}

#[derive(Clone)]
enum ScheduleKind {
    Cron(Box<Cron>),
    Interval(TimeDelta),
}

/// Why a schedule could not be parsed. The message names the text and says what would work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// Looked like a cron expression (it has spaces) but is not one.
    #[error("schedule {text:?} is not a cron expression ({problem}) or an interval like \"6h\"")]
    Cron { text: String, problem: String },
    /// A valid cron expression that matches no time at all, e.g. 31 February.
    #[error("schedule {text:?} never fires: no date matches it")]
    NeverFires { text: String },
    /// Looked like an interval (one word) but is not one.
    #[error(
        "schedule {text:?} is not a cron expression like \"0 3 * * *\" or an interval \
         ({problem})"
    )]
    Interval { text: String, problem: String },
}

/// Whether a target needs a backup now, and why (one sentence a person can read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Due {
    pub due: bool,
    pub reason: String,
}

/// How well a target is protected, for `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    pub state: HealthState,
    pub reason: String,
}

/// `ok`, `late` or `missing` (see the module documentation for the rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    /// The newest backup covers the schedule (or the current slot is still within its grace).
    Ok,
    /// A slot (or interval) passed more than its grace period ago without a backup.
    Late,
    /// There is no backup at all.
    Missing,
}

impl fmt::Display for HealthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HealthState::Ok => "ok",
            HealthState::Late => "late",
            HealthState::Missing => "missing",
        })
    }
}

impl Schedule {
    /// Parses a cron expression (anything with a space, or starting with `@`) or an interval.
    pub fn parse(text: &str) -> Result<Schedule, ScheduleError> {
        let trimmed = text.trim();
        let kind = if trimmed.starts_with('@') || trimmed.contains(char::is_whitespace) {
            ScheduleKind::Cron(Box::new(parse_cron(text, trimmed)?))
        } else {
            ScheduleKind::Interval(parse_interval(text, trimmed)?)
        };
        Ok(Schedule {
            text: text.to_owned(),
            kind,
        })
    }

    /// The schedule as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The interval, for an interval schedule.
    pub fn interval(&self) -> Option<TimeDelta> {
        match &self.kind {
            ScheduleKind::Interval(d) => Some(*d),
            ScheduleKind::Cron(_) => None,
        }
    }

    /// Whether this is a cron schedule.
    pub fn is_cron(&self) -> bool {
        matches!(self.kind, ScheduleKind::Cron(_))
    }

    /// The latest cron slot at or before `at`, evaluated in `tz` (`None` for an interval, or
    /// when the expression matched nothing in the last few hundred years).
    pub fn previous_slot(&self, at: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let ScheduleKind::Cron(cron) = &self.kind else {
            return None;
        };
        cron.find_previous_occurrence(&at.with_timezone(&tz), true)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The first cron slot strictly after `after`, evaluated in `tz` (`None` for an interval).
    pub fn next_slot(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let ScheduleKind::Cron(cron) = &self.kind else {
            return None;
        };
        // croner works in whole seconds: step past a fractional `after` first so that the
        // slot `after` falls in is not returned again.
        let start = ceil_to_second(after);
        let inclusive = start != after;
        cron.find_next_occurrence(&start.with_timezone(&tz), inclusive)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The last cron slot strictly before `before`.
    fn slot_before(&self, before: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let ScheduleKind::Cron(cron) = &self.kind else {
            return None;
        };
        cron.find_previous_occurrence(&before.with_timezone(&tz), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// Whether a target whose newest backup is `newest` needs one at `now`.
    pub fn due(&self, newest: Option<DateTime<Utc>>, now: DateTime<Utc>, tz: Tz) -> Due {
        let Some(newest) = newest.filter(|t| *t <= now) else {
            return Due {
                due: true,
                reason: "no backup yet".into(),
            };
        };
        match &self.kind {
            ScheduleKind::Interval(interval) => {
                let age = now - newest;
                if age >= *interval {
                    Due {
                        due: true,
                        reason: format!(
                            "newest backup is {} old, interval {}",
                            human_duration(age),
                            self.text.trim()
                        ),
                    }
                } else {
                    Due {
                        due: false,
                        reason: format!(
                            "newest backup is {} old; due in {}",
                            human_duration(age),
                            human_duration(*interval - age)
                        ),
                    }
                }
            }
            ScheduleKind::Cron(_) => {
                let next = self.next_slot(now, tz);
                let next_text = match next {
                    Some(next) => format!("next slot {}", format_time(next, tz)),
                    None => "no later slot".to_owned(),
                };
                match self.previous_slot(now, tz) {
                    None => Due {
                        due: false,
                        reason: format!(
                            "newest backup {}; no slot has passed yet; {next_text}",
                            format_time(newest, Tz::UTC)
                        ),
                    },
                    Some(slot) if newest < slot => Due {
                        due: true,
                        reason: format!(
                            "newest backup {} is before the {} slot",
                            format_time(newest, Tz::UTC),
                            format_time(slot, tz)
                        ),
                    },
                    Some(slot) => Due {
                        due: false,
                        reason: format!(
                            "newest backup {} covers the {} slot; {next_text}",
                            format_time(newest, Tz::UTC),
                            format_time(slot, tz)
                        ),
                    },
                }
            }
        }
    }

    /// When a target whose newest backup is `newest` is due: `now` when it is due already.
    ///
    /// For a cron expression that fires no more (which parsing rejects), the far future.
    pub fn next_due(
        &self,
        newest: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        tz: Tz,
    ) -> DateTime<Utc> {
        if self.due(newest, now, tz).due {
            return now;
        }
        match &self.kind {
            // Not due, so there is a newest backup at or before `now`.
            ScheduleKind::Interval(interval) => newest.map_or(now, |t| t + *interval),
            ScheduleKind::Cron(_) => self.next_slot(now, tz).unwrap_or(DateTime::<Utc>::MAX_UTC),
        }
    }

    /// `ok`, `late` or `missing` for a target whose newest backup is `newest`.
    pub fn health(&self, newest: Option<DateTime<Utc>>, now: DateTime<Utc>, tz: Tz) -> Health {
        let Some(newest) = newest.filter(|t| *t <= now) else {
            return Health {
                state: HealthState::Missing,
                reason: "no backup yet".into(),
            };
        };
        let ok = |reason: String| Health {
            state: HealthState::Ok,
            reason,
        };
        let late = |reason: String| Health {
            state: HealthState::Late,
            reason,
        };
        match &self.kind {
            ScheduleKind::Interval(interval) => {
                let age = now - newest;
                let grace = grace_for(*interval);
                if age > *interval + grace {
                    late(format!(
                        "newest backup is {} old, interval {} (grace {})",
                        human_duration(age),
                        self.text.trim(),
                        human_duration(grace)
                    ))
                } else {
                    ok(format!(
                        "newest backup is {} old, interval {}",
                        human_duration(age),
                        self.text.trim()
                    ))
                }
            }
            ScheduleKind::Cron(_) => {
                let newest_text = format_time(newest, Tz::UTC);
                let Some(slot) = self.previous_slot(now, tz) else {
                    return ok(format!(
                        "newest backup {newest_text}; no slot has passed yet"
                    ));
                };
                if newest >= slot {
                    return ok(format!(
                        "newest backup {newest_text} covers the {} slot",
                        format_time(slot, tz)
                    ));
                }
                let grace = self.slot_grace(slot, tz);
                let overdue = now - slot;
                if overdue > grace {
                    return late(format!(
                        "newest backup {newest_text} is before the {} slot, which passed {} ago \
                         (grace {})",
                        format_time(slot, tz),
                        human_duration(overdue),
                        human_duration(grace)
                    ));
                }
                // The current slot is still within its grace; the one before it is not (its
                // grace is at most a quarter of the time up to this slot).
                match self.slot_before(slot, tz) {
                    Some(earlier) if newest < earlier => late(format!(
                        "newest backup {newest_text} is before the {} slot",
                        format_time(earlier, tz)
                    )),
                    _ => ok(format!(
                        "the {} slot passed {} ago, within its grace of {}",
                        format_time(slot, tz),
                        human_duration(overdue),
                        human_duration(grace)
                    )),
                }
            }
        }
    }

    /// The grace of a cron slot: a quarter of the time to the next slot, at most
    /// [`MAX_GRACE`].
    fn slot_grace(&self, slot: DateTime<Utc>, tz: Tz) -> TimeDelta {
        match self.next_slot(slot, tz) {
            Some(next) => grace_for(next - slot),
            None => MAX_GRACE,
        }
    }
}

/// A quarter of `period`, at most [`MAX_GRACE`].
fn grace_for(period: TimeDelta) -> TimeDelta {
    (period / 4).min(MAX_GRACE)
}

/// `t` rounded up to a whole second.
fn ceil_to_second(t: DateTime<Utc>) -> DateTime<Utc> {
    if t.nanosecond() == 0 {
        t
    } else {
        t.with_nanosecond(0).unwrap_or(t) + TimeDelta::seconds(1)
    }
}

fn parse_cron(text: &str, trimmed: &str) -> Result<Cron, ScheduleError> {
    let cron_error = |problem: String| ScheduleError::Cron {
        text: text.to_owned(),
        problem,
    };
    let fields = trimmed.split_whitespace().count();
    if !trimmed.starts_with('@') && fields != 5 {
        return Err(cron_error(format!(
            "a cron expression has 5 fields (minute hour day-of-month month day-of-week), \
             this has {fields}"
        )));
    }
    let cron = CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(trimmed)
        .map_err(|e| cron_error(cron_problem(&e.to_string())))?;
    // An expression such as `0 0 31 2 *` parses but never fires. Checked from a fixed date
    // (not the clock); croner gives up after searching a few years, which any real
    // schedule is well within.
    let reference = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap();
    if cron.find_next_occurrence(&reference, true).is_err() {
        return Err(ScheduleError::NeverFires {
            text: text.to_owned(),
        });
    }
    Ok(cron)
}

/// croner's message, without its category prefix and with the valid ranges when a number is
/// out of range.
fn cron_problem(message: &str) -> String {
    let mut problem = message.trim().trim_end_matches('.');
    for prefix in ["Invalid pattern: ", "Component error: "] {
        problem = problem.strip_prefix(prefix).unwrap_or(problem);
    }
    let mut problem = problem.to_owned();
    if let Some(first) = problem.get(..1) {
        problem.replace_range(..1, &first.to_lowercase());
    }
    if problem.contains("out of bounds") {
        problem
            .push_str(": minute 0-59, hour 0-23, day of month 1-31, month 1-12, day of week 0-7");
    }
    problem
}

fn parse_interval(text: &str, trimmed: &str) -> Result<TimeDelta, ScheduleError> {
    let interval_error = |problem: String| ScheduleError::Interval {
        text: text.to_owned(),
        problem,
    };
    let interval = parse_fixed(trimmed).map_err(|e| {
        interval_error(match e {
            DurationError::VariableLength { .. } => "months and years have no fixed length: \
                 for a monthly or yearly backup use a cron expression such as \"0 3 1 * *\""
                .to_owned(),
            // Names the part that is ambiguous and both readings: keep it whole.
            DurationError::Ambiguous { .. } => e.to_string(),
            // The others start with "invalid duration \"6x\": "; the schedule names the text.
            _ => {
                let message = e.to_string();
                message
                    .split_once(": ")
                    .map_or(message.as_str(), |(_, why)| why)
                    .to_owned()
            }
        })
    })?;
    if interval < MIN_INTERVAL {
        return Err(interval_error(
            "an interval must be at least one minute, e.g. \"30min\", \"6h\" or \"1d\"".into(),
        ));
    }
    Ok(interval)
}

impl FromStr for Schedule {
    type Err = ScheduleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Schedule::parse(s)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Schedule").field(&self.text).finish()
    }
}

/// Two schedules are equal when they are written the same way.
impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Schedule {}

impl Serialize for Schedule {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Schedule::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A time for reasons: `2026-01-03 03:00 UTC` (seconds only when not zero), followed by the
/// wall-clock time in `tz` when that is not UTC: `2026-03-29 01:00 UTC (03:00 Europe/Berlin)`.
pub fn format_time(t: DateTime<Utc>, tz: Tz) -> String {
    let pattern = if t.second() == 0 && t.nanosecond() == 0 {
        "%Y-%m-%d %H:%M"
    } else {
        "%Y-%m-%d %H:%M:%S"
    };
    let utc = format!("{} UTC", t.format(pattern));
    if tz == Tz::UTC || tz == Tz::Etc__UTC {
        return utc;
    }
    let local = t.with_timezone(&tz);
    let local_pattern = if local.date_naive() == t.date_naive() {
        "%H:%M"
    } else {
        "%Y-%m-%d %H:%M"
    };
    format!("{utc} ({} {})", local.format(local_pattern), tz.name())
}

/// A duration for people: the two largest non-zero units of `d`, `h`, `min`, `s`, rounded down
/// (`7h`, `2h10min`, `3d4h`, `45s`), written in the grammar of [`crate::duration`] so that
/// what autosnap prints can be pasted back. Negative durations get a leading `-`.
pub fn human_duration(d: TimeDelta) -> String {
    if d < TimeDelta::zero() {
        return format!("-{}", human_duration(-d));
    }
    let total = d.num_seconds();
    let parts = [
        (total / 86_400, "d"),
        (total % 86_400 / 3_600, "h"),
        (total % 3_600 / 60, "min"),
        (total % 60, "s"),
    ];
    let text: String = parts
        .iter()
        .skip_while(|(n, _)| *n == 0)
        .take(2)
        .filter(|(n, _)| *n != 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    if text.is_empty() {
        "0s".into()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        for (seconds, text) in [
            (0, "0s"),
            (45, "45s"),
            (60, "1min"),
            (7 * 3600, "7h"),
            (2 * 3600 + 10 * 60 + 5, "2h10min"),
            (3 * 86_400 + 4 * 3600 + 59, "3d4h"),
            (86_400 + 30, "1d"),
            (-90, "-1min30s"),
        ] {
            assert_eq!(
                human_duration(TimeDelta::seconds(seconds)),
                text,
                "{seconds}"
            );
        }
    }

    #[test]
    fn time_format() {
        let t = Utc.with_ymd_and_hms(2026, 3, 29, 1, 0, 0).unwrap();
        assert_eq!(format_time(t, Tz::UTC), "2026-03-29 01:00 UTC");
        assert_eq!(
            format_time(t, chrono_tz::Europe::Berlin),
            "2026-03-29 01:00 UTC (03:00 Europe/Berlin)"
        );
        assert_eq!(
            format_time(t + TimeDelta::seconds(17), Tz::UTC),
            "2026-03-29 01:00:17 UTC"
        );
        let late = Utc.with_ymd_and_hms(2026, 1, 1, 23, 30, 0).unwrap();
        assert_eq!(
            format_time(late, chrono_tz::Europe::Berlin),
            "2026-01-01 23:30 UTC (2026-01-02 00:30 Europe/Berlin)"
        );
    }

    #[test]
    fn grace_is_a_quarter_up_to_an_hour() {
        assert_eq!(grace_for(TimeDelta::hours(24)), TimeDelta::hours(1));
        assert_eq!(grace_for(TimeDelta::hours(4)), TimeDelta::hours(1));
        assert_eq!(grace_for(TimeDelta::hours(2)), TimeDelta::minutes(30));
        assert_eq!(grace_for(TimeDelta::minutes(15)), TimeDelta::seconds(225));
    }
}

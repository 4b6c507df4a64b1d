//! Durations as users write them: one grammar for every flag and config field.
//!
//! A duration is one or more `<number><unit>` pairs, each unit at most once, in any order:
//! `30d`, `1y6mo`, `1h30min`, `500ms`. The units are
//!
//! | unit  | meaning      |
//! |-------|--------------|
//! | `y`   | years        |
//! | `mo`  | months       |
//! | `w`   | weeks (7 d)  |
//! | `d`   | days         |
//! | `h`   | hours        |
//! | `min` | minutes      |
//! | `s`   | seconds      |
//! | `ms`  | milliseconds |
//!
//! A bare `m` is refused everywhere with an error that names both readings: restic reads it
//! as months in `--keep-within`, most tools read it as minutes in timeouts, and a backup tool
//! must not guess which one the user meant.
//!
//! Every duration parses to a [`CalendarDuration`]. Where it is measured back from a moment
//! (retention windows, `--older-than`), years and months are calendar arithmetic (see
//! [`CalendarDuration::subtract_from`]), exactly as `shared/notes/retention.md` and restic
//! define it. Where a fixed length is needed (timeouts, intervals), [`parse_fixed`] and
//! [`parse_timeout`] refuse months and years, whose length varies.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The units every duration accepts, for error messages.
pub const UNITS_HELP: &str = "units: y (years), mo (months), w (weeks), d (days), h (hours), \
     min (minutes), s (seconds), ms (milliseconds), e.g. 30d, 1y6mo, 1h30min";

/// Why a duration could not be parsed or used. Every variant names the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The input was empty or only whitespace.
    #[error("invalid duration {input:?}: it is empty; {UNITS_HELP}")]
    Empty { input: String },
    /// The input starts with a minus sign.
    #[error("invalid duration {input:?}: durations cannot be negative; {UNITS_HELP}")]
    Negative { input: String },
    /// A unit letter (or anything else) appeared where a number was expected.
    #[error("invalid duration {input:?}: expected a number at {found:?}; {UNITS_HELP}")]
    ExpectedNumber { input: String, found: String },
    /// A number was not followed by a unit.
    #[error("invalid duration {input:?}: the number {number} has no unit; {UNITS_HELP}")]
    MissingUnit { input: String, number: String },
    /// A bare `m`: minutes or months?
    #[error(
        "{component:?}{within} is ambiguous: write {number}min for minutes or {number}mo for months"
    )]
    Ambiguous {
        input: String,
        number: String,
        /// `"30m"`, the part of the input that is ambiguous.
        component: String,
        /// ` in "1d30m"` when the input has more than that part, else empty.
        within: String,
    },
    /// A unit that is not in the grammar.
    #[error("invalid duration {input:?}: unknown unit {unit:?}; {UNITS_HELP}")]
    UnknownUnit { input: String, unit: String },
    /// The same unit appeared twice, e.g. `1d2d`.
    #[error("invalid duration {input:?}: the unit {unit:?} appears more than once")]
    DuplicateUnit { input: String, unit: String },
    /// A number (or the total) is too large.
    #[error("invalid duration {input:?}: the value is too large")]
    TooLarge { input: String },
    /// Months or years where a fixed length is needed (a timeout, an interval).
    #[error(
        "duration {input:?} has months or years, whose length varies, but a fixed length is \
         needed here: write it in days, weeks or hours (e.g. 30d, 52w)"
    )]
    VariableLength { input: String },
    /// Zero where a wait or timeout must be longer than nothing.
    #[error("duration {input:?} is zero: give a length such as 30s or 10min")]
    Zero { input: String },
}

/// One `<number><unit>` pair of the input, before the unit is interpreted.
struct Component<'a> {
    number: &'a str,
    unit: &'a str,
}

/// Splits `"1y2mo"` into `[("1", "y"), ("2", "mo")]`. Surrounding whitespace is ignored; the
/// caller interprets the units.
fn split_components(input: &str) -> Result<Vec<Component<'_>>, DurationError> {
    let owned = || input.to_owned();
    let mut rest = input.trim();
    if rest.is_empty() {
        return Err(DurationError::Empty { input: owned() });
    }
    if rest.starts_with('-') {
        return Err(DurationError::Negative { input: owned() });
    }
    let mut components = Vec::new();
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(DurationError::ExpectedNumber {
                input: owned(),
                found: rest.to_owned(),
            });
        }
        let (number, after) = rest.split_at(digits);
        // The unit is the run of letters after the number (so `90mins` reports "mins"), or
        // else the single character there (so `1.5d` reports ".").
        let letters = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit_len = match after.chars().next() {
            None => {
                return Err(DurationError::MissingUnit {
                    input: owned(),
                    number: number.to_owned(),
                })
            }
            Some(_) if letters > 0 => letters,
            Some(c) => c.len_utf8(),
        };
        let (unit, after_unit) = after.split_at(unit_len);
        components.push(Component { number, unit });
        rest = after_unit;
    }
    Ok(components)
}

/// A duration as written by the user: calendar parts (years, months, days) and absolute parts
/// (hours and below). Weeks are stored as 7 days.
///
/// Missing components are zero. All-zero durations (`0d`) parse, and the retention rules treat
/// them as "off", like a count of 0. [`Display`](fmt::Display) writes the canonical form
/// (`1y2mo3d4h5min6s7ms`, zero components left out, `0d` for zero), which parses back to the
/// same value. Serde uses that string form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CalendarDuration {
    pub years: u32,
    pub months: u32,
    pub days: u32,
    pub hours: u32,
    pub minutes: u32,
    pub seconds: u32,
    pub millis: u32,
}

impl CalendarDuration {
    /// Whether every component is zero.
    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }

    /// Whether the length is the same wherever it is measured (no months or years).
    pub fn is_fixed(&self) -> bool {
        self.years == 0 && self.months == 0
    }

    /// The absolute part: days, hours, minutes, seconds and milliseconds, ignoring months
    /// and years. `None` only when it overflows.
    fn absolute_part(&self) -> Option<TimeDelta> {
        let millis = i64::from(self.days) * 86_400_000
            + i64::from(self.hours) * 3_600_000
            + i64::from(self.minutes) * 60_000
            + i64::from(self.seconds) * 1_000
            + i64::from(self.millis);
        TimeDelta::try_milliseconds(millis)
    }

    /// The length, when it is fixed: `None` with months or years (see
    /// [`is_fixed`](Self::is_fixed)).
    pub fn fixed(&self) -> Option<TimeDelta> {
        if self.is_fixed() {
            self.absolute_part()
        } else {
            None
        }
    }

    /// `t` minus this duration, with calendar arithmetic:
    ///
    /// 1. years and months are subtracted from the year and month (the day of month is kept),
    /// 2. days are subtracted from the day of month, and a day that does not exist in the
    ///    resulting month overflows into the next one — `31 March − 1mo` is "31 February", which
    ///    normalises to 3 March (2 March in a leap year), like Go's `time.AddDate`,
    /// 3. the time of day is kept, and finally hours, minutes, seconds and milliseconds are
    ///    subtracted as absolute time.
    ///
    /// Everything is in UTC. A result before the earliest time chrono can represent saturates
    /// to [`DateTime::<Utc>::MIN_UTC`], which puts every backup inside such a window.
    pub fn subtract_from(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        self.checked_subtract_from(t)
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    /// Like [`subtract_from`](Self::subtract_from), but `None` when the result is out of range.
    pub fn checked_subtract_from(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let naive = t.naive_utc();
        let date = naive.date();

        // Years and months: count months from year 0 so that borrowing across years is plain
        // integer arithmetic, then split back into (year, month).
        let total_months = i64::from(date.year()) * 12 + i64::from(date.month0())
            - i64::from(self.years) * 12
            - i64::from(self.months);
        let year = i32::try_from(total_months.div_euclid(12)).ok()?;
        let month0 = u32::try_from(total_months.rem_euclid(12)).ok()?;

        // Days: start from the 1st of the target month and add the (possibly negative or
        // overflowing) day offset, which normalises "31 February" to early March.
        let first_of_month = NaiveDate::from_ymd_opt(year, month0 + 1, 1)?;
        let day_offset = i64::from(date.day0()) - i64::from(self.days);
        let new_date = first_of_month.checked_add_signed(TimeDelta::try_days(day_offset)?)?;

        // Hours and below: absolute time on the resulting date and time of day.
        let below_days = CalendarDuration {
            hours: self.hours,
            minutes: self.minutes,
            seconds: self.seconds,
            millis: self.millis,
            ..CalendarDuration::default()
        };
        let shifted = new_date
            .and_time(naive.time())
            .checked_sub_signed(below_days.absolute_part()?)?;
        Some(shifted.and_utc())
    }
}

impl fmt::Display for CalendarDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("0d");
        }
        for (value, unit) in [
            (self.years, "y"),
            (self.months, "mo"),
            (self.days, "d"),
            (self.hours, "h"),
            (self.minutes, "min"),
            (self.seconds, "s"),
            (self.millis, "ms"),
        ] {
            if value != 0 {
                write!(f, "{value}{unit}")?;
            }
        }
        Ok(())
    }
}

impl FromStr for CalendarDuration {
    type Err = DurationError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let owned = || input.to_owned();
        let components = split_components(input)?;
        let single = components.len() == 1;

        let mut duration = CalendarDuration::default();
        let mut seen: Vec<&str> = Vec::with_capacity(components.len());
        for Component { number, unit } in components {
            let too_large = || DurationError::TooLarge { input: owned() };
            let (slot, factor) = match unit {
                "y" => (&mut duration.years, 1),
                "mo" => (&mut duration.months, 1),
                "w" => (&mut duration.days, 7),
                "d" => (&mut duration.days, 1),
                "h" => (&mut duration.hours, 1),
                "min" => (&mut duration.minutes, 1),
                "s" => (&mut duration.seconds, 1),
                "ms" => (&mut duration.millis, 1),
                "m" => {
                    return Err(DurationError::Ambiguous {
                        input: owned(),
                        number: number.to_owned(),
                        component: format!("{number}m"),
                        within: if single {
                            String::new()
                        } else {
                            format!(" in {:?}", input.trim())
                        },
                    })
                }
                _ => {
                    return Err(DurationError::UnknownUnit {
                        input: owned(),
                        unit: unit.to_owned(),
                    })
                }
            };
            if seen.contains(&unit) {
                return Err(DurationError::DuplicateUnit {
                    input: owned(),
                    unit: unit.to_owned(),
                });
            }
            seen.push(unit);
            let value: u32 = number.parse().map_err(|_| too_large())?;
            let value = value.checked_mul(factor).ok_or_else(too_large)?;
            // `w` and `d` share the days slot.
            *slot = slot.checked_add(value).ok_or_else(too_large)?;
        }
        Ok(duration)
    }
}

impl Serialize for CalendarDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CalendarDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses a duration that must have a fixed length (an interval, an age compared as a plain
/// length): months and years are refused with [`DurationError::VariableLength`].
pub fn parse_fixed(input: &str) -> Result<TimeDelta, DurationError> {
    let duration: CalendarDuration = input.parse()?;
    if !duration.is_fixed() {
        return Err(DurationError::VariableLength {
            input: input.to_owned(),
        });
    }
    duration.fixed().ok_or_else(|| DurationError::TooLarge {
        input: input.to_owned(),
    })
}

/// Parses a fixed length, zero included, for a caller that checks its own minimum.
pub fn parse_length(input: &str) -> Result<std::time::Duration, DurationError> {
    parse_fixed(input)?
        .to_std()
        .map_err(|_| DurationError::TooLarge {
            input: input.to_owned(),
        })
}

/// Parses a timeout, wait or poll interval: a fixed length longer than zero.
pub fn parse_timeout(input: &str) -> Result<std::time::Duration, DurationError> {
    let length = parse_length(input)?;
    if length.is_zero() {
        return Err(DurationError::Zero {
            input: input.to_owned(),
        });
    }
    Ok(length)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    fn cd(years: u32, months: u32, days: u32, hours: u32) -> CalendarDuration {
        CalendarDuration {
            years,
            months,
            days,
            hours,
            ..CalendarDuration::default()
        }
    }

    #[test]
    fn parses_every_unit() {
        let minutes = |minutes| CalendarDuration {
            minutes,
            ..CalendarDuration::default()
        };
        let cases = [
            ("1y2mo3d4h", cd(1, 2, 3, 4)),
            ("2d", cd(0, 0, 2, 0)),
            ("36h", cd(0, 0, 0, 36)),
            ("1mo", cd(0, 1, 0, 0)),
            ("1mo14d", cd(0, 1, 14, 0)),
            ("4h3d2mo1y", cd(1, 2, 3, 4)),
            ("1y1d1mo", cd(1, 1, 1, 0)),
            ("2w", cd(0, 0, 14, 0)),
            ("1w2d", cd(0, 0, 9, 0)),
            ("90min", minutes(90)),
            (
                "1h30min15s250ms",
                CalendarDuration {
                    hours: 1,
                    minutes: 30,
                    seconds: 15,
                    millis: 250,
                    ..CalendarDuration::default()
                },
            ),
            ("0d", cd(0, 0, 0, 0)),
            ("007d", cd(0, 0, 7, 0)),
            ("  7d ", cd(0, 0, 7, 0)),
            ("9999y", cd(9999, 0, 0, 0)),
            ("4294967295h", cd(0, 0, 0, u32::MAX)),
        ];
        for (input, expected) in cases {
            assert_eq!(input.parse::<CalendarDuration>(), Ok(expected), "{input}");
        }
    }

    #[test]
    fn bare_m_is_ambiguous_and_the_error_names_both_readings() {
        let cases = [
            (
                "30m",
                "\"30m\" is ambiguous: write 30min for minutes or 30mo for months",
            ),
            (
                "6m",
                "\"6m\" is ambiguous: write 6min for minutes or 6mo for months",
            ),
            (
                "1d30m",
                "\"30m\" in \"1d30m\" is ambiguous: write 30min for minutes or 30mo for months",
            ),
        ];
        for (input, expected) in cases {
            let err = input.parse::<CalendarDuration>().unwrap_err();
            assert_eq!(err.to_string(), expected, "{input}");
            // The same error wherever the duration is used.
            assert_eq!(parse_fixed(input).unwrap_err(), err, "{input}");
            assert_eq!(parse_timeout(input).unwrap_err(), err, "{input}");
        }
    }

    #[test]
    fn rejects_bad_durations_with_messages_naming_the_input() {
        let cases = [
            ("", "invalid duration \"\": it is empty"),
            ("   ", "invalid duration \"   \": it is empty"),
            (
                "-1d",
                "invalid duration \"-1d\": durations cannot be negative",
            ),
            ("d", "invalid duration \"d\": expected a number at \"d\""),
            (
                "1d-2h",
                "invalid duration \"1d-2h\": expected a number at \"-2h\"",
            ),
            (
                "1d 2h",
                "invalid duration \"1d 2h\": expected a number at \" 2h\"",
            ),
            ("12", "invalid duration \"12\": the number 12 has no unit"),
            ("1d2", "invalid duration \"1d2\": the number 2 has no unit"),
            ("5mins", "invalid duration \"5mins\": unknown unit \"mins\""),
            ("1M", "invalid duration \"1M\": unknown unit \"M\""),
            ("1Y", "invalid duration \"1Y\": unknown unit \"Y\""),
            (
                "1d2d",
                "invalid duration \"1d2d\": the unit \"d\" appears more than once",
            ),
            (
                "1mo1y1mo",
                "invalid duration \"1mo1y1mo\": the unit \"mo\" appears more than once",
            ),
            (
                "4294967296d",
                "invalid duration \"4294967296d\": the value is too large",
            ),
            (
                "613566757w",
                "invalid duration \"613566757w\": the value is too large",
            ),
            ("1.5d", "invalid duration \"1.5d\": unknown unit \".\""),
        ];
        for (input, expected) in cases {
            let message = input.parse::<CalendarDuration>().unwrap_err().to_string();
            assert!(
                message.starts_with(expected),
                "{input:?}: got {message:?}, expected it to start with {expected:?}"
            );
        }
    }

    #[test]
    fn unknown_unit_message_lists_the_units() {
        let message = "1x".parse::<CalendarDuration>().unwrap_err().to_string();
        assert!(message.contains("mo (months)"), "{message}");
        assert!(message.contains("min (minutes)"), "{message}");
    }

    #[test]
    fn displays_canonical_form_that_round_trips() {
        let cases = [
            ("4h3d2mo1y", "1y2mo3d4h"),
            ("2d", "2d"),
            ("36h", "36h"),
            ("0y0mo2d0h", "2d"),
            ("0h", "0d"),
            ("1y1d1mo", "1y1mo1d"),
            ("2w", "14d"),
            ("500ms1s30min", "30min1s500ms"),
        ];
        for (input, canonical) in cases {
            let parsed: CalendarDuration = input.parse().unwrap();
            assert_eq!(parsed.to_string(), canonical, "{input}");
            assert_eq!(canonical.parse::<CalendarDuration>().unwrap(), parsed);
        }
    }

    #[test]
    fn serde_uses_the_string_form() {
        let d: CalendarDuration = serde_json::from_str("\"1y2mo3d4h\"").unwrap();
        assert_eq!(d, cd(1, 2, 3, 4));
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"1y2mo3d4h\"");
        let err = serde_json::from_str::<CalendarDuration>("\"6m\"").unwrap_err();
        assert!(
            err.to_string()
                .contains("write 6min for minutes or 6mo for months"),
            "{err}"
        );
        assert!(serde_json::from_str::<CalendarDuration>("7").is_err());
    }

    #[test]
    fn subtracts_with_calendar_arithmetic() {
        let cases = [
            // 31 March − 1 month is "31 February", which overflows into March.
            (utc(2023, 3, 31, 12, 0, 0), "1mo", utc(2023, 3, 3, 12, 0, 0)),
            (utc(2024, 3, 31, 12, 0, 0), "1mo", utc(2024, 3, 2, 12, 0, 0)), // leap year
            (utc(2023, 5, 31, 0, 0, 0), "1mo", utc(2023, 5, 1, 0, 0, 0)),   // "31 April"
            (utc(2023, 3, 15, 0, 0, 0), "1mo", utc(2023, 2, 15, 0, 0, 0)),
            // Months borrow across the year boundary.
            (utc(2023, 1, 15, 6, 0, 0), "1mo", utc(2022, 12, 15, 6, 0, 0)),
            (
                utc(2023, 2, 10, 0, 0, 0),
                "14mo",
                utc(2021, 12, 10, 0, 0, 0),
            ),
            // 29 February − 1 year = "29 February 2023" = 1 March 2023.
            (utc(2024, 2, 29, 0, 0, 0), "1y", utc(2023, 3, 1, 0, 0, 0)),
            (utc(2024, 2, 29, 0, 0, 0), "4y", utc(2020, 2, 29, 0, 0, 0)),
            // Days go back across month and year boundaries.
            (utc(2023, 3, 1, 0, 0, 0), "1d", utc(2023, 2, 28, 0, 0, 0)),
            (utc(2024, 3, 1, 0, 0, 0), "1d", utc(2024, 2, 29, 0, 0, 0)),
            (utc(2023, 1, 1, 3, 0, 0), "2d", utc(2022, 12, 30, 3, 0, 0)),
            (utc(2023, 1, 1, 3, 0, 0), "400d", utc(2021, 11, 27, 3, 0, 0)),
            (utc(2023, 1, 8, 3, 0, 0), "1w", utc(2023, 1, 1, 3, 0, 0)),
            // Months first, then days: 31 March − 1mo1d = "30 February" = 2 March.
            (utc(2023, 3, 31, 0, 0, 0), "1mo1d", utc(2023, 3, 2, 0, 0, 0)),
            // Hours and minutes are absolute and borrow across days.
            (
                utc(2023, 1, 1, 3, 30, 0),
                "4h",
                utc(2022, 12, 31, 23, 30, 0),
            ),
            (utc(2023, 1, 2, 0, 0, 0), "36h", utc(2022, 12, 31, 12, 0, 0)),
            (
                utc(2023, 1, 1, 0, 30, 0),
                "90min",
                utc(2022, 12, 31, 23, 0, 0),
            ),
            // Everything together.
            (
                utc(2023, 6, 15, 10, 20, 30),
                "1y2mo3d4h5min6s",
                utc(2022, 4, 12, 6, 15, 24),
            ),
            (
                utc(2023, 6, 15, 10, 20, 30),
                "0d",
                utc(2023, 6, 15, 10, 20, 30),
            ),
        ];
        for (from, duration, expected) in cases {
            let d: CalendarDuration = duration.parse().unwrap();
            assert_eq!(d.subtract_from(from), expected, "{from} - {duration}");
        }
    }

    #[test]
    fn subtraction_keeps_sub_second_precision() {
        let t = utc(2023, 3, 31, 1, 2, 3) + TimeDelta::milliseconds(250);
        let d: CalendarDuration = "1mo1h".parse().unwrap();
        assert_eq!(
            d.subtract_from(t),
            utc(2023, 3, 3, 0, 2, 3) + TimeDelta::milliseconds(250)
        );
        let d: CalendarDuration = "250ms".parse().unwrap();
        assert_eq!(d.subtract_from(t), utc(2023, 3, 31, 1, 2, 3));
    }

    #[test]
    fn subtraction_out_of_range_saturates() {
        let huge = cd(u32::MAX, 0, 0, 0);
        assert_eq!(huge.checked_subtract_from(utc(2023, 1, 1, 0, 0, 0)), None);
        assert_eq!(
            huge.subtract_from(utc(2023, 1, 1, 0, 0, 0)),
            DateTime::<Utc>::MIN_UTC
        );
        let many_hours = cd(0, 0, 0, u32::MAX);
        // ~490,000 years of hours is beyond chrono's range too.
        assert_eq!(
            many_hours.subtract_from(utc(2023, 1, 1, 0, 0, 0)),
            DateTime::<Utc>::MIN_UTC
        );
    }

    #[test]
    fn fixed_lengths() {
        let cases = [
            ("30d", TimeDelta::days(30)),
            ("12h", TimeDelta::hours(12)),
            ("90min", TimeDelta::minutes(90)),
            ("1w", TimeDelta::weeks(1)),
            ("45s", TimeDelta::seconds(45)),
            ("500ms", TimeDelta::milliseconds(500)),
            ("1d12h", TimeDelta::hours(36)),
            ("1w1d1h1min1s", TimeDelta::seconds(694_861)),
            ("0s", TimeDelta::zero()),
            (" 2h ", TimeDelta::hours(2)),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_fixed(input), Ok(expected), "{input}");
        }
    }

    #[test]
    fn fixed_lengths_refuse_months_and_years() {
        for input in ["6mo", "1y", "1y2d"] {
            let message = parse_fixed(input).unwrap_err().to_string();
            assert_eq!(
                message,
                format!(
                    "duration {input:?} has months or years, whose length varies, but a fixed \
                     length is needed here: write it in days, weeks or hours (e.g. 30d, 52w)"
                )
            );
        }
    }

    #[test]
    fn timeouts_are_positive_fixed_lengths() {
        assert_eq!(
            parse_timeout("90min"),
            Ok(std::time::Duration::from_secs(90 * 60))
        );
        assert_eq!(
            parse_timeout("500ms"),
            Ok(std::time::Duration::from_millis(500))
        );
        assert_eq!(
            parse_timeout("0s").unwrap_err().to_string(),
            "duration \"0s\" is zero: give a length such as 30s or 10min"
        );
        assert!(matches!(
            parse_timeout("1mo"),
            Err(DurationError::VariableLength { .. })
        ));
    }
}

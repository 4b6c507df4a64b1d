//! Durations as users write them.
//!
//! Two different notations live here, on purpose in separate types with separate errors,
//! because the same letter means different things in each:
//!
//! * [`CalendarDuration`] — retention windows such as `keep-within 1y2m3d4h`. Units are
//!   `y` (years), `m` (**months**), `d` (days) and `h` (hours); there are no weeks and no
//!   minutes. Subtracting one from a time is calendar arithmetic (see
//!   [`CalendarDuration::subtract_from`]), exactly as `shared/notes/retention.md` and restic
//!   define it.
//! * [`parse_age`] — plain ages such as `--older-than 30d`. Units are `s`, `m` (**minutes**),
//!   `h`, `d` and `w`; the result is an absolute [`chrono::Duration`].

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The units a [`CalendarDuration`] accepts, for error messages.
const CALENDAR_UNITS_HELP: &str =
    "use y (years), m (months), d (days) and h (hours), e.g. `1y2m3d4h`, `7d` or `36h`";

/// The units [`parse_age`] accepts, for error messages.
const AGE_UNITS_HELP: &str =
    "use s (seconds), m (minutes), h (hours), d (days) and w (weeks), e.g. `30d`, `12h`, `90m` or `1w`";

/// Why a calendar duration (`NyNmNdNh`) could not be parsed. Every variant names the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The input was empty or only whitespace.
    #[error("invalid duration {input:?}: it is empty; {CALENDAR_UNITS_HELP}")]
    Empty { input: String },
    /// The input starts with a minus sign.
    #[error("invalid duration {input:?}: durations cannot be negative; {CALENDAR_UNITS_HELP}")]
    Negative { input: String },
    /// A unit letter (or anything else) appeared where a number was expected.
    #[error("invalid duration {input:?}: expected a number at {found:?}; {CALENDAR_UNITS_HELP}")]
    ExpectedNumber { input: String, found: String },
    /// A number was not followed by a unit.
    #[error("invalid duration {input:?}: the number {number} has no unit; {CALENDAR_UNITS_HELP}")]
    MissingUnit { input: String, number: String },
    /// A unit other than y, m, d or h.
    #[error(
        "invalid duration {input:?}: unknown unit {unit:?}; {CALENDAR_UNITS_HELP} \
         (weeks and minutes are not supported here: write 7d for a week)"
    )]
    UnknownUnit { input: String, unit: String },
    /// The same unit appeared twice, e.g. `1d2d`.
    #[error("invalid duration {input:?}: the unit {unit:?} appears more than once")]
    DuplicateUnit { input: String, unit: String },
    /// A number does not fit in 32 bits.
    #[error("invalid duration {input:?}: the number {number} is too large")]
    TooLarge { input: String, number: String },
}

/// Why an age (`30d`, `12h`, `90m`, `1w`) could not be parsed. Every variant names the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgeError {
    /// The input was empty or only whitespace.
    #[error("invalid age {input:?}: it is empty; {AGE_UNITS_HELP}")]
    Empty { input: String },
    /// The input starts with a minus sign.
    #[error("invalid age {input:?}: an age cannot be negative; {AGE_UNITS_HELP}")]
    Negative { input: String },
    /// A unit letter (or anything else) appeared where a number was expected.
    #[error("invalid age {input:?}: expected a number at {found:?}; {AGE_UNITS_HELP}")]
    ExpectedNumber { input: String, found: String },
    /// A number was not followed by a unit.
    #[error("invalid age {input:?}: the number {number} has no unit; {AGE_UNITS_HELP}")]
    MissingUnit { input: String, number: String },
    /// A unit other than s, m, h, d or w.
    #[error(
        "invalid age {input:?}: unknown unit {unit:?}; {AGE_UNITS_HELP} \
         (m means minutes here; months and years are not supported in ages)"
    )]
    UnknownUnit { input: String, unit: String },
    /// The same unit appeared twice, e.g. `1h2h`.
    #[error("invalid age {input:?}: the unit {unit:?} appears more than once")]
    DuplicateUnit { input: String, unit: String },
    /// The total does not fit in a [`chrono::Duration`].
    #[error("invalid age {input:?}: the value is too large")]
    TooLarge { input: String },
}

/// One `<number><unit>` pair of the input, before the unit is interpreted.
struct Component<'a> {
    number: &'a str,
    unit: &'a str,
}

/// Why [`split_components`] failed; turned into [`DurationError`] or [`AgeError`] by the caller.
enum SplitError<'a> {
    Empty,
    Negative,
    ExpectedNumber { found: &'a str },
    MissingUnit { number: &'a str },
}

/// Splits `"1y2m"` into `[("1", 'y'), ("2", 'm')]`. Surrounding whitespace is ignored; the
/// caller interprets the units.
fn split_components(input: &str) -> Result<Vec<Component<'_>>, SplitError<'_>> {
    let mut rest = input.trim();
    if rest.is_empty() {
        return Err(SplitError::Empty);
    }
    if rest.starts_with('-') {
        return Err(SplitError::Negative);
    }
    let mut components = Vec::new();
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(SplitError::ExpectedNumber { found: rest });
        }
        let (number, after) = rest.split_at(digits);
        // The unit is the run of letters after the number (so `90min` reports "min"), or
        // else the single character there (so `1.5d` reports ".").
        let letters = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit_len = match after.chars().next() {
            None => return Err(SplitError::MissingUnit { number }),
            Some(_) if letters > 0 => letters,
            Some(c) => c.len_utf8(),
        };
        let (unit, after_unit) = after.split_at(unit_len);
        components.push(Component { number, unit });
        rest = after_unit;
    }
    Ok(components)
}

/// A calendar duration written `NyNmNdNh` (years, months, days, hours), used by the
/// `keep-within*` retention rules.
///
/// Components may come in any order but each at most once; missing ones are zero. All-zero
/// durations (`0d`) parse, and the retention rules treat them as "off", like a count of 0.
/// [`Display`](fmt::Display) writes the canonical form (`1y2m3d4h`, zero components left out,
/// `0d` for zero), which parses back to the same value. Serde uses that string form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CalendarDuration {
    pub years: u32,
    pub months: u32,
    pub days: u32,
    pub hours: u32,
}

impl CalendarDuration {
    /// Whether every component is zero.
    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }

    /// `t` minus this duration, with calendar arithmetic:
    ///
    /// 1. years and months are subtracted from the year and month (the day of month is kept),
    /// 2. days are subtracted from the day of month, and a day that does not exist in the
    ///    resulting month overflows into the next one — `31 March − 1m` is "31 February", which
    ///    normalises to 3 March (2 March in a leap year), like Go's `time.AddDate`,
    /// 3. the time of day is kept, and finally hours are subtracted as absolute hours.
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

        // Hours: absolute hours on the resulting date and time of day.
        let shifted = new_date
            .and_time(naive.time())
            .checked_sub_signed(TimeDelta::try_hours(i64::from(self.hours))?)?;
        Some(shifted.and_utc())
    }
}

impl fmt::Display for CalendarDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("0d");
        }
        for (value, unit) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
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
        let components = split_components(input).map_err(|e| match e {
            SplitError::Empty => DurationError::Empty { input: owned() },
            SplitError::Negative => DurationError::Negative { input: owned() },
            SplitError::ExpectedNumber { found } => DurationError::ExpectedNumber {
                input: owned(),
                found: found.to_owned(),
            },
            SplitError::MissingUnit { number } => DurationError::MissingUnit {
                input: owned(),
                number: number.to_owned(),
            },
        })?;

        let mut duration = CalendarDuration::default();
        let mut seen = [false; 4];
        for Component { number, unit } in components {
            let (slot, index) = match unit {
                "y" => (&mut duration.years, 0),
                "m" => (&mut duration.months, 1),
                "d" => (&mut duration.days, 2),
                "h" => (&mut duration.hours, 3),
                _ => {
                    return Err(DurationError::UnknownUnit {
                        input: owned(),
                        unit: unit.to_owned(),
                    })
                }
            };
            if std::mem::replace(&mut seen[index], true) {
                return Err(DurationError::DuplicateUnit {
                    input: owned(),
                    unit: unit.to_owned(),
                });
            }
            *slot = number.parse().map_err(|_| DurationError::TooLarge {
                input: owned(),
                number: number.to_owned(),
            })?;
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

/// Parses a plain age such as `30d`, `12h`, `90m` or `1w` into an absolute duration, for
/// options like `--older-than`.
///
/// Units: `s` seconds, `m` **minutes**, `h` hours, `d` days (24 h), `w` weeks (7 d). Several
/// components may be combined (`1d12h`), each unit at most once. Months and years are not
/// accepted, since their length varies: retention windows use [`CalendarDuration`] instead.
/// Surrounding whitespace is ignored; negative and empty inputs are errors.
pub fn parse_age(input: &str) -> Result<TimeDelta, AgeError> {
    let owned = || input.to_owned();
    let components = split_components(input).map_err(|e| match e {
        SplitError::Empty => AgeError::Empty { input: owned() },
        SplitError::Negative => AgeError::Negative { input: owned() },
        SplitError::ExpectedNumber { found } => AgeError::ExpectedNumber {
            input: owned(),
            found: found.to_owned(),
        },
        SplitError::MissingUnit { number } => AgeError::MissingUnit {
            input: owned(),
            number: number.to_owned(),
        },
    })?;

    let mut total = TimeDelta::zero();
    let mut seen = Vec::with_capacity(components.len());
    for Component { number, unit } in components {
        let seconds_per_unit: i64 = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 60 * 60,
            "d" => 24 * 60 * 60,
            "w" => 7 * 24 * 60 * 60,
            _ => {
                return Err(AgeError::UnknownUnit {
                    input: owned(),
                    unit: unit.to_owned(),
                })
            }
        };
        if seen.contains(&unit) {
            return Err(AgeError::DuplicateUnit {
                input: owned(),
                unit: unit.to_owned(),
            });
        }
        seen.push(unit);
        let too_large = || AgeError::TooLarge { input: owned() };
        let value: i64 = number.parse().map_err(|_| too_large())?;
        let seconds = value.checked_mul(seconds_per_unit).ok_or_else(too_large)?;
        let part = TimeDelta::try_seconds(seconds).ok_or_else(too_large)?;
        total = total.checked_add(&part).ok_or_else(too_large)?;
    }
    Ok(total)
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
        }
    }

    #[test]
    fn parses_calendar_durations() {
        let cases = [
            ("1y2m3d4h", cd(1, 2, 3, 4)),
            ("2d", cd(0, 0, 2, 0)),
            ("36h", cd(0, 0, 0, 36)),
            ("1m", cd(0, 1, 0, 0)),
            ("1m14d", cd(0, 1, 14, 0)),
            ("4h3d2m1y", cd(1, 2, 3, 4)),
            ("1y1d1m", cd(1, 1, 1, 0)),
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
    fn rejects_bad_calendar_durations_with_messages_naming_the_input() {
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
            ("1w", "invalid duration \"1w\": unknown unit \"w\""),
            ("90min", "invalid duration \"90min\": unknown unit \"min\""),
            ("5s", "invalid duration \"5s\": unknown unit \"s\""),
            ("1Y", "invalid duration \"1Y\": unknown unit \"Y\""),
            (
                "1d2d",
                "invalid duration \"1d2d\": the unit \"d\" appears more than once",
            ),
            (
                "1m1y1m",
                "invalid duration \"1m1y1m\": the unit \"m\" appears more than once",
            ),
            (
                "4294967296d",
                "invalid duration \"4294967296d\": the number 4294967296 is too large",
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
    fn unknown_unit_message_explains_the_units() {
        let message = "1w".parse::<CalendarDuration>().unwrap_err().to_string();
        assert!(message.contains("m (months)"), "{message}");
        assert!(message.contains("write 7d for a week"), "{message}");
    }

    #[test]
    fn displays_canonical_form_that_round_trips() {
        let cases = [
            ("4h3d2m1y", "1y2m3d4h"),
            ("2d", "2d"),
            ("36h", "36h"),
            ("0y0m2d0h", "2d"),
            ("0h", "0d"),
            ("1y1d1m", "1y1m1d"),
        ];
        for (input, canonical) in cases {
            let parsed: CalendarDuration = input.parse().unwrap();
            assert_eq!(parsed.to_string(), canonical, "{input}");
            assert_eq!(canonical.parse::<CalendarDuration>().unwrap(), parsed);
        }
    }

    #[test]
    fn serde_uses_the_string_form() {
        let d: CalendarDuration = serde_json::from_str("\"1y2m3d4h\"").unwrap();
        assert_eq!(d, cd(1, 2, 3, 4));
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"1y2m3d4h\"");
        let err = serde_json::from_str::<CalendarDuration>("\"2w\"").unwrap_err();
        assert!(err.to_string().contains("invalid duration \"2w\""), "{err}");
        assert!(serde_json::from_str::<CalendarDuration>("7").is_err());
    }

    #[test]
    fn subtracts_with_calendar_arithmetic() {
        let cases = [
            // 31 March − 1 month is "31 February", which overflows into March.
            (utc(2023, 3, 31, 12, 0, 0), "1m", utc(2023, 3, 3, 12, 0, 0)),
            (utc(2024, 3, 31, 12, 0, 0), "1m", utc(2024, 3, 2, 12, 0, 0)), // leap year
            (utc(2023, 5, 31, 0, 0, 0), "1m", utc(2023, 5, 1, 0, 0, 0)),   // "31 April"
            (utc(2023, 3, 15, 0, 0, 0), "1m", utc(2023, 2, 15, 0, 0, 0)),
            // Months borrow across the year boundary.
            (utc(2023, 1, 15, 6, 0, 0), "1m", utc(2022, 12, 15, 6, 0, 0)),
            (utc(2023, 2, 10, 0, 0, 0), "14m", utc(2021, 12, 10, 0, 0, 0)),
            // 29 February − 1 year = "29 February 2023" = 1 March 2023.
            (utc(2024, 2, 29, 0, 0, 0), "1y", utc(2023, 3, 1, 0, 0, 0)),
            (utc(2024, 2, 29, 0, 0, 0), "4y", utc(2020, 2, 29, 0, 0, 0)),
            // Days go back across month and year boundaries.
            (utc(2023, 3, 1, 0, 0, 0), "1d", utc(2023, 2, 28, 0, 0, 0)),
            (utc(2024, 3, 1, 0, 0, 0), "1d", utc(2024, 2, 29, 0, 0, 0)),
            (utc(2023, 1, 1, 3, 0, 0), "2d", utc(2022, 12, 30, 3, 0, 0)),
            (utc(2023, 1, 1, 3, 0, 0), "400d", utc(2021, 11, 27, 3, 0, 0)),
            // Months first, then days: 31 March − 1m1d = "30 February" = 2 March.
            (utc(2023, 3, 31, 0, 0, 0), "1m1d", utc(2023, 3, 2, 0, 0, 0)),
            // Hours are absolute and borrow across days.
            (
                utc(2023, 1, 1, 3, 30, 0),
                "4h",
                utc(2022, 12, 31, 23, 30, 0),
            ),
            (utc(2023, 1, 2, 0, 0, 0), "36h", utc(2022, 12, 31, 12, 0, 0)),
            // Everything together.
            (
                utc(2023, 6, 15, 10, 20, 30),
                "1y2m3d4h",
                utc(2022, 4, 12, 6, 20, 30),
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
        let d: CalendarDuration = "1m1h".parse().unwrap();
        assert_eq!(
            d.subtract_from(t),
            utc(2023, 3, 3, 0, 2, 3) + TimeDelta::milliseconds(250)
        );
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
    fn parses_ages() {
        let cases = [
            ("30d", TimeDelta::days(30)),
            ("12h", TimeDelta::hours(12)),
            ("90m", TimeDelta::minutes(90)),
            ("1w", TimeDelta::weeks(1)),
            ("45s", TimeDelta::seconds(45)),
            ("1d12h", TimeDelta::hours(36)),
            ("1w1d1h1m1s", TimeDelta::seconds(694_861)),
            ("0s", TimeDelta::zero()),
            (" 2h ", TimeDelta::hours(2)),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_age(input), Ok(expected), "{input}");
        }
    }

    #[test]
    fn rejects_bad_ages_with_messages_naming_the_input() {
        let cases = [
            ("", "invalid age \"\": it is empty"),
            ("-3d", "invalid age \"-3d\": an age cannot be negative"),
            ("h", "invalid age \"h\": expected a number at \"h\""),
            ("30", "invalid age \"30\": the number 30 has no unit"),
            ("1y", "invalid age \"1y\": unknown unit \"y\""),
            ("1M", "invalid age \"1M\": unknown unit \"M\""),
            (
                "1h1h",
                "invalid age \"1h1h\": the unit \"h\" appears more than once",
            ),
            (
                "99999999999999999999d",
                "invalid age \"99999999999999999999d\": the value is too large",
            ),
            (
                "9999999999999999w",
                "invalid age \"9999999999999999w\": the value is too large",
            ),
        ];
        for (input, expected) in cases {
            let message = parse_age(input).unwrap_err().to_string();
            assert!(
                message.starts_with(expected),
                "{input:?}: got {message:?}, expected it to start with {expected:?}"
            );
        }
        let message = parse_age("2y").unwrap_err().to_string();
        assert!(message.contains("m means minutes here"), "{message}");
    }

    #[test]
    fn m_means_months_in_durations_and_minutes_in_ages() {
        let d: CalendarDuration = "90m".parse().unwrap();
        assert_eq!(d.months, 90);
        assert_eq!(parse_age("90m").unwrap(), TimeDelta::minutes(90));
    }
}

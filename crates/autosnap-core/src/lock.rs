//! EBS snapshot lock: the modes, the states EC2 reports, and the lock a user asks for.
//!
//! AWS's rules (EC2 API reference, LockSnapshot and LockedSnapshotsInfo): a lock is in
//! governance or compliance mode, for a whole number of days (1–36500) or until a date; a
//! compliance lock may have a cooling-off period (1–72 whole hours) during which it can still
//! be removed, after which it cannot be removed or shortened by anyone. A locked snapshot
//! cannot be deleted until its lock expires.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::duration::CalendarDuration;

/// The longest lock EC2 accepts, in days.
pub const MAX_LOCK_DAYS: i64 = 36_500;
/// The longest cooling-off period EC2 accepts, in hours.
pub const MAX_COOL_OFF_HOURS: i64 = 72;

/// How a snapshot is locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    /// Removable by anyone allowed to call UnlockSnapshot.
    Governance,
    /// Removable only during its cooling-off period; after that by nobody, until it expires.
    Compliance,
}

impl LockMode {
    pub fn as_str(&self) -> &'static str {
        match self {
            LockMode::Governance => "governance",
            LockMode::Compliance => "compliance",
        }
    }
}

impl fmt::Display for LockMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LockMode {
    type Err = LockError;
    fn from_str(s: &str) -> Result<Self, LockError> {
        match s {
            "governance" => Ok(LockMode::Governance),
            "compliance" => Ok(LockMode::Compliance),
            other => Err(LockError::Mode(other.to_string())),
        }
    }
}

/// The state EC2 reports for a lock (DescribeLockedSnapshots' `LockState`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LockState {
    /// Compliance mode, still inside its cooling-off period: can be unlocked.
    ComplianceCooloff,
    Governance,
    /// Compliance mode after its cooling-off period: cannot be unlocked.
    Compliance,
    /// The lock has run out: the snapshot is not protected any more.
    Expired,
    /// A state this version of autosnap does not know; treated as locked.
    #[serde(untagged)]
    Other(String),
}

impl LockState {
    pub fn parse(s: &str) -> LockState {
        match s {
            "compliance-cooloff" => LockState::ComplianceCooloff,
            "governance" => LockState::Governance,
            "compliance" => LockState::Compliance,
            "expired" => LockState::Expired,
            other => LockState::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            LockState::ComplianceCooloff => "compliance-cooloff",
            LockState::Governance => "governance",
            LockState::Compliance => "compliance",
            LockState::Expired => "expired",
            LockState::Other(s) => s,
        }
    }

    /// Whether the snapshot cannot be deleted in this state. An unknown state counts as
    /// locked: wrongly skipping a deletion is recoverable, a wrong deletion is not.
    pub fn prevents_deletion(&self) -> bool {
        !matches!(self, LockState::Expired)
    }
}

/// One snapshot's lock as EC2 reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotLock {
    pub snapshot_id: String,
    pub state: LockState,
    /// When the lock ends (`LockExpiresOn`).
    pub expires_on: Option<DateTime<Utc>>,
    /// When a compliance lock's cooling-off period ends.
    pub cool_off_ends: Option<DateTime<Utc>>,
    /// The lock's length in days, when it was given as a duration.
    pub duration_days: Option<i32>,
    pub created_on: Option<DateTime<Utc>>,
}

impl SnapshotLock {
    pub fn prevents_deletion(&self) -> bool {
        self.state.prevents_deletion()
    }

    /// `locked (governance) until 2027-01-02 03:04 UTC`: what a command says when it leaves a
    /// snapshot alone because of its lock.
    pub fn reason(&self) -> String {
        let until = match self.expires_on {
            Some(t) => format!(" until {}", t.format("%Y-%m-%d %H:%M UTC")),
            None => String::new(),
        };
        format!("locked ({}){until}", self.state.as_str())
    }

    /// What the user can do about it.
    pub fn remedy(&self) -> &'static str {
        match self.state {
            LockState::Governance | LockState::ComplianceCooloff => {
                "run `autosnap snapshot unlock` first if it must go"
            }
            _ => "it cannot be unlocked; it can be deleted once the lock expires",
        }
    }
}

/// The locks among `locks` that keep `snapshot_ids` from being deleted.
pub fn blocking<'a>(locks: &'a [SnapshotLock], snapshot_ids: &[String]) -> Vec<&'a SnapshotLock> {
    snapshot_ids
        .iter()
        .filter_map(|id| {
            locks
                .iter()
                .find(|l| &l.snapshot_id == id && l.prevents_deletion())
        })
        .collect()
}

/// Marks the planned deletions that a lock forbids as protected (`locked (governance) until
/// …`), so `plan`, `prune --dry-run`, prune's question and the run all agree that they stay.
/// `locks`: what DescribeLockedSnapshots says about [`deletion_candidates`]. A backup stays
/// whole when any of its snapshots is locked. Returns how many were marked.
pub fn protect_locked_backups(plan: &mut crate::plan::Plan, locks: &[SnapshotLock]) -> usize {
    let mut marked = 0;
    for p in &mut plan.policies {
        for t in &mut p.targets {
            for g in &mut t.groups {
                for b in g.backups.iter_mut().filter(|b| b.delete) {
                    let ids: Vec<String> = b.snapshot_ids.iter().map(|s| s.to_string()).collect();
                    let why: Vec<String> = blocking(locks, &ids)
                        .iter()
                        .map(|l| {
                            if ids.len() == 1 {
                                l.reason()
                            } else {
                                format!("{} {}", l.snapshot_id, l.reason())
                            }
                        })
                        .collect();
                    if !why.is_empty() {
                        b.delete = false;
                        b.protected = Some(why.join("; "));
                        marked += 1;
                    }
                }
            }
        }
    }
    marked
}

/// The snapshots of every planned deletion, by region: what to ask DescribeLockedSnapshots.
pub fn deletion_candidates(
    plan: &crate::plan::Plan,
) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut out: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (_, _, g, b) in plan.deletions() {
        out.entry(g.region.clone())
            .or_default()
            .extend(b.snapshot_ids.iter().map(|s| s.to_string()));
    }
    out
}

/// How long a lock lasts: a length (whole days) or an end date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LockLength {
    Days(i32),
    Until(DateTime<Utc>),
}

/// A lock to set, validated against EC2's limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LockRequest {
    pub mode: LockMode,
    pub length: LockLength,
    /// Whole hours; compliance only.
    pub cool_off_hours: Option<i32>,
}

/// Why a lock cannot be asked for. Each names the value and says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    #[error("unknown lock mode {0:?}: use governance or compliance")]
    Mode(String),
    #[error(
        "lock length {0} is not a whole number of days: EC2 locks for 1 to 36500 days \
         (write e.g. 30d or 52w, or give an end time)"
    )]
    NotWholeDays(String),
    #[error("lock length {0} is out of range: EC2 locks for 1 to 36500 days")]
    DaysOutOfRange(String),
    #[error("lock end {until} is not in the future (now {now})")]
    UntilInThePast {
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    },
    #[error("cooling-off period {0} is not a whole number of hours from 1h to 72h")]
    CoolOff(String),
    #[error(
        "a cooling-off period applies only to compliance mode: drop it, or lock in compliance mode"
    )]
    CoolOffNeedsCompliance,
    #[error(
        "compliance mode is irreversible: once its cooling-off period is over nobody can unlock \
         or delete the snapshot until the lock expires; {how} to confirm"
    )]
    NotAcknowledged { how: &'static str },
}

fn whole_days(d: &CalendarDuration) -> Result<i32, LockError> {
    let written = d.to_string();
    let fixed = d
        .fixed()
        .ok_or_else(|| LockError::NotWholeDays(written.clone()))?;
    if fixed.is_zero() || fixed.num_milliseconds() % TimeDelta::days(1).num_milliseconds() != 0 {
        return Err(LockError::NotWholeDays(written));
    }
    let days = fixed.num_days();
    if !(1..=MAX_LOCK_DAYS).contains(&days) {
        return Err(LockError::DaysOutOfRange(written));
    }
    Ok(days as i32)
}

fn whole_hours(d: &CalendarDuration) -> Result<i32, LockError> {
    let written = d.to_string();
    let fixed = d
        .fixed()
        .ok_or_else(|| LockError::CoolOff(written.clone()))?;
    let hour = TimeDelta::hours(1).num_milliseconds();
    if fixed.num_milliseconds() % hour != 0 {
        return Err(LockError::CoolOff(written));
    }
    let hours = fixed.num_hours();
    if !(1..=MAX_COOL_OFF_HOURS).contains(&hours) {
        return Err(LockError::CoolOff(written));
    }
    Ok(hours as i32)
}

/// A policy's `lock = { mode = "compliance", for = "30d", cool_off = "24h",
/// acknowledge_irreversible = true }`: the lock put on each new backup right after it is
/// created, and on each copy (a copy rule may have its own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockPolicy {
    pub mode: LockMode,
    /// Whole days, in the duration grammar (`30d`, `2w`).
    #[serde(rename = "for")]
    pub length: CalendarDuration,
    /// Compliance only: whole hours from 1h to 72h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cool_off: Option<CalendarDuration>,
    /// Compliance mode is refused without it: the config must say, in so many words, that the
    /// backups will be undeletable until their locks expire.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub acknowledge_irreversible: bool,
}

impl LockPolicy {
    /// The lock to set, validated like the command line's.
    pub fn request(&self) -> Result<LockRequest, LockError> {
        let length = LockLength::Days(whole_days(&self.length)?);
        let cool_off_hours = match &self.cool_off {
            None => None,
            Some(_) if self.mode != LockMode::Compliance => {
                return Err(LockError::CoolOffNeedsCompliance)
            }
            Some(d) => Some(whole_hours(d)?),
        };
        if self.mode == LockMode::Compliance && !self.acknowledge_irreversible {
            return Err(LockError::NotAcknowledged {
                how: "set acknowledge_irreversible = true in the lock",
            });
        }
        Ok(LockRequest {
            mode: self.mode,
            length,
            cool_off_hours,
        })
    }
}

impl LockRequest {
    /// Validates a lock as a user wrote it. `acknowledged` is the explicit confirmation that
    /// compliance mode needs (`how` says where it is given, for the error).
    pub fn new(
        mode: LockMode,
        length: Result<&CalendarDuration, DateTime<Utc>>,
        cool_off: Option<&CalendarDuration>,
        acknowledged: bool,
        how: &'static str,
        now: DateTime<Utc>,
    ) -> Result<LockRequest, LockError> {
        let length = match length {
            Ok(d) => LockLength::Days(whole_days(d)?),
            Err(until) if until <= now => return Err(LockError::UntilInThePast { until, now }),
            Err(until) => LockLength::Until(until),
        };
        let cool_off_hours = match cool_off {
            None => None,
            Some(_) if mode != LockMode::Compliance => {
                return Err(LockError::CoolOffNeedsCompliance)
            }
            Some(d) => Some(whole_hours(d)?),
        };
        if mode == LockMode::Compliance && !acknowledged {
            return Err(LockError::NotAcknowledged { how });
        }
        Ok(LockRequest {
            mode,
            length,
            cool_off_hours,
        })
    }

    /// `governance for 30 days`, `compliance until 2027-01-01 00:00 UTC, cooling-off 24h
    /// (irreversible after that)`.
    pub fn describe(&self) -> String {
        let length = match self.length {
            LockLength::Days(1) => "for 1 day".to_string(),
            LockLength::Days(n) => format!("for {n} days"),
            LockLength::Until(t) => format!("until {}", t.format("%Y-%m-%d %H:%M UTC")),
        };
        let tail = match (self.mode, self.cool_off_hours) {
            (LockMode::Governance, _) => String::new(),
            (LockMode::Compliance, Some(h)) => {
                format!(", cooling-off {h}h (irreversible after that)")
            }
            (LockMode::Compliance, None) => ", no cooling-off (irreversible at once)".to_string(),
        };
        format!("{} {length}{tail}", self.mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> CalendarDuration {
        s.parse().unwrap()
    }

    fn now() -> DateTime<Utc> {
        "2026-06-01T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn lengths_are_whole_days_within_ec2_limits() {
        let ok = |s: &str| {
            LockRequest::new(LockMode::Governance, Ok(&d(s)), None, false, "", now())
                .map(|r| r.length)
        };
        assert_eq!(ok("30d"), Ok(LockLength::Days(30)));
        assert_eq!(ok("2w"), Ok(LockLength::Days(14)));
        assert_eq!(ok("48h"), Ok(LockLength::Days(2)));
        assert!(matches!(ok("36h"), Err(LockError::NotWholeDays(_))));
        assert!(matches!(ok("1mo"), Err(LockError::NotWholeDays(_))));
        assert!(matches!(ok("0d"), Err(LockError::NotWholeDays(_))));
        assert!(matches!(ok("36501d"), Err(LockError::DaysOutOfRange(_))));
        assert_eq!(ok("36500d"), Ok(LockLength::Days(36500)));
    }

    #[test]
    fn until_must_be_in_the_future() {
        let past = now() - TimeDelta::hours(1);
        let r = LockRequest::new(LockMode::Governance, Err(past), None, false, "", now());
        assert!(matches!(r, Err(LockError::UntilInThePast { .. })));
        let future = now() + TimeDelta::days(3);
        let r = LockRequest::new(LockMode::Governance, Err(future), None, false, "", now());
        assert_eq!(r.unwrap().length, LockLength::Until(future));
    }

    #[test]
    fn compliance_needs_the_acknowledgement_and_cool_off_needs_compliance() {
        let r = LockRequest::new(
            LockMode::Compliance,
            Ok(&d("7d")),
            None,
            false,
            "pass --x",
            now(),
        );
        let e = r.unwrap_err();
        assert!(matches!(e, LockError::NotAcknowledged { .. }));
        assert!(e.to_string().contains("pass --x"), "{e}");
        let r = LockRequest::new(
            LockMode::Governance,
            Ok(&d("7d")),
            Some(&d("24h")),
            false,
            "",
            now(),
        );
        assert_eq!(r, Err(LockError::CoolOffNeedsCompliance));
        let r = LockRequest::new(
            LockMode::Compliance,
            Ok(&d("7d")),
            Some(&d("24h")),
            true,
            "",
            now(),
        )
        .unwrap();
        assert_eq!(r.cool_off_hours, Some(24));
        assert!(r.describe().contains("irreversible"), "{}", r.describe());
        for bad in ["0h", "73h", "90min", "1mo"] {
            let r = LockRequest::new(
                LockMode::Compliance,
                Ok(&d("7d")),
                Some(&d(bad)),
                true,
                "",
                now(),
            );
            assert!(matches!(r, Err(LockError::CoolOff(_))), "{bad}: {r:?}");
        }
    }

    #[test]
    fn policy_locks_parse_and_need_the_acknowledgement_for_compliance() {
        #[derive(Deserialize)]
        struct W {
            lock: LockPolicy,
        }
        let parse = |t: &str| toml::from_str::<W>(t).map(|w| w.lock);
        let gov = parse(r#"lock = { mode = "governance", for = "30d" }"#).unwrap();
        assert_eq!(gov.request().unwrap().describe(), "governance for 30 days");
        let comp =
            parse(r#"lock = { mode = "compliance", for = "30d", cool_off = "24h" }"#).unwrap();
        let e = comp.request().unwrap_err();
        assert!(
            e.to_string().contains("acknowledge_irreversible = true"),
            "{e}"
        );
        let ok = parse(
            r#"lock = { mode = "compliance", for = "30d", cool_off = "24h", acknowledge_irreversible = true }"#,
        )
        .unwrap();
        assert_eq!(ok.request().unwrap().cool_off_hours, Some(24));
        assert!(parse(r#"lock = { mode = "governance", for = "30d", until = "x" }"#).is_err());
        assert!(parse(r#"lock = { mode = "legal-hold", for = "30d" }"#).is_err());
    }

    #[test]
    fn only_expired_locks_allow_deletion() {
        let lock = |state: &str| SnapshotLock {
            snapshot_id: "snap-1".into(),
            state: LockState::parse(state),
            expires_on: Some("2027-01-02T03:04:00Z".parse().unwrap()),
            cool_off_ends: None,
            duration_days: None,
            created_on: None,
        };
        for s in [
            "governance",
            "compliance",
            "compliance-cooloff",
            "something-new",
        ] {
            assert!(lock(s).prevents_deletion(), "{s}");
        }
        assert!(!lock("expired").prevents_deletion());
        assert_eq!(
            lock("governance").reason(),
            "locked (governance) until 2027-01-02 03:04 UTC"
        );
        let locks = vec![
            lock("governance"),
            SnapshotLock {
                snapshot_id: "snap-2".into(),
                ..lock("expired")
            },
        ];
        let ids = vec![
            "snap-1".to_string(),
            "snap-2".to_string(),
            "snap-3".to_string(),
        ];
        let b = blocking(&locks, &ids);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].snapshot_id, "snap-1");
    }
}

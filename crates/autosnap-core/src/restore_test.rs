//! Restore tests: proving that a backup restores, and remembering that it did.
//!
//! The decisions are here, without AWS or a clock: the policy option
//! (`restore_test = { every = "7d" }`) and when a test is due, the result tags a test leaves on
//! the backup and how `status` reads them back, which restore-test volumes an earlier run left
//! behind, and whether the first block of a volume holds an intact ext4 or XFS superblock.
//!
//! Tags:
//! - on the backup's snapshots: [`RESULT_TAG`] = `passed 2026-12-03T14:30:00Z` or
//!   `failed 2026-12-03T14:30:00Z: <reason>` (the newest result), and [`PASSED_TAG`] = the time
//!   of the newest passing test (kept when a later test fails);
//! - on each volume a test creates: [`RUN_TAG`] (the run id), [`BACKUP_TAG`], [`HOST_TAG`],
//!   [`PID_TAG`] and [`EXPIRES_TAG`], so the next run can tell a volume of a live test from one
//!   whose test died.

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::tags::Tags;

/// On a backup's snapshots: the newest result.
pub const RESULT_TAG: &str = "autosnap:restore-test";
/// On a backup's snapshots: when a test of it last passed.
pub const PASSED_TAG: &str = "autosnap:restore-test-passed";
/// On a restore-test volume: the id of the run that made it.
pub const RUN_TAG: &str = "autosnap:restore-test-run";
/// On a restore-test volume: the snapshot it was made from.
pub const BACKUP_TAG: &str = "autosnap:restore-test-backup";
/// On a restore-test volume: the host the run ran on.
pub const HOST_TAG: &str = "autosnap:restore-test-host";
/// On a restore-test volume: the run's process id on that host.
pub const PID_TAG: &str = "autosnap:restore-test-pid";
/// On a restore-test volume: when its run has ended at the latest (its waits are bounded), so
/// a volume still there after that is left over, whichever host made it.
pub const EXPIRES_TAG: &str = "autosnap:restore-test-expires";

/// The shortest `every`: a restore test creates a volume, so more often is waste.
pub const MIN_EVERY: TimeDelta = TimeDelta::hours(1);
/// EC2 tag values hold at most 256 characters.
const MAX_TAG_VALUE: usize = 256;

/// `restore_test = { every = "7d", repo = "s3://bucket/prefix" }` in a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreTestPolicy {
    /// How often the newest backup of each target is proven to restore.
    pub every: String,
    /// A repository holding archives of the backups: when one holds an archive of the tested
    /// snapshot, the snapshot's blocks are compared with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
}

/// What is wrong with a `restore_test` option.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreTestConfigError {
    #[error("every {every:?}: {problem}")]
    Every { every: String, problem: String },
    #[error("repo is empty: give a directory or s3://bucket/prefix, or leave it out")]
    EmptyRepo,
}

impl RestoreTestPolicy {
    /// `every` as a length of time (checked by [`RestoreTestPolicy::validate`]).
    pub fn every(&self) -> Result<TimeDelta, RestoreTestConfigError> {
        let fail = |problem: String| RestoreTestConfigError::Every {
            every: self.every.clone(),
            problem,
        };
        let every = crate::duration::parse_fixed(&self.every).map_err(|e| fail(e.to_string()))?;
        if every < MIN_EVERY {
            return Err(fail(
                "give at least 1h: each restore test creates a volume".into(),
            ));
        }
        Ok(every)
    }

    pub fn validate(&self) -> Result<(), RestoreTestConfigError> {
        self.every()?;
        if self.repo.as_deref().is_some_and(|r| r.trim().is_empty()) {
            return Err(RestoreTestConfigError::EmptyRepo);
        }
        Ok(())
    }
}

// ---- results -----------------------------------------------------------------------------

/// One test's result as the backup's [`RESULT_TAG`] records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordedResult {
    pub passed: bool,
    pub at: DateTime<Utc>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

impl RecordedResult {
    pub fn passed(at: DateTime<Utc>) -> Self {
        RecordedResult {
            passed: true,
            at,
            reason: None,
        }
    }

    pub fn failed(at: DateTime<Utc>, reason: impl Into<String>) -> Self {
        RecordedResult {
            passed: false,
            at,
            reason: Some(reason.into()),
        }
    }

    /// The tag value: `passed <time>` or `failed <time>: <reason>`, cut to the 256 characters
    /// EC2 allows.
    pub fn tag_value(&self) -> String {
        let value = match (&self.passed, &self.reason) {
            (true, _) => format!("passed {}", stamp(self.at)),
            (false, Some(r)) => format!("failed {}: {r}", stamp(self.at)),
            (false, None) => format!("failed {}", stamp(self.at)),
        };
        value.chars().take(MAX_TAG_VALUE).collect()
    }

    /// Reads a [`RESULT_TAG`] value back; `None` when it is not one.
    pub fn parse(value: &str) -> Option<Self> {
        if let Some(rest) = value.strip_prefix("passed ") {
            return Some(RecordedResult::passed(parse_time(rest)?));
        }
        let rest = value.strip_prefix("failed ")?;
        let (time, reason) = match rest.split_once(": ") {
            Some((t, r)) => (t, Some(r.to_string())),
            None => (rest, None),
        };
        Some(RecordedResult {
            passed: false,
            at: parse_time(time)?,
            reason,
        })
    }
}

/// The tags a test leaves on the backup's snapshots.
pub fn result_tags(result: &RecordedResult) -> Tags {
    let mut tags = Tags::new();
    tags.insert(RESULT_TAG.into(), result.tag_value());
    if result.passed {
        tags.insert(PASSED_TAG.into(), stamp(result.at));
    }
    tags
}

/// What the tags of a target's backups say about its restore tests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TargetRestoreTests {
    /// The newest result, of any backup.
    pub last_result: Option<RecordedResult>,
    /// The newest passing test, of any backup.
    pub last_success: Option<DateTime<Utc>>,
}

impl TargetRestoreTests {
    /// Reads the tags of every snapshot of a target's backups (in any order).
    pub fn from_tags<'a>(tag_sets: impl IntoIterator<Item = &'a Tags>) -> Self {
        let mut out = TargetRestoreTests::default();
        for tags in tag_sets {
            if let Some(r) = tags.get(RESULT_TAG).and_then(|v| RecordedResult::parse(v)) {
                if r.passed {
                    out.last_success = out.last_success.max(Some(r.at));
                }
                // Tags keep whole seconds: in a tie the failure is the newer result (see `due`).
                if out
                    .last_result
                    .as_ref()
                    .is_none_or(|l| r.at > l.at || (r.at == l.at && !r.passed))
                {
                    out.last_result = Some(r);
                }
            }
            if let Some(t) = tags.get(PASSED_TAG).and_then(|v| parse_time(v)) {
                out.last_success = out.last_success.max(Some(t));
            }
        }
        out
    }
}

/// Whether a policy's restore test of a target is due now, and when it is next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestoreTestDue {
    pub due: bool,
    /// `now` when due.
    pub next_due: DateTime<Utc>,
    pub reason: String,
}

fn ago(d: TimeDelta) -> String {
    let h = d.num_hours();
    if h >= 48 {
        format!("{}d", h / 24)
    } else if h >= 1 {
        format!("{h}h")
    } else {
        format!("{}min", d.num_minutes().max(0))
    }
}

/// A test is due when no test of the target passed within `every` (so a failed test is tried
/// again at the next run). A failure recorded in the same second as the last pass counts as
/// after it: a result tag holds a backup's newest result, and a test takes longer than a second.
pub fn due(every: TimeDelta, tests: &TargetRestoreTests, now: DateTime<Utc>) -> RestoreTestDue {
    let failed_since = tests
        .last_result
        .as_ref()
        .filter(|r| !r.passed && tests.last_success.is_none_or(|s| r.at >= s));
    let due_now = |reason: String| RestoreTestDue {
        due: true,
        next_due: now,
        reason,
    };
    match (tests.last_success, failed_since) {
        (_, Some(f)) => due_now(format!("the last restore test failed at {}", stamp(f.at))),
        (None, None) => due_now("never tested".into()),
        (Some(s), None) if now - s >= every => due_now(format!(
            "the last pass is {} old (every {})",
            ago(now - s),
            ago(every)
        )),
        (Some(s), None) => RestoreTestDue {
            due: false,
            next_due: s + every,
            reason: format!("passed {} ago; next at {}", ago(now - s), stamp(s + every)),
        },
    }
}

/// `status`'s view of a target's restore tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RestoreTestHealth {
    /// The newest test passed, and (when the policy asks for tests) recently enough.
    Passed,
    /// The newest test failed.
    Failed,
    /// The policy asks for tests and none passed within twice `every`.
    Overdue,
    /// Nothing recorded, and nothing asked for (or not yet: the target's backups are younger
    /// than `every`).
    Untested,
}

impl RestoreTestHealth {
    /// Whether `status --check` fails on it.
    pub fn is_problem(self) -> bool {
        matches!(self, RestoreTestHealth::Failed | RestoreTestHealth::Overdue)
    }
}

/// The state of a target's restore tests at `now`. `every` is the policy's (None when it asks
/// for none); `oldest_backup` starts the clock for a target never tested, so a new policy is
/// not overdue before it had the chance to test.
pub fn health(
    every: Option<TimeDelta>,
    tests: &TargetRestoreTests,
    oldest_backup: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> RestoreTestHealth {
    if tests.last_result.as_ref().is_some_and(|r| !r.passed) {
        return RestoreTestHealth::Failed;
    }
    let Some(every) = every else {
        return if tests.last_success.is_some() {
            RestoreTestHealth::Passed
        } else {
            RestoreTestHealth::Untested
        };
    };
    // One `every` to become due, one more for the runs to get to it.
    let grace = every * 2;
    match (tests.last_success, oldest_backup) {
        (Some(s), _) if now - s <= grace => RestoreTestHealth::Passed,
        (Some(_), _) => RestoreTestHealth::Overdue,
        (None, Some(o)) if now - o > grace => RestoreTestHealth::Overdue,
        (None, _) => RestoreTestHealth::Untested,
    }
}

/// A target's restore tests, as `plan` and `status` show them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetRestoreTest {
    /// The policy's `every`; null when the policy asks for no restore tests.
    pub every: Option<String>,
    /// Whether `run` tests the target now (after creating its backup).
    pub due: bool,
    /// When the next test is due; null when the policy asks for none.
    pub next_due: Option<DateTime<Utc>>,
    pub reason: String,
    pub last_success: Option<DateTime<Utc>>,
    pub last_result: Option<RecordedResult>,
    pub health: RestoreTestHealth,
}

/// Fills in each target's [`TargetRestoreTest`] from the tags of its backups in its source
/// region: for targets whose policy has `restore_test`, and for others whose backups carry a
/// result (a `test-restore` by hand).
pub fn annotate(
    plan: &mut crate::plan::Plan,
    policies: &[crate::policy::PolicyConfig],
    backups: &[crate::plan::ExistingBackup],
) {
    // Only backups that carry a result are looked up.
    let tagged: std::collections::HashMap<(&str, &str), &Tags> = backups
        .iter()
        .filter_map(|b| {
            let tags = &b.extra.as_deref()?.tags;
            (tags.contains_key(RESULT_TAG) || tags.contains_key(PASSED_TAG))
                .then_some(((b.id.as_str(), &*b.region), tags))
        })
        .collect();
    let now = plan.now;
    for p in &mut plan.policies {
        let config = policies.iter().find(|c| c.name == p.policy);
        let option = config.and_then(|c| c.restore_test.as_ref());
        let every = option.and_then(|o| o.every().ok());
        for t in &mut p.targets {
            let sets: Vec<&Tags> = t
                .groups
                .iter()
                .filter(|g| g.region == t.region)
                .flat_map(|g| &g.backups)
                .flat_map(|b| b.snapshot_ids.iter())
                .filter_map(|id| tagged.get(&(id.as_str(), t.region.as_str())).copied())
                .collect();
            let tests = TargetRestoreTests::from_tags(sets);
            if every.is_none() && tests.last_result.is_none() && tests.last_success.is_none() {
                continue;
            }
            let state = health(every, &tests, t.oldest_backup, now);
            let (is_due, next_due, reason) = match every {
                Some(e) => {
                    let d = due(e, &tests, now);
                    // Nothing to test until the target has a backup (or this run makes one).
                    let can = t.newest_backup.is_some() || t.create.is_some();
                    (d.due && can, Some(d.next_due), d.reason)
                }
                None => (false, None, "the policy asks for no restore tests".into()),
            };
            t.restore_test = Some(TargetRestoreTest {
                every: option.map(|o| o.every.clone()),
                due: is_due,
                next_due,
                reason,
                last_success: tests.last_success,
                last_result: tests.last_result,
                health: state,
            });
        }
    }
}

// ---- volumes left behind -------------------------------------------------------------------

/// A run id: `rt-20261203T143000Z-4242` (the start time and the process id).
pub fn run_id(now: DateTime<Utc>, pid: u32) -> String {
    format!("rt-{}-{pid}", now.format("%Y%m%dT%H%M%SZ"))
}

/// The tags of a restore-test volume: which run made it, of what, and how to know it is
/// left over (`expires`: when the run has ended at the latest).
pub fn volume_tags(
    run_id: &str,
    snapshot_id: &str,
    host: &str,
    pid: u32,
    expires: DateTime<Utc>,
) -> Tags {
    let mut tags = Tags::new();
    tags.insert(RUN_TAG.into(), run_id.into());
    tags.insert(BACKUP_TAG.into(), snapshot_id.into());
    tags.insert(HOST_TAG.into(), host.into());
    tags.insert(PID_TAG.into(), pid.to_string());
    tags.insert(EXPIRES_TAG.into(), stamp(expires));
    tags.insert(
        "Name".into(),
        format!("autosnap restore test of {snapshot_id}"),
    );
    tags
}

/// Why a volume carrying [`RUN_TAG`] is left over from a run that died, or `None` when its run
/// may still be going. `this_host` is the host asking; `alive` says whether a process id on
/// this host is running. A volume of another host is left over once its run's deadline has
/// passed; one of this host as soon as its process is gone.
pub fn left_over(
    tags: &Tags,
    current_run: &str,
    this_host: &str,
    now: DateTime<Utc>,
    alive: impl Fn(u32) -> bool,
) -> Option<String> {
    let run = tags.get(RUN_TAG)?;
    if run == current_run {
        return None;
    }
    if let Some(expires) = tags.get(EXPIRES_TAG).and_then(|v| parse_time(v)) {
        if now > expires {
            return Some(format!(
                "restore test {run} should have ended by {}",
                stamp(expires)
            ));
        }
    }
    let host = tags.get(HOST_TAG);
    let pid = tags.get(PID_TAG).and_then(|p| p.parse::<u32>().ok());
    match (host, pid) {
        (Some(h), Some(pid)) if h == this_host && !alive(pid) => Some(format!(
            "restore test {run} ended without cleaning up (its process {pid} on {h} is gone)"
        )),
        (Some(_), Some(_)) => None,
        // No owner to ask, no deadline to wait for: nothing would ever clean it up.
        _ if !tags.contains_key(EXPIRES_TAG) => Some(format!(
            "restore-test volume of run {run} names no host, process or deadline"
        )),
        _ => None,
    }
}

// ---- filesystem superblocks ---------------------------------------------------------------

/// A filesystem recognised at the start of a volume, its superblock intact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Filesystem {
    Ext4 {
        block_size: u32,
        /// Whether the superblock carries a checksum (metadata_csum), which matched.
        checksummed: bool,
    },
    Xfs {
        block_size: u32,
        /// Whether the superblock carries a checksum (a version 5 superblock), which matched.
        checksummed: bool,
    },
    /// No ext4 or XFS magic at the start of the volume: not a failure (another filesystem, a
    /// partition table, raw data).
    None,
}

impl Filesystem {
    pub fn describe(&self) -> String {
        let sum = |c: bool| if c { ", checksum ok" } else { "" };
        match self {
            Filesystem::Ext4 {
                block_size,
                checksummed,
            } => format!(
                "ext4 superblock intact ({block_size}-byte blocks{})",
                sum(*checksummed)
            ),
            Filesystem::Xfs {
                block_size,
                checksummed,
            } => format!(
                "xfs superblock intact ({block_size}-byte blocks{})",
                sum(*checksummed)
            ),
            Filesystem::None => "no filesystem recognised".into(),
        }
    }
}

/// A superblock whose magic says ext4 or XFS, but whose fields or checksum do not hold up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{filesystem} superblock damaged: {problem}")]
pub struct SuperblockDamage {
    pub filesystem: &'static str,
    pub problem: String,
}

/// Bytes of the volume's start that [`check_superblock`] needs.
pub const SUPERBLOCK_BYTES: usize = 4096;
const EXT4_MAGIC_AT: usize = 1080;
const EXT4_SB: usize = 1024;

/// Checks the superblock at the start of a volume (`start` is its first bytes, at least
/// [`SUPERBLOCK_BYTES`]; shorter means the rest is zeros): ext4's magic 0xEF53 at byte 1080, or
/// XFS's "XFSB" at byte 0, then the fields a mount reads first and, when the superblock has
/// one, its CRC32C.
pub fn check_superblock(start: &[u8]) -> Result<Filesystem, SuperblockDamage> {
    let mut buf = [0u8; SUPERBLOCK_BYTES];
    let n = start.len().min(SUPERBLOCK_BYTES);
    buf[..n].copy_from_slice(&start[..n]);
    if buf[0..4] == *b"XFSB" {
        return check_xfs(&buf);
    }
    if u16::from_le_bytes([buf[EXT4_MAGIC_AT], buf[EXT4_MAGIC_AT + 1]]) == 0xEF53 {
        return check_ext4(&buf);
    }
    Ok(Filesystem::None)
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn check_ext4(buf: &[u8]) -> Result<Filesystem, SuperblockDamage> {
    let damaged = |problem: String| SuperblockDamage {
        filesystem: "ext4",
        problem,
    };
    let sb = &buf[EXT4_SB..EXT4_SB + 1024];
    let log_block_size = le32(sb, 0x18);
    if log_block_size > 6 {
        return Err(damaged(format!(
            "block size 2^(10+{log_block_size}) is beyond ext4's 64 KiB"
        )));
    }
    let block_size = 1024u32 << log_block_size;
    for (name, at) in [
        ("inode count", 0x0),
        ("block count", 0x4),
        ("blocks per group", 0x20),
        ("inodes per group", 0x28),
    ] {
        if le32(sb, at) == 0 {
            return Err(damaged(format!("{name} is 0")));
        }
    }
    if le32(sb, 0x20) > 8 * block_size {
        return Err(damaged(format!(
            "{} blocks per group is more than a {block_size}-byte bitmap holds",
            le32(sb, 0x20)
        )));
    }
    let first_data_block = le32(sb, 0x14);
    if first_data_block != u32::from(block_size == 1024) {
        return Err(damaged(format!(
            "first data block {first_data_block} does not fit {block_size}-byte blocks"
        )));
    }
    const RO_COMPAT_METADATA_CSUM: u32 = 0x400;
    let checksummed = le32(sb, 0x64) & RO_COMPAT_METADATA_CSUM != 0;
    if checksummed {
        let stored = le32(sb, 0x3FC);
        // ext4 stores crc32c without the final inversion (e2fsprogs' ext2fs_crc32c_le(~0, …)).
        let computed = !crc32c(&sb[..0x3FC]);
        if stored != computed {
            return Err(damaged(format!(
                "checksum {stored:#010x} does not match its content ({computed:#010x})"
            )));
        }
    }
    Ok(Filesystem::Ext4 {
        block_size,
        checksummed,
    })
}

fn check_xfs(buf: &[u8]) -> Result<Filesystem, SuperblockDamage> {
    let damaged = |problem: String| SuperblockDamage {
        filesystem: "xfs",
        problem,
    };
    let block_size = be32(buf, 4);
    if !(512..=65536).contains(&block_size) || !block_size.is_power_of_two() {
        return Err(damaged(format!(
            "block size {block_size} is not a power of two in 512..65536"
        )));
    }
    if u32::from(buf[120]) != block_size.trailing_zeros() {
        return Err(damaged(format!(
            "block log {} does not match block size {block_size}",
            buf[120]
        )));
    }
    let sector = u32::from(be16(buf, 102));
    if !(512..=32768).contains(&sector) || !sector.is_power_of_two() {
        return Err(damaged(format!(
            "sector size {sector} is not a power of two in 512..32768"
        )));
    }
    if be64(buf, 8) == 0 {
        return Err(damaged("data block count is 0".into()));
    }
    if be32(buf, 88) == 0 || be32(buf, 84) == 0 {
        return Err(damaged("allocation group count or size is 0".into()));
    }
    let version = be16(buf, 100) & 0xF;
    let checksummed = version == 5;
    if checksummed {
        const CRC_AT: usize = 224;
        let len = (sector as usize).min(buf.len());
        let mut sector_bytes = buf[..len].to_vec();
        sector_bytes[CRC_AT..CRC_AT + 4].fill(0);
        let stored = le32(buf, CRC_AT);
        let computed = crc32c(&sector_bytes);
        if stored != computed {
            return Err(damaged(format!(
                "checksum {stored:#010x} does not match its content ({computed:#010x})"
            )));
        }
    }
    Ok(Filesystem::Xfs {
        block_size,
        checksummed,
    })
}

/// CRC-32C (Castagnoli), as iSCSI, ext4 and XFS use it: initial value and final value
/// inverted, reflected.
pub fn crc32c(data: &[u8]) -> u32 {
    const POLY: u32 = 0x82F6_3B78;
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (POLY & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXT4: &[u8] = include_bytes!("../tests/fixtures/restore_test/ext4-mkfs-8MiB-head.bin");
    const XFS: &[u8] = include_bytes!("../tests/fixtures/restore_test/xfs-mkfs-320MiB-sector0.bin");

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn real_mkfs_superblocks_are_intact() {
        assert_eq!(
            check_superblock(EXT4),
            Ok(Filesystem::Ext4 {
                block_size: 1024,
                checksummed: true
            })
        );
        assert_eq!(
            check_superblock(XFS),
            Ok(Filesystem::Xfs {
                block_size: 4096,
                checksummed: true
            })
        );
        assert_eq!(check_superblock(&[0u8; 4096]), Ok(Filesystem::None));
        assert_eq!(check_superblock(b"short"), Ok(Filesystem::None));
    }

    #[test]
    fn damaged_superblocks_are_named() {
        // One flipped bit inside the checksummed ext4 superblock (the free block count).
        let mut e = EXT4.to_vec();
        e[EXT4_SB + 0x0C] ^= 1;
        let err = check_superblock(&e).unwrap_err();
        assert_eq!(err.filesystem, "ext4");
        assert!(err.problem.contains("checksum"), "{err}");
        // An impossible block size is found before the checksum.
        let mut e = EXT4.to_vec();
        e[EXT4_SB + 0x18] = 40;
        assert!(check_superblock(&e)
            .unwrap_err()
            .problem
            .contains("block size"));

        let mut x = XFS.to_vec();
        x[130] ^= 0x10; // sb_icount
        let err = check_superblock(&x).unwrap_err();
        assert_eq!(err.filesystem, "xfs");
        assert!(
            err.to_string().contains("xfs superblock damaged: checksum"),
            "{err}"
        );
        let mut x = XFS.to_vec();
        x[4..8].copy_from_slice(&3000u32.to_be_bytes());
        assert!(check_superblock(&x)
            .unwrap_err()
            .problem
            .contains("block size 3000"));
    }

    #[test]
    fn ext4_without_metadata_csum_is_checked_by_its_fields() {
        let mut e = EXT4.to_vec();
        let ro = le32(&e[EXT4_SB..], 0x64) & !0x400;
        e[EXT4_SB + 0x64..EXT4_SB + 0x68].copy_from_slice(&ro.to_le_bytes());
        assert_eq!(
            check_superblock(&e),
            Ok(Filesystem::Ext4 {
                block_size: 1024,
                checksummed: false
            })
        );
        e[EXT4_SB + 0x28..EXT4_SB + 0x2C].fill(0);
        assert_eq!(
            check_superblock(&e).unwrap_err().problem,
            "inodes per group is 0"
        );
    }

    #[test]
    fn result_tags_round_trip_and_fit_ec2() {
        let at = t("2026-12-03T14:30:00Z");
        let pass = RecordedResult::passed(at);
        assert_eq!(pass.tag_value(), "passed 2026-12-03T14:30:00Z");
        assert_eq!(RecordedResult::parse(&pass.tag_value()), Some(pass.clone()));
        let fail = RecordedResult::failed(at, "block 3 differs: from its archive");
        assert_eq!(
            fail.tag_value(),
            "failed 2026-12-03T14:30:00Z: block 3 differs: from its archive"
        );
        assert_eq!(RecordedResult::parse(&fail.tag_value()), Some(fail));
        let long = RecordedResult::failed(at, "x".repeat(400));
        assert_eq!(long.tag_value().chars().count(), 256);
        assert!(RecordedResult::parse("maybe").is_none());
        assert!(RecordedResult::parse("passed yesterday").is_none());
        let tags = result_tags(&pass);
        assert_eq!(tags[PASSED_TAG], "2026-12-03T14:30:00Z");
        assert!(!result_tags(&RecordedResult::failed(at, "x")).contains_key(PASSED_TAG));
    }

    fn tags(pairs: &[(&str, &str)]) -> Tags {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_newest_result_and_the_newest_pass_come_from_any_backup() {
        let old_pass = tags(&[
            (RESULT_TAG, "passed 2026-11-01T00:00:00Z"),
            (PASSED_TAG, "2026-11-01T00:00:00Z"),
        ]);
        // A newer backup failed; an older pass stays the last success.
        let new_fail = tags(&[(RESULT_TAG, "failed 2026-11-20T00:00:00Z: damaged")]);
        // A backup that passed, then failed: its pass tag survives the newer result.
        let both = tags(&[
            (RESULT_TAG, "failed 2026-11-10T00:00:00Z: x"),
            (PASSED_TAG, "2026-11-05T00:00:00Z"),
        ]);
        let r = TargetRestoreTests::from_tags([&old_pass, &new_fail, &both, &Tags::new()]);
        assert_eq!(r.last_success, Some(t("2026-11-05T00:00:00Z")));
        let last = r.last_result.unwrap();
        assert!(!last.passed);
        assert_eq!(last.at, t("2026-11-20T00:00:00Z"));
        assert_eq!(
            TargetRestoreTests::from_tags([]),
            TargetRestoreTests::default()
        );
    }

    #[test]
    fn due_when_no_pass_within_every() {
        let every = TimeDelta::days(7);
        let now = t("2026-12-03T12:00:00Z");
        let never = TargetRestoreTests::default();
        let d = due(every, &never, now);
        assert!(
            d.due && d.next_due == now && d.reason == "never tested",
            "{d:?}"
        );

        let recent = TargetRestoreTests {
            last_result: Some(RecordedResult::passed(t("2026-12-01T12:00:00Z"))),
            last_success: Some(t("2026-12-01T12:00:00Z")),
        };
        let d = due(every, &recent, now);
        assert!(!d.due);
        assert_eq!(d.next_due, t("2026-12-08T12:00:00Z"));
        assert!(d.reason.starts_with("passed 2d ago"), "{}", d.reason);

        // Exactly `every` after the pass: due.
        assert!(due(every, &recent, t("2026-12-08T12:00:00Z")).due);

        // A failure after a recent pass does not wait for `every`: tried at the next run.
        let failed = TargetRestoreTests {
            last_result: Some(RecordedResult::failed(t("2026-12-02T00:00:00Z"), "x")),
            last_success: Some(t("2026-12-01T00:00:00Z")),
        };
        let d = due(every, &failed, now);
        assert!(d.due, "{d:?}");
        assert!(
            d.reason.contains("failed at 2026-12-02T00:00:00Z"),
            "{}",
            d.reason
        );
    }

    /// Tags keep whole seconds: a failure recorded in the same second as the last pass is the
    /// newer result (it overwrote the pass's result tag), so the next run tests again, as
    /// `health` already says failed.
    #[test]
    fn a_failure_in_the_same_second_as_the_last_pass_is_due_again() {
        let at = t("2026-12-02T00:00:00Z");
        let pass = tags(&[
            (RESULT_TAG, "passed 2026-12-02T00:00:00Z"),
            (PASSED_TAG, "2026-12-02T00:00:00Z"),
        ]);
        let fail = tags(&[(
            RESULT_TAG,
            "failed 2026-12-02T00:00:00Z: ext4 superblock damaged",
        )]);
        for order in [[&pass, &fail], [&fail, &pass]] {
            let tests = TargetRestoreTests::from_tags(order);
            assert_eq!(tests.last_success, Some(at));
            assert!(!tests.last_result.as_ref().unwrap().passed, "{tests:?}");
            let d = due(TimeDelta::days(7), &tests, t("2026-12-02T00:00:01Z"));
            assert!(d.due, "{d:?}");
            assert_eq!(
                health(
                    Some(TimeDelta::days(7)),
                    &tests,
                    None,
                    t("2026-12-02T00:00:01Z")
                ),
                RestoreTestHealth::Failed
            );
        }
    }

    #[test]
    fn health_fails_on_a_failure_or_an_overdue_test() {
        let every = Some(TimeDelta::days(7));
        let now = t("2026-12-30T00:00:00Z");
        let passed_at = |s: &str| TargetRestoreTests {
            last_result: Some(RecordedResult::passed(t(s))),
            last_success: Some(t(s)),
        };
        assert_eq!(
            health(every, &passed_at("2026-12-20T00:00:00Z"), None, now),
            RestoreTestHealth::Passed
        );
        assert_eq!(
            health(every, &passed_at("2026-12-10T00:00:00Z"), None, now),
            RestoreTestHealth::Overdue
        );
        // Without a policy asking, an old pass is still a pass.
        assert_eq!(
            health(None, &passed_at("2026-01-01T00:00:00Z"), None, now),
            RestoreTestHealth::Passed
        );
        let failed = TargetRestoreTests {
            last_result: Some(RecordedResult::failed(t("2026-12-29T00:00:00Z"), "x")),
            last_success: Some(t("2026-12-28T00:00:00Z")),
        };
        assert_eq!(health(None, &failed, None, now), RestoreTestHealth::Failed);
        assert!(RestoreTestHealth::Failed.is_problem());
        // Never tested: overdue only once the target's backups had twice `every` to be tested.
        let never = TargetRestoreTests::default();
        assert_eq!(
            health(every, &never, Some(t("2026-12-25T00:00:00Z")), now),
            RestoreTestHealth::Untested
        );
        assert_eq!(
            health(every, &never, Some(t("2026-12-01T00:00:00Z")), now),
            RestoreTestHealth::Overdue
        );
        assert!(!RestoreTestHealth::Untested.is_problem());
    }

    #[test]
    fn left_over_volumes() {
        let now = t("2026-12-03T12:00:00Z");
        let mine = volume_tags("rt-a", "snap-1", "host-a", 42, t("2026-12-03T14:00:00Z"));
        assert_eq!(mine["Name"], "autosnap restore test of snap-1");
        // The current run's own volume, and a live process's, are never left over.
        assert_eq!(left_over(&mine, "rt-a", "host-a", now, |_| false), None);
        assert_eq!(left_over(&mine, "rt-b", "host-a", now, |_| true), None);
        // Its process on this host is gone: left over at once.
        let why = left_over(&mine, "rt-b", "host-a", now, |_| false).unwrap();
        assert!(why.contains("process 42 on host-a is gone"), "{why}");
        // Another host's run: only once its deadline has passed.
        assert_eq!(left_over(&mine, "rt-b", "host-b", now, |_| false), None);
        let why = left_over(&mine, "rt-b", "host-b", t("2026-12-03T15:00:00Z"), |_| true);
        assert!(why
            .unwrap()
            .contains("should have ended by 2026-12-03T14:00:00Z"));
        // Not a restore-test volume at all.
        assert_eq!(
            left_over(&Tags::new(), "rt-b", "host-a", now, |_| false),
            None
        );
        // Only the run tag: nobody else would ever clean it up.
        let bare = tags(&[(RUN_TAG, "rt-x")]);
        assert!(left_over(&bare, "rt-b", "host-a", now, |_| true).is_some());
    }

    #[test]
    fn run_ids_name_the_time_and_process() {
        assert_eq!(
            run_id(t("2026-12-03T14:30:05Z"), 4242),
            "rt-20261203T143005Z-4242"
        );
    }

    #[test]
    fn policies_check_the_option_at_config_time() {
        let policy = |extra: &str| -> crate::policy::PolicyConfig {
            toml::from_str(&format!(
                "name = \"p\"\nresource = \"volume\"\nselect = [{{ tags = {{ B = \"*\" }} }}]\n\
                 schedule = \"1d\"\nretain = {{ last = 3 }}\n{extra}"
            ))
            .unwrap()
        };
        let ok = policy("restore_test = { every = \"7d\", repo = \"s3://b/p\" }");
        assert!(ok.validate(Some("us-east-1")).is_ok());
        assert_eq!(ok.restore_test.unwrap().repo.as_deref(), Some("s3://b/p"));
        let err = policy("restore_test = { every = \"10min\" }")
            .validate(Some("us-east-1"))
            .unwrap_err();
        assert_eq!(err.field, "restore_test");
        assert!(err.to_string().contains("at least 1h"), "{err}");
        // Unknown keys are refused when the file is read.
        let unknown: Result<crate::policy::PolicyConfig, _> = toml::from_str(
            "name = \"p\"\nresource = \"volume\"\nselect = []\nschedule = \"1d\"\n\
             retain = { last = 3 }\nrestore_test = { evry = \"7d\" }",
        );
        assert!(unknown.is_err());
    }

    fn snapshot(id: &str, start: &str, extra: &[(&str, &str)]) -> crate::model::Snapshot {
        let mut tags = tags(&[
            ("autosnap:managed", "true"),
            ("autosnap:policy", "p"),
            ("autosnap:source-volume", "vol-0000000a"),
        ]);
        tags.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        crate::model::Snapshot {
            snapshot_id: id.into(),
            volume_id: Some("vol-0000000a".into()),
            state: "completed".into(),
            progress: None,
            start_time: Some(t(start)),
            size_gib: Some(1),
            encrypted: false,
            kms_key_id: None,
            description: None,
            owner_id: None,
            managed: true,
            tags,
            storage_tier: Default::default(),
            restore_expiry: None,
        }
    }

    #[test]
    fn annotate_reads_the_targets_backups_tags_into_the_plan() {
        let policy = |extra: &str| -> crate::policy::PolicyConfig {
            toml::from_str(&format!(
                "name = \"p\"\nresource = \"volume\"\nselect = [{{ tags = {{ B = \"*\" }} }}]\n\
                 schedule = \"1d\"\nretain = {{ last = 5 }}\n{extra}"
            ))
            .unwrap()
        };
        let target = crate::plan::Target {
            id: "vol-0000000a".into(),
            kind: crate::policy::ResourceKind::Volume,
            region: "us-east-1".into(),
            tags: tags(&[("B", "1")]),
            name: None,
            volume_ids: Vec::new(),
        };
        let now = t("2026-12-03T12:00:00Z");
        let run = |policies: Vec<crate::policy::PolicyConfig>| {
            // The builder keeps the result tags even though no retention rule names them.
            let mut b = crate::plan::BackupBuilder::new(&policies);
            let backups = vec![
                b.snapshot(
                    &snapshot(
                        "snap-0000000a",
                        "2026-12-01T03:00:00Z",
                        &[(RESULT_TAG, "passed 2026-12-01T04:00:00Z")],
                    ),
                    "us-east-1",
                    vec![],
                ),
                b.snapshot(
                    &snapshot("snap-0000000b", "2026-12-03T03:00:00Z", &[]),
                    "us-east-1",
                    vec![],
                ),
            ];
            let inventory = crate::plan::Inventory {
                targets: vec![target.clone()],
                backups,
            };
            let mut plan = crate::plan::plan(
                &policies,
                &inventory,
                "us-east-1",
                now,
                &crate::plan::PlanOptions::default(),
            );
            annotate(&mut plan, &policies, &inventory.backups);
            plan.policies[0].targets[0].restore_test.clone()
        };
        let rt = run(vec![policy("restore_test = { every = \"7d\" }")]).unwrap();
        assert_eq!(rt.every.as_deref(), Some("7d"));
        assert!(!rt.due);
        assert_eq!(rt.next_due, Some(t("2026-12-08T04:00:00Z")));
        assert_eq!(rt.last_success, Some(t("2026-12-01T04:00:00Z")));
        assert_eq!(rt.health, RestoreTestHealth::Passed);
        let rt = run(vec![policy("restore_test = { every = \"1d\" }")]).unwrap();
        assert!(rt.due, "{rt:?}");
        // Without the option: the recorded pass is still shown, nothing is due.
        let rt = run(vec![policy("")]).unwrap();
        assert_eq!((rt.every, rt.due), (None, false));
        assert_eq!(rt.health, RestoreTestHealth::Passed);
    }

    #[test]
    fn policy_option_validation() {
        let p = |every: &str| RestoreTestPolicy {
            every: every.into(),
            repo: None,
        };
        assert_eq!(p("7d").every(), Ok(TimeDelta::days(7)));
        assert!(p("30min")
            .validate()
            .unwrap_err()
            .to_string()
            .contains("at least 1h"));
        assert!(p("1mo").validate().is_err());
        assert!(p("soon").validate().is_err());
        let empty = RestoreTestPolicy {
            repo: Some(" ".into()),
            ..p("7d")
        };
        assert_eq!(empty.validate(), Err(RestoreTestConfigError::EmptyRepo));
    }
}

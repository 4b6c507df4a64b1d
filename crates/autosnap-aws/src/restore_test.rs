//! Restore tests through AWS: find a target's newest backup, create a volume from each of its
//! snapshots and wait for it to be `available`, delete it, read every block of the snapshot
//! through the EBS direct APIs (each checked against the SHA-256 EBS sends), compare the blocks
//! with the snapshot's archive when a repository holds one, check the filesystem superblock,
//! and record the result on the backup. What is decided (tags, due, left-over volumes,
//! superblocks) is in [`autosnap_core::restore_test`].
//!
//! Every volume is tagged on create with the run ([`autosnap_core::restore_test::volume_tags`]),
//! and deleted as soon as it is `available` (the block reads need the snapshot, not the volume),
//! or when its wait fails. A run that dies between the two leaves a tagged volume, which the
//! next run deletes first ([`delete_left_over_volumes`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use autosnap_core::model::Snapshot;
use autosnap_core::restore_test::{self as core_rt, Filesystem, RecordedResult};
use autosnap_core::tags::{self, Tags};
use autosnap_repo::{BlockRef, Manifest, Repository};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde::Serialize;

use crate::ebs::Ebs;
use crate::ec2::{NewVolume, SnapshotQuery, VolumeQuery};
use crate::{AwsError, Ec2};

/// Mismatching block indexes named in a result (the count is always given).
const MISMATCHES_NAMED: usize = 5;

/// What a test runs on: a snapshot, or an instance set of snapshots.
#[derive(Debug, Clone, Serialize)]
pub struct Backup {
    /// The set id for an instance set, else the snapshot id.
    pub backup_id: String,
    pub snapshots: Vec<Snapshot>,
}

/// A target given on the command line, or a policy target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestTarget {
    Snapshot(String),
    Volume(String),
    Instance(String),
}

impl TestTarget {
    /// `snap-…`, `vol-…` or `i-…`; `None` for anything else.
    pub fn parse(s: &str) -> Option<TestTarget> {
        if s.parse::<autosnap_core::ids::SnapshotId>().is_ok() {
            Some(TestTarget::Snapshot(s.into()))
        } else if s.parse::<autosnap_core::ids::VolumeId>().is_ok() {
            Some(TestTarget::Volume(s.into()))
        } else if s.parse::<autosnap_core::ids::InstanceId>().is_ok() {
            Some(TestTarget::Instance(s.into()))
        } else {
            None
        }
    }
}

/// The newest backup of `target` (only `policy`'s when given): the snapshot itself; the newest
/// completed snapshot of a volume; the newest instance set of an instance (every snapshot
/// sharing the newest one's `autosnap:set-id`).
pub async fn newest_backup(
    ec2: &Ec2,
    target: &TestTarget,
    policy: Option<&str>,
) -> Result<Option<Backup>, AwsError> {
    let policy_tag = || {
        policy
            .map(|p| (tags::POLICY.to_string(), Some(p.to_string())))
            .into_iter()
    };
    let newest = |snaps: Vec<Snapshot>| {
        snaps
            .into_iter()
            .filter(|s| s.is_completed() && !s.tags.contains_key(tags::RESTORED_FROM))
            .max_by_key(|s| s.start_time)
    };
    match target {
        TestTarget::Snapshot(id) => {
            let q = SnapshotQuery {
                snapshot_ids: vec![id.clone()],
                ..Default::default()
            };
            Ok(ec2.list_snapshots(&q).await?.into_iter().next().map(|s| {
                let backup_id = s.snapshot_id.clone();
                Backup {
                    backup_id,
                    snapshots: vec![s],
                }
            }))
        }
        TestTarget::Volume(id) => {
            let q = SnapshotQuery {
                volume_ids: vec![id.clone()],
                tags: policy_tag().collect(),
                ..Default::default()
            };
            Ok(newest(ec2.list_snapshots(&q).await?).map(|s| Backup {
                backup_id: s.snapshot_id.clone(),
                snapshots: vec![s],
            }))
        }
        TestTarget::Instance(id) => {
            let q = SnapshotQuery {
                tags: std::iter::once((tags::SOURCE_INSTANCE.to_string(), Some(id.clone())))
                    .chain(policy_tag())
                    .collect(),
                ..Default::default()
            };
            let all = ec2.list_snapshots(&q).await?;
            let Some(first) = newest(all.clone()) else {
                return Ok(None);
            };
            let Some(set) = first.tags.get(tags::SET_ID).cloned() else {
                return Ok(Some(Backup {
                    backup_id: first.snapshot_id.clone(),
                    snapshots: vec![first],
                }));
            };
            let mut members: Vec<Snapshot> = all
                .into_iter()
                .filter(|s| s.tags.get(tags::SET_ID) == Some(&set))
                .collect();
            members.sort_by(|a, b| a.snapshot_id.cmp(&b.snapshot_id));
            Ok(Some(Backup {
                backup_id: set,
                snapshots: members,
            }))
        }
    }
}

/// How a test runs.
#[derive(Debug, Clone)]
pub struct RestoreTestOptions {
    pub run_id: String,
    /// The AZ of the volumes; default: the source volume's, else the region's first.
    pub availability_zone: Option<String>,
    /// How long to wait for each volume to be `available`.
    pub wait_timeout: Duration,
    /// Blocks read at once.
    pub concurrency: usize,
    pub host: String,
    pub pid: u32,
}

/// The repository a snapshot's archive is looked for in.
#[derive(Clone)]
pub struct ArchiveSource {
    pub repo: Repository,
    /// How the user named it (for messages).
    pub name: String,
}

/// The volume step of one snapshot.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VolumeStep {
    pub volume_id: Option<String>,
    pub availability_zone: String,
    /// The last state seen.
    pub state: String,
    pub seconds: f64,
    /// Whether the volume was deleted again.
    pub deleted: bool,
}

/// How the blocks compared with the snapshot's archive.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ArchiveComparison {
    pub repo: String,
    pub archive_id: String,
    pub blocks_compared: u64,
    pub mismatched_blocks: u64,
    /// The first few mismatching block indexes.
    pub mismatches: Vec<u64>,
}

/// One snapshot's test.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SnapshotCheck {
    pub snapshot_id: String,
    pub volume: VolumeStep,
    pub blocks_read: u64,
    pub bytes_read: u64,
    /// Null when no repository was given, or it holds no archive of the snapshot.
    pub archive: Option<ArchiveComparison>,
    /// Null when the blocks could not be read.
    pub filesystem: Option<Filesystem>,
    /// Why it failed; empty when it passed.
    pub problems: Vec<String>,
    /// What could not be cleaned up (the next run deletes it).
    pub left_behind: Vec<String>,
}

/// A test of one backup.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreTestReport {
    pub run_id: String,
    pub backup_id: String,
    pub passed: bool,
    /// The first problem, when it failed.
    pub reason: Option<String>,
    pub tested_at: DateTime<Utc>,
    pub snapshots: Vec<SnapshotCheck>,
    /// Whether the result tags were written on the backup's snapshots.
    pub recorded: bool,
}

impl RestoreTestReport {
    pub fn result(&self) -> RecordedResult {
        match &self.reason {
            None => RecordedResult::passed(self.tested_at),
            Some(r) => RecordedResult::failed(self.tested_at, r.clone()),
        }
    }
}

/// A volume deleted because the run that made it died.
#[derive(Debug, Clone, Serialize)]
pub struct LeftOverVolume {
    pub volume_id: String,
    pub region: String,
    pub why: String,
    /// The error when DeleteVolume failed (it is tried again next time).
    pub error: Option<String>,
}

/// The restore-test volumes in `ec2`'s region that runs which died left behind (see
/// [`core_rt::left_over`]), with why; volumes of live runs are not among them. One
/// DescribeVolumes.
pub async fn left_over_volumes(
    ec2: &Ec2,
    current_run: &str,
    host: &str,
    now: DateTime<Utc>,
) -> Result<Vec<(String, String)>, AwsError> {
    let volumes = ec2
        .list_volumes(&VolumeQuery {
            tags: vec![(core_rt::RUN_TAG.to_string(), None)],
            ..Default::default()
        })
        .await?;
    Ok(volumes
        .into_iter()
        .filter_map(|v| {
            core_rt::left_over(&v.tags, current_run, host, now, process_alive)
                .map(|why| (v.volume_id, why))
        })
        .collect())
}

/// Deletes the volumes [`left_over_volumes`] finds.
pub async fn delete_left_over_volumes(
    ec2: &Ec2,
    current_run: &str,
    host: &str,
    now: DateTime<Utc>,
) -> Result<Vec<LeftOverVolume>, AwsError> {
    let mut out = Vec::new();
    for (volume_id, why) in left_over_volumes(ec2, current_run, host, now).await? {
        let error = delete_volume(ec2, &volume_id).await.err();
        match &error {
            None => tracing::info!("deleted restore-test volume {volume_id} ({why})"),
            Some(e) => tracing::warn!(
                "cannot delete restore-test volume {volume_id} ({why}): {e}; the next run tries again"
            ),
        }
        out.push(LeftOverVolume {
            volume_id,
            region: ec2.region().to_string(),
            why,
            error: error.map(|e| e.to_string()),
        });
    }
    Ok(out)
}

/// Deletes the volumes run `run_id` made (after it was interrupted): one DescribeVolumes.
pub async fn delete_run_volumes(ec2: &Ec2, run_id: &str) -> Result<Vec<String>, AwsError> {
    let volumes = ec2
        .list_volumes(&VolumeQuery {
            tags: vec![(core_rt::RUN_TAG.to_string(), Some(run_id.to_string()))],
            ..Default::default()
        })
        .await?;
    let mut deleted = Vec::new();
    for v in volumes {
        delete_volume(ec2, &v.volume_id).await?;
        deleted.push(v.volume_id);
    }
    Ok(deleted)
}

/// Whether a process of this host is running (Linux: its /proc entry). Without /proc, every
/// process counts as alive, so only the deadline tag ever makes a volume left over.
fn process_alive(pid: u32) -> bool {
    let proc = std::path::Path::new("/proc");
    !proc.join("self").exists() || proc.join(pid.to_string()).exists()
}

/// This host's name, as the volume tags record it.
pub fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| {
            std::fs::read_to_string(p)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        })
        // Never equal to a real host's name: such volumes are left over only by deadline.
        .unwrap_or_else(|| format!("unknown-host-{}", std::process::id()))
}

async fn delete_volume(ec2: &Ec2, volume_id: &str) -> Result<(), AwsError> {
    match ec2.raw().delete_volume().volume_id(volume_id).send().await {
        Ok(_) => Ok(()),
        Err(e) => {
            let e = AwsError::from_sdk(e, "DeleteVolume", Some(("volume", volume_id)), ec2.site());
            // Gone already: what we wanted.
            if matches!(e, AwsError::NotFound { .. }) {
                Ok(())
            } else {
                Err(e)
            }
        }
    }
}

/// The AZ a snapshot's test volume goes to: the source volume's when it still exists, else the
/// region's first available zone.
async fn zone_for(ec2: &Ec2, snapshot: &Snapshot) -> Result<String, AwsError> {
    if let Some(v) = snapshot
        .volume_id
        .as_deref()
        .filter(|v| *v != "vol-ffffffff")
    {
        if let Ok(vol) = ec2.get_volume(v).await {
            if !vol.availability_zone.is_empty() {
                return Ok(vol.availability_zone);
            }
        }
    }
    let out = ec2
        .raw()
        .describe_availability_zones()
        .send()
        .await
        .map_err(|e| AwsError::from_sdk(e, "DescribeAvailabilityZones", None, ec2.site()))?;
    let mut zones: Vec<String> = out
        .availability_zones()
        .iter()
        .filter(|z| z.state().is_none_or(|s| s.as_str() == "available"))
        .filter_map(|z| z.zone_name().map(str::to_string))
        .collect();
    zones.sort();
    zones.into_iter().next().ok_or_else(|| AwsError::Failed {
        what: format!("choosing an availability zone in {}", ec2.region()),
        detail: "DescribeAvailabilityZones lists none: give --availability-zone".into(),
    })
}

/// Creates the test volume, waits for it to be `available`, and deletes it (also when the wait
/// fails). Problems go to `check.problems`, what could not be deleted to `check.left_behind`.
async fn volume_step(
    ec2: &Ec2,
    snapshot: &Snapshot,
    opts: &RestoreTestOptions,
    check: &mut SnapshotCheck,
) {
    let begun = Instant::now();
    let az = match &opts.availability_zone {
        Some(az) => az.clone(),
        None => match zone_for(ec2, snapshot).await {
            Ok(az) => az,
            Err(e) => {
                check.problems.push(format!("no volume created: {e}"));
                return;
            }
        },
    };
    check.volume.availability_zone = az.clone();
    let expires = Utc::now()
        + chrono::TimeDelta::from_std(opts.wait_timeout).unwrap_or(chrono::TimeDelta::hours(2))
        + chrono::TimeDelta::minutes(10);
    let tags = core_rt::volume_tags(
        &opts.run_id,
        &snapshot.snapshot_id,
        &opts.host,
        opts.pid,
        expires,
    );
    let created = ec2
        .create_volume(&NewVolume {
            snapshot_id: snapshot.snapshot_id.clone(),
            availability_zone: az.clone(),
            tags,
            ..Default::default()
        })
        .await;
    let volume = match created {
        Ok(v) => v,
        Err(e) => {
            check
                .problems
                .push(format!("a volume could not be created from it: {e}"));
            return;
        }
    };
    tracing::info!(
        "restore test: created volume {} from {} in {az}, waiting for it to be available",
        volume.volume_id,
        snapshot.snapshot_id
    );
    check.volume.volume_id = Some(volume.volume_id.clone());
    check.volume.state = volume.state.clone();
    match ec2
        .wait_volume_available(
            &volume.volume_id,
            opts.wait_timeout,
            &crate::ec2::Unobserved,
        )
        .await
    {
        Ok(v) => check.volume.state = v.state,
        Err(e) => check.problems.push(format!(
            "volume {} did not become available: {e}",
            volume.volume_id
        )),
    }
    check.volume.seconds = begun.elapsed().as_secs_f64();
    match delete_volume(ec2, &volume.volume_id).await {
        Ok(()) => check.volume.deleted = true,
        Err(e) => check.left_behind.push(format!(
            "volume {} (DeleteVolume failed: {e}; the next test-restore or policy run deletes it)",
            volume.volume_id
        )),
    }
}

/// The newest archive in `repo` holding a volume of `snapshot_id`, with that volume's index.
fn archive_of(
    repo: &Repository,
    snapshot_id: &str,
) -> Result<Option<(Manifest, usize)>, autosnap_repo::Error> {
    let mut found: Option<(Manifest, usize)> = None;
    for m in repo.list_archives()? {
        let Some(i) = m
            .volumes
            .iter()
            .position(|v| v.source.snapshot_id.as_deref() == Some(snapshot_id))
        else {
            continue;
        };
        if found
            .as_ref()
            .is_none_or(|(f, _)| Manifest::chronological(f, &m).is_lt())
        {
            found = Some((m, i));
        }
    }
    Ok(found)
}

/// One block as read: its index, whether it is all zeros, its id in the repository.
struct ReadBlock {
    index: u64,
    zero: bool,
    chunk: Option<autosnap_repo::ChunkId>,
}

/// Reads every block of the snapshot (checked against EBS's SHA-256), keeps the start of the
/// volume for the superblock, and compares with the archive when there is one.
async fn blocks_step(
    ebs: &Ebs,
    snapshot: &Snapshot,
    archive: Option<&ArchiveSource>,
    opts: &RestoreTestOptions,
    check: &mut SnapshotCheck,
) {
    let id = snapshot.snapshot_id.as_str();
    // The archive's block map, read before any block so a damaged one fails fast.
    let expected: Option<(String, BTreeMap<u64, BlockRef>, Repository)> = match archive {
        None => None,
        Some(a) => {
            let repo = a.repo.clone();
            let sid = id.to_string();
            let loaded = tokio::task::spawn_blocking(move || {
                let Some((manifest, volume)) = archive_of(&repo, &sid)? else {
                    return Ok(None);
                };
                let archive_id = manifest.id.to_string();
                let reader = autosnap_repo::ArchiveReader::new(&repo, manifest);
                let map = reader
                    .blocks(volume)?
                    .collect::<Result<BTreeMap<u64, BlockRef>, _>>()?;
                Ok::<_, autosnap_repo::Error>(Some((archive_id, map)))
            })
            .await;
            match loaded {
                Ok(Ok(Some((archive_id, map)))) => {
                    if a.repo.chunk_size() as usize != crate::ebs::BLOCK_SIZE {
                        check.problems.push(format!(
                            "archive {archive_id} in {} uses {}-byte blocks, not EBS's {}: its \
                             blocks cannot be compared",
                            a.name,
                            a.repo.chunk_size(),
                            crate::ebs::BLOCK_SIZE
                        ));
                        None
                    } else {
                        Some((archive_id, map, a.repo.clone()))
                    }
                }
                Ok(Ok(None)) => {
                    tracing::info!("restore test: {} holds no archive of {id}", a.name);
                    None
                }
                Ok(Err(e)) => {
                    check
                        .problems
                        .push(format!("its archive in {} cannot be read: {e}", a.name));
                    None
                }
                Err(e) => {
                    check
                        .problems
                        .push(format!("reading the archive failed: {e}"));
                    None
                }
            }
        }
    };

    let first = match ebs.list_blocks_page(id, None).await {
        Ok(p) => p,
        Err(e) => {
            check
                .problems
                .push(format!("its blocks cannot be listed: {e}"));
            return;
        }
    };
    let repo = expected.as_ref().map(|(_, _, r)| r.clone());
    let start = std::sync::Mutex::new(Vec::<u8>::new());
    let ebs = ebs.with_concurrency(opts.concurrency.max(1));
    let read: Result<Vec<ReadBlock>, autosnap_ports::RemoteError> =
        autosnap_ports::block_stream(&ebs, id, first)
            .map_ok(|entry| {
                let (ebs, repo, start) = (&ebs, repo.clone(), &start);
                async move {
                    let data = ebs
                        .get_block_bytes(id, &entry)
                        .await
                        .map_err(crate::engine_ports::remote_ebs)?;
                    if entry.index == 0 {
                        let n = data.len().min(core_rt::SUPERBLOCK_BYTES);
                        *start.lock().expect("not poisoned") = data[..n].to_vec();
                    }
                    let zero = autosnap_repo::writer::is_zero_block(&data);
                    let chunk = match (&repo, zero) {
                        (Some(r), false) => Some(r.chunk_id(&data)),
                        _ => None,
                    };
                    Ok(ReadBlock {
                        index: entry.index,
                        zero,
                        chunk,
                    })
                }
            })
            .try_buffer_unordered(opts.concurrency.max(1))
            .try_collect()
            .await;
    let blocks = match read {
        Ok(b) => b,
        Err(e) => {
            check
                .problems
                .push(format!("reading its blocks failed: {e}"));
            return;
        }
    };
    check.blocks_read = blocks.len() as u64;
    check.bytes_read = check.blocks_read * crate::ebs::BLOCK_SIZE as u64;

    match core_rt::check_superblock(&start.into_inner().expect("not poisoned")) {
        Ok(fs) => check.filesystem = Some(fs),
        Err(damage) => {
            check.problems.push(damage.to_string());
        }
    }

    if let Some((archive_id, map, _)) = expected {
        let name = archive.map(|a| a.name.clone()).unwrap_or_default();
        let mut comparison = ArchiveComparison {
            repo: name,
            archive_id: archive_id.clone(),
            ..Default::default()
        };
        let mut mismatches = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for b in &blocks {
            seen.insert(b.index);
            comparison.blocks_compared += 1;
            let same = match (map.get(&b.index), b.zero) {
                // Zeros equal zeros, and a block the archive never saw reads as zeros.
                (None | Some(BlockRef::Zero), true) => true,
                (Some(BlockRef::Chunk(c)), false) => Some(*c) == b.chunk,
                _ => false,
            };
            if !same {
                mismatches.push(b.index);
            }
        }
        // Data the archive holds that the snapshot lost.
        for (index, r) in &map {
            if matches!(r, BlockRef::Chunk(_)) && !seen.contains(index) {
                comparison.blocks_compared += 1;
                mismatches.push(*index);
            }
        }
        mismatches.sort_unstable();
        comparison.mismatched_blocks = mismatches.len() as u64;
        comparison.mismatches = mismatches.iter().take(MISMATCHES_NAMED).copied().collect();
        if !mismatches.is_empty() {
            let named: Vec<String> = comparison.mismatches.iter().map(u64::to_string).collect();
            check.problems.push(format!(
                "{} of {} block(s) differ from archive {archive_id} (block {}{})",
                mismatches.len(),
                comparison.blocks_compared,
                named.join(", "),
                if mismatches.len() > MISMATCHES_NAMED {
                    ", …"
                } else {
                    ""
                }
            ));
        }
        check.archive = Some(comparison);
    }
}

/// Tests one backup: for each snapshot, the volume step, then the block step. Never fails as a
/// whole: every problem is in the report. The result is recorded on the backup's snapshots
/// unless `record` is false.
pub async fn test_backup(
    ec2: &Ec2,
    ebs: &Ebs,
    backup: &Backup,
    archive: Option<&ArchiveSource>,
    opts: &RestoreTestOptions,
    record: bool,
) -> RestoreTestReport {
    let tested_at = Utc::now();
    let mut checks = Vec::new();
    for snapshot in &backup.snapshots {
        let mut check = SnapshotCheck {
            snapshot_id: snapshot.snapshot_id.clone(),
            ..Default::default()
        };
        if !snapshot.is_completed() {
            check
                .problems
                .push(format!("it is {}, not completed", snapshot.state));
        } else if snapshot.storage_tier == autosnap_core::tier::StorageTier::Archive {
            check.problems.push(
                "it is in the archive tier: restore it first (`autosnap snapshot restore-tier`)"
                    .into(),
            );
        } else {
            volume_step(ec2, snapshot, opts, &mut check).await;
            blocks_step(ebs, snapshot, archive, opts, &mut check).await;
        }
        checks.push(check);
    }
    let reason = checks.iter().find_map(|c| {
        c.problems
            .first()
            .map(|p| format!("{}: {p}", c.snapshot_id))
    });
    let mut report = RestoreTestReport {
        run_id: opts.run_id.clone(),
        backup_id: backup.backup_id.clone(),
        passed: reason.is_none(),
        reason,
        tested_at,
        snapshots: checks,
        recorded: false,
    };
    if record {
        let ids: Vec<String> = backup
            .snapshots
            .iter()
            .map(|s| s.snapshot_id.clone())
            .collect();
        let tags: Tags = core_rt::result_tags(&report.result());
        match ec2.create_tags(&ids, &tags).await {
            Ok(()) => report.recorded = true,
            Err(e) => tracing::warn!(
                "cannot record the restore test result on {}: {e}",
                ids.join(", ")
            ),
        }
    }
    report
}

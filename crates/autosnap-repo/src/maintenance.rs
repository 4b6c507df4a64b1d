//! Repository maintenance: [`Repository::verify`], [`Repository::forget`] and
//! [`Repository::gc`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use autosnap_core::retention::{self, KeepPolicy, RetentionItem};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::backend::ObjectInfo;
use crate::error::{Error, Result};
use crate::id::{ArchiveId, ChunkId};
use crate::lock::LockKind;
use crate::manifest::Manifest;
use crate::reader::Parallelism;
use crate::repository::{
    blockmap_object_name, chunk_object_name, id_from_object_name, manifest_object_name, Repository,
    BLOCKMAPS_PREFIX, CHUNKS_PREFIX,
};

/// A sorted set of ids: 32 bytes per id, no per-entry overhead.
#[derive(Debug, Default)]
struct IdSet(Vec<ChunkId>);

impl IdSet {
    fn from_unsorted(mut ids: Vec<ChunkId>) -> Self {
        ids.sort_unstable();
        ids.dedup();
        IdSet(ids)
    }

    fn contains(&self, id: &ChunkId) -> bool {
        self.0.binary_search(id).is_ok()
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Collects ids with repeats (every archive's segments name mostly the same chunks) and
/// deduplicates whenever the buffer doubles, so memory follows the number of distinct ids
/// (≈ 32 bytes each, at most twice that while collecting), not the number of references.
#[derive(Debug, Default)]
struct IdCollector {
    ids: Vec<ChunkId>,
    unique_after_last_compaction: usize,
}

impl IdCollector {
    fn extend(&mut self, ids: impl IntoIterator<Item = ChunkId>) {
        for id in ids {
            self.ids.push(id);
            if self.ids.len() >= 2 * self.unique_after_last_compaction.max(1 << 16) {
                self.ids.sort_unstable();
                self.ids.dedup();
                self.unique_after_last_compaction = self.ids.len();
            }
        }
    }

    fn finish(self) -> IdSet {
        IdSet::from_unsorted(self.ids)
    }
}

/// Lists the ids under `chunks/` or `blockmaps/` with their sizes; other names go to
/// `unexpected`.
fn list_ids(
    repo: &Repository,
    prefix: &str,
    unexpected: &mut Vec<String>,
) -> Result<Vec<(ChunkId, u64)>> {
    let mut out = Vec::new();
    repo.backend()
        .list(prefix, &mut |ObjectInfo { name, size }| {
            match id_from_object_name(&name, prefix) {
                Some(id) => out.push((id, size)),
                None => unexpected.push(name),
            }
            Ok(())
        })?;
    out.sort_unstable();
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// verify
// ---------------------------------------------------------------------------------------------

/// A damaged object and the archives it affects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DamagedObject {
    /// Chunk or segment id.
    pub id: ChunkId,
    /// Object name.
    pub object: String,
    /// What is wrong.
    pub reason: String,
    /// Archives that reference it (sorted).
    pub archives: Vec<ArchiveId>,
}

/// A manifest that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadManifest {
    pub object: String,
    pub reason: String,
}

/// What [`Repository::verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Whether chunk contents were read and checked.
    pub read_data: bool,
    /// Manifests read.
    pub archives: usize,
    /// Distinct block-map segments referenced (each read and checked).
    pub blockmaps: usize,
    /// Chunk objects stored.
    pub chunks_stored: usize,
    /// Distinct chunks referenced by some archive.
    pub chunks_referenced: usize,
    /// Stored chunks no archive references (left by interrupted archives or `forget`; `gc`
    /// removes them; not an error).
    pub chunks_unreferenced: usize,
    /// Chunks read and checked (with `read_data`).
    pub chunks_read: usize,
    /// Bytes of chunk objects read (with `read_data`).
    pub bytes_read: u64,
    /// Manifests that could not be read or decoded.
    pub bad_manifests: Vec<BadManifest>,
    /// Referenced segments that are missing.
    pub missing_blockmaps: Vec<DamagedObject>,
    /// Referenced segments that fail decryption, hash or decoding.
    pub corrupt_blockmaps: Vec<DamagedObject>,
    /// Referenced chunks that are missing.
    pub missing_chunks: Vec<DamagedObject>,
    /// Stored chunks that fail decryption, decompression or their hash (with `read_data`).
    pub corrupt_chunks: Vec<DamagedObject>,
    /// Objects under `chunks/` or `blockmaps/` whose names are not ids (a warning).
    pub unexpected_objects: Vec<String>,
}

impl VerifyReport {
    /// Whether the repository is intact: every manifest readable and everything it references
    /// present (and, with `read_data`, every stored chunk sound).
    pub fn is_ok(&self) -> bool {
        self.bad_manifests.is_empty()
            && self.missing_blockmaps.is_empty()
            && self.corrupt_blockmaps.is_empty()
            && self.missing_chunks.is_empty()
            && self.corrupt_chunks.is_empty()
    }

    /// Every archive affected by a problem.
    pub fn damaged_archives(&self) -> BTreeSet<ArchiveId> {
        [
            &self.missing_blockmaps,
            &self.corrupt_blockmaps,
            &self.missing_chunks,
            &self.corrupt_chunks,
        ]
        .into_iter()
        .flatten()
        .flat_map(|d| d.archives.iter().cloned())
        .collect()
    }
}

/// Options of [`Repository::verify_with`].
#[derive(Debug, Clone, Copy, Default)]
pub struct VerifyOptions {
    /// Read every stored chunk and check it decrypts, decompresses and hashes to its id.
    pub read_data: bool,
    pub parallelism: Parallelism,
}

impl Repository {
    /// Checks the repository: every manifest decodes, every block-map segment it references
    /// exists and decodes, every chunk those reference exists; with `read_data`, every stored
    /// chunk is read and hash-checked. Damaged objects are reported with the archives they
    /// affect. Holds a shared lock (a `gc` cannot run meanwhile).
    pub fn verify(&self, read_data: bool) -> Result<VerifyReport> {
        self.verify_with(VerifyOptions {
            read_data,
            ..VerifyOptions::default()
        })
    }

    /// [`Repository::verify`] with options.
    pub fn verify_with(&self, options: VerifyOptions) -> Result<VerifyReport> {
        let lock = self.lock(LockKind::Shared, "verify")?;
        lock.keep_alive_in_background()?;
        let mut report = VerifyReport {
            read_data: options.read_data,
            ..VerifyReport::default()
        };
        let stored = list_ids(self, CHUNKS_PREFIX, &mut report.unexpected_objects)?;
        let stored_maps = list_ids(self, BLOCKMAPS_PREFIX, &mut report.unexpected_objects)?;
        report.chunks_stored = stored.len();
        let stored_maps = IdSet::from_unsorted(stored_maps.into_iter().map(|(id, _)| id).collect());

        // 1. Every stored chunk's content (before the manifests, so that damage found here
        //    is attributed to archives below).
        let mut corrupt: BTreeMap<ChunkId, String> = BTreeMap::new();
        if options.read_data {
            let found = Mutex::new(BTreeMap::new());
            let read = AtomicU64::new(0);
            let bytes = AtomicU64::new(0);
            crate::reader::run_pool(
                options.parallelism.threads,
                "verify",
                |sender, _| {
                    for item in &stored {
                        if sender.send(*item).is_err() {
                            break;
                        }
                    }
                    Ok(())
                },
                |(id, size)| {
                    lock.refresh_if_due()?;
                    match self.get_chunk(&id) {
                        Ok(_) => {}
                        Err(Error::CorruptChunk { reason, .. }) => {
                            found.lock().unwrap().insert(id, reason);
                        }
                        // Deleted since the listing: not damage (gc cannot run, but a
                        // stale-lock cleanup could have); reported via references below.
                        Err(Error::MissingChunk { .. }) => return Ok(()),
                        Err(e) => return Err(e),
                    }
                    read.fetch_add(1, Ordering::Relaxed);
                    bytes.fetch_add(size, Ordering::Relaxed);
                    Ok(())
                },
            )?;
            corrupt = found.into_inner().unwrap();
            report.chunks_read = read.into_inner() as usize;
            report.bytes_read = bytes.into_inner();
        }
        let stored = IdSet::from_unsorted(stored.into_iter().map(|(id, _)| id).collect());

        // 2. Manifests → which archives reference each segment.
        let mut segment_archives: BTreeMap<ChunkId, BTreeSet<ArchiveId>> = BTreeMap::new();
        // How each segment is referenced (first index, counts, the volume's block count), to
        // check the segment against every distinct reference once.
        let mut segment_refs: BTreeMap<ChunkId, BTreeSet<(u64, u32, u32, u64)>> = BTreeMap::new();
        for id in self.list_archive_ids()? {
            lock.refresh_if_due()?;
            match self.read_manifest(&id) {
                Ok(manifest) => {
                    report.archives += 1;
                    if let Some(problem) = manifest.structure_problem() {
                        report.bad_manifests.push(BadManifest {
                            object: manifest_object_name(&id),
                            reason: problem,
                        });
                    }
                    for segment in manifest.segment_ids() {
                        segment_archives
                            .entry(segment)
                            .or_default()
                            .insert(id.clone());
                    }
                    for volume in &manifest.volumes {
                        for r in &volume.block_map.segments {
                            segment_refs.entry(r.id).or_default().insert((
                                r.first_index,
                                r.blocks,
                                r.zero_blocks,
                                volume.block_count(),
                            ));
                        }
                    }
                }
                Err(e) => report.bad_manifests.push(BadManifest {
                    object: manifest_object_name(&id),
                    reason: e.to_string(),
                }),
            }
        }
        report.blockmaps = segment_archives.len();

        // 3. Each segment once: present, decodable, and its chunks present and sound.
        let mut missing: BTreeMap<ChunkId, BTreeSet<ArchiveId>> = BTreeMap::new();
        let mut corrupt_refs: BTreeMap<ChunkId, BTreeSet<ArchiveId>> = BTreeMap::new();
        let mut referenced = IdCollector::default();
        for (segment_id, archives) in &segment_archives {
            lock.refresh_if_due()?;
            let damaged = |reason: String| DamagedObject {
                id: *segment_id,
                object: blockmap_object_name(segment_id),
                reason,
                archives: archives.iter().cloned().collect(),
            };
            if !stored_maps.contains(segment_id) {
                report.missing_blockmaps.push(damaged("missing".to_owned()));
                continue;
            }
            let segment = match self.get_segment(segment_id) {
                Ok(segment) => segment,
                Err(e) => {
                    report.corrupt_blockmaps.push(damaged(e.to_string()));
                    continue;
                }
            };
            let mismatch = segment_refs.get(segment_id).into_iter().flatten().find_map(
                |&(first_index, blocks, zero_blocks, block_count)| {
                    let reference = crate::manifest::SegmentRef {
                        first_index,
                        blocks,
                        zero_blocks,
                        id: *segment_id,
                    };
                    reference.check_segment(&segment, block_count).err()
                },
            );
            if let Some(reason) = mismatch {
                report.corrupt_blockmaps.push(damaged(reason));
                continue;
            }
            referenced.extend(segment.entries.iter().filter_map(|(_, b)| b.chunk()));
            for chunk in segment.entries.iter().filter_map(|(_, b)| b.chunk()) {
                if !stored.contains(&chunk) {
                    missing
                        .entry(chunk)
                        .or_default()
                        .extend(archives.iter().cloned());
                } else if corrupt.contains_key(&chunk) {
                    corrupt_refs
                        .entry(chunk)
                        .or_default()
                        .extend(archives.iter().cloned());
                }
            }
        }
        let referenced = referenced.finish();
        report.chunks_referenced = referenced.len();
        report.chunks_unreferenced = stored
            .0
            .iter()
            .filter(|id| !referenced.contains(id))
            .count();
        report.missing_chunks = missing
            .into_iter()
            .map(|(id, archives)| DamagedObject {
                id,
                object: chunk_object_name(&id),
                reason: "missing".to_owned(),
                archives: archives.into_iter().collect(),
            })
            .collect();
        report.corrupt_chunks = corrupt
            .into_iter()
            .map(|(id, reason)| DamagedObject {
                id,
                object: chunk_object_name(&id),
                reason,
                archives: corrupt_refs
                    .remove(&id)
                    .map(|a| a.into_iter().collect())
                    .unwrap_or_default(),
            })
            .collect();
        lock.release()?;
        Ok(report)
    }
}

// ---------------------------------------------------------------------------------------------
// forget
// ---------------------------------------------------------------------------------------------

/// The decision for one archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchiveDecision {
    pub id: ArchiveId,
    pub time: DateTime<Utc>,
    pub keep: bool,
    /// Every rule that keeps it (empty when it is forgotten).
    pub reasons: Vec<String>,
}

/// The decisions for one lineage, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ForgetGroup {
    /// See [`Manifest::lineage`].
    pub lineage: String,
    pub decisions: Vec<ArchiveDecision>,
}

/// What [`Repository::forget`] decided (and, unless `dry_run`, did).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ForgetPlan {
    pub dry_run: bool,
    /// The policy, as one line.
    pub policy: String,
    /// Groups sorted by lineage.
    pub groups: Vec<ForgetGroup>,
    /// Archives whose manifests could not be read: left alone (never forgotten), and not
    /// counted by the policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<crate::repository::UnreadableArchive>,
}

impl ForgetPlan {
    /// Archives the plan removes.
    pub fn removed(&self) -> impl Iterator<Item = &ArchiveDecision> {
        self.groups
            .iter()
            .flat_map(|g| g.decisions.iter())
            .filter(|d| !d.keep)
    }

    /// Archives the plan keeps.
    pub fn kept(&self) -> impl Iterator<Item = &ArchiveDecision> {
        self.groups
            .iter()
            .flat_map(|g| g.decisions.iter())
            .filter(|d| d.keep)
    }
}

/// Tags as the retention engine's `tags` rule sees them: `key` and `key=value` both match.
fn retention_tags(manifest: &Manifest) -> Vec<String> {
    manifest
        .source
        .tags
        .iter()
        .flat_map(|(k, v)| [k.clone(), format!("{k}={v}")])
        .collect()
}

/// The plan `policy` makes for `manifests` at `now`: grouped by lineage, each group decided
/// by [`autosnap_core::retention::apply`]. Pure.
pub fn plan_forget(
    manifests: &[Manifest],
    policy: &KeepPolicy,
    now: DateTime<Utc>,
    dry_run: bool,
) -> ForgetPlan {
    let mut groups: BTreeMap<String, Vec<RetentionItem>> = BTreeMap::new();
    for manifest in manifests {
        groups
            .entry(manifest.lineage())
            .or_default()
            .push(RetentionItem {
                id: manifest.id.to_string(),
                time: manifest.time,
                tags: retention_tags(manifest),
            });
    }
    ForgetPlan {
        dry_run,
        unreadable: Vec::new(),
        policy: policy.to_string(),
        groups: groups
            .into_iter()
            .map(|(lineage, items)| ForgetGroup {
                lineage,
                decisions: retention::apply(policy, &items, now)
                    .into_iter()
                    .map(|d| ArchiveDecision {
                        id: d.id.parse().expect("ids come from manifests"),
                        time: d.time,
                        keep: d.keep,
                        reasons: d.reasons,
                    })
                    .collect(),
            })
            .collect(),
    }
}

impl Repository {
    /// Applies `policy` to every lineage's archives and, unless `dry_run`, deletes the
    /// manifests of the archives it does not keep. Chunks are not touched: run
    /// [`Repository::gc`] afterwards. An empty policy is refused.
    pub fn forget(
        &self,
        policy: &KeepPolicy,
        now: DateTime<Utc>,
        dry_run: bool,
    ) -> Result<ForgetPlan> {
        policy.validate()?;
        let lock = if dry_run {
            None
        } else {
            Some(self.lock(LockKind::Shared, "forget")?)
        };
        // One unreadable manifest must not stop retention of the others: it is reported and
        // kept (it cannot be judged, and forgetting never deletes chunks anyway).
        let scan = self.scan_archives()?;
        let mut plan = plan_forget(&scan.manifests, policy, now, dry_run);
        plan.unreadable = scan.unreadable;
        if let Some(lock) = lock {
            lock.keep_alive_in_background()?;
            for decision in plan.removed() {
                lock.refresh_if_due()?;
                self.delete_manifest(&decision.id)?;
            }
            lock.release()?;
        }
        Ok(plan)
    }
}

// ---------------------------------------------------------------------------------------------
// gc
// ---------------------------------------------------------------------------------------------

/// Temp files older than this are removed by `gc`.
pub const STALE_TEMPORARIES: Duration = Duration::from_secs(24 * 60 * 60);

/// gc refreshes its lock (proving it still holds it) before every this many deletes.
pub const GC_DELETE_BATCH: usize = 256;

/// What [`Repository::gc`] found (and, unless `dry_run`, deleted).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    /// Archives whose references were kept.
    pub archives: usize,
    /// Referenced segments and chunks.
    pub blockmaps_referenced: usize,
    pub chunks_referenced: usize,
    /// Unreferenced objects (deleted unless `dry_run`).
    pub blockmaps_unreferenced: usize,
    pub chunks_unreferenced: usize,
    /// Bytes of the unreferenced chunk and segment objects.
    pub bytes_unreferenced: u64,
    /// Objects actually deleted.
    pub deleted: usize,
    /// Stale locks removed while taking the exclusive lock.
    pub stale_locks_removed: u64,
    /// Stale temp files removed (local backend).
    pub temporaries_removed: u64,
}

impl Repository {
    /// Deletes chunks and block-map segments that no manifest references.
    ///
    /// Safe against concurrent archives through the lock protocol (see `crate::lock` and
    /// `docs/repository-format.md` §10): gc holds the exclusive lock, so no archive is running
    /// between the moment it reads the manifests and the moment it deletes. Before every
    /// batch of [`GC_DELETE_BATCH`] deletes it refreshes the lock, which fails if another
    /// process removed it as stale, and before every single delete it checks that the lock is
    /// still within its trusted lifetime. It stops with an error if any manifest or
    /// referenced segment cannot be read, so an unreadable archive never loses its chunks.
    pub fn gc(&self, dry_run: bool) -> Result<GcReport> {
        let (lock, stale_locks_removed) = self.lock_counting_stale(LockKind::Exclusive, "gc")?;
        lock.keep_alive_in_background()?;
        let mut report = GcReport {
            dry_run,
            stale_locks_removed,
            ..GcReport::default()
        };

        // Everything referenced, from every manifest. Any read error aborts the gc.
        let mut segments = IdCollector::default();
        for id in self.list_archive_ids()? {
            lock.refresh_if_due()?;
            // An unreadable manifest stops gc: it could need chunks nothing else references.
            let manifest = self.read_manifest(&id).map_err(|e| match e {
                Error::CorruptObject { name, reason } => Error::CorruptObject {
                    name,
                    reason: format!(
                        "{reason}; gc stopped and deleted nothing, since this archive may need \
                         chunks no other archive references: restore the manifest from a copy \
                         (or, if it is beyond repair, delete that object yourself) and run gc \
                         again"
                    ),
                },
                e => e,
            })?;
            report.archives += 1;
            segments.extend(manifest.segment_ids());
        }
        let segments = segments.finish();
        let mut chunks = IdCollector::default();
        for id in &segments.0 {
            lock.refresh_if_due()?;
            let segment = self.get_segment(id).map_err(|e| Error::CorruptObject {
                name: blockmap_object_name(id),
                reason: format!("gc stopped, nothing was deleted: {e}"),
            })?;
            chunks.extend(segment.entries.iter().filter_map(|(_, b)| b.chunk()));
        }
        let chunks = chunks.finish();
        report.blockmaps_referenced = segments.len();
        report.chunks_referenced = chunks.len();

        let mut unexpected = Vec::new();
        let mut doomed: Vec<String> = Vec::new();
        for (id, size) in list_ids(self, BLOCKMAPS_PREFIX, &mut unexpected)? {
            if !segments.contains(&id) {
                report.blockmaps_unreferenced += 1;
                report.bytes_unreferenced += size;
                doomed.push(blockmap_object_name(&id));
            }
        }
        for (id, size) in list_ids(self, CHUNKS_PREFIX, &mut unexpected)? {
            if !chunks.contains(&id) {
                report.chunks_unreferenced += 1;
                report.bytes_unreferenced += size;
                doomed.push(chunk_object_name(&id));
            }
        }
        if !dry_run {
            for batch in doomed.chunks(GC_DELETE_BATCH) {
                // Had another process removed this lock as stale, an archive may have started
                // and deduplicated against these chunks: the refresh finds out.
                lock.refresh()?;
                for name in batch {
                    lock.check()?;
                    self.backend().delete(name)?;
                    report.deleted += 1;
                }
            }
            report.temporaries_removed =
                self.backend().remove_stale_temporaries(STALE_TEMPORARIES)?;
        }
        lock.release()?;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collector_deduplicates_as_it_goes() {
        let mut collector = IdCollector::default();
        for round in 0..20u8 {
            collector.extend((0..50_000u32).map(|i| {
                let mut id = [0u8; 32];
                id[..4].copy_from_slice(&i.to_le_bytes());
                id[4] = u8::from(round == 19 && i == 0);
                ChunkId(id)
            }));
            assert!(
                collector.ids.len() < 2 * 65_536 + 50_000,
                "{}",
                collector.ids.len()
            );
        }
        let set = collector.finish();
        assert_eq!(set.len(), 50_001);
        assert!(set.contains(&ChunkId([0; 32])));
    }
}

//! [`ArchiveWriter`]: builds one archive from blocks, possibly on top of a parent archive,
//! and writes its manifest last.
//!
//! Crash safety: chunks and block-map segments are written atomically (create-only) before
//! the manifest that references them, and the manifest is written last, atomically. A
//! process killed at any point leaves complete but unreferenced objects and no manifest:
//! `verify` passes, `gc` removes them, and a rerun reuses every chunk already stored.
//!
//! Concurrency with `gc`: the writer holds a shared lock, kept alive by a background refresh
//! for as long as the archive runs, and checked before every chunk and before the manifest
//! (see [`crate::lock`]). A lost answer to the manifest write is resolved by reading the
//! manifest back: the caller is told the truth about whether the archive was committed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::blockmap::{BlockRef, Segment};
use crate::error::{Error, Result};
use crate::id::{ArchiveId, ChunkId};
use crate::index::{ChunkIndex, ListBudget};
use crate::lock::{LockKind, RepoLock};
use crate::manifest::{
    ArchiveSource, ArchiveStats, BlockMap, Manifest, SegmentRef, VolumeArchive, VolumeParent,
    VolumeSource, MANIFEST_VERSION,
};
use crate::repository::{chunk_object_name, Repository};

/// A volume's segment is written out when the highest index seen is more than this many
/// segments past it.
pub const WINDOW_SEGMENTS: u64 = 2;

/// What [`ArchiveWriter::add_block`] recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddedBlock {
    /// The block as recorded.
    pub block: BlockRef,
    /// Whether its chunk was stored by this call (`false` for zero and already-stored blocks).
    pub new: bool,
    /// Bytes written for it (0 unless `new`).
    pub stored_len: u64,
}

/// What [`ArchiveWriter::prepare_block`] found a block needs.
#[derive(Debug)]
pub enum BlockStep {
    /// Nothing more: the block is all zeros, or its chunk is known to be stored. Recorded.
    Done(AddedBlock),
    /// Its chunk must be stored: seal it ([`ArchiveWriter::seal_chunk`]), create it, then
    /// [`ArchiveWriter::commit_block`].
    Store(PendingChunk),
}

/// A block whose chunk is not known to be stored yet (see [`BlockStep::Store`]).
#[derive(Debug)]
pub struct PendingChunk {
    volume: usize,
    index: u64,
    id: ChunkId,
    name: String,
    /// The repository's listing showed a damaged object under this name.
    damaged: bool,
    /// No index: whether the chunk exists must be asked first (it may be stored already).
    check_first: bool,
}

impl PendingChunk {
    /// The chunk's object name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The chunk's id.
    pub fn id(&self) -> &ChunkId {
        &self.id
    }

    /// Whether to ask if the object exists before sealing it (no chunk index was loaded:
    /// a HEAD is cheaper than sealing and sending a chunk that is stored already).
    pub fn check_first(&self) -> bool {
        self.check_first
    }

    /// Whether an object found under the name by a create-only write must be replaced:
    /// the listing showed it with a size no chunk can have (torn or planted). Its content is
    /// fixed by its name, so replacing it with the sealed chunk is always right.
    pub fn replace_existing(&self) -> bool {
        self.damaged
    }
}

/// Builds an archive. `add_block` may be called from many threads at once.
///
/// Blocks may arrive in any order. To keep memory flat, the writer writes out a volume's
/// block-map segment once the highest index seen is more than [`WINDOW_SEGMENTS`] segments
/// past it (so at most 3 segments are open per volume, ≈ 2.5 MiB). A block that arrives later still for a
/// written segment (a straggler that was retried for a long time) re-opens it: the segment
/// is merged and written again, and the superseded segment object is left for `gc`. So
/// arrival order affects only performance, never the result.
pub struct ArchiveWriter {
    repo: Repository,
    lock: RepoLock,
    id: ArchiveId,
    created: DateTime<Utc>,
    source: ArchiveSource,
    parent: Option<ArchiveId>,
    volumes: Vec<Mutex<VolumeState>>,
    /// Chunks known to be stored, listed under this archive's lock.
    index: Option<ChunkIndex>,
    /// Bit `n`: a block references a chunk under `chunks/<n as 2 hex>/`, whose directory is
    /// synced before the manifest (chunks are created with [`Backend::create_deferred`]).
    ///
    /// [`Backend::create_deferred`]: crate::Backend::create_deferred
    fans: [AtomicU64; 4],
}

impl std::fmt::Debug for ArchiveWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveWriter")
            .field("id", &self.id)
            .field("volumes", &self.volumes.len())
            .finish()
    }
}

/// One volume being written.
struct VolumeState {
    source: VolumeSource,
    parent: Option<VolumeParent>,
    block_size: u32,
    span: u32,
    block_count: u64,
    /// The parent's segments (sorted), those from `parent_next` on not yet consumed.
    parent_segments: Vec<SegmentRef>,
    parent_next: usize,
    /// Changes per open segment number: offset → block, or `None` to remove an inherited
    /// block.
    open: BTreeMap<u64, BTreeMap<u32, Option<BlockRef>>>,
    /// Highest segment number seen.
    max_segment: u64,
    /// Segments below this number are written out.
    next_segment: u64,
    /// Written segments.
    segments: Vec<SegmentRef>,
    stats: ArchiveStats,
}

impl VolumeState {
    fn segment_of(&self, index: u64) -> u64 {
        index / u64::from(self.span)
    }

    /// Records a change, writing out segments that fell behind the window.
    fn record(&mut self, repo: &Repository, index: u64, block: Option<BlockRef>) -> Result<()> {
        let segment = self.segment_of(index);
        let offset = (index % u64::from(self.span)) as u32;
        if segment < self.next_segment {
            return self.rewrite_segment(repo, segment, offset, block);
        }
        self.open.entry(segment).or_default().insert(offset, block);
        if segment > self.max_segment {
            self.max_segment = segment;
            self.emit_below(repo, segment.saturating_sub(WINDOW_SEGMENTS))?;
        }
        Ok(())
    }

    /// A late block for segment `number`, already written: merge it into the written
    /// segment and replace the reference.
    fn rewrite_segment(
        &mut self,
        repo: &Repository,
        number: u64,
        offset: u32,
        block: Option<BlockRef>,
    ) -> Result<()> {
        let first_index = number * u64::from(self.span);
        let position = self
            .segments
            .partition_point(|s| s.first_index < first_index);
        let existing = self
            .segments
            .get(position)
            .copied()
            .filter(|s| s.first_index == first_index);
        let rewritten =
            self.write_segment(repo, number, existing, BTreeMap::from([(offset, block)]))?;
        match (existing, rewritten) {
            (Some(_), Some(new)) => self.segments[position] = new,
            (Some(_), None) => {
                self.segments.remove(position);
            }
            (None, Some(new)) => self.segments.insert(position, new),
            (None, None) => {}
        }
        Ok(())
    }

    /// Writes out every segment numbered below `limit`: open ones merged with the parent's,
    /// untouched parent segments by reference.
    fn emit_below(&mut self, repo: &Repository, limit: u64) -> Result<()> {
        while self.next_segment < limit {
            let next_open = self.open.keys().next().copied().filter(|s| *s < limit);
            // Inherit untouched parent segments up to the next open one.
            let inherit_until = next_open.unwrap_or(limit);
            while let Some(parent) = self.parent_segments.get(self.parent_next).copied() {
                let number = parent.first_index / u64::from(self.span);
                if number >= inherit_until {
                    break;
                }
                self.parent_next += 1;
                let end = parent.first_index + u64::from(self.span);
                if end <= self.block_count {
                    self.segments.push(parent);
                } else {
                    // The volume shrank into this segment: rewrite it without the tail.
                    let written =
                        self.write_segment(repo, number, Some(parent), BTreeMap::new())?;
                    self.segments.extend(written);
                }
            }
            let Some(number) = next_open else {
                self.next_segment = limit;
                break;
            };
            let changes = self.open.remove(&number).expect("key seen above");
            let parent = self
                .parent_segments
                .get(self.parent_next)
                .copied()
                .filter(|p| p.first_index / u64::from(self.span) == number);
            if parent.is_some() {
                self.parent_next += 1;
            }
            let written = self.write_segment(repo, number, parent, changes)?;
            self.segments.extend(written);
            self.next_segment = number + 1;
        }
        Ok(())
    }

    fn write_segment(
        &mut self,
        repo: &Repository,
        number: u64,
        parent: Option<SegmentRef>,
        changes: BTreeMap<u32, Option<BlockRef>>,
    ) -> Result<Option<SegmentRef>> {
        let first_index = number * u64::from(self.span);
        let mut blocks: BTreeMap<u32, BlockRef> = match parent {
            Some(parent) => repo.get_segment(&parent.id)?.entries.into_iter().collect(),
            None => BTreeMap::new(),
        };
        for (offset, change) in changes {
            match change {
                Some(block) => blocks.insert(offset, block),
                None => blocks.remove(&offset),
            };
        }
        let block_count = self.block_count;
        blocks.retain(|offset, _| first_index + u64::from(*offset) < block_count);
        if blocks.is_empty() {
            return Ok(None);
        }
        let segment = Segment {
            first_index,
            span: self.span,
            entries: blocks.into_iter().collect(),
        };
        let (blocks, zero_blocks) = segment.counts();
        let (id, _) = repo.put_segment(&segment)?;
        Ok(Some(SegmentRef {
            first_index,
            blocks,
            zero_blocks,
            id,
        }))
    }
}

/// Whether a block is all zeros (checked a page at a time, so non-zero data exits early).
pub fn is_zero_block(data: &[u8]) -> bool {
    data.chunks(4096)
        .all(|page| page.iter().fold(0u8, |acc, b| acc | b) == 0)
}

impl Repository {
    /// Starts an archive of `source`, taking a shared lock that a `gc` respects.
    pub fn begin_archive(&self, source: ArchiveSource) -> Result<ArchiveWriter> {
        let lock = self.lock(LockKind::Shared, "archive")?;
        lock.keep_alive_in_background()?;
        let created = Utc::now();
        Ok(ArchiveWriter {
            repo: self.clone(),
            lock,
            id: ArchiveId::generate(created)?,
            created,
            source,
            parent: None,
            volumes: Vec::new(),
            index: None,
            fans: Default::default(),
        })
    }
}

impl ArchiveWriter {
    /// The id the archive will have.
    pub fn id(&self) -> &ArchiveId {
        &self.id
    }

    /// Lists the repository's chunks into an index (see [`crate::index`]) when `budget`
    /// allows, so that a known chunk costs no request and a new one a single create-only
    /// write. Returns whether it was loaded; without it each chunk is first asked for.
    pub fn load_chunk_index(&mut self, budget: ListBudget) -> Result<bool> {
        self.lock.check()?;
        self.index = self.repo.list_chunk_index(budget)?;
        Ok(self.index.is_some())
    }

    /// Chunks the index knows (`None` without an index).
    pub fn indexed_chunks(&self) -> Option<usize> {
        self.index.as_ref().map(ChunkIndex::len)
    }

    /// Adds a volume with no blocks yet; returns its number for [`ArchiveWriter::add_block`].
    pub fn add_volume(&mut self, source: VolumeSource) -> Result<usize> {
        self.push_volume(source, None, Vec::new())
    }

    /// Adds a volume that starts as a copy of volume `parent_volume` of `parent` (an earlier
    /// archive of the same lineage). The caller then adds only the blocks that changed since
    /// the parent (EBS `ListChangedBlocks`) and removes the ones that disappeared; every
    /// other block is inherited without being read. Segments without changes are shared with
    /// the parent by reference.
    pub fn add_volume_incremental(
        &mut self,
        source: VolumeSource,
        parent: &Manifest,
        parent_volume: usize,
    ) -> Result<usize> {
        let parent_map = &parent
            .volumes
            .get(parent_volume)
            .ok_or(Error::NoSuchVolume {
                volume: parent_volume,
                count: parent.volumes.len(),
            })?
            .block_map;
        let config = self.repo.config();
        if parent_map.block_size != config.chunk_size
            || parent_map.segment_blocks != config.segment_blocks
        {
            return Err(Error::CorruptObject {
                name: crate::repository::manifest_object_name(&parent.id),
                reason: "its block size or segment span differs from the repository's".to_owned(),
            });
        }
        let mut segments = parent_map.segments.clone();
        segments.sort_by_key(|s| s.first_index);
        if self.parent.is_none() {
            self.parent = Some(parent.id.clone());
        }
        let parent = VolumeParent {
            archive: parent.id.clone(),
            volume: parent_volume,
        };
        self.push_volume(source, Some(parent), segments)
    }

    fn push_volume(
        &mut self,
        source: VolumeSource,
        parent: Option<VolumeParent>,
        parent_segments: Vec<SegmentRef>,
    ) -> Result<usize> {
        let block_size = self.repo.chunk_size();
        let span = self.repo.config().segment_blocks;
        self.volumes.push(Mutex::new(VolumeState {
            block_count: source.size_bytes.div_ceil(u64::from(block_size)),
            source,
            parent,
            block_size,
            span,
            parent_segments,
            parent_next: 0,
            open: BTreeMap::new(),
            max_segment: 0,
            next_segment: 0,
            segments: Vec::new(),
            stats: ArchiveStats::default(),
        }));
        Ok(self.volumes.len() - 1)
    }

    fn volume(&self, volume: usize) -> Result<&Mutex<VolumeState>> {
        self.volumes.get(volume).ok_or(Error::NoSuchVolume {
            volume,
            count: self.volumes.len(),
        })
    }

    /// Stores block `index` of `volume` (exactly `chunk_size` bytes; the caller has checked
    /// it against the source's checksum). An all-zero block is recorded as zero and not
    /// stored. Thread-safe. The steps ([`ArchiveWriter::prepare_block`], `seal_chunk`, the
    /// write, `commit_block`) are public for callers that write through their own async
    /// client.
    pub fn add_block(&self, volume: usize, index: u64, data: &[u8]) -> Result<AddedBlock> {
        self.add(volume, index, data, None)
    }

    /// [`ArchiveWriter::add_block`] with the block's SHA-256, computed and checked by the
    /// caller (see [`ArchiveWriter::prepare_block_hashed`]).
    pub fn add_block_hashed(
        &self,
        volume: usize,
        index: u64,
        data: &[u8],
        sha256: &[u8; 32],
    ) -> Result<AddedBlock> {
        self.add(volume, index, data, Some(sha256))
    }

    fn add(
        &self,
        volume: usize,
        index: u64,
        data: &[u8],
        sha256: Option<&[u8; 32]>,
    ) -> Result<AddedBlock> {
        let pending = match self.prepare(volume, index, data, sha256)? {
            BlockStep::Done(added) => return Ok(added),
            BlockStep::Store(pending) => pending,
        };
        let backend = self.repo.backend();
        if pending.check_first() && backend.exists(pending.name())? {
            return self.commit_block(pending, None);
        }
        let sealed = self.seal_chunk(&pending, data)?;
        // The directory entry is synced once per directory before the manifest (`finish`).
        let mut created = backend.create_deferred(pending.name(), &sealed)?;
        if !created && pending.replace_existing() {
            backend.write(pending.name(), &sealed)?;
            created = true;
        }
        self.commit_block(pending, created.then_some(sealed.len() as u64))
    }

    /// The first step of [`ArchiveWriter::add_block`]: checks the block, the lock's trust, and
    /// records the block when it is all zeros or its chunk is known to be stored (no
    /// request); otherwise says that its chunk must be stored.
    pub fn prepare_block(&self, volume: usize, index: u64, data: &[u8]) -> Result<BlockStep> {
        self.prepare(volume, index, data, None)
    }

    /// [`ArchiveWriter::prepare_block`] for a block whose SHA-256 the caller has computed and
    /// checked (EBS sends it with every block): in an unencrypted repository that is the
    /// chunk id, so the block is not hashed a second time. (Debug builds check it.)
    pub fn prepare_block_hashed(
        &self,
        volume: usize,
        index: u64,
        data: &[u8],
        sha256: &[u8; 32],
    ) -> Result<BlockStep> {
        self.prepare(volume, index, data, Some(sha256))
    }

    fn prepare(
        &self,
        volume: usize,
        index: u64,
        data: &[u8],
        sha256: Option<&[u8; 32]>,
    ) -> Result<BlockStep> {
        let state = self.volume(volume)?;
        {
            let state = state.lock().unwrap();
            if index >= state.block_count {
                return Err(Error::BlockOutOfRange {
                    volume,
                    index,
                    blocks: state.block_count,
                    block_size: state.block_size,
                });
            }
            if data.len() != state.block_size as usize {
                return Err(Error::BadBlockLength {
                    volume,
                    index,
                    len: data.len(),
                    block_size: state.block_size,
                });
            }
        }
        // Before a reuse: the chunk is safe from gc only while the lock is trusted.
        self.lock.refresh_if_due()?;
        if is_zero_block(data) {
            let added = AddedBlock {
                block: BlockRef::Zero,
                new: false,
                stored_len: 0,
            };
            return Ok(BlockStep::Done(self.record_block(volume, index, added)?));
        }
        let id = match sha256 {
            Some(sha256) if !self.repo.is_encrypted() => {
                debug_assert_eq!(self.repo.chunk_id(data).0, *sha256, "wrong SHA-256 given");
                ChunkId(*sha256)
            }
            _ => self.repo.chunk_id(data),
        };
        if let Some(known) = &self.index {
            if known.contains(&id) {
                let added = AddedBlock {
                    block: BlockRef::Chunk(id),
                    new: false,
                    stored_len: 0,
                };
                return Ok(BlockStep::Done(self.record_block(volume, index, added)?));
            }
        }
        Ok(BlockStep::Store(PendingChunk {
            volume,
            index,
            id,
            name: chunk_object_name(&id),
            damaged: self.index.as_ref().is_some_and(|i| i.is_damaged(&id)),
            check_first: self.index.is_none(),
        }))
    }

    /// The stored form of a pending chunk (compressed, encrypted): CPU work only. `data` is
    /// the block given to [`ArchiveWriter::prepare_block`].
    pub fn seal_chunk(&self, pending: &PendingChunk, data: &[u8]) -> Result<Vec<u8>> {
        self.repo.seal_object(&pending.name, data)
    }

    /// Records a pending chunk once it is stored: `Some(bytes written)` when this archive
    /// created it, `None` when it was found stored already.
    pub fn commit_block(
        &self,
        pending: PendingChunk,
        stored_len: Option<u64>,
    ) -> Result<AddedBlock> {
        if let Some(known) = &self.index {
            known.insert(pending.id);
        }
        let added = AddedBlock {
            block: BlockRef::Chunk(pending.id),
            new: stored_len.is_some(),
            stored_len: stored_len.unwrap_or(0),
        };
        self.record_block(pending.volume, pending.index, added)
    }

    fn record_block(&self, volume: usize, index: u64, added: AddedBlock) -> Result<AddedBlock> {
        if let BlockRef::Chunk(id) = added.block {
            let fan = id.0[0];
            self.fans[usize::from(fan / 64)].fetch_or(1 << (fan % 64), Ordering::Relaxed);
        }
        let mut state = self.volume(volume)?.lock().unwrap();
        let block_size = u64::from(state.block_size);
        let stats = &mut state.stats;
        stats.blocks_added += 1;
        match (added.block, added.new) {
            (BlockRef::Zero, _) => {}
            (BlockRef::Chunk(_), true) => {
                stats.new_chunks += 1;
                stats.new_bytes += block_size;
                stats.new_stored_bytes += added.stored_len;
            }
            (BlockRef::Chunk(_), false) => stats.reused_chunks += 1,
        }
        state.record(&self.repo, index, Some(added.block))?;
        Ok(added)
    }

    /// Checks the archive's lock and refreshes it if it is due. A background thread keeps
    /// the lock alive during pauses; this reports a loss early ([`Error::LockLost`]).
    pub fn keep_alive(&self) -> Result<()> {
        self.lock.refresh_if_due()
    }

    /// Records that block `index` is absent in this archive although the parent had it.
    pub fn remove_block(&self, volume: usize, index: u64) -> Result<()> {
        let mut state = self.volume(volume)?.lock().unwrap();
        state.record(&self.repo, index, None)
    }

    /// Writes the remaining block-map segments, then the manifest (create-only, last), and
    /// releases the lock. Returns the manifest.
    pub fn finish(self) -> Result<Manifest> {
        let mut volumes = Vec::with_capacity(self.volumes.len());
        let mut stats = ArchiveStats::default();
        for state in self.volumes {
            let mut state = state.into_inner().unwrap();
            state.emit_below(&self.repo, u64::MAX)?;
            let mut volume_stats = state.stats;
            for segment in &state.segments {
                volume_stats.blocks += u64::from(segment.blocks);
                volume_stats.zero_blocks += u64::from(segment.zero_blocks);
            }
            volume_stats.size_bytes = volume_stats.blocks * u64::from(state.block_size);
            stats.add(&volume_stats);
            volumes.push(VolumeArchive {
                source: state.source,
                parent: state.parent,
                block_map: BlockMap {
                    block_size: state.block_size,
                    segment_blocks: state.span,
                    segments: state.segments,
                },
                stats: volume_stats,
            });
        }
        let manifest = Manifest {
            version: MANIFEST_VERSION,
            id: self.id,
            created: self.created,
            time: self.source.time.unwrap_or(self.created),
            parent: self.parent,
            source: self.source,
            volumes,
            stats,
        };
        // Every chunk the manifest references keeps its name across a crash from here on.
        let dirs: Vec<String> = (0..=255u8)
            .filter(|fan| {
                self.fans[usize::from(fan / 64)].load(Ordering::Relaxed) & (1 << (fan % 64)) != 0
            })
            .map(|fan| format!("{}{fan:02x}", crate::repository::CHUNKS_PREFIX))
            .collect();
        self.repo.backend().sync_dirs(&dirs)?;
        // The last check before the write that makes everything above reachable: had this
        // lock been lost, a gc might have removed chunks that this archive reuses.
        self.lock.refresh()?;
        self.lock.check()?;
        if let Err(write) = self.repo.write_manifest(&manifest) {
            commit_outcome(&self.repo, &manifest, write)?;
        }
        // Committed: a lock that cannot be deleted now only delays the next gc until it
        // expires, so it does not turn a committed archive into a failure.
        let _ = self.lock.release();
        Ok(manifest)
    }
}

/// After the manifest write failed (or answered "already exists"): whether it happened
/// anyway. A write whose answer was lost (a reset connection, a retried request that met its
/// own first attempt) may have committed the archive; the manifest read back decides.
/// `Ok(())` when `manifest` is stored as written, else the error to report.
fn commit_outcome(repo: &Repository, manifest: &Manifest, write: Error) -> Result<()> {
    match repo.read_manifest(&manifest.id) {
        Ok(stored) if stored == *manifest => Ok(()),
        // Archive ids carry 32 random bits: another archive under this id is not ours.
        Ok(_) => Err(write),
        Err(Error::ArchiveNotFound { .. }) => Err(write),
        Err(read) => Err(Error::CommitUnknown {
            id: manifest.id.to_string(),
            write: write.to_string(),
            read: read.to_string(),
        }),
    }
}

//! Manifests: one JSON document per archive, written last.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::id::{ArchiveId, ChunkId};

/// Manifest schema version.
pub const MANIFEST_VERSION: u32 = 1;
/// Largest volume a manifest may describe (bytes): 1 PiB, sixteen times EBS's largest volume.
/// It keeps every block index and byte offset of a valid manifest far from overflowing.
pub const MAX_VOLUME_BYTES: u64 = 1 << 50;

/// One archive: what was archived, when, and where each block's content is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest schema version (1).
    pub version: u32,
    /// The archive id (also the object name under `manifests/`).
    pub id: ArchiveId,
    /// When archiving started.
    pub created: DateTime<Utc>,
    /// The point in time the data is from: the source's time (snapshot start time), or
    /// `created` when the source has none. Retention (`forget`) and listing order use it.
    pub time: DateTime<Utc>,
    /// The archive this one was built incrementally from, if any (informational: every
    /// manifest is self-contained, so a parent may be forgotten). For an archive of several
    /// volumes, the parent of the first incremental volume; `volumes[].parent` has each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ArchiveId>,
    /// What was archived.
    pub source: ArchiveSource,
    /// The volumes, in the order they were added.
    pub volumes: Vec<VolumeArchive>,
    /// Sizes over all volumes.
    pub stats: ArchiveStats,
}

impl Manifest {
    /// The retention group of this archive: `source.lineage` if set, else the sorted source
    /// volume ids joined by `+`, else the source id.
    pub fn lineage(&self) -> String {
        if let Some(lineage) = &self.source.lineage {
            return lineage.clone();
        }
        let mut ids: Vec<&str> = self
            .volumes
            .iter()
            .filter_map(|v| v.source.volume_id.as_deref())
            .collect();
        if ids.is_empty() {
            return self.source.id.clone();
        }
        ids.sort_unstable();
        ids.dedup();
        ids.join("+")
    }

    /// Whether this is an AMI archive (several volumes and the AMI's metadata document).
    pub fn is_image(&self) -> bool {
        self.source.kind == SourceKind::Image
    }

    /// The volume recorded under `device_name` (an AMI archive's `/dev/xvda`), with its index.
    pub fn volume_by_device(&self, device_name: &str) -> Option<(usize, &VolumeArchive)> {
        self.volumes
            .iter()
            .enumerate()
            .find(|(_, v)| v.source.device_name.as_deref() == Some(device_name))
    }

    /// The device names of the volumes, in order (volumes without one are left out).
    pub fn device_names(&self) -> Vec<&str> {
        self.volumes
            .iter()
            .filter_map(|v| v.source.device_name.as_deref())
            .collect()
    }

    /// Why this manifest is not a well-formed archive of its kind, if it is not: an AMI
    /// archive needs its metadata document and a distinct device name on every volume. (The
    /// block maps are checked against the objects they reference by `verify`.)
    pub fn structure_problem(&self) -> Option<String> {
        if !self.is_image() {
            return None;
        }
        if self.volumes.is_empty() {
            return Some("an image archive without volumes".to_owned());
        }
        if self.source.image_metadata.is_none() {
            return Some("an image archive without `source.image_metadata`".to_owned());
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, v) in self.volumes.iter().enumerate() {
            match v.source.device_name.as_deref() {
                None => return Some(format!("volume {i} of an image archive has no device_name")),
                Some(d) if !seen.insert(d) => {
                    return Some(format!("device_name {d} appears on more than one volume"))
                }
                Some(_) => {}
            }
        }
        None
    }

    /// Checks the manifest's structure against the repository's `chunk_size` and
    /// `segment_blocks`, so that a reader can trust it before writing a byte: [`Self::structure_problem`],
    /// and for every volume a block size equal to the chunk size, the repository's segment
    /// span, a size within [`MAX_VOLUME_BYTES`], and segment references sorted by first
    /// index, each aligned to the span, inside the volume, with plausible block counts that
    /// add up to the volume's stats. (Each segment's content is checked against its
    /// reference when it is read: [`SegmentRef::check_segment`].)
    pub fn check(&self, chunk_size: u32, segment_blocks: u32) -> Result<(), String> {
        if let Some(problem) = self.structure_problem() {
            return Err(problem);
        }
        let mut total = (0u64, 0u64);
        for (i, volume) in self.volumes.iter().enumerate() {
            volume
                .check(chunk_size, segment_blocks)
                .map_err(|e| format!("volume {i}: {e}"))?;
            total.0 += volume.stats.blocks;
            total.1 += volume.stats.zero_blocks;
        }
        if (self.stats.blocks, self.stats.zero_blocks) != total {
            return Err(format!(
                "stats count {} blocks ({} zero), its volumes {} ({} zero)",
                self.stats.blocks, self.stats.zero_blocks, total.0, total.1
            ));
        }
        Ok(())
    }

    /// Oldest first: by the data's time, then by when archiving started (sources made in the
    /// same second keep the order they were archived in), then by id.
    pub fn chronological(a: &Manifest, b: &Manifest) -> std::cmp::Ordering {
        a.time
            .cmp(&b.time)
            .then_with(|| a.created.cmp(&b.created))
            .then_with(|| a.id.cmp(&b.id))
    }

    /// Every block-map segment id this archive references (with repeats across volumes).
    pub fn segment_ids(&self) -> impl Iterator<Item = ChunkId> + '_ {
        self.volumes
            .iter()
            .flat_map(|v| v.block_map.segments.iter().map(|s| s.id))
    }
}

/// The newest archive among `manifests` (in any order) holding a volume of `volume_lineage`,
/// with that volume's index. A volume's lineage is its source `volume_id`, or its
/// `snapshot_id` when it has none (snapshots written through the EBS direct APIs). Archives
/// of every kind count: an AMI archive's root volume is the natural parent of the next
/// archive of a snapshot of that volume, and the other way round.
pub fn latest_volume<'a>(
    manifests: &'a [Manifest],
    volume_lineage: &str,
) -> Option<(&'a Manifest, usize)> {
    manifests
        .iter()
        .filter_map(|m| {
            m.volumes
                .iter()
                .position(|v| v.source.lineage() == Some(volume_lineage))
                .map(|i| (m, i))
        })
        .max_by(|(a, _), (b, _)| Manifest::chronological(a, b))
}

/// What kind of thing was archived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// One EBS snapshot.
    Snapshot,
    /// An AMI: all its snapshots and its metadata document.
    Image,
    /// A raw disk image file.
    File,
}

/// The archived thing as a whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchiveSource {
    pub kind: SourceKind,
    /// Snapshot id, AMI id or file path.
    pub id: String,
    /// The retention group, when the caller wants one other than the volume ids (see
    /// [`Manifest::lineage`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lineage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The source's tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// The source's own time (snapshot start time, AMI creation date).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<DateTime<Utc>>,
    /// The AMI metadata document (the AMI issue's format), kept as opaque JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_metadata: Option<serde_json::Value>,
}

impl ArchiveSource {
    /// A source with only a kind and an id.
    pub fn new(kind: SourceKind, id: impl Into<String>) -> Self {
        ArchiveSource {
            kind,
            id: id.into(),
            lineage: None,
            region: None,
            account: None,
            description: None,
            tags: BTreeMap::new(),
            time: None,
            image_metadata: None,
        }
    }
}

/// One volume's source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSource {
    /// Device name in the AMI's block device mapping (`/dev/xvda`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    /// The volume the snapshot was taken of: the lineage for retention and incrementals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_id: Option<String>,
    /// Volume size in GiB (rounded up for a file).
    pub volume_size_gib: u64,
    /// Exact logical size in bytes (`volume_size_gib × 2^30` for EBS; the file length for a
    /// file): what a restore to a file produces.
    pub size_bytes: u64,
    /// Whether the source snapshot was encrypted (then its unwritten blocks do not read as
    /// zeros, so a restore must not rely on absent blocks being zero).
    #[serde(default)]
    pub encrypted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

impl VolumeSource {
    /// The volume's lineage: its `volume_id`, else its `snapshot_id` (see [`latest_volume`]).
    pub fn lineage(&self) -> Option<&str> {
        self.volume_id.as_deref().or(self.snapshot_id.as_deref())
    }

    /// A volume of `volume_size_gib` GiB.
    pub fn ebs(volume_size_gib: u64) -> Self {
        VolumeSource {
            device_name: None,
            snapshot_id: None,
            volume_id: None,
            volume_size_gib,
            size_bytes: volume_size_gib << 30,
            encrypted: false,
            description: None,
            tags: BTreeMap::new(),
        }
    }

    /// A volume holding exactly `size_bytes` bytes (a file).
    pub fn with_size_bytes(size_bytes: u64) -> Self {
        VolumeSource {
            volume_size_gib: size_bytes.div_ceil(1 << 30),
            size_bytes,
            ..VolumeSource::ebs(0)
        }
    }
}

/// The earlier archive a volume was built incrementally from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeParent {
    /// The parent archive's id.
    pub archive: ArchiveId,
    /// The volume's index in the parent's `volumes`.
    pub volume: usize,
}

/// One archived volume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeArchive {
    #[serde(flatten)]
    pub source: VolumeSource,
    /// The archive and volume this volume was built incrementally from (informational, like
    /// [`Manifest::parent`]; absent for a full read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<VolumeParent>,
    /// Where the blocks are.
    pub block_map: BlockMap,
    /// This volume's sizes.
    pub stats: ArchiveStats,
}

impl VolumeArchive {
    /// Number of block indexes of the volume (present or not); 0 for a block size of 0,
    /// which [`VolumeArchive::check`] refuses.
    pub fn block_count(&self) -> u64 {
        match self.block_map.block_size {
            0 => 0,
            block_size => self.source.size_bytes.div_ceil(u64::from(block_size)),
        }
    }

    /// See [`Manifest::check`].
    pub fn check(&self, chunk_size: u32, segment_blocks: u32) -> Result<(), String> {
        let map = &self.block_map;
        if map.block_size != chunk_size {
            return Err(format!(
                "block_size {} is not the repository's block size {chunk_size}",
                map.block_size
            ));
        }
        if map.segment_blocks != segment_blocks {
            return Err(format!(
                "segment_blocks {} is not the repository's {segment_blocks}",
                map.segment_blocks
            ));
        }
        if self.source.size_bytes > MAX_VOLUME_BYTES {
            return Err(format!(
                "size_bytes {} is more than {MAX_VOLUME_BYTES}",
                self.source.size_bytes
            ));
        }
        let block_count = self.block_count();
        let span = u64::from(segment_blocks);
        let (mut blocks, mut zero_blocks) = (0u64, 0u64);
        let mut next_free = 0u64;
        for (n, segment) in map.segments.iter().enumerate() {
            let at = |what: String| Err(format!("segment reference {n}: {what}"));
            if segment.first_index < next_free {
                return at(format!(
                    "first index {} is out of order or overlaps the previous segment",
                    segment.first_index
                ));
            }
            if segment.first_index % span != 0 {
                return at(format!(
                    "first index {} is not a multiple of segment_blocks {span}",
                    segment.first_index
                ));
            }
            if segment.first_index >= block_count {
                return at(format!(
                    "first index {} is beyond the volume's {block_count} blocks (size_bytes {})",
                    segment.first_index, self.source.size_bytes
                ));
            }
            // Both below 2^50 / 2^19 + span: no overflow.
            let indexes = span.min(block_count - segment.first_index);
            if segment.blocks == 0
                || u64::from(segment.blocks) > indexes
                || segment.zero_blocks > segment.blocks
            {
                return at(format!(
                    "{} blocks ({} zero) in a segment of {indexes} indexes",
                    segment.blocks, segment.zero_blocks
                ));
            }
            next_free = segment.first_index + span;
            blocks += u64::from(segment.blocks);
            zero_blocks += u64::from(segment.zero_blocks);
        }
        if (self.stats.blocks, self.stats.zero_blocks) != (blocks, zero_blocks) {
            return Err(format!(
                "stats count {} blocks ({} zero), its segments {blocks} ({zero_blocks} zero)",
                self.stats.blocks, self.stats.zero_blocks
            ));
        }
        Ok(())
    }
}

/// The block map of one volume: references to its segments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockMap {
    /// Block size in bytes (524288).
    pub block_size: u32,
    /// Block indexes per segment.
    pub segment_blocks: u32,
    /// Segments holding at least one present block, sorted by `first_index`.
    pub segments: Vec<SegmentRef>,
}

/// A reference to one block-map segment object (`blockmaps/ab/<id>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRef {
    /// First block index the segment covers (a multiple of `segment_blocks`).
    pub first_index: u64,
    /// Present blocks in the segment.
    pub blocks: u32,
    /// Of those, blocks that are all zeros.
    pub zero_blocks: u32,
    /// The segment object's id.
    pub id: ChunkId,
}

impl SegmentRef {
    /// Checks a decoded segment against this reference of a volume of `block_count` blocks:
    /// same first index and block counts, and no block at or beyond the end of the volume
    /// (a `size_bytes` smaller than the data would otherwise truncate a restore silently).
    pub fn check_segment(
        &self,
        segment: &crate::blockmap::Segment,
        block_count: u64,
    ) -> Result<(), String> {
        let (blocks, zero_blocks) = segment.counts();
        if segment.first_index != self.first_index
            || blocks != self.blocks
            || zero_blocks != self.zero_blocks
        {
            return Err(format!(
                "segment ({}, {blocks} blocks, {zero_blocks} zero) does not match the \
                 manifest's reference ({}, {} blocks, {} zero)",
                segment.first_index, self.first_index, self.blocks, self.zero_blocks
            ));
        }
        if let Some((offset, _)) = segment.entries.last() {
            let last = segment.first_index.checked_add(u64::from(*offset));
            if last.is_none_or(|last| last >= block_count) {
                return Err(format!(
                    "block {} + {offset} is beyond the volume's {block_count} blocks",
                    segment.first_index
                ));
            }
        }
        Ok(())
    }
}

/// Sizes of an archive or a volume.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveStats {
    /// Present blocks (listed in the source), including all-zero ones.
    pub blocks: u64,
    /// Present blocks that are all zeros (not stored).
    pub zero_blocks: u64,
    /// Logical bytes of present blocks (`blocks × block_size`).
    pub size_bytes: u64,
    /// Blocks this archive read and stored (the rest were inherited from the parent).
    pub blocks_added: u64,
    /// Chunks first stored by this archive.
    pub new_chunks: u64,
    /// Logical (uncompressed) bytes of those chunks.
    pub new_bytes: u64,
    /// Bytes written for those chunks (compressed, encrypted).
    pub new_stored_bytes: u64,
    /// Blocks whose chunk was already in the repository.
    pub reused_chunks: u64,
}

impl ArchiveStats {
    pub(crate) fn add(&mut self, other: &ArchiveStats) {
        self.blocks += other.blocks;
        self.zero_blocks += other.zero_blocks;
        self.size_bytes += other.size_bytes;
        self.blocks_added += other.blocks_added;
        self.new_chunks += other.new_chunks;
        self.new_bytes += other.new_bytes;
        self.new_stored_bytes += other.new_stored_bytes;
        self.reused_chunks += other.reused_chunks;
    }
}

//! The block map: which chunk holds each block of a volume, stored in fixed-span segments.
//!
//! A volume's block indexes are cut into segments of `segment_blocks` indexes (16384 by
//! default: 8 GiB of volume). Each segment that holds at least one block is one object under
//! `blockmaps/`, content-addressed like a chunk, and the manifest lists the segments' ids. A
//! segment is encoded as sorted runs of consecutive indexes:
//!
//! ```text
//! "ASBM" | version u8 = 1 | first_index u64 LE | span u32 LE | run_count u32 LE
//! run_count × ( offset u32 LE | length u32 LE | kind u8 | kind 1: length × 32-byte chunk id )
//! ```
//!
//! `kind` 0 is a run of all-zero blocks (nothing stored), 1 a run of stored chunks. Runs are
//! sorted by offset, non-empty, non-overlapping and inside the span; the encoder merges
//! adjacent runs of the same kind. An index in no run was never written in the source.
//!
//! Memory: an archive writer holds at most three open segments per volume, a reader one
//! decoded segment (≤ 16384 × 33 bytes ≈ 0.5 MiB), and a manifest ~100 bytes of JSON per
//! segment (2048 segments, ~200 KiB, for a 16 TiB volume of 33.5 M blocks) — flat in the
//! volume size. Unchanged segments are shared between incremental archives by id.

use crate::id::ChunkId;

/// What one present block of a volume is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockRef {
    /// The block was written in the source and is all zeros; nothing is stored.
    Zero,
    /// The block's content is this chunk.
    Chunk(ChunkId),
}

impl BlockRef {
    /// The chunk, if the block is not all zeros.
    pub fn chunk(&self) -> Option<ChunkId> {
        match self {
            BlockRef::Zero => None,
            BlockRef::Chunk(id) => Some(*id),
        }
    }
}

const MAGIC: &[u8; 4] = b"ASBM";
/// The largest span a segment may have (a decoder limit against corrupt input).
pub const MAX_SPAN: u32 = 1 << 20;
const VERSION: u8 = 1;
const HEADER_LEN: usize = 4 + 1 + 8 + 4 + 4;
const RUN_HEADER_LEN: usize = 4 + 4 + 1;

/// One decoded segment: the present blocks with indexes in
/// `first_index .. first_index + span`, as (offset from `first_index`, block) sorted by
/// offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Index of the segment's first block (a multiple of `span`).
    pub first_index: u64,
    /// Number of indexes the segment covers (the repository's `segment_blocks`).
    pub span: u32,
    /// Present blocks, sorted by offset, offsets unique and `< span`.
    pub entries: Vec<(u32, BlockRef)>,
}

impl Segment {
    /// Present blocks and how many of them are all zeros.
    pub fn counts(&self) -> (u32, u32) {
        let zero = self
            .entries
            .iter()
            .filter(|(_, r)| *r == BlockRef::Zero)
            .count();
        (self.entries.len() as u32, zero as u32)
    }

    /// The canonical encoding (runs merged).
    pub fn encode(&self) -> Vec<u8> {
        debug_assert!(self.entries.windows(2).all(|w| w[0].0 < w[1].0));
        // Runs as (offset, length, is_chunk, start position in entries).
        let mut runs: Vec<(u32, u32, bool, usize)> = Vec::new();
        for (position, (offset, block)) in self.entries.iter().enumerate() {
            let is_chunk = matches!(block, BlockRef::Chunk(_));
            match runs.last_mut() {
                Some((start, len, kind, _)) if *kind == is_chunk && *start + *len == *offset => {
                    *len += 1;
                }
                _ => runs.push((*offset, 1, is_chunk, position)),
            }
        }
        let chunks = self
            .entries
            .iter()
            .filter(|(_, r)| matches!(r, BlockRef::Chunk(_)))
            .count();
        let mut out = Vec::with_capacity(HEADER_LEN + runs.len() * RUN_HEADER_LEN + chunks * 32);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&self.first_index.to_le_bytes());
        out.extend_from_slice(&self.span.to_le_bytes());
        out.extend_from_slice(&(runs.len() as u32).to_le_bytes());
        for (offset, len, is_chunk, position) in runs {
            out.extend_from_slice(&offset.to_le_bytes());
            out.extend_from_slice(&len.to_le_bytes());
            out.push(u8::from(is_chunk));
            if is_chunk {
                for (_, block) in &self.entries[position..position + len as usize] {
                    if let BlockRef::Chunk(id) = block {
                        out.extend_from_slice(id.as_bytes());
                    }
                }
            }
        }
        out
    }

    /// Decodes and validates a segment of the repository's `span`, refusing any other span
    /// before decoding a run: a few bytes can describe a zero run of [`MAX_SPAN`] blocks, so
    /// the span bounds what decoding allocates (`span` entries of 40 bytes).
    pub fn decode_with_span(bytes: &[u8], span: u32) -> Result<Segment, String> {
        let declared = bytes
            .get(13..17)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")));
        match declared {
            Some(declared) if declared != span => Err(format!(
                "span {declared} differs from the repository's segment_blocks {span}"
            )),
            _ => Segment::decode(bytes),
        }
    }

    /// Decodes and validates a segment; the error says what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<Segment, String> {
        let mut reader = Reader { bytes, at: 0 };
        if reader.take(4)? != MAGIC {
            return Err("not a block-map segment (bad magic)".to_owned());
        }
        let version = reader.take(1)?[0];
        if version != VERSION {
            return Err(format!("unsupported block-map version {version}"));
        }
        let first_index = reader.u64()?;
        let span = reader.u32()?;
        let run_count = reader.u32()? as usize;
        if span == 0 || span > MAX_SPAN {
            return Err(format!("segment span {span} is not in 1..={MAX_SPAN}"));
        }
        if run_count > span as usize {
            return Err(format!("{run_count} runs in a span of {span}"));
        }
        let mut entries = Vec::new();
        let mut next_free: u64 = 0;
        for _ in 0..run_count {
            let offset = reader.u32()?;
            let len = reader.u32()?;
            let kind = reader.take(1)?[0];
            if len == 0 {
                return Err(format!("empty run at offset {offset}"));
            }
            if u64::from(offset) < next_free {
                return Err(format!(
                    "run at offset {offset} overlaps or is out of order"
                ));
            }
            let end = u64::from(offset) + u64::from(len);
            if end > u64::from(span) {
                return Err(format!("run {offset}+{len} exceeds the span {span}"));
            }
            next_free = end;
            match kind {
                0 => entries.extend((offset..offset + len).map(|o| (o, BlockRef::Zero))),
                1 => {
                    let ids = reader.take(len as usize * 32)?;
                    entries.extend(ids.chunks_exact(32).zip(offset..).map(|(id, o)| {
                        (
                            o,
                            BlockRef::Chunk(ChunkId(id.try_into().expect("32 bytes"))),
                        )
                    }));
                }
                other => return Err(format!("unknown run kind {other}")),
            }
        }
        if reader.at != bytes.len() {
            return Err(format!("{} trailing bytes", bytes.len() - reader.at));
        }
        Ok(Segment {
            first_index,
            span,
            entries,
        })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| "truncated block map".to_owned())?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(n: u8) -> ChunkId {
        ChunkId([n; 32])
    }

    #[test]
    fn runs_are_merged() {
        let segment = Segment {
            first_index: 32,
            span: 16,
            entries: vec![
                (0, BlockRef::Chunk(id(1))),
                (1, BlockRef::Chunk(id(2))),
                (2, BlockRef::Zero),
                (3, BlockRef::Zero),
                (7, BlockRef::Chunk(id(3))),
            ],
        };
        let bytes = segment.encode();
        // header + 3 runs + 3 ids
        assert_eq!(bytes.len(), HEADER_LEN + 3 * RUN_HEADER_LEN + 3 * 32);
        assert_eq!(Segment::decode(&bytes).unwrap(), segment);
        assert_eq!(segment.counts(), (5, 2));
    }

    #[test]
    fn rejects_invalid_segments() {
        let segment = Segment {
            first_index: 0,
            span: 4,
            entries: vec![(1, BlockRef::Zero), (2, BlockRef::Chunk(id(1)))],
        };
        let good = segment.encode();
        assert!(Segment::decode(&good[..good.len() - 1]).is_err());
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(Segment::decode(&trailing).is_err());
        let mut bad_magic = good.clone();
        bad_magic[0] = b'X';
        assert!(Segment::decode(&bad_magic).is_err());
        // Second run moved onto the first: overlap.
        let mut overlap = good.clone();
        overlap[HEADER_LEN + RUN_HEADER_LEN] = 1;
        assert!(Segment::decode(&overlap).is_err());
        // Span shrunk below the runs.
        let mut small = good;
        small[13] = 2;
        assert!(Segment::decode(&small).is_err());
    }

    fn arb_segment() -> impl Strategy<Value = Segment> {
        (1u32..300, any::<u64>()).prop_flat_map(|(span, first)| {
            proptest::collection::btree_map(0..span, proptest::option::of(0u8..4), 0..120).prop_map(
                move |map| Segment {
                    first_index: first,
                    span,
                    entries: map
                        .into_iter()
                        .map(|(o, k)| (o, k.map_or(BlockRef::Zero, |n| BlockRef::Chunk(id(n)))))
                        .collect(),
                },
            )
        })
    }

    proptest! {
        #[test]
        fn encoding_round_trips(segment in arb_segment()) {
            let bytes = segment.encode();
            let back = Segment::decode(&bytes).unwrap();
            prop_assert_eq!(&back, &segment);
            prop_assert_eq!(back.encode(), bytes);
        }

        #[test]
        fn decoding_garbage_never_panics(segment in arb_segment(), at in any::<usize>(), byte in any::<u8>()) {
            let mut bytes = segment.encode();
            let at = at % bytes.len();
            bytes[at] = byte;
            if let Ok(decoded) = Segment::decode(&bytes) {
                // Whatever decodes is well formed.
                prop_assert!(decoded.entries.windows(2).all(|w| w[0].0 < w[1].0));
                prop_assert!(decoded.entries.iter().all(|(o, _)| *o < decoded.span));
            }
        }
    }
}

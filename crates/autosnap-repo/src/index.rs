//! [`ChunkIndex`]: the chunks an archive knows to be stored, so that a block whose chunk is
//! already in the repository costs no request (no HEAD), and a new one a single create.
//!
//! The index is one listing of `chunks/`, taken **after** the archive's shared lock (§10 of
//! the format): a gc deletes only under the exclusive lock, which it cannot hold while the
//! shared one is held, so every chunk the listing saw stays until the archive's manifest is
//! written — the same argument that makes a HEAD answer safe to deduplicate against. Each
//! reuse still checks the lock's trusted lifetime first. The index is never kept past the
//! archive that listed it: a listing from an earlier run could name chunks a gc has deleted
//! since.
//!
//! A listing is one request per 1000 chunks on S3, against one HEAD per block read, so the
//! writer lists only when that is cheaper ([`ListBudget`]), and stops listing past
//! [`MAX_INDEX_ENTRIES`] (32 bytes each in memory): then every block is checked on its own,
//! as without an index.

use std::collections::HashSet;
use std::sync::RwLock;

use crate::backend::ObjectInfo;
use crate::error::Result;
use crate::id::ChunkId;
use crate::repository::{id_from_object_name, Repository, CHUNKS_PREFIX, ENVELOPE_OVERHEAD};

/// Most chunks an index holds (128 MiB of ids, 2 TiB of distinct data); a larger repository
/// is not indexed.
pub const MAX_INDEX_ENTRIES: u64 = 4 << 20;

/// Chunk objects a listing request returns (S3 `ListObjectsV2` pages hold up to 1000 keys).
pub const LIST_PAGE: u64 = 1000;

/// How much listing an index may cost: it is built only while the listed chunks stay within
/// `max_entries`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListBudget {
    pub max_entries: u64,
}

impl ListBudget {
    /// For an archive that will read about `blocks` blocks: list while the listing costs
    /// fewer requests than one HEAD per block would (a page per [`LIST_PAGE`] chunks), and
    /// never past [`MAX_INDEX_ENTRIES`].
    pub fn for_blocks(blocks: u64) -> ListBudget {
        ListBudget {
            max_entries: blocks.saturating_mul(LIST_PAGE).min(MAX_INDEX_ENTRIES),
        }
    }
}

/// The chunks known to be stored: those listed when the archive began, and those the archive
/// stored or found since.
#[derive(Debug, Default)]
pub struct ChunkIndex {
    /// Sorted and deduplicated: the listing.
    listed: Vec<ChunkId>,
    /// Added during the archive.
    added: RwLock<HashSet<ChunkId>>,
    /// Listed with a size no chunk can have (sorted): stored again over the damaged object.
    damaged: Vec<ChunkId>,
}

impl ChunkIndex {
    /// Whether chunk `id` is known to be stored.
    pub fn contains(&self, id: &ChunkId) -> bool {
        self.listed.binary_search(id).is_ok() || self.added.read().unwrap().contains(id)
    }

    /// Records that chunk `id` is stored.
    pub fn insert(&self, id: ChunkId) {
        if self.listed.binary_search(&id).is_err() {
            self.added.write().unwrap().insert(id);
        }
    }

    /// Whether the listing showed chunk `id`'s object with a size no chunk can have.
    pub fn is_damaged(&self, id: &ChunkId) -> bool {
        self.damaged.binary_search(id).is_ok()
    }

    /// Chunks known.
    pub fn len(&self) -> usize {
        self.listed.len() + self.added.read().unwrap().len()
    }

    /// Whether no chunk is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Repository {
    /// Lists `chunks/` into a [`ChunkIndex`], or `None` when the repository holds more chunks
    /// than `budget` allows (the caller then checks each chunk on its own). Objects that are
    /// not chunks by name are ignored; chunk objects whose listed size no chunk can have
    /// (shorter than an empty envelope, or larger than a chunk plus its envelope: torn or
    /// planted) are recorded as damaged, so that the writer stores them again over the
    /// damaged object rather than deduplicating against it.
    ///
    /// Call it only while holding a lock that keeps gc out, and use the index only under it.
    pub fn list_chunk_index(&self, budget: ListBudget) -> Result<Option<ChunkIndex>> {
        let limit = u64::from(self.chunk_size()) + ENVELOPE_OVERHEAD as u64;
        // An encrypted object has at least its header, nonce and tag; a plain one its header
        // and one byte (blocks are never empty).
        let least = if self.is_encrypted() {
            ENVELOPE_OVERHEAD as u64
        } else {
            2
        };
        let mut listed = Vec::new();
        let mut damaged = Vec::new();
        let mut over = false;
        let stop = crate::error::BackendError::Remote {
            op: "list",
            name: CHUNKS_PREFIX.to_owned(),
            source: "index budget exceeded".into(),
        };
        let mut stop = Some(stop);
        let result = self
            .backend()
            .list(CHUNKS_PREFIX, &mut |ObjectInfo { name, size }| {
                if listed.len() as u64 >= budget.max_entries {
                    over = true;
                    // Ends the listing early: the error is ours and dropped below.
                    return Err(stop.take().expect("returned once"));
                }
                if let Some(id) = id_from_object_name(&name, CHUNKS_PREFIX) {
                    if (least..=limit).contains(&size) {
                        listed.push(id);
                    } else {
                        damaged.push(id);
                    }
                }
                Ok(())
            });
        if over {
            return Ok(None);
        }
        result?;
        listed.sort_unstable();
        listed.dedup();
        damaged.sort_unstable();
        Ok(Some(ChunkIndex {
            listed,
            added: RwLock::default(),
            damaged,
        }))
    }
}

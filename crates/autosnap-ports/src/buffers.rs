//! Block buffers reused across a transfer, and the LINEAR aggregate checksum of a snapshot.

use sha2::{Digest, Sha256};

use crate::ports::BLOCK_SIZE;

/// SHA-256 of a block (EBS direct's per-block checksum, before its base64 encoding).
pub fn block_sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// The LINEAR aggregate checksum: SHA-256 over the concatenated raw 32-byte digests of the
/// written blocks in block-index order (what AWS's own coldsnap sends, base64 encoded).
#[derive(Default)]
pub struct LinearChecksum {
    hasher: Sha256,
    blocks: u64,
}

impl LinearChecksum {
    /// Adds the next written block's digest (call in ascending block-index order).
    pub fn push(&mut self, digest: &[u8; 32]) {
        self.hasher.update(digest);
        self.blocks += 1;
    }
    pub fn blocks(&self) -> u64 {
        self.blocks
    }
    /// The raw aggregate digest.
    pub fn finish(self) -> [u8; 32] {
        self.hasher.finalize().into()
    }
}

/// Block buffers one transfer reuses: a block's 512 KiB comes back once its request is done, so
/// a transfer allocates about as many buffers as it has blocks in flight instead of one per
/// block (each fresh one costs the allocator a trip to the kernel: page faults and zeroing).
pub struct BlockBuffers {
    free: std::sync::Mutex<Vec<bytes::BytesMut>>,
    keep: usize,
}

impl BlockBuffers {
    /// A pool that keeps at most `keep` idle buffers.
    pub fn new(keep: usize) -> BlockBuffers {
        BlockBuffers {
            free: std::sync::Mutex::new(Vec::with_capacity(keep)),
            keep,
        }
    }

    /// A buffer with room for one block; its length and content are whatever it last held.
    pub fn take(&self) -> bytes::BytesMut {
        let reused = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop();
        reused.unwrap_or_else(|| bytes::BytesMut::with_capacity(BLOCK_SIZE))
    }

    /// A buffer of exactly one block, for reading into (stale content: overwrite all of it).
    pub fn take_block(&self) -> bytes::BytesMut {
        let mut buf = self.take();
        buf.resize(BLOCK_SIZE, 0); // zeroes only what was never written
        buf
    }

    /// Gives a block back, if nothing else holds it any more (a clone still in a request's
    /// body keeps it out of the pool; it is then freed as usual).
    pub fn give(&self, block: bytes::Bytes) {
        let Ok(buf) = block.try_into_mut() else {
            return;
        };
        if buf.capacity() < BLOCK_SIZE {
            return;
        }
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < self.keep {
            free.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_checksum_is_over_raw_digests() {
        let a = vec![1u8; BLOCK_SIZE];
        let b = vec![2u8; BLOCK_SIZE];
        let mut linear = LinearChecksum::default();
        let (da, db) = (block_sha256(&a), block_sha256(&b));
        linear.push(&da);
        linear.push(&db);
        let mut concat = da.to_vec();
        concat.extend_from_slice(&db);
        let expected: [u8; 32] = Sha256::digest(&concat).into();
        assert_eq!(linear.blocks(), 2);
        assert_eq!(linear.finish(), expected);
    }

    #[test]
    fn a_returned_block_is_reused_and_a_shared_one_is_not() {
        let pool = BlockBuffers::new(1);
        let buf = pool.take_block();
        let ptr = buf.as_ptr();
        let frozen = buf.freeze();
        let clone = frozen.clone();
        pool.give(frozen); // still shared with `clone`: not pooled
        assert_ne!(pool.take().as_ptr(), ptr);
        pool.give(clone); // the last holder: pooled
        assert_eq!(pool.take().as_ptr(), ptr);
    }
}

//! Upload and download reuse their 512 KiB block buffers (a pool per transfer): a buffer that
//! held one block must never leak its bytes into another. One request at a time makes every
//! block after the first land in a buffer that held the block before it.

use crate::support::TestBed;

const BLOCK: usize = 524_288;

/// Deterministic pseudo-random bytes (xorshift), never zero.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&(x | 0x0101_0101_0101_0101).to_le_bytes());
    }
    out.truncate(len);
    out
}

#[test]
fn reused_block_buffers_carry_nothing_from_one_block_into_the_next() {
    let bed = TestBed::start();
    let dir = tempfile::tempdir().unwrap();
    // Full random blocks, then a zero block, then a short tail: the tail's padding and the
    // zero block are read into buffers that held random data.
    let mut src = noise(1, 2 * BLOCK);
    src.extend(std::iter::repeat_n(0u8, BLOCK));
    src.extend(noise(2, BLOCK));
    src.extend(noise(3, 1000));
    let path = dir.path().join("disk.img");
    std::fs::write(&path, &src).unwrap();

    let up = bed.json(&["upload", path.to_str().unwrap(), "--concurrency", "1"]);
    assert_eq!(up["blocks_written"], 4, "{up}"); // 3 random + the padded tail
    assert_eq!(up["zero_blocks_skipped"], 1, "{up}");
    let snap = up["snapshot_id"].as_str().unwrap();

    let out = dir.path().join("out.img");
    let down = bed.json(&[
        "download",
        snap,
        out.to_str().unwrap(),
        "--concurrency",
        "1",
    ]);
    assert_eq!(down["blocks_read"], 4, "{down}");
    let got = std::fs::read(&out).unwrap();
    assert_eq!(got.len(), 1 << 30);
    assert!(
        got[..src.len()] == src[..],
        "the image differs from the upload"
    );
    let first_stale = got[src.len()..].iter().position(|&b| b != 0);
    assert_eq!(first_stale, None, "the padding after the tail is not zero");
}

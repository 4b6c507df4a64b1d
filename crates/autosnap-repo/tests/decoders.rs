//! Fuzzing of every decoder that reads repository objects — config, key file, manifest,
//! block-map segment, and the envelope of chunks — with arbitrary bytes and with mutations of
//! valid objects, through the same calls `open`, `verify` and a restore make. Each decoder
//! must return an error rather than panic, and must never make a single allocation larger than
//! the cap stated for its kind of object (the constants named below), whatever it is fed.
//! Case counts are bounded so that this runs inside `cargo test`.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::{Arc, LazyLock};

use autosnap_repo::config::MAX_CONFIG_LEN;
use autosnap_repo::crypto::{KeyFile, MAX_KEY_FILE_LEN};
use autosnap_repo::repository::{
    blockmap_object_name, chunk_object_name, ENVELOPE_OVERHEAD, MAX_MANIFEST_LEN,
};
use autosnap_repo::{
    ArchiveReader, Backend, BlockRef, ChunkId, Credentials, EncryptionInit, Error, LocalBackend,
    Manifest, MemoryBackend, RepoConfig, Repository, Segment, VolumeSource, CHUNK_SIZE,
};
use common::*;
use proptest::prelude::*;
use sha2::{Digest, Sha256};

// ---- the largest single allocation, per thread ------------------------------------------

/// The system allocator, noting the largest single request the current thread makes. (Test
/// code only: the product has no allocator of its own.)
struct Tracking;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: never touch thread-local state while a thread is being torn down.
    let _ = LARGEST.try_with(|l| {
        if size > l.get() {
            l.set(size)
        }
    });
}

// SAFETY: every call is forwarded unchanged to `System`; `note` neither allocates nor panics.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Tracking = Tracking;

/// Runs `f` and returns its result with the largest single allocation it made.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    let out = f();
    (out, LARGEST.with(|l| l.get()))
}

// ---- caps ---------------------------------------------------------------------------------

/// Segments of 4 blocks, as `common::options` makes them.
const SPAN: u32 = 4;
/// A decoded segment holds at most `span` entries of this size; a growing vector may reserve
/// twice what it holds.
const SEGMENT_ENTRY: usize = std::mem::size_of::<(u32, BlockRef)>();
/// Fixed allowance for small allocations any decoder makes (messages, JSON maps, names).
const SMALL: usize = 64 << 10;

fn chunk_cap() -> usize {
    CHUNK_SIZE as usize + ENVELOPE_OVERHEAD
}

fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Bytes mutated: a byte overwritten, a range removed, or bytes inserted.
#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Cut(usize, usize),
    Insert(usize, Vec<u8>),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Mutation::Set(a, b)),
        1 => (any::<usize>(), 1usize..64).prop_map(|(a, n)| Mutation::Cut(a, n)),
        1 => (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(a, b)| Mutation::Insert(a, b)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len().max(1);
        match m {
            Mutation::Set(at, b) => {
                if !bytes.is_empty() {
                    let at = at % bytes.len();
                    bytes[at] = *b;
                }
            }
            Mutation::Cut(at, n) => {
                let at = at % len;
                let end = (at + n).min(bytes.len());
                if at < end {
                    bytes.drain(at..end);
                }
            }
            Mutation::Insert(at, b) => {
                let at = at % (bytes.len() + 1);
                bytes.splice(at..at, b.iter().copied());
            }
            Mutation::Truncate(at) => bytes.truncate(at % len),
        }
    }
    bytes
}

/// A number a hostile manifest might hold: the edges and anything else.
fn hostile_number() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(3),
        Just(4),
        Just(5),
        Just(CHUNK_SIZE as u64),
        Just(u64::from(u32::MAX)),
        Just(u64::MAX),
        Just(u64::MAX - 3),
        0u64..64,
        any::<u64>(),
    ]
}

// ---- fixtures -------------------------------------------------------------------------------

/// An unencrypted repository with one archive of two volumes (5 and 9 blocks, some zero,
/// some absent).
fn fixture(encryption: EncryptionInit) -> (Arc<MemoryBackend>, Repository, Manifest) {
    let (backend, repo) = memory_repo(encryption);
    let mut writer = repo.begin_archive(source("snap-fuzz")).unwrap();
    for (blocks, skip) in [(5u64, 2u64), (9, 6)] {
        let mut volume = VolumeSource::ebs(0);
        volume.size_bytes = blocks * BS as u64 - 100;
        let v = writer.add_volume(volume).unwrap();
        for i in (0..blocks).filter(|i| *i != skip) {
            let fill = if i % 4 == 1 {
                Fill::Zero
            } else {
                Fill::Text(i)
            };
            writer.add_block(v, i, &block(fill)).unwrap();
        }
    }
    let manifest = writer.finish().unwrap();
    (backend, repo, manifest)
}

/// Every block of every volume, read the way a restore reads them; checks what it yields.
fn read_everything(repo: &Repository, manifest: &Manifest) -> Result<(), Error> {
    let reader = ArchiveReader::new(repo, manifest.clone());
    for (v, volume) in manifest.volumes.iter().enumerate() {
        let mut last = None;
        for entry in reader.blocks(v)? {
            let (index, block) = entry?;
            assert!(index < volume.block_count(), "index {index} past the end");
            assert!(last.is_none_or(|l| l < index), "indexes out of order");
            last = Some(index);
            reader.read_block(&block)?;
        }
    }
    Ok(())
}

// ---- config -----------------------------------------------------------------------------------

/// Encryption without Argon2 (which would dominate the run time of hundreds of cases).
fn encrypted() -> EncryptionInit {
    EncryptionInit::DataKey {
        key: [3; 32],
        kms: Some(autosnap_repo::KmsWrappedKey::new("alias/x", &[1, 2])),
    }
}

static VALID_CONFIGS: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| {
    [EncryptionInit::None, passphrase("pw"), encrypted()]
        .into_iter()
        .map(|e| memory_repo(e).0.raw("config").unwrap())
        .collect()
});

static VALID_KEY_FILE: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let (backend, _repo) = memory_repo(passphrase("pw"));
    let name = backend
        .names()
        .into_iter()
        .find(|n| n.starts_with("keys/"))
        .unwrap();
    backend.raw(&name).unwrap()
});

fn check_config(bytes: &[u8]) {
    let (result, largest) = largest_allocation(|| RepoConfig::decode(bytes));
    assert!(
        largest <= MAX_CONFIG_LEN as usize * 4 + SMALL,
        "{largest} bytes"
    );
    if let Ok(config) = result {
        assert_eq!(config.chunk_size, CHUNK_SIZE);
        assert!(config.segment_blocks >= 1);
        assert_eq!(config.id.len(), 32);
        assert_eq!(
            config.encryption.is_some(),
            config.hash == autosnap_repo::config::HashAlgorithm::HmacSha256
        );
    }
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn config_from_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check_config(&bytes);
    }

    #[test]
    fn config_mutated(which in 0usize..3, mutations in proptest::collection::vec(mutation(), 1..4)) {
        let valid = &VALID_CONFIGS[which];
        check_config(&mutate(valid.clone(), &mutations));
    }
}

#[test]
fn oversized_config_is_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path(), EncryptionInit::None);
    drop(repo);
    // A sparse 1 GiB file where the config is: refused from its size alone.
    let file = std::fs::File::options()
        .write(true)
        .open(dir.path().join("config"))
        .unwrap();
    file.set_len(1 << 30).unwrap();
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path()));
    let (result, largest) = largest_allocation(|| Repository::open(backend, Credentials::None));
    let err = result.unwrap_err();
    assert!(err.to_string().contains("larger than 65536 bytes"), "{err}");
    assert!(largest < SMALL, "{largest} bytes");
}

// ---- key files --------------------------------------------------------------------------------

fn check_key_file(bytes: &[u8]) {
    let (result, largest) = largest_allocation(|| KeyFile::decode(bytes));
    assert!(
        largest <= MAX_KEY_FILE_LEN as usize * 4 + SMALL,
        "{largest} bytes"
    );
    if let Ok(file) = result {
        file.params.validate().unwrap();
    }
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn key_file_from_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check_key_file(&bytes);
    }

    #[test]
    fn key_file_mutated(mutations in proptest::collection::vec(mutation(), 1..4),
                        m_cost in hostile_number(), t_cost in hostile_number()) {
        let valid = VALID_KEY_FILE.clone();
        check_key_file(&mutate(valid.clone(), &mutations));
        // Hostile parameters: refused by decode, never handed to Argon2.
        let mut value: serde_json::Value = serde_json::from_slice(&valid).unwrap();
        value["params"]["m_cost_kib"] = m_cost.into();
        value["params"]["t_cost"] = t_cost.into();
        check_key_file(&serde_json::to_vec(&value).unwrap());
    }
}

// ---- manifests --------------------------------------------------------------------------------

/// Paths of the numbers in a manifest that a reader computes with.
const MANIFEST_NUMBERS: &[&[&str]] = &[
    &["volumes", "0", "block_map", "block_size"],
    &["volumes", "0", "block_map", "segment_blocks"],
    &["volumes", "1", "size_bytes"],
    &["volumes", "0", "size_bytes"],
    &["volumes", "0", "block_map", "segments", "0", "first_index"],
    &["volumes", "0", "block_map", "segments", "1", "first_index"],
    &["volumes", "1", "block_map", "segments", "2", "first_index"],
    &["volumes", "0", "block_map", "segments", "1", "blocks"],
    &["volumes", "1", "block_map", "segments", "0", "zero_blocks"],
    &["volumes", "0", "stats", "blocks"],
    &["stats", "blocks"],
    &["version"],
];

fn pointer(path: &[&str]) -> String {
    path.iter().map(|p| format!("/{p}")).collect()
}

/// Reads the manifest planted under `manifest`'s name and, when it is accepted, everything
/// it references; neither may panic or allocate above the manifest cap.
fn check_manifest(repo: &Repository, manifest: &Manifest) {
    let ((), largest) = largest_allocation(|| {
        if let Ok(read) = repo.read_manifest(&manifest.id) {
            // Accepted: it restores or fails cleanly, and never yields an index past the end.
            let _ = read_everything(repo, &read);
        }
    });
    assert!(
        largest <= MAX_MANIFEST_LEN + ENVELOPE_OVERHEAD,
        "{largest} bytes"
    );
    let ((), largest) = largest_allocation(|| {
        let _ = repo.verify(false);
    });
    assert!(
        largest <= MAX_MANIFEST_LEN + ENVELOPE_OVERHEAD,
        "{largest} bytes"
    );
}

proptest! {
    #![proptest_config(cases(64))]

    #[test]
    fn manifest_from_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let (backend, repo, manifest) = fixture(EncryptionInit::None);
        backend.put_raw(&format!("manifests/{}", manifest.id), bytes);
        check_manifest(&repo, &manifest);
    }

    #[test]
    fn manifest_with_hostile_numbers(edits in proptest::collection::vec(
        (0..MANIFEST_NUMBERS.len(), hostile_number()), 1..4)) {
        let (backend, repo, manifest) = fixture(EncryptionInit::None);
        let mut value = serde_json::to_value(&manifest).unwrap();
        for (which, number) in edits {
            if let Some(slot) = value.pointer_mut(&pointer(MANIFEST_NUMBERS[which])) {
                *slot = number.into();
            }
        }
        let mut raw = vec![0u8];
        raw.extend(serde_json::to_vec(&value).unwrap());
        backend.put_raw(&format!("manifests/{}", manifest.id), raw);
        check_manifest(&repo, &manifest);
    }

    #[test]
    fn manifest_mutated(encrypted in any::<bool>(),
                        mutations in proptest::collection::vec(mutation(), 1..4)) {
        let encryption = if encrypted { self::encrypted() } else { EncryptionInit::None };
        let (backend, repo, manifest) = fixture(encryption);
        let name = format!("manifests/{}", manifest.id);
        let valid = backend.raw(&name).unwrap();
        let mutated = mutate(valid.clone(), &mutations);
        let changed = mutated != valid;
        backend.put_raw(&name, mutated);
        check_manifest(&repo, &manifest);
        if encrypted && changed {
            // Nothing but the original authenticates.
            prop_assert!(repo.read_manifest(&manifest.id).is_err());
        }
    }
}

#[test]
fn oversized_manifest_is_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path(), EncryptionInit::None);
    let mut writer = repo.begin_archive(source("snap-big")).unwrap();
    writer.add_volume(VolumeSource::ebs(1)).unwrap();
    let manifest = writer.finish().unwrap();
    // A sparse 4 GiB file where the manifest is.
    let path = dir.path().join(format!("manifests/{}", manifest.id));
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(4 << 30)
        .unwrap();
    let (result, largest) = largest_allocation(|| repo.read_manifest(&manifest.id));
    let err = result.unwrap_err().to_string();
    assert!(err.contains(&format!("manifests/{}", manifest.id)), "{err}");
    assert!(err.contains("larger than"), "{err}");
    assert!(largest < SMALL, "{largest} bytes");
    // `repo list` and verify carry on and name it.
    let scan = repo.scan_archives().unwrap();
    assert_eq!(scan.unreadable.len(), 1);
    let report = repo.verify(false).unwrap();
    assert_eq!(report.bad_manifests.len(), 1);
}

// ---- block-map segments -----------------------------------------------------------------------

/// Stores `bytes` as a segment under the id they hash to (unencrypted repository), so that
/// they reach the decoder, and reads it back.
fn check_segment(backend: &MemoryBackend, repo: &Repository, bytes: Vec<u8>) {
    let id = ChunkId(Sha256::digest(&bytes).into());
    let mut sealed = vec![0u8];
    sealed.extend_from_slice(&bytes);
    backend.put_raw(&blockmap_object_name(&id), sealed);
    let (result, largest) = largest_allocation(|| repo.get_segment(&id));
    let cap = 2 * SPAN as usize * SEGMENT_ENTRY + 2 * (21 + SPAN as usize * 41) + SMALL;
    assert!(largest <= cap, "{largest} bytes");
    if let Ok(segment) = result {
        assert_eq!(segment.span, SPAN);
        assert!(segment.entries.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(segment.entries.iter().all(|(o, _)| *o < SPAN));
    }
    // The decoder alone, on any span: no panic, and the entries stay within the span.
    if let Ok(segment) = Segment::decode(&bytes) {
        assert!(segment.entries.len() <= segment.span as usize);
    }
}

/// A segment header declaring `span`, then `tail`.
fn segment_bytes(span: u32, runs: u32, tail: &[u8]) -> Vec<u8> {
    let mut out = b"ASBM\x01".to_vec();
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&span.to_le_bytes());
    out.extend_from_slice(&runs.to_le_bytes());
    out.extend_from_slice(tail);
    out
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn segment_from_arbitrary_bytes(span in prop_oneof![Just(SPAN), Just(1u32 << 20), any::<u32>()],
                                    runs in 0u32..6,
                                    tail in proptest::collection::vec(any::<u8>(), 0..200)) {
        let (backend, repo) = memory_repo(EncryptionInit::None);
        check_segment(&backend, &repo, segment_bytes(span, runs, &tail));
        check_segment(&backend, &repo, tail);
    }

    #[test]
    fn segment_mutated(mutations in proptest::collection::vec(mutation(), 1..4)) {
        let (backend, repo, manifest) = fixture(EncryptionInit::None);
        let id = manifest.volumes[1].block_map.segments[0].id;
        let valid = backend.raw(&blockmap_object_name(&id)).unwrap();
        // The stored object is the envelope; mutate the segment inside it.
        let plain = if valid[0] == 0 { valid[1..].to_vec() } else {
            repo.get_segment(&id).unwrap();
            return Ok(());
        };
        check_segment(&backend, &repo, mutate(plain, &mutations));
    }
}

#[test]
fn a_tiny_segment_cannot_make_the_reader_allocate_a_huge_span() {
    // One zero run of 2^20 blocks in 30 bytes: refused before decoding, since the repository's
    // span is 4.
    let (backend, repo) = memory_repo(EncryptionInit::None);
    let mut run = Vec::new();
    run.extend_from_slice(&0u32.to_le_bytes());
    run.extend_from_slice(&(1u32 << 20).to_le_bytes());
    run.push(0);
    let bytes = segment_bytes(1 << 20, 1, &run);
    let id = ChunkId(Sha256::digest(&bytes).into());
    let mut sealed = vec![0u8];
    sealed.extend_from_slice(&bytes);
    backend.put_raw(&blockmap_object_name(&id), sealed);
    let (result, largest) = largest_allocation(|| repo.get_segment(&id));
    let err = result.unwrap_err().to_string();
    assert!(
        err.contains("differs from the repository's segment_blocks 4"),
        "{err}"
    );
    assert!(largest < SMALL, "{largest} bytes");
}

// ---- the envelope (chunks) ----------------------------------------------------------------------

fn check_chunk(backend: &MemoryBackend, repo: &Repository, id: ChunkId, sealed: Vec<u8>) {
    backend.put_raw(&chunk_object_name(&id), sealed);
    let (result, largest) = largest_allocation(|| repo.get_chunk(&id));
    assert!(largest <= 2 * chunk_cap(), "{largest} bytes");
    if let Ok(data) = result {
        assert!(data.len() <= CHUNK_SIZE as usize);
        assert_eq!(repo.chunk_id(&data), id);
    }
}

/// A zstd frame of `data`, as writers make them (content size recorded).
fn zstd_frame(data: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(data, 3).unwrap()
}

proptest! {
    #![proptest_config(cases(128))]

    #[test]
    fn envelope_from_arbitrary_bytes(encrypted in any::<bool>(),
                                     header in any::<u8>(),
                                     body in proptest::collection::vec(any::<u8>(), 0..300)) {
        let encryption = if encrypted { self::encrypted() } else { EncryptionInit::None };
        let (backend, repo) = memory_repo(encryption);
        let mut sealed = vec![header];
        sealed.extend_from_slice(&body);
        let id = ChunkId(Sha256::digest(&body).into());
        check_chunk(&backend, &repo, id, sealed);
    }

    #[test]
    fn envelope_with_hostile_zstd(len in prop_oneof![Just(CHUNK_SIZE as usize),
                                                     Just(CHUNK_SIZE as usize + 1),
                                                     Just(16usize << 20),
                                                     0usize..4096],
                                  mutations in proptest::collection::vec(mutation(), 0..3)) {
        // Zeros compress to a few bytes: a small object that decompresses to `len` bytes.
        let (backend, repo) = memory_repo(EncryptionInit::None);
        let plain = vec![0u8; len];
        let mut sealed = vec![0x01];
        sealed.extend(mutate(zstd_frame(&plain), &mutations));
        let id = ChunkId(Sha256::digest(&plain).into());
        check_chunk(&backend, &repo, id, sealed);
    }

    #[test]
    fn envelope_mutated(encrypted in any::<bool>(),
                        mutations in proptest::collection::vec(mutation(), 1..4)) {
        let encryption = if encrypted { self::encrypted() } else { EncryptionInit::None };
        let (backend, repo) = memory_repo(encryption);
        let original = block(Fill::Text(9));
        let id = repo.put_chunk(&original).unwrap().id;
        let valid = backend.raw(&chunk_object_name(&id)).unwrap();
        let mutated = mutate(valid.clone(), &mutations);
        let changed = mutated != valid;
        check_chunk(&backend, &repo, id, mutated);
        if changed {
            match repo.get_chunk(&id) {
                // AEAD: any change to an encrypted envelope is refused.
                Ok(_) if encrypted => prop_assert!(false, "a changed encrypted envelope was accepted"),
                // Unencrypted, the id is the hash of the content, not of the envelope: a zstd
                // frame has bytes whose change decodes to the same block (seen: one byte of a
                // 110-byte frame). Accepted only when it is the block, byte for byte.
                Ok(data) => prop_assert!(data == original, "a changed envelope decoded to other data"),
                Err(_) => {}
            }
        }
    }
}

#[test]
fn oversized_chunk_is_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path(), EncryptionInit::None);
    let id = repo.put_chunk(&block(Fill::Text(1))).unwrap().id;
    let path = dir.path().join(chunk_object_name(&id));
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let (result, largest) = largest_allocation(|| repo.get_chunk(&id));
    match result {
        Err(Error::CorruptChunk { id: bad, reason }) => {
            assert_eq!(bad, id);
            assert!(reason.contains("larger than"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(largest < SMALL, "{largest} bytes");
}

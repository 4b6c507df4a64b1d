//! Chunk store throughput: `put_chunk` and `get_chunk` on 512 KiB blocks, with and without
//! encryption, for incompressible and compressible data.
//!
//!     cargo bench -p autosnap-repo --bench repo
//!
//! `put_chunk` runs against a backend that discards writes (so every put does the full work:
//! hash, compress, encrypt) and against a local directory (adds a file write, fsync and
//! rename per chunk); `get_chunk` reads from memory (read, decrypt, decompress, hash check).
//! Results: bench/archive/RESULTS.md.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use autosnap_repo::{
    Backend, BackendError, Compression, EncryptionInit, InitOptions, LocalBackend, MemoryBackend,
    ObjectInfo, Repository, CHUNK_SIZE,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// Accepts every write and forgets it; only `config` is kept so the repository opens.
#[derive(Debug, Default)]
struct DiscardBackend {
    config: std::sync::Mutex<Option<Vec<u8>>>,
}

impl Backend for DiscardBackend {
    fn location(&self) -> String {
        "discard".into()
    }
    fn read(&self, name: &str) -> Result<Vec<u8>, BackendError> {
        match (name, self.config.lock().unwrap().clone()) {
            ("config", Some(c)) => Ok(c),
            _ => Err(BackendError::NotFound { name: name.into() }),
        }
    }
    fn write(&self, name: &str, data: &[u8]) -> Result<(), BackendError> {
        if name == "config" {
            *self.config.lock().unwrap() = Some(data.to_vec());
        }
        Ok(())
    }
    fn create(&self, name: &str, data: &[u8]) -> Result<bool, BackendError> {
        self.write(name, data)?;
        Ok(true)
    }
    fn exists(&self, name: &str) -> Result<bool, BackendError> {
        Ok(name == "config" && self.config.lock().unwrap().is_some())
    }
    fn list(
        &self,
        _prefix: &str,
        _visit: &mut dyn FnMut(ObjectInfo) -> Result<(), BackendError>,
    ) -> Result<(), BackendError> {
        Ok(())
    }
    fn delete(&self, _name: &str) -> Result<(), BackendError> {
        Ok(())
    }
}

fn random_block(seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(CHUNK_SIZE as usize);
    while out.len() < CHUNK_SIZE as usize {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out
}

/// Text-like data that zstd compresses about 4:1: words drawn pseudo-randomly.
fn text_block(seed: u64) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "volume",
        "snapshot",
        "block ",
        "the ",
        "of ",
        "backup ",
        "retention",
        "archive ",
        "0x1f3a ",
        "ERROR ",
        "INFO ",
        "2024-01-01T00:00:00Z ",
        "\n",
        "chunk ",
        "key=value ",
        "; ",
    ];
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(CHUNK_SIZE as usize);
    while out.len() < CHUNK_SIZE as usize {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(WORDS[(state % 16) as usize].as_bytes());
    }
    out.truncate(CHUNK_SIZE as usize);
    out
}

fn encryption(encrypted: bool) -> EncryptionInit {
    if encrypted {
        EncryptionInit::DataKey {
            key: [7; 32],
            kms: None,
        }
    } else {
        EncryptionInit::None
    }
}

fn init(backend: Arc<dyn Backend>, encrypted: bool) -> Repository {
    Repository::init(
        backend,
        InitOptions {
            encryption: encryption(encrypted),
            compression: Compression::default(),
            ..InitOptions::default()
        },
    )
    .unwrap()
}

const CASES: [(&str, bool, bool); 4] = [
    ("plain/random", false, false),
    ("plain/text", false, true),
    ("encrypted/random", true, false),
    ("encrypted/text", true, true),
];

fn data(text: bool) -> Vec<u8> {
    if text {
        text_block(42)
    } else {
        random_block(42)
    }
}

fn put_chunk(c: &mut Criterion) {
    let mut group = c.benchmark_group("put_chunk");
    group.throughput(Throughput::Bytes(u64::from(CHUNK_SIZE)));
    group.measurement_time(Duration::from_secs(4));
    for (name, encrypted, text) in CASES {
        let repo = init(Arc::new(DiscardBackend::default()), encrypted);
        let block = data(text);
        group.bench_function(BenchmarkId::new("discard", name), |b| {
            b.iter(|| black_box(repo.put_chunk(black_box(&block)).unwrap()))
        });
    }
    // A local directory: every put is a new file (temp, fsync, rename, fsync directory).
    let dir = tempfile::tempdir().unwrap();
    for (name, encrypted, text) in [CASES[0], CASES[2]] {
        let root = dir.path().join(name.replace('/', "-"));
        let repo = init(Arc::new(LocalBackend::new(root)), encrypted);
        let mut block = data(text);
        let counter = AtomicU64::new(0);
        group.sample_size(10);
        group.bench_function(BenchmarkId::new("local-fsync", name), |b| {
            b.iter(|| {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                block[..8].copy_from_slice(&n.to_le_bytes()); // a new chunk every time
                black_box(repo.put_chunk(&block).unwrap())
            })
        });
    }
    group.finish();
}

fn get_chunk(c: &mut Criterion) {
    let mut group = c.benchmark_group("get_chunk");
    group.throughput(Throughput::Bytes(u64::from(CHUNK_SIZE)));
    group.measurement_time(Duration::from_secs(4));
    for (name, encrypted, text) in CASES {
        let repo = init(Arc::new(MemoryBackend::new()), encrypted);
        let id = repo.put_chunk(&data(text)).unwrap().id;
        group.bench_function(BenchmarkId::new("memory", name), |b| {
            b.iter(|| black_box(repo.get_chunk(black_box(&id)).unwrap()))
        });
    }
    group.finish();
}

criterion_group!(benches, put_chunk, get_chunk);
criterion_main!(benches);

//! Helpers shared by the integration tests: deterministic block contents, images, repos.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use autosnap_repo::{
    ArchiveSource, Backend, Compression, EncryptionInit, InitOptions, KdfParams, LocalBackend,
    MemoryBackend, Repository, SourceKind, CHUNK_SIZE,
};
use sha2::{Digest, Sha256};

pub const BS: usize = CHUNK_SIZE as usize;

/// What one block of a test image holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// All zeros.
    Zero,
    /// Pseudo-random (incompressible) bytes from this seed.
    Random(u64),
    /// A compressible text pattern from this seed.
    Text(u64),
}

pub fn block(fill: Fill) -> Vec<u8> {
    match fill {
        Fill::Zero => vec![0; BS],
        Fill::Random(seed) => {
            let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut out = Vec::with_capacity(BS);
            while out.len() < BS {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                out.extend_from_slice(&state.to_le_bytes());
            }
            out
        }
        Fill::Text(seed) => format!("block {seed}: the quick brown fox jumps over the lazy dog. ")
            .into_bytes()
            .into_iter()
            .cycle()
            .take(BS)
            .collect(),
    }
}

/// An image made of these blocks, cut to `len` bytes if given.
pub fn image(fills: &[Fill], len: Option<usize>) -> Vec<u8> {
    let mut out: Vec<u8> = fills.iter().flat_map(|f| block(*f)).collect();
    if let Some(len) = len {
        out.truncate(len);
    }
    out
}

pub fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

pub fn sha256_file(path: &Path) -> String {
    sha256(&std::fs::read(path).unwrap())
}

pub fn options(encryption: EncryptionInit) -> InitOptions {
    InitOptions {
        encryption,
        compression: Compression::default(),
        // Small segments so that a few MiB span several of them.
        segment_blocks: 4,
    }
}

pub fn passphrase(p: &str) -> EncryptionInit {
    EncryptionInit::Passphrase {
        passphrase: p.to_owned(),
        kdf: KdfParams::insecure_for_tests(),
    }
}

pub fn memory_repo(encryption: EncryptionInit) -> (Arc<MemoryBackend>, Repository) {
    let backend = Arc::new(MemoryBackend::new());
    let repo = Repository::init(backend.clone(), options(encryption)).unwrap();
    (backend, repo)
}

pub fn local_repo(dir: &Path, encryption: EncryptionInit) -> Repository {
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir));
    Repository::init(backend, options(encryption)).unwrap()
}

pub fn source(id: &str) -> ArchiveSource {
    ArchiveSource::new(SourceKind::Snapshot, id)
}

/// Names of stored objects under a prefix.
pub fn names(backend: &dyn Backend, prefix: &str) -> Vec<String> {
    autosnap_repo::backend::list_sorted(backend, prefix)
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect()
}

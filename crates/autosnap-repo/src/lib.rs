//! autosnap's archive repository: a deduplicated, incremental, optionally encrypted store of
//! EBS volume blocks, on a local directory or (through the AWS layer) S3.
//!
//! This crate has no AWS SDK and no async runtime. Everything is synchronous and thread-safe:
//! [`Repository`] is `Send + Sync` and cheap to clone, [`ArchiveWriter::add_block`] takes
//! `&self`, and [`Backend`] is a small trait an S3 implementation can fill in. Call it from a
//! bounded thread pool, or from async code through `spawn_blocking`.
//!
//! The on-disk format is described for implementers in `docs/repository-format.md`.
//!
//! ```
//! use std::sync::Arc;
//! use autosnap_repo::{
//!     ArchiveSource, Credentials, InitOptions, MemoryBackend, Repository, SourceKind,
//!     VolumeSource,
//! };
//!
//! let backend = Arc::new(MemoryBackend::new());
//! let repo = Repository::init(backend, InitOptions::default())?;
//! let mut writer = repo.begin_archive(ArchiveSource::new(SourceKind::Snapshot, "snap-1"))?;
//! let volume = writer.add_volume(VolumeSource::ebs(1))?;
//! writer.add_block(volume, 3, &vec![7u8; 524_288])?;
//! let manifest = writer.finish()?;
//! assert_eq!(repo.list_archives()?[0].id, manifest.id);
//! assert!(repo.verify(true)?.is_ok());
//! # Ok::<(), autosnap_repo::Error>(())
//! ```

pub mod backend;
pub mod blockmap;
pub mod config;
pub mod crypto;
mod error;
pub mod id;
pub mod image_file;
pub mod index;
pub mod lock;
pub mod maintenance;
pub mod manifest;
pub mod reader;
pub mod repository;
pub mod writer;

/// The JSON crate of [`ArchiveSource::image_metadata`]'s type, for callers without their own.
pub use serde_json;
/// The crate that wipes key material, for callers that hold passphrases or keys themselves.
pub use zeroize;

pub use backend::{Backend, LocalBackend, MemoryBackend, ObjectInfo};
pub use blockmap::{BlockRef, Segment};
pub use config::{
    Compression, Credentials, EncryptionInit, InitOptions, KmsWrappedKey, RepoConfig, CHUNK_SIZE,
};
pub use crypto::KdfParams;
pub use error::{BackendError, Error, LockHolder, Result};
pub use id::{ArchiveId, ChunkId};
pub use image_file::{ImageFile, ImageFileError, Overwrite};
pub use index::{ChunkIndex, ListBudget};
pub use lock::{LockEntry, LockInfo, LockKind, LockOptions, RepoLock};
pub use maintenance::{
    plan_forget, ArchiveDecision, DamagedObject, ForgetGroup, ForgetPlan, GcReport, VerifyOptions,
    VerifyReport,
};
pub use manifest::{
    latest_volume, ArchiveSource, ArchiveStats, BlockMap, Manifest, SegmentRef, SourceKind,
    VolumeArchive, VolumeParent, VolumeSource,
};
pub use reader::{ArchiveReader, ImportOptions, Parallelism, RestoreReport, VolumeBlocks};
pub use repository::{ArchiveScan, PutChunk, Repository, UnreadableArchive};
pub use writer::{AddedBlock, ArchiveWriter, BlockStep, PendingChunk};

//! Typed errors. Every message names the object or archive involved and, where there is one,
//! what the user can do about it.

use std::path::PathBuf;

use crate::id::ChunkId;
use crate::lock::LockInfo;

/// A failure of a [`Backend`](crate::Backend) operation on one object.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The object does not exist.
    #[error("object {name:?} not found")]
    NotFound { name: String },
    /// The name is not a valid object name (see [`validate_name`](crate::backend::validate_name)).
    #[error("invalid object name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    /// A local I/O error.
    #[error("{op} {name:?}: {source}")]
    Io {
        op: &'static str,
        name: String,
        #[source]
        source: std::io::Error,
    },
    /// The object is larger than the most a reader accepts for its kind: refused before it
    /// is read into memory (see [`Backend::read_at_most`](crate::Backend::read_at_most)).
    #[error(
        "object {name:?} is larger than {limit} bytes, the most autosnap reads for this kind \
         of object{}: autosnap never writes one that large, so it was damaged or planted by \
         someone who can write the repository's storage; remove or restore it",
        size.map(|s| format!(" (it has {s})")).unwrap_or_default()
    )]
    TooLarge {
        name: String,
        /// The object's size, when the backend could tell it.
        size: Option<u64>,
        limit: u64,
    },
    /// Any other backend failure (an S3 backend puts its SDK error here).
    #[error("{op} {name:?}: {source}")]
    Remote {
        op: &'static str,
        name: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl BackendError {
    /// Whether this is [`BackendError::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, BackendError::NotFound { .. })
    }

    /// Whether this is [`BackendError::TooLarge`].
    pub fn is_too_large(&self) -> bool {
        matches!(self, BackendError::TooLarge { .. })
    }

    pub(crate) fn io(op: &'static str, name: &str, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            BackendError::NotFound {
                name: name.to_owned(),
            }
        } else {
            BackendError::Io {
                op,
                name: name.to_owned(),
                source,
            }
        }
    }
}

/// Everything a repository operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Backend(#[from] BackendError),

    #[error(
        "{location} is not an autosnap repository (no `config` object); create one with \
         `autosnap repo init`"
    )]
    NotARepository { location: String },

    #[error("{location} already holds a repository (a `config` object exists)")]
    AlreadyInitialized { location: String },

    #[error(
        "the repository uses format version {found}, this autosnap reads version \
         {supported}; upgrade autosnap"
    )]
    UnsupportedVersion { found: u32, supported: u32 },

    #[error("the repository config is invalid: {reason}")]
    InvalidConfig { reason: String },

    #[error(
        "the repository is encrypted: give its passphrase or its data key (a KMS-wrapped key \
         is in the config: decrypt it with KMS)"
    )]
    KeyRequired,

    #[error(
        "wrong passphrase: it opens none of the repository's {tried} key(s); check the \
         passphrase (or the environment variable it came from)"
    )]
    WrongPassphrase { tried: usize },

    #[error(
        "wrong data key: it does not match the repository's key check; check that KMS \
         decrypted the blob stored in this repository's config"
    )]
    WrongKey,

    #[error(
        "the repository config says it is not encrypted, but a passphrase or key was given: \
         refusing to go on, in case this is the wrong repository or someone who can write \
         its storage replaced an encrypted repository's config with an unencrypted one \
         (archives would then be written in plaintext). Unset the passphrase only if you \
         know this repository was created without encryption"
    )]
    NotEncrypted,

    #[error("invalid key derivation parameters: {reason}")]
    InvalidKdf { reason: String },

    #[error(
        "the repository config cannot be trusted: {reason}. Someone who can write the \
         repository's storage may have replaced it; nothing was read from or written to the \
         repository. Compare the `config` object with a copy you trust (or restore it from \
         one) before going on"
    )]
    ConfigNotTrusted { reason: String },

    #[error("the repository is not encrypted: there is no key for a passphrase to protect")]
    NoKeyToProtect,

    #[error(
        "the repository has {count} key files under keys/, more than the {max} autosnap \
         tries: remove the ones you did not add (`autosnap` adds one per passphrase)"
    )]
    TooManyKeyFiles { count: usize, max: usize },

    #[error("the random number generator failed: {0}")]
    Random(String),

    #[error(
        "chunk {id} is corrupt: {reason}; run `autosnap repo verify --read-data` to list the \
         archives it affects"
    )]
    CorruptChunk { id: ChunkId, reason: String },

    #[error("chunk {id} is missing from the repository")]
    MissingChunk { id: ChunkId },

    #[error("object {name:?} is corrupt: {reason}")]
    CorruptObject { name: String, reason: String },

    #[error("chunk of {len} bytes is larger than the repository's chunk size {chunk_size}")]
    ChunkTooLarge { len: usize, chunk_size: u32 },

    #[error("archive {id} not found")]
    ArchiveNotFound { id: String },

    #[error("invalid archive id {id:?}: expected YYYYMMDDTHHMMSSZ-xxxxxxxx")]
    InvalidArchiveId { id: String },

    #[error("invalid chunk id {id:?}: expected 64 lowercase hex digits")]
    InvalidChunkId { id: String },

    #[error(
        "the repository is locked by {}: {} lock for {} held by {} (pid {}) since {}, last \
         refreshed {}; wait for it to finish, or if that process is gone, the lock expires \
         {} after its last refresh",
        holder.name, holder.info.kind, holder.info.purpose, holder.info.host, holder.info.pid,
        holder.info.created.to_rfc3339(), holder.info.refreshed.to_rfc3339(), holder.stale_after
    )]
    Locked { holder: Box<LockHolder> },

    #[error(
        "this process's repository lock {name:?} was lost ({reason}); a gc may have run \
         meanwhile, so nothing more was written: run the operation again (it reuses what \
         was already stored)"
    )]
    LockLost { name: String, reason: String },

    #[error(
        "archive {id} may or may not have been committed: writing its manifest failed \
         ({write}) and reading it back failed too ({read}); run `autosnap repo list` to see \
         whether it is there, and archive again if it is not"
    )]
    CommitUnknown {
        id: String,
        write: String,
        read: String,
    },

    #[error("volume {volume} does not exist in this archive (it has {count})")]
    NoSuchVolume { volume: usize, count: usize },

    #[error(
        "block {index} is beyond the end of volume {volume} ({blocks} blocks of {block_size} \
         bytes)"
    )]
    BlockOutOfRange {
        volume: usize,
        index: u64,
        blocks: u64,
        block_size: u32,
    },

    #[error("block {index} of volume {volume} has {len} bytes; blocks hold {block_size}")]
    BadBlockLength {
        volume: usize,
        index: u64,
        len: usize,
        block_size: u32,
    },

    #[error(transparent)]
    Policy(#[from] autosnap_core::retention::PolicyError),

    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("a worker thread panicked during {0}")]
    WorkerPanicked(&'static str),

    #[error(transparent)]
    ImageFile(#[from] crate::image_file::ImageFileError),
}

/// The lock that stopped an operation: its object name and contents.
#[derive(Debug, Clone)]
pub struct LockHolder {
    pub name: String,
    pub info: LockInfo,
    /// How long after its last refresh a lock counts as stale, for the message.
    pub stale_after: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
    Error::Io {
        op,
        path: path.into(),
        source,
    }
}

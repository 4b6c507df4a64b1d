//! What the workflows need from AWS, cut by what they call and nothing more. The AWS
//! adapters (autosnap-aws) implement these over the SDK with their retries, adaptive
//! concurrency and error classification; the engine's tests implement them in memory.
//!
//! Block and catalog traits are generic (their futures are `Send` and monomorphised: no
//! allocation per block). [`ObjectStore`] is used as `dyn` (whether a repository has async
//! storage is known only at run time), so its methods return boxed futures: one allocation
//! per chunk request, next to a 512 KiB body.

use std::future::Future;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

/// EBS direct block size (the only one AWS documents; the adapters check responses against it).
pub const BLOCK_SIZE: usize = 524_288;

/// One block of a snapshot listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockEntry {
    pub index: u64,
    pub token: String,
}

/// One page of ListSnapshotBlocks / ListChangedBlocks.
#[derive(Debug, Clone, Default)]
pub struct BlockPage {
    /// Volume size in GiB.
    pub volume_size_gib: u64,
    /// Blocks present (in the second snapshot, for changed blocks), in index order.
    pub blocks: Vec<BlockEntry>,
    /// Changed blocks absent from the second snapshot (only for changed blocks).
    pub removed: Vec<u64>,
    pub next_token: Option<String>,
}

/// What a new snapshot is started with.
#[derive(Debug, Clone, Default)]
pub struct NewSnapshot {
    pub volume_size_gib: u64,
    pub description: Option<String>,
    pub tags: Vec<(String, String)>,
    pub parent_snapshot_id: Option<String>,
    pub encrypted: bool,
    pub kms_key_arn: Option<String>,
    pub client_token: Option<String>,
}

/// What a failed call was, as far as the workflows decide on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteErrorKind {
    /// The resource is absent (a deletion of it counts as done).
    NotFound,
    /// An AMI name is in use (RegisterImage lost a race for it).
    NameTaken,
    Other,
}

/// A failure of an adapter call, kept whole: its message and causes are the adapter's own
/// (the workflows only read [`RemoteError::kind`]).
#[derive(Debug)]
pub struct RemoteError {
    kind: RemoteErrorKind,
    inner: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl RemoteError {
    pub fn new(
        kind: RemoteErrorKind,
        inner: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> RemoteError {
        RemoteError {
            kind,
            inner: inner.into(),
        }
    }

    pub fn other(inner: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        RemoteError::new(RemoteErrorKind::Other, inner)
    }

    pub fn kind(&self) -> RemoteErrorKind {
        self.kind
    }

    /// The adapter's error, to downcast.
    pub fn inner(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self.inner.as_ref()
    }
}

// Transparent: the message and the causes are the adapter error's.
impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl std::error::Error for RemoteError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner.source()
    }
}

/// Reads the blocks of a completed snapshot (EBS direct: ListSnapshotBlocks,
/// ListChangedBlocks, GetSnapshotBlock).
pub trait BlockSource: Sync {
    /// One page of the snapshot's written blocks (`token`: the previous page's `next_token`).
    fn list_blocks(
        &self,
        snapshot: &str,
        token: Option<String>,
    ) -> impl Future<Output = Result<BlockPage, RemoteError>> + Send;

    /// One page of the blocks that differ between `first` (older) and `second`.
    fn list_changed_blocks(
        &self,
        first: &str,
        second: &str,
        token: Option<String>,
    ) -> impl Future<Output = Result<BlockPage, RemoteError>> + Send;

    /// The block's bytes (exactly [`BLOCK_SIZE`], received into `buf`'s capacity) and their
    /// SHA-256, checked against the checksum the service sent.
    fn get_block(
        &self,
        snapshot: &str,
        block: &BlockEntry,
        buf: bytes::BytesMut,
    ) -> impl Future<Output = Result<(bytes::Bytes, [u8; 32]), RemoteError>> + Send;
}

/// Writes a new snapshot block by block (EBS direct: StartSnapshot, PutSnapshotBlock,
/// CompleteSnapshot).
pub trait BlockSink: Sync {
    /// Starts a snapshot; returns its id.
    fn start_snapshot(
        &self,
        new: &NewSnapshot,
    ) -> impl Future<Output = Result<String, RemoteError>> + Send;

    /// Writes one full block with its SHA-256. `started` is when the snapshot was started
    /// (a new snapshot may not be visible to its first writes yet).
    fn put_block(
        &self,
        snapshot: &str,
        index: u64,
        data: bytes::Bytes,
        sha256: &[u8; 32],
        started: Instant,
    ) -> impl Future<Output = Result<(), RemoteError>> + Send;

    /// Completes the snapshot: the blocks written and the LINEAR aggregate of their digests
    /// (see [`crate::LinearChecksum`]).
    fn complete_snapshot(
        &self,
        snapshot: &str,
        blocks_written: u64,
        linear_sha256: &[u8; 32],
    ) -> impl Future<Output = Result<(), RemoteError>> + Send;
}

/// The snapshots of one account and region (EC2: DescribeSnapshots, DeleteSnapshot, a wait,
/// CreateTags).
pub trait Snapshots: Sync {
    fn region(&self) -> &str;
    fn account(&self) -> &str;

    /// The snapshots among `ids` that exist (any order; absent ones are left out).
    fn describe_snapshots(
        &self,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<autosnap_core::model::Snapshot>, RemoteError>> + Send;

    /// Deletes a snapshot (an absent one is [`RemoteErrorKind::NotFound`]).
    fn delete_snapshot(&self, id: &str) -> impl Future<Output = Result<(), RemoteError>> + Send;

    /// Waits until every snapshot of `ids` is completed (an error when one fails or the
    /// time runs out).
    fn wait_completed(
        &self,
        ids: &[String],
        timeout: Duration,
    ) -> impl Future<Output = Result<(), RemoteError>> + Send;

    fn tag(
        &self,
        ids: &[String],
        tags: &autosnap_core::tags::Tags,
    ) -> impl Future<Output = Result<(), RemoteError>> + Send;
}

/// A new AMI registered from snapshots with every block device of an original: what
/// `restore --to-ami` rebuilds from an archived metadata document.
#[derive(Debug, Clone, Default)]
pub struct NewImageFromMappings {
    pub name: String,
    pub description: Option<String>,
    pub root_device_name: String,
    pub architecture: Option<String>,
    /// `hvm` when absent.
    pub virtualization_type: Option<String>,
    pub ena_support: Option<bool>,
    pub boot_mode: Option<String>,
    pub mappings: Vec<RegisteredMapping>,
    /// Tags of the new AMI (applied on create).
    pub tags: autosnap_core::tags::Tags,
}

/// One block device of [`NewImageFromMappings`]: an EBS snapshot, or an instance store
/// device (`virtual_name`, no snapshot).
#[derive(Debug, Clone, Default)]
pub struct RegisteredMapping {
    pub device_name: String,
    pub snapshot_id: Option<String>,
    pub volume_size_gib: Option<i32>,
    pub volume_type: Option<String>,
    pub iops: Option<i32>,
    pub throughput: Option<i32>,
    pub delete_on_termination: Option<bool>,
    pub virtual_name: Option<String>,
}

/// The AMIs of one account and region (EC2: DescribeImages by name, RegisterImage).
pub trait Images: Snapshots {
    /// The id of an AMI named `name`, if there is one.
    fn image_named(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<String>, RemoteError>> + Send;

    /// RegisterImage; returns the new AMI's id (a name in use is
    /// [`RemoteErrorKind::NameTaken`]).
    fn register_image(
        &self,
        image: &NewImageFromMappings,
    ) -> impl Future<Output = Result<String, RemoteError>> + Send;
}

/// A repository's storage answered from async code (S3): an archived block goes from
/// GetSnapshotBlock to PutObject, and a restored one from GetObject to PutSnapshotBlock,
/// with no trip to a blocking thread. Object names are the repository's.
pub trait ObjectStore: Send + Sync {
    fn exists<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<bool, autosnap_repo::BackendError>>;

    /// Creates the object unless it exists; returns whether it was created.
    fn create<'a>(
        &'a self,
        name: &'a str,
        data: bytes::Bytes,
    ) -> BoxFuture<'a, Result<bool, autosnap_repo::BackendError>>;

    /// Writes the object, replacing what is there.
    fn write<'a>(
        &'a self,
        name: &'a str,
        data: bytes::Bytes,
    ) -> BoxFuture<'a, Result<(), autosnap_repo::BackendError>>;

    /// The object, refused when larger than `limit` bytes.
    fn read_at_most<'a>(
        &'a self,
        name: &'a str,
        limit: u64,
    ) -> BoxFuture<'a, Result<Vec<u8>, autosnap_repo::BackendError>>;
}

/// The repository a workflow reads or writes, and its async storage when it has one (without
/// it, each block's repository work takes one trip to a blocking thread: a local directory's
/// writes block on `fsync`).
#[derive(Clone, Copy)]
pub struct Repo<'a> {
    pub repo: &'a autosnap_repo::Repository,
    pub objects: Option<&'a dyn ObjectStore>,
}

impl<'a> Repo<'a> {
    /// A repository whose storage is used through its blocking [`autosnap_repo::Backend`].
    pub fn blocking(repo: &'a autosnap_repo::Repository) -> Repo<'a> {
        Repo {
            repo,
            objects: None,
        }
    }

    /// A repository whose chunks are read and written through `objects` from async code.
    pub fn with_objects(repo: &'a autosnap_repo::Repository, objects: &'a dyn ObjectStore) -> Self {
        Repo {
            repo,
            objects: Some(objects),
        }
    }
}

//! autosnap's archive and restore workflows, written once over narrow traits.
//!
//! What lives where:
//! - [`transfer`]: a raw image file to a new snapshot (`upload`) and a snapshot to a sparse
//!   image file (`download`).
//! - [`archive`]: which snapshots an archive reads and which earlier archive each volume builds
//!   on (`plan_snapshot_archive`, `plan_image_archive`), and the run: blocks → chunks →
//!   manifest (`run_archive`).
//! - [`restore`]: finding an archive, choosing its volume, a volume back to a new snapshot.
//! - [`restore_image`]: an AMI archive back to a new AMI, and the rollback when a step fails.
//! - [`ports`] (the crate `autosnap-ports`): what the workflows need from AWS —
//!   [`BlockSource`], [`BlockSink`], [`Snapshots`], [`Images`], and [`ObjectStore`] for a
//!   repository on S3. The crate `autosnap-aws` implements them (depending on the ports only,
//!   not on this crate) over the SDK (clients, error classification, retries,
//!   adaptive concurrency and rate limits); it decides nothing about what to archive, keep
//!   or restore. The repository itself (chunks, manifests, locks) is `autosnap-repo`.
//!
//! This crate links no AWS SDK: its tests run the workflows against in-memory fakes of the
//! traits and `autosnap_repo::MemoryBackend`.
//!
//! Speed: an archived block goes GetSnapshotBlock → seal → PutObject in async code with one
//! SHA-256 (the source's checksum check is the chunk id of an unencrypted repository); a
//! known chunk costs no request once the chunk index is loaded; transfers reuse their block
//! buffers ([`BlockBuffers`]) and keep at most `concurrency` blocks in flight.

pub mod archive;
pub use autosnap_ports::{buffers, ports};
pub mod restore;
pub mod restore_image;
pub mod transfer;

pub use archive::{
    archive_snapshot, plan_image_archive, plan_snapshot_archive, run_archive, ArchiveError,
    ArchivePlan, ArchiveReport, ParentRef, VolumePlan, VolumeReport,
};
pub use buffers::{block_sha256, BlockBuffers, LinearChecksum};
pub use ports::{
    BlockEntry, BlockPage, BlockSink, BlockSource, Images, NewImageFromMappings, NewSnapshot,
    ObjectStore, RegisteredMapping, RemoteError, RemoteErrorKind, Repo, Snapshots, BLOCK_SIZE,
};
pub use restore::{
    find_archive, restore_to_snapshot, select_volume, RestoreSnapshotReport, SnapshotTarget,
};
pub use restore_image::{
    plan_image_restore, restore_image, ImageRestorePlan, PlannedImageVolume, RestoreImageReport,
    RestoredDevice,
};
pub use transfer::{
    block_stream, download_snapshot, upload_file, DownloadReport, NoProgress, TransferError,
    TransferProgress, UploadOptions, UploadReport,
};

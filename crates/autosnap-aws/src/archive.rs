//! Transfer engines over the EBS direct APIs: a raw image file to a new snapshot (`upload`),
//! a snapshot to a sparse image file (`download`).
//!
//! Blocks stream through a bounded number of concurrent requests (`concurrency`), so memory
//! stays at about `concurrency × 512 KiB` whatever the volume size; listings are consumed
//! page by page. Progress is reported through [`TransferProgress`]; the CLI draws it.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use autosnap_repo::image_file::{ImageFile, Overwrite};
use autosnap_repo::writer::is_zero_block;
use futures::stream::{self, StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};

use crate::ebs::{
    block_checksum, BlockBuffers, BlockEntry, Ebs, EbsError, LinearChecksum, NewSnapshot,
    BLOCK_SIZE,
};
use crate::error::AwsError;

const GIB: u64 = 1 << 30;

/// Receives progress of a transfer (bytes of the image covered so far).
pub trait TransferProgress: Send + Sync {
    /// The transfer covers `total` bytes.
    fn start(&self, _total: u64) {}
    /// `bytes` more were transferred (or skipped as zeros).
    fn advance(&self, _bytes: u64) {}
    /// An upload started this snapshot: it exists from now on, finished or not.
    fn snapshot_started(&self, _snapshot_id: &str) {}
}

/// A progress sink that ignores everything.
pub struct NoProgress;
impl TransferProgress for NoProgress {}

/// Options of [`upload_file`].
#[derive(Debug, Clone)]
pub struct UploadOptions {
    pub description: Option<String>,
    pub tags: Vec<(String, String)>,
    pub concurrency: usize,
}

/// What [`upload_file`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UploadReport {
    pub snapshot_id: String,
    pub volume_size_gib: u64,
    pub file_bytes: u64,
    pub blocks_written: u64,
    pub zero_blocks_skipped: u64,
    pub seconds: f64,
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> EbsError + 'a {
    move |source| EbsError::Io {
        what,
        path: path.display().to_string(),
        source,
    }
}

fn client_token(path: &Path, len: u64) -> String {
    let mut h = Sha256::new();
    h.update(path.as_os_str().as_encoded_bytes());
    h.update(len.to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    h.update(now.as_nanos().to_le_bytes());
    h.finalize()
        .iter()
        .take(24)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Uploads `path` as a new, unencrypted snapshot: the size is rounded up to whole GiB and the
/// last block padded with zeros; all-zero blocks are not sent (they read as zeros in a new
/// unencrypted snapshot without a parent). Completes with the block count and the linear
/// checksum. Returns when CompleteSnapshot was accepted (the snapshot may still be `pending`).
pub async fn upload_file(
    ebs: &Ebs,
    path: &Path,
    options: &UploadOptions,
    progress: &dyn TransferProgress,
) -> Result<UploadReport, EbsError> {
    let begun = Instant::now();
    let ebs = &ebs.with_concurrency(options.concurrency.max(1));
    let file = Arc::new(File::open(path).map_err(io_err("cannot open", path))?);
    let len = file.metadata().map_err(io_err("cannot stat", path))?.len();
    let volume_size_gib = len.div_ceil(GIB).max(1);
    let blocks = len.div_ceil(BLOCK_SIZE as u64);
    let snapshot = ebs
        .start_snapshot(&NewSnapshot {
            volume_size_gib,
            description: options.description.clone(),
            tags: options.tags.clone(),
            client_token: Some(client_token(path, len)),
            ..NewSnapshot::default()
        })
        .await?;
    let started = Instant::now();
    progress.snapshot_started(&snapshot);
    tracing::info!(
        "started snapshot {snapshot} ({volume_size_gib} GiB) for {}",
        path.display()
    );
    progress.start(len);

    // Blocks in index order; `buffered` keeps that order in the results, so the linear
    // checksum is folded in as they arrive (no per-block state is kept).
    let mut linear = LinearChecksum::default();
    let mut zero_blocks = 0u64;
    let buffers = &BlockBuffers::new(options.concurrency.max(1) + 2);
    let mut results = stream::iter(0..blocks)
        .map(|index| {
            let file = Arc::clone(&file);
            let snapshot = snapshot.clone();
            let mut buf = buffers.take_block();
            async move {
                let read = tokio::task::spawn_blocking(move || {
                    let offset = index * BLOCK_SIZE as u64;
                    let mut filled = 0;
                    while filled < BLOCK_SIZE {
                        let n = file.read_at(&mut buf[filled..], offset + filled as u64)?;
                        if n == 0 {
                            break; // end of file: the rest is padding
                        }
                        filled += n;
                    }
                    buf[filled..].fill(0); // the buffer held an earlier block
                    let digest = (!is_zero_block(&buf)).then(|| block_checksum(&buf));
                    Ok::<_, std::io::Error>((buf.freeze(), filled as u64, digest))
                })
                .await
                .expect("block reader does not panic")
                .map_err(io_err("cannot read", path))?;
                let (buf, filled, digest) = read;
                if let Some((checksum, _)) = &digest {
                    ebs.put_block(&snapshot, index, buf.clone(), checksum, started)
                        .await?;
                }
                buffers.give(buf);
                Ok::<_, EbsError>((filled, digest.map(|(_, raw)| raw)))
            }
        })
        .buffered(options.concurrency.max(1));
    while let Some(result) = results.next().await {
        let (bytes, digest) = result?;
        match digest {
            Some(raw) => linear.push(&raw),
            None => zero_blocks += 1,
        }
        progress.advance(bytes);
    }
    drop(results);
    let written = linear.blocks();
    ebs.complete(&snapshot, written, &linear.finish()).await?;
    tracing::info!("completed snapshot {snapshot}: {written} blocks written, {zero_blocks} zero blocks skipped");
    Ok(UploadReport {
        snapshot_id: snapshot,
        volume_size_gib,
        file_bytes: len,
        blocks_written: written,
        zero_blocks_skipped: zero_blocks,
        seconds: begun.elapsed().as_secs_f64(),
    })
}

/// What [`download_snapshot`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DownloadReport {
    pub snapshot_id: String,
    pub path: PathBuf,
    pub size_bytes: u64,
    pub blocks_read: u64,
    pub seconds: f64,
}

/// The stream of a snapshot's blocks, page by page to the end (pages may be empty and still
/// carry a token). `first` is the already-fetched first page.
pub(crate) fn block_stream<'a>(
    ebs: &'a Ebs,
    snapshot: &'a str,
    first: crate::ebs::BlockPage,
) -> impl futures::Stream<Item = Result<BlockEntry, EbsError>> + 'a {
    let first_blocks = first.blocks;
    let rest = stream::try_unfold(first.next_token, move |token| async move {
        match token {
            None => Ok::<_, EbsError>(None),
            Some(t) => {
                let page = ebs.list_blocks_page(snapshot, Some(t)).await?;
                Ok(Some((page.blocks, page.next_token)))
            }
        }
    });
    stream::once(async move { Ok::<_, EbsError>(first_blocks) })
        .chain(rest)
        .map_ok(|blocks| stream::iter(blocks.into_iter().map(Ok)))
        .try_flatten()
}

/// Downloads `snapshot` into a sparse image at `path` (the volume's full size). Written to a
/// private temp file in the same directory (see [`ImageFile`]), synced and moved into place
/// when complete; an existing file or symlink at `path` is refused unless `overwrite` is
/// [`Overwrite::Replace`]. Never-written and all-zero blocks stay holes. Every block is
/// checked against its EBS checksum.
pub async fn download_snapshot(
    ebs: &Ebs,
    snapshot: &str,
    path: &Path,
    concurrency: usize,
    overwrite: Overwrite,
    progress: &dyn TransferProgress,
) -> Result<DownloadReport, EbsError> {
    let begun = Instant::now();
    let ebs = &ebs.with_concurrency(concurrency.max(1));
    // Before any request: a taken path fails at once, not after the first page.
    autosnap_repo::image_file::check_target(path, overwrite)?;
    let first = ebs.list_blocks_page(snapshot, None).await?;
    let size = first.volume_size_gib * GIB;
    let image = ImageFile::create(path, overwrite)?;
    // I/O errors name `path`, the file the user asked for, not the temp file behind it.
    let file = Arc::clone(image.file());
    file.set_len(size).map_err(io_err("cannot write", path))?;
    progress.start(size);

    let buffers = &BlockBuffers::new(concurrency.max(1) + 2);
    let blocks_read = block_stream(ebs, snapshot, first)
        .map_ok(|block| {
            let file = Arc::clone(&file);
            async move {
                let data = ebs.get_block_into(snapshot, &block, buffers.take()).await?;
                let data = tokio::task::spawn_blocking(move || {
                    if !is_zero_block(&data) {
                        file.write_all_at(&data, block.index * BLOCK_SIZE as u64)?;
                    }
                    Ok(data)
                })
                .await
                .expect("block writer does not panic")
                .map_err(io_err("cannot write", path))?;
                buffers.give(data);
                Ok::<_, EbsError>(())
            }
        })
        .try_buffer_unordered(concurrency.max(1))
        .try_fold(0u64, |n, ()| {
            progress.advance(BLOCK_SIZE as u64);
            async move { Ok(n + 1) }
        })
        .await?;
    // Unwritten blocks are holes: count them as done so the bar ends full.
    progress.advance(size.saturating_sub(blocks_read * BLOCK_SIZE as u64));
    drop(file);
    image.persist()?;
    Ok(DownloadReport {
        snapshot_id: snapshot.to_string(),
        path: path.to_path_buf(),
        size_bytes: size,
        blocks_read,
        seconds: begun.elapsed().as_secs_f64(),
    })
}

// ---------------------------------------------------------------------------------------------
// archive and restore
// ---------------------------------------------------------------------------------------------

/// A failure of `archive` or `restore`.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Ebs(#[from] EbsError),
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error(transparent)]
    Repo(#[from] autosnap_repo::Error),
    #[error("{0}")]
    Invalid(String),
    #[error(
        "archive {archive} is an archive of {kind} {source_id}, not of an AMI: --to-ami \
         restores archives made with `autosnap archive ami-…`; restore this one with \
         --to-snapshot (`autosnap ami from-snapshot` then registers an AMI from the snapshot)"
    )]
    NotAnImage {
        archive: String,
        kind: String,
        source_id: String,
    },
    #[error(
        "AMI name '{name}' is already in use by AMI {image_id} in {region}: choose another \
         with --name, or deregister that AMI first (`autosnap ami delete {image_id}`)"
    )]
    NameTaken {
        name: String,
        image_id: String,
        region: String,
    },
    #[error(
        "restoring {volume} of archive {archive} into snapshot {snapshot_id} failed: {source}"
    )]
    SnapshotIncomplete {
        archive: String,
        volume: String,
        snapshot_id: String,
        #[source]
        source: Box<ArchiveError>,
    },
    #[error("{what}: {source}; {cleanup}")]
    CleanedUp {
        what: String,
        #[source]
        source: Box<ArchiveError>,
        cleanup: String,
    },
}

impl From<tokio::task::JoinError> for ArchiveError {
    fn from(e: tokio::task::JoinError) -> Self {
        ArchiveError::Invalid(format!("a worker panicked: {e}"))
    }
}

/// The volume id EBS reports for snapshots made through the direct APIs (no real volume).
const NO_VOLUME: &str = "vol-ffffffff";

/// Blocks to read, listed page by page.
type BlockStream<'a> =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<BlockEntry, EbsError>> + Send + 'a>>;

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, autosnap_repo::Error> + Send + 'static,
) -> Result<T, ArchiveError> {
    Ok(tokio::task::spawn_blocking(work).await??)
}

/// Where an archive's chunks go and a restore's come from. On S3 each block goes from
/// GetSnapshotBlock to PutObject (and GetObject to PutSnapshotBlock) in async code, with no
/// blocking thread in between; a local directory's writes block (`fsync`), so there each block
/// takes one trip to a blocking thread for its CPU work and its write.
enum ChunkStore {
    S3(crate::s3_backend::S3Backend),
    Blocking,
}

impl ChunkStore {
    fn of(repo: &autosnap_repo::Repository) -> ChunkStore {
        match repo
            .backend()
            .as_any()
            .and_then(|b| b.downcast_ref::<crate::s3_backend::S3Backend>())
        {
            Some(s3) => ChunkStore::S3(s3.clone()),
            None => ChunkStore::Blocking,
        }
    }
}

/// Stores block `index` of `volume` (checked against its EBS checksum) through `writer`.
async fn store_block(
    writer: &Arc<autosnap_repo::ArchiveWriter>,
    store: &ChunkStore,
    volume: usize,
    index: u64,
    data: bytes::Bytes,
    sha256: [u8; 32],
) -> Result<(), ArchiveError> {
    use autosnap_repo::BlockStep;
    let s3 = match store {
        ChunkStore::S3(s3) => s3,
        ChunkStore::Blocking => {
            let writer = Arc::clone(writer);
            return blocking(move || {
                writer
                    .add_block_hashed(volume, index, &data, &sha256)
                    .map(|_| ())
            })
            .await;
        }
    };
    // Hashing (and the lock's trust check) inline: a fraction of a millisecond per block.
    let pending = match writer.prepare_block_hashed(volume, index, &data, &sha256)? {
        BlockStep::Done(_) => return Ok(()),
        BlockStep::Store(pending) => pending,
    };
    let remote = |e: autosnap_repo::BackendError| ArchiveError::Repo(e.into());
    if pending.check_first() && s3.exists_async(pending.name()).await.map_err(remote)? {
        writer.commit_block(pending, None)?;
        return Ok(());
    }
    let sealed = bytes::Bytes::from(writer.seal_chunk(&pending, &data)?);
    let len = sealed.len() as u64;
    let mut created = s3
        .create_async(pending.name(), sealed.clone())
        .await
        .map_err(remote)?;
    if !created && pending.replace_existing() {
        s3.write_async(pending.name(), sealed)
            .await
            .map_err(remote)?;
        created = true;
    }
    writer.commit_block(pending, created.then_some(len))?;
    Ok(())
}

/// The earlier archive (and its volume) an incremental volume is compared with.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ParentRef {
    pub archive_id: String,
    /// The volume's index in that archive.
    pub volume: usize,
    /// Its snapshot: ListChangedBlocks compares it with the new one.
    pub snapshot_id: String,
}

/// One volume an archive reads: a snapshot and, when the repository holds an earlier archive
/// of the same volume lineage, the parent whose blocks it inherits.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VolumePlan {
    pub device_name: Option<String>,
    pub snapshot_id: String,
    pub volume_id: Option<String>,
    pub volume_size_gib: u64,
    pub encrypted: bool,
    /// Incremental from this archive (if EBS can still compare the two snapshots; otherwise
    /// every block is read).
    pub parent: Option<ParentRef>,
    #[serde(skip)]
    source: autosnap_repo::VolumeSource,
    #[serde(skip)]
    parent_manifest: Option<Arc<autosnap_repo::Manifest>>,
}

/// What `archive` will do: the source, its retention lineage and each volume.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ArchivePlan {
    /// `snapshot` or `image`.
    pub kind: &'static str,
    /// The snapshot or AMI id.
    pub source_id: String,
    /// The retention group `repo forget` puts the archive in.
    pub lineage: String,
    pub volumes: Vec<VolumePlan>,
    /// Devices of an AMI that hold no EBS data (instance store): recorded in the metadata
    /// document, not archived.
    pub skipped_devices: Vec<String>,
    #[serde(skip)]
    source: autosnap_repo::ArchiveSource,
}

/// One archived volume in an [`ArchiveReport`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct VolumeReport {
    pub device_name: Option<String>,
    pub snapshot_id: String,
    pub volume_id: Option<String>,
    /// The archive this volume was built incrementally from.
    pub parent: Option<String>,
    /// The parent's snapshot that ListChangedBlocks compared against.
    pub parent_snapshot_id: Option<String>,
    /// Blocks read through GetSnapshotBlock (all written blocks, or the changed ones).
    pub blocks_read: u64,
    /// `blocks_read × 524288`.
    pub bytes_read: u64,
    /// Blocks the parent had that the snapshot no longer has.
    pub blocks_removed: u64,
    /// Logical bytes of the volume's present blocks (inherited ones included).
    pub size_bytes: u64,
    /// Logical bytes of the chunks this archive stored first.
    pub new_bytes: u64,
    /// Bytes written for them (compressed, encrypted).
    pub new_stored_bytes: u64,
}

/// What an archive did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ArchiveReport {
    pub archive_id: String,
    /// `snapshot` or `image`.
    pub kind: &'static str,
    /// The snapshot or AMI id.
    pub source_id: String,
    /// The snapshot archived (a snapshot archive), else null.
    pub snapshot_id: Option<String>,
    /// The AMI archived (an image archive), else null.
    pub image_id: Option<String>,
    pub lineage: String,
    /// The archive this one was built incrementally from (the first incremental volume's).
    pub parent: Option<String>,
    /// That volume's parent snapshot.
    pub parent_snapshot_id: Option<String>,
    pub blocks_read: u64,
    pub bytes_read: u64,
    pub blocks_removed: u64,
    pub size_bytes: u64,
    pub new_chunks: u64,
    pub new_bytes: u64,
    pub new_stored_bytes: u64,
    /// Blocks read whose chunk was already stored (deduplicated).
    pub reused_chunks: u64,
    pub seconds: f64,
    pub volumes: Vec<VolumeReport>,
}

async fn describe_snapshots(
    ec2: &crate::ec2::Ec2,
    ids: &[String],
) -> Result<Vec<autosnap_core::model::Snapshot>, ArchiveError> {
    Ok(ec2
        .list_snapshots(&crate::ec2::SnapshotQuery {
            snapshot_ids: ids.to_vec(),
            ..Default::default()
        })
        .await?)
}

fn volume_source(
    snap: &autosnap_core::model::Snapshot,
    device_name: Option<String>,
) -> autosnap_repo::VolumeSource {
    autosnap_repo::VolumeSource {
        device_name,
        snapshot_id: Some(snap.snapshot_id.clone()),
        volume_id: snap.volume_id.clone().filter(|v| v != NO_VOLUME),
        encrypted: snap.encrypted,
        description: snap.description.clone().filter(|d| !d.is_empty()),
        tags: snap.tags.clone(),
        ..autosnap_repo::VolumeSource::ebs(snap.size_gib.unwrap_or(0).max(0) as u64)
    }
}

fn volume_plan(
    source: autosnap_repo::VolumeSource,
    parent: Option<(&autosnap_repo::Manifest, usize)>,
) -> VolumePlan {
    let snapshot_id = source.snapshot_id.clone().unwrap_or_default();
    let parent = parent.and_then(|(m, i)| {
        let psnap = m.volumes.get(i)?.source.snapshot_id.clone()?;
        // The same snapshot again: nothing to compare, read it all (a rerun heals whatever
        // the earlier archive may have lost).
        (psnap != snapshot_id).then_some((m, i, psnap))
    });
    VolumePlan {
        device_name: source.device_name.clone(),
        snapshot_id,
        volume_id: source.volume_id.clone(),
        volume_size_gib: source.volume_size_gib,
        encrypted: source.encrypted,
        parent: parent.as_ref().map(|(m, i, psnap)| ParentRef {
            archive_id: m.id.to_string(),
            volume: *i,
            snapshot_id: psnap.clone(),
        }),
        parent_manifest: parent.map(|(m, _, _)| Arc::new(m.clone())),
        source,
    }
}

fn check_completed(snap: &autosnap_core::model::Snapshot, what: &str) -> Result<(), ArchiveError> {
    if !snap.is_completed() {
        return Err(ArchiveError::Invalid(format!(
            "snapshot {}{what} is {}: only completed snapshots can be read; wait for it \
             (`autosnap snapshot list`) and run again",
            snap.snapshot_id, snap.state
        )));
    }
    Ok(())
}

/// The readable archives, to choose parents from: an unreadable manifest is named in a
/// warning and passed over (the next archive then reads more, it never builds on it).
async fn list_archives(
    repo: &autosnap_repo::Repository,
) -> Result<Vec<autosnap_repo::Manifest>, ArchiveError> {
    let repo = repo.clone();
    let scan = blocking(move || repo.scan_archives()).await?;
    for bad in &scan.unreadable {
        tracing::warn!(
            "archive {} cannot be read, so nothing builds on it ({})",
            bad.id,
            bad.reason
        );
    }
    Ok(scan.manifests)
}

/// Plans the archive of one snapshot. Its lineage (retention group, and where an earlier
/// archive to build on is looked for) is `lineage` when given, else the snapshot's volume,
/// else the snapshot itself (snapshots written through the EBS direct APIs have no volume).
pub async fn plan_snapshot_archive(
    ec2: &crate::ec2::Ec2,
    repo: &autosnap_repo::Repository,
    snapshot_id: &str,
    lineage: Option<String>,
) -> Result<ArchivePlan, ArchiveError> {
    use autosnap_repo::{ArchiveSource, SourceKind};
    let region = ec2.region().to_string();
    let snap = describe_snapshots(ec2, &[snapshot_id.to_string()])
        .await?
        .into_iter()
        .find(|s| s.snapshot_id == snapshot_id)
        .ok_or_else(|| {
            ArchiveError::Invalid(format!(
                "snapshot {snapshot_id} not found in {region} (account {}): check the id and \
                 --region",
                ec2.account()
            ))
        })?;
    check_completed(&snap, "")?;
    let volume = volume_source(&snap, None);
    let mut source = ArchiveSource::new(SourceKind::Snapshot, snapshot_id);
    source.region = Some(region);
    source.account = snap.owner_id.clone();
    source.description = volume.description.clone();
    source.tags = snap.tags.clone();
    source.time = snap.start_time;
    source.lineage = lineage.clone();
    let manifests = list_archives(repo).await?;
    let parent = match &lineage {
        Some(l) => manifests
            .iter()
            .rfind(|m| m.lineage() == *l && m.volumes.len() == 1)
            .map(|m| (m, 0)),
        None => volume
            .lineage()
            .and_then(|l| autosnap_repo::latest_volume(&manifests, l)),
    };
    let lineage = lineage
        .or_else(|| volume.volume_id.clone())
        .unwrap_or_else(|| snapshot_id.to_string());
    Ok(ArchivePlan {
        kind: "snapshot",
        source_id: snapshot_id.to_string(),
        lineage,
        volumes: vec![volume_plan(volume, parent)],
        skipped_devices: Vec::new(),
        source,
    })
}

/// Plans the archive of an AMI from its metadata document (see
/// [`crate::ec2::Ec2::collect_image_metadata`]): every EBS snapshot of its block device
/// mappings, each incremental from the newest archive of its volume lineage, and the document
/// itself in the manifest. The archive's lineage is `lineage` when given, else the instance
/// the AMI was made from, else the AMI's volumes.
pub async fn plan_image_archive(
    ec2: &crate::ec2::Ec2,
    repo: &autosnap_repo::Repository,
    metadata: &autosnap_core::ami::AmiMetadata,
    lineage: Option<String>,
) -> Result<ArchivePlan, ArchiveError> {
    use autosnap_repo::{ArchiveSource, SourceKind};
    let image_id = &metadata.image_id;
    if metadata.state != "available" {
        return Err(ArchiveError::Invalid(format!(
            "AMI {image_id} is {}: only available AMIs can be archived",
            metadata.state
        )));
    }
    let devices: Vec<(&str, &str)> = metadata
        .block_device_mappings
        .iter()
        .filter_map(|m| Some((m.device_name.as_str(), m.snapshot_id.as_deref()?)))
        .collect();
    if devices.is_empty() {
        return Err(ArchiveError::Invalid(format!(
            "AMI {image_id} has no EBS snapshots (only instance store devices): there is no \
             data to archive"
        )));
    }
    let ids: Vec<String> = devices.iter().map(|(_, s)| s.to_string()).collect();
    let snaps = describe_snapshots(ec2, &ids).await?;
    let manifests = list_archives(repo).await?;
    let mut volumes = Vec::new();
    for (device, snapshot_id) in &devices {
        let snap = snaps
            .iter()
            .find(|s| s.snapshot_id == *snapshot_id)
            .ok_or_else(|| {
                ArchiveError::Invalid(format!(
                    "snapshot {snapshot_id} of AMI {image_id} ({device}) is not visible in {} \
                     for account {}: autosnap archives AMIs whose snapshots the account owns",
                    ec2.region(),
                    ec2.account()
                ))
            })?;
        check_completed(snap, &format!(" of AMI {image_id} ({device})"))?;
        let source = volume_source(snap, Some(device.to_string()));
        let parent = source
            .lineage()
            .and_then(|l| autosnap_repo::latest_volume(&manifests, l));
        volumes.push(volume_plan(source, parent));
    }
    let mut source = ArchiveSource::new(SourceKind::Image, image_id.clone());
    source.region = Some(metadata.region.clone());
    source.account = Some(metadata.account_id.clone());
    source.description = metadata.description.clone();
    source.tags = metadata.tags.clone();
    source.time = metadata
        .creation_date
        .as_deref()
        .and_then(|d| chrono::DateTime::parse_from_rfc3339(d).ok())
        .map(|d| d.with_timezone(&chrono::Utc));
    source.lineage = lineage.or_else(|| {
        metadata
            .source_instance
            .as_ref()
            .map(|i| i.instance_id.clone())
    });
    source.image_metadata = Some(autosnap_repo::serde_json::to_value(metadata).map_err(|e| {
        ArchiveError::Invalid(format!(
            "the metadata of {image_id} does not serialise: {e}"
        ))
    })?);
    let lineage = source.lineage.clone().unwrap_or_else(|| {
        let mut ids: Vec<&str> = volumes
            .iter()
            .filter_map(|v| v.volume_id.as_deref())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            image_id.clone()
        } else {
            ids.join("+")
        }
    });
    Ok(ArchivePlan {
        kind: "image",
        source_id: image_id.clone(),
        lineage,
        volumes,
        skipped_devices: metadata
            .block_device_mappings
            .iter()
            .filter(|m| m.snapshot_id.is_none())
            .map(|m| m.device_name.clone())
            .collect(),
        source,
    })
}

/// Archives `snapshot_id` into `repo` (plan and run; see [`plan_snapshot_archive`] and
/// [`run_archive`]).
pub async fn archive_snapshot(
    ebs: &Ebs,
    ec2: &crate::ec2::Ec2,
    repo: &autosnap_repo::Repository,
    snapshot_id: &str,
    concurrency: usize,
    progress: &dyn TransferProgress,
) -> Result<ArchiveReport, ArchiveError> {
    let plan = plan_snapshot_archive(ec2, repo, snapshot_id, None).await?;
    run_archive(ebs, repo, plan, concurrency, progress).await
}

/// Runs an archive plan: every block of each volume through GetSnapshotBlock (checksum
/// verified) into one [`autosnap_repo::ArchiveWriter`] — or, for a volume with a parent whose
/// snapshot EBS can still compare, only the blocks ListChangedBlocks reports, inheriting the
/// rest. Chunks are deduplicated across volumes and archives. The manifest, holding every
/// volume (and an AMI's metadata document), is written last, atomically: a process killed
/// before that leaves only unreferenced chunks, which a rerun reuses.
pub async fn run_archive(
    ebs: &Ebs,
    repo: &autosnap_repo::Repository,
    plan: ArchivePlan,
    concurrency: usize,
    progress: &dyn TransferProgress,
) -> Result<ArchiveReport, ArchiveError> {
    let begun = Instant::now();
    let ebs = &ebs.with_concurrency(concurrency.max(1));
    // Which parents EBS can still compare with (a parent's snapshot may be deleted).
    let mut changed = Vec::with_capacity(plan.volumes.len());
    for v in &plan.volumes {
        let page = match &v.parent {
            Some(p) => match ebs
                .list_changed_page(&p.snapshot_id, &v.snapshot_id, None)
                .await
            {
                Ok(page) => Some((page, p.snapshot_id.clone())),
                Err(e) => {
                    tracing::warn!(
                        "cannot compare {} with {} of archive {} ({e}); reading every block",
                        v.snapshot_id,
                        p.snapshot_id,
                        p.archive_id
                    );
                    None
                }
            },
            None => None,
        };
        changed.push(page);
    }

    let mut writer = {
        let repo = repo.clone();
        let source = plan.source.clone();
        blocking(move || repo.begin_archive(source)).await?
    };
    let mut numbers = Vec::with_capacity(plan.volumes.len());
    for (v, page) in plan.volumes.iter().zip(&changed) {
        let number = match (&v.parent, &v.parent_manifest, page) {
            (Some(p), Some(m), Some(_)) => {
                writer.add_volume_incremental(v.source.clone(), m, p.volume)?
            }
            _ => writer.add_volume(v.source.clone())?,
        };
        numbers.push(number);
    }
    // On S3, one listing of the repository's chunks (under the archive's lock) instead of a
    // HEAD per block, when the blocks to read outnumber the listing's pages. (A local
    // directory answers "exists?" with a stat: its listing would cost more than it saves.)
    let store = ChunkStore::of(repo);
    let expected: u64 = plan
        .volumes
        .iter()
        .zip(&changed)
        .map(|(v, page)| match page {
            // Incremental: the first page of changes (up to 10,000 blocks) is the estimate.
            Some((page, _)) => page.blocks.len() as u64,
            None => v.volume_size_gib * GIB / BLOCK_SIZE as u64,
        })
        .sum();
    let mut writer = writer;
    if matches!(store, ChunkStore::S3(_)) && expected > 0 {
        let budget = autosnap_repo::ListBudget::for_blocks(expected);
        writer = blocking(move || writer.load_chunk_index(budget).map(|_| writer)).await?;
    }
    let writer = Arc::new(writer);
    let total: u64 = plan.volumes.iter().map(|v| v.volume_size_gib * GIB).sum();
    progress.start(total);

    let mut reads = Vec::with_capacity(plan.volumes.len());
    for ((v, page), number) in plan.volumes.iter().zip(changed).zip(&numbers) {
        let (read, removed) = archive_volume(
            ebs,
            &writer,
            &store,
            *number,
            &v.snapshot_id,
            page.as_ref().map(|(p, s)| (p.clone(), s.as_str())),
            concurrency,
            progress,
        )
        .await?;
        // Blocks not read were inherited or never written: count them done.
        progress.advance((v.volume_size_gib * GIB).saturating_sub(read * BLOCK_SIZE as u64));
        reads.push((read, removed, page.map(|(_, s)| s)));
    }

    let writer = Arc::try_unwrap(writer)
        .map_err(|_| ArchiveError::Invalid("archive writer still shared".into()))?;
    let manifest = blocking(move || writer.finish()).await?;
    let volumes: Vec<VolumeReport> = manifest
        .volumes
        .iter()
        .zip(&reads)
        .map(|(v, (read, removed, psnap))| VolumeReport {
            device_name: v.source.device_name.clone(),
            snapshot_id: v.source.snapshot_id.clone().unwrap_or_default(),
            volume_id: v.source.volume_id.clone(),
            parent: v.parent.as_ref().map(|p| p.archive.to_string()),
            parent_snapshot_id: psnap.clone(),
            blocks_read: *read,
            bytes_read: read * BLOCK_SIZE as u64,
            blocks_removed: *removed,
            size_bytes: v.stats.size_bytes,
            new_bytes: v.stats.new_bytes,
            new_stored_bytes: v.stats.new_stored_bytes,
        })
        .collect();
    let blocks_read: u64 = volumes.iter().map(|v| v.blocks_read).sum();
    let image = plan.kind == "image";
    Ok(ArchiveReport {
        archive_id: manifest.id.to_string(),
        kind: plan.kind,
        source_id: plan.source_id.clone(),
        snapshot_id: (!image).then(|| plan.source_id.clone()),
        image_id: image.then(|| plan.source_id.clone()),
        lineage: manifest.lineage(),
        parent: manifest.parent.as_ref().map(ToString::to_string),
        parent_snapshot_id: volumes.iter().find_map(|v| v.parent_snapshot_id.clone()),
        blocks_read,
        bytes_read: blocks_read * BLOCK_SIZE as u64,
        blocks_removed: volumes.iter().map(|v| v.blocks_removed).sum(),
        size_bytes: manifest.stats.size_bytes,
        new_chunks: manifest.stats.new_chunks,
        new_bytes: manifest.stats.new_bytes,
        new_stored_bytes: manifest.stats.new_stored_bytes,
        reused_chunks: manifest.stats.reused_chunks,
        seconds: begun.elapsed().as_secs_f64(),
        volumes,
    })
}

/// Reads one volume's blocks into the writer: the changed blocks after `changed` (its first
/// ListChangedBlocks page and the parent snapshot), else every written block. Returns the
/// blocks read and the blocks removed since the parent.
#[allow(clippy::too_many_arguments)]
async fn archive_volume(
    ebs: &Ebs,
    writer: &Arc<autosnap_repo::ArchiveWriter>,
    store: &ChunkStore,
    volume: usize,
    snapshot_id: &str,
    changed: Option<(crate::ebs::BlockPage, &str)>,
    concurrency: usize,
    progress: &dyn TransferProgress,
) -> Result<(u64, u64), ArchiveError> {
    let removed = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let blocks: BlockStream<'_> = match changed {
        Some((first, psnap)) => {
            removed
                .lock()
                .unwrap()
                .extend(first.removed.iter().copied());
            let sink = Arc::clone(&removed);
            let first_blocks = first.blocks;
            let rest = stream::try_unfold(first.next_token, move |token| {
                let sink = Arc::clone(&sink);
                async move {
                    match token {
                        None => Ok::<_, EbsError>(None),
                        Some(t) => {
                            let page = ebs.list_changed_page(psnap, snapshot_id, Some(t)).await?;
                            sink.lock().unwrap().extend(page.removed);
                            Ok(Some((page.blocks, page.next_token)))
                        }
                    }
                }
            });
            let s = stream::once(async move { Ok::<_, EbsError>(first_blocks) })
                .chain(rest)
                .map_ok(|b| stream::iter(b.into_iter().map(Ok)))
                .try_flatten();
            Box::pin(s)
        }
        None => {
            let first = ebs.list_blocks_page(snapshot_id, None).await?;
            Box::pin(block_stream(ebs, snapshot_id, first))
        }
    };
    let blocks_read = blocks
        .map_err(ArchiveError::from)
        .map_ok(|block| async move {
            let (data, sha256) = ebs.get_block_hashed(snapshot_id, &block).await?;
            store_block(writer, store, volume, block.index, data, sha256).await
        })
        .try_buffer_unordered(concurrency.max(1))
        .try_fold(0u64, |n, ()| {
            progress.advance(BLOCK_SIZE as u64);
            async move { Ok(n + 1) }
        })
        .await?;
    let removed: Vec<u64> = std::mem::take(&mut *removed.lock().unwrap());
    let count = removed.len() as u64;
    if count > 0 {
        let writer = Arc::clone(writer);
        blocking(move || {
            for index in removed {
                writer.remove_block(volume, index)?;
            }
            Ok(())
        })
        .await?;
    }
    Ok((blocks_read, count))
}

/// Finds an archive by id, or the newest archive of a source snapshot or AMI id, or of a
/// lineage.
pub fn find_archive(
    repo: &autosnap_repo::Repository,
    wanted: &str,
) -> Result<autosnap_repo::Manifest, ArchiveError> {
    // An archive id reads that manifest alone, so other damaged manifests do not matter.
    if let Ok(id) = wanted.parse::<autosnap_repo::ArchiveId>() {
        match repo.read_manifest(&id) {
            Err(autosnap_repo::Error::ArchiveNotFound { .. }) => {}
            other => return Ok(other?),
        }
    }
    let scan = repo.scan_archives()?;
    if !scan.unreadable.is_empty() {
        // The newest archive of a source may be among them: never fall back to an older one.
        let names: Vec<String> = scan.unreadable.iter().map(|u| u.id.to_string()).collect();
        return Err(ArchiveError::Invalid(format!(
            "archive(s) {} in {} cannot be read, and may be the newest of {wanted}: give the \
             id of the archive to restore (see `autosnap repo list`; `autosnap repo verify` \
             names what is damaged)",
            names.join(", "),
            repo.backend().location()
        )));
    }
    let mut matches: Vec<autosnap_repo::Manifest> = scan
        .manifests
        .into_iter()
        .filter(|m| m.id.as_str() == wanted || m.source.id == wanted || m.lineage() == wanted)
        .collect();
    matches.sort_by(autosnap_repo::Manifest::chronological);
    matches.pop().ok_or_else(|| {
        ArchiveError::Invalid(format!(
            "no archive {wanted} in {} (see `autosnap repo list`)",
            repo.backend().location()
        ))
    })
}

/// Which volume of an archive a restore to one snapshot, file or device reads: the one under
/// `device` (`/dev/xvda`), or the only one. An AMI archive of several volumes needs `device`.
pub fn select_volume(
    manifest: &autosnap_repo::Manifest,
    device: Option<&str>,
) -> Result<usize, ArchiveError> {
    let devices = || {
        let names = manifest.device_names();
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    };
    match device {
        Some(d) => manifest.volume_by_device(d).map(|(i, _)| i).ok_or_else(|| {
            ArchiveError::Invalid(format!(
                "archive {} of {} has no volume {d}; its devices: {}",
                manifest.id,
                manifest.source.id,
                devices()
            ))
        }),
        None if manifest.volumes.len() == 1 => Ok(0),
        None => Err(ArchiveError::Invalid(format!(
            "archive {} of {} holds {} volumes ({}): choose one with --device, or restore the \
             whole AMI with --to-ami",
            manifest.id,
            manifest.source.id,
            manifest.volumes.len(),
            devices()
        ))),
    }
}

/// Where a restored snapshot goes and how it is described.
#[derive(Debug, Clone, Default)]
pub struct SnapshotTarget {
    /// The archive's volume to restore.
    pub volume: usize,
    pub description: Option<String>,
    pub tags: Vec<(String, String)>,
    /// Encrypt with this KMS key (and write the recorded zero blocks).
    pub kms_key: Option<String>,
}

impl SnapshotTarget {
    /// Volume `volume` with its original description and user tags (an AMI archive's volume:
    /// the snapshot's own; otherwise the source's too), marked `autosnap:managed=true`,
    /// `autosnap:restored-from` (the original snapshot) and `autosnap:source-archive`. Never
    /// the original's `aws:` or `autosnap:` tags: with `autosnap:policy` and its source tags
    /// a policy would take the restore for its newest backup and later prune it.
    pub fn original(
        manifest: &autosnap_repo::Manifest,
        volume: usize,
        kms_key: Option<String>,
    ) -> SnapshotTarget {
        use autosnap_core::tags;
        let v = &manifest.volumes[volume].source;
        let source_tags = (!manifest.is_image()).then_some(&manifest.source.tags);
        let restored_from = v.snapshot_id.as_deref().unwrap_or(&manifest.source.id);
        let mut tags = tags::restored_tags(
            source_tags.into_iter().flatten().chain(v.tags.iter()),
            restored_from,
        );
        tags.insert(tags::SOURCE_ARCHIVE.into(), manifest.id.to_string());
        let description = if manifest.is_image() {
            v.description.clone()
        } else {
            manifest.source.description.clone()
        };
        SnapshotTarget {
            volume,
            description: description
                .or_else(|| Some(format!("restored from autosnap archive {}", manifest.id))),
            tags: tags.into_iter().collect(),
            kms_key,
        }
    }
}

/// The StartSnapshot ClientToken of one restore: the archive and volume (readable in
/// CloudTrail) and a random nonce drawn once per restore. The SDK resends the same request,
/// token included, when it retries StartSnapshot, so a retry after a lost answer gets the
/// snapshot already started instead of a second one; a different restore — even of the same
/// volume, from the same process id (pid 1 in every container run) — gets a new token, so
/// EBS never hands it the earlier restore's snapshot.
fn restore_client_token(archive_id: &str, volume: usize) -> Result<String, ArchiveError> {
    let mut nonce = [0u8; 12];
    autosnap_repo::crypto::random_bytes(&mut nonce)?;
    let nonce: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    let archive: String = archive_id.chars().take(16).collect();
    Ok(format!("autosnap-restore-{archive}-{volume}-{nonce}"))
}

/// What a restore to a snapshot did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoreSnapshotReport {
    pub archive_id: String,
    pub device_name: Option<String>,
    pub snapshot_id: String,
    pub blocks_written: u64,
    pub seconds: f64,
}

/// Restores one volume of `manifest` as a new snapshot (StartSnapshot / PutSnapshotBlock /
/// CompleteSnapshot with the linear checksum). Every chunk is hash-checked on read.
/// Unencrypted: all-zero blocks are not sent. With a KMS key the snapshot is encrypted and
/// zero blocks the archive recorded are written (never-written blocks of an encrypted snapshot
/// do not read as zeros). A failure after StartSnapshot is
/// [`ArchiveError::SnapshotIncomplete`], naming the snapshot left behind.
pub async fn restore_to_snapshot(
    ebs: &Ebs,
    repo: &autosnap_repo::Repository,
    manifest: &autosnap_repo::Manifest,
    target: &SnapshotTarget,
    concurrency: usize,
    progress: &dyn TransferProgress,
) -> Result<RestoreSnapshotReport, ArchiveError> {
    use autosnap_repo::{ArchiveReader, BlockRef};
    let begun = Instant::now();
    let ebs = &ebs.with_concurrency(concurrency.max(1));
    let volume = manifest
        .volumes
        .get(target.volume)
        .ok_or_else(|| {
            ArchiveError::Invalid(format!(
                "archive {} has no volume {}",
                manifest.id, target.volume
            ))
        })?
        .clone();
    // The whole block map is checked before StartSnapshot: nothing is created for an archive
    // whose block map cannot be trusted.
    {
        let reader = ArchiveReader::new(repo, manifest.clone());
        let number = target.volume;
        blocking(move || reader.check_block_map(number)).await?;
    }
    let encrypted = target.kms_key.is_some();
    let snapshot = ebs
        .start_snapshot(&NewSnapshot {
            volume_size_gib: volume.source.volume_size_gib.max(1),
            description: target.description.clone(),
            tags: target.tags.clone(),
            encrypted,
            kms_key_arn: target.kms_key.clone(),
            client_token: Some(restore_client_token(
                &manifest.id.to_string(),
                target.volume,
            )?),
            ..NewSnapshot::default()
        })
        .await?;
    progress.snapshot_started(&snapshot);
    tracing::info!(
        "started snapshot {snapshot} for archive {} volume {}",
        manifest.id,
        target.volume
    );
    let started = Instant::now();
    progress.start(volume.stats.size_bytes);
    let number = target.volume;

    let written = async {
        // A blocking producer walks the block map in index order into a bounded channel.
        let reader = Arc::new(ArchiveReader::new(repo, manifest.clone()));
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<(u64, BlockRef), autosnap_repo::Error>>(
            concurrency.max(1) * 4,
        );
        let producer = {
            let reader = Arc::clone(&reader);
            tokio::task::spawn_blocking(move || {
                let blocks = match reader.blocks(number) {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                };
                for item in blocks {
                    if tx.blocking_send(item).is_err() {
                        return;
                    }
                }
            })
        };
        let items = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|i| (i, rx)) });
        let snapshot_ref = &snapshot;
        let store = &ChunkStore::of(repo);
        let mut results = std::pin::pin!(items
            .map(|item| {
                let reader = Arc::clone(&reader);
                async move {
                    let (index, block) = item?;
                    if matches!(block, BlockRef::Zero) && !encrypted {
                        return Ok::<_, ArchiveError>(None);
                    }
                    let (data, checksum, raw) = match (store, block) {
                        (ChunkStore::S3(s3), BlockRef::Chunk(id)) => {
                            let name = autosnap_repo::repository::chunk_object_name(&id);
                            let sealed = s3
                                .read_at_most_async(&name, repo.chunk_object_limit())
                                .await
                                .map_err(|e| repo.chunk_read_error(&id, e))?;
                            // Decrypting, decompressing and the hash check inline.
                            let data = repo.open_chunk(&id, sealed)?;
                            // Unencrypted, the chunk id is the block's SHA-256, just checked:
                            // it is the checksum EBS wants.
                            let (checksum, raw) = if repo.is_encrypted() {
                                block_checksum(&data)
                            } else {
                                (aws_smithy_types::base64::encode(id.0), id.0)
                            };
                            (data, checksum, raw)
                        }
                        _ => {
                            let data = blocking(move || reader.read_block(&block)).await?;
                            let (checksum, raw) = block_checksum(&data);
                            (data, checksum, raw)
                        }
                    };
                    ebs.put_block(snapshot_ref, index, data.into(), &checksum, started)
                        .await?;
                    Ok(Some(raw))
                }
            })
            .buffered(concurrency.max(1)));
        let mut linear = LinearChecksum::default();
        while let Some(r) = results.next().await {
            if let Some(raw) = r? {
                linear.push(&raw);
            }
            progress.advance(BLOCK_SIZE as u64);
        }
        producer.await?;
        let written = linear.blocks();
        ebs.complete(&snapshot, written, &linear.finish()).await?;
        Ok::<_, ArchiveError>(written)
    }
    .await
    .map_err(|e| ArchiveError::SnapshotIncomplete {
        archive: manifest.id.to_string(),
        volume: volume
            .source
            .device_name
            .clone()
            .unwrap_or_else(|| format!("volume {number}")),
        snapshot_id: snapshot.clone(),
        source: Box::new(e),
    })?;
    Ok(RestoreSnapshotReport {
        archive_id: manifest.id.to_string(),
        device_name: volume.source.device_name.clone(),
        snapshot_id: snapshot,
        blocks_written: written,
        seconds: begun.elapsed().as_secs_f64(),
    })
}

// ---- restore to an AMI ------------------------------------------------------------------------

/// One volume of a planned AMI restore.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PlannedImageVolume {
    pub device_name: String,
    /// The volume's index in the archive.
    pub volume: usize,
    pub volume_size_gib: u64,
    /// The KMS key the new snapshot is encrypted with (`--kms-key`, else the original's key
    /// when the original was encrypted), or null.
    pub kms_key: Option<String>,
    #[serde(skip)]
    target: SnapshotTarget,
}

/// What `restore --to-ami` will do.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageRestorePlan {
    pub archive_id: String,
    pub source_image_id: String,
    /// The new AMI's name.
    pub name: String,
    pub root_device_name: String,
    pub architecture: Option<String>,
    pub boot_mode: Option<String>,
    pub volumes: Vec<PlannedImageVolume>,
    /// Instance store devices re-created in the mappings (no data).
    pub instance_store_devices: Vec<String>,
    /// The tags the new AMI gets.
    pub tags: autosnap_core::tags::Tags,
    #[serde(skip)]
    metadata: autosnap_core::ami::AmiMetadata,
}

impl ImageRestorePlan {
    /// The distinct KMS keys the new snapshots will use (to check before anything is made).
    pub fn kms_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .volumes
            .iter()
            .filter_map(|v| v.kms_key.clone())
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }
}

/// Plans restoring an AMI archive as a new AMI: checks that it is an AMI archive whose
/// metadata covers every archived device, that the name (`name`, else the original's) is valid
/// and free in the region, and picks each volume's KMS key.
pub async fn plan_image_restore(
    ec2: &crate::ec2::Ec2,
    manifest: &autosnap_repo::Manifest,
    name: Option<String>,
    kms_key: Option<String>,
) -> Result<ImageRestorePlan, ArchiveError> {
    use autosnap_core::ami::{validate_image_name, AmiMetadata};
    if !manifest.is_image() {
        let kind = match manifest.source.kind {
            autosnap_repo::SourceKind::File => "file",
            _ => "snapshot",
        };
        return Err(ArchiveError::NotAnImage {
            archive: manifest.id.to_string(),
            kind: kind.to_string(),
            source_id: manifest.source.id.clone(),
        });
    }
    let damaged = |reason: String| {
        ArchiveError::Invalid(format!(
            "archive {} cannot be restored as an AMI: {reason}; run `autosnap repo verify`",
            manifest.id
        ))
    };
    if let Some(problem) = manifest.structure_problem() {
        return Err(damaged(problem));
    }
    let value = manifest
        .source
        .image_metadata
        .as_ref()
        .expect("checked above");
    let bytes = autosnap_repo::serde_json::to_vec(value).expect("a JSON value serialises");
    let metadata = AmiMetadata::from_json(&bytes).map_err(|e| damaged(e.to_string()))?;
    let root_device_name = metadata
        .root_device_name
        .clone()
        .ok_or_else(|| damaged("its AMI metadata has no root_device_name".into()))?;

    let name = name.unwrap_or_else(|| {
        metadata
            .name
            .clone()
            .unwrap_or_else(|| format!("autosnap-restore-{}", metadata.image_id))
    });
    validate_image_name(&name)
        .map_err(|e| ArchiveError::Invalid(format!("{e}: choose another with --name")))?;
    if let Some(other) = ec2.images_named(&name).await?.first() {
        return Err(ArchiveError::NameTaken {
            name,
            image_id: other.image_id.clone(),
            region: ec2.region().to_string(),
        });
    }

    let mut volumes = Vec::new();
    let mut instance_store_devices = Vec::new();
    for m in &metadata.block_device_mappings {
        if m.snapshot_id.is_none() {
            instance_store_devices.push(m.device_name.clone());
            continue;
        }
        let (index, archived) = manifest.volume_by_device(&m.device_name).ok_or_else(|| {
            damaged(format!(
                "its metadata maps {} but no volume was archived for it",
                m.device_name
            ))
        })?;
        let key = kms_key
            .clone()
            .or_else(|| m.encrypted.then(|| m.kms_key_id.clone()).flatten());
        let mut tags: Vec<(String, String)> = metadata
            .restore_snapshot_tags(&m.device_name)
            .into_iter()
            .collect();
        tags.push((
            autosnap_core::tags::SOURCE_ARCHIVE.to_string(),
            manifest.id.to_string(),
        ));
        let description = archived.source.description.clone().or_else(|| {
            Some(format!(
                "restored from autosnap archive {} ({} of {})",
                manifest.id, m.device_name, metadata.image_id
            ))
        });
        volumes.push(PlannedImageVolume {
            device_name: m.device_name.clone(),
            volume: index,
            volume_size_gib: archived.source.volume_size_gib,
            kms_key: key.clone(),
            target: SnapshotTarget {
                volume: index,
                description,
                tags,
                kms_key: key,
            },
        });
    }
    if !volumes.iter().any(|v| v.device_name == root_device_name) {
        return Err(damaged(format!(
            "the root device {root_device_name} is not among its archived volumes"
        )));
    }
    Ok(ImageRestorePlan {
        archive_id: manifest.id.to_string(),
        source_image_id: metadata.image_id.clone(),
        name,
        root_device_name,
        architecture: metadata.architecture.clone(),
        boot_mode: metadata.boot_mode.clone(),
        volumes,
        instance_store_devices,
        tags: metadata.restore_image_tags(),
        metadata,
    })
}

/// One restored device of [`RestoreImageReport`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoredDevice {
    pub device_name: String,
    pub snapshot_id: String,
    pub blocks_written: u64,
}

/// What `restore --to-ami` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoreImageReport {
    pub archive_id: String,
    pub source_image_id: String,
    pub image_id: String,
    pub name: String,
    pub volumes: Vec<RestoredDevice>,
    pub blocks_written: u64,
    pub seconds: f64,
}

struct QuietWait;
impl crate::ec2::WaitObserver for QuietWait {}

/// How long to wait for restored snapshots to complete before registering the AMI.
const SNAPSHOT_WAIT: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

/// Deletes snapshots this restore made; says what happened (never fails).
async fn delete_made(ec2: &crate::ec2::Ec2, snapshots: &[String]) -> String {
    if snapshots.is_empty() {
        return "no snapshot had been made".to_string();
    }
    let mut deleted = Vec::new();
    let mut left = Vec::new();
    for s in snapshots {
        match ec2.delete_snapshot(s).await {
            Ok(()) => deleted.push(s.clone()),
            Err(e) if e.is_not_found() => deleted.push(s.clone()),
            Err(e) => left.push(format!("{s} ({e})")),
        }
    }
    let mut text = String::new();
    if !deleted.is_empty() {
        text.push_str(&format!(
            "deleted the snapshots just made: {}",
            deleted.join(", ")
        ));
    }
    if !left.is_empty() {
        if !text.is_empty() {
            text.push_str("; ");
        }
        text.push_str(&format!(
            "LEFT BEHIND (delete by hand with `autosnap snapshot delete`): {}",
            left.join(", ")
        ));
    }
    text
}

/// Runs an AMI restore plan: each volume to a new snapshot (tagged with the original
/// snapshot's tags), a wait until they complete, then RegisterImage with the original's
/// block device mappings, architecture, virtualization type, ENA support, boot mode and root
/// device, tagged with the original AMI's tags. If anything fails, the snapshots made so far
/// are deleted and the error says so.
pub async fn restore_image(
    ebs: &Ebs,
    ec2: &crate::ec2::Ec2,
    repo: &autosnap_repo::Repository,
    manifest: &autosnap_repo::Manifest,
    plan: &ImageRestorePlan,
    concurrency: usize,
    progress: &dyn TransferProgress,
) -> Result<RestoreImageReport, ArchiveError> {
    use crate::ami::{NewImageFromMappings, RegisteredMapping};
    let begun = Instant::now();
    let mut made: Vec<String> = Vec::new();
    let mut restored = Vec::new();
    // One bar over every volume: the per-volume restores only advance it.
    struct Advance<'a>(&'a dyn TransferProgress);
    impl TransferProgress for Advance<'_> {
        fn advance(&self, bytes: u64) {
            self.0.advance(bytes)
        }
        fn snapshot_started(&self, snapshot_id: &str) {
            self.0.snapshot_started(snapshot_id)
        }
    }
    progress.start(
        plan.volumes
            .iter()
            .filter_map(|v| manifest.volumes.get(v.volume))
            .map(|v| v.stats.size_bytes)
            .sum(),
    );
    let volume_progress = Advance(progress);
    for v in &plan.volumes {
        match restore_to_snapshot(
            ebs,
            repo,
            manifest,
            &v.target,
            concurrency,
            &volume_progress,
        )
        .await
        {
            Ok(r) => {
                tracing::info!("restored {} into {}", v.device_name, r.snapshot_id);
                made.push(r.snapshot_id.clone());
                restored.push(RestoredDevice {
                    device_name: v.device_name.clone(),
                    snapshot_id: r.snapshot_id,
                    blocks_written: r.blocks_written,
                });
            }
            Err(e) => {
                if let ArchiveError::SnapshotIncomplete { snapshot_id, .. } = &e {
                    made.push(snapshot_id.clone());
                }
                return Err(ArchiveError::CleanedUp {
                    what: format!(
                        "restoring {} as AMI '{}' failed",
                        plan.archive_id, plan.name
                    ),
                    source: Box::new(e),
                    cleanup: delete_made(ec2, &made).await,
                });
            }
        }
    }
    if let Err(e) = ec2
        .wait_snapshots_completed(&made, SNAPSHOT_WAIT, &QuietWait)
        .await
    {
        return Err(ArchiveError::CleanedUp {
            what: format!(
                "the snapshots restored for AMI '{}' did not complete",
                plan.name
            ),
            source: Box::new(e.into()),
            cleanup: delete_made(ec2, &made).await,
        });
    }

    let meta = &plan.metadata;
    let mappings = meta
        .block_device_mappings
        .iter()
        .map(|m| {
            let snapshot_id = restored
                .iter()
                .find(|r| r.device_name == m.device_name)
                .map(|r| r.snapshot_id.clone());
            RegisteredMapping {
                device_name: m.device_name.clone(),
                volume_size_gib: snapshot_id.as_ref().and(m.volume_size_gib),
                volume_type: snapshot_id.as_ref().and(m.volume_type.clone()),
                iops: snapshot_id.as_ref().and(m.iops),
                throughput: snapshot_id.as_ref().and(m.throughput),
                delete_on_termination: snapshot_id.as_ref().and(m.delete_on_termination),
                virtual_name: m.virtual_name.clone(),
                snapshot_id,
            }
        })
        .collect();
    let description = meta
        .description
        .clone()
        .unwrap_or_else(|| format!("autosnap: restored from archive {}", plan.archive_id));
    let registered = ec2
        .register_image_with_mappings(&NewImageFromMappings {
            name: plan.name.clone(),
            description: Some(description),
            root_device_name: plan.root_device_name.clone(),
            architecture: meta.architecture.clone(),
            virtualization_type: meta.virtualization_type.clone(),
            ena_support: meta.ena_support,
            boot_mode: meta.boot_mode.clone(),
            mappings,
            tags: plan.tags.clone(),
        })
        .await;
    let image_id = match registered {
        Ok(id) => id,
        Err(e) => {
            let hint = if matches!(
                &e,
                AwsError::InvalidRequest { code, .. } | AwsError::Service { code, .. }
                    if code == "InvalidAMIName.Duplicate"
            ) {
                " (the name was taken meanwhile: choose another with --name)"
            } else {
                ""
            };
            return Err(ArchiveError::CleanedUp {
                what: format!("RegisterImage of '{}' failed{hint}", plan.name),
                source: Box::new(e.into()),
                cleanup: delete_made(ec2, &made).await,
            });
        }
    };
    tracing::info!(
        "registered AMI {image_id} ({}) from archive {}",
        plan.name,
        plan.archive_id
    );
    // The snapshots existed before the AMI, so EC2's descriptions cannot name it: this tag
    // is what lets `ami delete` remove them with it (and nothing else's snapshots). The
    // request repeats autosnap:managed, which the IAM policy's re-tagging statement requires.
    let for_image: autosnap_core::tags::Tags = [
        (autosnap_core::tags::FOR_IMAGE, image_id.as_str()),
        (
            autosnap_core::tags::MANAGED,
            autosnap_core::tags::MANAGED_VALUE,
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if let Err(e) = ec2.create_tags(&made, &for_image).await {
        tracing::warn!(
            "could not tag the snapshots of {image_id} ({}) with {}: {e}; `ami delete \
             {image_id}` will keep them, delete them with `autosnap snapshot delete`",
            made.join(", "),
            autosnap_core::tags::FOR_IMAGE
        );
    }
    Ok(RestoreImageReport {
        archive_id: plan.archive_id.clone(),
        source_image_id: plan.source_image_id.clone(),
        image_id,
        name: plan.name.clone(),
        blocks_written: restored.iter().map(|r| r.blocks_written).sum(),
        volumes: restored,
        seconds: begun.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod restore_token_tests {
    use super::restore_client_token;

    #[test]
    fn restore_client_tokens_differ_per_restore_and_fit_ebs() {
        let id = "0123456789abcdef0123456789abcdef";
        let a = restore_client_token(id, 1).unwrap();
        let b = restore_client_token(id, 1).unwrap();
        // The same volume restored twice (by one process id) must never share a token: EBS
        // would answer the second StartSnapshot with the first restore's snapshot.
        assert_ne!(a, b);
        assert!(a.starts_with("autosnap-restore-0123456789abcdef-1-"), "{a}");
        assert!(a.len() <= 64 && !a.contains(char::is_whitespace), "{a}");
        assert_ne!(
            restore_client_token(id, 0).unwrap()[..36],
            restore_client_token(id, 1).unwrap()[..36]
        );
    }
}

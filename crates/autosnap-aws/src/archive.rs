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

use futures::stream::{self, StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};

use crate::ebs::{
    block_checksum, BlockEntry, Ebs, EbsError, LinearChecksum, NewSnapshot, BLOCK_SIZE,
};
use crate::error::AwsError;

const GIB: u64 = 1 << 30;

/// Receives progress of a transfer (bytes of the image covered so far).
pub trait TransferProgress: Send + Sync {
    /// The transfer covers `total` bytes.
    fn start(&self, _total: u64) {}
    /// `bytes` more were transferred (or skipped as zeros).
    fn advance(&self, _bytes: u64) {}
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
    tracing::info!(
        "started snapshot {snapshot} ({volume_size_gib} GiB) for {}",
        path.display()
    );
    progress.start(len);

    // Blocks in index order; `buffered` keeps that order in the results, so the linear
    // checksum is folded in as they arrive (no per-block state is kept).
    let mut linear = LinearChecksum::default();
    let mut zero_blocks = 0u64;
    let mut results = stream::iter(0..blocks)
        .map(|index| {
            let file = Arc::clone(&file);
            let snapshot = snapshot.clone();
            async move {
                let read = tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; BLOCK_SIZE];
                    let offset = index * BLOCK_SIZE as u64;
                    let mut filled = 0;
                    while filled < BLOCK_SIZE {
                        let n = file.read_at(&mut buf[filled..], offset + filled as u64)?;
                        if n == 0 {
                            break; // end of file: the rest stays zero (padding)
                        }
                        filled += n;
                    }
                    let digest = (!buf.iter().all(|&b| b == 0)).then(|| block_checksum(&buf));
                    Ok::<_, std::io::Error>((buf, filled as u64, digest))
                })
                .await
                .expect("block reader does not panic")
                .map_err(io_err("cannot read", path))?;
                let (buf, filled, digest) = read;
                match digest {
                    None => Ok::<_, EbsError>((filled, None)),
                    Some((checksum, raw)) => {
                        ebs.put_block(&snapshot, index, buf.into(), &checksum, started)
                            .await?;
                        Ok((filled, Some(raw)))
                    }
                }
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

/// A temp file beside the target, removed on drop unless persisted.
struct TempFile {
    path: PathBuf,
    persisted: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = std::fs::remove_file(&self.path);
        }
    }
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
/// temp file in the same directory, synced and renamed when complete; never-written and
/// all-zero blocks stay holes. Every block is checked against its EBS checksum.
pub async fn download_snapshot(
    ebs: &Ebs,
    snapshot: &str,
    path: &Path,
    concurrency: usize,
    progress: &dyn TransferProgress,
) -> Result<DownloadReport, EbsError> {
    let begun = Instant::now();
    let ebs = &ebs.with_concurrency(concurrency.max(1));
    let first = ebs.list_blocks_page(snapshot, None).await?;
    let size = first.volume_size_gib * GIB;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    let mut temp = TempFile {
        path: dir.join(format!(".{name}.autosnap-{}.tmp", std::process::id())),
        persisted: false,
    };
    let file = File::create(&temp.path).map_err(io_err("cannot create", &temp.path))?;
    file.set_len(size)
        .map_err(io_err("cannot size", &temp.path))?;
    let file = Arc::new(file);
    progress.start(size);

    let blocks_read = block_stream(ebs, snapshot, first)
        .map_ok(|block| {
            let file = Arc::clone(&file);
            let temp_path = temp.path.clone();
            async move {
                let data = ebs.get_block(snapshot, &block).await?;
                tokio::task::spawn_blocking(move || {
                    if data.iter().all(|&b| b == 0) {
                        return Ok(());
                    }
                    file.write_all_at(&data, block.index * BLOCK_SIZE as u64)
                })
                .await
                .expect("block writer does not panic")
                .map_err(io_err("cannot write", &temp_path))?;
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
    file.sync_all().map_err(io_err("cannot sync", &temp.path))?;
    std::fs::rename(&temp.path, path).map_err(io_err("cannot rename into place", path))?;
    temp.persisted = true;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
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

/// What [`archive_snapshot`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ArchiveReport {
    pub archive_id: String,
    pub snapshot_id: String,
    /// The archive this one was built incrementally from.
    pub parent: Option<String>,
    /// The parent's snapshot that ListChangedBlocks compared against.
    pub parent_snapshot_id: Option<String>,
    pub blocks_read: u64,
    pub blocks_removed: u64,
    pub size_bytes: u64,
    pub new_bytes: u64,
    pub new_stored_bytes: u64,
    pub seconds: f64,
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, autosnap_repo::Error> + Send + 'static,
) -> Result<T, ArchiveError> {
    Ok(tokio::task::spawn_blocking(work).await??)
}

/// Archives `snapshot_id` into `repo`: every block through GetSnapshotBlock (checksum
/// verified) into an [`autosnap_repo::ArchiveWriter`]. When the repository holds an earlier
/// archive of the same volume lineage whose snapshot still exists, only the blocks
/// ListChangedBlocks reports are read; the rest are inherited. The manifest is written last.
pub async fn archive_snapshot(
    ebs: &Ebs,
    ec2: &crate::ec2::Ec2,
    region: &str,
    repo: &autosnap_repo::Repository,
    snapshot_id: &str,
    concurrency: usize,
    progress: &dyn TransferProgress,
) -> Result<ArchiveReport, ArchiveError> {
    use autosnap_repo::{ArchiveSource, SourceKind, VolumeSource};
    let begun = Instant::now();
    let snap = ec2
        .list_snapshots(&crate::ec2::SnapshotQuery {
            snapshot_ids: vec![snapshot_id.to_string()],
            ..Default::default()
        })
        .await?
        .into_iter()
        .find(|s| s.snapshot_id == snapshot_id)
        .ok_or_else(|| {
            ArchiveError::Invalid(format!("snapshot {snapshot_id} not found in {region}"))
        })?;
    if !snap.is_completed() {
        return Err(ArchiveError::Invalid(format!(
            "snapshot {snapshot_id} is {}: only completed snapshots can be read",
            snap.state
        )));
    }
    let volume_id = snap.volume_id.clone().filter(|v| v != NO_VOLUME);
    let size_gib = snap.size_gib.unwrap_or(0).max(0) as u64;
    let mut source = ArchiveSource::new(SourceKind::Snapshot, snapshot_id);
    source.region = Some(region.to_string());
    source.account = snap.owner_id.clone();
    source.description = snap.description.clone().filter(|d| !d.is_empty());
    source.tags = snap.tags.clone();
    source.time = snap.start_time;
    let volume = VolumeSource {
        snapshot_id: Some(snapshot_id.to_string()),
        volume_id: volume_id.clone(),
        encrypted: snap.encrypted,
        description: source.description.clone(),
        tags: snap.tags.clone(),
        ..VolumeSource::ebs(size_gib)
    };
    let lineage = volume_id.clone().unwrap_or_else(|| snapshot_id.to_string());

    // An earlier archive of this lineage whose snapshot EBS can still compare against.
    let parent = {
        let repo = repo.clone();
        let lineage = lineage.clone();
        blocking(move || repo.latest_archive(&lineage)).await?
    };
    let mut changed_first_page = None;
    let mut parent_snapshot = None;
    if let Some(parent) = &parent {
        let psnap = parent
            .volumes
            .first()
            .and_then(|v| v.source.snapshot_id.clone());
        if let Some(psnap) = psnap.filter(|p| p != snapshot_id) {
            match ebs.list_changed_page(&psnap, snapshot_id, None).await {
                Ok(page) => {
                    changed_first_page = Some(page);
                    parent_snapshot = Some(psnap);
                }
                Err(e) => tracing::warn!(
                    "cannot compare {snapshot_id} with {psnap} of archive {} ({e}); reading every block",
                    parent.id
                ),
            }
        }
    }

    let mut writer = {
        let repo = repo.clone();
        blocking(move || repo.begin_archive(source)).await?
    };
    let volume_index = match (&parent, &changed_first_page) {
        (Some(parent), Some(_)) => writer.add_volume_incremental(volume, parent, 0)?,
        _ => writer.add_volume(volume)?,
    };
    let writer = Arc::new(writer);
    progress.start(size_gib * GIB);

    // The blocks to read, and (incremental) the indexes that disappeared.
    let (blocks, removed): (BlockStream<'_>, Arc<std::sync::Mutex<Vec<u64>>>) =
        match (changed_first_page, &parent_snapshot) {
            (Some(first), Some(psnap)) => {
                let removed = Arc::new(std::sync::Mutex::new(first.removed.clone()));
                let sink = Arc::clone(&removed);
                let first_blocks = first.blocks;
                let psnap = psnap.clone();
                let rest = stream::try_unfold(first.next_token, move |token| {
                    let psnap = psnap.clone();
                    let sink = Arc::clone(&sink);
                    async move {
                        match token {
                            None => Ok::<_, EbsError>(None),
                            Some(t) => {
                                let page =
                                    ebs.list_changed_page(&psnap, snapshot_id, Some(t)).await?;
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
                (Box::pin(s), removed)
            }
            _ => {
                let first = ebs.list_blocks_page(snapshot_id, None).await?;
                (
                    Box::pin(block_stream(ebs, snapshot_id, first)),
                    Arc::new(std::sync::Mutex::new(Vec::new())),
                )
            }
        };

    let blocks_read = blocks
        .map_err(ArchiveError::from)
        .map_ok(|block| {
            let writer = Arc::clone(&writer);
            async move {
                let data = ebs.get_block(snapshot_id, &block).await?;
                blocking(move || {
                    writer
                        .add_block(volume_index, block.index, &data)
                        .map(|_| ())
                })
                .await
            }
        })
        .try_buffer_unordered(concurrency.max(1))
        .try_fold(0u64, |n, ()| {
            progress.advance(BLOCK_SIZE as u64);
            async move { Ok(n + 1) }
        })
        .await?;

    let removed: Vec<u64> = std::mem::take(&mut *removed.lock().unwrap());
    let blocks_removed = removed.len() as u64;
    let writer = Arc::try_unwrap(writer)
        .map_err(|_| ArchiveError::Invalid("archive writer still shared".into()))?;
    let manifest = blocking(move || {
        for index in removed {
            writer.remove_block(volume_index, index)?;
        }
        writer.finish()
    })
    .await?;
    Ok(ArchiveReport {
        archive_id: manifest.id.to_string(),
        snapshot_id: snapshot_id.to_string(),
        parent: manifest.parent.as_ref().map(ToString::to_string),
        parent_snapshot_id: parent_snapshot,
        blocks_read,
        blocks_removed,
        size_bytes: manifest.stats.size_bytes,
        new_bytes: manifest.stats.new_bytes,
        new_stored_bytes: manifest.stats.new_stored_bytes,
        seconds: begun.elapsed().as_secs_f64(),
    })
}

/// Finds an archive by id, or the newest archive of a source snapshot id or lineage.
pub fn find_archive(
    repo: &autosnap_repo::Repository,
    wanted: &str,
) -> Result<autosnap_repo::Manifest, ArchiveError> {
    let mut matches: Vec<autosnap_repo::Manifest> = repo
        .list_archives()?
        .into_iter()
        .filter(|m| m.id.as_str() == wanted || m.source.id == wanted || m.lineage() == wanted)
        .collect();
    matches.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.id.cmp(&b.id)));
    matches.pop().ok_or_else(|| {
        ArchiveError::Invalid(format!(
            "no archive {wanted} in {} (see `autosnap repo list`)",
            repo.backend().location()
        ))
    })
}

/// What a restore to a snapshot did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoreSnapshotReport {
    pub archive_id: String,
    pub snapshot_id: String,
    pub blocks_written: u64,
    pub seconds: f64,
}

/// Restores volume 0 of `manifest` as a new snapshot with the original description and tags
/// (StartSnapshot / PutSnapshotBlock / CompleteSnapshot with the linear checksum). Every chunk
/// is hash-checked on read. Unencrypted: all-zero blocks are not sent. With a KMS key the
/// snapshot is encrypted and zero blocks the archive recorded are written (never-written
/// blocks of an encrypted snapshot do not read as zeros).
pub async fn restore_to_snapshot(
    ebs: &Ebs,
    repo: &autosnap_repo::Repository,
    manifest: autosnap_repo::Manifest,
    kms_key: Option<String>,
    concurrency: usize,
    progress: &dyn TransferProgress,
) -> Result<RestoreSnapshotReport, ArchiveError> {
    use autosnap_repo::{ArchiveReader, BlockRef};
    let begun = Instant::now();
    let volume = manifest
        .volumes
        .first()
        .ok_or_else(|| ArchiveError::Invalid(format!("archive {} has no volume", manifest.id)))?
        .clone();
    let encrypted = kms_key.is_some();
    let mut tags: Vec<(String, String)> = manifest
        .source
        .tags
        .iter()
        .chain(volume.source.tags.iter())
        .filter(|(k, _)| !k.starts_with("aws:"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    tags.sort();
    tags.dedup_by(|a, b| a.0 == b.0);
    let snapshot = ebs
        .start_snapshot(&NewSnapshot {
            volume_size_gib: volume.source.volume_size_gib.max(1),
            description: manifest
                .source
                .description
                .clone()
                .or_else(|| Some(format!("restored from autosnap archive {}", manifest.id))),
            tags,
            encrypted,
            kms_key_arn: kms_key,
            client_token: Some(format!(
                "autosnap-restore-{}-{}",
                manifest.id,
                std::process::id()
            )),
            ..NewSnapshot::default()
        })
        .await?;
    let started = Instant::now();
    progress.start(volume.stats.size_bytes);

    // A blocking producer walks the block map in index order into a bounded channel.
    let reader = Arc::new(ArchiveReader::new(repo, manifest.clone()));
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<(u64, BlockRef), autosnap_repo::Error>>(
        concurrency.max(1) * 4,
    );
    let producer = {
        let reader = Arc::clone(&reader);
        tokio::task::spawn_blocking(move || {
            let blocks = match reader.blocks(0) {
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
    let mut results = std::pin::pin!(items
        .map(|item| {
            let reader = Arc::clone(&reader);
            async move {
                let (index, block) = item?;
                if matches!(block, BlockRef::Zero) && !encrypted {
                    return Ok::<_, ArchiveError>(None);
                }
                let data = blocking(move || reader.read_block(&block)).await?;
                let (checksum, raw) = block_checksum(&data);
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
    Ok(RestoreSnapshotReport {
        archive_id: manifest.id.to_string(),
        snapshot_id: snapshot.clone(),
        blocks_written: written,
        seconds: begun.elapsed().as_secs_f64(),
    })
}

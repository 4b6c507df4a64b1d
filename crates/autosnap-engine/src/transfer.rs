//! Transfers between a raw image file and a snapshot: a file to a new snapshot (`upload`), a
//! snapshot to a sparse image file (`download`).
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

use crate::buffers::{block_sha256, BlockBuffers, LinearChecksum};
use crate::ports::BLOCK_SIZE;
use crate::ports::{BlockSink, BlockSource, NewSnapshot, RemoteError};

pub(crate) const GIB: u64 = 1 << 30;

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

/// A failure of an upload or a download.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The image file could not be written (a taken path, a planted symlink, an I/O error).
    #[error(transparent)]
    ImageFile(#[from] autosnap_repo::ImageFileError),
}

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

fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> TransferError + 'a {
    move |source| TransferError::Io {
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
    sink: &impl BlockSink,
    path: &Path,
    options: &UploadOptions,
    progress: &dyn TransferProgress,
) -> Result<UploadReport, TransferError> {
    let begun = Instant::now();
    let file = Arc::new(File::open(path).map_err(io_err("cannot open", path))?);
    let len = file.metadata().map_err(io_err("cannot stat", path))?.len();
    let volume_size_gib = len.div_ceil(GIB).max(1);
    let blocks = len.div_ceil(BLOCK_SIZE as u64);
    let snapshot = sink
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
                    let digest = (!is_zero_block(&buf)).then(|| block_sha256(&buf));
                    Ok::<_, std::io::Error>((buf.freeze(), filled as u64, digest))
                })
                .await
                .expect("block reader does not panic")
                .map_err(io_err("cannot read", path))?;
                let (buf, filled, digest) = read;
                if let Some(digest) = &digest {
                    sink.put_block(&snapshot, index, buf.clone(), digest, started)
                        .await?;
                }
                buffers.give(buf);
                Ok::<_, TransferError>((filled, digest))
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
    sink.complete_snapshot(&snapshot, written, &linear.finish())
        .await?;
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

pub use autosnap_ports::block_stream;

/// Downloads `snapshot` into a sparse image at `path` (the volume's full size). Written to a
/// private temp file in the same directory (see [`ImageFile`]), synced and moved into place
/// when complete; an existing file or symlink at `path` is refused unless `overwrite` is
/// [`Overwrite::Replace`]. Never-written and all-zero blocks stay holes. Every block is
/// checked against its EBS checksum (by the source).
pub async fn download_snapshot(
    source: &impl BlockSource,
    snapshot: &str,
    path: &Path,
    concurrency: usize,
    overwrite: Overwrite,
    progress: &dyn TransferProgress,
) -> Result<DownloadReport, TransferError> {
    let begun = Instant::now();
    // Before any request: a taken path fails at once, not after the first page.
    autosnap_repo::image_file::check_target(path, overwrite)?;
    let first = source.list_blocks(snapshot, None).await?;
    let size = first.volume_size_gib * GIB;
    let image = ImageFile::create(path, overwrite)?;
    // I/O errors name `path`, the file the user asked for, not the temp file behind it.
    let file = Arc::clone(image.file());
    file.set_len(size).map_err(io_err("cannot write", path))?;
    progress.start(size);

    let buffers = &BlockBuffers::new(concurrency.max(1) + 2);
    let blocks_read = block_stream(source, snapshot, first)
        .map_err(TransferError::from)
        .map_ok(|block| {
            let file = Arc::clone(&file);
            async move {
                let (data, _) = source.get_block(snapshot, &block, buffers.take()).await?;
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
                Ok::<_, TransferError>(())
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

//! Reading archives back: [`ArchiveReader`] iterates a volume's blocks in index order (one
//! block-map segment in memory at a time); [`Repository::restore_to_file`] writes a sparse raw
//! image; [`Repository::import_file`] archives one.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use crate::blockmap::BlockRef;
use crate::error::{io_err, Error, Result};
use crate::image_file::{ImageFile, Overwrite};
use crate::manifest::{ArchiveSource, Manifest, SourceKind, VolumeArchive, VolumeSource};
use crate::repository::Repository;
use crate::writer::is_zero_block;

/// Reads the blocks of an archive.
#[derive(Debug, Clone)]
pub struct ArchiveReader {
    repo: Repository,
    manifest: Manifest,
}

impl ArchiveReader {
    /// A reader of `manifest` in `repo`.
    pub fn new(repo: &Repository, manifest: Manifest) -> Self {
        ArchiveReader {
            repo: repo.clone(),
            manifest,
        }
    }

    /// The archive's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Volume `volume`, after checking its structure against the repository (the manifest
    /// may not come from [`Repository::read_manifest`], which checks it too): a reader trusts
    /// nothing about a block map before this.
    fn volume(&self, volume: usize) -> Result<&VolumeArchive> {
        let archive = self
            .manifest
            .volumes
            .get(volume)
            .ok_or(Error::NoSuchVolume {
                volume,
                count: self.manifest.volumes.len(),
            })?;
        let config = self.repo.config();
        archive
            .check(config.chunk_size, config.segment_blocks)
            .map_err(|reason| Error::CorruptObject {
                name: crate::repository::manifest_object_name(&self.manifest.id),
                reason: format!("volume {volume}: {reason}"),
            })?;
        Ok(archive)
    }

    /// The present blocks of `volume` as `(index, block)` in increasing index order. Indexes
    /// not yielded were never written in the source.
    pub fn blocks(&self, volume: usize) -> Result<VolumeBlocks<'_>> {
        let archive = self.volume(volume)?;
        Ok(VolumeBlocks {
            reader: self,
            archive,
            next_segment: 0,
            current: Vec::new().into_iter(),
            first_index: 0,
        })
    }

    /// Reads every block-map segment of `volume` and checks it against the manifest and the
    /// volume's size, without reading a chunk. A restore calls this before it writes anything,
    /// so a block map that would misplace, drop or overflow blocks is refused before the first
    /// byte lands on a device or in a snapshot (segments are small: about 0.5 MiB per 8 GiB
    /// of volume at the default span).
    pub fn check_block_map(&self, volume: usize) -> Result<()> {
        for entry in self.blocks(volume)? {
            entry?;
        }
        Ok(())
    }

    /// The content of a block: the chunk (hash-checked), or zeros.
    pub fn read_block(&self, block: &BlockRef) -> Result<Vec<u8>> {
        match block {
            BlockRef::Zero => Ok(vec![0; self.repo.chunk_size() as usize]),
            BlockRef::Chunk(id) => self.repo.get_chunk(id),
        }
    }
}

/// Iterator over one volume's blocks; see [`ArchiveReader::blocks`].
pub struct VolumeBlocks<'a> {
    reader: &'a ArchiveReader,
    archive: &'a VolumeArchive,
    next_segment: usize,
    current: std::vec::IntoIter<(u32, BlockRef)>,
    first_index: u64,
}

impl Iterator for VolumeBlocks<'_> {
    type Item = Result<(u64, BlockRef)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((offset, block)) = self.current.next() {
                return Some(Ok((self.first_index + u64::from(offset), block)));
            }
            let reference = *self.archive.block_map.segments.get(self.next_segment)?;
            self.next_segment += 1;
            let segment = match self.reader.repo.get_segment(&reference.id) {
                Ok(segment) => segment,
                Err(e) => {
                    self.next_segment = usize::MAX; // stop after the error
                    return Some(Err(e));
                }
            };
            if let Err(reason) = reference.check_segment(&segment, self.archive.block_count()) {
                self.next_segment = usize::MAX;
                return Some(Err(Error::CorruptObject {
                    name: crate::repository::blockmap_object_name(&reference.id),
                    reason,
                }));
            }
            self.first_index = segment.first_index;
            self.current = segment.entries.into_iter();
        }
    }
}

/// What a restore wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Blocks read from chunks and written.
    pub blocks_written: u64,
    /// All-zero blocks (left as holes).
    pub zero_blocks: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Length of the image.
    pub size_bytes: u64,
}

/// Options of [`Repository::restore_to_file_with`] and [`Repository::import_file`].
#[derive(Debug, Clone, Copy)]
pub struct Parallelism {
    /// Worker threads.
    pub threads: usize,
}

impl Default for Parallelism {
    fn default() -> Self {
        Parallelism {
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

/// Runs `work` on `threads` workers over the items `produce` sends; the first error stops
/// everything and is returned.
pub(crate) fn run_pool<T: Send>(
    threads: usize,
    what: &'static str,
    produce: impl FnOnce(&mpsc::SyncSender<T>, &AtomicBool) -> Result<()>,
    work: impl Fn(T) -> Result<()> + Sync,
) -> Result<()> {
    let threads = threads.max(1);
    let (sender, receiver) = mpsc::sync_channel::<T>(threads * 4);
    let receiver = Mutex::new(receiver);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let fail = |e: Error| {
        failed.store(true, Ordering::SeqCst);
        first_error.lock().unwrap().get_or_insert(e);
    };
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| loop {
                    let item = receiver.lock().unwrap().recv();
                    let Ok(item) = item else { break };
                    if failed.load(Ordering::SeqCst) {
                        continue; // drain
                    }
                    if let Err(e) = work(item) {
                        fail(e);
                    }
                })
            })
            .collect();
        if let Err(e) = produce(&sender, &failed) {
            fail(e);
        }
        drop(sender);
        for worker in workers {
            if worker.join().is_err() {
                fail(Error::WorkerPanicked(what));
            }
        }
    });
    match first_error.into_inner().unwrap() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

impl Repository {
    /// Restores `volume` of `manifest` as a sparse raw image at `path`, replacing what is
    /// there atomically when complete (see [`ImageFile`]: a private temp file in the same
    /// directory, synced, renamed; a symlink at `path` is replaced, not followed).
    /// Absent and all-zero blocks are left as holes; every chunk's hash is checked.
    pub fn restore_to_file(
        &self,
        manifest: &Manifest,
        volume: usize,
        path: &Path,
    ) -> Result<RestoreReport> {
        self.restore_to_file_with(
            manifest,
            volume,
            path,
            Parallelism::default(),
            Overwrite::Replace,
        )
    }

    /// [`Repository::restore_to_file`] with a chosen number of threads, and whether an
    /// existing file (or symlink) at `path` is replaced or refused.
    pub fn restore_to_file_with(
        &self,
        manifest: &Manifest,
        volume: usize,
        path: &Path,
        parallelism: Parallelism,
        overwrite: Overwrite,
    ) -> Result<RestoreReport> {
        let reader = ArchiveReader::new(self, manifest.clone());
        let archive = reader.volume(volume)?;
        reader.check_block_map(volume)?;
        let size = archive.source.size_bytes;
        let block_size = u64::from(archive.block_map.block_size);

        let image = ImageFile::create(path, overwrite)?;
        let file = image.file();
        // Errors name `path`, the file the user asked for, not the temp file behind it.
        file.set_len(size).map_err(|e| io_err("write", path, e))?;

        let written = AtomicU64::new(0);
        let bytes = AtomicU64::new(0);
        let zero = AtomicU64::new(0);
        run_pool(
            parallelism.threads,
            "restore",
            |sender, failed| {
                for entry in reader.blocks(volume)? {
                    let (index, block) = entry?;
                    if failed.load(Ordering::SeqCst) {
                        break;
                    }
                    match block {
                        BlockRef::Zero => {
                            zero.fetch_add(1, Ordering::Relaxed);
                        }
                        BlockRef::Chunk(id) => {
                            if sender.send((index, id)).is_err() {
                                break;
                            }
                        }
                    }
                }
                Ok(())
            },
            |(index, id)| {
                let data = self.get_chunk(&id)?;
                let offset = index * block_size;
                let len = (data.len() as u64).min(size.saturating_sub(offset)) as usize;
                file.write_all_at(&data[..len], offset)
                    .map_err(|e| io_err("write", path, e))?;
                written.fetch_add(1, Ordering::Relaxed);
                bytes.fetch_add(len as u64, Ordering::Relaxed);
                Ok(())
            },
        )?;
        image.persist()?;
        Ok(RestoreReport {
            blocks_written: written.into_inner(),
            zero_blocks: zero.into_inner(),
            bytes_written: bytes.into_inner(),
            size_bytes: size,
        })
    }

    /// Archives a raw disk image: every non-zero block is stored, all-zero blocks are
    /// skipped (recorded as never written, as an EBS upload skips them). The last block is
    /// padded with zeros; the exact length is kept in the manifest (`size_bytes`).
    pub fn import_file(&self, path: &Path, options: ImportOptions) -> Result<Manifest> {
        let mut file = File::open(path).map_err(|e| io_err("open", path, e))?;
        let len = file.metadata().map_err(|e| io_err("stat", path, e))?.len();
        let source = options
            .source
            .unwrap_or_else(|| ArchiveSource::new(SourceKind::File, path.display().to_string()));
        let volume = VolumeSource {
            size_bytes: len,
            volume_size_gib: len.div_ceil(1 << 30),
            ..options
                .volume
                .unwrap_or_else(|| VolumeSource::with_size_bytes(len))
        };
        let mut writer = self.begin_archive(source)?;
        let v = writer.add_volume(volume)?;
        let block_size = self.chunk_size() as usize;
        let writer = Arc::new(writer);
        run_pool(
            options.parallelism.threads,
            "import",
            |sender, failed| {
                let mut index = 0u64;
                loop {
                    if failed.load(Ordering::SeqCst) {
                        break;
                    }
                    let mut block = vec![0u8; block_size];
                    let n =
                        read_full(&mut file, &mut block).map_err(|e| io_err("read", path, e))?;
                    if n == 0 {
                        break;
                    }
                    if !(options.skip_zero_blocks && is_zero_block(&block))
                        && sender.send((index, block)).is_err()
                    {
                        break;
                    }
                    index += 1;
                    if n < block_size {
                        break;
                    }
                }
                Ok(())
            },
            |(index, block): (u64, Vec<u8>)| writer.add_block(v, index, &block).map(|_| ()),
        )?;
        let writer = Arc::try_unwrap(writer).expect("workers are done");
        writer.finish()
    }
}

/// Reads until `buf` is full or the end of the file; returns the bytes read.
fn read_full(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Options of [`Repository::import_file`].
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The archive's source (default: kind `file`, id = the path).
    pub source: Option<ArchiveSource>,
    /// The volume's description (its size is always the file's).
    pub volume: Option<VolumeSource>,
    /// Skip all-zero blocks (default `true`); `false` records them as zero blocks.
    pub skip_zero_blocks: bool,
    pub parallelism: Parallelism,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            source: None,
            volume: None,
            skip_zero_blocks: true,
            parallelism: Parallelism::default(),
        }
    }
}

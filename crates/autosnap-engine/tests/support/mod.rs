//! In-memory fakes of the engine's traits: one `FakeCloud` is EBS direct (snapshots as block
//! maps), EC2's snapshot catalog and its AMIs; `MemObjects` is a repository's async object
//! store over `autosnap_repo::MemoryBackend` (what S3 is to the engine). Faults are set per
//! test and every call is counted.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use autosnap_engine::ports::{
    BlockEntry, BlockPage, BlockSink, BlockSource, Images, NewImageFromMappings, NewSnapshot,
    ObjectStore, RemoteError, RemoteErrorKind, Snapshots,
};
use autosnap_engine::{block_sha256, LinearChecksum, BLOCK_SIZE};
use autosnap_repo::{Backend, BackendError, MemoryBackend};
use futures::future::BoxFuture;

pub const REGION: &str = "eu-west-1";
pub const ACCOUNT: &str = "111122223333";

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FakeError(pub String);

fn fail(kind: RemoteErrorKind, what: impl Into<String>) -> RemoteError {
    RemoteError::new(kind, FakeError(what.into()))
}

/// A block of 512 KiB whose bytes depend on `seed` (never all zeros).
pub fn block(seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(BLOCK_SIZE);
    while out.len() < BLOCK_SIZE {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

#[derive(Debug, Clone)]
pub struct FakeSnapshot {
    pub volume_id: Option<String>,
    pub size_gib: u64,
    pub blocks: BTreeMap<u64, Vec<u8>>,
    pub state: String,
    pub encrypted: bool,
    pub kms_key: Option<String>,
    pub description: Option<String>,
    pub tags: Vec<(String, String)>,
    /// What CompleteSnapshot was given (block count, linear checksum).
    pub completed_with: Option<(u64, [u8; 32])>,
}

#[derive(Debug, Clone)]
pub struct FakeImage {
    pub image_id: String,
    pub request: NewImageFromMappings,
}

#[derive(Default)]
pub struct Faults {
    /// GetSnapshotBlock of this block index fails (for good).
    pub get_block_fails_at: Option<u64>,
    /// CompleteSnapshot fails.
    pub complete_fails: bool,
    /// RegisterImage fails.
    pub register_fails: bool,
    /// ListChangedBlocks fails (as EBS does when it cannot compare the two snapshots).
    pub changed_blocks_fail: bool,
}

#[derive(Default)]
pub struct Counts {
    pub list_blocks: AtomicUsize,
    pub list_changed: AtomicUsize,
    pub get_block: AtomicUsize,
    pub put_block: AtomicUsize,
    pub start: AtomicUsize,
    pub complete: AtomicUsize,
    pub delete: AtomicUsize,
    pub register: AtomicUsize,
}

/// EBS direct, EC2's snapshots and AMIs, in memory.
pub struct FakeCloud {
    pub snapshots: Mutex<BTreeMap<String, FakeSnapshot>>,
    pub images: Mutex<Vec<FakeImage>>,
    pub faults: Mutex<Faults>,
    pub counts: Counts,
    /// Blocks per listing page (small, so that listings take several pages).
    pub page: usize,
    next: AtomicUsize,
}

impl Default for FakeCloud {
    fn default() -> Self {
        FakeCloud {
            snapshots: Mutex::default(),
            images: Mutex::default(),
            faults: Mutex::default(),
            counts: Counts::default(),
            page: 3,
            next: AtomicUsize::new(1),
        }
    }
}

pub fn count(c: &AtomicUsize) -> usize {
    c.load(Ordering::SeqCst)
}

impl FakeCloud {
    /// A completed snapshot of volume `volume_id` holding `blocks`.
    pub fn add_snapshot(
        &self,
        volume_id: Option<&str>,
        size_gib: u64,
        blocks: BTreeMap<u64, Vec<u8>>,
    ) -> String {
        let id = format!("snap-{:017x}", self.next.fetch_add(1, Ordering::SeqCst));
        self.snapshots.lock().unwrap().insert(
            id.clone(),
            FakeSnapshot {
                volume_id: volume_id.map(str::to_string),
                size_gib,
                blocks,
                state: "completed".into(),
                encrypted: false,
                kms_key: None,
                description: Some("a test volume".into()),
                tags: vec![("Name".into(), "data".into())],
                completed_with: None,
            },
        );
        id
    }

    pub fn snapshot(&self, id: &str) -> Option<FakeSnapshot> {
        self.snapshots.lock().unwrap().get(id).cloned()
    }

    /// The snapshot as a volume reads it: its size and the SHA-256 of each block that is not
    /// all zeros (a never-written block reads as zeros too), without building the volume.
    pub fn image(&self, id: &str) -> (u64, BTreeMap<u64, [u8; 32]>) {
        let s = self.snapshot(id).expect("snapshot exists");
        let data = s
            .blocks
            .iter()
            .filter(|(_, b)| b.iter().any(|&x| x != 0))
            .map(|(i, b)| (*i, block_sha256(b)))
            .collect();
        (s.size_gib, data)
    }

    fn page_of(
        &self,
        entries: Vec<(u64, Option<String>)>,
        token: Option<String>,
        size: u64,
    ) -> BlockPage {
        let start: usize = token.map_or(0, |t| t.parse().expect("our own token"));
        let end = (start + self.page).min(entries.len());
        let mut page = BlockPage {
            volume_size_gib: size,
            next_token: (end < entries.len()).then(|| end.to_string()),
            ..BlockPage::default()
        };
        for (index, token) in &entries[start..end] {
            match token {
                Some(t) => page.blocks.push(BlockEntry {
                    index: *index,
                    token: t.clone(),
                }),
                None => page.removed.push(*index),
            }
        }
        page
    }
}

impl BlockSource for FakeCloud {
    async fn list_blocks(
        &self,
        snapshot: &str,
        token: Option<String>,
    ) -> Result<BlockPage, RemoteError> {
        self.counts.list_blocks.fetch_add(1, Ordering::SeqCst);
        let s = self
            .snapshot(snapshot)
            .ok_or_else(|| fail(RemoteErrorKind::NotFound, format!("no snapshot {snapshot}")))?;
        let entries = s
            .blocks
            .keys()
            .map(|i| (*i, Some(format!("{snapshot}/{i}"))))
            .collect();
        Ok(self.page_of(entries, token, s.size_gib))
    }

    async fn list_changed_blocks(
        &self,
        first: &str,
        second: &str,
        token: Option<String>,
    ) -> Result<BlockPage, RemoteError> {
        self.counts.list_changed.fetch_add(1, Ordering::SeqCst);
        if self.faults.lock().unwrap().changed_blocks_fail {
            return Err(fail(RemoteErrorKind::Other, "cannot compare"));
        }
        let a = self
            .snapshot(first)
            .ok_or_else(|| fail(RemoteErrorKind::NotFound, format!("no snapshot {first}")))?;
        let b = self
            .snapshot(second)
            .ok_or_else(|| fail(RemoteErrorKind::NotFound, format!("no snapshot {second}")))?;
        let indexes: std::collections::BTreeSet<u64> =
            a.blocks.keys().chain(b.blocks.keys()).copied().collect();
        let entries = indexes
            .into_iter()
            .filter(|i| a.blocks.get(i) != b.blocks.get(i))
            .map(|i| {
                (
                    i,
                    b.blocks.contains_key(&i).then(|| format!("{second}/{i}")),
                )
            })
            .collect();
        Ok(self.page_of(entries, token, b.size_gib))
    }

    async fn get_block(
        &self,
        snapshot: &str,
        block: &BlockEntry,
        mut buf: bytes::BytesMut,
    ) -> Result<(bytes::Bytes, [u8; 32]), RemoteError> {
        self.counts.get_block.fetch_add(1, Ordering::SeqCst);
        // Let the other blocks in flight run, as a network read would.
        tokio::task::yield_now().await;
        if self.faults.lock().unwrap().get_block_fails_at == Some(block.index) {
            return Err(fail(
                RemoteErrorKind::Other,
                format!(
                    "GetSnapshotBlock {snapshot} block {}: connection reset",
                    block.index
                ),
            ));
        }
        assert_eq!(
            block.token,
            format!("{snapshot}/{}", block.index),
            "a token of this snapshot"
        );
        let s = self.snapshot(snapshot).expect("listed");
        let data = s.blocks.get(&block.index).expect("listed");
        buf.clear();
        buf.extend_from_slice(data);
        Ok((buf.freeze(), block_sha256(data)))
    }
}

impl BlockSink for FakeCloud {
    async fn start_snapshot(&self, new: &NewSnapshot) -> Result<String, RemoteError> {
        self.counts.start.fetch_add(1, Ordering::SeqCst);
        let id = self.add_snapshot(None, new.volume_size_gib, BTreeMap::new());
        let mut all = self.snapshots.lock().unwrap();
        let s = all.get_mut(&id).unwrap();
        s.state = "pending".into();
        s.encrypted = new.encrypted;
        s.kms_key = new.kms_key_arn.clone();
        s.description = new.description.clone();
        s.tags = new.tags.clone();
        Ok(id)
    }

    async fn put_block(
        &self,
        snapshot: &str,
        index: u64,
        data: bytes::Bytes,
        sha256: &[u8; 32],
        _started: Instant,
    ) -> Result<(), RemoteError> {
        self.counts.put_block.fetch_add(1, Ordering::SeqCst);
        tokio::task::yield_now().await;
        assert_eq!(data.len(), BLOCK_SIZE);
        if block_sha256(&data) != *sha256 {
            return Err(fail(
                RemoteErrorKind::Other,
                format!("block {index}: checksum mismatch"),
            ));
        }
        let mut all = self.snapshots.lock().unwrap();
        let s = all.get_mut(snapshot).expect("started");
        assert_eq!(s.state, "pending", "blocks go to a pending snapshot");
        s.blocks.insert(index, data.to_vec());
        Ok(())
    }

    async fn complete_snapshot(
        &self,
        snapshot: &str,
        blocks_written: u64,
        linear_sha256: &[u8; 32],
    ) -> Result<(), RemoteError> {
        self.counts.complete.fetch_add(1, Ordering::SeqCst);
        if self.faults.lock().unwrap().complete_fails {
            return Err(fail(
                RemoteErrorKind::Other,
                "CompleteSnapshot: internal error",
            ));
        }
        let mut all = self.snapshots.lock().unwrap();
        let s = all.get_mut(snapshot).expect("started");
        // EBS checks the count and the LINEAR checksum over the blocks it holds.
        let mut linear = LinearChecksum::default();
        for b in s.blocks.values() {
            linear.push(&block_sha256(b));
        }
        if linear.blocks() != blocks_written || linear.finish() != *linear_sha256 {
            s.state = "error".into();
            return Err(fail(
                RemoteErrorKind::Other,
                "checksum of the snapshot differs",
            ));
        }
        s.completed_with = Some((blocks_written, *linear_sha256));
        s.state = "completed".into();
        Ok(())
    }
}

impl Snapshots for FakeCloud {
    fn region(&self) -> &str {
        REGION
    }

    fn account(&self) -> &str {
        ACCOUNT
    }

    async fn describe_snapshots(
        &self,
        ids: &[String],
    ) -> Result<Vec<autosnap_core::model::Snapshot>, RemoteError> {
        let all = self.snapshots.lock().unwrap();
        Ok(ids
            .iter()
            .filter_map(|id| {
                let s = all.get(id)?;
                Some(autosnap_core::model::Snapshot {
                    snapshot_id: id.clone(),
                    volume_id: s.volume_id.clone(),
                    state: s.state.clone(),
                    progress: None,
                    start_time: None,
                    size_gib: Some(s.size_gib as i32),
                    encrypted: s.encrypted,
                    kms_key_id: s.kms_key.clone(),
                    description: s.description.clone(),
                    owner_id: Some(ACCOUNT.into()),
                    managed: false,
                    tags: s.tags.iter().cloned().collect(),
                    storage_tier: Default::default(),
                    restore_expiry: None,
                })
            })
            .collect())
    }

    async fn delete_snapshot(&self, id: &str) -> Result<(), RemoteError> {
        self.counts.delete.fetch_add(1, Ordering::SeqCst);
        match self.snapshots.lock().unwrap().remove(id) {
            Some(_) => Ok(()),
            None => Err(fail(RemoteErrorKind::NotFound, format!("no snapshot {id}"))),
        }
    }

    async fn wait_completed(&self, ids: &[String], _timeout: Duration) -> Result<(), RemoteError> {
        let all = self.snapshots.lock().unwrap();
        for id in ids {
            match all.get(id) {
                Some(s) if s.state == "completed" => {}
                Some(s) => {
                    return Err(fail(
                        RemoteErrorKind::Other,
                        format!("snapshot {id} is {}", s.state),
                    ))
                }
                None => return Err(fail(RemoteErrorKind::NotFound, format!("no snapshot {id}"))),
            }
        }
        Ok(())
    }

    async fn tag(
        &self,
        ids: &[String],
        tags: &autosnap_core::tags::Tags,
    ) -> Result<(), RemoteError> {
        let mut all = self.snapshots.lock().unwrap();
        for id in ids {
            let s = all.get_mut(id).expect("tagging a snapshot that exists");
            s.tags
                .extend(tags.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        Ok(())
    }
}

impl Images for FakeCloud {
    async fn image_named(&self, name: &str) -> Result<Option<String>, RemoteError> {
        Ok(self
            .images
            .lock()
            .unwrap()
            .iter()
            .find(|i| i.request.name == name)
            .map(|i| i.image_id.clone()))
    }

    async fn register_image(&self, image: &NewImageFromMappings) -> Result<String, RemoteError> {
        self.counts.register.fetch_add(1, Ordering::SeqCst);
        if self.faults.lock().unwrap().register_fails {
            return Err(fail(
                RemoteErrorKind::Other,
                "RegisterImage: InvalidParameter",
            ));
        }
        let id = format!("ami-{:017x}", self.next.fetch_add(1, Ordering::SeqCst));
        self.images.lock().unwrap().push(FakeImage {
            image_id: id.clone(),
            request: image.clone(),
        });
        Ok(id)
    }
}

/// A repository's objects answered from async code, as S3 answers them: the same
/// `MemoryBackend` the repository opened, so either path sees what the other wrote.
pub struct MemObjects {
    pub backend: Arc<MemoryBackend>,
    pub calls: AtomicUsize,
}

impl ObjectStore for MemObjects {
    fn exists<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool, BackendError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move { self.backend.exists(name) })
    }

    fn create<'a>(
        &'a self,
        name: &'a str,
        data: bytes::Bytes,
    ) -> BoxFuture<'a, Result<bool, BackendError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move { self.backend.create(name, &data) })
    }

    fn write<'a>(
        &'a self,
        name: &'a str,
        data: bytes::Bytes,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move { self.backend.write(name, &data) })
    }

    fn read_at_most<'a>(
        &'a self,
        name: &'a str,
        limit: u64,
    ) -> BoxFuture<'a, Result<Vec<u8>, BackendError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move { self.backend.read_at_most(name, limit) })
    }
}

/// An unencrypted repository in memory, and its backend (to count or break its objects).
pub fn memory_repo() -> (autosnap_repo::Repository, Arc<MemoryBackend>) {
    let backend = Arc::new(MemoryBackend::new());
    let repo = autosnap_repo::Repository::init(
        backend.clone(),
        autosnap_repo::InitOptions {
            segment_blocks: 4,
            ..Default::default()
        },
    )
    .expect("init");
    (repo, backend)
}

/// The chunk objects stored in `backend`.
pub fn chunk_names(backend: &MemoryBackend) -> Vec<String> {
    backend
        .names()
        .into_iter()
        .filter(|n| n.starts_with("chunks/"))
        .collect()
}

/// `n` distinct blocks at indexes 0, 2, 4, … (with holes between them).
pub fn sparse_blocks(n: u64, seed: u64) -> BTreeMap<u64, Vec<u8>> {
    (0..n).map(|i| (2 * i, block(seed * 1000 + i))).collect()
}

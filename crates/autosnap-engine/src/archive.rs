//! Archives of snapshots and AMIs into a repository: planning (which snapshots, which earlier
//! archive each volume builds on) and the run (blocks → chunks → manifest).

use std::sync::Arc;
use std::time::Instant;

use futures::stream::{self, StreamExt, TryStreamExt};

use crate::ports::BLOCK_SIZE;
use crate::ports::{BlockEntry, BlockPage, BlockSource, ObjectStore, RemoteError, Repo, Snapshots};
use crate::transfer::{block_stream, TransferProgress, GIB};

/// A failure of `archive` or `restore`.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// An AWS call failed (the adapter's error, whole).
    #[error(transparent)]
    Remote(#[from] RemoteError),
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
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<BlockEntry, RemoteError>> + Send + 'a>>;

pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, autosnap_repo::Error> + Send + 'static,
) -> Result<T, ArchiveError> {
    Ok(tokio::task::spawn_blocking(work).await??)
}

/// Stores block `index` of `volume` (checked against its EBS checksum) through `writer`.
async fn store_block(
    writer: &Arc<autosnap_repo::ArchiveWriter>,
    objects: Option<&dyn ObjectStore>,
    volume: usize,
    index: u64,
    data: bytes::Bytes,
    sha256: [u8; 32],
) -> Result<(), ArchiveError> {
    use autosnap_repo::BlockStep;
    let s3 = match objects {
        Some(s3) => s3,
        None => {
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
    if pending.check_first() && s3.exists(pending.name()).await.map_err(remote)? {
        writer.commit_block(pending, None)?;
        return Ok(());
    }
    let sealed = bytes::Bytes::from(writer.seal_chunk(&pending, &data)?);
    let len = sealed.len() as u64;
    let mut created = s3
        .create(pending.name(), sealed.clone())
        .await
        .map_err(remote)?;
    if !created && pending.replace_existing() {
        s3.write(pending.name(), sealed).await.map_err(remote)?;
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
    ec2: &impl Snapshots,
    repo: &autosnap_repo::Repository,
    snapshot_id: &str,
    lineage: Option<String>,
) -> Result<ArchivePlan, ArchiveError> {
    use autosnap_repo::{ArchiveSource, SourceKind};
    let region = ec2.region().to_string();
    let snap = ec2
        .describe_snapshots(&[snapshot_id.to_string()])
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
/// `autosnap_aws::ec2::Ec2::collect_image_metadata`): every EBS snapshot of its block device
/// mappings, each incremental from the newest archive of its volume lineage, and the document
/// itself in the manifest. The archive's lineage is `lineage` when given, else the instance
/// the AMI was made from, else the AMI's volumes.
pub async fn plan_image_archive(
    ec2: &impl Snapshots,
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
    let snaps = ec2.describe_snapshots(&ids).await?;
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
    ebs: &impl BlockSource,
    ec2: &impl Snapshots,
    repo: Repo<'_>,
    snapshot_id: &str,
    concurrency: usize,
    progress: &dyn TransferProgress,
) -> Result<ArchiveReport, ArchiveError> {
    let plan = plan_snapshot_archive(ec2, repo.repo, snapshot_id, None).await?;
    run_archive(ebs, repo, plan, concurrency, progress).await
}

/// Runs an archive plan: every block of each volume through GetSnapshotBlock (checksum
/// verified) into one [`autosnap_repo::ArchiveWriter`] — or, for a volume with a parent whose
/// snapshot EBS can still compare, only the blocks ListChangedBlocks reports, inheriting the
/// rest. Chunks are deduplicated across volumes and archives. The manifest, holding every
/// volume (and an AMI's metadata document), is written last, atomically: a process killed
/// before that leaves only unreferenced chunks, which a rerun reuses.
pub async fn run_archive(
    ebs: &impl BlockSource,
    repo: Repo<'_>,
    plan: ArchivePlan,
    concurrency: usize,
    progress: &dyn TransferProgress,
) -> Result<ArchiveReport, ArchiveError> {
    let begun = Instant::now();
    let Repo { repo, objects } = repo;
    // Which parents EBS can still compare with (a parent's snapshot may be deleted).
    let mut changed = Vec::with_capacity(plan.volumes.len());
    for v in &plan.volumes {
        let page = match &v.parent {
            Some(p) => match ebs
                .list_changed_blocks(&p.snapshot_id, &v.snapshot_id, None)
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
    if objects.is_some() && expected > 0 {
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
            objects,
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
async fn archive_volume<S: BlockSource>(
    ebs: &S,
    writer: &Arc<autosnap_repo::ArchiveWriter>,
    objects: Option<&dyn ObjectStore>,
    volume: usize,
    snapshot_id: &str,
    changed: Option<(BlockPage, &str)>,
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
                        None => Ok::<_, RemoteError>(None),
                        Some(t) => {
                            let page = ebs.list_changed_blocks(psnap, snapshot_id, Some(t)).await?;
                            sink.lock().unwrap().extend(page.removed);
                            Ok(Some((page.blocks, page.next_token)))
                        }
                    }
                }
            });
            let s = stream::once(async move { Ok::<_, RemoteError>(first_blocks) })
                .chain(rest)
                .map_ok(|b| stream::iter(b.into_iter().map(Ok)))
                .try_flatten();
            Box::pin(s)
        }
        None => {
            let first = ebs.list_blocks(snapshot_id, None).await?;
            Box::pin(block_stream(ebs, snapshot_id, first))
        }
    };
    let blocks_read = blocks
        .map_err(ArchiveError::from)
        .map_ok(|block| async move {
            let buf = bytes::BytesMut::with_capacity(BLOCK_SIZE);
            let (data, sha256) = ebs.get_block(snapshot_id, &block, buf).await?;
            store_block(writer, objects, volume, block.index, data, sha256).await
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

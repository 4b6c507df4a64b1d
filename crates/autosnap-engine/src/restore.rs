//! Restores from a repository: finding the archive, choosing its volume, and writing a
//! volume back as a new snapshot.

use std::sync::Arc;
use std::time::Instant;

use futures::stream::{self, StreamExt};

use crate::archive::{blocking, ArchiveError};
use crate::buffers::{block_sha256, LinearChecksum};
use crate::ports::BLOCK_SIZE;
use crate::ports::{BlockSink, NewSnapshot, Repo};
use crate::transfer::TransferProgress;

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
    ebs: &impl BlockSink,
    repo: Repo<'_>,
    manifest: &autosnap_repo::Manifest,
    target: &SnapshotTarget,
    concurrency: usize,
    progress: &dyn TransferProgress,
) -> Result<RestoreSnapshotReport, ArchiveError> {
    use autosnap_repo::{ArchiveReader, BlockRef};
    let begun = Instant::now();
    let Repo { repo, objects } = repo;
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
        let mut results = std::pin::pin!(items
            .map(|item| {
                let reader = Arc::clone(&reader);
                async move {
                    let (index, block) = item?;
                    if matches!(block, BlockRef::Zero) && !encrypted {
                        return Ok::<_, ArchiveError>(None);
                    }
                    let (data, raw) = match (objects, block) {
                        (Some(s3), BlockRef::Chunk(id)) => {
                            let name = autosnap_repo::repository::chunk_object_name(&id);
                            let sealed = s3
                                .read_at_most(&name, repo.chunk_object_limit())
                                .await
                                .map_err(|e| repo.chunk_read_error(&id, e))?;
                            // Decrypting, decompressing and the hash check inline.
                            let data = repo.open_chunk(&id, sealed)?;
                            // Unencrypted, the chunk id is the block's SHA-256, just checked:
                            // it is the checksum EBS wants.
                            let raw = if repo.is_encrypted() {
                                block_sha256(&data)
                            } else {
                                id.0
                            };
                            (data, raw)
                        }
                        _ => {
                            let data = blocking(move || reader.read_block(&block)).await?;
                            let raw = block_sha256(&data);
                            (data, raw)
                        }
                    };
                    ebs.put_block(snapshot_ref, index, data.into(), &raw, started)
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
        ebs.complete_snapshot(&snapshot, written, &linear.finish())
            .await?;
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

//! Restore of an AMI archive as a new AMI: the plan (name, keys, devices) and the run, with
//! its rollback (the snapshots made are deleted when a later step fails).

use std::time::Instant;

use crate::archive::ArchiveError;
use crate::ports::{
    BlockSink, Images, NewImageFromMappings, RegisteredMapping, RemoteErrorKind, Repo, Snapshots,
};
use crate::restore::{restore_to_snapshot, SnapshotTarget};
use crate::transfer::TransferProgress;

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
    ec2: &impl Images,
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
    if let Some(other) = ec2.image_named(&name).await? {
        return Err(ArchiveError::NameTaken {
            name,
            image_id: other,
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

/// How long to wait for restored snapshots to complete before registering the AMI.
const SNAPSHOT_WAIT: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

/// Deletes snapshots this restore made; says what happened (never fails).
async fn delete_made(ec2: &impl Snapshots, snapshots: &[String]) -> String {
    if snapshots.is_empty() {
        return "no snapshot had been made".to_string();
    }
    let mut deleted = Vec::new();
    let mut left = Vec::new();
    for s in snapshots {
        match ec2.delete_snapshot(s).await {
            Ok(()) => deleted.push(s.clone()),
            Err(e) if e.kind() == RemoteErrorKind::NotFound => deleted.push(s.clone()),
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
    ebs: &impl BlockSink,
    ec2: &impl Images,
    repo: Repo<'_>,
    manifest: &autosnap_repo::Manifest,
    plan: &ImageRestorePlan,
    concurrency: usize,
    progress: &dyn TransferProgress,
) -> Result<RestoreImageReport, ArchiveError> {
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
    if let Err(e) = ec2.wait_completed(&made, SNAPSHOT_WAIT).await {
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
        .register_image(&NewImageFromMappings {
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
            let hint = if e.kind() == RemoteErrorKind::NameTaken {
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
    if let Err(e) = ec2.tag(&made, &for_image).await {
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

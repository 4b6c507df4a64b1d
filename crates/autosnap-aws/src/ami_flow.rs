//! AMI workflows shared by `ami create`, `ami restore` and AMI backup policies: free
//! names, cleanup of AMIs autosnap just made, encryption by CopyImage, and the backup AMI of
//! an instance ([`create_backup_image`]).

use std::time::Duration;

use std::collections::BTreeMap;

use autosnap_core::ami::{
    keep_locked_snapshots, keep_with_image_reason, plan_ami_deletes, unique_image_name,
    AmiDeleteAction, AmiDeleteDecision, AmiMetadata, ImageDetails,
};
use autosnap_core::ami_create::{
    encrypted_copy_name, intermediate_base, needs_encrypted_copy, BackupImageNames,
};
use autosnap_core::tags::{self, Tags};
use futures::future::BoxFuture;
use serde::Serialize;

use crate::ami::{ImageCopy, NewImage, PollSchedule};
use crate::rate::{paced_each, Ec2RateLimits};
use crate::{AwsError, Ec2, VolumeQuery};

/// Whether EC2 refused a name as taken (a race with the check before).
pub fn name_taken(e: &AwsError) -> bool {
    matches!(
        e,
        AwsError::InvalidRequest { code, .. } | AwsError::Service { code, .. }
            if code == "InvalidAMIName.Duplicate"
    )
}

/// The first free name among `base`, `base-2`, … (one DescribeImages each).
pub async fn free_name(ec2: &Ec2, base: &str) -> Result<String, AwsError> {
    let mut taken = std::collections::BTreeSet::new();
    loop {
        let candidate = unique_image_name(base, |n| taken.contains(n));
        if ec2.images_named(&candidate).await?.is_empty() {
            return Ok(candidate);
        }
        taken.insert(candidate);
        if taken.len() > 100 {
            return Err(AwsError::Failed {
                what: format!("finding a free AMI name near '{base}'"),
                detail: "the first 100 candidates are taken: pass a name".into(),
            });
        }
    }
}

// ---- cleanup after failures ------------------------------------------------------

/// What cleaning up a failed or intermediate AMI did and did not manage.
#[derive(Debug, Default, Serialize)]
pub struct Cleanup {
    pub deregistered: Vec<String>,
    pub deleted_snapshots: Vec<String>,
    /// Snapshots of the AMI that stay on purpose (with why): not autosnap's, or not made
    /// for the AMI.
    pub kept_snapshots: Vec<String>,
    /// Resources still there (with why), for the user to remove by hand.
    pub left: Vec<String>,
}

impl Cleanup {
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if !self.deregistered.is_empty() {
            parts.push(format!("deregistered {}", self.deregistered.join(", ")));
        }
        if !self.deleted_snapshots.is_empty() {
            parts.push(format!(
                "deleted snapshots {}",
                self.deleted_snapshots.join(", ")
            ));
        }
        if !self.kept_snapshots.is_empty() {
            parts.push(format!("kept snapshots {}", self.kept_snapshots.join("; ")));
        }
        let done = if parts.is_empty() {
            "nothing needed cleaning up".to_string()
        } else {
            format!("cleaned up: {}", parts.join("; "))
        };
        if self.left.is_empty() {
            format!("{done}; nothing is left behind")
        } else {
            format!(
                "{done}; LEFT BEHIND (remove by hand): {}",
                self.left.join("; ")
            )
        }
    }

    pub fn merge(&mut self, other: Cleanup) {
        self.deregistered.extend(other.deregistered);
        self.deleted_snapshots.extend(other.deleted_snapshots);
        self.kept_snapshots.extend(other.kept_snapshots);
        self.left.extend(other.left);
    }
}

/// Deregisters an AMI autosnap just made (CreateImage, CopyImage or a restore task, which
/// make every snapshot in its mappings) and deletes its snapshots: those in its mappings
/// and those EC2 made for it (found by the AMI id in their description among autosnap's
/// snapshots). Never fails: what could not be removed is listed.
pub async fn remove_image(ec2: &Ec2, image_id: &str) -> Cleanup {
    remove_image_with(ec2, image_id, false).await
}

/// Deregisters an existing AMI of autosnap's (a policy's AMI that retention removes) and
/// deletes only the snapshots made for it: those in its mappings that autosnap owns and that
/// were made for this AMI ([`keep_with_image_reason`]: a user's snapshot, or a backup
/// registered into the AMI, stays and is listed in `kept_snapshots`), and those EC2 made for
/// it that its mappings may not show. Never fails: what could not be removed is listed.
pub async fn remove_owned_image(ec2: &Ec2, image_id: &str) -> Cleanup {
    remove_image_with(ec2, image_id, true).await
}

async fn remove_image_with(ec2: &Ec2, image_id: &str, only_made_for_it: bool) -> Cleanup {
    let mut c = Cleanup::default();
    let mapped: Vec<String> = match ec2.find_images(&[image_id.to_string()]).await {
        Ok(found) => found.iter().flat_map(ImageDetails::snapshot_ids).collect(),
        Err(e) => {
            tracing::warn!("cannot describe {image_id} for cleanup: {e}");
            Vec::new()
        }
    };
    let mut snapshots = if only_made_for_it {
        match ec2.mapped_snapshots(&mapped).await {
            Ok(described) => {
                let (go, stay): (Vec<_>, Vec<_>) = mapped
                    .into_iter()
                    .map(|s| {
                        let why = keep_with_image_reason(image_id, &s, described.get(&s));
                        (s, why)
                    })
                    .partition(|(_, why)| why.is_none());
                c.kept_snapshots.extend(
                    stay.into_iter()
                        .map(|(s, why)| format!("{s} ({})", why.unwrap_or_default())),
                );
                go.into_iter().map(|(s, _)| s).collect()
            }
            Err(e) => {
                c.kept_snapshots.extend(
                    mapped
                        .into_iter()
                        .map(|s| format!("{s} (cannot tell whether autosnap made it: {e})")),
                );
                Vec::new()
            }
        }
    } else {
        mapped
    };
    match ec2
        .snapshots_made_for_image(
            image_id,
            &[(tags::MANAGED.into(), Some(tags::MANAGED_VALUE.into()))],
        )
        .await
    {
        Ok(more) => {
            for s in more {
                if !snapshots.contains(&s.snapshot_id) {
                    snapshots.push(s.snapshot_id);
                }
            }
        }
        Err(e) => tracing::warn!("cannot look for snapshots made for {image_id}: {e}"),
    }
    // Never a snapshot another registered AMI still uses.
    if !snapshots.is_empty() {
        if let Ok(users) = ec2.images_with_snapshots(&snapshots).await {
            snapshots.retain(|s| {
                let other = users
                    .iter()
                    .find(|i| i.image_id != image_id && i.snapshot_ids().contains(s));
                if let Some(other) = other {
                    c.kept_snapshots
                        .push(format!("{s} (also used by AMI {})", other.image_id));
                }
                other.is_none()
            });
        }
    }
    // Never a locked snapshot: it stays, and the cleanup says until when. If the locks
    // cannot be read, no snapshot is deleted (the AMI still goes; its snapshots are listed).
    if !snapshots.is_empty() {
        match ec2.locked_snapshots(&snapshots).await {
            Ok(locks) => snapshots.retain(|s| {
                let lock = autosnap_core::lock::blocking(&locks, std::slice::from_ref(s));
                if let Some(lock) = lock.first() {
                    c.kept_snapshots.push(format!("{s} ({})", lock.reason()));
                }
                lock.is_empty()
            }),
            Err(e) => {
                for s in snapshots.drain(..) {
                    c.left
                        .push(format!("snapshot {s} (its lock state cannot be read: {e})"));
                }
            }
        }
    }
    match ec2.deregister_image(image_id).await {
        Ok(()) => c.deregistered.push(image_id.to_string()),
        Err(e) if e.is_not_found() => {}
        Err(e) => {
            c.left.push(format!("AMI {image_id} ({e})"));
            for s in snapshots {
                c.left
                    .push(format!("snapshot {s} (its AMI is still registered)"));
            }
            return c;
        }
    }
    for s in snapshots {
        match ec2.delete_snapshot(&s).await {
            Ok(()) => c.deleted_snapshots.push(s),
            Err(e) if e.is_not_found() => {}
            Err(e) => c.left.push(format!("snapshot {s} ({e})")),
        }
    }
    c
}

// ---- encryption (create --encrypt, restore --encrypt) ------------------------------

/// An encrypted copy of `source` with `name`, tagged on create, waited for.
/// On success the unencrypted source is removed; on failure the copy is, and
/// the error says what is left.
pub struct EncryptOutcome {
    pub image: ImageDetails,
    pub cleanup: Cleanup,
}

#[allow(clippy::too_many_arguments)]
pub async fn encrypt_image(
    ec2: &Ec2,
    source: &ImageDetails,
    name: &str,
    kms_key: Option<&str>,
    image_tags: &Tags,
    snapshot_tags: &Tags,
    timeout: Duration,
    poll: PollSchedule,
    observer: &dyn crate::ec2::WaitObserver,
) -> Result<EncryptOutcome, AwsError> {
    let copy_id =
        start_encrypted_copy(ec2, source, name, kms_key, image_tags, snapshot_tags).await?;
    let waited = ec2
        .wait_image_available(&copy_id, timeout, poll, observer)
        .await;
    finish_encrypted_copy(ec2, source, &copy_id, waited).await
}

/// The first step of [`encrypt_image`]: CopyImage with encryption. If EC2
/// refuses, the unencrypted source is removed and the error says so.
/// Returns the copy's id; wait for it, then call [`finish_encrypted_copy`].
pub async fn start_encrypted_copy(
    ec2: &Ec2,
    source: &ImageDetails,
    name: &str,
    kms_key: Option<&str>,
    image_tags: &Tags,
    snapshot_tags: &Tags,
) -> Result<String, AwsError> {
    let copy = ImageCopy {
        source_image_id: source.image_id.clone(),
        source_region: ec2.region().to_string(),
        name: name.to_string(),
        description: source.description.clone(),
        encrypted: true,
        kms_key_id: kms_key.map(str::to_string),
        image_tags: image_tags.clone(),
        snapshot_tags: snapshot_tags.clone(),
    };
    let copy_id = match ec2.copy_image(&copy).await {
        Ok(id) => id,
        Err(e) => {
            let c = remove_image(ec2, &source.image_id).await;
            return Err(AwsError::Failed {
                what: format!("encrypting AMI {}", source.image_id),
                detail: format!("{e}; {}", c.summary()),
            });
        }
    };
    tracing::info!(
        "encrypting: copying {} to {copy_id}{}",
        source.image_id,
        kms_key
            .map(|k| format!(" with KMS key {k}"))
            .unwrap_or_default()
    );
    Ok(copy_id)
}

/// The last step of [`encrypt_image`], given how the wait for the copy
/// ended: a good copy means the unencrypted source goes; a copy that failed
/// or is still unencrypted is removed with the source.
pub async fn finish_encrypted_copy(
    ec2: &Ec2,
    source: &ImageDetails,
    copy_id: &str,
    waited: Result<ImageDetails, AwsError>,
) -> Result<EncryptOutcome, AwsError> {
    let image = match waited {
        Ok(i) => i,
        Err(e) => {
            let mut c = remove_image(ec2, copy_id).await;
            c.merge(remove_image(ec2, &source.image_id).await);
            return Err(AwsError::Failed {
                what: format!("the encrypted copy {copy_id} of {}", source.image_id),
                detail: format!("it did not become available: {e}; {}", c.summary()),
            });
        }
    };
    if !image.unencrypted_snapshots().is_empty() {
        let mut c = remove_image(ec2, copy_id).await;
        c.merge(remove_image(ec2, &source.image_id).await);
        return Err(AwsError::Failed {
            what: format!("the encrypted copy {copy_id} of {}", source.image_id),
            detail: format!(
                "it still has unencrypted snapshots ({}); {}",
                image.unencrypted_snapshots().join(", "),
                c.summary()
            ),
        });
    }
    // The copy is good: the unencrypted intermediate goes.
    let cleanup = remove_image(ec2, &source.image_id).await;
    tracing::info!("unencrypted {}: {}", source.image_id, cleanup.summary());
    Ok(EncryptOutcome { image, cleanup })
}

// ---- a backup AMI of an instance (ami create, AMI policies) -------------------------

/// How a workflow waits for an AMI to become available. The CLI draws progress and stops on
/// Ctrl-C; a policy run waits quietly ([`QuietWaits`]).
pub trait ImageWaits: Send {
    /// The AMI once available (or why not); `None` when the wait was stopped before.
    fn wait<'a>(&'a mut self, on: AmiWait<'a>) -> ImageWait<'a>;
}

/// What [`ImageWaits::wait`] waits for.
pub struct AmiWait<'a> {
    pub ec2: &'a Ec2,
    pub image_id: &'a str,
    /// The AMI for progress: "AMI ami-…", "encrypted copy of ami-…".
    pub what: String,
}

/// How a wait ended: `None` when it was stopped.
pub type ImageWait<'a> = BoxFuture<'a, Option<Result<ImageDetails, AwsError>>>;

/// Waits without progress and is never stopped.
pub struct QuietWaits {
    pub timeout: Duration,
    pub poll: PollSchedule,
}

impl ImageWaits for QuietWaits {
    fn wait<'a>(&'a mut self, on: AmiWait<'a>) -> ImageWait<'a> {
        let wait = on.ec2.wait_image_available(
            on.image_id,
            self.timeout,
            self.poll,
            &crate::ec2::Unobserved,
        );
        Box::pin(async move { Some(wait.await) })
    }
}

/// An AMI of an instance to make, with its names already chosen ([`backup_image_names`]).
#[derive(Debug, Clone)]
pub struct BackupImageRequest {
    pub instance_id: String,
    pub names: BackupImageNames,
    pub description: String,
    pub no_reboot: bool,
    /// Every snapshot of the AMI kept encrypted: an encrypted CopyImage replaces an AMI with
    /// an unencrypted snapshot.
    pub encrypt: bool,
    pub kms_key: Option<String>,
    pub image_tags: Tags,
    pub snapshot_tags: Tags,
    /// Wait for the AMI even when no encrypted copy needs it.
    pub wait: bool,
}

/// A backup AMI made.
#[derive(Debug)]
pub struct MadeImage {
    /// The AMI that stays (the encrypted copy, when one was made).
    pub image: ImageDetails,
    /// The unencrypted AMI the copy was made from (removed again).
    pub intermediate_image_id: Option<String>,
    /// What removing the intermediate could not do (the AMI is ready all the same).
    pub incomplete_cleanup: Option<Cleanup>,
}

/// A stopped wait: the AMI waited for, and where the workflow was.
#[derive(Debug, Clone)]
pub struct Stopped {
    pub image_id: String,
    /// The unencrypted AMI an encrypted copy is being made from.
    pub copied_from: Option<String>,
    pub at: StoppedAt,
}

/// Where a stopped wait left a workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoppedAt {
    /// Waiting for the AMI CreateImage started.
    Image,
    /// Waiting for the encrypted copy; the unencrypted AMI is still there.
    EncryptedCopy,
}

/// Why an AMI workflow (a backup AMI, a restore from S3) did not finish. What a failure left
/// behind was cleaned up, and the error says what could not be.
#[derive(Debug, thiserror::Error)]
pub enum ImageFlowError {
    #[error("AMI name '{name}' was taken meanwhile ({source}): choose another name")]
    NameTaken { name: String, source: AwsError },
    /// The first call (CreateImage, CreateRestoreImageTask) failed: nothing was made.
    #[error("cannot {what}: {source}")]
    Start { what: String, source: AwsError },
    #[error("{what} failed: {source}; {cleanup}")]
    NotAvailable {
        image_id: String,
        what: String,
        source: AwsError,
        cleanup: String,
    },
    /// A wait was stopped (Ctrl-C): the AMI exists and goes on in AWS.
    #[error("stopped waiting for AMI {}", .0.image_id)]
    Stopped(Stopped),
    #[error(
        "AMI {image_id} is restored but its original tags could not all be re-applied: {source}"
    )]
    Retag { image_id: String, source: AwsError },
    #[error(transparent)]
    Aws(#[from] AwsError),
}

impl ImageFlowError {
    /// The first call of a workflow failed: EC2 refused the name as taken (a race with the
    /// check before), or [`ImageFlowError::Start`].
    fn starting(source: AwsError, name: &str, what: String) -> ImageFlowError {
        if name_taken(&source) {
            ImageFlowError::NameTaken {
                name: name.to_string(),
                source,
            }
        } else {
            ImageFlowError::Start { what, source }
        }
    }
}

impl<'a> AmiWait<'a> {
    /// `AMI ami-…` (`kind` and the id) for progress.
    fn new(ec2: &'a Ec2, image_id: &'a str, kind: &str) -> AmiWait<'a> {
        AmiWait {
            ec2,
            image_id,
            what: format!("{kind} {image_id}"),
        }
    }
}

/// The names of a backup AMI: `name` (already free, or checked by the caller) for the AMI
/// that stays, and with an encrypted copy to make (an unencrypted volume of the instance) a
/// free name near `<name>-unencrypted` for the first AMI.
pub async fn backup_image_names(
    ec2: &Ec2,
    instance_id: &str,
    name: String,
    encrypt: bool,
) -> Result<BackupImageNames, AwsError> {
    let needs_copy = encrypt && {
        let volumes = ec2
            .list_volumes(&VolumeQuery {
                instance_id: Some(instance_id.to_string()),
                ..Default::default()
            })
            .await?;
        let encrypted: Vec<bool> = volumes.iter().map(|v| v.encrypted).collect();
        needs_encrypted_copy(encrypt, &encrypted)
    };
    let intermediate = if needs_copy {
        Some(free_name(ec2, &intermediate_base(&name)).await?)
    } else {
        None
    };
    Ok(BackupImageNames { name, intermediate })
}

/// CreateImage of the instance, tagged on create; then, when encryption is asked and a
/// snapshot of the AMI is unencrypted, an encrypted CopyImage that replaces it. Each call is
/// paced by the region's buckets. A failure removes what it made and says what is left; a
/// stopped wait is [`ImageFlowError::Stopped`] (nothing removed: the work goes on in AWS).
pub async fn create_backup_image<W: ImageWaits>(
    ec2: &Ec2,
    req: &BackupImageRequest,
    limits: &Ec2RateLimits,
    waits: &mut W,
) -> Result<MadeImage, ImageFlowError> {
    let first_name = req.names.first().to_string();
    limits.create_image.acquire().await;
    let image_id = ec2
        .create_image(&NewImage {
            instance_id: req.instance_id.clone(),
            name: first_name.clone(),
            description: req.description.clone(),
            no_reboot: req.no_reboot,
            image_tags: req.image_tags.clone(),
            snapshot_tags: req.snapshot_tags.clone(),
        })
        .await
        .map_err(|e| {
            ImageFlowError::starting(
                e,
                &first_name,
                format!("create an AMI of {}", req.instance_id),
            )
        })?;
    tracing::info!(
        "creating AMI {image_id} ({first_name}) of {}",
        req.instance_id
    );
    let made = |image| MadeImage {
        image,
        intermediate_image_id: None,
        incomplete_cleanup: None,
    };
    if !(req.wait || req.names.intermediate.is_some()) {
        return Ok(made(ec2.get_image(&image_id).await?));
    }
    let failed = || {
        format!(
            "creating AMI {image_id} ({first_name}) of {}",
            req.instance_id
        )
    };
    let image = first_wait(ec2, waits, &image_id, failed).await?;
    if !req.encrypt {
        return Ok(made(image));
    }
    if image.unencrypted_snapshots().is_empty() {
        tracing::info!("every snapshot of {image_id} is already encrypted: no copy needed");
        return Ok(made(image));
    }
    let copy_name = match encrypted_copy_name(&req.names) {
        Ok(name) => name,
        Err(base) => free_name(ec2, &base).await?,
    };
    let copy = EncryptedCopy {
        name: copy_name,
        kms_key: req.kms_key.as_deref(),
        image_tags: &req.image_tags,
        snapshot_tags: &req.snapshot_tags,
    };
    replace_with_encrypted_copy(ec2, image, &copy, limits, waits).await
}

/// The wait for the first AMI a workflow made: stopped, it is [`StoppedAt::Image`]; failed,
/// the AMI is removed and the error (`failed` says what was being done) says what is left.
async fn first_wait<W: ImageWaits>(
    ec2: &Ec2,
    waits: &mut W,
    image_id: &str,
    failed: impl FnOnce() -> String,
) -> Result<ImageDetails, ImageFlowError> {
    match waits.wait(AmiWait::new(ec2, image_id, "AMI")).await {
        None => Err(ImageFlowError::Stopped(Stopped {
            image_id: image_id.to_string(),
            copied_from: None,
            at: StoppedAt::Image,
        })),
        Some(Ok(image)) => Ok(image),
        Some(Err(source)) => Err(ImageFlowError::NotAvailable {
            what: failed(),
            image_id: image_id.to_string(),
            source,
            cleanup: remove_image(ec2, image_id).await.summary(),
        }),
    }
}

/// The encrypted copy that replaces an AMI with unencrypted snapshots.
struct EncryptedCopy<'a> {
    name: String,
    kms_key: Option<&'a str>,
    image_tags: &'a Tags,
    snapshot_tags: &'a Tags,
}

/// CopyImage of `image` with encryption, waited for; then the unencrypted `image` goes (or,
/// when the copy fails, both go: [`finish_encrypted_copy`]).
async fn replace_with_encrypted_copy<W: ImageWaits>(
    ec2: &Ec2,
    image: ImageDetails,
    copy: &EncryptedCopy<'_>,
    limits: &Ec2RateLimits,
    waits: &mut W,
) -> Result<MadeImage, ImageFlowError> {
    tracing::info!(
        "{} of {} snapshot(s) unencrypted: making an encrypted copy",
        image.unencrypted_snapshots().len(),
        image.snapshot_ids().len()
    );
    limits.copy_image.acquire().await;
    let copy_id = start_encrypted_copy(
        ec2,
        &image,
        &copy.name,
        copy.kms_key,
        copy.image_tags,
        copy.snapshot_tags,
    )
    .await?;
    let what = format!("encrypted copy of {}", image.image_id);
    let Some(waited) = waits
        .wait(AmiWait {
            ec2,
            image_id: &copy_id,
            what,
        })
        .await
    else {
        return Err(ImageFlowError::Stopped(Stopped {
            image_id: copy_id,
            copied_from: Some(image.image_id.clone()),
            at: StoppedAt::EncryptedCopy,
        }));
    };
    let out = finish_encrypted_copy(ec2, &image, &copy_id, waited).await?;
    if !out.cleanup.left.is_empty() {
        tracing::warn!(
            "the encrypted AMI {} is ready, but removing the unencrypted {} was incomplete: {}",
            out.image.image_id,
            image.image_id,
            out.cleanup.summary()
        );
    }
    Ok(MadeImage {
        image: out.image,
        intermediate_image_id: Some(image.image_id),
        incomplete_cleanup: (!out.cleanup.left.is_empty()).then_some(out.cleanup),
    })
}

// ---- ami restore (from an object CreateStoreImageTask wrote) -------------------------

/// An AMI to restore from a stored object, with its names already chosen (with encryption,
/// the restored AMI is an intermediate and its encrypted copy gets the name).
#[derive(Debug, Clone)]
pub struct StoredImageRestore<'a> {
    pub bucket: String,
    pub object_key: String,
    pub names: BackupImageNames,
    pub encrypt: bool,
    pub kms_key: Option<String>,
    /// The original AMI's metadata document: its tags go back on the AMI and its snapshots.
    pub doc: &'a AmiMetadata,
}

/// CreateRestoreImageTask, waited for; with `encrypt` and an unencrypted snapshot, an
/// encrypted copy that replaces it; then the original AMI's tags and each original snapshot's
/// tags go back on ([`retag`]). A failure removes what it made and says what is left.
pub async fn restore_stored_image<W: ImageWaits>(
    ec2: &Ec2,
    req: &StoredImageRestore<'_>,
    limits: &Ec2RateLimits,
    waits: &mut W,
) -> Result<MadeImage, ImageFlowError> {
    let object_url = format!("s3://{}/{}", req.bucket, req.object_key);
    let first_name = req.names.first().to_string();
    let new_id = ec2
        .create_restore_image_task(&req.bucket, &req.object_key, &first_name)
        .await
        .map_err(|e| {
            ImageFlowError::starting(e, &first_name, format!("start restoring {object_url}"))
        })?;
    tracing::info!(
        "restoring {} from {object_url} as {new_id} ({first_name})",
        req.doc.image_id
    );
    let failed = || format!("restoring {} from {object_url}", req.doc.image_id);
    let image = first_wait(ec2, waits, &new_id, failed).await?;
    let mut made = MadeImage {
        image,
        intermediate_image_id: None,
        incomplete_cleanup: None,
    };
    if req.encrypt && !made.image.unencrypted_snapshots().is_empty() {
        // Tag the restored AMI first: it is autosnap's, and cleanup of it may depend on that
        // tag (IAM conditions).
        retag(ec2, &made.image, req.doc)
            .await
            .map_err(ImageFlowError::Aws)?;
        let image_tags = req.doc.restore_image_tags();
        let mut snapshot_tags = image_tags.clone();
        snapshot_tags.retain(|k, _| k.starts_with(tags::OWN_PREFIX));
        let copy = EncryptedCopy {
            name: req.names.name.clone(),
            kms_key: req.kms_key.as_deref(),
            image_tags: &image_tags,
            snapshot_tags: &snapshot_tags,
        };
        made = replace_with_encrypted_copy(ec2, made.image, &copy, limits, waits).await?;
    }
    let image_id = made.image.image_id.clone();
    retag(ec2, &made.image, req.doc)
        .await
        .map_err(|source| ImageFlowError::Retag {
            image_id: image_id.clone(),
            source,
        })?;
    made.image = ec2.get_image(&image_id).await?;
    Ok(made)
}

/// Re-applies the original AMI's tags to a restored AMI, and each original snapshot's tags to
/// the new snapshot of the same device, which is also tagged `autosnap:for-image` so that
/// `ami delete` removes it with this AMI.
pub async fn retag(ec2: &Ec2, image: &ImageDetails, doc: &AmiMetadata) -> Result<(), AwsError> {
    ec2.create_tags(
        std::slice::from_ref(&image.image_id),
        &doc.restore_image_tags(),
    )
    .await?;
    for m in &image.block_device_mappings {
        if let Some(snap) = &m.snapshot_id {
            let mut t = doc.restore_snapshot_tags(&m.device_name);
            t.insert(tags::FOR_IMAGE.into(), image.image_id.clone());
            ec2.create_tags(std::slice::from_ref(snap), &t).await?;
        }
    }
    tracing::info!(
        "re-applied the tags of {} to {} and its snapshots",
        doc.image_id,
        image.image_id
    );
    Ok(())
}

// ---- ami delete ----------------------------------------------------------------------

/// `ami delete`'s plan for `requested`: the AMIs, who uses them, the other AMIs that use their
/// snapshots and those snapshots' owners, decided by [`plan_ami_deletes`]; a locked snapshot
/// stays with the lock's reason (one DescribeLockedSnapshots for all of them).
pub async fn plan_image_deletes(
    ec2: &Ec2,
    requested: &[String],
    force: bool,
    keep_snapshots: bool,
) -> Result<Vec<AmiDeleteDecision>, AwsError> {
    let found = ec2.find_images(requested).await?;
    let mut users = BTreeMap::new();
    for image in &found {
        let u = ec2.image_users(&image.image_id).await?;
        if !u.is_empty() {
            users.insert(image.image_id.clone(), u);
        }
    }
    let all_snaps: Vec<String> = found.iter().flat_map(ImageDetails::snapshot_ids).collect();
    let others: Vec<ImageDetails> = ec2
        .images_with_snapshots(&all_snaps)
        .await?
        .into_iter()
        .filter(|i| !requested.contains(&i.image_id))
        .collect();
    // Who owns each snapshot and what it was made for decide whether it goes with its AMI.
    let snapshots = ec2.mapped_snapshots(&all_snaps).await?;
    let mut plan = plan_ami_deletes(
        requested,
        &found,
        &users,
        &others,
        &snapshots,
        force,
        keep_snapshots,
    );
    let doomed: Vec<String> = plan
        .iter()
        .flat_map(|d| d.delete_snapshots.iter().cloned())
        .collect();
    let locks = ec2.locked_snapshots(&doomed).await?;
    keep_locked_snapshots(&mut plan, &locks);
    Ok(plan)
}

/// What `ami delete` did to one AMI it deregisters.
#[derive(Debug, Clone)]
pub struct ImageDeletion {
    pub deregistered: Result<(), String>,
    /// Each snapshot it was to delete, once the AMI was deregistered.
    pub snapshots: Vec<(String, Result<(), String>)>,
}

/// Carries out the deregistrations of `plan`: first every AMI (so that snapshots shared by
/// two of them are free), then the snapshots of those deregistered. Each call paced by the
/// region's buckets; a failure is its AMI's or snapshot's result, the others go on.
pub async fn delete_images(
    ec2: &Ec2,
    plan: &[AmiDeleteDecision],
    limits: &Ec2RateLimits,
) -> BTreeMap<String, ImageDeletion> {
    let deregister: Vec<&AmiDeleteDecision> = plan
        .iter()
        .filter(|d| d.action == AmiDeleteAction::Deregister)
        .collect();
    let dereg = paced_each(
        &limits.deregister_image,
        "DeregisterImage",
        deregister.iter().map(|d| d.image_id.clone()),
        |id| async move {
            let r = ec2.deregister_image(&id).await;
            if r.is_ok() {
                tracing::info!("deregistered {id}");
            }
            r
        },
    )
    .await;
    let mut done: BTreeMap<String, ImageDeletion> = dereg
        .into_iter()
        .map(|(id, r)| {
            (
                id,
                ImageDeletion {
                    deregistered: r.map_err(|e| e.to_string()),
                    snapshots: Vec::new(),
                },
            )
        })
        .collect();
    let to_delete: Vec<(String, String)> = deregister
        .iter()
        .filter(|d| {
            done.get(&d.image_id)
                .is_some_and(|x| x.deregistered.is_ok())
        })
        .flat_map(|d| {
            d.delete_snapshots
                .iter()
                .map(|s| (d.image_id.clone(), s.clone()))
        })
        .collect();
    let deleted = paced_each(
        &limits.delete_snapshot,
        "DeleteSnapshot",
        to_delete.iter().map(|(_, s)| s.clone()),
        |snap| async move { ec2.delete_snapshot(&snap).await },
    )
    .await;
    for ((image, _), (snap, r)) in to_delete.into_iter().zip(deleted) {
        if r.is_ok() {
            tracing::info!("deleted snapshot {snap} of {image}");
        }
        if let Some(d) = done.get_mut(&image) {
            d.snapshots.push((snap, r.map_err(|e| e.to_string())));
        }
    }
    done
}

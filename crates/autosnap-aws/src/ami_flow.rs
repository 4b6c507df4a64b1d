//! AMI workflows shared by `ami create`, `ami restore` and AMI backup policies: free
//! names, cleanup of AMIs autosnap just made, and encryption by CopyImage.

use std::time::Duration;

use autosnap_core::ami::{keep_with_image_reason, unique_image_name, ImageDetails};
use autosnap_core::tags::{self, Tags};
use serde::Serialize;

use crate::ami::{ImageCopy, ImageWaitObserver, PollSchedule};
use crate::{AwsError, Ec2};

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
    observer: &dyn ImageWaitObserver,
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

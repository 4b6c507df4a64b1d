//! Thin typed wrappers over the EC2 calls autosnap makes: describes are
//! filtered and paged through completely, creates tag on create, and every
//! error is classified (see `error.rs`).

use std::time::Duration;

use autosnap_core::model::{Image, Snapshot, SnapshotRef, Volume, VolumeAttachment};
use autosnap_core::tags::{self, Tags};
use aws_sdk_ec2::types::{
    CopyTagsFromSource, Filter, InstanceSpecification, ResourceType, Tag, TagSpecification,
    VolumeType,
};
use aws_smithy_types::DateTime as SmithyDateTime;
use chrono::{DateTime, Utc};

use crate::error::{AwsError, CallSite};

/// EC2 accepts at most this many values in one filter.
const MAX_FILTER_VALUES: usize = 200;
/// Page size for describes (EC2 allows up to 1000 for snapshots, 500 for volumes).
const SNAPSHOT_PAGE_SIZE: i32 = 1000;
const VOLUME_PAGE_SIZE: i32 = 500;
const INSTANCE_PAGE_SIZE: i32 = 1000;

/// An EC2 client for one region and account.
#[derive(Clone)]
pub struct Ec2 {
    client: aws_sdk_ec2::Client,
    site: CallSite,
    account: String,
    /// Paces the CreateTags calls that complete an instance set's tags (one per snapshot),
    /// when the caller runs many sets (policies); one-off commands leave it unset.
    tag_pacing: Option<std::sync::Arc<crate::rate::TokenBucket>>,
}

/// Which snapshots to list. All filters are ANDed; only snapshots owned by
/// our account are ever listed.
#[derive(Debug, Clone, Default)]
pub struct SnapshotQuery {
    pub snapshot_ids: Vec<String>,
    pub volume_ids: Vec<String>,
    /// `(key, Some(value))` matches the value, `(key, None)` any value.
    pub tags: Vec<(String, Option<String>)>,
}

/// Which volumes to list.
#[derive(Debug, Clone, Default)]
pub struct VolumeQuery {
    pub volume_ids: Vec<String>,
    pub instance_id: Option<String>,
    pub tags: Vec<(String, Option<String>)>,
}

/// A new volume from a snapshot.
#[derive(Debug, Clone, Default)]
pub struct NewVolume {
    pub snapshot_id: String,
    pub availability_zone: String,
    pub volume_type: Option<String>,
    pub size_gib: Option<i32>,
    pub iops: Option<i32>,
    pub throughput: Option<i32>,
    pub encrypted: bool,
    pub kms_key_id: Option<String>,
    pub tags: Tags,
}

/// What autosnap needs to know of an instance.
#[derive(Debug, Clone)]
pub struct InstanceInfo {
    pub instance_id: String,
    pub state: Option<String>,
    pub availability_zone: Option<String>,
    pub root_device_name: Option<String>,
    /// (device name, volume id) of each attached EBS volume.
    pub volumes: Vec<(String, String)>,
    pub tags: Tags,
}

/// Told about each poll while waiting (for snapshots, a volume, an AMI, a store task), so the
/// CLI can draw progress.
pub trait WaitObserver: Send + Sync {
    fn snapshots_polled(&self, _snapshots: &[Snapshot]) {}
    fn volume_polled(&self, _volume: &Volume) {}
    fn image_polled(&self, _image: &autosnap_core::ami::ImageDetails) {}
    fn store_task_polled(&self, _task: &crate::ami::StoreTask) {}
}

/// A wait nobody watches (policy runs, restore tests, cleanups).
pub struct Unobserved;
impl WaitObserver for Unobserved {}

/// Polling cadence: start quick (small snapshots finish in seconds), then
/// back off to spare the DescribeSnapshots rate limit.
const POLL_FIRST: Duration = Duration::from_secs(2);
const POLL_MAX: Duration = Duration::from_secs(15);

impl Ec2 {
    pub fn new(client: aws_sdk_ec2::Client, site: CallSite, account: String) -> Ec2 {
        Ec2 {
            client,
            site,
            account,
            tag_pacing: None,
        }
    }

    /// This client, taking a token from `bucket` before each CreateTags it makes to complete
    /// an instance set's tags, so a policy over many instances stays within EC2's CreateTags
    /// budget.
    pub fn with_tag_pacing(mut self, bucket: std::sync::Arc<crate::rate::TokenBucket>) -> Ec2 {
        self.tag_pacing = Some(bucket);
        self
    }

    pub fn region(&self) -> &str {
        &self.site.region
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    pub fn raw(&self) -> &aws_sdk_ec2::Client {
        &self.client
    }

    /// Where calls go (for classifying errors of calls made through `raw`).
    pub fn site(&self) -> &CallSite {
        &self.site
    }

    fn err<E>(
        &self,
        e: aws_smithy_runtime_api::client::result::SdkError<
            E,
            aws_smithy_runtime_api::client::orchestrator::HttpResponse,
        >,
        op: &'static str,
        subject: Option<(&'static str, &str)>,
    ) -> AwsError
    where
        E: aws_smithy_types::error::metadata::ProvideErrorMetadata
            + std::error::Error
            + Send
            + Sync
            + 'static,
    {
        AwsError::from_sdk(e, op, subject, &self.site)
    }

    // ---- volumes ---------------------------------------------------------

    /// Lists volumes matching the query, paged through completely.
    pub async fn list_volumes(&self, q: &VolumeQuery) -> Result<Vec<Volume>, AwsError> {
        let mut filters = tag_filters(&q.tags);
        if let Some(i) = &q.instance_id {
            filters.push(filter("attachment.instance-id", [i.clone()]));
        }
        let mut out = Vec::new();
        for ids in chunks_or_one(&q.volume_ids) {
            let mut f = filters.clone();
            if !ids.is_empty() {
                f.push(filter("volume-id", ids.iter().cloned()));
            }
            let mut pages = self
                .client
                .describe_volumes()
                .set_filters(Some(f))
                .max_results(VOLUME_PAGE_SIZE)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| self.err(e, "DescribeVolumes", None))?;
                out.extend(page.volumes().iter().map(volume_from_sdk));
            }
        }
        out.sort_by(|a, b| a.volume_id.cmp(&b.volume_id));
        Ok(out)
    }

    /// One volume, or `NotFound` naming it.
    pub async fn get_volume(&self, volume_id: &str) -> Result<Volume, AwsError> {
        let q = VolumeQuery {
            volume_ids: vec![volume_id.to_string()],
            ..Default::default()
        };
        self.list_volumes(&q)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| self.not_found("volume", volume_id))
    }

    /// Creates a volume from a snapshot, tagged on create.
    pub async fn create_volume(&self, v: &NewVolume) -> Result<Volume, AwsError> {
        let mut req = self
            .client
            .create_volume()
            .snapshot_id(&v.snapshot_id)
            .availability_zone(&v.availability_zone)
            .set_size(v.size_gib)
            .set_iops(v.iops)
            .set_throughput(v.throughput)
            .set_kms_key_id(v.kms_key_id.clone());
        if let Some(t) = &v.volume_type {
            req = req.volume_type(VolumeType::from(t.as_str()));
        }
        if v.encrypted || v.kms_key_id.is_some() {
            req = req.encrypted(true);
        }
        if !v.tags.is_empty() {
            req = req.tag_specifications(tag_spec(ResourceType::Volume, &v.tags));
        }
        let out = req
            .send()
            .await
            .map_err(|e| self.err(e, "CreateVolume", Some(("snapshot", &v.snapshot_id))))?;
        Ok(Volume {
            volume_id: out.volume_id().unwrap_or_default().to_string(),
            name: None,
            size_gib: out.size().unwrap_or_default(),
            volume_type: out
                .volume_type()
                .map(|t| t.as_str().to_string())
                .unwrap_or_default(),
            availability_zone: out.availability_zone().unwrap_or_default().to_string(),
            state: out
                .state()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            encrypted: out.encrypted().unwrap_or(false),
            kms_key_id: out.kms_key_id().map(str::to_string),
            iops: out.iops(),
            throughput: out.throughput(),
            snapshot_id: out.snapshot_id().map(str::to_string),
            create_time: out.create_time().and_then(to_chrono),
            attachments: Vec::new(),
            tags: sdk_tags(out.tags()),
        }
        .with_name())
    }

    /// Polls a volume until it is `available` (or fails, or the timeout passes).
    pub async fn wait_volume_available(
        &self,
        volume_id: &str,
        timeout: Duration,
        observer: &dyn WaitObserver,
    ) -> Result<Volume, AwsError> {
        let started = tokio::time::Instant::now();
        let mut interval = POLL_FIRST;
        loop {
            let v = self.get_volume(volume_id).await?;
            observer.volume_polled(&v);
            match v.state.as_str() {
                "available" | "in-use" => return Ok(v),
                "error" | "deleted" | "deleting" => {
                    return Err(AwsError::Failed {
                        what: format!("creating volume {volume_id}"),
                        detail: format!("the volume is {}", v.state),
                    })
                }
                _ => {}
            }
            if started.elapsed() >= timeout {
                return Err(AwsError::WaitTimeout {
                    what: format!("volume {volume_id} to become available"),
                    waited_secs: started.elapsed().as_secs(),
                });
            }
            tokio::time::sleep(interval).await;
            interval = (interval * 2).min(POLL_MAX);
        }
    }

    // ---- snapshots -------------------------------------------------------

    /// Lists our own snapshots matching the query, newest first, paged
    /// through completely.
    pub async fn list_snapshots(&self, q: &SnapshotQuery) -> Result<Vec<Snapshot>, AwsError> {
        let mut out = Vec::new();
        self.for_each_snapshot(q, |s| out.push(s)).await?;
        sort_newest_first(&mut out);
        Ok(out)
    }

    /// Hands each of our own snapshots matching the query to `each`, page by
    /// page in listing order, so a caller that keeps only part of each needs
    /// no memory for the whole listing.
    pub async fn for_each_snapshot(
        &self,
        q: &SnapshotQuery,
        mut each: impl FnMut(Snapshot),
    ) -> Result<(), AwsError> {
        let base = {
            let mut f = tag_filters(&q.tags);
            // The owner-id filter (not OwnerIds=self, which some emulators
            // ignore) keeps public and shared snapshots out.
            f.push(filter("owner-id", [self.account.clone()]));
            f
        };
        // Ids are passed as filters rather than SnapshotIds so that a missing
        // id is simply absent (callers report it by name) instead of failing
        // the whole call.
        for snap_ids in chunks_or_one(&q.snapshot_ids) {
            for vol_ids in chunks_or_one(&q.volume_ids) {
                let mut f = base.clone();
                if !snap_ids.is_empty() {
                    f.push(filter("snapshot-id", snap_ids.iter().cloned()));
                }
                if !vol_ids.is_empty() {
                    f.push(filter("volume-id", vol_ids.iter().cloned()));
                }
                let mut pages = self
                    .client
                    .describe_snapshots()
                    .set_filters(Some(f))
                    .max_results(SNAPSHOT_PAGE_SIZE)
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(|e| self.err(e, "DescribeSnapshots", None))?;
                    page.snapshots()
                        .iter()
                        .map(snapshot_from_sdk)
                        .for_each(&mut each);
                }
            }
        }
        Ok(())
    }

    /// One of our snapshots, or `NotFound` naming it.
    pub async fn get_snapshot(&self, snapshot_id: &str) -> Result<Snapshot, AwsError> {
        let q = SnapshotQuery {
            snapshot_ids: vec![snapshot_id.to_string()],
            ..Default::default()
        };
        self.list_snapshots(&q)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| self.not_found("snapshot", snapshot_id))
    }

    /// The newest snapshot of each of the given volumes.
    pub async fn newest_snapshots(
        &self,
        volume_ids: &[String],
    ) -> Result<std::collections::HashMap<String, SnapshotRef>, AwsError> {
        let mut newest = std::collections::HashMap::new();
        if volume_ids.is_empty() {
            return Ok(newest);
        }
        let q = SnapshotQuery {
            volume_ids: volume_ids.to_vec(),
            ..Default::default()
        };
        // list_snapshots returns newest first, so the first seen wins.
        for s in self.list_snapshots(&q).await? {
            if let Some(v) = &s.volume_id {
                newest.entry(v.clone()).or_insert(SnapshotRef {
                    snapshot_id: s.snapshot_id.clone(),
                    start_time: s.start_time,
                });
            }
        }
        Ok(newest)
    }

    /// Snapshots one volume, tagged on create.
    pub async fn create_snapshot(
        &self,
        volume_id: &str,
        description: &str,
        tags: &Tags,
    ) -> Result<Snapshot, AwsError> {
        let out = self
            .client
            .create_snapshot()
            .volume_id(volume_id)
            .description(description)
            .tag_specifications(tag_spec(ResourceType::Snapshot, tags))
            .send()
            .await
            .map_err(|e| self.err(e, "CreateSnapshot", Some(("volume", volume_id))))?;
        let tags = sdk_tags(out.tags());
        Ok(Snapshot {
            storage_tier: Default::default(),
            restore_expiry: None,
            snapshot_id: out.snapshot_id().unwrap_or_default().to_string(),
            volume_id: out.volume_id().map(str::to_string),
            state: out
                .state()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            progress: out.progress().map(str::to_string),
            start_time: out.start_time().and_then(to_chrono),
            size_gib: out.volume_size(),
            encrypted: out.encrypted().unwrap_or(false),
            kms_key_id: out.kms_key_id().map(str::to_string),
            description: out.description().map(str::to_string),
            owner_id: out.owner_id().map(str::to_string),
            managed: tags::is_managed(&tags),
            tags,
        })
    }

    /// Snapshots all (or all data) volumes of an instance at one point in
    /// time: one crash-consistent set. `tags` go on every snapshot; each
    /// snapshot also gets `autosnap:source-volume` and, with
    /// `copy_volume_tags`, its volume's own user tags (see
    /// [`Ec2::complete_set_tags`]), as a snapshot of a single volume does.
    pub async fn create_snapshot_set(
        &self,
        instance_id: &str,
        exclude_boot: bool,
        exclude_volumes: &[String],
        copy_volume_tags: bool,
        description: &str,
        tags: &Tags,
    ) -> Result<Vec<Snapshot>, AwsError> {
        let mut spec = InstanceSpecification::builder()
            .instance_id(instance_id)
            .exclude_boot_volume(exclude_boot);
        for v in exclude_volumes {
            spec = spec.exclude_data_volume_ids(v);
        }
        let mut req = self
            .client
            .create_snapshots()
            .instance_specification(spec.build())
            .description(description)
            .tag_specifications(tag_spec(ResourceType::Snapshot, tags));
        if copy_volume_tags {
            req = req.copy_tags_from_source(CopyTagsFromSource::Volume);
        }
        let out = req
            .send()
            .await
            .map_err(|e| self.err(e, "CreateSnapshots", Some(("instance", instance_id))))?;
        let mut snaps: Vec<Snapshot> = out
            .snapshots()
            .iter()
            .map(|s| {
                let tags = sdk_tags(s.tags());
                Snapshot {
                    storage_tier: Default::default(),
                    restore_expiry: None,
                    snapshot_id: s.snapshot_id().unwrap_or_default().to_string(),
                    volume_id: s.volume_id().map(str::to_string),
                    state: s
                        .state()
                        .map(|x| x.as_str().to_string())
                        .unwrap_or_default(),
                    progress: s.progress().map(str::to_string),
                    start_time: s.start_time().and_then(to_chrono),
                    size_gib: s.volume_size(),
                    encrypted: s.encrypted().unwrap_or(false),
                    kms_key_id: None,
                    description: s.description().map(str::to_string),
                    owner_id: s.owner_id().map(str::to_string),
                    managed: tags::is_managed(&tags),
                    tags,
                }
            })
            .collect();
        // CreateSnapshots answers with a partial description (no KMS key,
        // sometimes no state); describe the set once for the full picture.
        let ids: Vec<String> = snaps.iter().map(|s| s.snapshot_id.clone()).collect();
        if let Ok(full) = self
            .list_snapshots(&SnapshotQuery {
                snapshot_ids: ids,
                ..Default::default()
            })
            .await
        {
            if full.len() == snaps.len() {
                snaps = full;
            }
        }
        snaps.sort_by(|a, b| a.volume_id.cmp(&b.volume_id));
        self.complete_set_tags(instance_id, &mut snaps, copy_volume_tags, tags)
            .await;
        Ok(snaps)
    }

    /// Adds to each snapshot of an instance set the tags CreateSnapshots
    /// cannot give it: its volume id (TagSpecifications are the same for the
    /// whole set) and, when asked, its volume's user tags (CopyTagsFromSource
    /// copies them on AWS, but not on every emulator, and copies `autosnap:`
    /// keys too). The set's own `tags` win over a volume tag of the same key.
    /// One DescribeVolumes (only when copying) and one CreateTags per snapshot
    /// that lacks something. The snapshots exist whatever happens here, so a
    /// failure is a warning naming them, not an error that would lose their ids.
    async fn complete_set_tags(
        &self,
        instance_id: &str,
        snaps: &mut [Snapshot],
        copy_volume_tags: bool,
        set_tags: &Tags,
    ) {
        let mut volume_tags: std::collections::BTreeMap<String, Tags> = Default::default();
        if copy_volume_tags {
            let q = VolumeQuery {
                volume_ids: snaps.iter().filter_map(|s| s.volume_id.clone()).collect(),
                ..Default::default()
            };
            match self.list_volumes(&q).await {
                Ok(volumes) => {
                    for v in volumes {
                        volume_tags.insert(v.volume_id, tags::copyable_user_tags(&v.tags));
                    }
                }
                Err(e) => tracing::warn!(
                    "cannot read the tags of {instance_id}'s volumes, so its new snapshots may \
                     lack them: {e}"
                ),
            }
        }
        for snap in snaps.iter_mut() {
            let Some(volume_id) = snap.volume_id.clone() else {
                continue;
            };
            let mut wanted = volume_tags.remove(&volume_id).unwrap_or_default();
            wanted.extend(set_tags.clone());
            wanted.insert(tags::SOURCE_VOLUME.into(), volume_id.clone());
            let missing: Tags = wanted
                .into_iter()
                .filter(|(k, v)| snap.tags.get(k) != Some(v))
                .collect();
            if missing.is_empty() {
                continue;
            }
            if let Some(bucket) = &self.tag_pacing {
                bucket.acquire().await;
            }
            match self
                .create_tags(std::slice::from_ref(&snap.snapshot_id), &missing)
                .await
            {
                Ok(()) => snap.tags.extend(missing),
                Err(e) => tracing::warn!(
                    "snapshot {} of {volume_id} was created but not tagged with {}: {e}",
                    snap.snapshot_id,
                    missing.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            }
        }
    }

    /// Sets tags on existing resources.
    pub async fn create_tags(&self, resource_ids: &[String], tags: &Tags) -> Result<(), AwsError> {
        self.client
            .create_tags()
            .set_resources(Some(resource_ids.to_vec()))
            .set_tags(Some(
                tags.iter()
                    .map(|(k, v)| Tag::builder().key(k).value(v).build())
                    .collect(),
            ))
            .send()
            .await
            .map_err(|e| self.err(e, "CreateTags", None))?;
        Ok(())
    }

    /// Deletes one snapshot.
    pub async fn delete_snapshot(&self, snapshot_id: &str) -> Result<(), AwsError> {
        self.client
            .delete_snapshot()
            .snapshot_id(snapshot_id)
            .send()
            .await
            .map_err(|e| self.err(e, "DeleteSnapshot", Some(("snapshot", snapshot_id))))?;
        Ok(())
    }

    /// Copies a snapshot from `source_region` into this client's region.
    /// Returns the new snapshot's id.
    pub async fn copy_snapshot_from(
        &self,
        source_region: &str,
        source_snapshot_id: &str,
        description: &str,
        encrypted: bool,
        kms_key_id: Option<&str>,
        tags: &Tags,
    ) -> Result<String, AwsError> {
        let mut req = self
            .client
            .copy_snapshot()
            .source_region(source_region)
            .source_snapshot_id(source_snapshot_id)
            .description(description)
            .tag_specifications(tag_spec(ResourceType::Snapshot, tags));
        if encrypted || kms_key_id.is_some() {
            req = req.encrypted(true);
        }
        if let Some(k) = kms_key_id {
            req = req.kms_key_id(k);
        }
        let out = req
            .send()
            .await
            .map_err(|e| self.err(e, "CopySnapshot", Some(("snapshot", source_snapshot_id))))?;
        out.snapshot_id()
            .map(str::to_string)
            .ok_or_else(|| AwsError::Other {
                operation: "CopySnapshot",
                detail: "the response carried no snapshot id".into(),
            })
    }

    /// Polls snapshots until all are `completed` (or one fails, or the
    /// timeout passes). Returns their final descriptions.
    pub async fn wait_snapshots_completed(
        &self,
        snapshot_ids: &[String],
        timeout: Duration,
        observer: &dyn WaitObserver,
    ) -> Result<Vec<Snapshot>, AwsError> {
        let started = tokio::time::Instant::now();
        let mut interval = POLL_FIRST;
        let q = SnapshotQuery {
            snapshot_ids: snapshot_ids.to_vec(),
            ..Default::default()
        };
        loop {
            let snaps = self.list_snapshots(&q).await?;
            observer.snapshots_polled(&snaps);
            for id in snapshot_ids {
                if !snaps.iter().any(|s| &s.snapshot_id == id) {
                    return Err(self.not_found("snapshot", id));
                }
            }
            if let Some(bad) = snaps.iter().find(|s| s.state == "error") {
                return Err(AwsError::Failed {
                    what: format!("snapshot {}", bad.snapshot_id),
                    detail: "EC2 reports state 'error'".into(),
                });
            }
            if snaps.iter().all(Snapshot::is_completed) {
                return Ok(snaps);
            }
            if started.elapsed() >= timeout {
                let pending: Vec<_> = snaps
                    .iter()
                    .filter(|s| !s.is_completed())
                    .map(|s| s.snapshot_id.as_str())
                    .collect();
                return Err(AwsError::WaitTimeout {
                    what: format!(
                        "snapshots to complete ({} still pending)",
                        pending.join(", ")
                    ),
                    waited_secs: started.elapsed().as_secs(),
                });
            }
            tokio::time::sleep(interval).await;
            interval = (interval * 2).min(POLL_MAX);
        }
    }

    // ---- images and instances ---------------------------------------------

    /// Our AMIs whose block device mappings use any of these snapshots.
    pub async fn images_using_snapshots(
        &self,
        snapshot_ids: &[String],
    ) -> Result<Vec<Image>, AwsError> {
        let mut out = Vec::new();
        for ids in snapshot_ids.chunks(MAX_FILTER_VALUES) {
            let mut pages = self
                .client
                .describe_images()
                .owners(self.account.clone())
                .filters(filter(
                    "block-device-mapping.snapshot-id",
                    ids.iter().cloned(),
                ))
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| self.err(e, "DescribeImages", None))?;
                out.extend(page.images().iter().map(|i| {
                    Image {
                        image_id: i.image_id().unwrap_or_default().to_string(),
                        name: i.name().map(str::to_string),
                        state: i.state().map(|s| s.as_str().to_string()),
                        snapshot_ids: i
                            .block_device_mappings()
                            .iter()
                            .filter_map(|m| {
                                m.ebs().and_then(|e| e.snapshot_id()).map(str::to_string)
                            })
                            .collect(),
                        tags: sdk_tags(i.tags()),
                    }
                }));
            }
        }
        Ok(out)
    }

    /// All instances that are not terminated, paged through completely.
    pub async fn list_instances(&self) -> Result<Vec<InstanceInfo>, AwsError> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .describe_instances()
            .filters(filter(
                "instance-state-name",
                ["pending", "running", "stopping", "stopped"].map(String::from),
            ))
            .max_results(INSTANCE_PAGE_SIZE)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.err(e, "DescribeInstances", None))?;
            for inst in page.reservations().iter().flat_map(|r| r.instances()) {
                out.push(instance_from_sdk(inst));
            }
        }
        out.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        Ok(out)
    }

    /// Describes one instance, or `NotFound` naming it.
    pub async fn get_instance(&self, instance_id: &str) -> Result<InstanceInfo, AwsError> {
        let out = self
            .client
            .describe_instances()
            .filters(filter("instance-id", [instance_id.to_string()]))
            .send()
            .await
            .map_err(|e| self.err(e, "DescribeInstances", Some(("instance", instance_id))))?;
        let inst = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find(|i| i.instance_id() == Some(instance_id))
            .ok_or_else(|| self.not_found("instance", instance_id))?;
        Ok(instance_from_sdk(inst))
    }

    pub fn not_found(&self, kind: &'static str, id: &str) -> AwsError {
        AwsError::NotFound {
            kind,
            id: id.to_string(),
            region: self.site.region.clone(),
            account: format!(" for account {}", self.account),
        }
    }
}

// ---- conversions ----------------------------------------------------------

fn filter<I: IntoIterator<Item = String>>(name: &str, values: I) -> Filter {
    Filter::builder()
        .name(name)
        .set_values(Some(values.into_iter().collect()))
        .build()
}

fn tag_filters(tags: &[(String, Option<String>)]) -> Vec<Filter> {
    tags.iter()
        .map(|(k, v)| match v {
            Some(v) => filter(&format!("tag:{k}"), [v.clone()]),
            None => filter("tag-key", [k.clone()]),
        })
        .collect()
}

/// Splits ids into filter-sized chunks; no ids means one unfiltered round.
fn chunks_or_one(ids: &[String]) -> Vec<&[String]> {
    if ids.is_empty() {
        vec![&[]]
    } else {
        ids.chunks(MAX_FILTER_VALUES).collect()
    }
}

fn tag_spec(kind: ResourceType, tags: &Tags) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(kind)
        .set_tags(Some(
            tags.iter()
                .map(|(k, v)| Tag::builder().key(k).value(v).build())
                .collect(),
        ))
        .build()
}

pub(crate) fn sdk_tags(tags: &[Tag]) -> Tags {
    tags.iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
        .collect()
}

pub(crate) fn to_chrono(t: &SmithyDateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

fn instance_from_sdk(inst: &aws_sdk_ec2::types::Instance) -> InstanceInfo {
    InstanceInfo {
        instance_id: inst.instance_id().unwrap_or_default().to_string(),
        state: inst
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_string()),
        availability_zone: inst
            .placement()
            .and_then(|p| p.availability_zone())
            .map(str::to_string),
        root_device_name: inst.root_device_name().map(str::to_string),
        volumes: inst
            .block_device_mappings()
            .iter()
            .filter_map(|m| {
                Some((
                    m.device_name()?.to_string(),
                    m.ebs()?.volume_id()?.to_string(),
                ))
            })
            .collect(),
        tags: sdk_tags(inst.tags()),
    }
}

fn sort_newest_first(snaps: &mut [Snapshot]) {
    // Newest first; ties broken by id so output is stable.
    snaps.sort_by(|a, b| {
        b.start_time
            .cmp(&a.start_time)
            .then_with(|| a.snapshot_id.cmp(&b.snapshot_id))
    });
}

pub(crate) fn snapshot_from_sdk(s: &aws_sdk_ec2::types::Snapshot) -> Snapshot {
    let tags = sdk_tags(s.tags());
    Snapshot {
        snapshot_id: s.snapshot_id().unwrap_or_default().to_string(),
        volume_id: s
            .volume_id()
            .filter(|v| !v.is_empty() && *v != "vol-ffffffff")
            .map(str::to_string),
        state: s
            .state()
            .map(|x| x.as_str().to_string())
            .unwrap_or_default(),
        progress: s.progress().map(str::to_string),
        start_time: s.start_time().and_then(to_chrono),
        size_gib: s.volume_size(),
        encrypted: s.encrypted().unwrap_or(false),
        kms_key_id: s.kms_key_id().map(str::to_string),
        description: s.description().map(str::to_string),
        owner_id: s.owner_id().map(str::to_string),
        managed: tags::is_managed(&tags),
        tags,
        storage_tier: autosnap_core::tier::StorageTier::parse(
            s.storage_tier().map(|t| t.as_str()).unwrap_or(""),
        ),
        restore_expiry: s.restore_expiry_time().and_then(to_chrono),
    }
}

pub(crate) fn volume_from_sdk(v: &aws_sdk_ec2::types::Volume) -> Volume {
    Volume {
        volume_id: v.volume_id().unwrap_or_default().to_string(),
        name: None,
        size_gib: v.size().unwrap_or_default(),
        volume_type: v
            .volume_type()
            .map(|t| t.as_str().to_string())
            .unwrap_or_default(),
        availability_zone: v.availability_zone().unwrap_or_default().to_string(),
        state: v
            .state()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
        encrypted: v.encrypted().unwrap_or(false),
        kms_key_id: v.kms_key_id().map(str::to_string),
        iops: v.iops(),
        throughput: v.throughput(),
        snapshot_id: v
            .snapshot_id()
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        create_time: v.create_time().and_then(to_chrono),
        attachments: v
            .attachments()
            .iter()
            .map(|a| VolumeAttachment {
                instance_id: a.instance_id().unwrap_or_default().to_string(),
                device: a.device().map(str::to_string),
                state: a.state().map(|s| s.as_str().to_string()),
            })
            .collect(),
        tags: sdk_tags(v.tags()),
    }
    .with_name()
}

trait WithName {
    fn with_name(self) -> Self;
}

impl WithName for Volume {
    fn with_name(mut self) -> Self {
        self.name = self.tags.get("Name").cloned();
        self
    }
}

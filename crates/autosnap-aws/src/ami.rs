//! AMI calls: describe (with everything the metadata document needs), create,
//! copy (encrypt), register, deregister, who uses an AMI, the S3 store and
//! restore tasks, and waits that poll asynchronously. Errors are classified
//! like every other EC2 call (see `error.rs`).

use std::collections::BTreeMap;
use std::time::Duration;

use autosnap_core::ami::{
    AmiMetadata, ImageBlockDevice, ImageDetails, ImageUser, SecurityGroupRef, SnapshotFacts,
    SourceInstance,
};
use autosnap_core::model::Snapshot;
use autosnap_core::tags::Tags;
use aws_sdk_ec2::types::{
    ArchitectureValues, BlockDeviceMapping, BootModeValues, EbsBlockDevice, Filter, ResourceType,
    S3ObjectTag, Tag, TagSpecification, VolumeType,
};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use chrono::{DateTime, Utc};

use crate::ec2::{sdk_tags, to_chrono, Ec2, SnapshotQuery};
use crate::error::AwsError;

/// EC2 accepts at most this many values in one filter.
const MAX_FILTER_VALUES: usize = 200;
const IMAGE_PAGE_SIZE: i32 = 1000;

/// States after which an image will not become available.
const IMAGE_DEAD_STATES: &[&str] = &["failed", "invalid", "error", "deregistered", "disabled"];

/// How often to poll while waiting: start at `first`, double up to `max`.
#[derive(Debug, Clone, Copy)]
pub struct PollSchedule {
    pub first: Duration,
    pub max: Duration,
}

impl PollSchedule {
    /// Images: quick at first, then every 15 s (DescribeImages is not cheap).
    pub const IMAGES: PollSchedule = PollSchedule {
        first: Duration::from_secs(2),
        max: Duration::from_secs(15),
    };

    /// A fixed interval.
    pub fn every(d: Duration) -> PollSchedule {
        PollSchedule { first: d, max: d }
    }
}

/// A new AMI from an instance.
#[derive(Debug, Clone, Default)]
pub struct NewImage {
    pub instance_id: String,
    pub name: String,
    pub description: String,
    pub no_reboot: bool,
    pub image_tags: Tags,
    pub snapshot_tags: Tags,
}

/// A new AMI registered from a snapshot.
#[derive(Debug, Clone, Default)]
pub struct NewRegisteredImage {
    pub name: String,
    pub description: String,
    pub snapshot_id: String,
    pub root_device_name: String,
    pub volume_size_gib: i32,
    pub volume_type: String,
    pub architecture: String,
    pub boot_mode: Option<String>,
    pub ena_support: bool,
    pub delete_on_termination: bool,
    pub tags: Tags,
}

// What `restore --to-ami` registers is the engine's type (this module sends it).
pub use autosnap_ports::ports::{NewImageFromMappings, RegisteredMapping};

/// An AMI copy (in the same or from another region), optionally encrypted.
#[derive(Debug, Clone, Default)]
pub struct ImageCopy {
    pub source_image_id: String,
    pub source_region: String,
    pub name: String,
    pub description: Option<String>,
    pub encrypted: bool,
    pub kms_key_id: Option<String>,
    pub image_tags: Tags,
    pub snapshot_tags: Tags,
}

/// One store task as DescribeStoreImageTasks reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreTask {
    pub image_id: String,
    pub bucket: Option<String>,
    pub object_key: Option<String>,
    /// `InProgress`, `Completed` or `Failed`.
    pub state: String,
    pub progress_percent: Option<i32>,
    pub failure_reason: Option<String>,
    pub started: Option<DateTime<Utc>>,
}

fn filter<I: IntoIterator<Item = String>>(name: &str, values: I) -> Filter {
    Filter::builder()
        .name(name)
        .set_values(Some(values.into_iter().collect()))
        .build()
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

/// Converts EC2's description of an image.
pub fn image_from_sdk(i: &aws_sdk_ec2::types::Image) -> ImageDetails {
    ImageDetails {
        image_id: i.image_id().unwrap_or_default().to_string(),
        name: i.name().map(str::to_string),
        description: i
            .description()
            .filter(|d| !d.is_empty())
            .map(str::to_string),
        state: i
            .state()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
        state_reason: i
            .state_reason()
            .and_then(|r| r.message().or(r.code()))
            .filter(|m| !m.is_empty())
            .map(str::to_string),
        creation_date: i.creation_date().map(str::to_string),
        owner_id: i.owner_id().map(str::to_string),
        platform: i.platform().map(|p| p.as_str().to_string()),
        platform_details: i.platform_details().map(str::to_string),
        architecture: i.architecture().map(|a| a.as_str().to_string()),
        virtualization_type: i.virtualization_type().map(|v| v.as_str().to_string()),
        ena_support: i.ena_support(),
        boot_mode: i.boot_mode().map(|b| b.as_str().to_string()),
        root_device_name: i.root_device_name().map(str::to_string),
        root_device_type: i.root_device_type().map(|d| d.as_str().to_string()),
        source_instance_id: i.source_instance_id().map(str::to_string),
        source_image_id: i.source_image_id().map(str::to_string),
        block_device_mappings: i
            .block_device_mappings()
            .iter()
            .map(|m| {
                let ebs = m.ebs();
                ImageBlockDevice {
                    device_name: m.device_name().unwrap_or_default().to_string(),
                    snapshot_id: ebs.and_then(|e| e.snapshot_id()).map(str::to_string),
                    volume_size_gib: ebs.and_then(|e| e.volume_size()),
                    volume_type: ebs
                        .and_then(|e| e.volume_type())
                        .map(|t| t.as_str().to_string()),
                    iops: ebs.and_then(|e| e.iops()),
                    throughput: ebs.and_then(|e| e.throughput()),
                    delete_on_termination: ebs.and_then(|e| e.delete_on_termination()),
                    encrypted: ebs.and_then(|e| e.encrypted()),
                    kms_key_id: ebs.and_then(|e| e.kms_key_id()).map(str::to_string),
                    virtual_name: m.virtual_name().map(str::to_string),
                }
            })
            .collect(),
        tags: sdk_tags(i.tags()),
    }
}

impl Ec2 {
    fn classify<E>(
        &self,
        e: SdkError<E, HttpResponse>,
        op: &'static str,
        subject: Option<(&'static str, &str)>,
    ) -> AwsError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        AwsError::from_sdk(e, op, subject, self.site())
    }

    /// Describes our AMIs matching the filters, paged through completely.
    async fn describe_images_filtered(
        &self,
        filters: Vec<Filter>,
    ) -> Result<Vec<ImageDetails>, AwsError> {
        let mut out = Vec::new();
        let mut pages = self
            .raw()
            .describe_images()
            .owners(self.account().to_string())
            .set_filters(Some(filters))
            .max_results(IMAGE_PAGE_SIZE)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.classify(e, "DescribeImages", None))?;
            out.extend(page.images().iter().map(image_from_sdk));
        }
        out.sort_by(|a, b| {
            b.creation_date
                .cmp(&a.creation_date)
                .then_with(|| a.image_id.cmp(&b.image_id))
        });
        Ok(out)
    }

    /// Our AMIs with these ids; ids that do not exist are simply absent.
    pub async fn find_images(&self, ids: &[String]) -> Result<Vec<ImageDetails>, AwsError> {
        let mut out = Vec::new();
        for chunk in ids.chunks(MAX_FILTER_VALUES) {
            out.extend(
                self.describe_images_filtered(vec![filter("image-id", chunk.iter().cloned())])
                    .await?,
            );
        }
        Ok(out)
    }

    /// One of our AMIs, or `NotFound` naming it.
    pub async fn get_image(&self, image_id: &str) -> Result<ImageDetails, AwsError> {
        self.find_images(&[image_id.to_string()])
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| self.not_found("AMI", image_id))
    }

    /// Our AMIs, newest first, optionally only those with all these tags.
    pub async fn list_images(
        &self,
        tags: &[(String, Option<String>)],
    ) -> Result<Vec<ImageDetails>, AwsError> {
        let filters = tags
            .iter()
            .map(|(k, v)| match v {
                Some(v) => filter(&format!("tag:{k}"), [v.clone()]),
                None => filter("tag-key", [k.clone()]),
            })
            .collect();
        self.describe_images_filtered(filters).await
    }

    /// Our AMIs with exactly this name (at most one on AWS).
    pub async fn images_named(&self, name: &str) -> Result<Vec<ImageDetails>, AwsError> {
        Ok(self
            .describe_images_filtered(vec![filter("name", [name.to_string()])])
            .await?
            .into_iter()
            .filter(|i| i.name.as_deref() == Some(name))
            .collect())
    }

    /// Our AMIs whose mappings use any of these snapshots, with full details.
    pub async fn images_with_snapshots(
        &self,
        snapshot_ids: &[String],
    ) -> Result<Vec<ImageDetails>, AwsError> {
        let mut out = Vec::new();
        for chunk in snapshot_ids.chunks(MAX_FILTER_VALUES) {
            out.extend(
                self.describe_images_filtered(vec![filter(
                    "block-device-mapping.snapshot-id",
                    chunk.iter().cloned(),
                )])
                .await?,
            );
        }
        out.sort_by(|a, b| a.image_id.cmp(&b.image_id));
        out.dedup_by(|a, b| a.image_id == b.image_id);
        Ok(out)
    }

    /// CreateImage with tags on create for the AMI and its snapshots.
    pub async fn create_image(&self, img: &NewImage) -> Result<String, AwsError> {
        let mut req = self
            .raw()
            .create_image()
            .instance_id(&img.instance_id)
            .name(&img.name)
            .description(&img.description)
            .no_reboot(img.no_reboot);
        if !img.image_tags.is_empty() {
            req = req.tag_specifications(tag_spec(ResourceType::Image, &img.image_tags));
        }
        if !img.snapshot_tags.is_empty() {
            req = req.tag_specifications(tag_spec(ResourceType::Snapshot, &img.snapshot_tags));
        }
        let out = req
            .send()
            .await
            .map_err(|e| self.classify(e, "CreateImage", Some(("instance", &img.instance_id))))?;
        out.image_id()
            .map(str::to_string)
            .ok_or_else(|| AwsError::Other {
                operation: "CreateImage",
                detail: "the response carried no image id".into(),
            })
    }

    /// CopyImage into this client's region, with tags on create.
    pub async fn copy_image(&self, c: &ImageCopy) -> Result<String, AwsError> {
        let mut req = self
            .raw()
            .copy_image()
            .source_image_id(&c.source_image_id)
            .source_region(&c.source_region)
            .name(&c.name)
            .set_description(c.description.clone());
        if c.encrypted || c.kms_key_id.is_some() {
            req = req.encrypted(true);
        }
        if let Some(k) = &c.kms_key_id {
            req = req.kms_key_id(k);
        }
        if !c.image_tags.is_empty() {
            req = req.tag_specifications(tag_spec(ResourceType::Image, &c.image_tags));
        }
        if !c.snapshot_tags.is_empty() {
            req = req.tag_specifications(tag_spec(ResourceType::Snapshot, &c.snapshot_tags));
        }
        let out = req
            .send()
            .await
            .map_err(|e| self.classify(e, "CopyImage", Some(("AMI", &c.source_image_id))))?;
        out.image_id()
            .map(str::to_string)
            .ok_or_else(|| AwsError::Other {
                operation: "CopyImage",
                detail: "the response carried no image id".into(),
            })
    }

    /// RegisterImage with one root EBS device from a snapshot.
    pub async fn register_image(&self, r: &NewRegisteredImage) -> Result<String, AwsError> {
        let image = NewImageFromMappings {
            name: r.name.clone(),
            description: Some(r.description.clone()),
            root_device_name: r.root_device_name.clone(),
            architecture: Some(r.architecture.clone()),
            virtualization_type: None,
            ena_support: Some(r.ena_support),
            boot_mode: r.boot_mode.clone(),
            mappings: vec![RegisteredMapping {
                device_name: r.root_device_name.clone(),
                snapshot_id: Some(r.snapshot_id.clone()),
                volume_size_gib: Some(r.volume_size_gib),
                volume_type: Some(r.volume_type.clone()),
                delete_on_termination: Some(r.delete_on_termination),
                ..Default::default()
            }],
            tags: r.tags.clone(),
        };
        self.register(&image, ("snapshot", &r.snapshot_id)).await
    }

    /// RegisterImage with all of `r`'s block devices (sizes, types, IOPS, throughput), its
    /// architecture, virtualization type, ENA support, boot mode and root device, tagged on
    /// create.
    pub async fn register_image_with_mappings(
        &self,
        r: &NewImageFromMappings,
    ) -> Result<String, AwsError> {
        self.register(r, ("AMI name", &r.name)).await
    }

    /// RegisterImage; errors name `subject`.
    async fn register(
        &self,
        r: &NewImageFromMappings,
        subject: (&'static str, &str),
    ) -> Result<String, AwsError> {
        let mappings = r
            .mappings
            .iter()
            .map(|m| {
                let mut b = BlockDeviceMapping::builder().device_name(&m.device_name);
                if let Some(v) = &m.virtual_name {
                    b = b.virtual_name(v);
                }
                if let Some(snapshot) = &m.snapshot_id {
                    let mut ebs = EbsBlockDevice::builder()
                        .snapshot_id(snapshot)
                        .set_volume_size(m.volume_size_gib)
                        .set_iops(m.iops)
                        .set_throughput(m.throughput)
                        .set_delete_on_termination(m.delete_on_termination);
                    if let Some(t) = &m.volume_type {
                        ebs = ebs.volume_type(VolumeType::from(t.as_str()));
                    }
                    b = b.ebs(ebs.build());
                }
                b.build()
            })
            .collect::<Vec<_>>();
        let mut req = self
            .raw()
            .register_image()
            .name(&r.name)
            .root_device_name(&r.root_device_name)
            .virtualization_type(r.virtualization_type.as_deref().unwrap_or("hvm"))
            .set_block_device_mappings(Some(mappings))
            .set_ena_support(r.ena_support);
        if let Some(d) = &r.description {
            req = req.description(d);
        }
        if let Some(a) = &r.architecture {
            req = req.architecture(ArchitectureValues::from(a.as_str()));
        }
        if let Some(b) = &r.boot_mode {
            req = req.boot_mode(BootModeValues::from(b.as_str()));
        }
        if !r.tags.is_empty() {
            req = req.tag_specifications(tag_spec(ResourceType::Image, &r.tags));
        }
        let out = req
            .send()
            .await
            .map_err(|e| self.classify(e, "RegisterImage", Some(subject)))?;
        out.image_id()
            .map(str::to_string)
            .ok_or_else(|| AwsError::Other {
                operation: "RegisterImage",
                detail: "the response carried no image id".into(),
            })
    }

    /// The metadata document of `image` (docs/ami-metadata.md): the AMI, its snapshots'
    /// encryption and tags, and the instance it was made from (its `autosnap:source-instance`
    /// tag, else EC2's SourceInstanceId) as it is now, or only its id if it is gone.
    pub async fn collect_image_metadata(
        &self,
        image: &ImageDetails,
        generator: &str,
        collected_at: DateTime<Utc>,
    ) -> Result<AmiMetadata, AwsError> {
        let source_id = image
            .tags
            .get(autosnap_core::tags::SOURCE_INSTANCE)
            .cloned()
            .or_else(|| image.source_instance_id.clone());
        let source = match &source_id {
            Some(id) => Some(self.source_instance(id).await?.unwrap_or(SourceInstance {
                instance_id: id.clone(),
                instance_type: None,
                availability_zone: None,
                vpc_id: None,
                subnet_id: None,
                security_groups: Vec::new(),
                iam_instance_profile: None,
                key_name: None,
                private_ip_address: None,
                tags: Tags::new(),
            })),
            None => None,
        };
        let facts = self.snapshot_facts(&image.snapshot_ids()).await?;
        Ok(AmiMetadata::build(
            image,
            &facts,
            source,
            self.account(),
            self.region(),
            generator,
            collected_at,
        ))
    }

    /// DeregisterImage; the snapshots stay (autosnap deletes them itself).
    pub async fn deregister_image(&self, image_id: &str) -> Result<(), AwsError> {
        self.raw()
            .deregister_image()
            .image_id(image_id)
            .send()
            .await
            .map_err(|e| self.classify(e, "DeregisterImage", Some(("AMI", image_id))))?;
        Ok(())
    }

    /// Polls an AMI until it is `available`; a dead state is an error that
    /// carries EC2's reason.
    pub async fn wait_image_available(
        &self,
        image_id: &str,
        timeout: Duration,
        poll: PollSchedule,
        observer: &dyn crate::ec2::WaitObserver,
    ) -> Result<ImageDetails, AwsError> {
        let started = tokio::time::Instant::now();
        let mut interval = poll.first;
        loop {
            let image = self.get_image(image_id).await?;
            observer.image_polled(&image);
            if image.state == "available" {
                return Ok(image);
            }
            if IMAGE_DEAD_STATES.contains(&image.state.as_str()) {
                return Err(AwsError::Failed {
                    what: format!("AMI {image_id}"),
                    detail: format!(
                        "EC2 reports state '{}'{}",
                        image.state,
                        image
                            .state_reason
                            .as_deref()
                            .map(|r| format!(": {r}"))
                            .unwrap_or_default()
                    ),
                });
            }
            if started.elapsed() >= timeout {
                return Err(AwsError::WaitTimeout {
                    what: format!("AMI {image_id} to become available (it is {})", image.state),
                    waited_secs: started.elapsed().as_secs(),
                });
            }
            tokio::time::sleep(interval).await;
            interval = (interval * 2).min(poll.max);
        }
    }

    /// Everything that would break if the AMI went away: instances launched
    /// from it that still exist, and launch templates whose default or latest
    /// version names it.
    pub async fn image_users(&self, image_id: &str) -> Result<Vec<ImageUser>, AwsError> {
        let mut users = Vec::new();
        let mut pages = self
            .raw()
            .describe_instances()
            .filters(filter("image-id", [image_id.to_string()]))
            .filters(filter(
                "instance-state-name",
                ["pending", "running", "stopping", "stopped"].map(String::from),
            ))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.classify(e, "DescribeInstances", None))?;
            for inst in page.reservations().iter().flat_map(|r| r.instances()) {
                if inst.image_id() != Some(image_id) {
                    continue;
                }
                let tags = sdk_tags(inst.tags());
                users.push(ImageUser::Instance {
                    instance_id: inst.instance_id().unwrap_or_default().to_string(),
                    state: inst
                        .state()
                        .and_then(|s| s.name())
                        .map(|n| n.as_str().to_string())
                        .unwrap_or_default(),
                    name: tags.get("Name").cloned(),
                });
            }
        }

        // Without a template id, $Default and $Latest describe those versions
        // of every template; the image-id filter narrows it on AWS (checked
        // again here, as emulators ignore it).
        let mut found: BTreeMap<(String, i64), (Option<String>, bool)> = BTreeMap::new();
        let mut pages = self
            .raw()
            .describe_launch_template_versions()
            .versions("$Default")
            .versions("$Latest")
            .filters(filter("image-id", [image_id.to_string()]))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| self.classify(e, "DescribeLaunchTemplateVersions", None))?;
            for v in page.launch_template_versions() {
                let uses = v.launch_template_data().and_then(|d| d.image_id()) == Some(image_id);
                if !uses {
                    continue;
                }
                let id = v.launch_template_id().unwrap_or_default().to_string();
                let entry = found
                    .entry((id, v.version_number().unwrap_or_default()))
                    .or_insert((v.launch_template_name().map(str::to_string), false));
                entry.1 |= v.default_version().unwrap_or(false);
            }
        }
        if !found.is_empty() {
            let ids: Vec<String> = found.keys().map(|(id, _)| id.clone()).collect();
            let out = self
                .raw()
                .describe_launch_templates()
                .set_launch_template_ids(Some(ids))
                .send()
                .await
                .map_err(|e| self.classify(e, "DescribeLaunchTemplates", None))?;
            let latest: BTreeMap<String, i64> = out
                .launch_templates()
                .iter()
                .filter_map(|t| {
                    Some((
                        t.launch_template_id()?.to_string(),
                        t.latest_version_number()?,
                    ))
                })
                .collect();
            for ((id, version), (name, default)) in found {
                users.push(ImageUser::LaunchTemplate {
                    latest: latest.get(&id) == Some(&version),
                    launch_template_id: id,
                    name,
                    version,
                    default,
                });
            }
        }
        Ok(users)
    }

    /// What the metadata document records of an instance, if it still exists.
    pub async fn source_instance(
        &self,
        instance_id: &str,
    ) -> Result<Option<SourceInstance>, AwsError> {
        let out = self
            .raw()
            .describe_instances()
            .filters(filter("instance-id", [instance_id.to_string()]))
            .send()
            .await
            .map_err(|e| self.classify(e, "DescribeInstances", Some(("instance", instance_id))))?;
        let Some(inst) = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find(|i| i.instance_id() == Some(instance_id))
        else {
            return Ok(None);
        };
        let mut groups: Vec<SecurityGroupRef> = inst
            .security_groups()
            .iter()
            .filter_map(|g| {
                Some(SecurityGroupRef {
                    group_id: g.group_id()?.to_string(),
                    group_name: g.group_name().map(str::to_string),
                })
            })
            .collect();
        // Instances in a VPC list their groups on the network interfaces.
        for nic in inst.network_interfaces() {
            for g in nic.groups() {
                if let Some(id) = g.group_id() {
                    if !groups.iter().any(|x| x.group_id == id) {
                        groups.push(SecurityGroupRef {
                            group_id: id.to_string(),
                            group_name: g.group_name().map(str::to_string),
                        });
                    }
                }
            }
        }
        Ok(Some(SourceInstance {
            instance_id: instance_id.to_string(),
            instance_type: inst.instance_type().map(|t| t.as_str().to_string()),
            availability_zone: inst
                .placement()
                .and_then(|p| p.availability_zone())
                .map(str::to_string),
            vpc_id: inst.vpc_id().map(str::to_string),
            subnet_id: inst.subnet_id().map(str::to_string),
            security_groups: groups,
            iam_instance_profile: inst
                .iam_instance_profile()
                .and_then(|p| p.arn())
                .map(str::to_string),
            key_name: inst.key_name().map(str::to_string),
            private_ip_address: inst.private_ip_address().map(str::to_string),
            tags: sdk_tags(inst.tags()),
        }))
    }

    /// The snapshots with these ids (none asked, none described).
    async fn snapshots_by_id(&self, snapshot_ids: &[String]) -> Result<Vec<Snapshot>, AwsError> {
        if snapshot_ids.is_empty() {
            return Ok(Vec::new());
        }
        self.list_snapshots(&SnapshotQuery {
            snapshot_ids: snapshot_ids.to_vec(),
            ..Default::default()
        })
        .await
    }

    /// Encryption and tags of snapshots, by id (missing ones are absent).
    pub async fn snapshot_facts(
        &self,
        snapshot_ids: &[String],
    ) -> Result<BTreeMap<String, SnapshotFacts>, AwsError> {
        Ok(self
            .snapshots_by_id(snapshot_ids)
            .await?
            .into_iter()
            .map(|s| {
                (
                    s.snapshot_id.clone(),
                    SnapshotFacts {
                        encrypted: s.encrypted,
                        kms_key_id: s.kms_key_id.clone(),
                        tags: s.tags.clone(),
                    },
                )
            })
            .collect())
    }

    /// Our snapshots EC2 made for an AMI but that its mappings may not show
    /// (a failed image): found among those carrying the given tags by the
    /// descriptions EC2 gives them, "Created by CreateImage(i-…) for ami-…"
    /// and "Copied for DestinationAmi ami-… from SourceAmi …".
    pub async fn snapshots_made_for_image(
        &self,
        image_id: &str,
        tags: &[(String, Option<String>)],
    ) -> Result<Vec<Snapshot>, AwsError> {
        let snaps = self
            .list_snapshots(&SnapshotQuery {
                tags: tags.to_vec(),
                ..Default::default()
            })
            .await?;
        Ok(snaps
            .into_iter()
            .filter(|s| {
                autosnap_core::ami::made_for_image(image_id, s.description.as_deref(), &s.tags)
            })
            .collect())
    }

    /// Descriptions and tags of our snapshots, by id, for deciding which go with their AMI
    /// ([`autosnap_core::ami::keep_with_image_reason`]); missing and other accounts'
    /// snapshots are absent.
    pub async fn mapped_snapshots(
        &self,
        snapshot_ids: &[String],
    ) -> Result<BTreeMap<String, autosnap_core::ami::MappedSnapshot>, AwsError> {
        Ok(self
            .snapshots_by_id(snapshot_ids)
            .await?
            .into_iter()
            .map(|s| {
                (
                    s.snapshot_id,
                    autosnap_core::ami::MappedSnapshot {
                        description: s.description,
                        tags: s.tags,
                    },
                )
            })
            .collect())
    }

    // ---- S3 image tasks ---------------------------------------------------

    /// CreateStoreImageTask; returns the object key EC2 will write.
    pub async fn create_store_image_task(
        &self,
        image_id: &str,
        bucket: &str,
        object_tags: &Tags,
    ) -> Result<String, AwsError> {
        let out = self
            .raw()
            .create_store_image_task()
            .image_id(image_id)
            .bucket(bucket)
            .set_s3_object_tags(if object_tags.is_empty() {
                None
            } else {
                Some(
                    object_tags
                        .iter()
                        .map(|(k, v)| S3ObjectTag::builder().key(k).value(v).build())
                        .collect(),
                )
            })
            .send()
            .await
            .map_err(|e| self.classify(e, "CreateStoreImageTask", Some(("AMI", image_id))))?;
        Ok(out
            .object_key()
            .map(str::to_string)
            .unwrap_or_else(|| autosnap_core::ami::stored_object_key(image_id)))
    }

    /// The current store task of an AMI, if there is one.
    pub async fn store_image_task(&self, image_id: &str) -> Result<Option<StoreTask>, AwsError> {
        let out = self
            .raw()
            .describe_store_image_tasks()
            .image_ids(image_id)
            .send()
            .await
            .map_err(|e| self.classify(e, "DescribeStoreImageTasks", Some(("AMI", image_id))))?;
        Ok(out
            .store_image_task_results()
            .iter()
            .filter(|t| t.ami_id() == Some(image_id))
            .map(|t| StoreTask {
                image_id: image_id.to_string(),
                bucket: t.bucket().map(str::to_string),
                object_key: t.s3object_key().map(str::to_string),
                state: t.store_task_state().unwrap_or_default().to_string(),
                progress_percent: t.progress_percentage(),
                failure_reason: t.store_task_failure_reason().map(str::to_string),
                started: t.task_start_time().and_then(to_chrono),
            })
            .max_by_key(|t| t.started))
    }

    /// Polls the store task at a fixed interval (DescribeStoreImageTasks is
    /// throttled at 0.5 requests per second per account) until it completes.
    pub async fn wait_store_image_task(
        &self,
        image_id: &str,
        interval: Duration,
        timeout: Duration,
        observer: &dyn crate::ec2::WaitObserver,
    ) -> Result<StoreTask, AwsError> {
        let started = tokio::time::Instant::now();
        loop {
            let task = self
                .store_image_task(image_id)
                .await?
                .ok_or_else(|| AwsError::Failed {
                    what: format!("storing AMI {image_id}"),
                    detail: "DescribeStoreImageTasks knows no task for it".into(),
                })?;
            observer.store_task_polled(&task);
            match task.state.as_str() {
                "Completed" => return Ok(task),
                "Failed" => {
                    return Err(AwsError::Failed {
                        what: format!("storing AMI {image_id} in S3"),
                        detail: task
                            .failure_reason
                            .clone()
                            .unwrap_or_else(|| "the store task failed without a reason".into()),
                    })
                }
                _ => {}
            }
            if started.elapsed() >= timeout {
                return Err(AwsError::WaitTimeout {
                    what: format!(
                        "the store task of {image_id} ({}%)",
                        task.progress_percent.unwrap_or(0)
                    ),
                    waited_secs: started.elapsed().as_secs(),
                });
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// CreateRestoreImageTask; returns the new AMI's id.
    pub async fn create_restore_image_task(
        &self,
        bucket: &str,
        object_key: &str,
        name: &str,
    ) -> Result<String, AwsError> {
        let out = self
            .raw()
            .create_restore_image_task()
            .bucket(bucket)
            .object_key(object_key)
            .name(name)
            .send()
            .await
            .map_err(|e| {
                self.classify(
                    e,
                    "CreateRestoreImageTask",
                    Some(("S3 object", &format!("s3://{bucket}/{object_key}"))),
                )
            })?;
        out.image_id()
            .map(str::to_string)
            .ok_or_else(|| AwsError::Other {
                operation: "CreateRestoreImageTask",
                detail: "the response carried no image id".into(),
            })
    }
}

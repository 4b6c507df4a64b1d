//! Recycle Bin: the `rbin` service's retention rules (ListRules, GetRule) and EC2's calls for
//! what is in the bin (ListSnapshotsInRecycleBin, RestoreSnapshotFromRecycleBin,
//! ListImagesInRecycleBin, RestoreImageFromRecycleBin), returning autosnap-core's model.

use autosnap_core::recycle_bin::{BinResource, RetentionRule, RuleTag};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::context::AwsContext;
use crate::ec2::{to_chrono, Ec2};
use crate::error::{AwsError, CallSite};

/// ListRules returns up to 1000 per page.
const RULES_PAGE_SIZE: i32 = 1000;
/// ListSnapshotsInRecycleBin accepts 5 to 1000 per page, ListImagesInRecycleBin 1 to 1000.
const BIN_PAGE_SIZE: i32 = 1000;
/// Ids per bin listing request: the same bound autosnap keeps for every id filter.
const IDS_PER_REQUEST: usize = 200;

/// The Recycle Bin service of one Region.
#[derive(Clone)]
pub struct RecycleBin {
    client: aws_sdk_rbin::Client,
    site: CallSite,
}

impl RecycleBin {
    /// A client for `region` with the context's credentials and endpoint.
    pub fn new(ctx: &AwsContext, region: &str) -> RecycleBin {
        let conf = aws_sdk_rbin::config::Builder::from(ctx.sdk_config())
            .region(aws_sdk_rbin::config::Region::new(region.to_string()))
            .build();
        RecycleBin {
            client: aws_sdk_rbin::Client::from_conf(conf),
            site: ctx.call_site("Recycle Bin", region),
        }
    }

    /// The retention rules for `resource` in this Region: ListRules (paged), then one GetRule per
    /// rule, because ListRules' summaries leave out the tags that decide what a rule retains.
    pub async fn rules(&self, resource: BinResource) -> Result<Vec<RetentionRule>, AwsError> {
        let kind = match resource {
            BinResource::Snapshot => aws_sdk_rbin::types::ResourceType::EbsSnapshot,
            BinResource::Image => aws_sdk_rbin::types::ResourceType::Ec2Image,
        };
        let mut ids = Vec::new();
        let mut pages = self
            .client
            .list_rules()
            .resource_type(kind)
            .max_results(RULES_PAGE_SIZE)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk(e, "ListRules", None, &self.site))?;
            ids.extend(
                page.rules()
                    .iter()
                    .filter_map(|r| r.identifier().map(str::to_string)),
            );
        }
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let r = match self.client.get_rule().identifier(&id).send().await {
                Ok(r) => r,
                // Deleted between the two calls: it retains nothing any more.
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_resource_not_found_exception()) =>
                {
                    continue
                }
                Err(e) => {
                    return Err(AwsError::from_sdk(
                        e,
                        "GetRule",
                        Some(("Recycle Bin rule", &id)),
                        &self.site,
                    ))
                }
            };
            let tags = |t: &[aws_sdk_rbin::types::ResourceTag]| -> Vec<RuleTag> {
                t.iter()
                    .map(|t| {
                        RuleTag::new(
                            t.resource_tag_key(),
                            t.resource_tag_value().unwrap_or_default(),
                        )
                    })
                    .collect()
            };
            out.push(RetentionRule {
                id: r.identifier().unwrap_or(&id).to_string(),
                resource,
                retention_days: r
                    .retention_period()
                    .map(|p| p.retention_period_value().max(0) as u32)
                    .unwrap_or(0),
                resource_tags: tags(r.resource_tags()),
                exclude_tags: tags(r.exclude_resource_tags()),
                available: r.status().is_some_and(|s| s.as_str() == "available"),
                lock_state: r.lock_state().map(|s| s.as_str().to_string()),
                description: r.description().map(str::to_string),
            });
        }
        Ok(out)
    }
}

/// A snapshot or AMI in the Recycle Bin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BinEntry {
    /// The snapshot or AMI id.
    pub id: String,
    /// A snapshot's volume; an AMI's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub description: Option<String>,
    /// When it was deleted into the bin.
    pub entered: Option<DateTime<Utc>>,
    /// When the bin deletes it for good unless it is recovered first.
    pub gone_after: Option<DateTime<Utc>>,
}

fn chunks_or_all(ids: &[String]) -> Vec<&[String]> {
    if ids.is_empty() {
        vec![&[]]
    } else {
        ids.chunks(IDS_PER_REQUEST).collect()
    }
}

impl Ec2 {
    /// Snapshots in this Region's Recycle Bin (only `ids` when not empty), paged through.
    pub async fn snapshots_in_recycle_bin(
        &self,
        ids: &[String],
    ) -> Result<Vec<BinEntry>, AwsError> {
        let mut out = Vec::new();
        for chunk in chunks_or_all(ids) {
            let mut pages = self
                .raw()
                .list_snapshots_in_recycle_bin()
                .set_snapshot_ids((!chunk.is_empty()).then(|| chunk.to_vec()))
                .max_results(BIN_PAGE_SIZE)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| {
                    AwsError::from_sdk(e, "ListSnapshotsInRecycleBin", None, self.site())
                })?;
                out.extend(page.snapshots().iter().map(|s| BinEntry {
                    id: s.snapshot_id().unwrap_or_default().to_string(),
                    volume_id: s.volume_id().map(str::to_string),
                    name: None,
                    description: s.description().map(str::to_string),
                    entered: s.recycle_bin_enter_time().and_then(to_chrono),
                    gone_after: s.recycle_bin_exit_time().and_then(to_chrono),
                }));
            }
        }
        out.sort_by(|a, b| b.entered.cmp(&a.entered).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }

    /// AMIs in this Region's Recycle Bin (only `ids` when not empty), paged through.
    pub async fn images_in_recycle_bin(&self, ids: &[String]) -> Result<Vec<BinEntry>, AwsError> {
        let mut out = Vec::new();
        for chunk in chunks_or_all(ids) {
            let mut pages = self
                .raw()
                .list_images_in_recycle_bin()
                .set_image_ids((!chunk.is_empty()).then(|| chunk.to_vec()))
                .max_results(BIN_PAGE_SIZE)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| {
                    AwsError::from_sdk(e, "ListImagesInRecycleBin", None, self.site())
                })?;
                out.extend(page.images().iter().map(|i| BinEntry {
                    id: i.image_id().unwrap_or_default().to_string(),
                    volume_id: None,
                    name: i.name().map(str::to_string),
                    description: i.description().map(str::to_string),
                    entered: i.recycle_bin_enter_time().and_then(to_chrono),
                    gone_after: i.recycle_bin_exit_time().and_then(to_chrono),
                }));
            }
        }
        out.sort_by(|a, b| b.entered.cmp(&a.entered).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Brings a snapshot back from the Recycle Bin.
    pub async fn restore_snapshot_from_recycle_bin(
        &self,
        snapshot_id: &str,
    ) -> Result<(), AwsError> {
        self.raw()
            .restore_snapshot_from_recycle_bin()
            .snapshot_id(snapshot_id)
            .send()
            .await
            .map_err(|e| {
                AwsError::from_sdk(
                    e,
                    "RestoreSnapshotFromRecycleBin",
                    Some(("snapshot in the Recycle Bin", snapshot_id)),
                    self.site(),
                )
            })?;
        Ok(())
    }

    /// Brings an AMI back from the Recycle Bin.
    pub async fn restore_image_from_recycle_bin(&self, image_id: &str) -> Result<(), AwsError> {
        self.raw()
            .restore_image_from_recycle_bin()
            .image_id(image_id)
            .send()
            .await
            .map_err(|e| {
                AwsError::from_sdk(
                    e,
                    "RestoreImageFromRecycleBin",
                    Some(("AMI in the Recycle Bin", image_id)),
                    self.site(),
                )
            })?;
        Ok(())
    }
}

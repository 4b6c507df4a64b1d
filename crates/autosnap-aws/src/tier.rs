//! EBS Snapshots Archive: ModifySnapshotTier, RestoreSnapshotTier and
//! DescribeSnapshotTierStatus, returning autosnap-core's tier model and classified errors.

use autosnap_core::tier::{RestoreRequest, StorageTier};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::ec2::{to_chrono, Ec2};
use crate::error::AwsError;

/// DescribeSnapshotTierStatus accepts 5 to 1000 per page.
const PAGE_SIZE: i32 = 1000;
/// Ids per `snapshot-id` filter: the same bound autosnap keeps for every filter.
const IDS_PER_REQUEST: usize = 200;

/// One snapshot's tiering as EC2 reports it (DescribeSnapshotTierStatus).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TierStatus {
    pub snapshot_id: String,
    pub storage_tier: StorageTier,
    /// `archival-in-progress`, `archival-completed`, `temporary-restore-in-progress`, … or
    /// None when it was never archived.
    pub last_operation: Option<String>,
    pub archived_on: Option<DateTime<Utc>>,
    pub restore_expiry: Option<DateTime<Utc>>,
}

impl Ec2 {
    /// Starts archiving one snapshot; returns when EC2 started (`TieringStartTime`).
    pub async fn archive_snapshot(
        &self,
        snapshot_id: &str,
    ) -> Result<Option<DateTime<Utc>>, AwsError> {
        let out = self
            .raw()
            .modify_snapshot_tier()
            .snapshot_id(snapshot_id)
            .storage_tier(aws_sdk_ec2::types::TargetStorageTier::Archive)
            .send()
            .await
            .map_err(|e| {
                AwsError::from_sdk(
                    e,
                    "ModifySnapshotTier",
                    Some(("snapshot", snapshot_id)),
                    self.site(),
                )
            })?;
        Ok(out.tiering_start_time().and_then(to_chrono))
    }

    /// Starts restoring one archived snapshot, for some days or for good.
    pub async fn restore_snapshot_tier(
        &self,
        snapshot_id: &str,
        how: RestoreRequest,
    ) -> Result<(), AwsError> {
        let call = self.raw().restore_snapshot_tier().snapshot_id(snapshot_id);
        let call = match how {
            RestoreRequest::Temporary(days) => call.temporary_restore_days(days),
            RestoreRequest::Permanent => call.permanent_restore(true),
        };
        call.send().await.map_err(|e| {
            AwsError::from_sdk(
                e,
                "RestoreSnapshotTier",
                Some(("snapshot", snapshot_id)),
                self.site(),
            )
        })?;
        Ok(())
    }

    /// The tier status of these snapshots (all of this account's when `snapshot_ids` is
    /// empty), paged through.
    pub async fn snapshot_tier_status(
        &self,
        snapshot_ids: &[String],
    ) -> Result<Vec<TierStatus>, AwsError> {
        let mut out = Vec::new();
        let groups: Vec<&[String]> = if snapshot_ids.is_empty() {
            vec![&[]]
        } else {
            snapshot_ids.chunks(IDS_PER_REQUEST).collect()
        };
        for ids in groups {
            out.extend(self.tier_status_pages(ids).await?);
        }
        Ok(out)
    }

    async fn tier_status_pages(
        &self,
        snapshot_ids: &[String],
    ) -> Result<Vec<TierStatus>, AwsError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut call = self
                .raw()
                .describe_snapshot_tier_status()
                .max_results(PAGE_SIZE)
                .set_next_token(token.take());
            if !snapshot_ids.is_empty() {
                call = call.filters(
                    aws_sdk_ec2::types::Filter::builder()
                        .name("snapshot-id")
                        .set_values(Some(snapshot_ids.to_vec()))
                        .build(),
                );
            }
            let page = call.send().await.map_err(|e| {
                AwsError::from_sdk(e, "DescribeSnapshotTierStatus", None, self.site())
            })?;
            out.extend(page.snapshot_tier_statuses().iter().map(|s| {
                TierStatus {
                    snapshot_id: s.snapshot_id().unwrap_or_default().to_string(),
                    storage_tier: StorageTier::parse(
                        s.storage_tier().map(|t| t.as_str()).unwrap_or(""),
                    ),
                    last_operation: s
                        .last_tiering_operation_status()
                        .map(|o| o.as_str().to_string()),
                    archived_on: s.archival_complete_time().and_then(to_chrono),
                    restore_expiry: s.restore_expiry_time().and_then(to_chrono),
                }
            }));
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(out)
    }
}

impl Ec2 {
    /// What `archive_after` needs to know about these snapshots: state, tier, sizes
    /// (DescribeSnapshots, including `FullSnapshotSizeInBytes` where EC2 reports it) and the
    /// last tiering operation (DescribeSnapshotTierStatus: an archive under way reads
    /// `standard` in DescribeSnapshots). 200 ids a request each; a missing id is left out.
    pub async fn archive_facts(
        &self,
        snapshot_ids: &[String],
    ) -> Result<Vec<autosnap_core::archive_plan::SnapshotFacts>, AwsError> {
        if snapshot_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut facts = Vec::new();
        for ids in snapshot_ids.chunks(IDS_PER_REQUEST) {
            let mut pages = self
                .raw()
                .describe_snapshots()
                .filters(
                    aws_sdk_ec2::types::Filter::builder()
                        .name("snapshot-id")
                        .set_values(Some(ids.to_vec()))
                        .build(),
                )
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page
                    .map_err(|e| AwsError::from_sdk(e, "DescribeSnapshots", None, self.site()))?;
                for s in page.snapshots() {
                    facts.push(autosnap_core::archive_plan::SnapshotFacts {
                        snapshot_id: s.snapshot_id().unwrap_or_default().to_string(),
                        state: s
                            .state()
                            .map(|x| x.as_str().to_string())
                            .unwrap_or_default(),
                        storage_tier: StorageTier::parse(
                            s.storage_tier().map(|t| t.as_str()).unwrap_or(""),
                        ),
                        last_tiering: None,
                        volume_size_gib: s.volume_size(),
                        full_size_bytes: s.full_snapshot_size_in_bytes(),
                        used_by_image: None,
                    });
                }
            }
        }
        let status = self.snapshot_tier_status(snapshot_ids).await?;
        for f in &mut facts {
            f.last_tiering = status
                .iter()
                .find(|s| s.snapshot_id == f.snapshot_id)
                .and_then(|s| s.last_operation.clone());
        }
        Ok(facts)
    }
}

/// Fills the plan's archive decisions (`archive_after`): reads the facts of the candidates,
/// one DescribeSnapshots and one DescribeSnapshotTierStatus per 200 ids and Region, and lets
/// autosnap-core decide. The AMIs using a snapshot come from the inventory already read.
pub async fn plan_archives(
    ctx: &crate::AwsContext,
    plan: &mut autosnap_core::plan::Plan,
    policies: &[autosnap_core::policy::PolicyConfig],
    inventory: &autosnap_core::plan::Inventory,
) -> Result<(), AwsError> {
    use autosnap_core::archive_plan;
    let wanted = archive_plan::candidates(plan, policies);
    if wanted.is_empty() {
        return Ok(());
    }
    let mut facts = std::collections::HashMap::new();
    for (region, ids) in wanted {
        for f in ctx.ec2_in(&region).await?.archive_facts(&ids).await? {
            facts.insert(f.snapshot_id.clone(), f);
        }
    }
    for b in &inventory.backups {
        if let (Some(f), Some(image)) = (facts.get_mut(b.id.as_str()), b.in_use_by().first()) {
            f.used_by_image = Some(image.clone());
        }
    }
    archive_plan::plan_archives(plan, policies, &facts);
    Ok(())
}

//! Reading what the policies need from the account: the candidate targets
//! (volumes and instances) in the policies' regions, and every backup
//! autosnap made for a policy (in the source and the copy regions): snapshots
//! with the AMIs that use them, and AMIs with the instances and launch
//! templates that use them.

use std::collections::{BTreeSet, HashMap};

use autosnap_core::ami::ImageDetails;
use autosnap_core::plan::{BackupBuilder, ExistingBackup, Inventory, Target};
use autosnap_core::policy::{BackupKind, PolicyConfig, ResourceKind};
use autosnap_core::tags;
use futures::stream::{self, StreamExt, TryStreamExt};

use crate::ec2::SnapshotQuery;
use crate::{AwsContext, AwsError, Ec2};

/// Regions read at once.
const REGION_CONCURRENCY: usize = 4;
/// AMIs whose users (instances, launch templates) are looked up at once.
const USERS_CONCURRENCY: usize = 4;

/// The regions policies back up from, and the regions they copy to.
pub fn regions(policies: &[PolicyConfig], default_region: &str) -> (Vec<String>, Vec<String>) {
    let mut sources = BTreeSet::new();
    let mut copies = BTreeSet::new();
    for p in policies {
        for r in p.regions_or(default_region) {
            sources.insert(r);
        }
        // Copies into other accounts are listed there, with that account's role.
        for c in p.copy.iter().filter(|c| c.account.is_none()) {
            copies.insert(c.region.clone());
        }
    }
    (sources.into_iter().collect(), copies.into_iter().collect())
}

/// Reads targets (volumes and/or instances, as the policies need; both when
/// `all_kinds`, for coverage reports) and existing policy backups.
pub async fn gather(
    ctx: &AwsContext,
    policies: &[PolicyConfig],
    default_region: &str,
    all_kinds: bool,
) -> Result<Inventory, AwsError> {
    let (sources, copies) = regions(policies, default_region);
    let want_volumes = all_kinds || policies.iter().any(|p| p.resource == ResourceKind::Volume);
    let want_instances = all_kinds
        || policies
            .iter()
            .any(|p| p.resource == ResourceKind::Instance);

    let targets: Vec<Vec<Target>> = stream::iter(sources.clone())
        .map(|region| async move {
            let ec2 = ctx.ec2_in(&region).await?;
            let mut out = Vec::new();
            if want_volumes {
                for v in ec2.list_volumes(&Default::default()).await? {
                    // A restore test's volume lives minutes and is deleted by autosnap: not a
                    // target, and not "unprotected".
                    if v.tags.contains_key(autosnap_core::restore_test::RUN_TAG) {
                        continue;
                    }
                    out.push(Target {
                        id: v.volume_id.clone(),
                        kind: ResourceKind::Volume,
                        region: region.clone(),
                        name: v.name.clone(),
                        tags: v.tags.clone(),
                        volume_ids: Vec::new(),
                    });
                }
            }
            if want_instances {
                for i in ec2.list_instances().await? {
                    out.push(Target {
                        name: i.tags.get("Name").cloned(),
                        id: i.instance_id.clone(),
                        kind: ResourceKind::Instance,
                        region: region.clone(),
                        tags: i.tags.clone(),
                        volume_ids: i.volumes.iter().map(|(_, v)| v.clone()).collect(),
                    });
                }
            }
            Ok::<_, AwsError>(out)
        })
        .buffered(REGION_CONCURRENCY)
        .try_collect()
        .await?;

    let all_regions: BTreeSet<String> = sources.into_iter().chain(copies).collect();
    let backups: Vec<Vec<ExistingBackup>> = stream::iter(all_regions)
        .map(|region| async move {
            let ec2 = ctx.ec2_in(&region).await?;
            backups_in(&ec2, policies, &region).await
        })
        .buffered(REGION_CONCURRENCY)
        .try_collect()
        .await?;

    Ok(Inventory {
        targets: targets.into_iter().flatten().collect(),
        backups: backups.into_iter().flatten().collect(),
    })
}

/// Every backup of a policy in one region: the snapshots carrying `autosnap:policy` (with
/// the AMIs using them) and, when AMI policies exist, the AMIs carrying it (with the
/// instances and launch templates using them).
async fn backups_in(
    ec2: &Ec2,
    policies: &[PolicyConfig],
    region: &str,
) -> Result<Vec<ExistingBackup>, AwsError> {
    // One listing of our AMIs answers "which AMIs use this snapshot" for every snapshot,
    // instead of one DescribeImages per 200 snapshots.
    let images = ec2.list_images(&[]).await?;
    let mut used_by: HashMap<String, Vec<String>> = HashMap::new();
    for image in &images {
        for snapshot in image.snapshot_ids() {
            used_by
                .entry(snapshot)
                .or_default()
                .push(image.image_id.clone());
        }
    }
    let mut builder = BackupBuilder::new(policies);
    let mut out = Vec::new();
    // Each snapshot becomes the planner's compact record as its page is read, so a
    // million of them never sit in memory in full.
    ec2.for_each_snapshot(
        &SnapshotQuery {
            tags: vec![(tags::POLICY.to_string(), None)],
            ..Default::default()
        },
        |s| {
            let in_use = used_by.remove(&s.snapshot_id).unwrap_or_default();
            out.push(builder.snapshot(&s, region, in_use));
        },
    )
    .await?;

    let ami_policies: BTreeSet<&str> = policies
        .iter()
        .filter(|p| p.kind == BackupKind::Ami)
        .map(|p| p.name.as_str())
        .collect();
    let ours: Vec<&ImageDetails> = images
        .iter()
        .filter(|i| {
            i.tags
                .get(tags::POLICY)
                .is_some_and(|p| ami_policies.contains(p.as_str()))
        })
        .collect();
    let users: Vec<Vec<String>> = stream::iter(&ours)
        .map(|image| async move {
            let users = ec2.image_users(&image.image_id).await?;
            Ok::<_, AwsError>(users.iter().map(ToString::to_string).collect())
        })
        .buffered(USERS_CONCURRENCY)
        .try_collect()
        .await?;
    for (image, users) in ours.into_iter().zip(users) {
        out.push(builder.image(image, region, users));
    }
    Ok(out)
}

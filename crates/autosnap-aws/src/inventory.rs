//! Reading what the policies need from the account: the candidate targets
//! (volumes and instances) in the policies' regions, and every backup
//! autosnap made for a policy (in the source and the copy regions), with the
//! AMIs that use them.

use std::collections::BTreeSet;

use autosnap_core::plan::{ExistingBackup, Inventory, Target};
use autosnap_core::policy::{PolicyConfig, ResourceKind};
use autosnap_core::tags;
use futures::stream::{self, StreamExt, TryStreamExt};

use crate::ec2::SnapshotQuery;
use crate::{AwsContext, AwsError};

/// Regions read at once.
const REGION_CONCURRENCY: usize = 4;

/// The regions policies back up from, and the regions they copy to.
pub fn regions(policies: &[PolicyConfig], default_region: &str) -> (Vec<String>, Vec<String>) {
    let mut sources = BTreeSet::new();
    let mut copies = BTreeSet::new();
    for p in policies {
        for r in p.regions_or(default_region) {
            sources.insert(r);
        }
        for c in &p.copy {
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
            let snaps = ec2
                .list_snapshots(&SnapshotQuery {
                    tags: vec![(tags::POLICY.to_string(), None)],
                    ..Default::default()
                })
                .await?;
            let ids: Vec<String> = snaps.iter().map(|s| s.snapshot_id.clone()).collect();
            let images = if ids.is_empty() {
                Vec::new()
            } else {
                ec2.images_using_snapshots(&ids).await?
            };
            Ok::<_, AwsError>(
                snaps
                    .into_iter()
                    .map(|s| ExistingBackup {
                        in_use_by: images
                            .iter()
                            .filter(|i| i.snapshot_ids.contains(&s.snapshot_id))
                            .map(|i| i.image_id.clone())
                            .collect(),
                        region: region.clone(),
                        snapshot: s,
                    })
                    .collect(),
            )
        })
        .buffered(REGION_CONCURRENCY)
        .try_collect()
        .await?;

    Ok(Inventory {
        targets: targets.into_iter().flatten().collect(),
        backups: backups.into_iter().flatten().collect(),
    })
}

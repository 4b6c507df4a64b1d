//! `autosnap volume list` and `autosnap volume create`.

use autosnap_aws::{NewVolume, VolumeQuery};
use autosnap_core::model::{SnapshotRef, Volume};
use autosnap_core::tags::{self, settable_tags, TagArg};
use chrono::Utc;
use serde::Serialize;

use crate::cli::{VolumeCreateArgs, VolumeListArgs};
use crate::commands::{report_interrupted, Env, Interrupt};
use crate::exit::{Exit, UsageError};
use crate::output;
use crate::progress::WaitProgress;

/// A volume with its newest snapshot: the JSON shape of `volume list`.
#[derive(Serialize)]
struct VolumeRow {
    #[serde(flatten)]
    volume: Volume,
    newest_snapshot: Option<SnapshotRef>,
}

fn tag_query(tags: &[TagArg]) -> Vec<(String, Option<String>)> {
    tags.iter()
        .map(|t| (t.key.clone(), t.value.clone()))
        .collect()
}

pub async fn list(env: &Env, args: &VolumeListArgs) -> anyhow::Result<Exit> {
    let ctx = env.connect().await?;
    let ec2 = ctx.ec2().await?;
    let volumes = ec2
        .list_volumes(&VolumeQuery {
            volume_ids: vec![],
            instance_id: args.instance.as_ref().map(|i| i.to_string()),
            tags: tag_query(&args.tags),
        })
        .await?;
    // An instance that does not exist is an error (as in the aws CLI), not an empty table.
    if let (Some(instance), true) = (&args.instance, volumes.is_empty()) {
        ec2.get_instance(instance.as_ref()).await?;
    }
    let ids: Vec<String> = volumes.iter().map(|v| v.volume_id.clone()).collect();
    let mut newest = ec2.newest_snapshots(&ids).await?;
    let rows: Vec<VolumeRow> = volumes
        .into_iter()
        .map(|v| VolumeRow {
            newest_snapshot: newest.remove(&v.volume_id),
            volume: v,
        })
        .collect();

    let now = Utc::now();
    output::emit(env.output, &rows, || {
        let mut t = output::table([
            "VOLUME ID",
            "NAME",
            "SIZE",
            "TYPE",
            "AZ",
            "STATE",
            "ATTACHED",
            "ENCRYPTED",
            "NEWEST SNAPSHOT",
            "AGE",
        ]);
        for r in &rows {
            let v = &r.volume;
            let attached: Vec<String> = v
                .attachments
                .iter()
                .map(|a| match &a.device {
                    Some(d) => format!("{}:{d}", a.instance_id),
                    None => a.instance_id.clone(),
                })
                .collect();
            t.add_row([
                v.volume_id.clone(),
                output::opt(&v.name),
                format!("{} GiB", v.size_gib),
                v.volume_type.clone(),
                v.availability_zone.clone(),
                v.state.clone(),
                if attached.is_empty() {
                    "-".into()
                } else {
                    attached.join(",")
                },
                output::yes_no(v.encrypted).into(),
                r.newest_snapshot
                    .as_ref()
                    .map(|s| s.snapshot_id.clone())
                    .unwrap_or_else(|| "none".into()),
                output::age(r.newest_snapshot.as_ref().and_then(|s| s.start_time), now),
            ]);
        }
        t
    })?;
    Ok(Exit::Success)
}

pub async fn create(env: &Env, args: &VolumeCreateArgs) -> anyhow::Result<Exit> {
    let mut user_tags = settable_tags(&args.tags)?;
    if let Some(size) = args.size {
        if size <= 0 {
            return Err(UsageError(format!("--size {size}: a volume needs at least 1 GiB")).into());
        }
    }
    let timeout = if args.wait.wait {
        Some(args.wait.wait_timeout)
    } else {
        None
    };
    let ctx = env.connect().await?;
    let ec2 = ctx.ec2().await?;
    let mut interrupt = timeout
        .filter(|_| !args.dry_run)
        .map(|_| Interrupt::listen())
        .transpose()?;

    // Check the snapshot first: a precise "does not exist" beats AWS's error,
    // and the size must not shrink below the snapshot's.
    let snap = ec2.get_snapshot(args.snapshot.as_str()).await?;
    if let (Some(want), Some(have)) = (args.size, snap.size_gib) {
        if want < have {
            return Err(UsageError(format!(
                "--size {want} is smaller than snapshot {} ({have} GiB): a volume cannot be smaller than its snapshot",
                snap.snapshot_id
            ))
            .into());
        }
    }
    if snap.storage_tier == autosnap_core::tier::StorageTier::Archive {
        // EC2 would refuse with a bare IncorrectState; say what to do instead.
        let restoring = ec2
            .snapshot_tier_status(std::slice::from_ref(&snap.snapshot_id))
            .await
            .ok()
            .and_then(|s| s.into_iter().next())
            .and_then(|s| s.last_operation)
            .is_some_and(|op| op.ends_with("restore-in-progress"));
        let id = &snap.snapshot_id;
        let what = if restoring {
            format!(
                "a restore of it is under way and can take up to {} hours; run this again when \
                 `autosnap snapshot list` shows its TIER as standard",
                autosnap_core::tier::RESTORE_HOURS_AT_MOST
            )
        } else {
            format!(
                "restore it first with `autosnap snapshot restore-tier {id} --days N` (N days in \
                 the standard tier, then archived again; or --permanent); a restore can take up \
                 to {} hours, then run this again",
                autosnap_core::tier::RESTORE_HOURS_AT_MOST
            )
        };
        anyhow::bail!(
            "snapshot {id} is in the archive tier, so no volume can be created from it: {what}"
        );
    }
    if !snap.is_completed() {
        tracing::warn!(
            "snapshot {} is {}: the volume will fill in as the snapshot completes",
            snap.snapshot_id,
            snap.state
        );
    }

    let mut all_tags = env.settings.config.file.defaults.tags.clone();
    all_tags.append(&mut user_tags);
    all_tags.insert(tags::MANAGED.into(), tags::MANAGED_VALUE.into());
    all_tags.insert(tags::SOURCE_SNAPSHOT.into(), snap.snapshot_id.clone());

    if args.dry_run {
        let plan = VolumePlan {
            dry_run: true,
            region: ec2.region().to_string(),
            snapshot_id: snap.snapshot_id.clone(),
            availability_zone: args.availability_zone.clone(),
            volume_type: args.volume_type.clone(),
            size_gib: args.size.or(snap.size_gib),
            iops: args.iops,
            throughput: args.throughput,
            // EC2 keeps an encrypted snapshot's volume encrypted.
            encrypted: args.encrypt || args.kms_key.is_some() || snap.encrypted,
            kms_key: args.kms_key.clone(),
            tags: all_tags,
        };
        super::print_plan(env, &plan, || {
            format!(
                "would create a volume from {} in {} ({}): {}, {}, {}\n  tags: {}",
                plan.snapshot_id,
                plan.availability_zone,
                plan.region,
                plan.size_gib
                    .map(|g| format!("{g} GiB"))
                    .unwrap_or_else(|| "the snapshot's size".into()),
                plan.volume_type
                    .clone()
                    .unwrap_or_else(|| "the default type".into()),
                match (&plan.kms_key, plan.encrypted) {
                    (Some(k), _) => format!("encrypted with {k}"),
                    (None, true) => "encrypted".to_string(),
                    (None, false) => "not encrypted".to_string(),
                },
                super::tag_line(&plan.tags)
            )
        })?;
        return Ok(Exit::Success);
    }

    let mut volume = ec2
        .create_volume(&NewVolume {
            snapshot_id: snap.snapshot_id.clone(),
            availability_zone: args.availability_zone.clone(),
            volume_type: args.volume_type.clone(),
            size_gib: args.size,
            iops: args.iops,
            throughput: args.throughput,
            encrypted: args.encrypt,
            kms_key_id: args.kms_key.clone(),
            tags: all_tags,
        })
        .await?;
    tracing::info!(
        "created volume {} from {} in {}",
        volume.volume_id,
        snap.snapshot_id,
        volume.availability_zone
    );

    let mut interrupted = false;
    if let (Some(timeout), Some(interrupt)) = (timeout, interrupt.as_mut()) {
        let progress = WaitProgress::new(&format!("volume {}", volume.volume_id), env.progress);
        match interrupt
            .or(ec2.wait_volume_available(&volume.volume_id, timeout, &progress))
            .await
        {
            Some(done) => volume = done?,
            None => {
                interrupted = true;
                let asked = tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    ec2.get_volume(&volume.volume_id),
                );
                if let Ok(Ok(now)) = asked.await {
                    volume = now;
                }
            }
        }
        progress.finish();
    }

    print_created(env, &volume)?;
    if interrupted {
        report_interrupted(
            &format!("volume {}", volume.volume_id),
            "autosnap volume list",
        );
        return Ok(Exit::Interrupted);
    }
    Ok(Exit::Success)
}

/// `volume create --dry-run`: the volume that would be created.
#[derive(Serialize)]
struct VolumePlan {
    dry_run: bool,
    region: String,
    snapshot_id: String,
    availability_zone: String,
    volume_type: Option<String>,
    size_gib: Option<i32>,
    iops: Option<i32>,
    throughput: Option<i32>,
    encrypted: bool,
    kms_key: Option<String>,
    tags: autosnap_core::tags::Tags,
}

fn print_created(env: &Env, volume: &Volume) -> anyhow::Result<()> {
    output::emit(env.output, volume, || {
        let mut t = output::table([
            "VOLUME ID",
            "SIZE",
            "TYPE",
            "AZ",
            "STATE",
            "ENCRYPTED",
            "FROM SNAPSHOT",
        ]);
        t.add_row([
            volume.volume_id.clone(),
            format!("{} GiB", volume.size_gib),
            volume.volume_type.clone(),
            volume.availability_zone.clone(),
            volume.state.clone(),
            output::yes_no(volume.encrypted).into(),
            output::opt(&volume.snapshot_id),
        ]);
        t
    })
}

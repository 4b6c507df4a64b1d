//! `autosnap ami create | from-snapshot | list | delete | metadata | store | restore`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use autosnap_aws::ami::{NewRegisteredImage, PollSchedule};
use autosnap_aws::ami_flow::{
    self, AmiWait, BackupImageRequest, ImageDeletion, ImageFlowError, ImageWait, ImageWaits,
    StoppedAt, StoredImageRestore,
};
use autosnap_aws::kms::check_encryption_key;
use autosnap_aws::rate::Ec2RateLimits;
use autosnap_aws::s3::{ServerSideEncryptionMode, S3};
use autosnap_aws::{AwsError, Ec2, VolumeQuery};
use autosnap_core::ami::{
    default_image_name, metadata_key, validate_image_name, AmiDeleteAction, AmiMetadata,
    AmiSummary, ImageDetails, RestoreSource, StoredImage,
};
use autosnap_core::ami_create::{intermediate_base, BackupImageNames};
use autosnap_core::tags::{self, settable_tags, Tags};
use chrono::Utc;
use serde::Serialize;

use crate::cli::{
    AmiCreateArgs, AmiDeleteArgs, AmiFromSnapshotArgs, AmiListArgs, AmiMetadataArgs,
    AmiRestoreArgs, AmiStoreArgs, MetadataStoreArgs, PollArgs,
};
use crate::commands::confirm::{self, Consent};
use crate::commands::{report_interrupted, Env, Interrupt};
use crate::exit::{Exit, UsageError};
use crate::output;
use crate::progress::WaitProgress;

/// Default interval between DescribeStoreImageTasks calls (0.5/s allowed).
const STORE_POLL: Duration = Duration::from_secs(5);
/// How long `ami create --encrypt` and `--metadata-bucket` wait without `--wait-timeout`.
const DEFAULT_IMAGE_WAIT: Duration = Duration::from_secs(2 * 3600);
/// What wrote a metadata document.
const GENERATOR: &str = concat!("autosnap ", env!("CARGO_PKG_VERSION"));

// ---- small helpers ----------------------------------------------------------------

/// `--poll-interval`, parsed (and checked positive) by clap.
fn poll_interval(args: &PollArgs) -> anyhow::Result<Option<Duration>> {
    Ok(args.poll_interval)
}

fn image_schedule(poll: Option<Duration>) -> PollSchedule {
    poll.map(PollSchedule::every)
        .unwrap_or(PollSchedule::IMAGES)
}

fn sse_mode(kms_key: &Option<String>) -> ServerSideEncryptionMode {
    match kms_key {
        Some(k) => ServerSideEncryptionMode::Kms(Some(k.clone())),
        None => ServerSideEncryptionMode::Aes256,
    }
}

fn sse_label(mode: &ServerSideEncryptionMode) -> String {
    match mode {
        ServerSideEncryptionMode::Aes256 => "AES256".into(),
        ServerSideEncryptionMode::Kms(Some(k)) => format!("aws:kms ({k})"),
        ServerSideEncryptionMode::Kms(None) => "aws:kms".into(),
    }
}

fn validate_name(name: &str) -> anyhow::Result<()> {
    validate_image_name(name).map_err(|e| UsageError(e.to_string()).into())
}

/// Fails when one of our AMIs already has the name, naming it and the fix.
async fn ensure_name_free(ec2: &Ec2, name: &str) -> anyhow::Result<()> {
    if let Some(other) = ec2.images_named(name).await?.first() {
        return Err(UsageError(format!(
            "AMI name '{name}' is already in use by AMI {} in {}: choose another --name, or deregister it first (`autosnap ami delete {}`)",
            other.image_id,
            ec2.region(),
            other.image_id
        ))
        .into());
    }
    Ok(())
}

/// The first free name among `base`, `base-2`, … (one DescribeImages each).
async fn free_name(ec2: &Ec2, base: &str) -> anyhow::Result<String> {
    Ok(ami_flow::free_name(ec2, base).await?)
}

/// Waits for an AMI with progress.
async fn wait_available(
    env: &Env,
    ec2: &Ec2,
    image_id: &str,
    timeout: Duration,
    poll: PollSchedule,
) -> Result<ImageDetails, AwsError> {
    let progress = WaitProgress::new(&format!("AMI {image_id}"), env.progress);
    ec2.wait_image_available(image_id, timeout, poll, &progress)
        .await
}

/// Waits for an AMI with progress; with an [`Interrupt`], Ctrl-C stops the wait (`None`).
struct CliWaits<'e> {
    env: &'e Env,
    interrupt: Option<Interrupt>,
    timeout: Duration,
    poll: PollSchedule,
}

impl ImageWaits for CliWaits<'_> {
    fn wait<'a>(&'a mut self, on: AmiWait<'a>) -> ImageWait<'a> {
        Box::pin(async move {
            let progress = WaitProgress::new(&on.what, self.env.progress);
            let wait = on
                .ec2
                .wait_image_available(on.image_id, self.timeout, self.poll, &progress);
            let waited = match self.interrupt.as_mut() {
                Some(interrupt) => interrupt.or(wait).await,
                None => Some(wait.await),
            };
            progress.finish();
            waited
        })
    }
}

/// A workflow's error for the CLI: a name taken meanwhile is the user's to fix (exit 2).
fn flow_error(e: ImageFlowError) -> anyhow::Error {
    match e {
        ImageFlowError::NameTaken { name, source } => UsageError(format!(
            "AMI name '{name}' was taken meanwhile ({source}): choose another --name"
        ))
        .into(),
        e => e.into(),
    }
}

// ---- metadata -------------------------------------------------------------------------

/// Collects the metadata document of an AMI.
async fn collect_metadata(ec2: &Ec2, image: &ImageDetails) -> anyhow::Result<AmiMetadata> {
    Ok(ec2
        .collect_image_metadata(image, GENERATOR, Utc::now())
        .await?)
}

/// Checks a bucket with an error that names it and the fix.
async fn check_bucket(s3: &S3, bucket: &str) -> anyhow::Result<()> {
    s3.check_bucket(bucket).await.map_err(|e| {
        let fix = match &e {
            AwsError::NotFound { .. } => format!(
                "create it in this region (`aws s3 mb s3://{bucket}`) or pass the right --bucket"
            ),
            AwsError::AccessDenied { .. } => format!(
                "the credentials may not use it: grant s3:ListBucket, s3:GetObject and s3:PutObject on it (`autosnap iam-policy --for ami --bucket {bucket}`)"
            ),
            _ => "check the bucket name and region".into(),
        };
        anyhow::Error::new(e).context(format!("cannot use S3 bucket {bucket}: {fix}"))
    })
}

/// Writes a metadata document with server-side encryption; returns its `s3://` URL.
async fn put_metadata(
    s3: &S3,
    bucket: &str,
    store: &MetadataStoreArgs,
    doc: &AmiMetadata,
) -> anyhow::Result<String> {
    let key = metadata_key(&store.prefix, &doc.image_id);
    let sse = sse_mode(&store.sse_kms_key);
    s3.put_json(bucket, &key, doc.to_json().into_bytes(), &sse)
        .await
        .with_context(|| format!("cannot write the metadata document to s3://{bucket}/{key}"))?;
    tracing::info!(
        "wrote metadata of {} to s3://{bucket}/{key} ({})",
        doc.image_id,
        sse_label(&sse)
    );
    Ok(format!("s3://{bucket}/{key}"))
}

// ---- create ---------------------------------------------------------------------------

#[derive(Serialize)]
struct CreateResult {
    image_id: String,
    name: Option<String>,
    state: String,
    instance_id: String,
    snapshot_ids: Vec<String>,
    encrypted: bool,
    /// The unencrypted AMI `--encrypt` copied from (removed again).
    intermediate_image_id: Option<String>,
    metadata: Option<String>,
    tags: Tags,
}

fn print_kv(env: &Env, value: &impl Serialize, rows: Vec<(&str, String)>) -> anyhow::Result<()> {
    output::emit(env.output, value, || {
        let mut t = output::table(["FIELD", "VALUE"]);
        for (k, v) in rows {
            t.add_row([k.to_string(), v]);
        }
        t
    })
}

pub async fn create(env: &Env, args: &AmiCreateArgs) -> anyhow::Result<Exit> {
    let user_tags = settable_tags(&args.tags)?;
    if let Some(n) = &args.name {
        validate_name(n)?;
    }
    let poll = image_schedule(poll_interval(&args.poll)?);
    let must_wait = args.wait.wait || args.encrypt || args.metadata_bucket.is_some();
    let timeout = if args.wait.wait {
        args.wait.wait_timeout
    } else {
        DEFAULT_IMAGE_WAIT
    };

    let ctx = env.connect().await?;
    let ec2 = ctx.ec2().await?;
    let instance_id = args.instance.to_string();
    let instance = ec2.get_instance(&instance_id).await?;

    // Everything that can be checked is checked before anything is made.
    if let Some(k) = &args.kms_key {
        check_encryption_key(&ctx, ec2.region(), k)
            .await
            .context("--kms-key is not usable for EBS encryption")?;
    }
    let s3 = match &args.metadata_bucket {
        Some(b) => {
            let s3 = S3::connect(&ctx, ec2.region()).await?;
            check_bucket(&s3, b).await?;
            Some(s3)
        }
        None => None,
    };
    let name = match &args.name {
        Some(n) => {
            ensure_name_free(&ec2, n).await?;
            n.clone()
        }
        None => {
            let base = default_image_name(
                &instance_id,
                instance.tags.get("Name").map(String::as_str),
                Utc::now(),
            );
            free_name(&ec2, &base).await?
        }
    };

    // The instance's own tags, then [defaults] tags, --tag, and ownership.
    let mut image_tags = tags::copyable_user_tags(&instance.tags);
    image_tags.extend(env.settings.config.file.defaults.tags.clone());
    image_tags.extend(user_tags);
    image_tags.insert(tags::MANAGED.into(), tags::MANAGED_VALUE.into());
    image_tags.insert(tags::SOURCE_INSTANCE.into(), instance_id.clone());
    let snapshot_tags = image_tags.clone();
    let description = args
        .description
        .clone()
        .unwrap_or_else(|| match instance.tags.get("Name") {
            Some(n) => format!("autosnap: {instance_id} ({n})"),
            None => format!("autosnap: {instance_id}"),
        });

    // With --encrypt and any unencrypted volume, the first AMI is an
    // intermediate and the encrypted copy gets the name.
    let names = ami_flow::backup_image_names(&ec2, &instance_id, name, args.encrypt).await?;
    if args.dry_run {
        let volumes = ec2
            .list_volumes(&VolumeQuery {
                instance_id: Some(instance_id.clone()),
                ..Default::default()
            })
            .await?;
        let plan = AmiCreatePlan {
            dry_run: true,
            region: ec2.region().to_string(),
            instance_id: instance_id.clone(),
            name: names.name.clone(),
            intermediate_name: names.intermediate.clone(),
            description,
            no_reboot: args.no_reboot,
            encrypt: args.encrypt,
            kms_key: args.kms_key.clone(),
            volumes: volumes
                .iter()
                .map(|v| PlannedVolume {
                    device_name: v
                        .attachments
                        .iter()
                        .find(|a| a.instance_id == instance_id)
                        .and_then(|a| a.device.clone()),
                    volume_id: v.volume_id.clone(),
                    size_gib: v.size_gib,
                    encrypted: v.encrypted,
                })
                .collect(),
            metadata: args.metadata_bucket.as_ref().map(|b| {
                format!(
                    "s3://{b}/{}",
                    metadata_key(&args.metadata_prefix, "<new AMI id>")
                )
            }),
            tags: image_tags,
        };
        super::print_plan(env, &plan, || {
            let mut text = format!(
                "would create AMI '{}' of {} in {} ({}): \"{}\"",
                plan.name,
                plan.instance_id,
                plan.region,
                if plan.no_reboot {
                    "no reboot: crash-consistent"
                } else {
                    "the instance reboots"
                },
                plan.description
            );
            for v in &plan.volumes {
                text.push_str(&format!(
                    "\n  snapshot of {} {} ({} GiB{})",
                    v.device_name.as_deref().unwrap_or("?"),
                    v.volume_id,
                    v.size_gib,
                    if v.encrypted { ", encrypted" } else { "" }
                ));
            }
            if let Some(first) = &plan.intermediate_name {
                text.push_str(&format!(
                    "\n  --encrypt: first as '{first}', then copied encrypted ({}) as '{}'; the unencrypted AMI is removed",
                    plan.kms_key.as_deref().unwrap_or("the account's EBS key"),
                    plan.name
                ));
            } else if plan.encrypt {
                text.push_str("\n  --encrypt: every volume is encrypted already, no copy needed");
            }
            if let Some(m) = &plan.metadata {
                text.push_str(&format!("\n  metadata document: {m}"));
            }
            text.push_str(&format!(
                "\n  tags (AMI and snapshots): {}",
                super::tag_line(&plan.tags)
            ));
            text
        })?;
        return Ok(Exit::Success);
    }
    // Whenever this command waits, Ctrl-C stops a wait with a report of what
    // exists and which steps were not done. Only waits are cut short: a
    // signal during a call (CopyImage, a cleanup, the metadata upload) is
    // kept and ends the next wait, if one follows (else the last steps
    // finish), so no step is left half done.
    let interrupt = must_wait.then(Interrupt::listen).transpose()?;
    // What a stop before each step leaves undone, for the report.
    let metadata_todo = args.metadata_bucket.as_ref().map(|b| {
        let prefix = if args.metadata_prefix.is_empty() {
            String::new()
        } else {
            format!(" --prefix {}", args.metadata_prefix)
        };
        move |image: &str| {
            format!(
                "the metadata document was not written: once {image} is available, \
                 `autosnap ami metadata {image} --bucket {b}{prefix}`"
            )
        }
    });
    let req = BackupImageRequest {
        instance_id: instance_id.clone(),
        names,
        description,
        no_reboot: args.no_reboot,
        encrypt: args.encrypt,
        kms_key: args.kms_key.clone(),
        image_tags,
        snapshot_tags,
        wait: must_wait,
    };
    let mut waits = CliWaits {
        env,
        interrupt,
        timeout,
        poll,
    };
    let made = match ami_flow::create_backup_image(
        &ec2,
        &req,
        &Ec2RateLimits::default(),
        &mut waits,
    )
    .await
    {
        Ok(made) => made,
        Err(ImageFlowError::Stopped(stop)) => {
            let (image_id, copied_from, at) = (stop.image_id, stop.copied_from, stop.at);
            let mut not_done = Vec::new();
            match (at, &copied_from) {
                (StoppedAt::EncryptedCopy, Some(first)) => not_done.push(format!(
                    "the unencrypted AMI {first} was not removed: once {image_id} is \
                     available, `autosnap ami delete {first}`"
                )),
                _ if args.encrypt => not_done.push(format!(
                    "no encrypted copy was made (--encrypt): {image_id} keeps the volumes' \
                     encryption; to start over, `autosnap ami delete {image_id}` and run this \
                     command again"
                )),
                _ => {}
            }
            not_done.extend(metadata_todo.as_ref().map(|m| m(&image_id)));
            return interrupted_create(
                env,
                &ec2,
                &image_id,
                &instance_id,
                copied_from.as_deref(),
                &not_done,
            )
            .await;
        }
        Err(e) => return Err(flow_error(e)),
    };
    let image = made.image;
    let intermediate = made.intermediate_image_id;
    let mut partial = Vec::new();
    if let (Some(c), Some(first)) = (&made.incomplete_cleanup, &intermediate) {
        partial.push(format!(
            "the encrypted AMI {} is ready, but removing the unencrypted {first} was incomplete: {}",
            image.image_id,
            c.summary()
        ));
    }

    let mut metadata = None;
    if let (Some(bucket), Some(s3)) = (&args.metadata_bucket, &s3) {
        let store = MetadataStoreArgs {
            prefix: args.metadata_prefix.clone(),
            sse_kms_key: args.sse_kms_key.clone(),
        };
        let written = async {
            let doc = collect_metadata(&ec2, &image).await?;
            put_metadata(s3, bucket, &store, &doc).await
        }
        .await;
        match written {
            Ok(url) => metadata = Some(url),
            Err(e) => partial.push(format!(
                "AMI {} is ready, but its metadata was not stored: {e:#}",
                image.image_id
            )),
        }
    }

    let result = CreateResult {
        image_id: image.image_id.clone(),
        name: image.name.clone(),
        state: image.state.clone(),
        instance_id: instance_id.clone(),
        snapshot_ids: image.snapshot_ids(),
        encrypted: image.is_encrypted(),
        intermediate_image_id: intermediate.clone(),
        metadata: metadata.clone(),
        tags: image.tags.clone(),
    };
    let mut rows = create_rows(&result);
    rows.push(("ENCRYPTED", output::yes_no(result.encrypted).into()));
    rows.push(("METADATA", output::opt(&result.metadata)));
    print_kv(env, &result, rows)?;
    if partial.is_empty() {
        Ok(Exit::Success)
    } else {
        for p in &partial {
            crate::output::report_error("failed", &p.to_string(), Some(&result.image_id));
        }
        Ok(Exit::Partial)
    }
}

/// `ami create --dry-run`: the AMI that would be created.
#[derive(Serialize)]
struct AmiCreatePlan {
    dry_run: bool,
    region: String,
    instance_id: String,
    /// The name the (final) AMI gets.
    name: String,
    /// With --encrypt and an unencrypted volume: the first AMI's name (removed after the copy).
    intermediate_name: Option<String>,
    description: String,
    no_reboot: bool,
    encrypt: bool,
    kms_key: Option<String>,
    volumes: Vec<PlannedVolume>,
    /// Where the metadata document would go (`<new AMI id>` stands for the id).
    metadata: Option<String>,
    tags: Tags,
}

#[derive(Serialize)]
struct PlannedVolume {
    device_name: Option<String>,
    volume_id: String,
    size_gib: i32,
    encrypted: bool,
}

/// `ami from-snapshot --dry-run`: the AMI that would be registered.
#[derive(Serialize)]
struct RegisterPlan {
    dry_run: bool,
    region: String,
    name: String,
    description: String,
    snapshot_id: String,
    root_device_name: String,
    volume_size_gib: i32,
    volume_type: String,
    architecture: String,
    boot_mode: Option<String>,
    ena_support: bool,
    encrypted: bool,
    tags: Tags,
}

/// The table rows every `ami create` result shows (a finished create adds its encryption
/// and metadata).
fn create_rows(result: &CreateResult) -> Vec<(&'static str, String)> {
    vec![
        ("AMI", result.image_id.clone()),
        ("NAME", output::opt(&result.name)),
        ("STATE", result.state.clone()),
        ("INSTANCE", result.instance_id.clone()),
        ("SNAPSHOTS", result.snapshot_ids.join(", ")),
    ]
}

/// After Ctrl-C during a wait of `ami create`: the AMI waited for as EC2
/// has it now, printed like a finished create (with the unencrypted AMI it
/// is being copied from, when that still exists), the steps not done, and
/// exit 130.
async fn interrupted_create(
    env: &Env,
    ec2: &Ec2,
    image_id: &str,
    instance_id: &str,
    copied_from: Option<&str>,
    not_done: &[String],
) -> anyhow::Result<Exit> {
    let now = tokio::time::timeout(Duration::from_secs(5), ec2.get_image(image_id)).await;
    let (name, state, snapshot_ids, encrypted, tags) = match now {
        Ok(Ok(i)) => (
            i.name.clone(),
            i.state.clone(),
            i.snapshot_ids(),
            i.is_encrypted(),
            i.tags.clone(),
        ),
        _ => (None, "pending".into(), vec![], false, Default::default()),
    };
    let result = CreateResult {
        image_id: image_id.to_string(),
        name,
        state,
        instance_id: instance_id.to_string(),
        snapshot_ids,
        encrypted,
        intermediate_image_id: copied_from.map(str::to_string),
        metadata: None,
        tags,
    };
    let mut rows = create_rows(&result);
    if let Some(from) = copied_from {
        rows.push(("COPIED FROM", format!("{from} (unencrypted, not removed)")));
    }
    print_kv(env, &result, rows)?;
    super::report_interrupted_with(&format!("AMI {image_id}"), "autosnap ami list", not_done);
    Ok(Exit::Interrupted)
}

// ---- from-snapshot --------------------------------------------------------------------------

pub async fn from_snapshot(env: &Env, args: &AmiFromSnapshotArgs) -> anyhow::Result<Exit> {
    validate_name(&args.name)?;
    let user_tags = settable_tags(&args.tags)?;
    if !args.root_device_name.starts_with("/dev/") {
        return Err(UsageError(format!(
            "--root-device-name '{}' must be a device name such as /dev/xvda or /dev/sda1",
            args.root_device_name
        ))
        .into());
    }
    let timeout = if args.wait.wait {
        Some(args.wait.wait_timeout)
    } else {
        None
    };
    let ctx = env.connect().await?;
    let ec2 = ctx.ec2().await?;
    let snap_id = args.snapshot.to_string();
    let snap = ec2.get_snapshot(&snap_id).await?;
    if !snap.is_completed() {
        return Err(UsageError(format!(
            "snapshot {snap_id} is {}: an AMI can only be registered from a completed snapshot",
            snap.state
        ))
        .into());
    }
    let snap_size = snap.size_gib.unwrap_or(8);
    let size = match args.size {
        Some(s) if s < snap_size => {
            return Err(UsageError(format!(
                "--size {s} is smaller than snapshot {snap_id} ({snap_size} GiB): the root volume cannot be smaller than its snapshot"
            ))
            .into())
        }
        Some(s) => s,
        None => snap_size,
    };
    ensure_name_free(&ec2, &args.name).await?;
    let boot_mode = args.boot_mode.map(|b| b.as_str().to_string()).or_else(|| {
        (args.architecture == crate::cli::Architecture::Arm64).then(|| "uefi".to_string())
    });
    let mut tags = env.settings.config.file.defaults.tags.clone();
    tags.extend(user_tags);
    tags.insert(tags::MANAGED.into(), tags::MANAGED_VALUE.into());
    tags.insert(tags::SOURCE_SNAPSHOT.into(), snap_id.clone());
    let description = args
        .description
        .clone()
        .unwrap_or_else(|| format!("autosnap: registered from {snap_id}"));
    if args.dry_run {
        let plan = RegisterPlan {
            dry_run: true,
            region: ec2.region().to_string(),
            name: args.name.clone(),
            description,
            snapshot_id: snap_id.clone(),
            root_device_name: args.root_device_name.clone(),
            volume_size_gib: size,
            volume_type: args.volume_type.clone(),
            architecture: args.architecture.as_str().to_string(),
            boot_mode,
            ena_support: !args.no_ena,
            encrypted: snap.encrypted,
            tags,
        };
        super::print_plan(env, &plan, || {
            format!(
                "would register AMI '{}' in {} from {}: \"{}\"\n  root {} {} GiB {}{}, {}{}{}\n  tags: {}",
                plan.name,
                plan.region,
                plan.snapshot_id,
                plan.description,
                plan.root_device_name,
                plan.volume_size_gib,
                plan.volume_type,
                if plan.encrypted { " (encrypted)" } else { "" },
                plan.architecture,
                plan.boot_mode
                    .as_ref()
                    .map(|b| format!(", boot mode {b}"))
                    .unwrap_or_default(),
                if plan.ena_support { ", ENA" } else { ", no ENA" },
                super::tag_line(&plan.tags)
            )
        })?;
        return Ok(Exit::Success);
    }
    let mut interrupt = timeout.map(|_| Interrupt::listen()).transpose()?;
    let image_id = ec2
        .register_image(&NewRegisteredImage {
            name: args.name.clone(),
            description,
            snapshot_id: snap_id.clone(),
            root_device_name: args.root_device_name.clone(),
            volume_size_gib: size,
            volume_type: args.volume_type.clone(),
            architecture: args.architecture.as_str().to_string(),
            boot_mode,
            ena_support: !args.no_ena,
            delete_on_termination: true,
            tags,
        })
        .await?;
    tracing::info!("registered AMI {image_id} ({}) from {snap_id}", args.name);
    let image = match (timeout, interrupt.as_mut()) {
        (Some(t), Some(interrupt)) => {
            match interrupt
                .or(wait_available(
                    env,
                    &ec2,
                    &image_id,
                    t,
                    PollSchedule::IMAGES,
                ))
                .await
            {
                Some(waited) => waited?,
                None => {
                    // The AMI as EC2 has it now (or as registered, if EC2 is slow to say).
                    let now =
                        tokio::time::timeout(Duration::from_secs(5), ec2.get_image(&image_id))
                            .await;
                    let summary = match now {
                        Ok(Ok(i)) => AmiSummary::from(&i),
                        _ => AmiSummary {
                            image_id: image_id.clone(),
                            name: Some(args.name.clone()),
                            state: "pending".into(),
                            creation_date: None,
                            architecture: Some(args.architecture.as_str().to_string()),
                            snapshot_ids: vec![],
                            encrypted: snap.encrypted,
                            tags: Tags::new(),
                            managed: true,
                        },
                    };
                    print_registered(env, &summary)?;
                    report_interrupted(&format!("AMI {image_id}"), "autosnap ami list");
                    return Ok(Exit::Interrupted);
                }
            }
        }
        _ => ec2.get_image(&image_id).await?,
    };
    print_registered(env, &AmiSummary::from(&image))?;
    Ok(Exit::Success)
}

/// `ami from-snapshot`'s result: the AMI as EC2 has it.
fn print_registered(env: &Env, summary: &AmiSummary) -> anyhow::Result<()> {
    print_kv(
        env,
        summary,
        vec![
            ("AMI", summary.image_id.clone()),
            ("NAME", output::opt(&summary.name)),
            ("STATE", summary.state.clone()),
            ("ARCHITECTURE", output::opt(&summary.architecture)),
            ("SNAPSHOTS", summary.snapshot_ids.join(", ")),
            ("ENCRYPTED", output::yes_no(summary.encrypted).into()),
        ],
    )
}

// ---- list ---------------------------------------------------------------------------------

pub async fn list(env: &Env, args: &AmiListArgs) -> anyhow::Result<Exit> {
    if args.recycle_bin {
        return super::recycle_bin::list_images(env).await;
    }
    let mut filters: Vec<(String, Option<String>)> = args
        .tags
        .iter()
        .map(|t| (t.key.clone(), t.value.clone()))
        .collect();
    if args.managed {
        filters.push((tags::MANAGED.into(), Some(tags::MANAGED_VALUE.into())));
    }
    let ctx = env.connect().await?;
    let ec2 = ctx.ec2().await?;
    let images = ec2.list_images(&filters).await?;
    let rows: Vec<AmiSummary> = images.iter().map(AmiSummary::from).collect();
    output::emit(env.output, &rows, || {
        let mut t = output::table([
            "AMI ID",
            "NAME",
            "STATE",
            "CREATED",
            "ARCH",
            "SNAPSHOTS",
            "ENCRYPTED",
            "MANAGED",
        ]);
        for r in &rows {
            t.add_row([
                r.image_id.clone(),
                output::opt(&r.name),
                r.state.clone(),
                output::opt(&r.creation_date),
                output::opt(&r.architecture),
                r.snapshot_ids.join(","),
                output::yes_no(r.encrypted).into(),
                output::yes_no(r.managed).into(),
            ]);
        }
        t
    })?;
    Ok(Exit::Success)
}

// ---- delete ---------------------------------------------------------------------------------

#[derive(Serialize)]
struct KeptOut {
    snapshot_id: String,
    reason: String,
}

#[derive(Serialize)]
struct FailedOut {
    snapshot_id: String,
    error: String,
}

#[derive(Serialize)]
struct DeleteResult {
    image_id: String,
    name: Option<String>,
    /// `deregistered`, `would_deregister`, `refused`, `missing`, `failed`, or
    /// `partial` (deregistered, but some snapshots could not be deleted).
    result: &'static str,
    reason: String,
    snapshots_deleted: Vec<String>,
    snapshots_kept: Vec<KeptOut>,
    snapshots_failed: Vec<FailedOut>,
}

/// `plan: deregister ami-… (name): reason; delete snap-…; keep snap-… (why)`.
fn ami_plan_line(d: &autosnap_core::ami::AmiDeleteDecision) -> String {
    let what = match d.action {
        AmiDeleteAction::Deregister => "deregister",
        AmiDeleteAction::Refuse => "refuse",
        AmiDeleteAction::Missing => "missing",
    };
    let mut line = format!("plan: {what} {}", d.image_id);
    if let Some(n) = &d.name {
        line.push_str(&format!(" ({n})"));
    }
    line.push_str(&format!(": {}", d.reason));
    if !d.delete_snapshots.is_empty() {
        line.push_str(&format!("; delete {}", d.delete_snapshots.join(", ")));
    }
    for k in &d.keep_snapshots {
        line.push_str(&format!("; keep {} ({})", k.snapshot_id, k.reason));
    }
    line
}

pub async fn delete(env: &Env, args: &AmiDeleteArgs) -> anyhow::Result<Exit> {
    let ctx = env.connect().await?;
    let ec2 = ctx.ec2().await?;
    let requested: Vec<String> = args.ids.iter().map(|i| i.to_string()).collect();
    let plan =
        ami_flow::plan_image_deletes(&ec2, &requested, args.force, args.keep_snapshots).await?;

    // The plan first, then the work.
    let plan_lines: Vec<String> = plan.iter().map(ami_plan_line).collect();
    for line in &plan_lines {
        tracing::info!("{line}");
    }
    // At a terminal the same plan is shown and a question asked.
    let deregisters: Vec<_> = plan
        .iter()
        .filter(|d| d.action == AmiDeleteAction::Deregister)
        .collect();
    let snapshots: usize = deregisters.iter().map(|d| d.delete_snapshots.len()).sum();
    let mut prompt = format!(
        "Deregister {}",
        confirm::count(deregisters.len(), "AMI", "AMIs")
    );
    if snapshots > 0 {
        prompt.push_str(&format!(
            " and delete {}",
            confirm::count(snapshots, "snapshot", "snapshots")
        ));
    }
    prompt.push('?');
    let question = confirm::Question {
        skip: args.yes || args.dry_run,
        deletes: deregisters.len(),
        plan: plan_lines.join("\n"),
        prompt,
    };
    if question.ask().await? == Consent::Refused {
        return Ok(confirm::DECLINED);
    }

    let done = if args.dry_run {
        BTreeMap::new()
    } else {
        ami_flow::delete_images(&ec2, &plan, &Ec2RateLimits::default()).await
    };

    let results: Vec<DeleteResult> = plan
        .into_iter()
        .map(|d| {
            let kept = d
                .keep_snapshots
                .iter()
                .map(|k| KeptOut {
                    snapshot_id: k.snapshot_id.clone(),
                    reason: k.reason.clone(),
                })
                .collect();
            let mut r = DeleteResult {
                image_id: d.image_id.clone(),
                name: d.name.clone(),
                result: "",
                reason: d.reason.clone(),
                snapshots_deleted: Vec::new(),
                snapshots_kept: kept,
                snapshots_failed: Vec::new(),
            };
            r.result = match d.action {
                AmiDeleteAction::Missing => "missing",
                AmiDeleteAction::Refuse => "refused",
                AmiDeleteAction::Deregister if args.dry_run => {
                    r.snapshots_deleted = d.delete_snapshots.clone();
                    "would_deregister"
                }
                AmiDeleteAction::Deregister => match done.get(&d.image_id) {
                    Some(ImageDeletion {
                        deregistered: Err(e),
                        ..
                    }) => {
                        r.reason = e.clone();
                        "failed"
                    }
                    done => {
                        for (snap, res) in done.iter().flat_map(|x| &x.snapshots) {
                            match res {
                                Ok(()) => r.snapshots_deleted.push(snap.clone()),
                                Err(e) => r.snapshots_failed.push(FailedOut {
                                    snapshot_id: snap.clone(),
                                    error: e.clone(),
                                }),
                            }
                        }
                        if r.snapshots_failed.is_empty() {
                            "deregistered"
                        } else {
                            "partial"
                        }
                    }
                },
            };
            r
        })
        .collect();

    output::emit(env.output, &results, || {
        let mut t = output::table(["AMI ID", "RESULT", "SNAPSHOTS DELETED", "KEPT", "REASON"]);
        for r in &results {
            let kept: Vec<String> = r
                .snapshots_kept
                .iter()
                .map(|k| format!("{} ({})", k.snapshot_id, k.reason))
                .collect();
            let mut reason = r.reason.clone();
            for f in &r.snapshots_failed {
                reason.push_str(&format!("; cannot delete {}: {}", f.snapshot_id, f.error));
            }
            t.add_row([
                r.image_id.clone(),
                r.result.replace('_', " "),
                if r.snapshots_deleted.is_empty() {
                    "-".into()
                } else {
                    r.snapshots_deleted.join(", ")
                },
                if kept.is_empty() {
                    "-".into()
                } else {
                    kept.join(", ")
                },
                reason,
            ]);
        }
        t
    })?;
    let ok = results
        .iter()
        .filter(|r| matches!(r.result, "deregistered" | "would_deregister"))
        .count();
    let bad = results.len() - ok;
    if bad > 0 {
        crate::output::report_failed_items(&format!(
            "{} {ok} of {} AMI(s); {bad} not (see {})",
            if args.dry_run {
                "would deregister"
            } else {
                "deregistered"
            },
            results.len(),
            crate::output::field_hint(&["RESULT", "REASON"])
        ));
    }
    Ok(Exit::from_counts(ok, bad))
}

// ---- metadata -----------------------------------------------------------------------------------

#[derive(Serialize)]
struct StoredMetadata {
    image_id: String,
    bucket: String,
    key: String,
    server_side_encryption: String,
}

pub async fn metadata(env: &Env, args: &AmiMetadataArgs) -> anyhow::Result<Exit> {
    let ctx = env.connect().await?;
    let ec2 = ctx.ec2().await?;
    let image = ec2.get_image(args.ami.as_str()).await?;
    let mut doc = collect_metadata(&ec2, &image).await?;
    let Some(bucket) = &args.bucket else {
        // The document is JSON whatever -o says.
        output::print(&doc.to_json());
        return Ok(Exit::Success);
    };
    let s3 = S3::connect(&ctx, ec2.region()).await?;
    check_bucket(&s3, bucket).await?;
    // Keep where a stored image is when refreshing the document.
    let key = metadata_key(&args.store.prefix, &doc.image_id);
    if let Ok(bytes) = s3.get(bucket, &key).await {
        if let Ok(old) = AmiMetadata::from_json(&bytes) {
            if old.image_id == doc.image_id {
                doc.stored_image = old.stored_image;
            }
        }
    }
    let url = put_metadata(&s3, bucket, &args.store, &doc).await?;
    let result = StoredMetadata {
        image_id: doc.image_id.clone(),
        bucket: bucket.clone(),
        key: key.clone(),
        server_side_encryption: sse_label(&sse_mode(&args.store.sse_kms_key)),
    };
    print_kv(
        env,
        &result,
        vec![
            ("AMI", result.image_id.clone()),
            ("METADATA", url),
            ("ENCRYPTION", result.server_side_encryption.clone()),
        ],
    )?;
    Ok(Exit::Success)
}

// ---- store ---------------------------------------------------------------------------------------

#[derive(Serialize)]
struct StoreResult {
    image_id: String,
    bucket: String,
    object_key: String,
    /// Null when the command stopped before writing the document.
    metadata_key: Option<String>,
    state: String,
}

/// `ami store --dry-run`: what would be stored where.
#[derive(Serialize)]
struct StorePlan {
    dry_run: bool,
    region: String,
    image_id: String,
    name: Option<String>,
    bucket: String,
    object_key: String,
    metadata_key: String,
    object_tags: Tags,
    snapshot_ids: Vec<String>,
}

pub async fn store(env: &Env, args: &AmiStoreArgs) -> anyhow::Result<Exit> {
    let object_tags = settable_tags(&args.object_tags)?;
    let timeout = args.wait_timeout;
    let interval = poll_interval(&args.poll)?.unwrap_or(STORE_POLL);
    let ctx = env.connect().await?;
    let ec2 = ctx.ec2().await?;
    let image_id = args.ami.to_string();
    let image = ec2.get_image(&image_id).await?;
    if image.state != "available" {
        return Err(UsageError(format!(
            "AMI {image_id} is {}: only available AMIs can be stored (wait for it, e.g. `ami create --wait`)",
            image.state
        ))
        .into());
    }
    let s3 = S3::connect(&ctx, ec2.region()).await?;
    check_bucket(&s3, &args.bucket).await?;
    if args.dry_run {
        let plan = StorePlan {
            dry_run: true,
            region: ec2.region().to_string(),
            image_id: image_id.clone(),
            name: image.name.clone(),
            bucket: args.bucket.clone(),
            // CreateStoreImageTask names the object after the AMI.
            object_key: format!("{image_id}.bin"),
            metadata_key: metadata_key(&args.store.prefix, &image_id),
            object_tags,
            snapshot_ids: image.snapshot_ids(),
        };
        super::print_plan(env, &plan, || {
            format!(
                "would store AMI {} ({}) with its snapshots {} as s3://{}/{}, then its metadata \
                 document as s3://{}/{} ({})\n  object tags: {}",
                plan.image_id,
                output::opt(&plan.name),
                plan.snapshot_ids.join(", "),
                plan.bucket,
                plan.object_key,
                plan.bucket,
                plan.metadata_key,
                sse_label(&sse_mode(&args.store.sse_kms_key)),
                super::tag_line(&plan.object_tags)
            )
        })?;
        return Ok(Exit::Success);
    }
    let mut interrupt = Interrupt::listen()?;
    let object_key = ec2
        .create_store_image_task(&image_id, &args.bucket, &object_tags)
        .await
        .with_context(|| format!("cannot start storing {image_id} in s3://{}", args.bucket))?;
    tracing::info!("storing {image_id} as s3://{}/{object_key}", args.bucket);
    let progress = WaitProgress::new(&format!("storing {image_id}"), env.progress);
    let task = interrupt
        .or(ec2.wait_store_image_task(&image_id, interval, timeout, &progress))
        .await;
    drop(progress);
    let Some(task) = task else {
        let state = tokio::time::timeout(Duration::from_secs(5), ec2.store_image_task(&image_id))
            .await
            .ok()
            .and_then(Result::ok)
            .flatten()
            .map_or_else(|| "InProgress".to_string(), |t| t.state);
        let result = StoreResult {
            image_id: image_id.clone(),
            bucket: args.bucket.clone(),
            object_key: object_key.clone(),
            metadata_key: None,
            state,
        };
        print_store_result(env, &result, "not written".into())?;
        super::report_interrupted_with(
            &format!("the store task of {image_id}"),
            &format!("aws ec2 describe-store-image-tasks --image-ids {image_id}"),
            &[format!(
                "the metadata document was not written, so a restore from the object gets no \
                 original tags: once the task has completed, run `autosnap ami store {image_id} \
                 --bucket {}` again",
                args.bucket
            )],
        );
        return Ok(Exit::Interrupted);
    };
    let task = task.with_context(|| {
        format!(
            "storing {image_id} in s3://{} did not complete; no metadata was written",
            args.bucket
        )
    })?;

    let mut doc = collect_metadata(&ec2, &image).await?;
    doc.stored_image = Some(StoredImage {
        bucket: args.bucket.clone(),
        object_key: task.object_key.clone().unwrap_or(object_key.clone()),
        stored_at: Utc::now(),
    });
    let url = put_metadata(&s3, &args.bucket, &args.store, &doc)
        .await
        .context("the AMI object is stored, but without its metadata document `ami restore` cannot use it: run `autosnap ami store` again")?;
    let result = StoreResult {
        image_id: image_id.clone(),
        bucket: args.bucket.clone(),
        object_key: doc.stored()?.object_key.clone(),
        metadata_key: Some(metadata_key(&args.store.prefix, &image_id)),
        state: task.state.clone(),
    };
    print_store_result(env, &result, url)?;
    Ok(Exit::Success)
}

fn print_store_result(env: &Env, result: &StoreResult, metadata: String) -> anyhow::Result<()> {
    print_kv(
        env,
        result,
        vec![
            ("AMI", result.image_id.clone()),
            (
                "OBJECT",
                format!("s3://{}/{}", result.bucket, result.object_key),
            ),
            ("METADATA", metadata),
            ("STATE", result.state.clone()),
        ],
    )
}

// ---- restore ---------------------------------------------------------------------------------------

#[derive(Serialize)]
struct RestoreResult {
    source_image_id: String,
    image_id: String,
    name: Option<String>,
    state: String,
    snapshot_ids: Vec<String>,
    encrypted: bool,
    /// The unencrypted restored AMI `--encrypt` copied from (removed again).
    intermediate_image_id: Option<String>,
    tags: Tags,
}

pub async fn restore(env: &Env, args: &AmiRestoreArgs) -> anyhow::Result<Exit> {
    let timeout = args.wait_timeout;
    let poll = image_schedule(poll_interval(&args.poll)?);
    if let Some(n) = &args.name {
        validate_name(n)?;
    }
    let meta_key = match (&args.ami, &args.key) {
        (Some(ami), _) => metadata_key(&args.prefix, ami.as_str()),
        (None, Some(key)) => match RestoreSource::from_key(key).map_err(UsageError)? {
            RestoreSource::Metadata { key } => key,
            RestoreSource::StoredImage { image_id } => metadata_key(&args.prefix, &image_id),
        },
        (None, None) => unreachable!("clap requires --ami or --key"),
    };
    let ctx = env.connect().await?;
    let ec2 = ctx.ec2().await?;
    let s3 = S3::connect(&ctx, ec2.region()).await?;
    check_bucket(&s3, &args.bucket).await?;

    let bytes = s3.get(&args.bucket, &meta_key).await.map_err(|e| {
        let fix = if e.is_not_found() {
            format!(
                "no metadata document there: store the AMI with `autosnap ami store AMI --bucket {}` (it writes one), or give the --prefix it was stored under",
                args.bucket
            )
        } else {
            "cannot read it".to_string()
        };
        anyhow::Error::new(e).context(format!(
            "cannot restore from s3://{}/{meta_key}: {fix}",
            args.bucket
        ))
    })?;
    let doc = AmiMetadata::from_json(&bytes)
        .with_context(|| format!("s3://{}/{meta_key} is not usable", args.bucket))?;
    let stored = doc.stored()?.clone();
    // The object is looked for in the bucket given (stores may be copied
    // between buckets together with their metadata).
    let object_key = stored.object_key.clone();
    let object_url = format!("s3://{}/{object_key}", args.bucket);
    if !s3.exists(&args.bucket, &object_key).await? {
        return Err(anyhow::anyhow!(
            "the stored AMI object {object_url} does not exist (the metadata says {} was stored at {}): store it again with `autosnap ami store {} --bucket {}`",
            doc.image_id,
            stored.stored_at.format("%Y-%m-%d %H:%M UTC"),
            doc.image_id,
            args.bucket
        ));
    }

    if let Some(k) = &args.kms_key {
        check_encryption_key(&ctx, ec2.region(), k)
            .await
            .context("--kms-key is not usable for EBS encryption")?;
    }
    let original_name = doc
        .name
        .clone()
        .unwrap_or_else(|| format!("autosnap-restore-{}", doc.image_id));
    let name = match &args.name {
        Some(n) => {
            ensure_name_free(&ec2, n).await?;
            n.clone()
        }
        None => {
            if ec2.images_named(&original_name).await?.is_empty() {
                original_name.clone()
            } else {
                let n = free_name(&ec2, &format!("{original_name}-restored")).await?;
                tracing::info!("the original name '{original_name}' is in use: restoring as '{n}'");
                n
            }
        }
    };
    // With --encrypt the restored AMI is an intermediate and its encrypted copy gets the name.
    let names = BackupImageNames {
        intermediate: match args.encrypt {
            true => Some(free_name(&ec2, &intermediate_base(&name)).await?),
            false => None,
        },
        name,
    };
    if args.dry_run {
        let plan = RestorePlan {
            dry_run: true,
            region: ec2.region().to_string(),
            source_image_id: doc.image_id.clone(),
            object: object_url.clone(),
            name: names.name.clone(),
            intermediate_name: names.intermediate.clone(),
            encrypt: args.encrypt,
            kms_key: args.kms_key.clone(),
            tags: doc.restore_image_tags(),
        };
        super::print_plan(env, &plan, || {
            let mut text = format!(
                "would restore AMI {} from {} in {} as '{}'",
                plan.source_image_id, plan.object, plan.region, plan.name
            );
            if let Some(first) = &plan.intermediate_name {
                text.push_str(&format!(
                    "\n  --encrypt: restored first as '{first}', then copied encrypted ({}); the unencrypted AMI is removed",
                    plan.kms_key.as_deref().unwrap_or("the account's EBS key")
                ));
            }
            text.push_str(&format!("\n  tags: {}", super::tag_line(&plan.tags)));
            text
        })?;
        return Ok(Exit::Success);
    }
    let req = StoredImageRestore {
        bucket: args.bucket.clone(),
        object_key,
        names,
        encrypt: args.encrypt,
        kms_key: args.kms_key.clone(),
        doc: &doc,
    };
    let mut waits = CliWaits {
        env,
        interrupt: Some(Interrupt::listen()?),
        timeout,
        poll,
    };
    let made =
        match ami_flow::restore_stored_image(&ec2, &req, &Ec2RateLimits::default(), &mut waits)
            .await
        {
            Ok(made) => made,
            Err(ImageFlowError::Stopped(stop)) => {
                let (image_id, copied_from, at) = (stop.image_id, stop.copied_from, stop.at);
                let not_done = match (at, &copied_from) {
                    (StoppedAt::EncryptedCopy, Some(first)) => vec![
                        format!(
                            "the unencrypted restored AMI {first} was not removed: once \
                             {image_id} is available, `autosnap ami delete {first}`"
                        ),
                        format!(
                            "the original snapshots' tags were not re-applied to the snapshots \
                             of {image_id}"
                        ),
                    ],
                    _ => {
                        // The restored AMI has no tags yet: where to start over.
                        let mut not_done = vec![format!(
                            "the original tags were not re-applied (nor autosnap:managed): to \
                             start over, `autosnap ami delete {image_id} --force` and run this \
                             restore again"
                        )];
                        if args.encrypt {
                            not_done.push("no encrypted copy was made (--encrypt)".to_string());
                        }
                        not_done
                    }
                };
                return interrupted_restore(
                    env,
                    &ec2,
                    &doc,
                    &image_id,
                    copied_from.as_deref(),
                    &not_done,
                )
                .await;
            }
            Err(e) => return Err(flow_error(e)),
        };
    let cleanup_note = made.incomplete_cleanup.as_ref().map(|c| c.summary());
    let intermediate = made.intermediate_image_id;
    let image = made.image;
    let result = RestoreResult {
        source_image_id: doc.image_id.clone(),
        image_id: image.image_id.clone(),
        name: image.name.clone(),
        state: image.state.clone(),
        snapshot_ids: image.snapshot_ids(),
        encrypted: image.is_encrypted(),
        intermediate_image_id: intermediate,
        tags: image.tags.clone(),
    };
    print_kv(
        env,
        &result,
        vec![
            ("RESTORED FROM", result.source_image_id.clone()),
            ("AMI", result.image_id.clone()),
            ("NAME", output::opt(&result.name)),
            ("STATE", result.state.clone()),
            ("SNAPSHOTS", result.snapshot_ids.join(", ")),
            ("ENCRYPTED", output::yes_no(result.encrypted).into()),
            ("TAGS", result.tags.len().to_string()),
        ],
    )?;
    if let Some(note) = cleanup_note {
        crate::output::report_error(
            "failed",
            &format!(
                "AMI {} is ready, but removing the unencrypted restored AMI was incomplete: {note}",
                result.image_id
            ),
            Some(&result.image_id),
        );
        return Ok(Exit::Partial);
    }
    Ok(Exit::Success)
}

/// `ami restore --dry-run`: the AMI that would be restored.
#[derive(Serialize)]
struct RestorePlan {
    dry_run: bool,
    region: String,
    source_image_id: String,
    /// The stored object (`s3://…`).
    object: String,
    name: String,
    /// With --encrypt: the restored AMI's name before its encrypted copy takes `name`.
    intermediate_name: Option<String>,
    encrypt: bool,
    kms_key: Option<String>,
    tags: Tags,
}

/// After Ctrl-C during a wait of `ami restore`: the AMI waited for as EC2
/// has it now, the steps not done, exit 130.
async fn interrupted_restore(
    env: &Env,
    ec2: &Ec2,
    doc: &AmiMetadata,
    image_id: &str,
    copied_from: Option<&str>,
    not_done: &[String],
) -> anyhow::Result<Exit> {
    let now = tokio::time::timeout(Duration::from_secs(5), ec2.get_image(image_id)).await;
    let result = match now {
        Ok(Ok(i)) => RestoreResult {
            source_image_id: doc.image_id.clone(),
            image_id: image_id.to_string(),
            name: i.name.clone(),
            state: i.state.clone(),
            snapshot_ids: i.snapshot_ids(),
            encrypted: i.is_encrypted(),
            intermediate_image_id: copied_from.map(str::to_string),
            tags: i.tags.clone(),
        },
        _ => RestoreResult {
            source_image_id: doc.image_id.clone(),
            image_id: image_id.to_string(),
            name: None,
            state: "pending".into(),
            snapshot_ids: vec![],
            encrypted: false,
            intermediate_image_id: copied_from.map(str::to_string),
            tags: Tags::new(),
        },
    };
    let mut rows = vec![
        ("RESTORED FROM", result.source_image_id.clone()),
        ("AMI", result.image_id.clone()),
        ("NAME", output::opt(&result.name)),
        ("STATE", result.state.clone()),
        ("SNAPSHOTS", result.snapshot_ids.join(", ")),
    ];
    if let Some(from) = copied_from {
        rows.push(("COPIED FROM", format!("{from} (unencrypted, not removed)")));
    }
    print_kv(env, &result, rows)?;
    super::report_interrupted_with(&format!("AMI {image_id}"), "autosnap ami list", not_done);
    Ok(Exit::Interrupted)
}

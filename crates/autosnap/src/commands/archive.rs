//! `autosnap upload` and `autosnap download`: disk images in and out of EBS snapshots
//! through the EBS direct APIs; `autosnap archive` (snapshots and AMIs into a repository)
//! and `autosnap restore` (to a file, a device, a snapshot or an AMI).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use autosnap_aws::ebs::Ebs;
use autosnap_aws::engine_ports::engine_repo;
use autosnap_engine::{self as engine, TransferProgress, UploadOptions};
use autosnap_repo::Overwrite;
use indicatif::{ProgressBar, ProgressStyle};

use anyhow::Context;

use crate::cli::{
    ArchiveArgs, DownloadArgs, OutputFormat, RepoArgs, RepoFlag, RestoreArgs, UploadArgs,
};
use crate::commands::repo::{self, size};
use crate::commands::Env;
use crate::exit::{Exit, UsageError};
use crate::output;

/// How often a transfer logs a progress line when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Bytes, rate and ETA: a bar on a terminal, a log line every [`LOG_EVERY`] otherwise.
struct TransferBar {
    what: String,
    /// The snapshots a transfer started (so a stopped one can name them).
    snapshots: Mutex<Vec<String>>,
    bar: Option<ProgressBar>,
    total: AtomicU64,
    done: AtomicU64,
    started: Instant,
    last_log: Mutex<Instant>,
}

impl TransferBar {
    fn new(what: String, allowed: bool) -> TransferBar {
        let bar = (allowed && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_message(what.clone());
            bar
        });
        TransferBar {
            what,
            snapshots: Mutex::new(Vec::new()),
            bar,
            total: AtomicU64::new(0),
            done: AtomicU64::new(0),
            started: Instant::now(),
            last_log: Mutex::new(Instant::now()),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl TransferProgress for TransferBar {
    fn snapshot_started(&self, snapshot_id: &str) {
        self.snapshots
            .lock()
            .expect("not poisoned")
            .push(snapshot_id.to_string());
    }

    fn start(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.set_length(total);
        }
    }

    fn advance(&self, bytes: u64) {
        let done = self.done.fetch_add(bytes, Ordering::Relaxed) + bytes;
        match &self.bar {
            Some(bar) => bar.inc(bytes),
            None => {
                let mut last = self.last_log.lock().expect("not poisoned");
                if last.elapsed() >= LOG_EVERY {
                    *last = Instant::now();
                    let secs = self.started.elapsed().as_secs_f64().max(0.001);
                    tracing::info!(
                        "{}: {} of {} ({:.1} MiB/s)",
                        self.what,
                        size(done),
                        size(self.total.load(Ordering::Relaxed)),
                        done as f64 / secs / 1048576.0
                    );
                }
            }
        }
    }
}

impl Drop for TransferBar {
    fn drop(&mut self) {
        self.finish();
    }
}

fn parse_tags(tags: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    tags.iter()
        .map(|t| match t.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(UsageError(format!("--tag {t:?}: expected KEY=VALUE")).into()),
        })
        .collect()
}

fn check_concurrency(n: usize) -> anyhow::Result<()> {
    if n == 0 || n > 256 {
        return Err(UsageError(format!("--concurrency {n}: give 1 to 256")).into());
    }
    Ok(())
}

pub async fn upload(env: &Env, args: &UploadArgs) -> anyhow::Result<Exit> {
    check_concurrency(args.concurrency)?;
    let tags = parse_tags(&args.tag)?;
    if !args.file.is_file() {
        return Err(UsageError(format!("{} is not a file", args.file.display())).into());
    }
    let ctx = env.connect().await?;
    if args.dry_run {
        return upload_dry_run(env, &ctx, args, tags).await;
    }
    // The transfer's own adaptive limit on block requests, at most --concurrency in flight.
    let ebs = Ebs::new(&ctx).with_concurrency(args.concurrency.max(1));
    let bar = TransferBar::new(format!("upload {}", args.file.display()), env.progress);
    // Ctrl-C during the transfer stops it and names the unfinished snapshot
    // (it exists from StartSnapshot on); during --wait, it stops the wait.
    let mut interrupt = crate::commands::Interrupt::listen()?;
    let options = UploadOptions {
        description: args.description.clone(),
        tags,
        concurrency: args.concurrency,
    };
    let transfer = engine::upload_file(&ebs, &args.file, &options, &bar);
    let Some(report) = interrupt.or(transfer).await else {
        bar.finish();
        let file = args.file.display().to_string();
        return transfer_stopped(env, &ctx, &bar, "upload", &file).await;
    };
    let report = report?;
    bar.finish();
    if args.wait {
        let ec2 = ctx.ec2().await?;
        let ids = std::slice::from_ref(&report.snapshot_id);
        let waiter = crate::progress::WaitProgress::new("waiting for the snapshot", env.progress);
        let waited = interrupt
            .or(ec2.wait_snapshots_completed(ids, Duration::from_secs(6 * 3600), &waiter))
            .await;
        waiter.finish();
        match waited {
            Some(r) => {
                r?;
            }
            None => {
                let state = super::snapshot::states_soon(&ec2, ids)
                    .await
                    .and_then(|s| s.into_iter().next())
                    .map_or_else(|| "pending".to_string(), |s| s.state);
                match env.output {
                    OutputFormat::Json => output::print_json(&UploadInterrupted {
                        report: &report,
                        state,
                    })?,
                    _ => output::print(&format!("{} {state}", report.snapshot_id)),
                }
                crate::commands::report_interrupted(
                    &format!("snapshot {}", report.snapshot_id),
                    "autosnap snapshot list",
                );
                return Ok(Exit::Interrupted);
            }
        }
    }
    match env.output {
        OutputFormat::Json => output::print_json(&report)?,
        _ => output::print(&report.snapshot_id),
    }
    tracing::info!(
        "{}: {} blocks written, {} zero blocks skipped, {:.1} MiB/s",
        report.snapshot_id,
        report.blocks_written,
        report.zero_blocks_skipped,
        report.file_bytes as f64 / report.seconds.max(0.001) / 1048576.0
    );
    Ok(Exit::Success)
}

/// `upload --dry-run`: the snapshot that would be created from the file.
#[derive(serde::Serialize)]
struct UploadPlan {
    dry_run: bool,
    region: String,
    file: String,
    file_bytes: u64,
    volume_size_gib: u64,
    /// 512 KiB blocks of the file, and how many hold data (only those are sent).
    blocks: u64,
    blocks_to_write: u64,
    description: Option<String>,
    tags: std::collections::BTreeMap<String, String>,
}

/// `upload --dry-run`: reads the file once to count the blocks that would be
/// sent (zero blocks are skipped, as in the upload); starts no snapshot.
async fn upload_dry_run(
    env: &Env,
    ctx: &autosnap_aws::AwsContext,
    args: &UploadArgs,
    tags: Vec<(String, String)>,
) -> anyhow::Result<Exit> {
    use std::io::Read;
    let block = autosnap_aws::ebs::BLOCK_SIZE as u64;
    let path = args.file.clone();
    let (len, with_data) = tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let len = file
            .metadata()
            .with_context(|| format!("cannot stat {}", path.display()))?
            .len();
        let mut buf = vec![0u8; block as usize];
        let mut with_data = 0u64;
        loop {
            let mut filled = 0;
            while filled < buf.len() {
                let n = file
                    .read(&mut buf[filled..])
                    .with_context(|| format!("cannot read {}", path.display()))?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                break;
            }
            if buf[..filled].iter().any(|&b| b != 0) {
                with_data += 1;
            }
            if filled < buf.len() {
                break;
            }
        }
        Ok::<_, anyhow::Error>((len, with_data))
    })
    .await??;
    let plan = UploadPlan {
        dry_run: true,
        region: ctx.region().to_string(),
        file: args.file.display().to_string(),
        file_bytes: len,
        volume_size_gib: len.div_ceil(1 << 30).max(1),
        blocks: len.div_ceil(block),
        blocks_to_write: with_data,
        description: args.description.clone(),
        tags: tags.into_iter().collect(),
    };
    crate::commands::print_plan(env, &plan, || {
        format!(
            "would create a {} GiB snapshot in {} from {} ({}): {} of {} blocks hold data and would be written{}\n  tags: {}",
            plan.volume_size_gib,
            plan.region,
            plan.file,
            size(plan.file_bytes),
            plan.blocks_to_write,
            plan.blocks,
            plan.description
                .as_ref()
                .map(|d| format!(", description \"{d}\""))
                .unwrap_or_default(),
            crate::commands::tag_line(&plan.tags)
        )
    })?;
    Ok(Exit::Success)
}

/// `upload` or `restore --to-snapshot` with `-o json` after Ctrl-C during the transfer.
#[derive(serde::Serialize)]
struct TransferStopped {
    snapshot_id: String,
    /// EC2's view of the unfinished snapshot (`pending`; `error` once EBS cancels it).
    state: Option<String>,
    /// The file uploaded, or the archive restored.
    source: String,
    size_bytes: u64,
    /// Bytes read and sent (or skipped as zeros) before the stop.
    bytes_done: u64,
    completed: bool,
}

/// `restore --to-ami -o json` after Ctrl-C.
#[derive(serde::Serialize)]
struct AmiRestoreStopped {
    archive_id: String,
    /// No AMI was registered.
    image_id: Option<String>,
    snapshots: Vec<StoppedSnapshot>,
    completed: bool,
}

#[derive(serde::Serialize)]
struct StoppedSnapshot {
    snapshot_id: String,
    state: Option<String>,
}

/// After Ctrl-C during `restore --to-ami`: the snapshots it made (finished
/// or not), that no AMI was registered, and how to remove them; exit 130.
async fn ami_restore_stopped(
    env: &Env,
    ec2: &autosnap_aws::Ec2,
    bar: &TransferBar,
    archive_id: &str,
) -> anyhow::Result<Exit> {
    let ids = bar.snapshots.lock().expect("not poisoned").clone();
    let states = super::snapshot::states_soon(ec2, &ids)
        .await
        .unwrap_or_default();
    let stopped = AmiRestoreStopped {
        archive_id: archive_id.to_string(),
        image_id: None,
        snapshots: ids
            .iter()
            .map(|id| StoppedSnapshot {
                snapshot_id: id.clone(),
                state: states
                    .iter()
                    .find(|s| &s.snapshot_id == id)
                    .map(|s| s.state.clone()),
            })
            .collect(),
        completed: false,
    };
    match env.output {
        OutputFormat::Json => output::print_json(&stopped)?,
        _ => {
            let lines: Vec<String> = stopped
                .snapshots
                .iter()
                .map(|s| {
                    format!(
                        "{} {}",
                        s.snapshot_id,
                        s.state.as_deref().unwrap_or("pending")
                    )
                })
                .collect();
            output::print(&lines.join("\n"));
        }
    }
    let message = if ids.is_empty() {
        format!("the restore of archive {archive_id} stopped before any snapshot was started")
    } else {
        format!(
            "the restore of archive {archive_id} stopped: no AMI was registered (unless the \
             signal came during RegisterImage: check `autosnap ami list`), and the snapshots it \
             made were not cleaned up; an unfinished one can be neither used nor resumed (EBS \
             cancels it about 60 minutes after its last block). Delete them with `autosnap \
             snapshot delete {} --force` and run the restore again",
            ids.join(" ")
        )
    };
    if output::json_mode() {
        eprintln!("{}", output::error_object("interrupted", &message, None));
    } else {
        eprintln!("interrupted: {message}");
    }
    Ok(Exit::Interrupted)
}

/// After Ctrl-C during a transfer into a new snapshot (`upload`, `restore
/// --to-snapshot`): the snapshot it started, which can neither be used nor
/// resumed, what happens to it, and exit 130.
async fn transfer_stopped(
    env: &Env,
    ctx: &autosnap_aws::AwsContext,
    bar: &TransferBar,
    what: &str,
    source: &str,
) -> anyhow::Result<Exit> {
    let started = bar.snapshots.lock().expect("not poisoned").last().cloned();
    let Some(id) = started else {
        let message = format!(
            "interrupted: the {what} stopped before EBS answered StartSnapshot: if it made a \
             snapshot (one in flight), `autosnap snapshot list` shows it, never completed"
        );
        if output::json_mode() {
            eprintln!("{}", output::error_object("interrupted", &message, None));
        } else {
            eprintln!("{message}");
        }
        return Ok(Exit::Interrupted);
    };
    let state = match ctx.ec2().await {
        Ok(ec2) => super::snapshot::states_soon(&ec2, std::slice::from_ref(&id))
            .await
            .and_then(|s| s.into_iter().next())
            .map(|s| s.state),
        Err(_) => None,
    };
    let stopped = TransferStopped {
        snapshot_id: id.clone(),
        state,
        source: source.to_string(),
        size_bytes: bar.total.load(Ordering::Relaxed),
        bytes_done: bar.done.load(Ordering::Relaxed),
        completed: false,
    };
    match env.output {
        OutputFormat::Json => output::print_json(&stopped)?,
        _ => output::print(&format!(
            "{id} {} (not completed: {} of {} sent)",
            stopped.state.as_deref().unwrap_or("pending"),
            size(stopped.bytes_done),
            size(stopped.size_bytes)
        )),
    }
    let message = format!(
        "the {what} stopped; snapshot {id} was started but not completed, so it can be neither \
         used nor resumed: EBS cancels it (state error) about 60 minutes after the last block \
         was written. Delete it now with `autosnap snapshot delete {id} --force`"
    );
    if output::json_mode() {
        eprintln!(
            "{}",
            output::error_object("interrupted", &message, Some(&id))
        );
    } else {
        eprintln!("interrupted: {message}");
    }
    Ok(Exit::Interrupted)
}

/// `upload -o json` after Ctrl-C during `--wait`: the report plus the
/// snapshot's state at that moment.
#[derive(serde::Serialize)]
struct UploadInterrupted<'a> {
    #[serde(flatten)]
    report: &'a engine::UploadReport,
    state: String,
}

pub async fn download(env: &Env, args: &DownloadArgs) -> anyhow::Result<Exit> {
    check_concurrency(args.concurrency)?;
    let snapshot: autosnap_core::ids::SnapshotId = args.snapshot.parse()?;
    let snapshot = snapshot.to_string();
    let ctx = env.connect().await?;
    let ebs = Ebs::new(&ctx).with_concurrency(args.concurrency.max(1));
    let bar = TransferBar::new(format!("download {snapshot}"), env.progress);
    let report = engine::download_snapshot(
        &ebs,
        &snapshot,
        &args.file,
        args.concurrency,
        overwrite(args.force),
        &bar,
    )
    .await?;
    bar.finish();
    match env.output {
        OutputFormat::Json => output::print_json(&report)?,
        _ => output::print(&format!(
            "{} → {} ({}, {} blocks read)",
            report.snapshot_id,
            report.path.display(),
            size(report.size_bytes),
            report.blocks_read
        )),
    }
    Ok(Exit::Success)
}

/// `--force` as the image-file policy.
fn overwrite(force: bool) -> Overwrite {
    if force {
        Overwrite::Replace
    } else {
        Overwrite::Refuse
    }
}

fn repo_args(flag: &RepoFlag) -> RepoArgs {
    RepoArgs {
        repo: flag.repo.clone(),
        password_file: flag.password_file.clone(),
    }
}

/// What wrote an AMI's metadata document.
const GENERATOR: &str = concat!("autosnap ", env!("CARGO_PKG_VERSION"));

/// `archive SOURCE`: what SOURCE names.
enum ArchiveSource {
    Snapshot(String),
    Image(String),
}

fn archive_source(source: &str) -> anyhow::Result<ArchiveSource> {
    use autosnap_core::ids::{ImageId, SnapshotId};
    let source = source.trim();
    if source.starts_with("ami-") {
        let id: ImageId = source.parse().map_err(|e| UsageError(format!("{e}")))?;
        return Ok(ArchiveSource::Image(id.to_string()));
    }
    if source.starts_with("snap-") {
        let id: SnapshotId = source.parse().map_err(|e| UsageError(format!("{e}")))?;
        return Ok(ArchiveSource::Snapshot(id.to_string()));
    }
    Err(UsageError(format!(
        "SOURCE {source:?}: give a snapshot id (snap-…) or an AMI id (ami-…)"
    ))
    .into())
}

fn describe_parent(v: &engine::VolumePlan) -> String {
    match &v.parent {
        Some(p) => format!(
            "changed blocks since {} (archive {}, volume {})",
            p.snapshot_id, p.archive_id, p.volume
        ),
        None => "every written block".to_string(),
    }
}

pub async fn archive(env: &Env, args: &ArchiveArgs) -> anyhow::Result<Exit> {
    check_concurrency(args.concurrency)?;
    let source = archive_source(&args.source)?;
    if args.lineage.as_deref().is_some_and(|l| l.trim().is_empty()) {
        return Err(UsageError("--lineage is empty: give a name, or leave it out".into()).into());
    }
    let lineage = args.lineage.clone();
    let repo = repo::open(env, &repo_args(&args.repo)).await?;
    let ctx = env.connect().await?;
    let ebs = Ebs::new(&ctx);
    let ec2 = ctx.ec2().await?;
    let plan = match &source {
        ArchiveSource::Snapshot(id) => {
            engine::plan_snapshot_archive(&ec2, &repo, id, lineage).await?
        }
        ArchiveSource::Image(id) => {
            let image = ec2.get_image(id).await?;
            let metadata = ec2
                .collect_image_metadata(&image, GENERATOR, chrono::Utc::now())
                .await?;
            engine::plan_image_archive(&ec2, &repo, &metadata, lineage).await?
        }
    };
    if args.dry_run {
        #[derive(serde::Serialize)]
        struct DryRun<'a> {
            dry_run: bool,
            repository: String,
            #[serde(flatten)]
            plan: &'a engine::ArchivePlan,
        }
        match env.output {
            OutputFormat::Json => output::print_json(&DryRun {
                dry_run: true,
                repository: repo.backend().location(),
                plan: &plan,
            })?,
            _ => {
                let mut text = format!(
                    "would archive {} {} into {} (lineage {}), reading:",
                    plan.kind,
                    plan.source_id,
                    repo.backend().location(),
                    plan.lineage
                );
                for v in &plan.volumes {
                    text.push_str(&format!(
                        "\n  {}{} ({} GiB{}): {}",
                        v.device_name
                            .as_ref()
                            .map(|d| format!("{d} "))
                            .unwrap_or_default(),
                        v.snapshot_id,
                        v.volume_size_gib,
                        if v.encrypted { ", encrypted" } else { "" },
                        describe_parent(v)
                    ));
                }
                if !plan.skipped_devices.is_empty() {
                    text.push_str(&format!(
                        "\n  not archived (instance store): {}",
                        plan.skipped_devices.join(", ")
                    ));
                }
                text.push_str("\ndry run: nothing was read or written");
                output::print(&text);
            }
        }
        return Ok(Exit::Success);
    }
    let bar = TransferBar::new(format!("archive {}", plan.source_id), env.progress);
    let ebs = ebs.with_concurrency(args.concurrency.max(1));
    let report =
        engine::run_archive(&ebs, engine_repo(&repo), plan, args.concurrency, &bar).await?;
    bar.finish();
    match env.output {
        OutputFormat::Json => output::print_json(&report)?,
        _ => {
            let mut text = format!(
                "archive {} of {}{}: {} blocks read ({}), {} new ({} stored)",
                report.archive_id,
                report.source_id,
                report
                    .parent
                    .as_ref()
                    .map(|p| format!(" (incremental from {p})"))
                    .unwrap_or_default(),
                report.blocks_read,
                size(report.bytes_read),
                size(report.new_bytes),
                size(report.new_stored_bytes)
            );
            if report.kind == "image" {
                for v in &report.volumes {
                    text.push_str(&format!(
                        "\n  {} {}: {} blocks read, {} new{}",
                        v.device_name.as_deref().unwrap_or("?"),
                        v.snapshot_id,
                        v.blocks_read,
                        size(v.new_bytes),
                        v.parent
                            .as_ref()
                            .map(|p| format!(" (incremental from {p})"))
                            .unwrap_or_default()
                    ));
                }
            }
            output::print(&text)
        }
    }
    Ok(Exit::Success)
}

/// Checks a KMS key before anything is encrypted with it, naming what it was for.
async fn check_key(
    ctx: &autosnap_aws::AwsContext,
    key: &str,
    what: &str,
) -> anyhow::Result<String> {
    let usable = autosnap_aws::kms::check_encryption_key(ctx, ctx.region(), key)
        .await
        .with_context(|| format!("{what} is not usable for EBS encryption"))?;
    Ok(usable.arn)
}

pub async fn restore(env: &Env, args: &RestoreArgs) -> anyhow::Result<Exit> {
    check_concurrency(args.concurrency)?;
    if args.kms_key.is_some() && !(args.to_snapshot || args.to_ami) {
        return Err(UsageError("--kms-key applies to --to-snapshot and --to-ami".into()).into());
    }
    if args.force && args.to_file.is_none() {
        return Err(UsageError(
            "--force applies to --to-file only: a device that is mounted or in use is never \
             written, --force or not"
                .into(),
        )
        .into());
    }
    if args.dry_run && !(args.to_snapshot || args.to_ami) {
        return Err(UsageError(
            "--dry-run applies to --to-snapshot and --to-ami (file and device restores create \
             nothing in AWS)"
                .into(),
        )
        .into());
    }
    if let Some(name) = &args.name {
        autosnap_core::ami::validate_image_name(name)
            .map_err(|e| UsageError(format!("--name: {e}")))?;
    }
    let repo = repo::open(env, &repo_args(&args.repo)).await?;
    // Held until the restore ends, so a `repo gc` cannot delete chunks it is about to read. A
    // dry run reads only the manifest and writes nothing, not even a lock.
    let _lock = if args.dry_run {
        None
    } else {
        Some(RestoreLock::take(&repo).await?)
    };
    let manifest = {
        let repo = repo.clone();
        let wanted = args.archive.clone();
        repo::blocking(move || Ok(engine::find_archive(&repo, &wanted)?)).await?
    };
    if args.to_ami {
        return restore_to_ami(env, args, repo, manifest).await;
    }
    let volume = engine::select_volume(&manifest, args.device.as_deref())?;
    // A target that cannot be written fails before anything is read; a device stays open
    // exclusively from here on, so nothing can mount it before it is written.
    if let Some(path) = &args.to_file {
        autosnap_repo::image_file::check_target(path, overwrite(args.force))?;
    }
    let mut device = match &args.to_device {
        Some(dev) => Some(autosnap_freeze::SystemView::default().open_restore_target(dev)?),
        None => None,
    };
    #[derive(serde::Serialize)]
    struct Restored {
        archive_id: String,
        target: String,
        device_name: Option<String>,
        snapshot_id: Option<String>,
        blocks_written: u64,
        size_bytes: u64,
    }
    let id = manifest.id.to_string();
    let device_name = manifest.volumes[volume].source.device_name.clone();
    let size_bytes = manifest.volumes[volume].source.size_bytes;
    let result = if args.to_snapshot {
        let ctx = env.connect().await?;
        let kms_key = match &args.kms_key {
            Some(k) => Some(check_key(&ctx, k, &format!("--kms-key {k}")).await?),
            None => None,
        };
        let target = engine::SnapshotTarget::original(&manifest, volume, kms_key);
        if args.dry_run {
            #[derive(serde::Serialize)]
            struct Plan<'a> {
                dry_run: bool,
                archive_id: &'a str,
                device_name: &'a Option<String>,
                volume_size_gib: u64,
                kms_key: &'a Option<String>,
                description: &'a Option<String>,
                tags: std::collections::BTreeMap<&'a str, &'a str>,
            }
            let plan = Plan {
                dry_run: true,
                archive_id: &id,
                device_name: &device_name,
                volume_size_gib: manifest.volumes[volume].source.volume_size_gib,
                kms_key: &target.kms_key,
                description: &target.description,
                tags: target
                    .tags
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect(),
            };
            match env.output {
                OutputFormat::Json => output::print_json(&plan)?,
                _ => output::print(&format!(
                    "would restore archive {id}{} to a new {} GiB snapshot{} with {} tags\ndry \
                     run: nothing was created",
                    device_name
                        .as_ref()
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default(),
                    plan.volume_size_gib,
                    target
                        .kms_key
                        .as_ref()
                        .map(|k| format!(" encrypted with {k}"))
                        .unwrap_or_default(),
                    target.tags.len()
                )),
            }
            return Ok(Exit::Success);
        }
        let ebs = Ebs::new(&ctx).with_concurrency(args.concurrency.max(1));
        let bar = TransferBar::new(format!("restore {id}"), env.progress);
        // Ctrl-C during the transfer names the snapshot it started.
        let mut interrupt = crate::commands::Interrupt::listen()?;
        let transfer = engine::restore_to_snapshot(
            &ebs,
            engine_repo(&repo),
            &manifest,
            &target,
            args.concurrency,
            &bar,
        );
        let Some(r) = interrupt.or(transfer).await else {
            bar.finish();
            return transfer_stopped(env, &ctx, &bar, "restore", &format!("archive {id}")).await;
        };
        let r = r?;
        Restored {
            archive_id: id,
            target: r.snapshot_id.clone(),
            device_name,
            snapshot_id: Some(r.snapshot_id),
            blocks_written: r.blocks_written,
            size_bytes,
        }
    } else if let Some(path) = &args.to_file {
        let path2 = path.clone();
        let threads = args.concurrency;
        let overwrite = overwrite(args.force);
        let r = repo::blocking(move || {
            Ok(repo.restore_to_file_with(
                &manifest,
                volume,
                &path2,
                autosnap_repo::Parallelism { threads },
                overwrite,
            )?)
        })
        .await?;
        Restored {
            archive_id: id,
            target: path.display().to_string(),
            device_name,
            snapshot_id: None,
            blocks_written: r.blocks_written,
            size_bytes: r.size_bytes,
        }
    } else if let Some(dev) = &args.to_device {
        let dev2 = dev.clone();
        let target = device.take().expect("opened above");
        let written =
            repo::blocking(move || restore_to_device(&repo, manifest, volume, &dev2, target))
                .await?;
        Restored {
            archive_id: id,
            target: dev.display().to_string(),
            device_name,
            snapshot_id: None,
            blocks_written: written,
            size_bytes,
        }
    } else {
        unreachable!("clap requires a target");
    };
    match env.output {
        OutputFormat::Json => output::print_json(&result)?,
        _ => output::print(&format!(
            "restored {}{} to {} ({} blocks written)",
            result.archive_id,
            result
                .device_name
                .as_ref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default(),
            result.target,
            result.blocks_written
        )),
    }
    Ok(Exit::Success)
}

/// `restore --to-ami`: plan (name free, keys usable), print it on `--dry-run`, else restore
/// every volume, register the AMI and print its id.
async fn restore_to_ami(
    env: &Env,
    args: &RestoreArgs,
    repo: autosnap_repo::Repository,
    manifest: autosnap_repo::Manifest,
) -> anyhow::Result<Exit> {
    let ctx = env.connect().await?;
    let ec2 = ctx.ec2().await?;
    let kms_key = match &args.kms_key {
        Some(k) => Some(check_key(&ctx, k, &format!("--kms-key {k}")).await?),
        None => None,
    };
    let plan = engine::plan_image_restore(&ec2, &manifest, args.name.clone(), kms_key).await?;
    if args.kms_key.is_none() {
        for key in plan.kms_keys() {
            let devices: Vec<&str> = plan
                .volumes
                .iter()
                .filter(|v| v.kms_key.as_deref() == Some(key.as_str()))
                .map(|v| v.device_name.as_str())
                .collect();
            check_key(
                &ctx,
                &key,
                &format!(
                    "the original KMS key {key} of {} (give --kms-key to encrypt with another)",
                    devices.join(", ")
                ),
            )
            .await?;
        }
    }
    if args.dry_run {
        #[derive(serde::Serialize)]
        struct DryRun<'a> {
            dry_run: bool,
            #[serde(flatten)]
            plan: &'a engine::ImageRestorePlan,
        }
        match env.output {
            OutputFormat::Json => output::print_json(&DryRun {
                dry_run: true,
                plan: &plan,
            })?,
            _ => {
                let mut text = format!(
                    "would restore archive {} of {} as AMI '{}' (root {}{}):",
                    plan.archive_id,
                    plan.source_image_id,
                    plan.name,
                    plan.root_device_name,
                    plan.architecture
                        .as_ref()
                        .map(|a| format!(", {a}"))
                        .unwrap_or_default()
                );
                for v in &plan.volumes {
                    text.push_str(&format!(
                        "\n  {}: a new {} GiB snapshot{}",
                        v.device_name,
                        v.volume_size_gib,
                        v.kms_key
                            .as_ref()
                            .map(|k| format!(" encrypted with {k}"))
                            .unwrap_or_default()
                    ));
                }
                for d in &plan.instance_store_devices {
                    text.push_str(&format!("\n  {d}: instance store (no data)"));
                }
                text.push_str(&format!(
                    "\n  AMI tags: {}\ndry run: nothing was created",
                    plan.tags.len()
                ));
                output::print(&text);
            }
        }
        return Ok(Exit::Success);
    }
    // One adaptive limit for the whole restore: its volumes are restored one after another.
    let ebs = Ebs::new(&ctx).with_concurrency(args.concurrency.max(1));
    let bar = TransferBar::new(
        format!("restore {} as an AMI", plan.archive_id),
        env.progress,
    );
    // Ctrl-C stops the restore and names the snapshots made so far (no AMI
    // yet: the engine's cleanup runs only when a step fails).
    let mut interrupt = crate::commands::Interrupt::listen()?;
    let restore = engine::restore_image(
        &ebs,
        &ec2,
        engine_repo(&repo),
        &manifest,
        &plan,
        args.concurrency,
        &bar,
    );
    let Some(report) = interrupt.or(restore).await else {
        bar.finish();
        return ami_restore_stopped(env, &ec2, &bar, &plan.archive_id.to_string()).await;
    };
    let report = report?;
    bar.finish();
    #[derive(serde::Serialize)]
    struct Restored<'a> {
        target: &'a str,
        snapshot_ids: Vec<&'a str>,
        size_bytes: u64,
        #[serde(flatten)]
        report: &'a engine::RestoreImageReport,
    }
    match env.output {
        OutputFormat::Json => output::print_json(&Restored {
            target: &report.image_id,
            snapshot_ids: report
                .volumes
                .iter()
                .map(|v| v.snapshot_id.as_str())
                .collect(),
            size_bytes: manifest.volumes.iter().map(|v| v.source.size_bytes).sum(),
            report: &report,
        })?,
        _ => output::print(&format!(
            "{}\nrestored {} ({}) as AMI {} '{}': {}",
            report.image_id,
            report.archive_id,
            report.source_image_id,
            report.image_id,
            report.name,
            report
                .volumes
                .iter()
                .map(|v| format!("{} {}", v.device_name, v.snapshot_id))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
    Ok(Exit::Success)
}

/// Writes every block of volume `volume` of the archive to an unused block device (held open
/// exclusively throughout) or an existing file, zeros included (the device may hold old
/// data), in index order; every chunk is hash-checked.
fn restore_to_device(
    repo: &autosnap_repo::Repository,
    manifest: autosnap_repo::Manifest,
    volume: usize,
    dev: &std::path::Path,
    target: autosnap_freeze::blockdev::DeviceTarget,
) -> anyhow::Result<u64> {
    use std::os::unix::fs::FileExt;
    let size = manifest.volumes[volume].source.size_bytes;
    if let Some(device_size) = target.device_size {
        if device_size < size {
            return Err(anyhow::anyhow!(
                "{} holds {device_size} bytes, the archived volume {size}: restore to a device \
                 at least as large",
                dev.display()
            ));
        }
    }
    let file = target.file;
    let block = u64::from(manifest.volumes[volume].block_map.block_size);
    let reader = autosnap_repo::ArchiveReader::new(repo, manifest);
    // Every segment is checked before the first write: the device is written in place.
    reader.check_block_map(volume)?;
    let zeros = vec![0u8; block as usize];
    let write = |index: u64, data: &[u8]| -> anyhow::Result<()> {
        let offset = index * block;
        let len = (size - offset).min(block) as usize;
        file.write_all_at(&data[..len], offset)
            .with_context(|| format!("cannot write {} at offset {offset}", dev.display()))
    };
    let mut next = 0u64;
    let mut written = 0u64;
    for item in reader.blocks(volume)? {
        let (index, block_ref) = item?;
        while next < index {
            write(next, &zeros)?;
            next += 1;
        }
        let data = reader.read_block(&block_ref)?;
        write(index, &data)?;
        written += 1;
        next = index + 1;
    }
    while next * block < size {
        write(next, &zeros)?;
        next += 1;
    }
    file.sync_all()
        .with_context(|| format!("cannot sync {}", dev.display()))?;
    Ok(written)
}

/// The shared repository lock a restore holds, so that a `repo gc` cannot delete chunks it is
/// about to read; refreshed in the background (a restore may outlast the lock's lifetime) and
/// released when dropped. A lost lock cannot make a restore write wrong data (every chunk is
/// hash-checked, a chunk a gc removed fails the restore), so it is not checked between blocks.
struct RestoreLock(Option<autosnap_repo::RepoLock>);

impl RestoreLock {
    async fn take(repo: &autosnap_repo::Repository) -> anyhow::Result<RestoreLock> {
        let repo = repo.clone();
        repo::blocking(move || {
            let lock = repo.lock(autosnap_repo::LockKind::Shared, "restore")?;
            lock.keep_alive_in_background()?;
            Ok(RestoreLock(Some(lock)))
        })
        .await
    }
}

impl Drop for RestoreLock {
    fn drop(&mut self) {
        if let Some(lock) = self.0.take() {
            // Releasing deletes the lock object; an S3 backend blocks on the runtime to do it,
            // which an async worker thread must not.
            match tokio::runtime::Handle::try_current() {
                Ok(_) => tokio::task::block_in_place(move || drop(lock)),
                Err(_) => drop(lock),
            }
        }
    }
}

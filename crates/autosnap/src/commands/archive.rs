//! `autosnap upload` and `autosnap download`: disk images in and out of EBS snapshots
//! through the EBS direct APIs.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use autosnap_aws::archive::{self as engine, TransferProgress, UploadOptions};
use autosnap_aws::ebs::Ebs;
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
    let ebs = Ebs::new(&ctx);
    let bar = TransferBar::new(format!("upload {}", args.file.display()), env.progress);
    let report = engine::upload_file(
        &ebs,
        &args.file,
        &UploadOptions {
            description: args.description.clone(),
            tags,
            concurrency: args.concurrency,
        },
        &bar,
    )
    .await?;
    bar.finish();
    if args.wait {
        let waiter = crate::progress::WaitProgress::new("waiting for the snapshot", env.progress);
        ctx.ec2()
            .await?
            .wait_snapshots_completed(
                std::slice::from_ref(&report.snapshot_id),
                Duration::from_secs(6 * 3600),
                &waiter,
            )
            .await?;
        waiter.finish();
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

pub async fn download(env: &Env, args: &DownloadArgs) -> anyhow::Result<Exit> {
    check_concurrency(args.concurrency)?;
    let snapshot: autosnap_core::ids::SnapshotId = args.snapshot.parse()?;
    let snapshot = snapshot.to_string();
    let ctx = env.connect().await?;
    let ebs = Ebs::new(&ctx);
    let bar = TransferBar::new(format!("download {snapshot}"), env.progress);
    let report =
        engine::download_snapshot(&ebs, &snapshot, &args.file, args.concurrency, &bar).await?;
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

fn repo_args(flag: &RepoFlag) -> RepoArgs {
    RepoArgs {
        repo: flag.repo.clone(),
        password_file: flag.password_file.clone(),
    }
}

pub async fn archive(env: &Env, args: &ArchiveArgs) -> anyhow::Result<Exit> {
    check_concurrency(args.concurrency)?;
    let snapshot: autosnap_core::ids::SnapshotId = args.snapshot.parse()?;
    let snapshot = snapshot.to_string();
    let repo = repo::open(env, &repo_args(&args.repo)).await?;
    let ctx = env.connect().await?;
    let ebs = Ebs::new(&ctx);
    let ec2 = ctx.ec2().await?;
    let bar = TransferBar::new(format!("archive {snapshot}"), env.progress);
    let report = engine::archive_snapshot(
        &ebs,
        &ec2,
        ctx.region(),
        &repo,
        &snapshot,
        args.concurrency,
        &bar,
    )
    .await?;
    bar.finish();
    match env.output {
        OutputFormat::Json => output::print_json(&report)?,
        _ => output::print(&format!(
            "archive {} of {}{}: {} blocks read, {} new ({} stored)",
            report.archive_id,
            report.snapshot_id,
            report
                .parent
                .as_ref()
                .map(|p| format!(" (incremental from {p})"))
                .unwrap_or_default(),
            report.blocks_read,
            size(report.new_bytes),
            size(report.new_stored_bytes)
        )),
    }
    Ok(Exit::Success)
}

pub async fn restore(env: &Env, args: &RestoreArgs) -> anyhow::Result<Exit> {
    check_concurrency(args.concurrency)?;
    let repo = repo::open(env, &repo_args(&args.repo)).await?;
    let manifest = {
        let repo = repo.clone();
        let wanted = args.archive.clone();
        repo::blocking(move || Ok(engine::find_archive(&repo, &wanted)?)).await?
    };
    if manifest.volumes.len() != 1 {
        return Err(UsageError(format!(
            "archive {} holds {} volumes; restoring multi-volume (AMI) archives is not supported yet",
            manifest.id,
            manifest.volumes.len()
        ))
        .into());
    }
    #[derive(serde::Serialize)]
    struct Restored {
        archive_id: String,
        target: String,
        snapshot_id: Option<String>,
        blocks_written: u64,
        size_bytes: u64,
    }
    let id = manifest.id.to_string();
    let size_bytes = manifest.volumes[0].source.size_bytes;
    let result = if args.to_snapshot {
        let ctx = env.connect().await?;
        let ebs = Ebs::new(&ctx);
        let bar = TransferBar::new(format!("restore {id}"), env.progress);
        let r = engine::restore_to_snapshot(
            &ebs,
            &repo,
            manifest,
            args.kms_key.clone(),
            args.concurrency,
            &bar,
        )
        .await?;
        Restored {
            archive_id: id,
            target: r.snapshot_id.clone(),
            snapshot_id: Some(r.snapshot_id),
            blocks_written: r.blocks_written,
            size_bytes,
        }
    } else if let Some(path) = &args.to_file {
        let path2 = path.clone();
        let threads = args.concurrency;
        let r = repo::blocking(move || {
            Ok(repo.restore_to_file_with(
                &manifest,
                0,
                &path2,
                autosnap_repo::Parallelism { threads },
            )?)
        })
        .await?;
        Restored {
            archive_id: id,
            target: path.display().to_string(),
            snapshot_id: None,
            blocks_written: r.blocks_written,
            size_bytes: r.size_bytes,
        }
    } else if let Some(dev) = &args.to_device {
        let dev2 = dev.clone();
        let written = repo::blocking(move || restore_to_device(&repo, manifest, &dev2)).await?;
        Restored {
            archive_id: id,
            target: dev.display().to_string(),
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
            "restored {} to {} ({} blocks written)",
            result.archive_id, result.target, result.blocks_written
        )),
    }
    Ok(Exit::Success)
}

/// Writes every block of the archive's volume to an existing device or file, zeros included
/// (the device may hold old data), in index order; every chunk is hash-checked.
fn restore_to_device(
    repo: &autosnap_repo::Repository,
    manifest: autosnap_repo::Manifest,
    dev: &std::path::Path,
) -> anyhow::Result<u64> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(dev)
        .with_context(|| format!("cannot open {} for writing", dev.display()))?;
    let size = manifest.volumes[0].source.size_bytes;
    let block = u64::from(manifest.volumes[0].block_map.block_size);
    let reader = autosnap_repo::ArchiveReader::new(repo, manifest);
    let zeros = vec![0u8; block as usize];
    let write = |index: u64, data: &[u8]| -> anyhow::Result<()> {
        let offset = index * block;
        let len = (size - offset).min(block) as usize;
        file.write_all_at(&data[..len], offset)
            .with_context(|| format!("cannot write {} at offset {offset}", dev.display()))
    };
    let mut next = 0u64;
    let mut written = 0u64;
    for item in reader.blocks(0)? {
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

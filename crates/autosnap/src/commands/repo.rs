//! `autosnap repo …`: archive repositories on a local directory or `s3://bucket/prefix`.
//!
//! The repository library is synchronous; every call into it runs on a blocking thread
//! (`spawn_blocking`), where the S3 backend may block on the runtime.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use autosnap_aws::kms::{decrypt_data_key, generate_data_key};
use autosnap_aws::s3_backend::{S3Backend, S3Location};
use autosnap_repo::{
    Backend, Credentials, EncryptionInit, InitOptions, KdfParams, KmsWrappedKey, LocalBackend,
    Repository,
};
use chrono::Utc;
use serde::Serialize;

use crate::cli::{
    OutputFormat, RepoArgs, RepoCommand, RepoForgetArgs, RepoGcArgs, RepoInitArgs, RepoUnlockArgs,
    RepoVerifyArgs,
};
use crate::commands::confirm::{self, Consent};
use crate::commands::Env;
use crate::exit::{Exit, UsageError};
use crate::output;

/// Environment variable holding a repository passphrase.
pub const PASSWORD_ENV: &str = "AUTOSNAP_REPO_PASSWORD";

pub async fn run(env: &Env, command: RepoCommand) -> anyhow::Result<Exit> {
    match command {
        RepoCommand::Init(args) => init(env, &args).await,
        RepoCommand::List(args) => list(env, &args).await,
        RepoCommand::Verify(args) => verify(env, &args).await,
        RepoCommand::Forget(args) => forget(env, &args).await,
        RepoCommand::Gc(args) => gc(env, &args).await,
        RepoCommand::Unlock(args) => unlock(env, &args).await,
    }
}

/// The backend for `repo` (a local directory or `s3://bucket/prefix`).
pub async fn backend(env: &Env, repo: &str) -> anyhow::Result<Arc<dyn Backend>> {
    match S3Location::parse(repo) {
        Some(location) => {
            let location = location.map_err(UsageError)?;
            let ctx = env.connect().await?;
            Ok(Arc::new(S3Backend::connect(&ctx, location).await?))
        }
        None => {
            if repo.is_empty() {
                return Err(UsageError(
                    "REPO is empty: give a directory or s3://bucket/prefix".into(),
                )
                .into());
            }
            Ok(Arc::new(LocalBackend::new(PathBuf::from(repo))))
        }
    }
}

/// The passphrase from `--password-file` or `$AUTOSNAP_REPO_PASSWORD`, if any.
fn passphrase(args: &RepoArgs) -> anyhow::Result<Option<String>> {
    if let Some(file) = &args.password_file {
        // Wiped when dropped: the file's text holds the passphrase.
        let text =
            autosnap_repo::zeroize::Zeroizing::new(std::fs::read_to_string(file).map_err(|e| {
                UsageError(format!(
                    "cannot read --password-file {}: {e}",
                    file.display()
                ))
            })?);
        let line = text.lines().next().unwrap_or_default().to_string();
        if line.is_empty() {
            return Err(UsageError(format!("--password-file {} is empty", file.display())).into());
        }
        return Ok(Some(line));
    }
    Ok(std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty()))
}

/// Runs blocking repository work off the async workers.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .context("repository worker panicked")?
}

/// Opens the repository named by `args`. An unencrypted one needs nothing; an encrypted one
/// opens with `--password-file` when given, else through KMS when its config holds a
/// KMS-wrapped key, else with `$AUTOSNAP_REPO_PASSWORD`.
pub async fn open(env: &Env, args: &RepoArgs) -> anyhow::Result<Repository> {
    let backend = backend(env, &args.repo).await?;
    let name = args.repo.clone();
    let config = {
        let backend = backend.clone();
        let name = name.clone();
        blocking(move || {
            Repository::read_config(&*backend)
                .with_context(|| format!("cannot open repository {name}"))
        })
        .await?
    };
    let credentials = match &config.encryption {
        // A passphrase set for an unencrypted repository is handed over anyway, so that the
        // library refuses: an encrypted repository's config may have been swapped for an
        // unencrypted one, and archives would then be written in plaintext.
        None => match passphrase(args)? {
            Some(p) => Credentials::Passphrase(p),
            None => Credentials::None,
        },
        Some(encryption) => match (&args.password_file, &encryption.kms) {
            (None, Some(kms)) => {
                Credentials::DataKey(kms_data_key(env, &name, kms, &config).await?)
            }
            _ => match passphrase(args)? {
                Some(p) => Credentials::Passphrase(p),
                None => {
                    return Err(UsageError(format!(
                        "repository {name} is encrypted: set ${PASSWORD_ENV} or give \
                         --password-file"
                    ))
                    .into())
                }
            },
        },
    };
    blocking(move || {
        Repository::open(backend, credentials)
            .with_context(|| format!("cannot open repository {name}"))
    })
    .await
}

/// The master key of a repository whose config holds a KMS-wrapped data key: KMS `Decrypt`.
/// (The key is only ever handed to the repository library; it is never printed.)
async fn kms_data_key(
    env: &Env,
    name: &str,
    kms: &autosnap_repo::KmsWrappedKey,
    config: &autosnap_repo::RepoConfig,
) -> anyhow::Result<[u8; 32]> {
    let ciphertext = kms
        .ciphertext_bytes()
        .with_context(|| format!("cannot open repository {name}"))?;
    let ctx = env.connect().await?;
    let context = config.kms_encryption_context();
    let context = context.as_ref().map(|(k, v)| (k.as_str(), v.as_str()));
    decrypt_data_key(&ctx, ctx.region(), &kms.key_id, &ciphertext, context)
        .await
        .with_context(|| {
            format!(
                "cannot open repository {name}: KMS did not decrypt its key (wrapped by {})",
                kms.key_id
            )
        })
}

#[derive(Serialize)]
struct Initialized {
    repository: String,
    id: String,
    encrypted: bool,
    /// The KMS key that wraps the master key (`--kms-key`), else null.
    kms_key_id: Option<String>,
}

async fn init(env: &Env, args: &RepoInitArgs) -> anyhow::Result<Exit> {
    let mut kms_key_id = None;
    // Made here: a KMS data key is bound to the repository id through its encryption context.
    let id = autosnap_repo::config::new_repository_id()?;
    let encryption = if let Some(key) = &args.kms_key {
        let ctx = env.connect().await?;
        let (k, v) = autosnap_repo::config::kms_encryption_context_for(&id);
        let data_key = generate_data_key(&ctx, ctx.region(), key, Some((&k, &v)))
            .await
            .with_context(|| {
                format!(
                    "cannot create repository {}: KMS did not give a data key",
                    args.repo.repo
                )
            })?;
        kms_key_id = Some(data_key.key_id.clone());
        EncryptionInit::DataKey {
            key: data_key.plaintext,
            kms: Some(KmsWrappedKey::new(
                data_key.key_id.clone(),
                &data_key.ciphertext,
            )),
        }
    } else if args.encrypt {
        let p = passphrase(&args.repo)?.ok_or_else(|| {
            UsageError(format!(
                "--encrypt needs a passphrase: set ${PASSWORD_ENV} or give --password-file"
            ))
        })?;
        EncryptionInit::Passphrase {
            passphrase: p,
            kdf: KdfParams::default(),
        }
    } else {
        EncryptionInit::None
    };
    if S3Location::parse(&args.repo.repo).is_none() {
        std::fs::create_dir_all(&args.repo.repo)
            .map_err(|e| anyhow::anyhow!("cannot create directory {}: {e}", args.repo.repo))?;
    }
    let backend = backend(env, &args.repo.repo).await?;
    let name = args.repo.repo.clone();
    let repo = blocking(move || {
        Repository::init_with_id(
            backend,
            InitOptions {
                encryption,
                ..InitOptions::default()
            },
            id,
        )
        .with_context(|| format!("cannot create repository {name}"))
    })
    .await?;
    let result = Initialized {
        repository: repo.backend().location(),
        id: repo.config().id.clone(),
        encrypted: repo.is_encrypted(),
        kms_key_id,
    };
    match env.output {
        OutputFormat::Json => output::print_json(&result)?,
        _ => output::print(&format!(
            "created {}repository {} at {}{}",
            if result.encrypted { "encrypted " } else { "" },
            result.id,
            result.repository,
            result
                .kms_key_id
                .as_ref()
                .map(|k| format!(" (master key wrapped by KMS key {k})"))
                .unwrap_or_default()
        )),
    }
    Ok(Exit::Success)
}

#[derive(Serialize)]
struct ArchiveRow {
    id: String,
    kind: String,
    source: String,
    lineage: String,
    time: chrono::DateTime<Utc>,
    created: chrono::DateTime<Utc>,
    parent: Option<String>,
    volumes: usize,
    /// Device names of an AMI archive's volumes (`/dev/xvda`, …); empty otherwise.
    devices: Vec<String>,
    size_bytes: u64,
    new_bytes: u64,
    new_stored_bytes: u64,
    blocks: u64,
    blocks_added: u64,
}

/// Bytes as a short binary size.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

async fn list(env: &Env, args: &RepoArgs) -> anyhow::Result<Exit> {
    let repo = open(env, args).await?;
    // An unreadable manifest is named on stderr and does not hide the others.
    let scan = blocking(move || Ok(repo.scan_archives()?)).await?;
    for bad in &scan.unreadable {
        tracing::warn!(
            "archive {} cannot be read ({}): `autosnap repo verify` checks the rest of the \
             repository",
            bad.id,
            bad.reason
        );
    }
    let manifests = scan.manifests;
    let rows: Vec<ArchiveRow> = manifests
        .iter()
        .map(|m| ArchiveRow {
            id: m.id.to_string(),
            kind: serde_json::to_value(m.source.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            source: m.source.id.clone(),
            lineage: m.lineage(),
            time: m.time,
            created: m.created,
            parent: m.parent.as_ref().map(ToString::to_string),
            volumes: m.volumes.len(),
            devices: m.device_names().into_iter().map(str::to_string).collect(),
            size_bytes: m.stats.size_bytes,
            new_bytes: m.stats.new_bytes,
            new_stored_bytes: m.stats.new_stored_bytes,
            blocks: m.stats.blocks,
            blocks_added: m.stats.blocks_added,
        })
        .collect();
    output::emit(env.output, &rows, || {
        let mut t = output::table([
            "ID", "KIND", "SOURCE", "TIME", "VOLUMES", "SIZE", "NEW", "STORED",
        ]);
        for r in &rows {
            t.add_row([
                r.id.clone(),
                r.kind.clone(),
                r.source.clone(),
                output::time(Some(r.time)),
                r.volumes.to_string(),
                size(r.size_bytes),
                size(r.new_bytes),
                size(r.new_stored_bytes),
            ]);
        }
        t
    })?;
    Ok(Exit::Success)
}

async fn verify(env: &Env, args: &RepoVerifyArgs) -> anyhow::Result<Exit> {
    let repo = open(env, &args.repo).await?;
    let read_data = args.read_data;
    let report = blocking(move || Ok(repo.verify(read_data)?)).await?;
    let ok = report.is_ok();
    match env.output {
        OutputFormat::Json => {
            #[derive(Serialize)]
            struct Out<'a> {
                ok: bool,
                damaged_archives: Vec<String>,
                #[serde(flatten)]
                report: &'a autosnap_repo::VerifyReport,
            }
            output::print_json(&Out {
                ok,
                damaged_archives: report
                    .damaged_archives()
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                report: &report,
            })?
        }
        _ => {
            let mut text =
                format!(
                "{} archives, {} block maps, {} chunks referenced ({} stored, {} unreferenced){}",
                report.archives,
                report.blockmaps,
                report.chunks_referenced,
                report.chunks_stored,
                report.chunks_unreferenced,
                if report.read_data {
                    format!(", {} chunks read ({})", report.chunks_read, size(report.bytes_read))
                } else {
                    String::new()
                }
            );
            for m in &report.bad_manifests {
                text.push_str(&format!("\nbad manifest {}: {}", m.object, m.reason));
            }
            for (what, list) in [
                ("missing block map", &report.missing_blockmaps),
                ("corrupt block map", &report.corrupt_blockmaps),
                ("missing chunk", &report.missing_chunks),
                ("corrupt chunk", &report.corrupt_chunks),
            ] {
                for d in list {
                    let archives: Vec<String> =
                        d.archives.iter().map(ToString::to_string).collect();
                    text.push_str(&format!(
                        "\n{what} {} ({}): {}; affects archives: {}",
                        d.id,
                        d.object,
                        d.reason,
                        if archives.is_empty() {
                            "none".into()
                        } else {
                            archives.join(", ")
                        }
                    ));
                }
            }
            for name in &report.unexpected_objects {
                text.push_str(&format!("\nwarning: unexpected object {name}"));
            }
            text.push_str(if ok {
                "\nrepository OK"
            } else {
                "\nrepository DAMAGED: the archives named above cannot be fully restored"
            });
            output::print(&text);
        }
    }
    Ok(if ok { Exit::Success } else { Exit::Failure })
}

async fn forget(env: &Env, args: &RepoForgetArgs) -> anyhow::Result<Exit> {
    args.keep
        .validate_flags()
        .map_err(|e| crate::exit::UsageError(e.to_string()))?;
    let policy = args.keep.clone();
    let repo = Arc::new(open(env, &args.repo).await?);
    let now = args.now.unwrap_or_else(Utc::now);
    let dry_run = args.dry_run;
    if !(args.yes || dry_run) && confirm::interactive() {
        // The dry run is the plan the question shows.
        let planned = forget_plan(&repo, &policy, now, true).await?;
        let forgets = planned.removed().count();
        let question = confirm::Question {
            skip: false,
            deletes: forgets,
            plan: forget_text(&planned, true),
            prompt: format!("Forget {}?", confirm::count(forgets, "archive", "archives")),
        };
        if question.ask().await? == Consent::Refused {
            return Ok(confirm::DECLINED);
        }
        // Archives added or removed while the question was open change what the policy
        // forgets: only what was shown may go.
        let again = forget_plan(&repo, &policy, now, true).await?;
        if removed_ids(&again) != removed_ids(&planned) {
            anyhow::bail!(
                "nothing forgotten: the repository changed while the question was open \
                 (archives were added or removed), so the plan shown is out of date; run the \
                 command again to see the new plan"
            );
        }
    }
    let plan = forget_plan(&repo, &policy, now, dry_run).await?;
    for bad in &plan.unreadable {
        tracing::warn!(
            "archive {} cannot be read, so it was left alone ({})",
            bad.id,
            bad.reason
        );
    }
    match env.output {
        OutputFormat::Json => output::print_json(&plan)?,
        _ => output::print(&forget_text(&plan, false)),
    }
    Ok(Exit::Success)
}

async fn forget_plan(
    repo: &Arc<Repository>,
    policy: &autosnap_core::retention::KeepPolicy,
    now: chrono::DateTime<Utc>,
    dry_run: bool,
) -> anyhow::Result<autosnap_repo::ForgetPlan> {
    let (repo, policy) = (Arc::clone(repo), policy.clone());
    blocking(move || Ok(repo.forget(&policy, now, dry_run)?)).await
}

fn removed_ids(plan: &autosnap_repo::ForgetPlan) -> Vec<String> {
    plan.removed().map(|d| d.id.to_string()).collect()
}

/// `repo forget`'s text: the policy, every archive's decision, the counts. As the plan
/// before the question (`asking`) it does not call itself a dry run.
fn forget_text(plan: &autosnap_repo::ForgetPlan, asking: bool) -> String {
    let mut t = output::table(["ID", "LINEAGE", "TIME", "DECISION", "REASONS"]);
    for g in &plan.groups {
        for d in &g.decisions {
            t.add_row([
                d.id.to_string(),
                g.lineage.clone(),
                output::time(Some(d.time)),
                match (d.keep, plan.dry_run) {
                    (true, _) => "keep",
                    (false, true) => "would forget",
                    (false, false) => "forgotten",
                }
                .to_string(),
                d.reasons.join(", "),
            ]);
        }
    }
    let table: Vec<String> = t
        .to_string()
        .lines()
        .map(|l| l.trim_end().to_string())
        .collect();
    format!(
        "policy: {}\n{}\n\n{} kept, {} {}{}",
        plan.policy,
        table.join("\n"),
        plan.kept().count(),
        plan.removed().count(),
        if plan.dry_run {
            if asking {
                "would be forgotten"
            } else {
                "would be forgotten (dry run)"
            }
        } else {
            "forgotten"
        },
        if plan.dry_run || plan.removed().count() == 0 {
            ""
        } else {
            "; run `autosnap repo gc` to free their chunks"
        }
    )
}

async fn gc(env: &Env, args: &RepoGcArgs) -> anyhow::Result<Exit> {
    let repo = Arc::new(open(env, &args.repo).await?);
    let dry_run = args.dry_run;
    if !(args.yes || dry_run) && confirm::interactive() {
        // The dry run is the plan the question shows. What the real run deletes is what is
        // unreferenced then: never anything an archive needs.
        let planned = gc_run(&repo, true).await?;
        let objects = planned.chunks_unreferenced + planned.blockmaps_unreferenced;
        let question = confirm::Question {
            skip: false,
            deletes: objects,
            plan: gc_text(&planned, true),
            prompt: format!(
                "Delete {} ({})?",
                confirm::count(objects, "unreferenced object", "unreferenced objects"),
                size(planned.bytes_unreferenced)
            ),
        };
        if question.ask().await? == Consent::Refused {
            return Ok(confirm::DECLINED);
        }
    }
    let report = gc_run(&repo, dry_run).await?;
    match env.output {
        OutputFormat::Json => output::print_json(&report)?,
        _ => output::print(&gc_text(&report, false)),
    }
    Ok(Exit::Success)
}

async fn gc_run(repo: &Arc<Repository>, dry_run: bool) -> anyhow::Result<autosnap_repo::GcReport> {
    let repo = Arc::clone(repo);
    blocking(move || Ok(repo.gc(dry_run)?)).await
}

/// `repo gc`'s one line: what is referenced, what is not, what was deleted (as the plan
/// before the question, `asking`, only the first two).
fn gc_text(report: &autosnap_repo::GcReport, asking: bool) -> String {
    format!(
        "{} archives; {} chunks and {} block maps referenced; {} chunks and {} block maps \
         unreferenced ({}){}",
        report.archives,
        report.chunks_referenced,
        report.blockmaps_referenced,
        report.chunks_unreferenced,
        report.blockmaps_unreferenced,
        size(report.bytes_unreferenced),
        if asking {
            String::new()
        } else if report.dry_run {
            " — dry run, nothing deleted".to_string()
        } else {
            format!(
                "; {} objects deleted, {} stale locks and {} temp files removed",
                report.deleted, report.stale_locks_removed, report.temporaries_removed
            )
        }
    )
}

/// One lock in `repo unlock`'s output.
#[derive(Debug, Serialize)]
struct LockRow {
    name: String,
    /// `shared` or `exclusive`; absent for a lock object that does not parse.
    kind: Option<String>,
    purpose: Option<String>,
    host: Option<String>,
    pid: Option<u32>,
    refreshed: Option<chrono::DateTime<Utc>>,
    expires: Option<chrono::DateTime<Utc>>,
    stale: bool,
    /// Removed by this run (or would be, with --dry-run).
    removed: bool,
}

#[derive(Debug, Serialize)]
struct UnlockReport {
    locks: Vec<LockRow>,
    removed: u64,
    dry_run: bool,
}

async fn unlock(env: &Env, args: &RepoUnlockArgs) -> anyhow::Result<Exit> {
    let backend = backend(env, &args.repo).await?;
    let (remove_all, dry_run) = (args.remove_all, args.dry_run);
    if remove_all && !(args.yes || dry_run) && confirm::interactive() {
        // Removing a live lock can break the archive or gc that holds it: show which first.
        let planned = unlock_report(&backend, &args.repo, true, true).await?;
        let live = planned
            .locks
            .iter()
            .filter(|r| r.removed && !r.stale)
            .count();
        let question = confirm::Question {
            skip: false,
            deletes: live,
            plan: unlock_text(&planned),
            prompt: format!(
                "Remove {} (their holders may still be running)?",
                confirm::count(live, "live lock", "live locks")
            ),
        };
        if question.ask().await? == Consent::Refused {
            return Ok(confirm::DECLINED);
        }
    }
    let report = unlock_report(&backend, &args.repo, remove_all, dry_run).await?;
    match env.output {
        OutputFormat::Json => output::print_json(&report)?,
        _ => output::print(&unlock_text(&report)),
    }
    Ok(Exit::Success)
}

/// Lists the locks and removes the stale ones (all with `remove_all`; none with `dry_run`).
async fn unlock_report(
    backend: &Arc<dyn Backend>,
    location: &str,
    remove_all: bool,
    dry_run: bool,
) -> anyhow::Result<UnlockReport> {
    use autosnap_repo::lock::{list_locks, remove_locks};
    let backend = Arc::clone(backend);
    let location = location.to_string();
    let (entries, removed) = blocking(move || {
        if !backend.exists(autosnap_repo::config::CONFIG_NAME)? {
            return Err(anyhow::anyhow!(
                "{location} is not an autosnap repository (it has no config object): check \
                 the path, or create one with `autosnap repo init`"
            ));
        }
        let entries = list_locks(
            &*backend,
            &autosnap_repo::LockOptions::default(),
            Utc::now(),
        )?;
        let chosen = entries.iter().filter(|e| remove_all || e.stale);
        let removed = if dry_run {
            chosen.count() as u64
        } else {
            remove_locks(&*backend, chosen.map(|e| e.name.as_str()))?
        };
        Ok((entries, removed))
    })
    .await?;
    let locks: Vec<LockRow> = entries
        .into_iter()
        .map(|e| LockRow {
            removed: remove_all || e.stale,
            kind: e.info.as_ref().map(|i| i.kind.to_string()),
            purpose: e.info.as_ref().map(|i| i.purpose.clone()),
            host: e.info.as_ref().map(|i| i.host.clone()),
            pid: e.info.as_ref().map(|i| i.pid),
            refreshed: e.info.as_ref().map(|i| i.refreshed),
            expires: e.expires,
            stale: e.stale,
            name: e.name,
        })
        .collect();
    Ok(UnlockReport {
        locks,
        removed,
        dry_run,
    })
}

/// `repo unlock`'s text: the locks with their state, then the counts.
fn unlock_text(report: &UnlockReport) -> String {
    let mut text = String::new();
    if !report.locks.is_empty() {
        let mut t = output::table([
            "LOCK",
            "KIND",
            "PURPOSE",
            "HOST",
            "PID",
            "REFRESHED",
            "EXPIRES",
            "STATE",
        ]);
        for r in &report.locks {
            let state = match (r.stale, r.removed) {
                (true, _) if r.kind.is_none() => "unreadable",
                (true, _) => "stale",
                (false, _) => "live",
            };
            let action = match (r.removed, report.dry_run) {
                (true, true) => ", would remove",
                (true, false) => ", removed",
                (false, _) => "",
            };
            t.add_row([
                r.name.clone(),
                output::opt(&r.kind),
                output::opt(&r.purpose),
                output::opt(&r.host),
                output::opt(&r.pid),
                output::time(r.refreshed),
                output::time(r.expires),
                format!("{state}{action}"),
            ]);
        }
        for line in t.to_string().lines() {
            text.push_str(line.trim_end());
            text.push('\n');
        }
    }
    let live = report.locks.iter().filter(|r| !r.removed).count();
    text.push_str(&format!(
        "{} locks; {} {}{}",
        report.locks.len(),
        report.removed,
        if report.dry_run {
            "would be removed"
        } else {
            "removed"
        },
        if live > 0 {
            format!(
                "; {live} live kept (their holders may still be running; --remove-all \
                 removes them too)"
            )
        } else {
            String::new()
        }
    ));
    text
}

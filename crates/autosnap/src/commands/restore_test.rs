//! `autosnap test-restore TARGET`, and the restore tests `run` performs for policies with
//! `restore_test = { every = … }`: volumes left by dead runs are deleted first, the newest
//! backup is tested (autosnap-aws's restore_test), the result is tagged on it and printed.

use std::fmt::Write as _;

use autosnap_aws::ebs::Ebs;
use autosnap_aws::restore_test::{
    self as engine, ArchiveSource, Backup, LeftOverVolume, RestoreTestOptions, RestoreTestReport,
    TestTarget,
};
use autosnap_aws::AwsContext;
use autosnap_core::plan::Plan;
use autosnap_core::policy::PolicyConfig;
use chrono::Utc;
use serde::Serialize;

use crate::cli::{OutputFormat, RepoArgs, TestRestoreArgs};
use crate::commands::Env;
use crate::exit::{Exit, UsageError};
use crate::output;

#[derive(Serialize)]
struct TestRestoreOutput<'a> {
    dry_run: bool,
    target: &'a str,
    /// Restore-test volumes of dead runs: deleted (or, in a dry run, that would be).
    left_over_volumes: Vec<LeftOverVolume>,
    /// The backup tested (or that would be).
    backup: Option<&'a Backup>,
    report: Option<&'a RestoreTestReport>,
}

fn options(env: &Env, run_id: String, args: &TestRestoreArgs) -> RestoreTestOptions {
    let _ = env;
    RestoreTestOptions {
        run_id,
        availability_zone: args.availability_zone.clone(),
        wait_timeout: args.wait_timeout,
        concurrency: args.concurrency,
        host: engine::host_name(),
        pid: std::process::id(),
    }
}

/// Opens the repository a test compares with.
async fn archive_source(
    env: &Env,
    repo: &str,
    password_file: Option<std::path::PathBuf>,
) -> anyhow::Result<ArchiveSource> {
    let args = RepoArgs {
        repo: repo.to_string(),
        password_file,
    };
    Ok(ArchiveSource {
        repo: super::repo::open(env, &args).await?,
        name: repo.to_string(),
    })
}

/// One line per snapshot of a report.
pub fn render_report(report: &RestoreTestReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "restore test {} of {}: {}",
        report.run_id,
        report.backup_id,
        if report.passed { "passed" } else { "FAILED" }
    );
    for c in &report.snapshots {
        let _ = writeln!(s, "  {}", c.snapshot_id);
        if let Some(v) = &c.volume.volume_id {
            let _ = writeln!(
                s,
                "    volume {v} in {}: {} after {:.0}s, {}",
                c.volume.availability_zone,
                c.volume.state,
                c.volume.seconds,
                if c.volume.deleted {
                    "deleted"
                } else {
                    "NOT deleted"
                }
            );
        }
        let _ = writeln!(
            s,
            "    {} block(s) read through the EBS direct APIs, checksums ok",
            c.blocks_read
        );
        match &c.archive {
            Some(a) => {
                let _ = writeln!(
                    s,
                    "    archive {} in {}: {} block(s) compared, {} differ",
                    a.archive_id, a.repo, a.blocks_compared, a.mismatched_blocks
                );
            }
            None => {
                let _ = writeln!(s, "    no archive compared");
            }
        }
        if let Some(fs) = &c.filesystem {
            let _ = writeln!(s, "    {}", fs.describe());
        }
        for p in &c.problems {
            let _ = writeln!(s, "    problem: {p}");
        }
        for l in &c.left_behind {
            let _ = writeln!(s, "    left behind: {l}");
        }
    }
    if report.recorded {
        let _ = write!(
            s,
            "recorded on {} (tag {})",
            report.backup_id,
            autosnap_core::restore_test::RESULT_TAG
        );
    } else {
        let _ = write!(s, "not recorded on the backup");
    }
    s
}

pub async fn test_restore(env: &Env, args: &TestRestoreArgs) -> anyhow::Result<Exit> {
    let target = TestTarget::parse(&args.target).ok_or_else(|| {
        UsageError(format!(
            "TARGET {:?} is not a snapshot (snap-…), volume (vol-…) or instance (i-…) id",
            args.target
        ))
    })?;
    if args.concurrency == 0 {
        return Err(UsageError("--concurrency must be at least 1".into()).into());
    }
    if let Some(p) = &args.policy {
        if !env
            .settings
            .config
            .file
            .policies
            .iter()
            .any(|c| &c.name == p)
        {
            tracing::warn!("no policy named {p} in the config: looking for its tag anyway");
        }
    }
    let ctx = env.connect().await?;
    let ec2 = ctx.ec2().await?;
    let now = Utc::now();
    let run_id = autosnap_core::restore_test::run_id(now, std::process::id());
    let opts = options(env, run_id.clone(), args);
    // The repository first: a wrong passphrase fails before anything is created.
    let archive = match &args.repo {
        Some(r) => Some(archive_source(env, r, args.password_file.clone()).await?),
        None => None,
    };
    let backup = engine::newest_backup(&ec2, &target, args.policy.as_deref()).await?;
    let Some(backup) = backup else {
        let of_policy = args
            .policy
            .as_deref()
            .map(|p| format!(" made by policy {p}"))
            .unwrap_or_default();
        return Err(anyhow::anyhow!(
            "no completed backup of {}{of_policy} in {}: nothing to test (`autosnap snapshot \
             list` shows the snapshots)",
            args.target,
            ec2.region()
        ));
    };

    if args.dry_run {
        let left = engine::left_over_volumes(&ec2, &run_id, &opts.host, now).await?;
        let left_over_volumes: Vec<LeftOverVolume> = left
            .into_iter()
            .map(|(volume_id, why)| LeftOverVolume {
                volume_id,
                region: ec2.region().to_string(),
                why,
                error: None,
            })
            .collect();
        let out = TestRestoreOutput {
            dry_run: true,
            target: &args.target,
            left_over_volumes,
            backup: Some(&backup),
            report: None,
        };
        super::print_plan(env, &out, || {
            let mut s = String::new();
            for l in &out.left_over_volumes {
                let _ = writeln!(
                    s,
                    "would delete left-over volume {}: {}",
                    l.volume_id, l.why
                );
            }
            let _ = writeln!(
                s,
                "would test backup {} of {}:",
                backup.backup_id, args.target
            );
            for snap in &backup.snapshots {
                let _ = writeln!(
                    s,
                    "  {}: create a volume from it{}, wait for it to be available (at most \
                     {}s), delete it; read its blocks{}; check the filesystem superblock",
                    snap.snapshot_id,
                    args.availability_zone
                        .as_deref()
                        .map(|a| format!(" in {a}"))
                        .unwrap_or_default(),
                    args.wait_timeout.as_secs(),
                    args.repo
                        .as_deref()
                        .map(|r| format!(" and compare them with its archive in {r}, if any"))
                        .unwrap_or_default()
                );
            }
            let _ = write!(
                s,
                "then tag the result on it ({})",
                autosnap_core::restore_test::RESULT_TAG
            );
            s
        })?;
        return Ok(Exit::Success);
    }

    let left_over_volumes = engine::delete_left_over_volumes(&ec2, &run_id, &opts.host, now)
        .await
        .unwrap_or_else(|e| {
            tracing::warn!("cannot look for left-over restore-test volumes: {e}");
            Vec::new()
        });
    let ebs = Ebs::new(&ctx);
    // Ctrl-C: the volume this run made is deleted before the command ends.
    let mut interrupt = super::Interrupt::listen()?;
    let test = engine::test_backup(&ec2, &ebs, &backup, archive.as_ref(), &opts, true);
    let Some(report) = interrupt.or(test).await else {
        let deleted = engine::delete_run_volumes(&ec2, &run_id).await;
        let message = match deleted {
            Ok(v) if v.is_empty() => format!(
                "restore test {run_id} of {} stopped; it made no volume that is left",
                backup.backup_id
            ),
            Ok(v) => format!(
                "restore test {run_id} of {} stopped; deleted its volume(s) {}",
                backup.backup_id,
                v.join(", ")
            ),
            Err(e) => format!(
                "restore test {run_id} of {} stopped; its volume could not be deleted ({e}): the \
                 next test-restore or policy run deletes it",
                backup.backup_id
            ),
        };
        output::report_error("interrupted", &message, Some(&backup.backup_id));
        return Ok(Exit::Interrupted);
    };
    let out = TestRestoreOutput {
        dry_run: false,
        target: &args.target,
        left_over_volumes,
        backup: Some(&backup),
        report: Some(&report),
    };
    match env.output {
        OutputFormat::Json => output::print_json(&out)?,
        _ => {
            let mut s = String::new();
            for l in &out.left_over_volumes {
                let _ = writeln!(
                    s,
                    "deleted left-over volume {}: {}{}",
                    l.volume_id,
                    l.why,
                    l.error
                        .as_deref()
                        .map(|e| format!(" (failed: {e})"))
                        .unwrap_or_default()
                );
            }
            s.push_str(&render_report(&report));
            output::print(&s);
        }
    }
    if report.passed {
        Ok(Exit::Success)
    } else {
        output::report_error(
            "restore_test_failed",
            &format!(
                "restore test of {} failed: {}",
                report.backup_id,
                report.reason.as_deref().unwrap_or("see the report")
            ),
            Some(&report.backup_id),
        );
        Ok(Exit::Failure)
    }
}

// ---- in policy runs ----------------------------------------------------------------------------

/// A restore test a policy run performed.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyRestoreTest {
    pub policy: String,
    pub target_id: String,
    pub region: String,
    /// Null when the target had no completed backup to test, or the test could not start.
    pub report: Option<RestoreTestReport>,
    pub error: Option<String>,
}

/// Deletes the restore-test volumes dead runs left in `regions` (warnings only: a run does not
/// fail over a left-over volume).
pub async fn clean_up_left_overs(ctx: &AwsContext, regions: &[String]) {
    let now = Utc::now();
    let run = autosnap_core::restore_test::run_id(now, std::process::id());
    let host = engine::host_name();
    for r in regions {
        let result = match ctx.ec2_in(r).await {
            Ok(ec2) => engine::delete_left_over_volumes(&ec2, &run, &host, now).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!("cannot look for left-over restore-test volumes in {r}: {e}");
        }
    }
}

/// The restore tests a run performs: every target whose policy has `restore_test` and whose
/// plan says one is due, on its newest completed backup (the one this run made, when it
/// completed), one after another.
pub async fn run_due_tests(
    env: &Env,
    ctx: &AwsContext,
    plan: &Plan,
    policies: &[PolicyConfig],
    wait_timeout: std::time::Duration,
    run_id: &str,
    stop_at: Option<std::time::Instant>,
) -> Vec<PolicyRestoreTest> {
    let mut out = Vec::new();
    for p in &plan.policies {
        let Some(config) = policies.iter().find(|c| c.name == p.policy) else {
            continue;
        };
        let Some(rt) = &config.restore_test else {
            continue;
        };
        let archive = match &rt.repo {
            None => None,
            Some(r) => match archive_source(env, r, None).await {
                Ok(a) => Some(a),
                Err(e) => {
                    tracing::warn!(
                        "policy {}: cannot open repository {r} for restore tests ({e:#}); \
                         testing without comparing archives",
                        p.policy
                    );
                    None
                }
            },
        };
        for t in &p.targets {
            if !t.restore_test.as_ref().is_some_and(|r| r.due) {
                continue;
            }
            // Past the run's time limit no test starts (the caller lists them as left).
            if stop_at.is_some_and(|s| std::time::Instant::now() >= s) {
                continue;
            }
            let mut row = PolicyRestoreTest {
                policy: p.policy.clone(),
                target_id: t.target_id.clone(),
                region: t.region.clone(),
                report: None,
                error: None,
            };
            let result = async {
                let ec2 = ctx.ec2_in(&t.region).await?;
                let target = TestTarget::parse(&t.target_id).ok_or_else(|| {
                    anyhow::anyhow!("{} is not a volume or instance id", t.target_id)
                })?;
                let Some(backup) = engine::newest_backup(&ec2, &target, Some(&p.policy)).await?
                else {
                    return Ok(None);
                };
                let opts = RestoreTestOptions {
                    run_id: run_id.to_string(),
                    availability_zone: None,
                    wait_timeout,
                    concurrency: autosnap_aws::ebs::DEFAULT_CONCURRENCY,
                    host: engine::host_name(),
                    pid: std::process::id(),
                };
                let ebs = Ebs::new(ctx);
                let report =
                    engine::test_backup(&ec2, &ebs, &backup, archive.as_ref(), &opts, true).await;
                Ok::<_, anyhow::Error>(Some(report))
            }
            .await;
            match result {
                Ok(Some(report)) => {
                    tracing::info!(
                        "restore test of {} ({}, policy {}): {}",
                        report.backup_id,
                        t.target_id,
                        p.policy,
                        if report.passed {
                            "passed".to_string()
                        } else {
                            format!("FAILED: {}", report.reason.as_deref().unwrap_or(""))
                        }
                    );
                    row.report = Some(report);
                }
                Ok(None) => {
                    row.error = Some("no completed backup to test yet".into());
                }
                Err(e) => row.error = Some(format!("{e:#}")),
            }
            out.push(row);
        }
    }
    out
}

/// Whether a run's restore test counts as a failure of the run.
pub fn failed(t: &PolicyRestoreTest) -> bool {
    match &t.report {
        Some(r) => !r.passed,
        None => t.error.as_deref() != Some("no completed backup to test yet"),
    }
}

/// After Ctrl-C during a run's restore tests: deletes the volumes of run `run_id` in the
/// plan's source regions (warnings only; the next run deletes what is left).
pub async fn interrupted_in_run(ctx: &AwsContext, plan: &Plan, run_id: &str) {
    let regions: std::collections::BTreeSet<&str> = plan
        .policies
        .iter()
        .flat_map(|p| &p.targets)
        .filter(|t| t.restore_test.as_ref().is_some_and(|r| r.due))
        .map(|t| t.region.as_str())
        .collect();
    for r in regions {
        let deleted = match ctx.ec2_in(r).await {
            Ok(ec2) => engine::delete_run_volumes(&ec2, run_id).await,
            Err(e) => Err(e),
        };
        match deleted {
            Ok(v) if !v.is_empty() => {
                tracing::warn!("restore tests stopped: deleted volume(s) {}", v.join(", "))
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(
                "restore tests stopped: cannot delete their volumes in {r} ({e}); the next run \
                 deletes them"
            ),
        }
    }
}

//! The policy commands: `plan`, `run`, `prune`, `status` and `daemon`.
//! Each reads the account once, builds a plan with the pure planner in
//! autosnap-core, prints it, and (for `run`, `prune` and `daemon`) executes
//! it through autosnap-aws.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context;
use autosnap_aws::execute::{self, RunObserver, RunOptions, RunReport};
use autosnap_aws::{inventory, AwsContext};
use autosnap_core::plan::{self, CopySource, Inventory, Plan, PlanOptions};
use autosnap_core::policy::{BackupKind, PolicyConfig};
use autosnap_core::schedule::HealthState;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::cli::{DaemonArgs, OutputFormat, PolicyArgs, PruneArgs, RunArgs, StatusArgs};
use crate::commands::confirm::{self, Consent};
use crate::commands::Env;
use crate::exit::{Exit, UsageError};
use crate::output;

/// The policies to work on: all configured ones, or those named.
fn select_policies(env: &Env, args: &PolicyArgs) -> anyhow::Result<Vec<PolicyConfig>> {
    let all = &env.settings.config.file.policies;
    if all.is_empty() {
        let file = match &env.settings.config.path {
            Some((p, _)) => p.display().to_string(),
            None => "no config file was found".into(),
        };
        return Err(UsageError(format!(
            "no backup policies are configured ({file}): add a [[policy]] section (see the README's \"Backup policies\")"
        ))
        .into());
    }
    if args.policies.is_empty() {
        return Ok(all.clone());
    }
    let mut out = Vec::new();
    for name in &args.policies {
        match all.iter().find(|p| &p.name == name) {
            Some(p) => out.push(p.clone()),
            None => {
                let known: Vec<&str> = all.iter().map(|p| p.name.as_str()).collect();
                return Err(UsageError(format!(
                    "no policy named '{name}': the config has {}",
                    known.join(", ")
                ))
                .into());
            }
        }
    }
    Ok(out)
}

/// Reads the account and plans.
pub(super) async fn make_plan(
    env: &Env,
    ctx: &AwsContext,
    policies: &[PolicyConfig],
    all_kinds: bool,
    include_creates: bool,
) -> anyhow::Result<(Plan, Inventory)> {
    let region = ctx.region().to_string();
    // The file was checked against its own region; check again against the
    // region in effect (it may come from the command line or environment).
    autosnap_core::policy::validate_policies(policies, Some(&region))
        .map_err(|e| UsageError(e.to_string()))?;
    let inventory = inventory::gather(ctx, policies, &region, all_kinds).await?;
    let mut options = PlanOptions::from_defaults(&env.settings.config.file.defaults);
    options.include_creates = include_creates;
    let mut plan = plan::plan(policies, &inventory, &region, Utc::now(), &options);
    // Backups retention would delete but a snapshot lock keeps are shown as protected, so the
    // plan, the question and the run agree. Unreadable locks leave the plan as it is: the run
    // then deletes nothing in that region and says why.
    let mut locks = Vec::new();
    for (r, ids) in autosnap_core::lock::deletion_candidates(&plan) {
        match ctx.ec2_in(&r).await?.locked_snapshots(&ids).await {
            Ok(l) => locks.extend(l),
            Err(e) => tracing::warn!("cannot read snapshot locks in {r}: {e}"),
        }
    }
    autosnap_core::lock::protect_locked_backups(&mut plan, &locks);
    // Deleting a snapshot archived less than 90 days ago is billed for the rest: say so on the
    // deletion. Unreadable tiers leave the plan as it is, with a warning.
    let mut archived = std::collections::HashMap::new();
    for (r, ids) in autosnap_core::lock::deletion_candidates(&plan) {
        match ctx.ec2_in(&r).await?.snapshot_tier_status(&ids).await {
            Ok(st) => archived.extend(st.into_iter().filter_map(|s| {
                (s.storage_tier == autosnap_core::tier::StorageTier::Archive)
                    .then_some(s.archived_on)
                    .flatten()
                    .map(|t| (s.snapshot_id, t))
            })),
            Err(e) => tracing::warn!("cannot read snapshot tiers in {r}: {e}"),
        }
    }
    autosnap_core::tier::note_early_deletions(&mut plan, &archived);
    // Where each deletion goes: the Recycle Bin (for how long, by which rule) or for good.
    // Unreadable rules are said on the deletion, never a reason to stop.
    crate::commands::recycle_bin::note_plan(ctx, &mut plan).await;
    autosnap_core::restore_test::annotate(&mut plan, policies, &inventory.backups);
    // `archive_after`: `run` archives (after copies, before pruning); `prune` does not.
    if include_creates {
        autosnap_aws::tier::plan_archives(ctx, &mut plan, policies, &inventory).await?;
    }
    Ok((plan, inventory))
}

/// Counts of what a plan would do.
#[derive(Debug, Default, Serialize)]
pub(super) struct PlanSummary {
    creates: usize,
    copies: usize,
    /// Backups `run` moves to the archive tier (`archive_after`).
    archives: usize,
    deletions: usize,
    /// Copies to make into backup accounts (copy rules with `account`).
    #[serde(skip_serializing_if = "is_zero")]
    account_copies: usize,
    /// Copies in backup accounts that their retention deletes.
    #[serde(skip_serializing_if = "is_zero")]
    account_deletions: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

pub(super) fn summarize(plan: &Plan) -> PlanSummary {
    PlanSummary {
        creates: plan.creates().count(),
        copies: plan.copies().count(),
        archives: autosnap_core::archive_plan::archives(plan).count(),
        deletions: plan.deletions().count(),
        account_copies: super::backup_account::copies(plan),
        account_deletions: super::backup_account::deletions(plan),
    }
}

fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// The human form of a plan: per policy and target, why it is (not) due,
/// what will be created and copied, and every backup's fate with reasons.
pub(super) fn render_plan(plan: &Plan, show_creates: bool) -> String {
    let mut s = String::new();
    for p in &plan.policies {
        let _ = writeln!(
            s,
            "policy {} ({}{}, schedule \"{}\", {})",
            p.policy,
            p.resource,
            if p.kind == BackupKind::Ami {
                " AMIs"
            } else {
                ""
            },
            p.schedule,
            p.retention
        );
        if p.targets.is_empty() {
            let _ = writeln!(s, "  no targets match this policy");
        }
        for t in &p.targets {
            let name = t
                .name
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            let due = if !show_creates {
                String::new()
            } else if t.due {
                "due: ".into()
            } else {
                "not due: ".into()
            };
            let _ = writeln!(
                s,
                "  {}{name} in {}: {due}{}",
                t.target_id, t.region, t.due_reason
            );
            if let (true, Some(c)) = (show_creates, &t.create) {
                let tags: Vec<String> = c.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
                match &c.ami {
                    Some(ami) => {
                        let mut how = vec![if ami.reboot {
                            "with reboot"
                        } else {
                            "no reboot"
                        }];
                        if ami.encrypt {
                            how.push("encrypted");
                        }
                        let key = ami
                            .kms_key
                            .as_deref()
                            .map(|k| format!(", key {k}"))
                            .unwrap_or_default();
                        let _ = writeln!(
                            s,
                            "    + create AMI \"{}\" ({}{key})",
                            ami.name,
                            how.join(", ")
                        );
                    }
                    None => {
                        let _ =
                            writeln!(s, "    + create {} snapshot \"{}\"", c.kind, c.description);
                    }
                }
                let _ = writeln!(s, "      tags: {}", tags.join(", "));
                if let Some(lock) = &c.lock {
                    let _ = writeln!(s, "      then lock: {}", lock.describe());
                }
            }
            for c in &t.copies {
                let what = match &c.source {
                    CopySource::New => "the new backup".to_string(),
                    CopySource::Existing { backup_id, .. } => backup_id.clone(),
                };
                let key = c
                    .kms_key
                    .as_deref()
                    .map(|k| format!(" with key {k}"))
                    .unwrap_or_default();
                let _ = writeln!(s, "    + copy {what} to {}{key}: {}", c.to_region, c.reason);
                if let Some(lock) = &c.lock {
                    let _ = writeln!(s, "      then lock: {}", lock.describe());
                }
            }
            if let (true, Some(rt)) = (show_creates, &t.restore_test) {
                if let Some(every) = &rt.every {
                    let _ = writeln!(
                        s,
                        "    {} restore test (every {every}): {}",
                        if rt.due { "+ due:" } else { "  not due:" },
                        rt.reason
                    );
                }
            }
            for g in &t.groups {
                if g.backups.is_empty() {
                    continue;
                }
                let _ = writeln!(s, "    backups in {} ({}):", g.region, g.retention);
                for b in &g.backups {
                    let (mark, why) = match (b.delete, &b.protected, b.keep) {
                        (true, _, _) => ("- delete", {
                            let mut why = match &b.archive_charge {
                                Some(c) => format!("no rule keeps it; {c}"),
                                None => "no rule keeps it".to_string(),
                            };
                            if let Some(f) = &b.recycle_bin {
                                why = format!("{why}; {}", f.note);
                            }
                            why
                        }),
                        (false, Some(p), false) => ("  keep  ", format!("protected: {p}")),
                        (false, Some(p), true) => (
                            "  keep  ",
                            format!("{}; protected: {p}", b.reasons.join(", ")),
                        ),
                        (false, None, _) => ("  keep  ", b.reasons.join(", ")),
                    };
                    let _ = writeln!(s, "      {mark} {}  {}  {why}", b.backup_id, time(b.time));
                }
                // `archive_after`: what `run` archives, with the cost trade-off, and why not.
                for a in &g.archives {
                    let mark = if a.archive {
                        "~ archive"
                    } else {
                        "  not archived"
                    };
                    let _ = writeln!(s, "      {mark} {}", a.describe());
                }
            }
            // Copies into backup accounts: `→ 222222222222 us-west-2`.
            super::backup_account::render_target(&mut s, t, show_creates);
        }
        s.push('\n');
    }
    let sum = summarize(plan);
    if show_creates {
        let _ = write!(
            s,
            "plan: {} to create, {} to copy, {}{} to delete",
            sum.creates,
            sum.copies,
            // Only with `archive_after` at work, so that other plans read as before.
            match sum.archives {
                0 => String::new(),
                n => format!("{n} to archive, "),
            },
            sum.deletions
        );
    } else {
        let _ = write!(s, "plan: {} to delete", sum.deletions);
    }
    if sum.account_copies + sum.account_deletions > 0 {
        let _ = write!(
            s,
            "; in backup accounts: {} to copy, {} to delete",
            sum.account_copies, sum.account_deletions
        );
    }
    s
}

pub async fn plan(env: &Env, args: &PolicyArgs) -> anyhow::Result<Exit> {
    let policies = select_policies(env, args)?;
    if super::accounts::configured(env, args)? {
        return super::accounts::plan(env, args, &policies).await;
    }
    let ctx = env.connect().await?;
    let backups = super::backup_account::connect(env, &ctx, &policies).await;
    let (plan, _) =
        super::backup_account::plan(env, &ctx, None, &backups, &policies, false, true).await?;
    match env.output {
        OutputFormat::Json => output::print_json(&plan)?,
        _ => output::print(&render_plan(&plan, true)),
    }
    Ok(Exit::Success)
}

/// Keeps what a run has done so far, for the report when it is stopped
/// midway (Ctrl-C in `run`, a shutdown timeout in `daemon`).
#[derive(Default)]
pub(super) struct RecordingProgress {
    so_far: std::sync::Mutex<RunReport>,
}

impl RecordingProgress {
    pub(super) fn so_far(&self) -> RunReport {
        self.so_far.lock().expect("not poisoned").clone()
    }
}

impl RunObserver for RecordingProgress {
    fn created(&self, c: &execute::Created) {
        self.so_far
            .lock()
            .expect("not poisoned")
            .created
            .push(c.clone());
    }
    fn copied(&self, c: &execute::Copied) {
        self.so_far
            .lock()
            .expect("not poisoned")
            .copied
            .push(c.clone());
    }
    fn deleted(&self, d: &execute::Deleted) {
        self.so_far
            .lock()
            .expect("not poisoned")
            .deleted
            .push(d.clone());
    }
    fn archived(&self, a: &execute::Archived) {
        self.so_far
            .lock()
            .expect("not poisoned")
            .archived
            .push(a.clone());
    }
}

/// The planned actions a stopped run did not record, one line per kind.
pub(super) fn not_done(plan: &Plan, so_far: &RunReport) -> Vec<String> {
    let sum = summarize(plan);
    let mut left = Vec::new();
    for (planned, done, what) in [
        (sum.creates, so_far.created.len(), "backup(s) not created"),
        (sum.copies, so_far.copied.len(), "copie(s) not made"),
        (sum.archives, so_far.archived.len(), "archive(s) not made"),
        (sum.deletions, so_far.deleted.len(), "deletion(s) not made"),
    ] {
        if planned > done {
            left.push(format!("{} {what}", planned - done));
        }
    }
    if !left.is_empty() {
        left.push(
            "`autosnap run` again does the rest (it finds what exists, including anything \
             in flight when the run stopped); `autosnap plan` shows what is left"
                .into(),
        );
    }
    left
}

#[derive(Serialize)]
struct RunOutput<'a> {
    dry_run: bool,
    plan: &'a Plan,
    summary: PlanSummary,
    report: Option<&'a RunReport>,
    /// True when Ctrl-C or SIGTERM stopped the run: `report` is what it did until then.
    interrupted: bool,
    /// The restore tests the run performed (policies with `restore_test`).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    restore_tests: &'a [super::restore_test::PolicyRestoreTest],
}

/// Table mode prints the plan before acting (so the log lines of the run
/// follow it) and a summary after; JSON mode prints one document at the end.
fn print_plan_first(env: &Env, plan: &Plan, show_creates: bool) {
    if env.output != OutputFormat::Json {
        output::print(&render_plan(plan, show_creates));
    }
}

fn print_report(
    env: &Env,
    plan: &Plan,
    report: Option<&RunReport>,
    dry_run: bool,
    restore_tests: &[super::restore_test::PolicyRestoreTest],
) -> anyhow::Result<()> {
    match env.output {
        OutputFormat::Json => output::print_json(&RunOutput {
            dry_run,
            plan,
            summary: summarize(plan),
            report,
            interrupted: false,
            restore_tests,
        }),
        _ => {
            if let Some(r) = report {
                let mut s = report_text(r);
                for t in restore_tests {
                    let result = match (&t.report, &t.error) {
                        (Some(r), _) if r.passed => format!("{} passed", r.backup_id),
                        (Some(r), _) => format!(
                            "{} FAILED: {}",
                            r.backup_id,
                            r.reason.as_deref().unwrap_or_default()
                        ),
                        (None, e) => format!("not done: {}", e.as_deref().unwrap_or_default()),
                    };
                    let _ = write!(
                        s,
                        "\n  restore test of {} in {} (policy {}): {result}",
                        t.target_id, t.region, t.policy
                    );
                }
                output::print(&s);
            } else if dry_run {
                output::print("\ndry run: nothing was changed");
            }
            Ok(())
        }
    }
}

/// What a run did, as the lines printed after its plan: counts, then each failure, archive,
/// skipped prune and locked backup (one account's run or the only one).
pub(super) fn report_text(r: &RunReport) -> String {
    let mut s = format!(
        "\ndone: {} created, {} copied, {}{} deleted, {} failed",
        r.created.len(),
        r.copied.len(),
        match r.archived.len() {
            0 => String::new(),
            n => format!("{n} archived, "),
        },
        r.deleted.len(),
        r.failures.len()
    );
    for f in &r.failures {
        let _ = write!(
            s,
            "\n  failed: policy {} {} {} in {}: {}",
            f.policy, f.action, f.target_id, f.region, f.error
        );
    }
    for a in &r.archived {
        let _ = write!(
            s,
            "\n  archived {} of {} in {} (policy {})",
            a.backup_id, a.target_id, a.region, a.policy
        );
    }
    for skipped in &r.skipped_prunes {
        let _ = write!(s, "\n  skipped: {skipped}");
    }
    // Retention wanted these gone; a snapshot lock keeps them (not a failure).
    for l in &r.locked {
        let _ = write!(
            s,
            "\n  kept {} of {} in {} (policy {}): {}",
            l.backup_id, l.target_id, l.region, l.policy, l.reason
        );
    }
    s.push_str(&super::time_limit::left_text(&r.left));
    super::backup_account::report_lines(&mut s, r);
    s
}

fn exit_for(report: &RunReport) -> Exit {
    Exit::from_counts(report.successes().max(1), report.failures.len())
}

pub async fn run(env: &Env, args: &RunArgs) -> anyhow::Result<Exit> {
    let policies = select_policies(env, &args.policy)?;
    if super::accounts::configured(env, &args.policy)? {
        return super::accounts::run(env, args, &policies).await;
    }
    let timeout = args.wait_timeout;
    let stop_at = super::time_limit::stop_at(args.time_limit);
    let ctx = env.connect().await?;
    let backups = super::backup_account::connect(env, &ctx, &policies).await;
    let (plan, _) =
        super::backup_account::plan(env, &ctx, None, &backups, &policies, false, true).await?;
    print_plan_first(env, &plan, true);
    if args.dry_run {
        print_report(env, &plan, None, true, &[])?;
        return Ok(Exit::Success);
    }
    let opts = RunOptions {
        create: true,
        copy: true,
        prune: true,
        archive: true,
        wait_timeout: timeout,
        pacing: args.ec2_share,
        stop_at,
    };
    let freezer = super::consistent::PolicyFreezer::detect(
        &ctx,
        &policies,
        autosnap_freeze::AfterCleanup::Terminate,
    )
    .await
    .map(|f| f.with_own_paths(env.settings.config.path.iter().map(|(p, _)| p.clone())));
    let local = freezer
        .as_ref()
        .map(|f| f as &dyn autosnap_aws::execute::LocalSnapshotter);
    // Ctrl-C stops the run (mostly waiting for new snapshots to complete
    // before copying them) and reports what it did; nothing is cancelled.
    let mut interrupt = super::Interrupt::listen()?;
    if policies.iter().any(|p| p.restore_test.is_some()) {
        let (sources, _) = inventory::regions(&policies, ctx.region());
        super::restore_test::clean_up_left_overs(&ctx, &sources).await;
    }
    let progress = RecordingProgress::default();
    let run = execute::execute(&ctx, &plan, &opts, &progress, local);
    let Some(report) = interrupt.or(run).await else {
        let so_far = progress.so_far();
        match env.output {
            OutputFormat::Json => output::print_json(&RunOutput {
                dry_run: false,
                plan: &plan,
                summary: summarize(&plan),
                report: Some(&so_far),
                interrupted: true,
                restore_tests: &[],
            })?,
            _ => print_report(env, &plan, Some(&so_far), false, &[])?,
        }
        super::report_interrupted_with(
            "the run's new snapshots and copies",
            "autosnap plan",
            &not_done(&plan, &so_far),
        );
        return Ok(Exit::Interrupted);
    };
    let mut report = report?;
    // Copies into backup accounts, and their retention there, once this account's are done.
    super::backup_account::execute(&ctx, None, &backups, &plan, &mut report, &opts).await?;
    // Restore tests that are due, on the backups the run made (Ctrl-C deletes their volumes).
    let restore_tests = if opts.out_of_time() {
        report
            .left
            .extend(super::time_limit::restore_tests_left(&plan));
        Vec::new()
    } else {
        let test_run = autosnap_core::restore_test::run_id(Utc::now(), std::process::id());
        let tests = super::restore_test::run_due_tests(
            env, &ctx, &plan, &policies, timeout, &test_run, stop_at,
        );
        let Some(restore_tests) = interrupt.or(tests).await else {
            super::restore_test::interrupted_in_run(&ctx, &plan, &test_run).await;
            print_report(env, &plan, Some(&report), false, &[])?;
            return Ok(Exit::Interrupted);
        };
        if opts.out_of_time() {
            let tested = |l: &execute::NotStarted| {
                restore_tests
                    .iter()
                    .any(|t| t.policy == l.policy && t.target_id == l.target_id)
            };
            let not_tested = super::time_limit::restore_tests_left(&plan);
            report
                .left
                .extend(not_tested.into_iter().filter(|l| !tested(l)));
        }
        restore_tests
    };
    print_report(env, &plan, Some(&report), false, &restore_tests)?;
    let failed_tests = restore_tests
        .iter()
        .filter(|t| super::restore_test::failed(t))
        .count();
    Ok(if report.failures.is_empty() && failed_tests == 0 {
        Exit::Success
    } else {
        Exit::from_counts(
            report.successes().max(1) + restore_tests.len() - failed_tests,
            report.failures.len() + failed_tests,
        )
    })
}

/// `prune`'s question at a terminal: `Delete 3 snapshots and 1 AMI (with its 2 snapshots)?`.
/// `run` never asks: it is the scheduled command (cron, daemon), applying the retention the
/// config declares; `plan` and `prune` are where a person looks before deleting.
fn prune_question(env: &Env, plan: &Plan, yes: bool) -> confirm::Question {
    let (mut snapshots, mut amis, mut ami_snapshots) = (0, 0, 0);
    for (p, _, _, b) in plan.deletions() {
        if p.kind == BackupKind::Ami {
            amis += 1;
            ami_snapshots += b.snapshot_ids.len();
        } else {
            snapshots += b.snapshot_ids.len();
        }
    }
    let mut parts = Vec::new();
    if snapshots > 0 {
        parts.push(confirm::count(snapshots, "snapshot", "snapshots"));
    }
    if amis > 0 {
        let mut a = confirm::count(amis, "AMI", "AMIs");
        if ami_snapshots > 0 {
            a.push_str(&format!(
                " (with {} {})",
                if amis == 1 { "its" } else { "their" },
                confirm::count(ami_snapshots, "snapshot", "snapshots")
            ));
        }
        parts.push(a);
    }
    confirm::Question {
        skip: yes,
        deletes: plan.deletions().count(),
        // In table mode the plan is on the screen already; with -o json it is not.
        plan: if env.output == OutputFormat::Json {
            render_plan(plan, false)
        } else {
            String::new()
        },
        prompt: format!("Delete {}?", parts.join(" and ")),
    }
}

pub async fn prune(env: &Env, args: &PruneArgs) -> anyhow::Result<Exit> {
    let policies = select_policies(env, &args.policy)?;
    if super::accounts::configured(env, &args.policy)? {
        return super::accounts::prune(env, args, &policies).await;
    }
    let stop_at = super::time_limit::stop_at(args.time_limit);
    let ctx = env.connect().await?;
    let backups = super::backup_account::connect(env, &ctx, &policies).await;
    let (plan, _) =
        super::backup_account::plan(env, &ctx, None, &backups, &policies, false, false).await?;
    print_plan_first(env, &plan, false);
    if args.dry_run {
        print_report(env, &plan, None, true, &[])?;
        return Ok(Exit::Success);
    }
    if prune_question(env, &plan, args.yes).ask().await? == Consent::Refused {
        return Ok(confirm::DECLINED);
    }
    let opts = RunOptions {
        create: false,
        copy: false,
        prune: true,
        archive: false,
        wait_timeout: Duration::from_secs(0),
        pacing: args.ec2_share,
        stop_at,
    };
    let mut report = execute::execute(&ctx, &plan, &opts, &(), None).await?;
    super::backup_account::execute(&ctx, None, &backups, &plan, &mut report, &opts).await?;
    print_report(env, &plan, Some(&report), false, &[])?;
    Ok(if report.failures.is_empty() {
        Exit::Success
    } else {
        exit_for(&report)
    })
}

// ---- status ------------------------------------------------------------------

#[derive(Serialize)]
struct TargetStatus {
    target_id: String,
    kind: String,
    region: String,
    name: Option<String>,
    state: HealthState,
    reason: String,
    newest_backup: Option<DateTime<Utc>>,
    age_seconds: Option<i64>,
    backup_count: usize,
    oldest_backup: Option<DateTime<Utc>>,
    /// Restore tests: the last pass and result, and `passed`/`failed`/`overdue`/`untested`
    /// (absent when the policy asks for none and none was recorded).
    #[serde(skip_serializing_if = "Option::is_none")]
    restore_test: Option<autosnap_core::restore_test::TargetRestoreTest>,
    /// Seconds since the last passing restore test.
    #[serde(skip_serializing_if = "Option::is_none")]
    restore_test_age_seconds: Option<i64>,
    /// Its copies in backup accounts (copy rules with `account`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    account_copies: Vec<super::backup_account::AccountCopyStatus>,
}

#[derive(Serialize)]
struct PolicyStatus {
    policy: String,
    schedule: String,
    targets: Vec<TargetStatus>,
}

#[derive(Serialize)]
struct Unprotected {
    id: String,
    kind: String,
    region: String,
    name: Option<String>,
}

#[derive(Serialize)]
pub(super) struct StatusReport {
    now: DateTime<Utc>,
    policies: Vec<PolicyStatus>,
    unprotected: Vec<Unprotected>,
    /// Newest backups of targets whose policy has a `lock` that are not locked.
    unlocked: Vec<Unlocked>,
    /// Per policy and Region: where deleted backups go (the Recycle Bin's rules).
    recycle_bin: Vec<crate::commands::recycle_bin::PolicyDestination>,
    pub(super) ok: bool,
}

#[derive(Serialize)]
struct Unlocked {
    policy: String,
    target_id: String,
    region: String,
    backup_id: String,
    /// The snapshots of the backup without a lock (or with an expired one).
    snapshot_ids: Vec<String>,
}

/// The newest backup of every target whose policy wants its backups locked, where one of its
/// snapshots is not locked (or its lock has expired): one DescribeLockedSnapshots per region.
async fn unlocked_backups(
    ctx: &autosnap_aws::AwsContext,
    plan: &Plan,
    policies: &[PolicyConfig],
) -> anyhow::Result<Vec<Unlocked>> {
    let mut wanted: Vec<Unlocked> = Vec::new();
    for p in &plan.policies {
        let locks = policies
            .iter()
            .any(|c| c.name == p.policy && c.lock.is_some() && c.kind == BackupKind::Snapshot);
        if !locks {
            continue;
        }
        for t in &p.targets {
            let Some(newest) = t.newest_backup else {
                continue;
            };
            let Some(group) = t.groups.iter().find(|g| g.region == t.region) else {
                continue;
            };
            if let Some(b) = group.backups.iter().find(|b| b.time == newest) {
                wanted.push(Unlocked {
                    policy: p.policy.clone(),
                    target_id: t.target_id.clone(),
                    region: t.region.clone(),
                    backup_id: b.backup_id.to_string(),
                    snapshot_ids: b.snapshot_ids.iter().map(|s| s.to_string()).collect(),
                });
            }
        }
    }
    let regions: std::collections::BTreeSet<String> =
        wanted.iter().map(|u| u.region.clone()).collect();
    let mut locks = Vec::new();
    for r in regions {
        let ids: Vec<String> = wanted
            .iter()
            .filter(|u| u.region == r)
            .flat_map(|u| u.snapshot_ids.iter().cloned())
            .collect();
        locks.extend(ctx.ec2_in(&r).await?.locked_snapshots(&ids).await?);
    }
    Ok(wanted
        .into_iter()
        .filter_map(|mut u| {
            u.snapshot_ids.retain(|id| {
                !locks
                    .iter()
                    .any(|l| &l.snapshot_id == id && l.prevents_deletion())
            });
            (!u.snapshot_ids.is_empty()).then_some(u)
        })
        .collect())
}

pub async fn status(env: &Env, args: &StatusArgs) -> anyhow::Result<Exit> {
    let policies = select_policies(env, &args.policy)?;
    if super::accounts::configured(env, &args.policy)? {
        return super::accounts::status(env, args, &policies).await;
    }
    let ctx = env.connect().await?;
    let backups = super::backup_account::connect(env, &ctx, &policies).await;
    let report = status_report(env, &ctx, None, &backups, &policies).await?;
    match env.output {
        OutputFormat::Json => output::print_json(&report)?,
        OutputFormat::Prometheus => output::print(&prometheus(&report)),
        OutputFormat::Table => print_status_table(&report),
    }
    if args.check && !report.ok {
        crate::output::report_error(
            "check_failed",
            "status check failed: a target is late or missing, a resource is unprotected, a \
             backup its policy wants locked is not, or a restore test failed or is overdue",
            None,
        );
        return Ok(Exit::Failure);
    }
    Ok(Exit::Success)
}

/// One account's status: its plan, coverage, locks (and what else `status` reports).
pub(super) async fn status_report(
    env: &Env,
    ctx: &AwsContext,
    account: Option<&str>,
    backups: &autosnap_aws::backup_account::BackupAccounts,
    policies: &[PolicyConfig],
) -> anyhow::Result<StatusReport> {
    let (plan, inventory) =
        super::backup_account::plan(env, ctx, account, backups, policies, true, true).await?;
    let now = plan.now;
    let region = ctx.region().to_string();
    let all_policies = &env.settings.config.file.policies;
    let unlocked = unlocked_backups(ctx, &plan, policies).await?;
    let report = StatusReport {
        now,
        policies: plan
            .policies
            .iter()
            .map(|p| PolicyStatus {
                policy: p.policy.clone(),
                schedule: p.schedule.clone(),
                targets: p
                    .targets
                    .iter()
                    .map(|t| TargetStatus {
                        target_id: t.target_id.clone(),
                        kind: t.kind.to_string(),
                        region: t.region.clone(),
                        name: t.name.clone(),
                        state: t.health.state,
                        reason: t.health.reason.clone(),
                        newest_backup: t.newest_backup,
                        age_seconds: t.newest_backup.map(|n| (now - n).num_seconds()),
                        backup_count: t.backup_count,
                        oldest_backup: t.oldest_backup,
                        restore_test: t.restore_test.clone(),
                        restore_test_age_seconds: t
                            .restore_test
                            .as_ref()
                            .and_then(|r| r.last_success)
                            .map(|s| (now - s).num_seconds()),
                        account_copies: super::backup_account::status_of(t),
                    })
                    .collect(),
            })
            .collect(),
        // Coverage counts every configured policy, not only those selected.
        unprotected: plan::unprotected(all_policies, &inventory.targets, &region)
            .into_iter()
            .map(|t| Unprotected {
                id: t.id.clone(),
                kind: t.kind.to_string(),
                region: t.region.clone(),
                name: t.name.clone(),
            })
            .collect(),
        unlocked,
        recycle_bin: crate::commands::recycle_bin::destinations(ctx, &plan).await,
        ok: false,
    };
    let healthy = report
        .policies
        .iter()
        .flat_map(|p| &p.targets)
        .all(|t| t.state == HealthState::Ok)
        && report.unprotected.is_empty()
        && report.unlocked.is_empty()
        && !report
            .policies
            .iter()
            .flat_map(|p| &p.targets)
            .filter_map(|t| t.restore_test.as_ref())
            .any(|r| r.health.is_problem());
    Ok(StatusReport {
        ok: healthy,
        ..report
    })
}

/// The tables of `status` for one account.
pub(super) fn print_status_table(report: &StatusReport) {
    let now = report.now;
    let mut t = output::table([
        "POLICY", "TARGET", "NAME", "REGION", "STATE", "NEWEST", "AGE", "KEPT", "OLDEST", "DETAIL",
    ]);
    for p in &report.policies {
        for x in &p.targets {
            t.add_row([
                p.policy.clone(),
                x.target_id.clone(),
                output::opt(&x.name),
                x.region.clone(),
                format!("{:?}", x.state).to_lowercase(),
                output::time(x.newest_backup),
                output::age(x.newest_backup, now),
                x.backup_count.to_string(),
                output::time(x.oldest_backup),
                x.reason.clone(),
            ]);
        }
    }
    output::print_table(&t);
    super::backup_account::print_status(report.policies.iter().flat_map(|p| {
        p.targets
            .iter()
            .map(move |t| (&p.policy, &t.target_id, &t.account_copies))
    }));
    if report.unprotected.is_empty() {
        output::print("\nevery volume and instance is covered by a policy");
    } else {
        let mut u = output::table(["UNPROTECTED", "KIND", "NAME", "REGION"]);
        for x in &report.unprotected {
            u.add_row([
                x.id.clone(),
                x.kind.clone(),
                output::opt(&x.name),
                x.region.clone(),
            ]);
        }
        output::print("");
        output::print_table(&u);
    }
    let tested: Vec<(&PolicyStatus, &TargetStatus)> = report
        .policies
        .iter()
        .flat_map(|p| p.targets.iter().map(move |t| (p, t)))
        .filter(|(_, t)| t.restore_test.is_some())
        .collect();
    if !tested.is_empty() {
        let mut u = output::table([
            "RESTORE TEST",
            "TARGET",
            "REGION",
            "POLICY",
            "LAST PASSED",
            "AGE",
            "DETAIL",
        ]);
        for (p, x) in tested {
            let rt = x.restore_test.as_ref().expect("filtered");
            let detail = match &rt.last_result {
                Some(r) if !r.passed => {
                    format!("failed: {}", r.reason.as_deref().unwrap_or_default())
                }
                _ => rt.reason.clone(),
            };
            u.add_row([
                serde_json::to_value(rt.health)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                x.target_id.clone(),
                x.region.clone(),
                p.policy.clone(),
                output::time(rt.last_success),
                output::age(rt.last_success, now),
                detail,
            ]);
        }
        output::print("");
        output::print_table(&u);
    }
    if !report.unlocked.is_empty() {
        let mut u = output::table(["NOT LOCKED", "TARGET", "REGION", "POLICY", "SNAPSHOTS"]);
        for x in &report.unlocked {
            u.add_row([
                x.backup_id.clone(),
                x.target_id.clone(),
                x.region.clone(),
                x.policy.clone(),
                x.snapshot_ids.join(", "),
            ]);
        }
        output::print("");
        output::print(
            "newest backups whose policy has a lock but that are not locked \
             (`autosnap snapshot lock` sets it):",
        );
        output::print_table(&u);
    }
    crate::commands::recycle_bin::print_destinations(&report.recycle_bin);
}

/// Prometheus text exposition format (for node-exporter's textfile collector).
pub(super) fn prometheus(r: &StatusReport) -> String {
    fn esc(v: &str) -> String {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    }
    let mut s = String::new();
    s.push_str("# HELP autosnap_backup_age_seconds Age of the newest backup of a policy target.\n");
    s.push_str("# TYPE autosnap_backup_age_seconds gauge\n");
    for p in &r.policies {
        for t in &p.targets {
            if let Some(age) = t.age_seconds {
                let _ = writeln!(
                    s,
                    "autosnap_backup_age_seconds{{policy=\"{}\",target=\"{}\",region=\"{}\"}} {age}",
                    esc(&p.policy), esc(&t.target_id), esc(&t.region)
                );
            }
        }
    }
    s.push_str(
        "# HELP autosnap_backups Number of backups of a policy target in its source region.\n",
    );
    s.push_str("# TYPE autosnap_backups gauge\n");
    for p in &r.policies {
        for t in &p.targets {
            let _ = writeln!(
                s,
                "autosnap_backups{{policy=\"{}\",target=\"{}\",region=\"{}\"}} {}",
                esc(&p.policy),
                esc(&t.target_id),
                esc(&t.region),
                t.backup_count
            );
        }
    }
    s.push_str("# HELP autosnap_target_state Coverage state of a policy target (1 for the current state).\n");
    s.push_str("# TYPE autosnap_target_state gauge\n");
    for p in &r.policies {
        for t in &p.targets {
            for (name, state) in [
                ("ok", HealthState::Ok),
                ("late", HealthState::Late),
                ("missing", HealthState::Missing),
            ] {
                let _ = writeln!(
                    s,
                    "autosnap_target_state{{policy=\"{}\",target=\"{}\",region=\"{}\",state=\"{name}\"}} {}",
                    esc(&p.policy), esc(&t.target_id), esc(&t.region), u8::from(t.state == state)
                );
            }
        }
    }
    s.push_str(
        "# HELP autosnap_restore_test_last_success_timestamp_seconds When the newest backup of a \
         policy target last passed a restore test.\n",
    );
    s.push_str("# TYPE autosnap_restore_test_last_success_timestamp_seconds gauge\n");
    for p in &r.policies {
        for t in &p.targets {
            if let Some(at) = t.restore_test.as_ref().and_then(|x| x.last_success) {
                let _ = writeln!(
                    s,
                    "autosnap_restore_test_last_success_timestamp_seconds{{policy=\"{}\",target=\"{}\",region=\"{}\"}} {}",
                    esc(&p.policy), esc(&t.target_id), esc(&t.region), at.timestamp()
                );
            }
        }
    }
    s.push_str(
        "# HELP autosnap_restore_test_state Restore-test state of a policy target (1 for the \
         current state).\n",
    );
    s.push_str("# TYPE autosnap_restore_test_state gauge\n");
    for p in &r.policies {
        for t in &p.targets {
            let Some(rt) = &t.restore_test else { continue };
            use autosnap_core::restore_test::RestoreTestHealth as H;
            for (name, state) in [
                ("passed", H::Passed),
                ("failed", H::Failed),
                ("overdue", H::Overdue),
                ("untested", H::Untested),
            ] {
                let _ = writeln!(
                    s,
                    "autosnap_restore_test_state{{policy=\"{}\",target=\"{}\",region=\"{}\",state=\"{name}\"}} {}",
                    esc(&p.policy), esc(&t.target_id), esc(&t.region), u8::from(rt.health == state)
                );
            }
        }
    }
    super::backup_account::prometheus(
        &mut s,
        r.policies.iter().flat_map(|p| {
            p.targets
                .iter()
                .map(move |t| (&p.policy, &t.target_id, &t.region, &t.account_copies))
        }),
        esc,
    );
    s.push_str("# HELP autosnap_unprotected Volumes and instances no policy covers.\n");
    s.push_str("# TYPE autosnap_unprotected gauge\n");
    for u in &r.unprotected {
        let _ = writeln!(
            s,
            "autosnap_unprotected{{resource=\"{}\",kind=\"{}\",region=\"{}\"}} 1",
            esc(&u.id),
            esc(&u.kind),
            esc(&u.region)
        );
    }
    s.push_str("# HELP autosnap_status_ok 1 when every target is ok and nothing is unprotected.\n");
    s.push_str("# TYPE autosnap_status_ok gauge\n");
    let _ = writeln!(s, "autosnap_status_ok {}", u8::from(r.ok));
    let _ = writeln!(s, "autosnap_status_timestamp_seconds {}", r.now.timestamp());
    s
}

// ---- daemon ------------------------------------------------------------------

pub async fn daemon(env: &Env, args: &DaemonArgs) -> anyhow::Result<Exit> {
    let policies = select_policies(env, &args.policy)?;
    if super::accounts::configured(env, &args.policy)? {
        return super::accounts::daemon(env, args, &policies).await;
    }
    let shutdown_timeout = args.shutdown_timeout;
    let max_sleep = args.max_sleep;
    let retry_after = args.retry_after;
    let timeout = args.wait_timeout;
    let ctx = env.connect().await?;
    let mut shutdown = Shutdown::new().context("cannot install signal handlers")?;
    let names: Vec<&str> = policies.iter().map(|p| p.name.as_str()).collect();
    tracing::info!("daemon started for policies {}", names.join(", "));
    // The daemon handles SIGTERM itself: after a thaw, let it shut down.
    let freezer = super::consistent::PolicyFreezer::detect(
        &ctx,
        &policies,
        autosnap_freeze::AfterCleanup::Continue,
    )
    .await
    .map(|f| f.with_own_paths(env.settings.config.path.iter().map(|(p, _)| p.clone())));
    let local = freezer
        .as_ref()
        .map(|f| f as &dyn autosnap_aws::execute::LocalSnapshotter);

    let backups = super::backup_account::connect(env, &ctx, &policies).await;
    loop {
        let planned =
            super::backup_account::plan(env, &ctx, None, &backups, &policies, false, true).await;
        let (plan, _) = match planned {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(
                    "cannot read the account: {e:#}; retrying in {}s",
                    retry_after.as_secs()
                );
                if shutdown.sleep(retry_after).await {
                    break;
                }
                continue;
            }
        };
        let sum = summarize(&plan);
        let mut failed = false;
        if sum.creates + sum.copies + sum.deletions + sum.account_copies + sum.account_deletions > 0
        {
            tracing::info!(
                "run: {} to create, {} to copy, {} to delete",
                sum.creates,
                sum.copies,
                sum.deletions
            );
            let opts = RunOptions {
                create: true,
                copy: true,
                prune: true,
                archive: true,
                wait_timeout: timeout,
                pacing: args.ec2_share,
                stop_at: None,
            };
            let progress = RecordingProgress::default();
            let work = execute::execute(&ctx, &plan, &opts, &progress, local);
            tokio::pin!(work);
            let report = tokio::select! {
                r = &mut work => r,
                _ = shutdown.signalled() => {
                    tracing::info!("signal received: letting in-flight work finish (at most {}s)", shutdown_timeout.as_secs());
                    match tokio::time::timeout(shutdown_timeout, &mut work).await {
                        Ok(r) => { log_report(r); }
                        Err(_) => {
                            // Say what the stopped run did and left, as `run` does on Ctrl-C.
                            let so_far = progress.so_far();
                            tracing::warn!(
                                "in-flight work did not finish within {}s; stopping anyway",
                                shutdown_timeout.as_secs()
                            );
                            tracing::warn!(
                                "stopped run: {} created ({}), {} copied, {} deleted so far",
                                so_far.created.len(),
                                so_far
                                    .created
                                    .iter()
                                    .flat_map(|c| c.image_id.iter().chain(&c.snapshot_ids))
                                    .cloned()
                                    .collect::<Vec<_>>()
                                    .join(", "),
                                so_far.copied.len(),
                                so_far.deleted.len()
                            );
                            for left in not_done(&plan, &so_far) {
                                tracing::warn!("not done: {left}");
                            }
                        }
                    }
                    break;
                }
            };
            let mut report = report;
            if let Ok(r) = &mut report {
                // Copies into backup accounts and their retention there, after this account's.
                let done = super::backup_account::execute(&ctx, None, &backups, &plan, r, &opts);
                if let Err(e) = done.await {
                    tracing::error!("copies into backup accounts: {e:#}");
                }
            }
            failed = log_report(report);
        }
        // Restore tests that are due, after this round's backups. A failed test is tried again
        // at the next wake-up, not at --retry-after: each test makes a volume.
        let tests_due = plan
            .policies
            .iter()
            .flat_map(|p| &p.targets)
            .any(|t| t.restore_test.as_ref().is_some_and(|r| r.due));
        if tests_due {
            let test_run = autosnap_core::restore_test::run_id(Utc::now(), std::process::id());
            let (sources, _) = inventory::regions(&policies, ctx.region());
            super::restore_test::clean_up_left_overs(&ctx, &sources).await;
            let tests = super::restore_test::run_due_tests(
                env, &ctx, &plan, &policies, timeout, &test_run, None,
            );
            tokio::pin!(tests);
            tokio::select! {
                _ = &mut tests => {}
                _ = shutdown.signalled() => {
                    tracing::info!("signal received: stopping the restore tests");
                    super::restore_test::interrupted_in_run(&ctx, &plan, &test_run).await;
                    break;
                }
            }
        }
        // Sleep until the next target (or restore test) is due, re-reading the account at
        // least every --max-sleep, and sooner after a failure.
        let now = Utc::now();
        let next = plan
            .policies
            .iter()
            .flat_map(|p| &p.targets)
            .flat_map(|t| {
                std::iter::once(t.next_due).chain(t.restore_test.as_ref().and_then(|r| r.next_due))
            })
            .filter(|t| *t > now)
            .min();
        let mut sleep = next
            .map(|t| (t - now).to_std().unwrap_or_default())
            .unwrap_or(max_sleep)
            .min(max_sleep);
        if failed {
            sleep = sleep.min(retry_after);
        }
        sleep = sleep.max(Duration::from_secs(1));
        tracing::info!("next check in {}s", sleep.as_secs());
        if shutdown.sleep(sleep).await {
            break;
        }
    }
    tracing::info!("daemon stopped");
    Ok(Exit::Success)
}

/// Logs a run's result; true when anything failed.
pub(super) fn log_report(r: Result<RunReport, autosnap_aws::AwsError>) -> bool {
    match r {
        Ok(r) => {
            tracing::info!(
                "run finished: {} created, {} copied, {} deleted, {} failed",
                r.created.len(),
                r.copied.len(),
                r.deleted.len(),
                r.failures.len()
            );
            for f in &r.failures {
                tracing::error!(
                    "policy {} {} {} in {}: {}",
                    f.policy,
                    f.action,
                    f.target_id,
                    f.region,
                    f.error
                );
            }
            !r.failures.is_empty()
        }
        Err(e) => {
            tracing::error!("run failed: {e}");
            true
        }
    }
}

/// SIGTERM and SIGINT, as one stream of "please stop".
pub(super) struct Shutdown {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Shutdown {
    pub(super) fn new() -> std::io::Result<Shutdown> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Shutdown {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    pub(super) async fn signalled(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }

    /// Sleeps; true when a signal ended the sleep.
    pub(super) async fn sleep(&mut self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => false,
            _ = self.signalled() => {
                tracing::info!("signal received: stopping");
                true
            }
        }
    }
}

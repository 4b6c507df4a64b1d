//! `plan`, `run`, `prune`, `status` and `daemon` across accounts (`[[account]]` entries or
//! `accounts = "organization"`): each account is reached by its role, planned and run with the
//! same code as one account, at most [`ACCOUNTS_AT_ONCE`] at a time; the output is grouped by
//! account, and an account that fails (its role, its access, a Region it has not enabled) is
//! reported with its cause while the others complete (exit 3).

use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use autosnap_aws::accounts::{self as aws_accounts, ACCOUNTS_AT_ONCE};
use autosnap_aws::execute::{self, RunOptions, RunReport};
use autosnap_aws::AwsContext;
use autosnap_core::accounts::{self, Account, AccountDiscovery};
use autosnap_core::plan::Plan;
use autosnap_core::policy::PolicyConfig;
use chrono::Utc;
use futures::stream::{self, StreamExt};
use serde::Serialize;
use tracing::Instrument;

use super::policy::{
    log_report, not_done, render_plan, report_text, status_report, summarize, PlanSummary,
    RecordingProgress, Shutdown,
};
use crate::cli::{DaemonArgs, OutputFormat, PolicyArgs, PruneArgs, RunArgs, StatusArgs};
use crate::commands::confirm::{self, Consent};
use crate::commands::Env;
use crate::exit::{Exit, UsageError};
use crate::output;

/// Whether this command works across accounts: the config names accounts. `--account`
/// without them is a usage error.
pub(super) fn configured(env: &Env, args: &PolicyArgs) -> anyhow::Result<bool> {
    let file = &env.settings.config.file;
    if file.has_accounts() {
        return Ok(true);
    }
    if let Some(id) = args.accounts.first() {
        return Err(UsageError(format!(
            "--account {id}: the config names no accounts; add [[account]] entries or \
             accounts = \"organization\" (see the README's \"Many accounts\")"
        ))
        .into());
    }
    Ok(false)
}

/// The base credentials and the accounts to work on (`--account` applied). Discovering an
/// organization's accounts is one DescribeOrganization and one ListAccounts per page.
async fn resolve(
    env: &Env,
    args: &PolicyArgs,
) -> anyhow::Result<(std::sync::Arc<AwsContext>, Vec<Account>)> {
    let base = env.connect().await?;
    let file = &env.settings.config.file;
    let all = match file.accounts {
        Some(AccountDiscovery::Organization) => {
            let (management, listed) = aws_accounts::organization(&base).await.context(
                "cannot list the organization's accounts (accounts = \"organization\" needs the \
                 management account's credentials or a delegated administrator's, with \
                 organizations:DescribeOrganization and organizations:ListAccounts)",
            )?;
            let partition = aws_accounts::partition(&base).await;
            accounts::organization_accounts(
                &listed,
                &management,
                file.organization_role.as_deref().unwrap_or_default(),
                &partition,
                &file.account_entries,
            )
        }
        None => file.account_entries.iter().map(Account::from).collect(),
    };
    let chosen = accounts::select_accounts(all, &args.accounts).map_err(UsageError)?;
    Ok((base, chosen))
}

/// `account 111111111111 (prod)`.
fn heading(a: &Account) -> String {
    match &a.name {
        Some(n) => format!("account {} ({n})", a.id),
        None => format!("account {}", a.id),
    }
}

/// The error of one account, its causes joined.
fn cause(e: &anyhow::Error) -> String {
    format!("{e:#}")
}

/// Exit for a set of accounts: 3 when some failed and some did not.
fn exit_for(ok: usize, failed: usize) -> Exit {
    Exit::from_counts(ok, failed)
}

/// The policies an account runs (`--policy` and the account's own subset and regions).
fn policies_of(account: &Account, selected: &[PolicyConfig]) -> Vec<PolicyConfig> {
    accounts::policies_for(account, selected)
}

/// One account in `-o json`: its id, and either its result or its error.
#[derive(Serialize)]
struct AccountJson<'a, T: Serialize> {
    account_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    ok: bool,
    error: Option<String>,
    #[serde(flatten)]
    result: Option<T>,
}

#[derive(Serialize)]
struct AccountsJson<T: Serialize> {
    accounts: Vec<T>,
    failed_accounts: usize,
    /// `run` only: Ctrl-C or SIGTERM stopped it; each report is what was done until then.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    interrupted: bool,
}

fn account_json<'a, T: Serialize>(
    a: &'a Account,
    r: &'a Result<T, anyhow::Error>,
) -> AccountJson<'a, &'a T> {
    AccountJson {
        account_id: &a.id,
        name: a.name.as_deref(),
        ok: r.is_ok(),
        error: r.as_ref().err().map(cause),
        result: r.as_ref().ok(),
    }
}

#[derive(Serialize)]
struct PlanJson<'a> {
    plan: &'a Plan,
    summary: PlanSummary,
}

// ---- plan ----------------------------------------------------------------------------------

pub(super) async fn plan(
    env: &Env,
    args: &PolicyArgs,
    selected: &[PolicyConfig],
) -> anyhow::Result<Exit> {
    let (base, chosen) = resolve(env, args).await?;
    let backups = &super::backup_account::connect(env, &base, selected).await;
    let results = aws_accounts::across(&base, &chosen, |account, ctx| async move {
        let policies = policies_of(&account, selected);
        let id = Some(account.id.as_str());
        let (plan, _) = super::backup_account::plan(env, &ctx, id, backups, &policies, false, true)
            .instrument(tracing::info_span!("account", id = %account.id))
            .await?;
        Ok::<_, anyhow::Error>(plan)
    })
    .await;
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    match env.output {
        OutputFormat::Json => output::print_json(&AccountsJson {
            accounts: results
                .iter()
                .map(|(a, r)| {
                    let view = r.as_ref().map(|p| PlanJson {
                        plan: p,
                        summary: summarize(p),
                    });
                    let view = view.map_err(|e| anyhow::anyhow!("{}", cause(e)));
                    serde_json::to_value(account_json(a, &view))
                })
                .collect::<Result<Vec<_>, _>>()?,
            failed_accounts: failed,
            interrupted: false,
        })?,
        _ => {
            let mut s = String::new();
            for (a, r) in &results {
                let _ = writeln!(s, "== {} ==", heading(a));
                match r {
                    Ok(p) => {
                        let _ = writeln!(s, "{}\n", render_plan(p, true));
                    }
                    Err(e) => {
                        let _ = writeln!(s, "failed: {}\n", cause(e));
                    }
                }
            }
            let _ = write!(
                s,
                "accounts: {} planned, {failed} failed",
                results.len() - failed
            );
            output::print(&s);
        }
    }
    report_failed_accounts(&results);
    Ok(exit_for(results.len() - failed, failed))
}

/// Each failed account on stderr too, so a log shows it whatever the output format.
fn report_failed_accounts<T>(results: &[(Account, Result<T, anyhow::Error>)]) {
    for (a, r) in results {
        if let Err(e) = r {
            tracing::error!("{}: {}", heading(a), cause(e));
        }
    }
}

// ---- run and prune -------------------------------------------------------------------------

/// What one account's run did.
struct AccountRun {
    plan: Plan,
    report: Option<RunReport>,
}

#[derive(Serialize)]
struct RunJson<'a> {
    dry_run: bool,
    plan: &'a Plan,
    summary: PlanSummary,
    report: Option<&'a RunReport>,
}

/// The table lines of one account's run: its plan, then what was done and what failed.
fn render_run(r: &AccountRun, show_creates: bool, dry_run: bool) -> String {
    let mut s = render_plan(&r.plan, show_creates);
    match &r.report {
        Some(rep) => s.push_str(&report_text(rep)),
        None if dry_run => s.push_str("\ndry run: nothing was changed"),
        None => {}
    }
    s
}

fn print_runs(
    env: &Env,
    results: &[(Account, Result<AccountRun, anyhow::Error>)],
    show_creates: bool,
    dry_run: bool,
    interrupted: bool,
) -> anyhow::Result<()> {
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    match env.output {
        OutputFormat::Json => output::print_json(&AccountsJson {
            accounts: results
                .iter()
                .map(|(a, r)| {
                    let view = r.as_ref().map(|run| RunJson {
                        dry_run,
                        plan: &run.plan,
                        summary: summarize(&run.plan),
                        report: run.report.as_ref(),
                    });
                    let view = view.map_err(|e| anyhow::anyhow!("{}", cause(e)));
                    serde_json::to_value(account_json(a, &view))
                })
                .collect::<Result<Vec<_>, _>>()?,
            failed_accounts: failed,
            interrupted,
        }),
        _ => {
            let mut s = String::new();
            for (a, r) in results {
                let _ = writeln!(s, "== {} ==", heading(a));
                match r {
                    Ok(run) => {
                        let _ = writeln!(s, "{}\n", render_run(run, show_creates, dry_run));
                    }
                    Err(e) => {
                        let _ = writeln!(s, "failed: {}\n", cause(e));
                    }
                }
            }
            let _ = write!(
                s,
                "accounts: {} done, {failed} failed",
                results.len() - failed
            );
            output::print(&s);
            Ok(())
        }
    }
}

/// The exit of a run across accounts: per-item failures count as in one account, and a failed
/// account counts as a failure.
fn run_exit(results: &[(Account, Result<AccountRun, anyhow::Error>)]) -> Exit {
    let (mut ok, mut failed) = (0, 0);
    for (_, r) in results {
        match r {
            Ok(run) => match &run.report {
                Some(rep) => {
                    ok += rep.successes().max(1);
                    failed += rep.failures.len();
                }
                None => ok += 1,
            },
            Err(_) => failed += 1,
        }
    }
    exit_for(ok, failed)
}

pub(super) async fn run(
    env: &Env,
    args: &RunArgs,
    selected: &[PolicyConfig],
) -> anyhow::Result<Exit> {
    let stop_at = super::time_limit::stop_at(args.time_limit);
    let (base, chosen) = resolve(env, &args.policy).await?;
    let opts = RunOptions {
        create: true,
        copy: true,
        prune: true,
        archive: true,
        wait_timeout: args.wait_timeout,
        pacing: args.ec2_share,
        stop_at,
    };
    // What each account has done so far, for a report after Ctrl-C.
    let so_far: Vec<(Mutex<Option<Plan>>, RecordingProgress)> = chosen
        .iter()
        .map(|_| (Mutex::new(None), RecordingProgress::default()))
        .collect();
    let slot = |id: &str| {
        let i = chosen
            .iter()
            .position(|a| a.id == id)
            .expect("a chosen account");
        &so_far[i]
    };
    let dry_run = args.dry_run;
    let opts = &opts;
    let backups = &super::backup_account::connect(env, &base, selected).await;
    let work = aws_accounts::across(&base, &chosen, |account, ctx| async move {
        let span = tracing::info_span!("account", id = %account.id);
        let policies = policies_of(&account, selected);
        let id = Some(account.id.as_str());
        let (plan, _) = super::backup_account::plan(env, &ctx, id, backups, &policies, false, true)
            .instrument(span.clone())
            .await?;
        if dry_run {
            return Ok(AccountRun { plan, report: None });
        }
        let (seen, progress) = slot(&account.id);
        *seen.lock().expect("not poisoned") = Some(plan.clone());
        // Consistency (freeze, hooks) is for the instance autosnap runs on, in one account;
        // across accounts backups are crash-consistent (see the README's "Many accounts").
        let mut report = execute::execute(&ctx, &plan, opts, progress, None)
            .instrument(span.clone())
            .await?;
        super::backup_account::execute(&ctx, id, backups, &plan, &mut report, opts)
            .instrument(span)
            .await?;
        Ok::<_, anyhow::Error>(AccountRun {
            plan,
            report: Some(report),
        })
    });
    let mut interrupt = super::Interrupt::listen()?;
    let Some(results) = interrupt.or(work).await else {
        let mut left = Vec::new();
        let stopped: Vec<(Account, Result<AccountRun, anyhow::Error>)> = chosen
            .iter()
            .zip(&so_far)
            .filter_map(|(a, (plan, progress))| {
                let plan = plan.lock().expect("not poisoned").clone()?;
                let report = progress.so_far();
                left.extend(
                    not_done(&plan, &report)
                        .into_iter()
                        .map(|l| format!("{}: {l}", heading(a))),
                );
                Some((
                    a.clone(),
                    Ok(AccountRun {
                        plan,
                        report: Some(report),
                    }),
                ))
            })
            .collect();
        print_runs(env, &stopped, true, false, true)?;
        super::report_interrupted_with(
            "the run's new snapshots and copies",
            "autosnap plan",
            &left,
        );
        return Ok(Exit::Interrupted);
    };
    print_runs(env, &results, true, dry_run, false)?;
    report_failed_accounts(&results);
    Ok(run_exit(&results))
}

pub(super) async fn prune(
    env: &Env,
    args: &PruneArgs,
    selected: &[PolicyConfig],
) -> anyhow::Result<Exit> {
    let stop_at = super::time_limit::stop_at(args.time_limit);
    let (base, chosen) = resolve(env, &args.policy).await?;
    // Plan every account first: one question covers them all.
    let backups = &super::backup_account::connect(env, &base, selected).await;
    let planned = aws_accounts::across(&base, &chosen, |account, ctx| async move {
        let policies = policies_of(&account, selected);
        let id = Some(account.id.as_str());
        let (plan, _) =
            super::backup_account::plan(env, &ctx, id, backups, &policies, false, false)
                .instrument(tracing::info_span!("account", id = %account.id))
                .await?;
        Ok::<_, anyhow::Error>((ctx, plan))
    })
    .await;
    let views: Vec<(Account, Result<AccountRun, anyhow::Error>)> = planned
        .iter()
        .map(|(a, r)| {
            (
                a.clone(),
                r.as_ref()
                    .map(|(_, plan)| AccountRun {
                        plan: plan.clone(),
                        report: None,
                    })
                    .map_err(|e| anyhow::anyhow!("{}", cause(e))),
            )
        })
        .collect();
    if args.dry_run {
        print_runs(env, &views, false, true, false)?;
        report_failed_accounts(&views);
        return Ok(run_exit(&views));
    }
    let deletes: usize = planned
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .map(|(_, p)| p.deletions().count())
        .sum();
    let with_deletions = planned
        .iter()
        .filter(|(_, r)| r.as_ref().is_ok_and(|(_, p)| p.deletions().count() > 0))
        .count();
    let rendered: String = views
        .iter()
        .filter_map(|(a, r)| {
            r.as_ref()
                .ok()
                .map(|run| format!("== {} ==\n{}\n", heading(a), render_plan(&run.plan, false)))
        })
        .collect();
    if env.output != OutputFormat::Json {
        output::print(&rendered);
    }
    let question = confirm::Question {
        skip: args.yes,
        deletes,
        plan: if env.output == OutputFormat::Json {
            rendered
        } else {
            String::new()
        },
        prompt: format!(
            "Delete {} in {}?",
            confirm::count(deletes, "backup", "backups"),
            confirm::count(with_deletions, "account", "accounts")
        ),
    };
    if question.ask().await? == Consent::Refused {
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
    let opts = &opts;
    let results: Vec<(Account, Result<AccountRun, anyhow::Error>)> = stream::iter(planned)
        .map(|(a, r)| async move {
            let result = match r {
                Ok((ctx, plan)) => {
                    let span = tracing::info_span!("account", id = %a.id);
                    match execute::execute(&ctx, &plan, opts, &(), None)
                        .instrument(span.clone())
                        .await
                    {
                        Ok(mut report) => super::backup_account::execute(
                            &ctx,
                            Some(&a.id),
                            backups,
                            &plan,
                            &mut report,
                            opts,
                        )
                        .instrument(span)
                        .await
                        .map(|()| AccountRun {
                            plan,
                            report: Some(report),
                        }),
                        Err(e) => Err(anyhow::Error::from(e)),
                    }
                }
                Err(e) => Err(e),
            };
            (a, result)
        })
        .buffered(ACCOUNTS_AT_ONCE)
        .collect()
        .await;
    // The plans are on the screen already in table mode: print the results only.
    match env.output {
        OutputFormat::Json => print_runs(env, &results, false, false, false)?,
        _ => {
            let mut s = String::new();
            for (a, r) in &results {
                match r {
                    Ok(run) => {
                        let full = render_run(run, false, false);
                        let done = full.find("\ndone:").map(|i| &full[i + 1..]).unwrap_or("");
                        let _ = writeln!(s, "{}: {done}", heading(a));
                    }
                    Err(e) => {
                        let _ = writeln!(s, "{}: failed: {}", heading(a), cause(e));
                    }
                }
            }
            output::print(s.trim_end());
        }
    }
    report_failed_accounts(&results);
    Ok(run_exit(&results))
}

// ---- status --------------------------------------------------------------------------------

pub(super) async fn status(
    env: &Env,
    args: &StatusArgs,
    selected: &[PolicyConfig],
) -> anyhow::Result<Exit> {
    let (base, chosen) = resolve(env, &args.policy).await?;
    let backups = &super::backup_account::connect(env, &base, selected).await;
    let results = aws_accounts::across(&base, &chosen, |account, ctx| async move {
        let policies = policies_of(&account, selected);
        status_report(env, &ctx, Some(&account.id), backups, &policies)
            .instrument(tracing::info_span!("account", id = %account.id))
            .await
    })
    .await;
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    let all_ok = failed == 0 && results.iter().all(|(_, r)| r.as_ref().is_ok_and(|s| s.ok));
    match env.output {
        OutputFormat::Json => {
            #[derive(Serialize)]
            struct StatusJson<T: Serialize> {
                ok: bool,
                accounts: Vec<T>,
                failed_accounts: usize,
            }
            output::print_json(&StatusJson {
                ok: all_ok,
                accounts: results
                    .iter()
                    .map(|(a, r)| serde_json::to_value(account_json(a, r)))
                    .collect::<Result<Vec<_>, _>>()?,
                failed_accounts: failed,
            })?
        }
        OutputFormat::Prometheus => {
            let texts: Vec<(String, String)> = results
                .iter()
                .filter_map(|(a, r)| {
                    r.as_ref()
                        .ok()
                        .map(|s| (a.id.clone(), super::policy::prometheus(s)))
                })
                .collect();
            let mut text = merge_prometheus(&texts);
            text.push_str(&account_metrics(&results));
            output::print(text.trim_end());
        }
        OutputFormat::Table => {
            for (i, (a, r)) in results.iter().enumerate() {
                if i > 0 {
                    output::print("");
                }
                output::print(&format!("== {} ==", heading(a)));
                match r {
                    Ok(s) => super::policy::print_status_table(s),
                    Err(e) => output::print(&format!("failed: {}", cause(e))),
                }
            }
        }
    }
    report_failed_accounts(&results);
    if args.check && !all_ok {
        crate::output::report_error(
            "check_failed",
            "status check failed: an account could not be read, a target is late or missing, a \
             resource is unprotected, or a backup its policy wants locked is not",
            None,
        );
        return Ok(Exit::Failure);
    }
    Ok(exit_for(results.len() - failed, failed))
}

/// `autosnap_account_ok{account="…"} 1|0`: whether each account could be read.
fn account_metrics<T>(results: &[(Account, Result<T, anyhow::Error>)]) -> String {
    let mut s = String::from(
        "# HELP autosnap_account_ok 1 when the account could be reached and read, 0 when not \
         (the log says why).\n# TYPE autosnap_account_ok gauge\n",
    );
    for (a, r) in results {
        let _ = writeln!(
            s,
            "autosnap_account_ok{{account=\"{}\"}} {}",
            a.id,
            u8::from(r.is_ok())
        );
    }
    s
}

/// Adds `account="<id>"` as the first label of every sample in a Prometheus text exposition.
pub(super) fn label_account(text: &str, account: &str) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            out.push_str(line);
        } else if let Some(brace) = line.find('{') {
            let (name, rest) = line.split_at(brace);
            let rest = &rest[1..];
            let sep = if rest.starts_with('}') { "" } else { "," };
            let _ = write!(out, "{name}{{account=\"{account}\"{sep}{rest}");
        } else if let Some(space) = line.find(' ') {
            let (name, value) = line.split_at(space);
            let _ = write!(out, "{name}{{account=\"{account}\"}}{value}");
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// One exposition from several accounts' texts: each metric's HELP and TYPE once, then its
/// samples from every account (labelled with the account), as the format requires.
fn merge_prometheus(texts: &[(String, String)]) -> String {
    // Metric families in first-seen order, each with its comment lines and samples.
    let mut families: Vec<(String, Vec<String>, Vec<String>)> = Vec::new();
    fn family<'a>(
        families: &'a mut Vec<(String, Vec<String>, Vec<String>)>,
        name: &str,
    ) -> &'a mut (String, Vec<String>, Vec<String>) {
        if let Some(i) = families.iter().position(|f| f.0 == name) {
            return &mut families[i];
        }
        families.push((name.to_owned(), Vec::new(), Vec::new()));
        families.last_mut().expect("just pushed")
    }
    for (account, text) in texts {
        for line in label_account(text, account).lines() {
            if let Some(rest) = line
                .strip_prefix("# HELP ")
                .or_else(|| line.strip_prefix("# TYPE "))
            {
                let name = rest.split(' ').next().unwrap_or_default();
                let f = family(&mut families, name);
                if !f.1.iter().any(|l| l == line) {
                    f.1.push(line.to_owned());
                }
            } else if !line.is_empty() {
                let name = line.split(['{', ' ']).next().unwrap_or_default().to_owned();
                family(&mut families, &name).2.push(line.to_owned());
            }
        }
    }
    let mut out = String::new();
    for (_, comments, samples) in families {
        for l in comments.iter().chain(&samples) {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

// ---- daemon --------------------------------------------------------------------------------

pub(super) async fn daemon(
    env: &Env,
    args: &DaemonArgs,
    selected: &[PolicyConfig],
) -> anyhow::Result<Exit> {
    let mut shutdown = Shutdown::new().context("cannot install signal handlers")?;
    let opts = RunOptions {
        create: true,
        copy: true,
        prune: true,
        archive: true,
        wait_timeout: args.wait_timeout,
        pacing: args.ec2_share,
        stop_at: None,
    };
    let opts = &opts;
    tracing::info!("daemon started across accounts");
    loop {
        // The accounts are read anew each round: an organization's new members join, and a
        // role fixed since the last round is used.
        let (base, chosen) = match resolve(env, &args.policy).await {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(
                    "cannot read the accounts: {e:#}; retrying in {}s",
                    args.retry_after.as_secs()
                );
                if shutdown.sleep(args.retry_after).await {
                    break;
                }
                continue;
            }
        };
        let backups = &super::backup_account::connect(env, &base, selected).await;
        let work = aws_accounts::across(&base, &chosen, |account, ctx| async move {
            let span = tracing::info_span!("account", id = %account.id);
            let policies = policies_of(&account, selected);
            let id = Some(account.id.as_str());
            let (plan, _) =
                super::backup_account::plan(env, &ctx, id, backups, &policies, false, true)
                    .instrument(span.clone())
                    .await?;
            let work = plan.creates().count()
                + plan.copies().count()
                + plan.deletions().count()
                + super::backup_account::copies(&plan)
                + super::backup_account::deletions(&plan);
            let failed = if work > 0 {
                let progress = RecordingProgress::default();
                let mut report = execute::execute(&ctx, &plan, opts, &progress, None)
                    .instrument(span.clone())
                    .await;
                if let Ok(r) = &mut report {
                    super::backup_account::execute(&ctx, id, backups, &plan, r, opts)
                        .instrument(span.clone())
                        .await?;
                }
                span.in_scope(|| log_report(report))
            } else {
                false
            };
            Ok::<_, anyhow::Error>((plan, failed))
        });
        tokio::pin!(work);
        let results = tokio::select! {
            r = &mut work => r,
            _ = shutdown.signalled() => {
                tracing::info!(
                    "signal received: letting in-flight work finish (at most {}s)",
                    args.shutdown_timeout.as_secs()
                );
                if tokio::time::timeout(args.shutdown_timeout, &mut work).await.is_err() {
                    tracing::warn!(
                        "in-flight work did not finish within {}s; stopping anyway \
                         (`autosnap run` again does the rest)",
                        args.shutdown_timeout.as_secs()
                    );
                }
                break;
            }
        };
        let mut failed = false;
        for (a, r) in &results {
            if let Err(e) = r {
                tracing::error!("{}: {}", heading(a), cause(e));
                failed = true;
            }
        }
        let now = Utc::now();
        let next = results
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok())
            .inspect(|(_, f)| failed |= *f)
            .flat_map(|(p, _)| p.policies.iter().flat_map(|p| &p.targets))
            .map(|t| t.next_due)
            .filter(|t| *t > now)
            .min();
        let mut sleep = next
            .map(|t| (t - now).to_std().unwrap_or_default())
            .unwrap_or(args.max_sleep)
            .min(args.max_sleep);
        if failed {
            sleep = sleep.min(args.retry_after);
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

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = "# HELP autosnap_backups Number of backups.\n# TYPE autosnap_backups gauge\n\
autosnap_backups{policy=\"daily\",target=\"vol-1\",region=\"us-east-1\"} 2\n\
# HELP autosnap_status_ok ok.\n# TYPE autosnap_status_ok gauge\nautosnap_status_ok 1\n\
autosnap_status_timestamp_seconds 1700000000\n";

    #[test]
    fn every_sample_gets_the_account_label() {
        let got = label_account(ONE, "111111111111");
        assert!(got.contains(
            "autosnap_backups{account=\"111111111111\",policy=\"daily\",target=\"vol-1\",region=\"us-east-1\"} 2\n"
        ), "{got}");
        assert!(
            got.contains("autosnap_status_ok{account=\"111111111111\"} 1\n"),
            "{got}"
        );
        assert!(got
            .contains("autosnap_status_timestamp_seconds{account=\"111111111111\"} 1700000000\n"));
        assert!(got.contains("# TYPE autosnap_backups gauge\n"));
        assert_eq!(
            label_account("m{} 1\n", "1"),
            "m{account=\"1\"} 1\n",
            "empty label set"
        );
    }

    #[test]
    fn merged_accounts_keep_one_help_and_type_per_metric_with_its_samples_together() {
        let merged = merge_prometheus(&[
            ("111111111111".into(), ONE.into()),
            ("222222222222".into(), ONE.into()),
        ]);
        assert_eq!(merged.matches("# HELP autosnap_backups ").count(), 1);
        assert_eq!(merged.matches("# TYPE autosnap_status_ok ").count(), 1);
        let lines: Vec<&str> = merged.lines().collect();
        let first = lines
            .iter()
            .position(|l| l.starts_with("autosnap_backups{"))
            .unwrap();
        assert!(lines[first].contains("111111111111"));
        assert!(
            lines[first + 1].starts_with("autosnap_backups{account=\"222222222222\""),
            "{merged}"
        );
        let ok = lines
            .iter()
            .position(|l| l.starts_with("# TYPE autosnap_status_ok"))
            .unwrap();
        assert!(lines[ok + 1].starts_with("autosnap_status_ok{account=\"111111111111\"}"));
        assert!(lines[ok + 2].starts_with("autosnap_status_ok{account=\"222222222222\"}"));
    }
}

//! Copies into backup accounts in `plan`, `run`, `prune`, `status` and `daemon`: the backup
//! accounts' roles assumed once per command, each plan completed with what they hold, the copy
//! lines of the table, and the run's share → copy → unshare and retention there.

use std::fmt::Write as _;

use autosnap_aws::backup_account::{self as aws_backup, BackupAccounts};
use autosnap_aws::execute::{RunOptions, RunReport};
use autosnap_aws::AwsContext;
use autosnap_core::plan::{CopySource, Inventory, Plan, TargetPlan};
use autosnap_core::policy::PolicyConfig;

use crate::commands::Env;

/// The backup accounts `policies` copy into, each reached by its role from `base` (nothing is
/// asked of AWS when no copy rule names an account).
pub(super) async fn connect(
    env: &Env,
    base: &AwsContext,
    policies: &[PolicyConfig],
) -> BackupAccounts {
    if !autosnap_core::backup_account::any(policies) {
        return BackupAccounts::none();
    }
    BackupAccounts::connect(
        base,
        &env.settings.config.file.backup_account_entries,
        policies,
    )
    .await
}

/// Completes `plan` (made in the account of `ctx`, `account` when known) with its copies in
/// backup accounts.
pub(super) async fn annotate(
    ctx: &AwsContext,
    account: Option<&str>,
    accounts: &BackupAccounts,
    policies: &[PolicyConfig],
    inventory: &Inventory,
    plan: &mut Plan,
) -> anyhow::Result<()> {
    if !autosnap_core::backup_account::any(policies) {
        return Ok(());
    }
    let source = match account {
        Some(a) => a.to_owned(),
        None => ctx.account_id().await?,
    };
    aws_backup::annotate(ctx, &source, accounts, policies, inventory, plan).await?;
    Ok(())
}

/// Carries out the copies into backup accounts and their retention after the run in the
/// source account, adding to its report.
pub(super) async fn execute(
    ctx: &AwsContext,
    account: Option<&str>,
    accounts: &BackupAccounts,
    plan: &Plan,
    report: &mut RunReport,
    opts: &RunOptions,
) -> anyhow::Result<()> {
    if !plan
        .policies
        .iter()
        .any(|p| p.targets.iter().any(|t| !t.account_copies.is_empty()))
    {
        return Ok(());
    }
    let source = match account {
        Some(a) => a.to_owned(),
        None => ctx.account_id().await?,
    };
    let done = aws_backup::execute(ctx, &source, accounts, plan, report, opts).await;
    report.backup_accounts.merge(done.report);
    report.failures.extend(done.failures);
    report.left.extend(done.left);
    Ok(())
}

/// Copies to make into backup accounts.
pub(super) fn copies(plan: &Plan) -> usize {
    targets(plan)
        .flat_map(|t| &t.account_copies)
        .filter(|c| c.copy.is_some())
        .count()
}

/// Copies in backup accounts that retention deletes.
pub(super) fn deletions(plan: &Plan) -> usize {
    targets(plan)
        .flat_map(|t| &t.account_copies)
        .flat_map(|c| &c.backups)
        .filter(|b| b.delete)
        .count()
}

fn targets(plan: &Plan) -> impl Iterator<Item = &TargetPlan> {
    plan.policies.iter().flat_map(|p| &p.targets)
}

/// The table lines of one target's copies in backup accounts: `→ 222222222222 us-west-2`.
pub(super) fn render_target(s: &mut String, t: &TargetPlan, show_creates: bool) {
    for c in &t.account_copies {
        let place = format!("→ {} {}", c.account, c.region);
        if let Some(e) = &c.error {
            let _ = writeln!(s, "    ! copies {place}: cannot be read: {e}");
            continue;
        }
        if let Some(copy) = c.copy.as_ref().filter(|_| show_creates) {
            let what = match &copy.source {
                CopySource::New => "the new backup".to_string(),
                CopySource::Existing { backup_id, .. } => backup_id.clone(),
            };
            let reason = match &copy.source {
                CopySource::New => copy.reason.clone(),
                CopySource::Existing { .. } => format!("{} of account {}", copy.reason, c.account),
            };
            let _ = writeln!(
                s,
                "    + copy {what} {place} with key {}: {reason}",
                c.kms_key
            );
        }
        for id in &c.unshare {
            let _ = writeln!(
                s,
                "    ~ unshare {id} from {} (its copy there is complete)",
                c.account
            );
        }
        if c.backups.is_empty() {
            continue;
        }
        let _ = writeln!(s, "    copies {place} ({}):", c.retention);
        for b in &c.backups {
            let (mark, why) = match (b.delete, &b.protected) {
                (true, _) => ("- delete", "no rule keeps it".to_string()),
                (false, Some(p)) if b.keep => (
                    "  keep  ",
                    format!("{}; protected: {p}", b.reasons.join(", ")),
                ),
                (false, Some(p)) => ("  keep  ", format!("protected: {p}")),
                (false, None) => ("  keep  ", b.reasons.join(", ")),
            };
            let _ = writeln!(
                s,
                "      {mark} {}  {}  {why}",
                b.backup_id,
                b.time.format("%Y-%m-%d %H:%M UTC")
            );
        }
    }
}

/// The lines a run's report adds for backup accounts.
pub(super) fn report_lines(s: &mut String, r: &RunReport) {
    let b = &r.backup_accounts;
    for c in &b.copied {
        let _ = write!(
            s,
            "\n  copied {} of {} → {} {} as {}{}",
            c.source_snapshot_id,
            c.target_id,
            c.account,
            c.to_region,
            c.snapshot_id,
            if c.unshared { " (share removed)" } else { "" }
        );
    }
    for d in &b.deleted {
        let _ = write!(
            s,
            "\n  deleted copy {} of {} in {} {} (policy {})",
            d.snapshot_id, d.target_id, d.account, d.region, d.policy
        );
    }
    for id in &b.unshared {
        let _ = write!(s, "\n  unshared {id} (its copy is complete)");
    }
}

/// [`super::policy::make_plan`], then [`annotate`]: the plan of the account of `ctx` with its
/// copies in backup accounts.
pub(super) async fn plan(
    env: &Env,
    ctx: &AwsContext,
    account: Option<&str>,
    accounts: &BackupAccounts,
    policies: &[PolicyConfig],
    all_kinds: bool,
    include_creates: bool,
) -> anyhow::Result<(Plan, Inventory)> {
    let (mut plan, inventory) =
        super::policy::make_plan(env, ctx, policies, all_kinds, include_creates).await?;
    annotate(ctx, account, accounts, policies, &inventory, &mut plan).await?;
    Ok((plan, inventory))
}

/// `status` of one target's copies in one backup account.
#[derive(Debug, serde::Serialize)]
pub(super) struct AccountCopyStatus {
    pub account: String,
    pub region: String,
    /// Copies there (of this policy, target and source account).
    pub copies: usize,
    /// The newest copy's time.
    pub newest_copy: Option<chrono::DateTime<chrono::Utc>>,
    /// Why they could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The `status` lines of a target's copies in backup accounts.
pub(super) fn status_of(t: &TargetPlan) -> Vec<AccountCopyStatus> {
    t.account_copies
        .iter()
        .map(|c| AccountCopyStatus {
            account: c.account.clone(),
            region: c.region.clone(),
            copies: c.backups.len(),
            newest_copy: c.backups.iter().map(|b| b.time).max(),
            error: c.error.clone(),
        })
        .collect()
}

/// The `status -o prometheus` families of the copies in backup accounts: per policy target
/// (`region` its own) and backup account (`backup_account`, `copy_region`), how many copies are
/// there and when the newest was taken. `rows` are (policy, target, region, copies); `esc`
/// escapes a label value.
pub(super) fn prometheus<'a>(
    s: &mut String,
    rows: impl Iterator<
        Item = (
            &'a String,
            &'a String,
            &'a String,
            &'a Vec<AccountCopyStatus>,
        ),
    >,
    esc: fn(&str) -> String,
) {
    let rows: Vec<_> = rows.filter(|r| !r.3.is_empty()).collect();
    if rows.is_empty() {
        return;
    }
    let labels = |policy: &str, target: &str, region: &str, c: &AccountCopyStatus| {
        format!(
            "{{policy=\"{}\",target=\"{}\",region=\"{}\",backup_account=\"{}\",copy_region=\"{}\"}}",
            esc(policy),
            esc(target),
            esc(region),
            esc(&c.account),
            esc(&c.region)
        )
    };
    s.push_str(
        "# HELP autosnap_account_copies Copies of a policy target in a backup account and Region.\n",
    );
    s.push_str("# TYPE autosnap_account_copies gauge\n");
    for (policy, target, region, copies) in &rows {
        // A backup account that could not be read has no count to give.
        for c in copies.iter().filter(|c| c.error.is_none()) {
            let _ = writeln!(
                s,
                "autosnap_account_copies{} {}",
                labels(policy, target, region, c),
                c.copies
            );
        }
    }
    s.push_str(
        "# HELP autosnap_account_copy_newest_timestamp_seconds When the newest copy of a policy \
         target in a backup account and Region was taken.\n",
    );
    s.push_str("# TYPE autosnap_account_copy_newest_timestamp_seconds gauge\n");
    for (policy, target, region, copies) in &rows {
        for c in copies.iter() {
            if let Some(at) = c.newest_copy {
                let _ = writeln!(
                    s,
                    "autosnap_account_copy_newest_timestamp_seconds{} {}",
                    labels(policy, target, region, c),
                    at.timestamp()
                );
            }
        }
    }
}

/// The table of copies in backup accounts under `status`'s (nothing without such copies).
pub(super) fn print_status<'a>(
    rows: impl Iterator<Item = (&'a String, &'a String, &'a Vec<AccountCopyStatus>)>,
) {
    let mut t = crate::output::table(["POLICY", "TARGET", "COPIES IN", "KEPT", "NEWEST", "DETAIL"]);
    let mut any = false;
    for (policy, target, copies) in rows {
        for c in copies {
            any = true;
            t.add_row([
                policy.clone(),
                target.clone(),
                format!("→ {} {}", c.account, c.region),
                c.copies.to_string(),
                crate::output::time(c.newest_copy),
                c.error.clone().unwrap_or_default(),
            ]);
        }
    }
    if any {
        crate::output::print("");
        crate::output::print_table(&t);
    }
}

//! `--time-limit` of `run` and `prune`: when it passes, no new step starts. The executor
//! records what it did not start ([`NotStarted`]); this module adds the restore tests a run
//! skipped and says it all in the text report.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use autosnap_aws::execute::NotStarted;
use autosnap_core::plan::Plan;

/// The instant after which no step starts, counted from now (the command's start).
pub(super) fn stop_at(limit: Option<Duration>) -> Option<Instant> {
    limit.map(|l| Instant::now() + l)
}

/// The restore tests the plan has due, none of which a run stopped by its limit starts.
pub(super) fn restore_tests_left(plan: &Plan) -> Vec<NotStarted> {
    plan.policies
        .iter()
        .flat_map(|p| {
            p.targets
                .iter()
                .filter(|t| t.restore_test.as_ref().is_some_and(|r| r.due))
                .map(|t| NotStarted {
                    policy: p.policy.clone(),
                    target_id: t.target_id.clone(),
                    region: t.region.clone(),
                    action: "restore_test",
                    backup_id: None,
                    account: None,
                })
        })
        .collect()
}

/// The lines of a text report for the steps not started (empty when none).
pub(super) fn left_text(left: &[NotStarted]) -> String {
    let mut s = String::new();
    if left.is_empty() {
        return s;
    }
    let _ = write!(
        s,
        "\n  time limit reached: {} step(s) not started; `autosnap run` again does them",
        left.len()
    );
    for l in left {
        let backup = l
            .backup_id
            .as_deref()
            .map(|b| format!(" ({b})"))
            .unwrap_or_default();
        let account = l
            .account
            .as_deref()
            .map(|a| format!(" (account {a})"))
            .unwrap_or_default();
        let _ = write!(
            s,
            "\n  not started: policy {} {} {}{backup} in {}{account}",
            l.policy,
            l.action.replace('_', " "),
            l.target_id,
            l.region
        );
    }
    s
}

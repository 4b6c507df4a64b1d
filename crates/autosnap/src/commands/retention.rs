//! `autosnap retention simulate`: the retention engine, offline.

use std::io::Read;

use anyhow::Context;
use autosnap_core::retention::{self, KeepPolicy, RetentionItem};
use chrono::Utc;
use serde::Serialize;

use crate::cli::{KeepArgs, OutputFormat, RetentionSimulateArgs};
use crate::exit::{Exit, UsageError};
use crate::output;

#[derive(Serialize)]
struct Kept {
    id: String,
    reasons: Vec<String>,
}

#[derive(Serialize)]
struct Removed {
    id: String,
}

#[derive(Serialize)]
struct Simulation {
    keep: Vec<Kept>,
    remove: Vec<Removed>,
}

pub fn simulate(format: OutputFormat, args: &RetentionSimulateArgs) -> anyhow::Result<Exit> {
    let policy = policy_from_args(&args.keep)?;
    let text = if args.input.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read the backups from standard input")?;
        s
    } else {
        std::fs::read_to_string(&args.input)
            .map_err(|e| UsageError(format!("cannot read --input {}: {e}", args.input.display())))?
    };
    let items: Vec<RetentionItem> = serde_json::from_str(&text).map_err(|e| {
        UsageError(format!(
            "--input {} is not a JSON array of {{\"id\", \"time\" (RFC 3339), \"tags\"}}: {e}",
            args.input.display()
        ))
    })?;
    let now = args.now.unwrap_or_else(Utc::now);
    let decisions = retention::apply(&policy, &items, now);

    let result = Simulation {
        keep: decisions
            .iter()
            .filter(|d| d.keep)
            .map(|d| Kept {
                id: d.id.clone(),
                reasons: d.reasons.clone(),
            })
            .collect(),
        remove: decisions
            .iter()
            .filter(|d| !d.keep)
            .map(|d| Removed { id: d.id.clone() })
            .collect(),
    };
    match format {
        OutputFormat::Json => output::print_json(&result)?,
        OutputFormat::Table | OutputFormat::Prometheus => {
            output::print(&format!("policy: {policy}\n"));
            let mut t = output::table(["ID", "TIME", "DECISION", "REASONS"]);
            for d in &decisions {
                t.add_row([
                    d.id.clone(),
                    d.time.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                    if d.keep { "keep" } else { "remove" }.to_string(),
                    d.reasons.join(", "),
                ]);
            }
            output::print_table(&t);
            output::print(&format!(
                "\n{} kept, {} removed",
                result.keep.len(),
                result.remove.len()
            ));
        }
    }
    Ok(Exit::Success)
}

pub(crate) fn policy_from_args(args: &KeepArgs) -> anyhow::Result<KeepPolicy> {
    let mut p = KeepPolicy::default();
    let counts = [
        (&mut p.last, &args.keep_last),
        (&mut p.hourly, &args.keep_hourly),
        (&mut p.daily, &args.keep_daily),
        (&mut p.weekly, &args.keep_weekly),
        (&mut p.monthly, &args.keep_monthly),
        (&mut p.yearly, &args.keep_yearly),
    ];
    for (slot, arg) in counts {
        if let Some(c) = arg {
            *slot = *c;
        }
    }
    p.within = args.keep_within;
    p.within_hourly = args.keep_within_hourly;
    p.within_daily = args.keep_within_daily;
    p.within_weekly = args.keep_within_weekly;
    p.within_monthly = args.keep_within_monthly;
    p.within_yearly = args.keep_within_yearly;
    p.keep_tags = args
        .keep_tag
        .iter()
        .map(|list| {
            list.split(',')
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .collect()
        })
        .collect();
    p.validate().map_err(|e| {
        UsageError(format!(
            "{e}: give at least one --keep-… rule (for example --keep-daily 7)"
        ))
    })?;
    Ok(p)
}

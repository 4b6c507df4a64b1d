//! `autosnap retention simulate`: the retention engine, offline.

use std::io::Read;

use anyhow::Context;
use autosnap_core::retention::{self, RetentionItem};
use chrono::Utc;
use serde::Serialize;

use crate::cli::{OutputFormat, RetentionSimulateArgs};
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
    let policy = &args.keep;
    policy
        .validate_flags()
        .map_err(|e| UsageError(e.to_string()))?;
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
    let decisions = retention::apply(policy, &items, now);

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

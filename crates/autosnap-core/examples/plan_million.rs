//! Plans one policy over one target holding 1,000,000 backups and prints what it decided.
//!
//! Used by `bench/retention/run.sh` to measure wall time and peak memory (`/usr/bin/time -v`)
//! of a whole run: building the inventory, planning, and holding both. It also prints the
//! process's peak memory after each stage (from `/proc/self/status`, Linux only), so the
//! inventory's share and the plan's share can be told apart.
//!
//! ```text
//! cargo run --release -p autosnap-core --example plan_million [COUNT]
//! ```

use std::time::Instant;

use autosnap_core::plan::{plan, PlanOptions};
use chrono::TimeDelta;

#[path = "../benches/support/million.rs"]
mod million;

/// The process's peak resident set size so far, in MiB (`VmHWM`), when the OS tells.
fn peak_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// CPU time (user + system) the process has used so far, in ms, when the OS tells
/// (`/proc/self/stat`, in clock ticks of 10 ms). Less disturbed than wall time when other
/// work shares the machine.
fn cpu_ms() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces; utime and stime are the 12th and 13th fields after
    // its closing parenthesis.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * 10.0)
}

fn show_peak() -> String {
    peak_mib().map_or_else(|| "n/a".to_owned(), |m| format!("{m:.0} MiB"))
}

fn main() {
    let count: usize = match std::env::args().nth(1) {
        Some(arg) => arg.parse().expect("COUNT must be a number"),
        None => 1_000_000,
    };
    let policies = [million::policy()];
    let now = million::newest() + TimeDelta::hours(1);
    println!("peak at start:            {}", show_peak());

    let started = Instant::now();
    let inventory = million::inventory(count);
    let generated = started.elapsed();
    println!("peak after inventory:     {}", show_peak());

    let started = Instant::now();
    let cpu_before = cpu_ms();
    let plan = plan(
        &policies,
        &inventory,
        million::REGION,
        now,
        &PlanOptions::default(),
    );
    let planned = started.elapsed();
    let plan_cpu = cpu_before
        .zip(cpu_ms())
        .map(|(before, after)| after - before);
    println!("peak after plan:          {}", show_peak());

    let target = &plan.policies[0].targets[0];
    let decisions = &target.groups[0].backups;
    let kept = decisions.iter().filter(|d| !d.delete).count();
    println!("policy:    {}", plan.policies[0].retention);
    println!("due:       {} ({})", target.due, target.due_reason);
    println!("copies:    {}", target.copies.len());
    println!("backups:   {}", decisions.len());
    println!("kept:      {kept}");
    println!("deleted:   {}", plan.deletions().count());
    println!("inventory: {:.1} ms", generated.as_secs_f64() * 1e3);
    println!("plan:      {:.1} ms", planned.as_secs_f64() * 1e3);
    if let Some(cpu) = plan_cpu {
        println!("plan cpu:  {cpu:.0} ms (user + system)");
    }

    let started = Instant::now();
    drop(plan);
    println!("free plan: {:.1} ms", started.elapsed().as_secs_f64() * 1e3);
}

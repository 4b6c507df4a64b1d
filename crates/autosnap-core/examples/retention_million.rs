//! Applies a typical retention policy to one group of 1,000,000 backups and prints the counts.
//!
//! Used by `bench/retention/run.sh` to measure wall time and peak memory (`/usr/bin/time -v`)
//! of a whole run: generating the backups, applying the policy and holding the decisions.
//!
//! ```text
//! cargo run --release -p autosnap-core --example retention_million [COUNT]
//! ```

use std::time::Instant;

use autosnap_core::retention::{apply, KeepPolicy, RetentionItem};
use chrono::{DateTime, TimeDelta, TimeZone, Utc};

/// `count` backups one every 5 minutes (about 9.5 years) back from `newest`, with EBS-like
/// ids, in a shuffled order as a listing API might return them. Same generator as
/// `benches/retention.rs`.
fn backups(count: usize, newest: DateTime<Utc>) -> Vec<RetentionItem> {
    let mut items: Vec<RetentionItem> = (0..count)
        .map(|n| RetentionItem {
            id: format!("snap-{:017x}", n),
            time: newest - TimeDelta::minutes(5 * n as i64),
            tags: Vec::new(),
        })
        .collect();
    // Fisher–Yates with a fixed xorshift generator: deterministic, no extra dependency.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in (1..items.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        items.swap(i, (state % (i as u64 + 1)) as usize);
    }
    items
}

fn main() {
    let count: usize = match std::env::args().nth(1) {
        Some(arg) => arg.parse().expect("COUNT must be a number"),
        None => 1_000_000,
    };
    let policy: KeepPolicy = toml::from_str(
        "last = 3\ndaily = 7\nweekly = 4\nmonthly = 12\nyearly = 5\nwithin = \"2d\"",
    )
    .expect("valid policy");
    let newest = Utc.with_ymd_and_hms(2024, 6, 1, 3, 0, 0).unwrap();
    let now = newest + TimeDelta::hours(1);

    let started = Instant::now();
    let items = backups(count, newest);
    let generated = started.elapsed();

    let started = Instant::now();
    let decisions = apply(&policy, &items, now);
    let applied = started.elapsed();

    let kept = decisions.iter().filter(|d| d.keep).count();
    println!("policy:    {policy}");
    println!("backups:   {}", decisions.len());
    println!("kept:      {kept}");
    println!("removed:   {}", decisions.len() - kept);
    println!("generate:  {:.1} ms", generated.as_secs_f64() * 1e3);
    println!("apply:     {:.1} ms", applied.as_secs_f64() * 1e3);
}

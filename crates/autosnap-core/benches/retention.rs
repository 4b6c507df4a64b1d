//! Retention over one group of 1,000,000 backups with a typical policy
//! (last 3, daily 7, weekly 4, monthly 12, yearly 5, within 2d).
//!
//! Run with `cargo bench -p autosnap-core --bench retention`, or `bench/retention/run.sh`,
//! which also measures peak memory; results are in `bench/retention/RESULTS.md`.

use autosnap_core::retention::{apply, KeepPolicy, RetentionItem};
use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;

const BACKUPS: usize = 1_000_000;

/// `count` backups one every 5 minutes (about 9.5 years) back from `newest`, with EBS-like
/// ids, in a shuffled order as a listing API might return them. Same generator as
/// `examples/retention_million.rs`.
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

fn typical_policy() -> KeepPolicy {
    toml::from_str("last = 3\ndaily = 7\nweekly = 4\nmonthly = 12\nyearly = 5\nwithin = \"2d\"")
        .expect("valid policy")
}

fn bench_retention(c: &mut Criterion) {
    let newest = Utc.with_ymd_and_hms(2024, 6, 1, 3, 0, 0).unwrap();
    let now = newest + TimeDelta::hours(1);
    let items = backups(BACKUPS, newest);
    let policy = typical_policy();

    let mut group = c.benchmark_group("retention");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(BACKUPS as u64));
    group.bench_function("apply_typical_policy_1m_backups", |b| {
        b.iter(|| apply(black_box(&policy), black_box(&items), black_box(now)))
    });
    group.finish();
}

criterion_group!(benches, bench_retention);
criterion_main!(benches);

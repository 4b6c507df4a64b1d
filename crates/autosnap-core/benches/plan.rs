//! The planner over one policy with one target holding 1,000,000 backups (policy: daily at
//! 03:00, last 3, daily 7, weekly 4, monthly 12, yearly 5, within 2d, one copy region).
//!
//! Run with `cargo bench -p autosnap-core --bench plan`, or `bench/retention/run.sh`, which
//! also measures peak memory; results are in `bench/retention/RESULTS.md`.

use std::hint::black_box;
use std::time::Duration;

use autosnap_core::plan::{plan, PlanOptions};
use chrono::TimeDelta;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

#[path = "support/million.rs"]
mod million;

const BACKUPS: usize = 1_000_000;

fn bench_plan(c: &mut Criterion) {
    // Built once, outside the timing: only `plan` is measured.
    let inventory = million::inventory(BACKUPS);
    let policies = [million::policy()];
    let options = PlanOptions::default();
    let now = million::newest() + TimeDelta::hours(1);

    let mut group = c.benchmark_group("plan");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(30));
    group.throughput(Throughput::Elements(BACKUPS as u64));
    let run = || {
        plan(
            black_box(&policies),
            black_box(&inventory),
            million::REGION,
            black_box(now),
            &options,
        )
    };
    // Planning, with the plan freed outside the timing (a CLI run plans once and exits).
    group.bench_function("one_target_1m_backups", |b| b.iter_with_large_drop(run));
    // The same, with freeing the plan's ~3 million strings timed too.
    group.bench_function("one_target_1m_backups_with_drop", |b| b.iter(run));
    group.finish();
}

criterion_group!(benches, bench_plan);
criterion_main!(benches);

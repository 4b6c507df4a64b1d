#!/usr/bin/env bash
# Retention over one group of 1,000,000 backups (policy: last 3, daily 7, weekly 4,
# monthly 12, yearly 5, within 2d). Targets: under 1 s and under 500 MB peak memory.
#
#   1. criterion: time of `retention::apply` alone (inputs generated outside the timing);
#   2. examples/retention_million under `/usr/bin/time -v`: a whole process that generates
#      the backups, applies the policy and holds the decisions; reports wall time and peak
#      memory (maximum resident set size).
#
# The planner over one policy with one target holding 1,000,000 backups (same retention,
# daily cron, one copy region):
#
#   3. criterion: time of `plan::plan` alone (the inventory is built once, outside the
#      timing), with the plan freed outside the timing and, separately, inside it;
#   4. examples/plan_million under `/usr/bin/time -v`: a whole process that builds the
#      inventory, plans and holds both; it also prints its peak memory after each stage.
#
# Release mode throughout. Honours CARGO_TARGET_DIR. Results are written down by hand in
# bench/retention/RESULTS.md.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
target_dir="${CARGO_TARGET_DIR:-$root/target}"

if [[ ! -x /usr/bin/time ]]; then
    echo "installing GNU time (Debian package 'time')" >&2
    apt-get install -y time >/dev/null || { apt-get update >/dev/null && apt-get install -y time >/dev/null; }
fi

echo "== criterion: cargo bench -p autosnap-core --bench retention"
cargo bench -p autosnap-core --bench retention

echo
echo "== whole process: examples/retention_million under /usr/bin/time -v"
cargo build --release -p autosnap-core --example retention_million
log="$(mktemp)"
/usr/bin/time -v "$target_dir/release/examples/retention_million" 2>"$log"
grep -E 'Elapsed \(wall clock\)|Maximum resident set size' "$log"
peak_kb="$(awk -F': ' '/Maximum resident set size/ {print $2}' "$log")"
echo "peak memory: $((peak_kb / 1024)) MiB"
rm -f "$log"

echo
echo "== criterion: cargo bench -p autosnap-core --bench plan"
cargo bench -p autosnap-core --bench plan

echo
echo "== whole process: examples/plan_million under /usr/bin/time -v"
cargo build --release -p autosnap-core --example plan_million
log="$(mktemp)"
/usr/bin/time -v "$target_dir/release/examples/plan_million" 2>"$log"
grep -E 'Elapsed \(wall clock\)|Maximum resident set size' "$log"
peak_kb="$(awk -F': ' '/Maximum resident set size/ {print $2}' "$log")"
echo "peak memory: $((peak_kb / 1024)) MiB"
rm -f "$log"

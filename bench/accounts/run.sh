#!/usr/bin/env bash
# Benchmark: `autosnap plan` across A accounts with V tagged volumes each, on the local test bed
# behind the scripted EC2 rate limit (testbed/throttle_proxy.py, which also counts every request
# per action, and per service for STS). Each account has the role `autosnap` trusting the base
# account (testbed/assume_role.py refuses any other); the config lists the accounts as
# [[account]] entries. Reports the seeding time (separately), the plan's wall time, peak RSS, and
# AWS requests per account.
#
#   bench/accounts/run.sh [A] [V]     (default A=20, V=100; PROFILE=release for a release build,
#                                      default debug: the time is the test bed's, not autosnap's CPU;
#                                      LOG_TO=FILE keeps autosnap's log, e.g. with
#                                      AUTOSNAP_LOG=aws_smithy_runtime=debug,aws_config=debug;
#                                      NO_BUILD=1 uses the binary already in CARGO_TARGET_DIR)
#
# Needs: the test bed (testbed/setup.sh) and a build of autosnap.
set -euo pipefail
accounts="${1:-20}"
volumes="${2:-100}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/autosnap/target}"
venv_line="$(testbed/setup.sh)"; venv="${venv_line#AUTOSNAP_TESTBED_VENV=}"
py="$venv/bin/python"
profile="${PROFILE:-debug}"
if [[ -n "${NO_BUILD:-}" ]]; then :  # NO_BUILD=1: use the binary already built
elif [[ "$profile" == release ]]; then cargo build --release --quiet --bin autosnap; else cargo build --quiet --bin autosnap; fi
autosnap="$CARGO_TARGET_DIR/$profile/autosnap"
work="$(mktemp -d)"; trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null

wait_port() { for _ in $(seq 1 200); do [[ -s "$1" ]] && return; sleep 0.1; done; echo "no port in $1" >&2; exit 1; }

echo "== autosnap plan across $accounts accounts x $volumes volumes ($profile build)"
# The test bed with the roles and volumes made in its own process (moto's Python API; through
# the HTTP API 50,000 volumes take far longer than the plan): bench/accounts/seeded_testbed.py.
"$py" bench/accounts/seeded_testbed.py "$accounts" "$volumes" "$work/autosnap.toml" "$work/seeded" \
    --port 0 --port-file "$work/bed.port" 2>"$work/bed.log" >/dev/null &
wait_port "$work/bed.port"
bed="http://127.0.0.1:$(cat "$work/bed.port")"
until [[ -s "$work/seeded" ]]; do
    kill -0 %1 2>/dev/null || { echo "the test bed stopped while seeding:" >&2; tail "$work/bed.log" >&2; exit 1; }
    sleep 0.5
done
echo "seeding: $(cat "$work/seeded") s for $accounts roles and $((accounts * volumes)) volumes (in-process, not part of the plan's time)"

"$py" testbed/throttle_proxy.py --upstream "$bed" --port 0 --port-file "$work/proxy.port" \
    >/dev/null 2>"$work/proxy.log" &
wait_port "$work/proxy.port"
proxy="http://127.0.0.1:$(cat "$work/proxy.port")"
export AWS_ENDPOINT_URL="$proxy"

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
start=$(date +%s.%N)
/usr/bin/time -f "%M" -o "$work/rss" "$autosnap" -q -c "$work/autosnap.toml" plan -o json >"$work/plan.json" 2>"${LOG_TO:-/dev/stderr}" \
    || echo "autosnap plan exited with $?"
end=$(date +%s.%N)
"$py" -c "import json,sys,urllib.request; json.dump(json.load(urllib.request.urlopen('$proxy/_stats')), sys.stdout)" >"$work/stats"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
"$py" - "$work/plan.json" "$work/stats" "$start" "$end" "$(tail -n1 "$work/rss")" "$accounts" "$volumes" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
stats = json.load(open(sys.argv[2]))
wall = float(sys.argv[4]) - float(sys.argv[3])
rss_kib, n_accounts, n_volumes = int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
ok = [a for a in doc["accounts"] if a["ok"]]
targets = sum(len(p["targets"]) for a in ok for p in a["plan"]["policies"])
print(f"accounts planned: {len(ok)} of {n_accounts} (failed: {doc['failed_accounts']}); "
      f"targets planned: {targets} of {n_accounts * n_volumes}")
print(f"{'action':<32} {'requests':>8} {'per account':>11} {'throttled':>9}")
for action, c in stats["actions"].items():
    print(f"{action:<32} {c['requests']:>8} {c['requests'] / n_accounts:>11.2f} {c['throttled']:>9}")
total = sum(c["requests"] for c in stats["actions"].values())
print(f"all requests: {total} = {total / n_accounts:.2f} per account")
print(f"wall time: {wall:.1f} s ({wall / n_accounts:.2f} s per account); peak RSS {rss_kib // 1024} MiB")
PY

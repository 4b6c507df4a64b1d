#!/usr/bin/env bash
# Benchmark: `autosnap run` over N tagged volumes against the local test bed behind a scripted
# EC2 rate limit (testbed/throttle_proxy.py: EC2's documented token bucket per action; an empty
# bucket answers RequestLimitExceeded). Reports wall time, EC2 requests per volume, throttles
# received, and the floor the budgets allow, computed from the budgets the proxy enforced:
# for each action, max(0, accepted requests - bucket) / refill seconds; the floor is the largest.
#
#   bench/policies/run.sh [N]     (default N=500; PROFILE=debug to skip the release build;
#                                  EC2_SHARE=0.5 to run with `--ec2-share 0.5`;
#                                  PROXY_ARGS="--budget CreateSnapshot=50/5" for other budgets;
#                                  CLI_LOOP=1 to also time an `aws ec2 create-snapshot` loop)
#
# Needs: the test bed (testbed/setup.sh) and a build of autosnap; the aws CLI only with
# CLI_LOOP=1 (installed into the test bed's venv when missing).
set -euo pipefail
n="${1:-500}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/autosnap/target}"
venv_line="$(testbed/setup.sh)"; venv="${venv_line#AUTOSNAP_TESTBED_VENV=}"
py="$venv/bin/python"
# PROFILE=debug reuses the test build (the time is spent waiting on EC2's pacing, not in
# autosnap's CPU); the default is a release build.
profile="${PROFILE:-release}"
if [[ "$profile" == release ]]; then cargo build --release --quiet --bin autosnap; else cargo build --quiet --bin autosnap; fi
autosnap="$CARGO_TARGET_DIR/$profile/autosnap"
work="$(mktemp -d)"; trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null

wait_port() { for _ in $(seq 1 200); do [[ -s "$1" ]] && return; sleep 0.1; done; echo "no port in $1" >&2; exit 1; }

# A fresh test bed with N tagged volumes (made directly, not through the proxy).
start_bed() {
    local name=$1
    "$py" testbed/autosnap_testbed.py --port 0 --port-file "$work/$name.port" 2>"$work/$name.log" >/dev/null &
    wait_port "$work/$name.port"
    bed="http://127.0.0.1:$(cat "$work/$name.port")"
    "$py" - "$bed" "$n" <<'PY'
import sys, boto3
ec2 = boto3.client("ec2", endpoint_url=sys.argv[1], region_name="us-east-1")
for i in range(int(sys.argv[2])):
    ec2.create_volume(Size=8, AvailabilityZone="us-east-1a", TagSpecifications=[{
        "ResourceType": "volume", "Tags": [{"Key": "Backup", "Value": "daily"}, {"Key": "Name", "Value": f"vol-{i}"}]}])
PY
}

echo "== autosnap run over $n volumes, through EC2's documented request budgets"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
start_bed autosnap
# shellcheck disable=SC2086  # PROXY_ARGS is a list of flags
"$py" testbed/throttle_proxy.py --upstream "$bed" --port 0 --port-file "$work/proxy.port" \
    ${PROXY_ARGS:-} >/dev/null 2>"$work/proxy.log" &
wait_port "$work/proxy.port"
proxy="http://127.0.0.1:$(cat "$work/proxy.port")"
export AWS_ENDPOINT_URL="$proxy"
cat >"$work/autosnap.toml" <<'TOML'
[[policy]]
name = "bench"
resource = "volume"
select = [{ tags = { Backup = "daily" } }]
schedule = "0 3 * * *"
retain = { last = 7 }
TOML
stats() { "$py" -c "import json,sys,urllib.request; json.dump(json.load(urllib.request.urlopen('$proxy/_stats')), sys.stdout)"; }
reset() { "$py" -c "import urllib.request; urllib.request.urlopen(urllib.request.Request('$proxy/_stats/reset', method='POST')).read()"; }

reset
start=$(date +%s.%N)
share=(); [[ -n "${EC2_SHARE:-}" ]] && share=(--ec2-share "$EC2_SHARE") && echo "with --ec2-share $EC2_SHARE"
/usr/bin/time -f "%M" -o "$work/rss" "$autosnap" -q -c "$work/autosnap.toml" run "${share[@]}" -o json >"$work/run.json" || echo "autosnap run exited with $?"
end=$(date +%s.%N)
stats >"$work/run.stats"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
"$py" - "$work/run.json" "$work/run.stats" "$start" "$end" "$(tail -n1 "$work/rss")" "$n" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))["report"]
stats = json.load(open(sys.argv[2]))
wall = float(sys.argv[4]) - float(sys.argv[3])
rss_kib, n = int(sys.argv[5]), int(sys.argv[6])
created = len(report["created"])
print(f"snapshots created: {created} (failures: {len(report['failures'])})")
print(f"{'EC2 action':<32} {'requests':>8} {'throttled':>9} {'bucket':>6} {'refill/s':>8} {'floor s':>8}")
floors = {}
for action, c in stats["actions"].items():
    b = stats["budgets"].get(action)
    if b is None:
        print(f"{action:<32} {c['requests']:>8} {'-':>9} (not EC2: not limited)")
        continue
    # The floor counts the requests EC2 accepted: a throttled one did nothing.
    floors[action] = max(0, c["forwarded"] - b["capacity"]) / b["refill_per_sec"]
    print(f"{action:<32} {c['requests']:>8} {c['throttled']:>9} {b['capacity']:>6} "
          f"{b['refill_per_sec']:>8g} {floors[action]:>8.1f}")
floor = max(floors.values(), default=0.0)
per_volume = stats["ec2_requests"] / n
print(f"wall time: {wall:.1f} s; peak RSS {rss_kib // 1024} MiB")
print(f"EC2 requests: {stats['ec2_requests']} = {per_volume:.3f} per volume (goal <= 1.02)")
print(f"throttles received: {stats['ec2_throttled']} (goal 0)")
print(f"floor the budgets allow: {floor:.1f} s ({max(floors, key=floors.get) if floors else '-'}); "
      f"wall / floor = {wall / floor if floor else float('nan'):.3f} (goal <= 1.10)")
ok = created == n and per_volume <= 1.02 and stats["ec2_throttled"] == 0 and floor and wall / floor <= 1.10
print("goal met" if ok else "GOAL NOT MET")
PY

reset
start=$(date +%s.%N)
"$autosnap" -q -c "$work/autosnap.toml" run -o json >/dev/null
end=$(date +%s.%N)
"$py" -c "import json,sys; s=json.load(sys.stdin); print(f'autosnap run again (nothing due): {$end - $start:.1f} s wall, {s[\"ec2_requests\"]} EC2 requests, {s[\"ec2_throttled\"]} throttled')" < <(stats)

if [[ "${CLI_LOOP:-}" == 1 ]]; then
    [[ -x "$venv/bin/aws" ]] || "$venv/bin/pip" install -q awscli
    echo "== aws ec2 create-snapshot loop over $n volumes (no proxy: the CLI's retries are its own)"
    start_bed awscli
    export AWS_ENDPOINT_URL="$bed"
    start=$(date +%s.%N)
    "$venv/bin/aws" ec2 describe-volumes --filters Name=tag:Backup,Values=daily \
        --query 'Volumes[].VolumeId' --output text | tr '\t' '\n' | while read -r vol; do
        "$venv/bin/aws" ec2 create-snapshot --volume-id "$vol" \
            --tag-specifications 'ResourceType=snapshot,Tags=[{Key=Backup,Value=daily}]' >/dev/null
    done
    end=$(date +%s.%N)
    echo "aws CLI loop: $(echo "$end - $start" | bc) s wall"
fi

#!/usr/bin/env bash
# Benchmark: `autosnap run` over N tagged volumes against the local test bed,
# side by side with the way users script it today: a loop of
# `aws ec2 create-snapshot` calls. Reports wall time and the number of API
# requests the test bed served for each.
#
#   bench/policies/run.sh [N]        (default N=500; PROFILE=debug to skip the release build)
#
# Needs: the test bed (testbed/setup.sh), a release build of autosnap, and
# the aws CLI (installed into the test bed's venv when missing).
set -euo pipefail
n="${1:-500}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/autosnap/target}"
venv_line="$(testbed/setup.sh)"; venv="${venv_line#AUTOSNAP_TESTBED_VENV=}"
[[ -x "$venv/bin/aws" ]] || "$venv/bin/pip" install -q awscli
# PROFILE=debug reuses the test build (the time is spent in API calls and
# pacing, not in autosnap's CPU); the default is a release build.
profile="${PROFILE:-release}"
if [[ "$profile" == release ]]; then cargo build --release --quiet --bin autosnap; else cargo build --quiet --bin autosnap; fi
autosnap="$CARGO_TARGET_DIR/$profile/autosnap"
work="$(mktemp -d)"; trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null

# Starts a fresh test bed (logging each request) with N tagged volumes.
start_bed() {
    local name=$1
    "$venv/bin/python" testbed/autosnap_testbed.py --verbose --port 0 --port-file "$work/$name.port" \
        2>"$work/$name.log" >/dev/null &
    for _ in $(seq 1 100); do [[ -s "$work/$name.port" ]] && break; sleep 0.1; done
    export AWS_ENDPOINT_URL="http://127.0.0.1:$(cat "$work/$name.port")"
    "$venv/bin/python" - "$AWS_ENDPOINT_URL" "$n" <<'PY'
import sys, boto3
ec2 = boto3.client("ec2", endpoint_url=sys.argv[1], region_name="us-east-1")
for i in range(int(sys.argv[2])):
    ec2.create_volume(Size=8, AvailabilityZone="us-east-1a", TagSpecifications=[{
        "ResourceType": "volume", "Tags": [{"Key": "Backup", "Value": "daily"}, {"Key": "Name", "Value": f"vol-{i}"}]}])
PY
}
requests() { grep -c '"POST / HTTP' "$work/$1.log" || true; }

echo "== autosnap run over $n volumes"
start_bed autosnap
cat >"$work/autosnap.toml" <<'TOML'
[[policy]]
name = "bench"
resource = "volume"
select = [{ tags = { Backup = "daily" } }]
schedule = "0 3 * * *"
retain = { last = 7 }
TOML
before=$(requests autosnap)
/usr/bin/time -f "autosnap run: %e s wall, %M KiB peak RSS" "$autosnap" -q -c "$work/autosnap.toml" run -o json >"$work/run.json"
after=$(requests autosnap)
created=$("$venv/bin/python" -c "import json;print(len(json.load(open('$work/run.json'))['report']['created']))")
echo "autosnap run: $created snapshots created, $((after - before)) API requests"
before=$(requests autosnap)
/usr/bin/time -f "autosnap run (nothing due): %e s wall" "$autosnap" -q -c "$work/autosnap.toml" run -o json >/dev/null
after=$(requests autosnap)
echo "autosnap run (nothing due): $((after - before)) API requests"

echo "== aws ec2 create-snapshot loop over $n volumes"
start_bed awscli
before=$(requests awscli)
start=$(date +%s.%N)
"$venv/bin/aws" ec2 describe-volumes --filters Name=tag:Backup,Values=daily \
    --query 'Volumes[].VolumeId' --output text | tr '\t' '\n' | while read -r vol; do
    "$venv/bin/aws" ec2 create-snapshot --volume-id "$vol" \
        --tag-specifications 'ResourceType=snapshot,Tags=[{Key=Backup,Value=daily}]' >/dev/null
done
end=$(date +%s.%N)
after=$(requests awscli)
echo "aws CLI loop: $(echo "$end - $start" | bc) s wall, $((after - before)) API requests"

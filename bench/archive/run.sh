#!/usr/bin/env bash
# Benchmark: `autosnap upload` / `download` / `archive` / `restore --to-file` of one large image
# (half zeros, half random, in alternating 8 MiB runs) against the local test bed, each under
# /usr/bin/time -v: wall time, MiB/s of the image size, peak RSS.
#
#   bench/archive/run.sh [SIZE_MIB]     (default 512; PROFILE=debug to reuse the test build)
#
# Needs: the test bed (testbed/setup.sh) and /usr/bin/time; coldsnap is measured too when
# installed (`cargo install coldsnap`; COLDSNAP=/path/to/coldsnap or on PATH). The test bed is moto (Python) with
# the EBS direct corrections, so the server is the limit; numbers compare clients, not AWS.
set -euo pipefail
size_mib="${1:-512}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/autosnap/target}"
venv_line="$(testbed/setup.sh)"; venv="${venv_line#AUTOSNAP_TESTBED_VENV=}"
profile="${PROFILE:-release}"
if [[ "$profile" == release ]]; then cargo build --release --quiet --bin autosnap; else cargo build --quiet --bin autosnap; fi
autosnap="$CARGO_TARGET_DIR/$profile/autosnap"
work="$(mktemp -d "${TMPDIR:-/tmp}/autosnap-bench.XXXXXX")"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
"$venv/bin/python" testbed/autosnap_testbed.py --port 0 --port-file "$work/port" 2>"$work/bed.log" >/dev/null &
for _ in $(seq 1 100); do [[ -s "$work/port" ]] && break; sleep 0.1; done
export AWS_ENDPOINT_URL="http://127.0.0.1:$(cat "$work/port")"

# The image: alternating 8 MiB runs of random data and zeros.
img="$work/disk.img"
python3 - "$img" "$size_mib" <<'PY'
import os, sys
path, mib = sys.argv[1], int(sys.argv[2])
with open(path, "wb") as f:
    for i in range(mib // 8):
        f.write(os.urandom(8 << 20) if i % 2 == 0 else b"\0" * (8 << 20))
PY
"$venv/bin/python" -c "import boto3,sys; boto3.client('s3', endpoint_url=sys.argv[1]).create_bucket(Bucket='bench-archive')" "$AWS_ENDPOINT_URL"

# measure NAME CMD...: runs CMD under /usr/bin/time -v, prints one table row.
measure() {
    local name=$1; shift
    /usr/bin/time -v -o "$work/time.txt" "$@" >"$work/out.txt" 2>"$work/err.txt" || {
        cat "$work/err.txt" >&2; exit 1; }
    local wall rss
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$work/time.txt" |
        awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
    rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time.txt")
    printf '| %s | %s MiB | %.2f s | %.1f MiB/s | %.1f MiB |\n' \
        "$name" "$size_mib" "$wall" "$(echo "$size_mib / $wall" | bc -l)" "$(echo "$rss / 1024" | bc -l)"
}

echo "| operation | image | wall | throughput (image MiB / wall) | peak RSS |"
echo "| --- | --- | --- | --- | --- |"
measure "upload" "$autosnap" --no-progress upload "$img"
snap=$(cat "$work/out.txt")
measure "download" "$autosnap" --no-progress download "$snap" "$work/down.img"
cmp -n "$((size_mib << 20))" "$img" "$work/down.img" || { echo "download differs" >&2; exit 1; }
rm -f "$work/down.img"
# coldsnap (awslabs) side by side, when installed: $COLDSNAP or `coldsnap` on PATH.
coldsnap="${COLDSNAP:-$(command -v coldsnap || true)}"
if [[ -n "$coldsnap" ]]; then
    measure "coldsnap upload" "$coldsnap" upload "$img"
    csnap=$(grep -o 'snap-[0-9a-f]*' "$work/out.txt" | head -1)
    measure "coldsnap download" "$coldsnap" download "$csnap" "$work/cdown.img"
    cmp -n "$((size_mib << 20))" "$img" "$work/cdown.img" || { echo "coldsnap download differs" >&2; exit 1; }
    rm -f "$work/cdown.img"
fi
"$autosnap" repo init "$work/repo" >/dev/null
measure "archive (local repo)" "$autosnap" --no-progress archive "$snap" --repo "$work/repo"
measure "restore --to-file (local repo)" "$autosnap" --no-progress restore "$snap" --repo "$work/repo" --to-file "$work/r.img"
cmp -n "$((size_mib << 20))" "$img" "$work/r.img" || { echo "restore differs" >&2; exit 1; }
rm -f "$work/r.img"
"$autosnap" repo init s3://bench-archive/r >/dev/null
measure "archive (s3:// repo)" "$autosnap" --no-progress archive "$snap" --repo s3://bench-archive/r
measure "restore --to-snapshot (s3:// repo)" "$autosnap" --no-progress restore "$snap" --repo s3://bench-archive/r --to-snapshot

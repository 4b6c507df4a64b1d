# Shared set-up of the archive benchmarks (sourced by run.sh and incremental.sh): builds
# autosnap (and the raw EBS client example), starts a fresh test bed on a loopback port,
# makes a scratch directory ($work, removed on exit) and defines `measure` and `make_image`.
#
# Env: PROFILE=release (default) or debug; NO_BUILD=1; CARGO_TARGET_DIR (default
# $HOME/.cache/autosnap/target); TMPDIR for the scratch directory.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/autosnap/target}"
venv_line="$(testbed/setup.sh)"; venv="${venv_line#AUTOSNAP_TESTBED_VENV=}"
profile="${PROFILE:-release}"
if [[ "$profile" == release ]]; then cargo_profile=(--release); else cargo_profile=(); fi
# Separate invocations: the example pulls in dev-dependency features the CLI must not get.
# NO_BUILD=1: use the binaries already built (e.g. while another build holds the target dir).
if [[ "${NO_BUILD:-0}" != 1 ]]; then
    cargo build "${cargo_profile[@]}" --quiet --bin autosnap
    cargo build "${cargo_profile[@]}" --quiet -p autosnap-aws --example raw_ebs
fi
autosnap="$CARGO_TARGET_DIR/$profile/autosnap"
raw_ebs="$CARGO_TARGET_DIR/$profile/examples/raw_ebs"
work="$(mktemp -d "${TMPDIR:-/tmp}/autosnap-bench.XXXXXX")"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
"$venv/bin/python" testbed/autosnap_testbed.py --port 0 --port-file "$work/port" 2>"$work/bed.log" >/dev/null &
for _ in $(seq 1 100); do [[ -s "$work/port" ]] && break; sleep 0.1; done
export AWS_ENDPOINT_URL="http://127.0.0.1:$(cat "$work/port")"

# make_image PATH SIZE_MIB: alternating 8 MiB runs of random data and zeros (half zeros).
make_image() {
    python3 - "$1" "$2" <<'PY'
import os, sys
path, mib = sys.argv[1], int(sys.argv[2])
with open(path, "wb") as f:
    for i in range(mib // 8):
        f.write(os.urandom(8 << 20) if i % 2 == 0 else b"\0" * (8 << 20))
PY
}

# measure NAME SIZE_MIB CMD...: runs CMD under /usr/bin/time -v (stdout in $work/out.txt),
# prints one table row (wall, SIZE_MIB / wall, peak RSS) and keeps the wall time in WALL[NAME].
declare -A WALL
measure() {
    local name=$1 size=$2; shift 2
    /usr/bin/time -v -o "$work/time.txt" "$@" >"$work/out.txt" 2>"$work/err.txt" || {
        cat "$work/err.txt" >&2; exit 1; }
    local wall rss
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$work/time.txt" |
        awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
    rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time.txt")
    WALL[$name]=$wall
    printf '| %s | %s MiB | %.2f s | %.1f MiB/s | %.1f MiB |\n' \
        "$name" "$size" "$wall" "$(echo "$size / $wall" | bc -l)" "$(echo "$rss / 1024" | bc -l)"
}

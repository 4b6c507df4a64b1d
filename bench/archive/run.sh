#!/usr/bin/env bash
# Benchmark: `autosnap upload` / `download` / `archive` / `restore` of one large image (half
# zeros, half random, in alternating 8 MiB runs) against a fresh local test bed, each under
# /usr/bin/time -v: wall time, MiB/s of the image size, peak RSS. Side by side: coldsnap (when
# installed) and the raw parallel EBS client (crates/autosnap-aws/examples/raw_ebs.rs: N
# concurrent Get/PutSnapshotBlock and nothing else), the ceiling of this server; the last
# table gives each autosnap transfer as a fraction of that ceiling.
#
#   bench/archive/run.sh [SIZE_MIB]     (default 512; PROFILE=debug to reuse the test build)
#
# Needs: the test bed (testbed/setup.sh), /usr/bin/time, bc. coldsnap is measured too when
# installed (`cargo install coldsnap`; COLDSNAP=/path/to/coldsnap or on PATH). The test bed is
# moto (Python) with the EBS direct corrections: numbers compare clients, not AWS.
size_mib="${1:-512}"
concurrency="${CONCURRENCY:-16}"
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# The S3 repository gets its own test-bed process (SHARED_S3=1: the EBS one): on AWS, EBS
# direct and S3 are different services, while one Python process serving both makes every
# PutObject slow down the GetSnapshotBlock calls of the same archive.
s3_endpoint="$AWS_ENDPOINT_URL"
if [[ "${SHARED_S3:-0}" != 1 ]]; then
    # --verbose: one log line per request, counted below for the S3 measurements.
    "$venv/bin/python" testbed/autosnap_testbed.py --port 0 --port-file "$work/s3port" --verbose \
        2>"$work/s3bed.log" >/dev/null &
    for _ in $(seq 1 100); do [[ -s "$work/s3port" ]] && break; sleep 0.1; done
    s3_endpoint="http://127.0.0.1:$(cat "$work/s3port")"
    export AWS_ENDPOINT_URL_S3="$s3_endpoint"
fi
echo "S3 repository endpoint: $([[ "${SHARED_S3:-0}" == 1 ]] && echo "shared with EBS" || echo "own test-bed process")"
echo "load average before: $(uptime | sed 's/.*load average: //')"

img="$work/disk.img"
make_image "$img" "$size_mib"
"$venv/bin/python" -c "import boto3,sys; boto3.client('s3', endpoint_url=sys.argv[1]).create_bucket(Bucket='bench-archive')" "$s3_endpoint"

same() { cmp -n "$((size_mib << 20))" "$img" "$1" || { echo "$1 differs from the image" >&2; exit 1; }; rm -f "$1"; }

echo "| operation | image | wall | throughput (image MiB / wall) | peak RSS |"
echo "| --- | --- | --- | --- | --- |"
measure "raw client put (ceiling)" "$size_mib" "$raw_ebs" put "$img" "$concurrency"
measure "upload" "$size_mib" "$autosnap" --no-progress upload "$img" --concurrency "$concurrency"
snap=$(cat "$work/out.txt")
measure "raw client get (ceiling)" "$size_mib" "$raw_ebs" get "$snap" "$concurrency"
measure "download" "$size_mib" "$autosnap" --no-progress download "$snap" "$work/down.img" --concurrency "$concurrency"
same "$work/down.img"
# coldsnap (awslabs) side by side, when installed: $COLDSNAP or `coldsnap` on PATH.
coldsnap="${COLDSNAP:-$(command -v coldsnap || true)}"
if [[ -n "$coldsnap" ]]; then
    measure "coldsnap upload" "$size_mib" "$coldsnap" upload "$img"
    csnap=$(grep -o 'snap-[0-9a-f]*' "$work/out.txt" | head -1)
    measure "coldsnap download" "$size_mib" "$coldsnap" download "$csnap" "$work/cdown.img"
    same "$work/cdown.img"
fi
"$autosnap" repo init "$work/repo" >/dev/null
measure "archive (local repo)" "$size_mib" "$autosnap" --no-progress archive "$snap" --repo "$work/repo" --concurrency "$concurrency"
measure "restore --to-file (local repo)" "$size_mib" "$autosnap" --no-progress restore "$snap" --repo "$work/repo" --to-file "$work/r.img" --concurrency "$concurrency"
same "$work/r.img"
# s3_requests: the S3 requests since the last call, by kind (from the S3 test bed's request
# log; empty when the bed is shared and not verbose).
s3_seen=0
s3_requests() {
    local log="$work/s3bed.log"
    [[ -f "$log" ]] || { echo "n/a"; return; }
    local lines
    lines=$(grep -E '"(GET|PUT|HEAD|POST|DELETE) ' "$log" | tail -n +"$((s3_seen + 1))" || true)
    s3_seen=$((s3_seen + $(printf '%s' "$lines" | grep -c . || true)))
    printf '%s\n' "$lines" | awk '
        /"GET [^"]*list-type=2/ { list++; next }
        /"GET / { get++ } /"PUT / { put++ } /"HEAD / { head++ } /"DELETE / { del++ } /"POST / { post++ }
        END { printf "PUT %d, HEAD %d, GET %d, LIST %d, DELETE %d, POST %d\n", put, head, get, list, del, post }'
}
"$autosnap" repo init s3://bench-archive/r >/dev/null
s3_requests >/dev/null
measure "archive (s3:// repo)" "$size_mib" "$autosnap" --no-progress archive "$snap" --repo s3://bench-archive/r --concurrency "$concurrency"
echo "  S3 requests of the archive: $(s3_requests)"
measure "archive again (s3:// repo, every chunk known)" "$size_mib" "$autosnap" --no-progress archive "$snap" --repo s3://bench-archive/r --concurrency "$concurrency"
echo "  S3 requests of the second archive: $(s3_requests)"
measure "restore --to-snapshot (s3:// repo)" "$size_mib" "$autosnap" --no-progress restore "$snap" --repo s3://bench-archive/r --to-snapshot --concurrency "$concurrency"
echo "  S3 requests of the restore: $(s3_requests)"

echo "load average after: $(uptime | sed 's/.*load average: //')"
echo
echo "| autosnap (concurrency $concurrency) | raw client it is compared with | fraction of the raw client's throughput |"
echo "| --- | --- | --- |"
fraction() { printf '| %s | %s | %.2f |\n' "$1" "$2" "$(echo "${WALL[$2]} / ${WALL[$1]}" | bc -l)"; }
fraction "upload" "raw client put (ceiling)"
fraction "download" "raw client get (ceiling)"
fraction "archive (local repo)" "raw client get (ceiling)"
fraction "archive (s3:// repo)" "raw client get (ceiling)"
fraction "archive again (s3:// repo, every chunk known)" "raw client get (ceiling)"
fraction "restore --to-snapshot (s3:// repo)" "raw client put (ceiling)"

#!/usr/bin/env bash
# Benchmark: client CPU (user + sys) and peak RSS of `autosnap upload` / `download` against
# coldsnap's, for one image (half zeros, half random, in alternating 8 MiB runs). Each run
# starts a fresh test bed (moto keeps every block in memory), then times, in this order,
# autosnap upload, coldsnap upload --omit-zero-blocks (the same work: zero blocks skipped),
# autosnap download, coldsnap download, each under /usr/bin/time. Prints every run, then the
# medians per GiB of image and autosnap's fraction of coldsnap's.
#
#   bench/archive/cpu.sh [SIZE_MIB] [RUNS]     (defaults 1024 and 5)
#
# Env: COLDSNAP=/path/to/coldsnap (default: on PATH; without it, autosnap alone is measured);
# AUTOSNAP_BIN=/path/to/autosnap (default: the one common.sh builds); PROFILE, NO_BUILD as in
# common.sh.
# Only the client is timed: the test bed is a separate process. The machine's load is printed
# with each run: user+sys time moves with it, so compare numbers from one run of the script.
size_mib="${1:-1024}"
runs="${2:-5}"
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# AUTOSNAP_BIN=path measures another autosnap binary (e.g. one built from an earlier commit).
autosnap="${AUTOSNAP_BIN:-$autosnap}"

coldsnap="${COLDSNAP:-$(command -v coldsnap || true)}"
if [[ ! -x "$coldsnap" ]]; then
    echo "coldsnap not found (cargo install coldsnap --locked; COLDSNAP=path): autosnap only" >&2
    coldsnap=""
fi

# fresh_bed: stops the test bed started last and starts a new one (AWS_ENDPOINT_URL).
bed_pid=""
fresh_bed() {
    [[ -n "$bed_pid" ]] && { kill "$bed_pid" 2>/dev/null; wait "$bed_pid" 2>/dev/null || true; }
    rm -f "$work/port"
    "$venv/bin/python" testbed/autosnap_testbed.py --port 0 --port-file "$work/port" 2>>"$work/bed.log" >/dev/null &
    bed_pid=$!
    for _ in $(seq 1 100); do [[ -s "$work/port" ]] && break; sleep 0.1; done
    export AWS_ENDPOINT_URL="http://127.0.0.1:$(cat "$work/port")"
}

# timed NAME CMD...: runs CMD under /usr/bin/time; appends "NAME user+sys rss_kib wall" to
# $work/samples and prints the row.
timed() {
    local name=$1; shift
    /usr/bin/time -f '%U %S %M %e %R' -o "$work/time.txt" "$@" >"$work/out.txt" 2>"$work/err.txt" || {
        cat "$work/err.txt" >&2; exit 1; }
    local user sys rss wall faults
    read -r user sys rss wall faults <"$work/time.txt"
    local cpu; cpu=$(echo "$user + $sys" | bc -l)
    echo "$name $cpu $rss $wall" >>"$work/samples"
    printf '| %s | %s | %.2f s | %.2f s | %.2f s | %.1f MiB | %s | %.2f s |\n' \
        "$run" "$name" "$user" "$sys" "$cpu" "$(echo "$rss / 1024" | bc -l)" "$faults" "$wall"
}

same() { cmp -n "$((size_mib << 20))" "$img" "$1" || { echo "$1 differs from the image" >&2; exit 1; }; rm -f "$1"; }

img="$work/disk.img"
make_image "$img" "$size_mib"
echo "image: $size_mib MiB, half zeros; $("$autosnap" --version); ${coldsnap:+$("$coldsnap" --version 2>/dev/null || echo coldsnap)}"
echo
echo "| run | command | user | sys | user+sys | peak RSS | minor page faults | wall |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
: >"$work/samples"
for run in $(seq 1 "$runs"); do
    fresh_bed
    echo "| $run | load average: $(uptime | sed 's/.*load average: //') | | | | | | |"
    timed "autosnap upload" "$autosnap" --no-progress upload "$img"
    snap=$(cat "$work/out.txt")
    if [[ -n "$coldsnap" ]]; then
        timed "coldsnap upload" "$coldsnap" upload --omit-zero-blocks "$img"
        csnap=$(grep -o 'snap-[0-9a-f]*' "$work/out.txt" | head -1)
    fi
    timed "autosnap download" "$autosnap" --no-progress download "$snap" "$work/down.img"
    same "$work/down.img"
    if [[ -n "$coldsnap" ]]; then
        timed "coldsnap download" "$coldsnap" download "$csnap" "$work/cdown.img"
        same "$work/cdown.img"
    fi
done

# median NAME FIELD (2 = user+sys, 3 = RSS KiB)
median() {
    awk -v n="$1" -v f="$2" '{ name=$1" "$2; if (name == n) print $(f+1) }' "$work/samples" |
        sort -g | awk '{ v[NR]=$1 } END { if (NR % 2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2 }'
}
gib=$(echo "$size_mib / 1024" | bc -l)
echo
echo "Medians of $runs runs, per GiB of image (user+sys) and peak RSS:"
echo
echo "| transfer | autosnap CPU/GiB | coldsnap CPU/GiB | autosnap / coldsnap | autosnap peak RSS | coldsnap peak RSS |"
echo "| --- | --- | --- | --- | --- | --- |"
for op in upload download; do
    a=$(median "autosnap $op" 2); ar=$(median "autosnap $op" 3)
    if [[ -n "$coldsnap" ]]; then
        c=$(median "coldsnap $op" 2); cr=$(median "coldsnap $op" 3)
        printf '| %s | %.2f s | %.2f s | %.2f | %.1f MiB | %.1f MiB |\n' "$op" \
            "$(echo "$a / $gib" | bc -l)" "$(echo "$c / $gib" | bc -l)" "$(echo "$a / $c" | bc -l)" \
            "$(echo "$ar / 1024" | bc -l)" "$(echo "$cr / 1024" | bc -l)"
    else
        printf '| %s | %.2f s | — | — | %.1f MiB | — |\n' "$op" \
            "$(echo "$a / $gib" | bc -l)" "$(echo "$ar / 1024" | bc -l)"
    fi
done


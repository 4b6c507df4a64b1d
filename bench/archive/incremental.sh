#!/usr/bin/env bash
# Benchmark: DAYS daily versions of one volume, each a child snapshot of the one before with
# FRACTION of its blocks rewritten (bench/archive/child_snapshot.py: StartSnapshot with
# ParentSnapshotId, PutSnapshotBlock, CompleteSnapshot with the LINEAR checksum), each
# archived into one local repository. Per day: wall time and peak RSS of `autosnap archive`,
# blocks read, bytes new to the repository, repository size (du). At the end: the
# repository against DAYS full copies (DAYS × the repository after day 0).
#
#   bench/archive/incremental.sh [SIZE_MIB] [DAYS] [FRACTION]     (default 1024 10 0.01)
#
# Day 0 is an `autosnap upload` of the half-zeros image (see run.sh). Snapshots written
# through the EBS direct APIs have no volume, so the archives are chained with
# `--lineage bench-volume`: each day is built incrementally from the previous day's archive
# (ListChangedBlocks, then GetSnapshotBlock of the changed blocks only).
size_mib="${1:-1024}"
days="${2:-10}"
fraction="${3:-0.01}"
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

lineage=(--lineage bench-volume)
if ! "$autosnap" archive --help | grep -q -- '--lineage'; then
    lineage=()
    echo "(this autosnap has no --lineage: each day's archive reads every block, deduplicated)"
fi
img="$work/disk.img"
make_image "$img" "$size_mib"
"$autosnap" repo init "$work/repo" >/dev/null
snap=$("$autosnap" --no-progress -q upload "$img")
rm -f "$img"

echo "| day | snapshot | blocks changed | wall | peak RSS | blocks read | new bytes (stored) | repository size |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
first_repo=0
for day in $(seq 0 $((days - 1))); do
    changed="(all)"
    if [[ $day -gt 0 ]]; then
        snap=$("$venv/bin/python" bench/archive/child_snapshot.py "$snap" "$fraction" "$day")
        changed=$(python3 -c "print(max(1, round($size_mib * 2 * $fraction)))")
    fi
    measure "day $day" "$size_mib" "$autosnap" --no-progress -o json archive "$snap" \
        --repo "$work/repo" "${lineage[@]}" >/dev/null
    read -r blocks_read new_bytes stored < <(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
print(r["blocks_read"], r["new_bytes"], r["new_stored_bytes"])' "$work/out.txt")
    repo_bytes=$(du -sb "$work/repo" | cut -f1)
    [[ $day -eq 0 ]] && first_repo=$repo_bytes
    rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time.txt")
    printf '| %s | %s | %s | %.2f s | %.1f MiB | %s | %.1f MiB (%.1f MiB) | %.1f MiB |\n' \
        "$day" "$snap" "$changed" "${WALL[day $day]}" "$(echo "$rss / 1024" | bc -l)" \
        "$blocks_read" "$(echo "$new_bytes / 1048576" | bc -l)" \
        "$(echo "$stored / 1048576" | bc -l)" "$(echo "$repo_bytes / 1048576" | bc -l)"
done
echo
printf 'repository after %s versions: %.1f MiB; %s full copies (%s × day 0): %.1f MiB; ratio %.3f\n' \
    "$days" "$(echo "$repo_bytes / 1048576" | bc -l)" "$days" "$days" \
    "$(echo "$first_repo * $days / 1048576" | bc -l)" "$(echo "$repo_bytes / ($first_repo * $days)" | bc -l)"

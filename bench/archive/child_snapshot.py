#!/usr/bin/env python3
"""Makes a child snapshot of PARENT through the EBS direct APIs with a fraction of its blocks
rewritten with fresh random data (the next "daily version" of a volume), and prints its id.

    child_snapshot.py PARENT FRACTION SEED

StartSnapshot(ParentSnapshotId=PARENT), PutSnapshotBlock of round(FRACTION x the volume's
blocks) distinct random block indexes (chosen with SEED, anywhere in the volume, so some land
in zero or never-written regions), each with its base64 SHA-256, then CompleteSnapshot with
ChangedBlocksCount and the LINEAR aggregate checksum: SHA-256 over the concatenated raw
32-byte digests of the written blocks in block-index order, base64 (as autosnap's ebs.rs and
the test bed's ebs_corrections.py compute it). Waits until EC2 reports the snapshot
completed. Credentials and endpoint come from the environment (AWS_ENDPOINT_URL, ...).
Run it with the test bed venv's python (boto3).
"""

import argparse
import base64
import hashlib
import random
import sys
import time

import boto3

BLOCK = 524288


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("parent")
    p.add_argument("fraction", type=float)
    p.add_argument("seed", type=int)
    a = p.parse_args()
    ebs = boto3.client("ebs")
    ec2 = boto3.client("ec2")
    size_gib = ec2.describe_snapshots(SnapshotIds=[a.parent])["Snapshots"][0]["VolumeSize"]
    total = size_gib * (1 << 30) // BLOCK
    rng = random.Random(a.seed)
    indexes = sorted(rng.sample(range(total), max(1, round(total * a.fraction))))
    snap = ebs.start_snapshot(VolumeSize=size_gib, ParentSnapshotId=a.parent,
                              Description=f"child of {a.parent}, seed {a.seed}")["SnapshotId"]
    digests = []
    for index in indexes:
        data = rng.randbytes(BLOCK)
        digest = hashlib.sha256(data).digest()
        ebs.put_snapshot_block(SnapshotId=snap, BlockIndex=index, BlockData=data,
                               DataLength=BLOCK, Checksum=base64.b64encode(digest).decode(),
                               ChecksumAlgorithm="SHA256")
        digests.append(digest)
    linear = base64.b64encode(hashlib.sha256(b"".join(digests)).digest()).decode()
    status = ebs.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=len(indexes),
                                   Checksum=linear, ChecksumAlgorithm="SHA256",
                                   ChecksumAggregationMethod="LINEAR")["Status"]
    if status == "error":
        sys.exit(f"{snap}: CompleteSnapshot said error")
    for _ in range(600):
        state = ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]["State"]
        if state == "completed":
            break
        if state == "error":
            sys.exit(f"{snap} went to state error")
        time.sleep(0.1)
    print(snap)


if __name__ == "__main__":
    main()

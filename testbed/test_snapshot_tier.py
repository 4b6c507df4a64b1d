"""Checks of the archive tier correction (snapshot_tier.py) through boto3 against a launcher on a
loopback port: who may be archived, restore kinds and states, the hold tag, tier status filters and
paging, DescribeSnapshots' tier, and CreateVolume refusing an archived snapshot."""

from datetime import datetime, timedelta, timezone

import pytest
from botocore.exceptions import ClientError

from test_testbed import client  # noqa: F401  (shared helpers and fixtures)
from test_testbed import account, ec2, server  # noqa: F401

HOLD_TAG = "autosnap-testbed:tiering-hold"
ARCHIVED_ON_TAG = "autosnap-testbed:archived-on"


def code(exc: ClientError) -> str:
    return exc.response["Error"]["Code"]


def snap(ec2) -> str:  # noqa: F811
    vol = ec2.create_volume(Size=1, AvailabilityZone="us-east-1a")["VolumeId"]
    return ec2.create_snapshot(VolumeId=vol)["SnapshotId"]


def described(ec2, sid):  # noqa: F811
    return ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]


def tier_status(ec2, sid):  # noqa: F811
    rows = ec2.describe_snapshot_tier_status(
        Filters=[{"Name": "snapshot-id", "Values": [sid]}])["SnapshotTierStatuses"]
    assert len(rows) == 1
    return rows[0]


def refused(call) -> str:
    with pytest.raises(ClientError) as e:
        call()
    return code(e.value)


def test_archive_then_volume_refused_until_restored(ec2):  # noqa: F811
    sid = snap(ec2)
    assert described(ec2, sid)["StorageTier"] == "standard"
    out = ec2.modify_snapshot_tier(SnapshotId=sid, StorageTier="archive")
    assert out["SnapshotId"] == sid and "TieringStartTime" in out
    assert described(ec2, sid)["StorageTier"] == "archive"
    st = tier_status(ec2, sid)
    assert st["LastTieringOperationStatus"] == "archival-completed"
    assert "ArchivalCompleteTime" in st

    assert refused(lambda: ec2.create_volume(
        SnapshotId=sid, AvailabilityZone="us-east-1a")) == "IncorrectState"
    # Archiving twice is refused.
    assert refused(lambda: ec2.modify_snapshot_tier(
        SnapshotId=sid, StorageTier="archive")) == "IncorrectState"

    out = ec2.restore_snapshot_tier(SnapshotId=sid, TemporaryRestoreDays=3)
    assert out["RestoreDuration"] == 3 and out["IsPermanentRestore"] is False
    s = described(ec2, sid)
    assert s["StorageTier"] == "standard"
    assert s["RestoreExpiryTime"] - out["RestoreStartTime"] == timedelta(days=3)
    ec2.create_volume(SnapshotId=sid, AvailabilityZone="us-east-1a")
    # A temporary restore can be re-timed.
    assert ec2.restore_snapshot_tier(SnapshotId=sid, TemporaryRestoreDays=10)[
        "RestoreDuration"] == 10


def test_permanent_restore_and_refusals(ec2):  # noqa: F811
    sid = snap(ec2)
    # Not archived: nothing to restore.
    assert refused(lambda: ec2.restore_snapshot_tier(
        SnapshotId=sid, PermanentRestore=True)) == "IncorrectState"
    ec2.modify_snapshot_tier(SnapshotId=sid, StorageTier="archive")
    assert refused(lambda: ec2.restore_snapshot_tier(SnapshotId=sid)) == \
        "InvalidParameterCombination"
    assert refused(lambda: ec2.restore_snapshot_tier(
        SnapshotId=sid, TemporaryRestoreDays=181)) == "InvalidParameterValue"
    out = ec2.restore_snapshot_tier(SnapshotId=sid, PermanentRestore=True)
    assert out["IsPermanentRestore"] is True
    s = described(ec2, sid)
    assert s["StorageTier"] == "standard" and "RestoreExpiryTime" not in s
    assert tier_status(ec2, sid)["LastTieringOperationStatus"] == "permanent-restore-completed"


def test_snapshot_behind_an_ami_is_refused(ec2):  # noqa: F811
    sid = snap(ec2)
    ec2.register_image(Name="tier-ami", RootDeviceName="/dev/xvda",
                       BlockDeviceMappings=[{"DeviceName": "/dev/xvda",
                                             "Ebs": {"SnapshotId": sid}}])
    assert refused(lambda: ec2.modify_snapshot_tier(
        SnapshotId=sid, StorageTier="archive")) == "InvalidSnapshot.InUse"
    assert described(ec2, sid)["StorageTier"] == "standard"


def test_hold_tag_keeps_transitions_in_progress(ec2):  # noqa: F811
    sid = snap(ec2)
    ec2.create_tags(Resources=[sid], Tags=[{"Key": HOLD_TAG, "Value": "1"}])
    ec2.modify_snapshot_tier(SnapshotId=sid, StorageTier="archive")
    assert tier_status(ec2, sid)["LastTieringOperationStatus"] == "archival-in-progress"
    # Still usable while the archive is in progress.
    assert described(ec2, sid)["StorageTier"] == "standard"
    ec2.delete_tags(Resources=[sid], Tags=[{"Key": HOLD_TAG}])
    assert described(ec2, sid)["StorageTier"] == "archive"

    ec2.create_tags(Resources=[sid], Tags=[{"Key": HOLD_TAG, "Value": "1"}])
    ec2.restore_snapshot_tier(SnapshotId=sid, TemporaryRestoreDays=1)
    assert tier_status(ec2, sid)["LastTieringOperationStatus"] == \
        "temporary-restore-in-progress"
    assert described(ec2, sid)["StorageTier"] == "archive"
    assert refused(lambda: ec2.create_volume(
        SnapshotId=sid, AvailabilityZone="us-east-1a")) == "IncorrectState"
    ec2.delete_tags(Resources=[sid], Tags=[{"Key": HOLD_TAG}])
    assert described(ec2, sid)["StorageTier"] == "standard"


def test_archived_on_tag_moves_archival_time(ec2):  # noqa: F811
    sid = snap(ec2)
    ec2.modify_snapshot_tier(SnapshotId=sid, StorageTier="archive")
    then = datetime.now(timezone.utc) - timedelta(days=100)
    ec2.create_tags(Resources=[sid], Tags=[{"Key": ARCHIVED_ON_TAG, "Value": then.isoformat()}])
    got = tier_status(ec2, sid)["ArchivalCompleteTime"]
    assert abs(got - then) < timedelta(seconds=1)


def test_tier_status_filters_and_paging(ec2):  # noqa: F811
    ids = [snap(ec2) for _ in range(6)]
    ec2.modify_snapshot_tier(SnapshotId=ids[0], StorageTier="archive")
    rows = ec2.describe_snapshot_tier_status(Filters=[
        {"Name": "last-tiering-operation", "Values": ["archival-completed"]}])[
        "SnapshotTierStatuses"]
    assert [r["SnapshotId"] for r in rows] == [ids[0]]
    first = ec2.describe_snapshot_tier_status(MaxResults=5)
    assert len(first["SnapshotTierStatuses"]) == 5
    rest = ec2.describe_snapshot_tier_status(MaxResults=5, NextToken=first["NextToken"])
    got = {r["SnapshotId"] for r in first["SnapshotTierStatuses"] + rest["SnapshotTierStatuses"]}
    assert set(ids) <= got
    assert refused(lambda: ec2.describe_snapshot_tier_status(
        Filters=[{"Name": "storage-tier", "Values": ["archive"]}])) == "InvalidParameterValue"
    filtered = ec2.describe_snapshots(OwnerIds=["self"], Filters=[
        {"Name": "storage-tier", "Values": ["archive"]}])["Snapshots"]
    assert [s["SnapshotId"] for s in filtered] == [ids[0]]

"""Checks of restore_volume.py (the volume-state control for restore tests) through boto3
against a launcher on a loopback port."""

from test_testbed import client  # noqa: F401  (shared helpers and fixtures)
from test_testbed import account, ec2, server  # noqa: F401

VOLUME_STATE_TAG = "autosnap-testbed:volume-state"


def state(ec2, vid):  # noqa: F811
    return ec2.describe_volumes(VolumeIds=[vid])["Volumes"][0]["State"]


def test_volumes_from_a_tagged_snapshot_stay_in_its_state(ec2):  # noqa: F811
    vol = ec2.create_volume(Size=1, AvailabilityZone="us-east-1a")["VolumeId"]
    held = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    plain = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    ec2.create_tags(Resources=[held], Tags=[{"Key": VOLUME_STATE_TAG, "Value": "creating"}])

    from_held = ec2.create_volume(SnapshotId=held, AvailabilityZone="us-east-1a")["VolumeId"]
    from_plain = ec2.create_volume(SnapshotId=plain, AvailabilityZone="us-east-1a")["VolumeId"]
    assert state(ec2, from_held) == "creating"
    assert state(ec2, from_plain) == "available"
    # Still deletable, as a test's cleanup needs.
    ec2.delete_volume(VolumeId=from_held)
    ids = [v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]]
    assert from_held not in ids

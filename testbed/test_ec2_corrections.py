"""Checks of the EC2 AMI corrections (ec2_corrections.py) through boto3
against a launcher on a loopback port."""

import pytest
from botocore.exceptions import ClientError

from test_testbed import client  # noqa: F401  (shared helpers and fixtures)
from test_testbed import account, ec2, server  # noqa: F401


def volume_and_snapshot(ec2, size=2):
    vol = ec2.create_volume(Size=size, AvailabilityZone="us-east-1a")["VolumeId"]
    return vol, ec2.create_snapshot(VolumeId=vol)["SnapshotId"]


def register(ec2, snap, name="img-test", **kw):
    return ec2.register_image(
        Name=name,
        RootDeviceName="/dev/xvda",
        Architecture="arm64",
        VirtualizationType="hvm",
        EnaSupport=True,
        BootMode="uefi",
        BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snap, "VolumeType": "gp3"}}],
        TagSpecifications=[{"ResourceType": "image", "Tags": [{"Key": "Team", "Value": "web"}]}],
        **kw,
    )["ImageId"]


def test_register_image_keeps_mappings_and_attributes(ec2):
    _, snap = volume_and_snapshot(ec2, size=3)
    before = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    ami = register(ec2, snap)
    image = ec2.describe_images(ImageIds=[ami])["Images"][0]
    m = image["BlockDeviceMappings"][0]
    assert m["DeviceName"] == "/dev/xvda"
    assert m["Ebs"]["SnapshotId"] == snap
    assert m["Ebs"]["VolumeSize"] == 3
    assert m["Ebs"]["VolumeType"] == "gp3"
    assert image["RootDeviceName"] == "/dev/xvda"
    assert image["Architecture"] == "arm64"
    assert {"Key": "Team", "Value": "web"} in image["Tags"]
    after = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert after == before, "no invented snapshot"


def test_snapshot_filter_matches_any_mapping(ec2):
    _, a = volume_and_snapshot(ec2)
    _, b = volume_and_snapshot(ec2)
    _, unused = volume_and_snapshot(ec2)
    ami = register(ec2, a, name="img-filter")
    found = ec2.describe_images(Filters=[{"Name": "block-device-mapping.snapshot-id", "Values": [b, a]}])
    assert [i["ImageId"] for i in found["Images"]] == [ami]
    none = ec2.describe_images(Filters=[{"Name": "block-device-mapping.snapshot-id", "Values": [unused]}])
    assert none["Images"] == []


def test_snapshot_behind_image_is_in_use_until_deregistered(ec2):
    _, snap = volume_and_snapshot(ec2)
    ami = register(ec2, snap, name="img-inuse")
    with pytest.raises(ClientError) as e:
        ec2.delete_snapshot(SnapshotId=snap)
    assert e.value.response["Error"]["Code"] == "InvalidSnapshot.InUse"
    ec2.deregister_image(ImageId=ami)
    ec2.delete_snapshot(SnapshotId=snap)


def test_register_with_unknown_snapshot_fails(ec2):
    with pytest.raises(ClientError) as e:
        register(ec2, "snap-0123456789abcdef0", name="img-missing")
    assert e.value.response["Error"]["Code"] == "InvalidSnapshot.NotFound"


def test_test_controls_set_start_time_and_state(ec2):
    vol, _ = volume_and_snapshot(ec2)
    snap = ec2.create_snapshot(
        VolumeId=vol,
        TagSpecifications=[{"ResourceType": "snapshot", "Tags": [
            {"Key": "autosnap-testbed:start-time", "Value": "2025-03-01T03:00:00Z"},
            {"Key": "autosnap-testbed:state", "Value": "pending"},
        ]}],
    )["SnapshotId"]
    s = ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]
    assert s["StartTime"].isoformat().startswith("2025-03-01T03:00:00")
    assert s["State"] == "pending"


def test_test_controls_fail_create_snapshot(ec2):
    vol = ec2.create_volume(
        Size=1, AvailabilityZone="us-east-1a",
        TagSpecifications=[{"ResourceType": "volume", "Tags": [
            {"Key": "autosnap-testbed:fail", "Value": "CreateSnapshot"}]}],
    )["VolumeId"]
    with pytest.raises(ClientError) as e:
        ec2.create_snapshot(VolumeId=vol)
    assert e.value.response["Error"]["Code"] == "IncorrectState"


def test_test_controls_set_image_creation_date_and_state(ec2):
    _, snap = volume_and_snapshot(ec2)
    image = register(ec2, snap, name="img-dated")
    ec2.create_tags(Resources=[image], Tags=[
        {"Key": "autosnap-testbed:start-time", "Value": "2025-03-01T03:00:00Z"},
        {"Key": "autosnap-testbed:state", "Value": "pending"},
    ])
    i = ec2.describe_images(ImageIds=[image])["Images"][0]
    assert i["CreationDate"].startswith("2025-03-01T03:00:00")
    assert i["State"] == "pending"

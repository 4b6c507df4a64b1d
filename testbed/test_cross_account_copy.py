"""Checks of the cross-account CopySnapshot correction (cross_account_copy.py) through boto3
against a launcher on a loopback port: a snapshot of another account is copied only once it is
shared with the copying account (or public), and refused with InvalidSnapshot.NotFound before
and after the share; the copy belongs to the copying account, encrypted with its key."""

import pytest
from botocore.exceptions import ClientError

from test_testbed import client  # noqa: F401  (shared helpers and fixtures)
from test_testbed import server  # noqa: F401

SOURCE = "111111111111"
BACKUP = "222222222222"


def snapshot_in(server, account: str) -> str:  # noqa: F811
    ec2 = client("ec2", server, account)
    vol = ec2.create_volume(Size=1, AvailabilityZone="us-east-1a")["VolumeId"]
    return ec2.create_snapshot(VolumeId=vol)["SnapshotId"]


def copy_as(server, account: str, snapshot_id: str, **kwargs):  # noqa: F811
    return client("ec2", server, account).copy_snapshot(
        SourceSnapshotId=snapshot_id, SourceRegion="us-east-1", **kwargs
    )


def share(server, snapshot_id: str, op: str = "add", **who) -> None:  # noqa: F811
    """ModifySnapshotAttribute in the OperationType form (the one autosnap sends; moto ignores
    the CreateVolumePermission.Add/Remove form)."""
    client("ec2", server, SOURCE).modify_snapshot_attribute(
        SnapshotId=snapshot_id, Attribute="createVolumePermission", OperationType=op, **who
    )


def not_found(exc: ClientError) -> None:
    assert exc.response["Error"]["Code"] == "InvalidSnapshot.NotFound"
    assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_an_unshared_snapshot_of_another_account_is_refused(server):  # noqa: F811
    snap = snapshot_in(server, SOURCE)
    with pytest.raises(ClientError) as e:
        copy_as(server, BACKUP, snap)
    not_found(e.value)


def test_a_shared_snapshot_is_copied_into_the_copying_account(server):  # noqa: F811
    snap = snapshot_in(server, SOURCE)
    src = client("ec2", server, SOURCE)
    share(server, snap, UserIds=[BACKUP])
    key = f"arn:aws:kms:us-east-1:{BACKUP}:key/backup"
    copy = copy_as(server, BACKUP, snap, Encrypted=True, KmsKeyId=key)["SnapshotId"]
    got = client("ec2", server, BACKUP).describe_snapshots(SnapshotIds=[copy])["Snapshots"][0]
    assert got["OwnerId"] == BACKUP
    assert got["Encrypted"] is True
    assert got["KmsKeyId"] == key
    # Not in the source account.
    with pytest.raises(ClientError):
        src.describe_snapshots(SnapshotIds=[copy])
    # Shared with someone else only: still refused to a third account.
    with pytest.raises(ClientError) as e:
        copy_as(server, "333333333333", snap)
    not_found(e.value)


def test_a_removed_share_refuses_again(server):  # noqa: F811
    snap = snapshot_in(server, SOURCE)
    share(server, snap, UserIds=[BACKUP])
    copy_as(server, BACKUP, snap)
    share(server, snap, "remove", UserIds=[BACKUP])
    with pytest.raises(ClientError) as e:
        copy_as(server, BACKUP, snap)
    not_found(e.value)


def test_a_public_snapshot_may_be_copied_by_anyone(server):  # noqa: F811
    snap = snapshot_in(server, SOURCE)
    share(server, snap, GroupNames=["all"])
    assert copy_as(server, "444444444444", snap)["SnapshotId"].startswith("snap-")


def test_a_copy_within_the_account_is_unchanged(server):  # noqa: F811
    snap = snapshot_in(server, SOURCE)
    assert copy_as(server, SOURCE, snap)["SnapshotId"].startswith("snap-")


def test_a_snapshot_of_an_encrypted_volume_names_its_key(server):  # noqa: F811
    ec2 = client("ec2", server, SOURCE)
    vol = ec2.create_volume(Size=1, AvailabilityZone="us-east-1a", Encrypted=True)
    snap = ec2.create_snapshot(VolumeId=vol["VolumeId"])["SnapshotId"]
    got = ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]
    assert got["Encrypted"] is True
    assert got["KmsKeyId"] == vol["KmsKeyId"]
    plain = ec2.create_volume(Size=1, AvailabilityZone="us-east-1a")["VolumeId"]
    snap = ec2.create_snapshot(VolumeId=plain)["SnapshotId"]
    assert "KmsKeyId" not in ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]


def test_the_copy_state_tag_holds_the_copies_of_a_snapshot(server):  # noqa: F811
    """snapshot-copy-state: a source tagged autosnap-testbed:copy-state=pending gives pending
    copies, in another account and in its own; the state tag on a copy releases it."""
    snap = snapshot_in(server, SOURCE)
    src = client("ec2", server, SOURCE)
    src.create_tags(
        Resources=[snap], Tags=[{"Key": "autosnap-testbed:copy-state", "Value": "pending"}]
    )
    share(server, snap, UserIds=[BACKUP])
    backup = client("ec2", server, BACKUP)
    copy = copy_as(server, BACKUP, snap)["SnapshotId"]
    state = lambda ec2, i: ec2.describe_snapshots(SnapshotIds=[i])["Snapshots"][0]["State"]  # noqa: E731
    assert state(backup, copy) == "pending"
    own = copy_as(server, SOURCE, snap)["SnapshotId"]
    assert state(src, own) == "pending"
    assert state(src, snap) == "completed", "the source itself is not held"
    backup.create_tags(
        Resources=[copy], Tags=[{"Key": "autosnap-testbed:state", "Value": "completed"}]
    )
    assert state(backup, copy) == "completed"
    # Without the tag a copy completes as before.
    plain = snapshot_in(server, SOURCE)
    share(server, plain, UserIds=[BACKUP])
    assert state(backup, copy_as(server, BACKUP, plain)["SnapshotId"]) == "completed"

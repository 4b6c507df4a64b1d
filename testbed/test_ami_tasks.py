"""Checks of the AMI corrections (ami_tasks.py) through boto3 against a launcher on a loopback
port: CreateImage/CopyImage as AWS does them, unique names, the pending phase, and the S3 image
tasks (store, describe, restore) with their failure paths."""

import json

import pytest
from botocore.exceptions import ClientError

from test_testbed import client  # noqa: F401  (shared helpers and fixtures)
from test_testbed import account, ec2, server  # noqa: F401


@pytest.fixture
def s3(server, account):  # noqa: F811
    return client("s3", server, account, s3={"addressing_style": "path"})


@pytest.fixture
def kms(server, account):  # noqa: F811
    return client("kms", server, account)


def code(exc: ClientError) -> str:
    return exc.response["Error"]["Code"]


def instance(ec2, tags=None, encrypted_key=None):
    """An instance with a root volume (/dev/sda1, 8 GiB) and a data volume (/dev/sdf, 4 GiB gp3)."""
    data = {"VolumeSize": 4, "VolumeType": "gp3", "DeleteOnTermination": False}
    if encrypted_key:
        data.update(Encrypted=True, KmsKeyId=encrypted_key)
    r = ec2.run_instances(
        ImageId="ami-12345678", MinCount=1, MaxCount=1, InstanceType="t3.micro",
        BlockDeviceMappings=[
            {"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 8, "DeleteOnTermination": True}},
            {"DeviceName": "/dev/sdf", "Ebs": data},
        ],
        TagSpecifications=[{"ResourceType": "instance", "Tags": [
            {"Key": k, "Value": v} for k, v in (tags or {"Name": "web"}).items()]}],
    )
    return r["Instances"][0]["InstanceId"]


def image(ec2, ami):
    return ec2.describe_images(ImageIds=[ami])["Images"][0]


def tags(resource):
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


def snapshot(ec2, snap_id):
    return ec2.describe_snapshots(SnapshotIds=[snap_id])["Snapshots"][0]


def spec(kind, pairs):
    return {"ResourceType": kind, "Tags": [{"Key": k, "Value": v} for k, v in pairs.items()]}


def test_create_image_snapshots_each_volume_with_tags_and_pending_phase(ec2):
    iid = instance(ec2)
    ami = ec2.create_image(InstanceId=iid, Name="img-volumes", TagSpecifications=[
        spec("image", {"Team": "web"}), spec("snapshot", {"autosnap:managed": "true"})])["ImageId"]
    first = image(ec2, ami)
    assert first["State"] == "pending"
    img = image(ec2, ami)
    assert img["State"] == "available"
    assert img["RootDeviceName"] == "/dev/sda1" and img["RootDeviceType"] == "ebs"
    assert tags(img) == {"Team": "web"}
    by_device = {m["DeviceName"]: m["Ebs"] for m in img["BlockDeviceMappings"]}
    assert set(by_device) == {"/dev/sda1", "/dev/sdf"}
    assert by_device["/dev/sda1"]["VolumeSize"] == 8
    assert by_device["/dev/sdf"]["VolumeSize"] == 4
    assert by_device["/dev/sdf"]["VolumeType"] == "gp3"
    assert by_device["/dev/sdf"]["Iops"] == 3000
    for ebs in by_device.values():
        s = snapshot(ec2, ebs["SnapshotId"])
        assert s["Description"] == f"Created by CreateImage({iid}) for {ami}"
        assert tags(s) == {"autosnap:managed": "true"}
    # Only the real snapshots: no invented 15 GiB one.
    assert sorted(s["VolumeSize"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]) == [4, 8]
    with pytest.raises(ClientError) as e:
        ec2.delete_snapshot(SnapshotId=by_device["/dev/sdf"]["SnapshotId"])
    assert code(e.value) == "InvalidSnapshot.InUse"


def test_create_image_of_encrypted_volume_keeps_the_key(ec2, kms):
    key = kms.create_key()["KeyMetadata"]["Arn"]
    iid = instance(ec2, encrypted_key=key)
    ami = ec2.create_image(InstanceId=iid, Name="img-enc")["ImageId"]
    m = {m["DeviceName"]: m["Ebs"] for m in image(ec2, ami)["BlockDeviceMappings"]}
    assert m["/dev/sdf"]["Encrypted"] is True and m["/dev/sda1"]["Encrypted"] is False
    s = snapshot(ec2, m["/dev/sdf"]["SnapshotId"])
    assert s["Encrypted"] is True and s["KmsKeyId"] == key


def test_create_image_fail_control_gives_failed_state(ec2):
    iid = instance(ec2, tags={"autosnap-testbed:fail": "CreateImage"})
    ami = ec2.create_image(InstanceId=iid, Name="img-fail")["ImageId"]
    assert image(ec2, ami)["State"] == "pending"
    img = image(ec2, ami)
    assert img["State"] == "failed"
    assert "set to fail" in img["StateReason"]["Message"]
    assert len(img["BlockDeviceMappings"]) == 2


def test_names_are_unique(ec2):
    iid = instance(ec2)
    ami = ec2.create_image(InstanceId=iid, Name="img-taken")["ImageId"]
    for call in (
        lambda: ec2.create_image(InstanceId=iid, Name="img-taken"),
        lambda: ec2.copy_image(SourceImageId=ami, SourceRegion="us-east-1", Name="img-taken"),
        lambda: ec2.register_image(Name="img-taken", RootDeviceName="/dev/xvda"),
    ):
        with pytest.raises(ClientError) as e:
            call()
        assert code(e.value) == "InvalidAMIName.Duplicate"
        assert ami in e.value.response["Error"]["Message"]
    ec2.deregister_image(ImageId=ami)
    ec2.create_image(InstanceId=iid, Name="img-taken")  # free again


def test_copy_image_encrypts_with_the_key_and_copies_mappings(ec2, kms):
    key = kms.create_key()["KeyMetadata"]
    kms.create_alias(AliasName="alias/backup", TargetKeyId=key["KeyId"])
    iid = instance(ec2)
    src = ec2.create_image(InstanceId=iid, Name="img-src")["ImageId"]
    plain = ec2.copy_image(SourceImageId=src, SourceRegion="us-east-1", Name="img-plain")["ImageId"]
    enc = ec2.copy_image(
        SourceImageId=src, SourceRegion="us-east-1", Name="img-copy", Encrypted=True,
        KmsKeyId="alias/backup",
        TagSpecifications=[spec("image", {"A": "1"}), spec("snapshot", {"B": "2"})],
    )["ImageId"]
    src_map = {m["DeviceName"]: m["Ebs"] for m in image(ec2, src)["BlockDeviceMappings"]}
    image(ec2, enc)  # the pending answer
    img = image(ec2, enc)
    assert img["State"] == "available" and tags(img) == {"A": "1"}
    assert img["SourceImageId"] == src and img["RootDeviceName"] == "/dev/sda1"
    enc_map = {m["DeviceName"]: m["Ebs"] for m in img["BlockDeviceMappings"]}
    assert set(enc_map) == set(src_map)
    for dev, ebs in enc_map.items():
        assert ebs["SnapshotId"] != src_map[dev]["SnapshotId"]
        assert ebs["VolumeSize"] == src_map[dev]["VolumeSize"] and ebs["Encrypted"] is True
        s = snapshot(ec2, ebs["SnapshotId"])
        assert s["Encrypted"] is True and s["KmsKeyId"] == key["Arn"]
        assert tags(s) == {"B": "2"}
        assert s["Description"].startswith(f"Copied for DestinationAmi {enc} from SourceAmi {src}")
    for ebs in image(ec2, plain)["BlockDeviceMappings"]:
        assert snapshot(ec2, ebs["Ebs"]["SnapshotId"])["Encrypted"] is False


def test_copy_image_key_errors(ec2, kms):
    iid = instance(ec2)
    src = ec2.create_image(InstanceId=iid, Name="img-src2")["ImageId"]
    with pytest.raises(ClientError) as e:
        ec2.copy_image(SourceImageId=src, SourceRegion="us-east-1", Name="img-x", KmsKeyId="alias/x")
    assert code(e.value) == "InvalidParameterCombination"
    bad = ec2.copy_image(SourceImageId=src, SourceRegion="us-east-1", Name="img-bad",
                         Encrypted=True, KmsKeyId="alias/does-not-exist")["ImageId"]
    image(ec2, bad)
    img = image(ec2, bad)
    assert img["State"] == "failed"
    assert img["StateReason"]["Message"] == "Copy image failed with an internal error."
    default = ec2.copy_image(SourceImageId=src, SourceRegion="us-east-1", Name="img-default",
                             Encrypted=True)["ImageId"]
    for m in image(ec2, default)["BlockDeviceMappings"]:
        assert snapshot(ec2, m["Ebs"]["SnapshotId"])["Encrypted"] is True


def poll_store(ec2, ami):
    states = []
    for _ in range(10):
        t = ec2.describe_store_image_tasks(ImageIds=[ami])["StoreImageTaskResults"][0]
        states.append((t["StoreTaskState"], t["ProgressPercentage"]))
        if t["StoreTaskState"] != "InProgress":
            return t, states
    raise AssertionError(states)


def test_store_task_progress_then_object_in_bucket(ec2, s3):
    s3.create_bucket(Bucket="amis")
    iid = instance(ec2)
    ami = ec2.create_image(InstanceId=iid, Name="img-store",
                           TagSpecifications=[spec("image", {"Team": "web"})])["ImageId"]
    key = ec2.create_store_image_task(ImageId=ami, Bucket="amis",
                                      S3ObjectTags=[{"Key": "k", "Value": "v"}])["ObjectKey"]
    assert key == f"{ami}.bin"
    assert s3.list_objects_v2(Bucket="amis").get("KeyCount") == 0  # not before completion
    task, states = poll_store(ec2, ami)
    assert states == [("InProgress", 33), ("InProgress", 66), ("Completed", 100)]
    assert task["Bucket"] == "amis" and task["S3objectKey"] == key and task["AmiId"] == ami
    doc = json.loads(s3.get_object(Bucket="amis", Key=key)["Body"].read())
    assert doc["ImageId"] == ami and doc["Tags"] == {"Team": "web"}
    assert len(doc["BlockDeviceMappings"]) == 2
    got = s3.get_object_tagging(Bucket="amis", Key=key)["TagSet"]
    assert got == [{"Key": "k", "Value": "v"}]
    done = ec2.describe_store_image_tasks(Filters=[{"Name": "task-state", "Values": ["Completed"]}])
    assert [t["AmiId"] for t in done["StoreImageTaskResults"]] == [ami]


def test_store_task_errors_and_fail_control(ec2, s3):
    s3.create_bucket(Bucket="amis2")
    iid = instance(ec2)
    ami = ec2.create_image(InstanceId=iid, Name="img-store-fail", TagSpecifications=[
        spec("image", {"autosnap-testbed:fail": "StoreImageTask"})])["ImageId"]
    with pytest.raises(ClientError) as e:
        ec2.create_store_image_task(ImageId=ami, Bucket="no-such-bucket")
    assert code(e.value) == "InvalidParameterValue" and "no-such-bucket" in str(e.value)
    with pytest.raises(ClientError) as e:
        ec2.create_store_image_task(ImageId="ami-0123456789abcdef0", Bucket="amis2")
    assert code(e.value) == "InvalidAMIID.NotFound"
    ec2.create_store_image_task(ImageId=ami, Bucket="amis2")
    task, _ = poll_store(ec2, ami)
    assert task["StoreTaskState"] == "Failed" and "set to fail" in task["StoreTaskFailureReason"]
    assert s3.list_objects_v2(Bucket="amis2").get("KeyCount") == 0


def stored(ec2, s3, bucket, image_tags):
    s3.create_bucket(Bucket=bucket)
    iid = instance(ec2)
    ami = ec2.create_image(InstanceId=iid, Name=f"img-{bucket}",
                           TagSpecifications=[spec("image", image_tags)])["ImageId"]
    key = ec2.create_store_image_task(ImageId=ami, Bucket=bucket)["ObjectKey"]
    poll_store(ec2, ami)
    return ami, key


def test_restore_registers_a_new_image_with_new_snapshots(ec2, s3):
    ami, key = stored(ec2, s3, "amis3", {"Team": "web"})
    with pytest.raises(ClientError) as e:  # the original still holds the name
        ec2.create_restore_image_task(Bucket="amis3", ObjectKey=key)
    assert code(e.value) == "InvalidAMIName.Duplicate"
    new = ec2.create_restore_image_task(Bucket="amis3", ObjectKey=key, Name="img-restored",
                                        TagSpecifications=[spec("snapshot", {"R": "1"})])["ImageId"]
    assert new != ami
    assert image(ec2, new)["State"] == "pending"
    img = image(ec2, new)
    orig = image(ec2, ami)
    assert img["State"] == "available" and img["Name"] == "img-restored"
    assert tags(img) == {}  # AWS restores no tags of its own accord
    assert img["RootDeviceName"] == orig["RootDeviceName"]
    old = {m["DeviceName"]: m["Ebs"] for m in orig["BlockDeviceMappings"]}
    got = {m["DeviceName"]: m["Ebs"] for m in img["BlockDeviceMappings"]}
    assert set(got) == set(old)
    for dev, ebs in got.items():
        assert ebs["SnapshotId"] != old[dev]["SnapshotId"]
        assert ebs["VolumeSize"] == old[dev]["VolumeSize"]
        assert ebs["VolumeType"] == old[dev]["VolumeType"]
        assert tags(snapshot(ec2, ebs["SnapshotId"])) == {"R": "1"}


def test_restore_errors_and_fail_control(ec2, s3):
    ami, key = stored(ec2, s3, "amis4", {"autosnap-testbed:fail": "RestoreImageTask"})
    with pytest.raises(ClientError) as e:
        ec2.create_restore_image_task(Bucket="amis4", ObjectKey="ami-missing.bin", Name="img-r1")
    assert code(e.value) == "InvalidParameterValue" and "ami-missing.bin" in str(e.value)
    with pytest.raises(ClientError) as e:
        ec2.create_restore_image_task(Bucket="no-such-bucket", ObjectKey=key, Name="img-r2")
    assert code(e.value) == "InvalidParameterValue"
    s3.put_object(Bucket="amis4", Key="junk.bin", Body=b"not an image")
    with pytest.raises(ClientError) as e:
        ec2.create_restore_image_task(Bucket="amis4", ObjectKey="junk.bin", Name="img-r3")
    assert code(e.value) == "InvalidParameterValue"
    new = ec2.create_restore_image_task(Bucket="amis4", ObjectKey=key, Name="img-r4")["ImageId"]
    image(ec2, new)
    img = image(ec2, new)
    assert img["State"] == "failed" and "set to fail" in img["StateReason"]["Message"]


def test_hold_controls_keep_copies_store_tasks_and_restores_in_a_state(ec2, s3):
    iid = instance(ec2)
    ami = ec2.create_image(InstanceId=iid, Name="img-held", TagSpecifications=[spec("image", {
        "autosnap-testbed:copy-state": "pending",
        "autosnap-testbed:restore-state": "pending",
    })])["ImageId"]
    copy = ec2.copy_image(SourceImageId=ami, SourceRegion="us-east-1", Name="img-held-copy",
                          Encrypted=True)["ImageId"]
    s3.create_bucket(Bucket="amis-held")
    key = ec2.create_store_image_task(ImageId=ami, Bucket="amis-held")["ObjectKey"]
    task, _ = poll_store(ec2, ami)
    new = ec2.create_restore_image_task(Bucket="amis-held", ObjectKey=key,
                                        Name="img-held-restored")["ImageId"]
    for _ in range(5):  # more describes than any pending phase lasts
        assert image(ec2, copy)["State"] == "pending"
        assert image(ec2, new)["State"] == "pending"
    assert image(ec2, ami)["State"] == "available"  # the image itself is not held

    other = ec2.create_image(InstanceId=iid, Name="img-store-held", TagSpecifications=[
        spec("image", {"autosnap-testbed:store-state": "InProgress"})])["ImageId"]
    ec2.create_store_image_task(ImageId=other, Bucket="amis-held")
    for _ in range(5):
        t = ec2.describe_store_image_tasks(ImageIds=[other])["StoreImageTaskResults"][0]
        assert t["StoreTaskState"] == "InProgress"

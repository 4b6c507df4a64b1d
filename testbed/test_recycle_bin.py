"""Checks of the Recycle Bin correction (recycle_bin.py) through boto3 against a launcher on a
loopback port: the rbin service's rules (validation, tag-level and Region-level matching,
exclusion tags, lock, paging), deletes that a rule retains going to the bin, listing and restoring
snapshots and AMIs, and the denied-ListRules test control."""

import json
import urllib.request

import pytest
from botocore.exceptions import ClientError

from test_testbed import client  # noqa: F401  (shared helpers and fixtures)
from test_testbed import account, ec2, server  # noqa: F401

import recycle_bin


@pytest.fixture
def rbin(server, account):  # noqa: F811
    return client("rbin", server, account)


@pytest.fixture
def rbin_raw(server, account):  # noqa: F811
    """No client-side parameter validation, to send what the SDK would refuse."""
    return client("rbin", server, account, parameter_validation=False)


def code(exc: ClientError) -> str:
    return exc.response["Error"]["Code"]


def refused(call) -> str:
    with pytest.raises(ClientError) as e:
        call()
    return code(e.value)


def days(n: int) -> dict:
    return {"RetentionPeriodValue": n, "RetentionPeriodUnit": "DAYS"}


def pair(k: str, v: str) -> dict:
    return {"ResourceTagKey": k, "ResourceTagValue": v}


def snap(ec2, tags: dict | None = None) -> str:  # noqa: F811
    vol = ec2.create_volume(Size=1, AvailabilityZone="us-east-1a")["VolumeId"]
    kw = {}
    if tags:
        kw["TagSpecifications"] = [{"ResourceType": "snapshot", "Tags": [
            {"Key": k, "Value": v} for k, v in tags.items()]}]
    return ec2.create_snapshot(VolumeId=vol, **kw)["SnapshotId"]


def exists(ec2, sid: str) -> bool:  # noqa: F811
    return any(s["SnapshotId"] == sid for s in ec2.describe_snapshots(
        Filters=[{"Name": "snapshot-id", "Values": [sid]}])["Snapshots"])


def in_bin(ec2, sid: str):  # noqa: F811
    rows = ec2.list_snapshots_in_recycle_bin(SnapshotIds=[sid])["Snapshots"]
    return rows[0] if rows else None


def test_rules_create_get_list_delete(rbin):
    out = rbin.create_rule(ResourceType="EBS_SNAPSHOT", RetentionPeriod=days(7),
                           Description="keep backups",
                           ResourceTags=[pair("autosnap:managed", "true")])
    rid = out["Identifier"]
    assert len(rid) == 11 and out["Status"] == "available"
    assert out["RuleArn"].endswith(f":rule/{rid}") and ":rbin:us-east-1:" in out["RuleArn"]
    got = rbin.get_rule(Identifier=rid)
    assert got["ResourceTags"] == [pair("autosnap:managed", "true")]
    assert got["RetentionPeriod"] == days(7)
    # ListRules needs ResourceType and lists only that type (summaries: no tags).
    assert [r["Identifier"] for r in rbin.list_rules(ResourceType="EBS_SNAPSHOT")["Rules"]] == [rid]
    assert rbin.list_rules(ResourceType="EC2_IMAGE")["Rules"] == []
    assert "ResourceTags" not in rbin.list_rules(ResourceType="EBS_SNAPSHOT")["Rules"][0]
    rbin.delete_rule(Identifier=rid)
    assert refused(lambda: rbin.get_rule(Identifier=rid)) == "ResourceNotFoundException"
    assert refused(lambda: rbin.delete_rule(Identifier=rid)) == "ResourceNotFoundException"


def test_rule_validation(rbin, rbin_raw):
    assert refused(lambda: rbin.create_rule(
        ResourceType="EBS_SNAPSHOT", RetentionPeriod=days(366))) == "ValidationException"
    assert refused(lambda: rbin.create_rule(
        ResourceType="EBS_VOLUME", RetentionPeriod=days(8))) == "ValidationException"
    # Exclusion tags belong to Region-level rules only.
    assert refused(lambda: rbin.create_rule(
        ResourceType="EBS_SNAPSHOT", RetentionPeriod=days(1), ResourceTags=[pair("a", "1")],
        ExcludeResourceTags=[pair("b", "2")])) == "ValidationException"
    # Only Region-level rules can be locked; the unlock delay is 7-30 days.
    lock = {"UnlockDelay": {"UnlockDelayValue": 7, "UnlockDelayUnit": "DAYS"}}
    assert refused(lambda: rbin.create_rule(
        ResourceType="EBS_SNAPSHOT", RetentionPeriod=days(1), ResourceTags=[pair("a", "1")],
        LockConfiguration=lock)) == "ValidationException"
    short = {"UnlockDelay": {"UnlockDelayValue": 6, "UnlockDelayUnit": "DAYS"}}
    assert refused(lambda: rbin_raw.create_rule(
        ResourceType="EBS_SNAPSHOT", RetentionPeriod=days(1),
        LockConfiguration=short)) == "ValidationException"


def test_locked_rule_cannot_be_deleted_and_list_filters_lock_state(rbin):
    lock = {"UnlockDelay": {"UnlockDelayValue": 7, "UnlockDelayUnit": "DAYS"}}
    locked = rbin.create_rule(ResourceType="EC2_IMAGE", RetentionPeriod=days(3),
                              LockConfiguration=lock)["Identifier"]
    plain = rbin.create_rule(ResourceType="EC2_IMAGE", RetentionPeriod=days(3))["Identifier"]
    assert rbin.get_rule(Identifier=locked)["LockState"] == "locked"
    assert "LockState" not in rbin.get_rule(Identifier=plain)
    assert refused(lambda: rbin.delete_rule(Identifier=locked)) == "ConflictException"
    rows = rbin.list_rules(ResourceType="EC2_IMAGE", LockState="locked")["Rules"]
    assert [r["Identifier"] for r in rows] == [locked]


def test_list_rules_pages(rbin):
    ids = {rbin.create_rule(ResourceType="EBS_SNAPSHOT", RetentionPeriod=days(1),
                            ResourceTags=[pair("n", str(i))])["Identifier"] for i in range(5)}
    seen, token, pages = [], None, 0
    while True:
        kw = {"NextToken": token} if token else {}
        out = rbin.list_rules(ResourceType="EBS_SNAPSHOT", MaxResults=2, **kw)
        seen += [r["Identifier"] for r in out["Rules"]]
        pages += 1
        token = out.get("NextToken")
        if not token:
            break
    assert pages == 3 and sorted(seen) == sorted(ids)


def test_tag_level_rule_retains_only_matching_snapshots(ec2, rbin):  # noqa: F811
    rbin.create_rule(ResourceType="EBS_SNAPSHOT", RetentionPeriod=days(7),
                     ResourceTags=[pair("team", "db"), pair("tier", "gold")])
    kept = snap(ec2, {"tier": "gold", "other": "x"})  # one of the pairs is enough
    wrong_value = snap(ec2, {"team": "web"})
    untagged = snap(ec2)
    for sid in (kept, wrong_value, untagged):
        ec2.delete_snapshot(SnapshotId=sid)
        assert not exists(ec2, sid)
    row = in_bin(ec2, kept)
    assert row is not None and row["VolumeId"].startswith("vol-")
    assert (row["RecycleBinExitTime"] - row["RecycleBinEnterTime"]).days == 7
    assert in_bin(ec2, wrong_value) is None and in_bin(ec2, untagged) is None


def test_region_level_rule_with_exclusion_tags(ec2, rbin):  # noqa: F811
    rbin.create_rule(ResourceType="EBS_SNAPSHOT", RetentionPeriod=days(2),
                     ExcludeResourceTags=[pair("scratch", "yes")])
    kept = snap(ec2)
    excluded = snap(ec2, {"scratch": "yes"})
    other_value = snap(ec2, {"scratch": "no"})
    for sid in (kept, excluded, other_value):
        ec2.delete_snapshot(SnapshotId=sid)
    assert in_bin(ec2, kept) is not None
    assert in_bin(ec2, excluded) is None
    assert in_bin(ec2, other_value) is not None


def test_longest_matching_rule_wins_and_rule_types_are_separate(ec2, rbin):  # noqa: F811
    rbin.create_rule(ResourceType="EBS_SNAPSHOT", RetentionPeriod=days(3))
    rbin.create_rule(ResourceType="EBS_SNAPSHOT", RetentionPeriod=days(30),
                     ResourceTags=[pair("keep", "long")])
    rbin.create_rule(ResourceType="EC2_IMAGE", RetentionPeriod=days(300))
    long = snap(ec2, {"keep": "long"})
    short = snap(ec2)
    ec2.delete_snapshot(SnapshotId=long)
    ec2.delete_snapshot(SnapshotId=short)
    r = in_bin(ec2, long)
    assert (r["RecycleBinExitTime"] - r["RecycleBinEnterTime"]).days == 30
    r = in_bin(ec2, short)
    assert (r["RecycleBinExitTime"] - r["RecycleBinEnterTime"]).days == 3


def test_value_less_resource_tag_matches_an_empty_value_only():
    rule = {"Status": "available", "ResourceType": "EBS_SNAPSHOT",
            "ResourceTags": [{"ResourceTagKey": "k"}]}
    assert recycle_bin.rule_retains(rule, "EBS_SNAPSHOT", {"k": ""})
    assert not recycle_bin.rule_retains(rule, "EBS_SNAPSHOT", {"k": "v"})
    assert not recycle_bin.rule_retains(rule, "EC2_IMAGE", {"k": ""})


def test_restore_snapshot_brings_it_back_with_tags(ec2, rbin):  # noqa: F811
    rbin.create_rule(ResourceType="EBS_SNAPSHOT", RetentionPeriod=days(7))
    sid = snap(ec2, {"Name": "db"})
    ec2.delete_snapshot(SnapshotId=sid)
    assert refused(lambda: ec2.describe_snapshots(SnapshotIds=[sid])) == \
        "InvalidSnapshot.NotFound"
    out = ec2.restore_snapshot_from_recycle_bin(SnapshotId=sid)
    assert out["SnapshotId"] == sid and out["State"] == "completed"
    s = ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]
    assert {"Key": "Name", "Value": "db"} in s["Tags"]
    assert in_bin(ec2, sid) is None
    # Not in the bin (any more): not found.
    assert refused(lambda: ec2.restore_snapshot_from_recycle_bin(SnapshotId=sid)) == \
        "InvalidSnapshot.NotFound"


def test_ami_to_bin_list_and_restore(ec2, rbin):  # noqa: F811
    rbin.create_rule(ResourceType="EC2_IMAGE", RetentionPeriod=days(10),
                     ResourceTags=[pair("autosnap:managed", "true")])
    sid = snap(ec2)
    mapping = [{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": sid}}]

    def image(name, tags):
        iid = ec2.register_image(Name=name, RootDeviceName="/dev/xvda",
                                 BlockDeviceMappings=mapping)["ImageId"]
        if tags:
            ec2.create_tags(Resources=[iid], Tags=[{"Key": k, "Value": v}
                                                   for k, v in tags.items()])
        return iid

    kept = image("kept", {"autosnap:managed": "true"})
    gone = image("gone", {})
    ec2.deregister_image(ImageId=kept)
    ec2.deregister_image(ImageId=gone)
    assert ec2.describe_images(Filters=[{"Name": "image-id", "Values": [kept]}])["Images"] == []
    rows = ec2.list_images_in_recycle_bin()["Images"]
    assert [r["ImageId"] for r in rows] == [kept] and rows[0]["Name"] == "kept"
    assert (rows[0]["RecycleBinExitTime"] - rows[0]["RecycleBinEnterTime"]).days == 10
    assert ec2.restore_image_from_recycle_bin(ImageId=kept)["Return"] is True
    img = ec2.describe_images(ImageIds=[kept])["Images"][0]
    assert {"Key": "autosnap:managed", "Value": "true"} in img["Tags"]
    assert ec2.list_images_in_recycle_bin()["Images"] == []
    assert refused(lambda: ec2.restore_image_from_recycle_bin(ImageId=gone)) == \
        "InvalidAMIID.NotFound"


def test_list_snapshots_in_bin_pages(ec2, rbin, server, account):  # noqa: F811
    rbin.create_rule(ResourceType="EBS_SNAPSHOT", RetentionPeriod=days(1))
    ids = [snap(ec2) for _ in range(6)]
    for sid in ids:
        ec2.delete_snapshot(SnapshotId=sid)
    first = ec2.list_snapshots_in_recycle_bin(MaxResults=5)
    assert len(first["Snapshots"]) == 5 and first["NextToken"]
    rest = ec2.list_snapshots_in_recycle_bin(MaxResults=5, NextToken=first["NextToken"])
    assert sorted(r["SnapshotId"] for r in first["Snapshots"] + rest["Snapshots"]) == sorted(ids)
    assert "NextToken" not in rest
    raw = client("ec2", server, account, parameter_validation=False)
    assert refused(lambda: raw.list_snapshots_in_recycle_bin(MaxResults=4)) == \
        "InvalidParameterValue"


def test_a_locked_snapshot_is_refused_not_binned(ec2, rbin):  # noqa: F811
    rbin.create_rule(ResourceType="EBS_SNAPSHOT", RetentionPeriod=days(7))
    sid = snap(ec2)
    ec2.lock_snapshot(SnapshotId=sid, LockMode="governance", LockDuration=1)
    assert refused(lambda: ec2.delete_snapshot(SnapshotId=sid)) == "SnapshotLocked"
    assert exists(ec2, sid) and in_bin(ec2, sid) is None


def test_denied_list_rules_control(rbin):
    rid = rbin.create_rule(ResourceType="EBS_SNAPSHOT", RetentionPeriod=days(1),
                           ResourceTags=[pair("never", "matches")],
                           Tags=[{"Key": "autosnap-testbed:deny",
                                  "Value": "rbin:ListRules"}])["Identifier"]
    assert refused(lambda: rbin.list_rules(ResourceType="EBS_SNAPSHOT")) == \
        "AccessDeniedException"
    assert refused(lambda: rbin.get_rule(Identifier=rid)) == "AccessDeniedException"


def test_rules_are_per_account(server, rbin):  # noqa: F811
    rbin.create_rule(ResourceType="EBS_SNAPSHOT", RetentionPeriod=days(1))
    other = client("rbin", server, "999999999999")
    assert other.list_rules(ResourceType="EBS_SNAPSHOT")["Rules"] == []


def test_calls_are_counted_per_account_region_and_action(server, rbin, account):  # noqa: F811
    rid = rbin.create_rule(ResourceType="EBS_SNAPSHOT", RetentionPeriod=days(1))["Identifier"]
    rbin.list_rules(ResourceType="EBS_SNAPSHOT")
    rbin.get_rule(Identifier=rid)
    rbin.get_rule(Identifier=rid)
    with urllib.request.urlopen(f"{server}/_autosnap_testbed/rbin-calls") as r:
        rows = json.load(r)
    mine = {x["action"]: x["count"] for x in rows
            if x["account"] == account and x["region"] == "us-east-1"}
    assert mine == {"CreateRule": 1, "ListRules": 1, "GetRule": 2}

"""Checks of the snapshot lock correction (snapshot_lock.py) through boto3 against a launcher on a
loopback port: lock modes, cooling-off, duration and expiry, unlock rules, DescribeLockedSnapshots
filters and paging, and DeleteSnapshot refusing a locked snapshot."""

from datetime import datetime, timedelta, timezone

import pytest
from botocore.exceptions import ClientError

from test_testbed import client  # noqa: F401  (shared helpers and fixtures)
from test_testbed import account, ec2, server  # noqa: F401

CREATED_TAG = "autosnap-testbed:lock-created-on"
REFUSED_TAG = "autosnap-testbed:delete-refused"


def code(exc: ClientError) -> str:
    return exc.response["Error"]["Code"]


def snap(ec2) -> str:  # noqa: F811
    vol = ec2.create_volume(Size=1, AvailabilityZone="us-east-1a")["VolumeId"]
    return ec2.create_snapshot(VolumeId=vol)["SnapshotId"]


def locked(ec2, sid):  # noqa: F811
    rows = ec2.describe_locked_snapshots(SnapshotIds=[sid])["Snapshots"]
    return rows[0] if rows else None


def age_lock(ec2, sid, hours):  # noqa: F811
    t = datetime.now(timezone.utc) - timedelta(hours=hours)
    ec2.create_tags(Resources=[sid], Tags=[{"Key": CREATED_TAG, "Value": t.isoformat()}])


def test_governance_lock_blocks_delete_until_unlocked(ec2):  # noqa: F811
    sid = snap(ec2)
    out = ec2.lock_snapshot(SnapshotId=sid, LockMode="governance", LockDuration=7)
    assert out["LockState"] == "governance"
    assert out["LockDuration"] == 7
    assert "CoolOffPeriod" not in out
    span = out["LockExpiresOn"] - out["LockCreatedOn"]
    assert span == timedelta(days=7)

    with pytest.raises(ClientError) as e:
        ec2.delete_snapshot(SnapshotId=sid)
    assert code(e.value) == "SnapshotLocked"
    assert "governance" in e.value.response["Error"]["Message"]
    s = ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]
    assert {t["Key"]: t["Value"] for t in s["Tags"]}[REFUSED_TAG] == "1"

    ec2.unlock_snapshot(SnapshotId=sid)
    assert locked(ec2, sid) is None
    ec2.delete_snapshot(SnapshotId=sid)
    assert ec2.describe_snapshots(Filters=[{"Name": "snapshot-id", "Values": [sid]}])[
        "Snapshots"] == []


def test_compliance_cool_off_then_irreversible(ec2):  # noqa: F811
    sid = snap(ec2)
    out = ec2.lock_snapshot(SnapshotId=sid, LockMode="compliance", LockDuration=30,
                            CoolOffPeriod=24)
    assert out["LockState"] == "compliance-cooloff"
    assert out["CoolOffPeriodExpiresOn"] - out["LockCreatedOn"] == timedelta(hours=24)
    # Inside the cooling-off period it can still be unlocked; lock it again and age it past.
    ec2.unlock_snapshot(SnapshotId=sid)
    ec2.lock_snapshot(SnapshotId=sid, LockMode="compliance", LockDuration=30, CoolOffPeriod=1)
    age_lock(ec2, sid, 2)
    assert locked(ec2, sid)["LockState"] == "compliance"
    for call in (lambda: ec2.unlock_snapshot(SnapshotId=sid),
                 lambda: ec2.delete_snapshot(SnapshotId=sid),
                 lambda: ec2.lock_snapshot(SnapshotId=sid, LockMode="governance", LockDuration=30),
                 lambda: ec2.lock_snapshot(SnapshotId=sid, LockMode="compliance", LockDuration=10)):
        with pytest.raises(ClientError):
            call()
    # Extending is allowed.
    out = ec2.lock_snapshot(SnapshotId=sid, LockMode="compliance", LockDuration=60)
    assert out["LockState"] == "compliance" and out["LockDuration"] == 60


def test_compliance_without_cool_off_is_compliance_at_once(ec2):  # noqa: F811
    sid = snap(ec2)
    out = ec2.lock_snapshot(SnapshotId=sid, LockMode="compliance", LockDuration=1)
    assert out["LockState"] == "compliance"
    with pytest.raises(ClientError):
        ec2.unlock_snapshot(SnapshotId=sid)


def test_expiry_from_server_clock(ec2):  # noqa: F811
    sid = snap(ec2)
    ec2.lock_snapshot(SnapshotId=sid, LockMode="compliance", LockDuration=1)
    age_lock(ec2, sid, 25)
    assert locked(ec2, sid)["LockState"] == "expired"
    ec2.delete_snapshot(SnapshotId=sid)
    assert locked(ec2, sid) is None


def test_expiration_date(ec2):  # noqa: F811
    sid = snap(ec2)
    until = (datetime.now(timezone.utc) + timedelta(days=3)).replace(microsecond=0)
    out = ec2.lock_snapshot(SnapshotId=sid, LockMode="governance", ExpirationDate=until)
    assert out["LockExpiresOn"] == until
    assert "LockDuration" not in out
    with pytest.raises(ClientError) as e:
        ec2.lock_snapshot(SnapshotId=sid, LockMode="governance",
                          ExpirationDate=datetime.now(timezone.utc) - timedelta(hours=1))
    assert code(e.value) == "InvalidParameterValue"


@pytest.mark.parametrize("kwargs,expected", [
    ({"LockMode": "governance"}, "InvalidParameterCombination"),
    ({"LockMode": "governance", "LockDuration": 1,
      "ExpirationDate": datetime(2100, 1, 1, tzinfo=timezone.utc)}, "InvalidParameterCombination"),
    ({"LockMode": "governance", "LockDuration": 1, "CoolOffPeriod": 2},
     "InvalidParameterCombination"),
    ({"LockMode": "governance", "LockDuration": 36501}, "InvalidParameterValue"),
    ({"LockMode": "compliance", "LockDuration": 1, "CoolOffPeriod": 73}, "InvalidParameterValue"),
])
def test_lock_validation(ec2, kwargs, expected):  # noqa: F811
    # (Values below the minimum are refused by the SDKs before they are sent.)
    sid = snap(ec2)
    with pytest.raises(ClientError) as e:
        ec2.lock_snapshot(SnapshotId=sid, **kwargs)
    assert code(e.value) == expected
    assert locked(ec2, sid) is None


def test_unknown_and_unlocked_snapshots(ec2):  # noqa: F811
    with pytest.raises(ClientError) as e:
        ec2.lock_snapshot(SnapshotId="snap-00000000000000000", LockMode="governance",
                          LockDuration=1)
    assert code(e.value) == "InvalidSnapshot.NotFound"
    sid = snap(ec2)
    with pytest.raises(ClientError) as e:
        ec2.unlock_snapshot(SnapshotId=sid)
    assert code(e.value) == "InvalidParameterValue"


def test_describe_filters_and_paging(ec2):  # noqa: F811
    gov = [snap(ec2) for _ in range(6)]
    comp = snap(ec2)
    free = snap(ec2)
    for sid in gov:
        ec2.lock_snapshot(SnapshotId=sid, LockMode="governance", LockDuration=2)
    ec2.lock_snapshot(SnapshotId=comp, LockMode="compliance", LockDuration=2, CoolOffPeriod=5)

    rows = ec2.describe_locked_snapshots(
        Filters=[{"Name": "lock-state", "Values": ["compliance-cooloff"]}])["Snapshots"]
    assert [r["SnapshotId"] for r in rows] == [comp]
    assert rows[0]["CoolOffPeriod"] == 5
    assert ec2.describe_locked_snapshots(SnapshotIds=[free])["Snapshots"] == []

    seen, token, pages = [], None, 0
    while True:
        kw = {"MaxResults": 5}
        if token:
            kw["NextToken"] = token
        out = ec2.describe_locked_snapshots(**kw)
        seen += [r["SnapshotId"] for r in out["Snapshots"]]
        pages += 1
        token = out.get("NextToken")
        if not token:
            break
    assert pages == 2
    assert sorted(seen) == sorted(gov + [comp])

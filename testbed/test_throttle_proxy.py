"""Tests of throttle_proxy.py: EC2's token buckets (pure, on a fake clock) and the proxy in front
of a test bed launcher on a loopback port (throttles answered without forwarding, counters)."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import urllib.request

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from test_testbed import server  # noqa: F401  (shared fixture: one launcher for the module)
from test_testbed import account, client  # noqa: F401

import throttle_proxy as tp

HERE = os.path.dirname(os.path.abspath(__file__))
PROXY = os.path.join(HERE, "throttle_proxy.py")
PORT_LINE = re.compile(r"^THROTTLE_PROXY_PORT=(\d+)\n$")


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


# ---- the bucket (no server, no real time) ----------------------------------------------------

def test_tick_bucket_starts_full_and_refills_once_a_second():
    b = tp.TokenBucket(3, 2.0, now=0.0)
    assert [b.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert not b.take(0.99), "no refill before a whole second has passed"
    assert [b.take(1.0), b.take(1.0), b.take(1.0)] == [True, True, False]
    # A long idle fills it to its capacity, not beyond.
    assert sum(b.take(100.0) for _ in range(10)) == 3


def test_fractional_refill_accumulates_whole_tokens():
    b = tp.TokenBucket(1, 0.5, now=0.0)
    assert b.take(0.0)
    assert not b.take(1.0), "half a token is not a token"
    assert b.take(2.0)


def test_continuous_bucket_refills_between_seconds():
    b = tp.TokenBucket(2, 4.0, now=0.0, continuous=True)
    assert b.take(0.0) and b.take(0.0) and not b.take(0.0)
    assert b.take(0.25), "a quarter second at 4/s is one token"
    assert not b.take(0.25)


@pytest.mark.parametrize("action,params,bucket,budget", [
    ("CreateSnapshot", {}, "CreateSnapshot", (100, 5.0)),
    ("CreateSnapshots", {}, "CreateSnapshots", (100, 5.0)),
    ("DeleteSnapshot", {}, "DeleteSnapshot", (100, 5.0)),
    ("CreateTags", {}, "CreateTags", (100, 10.0)),
    ("CopyImage", {}, "CopyImage", (100, 1.0)),
    ("DescribeStoreImageTasks", {}, "DescribeStoreImageTasks", (50, 0.5)),
    ("CopySnapshot", {}, "CopySnapshot", (50, 5.0)),  # a mutating action without its own row
    ("CreateImage", {}, "CreateImage", (50, 5.0)),
    ("DescribeImages", {}, "DescribeImages", (100, 20.0)),
    ("DescribeSnapshots", {}, "DescribeSnapshots:unfiltered", (50, 10.0)),
    ("DescribeSnapshots", {"Filter.1.Name": ["owner-id"]}, "DescribeSnapshots", (100, 20.0)),
    ("DescribeVolumes", {"MaxResults": ["1000"]}, "DescribeVolumes", (100, 20.0)),
    ("DescribeInstances", {}, "DescribeInstances:unfiltered", (50, 10.0)),
])
def test_budgets_follow_the_documented_tables(action, params, bucket, budget):
    assert tp.budget_for(action, params, {}) == (bucket, budget)


def test_limiter_keeps_buckets_per_account_region_and_counts():
    clock = Clock()
    lim = tp.Limiter({"CreateSnapshot": (1, 1.0)}, clock=clock)
    assert lim.admit("a", "us-east-1", "CreateSnapshot", {})
    assert not lim.admit("a", "us-east-1", "CreateSnapshot", {})
    assert lim.admit("b", "us-east-1", "CreateSnapshot", {}), "another account, another bucket"
    assert lim.admit("a", "eu-west-1", "CreateSnapshot", {}), "another region, another bucket"
    clock.now += 1.0
    assert lim.admit("a", "us-east-1", "CreateSnapshot", {})
    s = lim.stats()
    assert s["actions"]["CreateSnapshot"] == {"requests": 5, "forwarded": 4, "throttled": 1}
    assert s["budgets"]["CreateSnapshot"] == {"capacity": 1, "refill_per_sec": 1.0}
    assert (s["ec2_requests"], s["ec2_throttled"]) == (5, 1)


# ---- the proxy in front of a launcher ------------------------------------------------------------

def start_proxy(*args: str):
    proc = subprocess.Popen([sys.executable, PROXY, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ready, _, _ = select.select([proc.stdout], [], [], 20)
    if not ready:
        proc.kill()
        raise AssertionError("proxy printed no port line in time")
    line = proc.stdout.readline().decode()
    m = PORT_LINE.match(line)
    if not m:
        proc.kill()
        raise AssertionError(f"bad port line {line!r}; stderr: {proc.stderr.read()!r}")
    return proc, f"http://127.0.0.1:{m.group(1)}"


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=10)


def one_attempt(service, endpoint, account):
    """A client that never retries, so each call is exactly one request."""
    c = boto3.client(service, endpoint_url=endpoint, region_name="us-east-1",
                     config=Config(retries={"total_max_attempts": 1, "mode": "standard"}))
    c.meta.events.register("before-sign.*.*",
                           lambda request, **_: request.headers.__setitem__(
                               "x-moto-account-id", account))
    return c


def stats(endpoint):
    with urllib.request.urlopen(f"{endpoint}/_stats", timeout=10) as r:
        return json.load(r)


def test_an_empty_bucket_answers_request_limit_exceeded_without_forwarding(
        server, account, tmp_path):  # noqa: F811
    # Refill 0.001/s: no token comes back while the test runs, so the outcome is exact.
    stats_file = tmp_path / "stats.json"
    proc, proxy = start_proxy("--upstream", server, "--budget", "CreateSnapshot=2/0.001",
                              "--stats-file", str(stats_file))
    try:
        direct = client("ec2", server, account)
        vol = direct.create_volume(Size=1, AvailabilityZone="us-east-1a")["VolumeId"]
        ec2 = one_attempt("ec2", proxy, account)
        made = [ec2.create_snapshot(VolumeId=vol)["SnapshotId"] for _ in range(2)]
        with pytest.raises(ClientError) as e:
            ec2.create_snapshot(VolumeId=vol)
        assert e.value.response["Error"]["Code"] == "RequestLimitExceeded"
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        # The throttled request never reached the test bed.
        seen = direct.describe_snapshots(Filters=[{"Name": "volume-id", "Values": [vol]}])
        assert sorted(s["SnapshotId"] for s in seen["Snapshots"]) == sorted(made)
        # Other actions have their own buckets and pass.
        assert ec2.describe_volumes(VolumeIds=[vol])["Volumes"][0]["VolumeId"] == vol
        s = stats(proxy)
        assert s["actions"]["CreateSnapshot"] == {"requests": 3, "forwarded": 2, "throttled": 1}
        assert s["actions"]["DescribeVolumes:unfiltered"]["throttled"] == 0
        assert s["budgets"]["CreateSnapshot"] == {"capacity": 2, "refill_per_sec": 0.001}
        assert (s["ec2_requests"], s["ec2_throttled"]) == (4, 1)
        # Non-EC2 traffic is forwarded and counted under its service.
        ebs = one_attempt("ebs", proxy, account)
        assert ebs.start_snapshot(VolumeSize=1)["Status"] == "pending"
        assert stats(proxy)["actions"]["ebs:*"]["forwarded"] == 1
        req = urllib.request.Request(f"{proxy}/_stats/reset", method="POST")
        urllib.request.urlopen(req, timeout=10).read()
        assert stats(proxy)["ec2_requests"] == 0
        with pytest.raises(ClientError):
            ec2.create_snapshot(VolumeId=vol)  # the bucket kept its state across the reset
    finally:
        assert stop(proc) == 0
    written = json.loads(stats_file.read_text())
    assert written["actions"]["CreateSnapshot"]["throttled"] == 1


def test_refuses_anything_but_loopback():
    for args in (["--upstream", "http://10.1.2.3:5000"],
                 ["--upstream", "http://127.0.0.1:5000", "--host", "0.0.0.0"]):
        r = subprocess.run([sys.executable, PROXY, *args], capture_output=True, timeout=20)
        assert r.returncode == 2
        assert b"loopback" in r.stderr

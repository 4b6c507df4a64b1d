"""Checks of the call counter (call_counter.py) through boto3 against a launcher on a loopback
port: each STS, EC2 and S3 request is counted under its service and action, the body of a
form-encoded request still reaches moto, and a reset clears the counts."""

import json
import urllib.request

from test_testbed import client  # noqa: F401  (shared helpers and fixtures)
from test_testbed import account, server  # noqa: F401


def calls(server: str) -> dict:  # noqa: F811
    with urllib.request.urlopen(f"{server}/_autosnap_testbed/calls") as r:
        return {(c["service"], c["action"]): c["count"] for c in json.load(r)}


def test_counts_each_request_by_service_and_action(server, account):  # noqa: F811
    before = calls(server)
    sts = client("sts", server, account)
    for _ in range(3):
        # A form-encoded query-protocol request: counted, and moto still answers it.
        assert sts.get_caller_identity()["Account"]
    client("ec2", server, account).describe_volumes()
    s3 = client("s3", server, account)
    s3.create_bucket(Bucket="counted")
    after = calls(server)

    def added(key):
        return after.get(key, 0) - before.get(key, 0)

    assert added(("sts", "GetCallerIdentity")) == 3
    assert added(("ec2", "DescribeVolumes")) == 1
    assert added(("s3", "PUT")) == 1
    assert added(("sts", "AssumeRole")) == 0


def test_a_reset_clears_the_counts(server, account):  # noqa: F811
    client("sts", server, account).get_caller_identity()
    assert calls(server).get(("sts", "GetCallerIdentity"), 0) >= 1
    req = urllib.request.Request(f"{server}/moto-api/reset", method="POST")
    urllib.request.urlopen(req).read()
    assert calls(server) == {}

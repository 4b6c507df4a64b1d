"""Tests of the autosnap test bed: the launcher's interface and each EBS direct correction.

Run:  testbed/setup.sh && .testbed/venv/bin/python -m pytest -q testbed/

One launcher subprocess (port 0) serves the module; every test gets its own AWS account through
the `x-moto-account-id` header, so tests cannot see each other's resources. Launcher-interface
tests start launchers of their own. Only 127.0.0.1 is ever contacted.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

HERE = os.path.dirname(os.path.abspath(__file__))
LAUNCHER = os.path.join(HERE, "autosnap_testbed.py")
BS = 524288
PORT_LINE = re.compile(r"^AUTOSNAP_TESTBED_PORT=(\d+)\n$")

os.environ.update({
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
})
for _k in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_EC2", "AWS_ENDPOINT_URL_EBS"):
    os.environ.pop(_k, None)


def start_launcher(*args: str, stdin=subprocess.DEVNULL, timeout: float = 20.0):
    """Start the launcher; return (process, port, seconds until the port line)."""
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, LAUNCHER, *args], stdin=stdin,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        proc.kill()
        raise AssertionError("launcher printed no port line in time")
    line = proc.stdout.readline().decode()
    elapsed = time.monotonic() - t0
    m = PORT_LINE.match(line)
    if not m:
        proc.kill()
        raise AssertionError(f"bad port line {line!r}; stderr: {proc.stderr.read()!r}")
    return proc, int(m.group(1)), elapsed


def stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


@pytest.fixture(scope="module")
def server():
    proc, port, elapsed = start_launcher("--exit-on-stdin-close", stdin=subprocess.PIPE)
    print(f"\nlauncher ready in {elapsed:.2f}s on port {port}", file=sys.stderr)
    yield f"http://127.0.0.1:{port}"
    proc.stdin.close()
    stop(proc)


_accounts = itertools.count(100000000001)


@pytest.fixture
def account() -> str:
    return str(next(_accounts))


def client(service: str, endpoint: str, account: str, **cfg):
    assert endpoint.startswith("http://127.0.0.1:")
    c = boto3.client(service, endpoint_url=endpoint, region_name="us-east-1",
                     config=Config(retries={"max_attempts": 1}, **cfg))

    def add_account(request, **_):
        request.headers["x-moto-account-id"] = account

    c.meta.events.register("before-sign.*.*", add_account)
    return c


@pytest.fixture
def ebs(server, account):
    return client("ebs", server, account)


@pytest.fixture
def ebs_raw(server, account):
    """No client-side parameter validation, to send what the SDK would refuse."""
    return client("ebs", server, account, parameter_validation=False)


@pytest.fixture
def ec2(server, account):
    return client("ec2", server, account)


def b64sha(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def block(ch: bytes) -> bytes:
    return ch * BS


ZERO = bytes(BS)


def put(ebs, sid: str, idx: int, data: bytes):
    return ebs.put_snapshot_block(SnapshotId=sid, BlockIndex=idx, BlockData=data,
                                  DataLength=len(data), Checksum=b64sha(data),
                                  ChecksumAlgorithm="SHA256")


def linear(checksums_by_index: dict) -> str:
    h = hashlib.sha256()
    for i in sorted(checksums_by_index):
        h.update(base64.b64decode(checksums_by_index[i]))
    return base64.b64encode(h.digest()).decode()


def make_snapshot(ebs, blocks: dict, size: int = 1, **kw) -> str:
    sid = ebs.start_snapshot(VolumeSize=size, **kw)["SnapshotId"]
    for i, data in blocks.items():
        put(ebs, sid, i, data)
    r = ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=len(blocks),
                              Checksum=linear({i: b64sha(d) for i, d in blocks.items()}),
                              ChecksumAlgorithm="SHA256", ChecksumAggregationMethod="LINEAR")
    assert r["Status"] == "completed"
    return sid


def all_blocks(ebs, sid: str, **kw) -> dict:
    out, token, pages = {}, None, 0
    while True:
        args = dict(SnapshotId=sid, **kw)
        if token:
            args["NextToken"] = token
        r = ebs.list_snapshot_blocks(**args)
        pages += 1
        for b in r["Blocks"]:
            out[b["BlockIndex"]] = b["BlockToken"]
        token = r.get("NextToken")
        if not token:
            return out


def read(ebs, sid: str, idx: int, token: str) -> bytes:
    r = ebs.get_snapshot_block(SnapshotId=sid, BlockIndex=idx, BlockToken=token)
    data = r["BlockData"].read()
    assert r["Checksum"] == b64sha(data)
    return data


def raw_request(server: str, path: str, account: str) -> urllib.request.Request:
    """A bare GET as the SDK would send it (moto routes on the SigV4 credential scope)."""
    auth = ("AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/ebs/aws4_request, "
            "SignedHeaders=host, Signature=0")
    return urllib.request.Request(f"{server}{path}", headers={
        "x-moto-account-id": account, "Authorization": auth})


def error_of(exc: ClientError) -> tuple:
    return exc.response["Error"]["Code"], exc.response["ResponseMetadata"]["HTTPStatusCode"]


# --------------------------------------------------------------------------- launcher interface

def test_port_line_port_file_and_sigterm(tmp_path):
    pf = tmp_path / "port"
    proc, port, elapsed = start_launcher("--port-file", str(pf))
    try:
        assert pf.read_text() == f"{port}\n"
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        assert elapsed < 10
    finally:
        rc = stop(proc)
    assert rc == 0
    assert proc.stdout.read() == b""  # exactly one line on stdout
    assert not pf.exists()


def test_exit_on_stdin_close():
    proc, port, _ = start_launcher("--exit-on-stdin-close", stdin=subprocess.PIPE)
    proc.stdin.close()
    try:
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.1", "example.com", "::"])
def test_refuses_non_loopback_host(host):
    r = subprocess.run([sys.executable, LAUNCHER, "--host", host], capture_output=True,
                       timeout=20)
    assert r.returncode == 2
    assert b"AUTOSNAP_TESTBED_PORT" not in r.stdout


# --------------------------------------------------------------------------- C1 geometry

def test_block_size_integer_indexes_and_list_fields(ebs, server, account):
    start = ebs.start_snapshot(VolumeSize=2, Description="geo")
    assert start["BlockSize"] == BS and start["VolumeSize"] == 2 and start["Status"] == "pending"
    sid = start["SnapshotId"]
    for i in (0, 7, 3000):
        put(ebs, sid, i, block(b"g"))
    ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=3)
    r = ebs.list_snapshot_blocks(SnapshotId=sid)
    assert [b["BlockIndex"] for b in r["Blocks"]] == [0, 7, 3000]
    assert all(type(b["BlockIndex"]) is int for b in r["Blocks"])
    assert r["BlockSize"] == BS and r["VolumeSize"] == 2 and "ExpiryTime" in r
    # The wire format itself: JSON integers (the Rust SDK rejects strings).
    req = raw_request(server, f"/snapshots/{sid}/blocks", account)
    body = json.loads(urllib.request.urlopen(req, timeout=10).read())
    assert [b["BlockIndex"] for b in body["Blocks"]] == [0, 7, 3000]
    assert body["BlockSize"] == 524288 and isinstance(body["ExpiryTime"], (int, float))


def test_get_block_returns_data_and_checksum_headers(ebs):
    data = os.urandom(BS)
    sid = make_snapshot(ebs, {5: data})
    tok = all_blocks(ebs, sid)[5]
    r = ebs.get_snapshot_block(SnapshotId=sid, BlockIndex=5, BlockToken=tok)
    assert r["BlockData"].read() == data
    h = r["ResponseMetadata"]["HTTPHeaders"]
    assert h["x-amz-checksum"] == b64sha(data)
    assert h["x-amz-checksum-algorithm"] == "SHA256"
    assert h["x-amz-data-length"] == str(BS)


# --------------------------------------------------------------------------- C2 / C4 parent

def test_child_inherits_parent_and_zero_block_overwrites(ebs):
    a, b, c, d = block(b"a"), block(b"b"), block(b"c"), block(b"d")
    parent = make_snapshot(ebs, {0: a, 1: b, 2: c})
    child = make_snapshot(ebs, {1: d, 2: ZERO}, ParentSnapshotId=parent)
    info = ebs.start_snapshot(VolumeSize=1, ParentSnapshotId=parent)
    assert info["ParentSnapshotId"] == parent

    ctoks = all_blocks(ebs, child)
    assert sorted(ctoks) == [0, 1, 2]
    assert read(ebs, child, 0, ctoks[0]) == a  # inherited
    assert read(ebs, child, 1, ctoks[1]) == d
    assert read(ebs, child, 2, ctoks[2]) == ZERO  # zeros replace the parent's data
    ptoks = all_blocks(ebs, parent)
    assert read(ebs, parent, 2, ptoks[2]) == c  # parent untouched
    assert ptoks[0] != ctoks[0]  # tokens are per snapshot


def test_parent_with_encrypted_is_validation_error(ebs):
    parent = make_snapshot(ebs, {0: block(b"p")})
    with pytest.raises(ClientError) as e:
        ebs.start_snapshot(VolumeSize=1, ParentSnapshotId=parent, Encrypted=True)
    assert error_of(e.value) == ("ValidationException", 400)
    with pytest.raises(ClientError) as e:
        ebs.start_snapshot(VolumeSize=1, ParentSnapshotId="snap-0000000000000000f")
    assert error_of(e.value) == ("ResourceNotFoundException", 404)


def test_encryption_echoed_and_inherited(ebs, ec2):
    key = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
    r = ebs.start_snapshot(VolumeSize=1, Encrypted=True, KmsKeyArn=key)
    assert r["KmsKeyArn"] == key
    sid = r["SnapshotId"]
    put(ebs, sid, 0, block(b"e"))
    ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=1)
    child = ebs.start_snapshot(VolumeSize=1, ParentSnapshotId=sid)
    assert child["KmsKeyArn"] == key
    default = ebs.start_snapshot(VolumeSize=1, Encrypted=True)
    assert default["KmsKeyArn"].startswith("arn:aws:kms:us-east-1:")
    s = ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]
    assert s["Encrypted"] is True and s["KmsKeyId"] == key
    plain = ebs.start_snapshot(VolumeSize=1)
    assert "KmsKeyArn" not in plain


def test_client_token_idempotency(ebs):
    first = ebs.start_snapshot(VolumeSize=1, ClientToken="tok-1", Description="x")
    again = ebs.start_snapshot(VolumeSize=1, ClientToken="tok-1", Description="x")
    assert first["SnapshotId"] == again["SnapshotId"]
    other = ebs.start_snapshot(VolumeSize=1, ClientToken="tok-2", Description="x")
    assert other["SnapshotId"] != first["SnapshotId"]
    with pytest.raises(ClientError) as e:
        ebs.start_snapshot(VolumeSize=2, ClientToken="tok-1", Description="x")
    assert error_of(e.value) == ("ConflictException", 409)


def test_tags_and_description(ebs, ec2):
    r = ebs.start_snapshot(VolumeSize=1, Description="d1",
                           Tags=[{"Key": "app", "Value": "autosnap"}])
    assert r["Tags"] == [{"Key": "app", "Value": "autosnap"}] and r["Description"] == "d1"
    s = ec2.describe_snapshots(Filters=[{"Name": "tag:app", "Values": ["autosnap"]}])
    assert [x["SnapshotId"] for x in s["Snapshots"]] == [r["SnapshotId"]]


# --------------------------------------------------------------------------- C3 put validation

def test_put_block_validation(ebs, ebs_raw):
    sid = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    data = block(b"v")
    cases = [
        dict(BlockIndex=0, BlockData=data, DataLength=BS, Checksum=b64sha(b"other"),
             ChecksumAlgorithm="SHA256"),  # wrong checksum
        dict(BlockIndex=0, BlockData=data[:4096], DataLength=4096, Checksum=b64sha(data[:4096]),
             ChecksumAlgorithm="SHA256"),  # short block
        dict(BlockIndex=0, BlockData=data[:4096], DataLength=BS, Checksum=b64sha(data[:4096]),
             ChecksumAlgorithm="SHA256"),  # DataLength does not match the body
        dict(BlockIndex=2048, BlockData=data, DataLength=BS, Checksum=b64sha(data),
             ChecksumAlgorithm="SHA256"),  # past the end of a 1 GiB volume
        dict(BlockIndex=-1, BlockData=data, DataLength=BS, Checksum=b64sha(data),
             ChecksumAlgorithm="SHA256"),
        dict(BlockIndex=0, BlockData=data, DataLength=BS,
             Checksum=base64.b64encode(hashlib.sha1(data).digest()).decode(),
             ChecksumAlgorithm="SHA1"),
    ]
    for args in cases:
        with pytest.raises(ClientError) as e:
            ebs_raw.put_snapshot_block(SnapshotId=sid, **args)
        assert error_of(e.value) == ("ValidationException", 400), args["BlockIndex"]
    r = put(ebs, sid, 2047, data)
    assert r["Checksum"] == b64sha(data) and r["ChecksumAlgorithm"] == "SHA256"


# --------------------------------------------------------------------------- C5 complete

def test_complete_validates_count_and_linear_checksum(ebs, ec2):
    blocks = {3: block(b"x"), 1: block(b"y"), 9: ZERO}
    sums = {i: b64sha(d) for i, d in blocks.items()}

    def started():
        sid = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
        for i, d in blocks.items():
            put(ebs, sid, i, d)
        return sid

    def state(sid):
        return ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]["State"]

    sid = started()
    assert state(sid) == "pending"
    assert ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=2)["Status"] == "error"
    assert state(sid) == "error"

    # The LINEAR checksum is over the decoded 32-byte digests; concatenating the base64
    # strings instead is wrong.
    sid = started()
    as_strings = base64.b64encode(hashlib.sha256(
        "".join(sums[i] for i in sorted(sums)).encode()).digest()).decode()
    r = ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=3, Checksum=as_strings,
                              ChecksumAlgorithm="SHA256", ChecksumAggregationMethod="LINEAR")
    assert r["Status"] == "error"

    sid = started()
    r = ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=3, Checksum=linear(sums),
                              ChecksumAlgorithm="SHA256", ChecksumAggregationMethod="LINEAR")
    assert r["Status"] == "completed" and state(sid) == "completed"
    with pytest.raises(ClientError) as e:  # sealed
        put(ebs, sid, 4, block(b"z"))
    assert error_of(e.value) == ("ValidationException", 400)


def test_reads_need_a_completed_snapshot(ebs):
    sid = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    put(ebs, sid, 0, block(b"q"))
    with pytest.raises(ClientError) as e:
        ebs.list_snapshot_blocks(SnapshotId=sid)
    assert error_of(e.value) == ("ValidationException", 400)


# --------------------------------------------------------------------------- C6 changed blocks

def test_changed_blocks(ebs):
    a, b, c, d, e_ = (block(x) for x in (b"a", b"b", b"c", b"d", b"e"))
    parent = make_snapshot(ebs, {0: a, 1: b, 2: c})
    # 0 rewritten with the same data (unchanged), 1 changed, 3 new
    child = make_snapshot(ebs, {0: a, 1: d, 3: e_}, ParentSnapshotId=parent)

    r = ebs.list_changed_blocks(FirstSnapshotId=parent, SecondSnapshotId=child)
    got = {x["BlockIndex"]: x for x in r["ChangedBlocks"]}
    assert sorted(got) == [1, 3]
    assert all(type(i) is int for i in got)
    assert "FirstBlockToken" in got[1] and "SecondBlockToken" in got[1]
    assert "FirstBlockToken" not in got[3] and "SecondBlockToken" in got[3]
    assert r["BlockSize"] == BS and r["VolumeSize"] == 1 and "ExpiryTime" in r
    assert read(ebs, child, 1, got[1]["SecondBlockToken"]) == d
    assert read(ebs, parent, 1, got[1]["FirstBlockToken"]) == b

    # Reversed: 3 exists only in the first snapshot -> only a FirstBlockToken.
    rev = {x["BlockIndex"]: x for x in
           ebs.list_changed_blocks(FirstSnapshotId=child, SecondSnapshotId=parent)["ChangedBlocks"]}
    assert sorted(rev) == [1, 3] and "SecondBlockToken" not in rev[3]

    only_second = ebs.list_changed_blocks(SecondSnapshotId=child)["ChangedBlocks"]
    assert [x["BlockIndex"] for x in only_second] == [0, 1, 2, 3]
    assert all("FirstBlockToken" not in x for x in only_second)

    unrelated = make_snapshot(ebs, {0: a})
    with pytest.raises(ClientError) as e:
        ebs.list_changed_blocks(FirstSnapshotId=unrelated, SecondSnapshotId=child)
    assert error_of(e.value) == ("ValidationException", 400)


# --------------------------------------------------------------------------- C7 paging

def test_paging_windows_tokens_and_starting_index(ebs, ebs_raw):
    idx = [0, 150, 350, 2000]
    sid = make_snapshot(ebs, {i: block(b"p") for i in idx})
    pages, token, seen = [], None, []
    while True:
        args = dict(SnapshotId=sid, MaxResults=100)
        if token:
            args["NextToken"] = token
        r = ebs.list_snapshot_blocks(**args)
        pages.append([b["BlockIndex"] for b in r["Blocks"]])
        assert len(r["Blocks"]) <= 100
        token = r.get("NextToken")
        if not token:
            break
    assert [i for p in pages for i in p] == idx
    assert [] in pages  # an empty page that still carries a NextToken
    assert len(pages) == 21

    r = ebs.list_snapshot_blocks(SnapshotId=sid, MaxResults=100, StartingBlockIndex=300)
    assert [b["BlockIndex"] for b in r["Blocks"]] == [350] and "NextToken" in r
    assert sorted(all_blocks(ebs, sid, StartingBlockIndex=151)) == [350, 2000]

    child = make_snapshot(ebs, {150: block(b"q"), 2001: block(b"q")}, ParentSnapshotId=sid)
    changed, token = [], None
    while True:
        args = dict(FirstSnapshotId=sid, SecondSnapshotId=child, MaxResults=100)
        if token:
            args["NextToken"] = token
        r = ebs.list_changed_blocks(**args)
        changed += [x["BlockIndex"] for x in r["ChangedBlocks"]]
        token = r.get("NextToken")
        if not token:
            break
    assert changed == [150, 2001]

    for bad in (dict(MaxResults=99), dict(MaxResults=10001), dict(NextToken="bm9wZQ==")):
        with pytest.raises(ClientError) as e:
            ebs_raw.list_snapshot_blocks(SnapshotId=sid, **bad)
        assert error_of(e.value) == ("ValidationException", 400), bad


# --------------------------------------------------------------------------- C8/C9 errors

def test_missing_things_are_404_json_and_tokens_checked(ebs, server, account):
    missing = "snap-0123456789abcdef0"
    calls = [
        lambda: ebs.list_snapshot_blocks(SnapshotId=missing),
        lambda: ebs.list_changed_blocks(SecondSnapshotId=missing),
        lambda: ebs.get_snapshot_block(SnapshotId=missing, BlockIndex=0, BlockToken="x"),
        lambda: put(ebs, missing, 0, block(b"m")),
        lambda: ebs.complete_snapshot(SnapshotId=missing, ChangedBlocksCount=0),
    ]
    for call in calls:
        with pytest.raises(ClientError) as e:
            call()
        assert error_of(e.value) == ("ResourceNotFoundException", 404)

    sid = make_snapshot(ebs, {0: block(b"t")})
    with pytest.raises(ClientError) as e:  # a block never written
        ebs.get_snapshot_block(SnapshotId=sid, BlockIndex=1, BlockToken="x")
    assert error_of(e.value) == ("ResourceNotFoundException", 404)
    with pytest.raises(ClientError) as e:  # wrong token
        ebs.get_snapshot_block(SnapshotId=sid, BlockIndex=0, BlockToken="bogus")
    assert error_of(e.value) == ("ValidationException", 400)

    req = raw_request(server, f"/snapshots/{missing}/blocks", account)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 404
    body = json.loads(e.value.read())
    assert body["Message"] and body.get("Reason") == "SNAPSHOT_NOT_FOUND"
    assert e.value.headers["x-amzn-ErrorType"].startswith("ResourceNotFoundException")


def test_accounts_are_isolated(server, ebs):
    sid = make_snapshot(ebs, {0: block(b"i")})
    other = client("ebs", server, "999999999999")
    with pytest.raises(ClientError) as e:
        other.list_snapshot_blocks(SnapshotId=sid)
    assert error_of(e.value) == ("ResourceNotFoundException", 404)


# --------------------------------------------------------------------------- C10/C11 EC2 link

def test_ebs_direct_snapshot_in_ec2(ebs, ec2):
    before = len(ec2.describe_volumes()["Volumes"])
    r = ebs.start_snapshot(VolumeSize=3, Description="direct")
    sid = r["SnapshotId"]
    s = ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]
    assert s["State"] == "pending" and s["VolumeId"] == "vol-ffffffff" and s["VolumeSize"] == 3
    assert len(ec2.describe_volumes()["Volumes"]) == before  # no phantom volume
    put(ebs, sid, 0, block(b"c"))
    ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=1)
    s = ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]
    assert s["State"] == "completed" and s["Description"] == "direct"
    ec2.delete_snapshot(SnapshotId=sid)
    with pytest.raises(ClientError) as e:
        ebs.list_snapshot_blocks(SnapshotId=sid)
    assert error_of(e.value) == ("ResourceNotFoundException", 404)


def test_ec2_snapshots_readable_through_ebs_direct(ebs, ec2):
    vol = ec2.create_volume(Size=4, AvailabilityZone="us-east-1a")["VolumeId"]
    snap = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    r = ebs.list_snapshot_blocks(SnapshotId=snap)
    assert r["Blocks"] == [] and r["VolumeSize"] == 4 and r["BlockSize"] == BS
    snap2 = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    assert ebs.list_changed_blocks(FirstSnapshotId=snap, SecondSnapshotId=snap2)[
        "ChangedBlocks"] == []

    # A volume made from an EBS-direct snapshot holds its data; so do its snapshots and copies.
    data = block(b"r")
    src = make_snapshot(ebs, {4: data})
    vol2 = ec2.create_volume(SnapshotId=src, AvailabilityZone="us-east-1a")["VolumeId"]
    snap3 = ec2.create_snapshot(VolumeId=vol2)["SnapshotId"]
    toks = all_blocks(ebs, snap3)
    assert list(toks) == [4] and read(ebs, snap3, 4, toks[4]) == data
    assert ebs.list_changed_blocks(FirstSnapshotId=src, SecondSnapshotId=snap3)[
        "ChangedBlocks"] == []
    copy = ec2.copy_snapshot(SourceSnapshotId=src, SourceRegion="us-east-1")["SnapshotId"]
    toks = all_blocks(ebs, copy)
    assert read(ebs, copy, 4, toks[4]) == data


def test_ec2_basics(ec2):
    v = ec2.create_volume(Size=8, AvailabilityZone="us-east-1a", VolumeType="gp3",
                          TagSpecifications=[{"ResourceType": "volume",
                                              "Tags": [{"Key": "backup", "Value": "daily"}]}])
    vols = ec2.describe_volumes(Filters=[{"Name": "tag:backup", "Values": ["daily"]}])["Volumes"]
    assert [x["VolumeId"] for x in vols] == [v["VolumeId"]]
    s = ec2.create_snapshot(VolumeId=v["VolumeId"], Description="nightly",
                            TagSpecifications=[{"ResourceType": "snapshot",
                                                "Tags": [{"Key": "autosnap", "Value": "1"}]}])
    assert s["State"] == "completed" and s["VolumeSize"] == 8
    owner = ec2.describe_snapshots(SnapshotIds=[s["SnapshotId"]])["Snapshots"][0]["OwnerId"]
    got = ec2.describe_snapshots(Filters=[{"Name": "owner-id", "Values": [owner]},
                                          {"Name": "tag:autosnap", "Values": ["1"]}])
    assert [x["SnapshotId"] for x in got["Snapshots"]] == [s["SnapshotId"]]
    assert ec2.describe_images(Owners=["amazon"])["Images"] == []  # default AMIs not loaded


def test_hold_writes_tag_holds_each_block_write(ebs):
    sid = ebs.start_snapshot(VolumeSize=1, Tags=[
        {"Key": "autosnap-testbed:hold-writes", "Value": "0.5"}])["SnapshotId"]
    data = block(b"h")
    began = time.monotonic()
    ebs.put_snapshot_block(SnapshotId=sid, BlockIndex=0, BlockData=data, DataLength=BS,
                           Checksum=b64sha(data), ChecksumAlgorithm="SHA256")
    assert time.monotonic() - began >= 0.5

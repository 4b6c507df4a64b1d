#!/usr/bin/env python3
"""A scripted EC2 rate limit in front of the test bed: an HTTP proxy on loopback that keeps a
token bucket per EC2 action with the bucket size and refill rate AWS documents, answers
`RequestLimitExceeded` (HTTP 503, EC2's XML error body) without forwarding when a bucket is
empty, and counts requests and throttles per action.

    .testbed/venv/bin/python testbed/throttle_proxy.py --upstream http://127.0.0.1:<testbed port>
        [--port N] [--port-file PATH] [--stats-file PATH] [--budget Action=CAPACITY/REFILL ...]
        [--refill tick|continuous] [--exit-on-stdin-close]

Once listening it prints exactly one line to stdout, then flushes:

    THROTTLE_PROXY_PORT=<port>

`GET /_stats` answers JSON: per action the requests received, forwarded and throttled, and the
budgets in force (so a benchmark computes its floor from the numbers the proxy enforces).
`POST /_stats/reset` zeroes the counters (buckets keep their state). With --stats-file the same
JSON is written there at exit. Only EC2 requests (SigV4 scope `ec2`, or a form body with an
`Action` when unsigned) are limited; everything else (EBS direct, S3, STS, KMS) is forwarded and
counted under its service. Budgets: "Request throttling for the Amazon EC2 API",
https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html (see docs/rate-limits.md).
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import math
import os
import re
import signal
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT_LINE_PREFIX = "THROTTLE_PROXY_PORT="

# (bucket maximum capacity, refill per second), per account and region, from the EC2 API
# reference's tables. Actions not named fall into their category below.
NON_MUTATING = (100, 20.0)
UNFILTERED = (50, 10.0)
MUTATING = (50, 5.0)
BUDGETS: dict[str, tuple[int, float]] = {
    # Uncategorized actions with their own buckets (the ones autosnap can call).
    "CopyImage": (100, 1.0),
    "CreateRestoreImageTask": (50, 0.1),
    "CreateSnapshot": (100, 5.0),
    "CreateSnapshots": (100, 5.0),
    "CreateStoreImageTask": (50, 0.1),
    "CreateTags": (100, 10.0),
    "CreateVolume": (100, 5.0),
    "DeleteSnapshot": (100, 5.0),
    "DeleteTags": (100, 10.0),
    "DeleteVolume": (100, 5.0),
    "DeregisterImage": (100, 5.0),
    "DescribeStoreImageTasks": (50, 0.5),
    "ModifyImageAttribute": (100, 5.0),
    "ModifySnapshotAttribute": (100, 5.0),
    "RunInstances": (5, 2.0),
    "StartInstances": (5, 2.0),
    "TerminateInstances": (100, 5.0),
}
# Describe calls that use the smaller bucket when sent with neither a filter nor pagination.
UNFILTERED_ACTIONS = {
    "DescribeInstances", "DescribeInstanceStatus", "DescribeNetworkInterfaces",
    "DescribeSecurityGroups", "DescribeSnapshots", "DescribeSpotInstanceRequests",
    "DescribeVolumes",
}
NON_MUTATING_PREFIXES = ("Describe", "List", "Search", "Get")

SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/([^/]+)/([^/]+)/aws4_request")


def budget_for(action: str, params: dict[str, list[str]],
               overrides: dict[str, tuple[int, float]]) -> tuple[str, tuple[int, float]]:
    """The bucket a request draws from: its name (the action, or `<action>:unfiltered`) and
    (capacity, refill per second)."""
    if action in UNFILTERED_ACTIONS:
        filtered = any(k.startswith("Filter.") for k in params)
        paged = "MaxResults" in params or "NextToken" in params
        if not (filtered or paged):
            name = f"{action}:unfiltered"
            return name, overrides.get(name, UNFILTERED)
    if action in overrides:
        return action, overrides[action]
    if action in BUDGETS:
        return action, BUDGETS[action]
    if action.startswith(NON_MUTATING_PREFIXES):
        return action, NON_MUTATING
    return action, MUTATING


class TokenBucket:
    """EC2's bucket: starts full; `refill` tokens are added once per whole second since the
    bucket was made ("tick", as the documentation describes it) or continuously; never more
    than `capacity`. A request takes one token or is refused."""

    def __init__(self, capacity: int, refill: float, now: float, continuous: bool = False):
        self.capacity = float(capacity)
        self.refill = refill
        self.tokens = float(capacity)
        self.last = now
        self.continuous = continuous

    def _refill(self, now: float) -> None:
        if self.continuous:
            self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.refill)
            self.last = now
            return
        ticks = math.floor(now - self.last)
        if ticks > 0:
            self.tokens = min(self.capacity, self.tokens + ticks * self.refill)
            self.last += ticks

    def take(self, now: float) -> bool:
        self._refill(now)
        # A hair of tolerance so that 0.1 * 10 ticks counts as one whole token.
        if self.tokens >= 1.0 - 1e-9:
            self.tokens -= 1.0
            return True
        return False


class Limiter:
    """Buckets per (account, region, bucket name) and counters per action."""

    def __init__(self, overrides: dict[str, tuple[int, float]], continuous: bool = False,
                 clock=time.monotonic):
        self.overrides = overrides
        self.continuous = continuous
        self.clock = clock
        self.lock = threading.Lock()
        self.buckets: dict[tuple[str, str, str], TokenBucket] = {}
        self.budgets: dict[str, tuple[int, float]] = {}
        self.counts: dict[str, dict[str, int]] = {}

    def admit(self, account: str, region: str, action: str,
              params: dict[str, list[str]]) -> bool:
        name, (capacity, refill) = budget_for(action, params, self.overrides)
        with self.lock:
            now = self.clock()
            key = (account, region, name)
            bucket = self.buckets.get(key)
            if bucket is None:
                bucket = self.buckets[key] = TokenBucket(capacity, refill, now, self.continuous)
            self.budgets[name] = (capacity, refill)
            ok = bucket.take(now)
            c = self.counts.setdefault(name, {"requests": 0, "forwarded": 0, "throttled": 0})
            c["requests"] += 1
            c["forwarded" if ok else "throttled"] += 1
            return ok

    def count_other(self, service: str) -> None:
        with self.lock:
            c = self.counts.setdefault(f"{service}:*",
                                       {"requests": 0, "forwarded": 0, "throttled": 0})
            c["requests"] += 1
            c["forwarded"] += 1

    def stats(self) -> dict:
        with self.lock:
            ec2 = {k: v for k, v in self.counts.items() if not k.endswith(":*")}
            return {
                "actions": {k: dict(v) for k, v in sorted(self.counts.items())},
                "budgets": {k: {"capacity": c, "refill_per_sec": r}
                            for k, (c, r) in sorted(self.budgets.items())},
                "refill": "continuous" if self.continuous else "tick",
                "ec2_requests": sum(v["requests"] for v in ec2.values()),
                "ec2_throttled": sum(v["throttled"] for v in ec2.values()),
            }

    def reset(self) -> None:
        with self.lock:
            self.counts.clear()


def throttle_body(action: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        "<Response><Errors><Error><Code>RequestLimitExceeded</Code>"
        f"<Message>Request limit exceeded for {action}.</Message></Error></Errors>"
        f"<RequestID>{uuid.uuid4()}</RequestID></Response>"
    ).encode()


HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-connection", "content-length"}


def make_handler(upstream: tuple[str, int], limiter: Limiter):
    local = threading.local()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # quiet: the counters are the record
            pass

        def _body(self) -> bytes:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                out = bytearray()
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return bytes(out)
                    out += self.rfile.read(size)
                    self.rfile.readline()
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def _send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
            self.send_response(status)
            for k, v in headers:
                if k.lower() not in HOP_BY_HOP:
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, obj) -> None:
            self._send(200, [("Content-Type", "application/json")],
                       json.dumps(obj, indent=1).encode())

        def _forward(self, body: bytes) -> None:
            for attempt in (1, 2):
                conn = getattr(local, "conn", None)
                if conn is None:
                    conn = local.conn = http.client.HTTPConnection(*upstream, timeout=300)
                try:
                    headers = {k: v for k, v in self.headers.items()
                               if k.lower() not in HOP_BY_HOP}
                    headers["Content-Length"] = str(len(body))
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    self._send(resp.status, resp.getheaders(), data)
                    return
                except (http.client.HTTPException, ConnectionError):
                    # A kept-alive upstream connection that was closed: reconnect once.
                    conn.close()
                    local.conn = None
                    if attempt == 2:
                        raise

        def _handle(self) -> None:
            body = self._body()
            path = urllib.parse.urlsplit(self.path).path
            if path == "/_stats" and self.command == "GET":
                return self._json(limiter.stats())
            if path == "/_stats/reset" and self.command == "POST":
                limiter.reset()
                return self._json({"reset": True})
            auth = self.headers.get("Authorization", "")
            m = SCOPE.search(auth)
            region, service = (m.group(1), m.group(2)) if m else ("us-east-1", "")
            action = None
            params: dict[str, list[str]] = {}
            if service in ("ec2", ""):
                query = urllib.parse.urlsplit(self.path).query
                form = body.decode("utf-8", "replace") if self.command == "POST" else ""
                if "application/x-www-form-urlencoded" not in self.headers.get("Content-Type", ""):
                    form = ""
                params = urllib.parse.parse_qs(form or query, keep_blank_values=True)
                if "Action" in params and (service == "ec2" or "Version" in params):
                    action = params["Action"][0]
                    service = "ec2"
            if service == "ec2" and action:
                account = self.headers.get("x-moto-account-id", "default")
                if not limiter.admit(account, region, action, params):
                    return self._send(503, [("Content-Type", "text/xml")], throttle_body(action))
            else:
                limiter.count_other(service or "unsigned")
            self._forward(body)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _handle

    return Handler


def parse_budget(text: str) -> tuple[str, tuple[int, float]]:
    m = re.fullmatch(r"([A-Za-z]+(?::unfiltered)?)=(\d+)/(\d+(?:\.\d+)?)", text)
    if not m:
        raise argparse.ArgumentTypeError(
            f"--budget {text!r}: expected Action=CAPACITY/REFILL, e.g. CreateSnapshot=100/5")
    return m.group(1), (int(m.group(2)), float(m.group(3)))


def parse_args(argv):
    p = argparse.ArgumentParser(prog="throttle_proxy.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--upstream", required=True, help="the test bed, http://127.0.0.1:<port>")
    p.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    p.add_argument("--port", type=int, default=0, help="TCP port (default 0: pick a free one)")
    p.add_argument("--port-file", metavar="PATH", help="also write the port to PATH once listening")
    p.add_argument("--stats-file", metavar="PATH", help="write the /_stats JSON to PATH at exit")
    p.add_argument("--budget", type=parse_budget, action="append", default=[],
                   metavar="Action=CAPACITY/REFILL", help="override one action's bucket")
    p.add_argument("--refill", choices=("tick", "continuous"), default="tick",
                   help="tick (default): refill tokens are added once a second, as AWS documents; "
                        "continuous: a fraction at a time")
    p.add_argument("--exit-on-stdin-close", action="store_true",
                   help="exit when stdin reaches end of file")
    args = p.parse_args(argv)
    for what, url in (("--host", f"http://{args.host}"), ("--upstream", args.upstream)):
        host = urllib.parse.urlsplit(url).hostname or ""
        host = "127.0.0.1" if host == "localhost" else host
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            p.error(f"{what} {host!r} refused: the proxy only binds and forwards to loopback")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    up = urllib.parse.urlsplit(args.upstream)
    limiter = Limiter(dict(args.budget), continuous=args.refill == "continuous")
    server = ThreadingHTTPServer((args.host, args.port), make_handler((up.hostname, up.port or 80),
                                                                      limiter))
    server.daemon_threads = True
    port = server.server_address[1]
    stop = threading.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, lambda *_: stop.set())
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                     daemon=True).start()
    if args.port_file:
        d = os.path.dirname(os.path.abspath(args.port_file))
        fd, tmp = tempfile.mkstemp(dir=d)
        with os.fdopen(fd, "w") as f:
            f.write(f"{port}\n")
        os.replace(tmp, args.port_file)
    sys.stdout.write(f"{PORT_LINE_PREFIX}{port}\n")
    sys.stdout.flush()
    if args.exit_on_stdin_close:
        def watch():
            try:
                while os.read(0, 65536):
                    pass
            except OSError:
                pass
            stop.set()
        threading.Thread(target=watch, daemon=True).start()
    while not stop.is_set():
        stop.wait(1.0)
    server.shutdown()
    if args.stats_file:
        with open(args.stats_file, "w") as f:
            json.dump(limiter.stats(), f, indent=1)
    if args.port_file:
        try:
            os.unlink(args.port_file)
        except OSError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

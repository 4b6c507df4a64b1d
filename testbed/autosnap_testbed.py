#!/usr/bin/env python3
"""autosnap's local AWS test bed: a moto server (EC2, EBS direct, S3, KMS, STS) on loopback,
with moto's EBS direct emulation corrected to behave like AWS (see ebs_corrections.py).

Run it with the test bed venv's python (testbed/setup.sh prints where it is):

    .testbed/venv/bin/python testbed/autosnap_testbed.py [--port N] [--port-file PATH]
        [--exit-on-stdin-close] [--default-amis] [--no-ebs-corrections] [--verbose]

Once the server is listening it prints exactly one line to stdout, then flushes:

    AUTOSNAP_TESTBED_PORT=<port>

Nothing else is ever written to stdout (moto's own output goes to stderr). It serves until
SIGTERM/SIGINT (or, with --exit-on-stdin-close, until its stdin reaches end of file) and exits 0.
It only ever binds a loopback address: nothing here can reach or pretend to be real AWS.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import sys
import tempfile
import threading
import time

T0 = time.monotonic()

PORT_LINE_PREFIX = "AUTOSNAP_TESTBED_PORT="


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="autosnap_testbed.py",
        description="Local moto server for autosnap tests, with EBS direct corrected to act like AWS.",
    )
    p.add_argument("--host", default="127.0.0.1",
                   help="loopback address to bind (default 127.0.0.1; any non-loopback address is refused)")
    p.add_argument("--port", type=int, default=0,
                   help="TCP port (default 0: pick a free port; the port is printed either way)")
    p.add_argument("--port-file", metavar="PATH",
                   help="also write the port (digits and a newline) to PATH, atomically, once listening")
    p.add_argument("--exit-on-stdin-close", action="store_true",
                   help="exit when stdin reaches end of file (so a crashed harness leaves no orphan)")
    p.add_argument("--default-amis", action="store_true",
                   help="load moto's ~1,200 built-in AMIs (off by default: MOTO_EC2_LOAD_DEFAULT_AMIS=false)")
    p.add_argument("--no-ebs-corrections", action="store_true",
                   help="serve moto's EBS direct emulation unmodified (to compare against raw moto)")
    p.add_argument("--verbose", action="store_true",
                   help="log every request (to stderr); default logs only warnings and errors")
    args = p.parse_args(argv)

    host = "127.0.0.1" if args.host == "localhost" else args.host
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        p.error(f"--host must be a loopback IP address, got {args.host!r}")
    if not ip.is_loopback or ip.version != 4:
        p.error(f"--host {args.host!r} refused: the test bed only binds IPv4 loopback (127.0.0.0/8)")
    args.host = host
    if not 0 <= args.port <= 65535:
        p.error("--port must be 0..65535")
    return args


def write_port_file(path: str, port: int) -> None:
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".autosnap-testbed-port.", dir=d)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(f"{port}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    # Keep the real stdout for the port line only; everything else written to fd 1 (moto,
    # libraries, stray prints) goes to stderr so the harness reads one clean line.
    port_out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    # moto reads these lazily from the environment: set them before importing it.
    if not args.default_amis:
        os.environ["MOTO_EC2_LOAD_DEFAULT_AMIS"] = "false"
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format="autosnap-testbed %(levelname)s %(name)s: %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.INFO if args.verbose else logging.WARNING)

    stop = threading.Event()

    def on_signal(signum, _frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, on_signal)

    from werkzeug.serving import make_server
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )

    if not args.no_ebs_corrections:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import ebs_corrections

        ebs_corrections.apply()
        if args.verbose:
            for name, what in ebs_corrections.CORRECTIONS.items():
                print(f"autosnap-testbed: EBS correction {name}: {what}", file=sys.stderr)

    # EC2 AMI corrections (RegisterImage mappings, the snapshot filter, in-use
    # snapshots) are always on: autosnap's safety checks depend on them.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import ec2_corrections

    ec2_corrections.apply()
    if args.verbose:
        for name, what in ec2_corrections.CORRECTIONS.items():
            print(f"autosnap-testbed: EC2 correction {name}: {what}", file=sys.stderr)

    # Restore tests: a snapshot tag holds the volumes made from it in a state (restore_volume.py).
    import restore_volume

    restore_volume.apply()
    if args.verbose:
        for name, what in restore_volume.CORRECTIONS.items():
            print(f"autosnap-testbed: restore-test control {name}: {what}", file=sys.stderr)

    # AMI corrections (CreateImage/CopyImage as AWS does them, S3 image tasks): ami_tasks.py.
    import ami_tasks

    ami_tasks.apply()
    if args.verbose:
        for name, what in ami_tasks.CORRECTIONS.items():
            print(f"autosnap-testbed: AMI correction {name}: {what}", file=sys.stderr)

    # Recycle Bin (the rbin service, deletes a rule retains, the bin's EC2 calls). Before
    # snapshot_lock: a locked snapshot is refused before a rule could send it to the bin.
    import recycle_bin

    recycle_bin.apply()
    if args.verbose:
        for name, what in recycle_bin.CORRECTIONS.items():
            print(f"autosnap-testbed: Recycle Bin correction {name}: {what}", file=sys.stderr)

    # Snapshot lock (LockSnapshot, UnlockSnapshot, DescribeLockedSnapshots, locked deletes).
    import snapshot_lock

    snapshot_lock.apply()
    if args.verbose:
        for name, what in snapshot_lock.CORRECTIONS.items():
            print(f"autosnap-testbed: lock correction {name}: {what}", file=sys.stderr)

    # Archive tier (ModifySnapshotTier, RestoreSnapshotTier, tier status, archived volumes).
    import snapshot_tier

    snapshot_tier.apply()
    if args.verbose:
        for name, what in snapshot_tier.CORRECTIONS.items():
            print(f"autosnap-testbed: tier correction {name}: {what}", file=sys.stderr)

    # AssumeRole only of a role that exists and trusts the caller (accounts tests): assume_role.py.
    import assume_role

    assume_role.apply()
    if args.verbose:
        for name, what in assume_role.CORRECTIONS.items():
            print(f"autosnap-testbed: STS correction {name}: {what}", file=sys.stderr)

    # CopySnapshot of another account's snapshot only when shared (backup accounts):
    # cross_account_copy.py.
    import cross_account_copy

    cross_account_copy.apply()
    if args.verbose:
        for name, what in cross_account_copy.CORRECTIONS.items():
            print(f"autosnap-testbed: EC2 correction {name}: {what}", file=sys.stderr)

    app = DomainDispatcherApplication(create_backend_app)
    # moto has no rbin service: requests signed for `rbin` are answered by recycle_bin.py.
    app = recycle_bin.wsgi(app)
    # Test observation: requests counted per service and action (call_counter.py).
    import call_counter

    app = call_counter.wsgi(app)
    # make_server binds and listens at once, so port 0 gives the real port right here.
    server = make_server(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)
    port = server.server_address[1]
    os.environ["MOTO_PORT"] = str(port)  # moto builds some URLs (e.g. SQS, Lambda) from it

    serve = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                             name="moto-server", daemon=True)
    serve.start()

    if args.port_file:
        write_port_file(args.port_file, port)
    port_out.write(f"{PORT_LINE_PREFIX}{port}\n")
    port_out.flush()
    if args.verbose:
        print(f"autosnap-testbed: listening on http://{args.host}:{port} "
              f"(ready in {time.monotonic() - T0:.2f}s)", file=sys.stderr, flush=True)

    if args.exit_on_stdin_close:
        def watch_stdin():
            try:
                while os.read(0, 65536):
                    pass
            except OSError:
                pass
            stop.set()

        threading.Thread(target=watch_stdin, name="stdin-watch", daemon=True).start()

    while not stop.is_set():
        stop.wait(1.0)

    server.shutdown()
    server.server_close()
    if args.port_file:
        try:
            os.unlink(args.port_file)
        except OSError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

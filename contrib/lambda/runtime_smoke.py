#!/usr/bin/env python3
"""Runs a built Lambda zip's `bootstrap` through one invocation on this machine: a scripted
Lambda Runtime API endpoint (2018-06-01: invocation/next, then the response or error the
bootstrap posts) on 127.0.0.1, and prints what the bootstrap posted. Nothing reaches AWS unless
the environment you pass points it there.

    AUTOSNAP_CONFIG="$(cat autosnap.toml)" AWS_ENDPOINT_URL=http://127.0.0.1:PORT \\
      contrib/lambda/runtime_smoke.py target/lambda/autosnap-x86_64.zip \\
      '{"command":"run","policies":["daily"]}'

The bootstrap gets this process's environment plus the variables Lambda sets for a function
(AWS_LAMBDA_RUNTIME_API, AWS_LAMBDA_FUNCTION_NAME, ...), and a deadline --deadline-s seconds
away (default 900, the template's Timeout). Exit 0 when it posted a response, 1 for an error
or nothing within --wait-s. Standard library only.
"""

import argparse
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import zipfile


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("zip", help="the zip build.sh made")
    ap.add_argument("event", help="the event, JSON")
    ap.add_argument("--deadline-s", type=float, default=900)
    ap.add_argument("--wait-s", type=float, default=960)
    args = ap.parse_args()
    event = json.dumps(json.loads(args.event)).encode()
    posted = {}
    done = threading.Event()

    class Runtime(http.server.BaseHTTPRequestHandler):
        def log_message(self, *_):
            pass

        def do_GET(self):
            if not self.path.endswith("/runtime/invocation/next") or "served" in posted:
                # One invocation only: the next poll waits until this script ends.
                done.wait()
                return
            posted["served"] = True
            deadline_ms = int((time.time() + args.deadline_s) * 1000)
            self.send_response(200)
            self.send_header("Lambda-Runtime-Aws-Request-Id", "smoke-1")
            self.send_header("Lambda-Runtime-Deadline-Ms", str(deadline_ms))
            self.send_header(
                "Lambda-Runtime-Invoked-Function-Arn",
                "arn:aws:lambda:us-east-1:123456789012:function:autosnap",
            )
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(event)))
            self.end_headers()
            self.wfile.write(event)

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            posted["post"] = (self.path, body.decode())
            self.send_response(202)
            self.end_headers()
            done.set()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Runtime)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory() as task:
        with zipfile.ZipFile(args.zip) as z:
            z.extract("bootstrap", task)
        bootstrap = os.path.join(task, "bootstrap")
        os.chmod(bootstrap, 0o755)
        env = dict(os.environ)
        env.update(
            AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{server.server_address[1]}",
            AWS_LAMBDA_FUNCTION_NAME="autosnap",
            AWS_LAMBDA_FUNCTION_MEMORY_SIZE="512",
            AWS_LAMBDA_FUNCTION_VERSION="$LATEST",
        )
        child = subprocess.Popen([bootstrap], cwd=task, env=env)
        done.wait(args.wait_s)
        child.terminate()
        child.wait()
    server.shutdown()
    if "post" not in posted:
        print("the bootstrap posted nothing", file=sys.stderr)
        sys.exit(1)
    path, body = posted["post"]
    print(path)
    print(body)
    sys.exit(0 if path.endswith("/response") else 1)


if __name__ == "__main__":
    main()

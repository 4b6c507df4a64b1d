"""The test bed (testbed/autosnap_testbed.py) with accounts seeded in-process: for each of N
accounts, the role `autosnap` trusting the base account and V tagged volumes in us-east-1, made
through moto's Python API in the server's own process (50,000 volumes through the HTTP API take
far longer than the plan being measured). Writes the autosnap config and, once every account is
seeded, a file with the seeding's wall time in seconds.

    seeded_testbed.py ACCOUNTS VOLUMES CONFIG_OUT SEEDED_OUT [launcher options...]
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "testbed"))

import autosnap_testbed  # noqa: E402

TRUST = json.dumps({"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
    "Action": "sts:AssumeRole"}]})


def seed(n_accounts: int, n_volumes: int, config: str, seeded: str, port_file: str) -> None:
    # The launcher imports moto after setting its environment: wait until it listens.
    while not os.path.exists(port_file):
        time.sleep(0.05)
    from moto.ec2.models import ec2_backends
    from moto.iam.models import iam_backends

    t0 = time.monotonic()
    text = ['[[policy]]\nname = "bench"\nresource = "volume"\n'
            'select = [{ tags = { Backup = "daily" } }]\n'
            'schedule = "0 3 * * *"\nretain = { last = 7 }\n']
    for i in range(n_accounts):
        account = f"{100000000000 + i + 1}"
        iam_backends[account]["aws"].create_role(
            role_name="autosnap", assume_role_policy_document=TRUST, path="/",
            permissions_boundary=None, description="", tags=[], max_session_duration=None,
        )
        ec2 = ec2_backends[account]["us-east-1"]
        for _ in range(n_volumes):
            vol = ec2.create_volume(size=8, zone_name="us-east-1a")
            ec2.create_tags([vol.id], {"Backup": "daily"})
        text.append(f'\n[[account]]\nid = "{account}"\n'
                    f'role_arn = "arn:aws:iam::{account}:role/autosnap"\n')
    with open(config, "w") as f:
        f.write("".join(text))
    with open(seeded + ".tmp", "w") as f:
        f.write(f"{time.monotonic() - t0:.1f}\n")
    os.replace(seeded + ".tmp", seeded)


def main() -> int:
    n_accounts, n_volumes, config, seeded = (int(sys.argv[1]), int(sys.argv[2]), sys.argv[3],
                                             sys.argv[4])
    launcher_args = sys.argv[5:]
    port_file = launcher_args[launcher_args.index("--port-file") + 1]
    threading.Thread(target=seed, args=(n_accounts, n_volumes, config, seeded, port_file),
                     daemon=True).start()
    return autosnap_testbed.main(launcher_args)


if __name__ == "__main__":
    sys.exit(main())

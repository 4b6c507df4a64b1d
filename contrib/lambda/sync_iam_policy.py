#!/usr/bin/env python3
"""Writes the statements `autosnap iam-policy --for backup --for prune` prints into the
templates (template.yaml's BackupPolicy, member-role.yaml's role), between the lines

    # BEGIN autosnap iam-policy --for backup --for prune ...
    # END autosnap iam-policy

so the roles the templates deploy are the least-privilege policy autosnap documents, not a copy
that drifts. crates/autosnap/tests/lambda_templates.rs fails when they differ.

    contrib/lambda/sync_iam_policy.py [--autosnap PATH]   # default: autosnap on PATH

Standard library only.
"""

import argparse
import json
import pathlib
import re
import shutil
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
TEMPLATES = [HERE / "template.yaml", HERE / "member-role.yaml"]
BEGIN = "# BEGIN autosnap iam-policy --for backup --for prune"
END = "# END autosnap iam-policy"
FEATURES = ["--for", "backup", "--for", "prune"]

PLAIN = re.compile(r"[A-Za-z][A-Za-z0-9:/_.*+=,@-]*")
YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "y", "n"}


def scalar(s):
    # Plain when YAML reads it back as this same string; JSON quoting (valid YAML) otherwise.
    if PLAIN.fullmatch(s) and s.lower() not in YAML_WORDS:
        return s
    return json.dumps(s)


def emit(value, indent):
    """Block-style YAML of a JSON value (dicts, lists, strings), one line each."""
    pad = " " * indent
    lines = []
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, str):
                lines.append(f"{pad}{scalar(k)}: {scalar(v)}")
            else:
                lines.append(f"{pad}{scalar(k)}:")
                lines.extend(emit(v, indent + 2))
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, str):
                lines.append(f"{pad}- {scalar(item)}")
            else:
                sub = emit(item, indent + 2)
                sub[0] = f"{pad}- {sub[0].lstrip()}"
                lines.extend(sub)
    else:
        raise SystemExit(f"unexpected value in the policy: {value!r}")
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--autosnap", default=shutil.which("autosnap"), help="the autosnap binary")
    args = ap.parse_args()
    if not args.autosnap:
        sys.exit("autosnap not found: build it (cargo build --bin autosnap) and pass --autosnap PATH")
    out = subprocess.run(
        [args.autosnap, "iam-policy", *FEATURES], check=True, capture_output=True, text=True
    ).stdout
    statements = json.loads(out)["Statement"]
    for path in TEMPLATES:
        lines = path.read_text().split("\n")
        begin = next(i for i, l in enumerate(lines) if l.strip().startswith(BEGIN))
        end = next(i for i, l in enumerate(lines) if i > begin and l.strip().startswith(END))
        indent = len(lines[begin]) - len(lines[begin].lstrip())
        block = [" " * indent + "Statement:"] + emit(statements, indent + 2)
        lines[begin + 1 : end] = block
        path.write_text("\n".join(lines))
        print(f"{path.name}: {len(statements)} statements")


if __name__ == "__main__":
    main()

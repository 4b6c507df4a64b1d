#!/usr/bin/env python3
"""Writes the statements `autosnap iam-policy` prints into the templates (template.yaml,
member-role.yaml), between lines such as

    # BEGIN autosnap iam-policy --for backup --for prune ...
    # END autosnap iam-policy

each block with the features its BEGIN line names, so the roles the templates deploy are the
least-privilege policy autosnap documents, not a copy that drifts.
crates/autosnap/tests/e2e/lambda_templates.rs fails when they differ.

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
BEGIN = re.compile(r"# BEGIN autosnap iam-policy((?: --for [a-z-]+)+)")
END = "# END autosnap iam-policy"

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
    for path in TEMPLATES:
        lines = path.read_text().split("\n")
        begins = [i for i, l in enumerate(lines) if BEGIN.match(l.strip())]
        # From the last block up, so earlier line numbers stay valid.
        for begin in reversed(begins):
            features = BEGIN.match(lines[begin].strip()).group(1).split()
            out = subprocess.run(
                [args.autosnap, "iam-policy", *features], check=True, capture_output=True, text=True
            ).stdout
            statements = json.loads(out)["Statement"]
            end = next(i for i, l in enumerate(lines) if i > begin and l.strip().startswith(END))
            indent = len(lines[begin]) - len(lines[begin].lstrip())
            lines[begin + 1 : end] = [" " * indent + "Statement:"] + emit(statements, indent + 2)
            print(f"{path.name}: iam-policy {' '.join(features)}: {len(statements)} statements")
        path.write_text("\n".join(lines))


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# Installs the autosnap local AWS test bed (moto server + pytest, and cfn-lint for the Lambda
# templates) into a project-local venv.
#
#   testbed/setup.sh            # idempotent; a fast no-op when already installed
#
# Env:
#   AUTOSNAP_TESTBED_VENV   venv directory (default: <repo>/.testbed/venv)
#   AUTOSNAP_TESTBED_PYTHON python used to create the venv (default: python3)
#
# Prints one line "AUTOSNAP_TESTBED_VENV=<dir>" (the venv in use) on success; everything else
# stays quiet unless something fails.
set -euo pipefail

# Pinned versions: change them here only (the stamp file makes a version change reinstall).
MOTO_VERSION="5.2.5"
PYTEST_VERSION="8.4.2"
# Lints the Lambda deployment templates (contrib/lambda/, crates/autosnap/tests/e2e/lambda_templates.rs).
CFN_LINT_VERSION="1.58.0"
STAMP_CONTENT="moto[server]==${MOTO_VERSION} pytest==${PYTEST_VERSION} cfn-lint==${CFN_LINT_VERSION} v1"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
venv="${AUTOSNAP_TESTBED_VENV:-$repo/.testbed/venv}"
py="${AUTOSNAP_TESTBED_PYTHON:-python3}"
stamp="$venv/.autosnap-testbed-stamp"

if [[ -f "$stamp" && -x "$venv/bin/python" ]] && [[ "$(cat "$stamp")" == "$STAMP_CONTENT" ]]; then
    echo "AUTOSNAP_TESTBED_VENV=$venv"
    exit 0
fi

log="$(mktemp "${TMPDIR:-/tmp}/autosnap-testbed-setup.XXXXXX")"
trap 'rm -f "$log"' EXIT
fail() { echo "testbed/setup.sh: $*" >&2; echo "--- log ---" >&2; cat "$log" >&2; exit 1; }

command -v "$py" >/dev/null 2>&1 || fail "$py not found (install python3)"

# A venv whose interpreter no longer runs (base python removed/upgraded) is rebuilt.
if [[ -e "$venv" ]] && ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
    rm -rf "$venv"
fi

if [[ ! -x "$venv/bin/python" ]]; then
    mkdir -p "$(dirname "$venv")"
    if ! "$py" -m venv "$venv" >>"$log" 2>&1; then
        # Debian splits venv/ensurepip into python3-venv; install it only as root.
        rm -rf "$venv"
        if [[ "$(id -u)" == "0" ]] && command -v apt-get >/dev/null 2>&1; then
            { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; } >>"$log" 2>&1 \
                || fail "apt-get install python3-venv failed"
            "$py" -m venv "$venv" >>"$log" 2>&1 || fail "python3 -m venv failed even after installing python3-venv"
        else
            fail "'$py -m venv' failed; install python3-venv (as root: apt-get install python3-venv)"
        fi
    fi
fi

"$venv/bin/python" -m pip install --disable-pip-version-check -q \
    "moto[server]==${MOTO_VERSION}" "pytest==${PYTEST_VERSION}" "cfn-lint==${CFN_LINT_VERSION}" >>"$log" 2>&1 \
    || fail "pip install moto[server]==${MOTO_VERSION} pytest==${PYTEST_VERSION} cfn-lint==${CFN_LINT_VERSION} failed"

"$venv/bin/python" -c 'import moto, werkzeug, boto3, pytest, cfnlint' >>"$log" 2>&1 || fail "installed packages do not import"

printf '%s' "$STAMP_CONTENT" > "$stamp.tmp" && mv "$stamp.tmp" "$stamp"
echo "AUTOSNAP_TESTBED_VENV=$venv"

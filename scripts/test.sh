#!/usr/bin/env bash
# Runs everything CI runs: installs the local test bed if missing, then
# formatting, lints and all tests (unit, end-to-end against the test bed, and
# the test bed's own checks).
#
#   scripts/test.sh
#
# Env: CARGO_TARGET_DIR (default: a cache outside the clone, so repeated runs
# do not rebuild the AWS SDK), AUTOSNAP_TESTBED_VENV (see testbed/setup.sh).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/autosnap/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n==> %s\n' "$*"; }

step "system packages for the filesystem-freeze tests"
# Real ext4 and xfs filesystems on loop devices need these tools. Install them
# when missing and we may (root with apt-get); the tests skip without them,
# except on CI, where they must run.
need=()
command -v losetup >/dev/null 2>&1 || need+=(mount)
command -v mkfs.ext4 >/dev/null 2>&1 || need+=(e2fsprogs)
command -v mkfs.xfs >/dev/null 2>&1 || need+=(xfsprogs)
command -v fsfreeze >/dev/null 2>&1 || need+=(util-linux)
if ((${#need[@]})); then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"; } >/dev/null
    else
        echo "missing ${need[*]}: the loop-device tests will skip"
    fi
fi
if [[ "${CI:-}" == "true" ]]; then
    export AUTOSNAP_REQUIRE_LOOP_TESTS=1
fi

step "test bed (moto, project-local venv)"
venv_line="$(testbed/setup.sh)"
export AUTOSNAP_TESTBED_VENV="${venv_line#AUTOSNAP_TESTBED_VENV=}"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "test bed checks (pytest)"
"$AUTOSNAP_TESTBED_VENV/bin/python" -m pytest -q testbed

step "cargo test (unit, SDK-boundary and end-to-end tests)"
log="$(mktemp "${TMPDIR:-/tmp}/autosnap-test.XXXXXX")"
trap 'rm -f "$log"' EXIT
cargo test --workspace --lib --bins --tests 2>&1 | tee "$log"

# One closing line over all test binaries.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "\ntests: %d passed, %d failed\n", p, f }' "$log"

#!/usr/bin/env bash
# Builds autosnap for AWS Lambda (provided.al2023): a zip holding one executable named
# `bootstrap`, which is how the binary knows to run as a Lambda function.
#
#   contrib/lambda/build.sh                 # arm64 (Graviton: cheaper per GB-second)
#   contrib/lambda/build.sh --arch x86_64
#   contrib/lambda/build.sh --arch both
#
# Writes <repo>/target/lambda/autosnap-<arch>.zip, and bootstrap.zip + bootstrap.arch (the
# first architecture built: what template.yaml deploys), and prints the deploy command. Works from a
# fresh clone with Rust (rustup) and Python 3: what is missing is installed outside the clone,
# into $AUTOSNAP_LAMBDA_TOOLS (default ~/.cache/autosnap/lambda-tools):
#   - cargo-lambda from PyPI (pinned below), which brings zig (PyPI `ziglang`) as the linker, so
#     no cross toolchain or Docker is needed;
#   - the Rust target for the architecture (`rustup target add`).
# Nothing here talks to AWS.
#
# Env: CARGO_TARGET_DIR (default ~/.cache/autosnap/target-lambda: a release build of the AWS SDK
# is large; keeping it outside the clone keeps it between builds), CARGO_BUILD_JOBS (lower it on
# a small machine: each rustc of the SDK can take several GB), AUTOSNAP_LAMBDA_TOOLS.
set -euo pipefail

# Pinned: change it here only (the stamp file makes a version change reinstall).
CARGO_LAMBDA_VERSION="1.9.2"
# provided.al2023 has glibc 2.34; linking against an older glibc keeps the binary runnable on
# it (and on provided.al2, glibc 2.26). zig links against exactly the version named here.
GLIBC_VERSION="2.26"

# The comment block at the top of this file is the help.
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit "${1:-0}"; }

arch="arm64"
while (($#)); do
    case "$1" in
        --arch) arch="${2:-}"; shift 2 || usage 2 ;;
        --arch=*) arch="${1#--arch=}"; shift ;;
        -h|--help) usage 0 ;;
        *) echo "build.sh: unknown argument '$1'" >&2; usage 2 ;;
    esac
done
case "$arch" in
    arm64|x86_64) archs=("$arch") ;;
    both) archs=(arm64 x86_64) ;;
    *) echo "build.sh: --arch must be arm64, x86_64 or both (got '$arch')" >&2; exit 2 ;;
esac

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
tools="${AUTOSNAP_LAMBDA_TOOLS:-$HOME/.cache/autosnap/lambda-tools}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/autosnap/target-lambda}"
out="$repo/target/lambda"

command -v cargo >/dev/null 2>&1 || { echo "build.sh: cargo not found: install Rust with rustup" >&2; exit 1; }
command -v python3 >/dev/null 2>&1 || { echo "build.sh: python3 not found: install Python 3" >&2; exit 1; }

# cargo-lambda (and zig) in a venv of their own.
stamp="$tools/.autosnap-lambda-stamp"
want="cargo-lambda==$CARGO_LAMBDA_VERSION"
if [[ ! -x "$tools/bin/cargo-lambda" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    echo "installing $want into $tools" >&2
    rm -rf "$tools"
    python3 -m venv "$tools" || { echo "build.sh: python3 -m venv failed: install python3-venv" >&2; exit 1; }
    "$tools/bin/python" -m pip install --disable-pip-version-check -q "$want"
    # cargo-lambda finds zig through the ziglang package it depends on; check it is there.
    "$tools/bin/python" -c 'import ziglang' 2>/dev/null \
        || "$tools/bin/python" -m pip install --disable-pip-version-check -q ziglang
    printf '%s' "$want" >"$stamp"
fi
export PATH="$tools/bin:$PATH"

mkdir -p "$out"
for a in "${archs[@]}"; do
    case "$a" in
        arm64) triple="aarch64-unknown-linux-gnu" ;;
        x86_64) triple="x86_64-unknown-linux-gnu" ;;
    esac
    if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx "$triple"; then
        rustup target add "$triple"
    fi
    echo "building autosnap for Lambda $a ($triple, glibc $GLIBC_VERSION) into $CARGO_TARGET_DIR" >&2
    # --disable-optimizations: cargo-lambda's release defaults include panic=abort, but autosnap
    # unwinds on a panic so its guards run (a frozen filesystem is thawed, locks released); the
    # workspace's release profile (the one the benchmarks measure) applies instead, stripped.
    (cd "$repo" && CARGO_PROFILE_RELEASE_STRIP=symbols cargo lambda build --release --disable-optimizations \
        --bin autosnap --target "$triple.$GLIBC_VERSION" \
        --output-format zip --lambda-dir "$CARGO_TARGET_DIR/lambda-$a")
    cp "$CARGO_TARGET_DIR/lambda-$a/autosnap/bootstrap.zip" "$out/autosnap-$a.zip"
    echo "$out/autosnap-$a.zip ($(wc -c <"$out/autosnap-$a.zip") bytes)"
done

# template.yaml deploys target/lambda/bootstrap.zip; its architecture is written beside it, so
# the deploy command cannot pair an arm64 zip with an x86_64 function.
cp "$out/autosnap-${archs[0]}.zip" "$out/bootstrap.zip"
printf '%s\n' "${archs[0]}" >"$out/bootstrap.arch"

cat >&2 <<EOF

target/lambda/bootstrap.zip is the ${archs[0]} build. Deploy it (docs/lambda.md) from $repo:
  sam deploy --guided --template-file contrib/lambda/template.yaml \\
    --parameter-overrides Architecture=${archs[0]} PolicyNames=... ConfigS3Uri=s3://...
EOF

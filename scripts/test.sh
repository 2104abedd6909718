#!/usr/bin/env bash
# Runs every test: installs what is missing, starts RabbitMQ and an S3
# server, builds the binaries, then `cargo test` for the whole workspace,
# then type-checks the `cuda` feature (scripts/build-cuda.sh --check).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/setup.sh"
cd "$root"

data="$(mktemp -d)/s3"
start_s3 "$data"
trap 'kill $S3S_PID 2>/dev/null || true; rm -rf "$(dirname "$data")"' EXIT

export FF_AMQP_URL="${FF_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
export FF_TEST_MODEL_DIR="$FF_MODEL_DIR"
export FF_BIN_DIR="$CARGO_TARGET_DIR/debug"

# Every rebuild of a test target leaves a new executable (hundreds of MB
# with debug info; one full set is ~19 GiB) beside the old ones, and the
# kept target dir once filled a 90 GB disk. Past 40 GiB of them, drop them
# all: cargo relinks what the run needs (under 2 minutes here, from the
# cached dependencies), and the disk stays bounded.
deps="$CARGO_TARGET_DIR/debug/deps"
if [ -d "$deps" ]; then
  kib=$(find "$deps" -maxdepth 1 -type f -perm -u+x -regextype posix-extended \
    -regex '.*/[a-z0-9_]+-[0-9a-f]{16}' -printf '%k\n' | awk '{ s += $1 } END { print s + 0 }')
  if [ "$kib" -gt $((40 * 1024 * 1024)) ]; then
    echo "test.sh: $((kib / 1024 / 1024)) GiB of old test executables in $deps; removing them"
    find "$deps" -maxdepth 1 -type f -perm -u+x -regextype posix-extended \
      -regex '.*/[a-z0-9_]+-[0-9a-f]{16}' -delete
  fi
fi

cargo build --workspace --bins
cargo test --workspace "$@"
# The `cuda` feature's code, which no test here runs (no GPU): type-checked.
"$root/scripts/build-cuda.sh" --check

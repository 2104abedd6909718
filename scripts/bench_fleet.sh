#!/usr/bin/env bash
# The fleet's ceiling (null workers) beside the broker's raw rate, for
# BENCHMARKS.md. The test build (dependencies optimised), local store and
# broker; everything shares this machine's cores.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/setup.sh"
cd "$root"
data="$(mktemp -d)/s3"
start_s3 "$data"
trap 'kill $S3S_PID 2>/dev/null || true; rm -rf "$(dirname "$data")"' EXIT
export FF_AMQP_URL="${FF_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
export FF_BIN_DIR="$CARGO_TARGET_DIR/debug"
cargo build --workspace --bins
cargo bench --profile dev --bench ceiling

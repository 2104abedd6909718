#!/usr/bin/env bash
# Bounded memory, measured (outside CI: about half an hour on 2 cores): peak RSS
# of producer, worker and collector for a 10-minute vs a 2-hour video, and
# for 10 vs 1,000 queued videos. Prints one line per process and fails if
# any grows. Figures go into RELIABILITY.md.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/setup.sh"
cd "$root"
data="$(mktemp -d)/s3"
start_s3 "$data"
trap 'kill $S3S_PID 2>/dev/null || true; rm -rf "$(dirname "$data")"' EXIT
export FF_AMQP_URL="${FF_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
export FF_TEST_MODEL_DIR="$FF_MODEL_DIR"
# The test build (dependencies and the worker optimised): memory, not
# speed, is measured, and it shares the tests' cache.
export FF_BIN_DIR="$CARGO_TARGET_DIR/debug"
cargo build --workspace --bins
cargo test --workspace --test memory -- --ignored --nocapture --test-threads 1 "$@"

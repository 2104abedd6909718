#!/usr/bin/env bash
# Head training and offline application figures for BENCHMARKS.md, with a
# local store. The dev profile: dependencies and the worker are optimised
# there too (Cargo.toml), and it shares the tests' build cache.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/setup.sh"
cd "$root"
data="$(mktemp -d)/s3"
start_s3 "$data"
trap 'kill $S3S_PID 2>/dev/null || true; rm -rf "$(dirname "$data")"' EXIT
cargo bench --profile dev --bench heads

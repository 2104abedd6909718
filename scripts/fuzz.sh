#!/usr/bin/env bash
# Fuzzes the wire decoder (schema/fuzz, target wire_decode) with libFuzzer
# through cargo-fuzz, installed into the cache on first use.
#   scripts/fuzz.sh [RUNS] [extra libFuzzer flags…]   (RUNS default 10000000)
# Stable Rust: RUSTC_BOOTSTRAP lets cargo-fuzz pass its -Z sanitizer flags.
# Crashes land in schema/fuzz/artifacts/wire_decode/; the corpus it grows
# stays in schema/fuzz/corpus/ (both ignored by git).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export FF_CACHE="${FF_CACHE:-$HOME/.cache/framefleet}"
runs="${1:-10000000}"
shift || true
fuzz_bin="$FF_CACHE/cargo-fuzz/bin/cargo-fuzz"
if [ ! -x "$fuzz_bin" ]; then
  echo "[fuzz] installing cargo-fuzz 0.12 (once)" >&2
  cargo install cargo-fuzz --version '^0.12' --locked --root "$FF_CACHE/cargo-fuzz"
fi
cd "$root/schema"
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="$FF_CACHE/fuzz-target"
"$fuzz_bin" fuzz run wire_decode --release -- \
  -runs="$runs" -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1 "$@"

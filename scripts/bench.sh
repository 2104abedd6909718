#!/usr/bin/env bash
# Benchmarks, release build. Figures go into BENCHMARKS.md with this command.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/setup.sh"
cd "$root"
cargo bench -p worker --bench encoder

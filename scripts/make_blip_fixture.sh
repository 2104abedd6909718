#!/usr/bin/env bash
# Regenerates worker/tests/fixtures/blip-tiny (commit the result).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/setup.sh"
source "$root/scripts/reference-env.sh"
out="$root/worker/tests/fixtures/blip-tiny"
rm -rf "$out"
"$FF_REF_PYTHON" "$root/scripts/make_blip_fixture.py" "$FF_MINILM_WHEEL" "$out"

#!/usr/bin/env bash
# Regenerates worker/tests/fixtures/dinov2-tiny (commit the result).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/setup.sh"
source "$root/scripts/reference-env.sh"
out="$root/worker/tests/fixtures/dinov2-tiny"
rm -rf "$out"
"$FF_REF_PYTHON" "$root/scripts/make_dinov2_fixture.py" "$out"

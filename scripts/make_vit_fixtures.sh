#!/usr/bin/env bash
# Regenerates worker/tests/fixtures/dinov2-tiny and clip-tiny (commit the
# result).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/setup.sh"
source "$root/scripts/reference-env.sh"
fixtures="$root/worker/tests/fixtures"
rm -rf "$fixtures/dinov2-tiny" "$fixtures/clip-tiny"
"$FF_REF_PYTHON" "$root/scripts/make_vit_fixtures.py" "$fixtures"

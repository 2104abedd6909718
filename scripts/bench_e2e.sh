#!/usr/bin/env bash
# The whole fleet on this machine (scripts/demo.sh: upload -> watcher ->
# producer -> RabbitMQ -> CPU worker -> collector -> outputs in the bucket,
# every frame, EfficientNet-Lite0) beside the script a CPU user could write
# instead (ffmpeg CLI | ONNX Runtime -> one .npy,
# scripts/e2e_script_reference.py), on the same video in one invocation.
# Usage: scripts/bench_e2e.sh [VIDEO]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/setup.sh"
source "$root/scripts/reference-env.sh"
cd "$root"
video="${1:-/usr/share/doc/opencv-doc/examples/data/vtest.avi}"
fleet="$("$root/scripts/demo.sh" "$video" all | grep '^upload to outputs:')"
echo "fleet: $fleet"
fleet_fps="$(sed -E 's/.*\(([0-9.]+) frames\/s\).*/\1/' <<<"$fleet")"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
script="$("$FF_REF_PYTHON" scripts/e2e_script_reference.py "$FF_MODEL_DIR" "$video" "$out/embeddings.npy")"
echo "ffmpeg | ONNX Runtime: $script"
script_fps="$("$FF_REF_PYTHON" -c "import json,sys; print(json.loads(sys.argv[1])['fps'])" "$script")"
echo "| video | fleet frames/s | ffmpeg + ONNX Runtime frames/s | fleet / script |"
echo "|---|---:|---:|---:|"
echo "| $(basename "$video") | $fleet_fps | $script_fps | $(printf "%.2f" "$(echo "scale=4; $fleet_fps / $script_fps" | bc)")x |"

#!/usr/bin/env bash
# The whole fleet on this machine (scripts/demo.sh: upload -> watcher ->
# producer -> RabbitMQ -> CPU worker -> collector -> outputs in the bucket,
# every frame, EfficientNet-Lite0) beside the script a CPU user could write
# instead (ffmpeg CLI | ONNX Runtime -> one .npy,
# scripts/e2e_script_reference.py), on the same video in one invocation,
# alternated over ROUNDS rounds (default 3): these VMs' speed drifts within
# minutes, so each ratio pairs two runs taken back to back.
# Usage: scripts/bench_e2e.sh [VIDEO] [ROUNDS]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/setup.sh"
source "$root/scripts/reference-env.sh"
cd "$root"
video="${1:-/usr/share/doc/opencv-doc/examples/data/vtest.avi}"
rounds="${2:-3}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
rows=()
ratios=()
for round in $(seq "$rounds"); do
  fleet="$("$root/scripts/demo.sh" "$video" all | grep '^upload to outputs:')"
  echo "round $round, fleet: $fleet"
  fleet_fps="$(sed -E 's/.*\(([0-9.]+) frames\/s\).*/\1/' <<<"$fleet")"
  script="$("$FF_REF_PYTHON" scripts/e2e_script_reference.py "$FF_MODEL_DIR" "$video" "$out/embeddings.npy")"
  echo "round $round, ffmpeg | ONNX Runtime: $script"
  script_fps="$("$FF_REF_PYTHON" -c "import json,sys; print(json.loads(sys.argv[1])['fps'])" "$script")"
  ratio="$(printf "%.2f" "$(echo "scale=4; $fleet_fps / $script_fps" | bc)")"
  rows+=("| $(basename "$video") | $round | $fleet_fps | $script_fps | ${ratio}x |")
  ratios+=("$ratio")
done
echo "| video | round | fleet frames/s | ffmpeg + ONNX Runtime frames/s | fleet / script |"
echo "|---|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
median="$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}')"
echo "median fleet / script over $rounds rounds: ${median}x"

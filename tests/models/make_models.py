"""Build the golden ONNX models of the conformance suite.

Every model is small, deterministic (seeded numpy weights, no data-dependent
initialisation, so the bytes do not depend on the CPU or BLAS that builds
them) and exercises a named set of ops -- see ``meta.py`` for the registry.
All models: opset 17, IR version 8 (loadable by onnxruntime >= 1.17), batch 1,
fixed shapes, float32.

Weights use He initialisation and, where a real network has BatchNorm, either
real ``BatchNormalization`` nodes (so the canonicalizer's folding is exercised)
or BN-style per-channel scale/shift folded into the conv, so activations keep
a sane range through the graph and int8 calibration sees realistic,
per-channel-varying distributions.

Run as a script to (re)write ``tests/models/*.onnx``::

    python tests/models/make_models.py            # write + verify every model
    python tests/models/make_models.py --check    # verify the committed files match

Importable: ``build(name)``, ``build_all()``, ``BUILDERS``, ``verify(model)``.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8
MODELS_DIR = Path(__file__).resolve().parent

Shape = Tuple[int, ...]


class GraphBuilder:
    """Accumulates nodes and initializers with unique, readable names."""

    def __init__(self, name: str, seed: int) -> None:
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.nodes: List[onnx.NodeProto] = []
        self.inits: List[onnx.TensorProto] = []
        self._counts: Dict[str, int] = {}
        self._consts: Dict[Tuple[str, bytes, Shape], str] = {}

    # -- naming / constants ------------------------------------------------
    def uid(self, prefix: str) -> str:
        n = self._counts.get(prefix, 0)
        self._counts[prefix] = n + 1
        return f"{prefix}{n}"

    def init(self, value: np.ndarray, prefix: str) -> str:
        name = self.uid(prefix)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def const(self, value: Union[float, int, Sequence[float], Sequence[int], np.ndarray], dtype=np.float32) -> str:
        """A shared constant initializer (deduplicated by value)."""
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.tobytes(), arr.shape)
        if key not in self._consts:
            self._consts[key] = self.init(arr, "const")
        return self._consts[key]

    def op(self, op_type: str, inputs: Sequence[str], out: Optional[str] = None, **attrs: object) -> str:
        name = self.uid(op_type.lower() + "_")
        output = out or name + "_out"
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], name=name, **attrs))
        return output

    # -- random weights ----------------------------------------------------
    def normal(self, shape: Shape, std: float) -> np.ndarray:
        return (self.rng.standard_normal(shape) * std).astype(np.float32)

    def uniform(self, shape: Shape, lo: float, hi: float) -> np.ndarray:
        return self.rng.uniform(lo, hi, shape).astype(np.float32)

    # -- layers ------------------------------------------------------------
    def conv(
        self,
        x: str,
        cin: int,
        cout: int,
        k: int = 3,
        stride: int = 1,
        group: int = 1,
        bias: bool = True,
        gain: float = 2.0,
        dims: int = 2,
        bn_style: bool = False,
        pad: Optional[int] = None,
        out: Optional[str] = None,
        bias_init: Optional[np.ndarray] = None,
    ) -> str:
        """Conv with He-normal weights (``gain`` 2 before ReLU, 1 when linear).

        ``bn_style`` multiplies each output channel by a BatchNorm-like scale
        and adds a BN-like shift: a conv whose BN has already been folded.
        """
        fan_in = (cin // group) * k**dims
        w = self.normal((cout, cin // group) + (k,) * dims, math.sqrt(gain / fan_in))
        b: Optional[np.ndarray] = None
        if bn_style:
            w = (w * self.uniform((cout,) + (1,) * (dims + 1), 0.6, 1.4)).astype(np.float32)
            b = self.normal((cout,), 0.1)
        elif bias:
            b = self.normal((cout,), 0.05)
        if bias_init is not None:
            b = bias_init.astype(np.float32)
        p = k // 2 if pad is None else pad
        inputs = [x, self.init(w, "conv_w")]
        if b is not None:
            inputs.append(self.init(b, "conv_b"))
        return self.op(
            "Conv",
            inputs,
            out,
            kernel_shape=[k] * dims,
            strides=[stride] * dims,
            pads=[p] * (2 * dims),
            dilations=[1] * dims,
            group=group,
        )

    def bn(self, x: str, c: int, out: Optional[str] = None) -> str:
        """A real BatchNormalization node with plausible running statistics."""
        return self.op(
            "BatchNormalization",
            [
                x,
                self.init(self.uniform((c,), 0.5, 1.5), "bn_scale"),
                self.init(self.normal((c,), 0.1), "bn_bias"),
                self.init(self.normal((c,), 0.1), "bn_mean"),
                self.init(self.uniform((c,), 0.5, 2.0), "bn_var"),
            ],
            out,
            epsilon=1e-5,
        )

    def relu(self, x: str, out: Optional[str] = None) -> str:
        return self.op("Relu", [x], out)

    def relu6(self, x: str, out: Optional[str] = None) -> str:
        return self.op("Clip", [x, self.const(0.0), self.const(6.0)], out)

    def silu(self, x: str, out: Optional[str] = None) -> str:
        return self.op("Mul", [x, self.op("Sigmoid", [x])], out)

    def gemm(self, x: str, cin: int, cout: int, out: Optional[str] = None) -> str:
        w = self.normal((cout, cin), math.sqrt(1.0 / cin))
        b = self.normal((cout,), 0.05)
        return self.op("Gemm", [x, self.init(w, "fc_w"), self.init(b, "fc_b")], out, transB=1)

    def linear(self, x: str, cin: int, cout: int, gain: float = 1.0) -> str:
        """MatMul + Add (how transformer exports spell a Linear)."""
        w = self.normal((cin, cout), math.sqrt(gain / cin))
        b = self.normal((cout,), 0.02)
        return self.op("Add", [self.op("MatMul", [x, self.init(w, "linear_w")]), self.init(b, "linear_b")])

    def classifier(self, x: str, c: int, classes: int, out: str = "logits") -> str:
        """GlobalAveragePool -> Flatten -> Gemm."""
        return self.gemm(self.op("Flatten", [self.op("GlobalAveragePool", [x])], axis=1), c, classes, out)

    # -- model -------------------------------------------------------------
    def model(
        self,
        inputs: Sequence[Tuple[str, Shape]],
        outputs: Sequence[Tuple[str, Shape]],
        doc: str,
    ) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes,
            self.name,
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in inputs],
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in outputs],
            initializer=self.inits,
            doc_string=doc,
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="edgekit-tests",
            producer_version="make_models",
            doc_string=doc,
        )
        model.ir_version = IR_VERSION
        return model


# ---------------------------------------------------------------------------
# The models. Each seed is fixed per model so adding a model changes no other.
# ---------------------------------------------------------------------------


def conv_bn_relu() -> onnx.ModelProto:
    g = GraphBuilder("conv_bn_relu", seed=1)
    x = g.relu(g.bn(g.conv("input", 3, 16, 3, bias=False), 16))
    x = g.relu(g.bn(g.conv(x, 16, 32, 3, stride=2, bias=False), 32))
    g.classifier(x, 32, 10)
    return g.model(
        [("input", (1, 3, 32, 32))],
        [("logits", (1, 10))],
        "Conv -> BatchNormalization -> Relu (x2), GlobalAveragePool, Gemm classifier.",
    )


def depthwise_separable() -> onnx.ModelProto:
    g = GraphBuilder("depthwise_separable", seed=2)
    x = g.relu6(g.conv("input", 3, 16, 3, stride=2))
    # Depthwise conv + BN: per-channel BN folding into a grouped conv's weights.
    x = g.relu6(g.bn(g.conv(x, 16, 16, 3, group=16, bias=False), 16))
    x = g.relu6(g.conv(x, 16, 32, 1))
    x = g.relu6(g.conv(x, 32, 32, 3, stride=2, group=32))
    x = g.relu6(g.conv(x, 32, 64, 1))
    g.classifier(x, 64, 10)
    return g.model(
        [("input", (1, 3, 32, 32))],
        [("logits", (1, 10))],
        "Depthwise (group=C) + pointwise convs with Relu6 as Clip(0, 6); one depthwise conv has a BN.",
    )


def residual_add() -> onnx.ModelProto:
    g = GraphBuilder("residual_add", seed=3)
    stem = g.relu(g.conv("input", 3, 16, 3))
    # Block 1: two conv branches (3x3-3x3 and a 1x1 projection), both stride 2.
    a = g.conv(g.relu(g.conv(stem, 16, 32, 3, stride=2)), 32, 32, 3, gain=1.0)
    b = g.conv(stem, 16, 32, 1, stride=2, gain=1.0)
    x = g.relu(g.op("Add", [a, b]))
    # Block 2: identity shortcut.
    r = g.conv(g.relu(g.conv(x, 32, 32, 3)), 32, 32, 3, gain=0.5)
    x = g.relu(g.op("Add", [x, r]))
    g.classifier(x, 32, 10)
    return g.model(
        [("input", (1, 3, 32, 32))],
        [("logits", (1, 10))],
        "Residual blocks: conv branch + projection branch Add, then an identity-shortcut Add.",
    )


def squeeze_excite() -> onnx.ModelProto:
    g = GraphBuilder("squeeze_excite", seed=4)
    x = g.relu(g.conv("input", 3, 32, 3, stride=2))
    s = g.op("GlobalAveragePool", [x])
    s = g.relu(g.conv(s, 32, 8, 1))
    s = g.conv(s, 8, 32, 1, gain=1.0)
    s = g.op("HardSigmoid", [s], alpha=1.0 / 6.0, beta=0.5)  # MobileNetV3's h-sigmoid
    x = g.op("Mul", [x, s])
    x = g.relu(g.conv(x, 32, 16, 1))
    g.classifier(x, 16, 10)
    return g.model(
        [("input", (1, 3, 32, 32))],
        [("logits", (1, 10))],
        "Squeeze-excite: GlobalAveragePool -> 1x1 reduce -> Relu -> 1x1 expand -> HardSigmoid -> Mul.",
    )


def activations() -> onnx.ModelProto:
    g = GraphBuilder("activations", seed=5)
    x = g.op("HardSwish", [g.conv("input", 3, 16, 3, stride=2)])
    x = g.op("HardSigmoid", [g.conv(x, 16, 16, 3)], alpha=0.2, beta=0.5)
    x = g.silu(g.conv(x, 16, 16, 3))
    x = g.relu(g.conv(x, 16, 16, 3))
    x = g.op("LeakyRelu", [g.conv(x, 16, 16, 3)], alpha=0.1)
    g.op("Tanh", [g.conv(x, 16, 16, 3, gain=1.0)], out="features")
    return g.model(
        [("input", (1, 3, 32, 32))],
        [("features", (1, 16, 16, 16))],
        "HardSwish, HardSigmoid, SiLU (Sigmoid*x), Relu, LeakyRelu, Tanh after convs; raw feature-map output.",
    )


def pooling() -> onnx.ModelProto:
    g = GraphBuilder("pooling", seed=6)
    x = g.relu(g.conv("input", 3, 16, 3))
    x = g.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])  # 32 -> 16
    x = g.relu(g.conv(x, 16, 32, 3))
    x = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])  # padded max pool
    x = g.op(
        "AveragePool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=0
    )  # 16 -> 8
    x = g.relu(g.conv(x, 32, 32, 3))
    x = g.op("AveragePool", [x], kernel_shape=[2, 2], strides=[2, 2])  # 8 -> 4
    g.classifier(x, 32, 10)
    return g.model(
        [("input", (1, 3, 32, 32))],
        [("logits", (1, 10))],
        "MaxPool (plain and padded), AveragePool (padded, count_include_pad=0, and plain), "
        "GlobalAveragePool, Flatten, Gemm.",
    )


def resize_concat() -> onnx.ModelProto:
    g = GraphBuilder("resize_concat", seed=7)
    e1 = g.relu(g.conv("input", 3, 16, 3))  # 64x64
    d = g.relu(g.conv(e1, 16, 32, 3, stride=2))  # 32x32
    d = g.relu(g.conv(d, 32, 32, 3))
    up = g.op(
        "Resize",
        [d, "", g.const([1.0, 1.0, 2.0, 2.0])],
        mode="nearest",
        coordinate_transformation_mode="asymmetric",
        nearest_mode="floor",
    )  # 64x64, as torch's nn.Upsample(scale_factor=2) exports
    x = g.op("Concat", [up, e1], axis=1)  # 48 channels
    x = g.relu(g.conv(x, 48, 16, 3))
    g.conv(x, 16, 4, 1, gain=1.0, out="mask_logits")
    return g.model(
        [("input", (1, 3, 64, 64))],
        [("mask_logits", (1, 4, 64, 64))],
        "FPN-like: strided-conv downsample, Resize nearest x2 upsample, Concat skip, "
        "segmentation head [1, 4 classes, H, W].",
    )


YOLO_CLASSES = 3
YOLO_REG_MAX = 16
YOLO_SIZE = 128
YOLO_STRIDES = (8, 16)


def yolo_head() -> onnx.ModelProto:
    """A tiny YOLOv8: backbone, per-level box (DFL) + class branches, in-graph decode."""
    g = GraphBuilder("yolo_head", seed=8)
    nc, r = YOLO_CLASSES, YOLO_REG_MAX
    x = g.silu(g.conv("input", 3, 8, 3, stride=2, bn_style=True))  # /2
    x = g.silu(g.conv(x, 8, 16, 3, stride=2, bn_style=True))  # /4
    p3 = g.silu(g.conv(x, 16, 32, 3, stride=2, bn_style=True))  # /8
    p4 = g.silu(g.conv(p3, 32, 64, 3, stride=2, bn_style=True))  # /16
    levels = []
    anchors = []
    strides = []
    for feat, c, s in ((p3, 32, 8), (p4, 64, 16)):
        h = w = YOLO_SIZE // s
        box = g.silu(g.conv(g.silu(g.conv(feat, c, 32, 3, bn_style=True)), 32, 32, 3, bn_style=True))
        # DFL logits that fall off with distance, so decoded sides are ~2 cells (boxes of
        # plausible size) instead of the ~r/2 cells a flat softmax would give.
        box = g.conv(box, 32, 4 * r, 1, gain=1.0, bias_init=np.tile(-0.4 * np.arange(r), 4))
        cls = g.silu(g.conv(g.silu(g.conv(feat, c, 32, 3, bn_style=True)), 32, 32, 3, bn_style=True))
        # YOLOv8 starts class biases negative so most anchors score low.
        cls = g.conv(cls, 32, nc, 1, gain=1.0, bias_init=np.full((nc,), -2.0))
        lvl = g.op("Concat", [box, cls], axis=1)
        levels.append(g.op("Reshape", [lvl, g.const([1, 4 * r + nc, h * w], np.int64)]))
        ys, xs = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
        anchors.append(np.stack([xs.ravel(), ys.ravel()]))
        strides.append(np.full((1, h * w), float(s)))
    n = sum(a.shape[1] for a in anchors)
    x = g.op("Concat", levels, axis=2)  # [1, 4r+nc, N]
    box_raw = g.uid("split_box")
    cls_raw = g.uid("split_cls")
    g.nodes.append(
        helper.make_node(
            "Split", [x, g.const([4 * r, nc], np.int64)], [box_raw, cls_raw], name=g.uid("split_"), axis=1
        )
    )
    # DFL: softmax over r bins per side, expectation via a 1x1 conv with arange weights.
    d = g.op("Reshape", [box_raw, g.const([1, 4, r, n], np.int64)])
    d = g.op("Transpose", [d], perm=[0, 2, 1, 3])  # [1, r, 4, N]
    d = g.op("Softmax", [d], axis=1)
    d = g.op("Conv", [d, g.init(np.arange(r, dtype=np.float32).reshape(1, r, 1, 1), "dfl_w")], kernel_shape=[1, 1])
    ltrb = g.op("Reshape", [d, g.const([1, 4, n], np.int64)])
    lt = g.uid("lt")
    rb = g.uid("rb")
    g.nodes.append(
        helper.make_node("Split", [ltrb, g.const([2, 2], np.int64)], [lt, rb], name=g.uid("split_"), axis=1)
    )
    anchor = g.init(np.concatenate(anchors, axis=1)[None].astype(np.float32), "anchors")  # [1, 2, N]
    x1y1 = g.op("Sub", [anchor, lt])
    x2y2 = g.op("Add", [anchor, rb])
    cxy = g.op("Div", [g.op("Add", [x1y1, x2y2]), g.const(2.0)])
    wh = g.op("Sub", [x2y2, x1y1])
    dbox = g.op("Concat", [cxy, wh], axis=1)
    dbox = g.op("Mul", [dbox, g.init(np.concatenate(strides, axis=1)[None].astype(np.float32), "strides")])
    scores = g.op("Sigmoid", [cls_raw])
    g.op("Concat", [dbox, scores], out="output0", axis=1)
    return g.model(
        [("input", (1, 3, YOLO_SIZE, YOLO_SIZE))],
        [("output0", (1, 4 + nc, n))],
        f"YOLOv8-style detector: SiLU backbone, strides {YOLO_STRIDES}, DFL box head (reg_max {r}), "
        f"in-graph decode with constant anchor/stride grids; output [1, 4+{nc}, {n}] "
        "(cx, cy, w, h in input pixels, then sigmoid class scores).",
    )


ATTN_T, ATTN_D, ATTN_HEADS, ATTN_MLP = 16, 32, 4, 64


def attention_block() -> onnx.ModelProto:
    """Pre-LN transformer encoder block, spelled the way torch exports it."""
    g = GraphBuilder("attention_block", seed=9)
    t, dm, nh, hd = ATTN_T, ATTN_D, ATTN_HEADS, ATTN_D // ATTN_HEADS

    def layer_norm(x: str) -> str:
        return g.op(
            "LayerNormalization",
            [x, g.init(g.uniform((dm,), 0.8, 1.2), "ln_scale"), g.init(g.normal((dm,), 0.05), "ln_bias")],
            axis=-1,
            epsilon=1e-5,
        )

    def heads(x: str, perm: List[int]) -> str:
        return g.op("Transpose", [g.op("Reshape", [x, g.const([1, t, nh, hd], np.int64)])], perm=perm)

    h = layer_norm("tokens")
    q = heads(g.linear(h, dm, dm), [0, 2, 1, 3])  # [1, H, T, hd]
    k = heads(g.linear(h, dm, dm), [0, 2, 3, 1])  # [1, H, hd, T]
    v = heads(g.linear(h, dm, dm), [0, 2, 1, 3])  # [1, H, T, hd]
    att = g.op("Mul", [g.op("MatMul", [q, k]), g.const(1.0 / math.sqrt(hd))])
    att = g.op("Softmax", [att], axis=-1)
    o = g.op("Transpose", [g.op("MatMul", [att, v])], perm=[0, 2, 1, 3])  # [1, T, H, hd]
    o = g.op("Reshape", [o, g.const([1, t, dm], np.int64)])
    x = g.op("Add", ["tokens", g.linear(o, dm, dm)])
    h = g.linear(layer_norm(x), dm, ATTN_MLP, gain=2.0)
    # Exact GELU from primitives: 0.5 * x * (1 + erf(x / sqrt(2))).
    erf = g.op("Erf", [g.op("Div", [h, g.const(math.sqrt(2.0))])])
    h = g.op("Mul", [g.op("Mul", [h, g.op("Add", [erf, g.const(1.0)])]), g.const(0.5)])
    g.op("Add", [x, g.linear(h, ATTN_MLP, dm)], out="hidden")
    return g.model(
        [("tokens", (1, t, dm))],
        [("hidden", (1, t, dm))],
        f"Pre-LN transformer encoder block: T={t}, D={dm}, {nh} heads, LayerNormalization (opset 17), "
        "MatMul Q/K/V, Reshape/Transpose heads, Softmax attention, residual Adds, Erf-GELU MLP.",
    )


AUDIO_SAMPLES, AUDIO_CLASSES = 16000, 12


def audio_conv1d() -> onnx.ModelProto:
    """M5-style keyword spotter on one second of 16 kHz audio."""
    g = GraphBuilder("audio_conv1d", seed=10)
    x = g.relu(g.bn(g.conv("audio", 1, 16, 80, stride=4, bias=False, dims=1, pad=38), 16))  # 4000
    x = g.op("MaxPool", [x], kernel_shape=[4], strides=[4])  # 1000
    x = g.relu(g.bn(g.conv(x, 16, 32, 3, bias=False, dims=1), 32))
    x = g.op("MaxPool", [x], kernel_shape=[4], strides=[4])  # 250
    x = g.relu(g.bn(g.conv(x, 32, 64, 3, stride=2, bias=False, dims=1), 64))  # 125
    g.classifier(x, 64, AUDIO_CLASSES)
    return g.model(
        [("audio", (1, 1, AUDIO_SAMPLES))],
        [("logits", (1, AUDIO_CLASSES))],
        "1-D conv stack (strided Conv1d, BatchNormalization, Relu, MaxPool1d), GlobalAveragePool, Gemm; "
        "tensor input, not an image.",
    )


MBV2_SIZE = 160
MBV2_WIDTH = 0.5
MBV2_LAST_CHANNEL = 256
MBV2_CLASSES = 1000
# (expansion t, channels c, repeats n, first stride s) -- MobileNetV2 table 2.
MBV2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def _make_divisible(v: float, divisor: int = 8) -> int:
    """torchvision's rounding of scaled channel counts."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def mobilenet_v2_class() -> onnx.ModelProto:
    """MobileNetV2 0.5 at 160x160 (the 17 inverted residual blocks of the paper).

    BN is folded (BN-style per-channel scale/shift in each conv), as in a
    deployed model. The head is narrowed from 1280 to 256 channels so the file
    stays commit-sized (~3 MB); a 1280-wide head with 1000 classes alone would
    be 5 MB of fp32 weights.
    """
    g = GraphBuilder("mobilenet_v2_class", seed=11)
    cin = _make_divisible(32 * MBV2_WIDTH)
    x = g.relu6(g.conv("input", 3, cin, 3, stride=2, bn_style=True))
    blocks = 0
    for t, c, n, s in MBV2_SETTINGS:
        cout = _make_divisible(c * MBV2_WIDTH)
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = cin * t
            h = x
            if t != 1:
                h = g.relu6(g.conv(h, cin, hidden, 1, bn_style=True))
            h = g.relu6(g.conv(h, hidden, hidden, 3, stride=stride, group=hidden, bn_style=True))
            # Linear bottleneck; a smaller gain on residual blocks keeps the sum's variance in check.
            use_res = stride == 1 and cin == cout
            h = g.conv(h, hidden, cout, 1, bn_style=True, gain=0.5 if use_res else 1.0)
            x = g.op("Add", [x, h]) if use_res else h
            cin = cout
            blocks += 1
    x = g.relu6(g.conv(x, cin, MBV2_LAST_CHANNEL, 1, bn_style=True))
    g.classifier(x, MBV2_LAST_CHANNEL, MBV2_CLASSES)
    assert blocks == 17
    return g.model(
        [("input", (1, 3, MBV2_SIZE, MBV2_SIZE))],
        [("logits", (1, MBV2_CLASSES))],
        f"MobileNetV2 width {MBV2_WIDTH} at {MBV2_SIZE}x{MBV2_SIZE}: {blocks} inverted residual blocks "
        f"(1x1 expand + Relu6, 3x3 depthwise + Relu6, 1x1 linear project, residual Add), "
        f"1x1 conv to {MBV2_LAST_CHANNEL}, GlobalAveragePool, Gemm to {MBV2_CLASSES} classes. "
        "Random weights with folded-BN-style per-channel scales.",
    )


# Explicit table, in registry order (no globals() scanning).
BUILDERS: Dict[str, Callable[[], onnx.ModelProto]] = {
    "conv_bn_relu": conv_bn_relu,
    "depthwise_separable": depthwise_separable,
    "residual_add": residual_add,
    "squeeze_excite": squeeze_excite,
    "activations": activations,
    "pooling": pooling,
    "resize_concat": resize_concat,
    "yolo_head": yolo_head,
    "attention_block": attention_block,
    "audio_conv1d": audio_conv1d,
    "mobilenet_v2_class": mobilenet_v2_class,
}


def build(name: str) -> onnx.ModelProto:
    try:
        builder = BUILDERS[name]
    except KeyError:
        raise KeyError(f"no golden model {name!r}; known: {', '.join(BUILDERS)}") from None
    return builder()


def build_all() -> Dict[str, onnx.ModelProto]:
    return {name: builder() for name, builder in BUILDERS.items()}


def random_feeds(model: onnx.ModelProto, seed: int = 0) -> Dict[str, np.ndarray]:
    """Standard-normal float32 feeds for every graph input."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for vi in model.graph.input:
        shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        feeds[vi.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def verify(model: onnx.ModelProto, seed: int = 0) -> Dict[str, np.ndarray]:
    """Full ONNX check, then run in onnxruntime: outputs finite, declared shape, not degenerate."""
    import onnxruntime as ort

    onnx.checker.check_model(model, full_check=True)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in model.graph.output]
    outs = dict(zip(names, sess.run(names, random_feeds(model, seed))))
    for o in model.graph.output:
        y = outs[o.name]
        want = tuple(d.dim_value for d in o.type.tensor_type.shape.dim)
        if y.shape != want:
            raise AssertionError(f"{model.graph.name}.{o.name}: shape {y.shape}, declared {want}")
        if not np.all(np.isfinite(y)):
            raise AssertionError(f"{model.graph.name}.{o.name}: non-finite outputs")
        if not float(np.std(y)) > 0.0:
            raise AssertionError(f"{model.graph.name}.{o.name}: degenerate output (all {y.flat[0]})")
    return outs


def write_all(out_dir: Path = MODELS_DIR, check: bool = True) -> List[Path]:
    paths = []
    for name, model in build_all().items():
        if check:
            verify(model)
        path = out_dir / f"{name}.onnx"
        path.write_bytes(model.SerializeToString())
        paths.append(path)
    return paths


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description="Build the golden ONNX models.")
    p.add_argument("--out", type=Path, default=MODELS_DIR)
    p.add_argument("--check", action="store_true", help="verify the files in --out match, write nothing")
    args = p.parse_args(argv)
    stale = []
    for name, model in build_all().items():
        outs = verify(model)
        path = args.out / f"{name}.onnx"
        data = model.SerializeToString()
        if args.check:
            if not path.is_file() or path.read_bytes() != data:
                stale.append(name)
        else:
            path.write_bytes(data)
        params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
        summary = ", ".join(
            f"{k} {list(v.shape)} mean {v.mean():+.3f} std {v.std():.3f}" for k, v in outs.items()
        )
        print(f"{name:22s} {len(data) / 1024:8.1f} KiB {params:9d} params {len(model.graph.node):4d} nodes | {summary}")
    if stale:
        print(f"stale or missing: {', '.join(stale)}; rerun: python {Path(__file__).name}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Tiny one- or few-op ONNX models for the tflite lowering tests (built in memory, seeded).

Each entry is a function returning a ModelProto; ``ZOO`` lists them by name so
the test ids say which op (and which attribute combination) broke.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

onnx = __import__("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

OPSET = 17
_rng = np.random.default_rng(7)


def _w(*shape: int, scale: float = 0.3) -> np.ndarray:
    return (_rng.standard_normal(shape) * scale).astype(np.float32)


def model(nodes: Sequence[object], inputs: Dict[str, Sequence[int]], outputs: Sequence[str],
          inits: Optional[Dict[str, np.ndarray]] = None, opset: int = OPSET,
          in_types: Optional[Dict[str, int]] = None) -> object:
    ins = [helper.make_tensor_value_info(k, (in_types or {}).get(k, TensorProto.FLOAT), list(v))
           for k, v in inputs.items()]
    inits_l = [numpy_helper.from_array(v, k) for k, v in (inits or {}).items()]
    g = helper.make_graph(list(nodes), "zoo", ins, [helper.make_empty_tensor_value_info(o) for o in outputs],
                          initializer=inits_l)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    # the outputs' types and shapes, as an exporter would write them
    inferred = onnx.shape_inference.infer_shapes(m, strict_mode=True)
    known = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    del m.graph.output[:]
    m.graph.output.extend(known[o] for o in outputs)
    return m


def conv_transpose() -> object:
    return model([helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1],
                                   output_padding=[1, 1])],
                 {"x": (1, 4, 8, 8)}, ["y"], {"w": _w(4, 6, 3, 3), "b": _w(6)})


def conv_transpose_plain() -> object:
    return model([helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2])],
                 {"x": (1, 4, 8, 8)}, ["y"], {"w": _w(4, 6, 2, 2)})


def resize_bilinear_half_pixel() -> object:
    return model([helper.make_node("Resize", ["x", "", "s"], ["y"], mode="linear",
                                   coordinate_transformation_mode="half_pixel")],
                 {"x": (1, 3, 8, 8)}, ["y"], {"s": np.array([1, 1, 2, 2], np.float32)})


def resize_bilinear_align_corners() -> object:
    return model([helper.make_node("Resize", ["x", "", "", "sz"], ["y"], mode="linear",
                                   coordinate_transformation_mode="align_corners")],
                 {"x": (1, 3, 8, 8)}, ["y"], {"sz": np.array([1, 3, 13, 11], np.int64)})


def resize_nearest_asymmetric() -> object:
    return model([helper.make_node("Resize", ["x", "", "s"], ["y"], mode="nearest",
                                   coordinate_transformation_mode="asymmetric", nearest_mode="floor")],
                 {"x": (1, 3, 8, 8)}, ["y"], {"s": np.array([1, 1, 2, 2], np.float32)})


def pad_reflect_then_conv() -> object:
    return model([helper.make_node("Pad", ["x", "p"], ["t"], mode="reflect"),
                  helper.make_node("Conv", ["t", "w"], ["y"])],
                 {"x": (1, 3, 8, 8)}, ["y"], {"p": np.array([0, 0, 2, 1, 0, 0, 2, 1], np.int64), "w": _w(4, 3, 3, 3)})


def pad_constant_value() -> object:
    return model([helper.make_node("Pad", ["x", "p", "v"], ["y"], mode="constant")],
                 {"x": (1, 3, 5, 5)}, ["y"], {"p": np.array([0, 1, 1, 0, 0, 0, 2, 2], np.int64),
                                              "v": np.array(0.5, np.float32)})


def slice_steps_and_negative() -> object:
    return model([helper.make_node("Conv", ["x", "w"], ["c"]),
                  helper.make_node("Slice", ["c", "st", "en", "ax", "sp"], ["y"])],
                 {"x": (1, 3, 10, 10)}, ["y"],
                 {"w": _w(6, 3, 1, 1), "st": np.array([1, -1, 0], np.int64), "en": np.array([5, -100, 8], np.int64),
                  "ax": np.array([1, 2, 3], np.int64), "sp": np.array([2, -2, 3], np.int64)})


def gather_const_indices() -> object:
    return model([helper.make_node("Conv", ["x", "w"], ["c"]),
                  helper.make_node("Gather", ["c", "i"], ["g"], axis=1),
                  helper.make_node("Gather", ["g", "j"], ["y"], axis=2)],
                 {"x": (1, 3, 6, 6)}, ["y"], {"w": _w(8, 3, 1, 1), "i": np.array([5, 0, -1], np.int64),
                                              "j": np.array(2, np.int64)})


def argmax_keepdims() -> object:
    return model([helper.make_node("Conv", ["x", "w"], ["c"]),
                  helper.make_node("ArgMax", ["c"], ["y"], axis=1, keepdims=1)],
                 {"x": (1, 3, 6, 6)}, ["y"], {"w": _w(5, 3, 1, 1)})


def reduce_sum_no_keepdims() -> object:
    return model([helper.make_node("Conv", ["x", "w"], ["c"]),
                  helper.make_node("ReduceSum", ["c", "a"], ["r"], keepdims=0),
                  helper.make_node("ReduceMax", ["c"], ["m"], axes=[1, 3], keepdims=1),
                  helper.make_node("Flatten", ["m"], ["mf"]),
                  helper.make_node("Concat", ["r", "mf"], ["y"], axis=1)],
                 {"x": (1, 3, 6, 6)}, ["y"], {"w": _w(4, 3, 1, 1), "a": np.array([2, 3], np.int64)})


def split_unequal_cast() -> object:
    return model([helper.make_node("Split", ["x", "s"], ["a", "b"], axis=1),
                  helper.make_node("Cast", ["b"], ["bi"], to=TensorProto.INT32),
                  helper.make_node("Cast", ["bi"], ["bf"], to=TensorProto.FLOAT),
                  helper.make_node("Mul", ["a", "k"], ["a2"]),
                  helper.make_node("Concat", ["a2", "bf"], ["y"], axis=1)],
                 {"x": (1, 5, 4, 4)}, ["y"], {"s": np.array([2, 3], np.int64), "k": np.array(3.0, np.float32)})


def softmax_channel_axis() -> object:
    return model([helper.make_node("Conv", ["x", "w"], ["c"]),
                  helper.make_node("Softmax", ["c"], ["y"], axis=1)],
                 {"x": (1, 3, 6, 6)}, ["y"], {"w": _w(7, 3, 3, 3)})


def pools_ceil_and_pads() -> object:
    return model([helper.make_node("MaxPool", ["x"], ["a"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
                  helper.make_node("AveragePool", ["a"], ["b"], kernel_shape=[2, 2], strides=[2, 2],
                                   pads=[0, 0, 1, 1], count_include_pad=1),
                  helper.make_node("GlobalMaxPool", ["b"], ["y"])],
                 {"x": (1, 3, 14, 14)}, ["y"])


def conv1d_padded_dilated() -> object:
    return model([helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[2, 2], dilations=[2], strides=[1]),
                  helper.make_node("Relu", ["c"], ["r"]),
                  helper.make_node("AveragePool", ["r"], ["y"], kernel_shape=[2], strides=[2])],
                 {"x": (1, 4, 50)}, ["y"], {"w": _w(6, 4, 3), "b": _w(6)})


def depthwise_multiplier() -> object:
    return model([helper.make_node("Conv", ["x", "w"], ["y"], group=4, pads=[1, 1, 1, 1], strides=[2, 2])],
                 {"x": (1, 4, 9, 9)}, ["y"], {"w": _w(8, 1, 3, 3)})


def matmul_runtime_operands() -> object:
    # attention-like: scores = Q @ K^T with K^T from a Transpose; the product runs on BATCH_MATMUL adj_y
    return model([helper.make_node("MatMul", ["q", "wq"], ["qq"]),
                  helper.make_node("Transpose", ["qq"], ["kt"], perm=[0, 2, 1]),
                  helper.make_node("MatMul", ["qq", "kt"], ["s"]),
                  helper.make_node("Softmax", ["s"], ["y"], axis=-1)],
                 {"q": (1, 6, 8)}, ["y"], {"wq": _w(8, 8)})


def elementwise_mix() -> object:
    return model([helper.make_node("Abs", ["x"], ["a"]),
                  helper.make_node("Add", ["a", "one"], ["a1"]),
                  helper.make_node("Sqrt", ["a1"], ["s"]),
                  helper.make_node("Log", ["a1"], ["l"]),
                  helper.make_node("Exp", ["x"], ["e"]),
                  helper.make_node("Max", ["s", "l"], ["m"]),
                  helper.make_node("Div", ["m", "e"], ["d"]),
                  helper.make_node("Pow", ["d", "two"], ["p"]),
                  helper.make_node("Min", ["p", "x"], ["n"]),
                  helper.make_node("Clip", ["n", "lo", "hi"], ["c"]),
                  helper.make_node("Neg", ["c"], ["y"])],
                 {"x": (1, 2, 3, 4)}, ["y"], {"one": np.array(1.0, np.float32), "two": np.array(2.0, np.float32),
                                              "lo": np.array(-0.5, np.float32), "hi": np.array(2.5, np.float32)})


def prelu_elu_leaky() -> object:
    return model([helper.make_node("Conv", ["x", "w"], ["c"]),
                  helper.make_node("PRelu", ["c", "slope"], ["p"]),
                  helper.make_node("Elu", ["p"], ["e"]),
                  helper.make_node("LeakyRelu", ["e"], ["y"], alpha=0.2)],
                 {"x": (1, 3, 6, 6)}, ["y"], {"w": _w(4, 3, 3, 3), "slope": _w(4, 1, 1)})


def where_compare() -> object:
    return model([helper.make_node("Greater", ["x", "t"], ["g"]),
                  helper.make_node("Mul", ["x", "k"], ["xk"]),
                  helper.make_node("Where", ["g", "x", "xk"], ["y"])],
                 {"x": (1, 3, 4, 4)}, ["y"], {"t": np.array(0.1, np.float32), "k": np.array(-0.5, np.float32)})


def silu_hardswish_clip_form() -> object:
    # x * Clip(x + 3, 0, 6) / 6 (older PyTorch export) and x * Sigmoid(x)
    return model([helper.make_node("Conv", ["x", "w"], ["c"]),
                  helper.make_node("Add", ["c", "three"], ["a"]),
                  helper.make_node("Clip", ["a", "zero", "six"], ["cl"]),
                  helper.make_node("Div", ["cl", "six"], ["hs"]),
                  helper.make_node("Mul", ["c", "hs"], ["h"]),
                  helper.make_node("Sigmoid", ["h"], ["sg"]),
                  helper.make_node("Mul", ["sg", "h"], ["y"])],
                 {"x": (1, 3, 6, 6)}, ["y"],
                 {"w": _w(4, 3, 3, 3), "three": np.array(3.0, np.float32), "zero": np.array(0.0, np.float32),
                  "six": np.array(6.0, np.float32)})


def gelu_erf_and_decomposed_layernorm() -> object:
    d = 16
    return model([
        helper.make_node("ReduceMean", ["x"], ["mu"], axes=[-1]),
        helper.make_node("Sub", ["x", "mu"], ["dx"]),
        helper.make_node("Pow", ["dx", "two"], ["sq"]),
        helper.make_node("ReduceMean", ["sq"], ["var"], axes=[-1]),
        helper.make_node("Add", ["var", "eps"], ["ve"]),
        helper.make_node("Sqrt", ["ve"], ["sd"]),
        helper.make_node("Div", ["dx", "sd"], ["nx"]),
        helper.make_node("Mul", ["nx", "gamma"], ["gx"]),
        helper.make_node("Add", ["gx", "beta"], ["ln"]),
        helper.make_node("MatMul", ["ln", "w1"], ["h"]),
        helper.make_node("Div", ["h", "sqrt2"], ["hd"]),
        helper.make_node("Erf", ["hd"], ["er"]),
        helper.make_node("Add", ["er", "one"], ["e1"]),
        helper.make_node("Mul", ["h", "e1"], ["he"]),
        helper.make_node("Mul", ["he", "half"], ["y"]),
    ], {"x": (1, 8, d)}, ["y"], {
        "two": np.array(2.0, np.float32), "eps": np.array(1e-5, np.float32), "gamma": _w(d) + 1,
        "beta": _w(d), "w1": _w(d, 24), "sqrt2": np.array(np.sqrt(2), np.float32),
        "one": np.array(1.0, np.float32), "half": np.array(0.5, np.float32)})


def yolo_style_head() -> object:
    # [1,C,H,W] -> Reshape [1,C,HW] -> Concat over anchors -> Split -> Transpose: the grouped-reshape path
    return model([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                  helper.make_node("MaxPool", ["c"], ["p"], kernel_shape=[5, 5], pads=[2, 2, 2, 2]),
                  helper.make_node("Concat", ["c", "p"], ["cc"], axis=1),
                  helper.make_node("Reshape", ["cc", "shape"], ["r"]),
                  helper.make_node("Split", ["r", "sp"], ["box", "cls"], axis=1),
                  helper.make_node("Sigmoid", ["cls"], ["cs"]),
                  helper.make_node("Concat", ["box", "cs"], ["o"], axis=1),
                  helper.make_node("Transpose", ["o"], ["y"], perm=[0, 2, 1])],
                 {"x": (1, 3, 8, 8)}, ["y"],
                 {"w": _w(5, 3, 3, 3), "shape": np.array([1, 10, 64], np.int64), "sp": np.array([4, 6], np.int64)})


def expand_tile_depth_to_space() -> object:
    return model([helper.make_node("Conv", ["x", "w"], ["c"]),
                  helper.make_node("DepthToSpace", ["c"], ["d"], blocksize=2, mode="DCR"),
                  helper.make_node("Tile", ["d", "reps"], ["t"]),
                  helper.make_node("Expand", ["b", "shape"], ["e"]),
                  helper.make_node("Add", ["t", "e"], ["y"])],
                 {"x": (1, 3, 4, 4)}, ["y"],
                 {"w": _w(8, 3, 1, 1), "reps": np.array([1, 1, 2, 1], np.int64), "b": _w(1, 2, 1, 1),
                  "shape": np.array([1, 2, 16, 8], np.int64)})


ZOO: Dict[str, Callable[[], object]] = {f.__name__: f for f in (
    conv_transpose, conv_transpose_plain, resize_bilinear_half_pixel, resize_bilinear_align_corners,
    resize_nearest_asymmetric, pad_reflect_then_conv, pad_constant_value, slice_steps_and_negative,
    gather_const_indices, argmax_keepdims, reduce_sum_no_keepdims, split_unequal_cast, softmax_channel_axis,
    pools_ceil_and_pads, conv1d_padded_dilated, depthwise_multiplier, matmul_runtime_operands, elementwise_mix,
    prelu_elu_leaky, where_compare, silu_hardswish_clip_form, gelu_erf_and_decomposed_layernorm, yolo_style_head,
    expand_tile_depth_to_space,
)}

__all__: List[str] = ["ZOO", "model"]


def _lstm(direction: str, layout: int, with_state: bool) -> object:
    dirs, hidden, size, steps, batch = (2 if direction == "bidirectional" else 1), 6, 5, 7, 2
    x_shape = (batch, steps, size) if layout else (steps, batch, size)
    s_shape = (batch, dirs, hidden) if layout else (dirs, batch, hidden)
    inputs = {"x": x_shape}
    names = ["x", "w", "r", "b", "", "h0" if with_state else "", "c0" if with_state else ""]
    if with_state:
        inputs.update({"h0": s_shape, "c0": s_shape})
    return model([helper.make_node("LSTM", names, ["y", "yh", "yc"], hidden_size=hidden, direction=direction,
                                   layout=layout)],
                 inputs, ["y", "yh", "yc"],
                 {"w": _w(dirs, 4 * hidden, size), "r": _w(dirs, 4 * hidden, hidden), "b": _w(dirs, 8 * hidden)})


def lstm_forward_with_state() -> object:
    return _lstm("forward", 0, True)


def lstm_bidirectional() -> object:
    return _lstm("bidirectional", 0, False)


def lstm_reverse() -> object:
    return _lstm("reverse", 0, True)


ZOO.update({f.__name__: f for f in (lstm_forward_with_state, lstm_bidirectional, lstm_reverse)})

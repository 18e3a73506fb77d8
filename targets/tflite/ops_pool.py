"""Pooling: MaxPool, AveragePool (1-D and 2-D), GlobalAveragePool, GlobalMaxPool."""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..lowering import GraphView, Node
from .context import NHWC, NLC, Context, as_2d, inverse, lift_1d
from .ir import QuantRole
from .ops_conv import SAME, VALID, _explicit_pad, padding_mode

#: padding value for max pooling (PADV2) that never wins
_NEG = float(np.finfo(np.float32).min)


def _pool_attrs(view: GraphView, node: Node) -> Tuple[List[int], List[int], List[int]]:
    kernel = list(node.attr("kernel_shape"))
    n = len(kernel)
    strides = list(node.attr("strides", [1] * n))
    pads = list(node.attr("pads", [0] * (2 * n)))
    auto = node.attr("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        from .ops_conv import same_pads

        sizes = (view.shape(node.input(0)) or ())[2:]
        for i in range(n):
            b, a = same_pads(sizes[i], kernel[i], strides[i], 1)
            pads[i], pads[i + n] = (a, b) if auto == "SAME_LOWER" else (b, a)
    if node.attr("ceil_mode", 0):
        # extra end padding so that floor division gives ceil's size (the window must start inside)
        sizes = (view.shape(node.input(0)) or ())[2:]
        for i in range(n):
            total = sizes[i] + pads[i] + pads[i + n]
            out_ceil = math.ceil((total - kernel[i]) / strides[i]) + 1
            if (out_ceil - 1) * strides[i] >= sizes[i] + pads[i]:
                out_ceil -= 1
            extra = max((out_ceil - 1) * strides[i] + kernel[i] - total, 0)
            pads[i + n] += extra
    return kernel, strides, pads


def check_pool(node: Node, view: GraphView) -> Optional[str]:
    kernel = node.attr("kernel_shape")
    if kernel is None or len(kernel) not in (1, 2):
        return "only 1-D and 2-D pooling lower to TFLite"
    if any(d != 1 for d in node.attr("dilations", [1] * len(kernel))):
        return "dilated pooling has no TFLite lowering"
    if node.op_type == "MaxPool" and len(node.outputs) > 1 and node.outputs[1]:
        return "MaxPool's Indices output has no TFLite lowering"
    if node.op_type == "AveragePool":
        k, s, pads = _pool_attrs(view, node)
        sizes = (view.shape(node.input(0)) or ())[2:]
        if len(k) == 1:
            k, s, sizes, pads = k + [1], s + [1], list(sizes) + [1], [pads[0], 0, pads[1], 0]
        mode = padding_mode(sizes, k, s, [1, 1], pads)
        if node.attr("ceil_mode", 0) and mode is None:
            return "ceil_mode with padding has no exact TFLite lowering for AveragePool"
    return None


def lower_pool(ctx: Context, node: Node) -> None:
    view = ctx.view
    kernel, strides, pads = _pool_attrs(view, node)
    shape = ctx.shape(node.input(0))
    is1d = len(kernel) == 1
    if is1d:
        n, c, length = shape
        x = ctx.reshape(ctx.get(node.input(0), NLC), as_2d(n, length, c), f"{node.input(0)}/as2d")
        kernel, strides, pads = lift_1d(kernel, 1), lift_1d(strides, 1), [pads[0], 0, pads[1], 0]
    else:
        x = ctx.get(node.input(0), NHWC)
    sizes = ctx.graph.tensors[x].shape[1:3]
    mode = padding_mode(sizes, kernel, strides, [1, 1], pads)
    is_max = node.op_type == "MaxPool"
    correction = None
    if mode is None or (mode == SAME and not is_max and node.attr("count_include_pad", 0)):
        if not is_max and not node.attr("count_include_pad", 0):
            correction = _exclusive_pad_correction(sizes, kernel, strides, pads)
        x = _explicit_pad(ctx, x, pads, _NEG if is_max else None, f"{node.name}/pad")
        mode = VALID
    act, out_name = ctx.fusable_activation(node.outputs[0])
    opts = ctx.options("Pool2DOptions", padding=mode, strideH=strides[0], strideW=strides[1],
                       filterHeight=kernel[0], filterWidth=kernel[1], fusedActivationFunction=act)
    opcode = "MAX_POOL_2D" if is_max else "AVERAGE_POOL_2D"
    if is1d:
        n, c, length = ctx.shape(out_name)
        y2 = ctx.new_tensor(f"{out_name}/2d", as_2d(n, length, c))
        ctx.op(opcode, [x], [y2], opts, role=QuantRole.SAME)
        ctx.define(out_name, ctx.reshape(y2, (n, length, c), out_name), NLC)
    elif correction is not None:
        # zero-padded average * (window size / valid count) = ONNX's count_include_pad=0 average
        full = ctx.new_tensor(f"{out_name}/padded_avg", ctx.graph.tensors[x].shape[:1] + correction.shape[1:3]
                              + ctx.graph.tensors[x].shape[3:])
        ctx.op(opcode, [x], [full], opts, role=QuantRole.SAME)
        y = ctx.output(out_name, NHWC)
        ctx.op("MUL", [full, ctx.const_tensor(f"{node.name}/count_correction", correction)], [y],
               ctx.options("MulOptions"), role=QuantRole.FREE)
    else:
        y = ctx.output(out_name, NHWC)
        ctx.op(opcode, [x], [y], opts, role=QuantRole.SAME)
    if out_name != node.outputs[0]:
        ctx.values.setdefault(node.outputs[0], ctx.values[out_name])


def _exclusive_pad_correction(sizes: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
                              pads: Sequence[int]) -> np.ndarray:
    """[1, OH, OW, 1] factors: window area / number of window cells inside the unpadded input."""
    factors = []
    for i in range(2):
        n, k, s, b, e = sizes[i], kernel[i], strides[i], pads[i], pads[i + 2]
        out = (n + b + e - k) // s + 1
        starts = np.arange(out) * s - b
        valid = np.minimum(starts + k, n) - np.maximum(starts, 0)
        factors.append(k / np.maximum(valid, 1))
    return (factors[0][:, None] * factors[1][None, :]).astype(np.float32)[None, :, :, None]


def lower_global_pool(ctx: Context, node: Node) -> None:
    """MEAN / REDUCE_MAX over the spatial axes, keeping dims, in whatever layout the input has."""
    name = node.input(0)
    rank = len(ctx.shape(name))
    perm = ctx.perm_of(name)
    inv = inverse(perm)
    x = ctx.get(name, perm)
    axes = sorted(inv[a] for a in range(2, rank))
    y = ctx.output(node.outputs[0], perm)
    opcode = "MEAN" if node.op_type == "GlobalAveragePool" else "REDUCE_MAX"
    ctx.op(opcode, [x, ctx.int32(f"{node.name}/axes", axes)], [y], ctx.options("ReducerOptions", keepDims=True),
           role=QuantRole.FREE if opcode == "MEAN" else QuantRole.SAME)

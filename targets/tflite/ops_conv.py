"""Convolutions and matrix products: Conv (1-D/2-D, depthwise), ConvTranspose, Gemm, MatMul."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..lowering import GraphView, Node
from .context import NHWC, NLC, Context, as_2d, identity, lift_1d
from .ir import QuantRole

VALID, SAME = 1, 0  # tflite Padding enum values (SAME = 0, VALID = 1)


def same_pads(size: int, k: int, s: int, d: int) -> Tuple[int, int]:
    """TFLite's SAME padding for one axis: (before, after)."""
    k_eff = (k - 1) * d + 1
    out = -(-size // s)
    total = max((out - 1) * s + k_eff - size, 0)
    return total // 2, total - total // 2


def padding_mode(sizes: Sequence[int], kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int],
                 pads: Sequence[int]) -> Optional[int]:
    """VALID or SAME when ONNX's explicit pads equal one of them, else None (an explicit PAD is needed)."""
    n = len(sizes)
    begins, ends = list(pads[:n]), list(pads[n:])
    if not any(begins) and not any(ends):
        return VALID
    if all(same_pads(sizes[i], kernel[i], strides[i], dilations[i]) == (begins[i], ends[i]) for i in range(n)):
        return SAME
    return None


def conv_attrs(view: GraphView, node: Node) -> Tuple[List[int], List[int], List[int], List[int], int]:
    """(kernel, strides, dilations, pads, group) with auto_pad resolved to explicit pads."""
    w = view.shape(node.input(1)) or ()
    spatial = len(w) - 2
    kernel = list(node.attr("kernel_shape", w[2:]))
    strides = list(node.attr("strides", [1] * spatial))
    dil = list(node.attr("dilations", [1] * spatial))
    pads = list(node.attr("pads", [0] * (2 * spatial)))
    auto = node.attr("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        sizes = (view.shape(node.input(0)) or ())[2:]
        pads = [0] * (2 * spatial)
        for i in range(spatial):
            b, a = same_pads(sizes[i], kernel[i], strides[i], dil[i])
            if auto == "SAME_LOWER":
                b, a = a, b
            pads[i], pads[i + spatial] = b, a
    elif auto == "VALID":
        pads = [0] * (2 * spatial)
    return kernel, strides, dil, pads, int(node.attr("group", 1))


def check_conv(node: Node, view: GraphView) -> Optional[str]:
    w = view.const(node.input(1))
    if w is None:
        return "the weights are computed at run time; TFLite convolutions need constant filters"
    if node.input(2) and view.const(node.input(2)) is None:
        return "the bias is computed at run time; TFLite convolutions need a constant bias"
    if w.ndim not in (3, 4):
        return f"{w.ndim - 2}-D convolution; only 1-D and 2-D lower to TFLite CONV_2D"
    x = view.shape(node.input(0)) or ()
    group = int(node.attr("group", 1))
    if group != 1:
        cin = x[1]
        if not (group == cin and w.shape[0] % cin == 0 and w.shape[1] == 1):
            return f"grouped convolution (group={group} of {cin} channels); only group=1 and depthwise lower"
    return None


def _to_2d_input(ctx: Context, name: str) -> Tuple[int, bool]:
    """NHWC input; a 1-D conv's NCL input becomes [N, 1, L, C]."""
    shape = ctx.shape(name)
    if len(shape) == 4:
        return ctx.get(name, NHWC), False
    nlc = ctx.get(name, NLC)
    n, c, length = shape
    return ctx.reshape(nlc, as_2d(n, length, c), f"{name}/as2d"), True


def _explicit_pad(ctx: Context, x: int, pads_hw: Sequence[int], value: Optional[float], name: str) -> int:
    """PAD (zeros) / PADV2 (value) on the H and W axes of an NHWC tensor; pads_hw = [hb, wb, ha, wa]."""
    t = ctx.graph.tensors[x]
    hb, wb, ha, wa = pads_hw
    paddings = np.array([[0, 0], [hb, ha], [wb, wa], [0, 0]], np.int32)
    shape = (t.shape[0], t.shape[1] + hb + ha, t.shape[2] + wb + wa, t.shape[3])
    out = ctx.new_tensor(name, shape, t.dtype)
    pads_t = ctx.const_tensor(name + "/paddings", paddings)
    if value is None or value == 0.0:
        ctx.op("PAD", [x, pads_t], [out], ctx.options("PadOptions"), role=QuantRole.SAME)
    else:
        v = ctx.const_tensor(name + "/value", np.array([value], np.float32).reshape(()))
        ctx.op("PADV2", [x, pads_t, v], [out], ctx.options("PadV2Options"), role=QuantRole.SAME)
    return out


def lower_conv(ctx: Context, node: Node) -> None:
    view = ctx.view
    w = np.asarray(view.const(node.input(1)), np.float32)
    kernel, strides, dil, pads, group = conv_attrs(view, node)
    x, is1d = _to_2d_input(ctx, node.input(0))
    if is1d:
        w = w[:, :, :, None]
        kernel, strides, dil = lift_1d(kernel, 1), lift_1d(strides, 1), lift_1d(dil, 1)
        pads = [pads[0], 0, pads[1], 0]
    cout = w.shape[0]
    b = view.const(node.input(2)) if node.input(2) else None
    bias = np.zeros(cout, np.float32) if b is None else np.asarray(b, np.float32).reshape(cout)
    xt = ctx.graph.tensors[x]
    sizes = xt.shape[1:3]
    mode = padding_mode(sizes, kernel, strides, dil, pads)
    if mode is None:
        x = _explicit_pad(ctx, x, pads, None, f"{node.name}/pad")
        mode = VALID
        sizes = ctx.graph.tensors[x].shape[1:3]
    act, out_name = ctx.fusable_activation(node.outputs[0])
    depthwise = group != 1
    if depthwise:
        # [O, 1, kh, kw] -> [1, kh, kw, O]; output o reads input channel o // multiplier in both formats
        filt = w[:, 0].transpose(1, 2, 0)[None]
        opts = ctx.options("DepthwiseConv2DOptions", padding=mode, strideH=strides[0], strideW=strides[1],
                           depthMultiplier=cout // xt.shape[3], dilationHFactor=dil[0], dilationWFactor=dil[1],
                           fusedActivationFunction=act)
        opcode, role = "DEPTHWISE_CONV_2D", QuantRole.DEPTHWISE
    else:
        filt = w.transpose(0, 2, 3, 1)  # OIHW -> OHWI
        opts = ctx.options("Conv2DOptions", padding=mode, strideH=strides[0], strideW=strides[1],
                           dilationHFactor=dil[0], dilationWFactor=dil[1], fusedActivationFunction=act)
        opcode, role = "CONV_2D", QuantRole.CONV
    f_t = ctx.const_tensor(f"{node.name}/filter", filt)
    b_t = ctx.const_tensor(f"{node.name}/bias", bias)
    out_shape = ctx.shape(out_name)
    if is1d:
        n, c, length = out_shape
        y2 = ctx.new_tensor(f"{out_name}/2d", as_2d(n, length, c))
        ctx.op(opcode, [x, f_t, b_t], [y2], opts, role=role)
        y = ctx.reshape(y2, (n, length, c), out_name)
        ctx.define(out_name, y, NLC)
    else:
        y = ctx.output(out_name, NHWC)
        ctx.op(opcode, [x, f_t, b_t], [y], opts, role=role)
    if out_name != node.outputs[0]:
        ctx.values.setdefault(node.outputs[0], ctx.values[out_name])  # pre-activation is never read


def check_conv_transpose(node: Node, view: GraphView) -> Optional[str]:
    w = view.const(node.input(1))
    if w is None or w.ndim != 4:
        return "needs constant 2-D weights"
    if int(node.attr("group", 1)) != 1:
        return f"grouped transposed convolution (group={node.attr('group')}) has no TFLite lowering"
    if any(d != 1 for d in node.attr("dilations", [1, 1])):
        return "dilated transposed convolution has no TFLite lowering"
    if node.input(2) and view.const(node.input(2)) is None:
        return "the bias is computed at run time"
    return None


def lower_conv_transpose(ctx: Context, node: Node) -> None:
    view = ctx.view
    w = np.asarray(view.const(node.input(1)), np.float32)  # [Cin, Cout, kh, kw]
    cin, cout, kh, kw = w.shape
    strides = list(node.attr("strides", [1, 1]))
    n, _, h, wd = ctx.shape(node.input(0))
    out_shape = ctx.shape(node.outputs[0])
    full_h = (h - 1) * strides[0] + kh
    full_w = (wd - 1) * strides[1] + kw
    pads = list(node.attr("pads", [0, 0, 0, 0]))
    auto = node.attr("auto_pad", "NOTSET")
    oh, ow = out_shape[2], out_shape[3]
    if auto in ("SAME_UPPER", "SAME_LOWER") or "output_shape" in node.attrs:
        th, tw = max(full_h - oh, 0), max(full_w - ow, 0)
        if auto == "SAME_LOWER":
            pads = [th - th // 2, tw - tw // 2, th // 2, tw // 2]
        else:
            pads = [th // 2, tw // 2, th - th // 2, tw - tw // 2]
    x = ctx.get(node.input(0), NHWC)
    filt = w.transpose(1, 2, 3, 0)  # -> [Cout, kh, kw, Cin]
    b = view.const(node.input(2)) if node.input(2) else None
    bias = np.zeros(cout, np.float32) if b is None else np.asarray(b, np.float32).reshape(cout)
    f_t = ctx.const_tensor(f"{node.name}/filter", filt)
    b_t = ctx.const_tensor(f"{node.name}/bias", bias)
    crop = (pads[0], pads[1]) != (0, 0) or (full_h, full_w) != (oh, ow)
    target = (n, full_h, full_w, cout)
    shape_t = ctx.int32(f"{node.name}/output_shape", target)
    opts = ctx.options("TransposeConvOptions", padding=VALID, strideH=strides[0], strideW=strides[1])
    if not crop:
        y = ctx.output(node.outputs[0], NHWC)
        ctx.op("TRANSPOSE_CONV", [shape_t, f_t, x, b_t], [y], opts, role=QuantRole.TRANSPOSE_CONV).version = 3
        return
    full = ctx.new_tensor(f"{node.outputs[0]}/full", target)
    ctx.op("TRANSPOSE_CONV", [shape_t, f_t, x, b_t], [full], opts, role=QuantRole.TRANSPOSE_CONV).version = 3
    if full_h < oh + pads[0] or full_w < ow + pads[1]:
        # output_padding grows the output past the full result: pad with zeros (what ONNX computes there)
        eh, ew = max(oh + pads[0] - full_h, 0), max(ow + pads[1] - full_w, 0)
        full = _explicit_pad(ctx, full, [0, 0, eh, ew], None, f"{node.outputs[0]}/outpad")
    y = ctx.output(node.outputs[0], NHWC)
    begin = ctx.int32(f"{node.name}/begin", [0, pads[0], pads[1], 0])
    size = ctx.int32(f"{node.name}/size", [n, oh, ow, cout])
    ctx.op("SLICE", [full, begin, size], [y], ctx.options("SliceOptions"), role=QuantRole.SAME)


def check_gemm(node: Node, view: GraphView) -> Optional[str]:
    if node.attr("transA", 0):
        return "transA=1 has no FULLY_CONNECTED lowering"
    if view.const(node.input(1)) is None:
        return "B is computed at run time; FULLY_CONNECTED needs constant weights"
    if node.input(2):
        c = view.const(node.input(2))
        n = (view.shape(node.outputs[0]) or (0, 0))[-1]
        if c is None or c.size not in (1, n):
            return "C must be a constant of N (or 1) elements"
    return None


def _fully_connected(ctx: Context, node: Node, x_name: str, weights: np.ndarray, bias: np.ndarray) -> None:
    """FULLY_CONNECTED over the last axis; higher-rank inputs are flattened to 2-D and back."""
    x_shape = ctx.shape(x_name)
    out_name_pre = node.outputs[0]
    act, out_name = ctx.fusable_activation(out_name_pre)
    w_t = ctx.const_tensor(f"{node.name}/weights", weights.astype(np.float32))
    b_t = ctx.const_tensor(f"{node.name}/bias", bias.astype(np.float32))
    opts = ctx.options("FullyConnectedOptions", fusedActivationFunction=act)
    x = ctx.get(x_name)
    out_shape = ctx.shape(out_name)
    if len(x_shape) == 2:
        y = ctx.output(out_name)
        ctx.op("FULLY_CONNECTED", [x, w_t, b_t], [y], opts, role=QuantRole.FULLY_CONNECTED)
    else:
        rows = int(np.prod(x_shape[:-1]))
        x2 = ctx.reshape(x, (rows, x_shape[-1]), f"{x_name}/2d")
        y2 = ctx.new_tensor(f"{out_name}/2d", (rows, weights.shape[0]))
        ctx.op("FULLY_CONNECTED", [x2, w_t, b_t], [y2], opts, role=QuantRole.FULLY_CONNECTED)
        ctx.define(out_name, ctx.reshape(y2, out_shape, out_name))
    if out_name != out_name_pre:
        ctx.values.setdefault(out_name_pre, ctx.values[out_name])


def lower_gemm(ctx: Context, node: Node) -> None:
    view = ctx.view
    b = np.asarray(view.const(node.input(1)), np.float32)
    w = b if node.attr("transB", 0) else b.T
    w = w * float(node.attr("alpha", 1.0))
    n = w.shape[0]
    bias = np.zeros(n, np.float32)
    if node.input(2):
        bias = np.broadcast_to(np.asarray(view.const(node.input(2)), np.float32).reshape(-1), (n,)) * float(
            node.attr("beta", 1.0))
    _fully_connected(ctx, node, node.input(0), w, bias)


def check_matmul(node: Node, view: GraphView) -> Optional[str]:
    a, b = view.shape(node.input(0)), view.shape(node.input(1))
    if a is None or b is None:
        return "needs static shapes"
    if len(a) < 2 or len(b) < 2:
        return "1-D MatMul operands have no TFLite lowering"
    if view.const(node.input(0)) is not None and view.const(node.input(1)) is None:
        return "a constant left operand has no TFLite lowering (transpose the product in the model)"
    return None


def lower_matmul(ctx: Context, node: Node) -> None:
    view = ctx.view
    b = view.const(node.input(1))
    if b is not None and b.ndim == 2:
        _fully_connected(ctx, node, node.input(0), np.asarray(b, np.float32).T, np.zeros(b.shape[1], np.float32))
        return
    out = node.outputs[0]
    rank = len(ctx.shape(out))
    xa, adj_x = _matmul_operand(ctx, node.input(0), rank)
    xb, adj_y = _matmul_operand(ctx, node.input(1), rank)
    y = ctx.output(out)
    ctx.op("BATCH_MATMUL", [xa, xb], [y], ctx.options("BatchMatMulOptions", adjX=adj_x, adjY=adj_y),
           role=QuantRole.FREE)


def _matmul_operand(ctx: Context, name: str, rank: int) -> Tuple[int, bool]:
    """An operand in ONNX order, or with its last two axes swapped (BATCH_MATMUL's adj flag),
    whichever the current layout already is: a K^T computed by a Transpose costs nothing."""
    have = ctx.perm_of(name)
    if len(have) == rank and rank >= 2 and name in ctx.values:
        swapped = identity(rank)[:-2] + (rank - 1, rank - 2)
        if tuple(have) == swapped:
            return ctx.values[name][0], True
    return ctx.get(name, rank=rank), False

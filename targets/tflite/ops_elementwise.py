"""Elementwise ops, activations (plain and fused patterns), Softmax and LayerNorm."""
from __future__ import annotations

import math
from typing import List, Optional

import numpy as np

from ..lowering import GraphView, Node, clip_bounds, needs_const, scalar
from .context import ACT_NONE, ACT_RELU6, Context, Perm, identity, inverse
from .ir import QuantRole

#: ONNX binary op -> (TFLite op, its options type, takes a fused activation)
BINARY = {
    "Add": ("ADD", "AddOptions", True),
    "Sub": ("SUB", "SubOptions", True),
    "Mul": ("MUL", "MulOptions", True),
    "Div": ("DIV", "DivOptions", True),
    "Pow": ("POW", "PowOptions", False),
    "Max": ("MAXIMUM", "MaximumMinimumOptions", False),
    "Min": ("MINIMUM", "MaximumMinimumOptions", False),
    "Equal": ("EQUAL", "EqualOptions", False),
    "Less": ("LESS", "LessOptions", False),
    "LessOrEqual": ("LESS_EQUAL", "LessEqualOptions", False),
    "Greater": ("GREATER", "GreaterOptions", False),
    "GreaterOrEqual": ("GREATER_EQUAL", "GreaterEqualOptions", False),
    "And": ("LOGICAL_AND", "LogicalAndOptions", False),
    "Or": ("LOGICAL_OR", "LogicalOrOptions", False),
}
#: ops without an int8 kernel in TFLite: computed in float between DEQUANTIZE/QUANTIZE
_FLOAT_ONLY = {"DIV", "POW", "SQRT", "LOG", "SIN", "COS", "FLOOR", "CEIL", "ROUND"}
_COMPARE = {"EQUAL", "LESS", "LESS_EQUAL", "GREATER", "GREATER_EQUAL", "LOGICAL_AND", "LOGICAL_OR"}

#: ONNX unary op -> TFLite op (no options)
UNARY = {
    "Relu": "RELU", "Sigmoid": "LOGISTIC", "Tanh": "TANH", "Exp": "EXP", "Log": "LOG", "Sqrt": "SQRT",
    "Abs": "ABS", "Neg": "NEG", "Floor": "FLOOR", "Ceil": "CEIL", "Round": "ROUND", "Sin": "SIN", "Cos": "COS",
    "HardSwish": "HARD_SWISH", "Not": "LOGICAL_NOT", "Sign": "SIGN", "Reciprocal": None,
}
#: spec-fixed int8 output ranges (scale, zero point)
FIXED = {"LOGISTIC": (1.0 / 256, -128), "TANH": (1.0 / 128, 0), "SOFTMAX": (1.0 / 256, -128)}


def _layout(ctx: Context, names: List[str], rank: int) -> Perm:
    """The layout an elementwise op runs in: that of its first full-rank computed input."""
    for n in names:
        if n and not ctx.view.is_const(n) and len(ctx.shape(n)) == rank:
            return ctx.perm_of(n)
    return identity(rank)


def _role(opcode: str) -> QuantRole:
    if opcode in _FLOAT_ONLY:
        return QuantRole.FLOAT
    if opcode in FIXED:
        return QuantRole.FIXED
    return QuantRole.FREE


def emit_binary(ctx: Context, opcode: str, options_kind: str, a: str, b: str, out: str, act: int = ACT_NONE,
                options: Optional[dict] = None) -> int:
    rank = len(ctx.shape(out))
    perm = _layout(ctx, [a, b], rank)
    xa, xb = ctx.get(a, perm, rank=rank), ctx.get(b, perm, rank=rank)
    fields = dict(options or {})
    if act != ACT_NONE:
        fields["fusedActivationFunction"] = act
    dtype = "bool" if opcode in _COMPARE else None
    y = ctx.output(out, perm, dtype=dtype)
    role = QuantRole.INDEX if opcode in _COMPARE and opcode.startswith("LOGICAL") else _role(opcode)
    ctx.op(opcode, [xa, xb], [y], ctx.options(options_kind, **fields), role=role)
    return y


def check_binary(node: Node, view: GraphView) -> Optional[str]:
    if node.op_type == "Pow":
        e = view.const(node.input(1))
        if e is None:
            return None
    if node.op_type in ("Max", "Min") and len(node.inputs) != 2:
        return f"{node.op_type} of {len(node.inputs)} inputs; only two lower"
    return None


def lower_binary(ctx: Context, node: Node) -> None:
    opcode, kind, fusable = BINARY[node.op_type]
    a, b = node.input(0), node.input(1)
    view = ctx.view
    if node.op_type == "Pow":
        e = scalar(view.const(b))
        if e == 2.0:
            emit_binary(ctx, "MUL", "MulOptions", a, a, node.outputs[0])
            return
        if e == 0.5:
            _unary(ctx, "SQRT", a, node.outputs[0])
            return
        if e == 1.0:
            ctx.values[node.outputs[0]] = ctx.values[a] if a in ctx.values else (ctx.get(a), identity(len(ctx.shape(a))))
            return
    if node.op_type == "Div" and view.is_const(b) and np.issubdtype(view.const(b).dtype, np.floating) \
            and np.all(view.const(b) != 0):
        # x / c -> x * (1/c): MUL has an int8 kernel and is cheaper everywhere
        recip = f"{node.name}/reciprocal"
        view.set_constant(recip, (1.0 / np.asarray(view.const(b), np.float64)).astype(view.const(b).dtype))
        opcode, kind, b = "MUL", "MulOptions", recip
    act, out = ctx.fusable_activation(node.outputs[0]) if fusable else (ACT_NONE, node.outputs[0])
    emit_binary(ctx, opcode, kind, a, b, out, act)
    if out != node.outputs[0]:
        ctx.values.setdefault(node.outputs[0], ctx.values[out])


def _unary(ctx: Context, opcode: str, src: str, out: str, options: object = None,
           options_type: Optional[str] = None) -> int:
    perm = ctx.perm_of(src)
    x = ctx.get(src, perm)
    y = ctx.output(out, perm)
    role = _role(opcode)
    ctx.op(opcode, [x], [y], options, options_type, role=role, fixed_output=FIXED.get(opcode))
    return y


def lower_unary(ctx: Context, node: Node) -> None:
    if node.op_type == "Reciprocal":
        one = f"{node.name}/one"
        ctx.view.set_constant(one, np.ones((), np.float32))
        emit_binary(ctx, "DIV", "DivOptions", one, node.input(0), node.outputs[0])
        return
    _unary(ctx, UNARY[node.op_type], node.input(0), node.outputs[0])


def lower_identity(ctx: Context, node: Node) -> None:
    src = node.input(0)
    if ctx.view.is_const(src):
        ctx.view.set_constant(node.outputs[0], ctx.view.const(src))
        return
    ctx.values[node.outputs[0]] = ctx.values[src]


def check_clip(node: Node, view: GraphView) -> Optional[str]:
    lo, hi = clip_bounds(view, node)
    if math.isnan(lo) or math.isnan(hi):
        return "min/max computed at run time; TFLite needs constant bounds"
    return None


def lower_clip(ctx: Context, node: Node) -> None:
    lo, hi = clip_bounds(ctx.view, node)
    src, out = node.input(0), node.outputs[0]
    if (lo, hi) == (0.0, 6.0):
        _unary(ctx, "RELU6", src, out)
    elif (lo, hi) == (-1.0, 1.0):
        _unary(ctx, "RELU_N1_TO_1", src, out)
    elif lo == 0.0 and hi == math.inf:
        _unary(ctx, "RELU", src, out)
    else:
        cur = src
        if lo != -math.inf:
            name = f"{node.name}/min" if hi != math.inf else out
            if hi != math.inf:
                ctx.view.shapes[name] = ctx.shape(src)
            c = f"{node.name}/lo"
            ctx.view.set_constant(c, np.array(lo, np.float32))
            emit_binary(ctx, "MAXIMUM", "MaximumMinimumOptions", cur, c, name)
            cur = name
        if hi != math.inf:
            c = f"{node.name}/hi"
            ctx.view.set_constant(c, np.array(hi, np.float32))
            emit_binary(ctx, "MINIMUM", "MaximumMinimumOptions", cur, c, out)
        if cur == src and hi == math.inf and lo == -math.inf:
            lower_identity(ctx, node)


def lower_leaky_relu(ctx: Context, node: Node) -> None:
    _unary(ctx, "LEAKY_RELU", node.input(0), node.outputs[0],
           ctx.options("LeakyReluOptions", alpha=float(node.attr("alpha", 0.01))))


def check_elu(node: Node, view: GraphView) -> Optional[str]:
    return None if abs(node.attr("alpha", 1.0) - 1.0) < 1e-6 else "Elu with alpha != 1 has no TFLite lowering"


def lower_elu(ctx: Context, node: Node) -> None:
    _unary(ctx, "ELU", node.input(0), node.outputs[0])


check_prelu = needs_const(1, what="the slope", emitter="TFLite")


def lower_prelu(ctx: Context, node: Node) -> None:
    src, out = node.input(0), node.outputs[0]
    rank = len(ctx.shape(src))
    perm = ctx.perm_of(src)
    x = ctx.get(src, perm)
    slope = np.asarray(ctx.view.const(node.input(1)), np.float32)
    slope = slope.reshape((1,) * (rank - slope.ndim) + slope.shape).transpose(perm)
    alpha = ctx.const_tensor(f"{node.name}/alpha", slope[0] if slope.shape[0] == 1 else slope)
    y = ctx.output(out, perm)
    ctx.op("PRELU", [x, alpha], [y], role=QuantRole.FREE)


def lower_hard_sigmoid(ctx: Context, node: Node) -> None:
    """clip(alpha x + beta, 0, 1) = RELU6(6 alpha x + 6 beta) / 6: three XNNPACK-friendly ops."""
    alpha, beta = float(node.attr("alpha", 0.2)), float(node.attr("beta", 0.5))
    src, out = node.input(0), node.outputs[0]
    shape = ctx.shape(src)
    view = ctx.view
    a, b, sixth = f"{node.name}/6alpha", f"{node.name}/6beta", f"{node.name}/sixth"
    view.set_constant(a, np.array(6 * alpha, np.float32))
    view.set_constant(b, np.array(6 * beta, np.float32))
    view.set_constant(sixth, np.array(1 / 6, np.float32))
    t1, t2 = f"{out}/scaled", f"{out}/relu6"
    view.shapes[t1] = view.shapes[t2] = shape
    emit_binary(ctx, "MUL", "MulOptions", src, a, t1)
    emit_binary(ctx, "ADD", "AddOptions", t1, b, t2, ACT_RELU6)
    emit_binary(ctx, "MUL", "MulOptions", t2, sixth, out)


def lower_silu(ctx: Context, node: Node) -> None:
    src, out = node.input(0), node.outputs[0]
    sig = f"{out}/sigmoid"
    ctx.view.shapes[sig] = ctx.shape(src)
    _unary(ctx, "LOGISTIC", src, sig)
    emit_binary(ctx, "MUL", "MulOptions", src, sig, out)


def lower_gelu(ctx: Context, node: Node) -> None:
    approx = node.attr("approximate", "none") == "tanh"
    _unary(ctx, "GELU", node.input(0), node.outputs[0], ctx.options("GeluOptions", approximate=approx))


def check_softmax(node: Node, view: GraphView) -> Optional[str]:
    if view.default_opset < 13 and node.is_default_domain:
        return "Softmax before opset 13 flattens its input (canonicalization converts the model to 13)"
    return None


def lower_softmax(ctx: Context, node: Node) -> None:
    src, out = node.input(0), node.outputs[0]
    rank = len(ctx.shape(src))
    axis = int(node.attr("axis", -1)) % rank
    have = ctx.perm_of(src)
    # SOFTMAX works on the last TFLite axis: pick a layout with the ONNX axis last
    perm = have if have[-1] == axis else tuple(a for a in have if a != axis) + (axis,)
    x = ctx.get(src, perm)
    y = ctx.output(out, perm)
    if node.op_type == "LogSoftmax":
        ctx.op("LOG_SOFTMAX", [x], [y], ctx.options("LogSoftmaxOptions"), role=QuantRole.FIXED,
               fixed_output=(16.0 / 256, 127))
    else:
        ctx.op("SOFTMAX", [x], [y], ctx.options("SoftmaxOptions", beta=1.0), role=QuantRole.FIXED,
               fixed_output=FIXED["SOFTMAX"])


def check_layernorm(node: Node, view: GraphView) -> Optional[str]:
    shape = view.shape(node.input(0))
    axis = int(node.attr("axis", -1))
    if shape is None or axis % len(shape) != len(shape) - 1:
        return f"normalizing from axis {axis} (over more than the last axis) has no lowering here"
    return needs_const(1, 2, what="scale/bias", emitter="TFLite")(node, view)


def lower_layernorm(ctx: Context, node: Node) -> None:
    """MEAN, SUB, MUL (square), MEAN, ADD eps, RSQRT, MUL, MUL gamma, ADD beta over the last ONNX axis."""
    view = ctx.view
    src, out = node.input(0), node.outputs[0]
    shape = ctx.shape(src)
    rank = len(shape)
    perm = ctx.perm_of(src)
    axis = inverse(perm)[rank - 1]
    x = ctx.get(src, perm)
    tshape = ctx.graph.tensors[x].shape
    reduced = tuple(1 if i == axis else d for i, d in enumerate(tshape))
    axes = ctx.int32(f"{node.name}/axes", [axis])
    keep = ctx.options("ReducerOptions", keepDims=True)
    p = node.name
    mean = ctx.new_tensor(f"{p}/mean", reduced)
    ctx.op("MEAN", [x, axes], [mean], keep)
    d = ctx.new_tensor(f"{p}/centered", tshape)
    ctx.op("SUB", [x, mean], [d], ctx.options("SubOptions"))
    sq = ctx.new_tensor(f"{p}/squared", tshape)
    ctx.op("MUL", [d, d], [sq], ctx.options("MulOptions"))
    var = ctx.new_tensor(f"{p}/variance", reduced)
    ctx.op("MEAN", [sq, axes], [var], ctx.options("ReducerOptions", keepDims=True))
    eps = ctx.const_tensor(f"{p}/epsilon", np.array(float(node.attr("epsilon", 1e-5)), np.float32))
    ve = ctx.new_tensor(f"{p}/variance_eps", reduced)
    ctx.op("ADD", [var, eps], [ve], ctx.options("AddOptions"))
    rs = ctx.new_tensor(f"{p}/rsqrt", reduced)
    ctx.op("RSQRT", [ve], [rs])
    normed = ctx.new_tensor(f"{p}/normalized", tshape)
    ctx.op("MUL", [d, rs], [normed], ctx.options("MulOptions"))
    width = shape[-1]
    gamma = np.broadcast_to(np.asarray(view.const(node.input(1)), np.float32).reshape(-1), (width,))
    beta = (np.broadcast_to(np.asarray(view.const(node.input(2)), np.float32).reshape(-1), (width,))
            if node.input(2) else np.zeros(width, np.float32))
    bshape = [1] * rank
    bshape[axis] = width
    g_t = ctx.const_tensor(f"{p}/gamma", gamma.reshape(bshape))
    b_t = ctx.const_tensor(f"{p}/beta", beta.reshape(bshape))
    scaled = ctx.new_tensor(f"{p}/scaled", tshape)
    ctx.op("MUL", [normed, g_t], [scaled], ctx.options("MulOptions"))
    y = ctx.output(out, perm)
    ctx.op("ADD", [scaled, b_t], [y], ctx.options("AddOptions"))


def lower_where(ctx: Context, node: Node) -> None:
    out = node.outputs[0]
    rank = len(ctx.shape(out))
    perm = _layout(ctx, list(node.inputs), rank)
    ins = [ctx.get(n, perm, rank=rank) for n in node.inputs]
    y = ctx.output(out, perm)
    ctx.op("SELECT_V2", ins, [y], ctx.options("SelectV2Options"), role=QuantRole.FLOAT)


def lower_sum(ctx: Context, node: Node) -> None:
    ins = list(node.inputs)
    if len(ins) == 1:
        lower_identity(ctx, node)
        return
    cur = ins[0]
    for i, nxt in enumerate(ins[1:]):
        last = i == len(ins) - 2
        name = node.outputs[0] if last else f"{node.name}/partial{i}"
        if not last:
            ctx.view.shapes[name] = ctx.shape(node.outputs[0])
        emit_binary(ctx, "ADD", "AddOptions", cur, nxt, name)
        cur = name


def check_batchnorm(node: Node, view: GraphView) -> Optional[str]:
    why = needs_const(1, 2, 3, 4, what="scale/bias/mean/var (training-mode BatchNormalization)",
                      emitter="TFLite")(node, view)
    if why is not None:
        return why
    if len([o for o in node.outputs if o]) > 1:
        return "training-mode outputs (running mean/var) have no inference lowering"
    return None


def lower_batchnorm(ctx: Context, node: Node) -> None:
    """An unfolded BatchNormalization (after ConvTranspose, or on its own): x * scale + shift per channel."""
    view = ctx.view
    gamma, beta, mean, var = (np.asarray(view.const(n), np.float64) for n in node.inputs[1:5])
    scale = gamma / np.sqrt(var + float(node.attr("epsilon", 1e-5)))
    shift = beta - mean * scale
    rank = len(ctx.shape(node.input(0)))
    shape = (scale.size,) + (1,) * (rank - 2)
    s, b = f"{node.name}/scale", f"{node.name}/shift"
    view.set_constant(s, scale.astype(np.float32).reshape(shape))
    view.set_constant(b, shift.astype(np.float32).reshape(shape))
    scaled = f"{node.outputs[0]}/scaled"
    view.shapes[scaled] = ctx.shape(node.input(0))
    emit_binary(ctx, "MUL", "MulOptions", node.input(0), s, scaled)
    act, out = ctx.fusable_activation(node.outputs[0])
    emit_binary(ctx, "ADD", "AddOptions", scaled, b, out, act)
    if out != node.outputs[0]:
        ctx.values.setdefault(node.outputs[0], ctx.values[out])

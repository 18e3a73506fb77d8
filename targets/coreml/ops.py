"""ONNX op → MIL emitters, and the op table that says what the lowering covers.

Each emitter takes one ONNX node and returns one value per ONNX output: a MIL
``Var`` or, when every input is known at build time, a numpy array (folded
here, so shape arithmetic never reaches the device).  The table below
(:data:`ROWS`) is the single list of what the Core ML target lowers: the
op-coverage type every emitter shares (:class:`~..lowering.OpCoverage`,
:data:`COVERAGE`) and the emitters (:data:`EMITTERS`) both come from it, so an
op missing from it, or one whose check fails, is reported by ``check`` with
the node name and the reason before anything is built.  The checks see the
node in the shared graph view (:mod:`..lowering.graph`) that the lowering walks.

Layout facts the emitters rely on (MIL, coremltools 9 ``ops/defs``):
ONNX ``pads`` are ``[b1, b2, …, e1, e2, …]`` while MIL's ``pad`` is
``[b1, e1, b2, e2, …]``; MIL ``conv`` weights are ``[Cout, Cin/groups, k…]``
like ONNX; ``linear`` takes ``weight`` as ``[out, in]`` (Gemm with transB=1).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..lowering import GraphView, NodeCheck, OpCoverage, OpRule, clip_bounds, const_ints, needs_const
from .context import Emitter, Lowering, Node, node_error
from .ops_rnn import emit_lstm, lstm_condition


def _mb() -> Any:
    from coremltools.converters.mil import Builder as mb

    return mb


def _is_var(v: Any) -> bool:
    return not isinstance(v, np.ndarray)


def _shape(v: Any) -> tuple:
    return tuple(int(d) for d in (v.shape if isinstance(v, np.ndarray) else v.shape))


def _f32(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32) if a.dtype.kind == "f" else a


def _pad_pairs(pads: Sequence[int], rank: int) -> List[int]:
    """ONNX ``[b1, b2, e1, e2]`` → MIL ``[b1, e1, b2, e2]``."""
    half = len(pads) // 2
    out: List[int] = []
    for i in range(half):
        out += [int(pads[i]), int(pads[half + i])]
    return out


def _pad_type(node: Node) -> Dict[str, Any]:
    auto = node.attr("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER",):
        return {"pad_type": "same"}
    if auto == "SAME_LOWER":
        return {"pad_type": "same_lower"}
    if auto == "VALID":
        return {"pad_type": "valid"}
    return {}


# -- checks (None = can lower): lowering.NodeCheck over the shared graph view ----------

def _needs_const(*indices: int, what: str) -> NodeCheck:
    return needs_const(*indices, what=what, emitter="Core ML")


def _all_of(*conds: NodeCheck) -> NodeCheck:
    def cond(node: Node, view: GraphView) -> Optional[str]:
        for c in conds:
            r = c(node, view)
            if r:
                return r
        return None

    return cond


def _attr_in(key: str, allowed: Sequence[Any], default: Any) -> NodeCheck:
    def cond(node: Node, view: GraphView) -> Optional[str]:
        v = node.attr(key, default)
        if v not in allowed:
            return f"{key}={v!r} is not lowered (supported: {', '.join(map(repr, allowed))})"
        return None

    return cond


# -- elementwise ------------------------------------------------------------

_NP_BINARY: Mapping[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide, "Pow": np.power,
    "Max": np.maximum, "Min": np.minimum,
}
_MIL_BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "real_div", "Pow": "pow",
               "Max": "maximum", "Min": "minimum"}


def _binary(node: Node, low: Lowering, opset: int) -> List[Any]:
    mb = _mb()
    vals = [low.get(n) for n in node.inputs]
    if all(isinstance(v, np.ndarray) for v in vals):
        out = vals[0]
        for v in vals[1:]:
            out = _NP_BINARY[node.op_type](out, v)
        return [np.asarray(out)]
    floaty = any(_is_var(v) for v in vals)
    vals = [_f32(v.astype(np.float32)) if isinstance(v, np.ndarray) and floaty and v.dtype.kind in "iu" else v
            for v in vals]
    op = getattr(mb, _MIL_BINARY[node.op_type])
    out = vals[0]
    for i, v in enumerate(vals[1:]):
        last = i == len(vals) - 2
        out = op(x=out, y=v, name=low.unique(node.outputs[0] if last else f"{node.outputs[0]}_{i}"))
    return [out]


_UNARY = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Erf": "erf", "Exp": "exp", "Abs": "abs",
          "Sqrt": "sqrt", "Softplus": "softplus", "Floor": "floor", "Ceil": "ceil", "Sin": "sin", "Cos": "cos",
          "Softsign": "softsign", "Sign": "sign"}
_NP_UNARY = {"Relu": lambda a: np.maximum(a, 0), "Sigmoid": lambda a: 1 / (1 + np.exp(-a)), "Tanh": np.tanh,
             "Exp": np.exp, "Abs": np.abs, "Sqrt": np.sqrt, "Floor": np.floor, "Ceil": np.ceil, "Sign": np.sign,
             "Neg": np.negative, "Reciprocal": lambda a: 1 / a, "Log": np.log}


def _unary(node: Node, low: Lowering, opset: int) -> List[Any]:
    mb = _mb()
    x = low.get(node.inputs[0])
    name = low.unique(node.outputs[0])
    if isinstance(x, np.ndarray) and node.op_type in _NP_UNARY:
        return [np.asarray(_NP_UNARY[node.op_type](x))]
    if node.op_type == "Neg":
        return [mb.mul(x=x, y=np.float32(-1.0), name=name)]
    if node.op_type == "Reciprocal":  # MIL `inverse` adds epsilon=1e-4: real_div keeps ONNX's exact 1/x
        return [mb.real_div(x=np.float32(1.0), y=x, name=name)]
    if node.op_type == "Log":  # MIL `log` adds epsilon=1e-45 (no effect in fp32 besides log(0))
        return [mb.log(x=x, name=name)]
    return [getattr(mb, _UNARY[node.op_type])(x=x, name=name)]


def _leaky_relu(node: Node, low: Lowering, opset: int) -> List[Any]:
    return [_mb().leaky_relu(x=low.get(node.inputs[0]), alpha=float(node.attr("alpha", 0.01)),
                             name=low.unique(node.outputs[0]))]


def _elu(node: Node, low: Lowering, opset: int) -> List[Any]:
    return [_mb().elu(x=low.get(node.inputs[0]), alpha=float(node.attr("alpha", 1.0)), name=low.unique(node.outputs[0]))]


def _prelu(node: Node, low: Lowering, opset: int) -> List[Any]:
    # max(x, 0) + slope * min(x, 0): exact for any broadcastable slope (MIL prelu wants one per channel, rank >= 3)
    mb = _mb()
    x, slope = low.get(node.inputs[0]), low.get(node.inputs[1])
    base = node.outputs[0]
    pos = mb.relu(x=x, name=low.unique(base + "_pos"))
    neg = mb.minimum(x=x, y=np.float32(0.0), name=low.unique(base + "_negpart"))
    neg = mb.mul(x=neg, y=_f32(slope) if isinstance(slope, np.ndarray) else slope, name=low.unique(base + "_neg"))
    return [mb.add(x=pos, y=neg, name=low.unique(base))]


def _hard_sigmoid(node: Node, low: Lowering, opset: int) -> List[Any]:
    return [_mb().sigmoid_hard(x=low.get(node.inputs[0]), alpha=float(node.attr("alpha", 0.2)),
                               beta=float(node.attr("beta", 0.5)), name=low.unique(node.outputs[0]))]


def _hard_swish(node: Node, low: Lowering, opset: int) -> List[Any]:
    mb = _mb()
    x = low.get(node.inputs[0])
    gate = mb.sigmoid_hard(x=x, alpha=1.0 / 6.0, beta=0.5, name=low.unique(node.outputs[0] + "_gate"))
    return [mb.mul(x=x, y=gate, name=low.unique(node.outputs[0]))]


def _gelu(node: Node, low: Lowering, opset: int) -> List[Any]:
    mode = "TANH_APPROXIMATION" if node.attr("approximate", "none") == "tanh" else "EXACT"
    return [_mb().gelu(x=low.get(node.inputs[0]), mode=mode, name=low.unique(node.outputs[0]))]


def _clip(node: Node, low: Lowering, opset: int) -> List[Any]:
    mb = _mb()
    x = low.get(node.inputs[0])
    bounds = clip_bounds(low, node)  # ±inf where a bound is absent
    lo, hi = (None if np.isinf(v) else v for v in bounds)
    name = low.unique(node.outputs[0])
    if lo == 0.0 and hi == 6.0:
        return [mb.relu6(x=x, name=name)]
    if lo is not None and hi is not None:
        return [mb.clip(x=x, alpha=np.float32(lo), beta=np.float32(hi), name=name)]
    if lo is not None:  # one-sided: no ±inf bound (it would overflow fp16)
        return [mb.maximum(x=x, y=np.float32(lo), name=name)]
    if hi is not None:
        return [mb.minimum(x=x, y=np.float32(hi), name=name)]
    return [mb.identity(x=x, name=name)]


def _identity(node: Node, low: Lowering, opset: int) -> List[Any]:
    return [low.get(node.inputs[0])]


def _cast(node: Node, low: Lowering, opset: int) -> List[Any]:
    from onnx import helper

    x = low.get(node.inputs[0])
    to = np.dtype(helper.tensor_dtype_to_np_dtype(int(node.attr("to"))))
    if isinstance(x, np.ndarray):
        return [x.astype(to)]
    return [x]  # float → float casts: the program's compute precision decides (checked in `check`)


def _cast_cond(node: Node, view: GraphView) -> Optional[str]:
    from onnx import helper

    if view.is_const(node.inputs[0]):
        return None
    to = np.dtype(helper.tensor_dtype_to_np_dtype(int(node.attr("to", 1))))
    if to.kind != "f":
        return f"a run-time cast to {to.name} is not lowered (the Core ML program computes in float)"
    return None


# -- convolution, pooling, dense -------------------------------------------

def _conv_args(node: Node, low: Lowering, auto_pad: bool) -> Tuple[Any, np.ndarray, Dict[str, Any]]:
    """(x, weight, the MIL keyword arguments) shared by conv and conv_transpose."""
    w = _f32(low.const(node.inputs[1]))
    b = low.const(node.input(2)) if node.input(2) else None
    spatial = w.ndim - 2
    kwargs: Dict[str, Any] = dict(
        strides=list(node.attr("strides", [1] * spatial)),
        dilations=list(node.attr("dilations", [1] * spatial)),
        groups=int(node.attr("group", 1)),
    )
    kwargs.update((_pad_type(node) if auto_pad else {}) or
                  {"pad_type": "custom", "pad": _pad_pairs(node.attr("pads", [0] * 2 * spatial), spatial)})
    if b is not None:
        kwargs["bias"] = _f32(b)
    return low.get(node.inputs[0]), w, kwargs


def _conv(node: Node, low: Lowering, opset: int) -> List[Any]:
    x, w, kwargs = _conv_args(node, low, auto_pad=True)
    return [_mb().conv(x=x, weight=w, name=low.unique(node.outputs[0]), **kwargs)]


def _conv_transpose(node: Node, low: Lowering, opset: int) -> List[Any]:
    x, w, kwargs = _conv_args(node, low, auto_pad=False)  # auto_pad is refused by the check
    return [_mb().conv_transpose(x=x, weight=w, name=low.unique(node.outputs[0]), **kwargs)]


def _conv_transpose_cond(node: Node, view: GraphView) -> Optional[str]:
    if node.attr("auto_pad", "NOTSET") != "NOTSET" or node.attr("output_shape") is not None:
        return "auto_pad/output_shape are not lowered; export with explicit pads"
    if any(int(p) for p in node.attr("output_padding", []) or []):
        return "output_padding is not lowered"
    return _needs_const(1, 2, what="the weight or bias")(node, view)


def _batch_norm(node: Node, low: Lowering, opset: int) -> List[Any]:
    mb = _mb()
    scale, bias, mean, var = (_f32(low.const(n)) for n in node.inputs[1:5])
    return [mb.batch_norm(x=low.get(node.inputs[0]), mean=mean, variance=var, gamma=scale, beta=bias,
                          epsilon=float(node.attr("epsilon", 1e-5)), name=low.unique(node.outputs[0]))]


def _pool(node: Node, low: Lowering, opset: int) -> List[Any]:
    mb = _mb()
    x = low.get(node.inputs[0])
    kernel = list(node.attr("kernel_shape"))
    spatial = len(kernel)
    kwargs: Dict[str, Any] = dict(kernel_sizes=kernel, strides=list(node.attr("strides", [1] * spatial)),
                                  ceil_mode=bool(node.attr("ceil_mode", 0)))
    kwargs.update(_pad_type(node) or {"pad_type": "custom",
                                       "pad": _pad_pairs(node.attr("pads", [0] * 2 * spatial), spatial)})
    name = low.unique(node.outputs[0])
    if node.op_type == "MaxPool":
        return [mb.max_pool(x=x, name=name, **kwargs)]
    return [mb.avg_pool(x=x, exclude_padding_from_average=not bool(node.attr("count_include_pad", 0)),
                        name=name, **kwargs)]


def _pool_cond(node: Node, view: GraphView) -> Optional[str]:
    if len(node.outputs) > 1 and node.outputs[1]:
        return "MaxPool's indices output is not lowered"
    if any(int(d) != 1 for d in node.attr("dilations", []) or []):
        return "dilated pooling is not lowered"
    if node.attr("ceil_mode", 0) and node.attr("auto_pad", "NOTSET") != "NOTSET":
        return "ceil_mode with auto_pad is not lowered"
    return None


def _global_pool(node: Node, low: Lowering, opset: int) -> List[Any]:
    mb = _mb()
    x = low.get(node.inputs[0])
    axes = list(range(2, len(_shape(x))))
    op = mb.reduce_mean if node.op_type == "GlobalAveragePool" else mb.reduce_max
    return [op(x=x, axes=axes, keep_dims=True, name=low.unique(node.outputs[0]))]


def _gemm(node: Node, low: Lowering, opset: int) -> List[Any]:
    mb = _mb()
    a = low.get(node.inputs[0])
    b = low.const(node.inputs[1])
    c = low.const(node.input(2)) if node.input(2) else None
    alpha, beta = float(node.attr("alpha", 1.0)), float(node.attr("beta", 1.0))
    base = node.outputs[0]
    if node.attr("transA", 0):
        a = mb.transpose(x=a, perm=[1, 0], name=low.unique(base + "_at"))
    weight = _f32(b) if node.attr("transB", 0) else _f32(b).T  # linear wants [out, in]
    weight = np.ascontiguousarray(weight * alpha, dtype=np.float32)
    bias = None
    if c is not None:
        c = _f32(c) * beta
        if c.size == weight.shape[0] or c.size == 1:
            bias = np.broadcast_to(c.reshape(-1), (weight.shape[0],)).astype(np.float32)
    out = mb.linear(x=a, weight=weight, bias=bias, name=low.unique(base if c is None or bias is not None
                                                                    else base + "_mm"))
    if c is not None and bias is None:
        out = mb.add(x=out, y=c.astype(np.float32), name=low.unique(base))
    return [out]


def _matmul(node: Node, low: Lowering, opset: int) -> List[Any]:
    mb = _mb()
    a, b = low.get(node.inputs[0]), low.get(node.inputs[1])
    name = low.unique(node.outputs[0])
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return [np.matmul(a, b)]
    if isinstance(b, np.ndarray) and b.ndim == 2 and _is_var(a):
        # a constant right operand is a dense layer: `linear` is what the Neural Engine and the weight compressors know
        return [mb.linear(x=a, weight=np.ascontiguousarray(_f32(b).T), name=name)]
    a = _f32(a) if isinstance(a, np.ndarray) else a
    b = _f32(b) if isinstance(b, np.ndarray) else b
    return [mb.matmul(x=a, y=b, name=name)]


# -- shape ops ----------------------------------------------------------------

def _out_shape_reshape(in_shape: Sequence[int], target: Sequence[int], allowzero: bool) -> List[int]:
    shape = [int(d) for d in target]
    if not allowzero:
        shape = [in_shape[i] if d == 0 else d for i, d in enumerate(shape)]
    if -1 in shape:
        known = int(np.prod([d for d in shape if d != -1])) or 1
        shape[shape.index(-1)] = int(np.prod(in_shape)) // known
    return shape


def _reshape_to(low: Lowering, x: Any, shape: Sequence[int], name: str) -> Any:
    if isinstance(x, np.ndarray):
        return x.reshape(shape)
    return _mb().reshape(x=x, shape=np.array(shape, dtype=np.int32), name=low.unique(name))


def _reshape(node: Node, low: Lowering, opset: int) -> List[Any]:
    x = low.get(node.inputs[0])
    shape = _out_shape_reshape(_shape(x), low.const(node.inputs[1]).tolist(), bool(node.attr("allowzero", 0)))
    return [_reshape_to(low, x, shape, node.outputs[0])]


def _flatten(node: Node, low: Lowering, opset: int) -> List[Any]:
    x = low.get(node.inputs[0])
    s = _shape(x)
    axis = int(node.attr("axis", 1)) % (len(s) or 1) if node.attr("axis", 1) < 0 else int(node.attr("axis", 1))
    return [_reshape_to(low, x, [int(np.prod(s[:axis])), int(np.prod(s[axis:]))], node.outputs[0])]


def _squeeze(node: Node, low: Lowering, opset: int) -> List[Any]:
    x = low.get(node.inputs[0])
    s = list(_shape(x))
    axes = const_ints(low, node, "axes", 1)
    axes = [a % len(s) for a in axes] if axes else [i for i, d in enumerate(s) if d == 1]
    return [_reshape_to(low, x, [d for i, d in enumerate(s) if i not in axes], node.outputs[0])]


def _unsqueeze(node: Node, low: Lowering, opset: int) -> List[Any]:
    x = low.get(node.inputs[0])
    s = list(_shape(x))
    axes = const_ints(low, node, "axes", 1) or []
    rank = len(s) + len(axes)
    axes = sorted(a % rank for a in axes)
    for a in axes:
        s.insert(a, 1)
    return [_reshape_to(low, x, s, node.outputs[0])]


def _transpose(node: Node, low: Lowering, opset: int) -> List[Any]:
    x = low.get(node.inputs[0])
    perm = node.attr("perm") or list(reversed(range(len(_shape(x)))))
    if isinstance(x, np.ndarray):
        return [np.transpose(x, perm)]
    return [_mb().transpose(x=x, perm=[int(p) for p in perm], name=low.unique(node.outputs[0]))]


def _depth_space_cond(node: Node, view: GraphView) -> Optional[str]:
    if node.op_type == "DepthToSpace" and node.attr("mode", "DCR") != "DCR":
        return "DepthToSpace mode=CRD is not lowered (MIL's depth_to_space is DCR, as TensorFlow's)"
    shape = view.shape(node.input(0))
    if shape is not None and len(shape) != 4:
        return f"needs a rank-4 NCHW input, got rank {len(shape)}"
    return None


def _depth_space(node: Node, low: Lowering, opset: int) -> List[Any]:
    """SpaceToDepth / DepthToSpace (DCR) on NCHW: MIL's ops keep TensorFlow's channel order, which is ONNX's
    (SpaceToDepth: output channel (by·b + bx)·C + c; DepthToSpace DCR: its inverse)."""
    from edgekit.runners.coreml.kernels import depth_to_space, space_to_depth

    x, bs = low.get(node.inputs[0]), int(node.attr("blocksize"))
    to_depth = node.op_type == "SpaceToDepth"
    if isinstance(x, np.ndarray):
        return [(space_to_depth if to_depth else depth_to_space)(x, bs)]
    op = _mb().space_to_depth if to_depth else _mb().depth_to_space
    return [op(x=x, block_size=bs, name=low.unique(node.outputs[0]))]


def _concat(node: Node, low: Lowering, opset: int) -> List[Any]:
    vals = [low.get(n) for n in node.inputs if n]
    axis = int(node.attr("axis"))
    if all(isinstance(v, np.ndarray) for v in vals):
        return [np.concatenate(vals, axis=axis)]
    vals = [_f32(v) if isinstance(v, np.ndarray) else v for v in vals if _shape(v)[axis % len(_shape(v))] != 0]
    if len(vals) == 1:
        return [vals[0]]
    return [_mb().concat(values=vals, axis=axis, name=low.unique(node.outputs[0]))]


def _split(node: Node, low: Lowering, opset: int) -> List[Any]:
    x = low.get(node.inputs[0])
    axis = int(node.attr("axis", 0))
    dim = _shape(x)[axis]
    sizes = const_ints(low, node, "split", 1)
    if not sizes:
        n = int(node.attr("num_outputs", len(node.outputs)))
        chunk = -(-dim // n)
        sizes = [chunk] * (n - 1) + [dim - chunk * (n - 1)]
    sizes = [int(s) for s in np.asarray(sizes).reshape(-1)]
    if isinstance(x, np.ndarray):
        return list(np.split(x, np.cumsum(sizes)[:-1], axis=axis))
    outs = _mb().split(x=x, split_sizes=np.array(sizes, dtype=np.int32), axis=axis,
                       name=low.unique(node.outputs[0] + "_split"))
    return list(outs)


def _slice(node: Node, low: Lowering, opset: int) -> List[Any]:
    x = low.get(node.inputs[0])
    shape = _shape(x)
    starts = const_ints(low, node, "starts", 1) or []
    ends = const_ints(low, node, "ends", 2) or []
    axes = const_ints(low, node, "axes", 3) or list(range(len(starts)))
    steps = const_ints(low, node, "steps", 4) or [1] * len(starts)
    index = [slice(None)] * len(shape)
    for s, e, a, st in zip(starts, ends, axes, steps):
        index[int(a) % len(shape)] = slice(int(s), int(e), int(st))
    if isinstance(x, np.ndarray):
        return [x[tuple(index)]]
    begin, end, stride = [], [], []
    for i, sl in enumerate(index):
        b, e, st = sl.indices(shape[i])  # numpy's clamping == ONNX's clamping
        begin.append(b)
        end.append(e)
        stride.append(st)
    end_mask = [st < 0 and e < 0 for (b, e, st) in zip(begin, end, stride)]  # reverse slice reaching index 0
    return [_mb().slice_by_index(x=x, begin=np.array(begin, np.int32), end=np.array([0 if m else e for e, m in zip(end, end_mask)], np.int32),
                                 stride=np.array(stride, np.int32), end_mask=end_mask,
                                 name=low.unique(node.outputs[0]))]


def _shape_op(node: Node, low: Lowering, opset: int) -> List[Any]:
    s = np.array(_shape(low.get(node.inputs[0])), dtype=np.int64)
    start, end = node.attr("start", 0), node.attr("end")
    return [s[start:end]]


def _constant(node: Node, low: Lowering, opset: int) -> List[Any]:
    # the graph view made every numeric Constant a constant; what reaches here is another form
    raise node_error(node, "this Constant form (sparse/string) is not lowered")


def _constant_cond(node: Node, view: GraphView) -> Optional[str]:
    return "this Constant form (sparse/string) is not lowered"


def _constant_of_shape(node: Node, low: Lowering, opset: int) -> List[Any]:
    shape = low.const(node.inputs[0]).astype(np.int64).tolist()
    value = node.attr("value")  # the view parsed the tensor attribute
    fill = np.asarray(value).reshape(-1)[0] if value is not None else np.float32(0)
    return [np.full(shape, fill)]


def _gather(node: Node, low: Lowering, opset: int) -> List[Any]:
    x = low.get(node.inputs[0])
    idx = low.const(node.inputs[1])
    axis = int(node.attr("axis", 0))
    if isinstance(x, np.ndarray):
        return [np.take(x, idx, axis=axis)]
    dim = _shape(x)[axis]
    idx = np.where(idx < 0, idx + dim, idx).astype(np.int32)
    return [_mb().gather(x=x, indices=idx, axis=axis, name=low.unique(node.outputs[0]))]


def _tile(node: Node, low: Lowering, opset: int) -> List[Any]:
    x = low.get(node.inputs[0])
    reps = np.array(const_ints(low, node, "repeats", 1), np.int32)
    if isinstance(x, np.ndarray):
        return [np.tile(x, reps)]
    return [_mb().tile(x=x, reps=reps, name=low.unique(node.outputs[0]))]


def _pad(node: Node, low: Lowering, opset: int) -> List[Any]:
    x = low.get(node.inputs[0])
    rank = len(_shape(x))
    pads = const_ints(low, node, "pads", 1)
    value = low.const(node.input(2)) if opset >= 11 and node.input(2) else None
    value = float(value.reshape(-1)[0]) if value is not None else float(node.attr("value", 0.0))
    mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}[node.attr("mode", "constant")]
    return [_mb().pad(x=x, pad=np.array(_pad_pairs(pads, rank), np.int32), mode=mode, constant_val=value,
                      name=low.unique(node.outputs[0]))]


# -- normalization, softmax, reductions --------------------------------------

def _softmax(node: Node, low: Lowering, opset: int) -> List[Any]:
    return [_mb().softmax(x=low.get(node.inputs[0]), axis=int(node.attr("axis", -1)), name=low.unique(node.outputs[0]))]


def _layer_norm(node: Node, low: Lowering, opset: int) -> List[Any]:
    x = low.get(node.inputs[0])
    rank = len(_shape(x))
    axis = int(node.attr("axis", -1)) % rank
    gamma = _f32(low.const(node.inputs[1]))
    beta = _f32(low.const(node.input(2))) if node.input(2) else None
    norm_shape = _shape(x)[axis:]
    return [_mb().layer_norm(x=x, axes=list(range(axis, rank)), gamma=np.broadcast_to(gamma, norm_shape).copy(),
                             beta=None if beta is None else np.broadcast_to(beta, norm_shape).copy(),
                             epsilon=float(node.attr("epsilon", 1e-5)), name=low.unique(node.outputs[0]))]


def _layer_norm_cond(node: Node, view: GraphView) -> Optional[str]:
    if len(node.outputs) > 1 and any(node.outputs[1:]):
        return "the Mean/InvStdDev training outputs are not lowered"
    return _needs_const(1, 2, what="scale or bias")(node, view)


_REDUCE = {"ReduceMean": "reduce_mean", "ReduceSum": "reduce_sum", "ReduceMax": "reduce_max",
           "ReduceMin": "reduce_min", "ReduceProd": "reduce_prod", "ReduceL2": "reduce_l2_norm",
           "ReduceSumSquare": "reduce_sum_square"}


def _reduce(node: Node, low: Lowering, opset: int) -> List[Any]:
    x = low.get(node.inputs[0])
    axes = const_ints(low, node, "axes", 1)
    rank = len(_shape(x))
    keep = bool(node.attr("keepdims", 1))
    if not axes:
        if node.attr("noop_with_empty_axes", 0):
            return [x]
        axes = list(range(rank))
    return [getattr(_mb(), _REDUCE[node.op_type])(x=x, axes=[a % rank for a in axes], keep_dims=keep,
                                                  name=low.unique(node.outputs[0]))]


def _argmax(node: Node, low: Lowering, opset: int) -> List[Any]:
    op = _mb().reduce_argmax if node.op_type == "ArgMax" else _mb().reduce_argmin
    return [op(x=low.get(node.inputs[0]), axis=int(node.attr("axis", 0)), keep_dims=bool(node.attr("keepdims", 1)),
               name=low.unique(node.outputs[0]))]


# -- resize -------------------------------------------------------------------

def _resize_scales(node: Node, low: Lowering, in_shape: Sequence[int]) -> List[float]:
    scales = low.const(node.input(2)) if node.input(2) else None
    if scales is not None and scales.size:
        return [float(s) for s in scales.reshape(-1)]
    sizes = low.const(node.input(3)).reshape(-1)
    return [float(o) / float(i) for o, i in zip(sizes, in_shape)]


def _resize(node: Node, low: Lowering, opset: int) -> List[Any]:
    mb = _mb()
    x = low.get(node.inputs[0])
    s = _shape(x)
    scales = _resize_scales(node, low, s)
    mode = node.attr("mode", "nearest")
    coord = node.attr("coordinate_transformation_mode", "half_pixel")
    name = low.unique(node.outputs[0])
    out_h, out_w = int(np.floor(s[2] * scales[2])), int(np.floor(s[3] * scales[3]))
    if mode == "nearest":
        return [mb.upsample_nearest_neighbor(x=x, scale_factor_height=scales[2], scale_factor_width=scales[3], name=name)]
    if coord == "align_corners":
        return [mb.resize_bilinear(x=x, target_size_height=out_h, target_size_width=out_w,
                                   sampling_mode="STRICT_ALIGN_CORNERS", name=name)]
    if coord in ("half_pixel", "pytorch_half_pixel"):
        return [mb.resize_bilinear(x=x, target_size_height=out_h, target_size_width=out_w,
                                   sampling_mode="UNALIGN_CORNERS", name=name)]
    return [mb.resize_bilinear(x=x, target_size_height=out_h, target_size_width=out_w,
                               sampling_mode="DEFAULT", name=name)]  # asymmetric


def _resize_cond(node: Node, view: GraphView) -> Optional[str]:
    mode = node.attr("mode", "nearest")
    coord = node.attr("coordinate_transformation_mode", "half_pixel")
    for i in (1, 2, 3):
        n = node.input(i)
        if n and not view.is_const(n):
            return f"input {i} ({n!r}) is computed at run time; Core ML resizes need constant scales or sizes"
    if mode == "nearest":
        if coord != "asymmetric" or node.attr("nearest_mode", "round_prefer_floor") != "floor":
            return ("nearest resize is lowered for coordinate_transformation_mode='asymmetric', "
                    f"nearest_mode='floor' (PyTorch/Keras upsampling), not {coord!r}/"
                    f"{node.attr('nearest_mode', 'round_prefer_floor')!r}")
        return None
    if mode == "linear":
        if coord not in ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"):
            return f"linear resize with coordinate_transformation_mode={coord!r} is not lowered"
        return None
    return f"resize mode {mode!r} is not lowered (nearest and linear are)"


# -- the table ------------------------------------------------------------------

#: (ONNX op type, first ONNX schema version covered, check or None, emitter)
ROWS: Tuple[Tuple[str, int, Optional[NodeCheck], Emitter], ...] = (
    *((op, 1, None, _binary) for op in ("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min")),
    *((op, 1, None, _unary) for op in list(_UNARY) + ["Neg", "Reciprocal", "Log"]),
    ("LeakyRelu", 1, None, _leaky_relu),
    ("Elu", 1, None, _elu),
    ("PRelu", 1, None, _prelu),
    ("HardSigmoid", 1, None, _hard_sigmoid),
    ("HardSwish", 1, None, _hard_swish),
    ("Gelu", 20, None, _gelu),
    ("Clip", 1, _needs_const(1, 2, what="min/max"), _clip),
    ("Identity", 1, None, _identity),
    ("Dropout", 1, None, _identity),
    ("Cast", 1, _cast_cond, _cast),
    ("Conv", 1, _needs_const(1, 2, what="the weight or bias"), _conv),
    ("ConvTranspose", 1, _conv_transpose_cond, _conv_transpose),
    ("BatchNormalization", 1, _needs_const(1, 2, 3, 4, what="scale/bias/mean/var"), _batch_norm),
    ("MaxPool", 1, _pool_cond, _pool),
    ("AveragePool", 1, _pool_cond, _pool),
    ("GlobalAveragePool", 1, None, _global_pool),
    ("GlobalMaxPool", 1, None, _global_pool),
    ("Gemm", 1, _needs_const(1, 2, what="B or C"), _gemm),
    ("MatMul", 1, None, _matmul),
    ("Reshape", 1, _needs_const(1, what="the target shape"), _reshape),
    ("Flatten", 1, None, _flatten),
    ("Squeeze", 1, _needs_const(1, what="axes"), _squeeze),
    ("Unsqueeze", 1, _needs_const(1, what="axes"), _unsqueeze),
    ("Transpose", 1, None, _transpose),
    ("SpaceToDepth", 1, _depth_space_cond, _depth_space),
    ("DepthToSpace", 1, _depth_space_cond, _depth_space),
    ("Concat", 1, None, _concat),
    ("Split", 1, _needs_const(1, what="split sizes"), _split),
    ("Slice", 1, _needs_const(1, 2, 3, 4, what="starts/ends/axes/steps"), _slice),
    ("Shape", 1, None, _shape_op),
    ("Constant", 1, _constant_cond, _constant),
    ("ConstantOfShape", 1, _needs_const(0, what="the shape"), _constant_of_shape),
    ("Gather", 1, _needs_const(1, what="the indices"), _gather),
    ("Tile", 1, _needs_const(1, what="repeats"), _tile),
    ("Pad", 1, _all_of(_needs_const(1, 2, what="pads/value"),
                       _attr_in("mode", ("constant", "reflect", "edge"), "constant")), _pad),
    ("Softmax", 13, None, _softmax),
    ("LayerNormalization", 17, _layer_norm_cond, _layer_norm),
    *((op, 1, _needs_const(1, what="axes"), _reduce) for op in _REDUCE),
    ("ArgMax", 1, _attr_in("select_last_index", (0,), 0), _argmax),
    ("ArgMin", 1, _attr_in("select_last_index", (0,), 0), _argmax),
    ("Resize", 1, _resize_cond, _resize),
    ("LSTM", 7, lstm_condition, emit_lstm),
)

#: ops listed so `check` explains why, instead of "no rule"
NOT_LOWERED: Mapping[str, str] = {
    "GRU": "recurrent layers are not lowered yet (unroll the GRU in the export)",
    "NonMaxSuppression": "NMS runs in edgekit's postprocessing; export the model without it",
    "Loop": "control flow is not lowered: Core ML's Neural Engine needs a static graph",
    "If": "control flow is not lowered: Core ML's Neural Engine needs a static graph",
    "NonZero": "data-dependent output shapes cannot run on the Neural Engine",
}

COVERAGE = OpCoverage.of("Core ML", (OpRule(op, since, check=chk) for op, since, chk, _ in ROWS), NOT_LOWERED)
EMITTERS: Mapping[str, Emitter] = {op: emit for op, _, _, emit in ROWS}

"""Q/DQ lint: does a graph follow the rules TensorRT needs to fuse its Q/DQ nodes?

Checks every node and reports every violation (not just the first), each
naming the node, the rule and the fix:

``unsupported-op``   an op the chosen TensorRT version's ONNX parser lacks
``opset``            a default-domain opset outside the parser's range
``asymmetric``       a QuantizeLinear/DequantizeLinear zero point that is not 0
``zero-point-type``  a zero point that is not int8 (uint8, or missing on a Q, which means uint8)
``scale``            a scale that is not a constant, not float, or not > 0 and finite
``per-channel-activation``  an activation (non-constant) with more than one scale
``dq-type``          a DequantizeLinear of a non-int8 tensor (an int32 bias, uint8 data)
``unpaired-q``       a QuantizeLinear whose output reaches something other than a DequantizeLinear
``unpaired-dq``      a DequantizeLinear fed by neither a QuantizeLinear nor an int8 constant
``pair-mismatch``    a Q → DQ pair whose scales, zero points or axes differ (cannot fold into one scale)
``weight-axis``      a weight DQ whose per-channel axis is not the op's output-channel axis
``half-quantized``   a Conv/ConvTranspose/Gemm/MatMul with Q/DQ on its data input but not on
                     its weight, or the other way round: TensorRT leaves both unfused and runs it in float

Pure onnx + numpy: runs on the build host with no TensorRT.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from edgekit.errors import UnsupportedModelError

from ..graph import GraphInfo, weight_axis
from ..optable import NodeView
from .ops import OP_TABLES, OPSET_RANGE, table_version
from .qdq import QUANTIZED_INPUTS

_QDQ = ("QuantizeLinear", "DequantizeLinear")


@dataclass(frozen=True)
class Violation:
    rule: str
    node: str
    message: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.node}: {self.message}"

    def to_json(self) -> Dict[str, str]:
        return {"rule": self.rule, "node": self.node, "message": self.message}


class _Graph(GraphInfo):
    """The graph lookups plus the values of its constants (initializers and Constant nodes)."""

    def __init__(self, model: Any) -> None:
        from onnx import numpy_helper

        super().__init__(model)
        self.consts: Dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        for node in model.graph.node:
            if node.op_type == "Constant" and node.output:
                for a in node.attribute:
                    if a.name == "value":
                        self.consts[node.output[0]] = numpy_helper.to_array(a.t)

    def const(self, name: str) -> Optional[np.ndarray]:
        return self.consts.get(name)


def _name(node: Any, i: int) -> str:
    return node.name or (node.output[0] if node.output else f"{node.op_type}_{i}")


def _axis(node: Any) -> int:
    for a in node.attribute:
        if a.name == "axis":
            return int(a.i)
    return 1  # ONNX default


def _qparams(g: _Graph, node: Any) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    scale = g.const(node.input[1]) if len(node.input) > 1 else None
    zp = g.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    return scale, zp


def lint_qdq(model: Any, trt_version: str = "10") -> List[Violation]:
    """Every violation of the TensorRT Q/DQ rules in ``model`` (empty when it is clean)."""
    v = table_version(trt_version)
    g = _Graph(model)
    out: List[Violation] = []
    opset = next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    lo, hi = OPSET_RANGE[v]
    if opset is not None and not lo <= opset <= hi:
        out.append(Violation("opset", "<model>", f"opset {opset} is outside TensorRT {v}'s {lo}–{hi}; "
                             f"re-export the model with an opset in that range"))
    for i, node in enumerate(model.graph.node):
        name = _name(node, i)
        # an opset outside the parser's range is one model-level violation (above), not one per node
        reason = OP_TABLES[v].why_not(NodeView(name, node, min(max(g.opset_for(node), lo), hi), g))
        if reason is not None:
            out.append(Violation("unsupported-op", name, reason + "; replace the op or pick another target"))
        if node.op_type in _QDQ and (node.domain or "") in ("", "ai.onnx"):
            out.extend(_check_qdq_node(g, node, name))
        if node.op_type in QUANTIZED_INPUTS:
            out.extend(_check_quantized_op(g, node, name))
    return out


def _check_qdq_node(g: _Graph, node: Any, name: str) -> List[Violation]:
    out: List[Violation] = []
    scale, zp = _qparams(g, node)
    if scale is None:
        out.append(Violation("scale", name, "scale is not a constant; TensorRT needs constant scales "
                             "(fold it into an initializer)"))
    elif scale.dtype.kind != "f":
        out.append(Violation("scale", name, f"scale has dtype {scale.dtype}; use float32"))
    elif scale.size == 0 or not np.all(np.isfinite(scale)) or not np.all(scale > 0):
        bad = scale[~(np.isfinite(scale) & (scale > 0))] if scale.size else scale
        out.append(Violation("scale", name, f"scale must be finite and > 0, found {bad.ravel()[:4].tolist()}; "
                             "recalibrate (a channel that is all zero still needs a positive scale)"))
    has_zp = len(node.input) > 2 and bool(node.input[2])
    if has_zp and zp is None:
        out.append(Violation("zero-point-type", name, "zero point is not a constant; use an int8 initializer of zeros"))
    elif zp is not None:
        if zp.dtype != np.int8:
            out.append(Violation("zero-point-type", name, f"zero point is {zp.dtype}; TensorRT takes int8 only "
                                 "(re-quantize with symmetric int8 activations and weights)"))
        if np.any(zp != 0):
            out.append(Violation("asymmetric", name, f"zero point {zp.ravel()[:4].tolist()} is not 0; TensorRT "
                                 "needs symmetric quantization (zero point 0)"))
    elif node.op_type == "QuantizeLinear":
        out.append(Violation("zero-point-type", name, "QuantizeLinear has no zero point, so it outputs uint8; "
                             "add an int8 zero point of 0"))
    data = node.input[0]
    is_const = g.const(data) is not None
    if scale is not None and scale.size > 1 and not is_const and node.op_type == "QuantizeLinear":
        out.append(Violation("per-channel-activation", name, f"activation {data!r} has {scale.size} scales; "
                             "TensorRT quantizes activations per tensor (one scale)"))
    if node.op_type == "DequantizeLinear":
        const = g.const(data)
        prod = g.producer.get(data)
        if const is not None and const.dtype != np.int8:
            out.append(Violation("dq-type", name, f"dequantizes a {const.dtype} constant; TensorRT dequantizes "
                                 "int8 only (keep biases in float, store weights as int8)"))
        elif const is None and (prod is None or prod.op_type != "QuantizeLinear"):
            src = f"{prod.op_type} output" if prod is not None else "a graph input"
            out.append(Violation("unpaired-dq", name, f"input {data!r} is a {src}, not a QuantizeLinear or an "
                                 "int8 constant; TensorRT cannot fuse it"))
        elif prod is not None and prod.op_type == "QuantizeLinear":
            qs, qz = _qparams(g, prod)
            same = (qs is not None and scale is not None and qs.shape == scale.shape and np.array_equal(qs, scale)
                    and (qz is None) == (zp is None) and (qz is None or np.array_equal(qz, zp))
                    and (scale.size <= 1 or _axis(prod) == _axis(node)))
            if not same:
                out.append(Violation("pair-mismatch", name, f"its scale/zero point/axis differ from those of "
                                     f"{prod.name or prod.output[0]!r}; give the pair identical parameters"))
    else:  # QuantizeLinear
        for o in node.output:
            users = g.consumers.get(o, [])
            bad = [u for u in users if u.op_type != "DequantizeLinear"]
            if bad or (not users and o not in g.outputs):
                what = ", ".join(sorted({u.op_type for u in bad})) or "nothing"
                out.append(Violation("unpaired-q", name, f"output {o!r} feeds {what}, not a DequantizeLinear; "
                                     "follow every QuantizeLinear with a DequantizeLinear"))
    return out


def _dq_of(g: _Graph, tensor: str) -> Optional[Any]:
    prod = g.producer.get(tensor)
    return prod if prod is not None and prod.op_type == "DequantizeLinear" else None


def _check_quantized_op(g: _Graph, node: Any, name: str) -> List[Violation]:
    out: List[Violation] = []
    idx = [k for k in QUANTIZED_INPUTS[node.op_type] if k < len(node.input) and node.input[k]]
    dqs = {k: _dq_of(g, node.input[k]) for k in idx}
    quantized = [k for k in idx if dqs[k] is not None]
    if quantized and len(quantized) != len(idx):
        missing = [node.input[k] for k in idx if dqs[k] is None]
        out.append(Violation("half-quantized", name, f"input(s) {missing} have no Q/DQ while the other input "
                             "does; TensorRT runs the op in float and leaves the pair unfused — quantize both "
                             "or neither"))
    dq = dqs.get(1)
    if dq is not None:
        w = g.const(dq.input[0])
        scale = g.const(dq.input[1]) if len(dq.input) > 1 else None
        if w is None:
            q = g.producer.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                w = g.const(q.input[0])
        if w is not None and scale is not None and scale.size > 1:
            want = weight_axis(node, w.ndim)
            axis = _axis(dq) % max(1, w.ndim)
            if want is None or axis != want:
                out.append(Violation("weight-axis", name, f"weight scales are per-channel on axis {axis}, but "
                                     f"{node.op_type}'s output channels are on axis {want}; quantize the weight "
                                     "per output channel"))
            elif scale.size != w.shape[axis]:
                out.append(Violation("weight-axis", name, f"{scale.size} weight scales for {w.shape[axis]} output "
                                     "channels; give one scale per channel"))
    return out


def raise_on_violations(violations: List[Violation], trt_version: str) -> None:
    """One error naming every violation (the CLI prints it as one line)."""
    if not violations:
        return
    listed = "; ".join(str(x) for x in violations)
    raise UnsupportedModelError(
        f"{len(violations)} TensorRT {table_version(trt_version)} Q/DQ rule violation(s): {listed}"
    )

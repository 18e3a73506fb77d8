"""What the Hexagon HTP (through onnxruntime-qnn's QNN EP) runs, as data.

:data:`HTP_OPS` is the set of ONNX op types for which the QNN execution
provider has an op builder (onnxruntime-qnn 2.7, ``op_builder_factory.cc``);
:data:`HTP_ATTRIBUTE_LIMITS` lists attribute values the HTP op builders
reject; :data:`HTP_FUSED_PATTERNS` names ops HTP lacks that the QNN
pre-processing (``qnn_preprocess_model``) fuses into ones it has.  The table
is checked against the real EP in ``tests/test_qnn.py`` (every golden model
that passes :func:`check_htp` lands 100 % on the HTP, and an op listed as
missing really falls back), so it cannot silently drift from the installed
onnxruntime-qnn.

The check is cheap and imports no vendor SDK: it runs before calibration and
compilation, and lists every node HTP cannot take, with the reason.
"""
from __future__ import annotations

from typing import Any, Dict, FrozenSet, List, Mapping, Tuple

from .graph import iter_nodes

#: onnxruntime-qnn version the table below was taken from.
HTP_OP_TABLE_VERSION = "onnxruntime-qnn 2.7.0 (QAIRT 2.51)"

#: Default-domain ONNX ops with a QNN EP op builder (quantized 8/16-bit and fp16 HTP).
HTP_OPS: FrozenSet[str] = frozenset({
    "Abs", "Add", "And", "ArgMax", "ArgMin", "Asin", "Atan", "AveragePool", "BatchNormalization", "Cast",
    "Ceil", "Clip", "Concat", "Conv", "ConvTranspose", "Cos", "CumSum", "DepthToSpace", "DequantizeLinear",
    "Div", "Einsum", "Elu", "Equal", "Exp", "Expand", "Flatten", "Floor", "Gather", "GatherElements",
    "GatherND", "Gelu", "Gemm", "GlobalAveragePool", "GlobalMaxPool", "Greater", "GreaterOrEqual",
    "GridSample", "GroupNormalization", "GRU", "HardSigmoid", "HardSwish", "Identity", "If",
    "InstanceNormalization", "IsNaN", "LayerNormalization", "LeakyRelu", "Less", "LessOrEqual", "Log",
    "LogSoftmax", "LpNormalization", "LRN", "LSTM", "MatMul", "Max", "MaxPool", "Mean", "Min", "Mod", "Mul",
    "Neg", "NonZero", "Not", "Or", "Pad", "Pow", "PRelu", "QuantizeLinear", "Reciprocal", "ReduceL2",
    "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "Relu", "Reshape", "Resize",
    "RMSNormalization", "RoiAlign", "Round", "ScatterElements", "ScatterND", "Selu", "Sigmoid", "Sign", "Sin",
    "Slice", "Softmax", "Softplus", "SpaceToDepth", "Split", "Sqrt", "Squeeze", "STFT", "Sub", "Sum", "Tan",
    "Tanh", "ThresholdedRelu", "Tile", "TopK", "Transpose", "Unsqueeze", "Upsample", "Where", "Xor",
})

#: ``com.microsoft`` contrib ops with a QNN EP op builder.
HTP_CONTRIB_OPS: FrozenSet[str] = frozenset({
    "DequantizeLinear", "FusedMatMul", "Gelu", "MatMulNBits", "QuantizeLinear", "QuickGelu", "RotaryEmbedding",
    "SimplifiedLayerNormalization",
})

#: (op, attribute) -> the values HTP accepts (ONNX defaults apply when the attribute is absent).
HTP_ATTRIBUTE_LIMITS: Mapping[Tuple[str, str], Tuple[Any, ...]] = {
    ("ArgMax", "select_last_index"): (0,),
    ("ArgMin", "select_last_index"): (0,),
    ("Resize", "mode"): ("nearest", "linear"),
    ("Upsample", "mode"): ("nearest", "linear"),
    ("TopK", "largest"): (1,),
    ("MaxPool", "storage_order"): (0,),
    ("Pad", "mode"): ("constant", "reflect", "edge"),
    ("BatchNormalization", "training_mode"): (0,),
}

#: ONNX defaults of the limited attributes above.
_ATTRIBUTE_DEFAULTS: Mapping[Tuple[str, str], Any] = {
    ("ArgMax", "select_last_index"): 0,
    ("ArgMin", "select_last_index"): 0,
    ("Resize", "mode"): "nearest",
    ("Upsample", "mode"): "nearest",
    ("TopK", "largest"): 1,
    ("MaxPool", "storage_order"): 0,
    ("Pad", "mode"): "constant",
    ("BatchNormalization", "training_mode"): 0,
}

#: ops HTP lacks but the QNN pre-processing fuses away: op -> pattern description.
HTP_FUSED_PATTERNS: Mapping[str, str] = {
    "Erf": "GELU (x * 0.5 * (1 + Erf(x / sqrt(2)))), fused into Gelu by qnn_preprocess_model",
}

#: element types HTP has no kernels for (graph inputs/outputs or any node output)
HTP_UNSUPPORTED_DTYPES: Mapping[int, str] = {11: "float64", 8: "string", 14: "complex64", 15: "complex128"}

#: minimum HTP architecture for fp16 (v68 HTPs compute in fixed point only)
HTP_MIN_FP16_ARCH = 69

_DEFAULT_DOMAINS = ("", "ai.onnx")


def _attr(node: Any, name: str) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            value = helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return _ATTRIBUTE_DEFAULTS.get((node.op_type, name))


def _is_gelu_erf(node: Any, producers: Mapping[str, Any], consumers: Mapping[str, List[Any]]) -> bool:
    """Erf fed by Div(x, ~1.414) or Mul(x, ~0.707) and feeding Add(+1): the exact-GELU idiom."""
    src = producers.get(node.input[0]) if node.input else None
    if src is None or src.op_type not in ("Div", "Mul"):
        return False
    return any(c.op_type == "Add" for c in consumers.get(node.output[0], []))


def check_htp(model: Any) -> List[Tuple[str, str, str]]:
    """(node name, op type, reason) for every node the HTP cannot run."""
    graph = model.graph
    producers: Dict[str, Any] = {o: n for n in graph.node for o in n.output}
    consumers: Dict[str, List[Any]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    elem_types: Dict[str, int] = {}
    for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
        elem_types[vi.name] = vi.type.tensor_type.elem_type
    out: List[Tuple[str, str, str]] = []
    for name, node in iter_nodes(graph):
        domain = node.domain or ""
        op = node.op_type if domain in _DEFAULT_DOMAINS else f"{domain}::{node.op_type}"
        if domain in _DEFAULT_DOMAINS:
            known = node.op_type in HTP_OPS
        elif domain == "com.microsoft":
            known = node.op_type in HTP_CONTRIB_OPS
        else:
            out.append((name, op, f"custom domain {domain!r}: the QNN execution provider has no builder for it"))
            continue
        if not known:
            pattern = HTP_FUSED_PATTERNS.get(node.op_type) if domain in _DEFAULT_DOMAINS else None
            if pattern and node.op_type == "Erf" and _is_gelu_erf(node, producers, consumers):
                continue
            hint = f" (HTP takes it only inside {pattern})" if pattern else ""
            out.append((name, op, f"HTP has no {node.op_type} ({HTP_OP_TABLE_VERSION}){hint}; "
                                  "replace it, or let it run on the CPU without --require-npu"))
            continue
        for (limited_op, attr_name), allowed in HTP_ATTRIBUTE_LIMITS.items():
            if limited_op != node.op_type:
                continue
            value = _attr(node, attr_name)
            if value is not None and value not in allowed:
                out.append((name, op, f"{attr_name}={value!r} is not supported on HTP (supported: "
                                      f"{', '.join(repr(a) for a in allowed)})"))
        if node.op_type == "MaxPool" and len([o for o in node.output if o]) > 1:
            out.append((name, op, "MaxPool with an Indices output is not supported on HTP"))
        for o in node.output:
            t = elem_types.get(o)
            if t in HTP_UNSUPPORTED_DTYPES:
                out.append((name, op, f"output {o!r} is {HTP_UNSUPPORTED_DTYPES[t]}, which HTP cannot hold"))
    return out

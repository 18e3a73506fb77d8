"""What the Hexagon HTP (through onnxruntime-qnn's QNN EP) runs: the qnn target's op table, as data.

:data:`HTP_OPS` is the set of ONNX op types for which the QNN execution
provider has an op builder (onnxruntime-qnn 2.7, ``op_builder_factory.cc``);
:data:`HTP_ATTRIBUTE_LIMITS` lists attribute values the HTP op builders
reject; :data:`HTP_FUSED_PATTERNS` names ops HTP lacks that the QNN
pre-processing (``qnn_preprocess_model``) fuses into ones it has.  The table
is checked against the real EP in ``tests/test_qnn.py`` (every golden model
that passes the check lands 100 % on the HTP, and an op listed as
missing really falls back), so it cannot silently drift from the installed
onnxruntime-qnn.

The check is cheap and imports no vendor SDK: it runs before calibration and
compilation, and lists every node HTP cannot take, with the reason.
"""
from __future__ import annotations

from typing import Any, FrozenSet, Mapping, Optional, Tuple

from ..base import UnsupportedNode
from ..graph import GraphInfo, iter_nodes, qualified_op
from ..optable import NodeView, OpRule, OpTable, conditional

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



def _limits(op: str) -> OpRule:
    """A rule that checks ``op``'s limited attributes (and MaxPool's Indices output)."""
    names = tuple(attr for (limited, attr) in HTP_ATTRIBUTE_LIMITS if limited == op)

    def condition(view: NodeView) -> Optional[str]:
        for attr in names:
            value = view.attr(attr, _ATTRIBUTE_DEFAULTS.get((op, attr)))
            allowed = HTP_ATTRIBUTE_LIMITS[(op, attr)]
            if value is not None and value not in allowed:
                return (f"{attr}={value!r} is not supported on HTP (supported: "
                        f"{', '.join(repr(a) for a in allowed)})")
        if op == "MaxPool" and len([o for o in view.node.output if o]) > 1:
            return "MaxPool with an Indices output is not supported on HTP"
        return None

    return conditional(condition, attributes=names)


def _gelu_erf(view: NodeView) -> Optional[str]:
    """Erf fed by Div(x, ~1.414) or Mul(x, ~0.707) and feeding Add(+1): the exact-GELU idiom, fused away."""
    node, graph = view.node, view.graph
    src = graph.producer.get(node.input[0]) if node.input else None
    if src is not None and src.op_type in ("Div", "Mul") and \
            any(c.op_type == "Add" for c in graph.consumers.get(node.output[0], [])):
        return None
    return (f"HTP has no Erf ({HTP_OP_TABLE_VERSION}) (HTP takes it only inside {HTP_FUSED_PATTERNS['Erf']}); "
            "replace it, or let it run on the CPU without --require-npu")


OP_TABLE = OpTable.build(
    "qnn",
    HTP_OP_TABLE_VERSION,
    supported_ops={"": HTP_OPS, "com.microsoft": HTP_CONTRIB_OPS},
    rules={**{("", op): _limits(op) for op in {op for op, _ in HTP_ATTRIBUTE_LIMITS}},
           ("", "Erf"): conditional(_gelu_erf)},
    unknown_domain="custom domain {domain!r}: the QNN execution provider has no builder for it",
    missing_op="HTP has no {op} ({source}); replace it, or let it run on the CPU without --require-npu",
)


def dtype_findings(model: Any, graph: GraphInfo) -> Tuple[UnsupportedNode, ...]:
    """Nodes with an output of a type HTP cannot hold (float64, strings, complex)."""
    out = []
    for name, node in iter_nodes(model.graph):
        for o in node.output:
            t = graph.elem_type.get(o)
            if t in HTP_UNSUPPORTED_DTYPES:
                out.append(UnsupportedNode(node=name, op_type=qualified_op(node),
                                           reason=f"output {o!r} is {HTP_UNSUPPORTED_DTYPES[t]}, which HTP cannot hold"))
    return tuple(out)

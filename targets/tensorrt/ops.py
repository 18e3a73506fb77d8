"""Which ONNX ops TensorRT's ONNX parser imports: the tensorrt target's op tables, one per TensorRT version.

Derived from onnx-tensorrt's ``docs/operators.md`` (the parser's support
matrix) at the releases JetPack ships: TensorRT 8.5 (JetPack 5.1, the last for
Xavier), 8.6 (JetPack 6.0) and 10.x (JetPack 6.1+, Orin; the 10.1 GA table).
Ops marked "N" there or absent (newer than the table) are unsupported.  The
per-op restrictions that matter for edgekit's graphs (Q/DQ zero points,
activation scales) are checked by :mod:`.lint`.
"""
from __future__ import annotations

from typing import Dict, FrozenSet, Tuple

from ..optable import OpTable, unsupported

#: versions with a table, oldest first
TRT_VERSIONS: Tuple[str, ...] = ("8.5", "8.6", "10")

#: ops TensorRT 8.5's ONNX parser imports
_OPS_8_5: FrozenSet[str] = frozenset({
    "Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan", "Atanh", "AveragePool",
    "BatchNormalization", "Cast", "Ceil", "Celu", "Clip", "Concat", "Constant", "ConstantOfShape", "Conv",
    "ConvTranspose", "Cos", "Cosh", "CumSum", "DepthToSpace", "DequantizeLinear", "Div", "Dropout", "Einsum",
    "Elu", "Equal", "Erf", "Exp", "Expand", "EyeLike", "Flatten", "Floor", "GRU", "Gather", "GatherElements",
    "GatherND", "Gemm", "GlobalAveragePool", "GlobalLpPool", "GlobalMaxPool", "Greater", "GreaterOrEqual",
    "GridSample", "HardSigmoid", "HardSwish", "Identity", "If", "ImageScaler", "InstanceNormalization", "IsNaN",
    "LRN", "LSTM", "LeakyRelu", "Less", "LessOrEqual", "Log", "LogSoftmax", "Loop", "LpNormalization", "LpPool",
    "MatMul", "Max", "MaxPool", "Mean", "MeanVarianceNormalization", "Min", "Mod", "Mul", "Neg",
    "NonMaxSuppression", "NonZero", "Not", "OneHot", "Or", "PRelu", "Pad", "ParametricSoftplus", "Pow",
    "QuantizeLinear", "RNN", "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Range",
    "Reciprocal", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
    "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare", "Relu", "Reshape", "Resize", "ReverseSequence",
    "RoiAlign", "Round", "ScaledTanh", "Scan", "Scatter", "ScatterElements", "ScatterND", "Selu", "Shape",
    "Shrink", "Sigmoid", "Sign", "Sin", "Sinh", "Size", "Slice", "Softmax", "Softplus", "Softsign",
    "SpaceToDepth", "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tan", "Tanh", "ThresholdedRelu", "Tile", "TopK",
    "Transpose", "Trilu", "Unsqueeze", "Upsample", "Where", "Xor"
})

#: ops each later version adds (none were removed)
_ADDED: Dict[str, FrozenSet[str]] = {
    "8.6": frozenset({"GroupNormalization", "IsInf", "LayerNormalization"}),
    "10": frozenset({"CastLike", "DeformConv", "Gelu", "Hardmax", "Mish"}),
}

#: (lowest, highest) default-domain opset the parser accepts
OPSET_RANGE: Dict[str, Tuple[int, int]] = {"8.5": (7, 17), "8.6": (7, 17), "10": (9, 20)}


def table_version(version: str) -> str:
    """The table for a TensorRT version string ("10.3.0" → "10", "8.6.2" → "8.6", "8.4" → "8.5")."""
    parts = str(version).split(".")
    try:
        major = int(parts[0])
        minor = int(parts[1]) if len(parts) > 1 and parts[1] else 0
    except ValueError:
        raise ValueError(f"not a TensorRT version: {version!r}") from None
    if major >= 10:
        return "10"
    if (major, minor) >= (8, 6):
        return "8.6"
    return "8.5"


def supported_ops(version: str) -> FrozenSet[str]:
    v = table_version(version)
    ops = set(_OPS_8_5)
    for tv in TRT_VERSIONS[1:]:
        if TRT_VERSIONS.index(tv) <= TRT_VERSIONS.index(v):
            ops |= _ADDED[tv]
    return frozenset(ops)




def _table(v: str) -> OpTable:
    later = {op: tv for tv in reversed(TRT_VERSIONS) if TRT_VERSIONS.index(tv) > TRT_VERSIONS.index(v)
             for op in supported_ops(tv) - supported_ops(v)}
    return OpTable.build(
        "tensorrt",
        f"TensorRT {v} ONNX parser",
        supported_ops={"": supported_ops(v)},
        opsets=OPSET_RANGE[v],
        rules={("", op): unsupported(f"TensorRT {v} cannot import {op} (TensorRT {tv}+ can: a newer JetPack)")
               for op, tv in later.items()},
        unknown_domain=(f"custom domain {{domain!r}}: TensorRT {v} has no importer for it (a plugin would be "
                        "needed, which a package cannot carry); replace it with standard ONNX ops"),
        missing_op=f"TensorRT {v} cannot import {{op}}",
    )


#: TensorRT version (as :func:`table_version` names it) → its op table
OP_TABLES: Dict[str, OpTable] = {v: _table(v) for v in TRT_VERSIONS}

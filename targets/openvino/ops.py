"""What OpenVINO's ONNX frontend converts: the openvino target's op table, as data.

Transcribed from OpenVINO's ``src/frontends/onnx/docs/supported_ops.md``
(the frontend's own table, OpenVINO 2025/2026) so that
:meth:`Target.check` needs no OpenVINO.  It is the cheap, early
answer; the build itself converts with the real frontend
(``FrontEnd.convert_partially``) and names every node left unconverted, so a
stale row here can only make the check too optimistic, never hide a failure.
"""
from __future__ import annotations

from typing import FrozenSet

from ..optable import OpTable, unsupported

#: OpenVINO release the table was taken from.
OP_TABLE_OPENVINO_VERSION = "2026.x"

#: Default-domain ONNX ops the frontend converts (any opset it lists).
OV_ONNX_OPS: FrozenSet[str] = frozenset({
    "ATen", "Abs", "Acos", "Acosh", "Add", "Affine", "AffineGrid", "And", "ArgMax", "ArgMin", "Asin", "Asinh",
    "Atan", "Atanh", "Attention", "AveragePool", "BatchNormalization", "BitShift", "BitwiseAnd", "BitwiseNot",
    "BitwiseOr", "BitwiseXor", "BlackmanWindow", "Cast", "CastLike", "Ceil", "Celu", "CenterCropPad", "Clip",
    "Col2Im", "Compress", "Concat", "ConcatFromSequence", "Constant", "ConstantFill", "ConstantOfShape", "Conv",
    "ConvInteger", "ConvTranspose", "Cos", "Cosh", "Crop", "CumSum", "DFT", "DepthToSpace", "DequantizeLinear",
    "Div", "Dropout", "DynamicQuantizeLinear", "Einsum", "Elu", "Equal", "Erf", "Exp", "Expand", "EyeLike",
    "Flatten", "Floor", "GRU", "Gather", "GatherElements", "GatherND", "Gelu", "Gemm", "GlobalAveragePool",
    "GlobalLpPool", "GlobalMaxPool", "Greater", "GreaterOrEqual", "GridSample", "GroupNormalization",
    "HammingWindow", "HannWindow", "HardSigmoid", "HardSwish", "Hardmax", "Identity", "If", "ImageScaler",
    "InstanceNormalization", "IsFinite", "IsInf", "IsNaN", "LRN", "LSTM", "LayerNormalization", "LeakyRelu",
    "Less", "LessOrEqual", "Log", "LogSoftmax", "Loop", "LpNormalization", "MatMul", "MatMulInteger", "Max",
    "MaxPool", "MaxRoiPool", "Mean", "MeanVarianceNormalization", "Min", "Mish", "Mod", "Mul", "Multinomial",
    "Neg", "NegativeLogLikelihoodLoss", "NonMaxSuppression", "NonZero", "Not", "OneHot", "Or", "PRelu", "Pad",
    "Pow", "QLinearConv", "QLinearMatMul", "QuantizeLinear", "RMSNormalization", "RNN", "RandomNormal",
    "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Range", "Reciprocal", "ReduceL1", "ReduceL2",
    "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum",
    "ReduceSumSquare", "Relu", "Reshape", "Resize", "ReverseSequence", "RoiAlign", "RotaryEmbedding", "Round",
    "STFT", "Scan", "Scatter", "ScatterElements", "ScatterND", "Selu", "SequenceAt", "SequenceConstruct",
    "SequenceEmpty", "SequenceErase", "SequenceInsert", "SequenceLength", "Shape", "Shrink", "Sigmoid", "Sign",
    "SimplifiedLayerNormalization", "Sin", "Sinh", "Size", "Slice", "Softmax", "SoftmaxCrossEntropyLoss",
    "Softplus", "Softsign", "SpaceToDepth", "Split", "SplitToSequence", "Sqrt", "Squeeze", "Sub", "Sum", "Tan",
    "Tanh", "ThresholdedRelu", "Tile", "TopK", "Transpose", "Trilu", "Unique", "Unsqueeze", "Upsample", "Where",
    "Xor",
})

#: Default-domain ONNX ops the frontend's table lists with no conversion rule.
OV_ONNX_LACKS: FrozenSet[str] = frozenset({
    "Bernoulli", "DeformConv", "Det", "ImageDecoder", "LpPool", "MaxUnpool", "MelWeightMatrix", "Optional",
    "OptionalGetElement", "OptionalHasElement", "RegexFullMatch", "SequenceMap", "StringConcat",
    "StringNormalizer", "StringSplit", "TfIdfVectorizer",
})

#: Converted only in the patterns the frontend recognises (sequence ops).
OV_ONNX_PATTERN_ONLY: FrozenSet[str] = frozenset({
    "ConcatFromSequence", "SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase", "SequenceInsert",
    "SequenceLength",
})

#: ``com.microsoft`` contrib ops the frontend converts (the common fused ones).
OV_MS_OPS: FrozenSet[str] = frozenset({
    "Attention", "BiasAdd", "BiasGelu", "BifurcationDetector", "DequantizeLinear", "DynamicQuantizeMatMul",
    "EmbedLayerNormalization", "FastGelu", "FusedConv", "FusedGemm", "FusedMatMul", "GatherND", "Gelu",
    "GroupNorm", "GroupQueryAttention", "MatMulIntegerToFloat", "MatMulNBits", "Pad", "QLinearAdd",
    "QLinearAveragePool", "QLinearConcat", "QLinearLeakyRelu", "QLinearMul", "QLinearSigmoid",
    "QuantizeLinear", "Range", "SkipLayerNormalization", "SkipSimplifiedLayerNormalization", "Trilu",
})

OP_TABLE = OpTable.build(
    "openvino",
    f"OpenVINO {OP_TABLE_OPENVINO_VERSION} ONNX frontend",
    supported_ops={"": OV_ONNX_OPS, "com.microsoft": OV_MS_OPS},
    rules={("", op): unsupported("OpenVINO's ONNX frontend has no conversion rule for this op") for op in OV_ONNX_LACKS},
    # ai.onnx.ml (a few classic-ML ops) and OpenVINO's own extension domain: the frontend decides at build time
    open_domains=("ai.onnx.ml", "org.openvinotoolkit"),
    unknown_domain="custom domain {domain!r}: OpenVINO converts it only with a frontend extension",
)

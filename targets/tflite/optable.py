"""The TFLite op table: which ONNX ops lower, the opsets each row covers, and how.

Data, in one place: ``check`` (:data:`COVERAGE`) and the lowering
(:data:`LOWERINGS`) are both derived from :data:`ROWS`, so an op cannot be
checked as supported but missing a lowering, or the reverse.  Ops of the
``edgekit.fused`` domain come from :mod:`edgekit.targets.lowering.fusions`.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

from ..lowering import Node, NodeCheck, OpCoverage, OpRule
from . import ops_conv as conv
from . import ops_elementwise as ew
from . import ops_pool as pool
from . import ops_rnn as rnn
from . import ops_shape as sh
from .context import Context

Lowering = Callable[[Context, Node], None]


#: (ONNX op type, first ONNX schema version covered, check or None, lowering, TFLite ops it becomes)
ROWS: Tuple[Tuple[str, int, Optional[NodeCheck], Lowering, str], ...] = (
    ("Conv", 1, conv.check_conv, conv.lower_conv, "CONV_2D, DEPTHWISE_CONV_2D (1-D as 2-D), fused Relu/Relu6"),
    ("ConvTranspose", 1, conv.check_conv_transpose, conv.lower_conv_transpose, "TRANSPOSE_CONV (+ SLICE for pads)"),
    ("Gemm", 1, conv.check_gemm, conv.lower_gemm, "FULLY_CONNECTED"),
    ("MatMul", 1, conv.check_matmul, conv.lower_matmul, "FULLY_CONNECTED (constant B) or BATCH_MATMUL"),
    ("MaxPool", 1, pool.check_pool, pool.lower_pool, "MAX_POOL_2D (+ PADV2 for explicit pads)"),
    ("AveragePool", 1, pool.check_pool, pool.lower_pool, "AVERAGE_POOL_2D (+ PAD)"),
    ("GlobalAveragePool", 1, None, pool.lower_global_pool, "MEAN over the spatial axes"),
    ("GlobalMaxPool", 1, None, pool.lower_global_pool, "REDUCE_MAX over the spatial axes"),
    ("Relu", 1, None, ew.lower_unary, "RELU (or fused into the producer)"),
    ("Clip", 1, ew.check_clip, ew.lower_clip, "RELU6 / RELU_N1_TO_1 / RELU (or fused), else MAXIMUM+MINIMUM"),
    ("Sigmoid", 1, None, ew.lower_unary, "LOGISTIC"),
    ("Tanh", 1, None, ew.lower_unary, "TANH"),
    ("Exp", 1, None, ew.lower_unary, "EXP"),
    ("Log", 1, None, ew.lower_unary, "LOG"),
    ("Sqrt", 1, None, ew.lower_unary, "SQRT"),
    ("Abs", 1, None, ew.lower_unary, "ABS"),
    ("Neg", 1, None, ew.lower_unary, "NEG"),
    ("Floor", 1, None, ew.lower_unary, "FLOOR"),
    ("Ceil", 1, None, ew.lower_unary, "CEIL"),
    ("Round", 11, None, ew.lower_unary, "ROUND"),
    ("Sin", 7, None, ew.lower_unary, "SIN"),
    ("Cos", 7, None, ew.lower_unary, "COS"),
    ("Sign", 9, None, ew.lower_unary, "SIGN"),
    ("Not", 1, None, ew.lower_unary, "LOGICAL_NOT"),
    ("Reciprocal", 1, None, ew.lower_unary, "DIV"),
    ("HardSwish", 14, None, ew.lower_unary, "HARD_SWISH"),
    ("HardSigmoid", 1, None, ew.lower_hard_sigmoid, "MUL, ADD+RELU6, MUL"),
    ("LeakyRelu", 1, None, ew.lower_leaky_relu, "LEAKY_RELU"),
    ("PRelu", 1, ew.check_prelu, ew.lower_prelu, "PRELU"),
    ("Elu", 1, ew.check_elu, ew.lower_elu, "ELU"),
    ("SiLU", 1, None, ew.lower_silu, "LOGISTIC, MUL (fused x*Sigmoid(x))"),
    ("Gelu", 1, None, ew.lower_gelu, "GELU (fused erf/tanh pattern, or ONNX Gelu-20)"),
    ("Softmax", 13, ew.check_softmax, ew.lower_softmax, "SOFTMAX over the last TFLite axis"),
    ("LogSoftmax", 13, ew.check_softmax, ew.lower_softmax, "LOG_SOFTMAX over the last TFLite axis"),
    ("LayerNormalization", 17, ew.check_layernorm, ew.lower_layernorm,
     "MEAN, SUB, MUL, MEAN, ADD, RSQRT, MUL, MUL, ADD (ONNX op or fused pattern)"),
    ("BatchNormalization", 9, ew.check_batchnorm, ew.lower_batchnorm,
     "MUL, ADD (when canonicalization could not fold it into a Conv)"),
    ("Add", 1, ew.check_binary, ew.lower_binary, "ADD (fused Relu/Relu6)"),
    ("Sub", 1, ew.check_binary, ew.lower_binary, "SUB"),
    ("Mul", 1, ew.check_binary, ew.lower_binary, "MUL"),
    ("Div", 1, ew.check_binary, ew.lower_binary, "MUL by the reciprocal of a constant, else DIV"),
    ("Pow", 1, ew.check_binary, ew.lower_binary, "MUL (x^2), SQRT (x^0.5), else POW"),
    ("Max", 1, ew.check_binary, ew.lower_binary, "MAXIMUM"),
    ("Min", 1, ew.check_binary, ew.lower_binary, "MINIMUM"),
    ("Equal", 1, ew.check_binary, ew.lower_binary, "EQUAL"),
    ("Less", 1, ew.check_binary, ew.lower_binary, "LESS"),
    ("LessOrEqual", 12, ew.check_binary, ew.lower_binary, "LESS_EQUAL"),
    ("Greater", 1, ew.check_binary, ew.lower_binary, "GREATER"),
    ("GreaterOrEqual", 12, ew.check_binary, ew.lower_binary, "GREATER_EQUAL"),
    ("And", 1, ew.check_binary, ew.lower_binary, "LOGICAL_AND"),
    ("Or", 1, ew.check_binary, ew.lower_binary, "LOGICAL_OR"),
    ("Where", 9, None, ew.lower_where, "SELECT_V2"),
    ("Sum", 1, None, ew.lower_sum, "ADD chain"),
    ("LSTM", 7, rnn.check_lstm, rnn.lower_lstm,
     "unrolled: FULLY_CONNECTED, SPLIT, LOGISTIC, TANH, MUL, ADD per step (any initial state, Y/Y_h/Y_c)"),
    ("Identity", 1, None, ew.lower_identity, "nothing"),
    ("Dropout", 1, None, ew.lower_identity, "nothing (inference)"),
    ("Reshape", 5, None, sh.lower_reshape, "RESHAPE (or nothing)"),
    ("Flatten", 1, None, sh.lower_reshape, "RESHAPE (or nothing)"),
    ("Squeeze", 1, None, sh.lower_reshape, "RESHAPE"),
    ("Unsqueeze", 1, None, sh.lower_reshape, "RESHAPE"),
    ("Transpose", 1, None, sh.lower_transpose, "nothing: changes the tracked layout"),
    ("Concat", 4, None, sh.lower_concat, "CONCATENATION"),
    ("Split", 2, sh.check_split, sh.lower_split, "SPLIT / SPLIT_V"),
    ("Slice", 10, sh.check_slice, sh.lower_slice, "STRIDED_SLICE"),
    ("Pad", 2, sh.check_pad, sh.lower_pad, "PAD / PADV2 / MIRROR_PAD"),
    ("Gather", 1, sh.check_gather, sh.lower_gather, "GATHER"),
    ("Cast", 6, None, sh.lower_cast, "CAST"),
    ("Resize", 11, sh.check_resize, sh.lower_resize, "RESIZE_NEAREST_NEIGHBOR / RESIZE_BILINEAR"),
    ("ReduceMean", 1, sh.check_reduce, sh.lower_reduce, "MEAN"),
    ("ReduceSum", 1, sh.check_reduce, sh.lower_reduce, "SUM"),
    ("ReduceMax", 1, sh.check_reduce, sh.lower_reduce, "REDUCE_MAX"),
    ("ReduceMin", 1, sh.check_reduce, sh.lower_reduce, "REDUCE_MIN"),
    ("ReduceProd", 1, sh.check_reduce, sh.lower_reduce, "REDUCE_PROD"),
    ("ArgMax", 1, sh.check_argmax, sh.lower_argmax, "ARG_MAX (+ RESHAPE for keepdims)"),
    ("ArgMin", 1, sh.check_argmax, sh.lower_argmax, "ARG_MIN (+ RESHAPE for keepdims)"),
    ("Expand", 8, sh.check_const_input, sh.lower_expand, "BROADCAST_TO"),
    ("Tile", 6, sh.check_const_input, sh.lower_tile, "TILE"),
    ("DepthToSpace", 1, sh.check_depth_space, sh.lower_depth_space, "DEPTH_TO_SPACE (DCR)"),
    ("SpaceToDepth", 1, None, sh.lower_depth_space, "SPACE_TO_DEPTH"),
)

COVERAGE = OpCoverage.of("tflite", (OpRule(op, since, check=chk, note=note) for op, since, chk, _, note in ROWS))
LOWERINGS: Dict[str, Lowering] = {op: fn for op, _, _, fn, _ in ROWS}

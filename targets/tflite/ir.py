"""A small in-memory TFLite subgraph that the lowering builds and the writer serializes.

Keeping the graph as plain tensors and operators (rather than writing the
flatbuffer while lowering) lets the precision passes — fp16 weights, full
int8 — rewrite it after the fp32 lowering, and lets calibration address
every tensor by its index in the fp32 model it measured.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np


class QuantRole(str, enum.Enum):
    """How the int8 pass treats an operator (see :mod:`.quantize`)."""

    CONV = "conv"                # inputs: x, filter (per-channel axis 0), bias
    DEPTHWISE = "depthwise"      # inputs: x, filter (per-channel axis 3), bias
    FULLY_CONNECTED = "fc"       # inputs: x, weights (per-channel axis 0), bias
    TRANSPOSE_CONV = "tconv"     # inputs: output_shape, filter (per-channel axis 0), x, bias
    FREE = "free"                # int8 in, int8 out with its own calibrated range
    SAME = "same"                # output keeps input 0's scale and zero point
    SAME_ALL = "same_all"        # every float input is requantized to the output's scale (CONCATENATION)
    FIXED = "fixed"              # output range fixed by the spec (LOGISTIC, SOFTMAX, TANH)
    FLOAT = "float"              # no int8 kernel: dequantize around it
    INDEX = "index"              # works on integer/bool tensors only (shapes, indices)


@dataclass
class QParams:
    scale: np.ndarray          # float32, one per channel (or one)
    zero_point: np.ndarray     # int64, same length
    axis: int = 0

    @classmethod
    def per_tensor(cls, scale: float, zero_point: int) -> "QParams":
        return cls(np.array([scale], np.float32), np.array([zero_point], np.int64))

    def same_as(self, other: Optional["QParams"]) -> bool:
        return (other is not None and self.scale.shape == other.scale.shape
                and np.array_equal(self.scale, other.scale) and np.array_equal(self.zero_point, other.zero_point))


@dataclass
class Tensor:
    index: int
    name: str
    shape: Tuple[int, ...]
    dtype: str
    data: Optional[np.ndarray] = None
    quant: Optional[QParams] = None

    @property
    def is_const(self) -> bool:
        return self.data is not None


@dataclass
class Operator:
    opcode: int                  # BuiltinOperator
    inputs: List[int]            # -1 for an omitted optional input
    outputs: List[int]
    options_type: int = 0        # BuiltinOptions
    options: Any = None          # the generated ...OptionsT object
    node: str = ""               # the ONNX node it came from (for reports and fallbacks)
    role: QuantRole = QuantRole.FREE
    fixed_output: Optional[Tuple[float, int]] = None   # (scale, zero_point) for QuantRole.FIXED
    version: int = 1


@dataclass
class Subgraph:
    tensors: List[Tensor] = field(default_factory=list)
    operators: List[Operator] = field(default_factory=list)
    inputs: List[int] = field(default_factory=list)
    outputs: List[int] = field(default_factory=list)

    def add_tensor(self, name: str, shape: Sequence[int], dtype: str, data: Optional[np.ndarray] = None,
                   quant: Optional[QParams] = None) -> int:
        t = Tensor(len(self.tensors), name, tuple(int(d) for d in shape), dtype, data, quant)
        self.tensors.append(t)
        return t.index

    def consumers(self) -> Dict[int, List[int]]:
        users: Dict[int, List[int]] = {}
        for k, op in enumerate(self.operators):
            for i in op.inputs:
                if i >= 0:
                    users.setdefault(i, []).append(k)
        return users


_TYPES = {
    "float32": "FLOAT32", "float16": "FLOAT16", "int8": "INT8", "uint8": "UINT8", "int16": "INT16",
    "int32": "INT32", "int64": "INT64", "bool": "BOOL", "float64": "FLOAT64", "uint16": "UINT16",
    "uint32": "UINT32", "uint64": "UINT64",
}


def schema() -> Any:
    """The generated TFLite schema module (object API), imported lazily."""
    try:
        from ai_edge_litert import schema_py_generated as s
    except ImportError:  # pragma: no cover - tflite-runtime-only hosts cannot build
        from edgekit.errors import RuntimeMissingError

        raise RuntimeMissingError(
            "the tflite target writes models with ai-edge-litert's schema: pip install 'edgekit[tflite]'"
        ) from None
    return s


def serialize(graph: Subgraph, description: str = "edgekit") -> bytes:
    """The TFLite flatbuffer (schema version 3, identifier TFL3) of one subgraph."""
    import flatbuffers

    s = schema()
    model = s.ModelT()
    model.version = 3
    model.description = description
    model.buffers = [s.BufferT()]  # buffer 0 is the empty sentinel every runtime expects
    codes: Dict[Tuple[int, int], int] = {}
    model.operatorCodes = []
    sg = s.SubGraphT()
    sg.name = "main"
    sg.tensors = []
    for t in graph.tensors:
        tt = s.TensorT()
        tt.name = t.name
        tt.shape = np.array(t.shape, np.int32)
        tt.type = getattr(s.TensorType, _TYPES[t.dtype])
        tt.buffer = 0
        if t.data is not None:
            buf = s.BufferT()
            data = np.ascontiguousarray(t.data.astype(np.dtype(t.dtype), copy=False))
            buf.data = np.frombuffer(data.tobytes(), np.uint8)
            tt.buffer = len(model.buffers)
            model.buffers.append(buf)
        if t.quant is not None:
            q = s.QuantizationParametersT()
            q.scale = np.asarray(t.quant.scale, np.float32)
            q.zeroPoint = np.asarray(t.quant.zero_point, np.int64)
            q.quantizedDimension = int(t.quant.axis)
            tt.quantization = q
        sg.tensors.append(tt)
    sg.operators = []
    for op in graph.operators:
        key = (op.opcode, op.version)
        if key not in codes:
            oc = s.OperatorCodeT()
            oc.builtinCode = op.opcode
            # codes above 127 live only in builtin_code; the deprecated byte saturates
            oc.deprecatedBuiltinCode = min(op.opcode, s.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
            oc.version = op.version
            codes[key] = len(model.operatorCodes)
            model.operatorCodes.append(oc)
        o = s.OperatorT()
        o.opcodeIndex = codes[key]
        o.inputs = np.array(op.inputs, np.int32)
        o.outputs = np.array(op.outputs, np.int32)
        if op.options is not None:
            o.builtinOptionsType = op.options_type
            o.builtinOptions = op.options
        sg.operators.append(o)
    sg.inputs = np.array(graph.inputs, np.int32)
    sg.outputs = np.array(graph.outputs, np.int32)
    model.subgraphs = [sg]
    sig = s.SignatureDefT()
    sig.signatureKey = "serving_default"
    sig.subgraphIndex = 0
    sig.inputs = [_tensor_map(s, graph.tensors[i].name, i) for i in graph.inputs]
    sig.outputs = [_tensor_map(s, graph.tensors[i].name, i) for i in graph.outputs]
    model.signatureDefs = [sig]
    builder = flatbuffers.Builder(1024 + sum(b.data.size for b in model.buffers if b.data is not None))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _tensor_map(s: Any, name: str, index: int) -> Any:
    m = s.TensorMapT()
    m.name = name
    m.tensorIndex = index
    return m

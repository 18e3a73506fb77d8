"""Full int8 per the TFLite quantization specification, as a pass over the fp32 subgraph.

* activations: int8, asymmetric, per tensor, from the calibrated range
  (widened to contain 0 so that zero is exact: padding, ReLU);
* weights of CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED / TRANSPOSE_CONV:
  int8, symmetric (zero point 0), per output channel, in [-127, 127];
* biases: int32, scale = input scale × weight scale (per channel), zero point 0;
* LOGISTIC and SOFTMAX outputs: scale 1/256, zero point -128; TANH: 1/128, 0;
  LOG_SOFTMAX: 16/256, 127;
* ops that move data without arithmetic (RESHAPE, TRANSPOSE, pools, PAD,
  SLICE, SPLIT, GATHER, RESIZE, REDUCE_MAX) keep their input's scale and
  zero point; CONCATENATION inputs are requantized to the output's;
* ops without an int8 kernel, and nodes the recipe skips, run in float
  between DEQUANTIZE and QUANTIZE (per-layer float fallback);
* model inputs and outputs are float (QUANTIZE / DEQUANTIZE inside the
  model) or integer (``int8`` / ``uint8``: the manifest records their scale
  and zero point, and the preprocessing quantizes into them).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np

from .ir import Operator, QParams, QuantRole, Subgraph, schema

Range = Tuple[float, float]

#: TFLite builtins with an int8 kernel (reference and XNNPACK); everything else falls back to float
INT8_KERNELS = frozenset({
    "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "ADD", "SUB", "MUL", "MEAN", "SUM",
    "REDUCE_MAX", "REDUCE_MIN", "MAX_POOL_2D", "AVERAGE_POOL_2D", "RESHAPE", "TRANSPOSE", "CONCATENATION", "SPLIT",
    "SPLIT_V", "STRIDED_SLICE", "SLICE", "PAD", "PADV2", "MIRROR_PAD", "GATHER", "RESIZE_NEAREST_NEIGHBOR",
    "RESIZE_BILINEAR", "LOGISTIC", "TANH", "SOFTMAX", "LOG_SOFTMAX", "HARD_SWISH", "LEAKY_RELU", "PRELU", "RELU",
    "RELU6", "RELU_N1_TO_1", "MAXIMUM", "MINIMUM", "RSQRT", "GELU", "ELU", "BATCH_MATMUL", "ARG_MAX", "ARG_MIN",
    "EQUAL", "NOT_EQUAL", "LESS", "LESS_EQUAL", "GREATER", "GREATER_EQUAL", "DEPTH_TO_SPACE", "SPACE_TO_DEPTH",
    "BROADCAST_TO", "TILE", "SELECT_V2", "ABS", "NEG", "QUANTIZE", "DEQUANTIZE", "SQUARED_DIFFERENCE", "PACK",
    "UNPACK",
})
_WEIGHT_AXIS = {QuantRole.CONV: (1, 0), QuantRole.DEPTHWISE: (1, 3), QuantRole.FULLY_CONNECTED: (1, 0),
                QuantRole.TRANSPOSE_CONV: (1, 0)}
_ACT_INPUT = {QuantRole.TRANSPOSE_CONV: 2}
_BIAS_INPUT = {QuantRole.CONV: 2, QuantRole.DEPTHWISE: 2, QuantRole.FULLY_CONNECTED: 2, QuantRole.TRANSPOSE_CONV: 3}

QMIN, QMAX = -128, 127


def activation_params(lo: float, hi: float) -> QParams:
    """Asymmetric int8 parameters for a real range (0 always representable exactly)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if not np.isfinite(lo) or not np.isfinite(hi):
        lo, hi = (max(lo, -1e6), min(hi, 1e6))
    if hi - lo < 1e-8:
        hi = lo + 1e-8
    scale = (hi - lo) / (QMAX - QMIN)
    zp = int(np.clip(round(QMIN - lo / scale), QMIN, QMAX))
    return QParams.per_tensor(scale, zp)


def symmetric_params(lo: float, hi: float) -> QParams:
    """Symmetric int8 parameters (zero point 0) for a recipe's ``symmetric_activations``."""
    amax = max(abs(float(lo)), abs(float(hi)), 1e-8)
    return QParams.per_tensor(amax / 127.0, 0)


def quantize_values(x: np.ndarray, q: QParams, dtype: str = "int8") -> np.ndarray:
    info = np.iinfo(dtype)
    scale = q.scale if q.scale.size == 1 else q.scale.reshape([-1 if i == q.axis else 1 for i in range(x.ndim)])
    zp = q.zero_point if q.zero_point.size == 1 else q.zero_point.reshape(scale.shape)
    return np.clip(np.round(x / scale) + zp, info.min, info.max).astype(dtype)


def _per_channel_weights(w: np.ndarray, axis: int, per_channel: bool = True) -> Tuple[np.ndarray, QParams]:
    if not per_channel:  # one scale for the whole filter (a recipe's per_channel: false)
        amax = float(np.abs(w).max())
        scale = np.array([amax / 127.0 if amax > 0 else 1.0], np.float32)
        return np.clip(np.round(w / scale[0]), -127, 127).astype(np.int8), QParams(scale, np.zeros(1, np.int64), 0)
    reduce = tuple(i for i in range(w.ndim) if i != axis)
    amax = np.abs(w).max(axis=reduce) if reduce else np.abs(w)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = QParams(scale, np.zeros(scale.shape, np.int64), axis)
    return np.clip(np.round(w / scale.reshape([-1 if i == axis else 1 for i in range(w.ndim)])), -127, 127
                   ).astype(np.int8), q


#: why a recurrent cell's unrolled steps, or an op the mixed-precision twin leaves float (Pow, Sqrt, Div,
#: ...: ``targets.graph.ALWAYS_FLOAT_OPS``), stay float in every int8 build, as on the other targets
ALWAYS_FLOAT_WHY = "kept float in every int8 build (a recurrent cell, or an op the mixed-precision search cannot name)"

#: int8 kernels of ops the mixed-precision search does not switch on their own (data movement, PReLU,
#: ReLU, Tanh, ...; its twin leaves them unquantized): when every activation they read comes from a
#: float op, they stay float too — otherwise a layer the search keeps in float would still have its
#: output rounded to int8 for the PReLU after it, and the search's float layers would buy nothing
FOLLOW_PRODUCERS = frozenset({
    "RESHAPE", "TRANSPOSE", "PRELU", "RELU", "RELU6", "RELU_N1_TO_1", "TANH", "SUB", "SQUARED_DIFFERENCE",
    "MAXIMUM", "MINIMUM", "RSQRT", "GELU", "ELU", "STRIDED_SLICE", "SLICE", "MIRROR_PAD", "REDUCE_MAX",
    "REDUCE_MIN", "SUM", "DEPTH_TO_SPACE", "SPACE_TO_DEPTH", "BROADCAST_TO", "TILE", "ABS", "NEG", "PACK",
    "UNPACK", "LOG_SOFTMAX", "ARG_MAX", "ARG_MIN",
})

#: a CONCATENATION/PACK whose inputs' scales differ more than this runs in float: one shared int8
#: scale would leave the narrow inputs (a detector's 0..1 class scores next to pixel boxes) a few levels
MAX_CONCAT_SPREAD = 16.0


def _scale_spread(params: Sequence[QParams]) -> float:
    scales = [float(q.scale[0]) for q in params if q is not None]
    return max(scales) / min(scales) if len(scales) > 1 and min(scales) > 0 else 1.0


@dataclass
class Int8Report:
    float_ops: List[str] = field(default_factory=list)       # "OP (node): why"
    requantized: int = 0
    int8_ops: int = 0


@dataclass
class _Int8Pass:
    """The state one ``quantize_int8`` call threads through its steps: the graph being rewritten, the
    calibrated ranges, each activation's chosen parameters, and the tensors that stay float."""
    g: Subgraph
    ranges: Dict[int, Range]
    names: Mapping[int, str]
    report: Int8Report = field(default_factory=Int8Report)
    params: Dict[int, QParams] = field(default_factory=dict)
    keep_float: Set[int] = field(default_factory=set)

    def is_act(self, i: int) -> bool:
        t = self.g.tensors[i]
        return i >= 0 and t.data is None and t.dtype == "float32"

    def own(self, i: int) -> QParams:
        return activation_params(*self.ranges.get(i, (0.0, 1.0)))

    def name(self, op: Operator) -> str:
        return self.names.get(op.opcode, str(op.opcode))

    def stays_float(self, op: Operator, float_nodes: Set[str]) -> bool:
        """Whether ``op`` runs in float whatever its neighbours do: its ONNX node is one of ``float_nodes``
        (skipped, decode tail, always float), or it has no int8 kernel."""
        return op.node in float_nodes or self.name(op) not in INT8_KERNELS or op.role is QuantRole.FLOAT


def quantize_int8(graph: Subgraph, ranges: Mapping[int, Range], *, io_dtype: str = "float32",
                  skip_nodes: Set[str] = frozenset(), per_tensor_nodes: Set[str] = frozenset(),
                  symmetric_nodes: Set[str] = frozenset(), tail_nodes: Set[str] = frozenset(),
                  always_float_nodes: Set[str] = frozenset(), op_names: Optional[Mapping[int, str]] = None
                  ) -> Tuple[Subgraph, Int8Report]:
    """The int8 subgraph of the fp32 ``graph`` given calibrated ``ranges`` (tensor index → (min, max)).

    ``skip_nodes`` (a recipe's), ``tail_nodes`` (a detector's decode tail) and ``always_float_nodes`` (an ONNX
    LSTM's unrolled steps, and the other ops of ``targets.graph.ALWAYS_FLOAT_OPS``) stay float; ``per_tensor_nodes`` get one weight scale;
    ``symmetric_nodes`` get zero-point-0 outputs (ONNX node names, as a recipe names them)."""
    s = schema()
    names = op_names or {v: k for k, v in vars(s.BuiltinOperator).items() if not k.startswith("_")}
    st = _Int8Pass(copy.deepcopy(graph), dict(ranges), names)
    B = s.BuiltinOperator
    g, params = st.g, st.params

    head, tail, out_requant = _io_edges(st, io_dtype, B)
    # a float op reading a float model input reads it as given, not through its int8 round trip (which
    # would cap a model whose first layers stay float at the input's 8-bit noise); the QUANTIZE of the
    # input is pruned when no int8 op reads it
    dequantized: Dict[int, int] = {op.outputs[0]: op.inputs[0] for op in head if op.inputs[0] in st.keep_float}
    float_ops = _decide_params(st, skip_nodes, symmetric_nodes, tail_nodes, always_float_nodes,
                               _float_input_ends(st, set(dequantized), skip_nodes | tail_nodes | always_float_nodes))

    # 3. rewrite: constants, fallbacks, requantization
    new_ops: List[Operator] = list(head)
    for k, op in enumerate(g.operators):
        if k in float_ops:
            new_ops.extend(_float_fallback(st, op, dequantized, B))
        elif op.role is QuantRole.INDEX:
            new_ops.append(op)
        elif op.role in _WEIGHT_AXIS:
            st.report.int8_ops += 1
            _quantize_weights(st, op, op.node not in per_tensor_nodes)
            new_ops.append(op)
        else:
            st.report.int8_ops += 1
            new_ops.extend(_quantize_constants_and_requantize(st, op, B))
            new_ops.append(op)
    new_ops.extend(tail)
    for inner, out in out_requant:
        q = params[inner]
        g.tensors[out].dtype = "uint8"
        g.tensors[out].quant = QParams(q.scale.copy(), q.zero_point + 128)
    # 4. every other float activation becomes int8 with its parameters
    for i, q in params.items():
        t = g.tensors[i]
        if t.data is None and t.dtype == "float32" and i not in st.keep_float:
            t.dtype = "int8"
            t.quant = q
    g.operators = _drop_requantize_pairs(new_ops, g)
    from .lower import _prune

    _prune(g)
    return g, st.report


def _io_edges(st: _Int8Pass, io_dtype: str, B) -> Tuple[List[Operator], List[Operator], List[Tuple[int, int]]]:
    """Step 1, the IO edges: float IO gets QUANTIZE / DEQUANTIZE inside the model, uint8 IO a requantize.

    Returns the operators to put before and after the graph's, and the (inner, output) pairs whose
    uint8 parameters are set once the inner tensor's are known."""
    g, params = st.g, st.params
    head: List[Operator] = []
    tail: List[Operator] = []
    for i in list(g.inputs):
        if not st.is_act(i):
            continue
        q = activation_params(*st.ranges.get(i, (0.0, 1.0)))
        if io_dtype == "int8":
            params[i] = q
            continue
        inner = g.add_tensor(f"{g.tensors[i].name}/int8", g.tensors[i].shape, "float32")
        for op in g.operators:
            op.inputs = [inner if x == i else x for x in op.inputs]
        params[inner] = q
        head.append(Operator(B.QUANTIZE, [i], [inner], node="input", role=QuantRole.INDEX))
        if io_dtype == "uint8":
            g.tensors[i].dtype = "uint8"
            g.tensors[i].quant = QParams(q.scale.copy(), q.zero_point + 128)
        else:
            st.keep_float.add(i)
    out_requant: List[Tuple[int, int]] = []
    for o in list(g.outputs):
        if not st.is_act(o) or io_dtype == "int8":
            continue
        inner = g.add_tensor(f"{g.tensors[o].name}/int8", g.tensors[o].shape, "float32")
        st.ranges[inner] = st.ranges.get(o, (0.0, 1.0))
        for op in g.operators:
            op.outputs = [inner if x == o else x for x in op.outputs]
            op.inputs = [inner if x == o else x for x in op.inputs]
        if io_dtype == "uint8":
            tail.append(Operator(B.QUANTIZE, [inner], [o], node="output", role=QuantRole.INDEX))
            out_requant.append((inner, o))
        else:
            tail.append(Operator(B.DEQUANTIZE, [inner], [o], node="output", role=QuantRole.INDEX))
            st.keep_float.add(o)
    return head, tail, out_requant


def _float_input_ends(st: _Int8Pass, inputs: Set[int], skipped: Set[str]) -> Set[int]:
    """Of the tensors the ops read for the float model inputs, those whose readers all end in float:
    through ops that would follow float producers, only at ops that stay float (or the model output).
    Only these count as float producers — a model input some int8 layer reads is quantized first, once."""
    g = st.g
    users = g.consumers()

    def ends_float(t: int, seen: Set[int]) -> bool:
        for k in users.get(t, []):
            op = g.operators[k]
            if k in seen or st.stays_float(op, skipped):
                continue
            if st.name(op) not in FOLLOW_PRODUCERS:
                return False
            seen.add(k)
            if not all(ends_float(o, seen) for o in op.outputs if st.is_act(o)):
                return False
        return True

    return {t for t in inputs if ends_float(t, set())}


def _decide_params(st: _Int8Pass, skip_nodes: Set[str], symmetric_nodes: Set[str],
                   tail_nodes: Set[str], always_float_nodes: Set[str], float_inputs: Set[int]) -> Set[int]:
    """Step 2, each activation's parameters in topological order; returns the indices of the
    operators that run in float (and records why in the report).  ``float_inputs``: the tensors the
    ops read for the model's float inputs (their producers are float)."""
    g, params, own = st.g, st.params, st.own
    float_nodes = skip_nodes | tail_nodes | always_float_nodes
    float_ops: Set[int] = set()
    producer: Dict[int, int] = {}
    for k, op in enumerate(g.operators):
        name = st.name(op)
        acts_in = [i for i in op.inputs if i >= 0 and st.is_act(i)]
        acts_out = [o for o in op.outputs if st.is_act(o)]
        if op.role is QuantRole.INDEX:
            continue
        stay_float = st.stays_float(op, float_nodes)
        follows = (name in FOLLOW_PRODUCERS and bool(acts_in)
                   and all(producer.get(i) in float_ops or i in float_inputs for i in acts_in))
        for o in op.outputs:
            producer[o] = k
        if follows and not stay_float:
            float_ops.add(k)
            st.report.float_ops.append(f"{name} ({op.node}): follows its float producers")
            for o in acts_out:
                params.setdefault(o, own(o))
            continue
        spread = _scale_spread([params.get(i) or own(i) for i in acts_in]) if op.role is QuantRole.SAME_ALL else 1.0
        if (stay_float or spread > MAX_CONCAT_SPREAD) and (acts_in or acts_out):
            float_ops.add(k)
            why = ("skipped by the recipe" if op.node in skip_nodes else "detector decode tail"
                   if op.node in tail_nodes else ALWAYS_FLOAT_WHY if op.node in always_float_nodes
                   else "no int8 kernel" if stay_float else
                   f"inputs' ranges {spread:.0f}x apart (one int8 scale would erase the narrow ones)")
            st.report.float_ops.append(f"{name} ({op.node}): {why}")
            for o in acts_out:
                params.setdefault(o, own(o))
            continue
        for o in acts_out:
            if o in params:
                continue
            if op.role is QuantRole.FIXED and op.fixed_output is not None:
                params[o] = QParams.per_tensor(*op.fixed_output)
            elif op.role is QuantRole.SAME and acts_in:
                params[o] = params.get(acts_in[0]) or own(acts_in[0])
            elif op.node in symmetric_nodes:
                params[o] = symmetric_params(*st.ranges.get(o, (0.0, 1.0)))
            else:
                params[o] = own(o)
    for i in range(len(g.tensors)):
        if st.is_act(i) and i not in params:
            params[i] = own(i)
    return float_ops


def _float_fallback(st: _Int8Pass, op: Operator, dequantized: Dict[int, int], B) -> List[Operator]:
    """A float op between DEQUANTIZE (of each int8 input, once) and QUANTIZE (of each output);
    returns the operators that replace ``op``, ``op`` itself among them."""
    g = st.g
    before: List[Operator] = []
    ins = []
    for i in op.inputs:
        if i >= 0 and st.is_act(i):
            if i not in dequantized:
                f = g.add_tensor(f"{g.tensors[i].name}/dequantized", g.tensors[i].shape, "float32")
                st.keep_float.add(f)
                before.append(Operator(B.DEQUANTIZE, [i], [f], node=op.node, role=QuantRole.INDEX))
                dequantized[i] = f
            ins.append(dequantized[i])
        else:
            ins.append(i)
    outs, requants = [], []
    for o in op.outputs:
        if st.is_act(o):
            f = g.add_tensor(f"{g.tensors[o].name}/float", g.tensors[o].shape, "float32")
            st.keep_float.add(f)
            outs.append(f)
            # float readers (the next op of a float chain) take f itself; the QUANTIZE serves the
            # int8 readers and is pruned when there are none
            dequantized[o] = f
            requants.append(Operator(B.QUANTIZE, [f], [o], node=op.node, role=QuantRole.INDEX))
        else:
            outs.append(o)
    op.inputs, op.outputs = ins, outs
    return before + [op] + requants


def _quantize_weights(st: _Int8Pass, op: Operator, per_channel: bool) -> None:
    """A weighted op (conv, depthwise, fully connected, transpose conv): int8 symmetric weights,
    int32 bias at input scale × weight scale."""
    g = st.g
    w_pos, axis = _WEIGHT_AXIS[op.role]
    x_pos = _ACT_INPUT.get(op.role, 0)
    b_pos = _BIAS_INPUT[op.role]
    w = g.tensors[op.inputs[w_pos]]
    wq, wparams = _per_channel_weights(np.asarray(w.data, np.float32), axis, per_channel=per_channel)
    op.inputs[w_pos] = g.add_tensor(w.name + "/int8", w.shape, "int8", data=wq, quant=wparams)
    s_in = st.params[op.inputs[x_pos]].scale[0]
    if b_pos < len(op.inputs) and op.inputs[b_pos] >= 0:
        b = g.tensors[op.inputs[b_pos]]
        bscale = (s_in * wparams.scale).astype(np.float32)
        bq = np.clip(np.round(np.asarray(b.data, np.float64) / bscale), -2**31, 2**31 - 1).astype(np.int32)
        op.inputs[b_pos] = g.add_tensor(b.name + "/int32", b.shape, "int32", data=bq,
                                        quant=QParams(bscale, np.zeros(bscale.shape, np.int64), 0))


def _quantize_constants_and_requantize(st: _Int8Pass, op: Operator, B) -> List[Operator]:
    """Any other int8 op: float constant inputs become int8 (at the output's parameters where the op
    keeps them), and a SAME_ALL op's inputs are requantized to its output's; returns the QUANTIZE
    operators to put before ``op``."""
    g, params = st.g, st.params
    before: List[Operator] = []
    acts_in = [i for i in op.inputs if i >= 0 and st.is_act(i)]
    for pos, i in enumerate(op.inputs):
        if i < 0:
            continue
        t = g.tensors[i]
        if t.data is not None and t.dtype == "float32":
            if op.role in (QuantRole.SAME, QuantRole.SAME_ALL) and op.outputs and op.outputs[0] in params:
                q = params[op.outputs[0]]
            else:
                q = activation_params(float(np.min(t.data)), float(np.max(t.data)))
            op.inputs[pos] = g.add_tensor(t.name + "/int8", t.shape, "int8",
                                          data=quantize_values(np.asarray(t.data, np.float32), q), quant=q)
    if op.role is QuantRole.SAME_ALL and op.outputs and op.outputs[0] in params:
        target = params[op.outputs[0]]
        for pos, i in enumerate(op.inputs):
            if i >= 0 and i in acts_in and not params[i].same_as(target):
                r = g.add_tensor(f"{g.tensors[i].name}/requantized", g.tensors[i].shape, "float32")
                params[r] = target
                before.append(Operator(B.QUANTIZE, [i], [r], node=op.node, role=QuantRole.INDEX))
                op.inputs[pos] = r
                st.report.requantized += 1
    return before


def _drop_requantize_pairs(ops: List[Operator], g: Subgraph) -> List[Operator]:
    """QUANTIZE(float → q) then DEQUANTIZE(q → float output) with q read by nothing else: a float
    fallback that feeds a float model output writes the output directly (no needless int8 round trip)."""
    s = schema()
    readers: Dict[int, int] = {}
    for op in ops:
        for i in op.inputs:
            if i >= 0:
                readers[i] = readers.get(i, 0) + 1
    producer = {o: k for k, op in enumerate(ops) for o in op.outputs}
    drop: Set[int] = set()
    for k, op in enumerate(ops):
        if op.opcode != s.BuiltinOperator.DEQUANTIZE or g.tensors[op.inputs[0]].data is not None:
            continue
        q = op.inputs[0]
        p = producer.get(q)
        if p is None or ops[p].opcode != s.BuiltinOperator.QUANTIZE or readers.get(q, 0) != 1 or q in g.outputs:
            continue
        f, out = ops[p].inputs[0], op.outputs[0]
        if g.tensors[f].dtype != "float32" or f in g.inputs:
            continue
        # the float producer writes the model output itself
        for other in ops:
            other.outputs = [out if x == f else x for x in other.outputs]
            other.inputs = [out if x == f else x for x in other.inputs]
        drop.update((k, p))
    return [op for k, op in enumerate(ops) if k not in drop]

"""Lowering state: which TFLite tensor holds each ONNX tensor, and in which layout.

Layouts are tracked per ONNX tensor as a permutation ``perm``: the TFLite
tensor equals ``onnx_tensor.transpose(perm)``.  Convolutions and pools want
NHWC (``perm = (0, 2, 3, 1)``), elementwise ops accept any layout, and ops
with axes (Concat, Softmax, reductions, Slice, ...) remap their axes through
``perm``.  A TRANSPOSE is emitted only where a consumer needs a layout the
producer did not give — in practice once at the model inputs and once at
the outputs — and each (tensor, layout) pair is materialized at most once.
ONNX ``Transpose`` nodes emit nothing: they only change the recorded perm.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from ..lowering import GraphView, Node, clip_bounds
from .ir import Operator, QuantRole, Subgraph, schema

Perm = Tuple[int, ...]

#: NCHW → NHWC and NCL → NLC
NHWC: Perm = (0, 2, 3, 1)
NLC: Perm = (0, 2, 1)

#: ONNX Relu/Clip folded into the producing op: TFLite ActivationFunctionType values
ACT_NONE, ACT_RELU, ACT_RELU_N1_TO_1, ACT_RELU6 = 0, 1, 2, 3


def as_2d(n: int, length: int, c: int) -> Tuple[int, int, int, int]:
    """The NHWC shape a 1-D (NLC) tensor takes for CONV_2D / pools: the length on H, W = 1
    (a free RESHAPE of NLC; one place decides it for convolutions and pools alike)."""
    return (n, length, 1, c)


def lift_1d(values: Sequence[int], fill: int) -> List[int]:
    """A 1-D kernel/stride/dilation as 2-D on (H, W) = (length, 1)."""
    return list(values) + [fill]


def identity(rank: int) -> Perm:
    return tuple(range(rank))


def inverse(perm: Sequence[int]) -> Perm:
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return tuple(inv)


def permuted(shape: Sequence[int], perm: Sequence[int]) -> Tuple[int, ...]:
    return tuple(int(shape[p]) for p in perm)


def reshape_compatible(shape: Sequence[int], perm: Sequence[int]) -> bool:
    """True when the tensor's bytes are in ONNX order although ``perm`` is not the
    identity: the perm only moves size-1 axes (e.g. NHWC [1,1,1,C] after a global pool)."""
    moved = [p for p in perm if shape[p] != 1]
    return moved == sorted(moved)


_NP_DTYPES = {"float32", "float16", "int8", "uint8", "int16", "int32", "int64", "bool", "float64"}


def tfl_dtype(dtype: Any) -> str:
    name = np.dtype(dtype).name
    if name not in _NP_DTYPES:
        from edgekit.errors import UnsupportedModelError

        raise UnsupportedModelError(f"tensor dtype {name} has no TFLite lowering")
    return name


class Context:
    """Holds the view, the subgraph being built and the ONNX → TFLite tensor map."""

    def __init__(self, view: GraphView) -> None:
        self.view = view
        self.s = schema()
        self.graph = Subgraph()
        # onnx name -> (tflite index, perm)
        self.values: Dict[str, Tuple[int, Perm]] = {}
        # (onnx name, perm) -> tflite index of a materialized layout / constant
        self._layouts: Dict[Tuple[str, Perm], int] = {}
        self.consumed: Set[str] = set()   # nodes folded into another (fused activations)
        self.node: Optional[Node] = None  # the node being lowered (for op provenance)

    # -- tensors ---------------------------------------------------------------
    def new_tensor(self, name: str, shape: Sequence[int], dtype: str = "float32") -> int:
        return self.graph.add_tensor(name, shape, dtype)

    def const_tensor(self, name: str, value: np.ndarray, dtype: Optional[str] = None) -> int:
        value = np.asarray(value)
        dt = dtype or tfl_dtype(value.dtype)
        return self.graph.add_tensor(name, value.shape, dt, data=value.astype(dt))

    def shape(self, name: str) -> Tuple[int, ...]:
        shape = self.view.shape(name)
        if shape is None:  # coverage refuses these before lowering
            raise KeyError(f"no static shape for {name!r}")
        return shape

    def perm_of(self, name: str) -> Perm:
        if name in self.values:
            return self.values[name][1]
        return identity(len(self.shape(name)))

    def define(self, name: str, index: int, perm: Optional[Perm] = None) -> None:
        """Record that TFLite tensor ``index`` holds ONNX tensor ``name`` transposed by ``perm``."""
        rank = len(self.graph.tensors[index].shape)
        self.values[name] = (index, tuple(perm) if perm is not None else identity(rank))

    def output(self, name: str, perm: Optional[Perm] = None, dtype: Optional[str] = None) -> int:
        """A fresh TFLite tensor for ONNX output ``name`` in layout ``perm``."""
        shape = self.shape(name)
        perm = tuple(perm) if perm is not None else identity(len(shape))
        dt = dtype or tfl_dtype(self.view.dtype(name) or np.float32)
        idx = self.new_tensor(name, permuted(shape, perm), dt)
        self.define(name, idx, perm)
        return idx

    def get(self, name: str, perm: Optional[Perm] = None, rank: Optional[int] = None) -> int:
        """The TFLite tensor holding ONNX tensor ``name`` in layout ``perm``.

        ``rank`` > the tensor's rank first prepends size-1 axes (ONNX broadcasting),
        so a bias of shape [C, 1, 1] can meet an NHWC feature map.
        """
        shape = self.shape(name)
        if rank is not None and rank > len(shape):
            shape = (1,) * (rank - len(shape)) + tuple(shape)
        want = tuple(perm) if perm is not None else identity(len(shape))
        key = (name, want)
        if key in self._layouts:
            return self._layouts[key]
        const = self.view.const(name)
        if const is not None:
            value = np.asarray(const).reshape(shape).transpose(want)
            idx = self.const_tensor(name if want == identity(len(shape)) else f"{name}/{''.join(map(str, want))}",
                                    value)
            self._layouts[key] = idx
            return idx
        if name not in self.values:
            raise KeyError(f"ONNX tensor {name!r} used before it was produced")  # an edgekit bug
        node, self.node = self.node, None  # layout changes belong to no ONNX node (never a float fallback)
        try:
            return self._materialize(name, shape, want, key)
        finally:
            self.node = node

    def _materialize(self, name: str, shape: Tuple[int, ...], want: Perm, key: Tuple[str, Perm]) -> int:
        src, have = self.values[name]
        src_rank = len(self.graph.tensors[src].shape)
        if src_rank != len(shape):
            # bring it to ONNX order first, then reshape to the broadcast rank
            onnx_order = self.get(name)
            idx = self.reshape(onnx_order, shape, f"{name}/rank{len(shape)}")
            if want != identity(len(shape)):
                idx = self.transpose(idx, want, f"{name}/{''.join(map(str, want))}")
            self._layouts[key] = idx
            return idx
        if have == want:
            return src
        if reshape_compatible(shape, have) and reshape_compatible(shape, want):
            idx = self.reshape(src, permuted(shape, want), f"{name}/{''.join(map(str, want))}")
        else:
            # tfl_have = x.T(have); we want x.T(want) = tfl_have.T(r) with r = inverse(have)[want]
            inv = inverse(have)
            idx = self.transpose(src, tuple(inv[w] for w in want), f"{name}/{''.join(map(str, want))}")
        self._layouts[key] = idx
        return idx

    # -- operators -------------------------------------------------------------
    def op(self, opcode: str, inputs: Sequence[int], outputs: Sequence[int], options: Any = None,
           options_type: Optional[str] = None, role: QuantRole = QuantRole.FREE,
           fixed_output: Optional[Tuple[float, int]] = None) -> Operator:
        s = self.s
        code = getattr(s.BuiltinOperator, opcode)
        otype = 0
        if options is not None:
            otype = getattr(s.BuiltinOptions, options_type or type(options).__name__[:-1])
        op = Operator(code, list(inputs), list(outputs), otype, options,
                      node=self.node.name if self.node is not None else "", role=role, fixed_output=fixed_output)
        self.graph.operators.append(op)
        return op

    def options(self, kind: str, **fields: Any) -> Any:
        obj = getattr(self.s, kind + "T")()
        for k, v in fields.items():
            if not hasattr(obj, k):
                raise AttributeError(f"{kind} has no field {k}")  # an edgekit bug
            setattr(obj, k, v)
        return obj

    def int32(self, name: str, values: Sequence[int]) -> int:
        return self.const_tensor(name, np.asarray(values, np.int32))

    def reshape(self, src: int, shape: Sequence[int], name: str) -> int:
        t = self.graph.tensors[src]
        out = self.new_tensor(name, shape, t.dtype)
        self.op("RESHAPE", [src, self.int32(name + "/shape", shape)], [out],
                self.options("ReshapeOptions", newShape=np.asarray(shape, np.int32)), role=QuantRole.SAME)
        return out

    def transpose(self, src: int, perm: Sequence[int], name: str) -> int:
        t = self.graph.tensors[src]
        out = self.new_tensor(name, permuted(t.shape, perm), t.dtype)
        self.op("TRANSPOSE", [src, self.int32(name + "/perm", perm)], [out], self.options("TransposeOptions"),
                role=QuantRole.SAME)
        return out

    # -- fused activations -----------------------------------------------------
    def fusable_activation(self, out: str) -> Tuple[int, str]:
        """If ``out``'s only reader is Relu / Clip(0,6) / Clip(-1,1), fold it:
        returns (ActivationFunctionType, the name of the activation's output)."""
        user = self.view.only_consumer(out)
        if user is None or not user.is_default_domain:
            return ACT_NONE, out
        if user.op_type == "Relu":
            kind = ACT_RELU
        elif user.op_type == "Clip":
            lo, hi = clip_bounds(self.view, user)
            if (lo, hi) == (0.0, 6.0):
                kind = ACT_RELU6
            elif (lo, hi) == (-1.0, 1.0):
                kind = ACT_RELU_N1_TO_1
            elif lo == 0.0 and hi == float("inf"):
                kind = ACT_RELU
            else:
                return ACT_NONE, out
        else:
            return ACT_NONE, out
        self.consumed.add(user.name)
        return kind, user.outputs[0]

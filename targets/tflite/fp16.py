"""fp16 weights: float constants stored as float16, each expanded by one DEQUANTIZE.

This is the pattern the TFLite converter's float16 quantization writes and
that XNNPACK recognises: the delegate folds ``DEQUANTIZE(fp16 constant)``
into the consuming op's static weights, so the file halves and the
arithmetic stays fp32 (or fp16 where the CPU has native fp16 and the
delegate is allowed to use it).  Small constants (scalars, short vectors)
stay fp32: halving them saves nothing and costs precision.
"""
from __future__ import annotations

import copy
from typing import Dict

import numpy as np

from .ir import Operator, QuantRole, Subgraph, schema

#: constants with fewer elements stay fp32
MIN_ELEMENTS = 16


def to_fp16_weights(graph: Subgraph) -> Subgraph:
    g = copy.deepcopy(graph)
    s = schema()
    dequantized: Dict[int, int] = {}
    new_ops = []
    for op in g.operators:
        for k, i in enumerate(op.inputs):
            if i < 0:
                continue
            t = g.tensors[i]
            if t.data is None or t.dtype != "float32" or t.data.size < MIN_ELEMENTS:
                continue
            if i not in dequantized:
                half = g.add_tensor(f"{t.name}/fp16", t.shape, "float16", data=t.data.astype(np.float16))
                out = g.add_tensor(t.name, t.shape, "float32")
                t.name = f"{t.name}/fp32_unused"
                new_ops.append(Operator(s.BuiltinOperator.DEQUANTIZE, [half], [out], node=op.node,
                                        role=QuantRole.FLOAT))
                dequantized[i] = out
            op.inputs[k] = dequantized[i]
        new_ops.append(op)
    g.operators = new_ops
    from .lower import _prune

    _prune(g)
    return g

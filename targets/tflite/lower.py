"""ONNX (canonical, fp32) → an fp32 TFLite :class:`~.ir.Subgraph`.

The precision passes (:mod:`.fp16`, :mod:`.quantize`) rewrite the result.
Model inputs and outputs keep ONNX's names, shapes and layouts, so the
package's preprocessing is the same as for every other target; the NCHW →
NHWC transposes sit once at those edges (see :mod:`.context`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Tuple

import numpy as np

from edgekit.errors import UnsupportedModelError

from ..lowering import GraphView, Uncovered, prepare
from .context import Context, identity, tfl_dtype
from .ir import Subgraph
from .optable import COVERAGE, LOWERINGS


@dataclass
class Lowered:
    graph: Subgraph
    view: GraphView
    model: Any
    counts: Dict[str, int] = field(default_factory=dict)   # fusions and folds that fired
    op_counts: Dict[str, int] = field(default_factory=dict)


def unsupported(model: Any) -> Tuple[GraphView, List[Uncovered]]:
    """The prepared view and every node the op table cannot lower (cheap: no TFLite needed)."""
    view, _ = prepare(model)
    return view, COVERAGE.unsupported(view)


def lower(model: Any) -> Lowered:
    view, counts = prepare(model)
    problems = COVERAGE.unsupported(view)
    if problems:
        raise UnsupportedModelError(
            f"{len(problems)} node(s) the tflite target cannot lower: " + "; ".join(map(str, problems))
            + " (fix: replace these ops in the model, or pick another target from `edgekit targets`)"
        )
    ctx = Context(view)
    g = ctx.graph
    for name in view.inputs:
        idx = ctx.new_tensor(name, view.shape(name) or (), tfl_dtype(view.dtype(name) or np.float32))
        g.inputs.append(idx)
        ctx.define(name, idx)
    for node in view:
        if node.name in ctx.consumed:
            continue
        ctx.node = node
        LOWERINGS[node.op_type](ctx, node)
    ctx.node = None
    for name in view.outputs:
        if view.is_const(name):
            raise UnsupportedModelError(f"output {name!r} is a constant; a TFLite model cannot output a constant")
        idx = ctx.get(name, identity(len(ctx.shape(name))))
        if idx in g.inputs or idx in g.outputs:
            # an output that is also an input (or another output) needs its own tensor
            src = idx
            idx = ctx.reshape(src, g.tensors[src].shape, name)
        # the output tensor carries the ONNX name; a permuted copy of it is renamed
        for t in g.tensors:
            if t.name == name and t.index != idx:
                t.name = f"{name}/internal{t.index}"
        g.tensors[idx].name = name
        g.outputs.append(idx)
    _prune(g)
    ops: Dict[str, int] = {}
    from .ir import schema

    names = {v: k for k, v in vars(schema().BuiltinOperator).items() if not k.startswith("_")}
    for op in g.operators:
        ops[names.get(op.opcode, str(op.opcode))] = ops.get(names.get(op.opcode, str(op.opcode)), 0) + 1
    return Lowered(g, view, model, counts, ops)


def _prune(g: Subgraph) -> None:
    """Drop operators whose outputs nobody reads and tensors nothing references; renumber."""
    while True:
        users = g.consumers()
        live = [op for op in g.operators if any(o in users or o in g.outputs for o in op.outputs)]
        if len(live) == len(g.operators):
            break
        g.operators = live
    used = set(g.inputs) | set(g.outputs)
    for op in g.operators:
        used.update(i for i in op.inputs if i >= 0)
        used.update(op.outputs)
    remap: Dict[int, int] = {}
    kept = []
    for t in g.tensors:
        if t.index in used:
            remap[t.index] = len(kept)
            t.index = len(kept)
            kept.append(t)
    g.tensors = kept
    for op in g.operators:
        op.inputs = [remap[i] if i >= 0 else -1 for i in op.inputs]
        op.outputs = [remap[o] for o in op.outputs]
    g.inputs = [remap[i] for i in g.inputs]
    g.outputs = [remap[o] for o in g.outputs]

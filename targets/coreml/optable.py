"""The Core ML target's op table, derived from the lowering's own table (:data:`.ops.OPS`).

One source of truth: an op is in the table exactly when the lowering has an
emitter for it, and its condition is the emitter's own precondition (e.g.
"the weight must be a constant"), so ``check`` and ``build`` cannot disagree.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

from ..optable import NodeView, OpRule, OpTable, conditional, supported, unsupported
from .context import Node
from .ops import NOT_LOWERED, OPS, OpLowering

#: ops whose output is known at build time when their inputs are (the canonical graph keeps few)
_SHAPE_ONLY = frozenset({"Shape", "Constant", "ConstantOfShape"})


def _is_const(view: NodeView) -> Callable[[str], bool]:
    graph = view.graph

    def check(name: str, depth: int = 0) -> bool:
        if name in graph.initializers:
            return True
        producer = graph.producer.get(name)
        if producer is None or depth > 32:
            return False
        if producer.op_type in _SHAPE_ONLY:
            return True
        return all(check(i, depth + 1) for i in producer.input if i)

    return check


def _rule(spec: OpLowering) -> OpRule:
    if spec.condition is None:
        return supported(since=spec.since)
    cond = spec.condition

    def condition(view: NodeView) -> Optional[str]:
        return cond(Node.from_proto(view.node, view.name), _is_const(view))

    return conditional(condition, since=spec.since)


def build_op_table() -> OpTable:
    rules: Dict[Tuple[str, str], Any] = {("", op): _rule(spec) for op, spec in OPS.items()}
    rules.update({("", op): unsupported(reason) for op, reason in NOT_LOWERED.items()})
    return OpTable.build("coreml", "edgekit's ONNX → MIL lowering (targets/coreml/ops.py)", rules=rules)


OP_TABLE = build_op_table()

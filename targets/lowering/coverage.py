"""The op-coverage type: which ONNX ops an emitter lowers, as data.

An emitter declares one :class:`OpCoverage` — op type → :class:`OpRule` (the
opset range it covers, an optional attribute/shape check, a note) — and gets
:meth:`OpCoverage.unsupported`, which names every node it cannot lower with
op type, attributes and the reason, before any long step.  The rule's
``check`` sees the node in the (fused, folded) :class:`GraphView`, so a rule
can refuse e.g. a dynamic ``Reshape`` target or a ``Resize`` mode.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Tuple

from .graph import FUSED_DOMAIN, GraphView, Node

#: ``check(node, view) -> reason`` or None when the node can be lowered
NodeCheck = Callable[[Node, GraphView], Optional[str]]


@dataclass(frozen=True)
class OpRule:
    """How one ONNX op type is covered."""

    op_type: str
    #: the ONNX schema versions (``since_version``) this rule was written for
    since: int = 1
    until: Optional[int] = None
    check: Optional[NodeCheck] = None
    note: str = ""

    def covers_opset(self, opset: int) -> bool:
        return opset >= self.since and (self.until is None or opset <= self.until)


@dataclass(frozen=True)
class Uncovered:
    """One node an emitter cannot lower: what it is and why."""

    node: str
    op_type: str
    attrs: str
    reason: str

    def __str__(self) -> str:
        return f"{self.node} ({self.op_type} {self.attrs}): {self.reason}"


@dataclass(frozen=True)
class OpCoverage:
    """The op table of one emitter (``target`` names it in messages)."""

    target: str
    rules: Mapping[str, OpRule] = field(default_factory=dict)

    @classmethod
    def of(cls, target: str, rules: Iterable[OpRule]) -> "OpCoverage":
        table: Dict[str, OpRule] = {}
        for rule in rules:
            if rule.op_type in table:
                raise ValueError(f"{target} op table lists {rule.op_type} twice")  # an edgekit bug
            table[rule.op_type] = rule
        return cls(target, table)

    @property
    def op_types(self) -> Tuple[str, ...]:
        return tuple(sorted(self.rules))

    def reason(self, node: Node, view: GraphView) -> Optional[str]:
        """None when ``node`` can be lowered, else why not."""
        if not (node.is_default_domain or node.domain == FUSED_DOMAIN):
            return f"custom domain {node.domain!r} has no {self.target} lowering"
        rule = self.rules.get(node.op_type)
        if rule is None:
            return f"no {self.target} lowering for {node.op_type}"
        if node.is_default_domain:
            opset = view.default_opset
            if not rule.covers_opset(opset):
                span = f"{rule.since}–{rule.until}" if rule.until else f"{rule.since}+"
                return f"{node.op_type} at opset {opset} is outside the covered opsets {span}"
        for out in node.outputs:
            if out and view.shape(out) is None and view.const(out) is None:
                return f"output {out!r} has no static shape (fix the input size with --size, or simplify the model)"
        if rule.check is not None:
            return rule.check(node, view)
        return None

    def unsupported(self, view: GraphView) -> List[Uncovered]:
        out = []
        for node in view.nodes:
            why = self.reason(node, view)
            if why is not None:
                out.append(Uncovered(node.name, node.op_type if node.is_default_domain else f"{node.domain}::{node.op_type}",
                                     node.describe_attrs(), why))
        return out

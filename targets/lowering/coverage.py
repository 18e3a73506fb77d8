"""The op-coverage type: which ONNX ops an emitter lowers, as data.

An emitter declares one :class:`OpCoverage` — op type → :class:`OpRule` (the
opset range it covers, an optional attribute/shape check, a note) — and gets
:meth:`OpCoverage.unsupported`, which names every node it cannot lower with
op type, attributes and the reason, before any long step.  The rule's
``check`` sees the node in the (fused, folded) :class:`GraphView`, so a rule
can refuse e.g. a dynamic ``Reshape`` target or a ``Resize`` mode.

:meth:`OpCoverage.op_table` turns it into the target's :class:`~..optable.OpTable`
(what ``Target.check`` walks over the canonical ONNX graph): each node is
judged in the view the build lowers, after the emitter's own preparation
(folding, and fusions where the emitter uses ours), so ``check`` and the
build cannot disagree.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

from .graph import FUSED_DOMAIN, GraphView, Node

#: ``check(node, view) -> reason`` or None when the node can be lowered
NodeCheck = Callable[[Node, GraphView], Optional[str]]


def needs_const(*indices: int, what: str, emitter: str) -> NodeCheck:
    """A check refusing the node when one of the given (present) inputs is computed at run time:
    weights, shapes, axes and sizes an emitter must know at build time."""
    def check(node: Node, view: GraphView) -> Optional[str]:
        for i in indices:
            name = node.input(i)
            if name and not view.is_const(name):
                return (f"{what} ({name!r}) is computed at run time; the {emitter} lowering needs it as a "
                        "constant (export with constant weights/shapes)")
        return None

    return check


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
    #: ops listed only to say why they are not lowered (instead of "no lowering")
    not_lowered: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, target: str, rules: Iterable[OpRule], not_lowered: Optional[Mapping[str, str]] = None) -> "OpCoverage":
        table: Dict[str, OpRule] = {}
        for rule in rules:
            if rule.op_type in table or rule.op_type in (not_lowered or {}):
                raise ValueError(f"{target} op table lists {rule.op_type} twice")  # an edgekit bug
            table[rule.op_type] = rule
        return cls(target, table, dict(not_lowered or {}))

    @property
    def op_types(self) -> Tuple[str, ...]:
        return tuple(sorted(self.rules))

    def reason(self, node: Node, view: GraphView) -> Optional[str]:
        """None when ``node`` can be lowered, else why not."""
        if not (node.is_default_domain or node.domain == FUSED_DOMAIN):
            return f"custom domain {node.domain!r} has no {self.target} lowering"
        rule = self.rules.get(node.op_type)
        if rule is None:
            return self.not_lowered.get(node.op_type, f"no {self.target} lowering for {node.op_type}")
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

    def op_table(self, target: str, source: str, prepare: Callable[[Any], GraphView], others: str) -> Any:
        """The target's :class:`~..optable.OpTable`: every row (and every op no row names) is judged by
        :meth:`reason` on the node in ``prepare(model)``, the view the build lowers.  ``target`` is the
        registered target name (this coverage's own name is the one its messages use).

        A node that preparation folded into a constant or a fusion absorbed is fine; ``others`` says
        which unlisted ops pass that way (for ``edgekit targets``).
        """
        from ..optable import NodeView, OpTable, conditional, unsupported

        prepared: List[Tuple[Any, GraphView]] = []  # the last model prepared: check walks one model node by node

        def lowerable(node: NodeView) -> Optional[str]:
            model = node.graph.model
            if not (prepared and prepared[0][0] is model):
                prepared[:] = [(model, prepare(model))]
            view = prepared[0][1]
            if node.name in view.fused_names():
                return None
            found = view.node(node.name)
            return None if found is None else self.reason(found, view)

        rules: Dict[Tuple[str, str], Any] = {
            ("", op): (conditional(lowerable, since=r.since, until=r.until, reason=r.note),)
            for op, r in self.rules.items()}
        rules.update({("", op): (unsupported(why),) for op, why in self.not_lowered.items()})
        return OpTable(target=target, source=source, rules=rules,
                       domain_defaults={"": conditional(lowerable, reason=others)})

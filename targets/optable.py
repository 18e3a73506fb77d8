"""One op-table type for every target: op type → support rule, as data.

A target declares an :class:`OpTable`; :meth:`edgekit.targets.base.Target.check`
walks the canonical graph with it (one implementation for every target).  A
rule says whether the target builds an op — always, never (with the reason),
or when a condition on the node holds (attributes, neighbours) — and the
opset range it covers (the onnx reference implementation's ``op_*.py`` files
are the model: data with the versions they cover, and an error that lists
what is available when an op is missing).

Lookup order for a node ``(domain, op_type)`` at the model's opset for its
domain:

1. the rules listed for that op whose opset range covers the opset;
2. an op listed only for other opsets → unsupported, naming the range;
3. the domain's default rule (e.g. onnxruntime: "any ONNX schema");
4. a domain the table knows → "no rule for this op";
5. an unknown (custom) domain → the table's ``unknown_domain`` reason.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from .graph import GraphInfo, domain_of

__all__ = ["Support", "OpRule", "OpTable", "NodeView", "supported", "unsupported", "conditional"]


class Support(str, enum.Enum):
    SUPPORTED = "supported"
    CONDITIONAL = "conditional"  #: supported when the rule's condition finds nothing wrong
    UNSUPPORTED = "unsupported"


@dataclass(frozen=True)
class NodeView:
    """What a rule's condition sees: one node, its name, the opset, and the graph around it."""

    name: str
    node: Any
    opset: int
    graph: GraphInfo

    @property
    def op_type(self) -> str:
        return str(self.node.op_type)

    def attr(self, name: str, default: Any = None) -> Any:
        return self.graph.attr(self.node, name, default)


#: a condition returns None when the node can be built, else the reason it cannot
Condition = Callable[[NodeView], Optional[str]]


@dataclass(frozen=True)
class OpRule:
    """How a target handles one op over an opset range ``[since, until]`` (``until`` None: open)."""

    support: Support
    reason: str = ""
    condition: Optional[Condition] = None
    since: int = 1
    until: Optional[int] = None
    #: attributes that decide support; reported with an unsupported node
    attributes: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.support is Support.CONDITIONAL and self.condition is None:
            raise ValueError("a conditional OpRule needs a condition")
        if self.support is Support.UNSUPPORTED and not self.reason:
            raise ValueError("an unsupported OpRule needs a reason")
        if self.until is not None and self.until < self.since:
            raise ValueError(f"OpRule opset range [{self.since}, {self.until}] is empty")

    def covers(self, opset: int) -> bool:
        return self.since <= opset and (self.until is None or opset <= self.until)

    def span(self) -> str:
        return f"opset {self.since}+" if self.until is None else f"opsets {self.since}–{self.until}"

    def why_not(self, view: NodeView) -> Optional[str]:
        if self.support is Support.UNSUPPORTED:
            return self.reason
        if self.support is Support.CONDITIONAL:
            assert self.condition is not None
            return self.condition(view)
        return None


def supported(since: int = 1, until: Optional[int] = None) -> OpRule:
    return OpRule(Support.SUPPORTED, since=since, until=until)


def unsupported(reason: str, since: int = 1, until: Optional[int] = None) -> OpRule:
    return OpRule(Support.UNSUPPORTED, reason=reason, since=since, until=until)


def conditional(condition: Condition, reason: str = "", attributes: Sequence[str] = (), since: int = 1,
                until: Optional[int] = None) -> OpRule:
    return OpRule(Support.CONDITIONAL, reason=reason, condition=condition, since=since, until=until,
                  attributes=tuple(attributes))


RuleSpec = "OpRule | Sequence[OpRule]"


@dataclass(frozen=True)
class OpTable:
    """A target's op table: ``rules[(domain, op_type)]`` → rules by opset range.

    ``source`` says where the data came from (the toolchain and version);
    ``domain_defaults`` apply to ops of a domain that no rule names;
    ``unknown_domain`` is the reason for a domain the table does not know
    (``{domain}`` is filled in).
    """

    target: str
    source: str
    rules: Mapping[Tuple[str, str], Tuple[OpRule, ...]]
    domain_defaults: Mapping[str, OpRule] = field(default_factory=dict)
    unknown_domain: str = "custom domain {domain!r}: the {target} target has no implementation for it"
    #: the reason for an op of a known domain that no rule names
    missing_op: str = "the {target} target has no {op} ({source})"
    #: domains whose ops the target takes without a table (decided by the toolchain at build time)
    open_domains: Tuple[str, ...] = ()

    @classmethod
    def build(
        cls,
        target: str,
        source: str,
        *,
        supported_ops: Optional[Mapping[str, Iterable[str]]] = None,
        rules: Optional[Mapping[Tuple[str, str], "OpRule | Sequence[OpRule]"]] = None,
        opsets: Optional[Tuple[int, Optional[int]]] = None,
        **kwargs: Any,
    ) -> "OpTable":
        """A table from plain op-name sets (``{domain: ops}``, each supported over ``opsets``)
        plus explicit rules, which replace a plain entry for the same op."""
        since, until = opsets or (1, None)
        table: Dict[Tuple[str, str], Tuple[OpRule, ...]] = {}
        for domain, ops in (supported_ops or {}).items():
            for op in ops:
                table[(domain, op)] = (supported(since, until),)
        for key, value in (rules or {}).items():
            table[key] = (value,) if isinstance(value, OpRule) else tuple(value)
        return cls(target=target, source=source, rules=table, **kwargs)

    # -- lookup ---------------------------------------------------------------
    def why_not(self, view: NodeView) -> Optional[str]:
        """None when the target builds this node; else the reason."""
        domain = domain_of(view.node)
        listed = self.rules.get((domain, view.op_type))
        if listed:
            for rule in listed:
                if rule.covers(view.opset):
                    return rule.why_not(view)
            spans = ", ".join(r.span() for r in listed if r.support is not Support.UNSUPPORTED)
            if spans:
                return f"the {self.target} target builds {view.op_type} for {spans} only, not opset {view.opset}"
            return listed[-1].reason
        default = self.domain_defaults.get(domain)
        if default is not None:
            return default.why_not(view)
        if domain in self.open_domains:
            return None
        if domain in self.domains():
            return self.missing_op.format(target=self.target, op=view.op_type, source=self.source)
        return self.unknown_domain.format(domain=domain, target=self.target)

    def rule_attributes(self, domain: str, op_type: str) -> Tuple[str, ...]:
        names: List[str] = []
        for rule in self.rules.get((domain, op_type), ()):
            names.extend(a for a in rule.attributes if a not in names)
        return tuple(names)

    def domains(self) -> List[str]:
        return sorted({d for d, _ in self.rules} | set(self.domain_defaults) | set(self.open_domains))

    def op_types(self, domain: str = "") -> List[str]:
        """Op types this table builds (fully or under a condition) in ``domain``."""
        return sorted(op for (d, op), rules in self.rules.items()
                      if d == domain and any(r.support is not Support.UNSUPPORTED for r in rules))

    def available(self, domain: str = "") -> str:
        """One phrase for an error: what the target has in ``domain``."""
        ops = self.op_types(domain)
        default = self.domain_defaults.get(domain)
        where = "the default ONNX domain" if domain == "" else f"domain {domain!r}"
        if default is not None and default.support is not Support.UNSUPPORTED:
            extra = f", plus {', '.join(ops)}" if ops else ""
            return f"the {self.target} target builds every op {default.reason or 'of ' + where}{extra}"
        if not ops:
            return f"the {self.target} target has no op in {where}"
        return f"the {self.target} target builds these op types in {where}: {', '.join(ops)}"

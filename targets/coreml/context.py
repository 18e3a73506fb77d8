"""State shared by the ONNX → MIL emitters while one graph is lowered.

An ONNX value is either a MIL ``Var`` (computed at run time) or a numpy array
(an initializer, a ``Constant`` or something folded at build time).  Keeping
constants as numpy until an emitter needs them lets shape arithmetic
(``Shape → Gather → Concat → Reshape``) fold away instead of reaching the
Neural Engine as dynamic-shape ops.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np

from edgekit.errors import UnsupportedModelError

from ..lowering import Node  # the shared graph view's node: the emitters walk the same view as TFLite's

_NOT_IDENT = re.compile(r"[^A-Za-z0-9_]")


def mil_name(onnx_name: str) -> str:
    """A MIL identifier for an ONNX value name (MIL names are C-like identifiers)."""
    name = _NOT_IDENT.sub("_", onnx_name)
    if not name or name[0].isdigit():
        name = "v_" + name
    return name


class LoweringError(UnsupportedModelError):
    """A node the lowering cannot emit; the message names the node and the reason."""


@dataclass
class Lowering:
    """The values of the graph being lowered, by ONNX name."""

    values: Dict[str, Any] = field(default_factory=dict)
    #: ONNX tensor name → (min, max) activation range, for W8A8 (empty otherwise)
    act_ranges: Mapping[str, Tuple[float, float]] = field(default_factory=dict)
    #: names already given to MIL ops, so two ONNX names that sanitize alike stay apart
    used_names: Dict[str, int] = field(default_factory=dict)
    #: MIL op name → ONNX node name, for reports that speak the user's names
    origins: Dict[str, str] = field(default_factory=dict)

    def unique(self, base: str) -> str:
        base = mil_name(base)
        n = self.used_names.get(base, 0)
        self.used_names[base] = n + 1
        return base if n == 0 else f"{base}_{n}"

    def get(self, name: str) -> Any:
        if name not in self.values:
            raise KeyError(name)
        return self.values[name]

    def const(self, name: str) -> Optional[np.ndarray]:
        """The value as numpy when it is known at build time, else None."""
        v = self.values.get(name)
        return v if isinstance(v, np.ndarray) else None


def node_error(node: Node, reason: str) -> LoweringError:
    """The error for one node the lowering cannot emit, naming it."""
    return LoweringError(f"node {node.name} ({node.op_type}): {reason}")


#: an emitter: (node, lowering state, opset) → one value per ONNX output
Emitter = Callable[[Node, Lowering, int], List[Any]]

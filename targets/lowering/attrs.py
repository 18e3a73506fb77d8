"""Reading ONNX operands that moved from attributes to constant inputs across opsets.

``Clip``'s bounds, ``Pad``'s pads, ``Slice``'s starts/ends/axes/steps,
``Split``'s sizes, the reductions' and ``(Un)Squeeze``'s axes and ``Tile``'s
repeats are attributes in old opsets and (constant) inputs in new ones.  The
emitters read them the same way wherever the value lives, so one helper
serves both: ``source`` is anything with ``const(name) -> ndarray | None``
(a :class:`~.graph.GraphView`, or an emitter's own value table that also
holds what it folded while lowering).
"""
from __future__ import annotations

from typing import List, Optional, Protocol, Tuple

import numpy as np

from .graph import Node


class ConstSource(Protocol):
    def const(self, name: str) -> Optional[np.ndarray]: ...


def const_ints(source: ConstSource, node: Node, attr: str, input_index: int) -> Optional[List[int]]:
    """An int list given as attribute (older opsets) or constant input (newer ones); None when absent
    or computed at run time."""
    if attr in node.attrs and node.attrs[attr] is not None:
        return [int(v) for v in np.asarray(node.attrs[attr]).reshape(-1)]
    name = node.input(input_index)
    if not name:
        return None
    c = source.const(name)
    return None if c is None else [int(v) for v in np.asarray(c).reshape(-1)]


def clip_bounds(source: ConstSource, node: Node) -> Tuple[float, float]:
    """Clip's (min, max) from attributes (opset < 11) or constant inputs; ±inf where absent, nan where
    computed at run time."""
    lo = node.attr("min", float("-inf"))
    hi = node.attr("max", float("inf"))
    if node.input(1):
        c = source.const(node.input(1))
        lo = float(np.asarray(c).reshape(-1)[0]) if c is not None else float("nan")
    if node.input(2):
        c = source.const(node.input(2))
        hi = float(np.asarray(c).reshape(-1)[0]) if c is not None else float("nan")
    return float(lo), float(hi)

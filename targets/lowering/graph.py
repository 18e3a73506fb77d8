"""A read-mostly view over the canonical ONNX graph that emitters walk.

The canonical model (``targets/canonicalize.py``) has fixed shapes, folded
constants and BatchNorm already folded into Conv.  Emitters for formats that
are not ONNX (TFLite, Core ML's MIL) need the same things from it: nodes in
topological order with parsed attributes, constants as numpy arrays (from
initializers *and* ``Constant`` nodes), every tensor's static shape and dtype,
and producer/consumer maps.  Pattern fusions (:mod:`.fusions`) rewrite the
view — never the ``ModelProto`` — by replacing a matched group of nodes with
one node of the ``edgekit.fused`` domain.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

#: domain of the nodes pattern fusions create (never written to an ONNX file)
FUSED_DOMAIN = "edgekit.fused"
_DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclass
class Node:
    """One ONNX node with its attributes parsed into Python values.

    ``inputs`` keeps ONNX's empty strings for omitted optional inputs so that
    positions stay meaningful (``Resize``'s ``scales`` vs ``sizes``).
    ``fused_from`` names the source nodes a fused node replaced.
    """

    name: str
    op_type: str
    inputs: List[str]
    outputs: List[str]
    attrs: Dict[str, Any] = field(default_factory=dict)
    domain: str = ""
    fused_from: Tuple[str, ...] = ()

    @property
    def is_default_domain(self) -> bool:
        return self.domain in _DEFAULT_DOMAINS

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)

    def input(self, i: int) -> str:
        """The i-th input name, '' when omitted."""
        return self.inputs[i] if i < len(self.inputs) else ""

    def describe_attrs(self) -> str:
        """Attributes for error messages (tensors and graphs summarised)."""
        parts = []
        for k, v in sorted(self.attrs.items()):
            if isinstance(v, np.ndarray):
                v = f"tensor{list(v.shape)}"
            parts.append(f"{k}={v}")
        return "{" + ", ".join(parts) + "}"


def _attr_value(attr: Any) -> Any:
    from onnx import AttributeProto, numpy_helper

    t = attr.type
    if t == AttributeProto.FLOAT:
        return float(attr.f)
    if t == AttributeProto.INT:
        return int(attr.i)
    if t == AttributeProto.STRING:
        return attr.s.decode("utf-8", "replace")
    if t == AttributeProto.TENSOR:
        return numpy_helper.to_array(attr.t)
    if t == AttributeProto.FLOATS:
        return [float(x) for x in attr.floats]
    if t == AttributeProto.INTS:
        return [int(x) for x in attr.ints]
    if t == AttributeProto.STRINGS:
        return [s.decode("utf-8", "replace") for s in attr.strings]
    if t in (AttributeProto.GRAPH, AttributeProto.GRAPHS):
        return "<subgraph>"  # control flow is refused by every emitter's op table
    return None


class GraphView:
    """Nodes, constants, shapes and edges of one (canonical) ONNX graph."""

    def __init__(self, model: Any) -> None:
        from onnx import helper, numpy_helper

        graph = model.graph
        self.opset: Dict[str, int] = {imp.domain or "": int(imp.version) for imp in model.opset_import}
        self.constants: Dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self.shapes: Dict[str, Tuple[int, ...]] = {}
        self.dtypes: Dict[str, np.dtype] = {}
        for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
            tt = vi.type.tensor_type
            if tt.elem_type:
                try:
                    self.dtypes[vi.name] = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
                except Exception:  # bfloat16/float8 etc.: leave unknown, the op table refuses them
                    pass
            if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
                self.shapes[vi.name] = tuple(int(d.dim_value) for d in tt.shape.dim)
        for name, value in self.constants.items():
            self.shapes[name] = tuple(value.shape)
            self.dtypes[name] = value.dtype
        self.inputs: List[str] = [vi.name for vi in graph.input if vi.name not in self.constants]
        self.outputs: List[str] = [vo.name for vo in graph.output]
        self.nodes: List[Node] = []
        for i, n in enumerate(graph.node):
            node = Node(
                # the same fallback name as targets/graph.py's iter_nodes, so reports agree
                name=n.name or (n.output[0] if n.output else f"{n.op_type}_{i}"),
                op_type=n.op_type,
                inputs=list(n.input),
                outputs=list(n.output),
                attrs={a.name: _attr_value(a) for a in n.attribute},
                domain=n.domain or "",
            )
            if node.op_type == "Constant" and node.is_default_domain:
                value = _constant_node_value(node)
                if value is not None:
                    self.set_constant(node.outputs[0], value)
                    continue
            self.nodes.append(node)
        self._reindex()

    # -- lookups ------------------------------------------------------------
    @property
    def default_opset(self) -> int:
        return self.opset.get("", self.opset.get("ai.onnx", 0))

    def _reindex(self) -> None:
        self._producer: Dict[str, Node] = {}
        self._consumers: Dict[str, List[Node]] = {}
        for node in self.nodes:
            for o in node.outputs:
                if o:
                    self._producer[o] = node
            for i in node.inputs:
                if i:
                    self._consumers.setdefault(i, []).append(node)

    def producer(self, tensor: str) -> Optional[Node]:
        return self._producer.get(tensor)

    def consumers(self, tensor: str) -> List[Node]:
        return list(self._consumers.get(tensor, ()))

    def const(self, tensor: str) -> Optional[np.ndarray]:
        """The constant value of a tensor, None when it is computed at run time."""
        if not tensor:
            return None
        return self.constants.get(tensor)

    def is_const(self, tensor: str) -> bool:
        return bool(tensor) and tensor in self.constants

    def shape(self, tensor: str) -> Optional[Tuple[int, ...]]:
        return self.shapes.get(tensor)

    def dtype(self, tensor: str) -> Optional[np.dtype]:
        return self.dtypes.get(tensor)

    def is_graph_output(self, tensor: str) -> bool:
        return tensor in self.outputs

    def only_consumer(self, tensor: str) -> Optional[Node]:
        """The single node reading ``tensor`` when nothing else (not even a graph output) does."""
        users = self._consumers.get(tensor, ())
        if len(users) != 1 or self.is_graph_output(tensor):
            return None
        return users[0]

    def __iter__(self) -> Iterator[Node]:
        return iter(list(self.nodes))

    # -- rewriting ----------------------------------------------------------
    def set_constant(self, tensor: str, value: np.ndarray) -> None:
        value = np.asarray(value)
        self.constants[tensor] = value
        self.shapes[tensor] = tuple(value.shape)
        self.dtypes[tensor] = value.dtype

    def replace(self, old: Sequence[Node], new: Optional[Node]) -> None:
        """Remove ``old`` and put ``new`` where the last of them was (keeps topological order)."""
        ids = {id(n) for n in old}
        positions = [i for i, n in enumerate(self.nodes) if id(n) in ids]
        if len(positions) != len(ids):
            raise ValueError("replace(): some nodes are not in the graph")  # an edgekit bug, not user input
        last = positions[-1]
        kept = [n for i, n in enumerate(self.nodes) if id(n) not in ids or i == last]
        out: List[Node] = []
        for n in kept:
            if id(n) in ids:
                if new is not None:
                    out.append(new)
            else:
                out.append(n)
        self.nodes = out
        self._reindex()

    def remove_dead(self) -> int:
        """Drop nodes whose outputs nobody reads; returns how many went."""
        removed = 0
        while True:
            live = [n for n in self.nodes
                    if any(o in self._consumers or o in self.outputs for o in n.outputs if o)]
            if len(live) == len(self.nodes):
                return removed
            removed += len(self.nodes) - len(live)
            self.nodes = live
            self._reindex()

    def node(self, name: str) -> Optional[Node]:
        """The node called ``name`` (None when folded away or absorbed by a fusion)."""
        return next((n for n in self.nodes if n.name == name), None)

    def fused_names(self) -> "set[str]":
        """Names of the source nodes that fusions absorbed."""
        return {f for n in self.nodes for f in n.fused_from}

    def op_counts(self) -> Dict[str, int]:
        counts: Dict[str, int] = {}
        for n in self.nodes:
            key = n.op_type if n.is_default_domain else f"{n.domain}::{n.op_type}"
            counts[key] = counts.get(key, 0) + 1
        return counts


def _constant_node_value(node: Node) -> Optional[np.ndarray]:
    for key in ("value",):
        if key in node.attrs and isinstance(node.attrs[key], np.ndarray):
            return node.attrs[key]
    if "value_float" in node.attrs:
        return np.array(node.attrs["value_float"], np.float32)
    if "value_int" in node.attrs:
        return np.array(node.attrs["value_int"], np.int64)
    if "value_floats" in node.attrs:
        return np.array(node.attrs["value_floats"], np.float32)
    if "value_ints" in node.attrs:
        return np.array(node.attrs["value_ints"], np.int64)
    return None


def scalar(value: Optional[np.ndarray]) -> Optional[float]:
    """The one number in a constant (any shape of one element), else None."""
    if value is None or value.size != 1:
        return None
    return float(np.asarray(value).reshape(-1)[0])


def all_close_to(value: Optional[np.ndarray], target: float, tol: float = 1e-5) -> bool:
    s = scalar(value)
    return s is not None and abs(s - target) <= tol * max(1.0, abs(target))

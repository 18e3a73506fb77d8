"""Constant folding on a :class:`GraphView`.

The canonical model was already folded by onnxruntime, but what is left for
an emitter often still hangs off static shapes (``Shape → Gather → Concat →
Reshape`` in exported heads) or is produced by a fusion.  A node whose inputs
are all constants (``Shape`` needs only a static input shape) is evaluated
once with ONNX's reference implementation and becomes a constant.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np

from .graph import GraphView, Node

#: never folded: random or huge outputs, or not worth it
_NEVER = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                    "Bernoulli", "If", "Loop", "Scan"})
#: an output bigger than this stays an op (ConstantOfShape of a feature map, Tile of weights)
MAX_FOLDED_ELEMENTS = 1 << 22


def _eval_node(view: GraphView, node: Node) -> Optional[List[np.ndarray]]:
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    inputs = []
    feeds: Dict[str, Any] = {}
    for i, name in enumerate(node.inputs):
        if not name:
            inputs.append("")
            continue
        key = f"in{i}"
        inputs.append(key)
        feeds[key] = view.const(name)
    outs = [f"out{i}" for i in range(len(node.outputs))]
    attrs = {k: v for k, v in node.attrs.items() if v is not None and v != "<subgraph>"}
    onnx_node = helper.make_node(node.op_type, inputs, outs, domain=node.domain or "", **attrs)
    try:
        ev = ReferenceEvaluator(_one_node_model(onnx_node, feeds, outs, view.default_opset))
        return [np.asarray(v) for v in ev.run(None, feeds)]
    except Exception:  # not foldable here: leave it to the emitter, which names it if it cannot lower it
        return None


def _one_node_model(node: Any, feeds: Dict[str, Any], outs: List[str], opset: int) -> Any:
    from onnx import helper

    inputs = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape))
              for k, v in feeds.items()]
    outputs = [helper.make_tensor_value_info(o, 0, None) for o in outs]
    graph = helper.make_graph([node], "fold", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", max(opset, 13))])


def fold_constants(view: GraphView) -> int:
    """Fold every foldable node in ``view``; returns how many were folded."""
    folded = 0
    for node in list(view.nodes):
        if not node.is_default_domain or node.op_type in _NEVER:
            continue
        if node.op_type == "Shape":
            shape = view.shape(node.input(0))
            if shape is None:
                continue
            start, end = node.attr("start", 0), node.attr("end", None)
            value = np.array(shape[start:end], np.int64)
            view.set_constant(node.outputs[0], value)
            view.replace([node], None)
            folded += 1
            continue
        if node.op_type == "Size" and view.shape(node.input(0)) is not None:
            view.set_constant(node.outputs[0], np.array(int(np.prod(view.shape(node.input(0)))), np.int64))
            view.replace([node], None)
            folded += 1
            continue
        if not node.inputs or not all(view.is_const(i) for i in node.inputs if i):
            continue
        values = _eval_node(view, node)
        if values is None or any(v.size > MAX_FOLDED_ELEMENTS for v in values):
            continue
        for name, value in zip(node.outputs, values):
            if name:
                view.set_constant(name, value)
        view.replace([node], None)
        folded += 1
    return folded

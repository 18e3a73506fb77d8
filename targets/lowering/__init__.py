"""Lowering from the canonical ONNX graph to non-ONNX formats (TFLite, Core ML).

What the emitters share lives here: :class:`GraphView` (nodes, constants,
shapes, edges), pattern fusions, constant folding and the op-coverage type.
Each emitter stays in its own package (``targets/tflite/``, ``targets/coreml/``).
"""
from __future__ import annotations

from .attrs import clip_bounds, const_ints
from .coverage import NodeCheck, OpCoverage, OpRule, Uncovered, needs_const
from .folding import fold_constants
from .fusions import FUSIONS, SqueezeExcite, apply_fusions, find_squeeze_excite
from .graph import FUSED_DOMAIN, GraphView, Node, all_close_to, scalar
from .lstm import lstm_refusal, lstm_weights, reorder_gates


def folded(model: "object") -> GraphView:
    """The view with constants folded and no pattern fusions (an emitter whose converter fuses itself)."""
    view = GraphView(model)
    fold_constants(view)
    return view


def prepare(model: "object", fusions: "object" = None) -> "tuple[GraphView, dict]":
    """The view every emitter starts from: fold constants, fuse patterns, fold again.

    Returns ``(view, counts)`` where counts says what fired (for build details).
    """
    view = GraphView(model)
    counts = {"folded": fold_constants(view)}
    counts.update(apply_fusions(view, fusions))  # type: ignore[arg-type]
    counts["folded"] += fold_constants(view)
    return view, counts


__all__ = [
    "FUSED_DOMAIN", "FUSIONS", "GraphView", "Node", "NodeCheck", "OpCoverage", "OpRule", "SqueezeExcite",
    "Uncovered", "all_close_to", "apply_fusions", "clip_bounds", "const_ints", "find_squeeze_excite",
    "fold_constants", "folded", "lstm_refusal", "lstm_weights", "needs_const", "prepare", "reorder_gates", "scalar",
]

"""ONNX LSTM: the checks and the gate arithmetic every emitter shares.

ONNX stacks ``W [dirs, 4H, I]``, ``R [dirs, 4H, H]`` and ``B [dirs, 8H]`` (the
input and recurrent biases apart) with the gate blocks in the order input,
output, forget, cell (``iofc``).  Both emitters add the two biases into one
(``gates = x·Wᵀ + h·Rᵀ + Wb + Rb``) and refuse the same variants; what
differs is the op they emit: TFLite unrolls the steps (its LSTM keeps state in
variable tensors), Core ML's ``lstm`` takes the state as an input but wants
its own gate order (:func:`reorder_gates`).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from .attrs import ConstSource
from .graph import GraphView, Node

#: ONNX's gate order
ONNX_GATES = "iofc"


def lstm_refusal(node: Node, view: GraphView, emitter: str) -> Optional[str]:
    """Why ``node`` cannot be lowered by either emitter, else None (the emitter adds its own limits)."""
    acts = node.attr("activations")
    if acts is not None and [str(a).lower() for a in acts[:3]] != ["sigmoid", "tanh", "tanh"]:
        return f"activations {list(acts)}: only the default (Sigmoid, Tanh, Tanh) lower"
    if node.attr("clip") is not None:
        return "clip is not lowered"
    if node.attr("input_forget", 0):
        return "input_forget=1 (coupled gates) is not lowered"
    if node.input(4):
        return "sequence_lens (variable-length batches) is not lowered; export with a fixed sequence length"
    p = node.input(7)
    if p and not (view.is_const(p) and not np.any(view.const(p))):
        return "peephole weights (P) are not lowered"
    for i, what in ((1, "W"), (2, "R"), (3, "B")):
        name = node.input(i)
        if name and not view.is_const(name):
            return f"{what} ({name!r}) is computed at run time; the {emitter} LSTM needs constant weights"
    return None


def lstm_weights(view: ConstSource, node: Node, direction: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(W [4H, I], R [4H, H], bias [4H])`` of one direction, gates in ONNX order, the two biases summed.

    ``view``: the graph view, or an emitter's value table (anything with ``const(name)``)."""
    w = np.asarray(view.const(node.input(1)), np.float32)[direction]
    r = np.asarray(view.const(node.input(2)), np.float32)[direction]
    hidden = r.shape[1]
    bias = np.zeros(4 * hidden, np.float32)
    if node.input(3):
        b = np.asarray(view.const(node.input(3)), np.float32)[direction]
        bias = b[:4 * hidden] + b[4 * hidden:]
    return w, r, bias


def reorder_gates(m: np.ndarray, order: Sequence[str]) -> np.ndarray:
    """``m``'s four gate blocks (axis 0, ONNX order) rearranged into ``order`` (e.g. "ifoc")."""
    blocks = dict(zip(ONNX_GATES, np.split(np.asarray(m, np.float32), 4, axis=0)))
    return np.ascontiguousarray(np.concatenate([blocks[g] for g in order], axis=0))

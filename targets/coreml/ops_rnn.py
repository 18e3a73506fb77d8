"""ONNX LSTM → MIL ``lstm`` (unidirectional: forward or reverse).

MIL's ``lstm`` takes ``x [S, B, I]``, states ``[B, H]``, weights ``[4H, I]`` /
``[4H, H]`` and one bias ``[4H]`` (input + recurrent), with the gates in the
order input, forget, output, cell (``ifoz``); ONNX's are input, output,
forget, cell (``iofc``), with ``W``/``R``/``B`` stacked per direction and the
two biases apart.  So the emitter reorders the gate blocks, sums the biases,
and reshapes the states and outputs between ONNX's ``[dirs, B, H]`` and
MIL's ``[B, H]``.  Batch-major ``layout=1`` is refused: onnxruntime, which
every build is verified against, cannot run it either.  Unlike the TFLite
target (``targets/tflite/ops_rnn.py``), which unrolls the sequence because
TFLite's LSTM keeps its state in variable tensors, Core ML's op takes the
initial state as an ordinary input, so streaming models (state in, state
out: Silero VAD) keep one op.
"""
from __future__ import annotations

from typing import Any, Callable, List, Optional

import numpy as np

from .context import Lowering, Node

#: ONNX gate block k (i, o, f, c) → MIL position (i, f, o, z)
_ONNX_TO_MIL = (0, 2, 1, 3)

IsConst = Callable[[str], bool]


def _mb() -> Any:
    from coremltools.converters.mil import Builder as mb

    return mb


def _reorder(m: np.ndarray) -> np.ndarray:
    blocks = np.split(np.asarray(m, np.float32), 4, axis=0)
    return np.ascontiguousarray(np.concatenate([blocks[k] for k in _ONNX_TO_MIL], axis=0))


def lstm_condition(node: Node, is_const: IsConst) -> Optional[str]:
    """None when the LSTM lowers, else why not (``check`` reports it before the build)."""
    direction = node.attr("direction", "forward")
    if direction not in ("forward", "reverse"):
        return f"direction={direction!r} is not lowered (forward and reverse are; split a bidirectional LSTM in two)"
    acts = node.attr("activations")
    if acts is not None and [a.lower() for a in acts[:3]] != ["sigmoid", "tanh", "tanh"]:
        return f"activations {list(acts)}: only the default (Sigmoid, Tanh, Tanh) lower"
    if node.attr("clip") is not None:
        return "clip is not lowered"
    if node.attr("input_forget", 0):
        return "input_forget=1 (coupled gates) is not lowered"
    if node.attr("layout", 0):
        return "layout=1 (batch-major) is not lowered (onnxruntime cannot run it either); export time-major"
    if node.input(4):
        return "sequence_lens (variable-length batches) is not lowered; export with a fixed sequence length"
    if node.input(7):
        return "peephole weights (P) are not lowered"
    for i, what in ((1, "W"), (2, "R"), (3, "B")):
        name = node.input(i)
        if name is not None and not is_const(name):
            return f"{what} ({name!r}) is computed at run time; Core ML's lstm needs constant weights"
    return None


def _state(node: Node, low: Lowering, index: int, batch: int, hidden: int, base: str) -> Any:
    name = node.input(index)
    value = low.get(name) if name else None
    if value is None:
        return np.zeros((batch, hidden), np.float32)
    if isinstance(value, np.ndarray):
        return np.asarray(value, np.float32).reshape(batch, hidden)
    # [1, B, H]: one direction, so a reshape to [B, H]
    return _mb().reshape(x=value, shape=np.array([batch, hidden], np.int32), name=low.unique(f"{base}_{name}_state"))


def emit_lstm(node: Node, low: Lowering, opset: int) -> List[Any]:
    mb = _mb()
    x = low.get(node.inputs[0])
    if isinstance(x, np.ndarray):
        x = mb.const(val=np.asarray(x, np.float32), name=low.unique(node.inputs[0]))
    base = node.outputs[0] or node.name
    w = np.asarray(low.const(node.inputs[1]), np.float32)[0]  # [4H, I]
    r = np.asarray(low.const(node.inputs[2]), np.float32)[0]  # [4H, H]
    hidden = r.shape[1]
    b = low.const(node.input(3)) if node.input(3) else None
    bias = np.zeros(4 * hidden, np.float32) if b is None else \
        np.asarray(b, np.float32)[0, :4 * hidden] + np.asarray(b, np.float32)[0, 4 * hidden:]
    steps, batch = int(x.shape[0]), int(x.shape[1])
    h0 = _state(node, low, 5, batch, hidden, base)
    c0 = _state(node, low, 6, batch, hidden, base)
    y, h, c = mb.lstm(x=x, initial_h=h0, initial_c=c0, weight_ih=_reorder(w), weight_hh=_reorder(r),
                      bias=_reorder(bias.reshape(4 * hidden, 1)).reshape(-1), direction=node.attr("direction", "forward"),
                      output_sequence=True, recurrent_activation="sigmoid", cell_activation="tanh", activation="tanh",
                      name=low.unique(base + "_lstm"))
    outs: List[Any] = []
    names = list(node.outputs) + [""] * (3 - len(node.outputs))
    if names[0]:  # Y [S, dirs=1, B, H]
        outs.append(mb.reshape(x=y, shape=np.array([steps, 1, batch, hidden], np.int32), name=low.unique(names[0])))
    else:
        outs.append(None)
    for state, out_name in ((h, names[1]), (c, names[2])):
        if out_name:  # Y_h / Y_c [dirs=1, B, H]
            outs.append(mb.reshape(x=state, shape=np.array([1, batch, hidden], np.int32), name=low.unique(out_name)))
        else:
            outs.append(None)
    return outs[:len(node.outputs)]

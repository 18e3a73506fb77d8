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

from typing import Any, List, Optional

import numpy as np

from ..lowering import GraphView, lstm_refusal, lstm_weights, reorder_gates
from .context import Lowering, Node

#: MIL's gate order (input, forget, output, cell) in ONNX's gate letters
MIL_GATES = "ifoc"


def _mb() -> Any:
    from coremltools.converters.mil import Builder as mb

    return mb


def lstm_condition(node: Node, view: GraphView) -> Optional[str]:
    """None when the LSTM lowers, else why not (``check`` reports it before the build)."""
    direction = node.attr("direction", "forward")
    if direction not in ("forward", "reverse"):
        return f"direction={direction!r} is not lowered (forward and reverse are; split a bidirectional LSTM in two)"
    if node.attr("layout", 0):
        return "layout=1 (batch-major) is not lowered (onnxruntime cannot run it either); export time-major"
    return lstm_refusal(node, view, "Core ML")


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
    w, r, bias = lstm_weights(low, node, 0)  # [4H, I], [4H, H], [4H]: one direction
    hidden = r.shape[1]
    steps, batch = int(x.shape[0]), int(x.shape[1])
    h0 = _state(node, low, 5, batch, hidden, base)
    c0 = _state(node, low, 6, batch, hidden, base)
    y, h, c = mb.lstm(x=x, initial_h=h0, initial_c=c0, weight_ih=reorder_gates(w, MIL_GATES), weight_hh=reorder_gates(r, MIL_GATES),
                      bias=reorder_gates(bias, MIL_GATES), direction=node.attr("direction", "forward"),
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

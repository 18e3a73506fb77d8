"""LSTM, unrolled over its (static) sequence into FULLY_CONNECTED and elementwise ops.

TFLite's UNIDIRECTIONAL_SEQUENCE_LSTM keeps its state in *variable* tensors:
an ONNX LSTM whose initial state is a model input (streaming models such as
silero VAD feed ``h``/``c`` back every call) and whose final state ``Y_h``/
``Y_c`` are model outputs cannot be expressed with it.  Unrolled, every
step is ``gates = x_t·Wᵀ + h·Rᵀ + b`` (the input projection of all steps is
one FULLY_CONNECTED), then LOGISTIC/TANH, ``c = f⊙c + i⊙g``,
``h = o⊙tanh(c)``: plain ops XNNPACK runs and the int8 pass quantizes, with
any initial state and every output.  Gate order is ONNX's (i, o, f, c).
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np

from ..lowering import GraphView, Node, lstm_refusal, lstm_weights
from .context import Context
from .ir import QuantRole

#: longest sequence unrolled (each step is ~10 ops)
MAX_STEPS = 512


def check_lstm(node: Node, view: GraphView) -> Optional[str]:
    why = lstm_refusal(node, view, "TFLite")
    if why is not None:
        return why
    x = view.shape(node.input(0))
    if x is None:
        return "needs a static input shape"
    steps = x[1] if node.attr("layout", 0) else x[0]
    if steps > MAX_STEPS:
        return f"sequence of {steps} steps; at most {MAX_STEPS} are unrolled"
    return None


def _fc(ctx: Context, x: int, w: np.ndarray, b: Optional[np.ndarray], name: str) -> int:
    rows = ctx.graph.tensors[x].shape[0]
    bias = np.zeros(w.shape[0], np.float32) if b is None else b
    y = ctx.new_tensor(name, (rows, w.shape[0]))
    ctx.op("FULLY_CONNECTED", [x, ctx.const_tensor(f"{name}/weights", w.astype(np.float32)),
                               ctx.const_tensor(f"{name}/bias", bias.astype(np.float32))], [y],
           ctx.options("FullyConnectedOptions"), role=QuantRole.FULLY_CONNECTED)
    return y


def _binary(ctx: Context, opcode: str, a: int, b: int, name: str) -> int:
    y = ctx.new_tensor(name, ctx.graph.tensors[a].shape)
    kind = {"ADD": "AddOptions", "MUL": "MulOptions"}[opcode]
    ctx.op(opcode, [a, b], [y], ctx.options(kind))
    return y


def _unary(ctx: Context, opcode: str, a: int, name: str) -> int:
    y = ctx.new_tensor(name, ctx.graph.tensors[a].shape)
    fixed = {"LOGISTIC": (1.0 / 256, -128), "TANH": (1.0 / 128, 0)}[opcode]
    ctx.op(opcode, [a], [y], role=QuantRole.FIXED, fixed_output=fixed)
    return y


def _direction(ctx: Context, node: Node, d: int, x: int, h0: Optional[int], c0: Optional[int],
               reverse: bool) -> Tuple[List[int], int, int]:
    w, r, bias = lstm_weights(ctx.view, node, d)  # [4H, I], [4H, H], [4H]
    hidden = r.shape[1]
    p = f"{node.name}/d{d}"
    steps, batch, size = ctx.graph.tensors[x].shape
    # one FULLY_CONNECTED projects every step's input ([S*B, I] -> [S*B, 4H]); UNPACK hands out the steps
    flat = ctx.reshape(x, (steps * batch, size), f"{p}/x_flat")
    xw_all = ctx.reshape(_fc(ctx, flat, w, bias, f"{p}/xw"), (steps, batch, 4 * hidden), f"{p}/xw_steps")
    xw_steps = [ctx.new_tensor(f"{p}/t{t}/xw", (batch, 4 * hidden)) for t in range(steps)]
    ctx.op("UNPACK", [xw_all], xw_steps, ctx.options("UnpackOptions", num=steps, axis=0), role=QuantRole.SAME)
    order = list(range(steps))[::-1] if reverse else list(range(steps))
    h, c = h0, c0
    outputs: List[int] = [0] * steps
    for t in order:
        xw = xw_steps[t]
        gates = xw if h is None else _binary(ctx, "ADD", xw, _fc(ctx, h, r, None, f"{p}/t{t}/hr"), f"{p}/t{t}/gates")
        parts = [ctx.new_tensor(f"{p}/t{t}/{g}", (batch, hidden)) for g in "iofc"]
        ctx.op("SPLIT", [ctx.const_tensor(f"{p}/t{t}/axis", np.array(1, np.int32)), gates], parts,
               ctx.options("SplitOptions", numSplits=4), role=QuantRole.SAME)
        i, o, f = (_unary(ctx, "LOGISTIC", parts[k], f"{p}/t{t}/{g}_act") for k, g in enumerate("iof"))
        g_ = _unary(ctx, "TANH", parts[3], f"{p}/t{t}/c_act")
        ig = _binary(ctx, "MUL", i, g_, f"{p}/t{t}/ig")
        c = ig if c is None else _binary(ctx, "ADD", _binary(ctx, "MUL", f, c, f"{p}/t{t}/fc"), ig, f"{p}/t{t}/c")
        h = _binary(ctx, "MUL", o, _unary(ctx, "TANH", c, f"{p}/t{t}/c_tanh"), f"{p}/t{t}/h")
        outputs[t] = h
    if h is None or c is None:  # an empty sequence: the shape check refuses it before this
        raise ValueError("LSTM over zero steps")
    return outputs, h, c


def lower_lstm(ctx: Context, node: Node) -> None:
    view = ctx.view
    x_shape = ctx.shape(node.input(0))
    layout = int(node.attr("layout", 0))
    steps, batch, size = (x_shape[1], x_shape[0], x_shape[2]) if layout else x_shape
    hidden = int(node.attr("hidden_size", np.asarray(view.const(node.input(2))).shape[-1]))
    direction = node.attr("direction", "forward")
    dirs = 2 if direction == "bidirectional" else 1
    x = ctx.get(node.input(0))
    if layout:  # [B, S, I] -> steps along axis 1
        x = ctx.transpose(x, (1, 0, 2), f"{node.input(0)}/time_major")

    def state(i: int, d: int) -> Optional[int]:
        if not node.input(i):
            return None
        name = node.input(i)
        const = view.const(name)
        if const is not None and not np.any(const):
            return None  # a zero initial state: skip the recurrent product of the first step
        full = ctx.get(name)  # [dirs, B, H] (layout 0) or [B, dirs, H]
        shape = ctx.graph.tensors[full].shape
        if shape[0] == 1 and not layout:
            return ctx.reshape(full, (batch, hidden), f"{name}/d{d}")
        sl = ctx.new_tensor(f"{name}/d{d}", (batch, hidden))
        begin = [d, 0, 0] if not layout else [0, d, 0]
        size_ = [1, batch, hidden] if not layout else [batch, 1, hidden]
        tmp = ctx.new_tensor(f"{name}/d{d}/slice", size_)
        ctx.op("SLICE", [full, ctx.int32(f"{name}/d{d}/begin", begin), ctx.int32(f"{name}/d{d}/size", size_)],
               [tmp], ctx.options("SliceOptions"), role=QuantRole.SAME)
        ctx.op("RESHAPE", [tmp, ctx.int32(f"{name}/d{d}/shape", (batch, hidden))], [sl],
               ctx.options("ReshapeOptions", newShape=np.asarray((batch, hidden), np.int32)), role=QuantRole.SAME)
        return sl

    results = []
    for d in range(dirs):
        reverse = direction == "reverse" or d == 1
        results.append(_direction(ctx, node, d, x, state(5, d), state(6, d), reverse))

    def emit(out_name: str, per_dir: List[int], stacked_axis_shape: Tuple[int, ...]) -> None:
        """Stack per-direction [B, H] (or [S, B, H]) tensors into the ONNX output."""
        target = ctx.shape(out_name)
        y = ctx.output(out_name)
        if len(per_dir) == 1:
            ctx.op("RESHAPE", [per_dir[0], ctx.int32(f"{out_name}/shape", target)], [y],
                   ctx.options("ReshapeOptions", newShape=np.asarray(target, np.int32)), role=QuantRole.SAME)
            return
        ctx.op("PACK", per_dir, [y], ctx.options("PackOptions", valuesCount=len(per_dir), axis=stacked_axis_shape[0]),
               role=QuantRole.SAME_ALL)

    outs = list(node.outputs) + [""] * (3 - len(node.outputs))
    if outs[0]:
        per_dir = []
        for d, (seq, _, _) in enumerate(results):
            packed = ctx.new_tensor(f"{node.name}/y{d}", (steps, batch, hidden))
            ctx.op("PACK", seq, [packed], ctx.options("PackOptions", valuesCount=steps, axis=0),
                   role=QuantRole.SAME_ALL)
            per_dir.append(packed)
        # ONNX Y: [S, dirs, B, H] (layout 0) or [B, S, dirs, H] (layout 1)
        if layout:
            per_dir = [ctx.transpose(t, (1, 0, 2), f"{node.name}/y{d}/batch_major") for d, t in enumerate(per_dir)]
        emit(outs[0], per_dir, (2 if layout else 1,))
    for k, idx in ((1, 1), (2, 2)):
        if outs[k]:
            emit(outs[k], [r[idx] for r in results], (1 if layout else 0,))

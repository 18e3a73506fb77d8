"""An ONNX LSTM unrolled into MatMul / Add / Sigmoid / Tanh / Mul per step, for int8 builds on the HTP.

The HTP's own LSTM (what onnxruntime-qnn maps an ONNX LSTM to) computes its
gates inside one op, in fixed point over ranges the Q/DQ graph cannot set:
measured with every tensor around it 16-bit, the QDQ graph on the CPU kept
Silero VAD's state at 39.6 dB and the HTP at 28.7 dB; a small LSTM whose
gates saturate lost its state altogether on the HTP (hn 2.5 dB, 200 dB on
the CPU).  Unrolled, each gate's pre-activation, each activation, the cell
state and the hidden state of every step are tensors of their own, so
calibration gives each its own range and the layer kept out of int8 is
16-bit end to end; the steps are short sequences (Silero: 32).

Only the plain form is unrolled: forward, layout 0, default activations, no
clip, no peepholes, no ``sequence_lens``, ``input_forget`` 0, static shapes
and at most :data:`MAX_STEPS` steps; any other LSTM stays one op.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

#: longer sequences stay one op: the unrolled graph grows by ~20 nodes a step
MAX_STEPS = 128


@dataclass(frozen=True)
class Unrolled:
    """One unrolled LSTM: its name, the nodes that replace it, and the tensors that share one range.

    ``tied``: each gate's pre-activation and activation over every step, and the hidden and cell state from
    the initial state input through every step to the state output.  Calibration starts every sequence from
    the initial state it is given (zeros, usually), so step 0 alone would get a range of 0 for everything the
    state feeds; a stream that carries its state on feeds step 0 what the last step wrote."""

    node: str
    steps: int
    added: Tuple[str, ...]
    tied: Tuple[Tuple[str, ...], ...]

    def to_json(self) -> Dict[str, Any]:
        return {"node": self.node, "steps": self.steps, "nodes": len(self.added)}


def _attrs(node: Any) -> Dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _why_not(node: Any, inits: Dict[str, np.ndarray], shape: Optional[Tuple[Any, ...]]) -> Optional[str]:
    """Why this LSTM stays one op, or None when it can be unrolled."""
    a = _attrs(node)
    direction = a.get("direction", b"forward")
    if (direction.decode() if isinstance(direction, bytes) else direction) != "forward":
        return "not a forward LSTM"
    if a.get("layout", 0) != 0 or a.get("input_forget", 0) != 0 or "clip" in a:
        return "layout, input_forget or clip set"
    if any(k in a for k in ("activations", "activation_alpha", "activation_beta")):
        return "non-default activations"
    ins = list(node.input) + [""] * (8 - len(node.input))
    if ins[4] or ins[7]:
        return "sequence_lens or peepholes given"
    if ins[1] not in inits or ins[2] not in inits or (ins[3] and ins[3] not in inits):
        return "W, R or B not constant"
    if shape is None or len(shape) != 3 or not all(isinstance(d, int) and d > 0 for d in shape):
        return "input shape not static"
    if shape[0] > MAX_STEPS:
        return f"{shape[0]} steps (more than {MAX_STEPS})"
    return None


def unroll_lstms(model: Any) -> Tuple[List[Unrolled], Dict[str, str]]:
    """Unroll every plain LSTM of ``model`` in place; returns what was unrolled and, per LSTM left as one op,
    the reason."""
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes: Dict[str, Tuple[Any, ...]] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)
    done: List[Unrolled] = []
    kept: Dict[str, str] = {}
    replace: Dict[str, List[Any]] = {}  # the LSTM's first output -> the nodes that take its place
    for lstm in [nd for nd in graph.node if nd.op_type == "LSTM" and (nd.domain or "") in ("", "ai.onnx")]:
        reason = _why_not(lstm, inits, shapes.get(lstm.input[0]))
        if reason:
            kept[lstm.name or lstm.output[0]] = reason
            continue
        nodes, new_inits, tied = _unroll(lstm, inits, shapes[lstm.input[0]])
        replace[_first_output(lstm)] = nodes
        graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in new_inits.items())
        done.append(Unrolled(node=lstm.name or lstm.output[0], steps=shapes[lstm.input[0]][0],
                             added=tuple(nd.name for nd in nodes), tied=tied))
    if not done:
        return done, kept
    rebuilt: List[Any] = []
    for nd in graph.node:
        key = _first_output(nd) if nd.op_type == "LSTM" else None
        if key in replace:
            rebuilt.extend(replace[key])
        else:
            rebuilt.append(nd)
    del graph.node[:]
    graph.node.extend(rebuilt)
    used = {i for nd in graph.node for i in nd.input}
    for t in [t for t in graph.initializer if t.name not in used]:  # the LSTM's W, R, B
        graph.initializer.remove(t)
    return done, kept


def _first_output(node: Any) -> str:
    return next((o for o in node.output if o), "")


def _unroll(lstm: Any, inits: Dict[str, np.ndarray], x_shape: Tuple[int, ...]
            ) -> Tuple[List[Any], Dict[str, np.ndarray], Tuple[Tuple[str, ...], ...]]:
    """The nodes and constants of one unrolled forward LSTM (ONNX gate order i, o, f, c)."""
    from onnx import helper

    steps, batch, _ = x_shape
    hidden = int(_attrs(lstm)["hidden_size"])
    ins = list(lstm.input) + [""] * (8 - len(lstm.input))
    outs = list(lstm.output) + [""] * (3 - len(lstm.output))
    base = lstm.name or outs[0]
    w, r = inits[ins[1]][0], inits[ins[2]][0]  # [4H, I], [4H, H]
    b = inits[ins[3]][0] if ins[3] else np.zeros(8 * hidden, np.float32)
    bias = (b[:4 * hidden] + b[4 * hidden:]).astype(np.float32)
    consts: Dict[str, np.ndarray] = {}
    nodes: List[Any] = []

    def const(name: str, value: np.ndarray) -> str:
        consts[f"{base}/{name}"] = value
        return f"{base}/{name}"

    def node(op: str, inputs: List[str], name: str, **attrs: Any) -> str:
        out = f"{base}/{name}"
        nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    gates = ("i", "o", "f", "c")
    # the input projection of every step at once, per gate: [T, B, H] each, its own weight and range
    xw = {g: node("Add", [node("MatMul", [ins[0], const(f"W_{g}", np.ascontiguousarray(w[k * hidden:(k + 1) * hidden].T))],
                                    f"x_{g}"), const(f"b_{g}", bias[k * hidden:(k + 1) * hidden])], f"xb_{g}")
          for k, g in enumerate(gates)}
    rt = {g: const(f"R_{g}", np.ascontiguousarray(r[k * hidden:(k + 1) * hidden].T)) for k, g in enumerate(gates)}
    axis0 = const("axis0", np.array([0], np.int64))
    zeros = np.zeros((batch, hidden), np.float32)
    h = node("Squeeze", [ins[5], axis0], "h0") if ins[5] else const("h0", zeros)
    c = node("Squeeze", [ins[6], axis0], "c0") if ins[6] else const("c0", zeros.copy())
    ys: List[str] = []
    hs, cs = [h], [c]
    for t in range(steps):
        at = const(f"t{t}", np.array(t, np.int64))
        act = {}
        for g in gates:
            pre = node("Add", [node("Gather", [xw[g], at], f"s{t}/x_{g}", axis=0),
                               node("MatMul", [h, rt[g]], f"s{t}/h_{g}")], f"s{t}/pre_{g}")
            act[g] = node("Tanh" if g == "c" else "Sigmoid", [pre], f"s{t}/{g}")
        c = node("Add", [node("Mul", [act["f"], c], f"s{t}/fc"), node("Mul", [act["i"], act["c"]], f"s{t}/ig")],
                 f"s{t}/cell")
        h = node("Mul", [act["o"], node("Tanh", [c], f"s{t}/tanh_cell")], f"s{t}/hidden")
        ys.append(h)
        hs.append(h)
        cs.append(c)
    axis01 = const("axis01", np.array([0, 1], np.int64))
    if outs[0]:
        stacked = [node("Unsqueeze", [y, axis01], f"s{t}/y") for t, y in enumerate(ys)]
        nodes.append(helper.make_node("Concat", stacked, [outs[0]], axis=0, name=f"{base}/Y"))
        hs += [*stacked, outs[0]]
    for k, (state, out) in enumerate(((h, outs[1]), (c, outs[2]))):
        if out:
            nodes.append(helper.make_node("Unsqueeze", [state, axis0], [out], name=f"{base}/{'hc'[k]}n"))
            (hs, cs)[k].append(out)
    hs += [ins[5]] if ins[5] else []
    cs += [ins[6]] if ins[6] else []
    roles = [f"x_{g}" for g in gates] + [f"h_{g}" for g in gates] + [f"pre_{g}" for g in gates] + \
        list(gates) + ["fc", "ig", "tanh_cell"]
    tied = tuple(tuple(f"{base}/s{t}/{role}" for t in range(steps)) for role in roles)
    return nodes, consts, tied + (tuple(hs), tuple(cs))

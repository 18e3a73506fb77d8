"""Pattern fusions over a :class:`GraphView`.

Exporters spell common blocks as chains of primitive ops; the emitters lower
them best as one op (TFLite has HARD_SWISH, GELU; Core ML has ``silu``,
``gelu``, ``layer_norm``).  Each fusion matches a chain whose intermediate
tensors nobody else reads, and replaces it in the view with one node:

* SiLU:         ``x * Sigmoid(x)``                          → ``edgekit.fused::SiLU``
* HardSigmoid:  ``Clip(x + 3, 0, 6) / 6``                    → ``HardSigmoid(alpha=1/6, beta=0.5)``
* HardSwish:    ``x * HardSigmoid(x; 1/6, 0.5)``             → ``HardSwish`` (opset 14+, where the op exists)
* GELU:         ``x * 0.5 * (1 + Erf(x / sqrt 2))`` (any order of the
  multiplications) and the tanh approximation               → ``edgekit.fused::Gelu(approximate)``
* LayerNorm:    ``ReduceMean, Sub, Pow 2 | Mul, ReduceMean, Add eps, Sqrt, Div
  [, Mul gamma][, Add beta]`` over the last axis            → ``edgekit.fused::LayerNormalization``

Squeeze-excite blocks are *found* (:func:`find_squeeze_excite`), not
replaced: they are ordinary ops every emitter lowers, and the match lets an
emitter report them or pick a layout for the gating multiply.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .graph import FUSED_DOMAIN, GraphView, Node, all_close_to, scalar


def _other(node: Node, tensor: str) -> str:
    """The other input of a binary node."""
    a, b = node.input(0), node.input(1)
    return b if a == tensor else a


def _single_user(view: GraphView, tensor: str, op_type: str) -> Optional[Node]:
    user = view.only_consumer(tensor)
    if user is not None and user.op_type == op_type and user.is_default_domain:
        return user
    return None


def _fuse_silu(view: GraphView) -> int:
    count = 0
    for sig in [n for n in view.nodes if n.op_type == "Sigmoid" and n.is_default_domain]:
        x = sig.input(0)
        mul = _single_user(view, sig.outputs[0], "Mul")
        if mul is None or _other(mul, sig.outputs[0]) != x:
            continue
        view.replace([sig, mul], Node(mul.name, "SiLU", [x], [mul.outputs[0]], domain=FUSED_DOMAIN,
                                      fused_from=(sig.name, mul.name)))
        count += 1
    return count


def _clip_x_plus_3(view: GraphView) -> Iterator[Tuple[Node, str, Node]]:
    """(add, x, clip) for each ``Clip(x + 3, 0, 6)`` whose Add feeds only the Clip: the core of the HardSigmoid
    and HardSwish forms exporters write out (over a snapshot of the Adds: the callers edit the graph)."""
    for add in [n for n in view.nodes if n.op_type == "Add" and n.is_default_domain]:
        const_in = next((i for i in add.inputs if view.is_const(i)), None)
        if const_in is None or not all_close_to(view.const(const_in), 3.0):
            continue
        clip = _single_user(view, add.outputs[0], "Clip")
        if clip is None or not (all_close_to(view.const(clip.input(1)), 0.0)
                                and all_close_to(view.const(clip.input(2)), 6.0)):
            continue
        yield add, _other(add, const_in), clip


def _fuse_hardsigmoid_clip(view: GraphView) -> int:
    """``Clip(x + 3, 0, 6) / 6`` (or ``* (1/6)``) → HardSigmoid."""
    count = 0
    for add, x, clip in _clip_x_plus_3(view):
        tail = view.only_consumer(clip.outputs[0])
        if tail is None or not tail.is_default_domain:
            continue
        if tail.op_type == "Div" and tail.input(0) == clip.outputs[0] and all_close_to(view.const(tail.input(1)), 6.0):
            pass
        elif tail.op_type == "Mul" and all_close_to(view.const(_other(tail, clip.outputs[0])), 1.0 / 6.0):
            pass
        else:
            continue
        view.replace([add, clip, tail], Node(tail.name, "HardSigmoid", [x], [tail.outputs[0]],
                                             attrs={"alpha": 1.0 / 6.0, "beta": 0.5},
                                             fused_from=(add.name, clip.name, tail.name)))
        count += 1
    return count


def fuse_hardswish_clip_pair(view: GraphView) -> int:
    """``x * Clip(x + 3, 0, 6) / 6`` (paddle2onnx's HardSwish; ``* (1/6)`` too) → ``x * HardSigmoid(x)``: two
    standard ops at any opset instead of four, which the int8 rewrites (:mod:`targets.rewrites`) write back to
    the ONNX graph.  Not one of the lowering's :data:`FUSIONS`: TFLite's int8 HARD_SWISH measured slower and
    less accurate than the ops it replaces (text-line classifier: 13.5 vs 17.5 dB, 11 vs 1.1 ms)."""
    count = 0
    for add, x, clip in _clip_x_plus_3(view):
        mul = _single_user(view, clip.outputs[0], "Mul")
        if mul is None or _other(mul, clip.outputs[0]) != x:
            continue
        tail = view.only_consumer(mul.outputs[0])
        if tail is None or not tail.is_default_domain or not (
                (tail.op_type == "Div" and tail.input(0) == mul.outputs[0]
                 and all_close_to(view.const(tail.input(1)), 6.0))
                or (tail.op_type == "Mul" and all_close_to(view.const(_other(tail, mul.outputs[0])), 1.0 / 6.0))):
            continue
        gate = clip.outputs[0]  # now HardSigmoid(x) = Clip(x + 3, 0, 6) / 6
        view.replace([add, clip], Node(clip.name, "HardSigmoid", [x], [gate], attrs={"alpha": 1.0 / 6.0, "beta": 0.5},
                                       fused_from=(add.name, clip.name)))
        view.replace([mul, tail], Node(mul.name, "Mul", [gate if i == gate else x for i in mul.inputs],
                                       [tail.outputs[0]], fused_from=(mul.name, tail.name)))
        count += 1
    return count


def _fuse_hardswish(view: GraphView) -> int:
    if view.default_opset < 14:
        return 0  # HardSwish is an ONNX op from opset 14; below, x * HardSigmoid(x) stays two ops every emitter has
    count = 0
    for hs in [n for n in view.nodes if n.op_type == "HardSigmoid" and n.is_default_domain]:
        if abs(hs.attr("alpha", 0.2) - 1.0 / 6.0) > 1e-5 or abs(hs.attr("beta", 0.5) - 0.5) > 1e-5:
            continue
        x = hs.input(0)
        mul = _single_user(view, hs.outputs[0], "Mul")
        if mul is None or _other(mul, hs.outputs[0]) != x:
            continue
        view.replace([hs, mul], Node(mul.name, "HardSwish", [x], [mul.outputs[0]],
                                     fused_from=hs.fused_from + (hs.name, mul.name)))
        count += 1
    return count


def _mul_chain_to(view: GraphView, start: Node, x: str) -> Optional[Tuple[List[Node], str]]:
    """From ``start`` (the ``1 + f(x)`` node), follow single-user Muls that multiply by
    ``x`` and by 0.5, in any order; returns (nodes, output) when both were seen."""
    nodes: List[Node] = []
    seen_x = seen_half = False
    cur = start.outputs[0]
    while not (seen_x and seen_half):
        mul = _single_user(view, cur, "Mul")
        if mul is None:
            # `x * 0.5` may be computed first: (x*0.5) * (1+erf)
            return None
        other = _other(mul, cur)
        if other == x and not seen_x:
            seen_x = True
        elif all_close_to(view.const(other), 0.5) and not seen_half:
            seen_half = True
        else:
            half = view.producer(other)
            if (not seen_x and not seen_half and half is not None and half.op_type == "Mul"
                    and half.is_default_domain and x in half.inputs
                    and all_close_to(view.const(_other(half, x)), 0.5)
                    and view.only_consumer(half.outputs[0]) is mul):
                nodes.append(half)
                seen_x = seen_half = True
            else:
                return None
        nodes.append(mul)
        cur = mul.outputs[0]
    return nodes, cur


def _fuse_gelu(view: GraphView) -> int:
    count = 0
    for erf in [n for n in view.nodes if n.op_type == "Erf" and n.is_default_domain]:
        scale = view.producer(erf.input(0))
        if scale is None or view.only_consumer(scale.outputs[0]) is not erf:
            continue
        if scale.op_type == "Div" and all_close_to(view.const(scale.input(1)), math.sqrt(2.0), 1e-3):
            x = scale.input(0)
        elif scale.op_type == "Mul" and any(all_close_to(view.const(i), 1 / math.sqrt(2.0), 1e-3)
                                            for i in scale.inputs):
            x = next(i for i in scale.inputs if not view.is_const(i))
        else:
            continue
        count += int(_fuse_gelu_tail(view, [scale], erf, x, "none"))
    count += _fuse_gelu_tanh(view)
    return count


def _fuse_gelu_tail(view: GraphView, head: List[Node], act: Node, x: str, approximate: str) -> bool:
    """The tail both GELU forms share: ``act + 1``, then the multiply chain by ``0.5`` and ``x``; the whole
    group (``head``, ``act``, the tail) becomes one fused Gelu when no intermediate has another reader."""
    add = _single_user(view, act.outputs[0], "Add")
    if add is None or not all_close_to(view.const(_other(add, act.outputs[0])), 1.0):
        return False
    chain = _mul_chain_to(view, add, x)
    if chain is None:
        return False
    muls, out = chain
    group = head + [act, add] + muls
    if any(view.only_consumer(n.outputs[0]) is None for n in group[:-1]):
        return False
    view.replace(group, Node(muls[-1].name, "Gelu", [x], [out], attrs={"approximate": approximate},
                             domain=FUSED_DOMAIN, fused_from=tuple(n.name for n in group)))
    return True


def _fuse_gelu_tanh(view: GraphView) -> int:
    """``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``."""
    count = 0
    for tanh in [n for n in view.nodes if n.op_type == "Tanh" and n.is_default_domain]:
        k = view.producer(tanh.input(0))
        if k is None or k.op_type != "Mul" or view.only_consumer(k.outputs[0]) is not tanh:
            continue
        kc = next((i for i in k.inputs if view.is_const(i)), None)
        if kc is None or not all_close_to(view.const(kc), math.sqrt(2 / math.pi), 1e-3):
            continue
        inner = view.producer(_other(k, kc))
        if inner is None or inner.op_type != "Add" or view.only_consumer(inner.outputs[0]) is not k:
            continue
        cube_mul = next((view.producer(i) for i in inner.inputs
                         if view.producer(i) is not None and view.producer(i).op_type == "Mul"), None)
        if cube_mul is None:
            continue
        x = _other(inner, cube_mul.outputs[0])
        cc = next((i for i in cube_mul.inputs if view.is_const(i)), None)
        if cc is None or not all_close_to(view.const(cc), 0.044715, 1e-3):
            continue
        pw = view.producer(_other(cube_mul, cc))
        if pw is None or pw.op_type != "Pow" or pw.input(0) != x or not all_close_to(view.const(pw.input(1)), 3.0):
            continue
        count += int(_fuse_gelu_tail(view, [pw, cube_mul, inner, k], tanh, x, "tanh"))
    return count


def _last_axis_mean(view: GraphView, node: Optional[Node], rank: int) -> bool:
    if node is None or node.op_type != "ReduceMean" or not node.is_default_domain:
        return False
    axes = node.attr("axes")
    if axes is None and node.input(1):
        c = view.const(node.input(1))
        axes = None if c is None else [int(a) for a in c.reshape(-1)]
    return axes is not None and len(axes) == 1 and axes[0] in (-1, rank - 1) and node.attr("keepdims", 1) == 1


def _absorb_per_channel(view: GraphView, out: str, op_type: str, width: int, neutral: float,
                        group: List[Node]) -> Tuple[np.ndarray, str]:
    """A LayerNorm's scale (``Mul``) or shift (``Add``) by a constant of one value or one per channel,
    when ``out`` is read by that op alone: its values broadcast to ``width`` and the op's output (the op
    joins ``group``); otherwise ``neutral`` per channel and ``out`` unchanged."""
    node = _single_user(view, out, op_type)
    if node is not None:
        c = view.const(_other(node, out))
        if c is not None and c.size in (1, width):
            group.append(node)
            return np.broadcast_to(c.astype(np.float32).reshape(-1), (width,)).copy(), node.outputs[0]
    return np.full(width, neutral, np.float32), out


def _fuse_layernorm(view: GraphView) -> int:
    count = 0
    for mean in [n for n in view.nodes if n.op_type == "ReduceMean" and n.is_default_domain]:
        x = mean.input(0)
        shape = view.shape(x)
        if shape is None or not _last_axis_mean(view, mean, len(shape)):
            continue
        subs = view.consumers(mean.outputs[0])
        if len(subs) != 1 or subs[0].op_type != "Sub" or subs[0].input(0) != x or view.is_graph_output(mean.outputs[0]):
            continue
        sub = subs[0]
        d = sub.outputs[0]
        users = view.consumers(d)
        if len(users) != 2 or view.is_graph_output(d):
            continue
        sq = next((u for u in users if (u.op_type == "Pow" and u.input(0) == d and all_close_to(view.const(u.input(1)), 2.0))
                   or (u.op_type == "Mul" and u.input(0) == d and u.input(1) == d)), None)
        div = next((u for u in users if u.op_type == "Div" and u.input(0) == d), None)
        if sq is None or div is None:
            continue
        var = view.only_consumer(sq.outputs[0])
        if not _last_axis_mean(view, var, len(shape)):
            continue
        add_eps = _single_user(view, var.outputs[0], "Add")
        if add_eps is None:
            continue
        eps = scalar(view.const(_other(add_eps, var.outputs[0])))
        sqrt = _single_user(view, add_eps.outputs[0], "Sqrt") if eps is not None else None
        if sqrt is None or div.input(1) != sqrt.outputs[0] or view.only_consumer(sqrt.outputs[0]) is not div:
            continue
        group = [mean, sub, sq, var, add_eps, sqrt, div]
        out = div.outputs[0]
        width = shape[-1]
        gamma, out = _absorb_per_channel(view, out, "Mul", width, 1.0, group)
        beta, out = _absorb_per_channel(view, out, "Add", width, 0.0, group)
        g_name, b_name = f"{group[-1].name}/gamma", f"{group[-1].name}/beta"
        view.set_constant(g_name, gamma)
        view.set_constant(b_name, beta)
        view.replace(group, Node(group[-1].name, "LayerNormalization", [x, g_name, b_name], [out],
                                 attrs={"axis": -1, "epsilon": float(eps)}, domain=FUSED_DOMAIN,
                                 fused_from=tuple(n.name for n in group)))
        count += 1
    return count


@dataclass(frozen=True)
class SqueezeExcite:
    """One squeeze-excite block: pool → reduce → act → expand → gate → multiply."""

    pool: str
    gate: str
    mul: str
    channels: int


def find_squeeze_excite(view: GraphView) -> List[SqueezeExcite]:
    found = []
    for mul in [n for n in view.nodes if n.op_type == "Mul" and n.is_default_domain]:
        for gate_t in mul.inputs:
            gate = view.producer(gate_t)
            if gate is None or gate.op_type not in ("Sigmoid", "HardSigmoid"):
                continue
            x = _other(mul, gate_t)
            cur = gate.input(0)
            # walk back over the excite convs/activations to a global pool of x
            for _ in range(6):
                p = view.producer(cur)
                if p is None:
                    break
                if p.op_type in ("GlobalAveragePool", "ReduceMean") and p.input(0) == x:
                    shape = view.shape(x) or (0, 0)
                    found.append(SqueezeExcite(p.name, gate.name, mul.name, int(shape[1]) if len(shape) > 1 else 0))
                    break
                cur = p.input(0)
    return found


#: the fusions in the order they run (HardSigmoid before HardSwish: the latter consumes the former)
FUSIONS: Tuple[Tuple[str, Callable[[GraphView], int]], ...] = (
    ("hardsigmoid", _fuse_hardsigmoid_clip),
    ("hardswish", _fuse_hardswish),
    ("silu", _fuse_silu),
    ("gelu", _fuse_gelu),
    ("layernorm", _fuse_layernorm),
)


def apply_fusions(view: GraphView, enabled: Optional[Sequence[str]] = None) -> Dict[str, int]:
    """Run the fusions (all, or those named) on ``view``; returns how many of each fired."""
    counts: Dict[str, int] = {}
    for name, fn in FUSIONS:
        if enabled is not None and name not in enabled:
            continue
        n = fn(view)
        if n:
            counts[name] = n
    view.remove_dead()
    return counts

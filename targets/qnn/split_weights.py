"""A convolution kept out of int8 → two convolutions with 8-bit weights (high and low part) and an Add.

On the HTP a layer kept out of int8 runs with 16-bit activations; with 16-bit
weights too (A16W16) its convolution does not compute what the same Q/DQ
graph computes on the CPU.  Measured on onnxruntime-qnn's HTP simulator (v73),
one convolution of PP-OCRv4 rec in isolation, SQNR vs fp32 on real inputs:

==========================  ========  ========
one Conv, 16-bit activations  CPU EP    HTP
==========================  ========  ========
int16 weights, per channel   76–80 dB  48–61 dB
int8 weights, per channel    39–48 dB  39–48 dB (the CPU's figure to 0.1 dB)
==========================  ========  ========

so the HTP runs A16W8 exactly but loses ~20 dB of A16W16 (the first Conv of
the recogniser, all 16-bit, 80 dB on the CPU and 48 on the HTP): a model whose
mixed-precision search keeps most layers "16-bit" gets barely more than 8-bit
weights on the NPU, and keeping more layers can read lower.

``W = W_hi + W_lo`` with ``W_hi`` exactly on the 8-bit per-channel grid the
quantizer gives it (symmetric, scale ``max|W|/127``) and ``W_lo`` the
remainder (at most half a step of ``W_hi``, 8 bits over its own range):
``Conv(x, W_hi) + Conv(x, W_lo)`` (the bias on the first) is the convolution
in fp32, to rounding, and every op in it is one the HTP computes exactly —
two A16W8 convolutions and a 16-bit Add; the weights keep ~15 bits.  Used for
the layers kept out of int8 only (an int8 layer has 8-bit weights anyway);
the cost is a second convolution for each.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Collection, Dict, List, Optional, Tuple

import numpy as np

#: the ops split, with the weight's output-channel axis (the per-channel quantization axis)
SPLIT_AXIS = {"Conv": 0, "ConvTranspose": 1}

#: symmetric int8 as onnxruntime's quantizer makes it: codes -127..127, scale max|w| / 127
_QMAX = 127


@dataclass(frozen=True)
class SplitConv:
    """One split convolution: its name (kept by the high part), the nodes it added, its two weights."""

    node: str
    added: Tuple[str, ...]
    high: str
    low: str
    axis: Optional[int]

    def to_json(self) -> Dict[str, Any]:
        return {"node": self.node, "added": list(self.added), "weights": [self.high, self.low]}


def high_part(w: np.ndarray, axis: Optional[int]) -> np.ndarray:
    """``w`` rounded to its own symmetric 8-bit grid (per slice along ``axis``, or per tensor), as float32.

    The quantizer recomputes the scale from this tensor's own maximum, which is
    ``127 × scale`` exactly, so it quantizes to these codes with no error."""
    w = w.astype(np.float32)
    if axis is None:
        amax = np.abs(w).max(keepdims=True)
    else:
        amax = np.abs(w).max(axis=tuple(i for i in range(w.ndim) if i != axis), keepdims=True)
    scale = (amax / np.float32(_QMAX)).astype(np.float32)
    safe = np.where(scale > 0, scale, np.float32(1.0))
    q = np.clip(np.round(w / safe), -_QMAX, _QMAX)
    return np.where(scale > 0, q * safe, np.float32(0.0)).astype(np.float32)


def split_convs(model: Any, nodes: Collection[str], *, per_channel: bool = True) -> List[SplitConv]:
    """Split every Conv / ConvTranspose named in ``nodes`` whose weight is a float initializer, in place."""
    import onnx
    from onnx import helper, numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    uses: Dict[str, int] = {}
    for nd in model.graph.node:
        for i in nd.input:
            uses[i] = uses.get(i, 0) + 1
    done: List[SplitConv] = []
    new_nodes: List[Any] = []
    for nd in model.graph.node:
        w_init = inits.get(nd.input[1]) if nd.op_type in SPLIT_AXIS and len(nd.input) > 1 else None
        if nd.name not in nodes or w_init is None or w_init.data_type != onnx.TensorProto.FLOAT:
            new_nodes.append(nd)
            continue
        w = numpy_helper.to_array(w_init)
        # a grouped ConvTranspose's axis 1 is not its output channels: per tensor there
        axis = SPLIT_AXIS[nd.op_type] if per_channel and (nd.op_type == "Conv" or _group(nd) == 1) else None
        hi = high_part(w, axis)
        lo = (w.astype(np.float32) - hi).astype(np.float32)
        # a weight two kept convolutions share gets a pair per convolution
        stem = w_init.name if f"{w_init.name}__hi" not in inits else f"{w_init.name}__{nd.name}"
        hi_name, lo_name = f"{stem}__hi", f"{stem}__lo"
        for name, value in ((hi_name, hi), (lo_name, lo)):
            inits[name] = numpy_helper.from_array(value, name)
            model.graph.initializer.append(inits[name])
        out = nd.output[0]
        high = onnx.NodeProto()
        high.CopyFrom(nd)
        high.input[1] = hi_name
        high.output[0] = f"{out}__hi"
        low = onnx.NodeProto()
        low.CopyFrom(nd)
        del low.input[2:]  # the bias rides on the high part
        low.input[1] = lo_name
        low.output[0] = f"{out}__lo"
        low.name = f"{nd.name}/low"
        add = helper.make_node("Add", [high.output[0], low.output[0]], [out], name=f"{nd.name}/sum")
        new_nodes += [high, low, add]
        uses[w_init.name] -= 1
        done.append(SplitConv(node=nd.name, added=(low.name, add.name), high=hi_name, low=lo_name, axis=axis))
    if done:
        del model.graph.node[:]
        model.graph.node.extend(new_nodes)
        unused = {n for n, c in uses.items() if c == 0}
        keep = [t for t in model.graph.initializer if t.name not in unused]
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)
    return done


def _group(node: Any) -> int:
    return next((int(a.i) for a in node.attribute if a.name == "group"), 1)

"""Quantization-friendly rewrites of the canonical ONNX graph (int8 builds, every target).

Exporters spell cheap things as chains of elementwise ops, and a post-training
quantizer puts a quantize/dequantize pair — one more rounding, one more range
to guess — on every tensor of a chain.  PP-LCNetV3 (PP-OCRv4) follows each
convolution with a learnable affine ``x * s + b`` and spells HardSwish as
``x * Clip(x + 3, 0, 6) / 6``: six quantization points where one or two would
do.  These rewrites remove such chains while keeping the fp32 function (the
same arithmetic up to float rounding; checked ≥ 120 dB against the original on
the real-model suite by ``benchmarks/bench_rewrites.py``):

* ``scale_bias_into_producer``: ``Conv|ConvTranspose|Gemm|MatMul → Mul|Div by
  a constant → Add|Sub a constant`` (per output channel or scalar) folds into
  the producer's weights and bias;
* ``scale_bias_into_consumer``: a ``Mul|Div`` by a per-input-channel constant
  whose only reader is a Conv, Gemm or MatMul folds into that op's weights
  (exact with any padding: padding stays 0 after scaling); an ``Add|Sub``
  folds into its bias when the Conv pads nothing (a padded border would
  otherwise see the shift);
* ``hardsigmoid`` / ``hardswish_clip``: ``Clip(x + 3, 0, 6) / 6`` →
  ``HardSigmoid(x; 1/6, 0.5)`` and ``x * Clip(x + 3, 0, 6) / 6`` →
  ``x * HardSigmoid(x)`` — the lowering's own patterns
  (:mod:`targets.lowering.fusions`), here written back as standard ONNX;
* ``space_to_depth_into_conv`` (for the targets that ask, ``Target.int8_rewrites``:
  openvino, onnxruntime and tflite, where it measured cheaper): a Focus
  stem's ``SpaceToDepth → Conv`` → one Conv with a larger kernel and stride
  on the pixels.  Not asked for where no runtime here could time it (QNN's
  HTP, TensorRT, the Neural Engine).

Not done: ``x * HardSigmoid(x)`` → ``HardSwish``.  onnxruntime's quantizer
pre-pass inlines HardSwish back into that pair, OpenVINO fuses the pair into
HSwish itself, and TFLite's int8 HARD_SWISH measured slower and less accurate
than the pair.

Constant-foldable shape subgraphs (``Shape → Gather → Concat → Reshape`` on
static shapes) are already folded by the canonicalizer's onnxruntime pass
before these run.  The matching works on the lowering's
:class:`~targets.lowering.graph.GraphView`; :func:`rewrite` writes the view
back to ONNX, keeping every untouched node and initializer as it was.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import numpy as np

from .lowering.fusions import _fuse_hardsigmoid_clip, fuse_hardswish_clip_pair
from .lowering.graph import GraphView, Node

_WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")


class _Edit:
    """The view plus what the passes changed (so the write-back keeps everything else as it was)."""

    def __init__(self, view: GraphView) -> None:
        self.view = view
        self.original = {name: id(v) for name, v in view.constants.items()}
        self.retyped: Set[str] = set()  # nodes whose attributes changed (the write-back rebuilds them)
        self.serial = 0

    def new_const(self, base: str, value: np.ndarray) -> str:
        """A fresh constant (weights may be shared by other nodes: never modified in place)."""
        self.serial += 1
        name = f"{base}_rw{self.serial}"
        while name in self.view.constants:
            self.serial += 1
            name = f"{base}_rw{self.serial}"
        self.view.set_constant(name, value.astype(np.float32))
        return name


def _f32(view: GraphView, tensor: str) -> Optional[np.ndarray]:
    v = view.const(tensor)
    return v if v is not None and v.dtype == np.float32 else None


def _per_channel(k: np.ndarray, rank: int, axis: int, channels: int) -> Optional[np.ndarray]:
    """``k`` as one value per channel (length ``channels``) when it broadcasts against a rank-``rank``
    tensor only along ``axis`` (or is a scalar); None otherwise."""
    if k.size == 1:
        return np.full(channels, float(k.reshape(-1)[0]), np.float64)
    if k.ndim > rank:
        return None
    shape = (1,) * (rank - k.ndim) + tuple(k.shape)
    if shape[axis] != channels or any(d != 1 for i, d in enumerate(shape) if i != axis):
        return None
    return k.reshape(-1).astype(np.float64)  # folds compute in float64 and round once, at the end


def _affine(node: Node, view: GraphView) -> Optional[Tuple[str, str, np.ndarray]]:
    """(kind 'scale'|'shift', the activation input, the constant as used) of ``x*k, x/k, x+k, x-k``."""
    if not node.is_default_domain or node.op_type not in ("Mul", "Div", "Add", "Sub") or len(node.inputs) != 2:
        return None
    a, b = node.inputs
    if node.op_type in ("Div", "Sub"):
        k = _f32(view, b)
        if k is None or view.is_const(a):
            return None
        if node.op_type == "Div":
            return None if np.any(k == 0) else ("scale", a, 1.0 / k.astype(np.float64))
        return "shift", a, -k
    ka, kb = _f32(view, a), _f32(view, b)
    if (ka is None) == (kb is None):
        return None
    x, k = (b, ka) if ka is not None else (a, kb)
    return ("scale" if node.op_type == "Mul" else "shift"), x, k


def _affine_nodes(view: GraphView) -> Iterator[Tuple[Node, str, str, np.ndarray]]:
    """(node, kind, activation input, constant) for each ``x*k, x/k, x+k, x-k`` node, over a snapshot of the
    node list (the callers edit the graph as they go)."""
    for node in list(view.nodes):
        aff = _affine(node, view)
        if aff is not None:
            yield (node, *aff)

def _out_channels(p: Node, view: GraphView) -> Optional[Tuple[int, int, int]]:
    """(weight out-channel axis, output tensor's channel axis, channel count) of a weighted node with a
    constant float weight, or None when the rewrite does not apply to it."""
    w = _f32(view, p.input(1))
    out_shape = view.shape(p.outputs[0])
    if w is None or out_shape is None:
        return None
    if p.op_type == "Conv":
        return 0, 1, w.shape[0]
    if p.op_type == "ConvTranspose" and int(p.attr("group", 1)) == 1:
        return 1, 1, w.shape[1]
    if p.op_type == "Gemm" and w.ndim == 2 and not int(p.attr("transA", 0)):
        axis = 0 if int(p.attr("transB", 0)) else 1
        return axis, len(out_shape) - 1, w.shape[axis]
    if p.op_type == "MatMul" and w.ndim == 2:
        return 1, len(out_shape) - 1, w.shape[1]
    return None


def _scale_bias_into_producer(edit: _Edit) -> int:
    view, count = edit.view, 0
    for node, kind, x, k in _affine_nodes(view):
        p = view.producer(x)
        if p is None or not p.is_default_domain or p.op_type not in _WEIGHTED or view.only_consumer(x) is not node:
            continue
        dims = _out_channels(p, view)
        rank = len(view.shape(x) or ())
        if dims is None or not rank:
            continue
        w_axis, y_axis, channels = dims
        per = _per_channel(k, rank, y_axis, channels)
        if per is None:
            continue
        bias_at = 2
        bias = _f32(view, p.input(bias_at)) if p.input(bias_at) else np.zeros(channels, np.float32)
        if bias is None:
            continue
        bias = bias.astype(np.float64)
        if p.op_type == "Gemm":
            beta = float(p.attr("beta", 1.0))
            if bias.size != 1 and bias.shape not in ((channels,), (1, channels)):
                continue  # a full [M, N] C: leave it
            bias = np.broadcast_to(bias * beta, (channels,))
            p.attrs["beta"] = 1.0
            edit.retyped.add(p.name)
        elif p.op_type == "MatMul":
            if kind == "shift":
                continue  # MatMul has no bias to take the shift
        if kind == "scale":
            w = _f32(view, p.input(1))
            shape = [1] * w.ndim
            shape[w_axis] = channels
            p.inputs[1] = edit.new_const(p.input(1), w.astype(np.float64) * per.reshape(shape))
            bias = bias * per
        else:
            bias = bias + per
        if p.op_type != "MatMul":
            while len(p.inputs) < 3:
                p.inputs.append("")
            p.inputs[2] = edit.new_const(p.input(2) or f"{p.name}_bias", bias)
        p.outputs[0] = node.outputs[0]
        p.fused_from = p.fused_from + (node.name,)
        view.replace([node], None)
        count += 1
    return count


def _in_channel_index(w: np.ndarray, group: int) -> np.ndarray:
    """For a Conv weight [O, I/g, ...]: the input channel each (o, j) slice reads, shape [O, I/g]."""
    o, ig = w.shape[0], w.shape[1]
    per_group = o // group
    return (np.arange(o)[:, None] // per_group) * ig + np.arange(ig)[None, :]


def _scale_bias_into_consumer(edit: _Edit) -> int:
    view, count = edit.view, 0
    for node, kind, x, k in _affine_nodes(view):
        c = view.only_consumer(node.outputs[0])
        if c is None or not c.is_default_domain or c.op_type not in ("Conv", "Gemm", "MatMul") \
                or c.input(0) != node.outputs[0]:
            continue
        w32 = _f32(view, c.input(1))
        shape = view.shape(x)
        if w32 is None or not shape:
            continue
        w = w32.astype(np.float64)
        if c.op_type == "Conv":
            group = int(c.attr("group", 1))
            cin = w.shape[1] * group
            per = _per_channel(k, len(shape), 1, cin)
            if per is None:
                continue
            idx = _in_channel_index(w, group)
            factor = per[idx].reshape(idx.shape + (1,) * (w.ndim - 2))
            if kind == "scale":
                new_w, bias_delta = w * factor, None
            else:
                auto_pad = c.attr("auto_pad", "NOTSET")
                auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
                if any(int(p) for p in c.attr("pads") or []) or auto_pad not in ("NOTSET", "VALID"):
                    continue  # a padded border reads 0, not the shift
                new_w, bias_delta = w, (w * factor).reshape(w.shape[0], -1).sum(axis=1)
        else:
            if c.op_type == "Gemm" and int(c.attr("transA", 0)):
                continue
            trans_b = c.op_type == "Gemm" and int(c.attr("transB", 0))
            kdim = w.shape[1] if trans_b else w.shape[0]
            per = _per_channel(k, len(shape), len(shape) - 1, kdim) if w.ndim == 2 else None
            if per is None:
                continue
            if kind == "scale":
                new_w = w * (per[None, :] if trans_b else per[:, None])
                bias_delta = None
            else:
                if c.op_type == "MatMul":
                    continue
                new_w = w
                alpha = float(c.attr("alpha", 1.0))
                bias_delta = alpha * (w @ per if trans_b else per @ w)
        if bias_delta is not None:
            channels = new_w.shape[0] if c.op_type == "Conv" else bias_delta.shape[0]
            old = _f32(view, c.input(2)) if c.input(2) else np.zeros(channels, np.float32)
            if old is None:
                continue
            old = old.astype(np.float64)
            if c.op_type == "Gemm":
                beta = float(c.attr("beta", 1.0))
                if old.ndim > 1 and old.shape[0] != 1:
                    continue
                old = np.broadcast_to(old * beta, (channels,))
                c.attrs["beta"] = 1.0
                edit.retyped.add(c.name)
            while len(c.inputs) < 3:
                c.inputs.append("")
            c.inputs[2] = edit.new_const(c.input(2) or f"{c.name}_bias", old + bias_delta)
        if new_w is not w:
            c.inputs[1] = edit.new_const(c.input(1), new_w)
        c.inputs[0] = x
        c.fused_from = c.fused_from + (node.name,)
        view.replace([node], None)
        count += 1
    return count


def _space_to_depth_into_conv(edit: _Edit) -> int:
    """``SpaceToDepth(b) → [Gather(channels)] → Conv(k, stride s, pads p)`` → ``Conv(k·b, stride s·b, pads
    p·b)`` on the pixels (a permutation of the channels between them folds into the weights).

    A Focus stem (YOLOv5/YOLOX) reads the image through a SpaceToDepth; the
    convolution after it equals one with a b× larger kernel and stride on the
    image itself (YOLOv5 6.0 made the same change): output channel order
    (i·b + j)·C + c of SpaceToDepth reads pixel (Y·b + i, X·b + j) of channel
    c, which is tap (ky·b + i, kx·b + j) of the larger kernel, and a padding of
    p blocks is p·b pixels of zeros.  The same products, summed in another
    order.  The ddddocr YOLOX's int8 package, side by side with the rewrite and
    without: onnxruntime 0.92–0.98× the CPU time, TFLite/XNNPACK 0.97×; on
    OpenVINO the quantized image then feeds the int8 convolution directly,
    and the input reorder and bf16 SpaceToDepth (0.67 ms of 14) go."""
    view, count = edit.view, 0
    for node in view:
        if node.op_type != "SpaceToDepth" or not node.is_default_domain:
            continue
        c = view.only_consumer(node.outputs[0])
        gather, order = None, None
        if c is not None and c.op_type == "Gather" and c.is_default_domain and int(c.attr("axis", 0)) == 1:
            # the canonicalizer's Focus: SpaceToDepth, then a Gather putting the channels in YOLOv5's order
            order = view.const(c.input(1))
            gather, c = c, view.only_consumer(c.outputs[0])
        if c is None or not c.is_default_domain or c.op_type != "Conv" or c.input(0) != (gather or node).outputs[0]:
            continue
        auto_pad = c.attr("auto_pad", "NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        w = _f32(view, c.input(1))
        if (w is None or w.ndim != 4 or int(c.attr("group", 1)) != 1 or auto_pad not in ("NOTSET", "VALID")
                or any(int(d) != 1 for d in c.attr("dilations") or [])):
            continue
        b = int(node.attr("blocksize"))
        o, cb, kh, kw = w.shape
        if cb % (b * b):
            continue
        if gather is not None:
            if order is None or order.ndim != 1 or sorted(int(i) % cb for i in order) != list(range(cb)):
                continue  # only a permutation of the channels folds into the weights
            unshuffled = np.empty_like(w)
            unshuffled[:, np.asarray(order, np.int64) % cb] = w  # the Conv's channel k read SpaceToDepth's order[k]
            w = unshuffled
        # [o, (i, j, c), ky, kx] → [o, c, (ky, i), (kx, j)]
        w = w.reshape(o, b, b, cb // (b * b), kh, kw).transpose(0, 3, 4, 1, 5, 2).reshape(o, -1, kh * b, kw * b)
        c.attrs.update(kernel_shape=[kh * b, kw * b], strides=[int(v) * b for v in c.attr("strides") or [1, 1]],
                       pads=[int(v) * b for v in c.attr("pads") or [0, 0, 0, 0]], dilations=[1, 1], group=1)
        c.attrs.pop("auto_pad", None)
        edit.retyped.add(c.name)
        c.inputs[1] = edit.new_const(c.input(1), np.ascontiguousarray(w))
        c.inputs[0] = node.input(0)
        c.fused_from = c.fused_from + (node.name,) + ((gather.name,) if gather is not None else ())
        view.replace([node] + ([gather] if gather is not None else []), None)
        count += 1
    return count


#: the rewrites in the order they run; each runs until it finds nothing more
REWRITES: Tuple[Tuple[str, Callable[[_Edit], int]], ...] = (
    ("hardsigmoid", lambda e: _fuse_hardsigmoid_clip(e.view)),
    ("hardswish_clip", lambda e: fuse_hardswish_clip_pair(e.view)),
    ("scale_bias_into_producer", _scale_bias_into_producer),
    ("scale_bias_into_consumer", _scale_bias_into_consumer),
    ("space_to_depth_into_conv", _space_to_depth_into_conv),
)
#: what every int8 build runs; a target adds others it measured (``Target.int8_rewrites``)
DEFAULT: Tuple[str, ...] = ("hardsigmoid", "hardswish_clip", "scale_bias_into_producer", "scale_bias_into_consumer")


def rewrite(model: Any, enabled: Optional[Sequence[str]] = None) -> Tuple[Any, Dict[str, int]]:
    """``model`` rewritten (a new ModelProto; the argument is not modified) and how often each rewrite
    fired; ``model`` itself when none did.  ``enabled``: the rewrites to run (default :data:`DEFAULT`)."""
    names = DEFAULT if enabled is None else tuple(enabled)
    unknown = sorted(set(names) - {n for n, _ in REWRITES})
    if unknown:
        raise ValueError(f"unknown rewrite(s) {unknown}; known: {[n for n, _ in REWRITES]}")  # a caller's bug
    edit = _Edit(GraphView(model))
    counts: Dict[str, int] = {}
    for name, fn in REWRITES:
        if name not in names:
            continue
        total = 0
        for _ in range(64):  # chains fold one link per round (Conv → Mul → Add takes two)
            n = fn(edit)
            total += n
            if not n:
                break
        if total:
            counts[name] = total
    if not counts:
        return model, counts
    edit.view.remove_dead()
    return _to_model(edit, model), counts


def _to_model(edit: _Edit, model: Any) -> Any:
    """The view as a ModelProto: untouched nodes and initializers copied from ``model``."""
    import onnx
    from onnx import helper, numpy_helper

    view = edit.view
    originals = {(n.name or (n.output[0] if n.output else "")): n for n in model.graph.node}
    inits = {t.name: t for t in model.graph.initializer}
    out = onnx.ModelProto()  # filled field by field: CopyFrom would copy every weight once more
    out.ir_version = model.ir_version
    out.producer_name, out.producer_version = model.producer_name, model.producer_version
    out.domain, out.model_version, out.doc_string = model.domain, model.model_version, model.doc_string
    out.opset_import.extend(model.opset_import)
    out.metadata_props.extend(model.metadata_props)
    out.functions.extend(model.functions)
    g = out.graph
    g.name, g.doc_string = model.graph.name, model.graph.doc_string
    g.output.extend(model.graph.output)
    used: List[str] = []
    seen: Set[str] = set()
    for n in view.nodes:
        src = originals.get(n.name)
        proto = helper.make_node(n.op_type, n.inputs, n.outputs, name=n.name, domain=n.domain or None)
        if src is not None and src.op_type == n.op_type and n.name not in edit.retyped:
            proto.attribute.extend(src.attribute)
        else:
            for key, value in n.attrs.items():
                proto.attribute.append(helper.make_attribute(key, value))
        g.node.append(proto)
        for i in n.inputs:
            if i and i in view.constants and i not in seen:
                seen.add(i)
                used.append(i)
    for name in list(used) + [o for o in view.outputs if o in view.constants and o not in seen]:
        value = view.constants[name]
        if name in inits and edit.original.get(name) == id(value):
            g.initializer.append(inits[name])
        else:
            g.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    written = {t.name for t in g.initializer}
    # old exports list initializers among the inputs: keep only those still written
    g.input.extend(vi for vi in model.graph.input if vi.name not in inits or vi.name in written)
    return out


def describe(counts: Dict[str, int]) -> List[str]:
    """One canonicalization note per rewrite that fired (the manifest's ``source.canonicalization``)."""
    words = {
        "hardsigmoid": "Clip(x+3,0,6)/6 → HardSigmoid",
        "hardswish_clip": "x*Clip(x+3,0,6)/6 → x*HardSigmoid(x)",
        "scale_bias_into_producer": "constant scale/shift folded into the Conv/Gemm/MatMul before it",
        "scale_bias_into_consumer": "constant scale/shift folded into the Conv/Gemm/MatMul after it",
        "space_to_depth_into_conv": "SpaceToDepth folded into the Conv after it (a larger kernel and stride)",
    }
    return [f"int8 rewrite {name}: {count}× {words[name]}" for name, count in counts.items()]

"""Explicit int8 quantization for TensorRT: calibrate, then insert Q/DQ the way TensorRT fuses them.

NVIDIA's placement guidance for explicitly quantized networks, which this
module follows:

* quantize the *inputs* of the ops that have int8 kernels — Conv,
  ConvTranspose, Gemm, MatMul — and not their outputs; TensorRT propagates the
  quantization through pooling, activations and reshapes and fuses the DQ →
  op → Q chains it finds into int8 kernels;
* symmetric int8 everywhere, zero point 0 (the only integer Q/DQ TensorRT
  takes); activations per tensor, weights per output channel (Conv axis 0,
  ConvTranspose axis 1, Gemm axis 0 with ``transB=1`` else 1, MatMul the last
  axis);
* biases stay float (TensorRT has no int32 DequantizeLinear; it folds the
  bias into the int8 kernel itself);
* one Q/DQ pair per tensor, shared by all its quantized consumers.

Weights are stored as int8 initializers behind a DequantizeLinear for
TensorRT 10 (4× smaller package), and as fp32 initializers → Q → DQ for
TensorRT 8.x, whose ONNX parser expects the fake-quantized form.

Activation ranges come from running the calibration feeds through the fp32
graph on onnxruntime: ``minmax`` (max |x|), ``percentile`` (of |x|) or
``entropy`` (TensorRT's KL-divergence threshold), all from a 2048-bin
histogram of |x| for the last two.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Mapping, Optional, Set, Tuple

import numpy as np

from edgekit.errors import CalibrationError

from ..graph import weight_axis

if TYPE_CHECKING:  # pragma: no cover
    import onnx

    from edgekit.quantize.calibration import CalibrationSet
    from edgekit.quantize.recipe import Recipe

#: op type → indices of the inputs that are quantized (data, weight); others (bias) stay float
QUANTIZED_INPUTS: Mapping[str, Tuple[int, ...]] = {
    "Conv": (0, 1),
    "ConvTranspose": (0, 1),
    "Gemm": (0, 1),
    "MatMul": (0, 1),
}

QMAX = 127.0
HIST_BINS = 2048
MIN_OPSET = 13  # per-channel DequantizeLinear (axis) needs opset 13


@dataclass
class QdqReport:
    """What :func:`insert_qdq` did (lands in ``manifest.quantization``)."""

    activations: Dict[str, float] = field(default_factory=dict)  # tensor → scale
    weights: Dict[str, str] = field(default_factory=dict)  # initializer → "per-channel axis N" / "per-tensor"
    quantized_nodes: List[str] = field(default_factory=list)
    skipped_nodes: List[str] = field(default_factory=list)


def _node_name(node: Any, i: int) -> str:
    return node.name or (node.output[0] if node.output else f"{node.op_type}_{i}")


def refuse_unsupported_recipe(recipe: "Recipe") -> None:
    """One error naming every recipe setting TensorRT's integer Q/DQ cannot run."""
    from edgekit.errors import ConfigError
    from edgekit.quantize.recipe import QuantDtype

    problems = []
    for where, cfg in [("global_config", recipe.global_config), *[(f"op_types.{k}", c) for k, c in recipe.op_types.items()],
                       *[(f"nodes.{k}", c) for k, c in recipe.nodes.items()]]:
        if cfg.skip:
            continue
        if cfg.activation_dtype not in (QuantDtype.UINT8, QuantDtype.INT8):
            problems.append(f"{where}.activation_dtype={cfg.activation_dtype.value!r}")
        if cfg.weight_dtype is not QuantDtype.INT8:
            problems.append(f"{where}.weight_dtype={cfg.weight_dtype.value!r}")
        if cfg.reduce_range:
            problems.append(f"{where}.reduce_range=true")
    if problems:
        raise ConfigError(f"the tensorrt target cannot honour recipe setting(s) {', '.join(problems)}: TensorRT runs "
                          "symmetric int8 Q/DQ only (8-bit activations, int8 weights, int32 accumulation); change "
                          "the recipe or pick another target")


def plan(model: "onnx.ModelProto", recipe: "Recipe", keep_float: Iterable[str] = ()) -> Tuple[List[Tuple[int, Any]], Set[str], Set[str]]:
    """(quantized (index, node) pairs, activation tensors to calibrate, skipped node names).

    ``keep_float``: nodes kept in float besides the recipe's skips (a detector's decode tail).
    """
    inits = {t.name for t in model.graph.initializer}
    floats = set(keep_float)
    nodes, acts, skipped = [], set(), set()
    for i, node in enumerate(model.graph.node):
        if node.op_type not in QUANTIZED_INPUTS or (node.domain or "") not in ("", "ai.onnx"):
            continue
        name = _node_name(node, i)
        if recipe.config_for(name, node.op_type).skip or name in floats:
            skipped.add(name)
            continue
        nodes.append((i, node))
        for k in QUANTIZED_INPUTS[node.op_type]:
            if k < len(node.input) and node.input[k] and node.input[k] not in inits:
                acts.add(node.input[k])
    return nodes, acts, skipped


# --------------------------------------------------------------------------- calibration

def _entropy_threshold(hist: np.ndarray, bin_width: float, levels: int = 128) -> float:
    """TensorRT's entropy calibration: the |x| threshold minimising KL(P || Q)."""
    hist = hist.astype(np.float64)
    nbins = hist.size
    if hist.sum() == 0:
        return bin_width * nbins
    best_kl, best_i = np.inf, nbins
    for i in range(levels, nbins + 1, 4):  # stride 4: same optimum within a bin, 4× faster
        p = hist[:i].copy()
        p[-1] += hist[i:].sum()  # outliers clipped into the last bin
        nonzero = hist[:i] != 0
        # merge the i bins into `levels` groups, then spread each back over its non-empty bins
        edges = np.linspace(0, i, levels + 1).astype(np.int64)
        q = np.zeros(i, dtype=np.float64)
        for j in range(levels):
            lo, hi = edges[j], edges[j + 1]
            if hi <= lo:
                continue
            nz = nonzero[lo:hi]
            cnt = nz.sum()
            if cnt:
                q[lo:hi][nz] = hist[lo:hi].sum() / cnt
        ps, qs = p.sum(), q.sum()
        if ps == 0 or qs == 0:
            continue
        p /= ps
        q /= qs
        mask = p > 0
        qm = np.where(q[mask] > 0, q[mask], 1e-12)
        kl = float(np.sum(p[mask] * np.log(p[mask] / qm)))
        if kl < best_kl:
            best_kl, best_i = kl, i
    return (best_i + 0.5) * bin_width


def calibrate(
    model: "onnx.ModelProto",
    tensors: Iterable[str],
    calibration: "CalibrationSet",
    method: str = "minmax",
    percentile: float = 99.999,
) -> Dict[str, float]:
    """Activation amax (the |x| that maps to ±127) per tensor, from the fp32 graph on onnxruntime."""
    import onnx
    import onnxruntime as ort

    names = sorted(set(tensors))
    if not names:
        return {}
    aug = onnx.ModelProto()
    aug.CopyFrom(model)
    existing = {o.name for o in aug.graph.output}
    for name in names:
        if name not in existing:
            aug.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    sess = ort.InferenceSession(aug.SerializeToString(), so, providers=["CPUExecutionProvider"])
    feeds = list(calibration.feeds)
    if not feeds:
        raise CalibrationError("int8 needs calibration data: pass --calib DIR|FILE.npz")
    amax = {n: 0.0 for n in names}

    def run(feed: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        try:
            return dict(zip(names, sess.run(names, dict(feed))))
        except Exception as err:  # the loader checked shapes; anything else is a data/model mismatch
            raise CalibrationError(
                f"calibration run failed: {str(err).strip().splitlines()[0]}; check that the calibration data "
                "matches the model inputs"
            ) from None

    for feed in feeds:
        for n, v in run(feed).items():
            amax[n] = max(amax[n], float(np.max(np.abs(v))) if v.size else 0.0)
    if method == "minmax":
        return amax
    hists = {n: np.zeros(HIST_BINS, dtype=np.int64) for n in names}
    for feed in feeds:
        for n, v in run(feed).items():
            if amax[n] > 0:
                hists[n] += np.histogram(np.abs(v), bins=HIST_BINS, range=(0.0, amax[n]))[0]
    out = {}
    for n in names:
        if amax[n] == 0:
            out[n] = 0.0
            continue
        width = amax[n] / HIST_BINS
        if method == "percentile":
            cdf = np.cumsum(hists[n]) / max(1, hists[n].sum())
            idx = int(np.searchsorted(cdf, percentile / 100.0))
            out[n] = min(amax[n], (idx + 1) * width)
        elif method == "entropy":
            out[n] = min(amax[n], _entropy_threshold(hists[n], width))
        else:  # pragma: no cover - the Recipe validates the method
            raise ValueError(method)
    return out


# --------------------------------------------------------------------------- graph rewrite

def _scale(amax: np.ndarray) -> np.ndarray:
    """Symmetric int8 scale; a channel (or tensor) that is all zero gets scale 1 (any positive works)."""
    amax = np.asarray(amax, dtype=np.float64)
    s = np.where(amax > 0, amax / QMAX, 1.0)
    return s.astype(np.float32)


def quantize_weight(w: np.ndarray, axis: Optional[int]) -> Tuple[np.ndarray, np.ndarray]:
    """(int8 values, float32 scales) with QuantizeLinear's rounding (half to even) and saturation."""
    w = np.asarray(w, dtype=np.float32)
    if axis is None:
        scale = _scale(np.max(np.abs(w)) if w.size else 0.0).reshape(())
        q = np.round(w / scale)
    else:
        axes = tuple(a for a in range(w.ndim) if a != axis)
        scale = _scale(np.max(np.abs(w), axis=axes) if w.size else np.zeros(w.shape[axis]))
        shape = [1] * w.ndim
        shape[axis] = -1
        q = np.round(w / scale.reshape(shape))
    return np.clip(q, -128, 127).astype(np.int8), scale


class _QdqWriter:
    """Emits the Q/DQ nodes and initializers for one graph, one pair per (tensor, axis)."""

    def __init__(self, graph: Any, amax: Mapping[str, float], int8_weights: bool, report: QdqReport) -> None:
        from onnx import numpy_helper

        self.inits = {t.name: t for t in graph.initializer}
        self.amax = amax
        self.int8_weights = int8_weights
        self.report = report
        self.new_inits: List[Any] = []
        self.done: Dict[Tuple[str, Optional[int]], str] = {}  # (tensor, axis) → dequantized name
        self.used_weights: Dict[str, int] = {}
        self._to_array = numpy_helper.to_array
        self._from_array = numpy_helper.from_array

    def _constant(self, array: np.ndarray, name: str) -> str:
        self.new_inits.append(self._from_array(array, name))
        return name

    def _pair(self, emitted: List[Any], src: str, base: str, scale: np.ndarray, axis: Optional[int],
              quantize: bool) -> str:
        from onnx import helper

        s_name = self._constant(scale, f"{base}_scale")
        zp = self._constant(np.zeros(scale.shape, dtype=np.int8), f"{base}_zero_point")
        attrs = {"axis": axis} if axis is not None else {}
        dq_in = src
        if quantize:
            dq_in = f"{base}_quantized"
            emitted.append(helper.make_node("QuantizeLinear", [src, s_name, zp], [dq_in],
                                            name=f"{base}_QuantizeLinear", **attrs))
        dq_out = f"{base}_dequantized"
        emitted.append(helper.make_node("DequantizeLinear", [dq_in, s_name, zp], [dq_out],
                                        name=f"{base}_DequantizeLinear", **attrs))
        return dq_out

    def weight(self, emitted: List[Any], node: Any, tensor: str, per_channel: bool) -> Optional[str]:
        w = self._to_array(self.inits[tensor])
        if w.dtype != np.float32:
            return None  # fp16/int weights: leave them; the lint reports what TensorRT cannot fuse
        axis = weight_axis(node, w.ndim) if per_channel else None
        key = (tensor, axis)
        if key not in self.done:
            q, scale = quantize_weight(w, axis)
            # a weight read with two different axes (rare) gets two names
            base = tensor if not any(t == tensor for t, _ in self.done) else f"{tensor}_axis{axis}"
            src = tensor
            if self.int8_weights:
                src = self._constant(q, f"{base}_int8")
            self.done[key] = self._pair(emitted, src, base, scale, axis, quantize=not self.int8_weights)
            self.report.weights[tensor] = f"per-channel axis {axis}" if axis is not None else "per-tensor"
        self.used_weights[tensor] = self.used_weights.get(tensor, 0) + 1
        return self.done[key]

    def activation(self, emitted: List[Any], tensor: str) -> str:
        key = (tensor, None)
        if key not in self.done:
            scale = _scale(self.amax.get(tensor, 0.0)).reshape(())
            base = (tensor.replace("/", "_").strip("_") or "t") + "_act"
            self.done[key] = self._pair(emitted, tensor, base, scale, None, quantize=True)
            self.report.activations[tensor] = float(scale)
        return self.done[key]


def insert_qdq(
    model: "onnx.ModelProto",
    recipe: "Recipe",
    calibration: "CalibrationSet",
    *,
    int8_weights: bool = True,
    keep_float: Iterable[str] = (),
) -> Tuple["onnx.ModelProto", QdqReport]:
    """The explicitly quantized copy of ``model`` (see the module docstring for the rules)."""
    import onnx

    opset = next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    src = model
    if opset < MIN_OPSET:
        from onnx import version_converter

        src = version_converter.convert_version(model, MIN_OPSET)
    out = onnx.ModelProto()
    out.CopyFrom(src)  # never modify the caller's model
    g = out.graph
    nodes, acts, skipped = plan(out, recipe, keep_float)
    report = QdqReport(skipped_nodes=sorted(skipped))
    writer = _QdqWriter(g, calibrate(src, acts, calibration, method=recipe.method.value,
                                     percentile=recipe.percentile), int8_weights, report)
    consumers: Dict[str, int] = {}
    for node in g.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    prologue: Dict[int, List[Any]] = {}  # node index → Q/DQ nodes to emit before it
    for i, node in nodes:
        name = _node_name(node, i)
        emitted = prologue.setdefault(i, [])
        for k in QUANTIZED_INPUTS[node.op_type]:
            tensor = node.input[k] if k < len(node.input) else ""
            if not tensor:
                continue
            if tensor in writer.inits:
                dq = writer.weight(emitted, node, tensor, recipe.config_for(name, node.op_type).per_channel)
            else:
                dq = writer.activation(emitted, tensor)
            if dq is not None:
                node.input[k] = dq
        report.quantized_nodes.append(name)
    _reorder(g, prologue)
    if int8_weights:  # int8-stored weights no longer need their float copy unless something else reads it
        keep = [t for t in g.initializer
                if not (t.name in writer.used_weights and consumers.get(t.name, 0) <= writer.used_weights[t.name])]
        del g.initializer[:]
        g.initializer.extend(keep)
    g.initializer.extend(writer.new_inits)
    if not nodes:
        warnings.warn("the model has no Conv, ConvTranspose, Gemm or MatMul to quantize; the int8 package "
                      "runs in fp16/fp32 on TensorRT", UserWarning, stacklevel=3)
    onnx.checker.check_model(out)
    return out, report


def _reorder(graph: Any, prologue: Mapping[int, List[Any]]) -> None:
    """Re-emit the nodes with each node's Q/DQ right before it (keeps the graph topologically sorted)."""
    ordered = []
    for i, node in enumerate(graph.node):
        ordered.extend(prologue.get(i, []))
        ordered.append(node)
    del graph.node[:]
    graph.node.extend(ordered)

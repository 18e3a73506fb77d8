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
graph on onnxruntime, with the shared range rules of
:mod:`edgekit.quantize.ranges` (``minmax``, ``percentile``, ``entropy`` —
TensorRT's KL-divergence threshold); symmetric int8 takes the larger side.
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
    from edgekit.quantize.recipe import QuantDtype

    recipe.require("tensorrt", activation_dtypes=(QuantDtype.UINT8, QuantDtype.INT8), weight_dtypes=(QuantDtype.INT8,),
                   reduce_range=False, why="TensorRT runs symmetric int8 Q/DQ only (8-bit activations, int8 weights, "
                                           "int32 accumulation)")


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

def calibrate(
    model: "onnx.ModelProto",
    tensors: Iterable[str],
    calibration: "CalibrationSet",
    method: str = "minmax",
    percentile: float = 99.999,
    per_tensor: Optional[Mapping[str, Any]] = None,
) -> Dict[str, float]:
    """Activation amax (the |x| that maps to ±127) per tensor, from the fp32 graph on onnxruntime.

    The ranges are the shared ones (:mod:`edgekit.quantize.ranges`: min-max,
    percentile, TensorRT's entropy threshold, natural ranges of Sigmoid and
    friends); TensorRT's symmetric int8 takes the larger side.
    """
    from edgekit.quantize.ranges import ranges

    names = sorted(set(tensors))
    if not names:
        return {}
    feeds = [dict(f) for f in calibration.feeds]
    if not feeds:
        raise CalibrationError("int8 needs calibration data: pass --calib DIR|FILE.npz")
    try:
        found = ranges(model, feeds, method=method, percentile=percentile, names=names, per_tensor=per_tensor)
    except CalibrationError:
        raise
    except Exception as err:  # the loader checked shapes; anything else is a data/model mismatch
        raise CalibrationError(
            f"calibration run failed: {str(err).strip().splitlines()[0]}; check that the calibration data "
            "matches the model inputs"
        ) from None
    return {n: max(-lo, hi, 0.0) for n, (lo, hi) in found.items()}


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
    from edgekit.quantize.ranges import recipe_rules

    writer = _QdqWriter(g, calibrate(src, acts, calibration, method=recipe.method.value,
                                     percentile=recipe.percentile, per_tensor=recipe_rules(src, recipe)),
                        int8_weights, report)
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

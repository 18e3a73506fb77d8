"""Per-layer quantization sensitivity on a switchable fake-quantized twin of the fp32 model.

The twin is the fp32 graph with, around every quantizable layer, 8-bit
fake-quantization of what an int8 build quantizes there — its float
activation inputs and outputs (affine uint8 over the calibrated range) and
its weight (symmetric int8 per output channel) — each behind an
``If(flag, quantized, float)`` whose boolean ``flag`` is a graph input of its
own, one per quantization point (a tensor, a weight).  One onnxruntime
session then evaluates *any* mix of int8 and float layers by feeding flags: no
rebuild per layer, which is what makes a sensitivity sweep over a hundred
layers take seconds.  With every flag off the twin computes exactly the fp32
model.

:func:`analyse` measures, on a subset of the held-out feeds and within an
evaluation budget counted in multiply-accumulates (:class:`SweepBound` — not
in seconds: a package must not depend on how loaded the build host was), the
output SQNR with each quantization point alone quantized; a
layer's damage (alone, and what keeping it in float buys) follows by adding
point noises, and the mixed-precision order is built on the same additive
model (:func:`edgekit.quantize.mixed.benefit_order`).  Real targets place
their quantizers their own way, so the figures guide which layers to keep in
float; the target's own build and verification stay the verdict
(:mod:`edgekit.quantize.mixed`).
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np

#: ops an int8 build quantizes (onnxruntime's QDQ registry, OpenVINO's and TFLite's int8 kernels agree on these)
QUANTIZABLE = frozenset({
    "Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Mul", "Concat", "AveragePool", "GlobalAveragePool",
    "Sigmoid", "HardSigmoid", "HardSwish", "Softmax", "Resize", "LeakyRelu", "Where", "Split", "Gather",
    "InstanceNormalization", "LayerNormalization", "ReduceMean", "Pad", "MaxPool",
})
#: ops whose second input is a weight quantized per output channel
WEIGHTED = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})

Outputs = List[Dict[str, np.ndarray]]
#: score(reference outputs, candidate outputs) → dB (the weakest checked part's SQNR)
ScoreFn = Callable[[Outputs, Outputs], float]

#: a model without countable MACs (recurrent cells, elementwise nets) still costs something per sample
MIN_MACS_PER_SAMPLE = 1_000_000


@dataclass(frozen=True)
class SweepBound:
    """What the sweep may spend: a deterministic budget, plus a wall-time guard that only warns.

    ``gmacs``: giga multiply-accumulates of twin evaluation (the model's MACs per sample × samples ×
    evaluations) — the same model and data measure the same points on the same samples on any host, at
    any load.  ``wall_guard_s``: a safety net for a host far slower than planned: when hit, the sweep
    stops where it is and warns that the ranking now depends on the host (0 disables it).
    """

    gmacs: float = 3000.0
    wall_guard_s: float = 1800.0

    def __post_init__(self) -> None:
        from edgekit.errors import ConfigError

        for name in ("gmacs", "wall_guard_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ConfigError(f'"{name}" must be a number ≥ 0, but got {v!r}')


@dataclass(frozen=True)
class Layer:
    name: str
    op_type: str
    macs: int


@dataclass(frozen=True)
class LayerSensitivity:
    """One layer's row of the ranked table (dB; higher is better)."""

    name: str
    op_type: str
    macs: int
    #: the model with only this layer quantized: its quantization points' noises added (quantization noise
    #: of separate points adds, near enough); None when the time budget ran out before any was measured
    alone_db: Optional[float]
    #: the model with every layer but this one quantized: the all-int8 noise less the points only this
    #: layer turns on; None when unmeasured
    kept_float_db: Optional[float]

    def to_json(self) -> Dict[str, Any]:
        return {"layer": self.name, "op_type": self.op_type, "macs": self.macs,
                "alone_db": None if self.alone_db is None else round(self.alone_db, 2),
                "kept_float_db": None if self.kept_float_db is None else round(self.kept_float_db, 2)}


@dataclass(frozen=True)
class SensitivityReport:
    """The ranked table: most damaging layer first."""

    layers: Tuple[LayerSensitivity, ...]
    all_int8_db: float
    samples: int
    seconds: float
    #: True when the time budget cut a column short
    truncated: bool = False
    #: quantization point → the model's SQNR with that point alone quantized (measured points only)
    point_db: Mapping[str, float] = field(default_factory=dict)
    #: layer → its quantization points (what turning it int8 turns on)
    layer_points: Mapping[str, Tuple[str, ...]] = field(default_factory=dict)
    #: point → elements per sample (tensors), 0 for weights or unknown shapes
    point_size: Mapping[str, int] = field(default_factory=dict)
    #: the bound the sweep ran under and what it spent (recorded so a package says how it was ranked)
    bound: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ranked(self) -> List[str]:
        return [x.name for x in self.layers]

    @property
    def total_macs(self) -> int:
        return sum(x.macs for x in self.layers)

    def to_json(self, top: int = 20) -> Dict[str, Any]:
        return {"all_int8_sqnr_db": round(self.all_int8_db, 2), "samples": self.samples,
                "seconds": round(self.seconds, 2), "layers_analysed": len(self.layers),
                "points_measured": len(self.point_db), "points": len(self.point_size), "truncated": self.truncated,
                "bound": dict(self.bound), "ranked": [x.to_json() for x in self.layers[:top]]}

    def table(self, top: int = 15) -> str:
        spent = self.bound.get("spent_gmacs")
        budget = self.bound.get("budget_gmacs")
        bound = f", {spent:,.0f} of {budget:,.0f} GMACs" if spent is not None and budget is not None else ""
        lines = [f"sensitivity ({len(self.layers)} layers, {len(self.point_db)} of {len(self.point_size)} quantization "
                 f"points measured, {self.samples} samples{bound}, {self.seconds:.1f}s; all int8: "
                 f"{self.all_int8_db:.1f} dB; per layer: its points' noises added)",
                 f"{'#':>3}  {'layer':<40} {'op':<18} {'alone dB':>9} {'kept float dB':>14} {'MACs':>12}"]
        for i, x in enumerate(self.layers[:top], 1):
            kept = "-" if x.kept_float_db is None else f"{x.kept_float_db:.1f}"
            alone = "-" if x.alone_db is None else f"{x.alone_db:.1f}"
            lines.append(f"{i:>3}  {x.name[-40:]:<40} {x.op_type:<18} {alone:>9} {kept:>14} {x.macs:>12,}")
        return "\n".join(lines)


def sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    ref = np.asarray(reference, dtype=np.float64)
    noise = float(np.sum((ref - np.asarray(candidate, dtype=np.float64)) ** 2))
    signal = float(np.sum(ref ** 2))
    if noise <= 0.0:
        return 200.0
    if signal <= 0.0:
        return -200.0
    return float(min(200.0, 10.0 * np.log10(signal / noise)))


def weakest_output_sqnr(reference: Outputs, candidate: Outputs) -> float:
    """The default score: per output, SQNR over all samples; the weakest output."""
    names = [n for n, v in reference[0].items() if np.asarray(v).dtype.kind == "f"]
    out = 200.0
    for n in names:
        r = np.concatenate([np.ravel(x[n]) for x in reference])
        c = np.concatenate([np.ravel(x[n]) for x in candidate])
        out = min(out, sqnr_db(r, c))
    return out


# ----------------------------------------------------------------- the twin
def _shapes(model: Any) -> Dict[str, Tuple[int, ...]]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    out: Dict[str, Tuple[int, ...]] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            out[vi.name] = tuple(int(d.dim_value) for d in dims)
    return out


def _macs(node: Any, shapes: Mapping[str, Tuple[int, ...]], inits: Mapping[str, Any]) -> int:
    """Multiply-accumulates of a weighted layer (0 for the others: they cost little next to convolutions)."""
    if node.op_type not in WEIGHTED or len(node.input) < 2:
        return 0
    w = inits.get(node.input[1])
    wdims = tuple(w.dims) if w is not None else shapes.get(node.input[1])
    out = shapes.get(node.output[0])
    if not wdims or not out:
        return 0
    if node.op_type == "Conv":
        return int(np.prod(out)) * int(np.prod(wdims[1:]))
    if node.op_type == "ConvTranspose":
        inp = shapes.get(node.input[0])
        return int(np.prod(inp)) * int(np.prod(wdims[1:])) if inp else 0
    a = shapes.get(node.input[0])
    if not a:
        return 0
    trans_a = any(at.name == "transA" and at.i for at in node.attribute)
    k = a[-2] if trans_a and len(a) >= 2 else a[-1]
    return int(np.prod(out)) * int(k)


def find_layers(model: Any, float_tensors: Mapping[str, str]) -> List[Layer]:
    """The named nodes an int8 build quantizes and that read or write a float activation."""
    shapes = _shapes(model)
    inits = {t.name: t for t in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if node.op_type not in QUANTIZABLE or not node.name or (node.domain or "") not in ("", "ai.onnx"):
            continue
        if not any(i in float_tensors for i in node.input) and not any(o in float_tensors for o in node.output):
            continue
        out.append(Layer(node.name, node.op_type, _macs(node, shapes, inits)))
    return out


def _weight_axis(node: Any, rank: int) -> Optional[int]:
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":
        return 1 if rank > 1 else None
    if node.op_type == "Gemm":
        trans_b = any(a.name == "transB" and a.i for a in node.attribute)
        return 0 if trans_b else 1
    if node.op_type == "MatMul" and rank >= 2:
        return rank - 1
    return None


def fake_quant_weight(w: np.ndarray, axis: Optional[int]) -> np.ndarray:
    """Symmetric int8 (−127..127) per channel along ``axis`` (per tensor when None), dequantized."""
    w = w.astype(np.float32)
    if axis is None:
        amax = np.max(np.abs(w)) if w.size else 0.0
    else:
        red = tuple(i for i in range(w.ndim) if i != axis)
        amax = np.max(np.abs(w), axis=red, keepdims=True)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    return (np.clip(np.round(w / scale), -127, 127) * scale).astype(np.float32)


class Twin:
    """The switchable fake-quantized model; ``run(feed, quantized)`` with any set of layer names.

    The switches are per *quantization point*, not per layer: one per
    activation tensor a layer reads or writes (``t:NAME``) and one per layer
    weight (``w:LAYER``).  A layer in int8 turns on its weight and every
    tensor it touches; a tensor stays float only when every layer touching it
    is float — as on the targets, where an int8 layer's input and output are
    quantized whatever precision its neighbour runs in.  :meth:`run_points`
    switches points directly: what makes the per-point sensitivity, and the
    additive noise model the mixed-precision order is built on, possible.
    """

    def __init__(self, model: Any, act_ranges: Mapping[str, Tuple[float, float]], layers: Sequence[Layer],
                 float_tensors: Optional[Iterable[str]] = None) -> None:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper

        self.layers = list(layers)
        by_name = {x.name: x for x in self.layers}
        m = onnx.ModelProto()
        m.CopyFrom(model)
        g = m.graph
        inits = {t.name: t for t in g.initializer}
        new_nodes: List[Any] = []
        made: Set[str] = set()
        extra_inits: List[Any] = []
        #: quantization point → its boolean graph input
        self.points: Dict[str, str] = {}
        #: layer → the points it turns on when quantized
        self.layer_points: Dict[str, Tuple[str, ...]] = {}
        #: point → elements per sample (tensors; 0 when unknown) — what a conversion at it costs
        shapes = _shapes(model)

        def flag(point: str) -> str:
            if point not in self.points:
                self.points[point] = f"__ek_flag_{len(self.points)}"
                g.input.append(helper.make_tensor_value_info(self.points[point], TensorProto.BOOL, []))
            return self.points[point]

        def qparams(t: str) -> Tuple[str, str]:
            lo, hi = act_ranges[t]
            scale = np.float32((hi - lo) / 255.0)
            zp = np.uint8(np.clip(np.round(-lo / scale), 0, 255))
            s_name, z_name = f"{t}__ek_scale", f"{t}__ek_zp"
            if s_name not in made:
                made.add(s_name)
                extra_inits.extend([numpy_helper.from_array(np.array(scale, np.float32), s_name),
                                    numpy_helper.from_array(np.array(zp, np.uint8), z_name)])
            return s_name, z_name

        def select(flag_name: str, t: str, out: str, params: Optional[Tuple[str, str]],
                   wq: Optional[str] = None) -> Any:
            """If(flag): the quantized value, else the float one; only the taken branch runs."""
            if params is not None:
                then_nodes = [helper.make_node("QuantizeLinear", [t, *params], [f"{out}__q"]),
                              helper.make_node("DequantizeLinear", [f"{out}__q", *params], [f"{out}__t"])]
            else:
                then_nodes = [helper.make_node("Identity", [wq], [f"{out}__t"])]
            then_g = helper.make_graph(then_nodes, f"{out}__then", [],
                                       [helper.make_tensor_value_info(f"{out}__t", TensorProto.FLOAT, None)])
            else_g = helper.make_graph([helper.make_node("Identity", [t], [f"{out}__e"])], f"{out}__else", [],
                                       [helper.make_tensor_value_info(f"{out}__e", TensorProto.FLOAT, None)])
            return helper.make_node("If", [flag_name], [out], then_branch=then_g, else_branch=else_g)

        # a tensor a layer writes is quantized once, at its producer, for every reader; one written by
        # another op (or a graph input) once, before the first layer that reads it
        layer_written = {o for node in g.node if node.name in by_name for o in node.output if o in act_ranges}
        quantized_as: Dict[str, str] = {}
        for idx, node in enumerate(g.node):
            if node.name not in by_name:
                new_nodes.append(node)
                continue
            pts: List[str] = []
            for j, t in enumerate(list(node.input)):
                if not t:
                    continue
                if t in act_ranges:
                    pts.append(f"t:{t}")
                    if t not in layer_written:
                        if t not in quantized_as:
                            quantized_as[t] = f"{t}__ek_q"
                            new_nodes.append(select(flag(f"t:{t}"), t, quantized_as[t], qparams(t)))
                        node.input[j] = quantized_as[t]
                elif j == 1 and node.op_type in WEIGHTED and t in inits and \
                        inits[t].data_type == TensorProto.FLOAT:
                    w = numpy_helper.to_array(inits[t])
                    wq, sel = f"{t}__ek_wq{idx}", f"{t}__ek_sel{idx}"
                    extra_inits.append(numpy_helper.from_array(fake_quant_weight(w, _weight_axis(node, w.ndim)), wq))
                    new_nodes.append(select(flag(f"w:{node.name}"), t, sel, None, wq))
                    node.input[j] = sel
                    pts.append(f"w:{node.name}")
            raw_outs = []
            for j, o in enumerate(list(node.output)):
                if o in act_ranges:
                    raw = f"{o}__ek_raw"
                    node.output[j] = raw
                    raw_outs.append((raw, o))
                    pts.append(f"t:{o}")
            new_nodes.append(node)
            for raw, o in raw_outs:  # the layer's output takes the tensor's calibrated range
                new_nodes.append(select(flag(f"t:{o}"), raw, o, qparams(o)))
            for pt in pts:
                flag(pt)
            self.layer_points[node.name] = tuple(dict.fromkeys(pts))
        del g.node[:]
        g.node.extend(new_nodes)
        g.initializer.extend(extra_inits)
        # Q/DQ of a tensor must follow its producer: the appended Q/DQ pairs were added lazily, so sort
        _toposort(g)
        self.point_size = {p: (int(np.prod(shapes[p[2:]])) if p.startswith("t:") and p[2:] in shapes else 0)
                           for p in self.points}
        # what one sample through the twin costs, counted on the source model (every weighted node, not only
        # the candidate layers): the unit of the sweep's deterministic budget
        src_inits = {t.name: t for t in model.graph.initializer}
        self.macs_per_sample = max(MIN_MACS_PER_SAMPLE,
                                   sum(_macs(n, shapes, src_inits) for n in model.graph.node))
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # hundreds of short runs back to back: threads that spin between them burn a core they then do not
        # use (measured on YOLOv8n: half the CPU time per run, the same wall time on an idle host)
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # the float activations the divergence report walks: those with ranges, unless given (a weights-only
        # twin rounds no activation, yet its layer-wise divergence is still read on them)
        self.model, self.source = m, model
        self.float_tensors = {t: "" for t in (act_ranges if float_tensors is None else float_tensors)}
        self.session = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
        self.outputs = [o.name for o in self.session.get_outputs()]
        self._inputs = {i.name for i in self.session.get_inputs()}

    def active_points(self, quantized: Iterable[str]) -> Set[str]:
        """The points a set of int8 layers turns on."""
        return {p for n in quantized for p in self.layer_points.get(n, ())}

    def flag_feed(self, quantized: Iterable[str] = (), *,
                  points: Optional[Iterable[str]] = None) -> Dict[str, np.ndarray]:
        """The flag inputs for int8 ``quantized`` layers (or exactly ``points``)."""
        on = set(points) if points is not None else self.active_points(quantized)
        return {f: np.array(p in on) for p, f in self.points.items()}

    def run(self, feed: Mapping[str, np.ndarray], quantized: Iterable[str]) -> Dict[str, np.ndarray]:
        return self._run(feed, self.flag_feed(quantized))

    def run_all(self, feeds: Sequence[Mapping[str, np.ndarray]], quantized: Iterable[str]) -> Outputs:
        flags = self.flag_feed(quantized)
        return [self._run(f, flags) for f in feeds]

    def run_points(self, feeds: Sequence[Mapping[str, np.ndarray]], points: Iterable[str]) -> Outputs:
        flags = self.flag_feed(points=points)
        return [self._run(f, flags) for f in feeds]

    def _run(self, feed: Mapping[str, np.ndarray], flags: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        values = self.session.run(self.outputs, {**{k: v for k, v in feed.items() if k in self._inputs}, **flags})
        return dict(zip(self.outputs, values))


def _toposort(g: Any) -> None:
    """Order nodes so every input is produced before it is read (graph inputs and initializers are ready)."""
    ready: Set[str] = {i.name for i in g.input} | {t.name for t in g.initializer} | {""}
    pending = list(g.node)
    ordered: List[Any] = []
    while pending:
        rest = []
        for n in pending:
            if all(i in ready for i in n.input):
                ordered.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):  # a subgraph-captured name or a cycle: keep the remaining order
            ordered.extend(rest)
            break
        pending = rest
    del g.node[:]
    g.node.extend(ordered)


# ----------------------------------------------------------------- the sweep
def _db(noise: float) -> float:
    if noise <= 0.0:
        return 200.0
    return float(min(200.0, -10.0 * np.log10(noise)))


def analyse(twin: Twin, feeds: Sequence[Mapping[str, np.ndarray]], *, score: ScoreFn = weakest_output_sqnr,
            bound: Optional[SweepBound] = None, reference: Optional[Outputs] = None) -> SensitivityReport:
    """Measure every quantization point's damage alone, within ``bound``; rank the layers most damaging first.

    One evaluation per point (each activation tensor a layer touches, each
    layer weight), every kept feed once, plus the fp32 reference and the
    all-int8 run.  A layer's "alone" figure adds its points' noises; its
    "kept in float" figure takes from the all-int8 noise the points no other
    layer turns on.  The bound is counted, not timed: the feeds are cut
    (evenly, never below 2) until every point fits the MAC budget, and if
    even 2 do not fit, the points left (those of the lightest layers: they
    are measured heaviest first) stay unmeasured — the same on any host.  The
    wall-time guard only stops a sweep on a host far slower than planned, and
    says so.
    """
    bound = bound if bound is not None else SweepBound()
    t0 = time.perf_counter()
    feeds = list(feeds)
    names = [x.name for x in twin.layers]
    touching: Dict[str, List[str]] = {}
    for n in names:
        for p in twin.layer_points.get(n, ()):
            touching.setdefault(p, []).append(n)
    points = [p for p in twin.points if p in touching]
    per_sample = float(twin.macs_per_sample)
    budget = bound.gmacs * 1e9
    evals = len(points) + 2  # every point, the fp32 reference, all int8
    fit = int(budget // (per_sample * evals)) if per_sample > 0 else len(feeds)
    keep = min(len(feeds), max(2, fit))
    if keep < len(feeds):
        idx = sorted({(k * len(feeds)) // keep for k in range(keep)})
        feeds = [feeds[i] for i in idx]
        reference = [reference[i] for i in idx] if reference is not None else None
    spent = 0.0
    ref = reference if reference is not None else twin.run_all(feeds, ())
    spent += 0.0 if reference is not None else per_sample * len(feeds)
    all_q = twin.run_all(feeds, names)
    spent += per_sample * len(feeds)
    all_db = score(ref, all_q)
    by_macs = {x.name: x.macs for x in twin.layers}
    # the heaviest layers' points first: when the budget runs out, the unmeasured ones are the cheap ones
    order = sorted(points, key=lambda p: (-max((by_macs[n] for n in touching.get(p, [])), default=0),
                                          -twin.point_size.get(p, 0)))
    point_db: Dict[str, float] = {}
    stopped_by: Optional[str] = None
    one = per_sample * len(feeds)
    for p in order:
        if spent + one > budget * (1 + 1e-9):
            stopped_by = "evaluation budget"
            break
        if bound.wall_guard_s > 0 and time.perf_counter() - t0 > bound.wall_guard_s:
            stopped_by = "wall-time guard"
            warnings.warn(f"the sensitivity sweep hit its wall-time guard of {bound.wall_guard_s:g} s after "
                          f"{len(point_db)} of {len(order)} quantization points: this host is far slower than the "
                          "sweep's MAC budget assumes, so the layer ranking (and the package) now depends on it; "
                          "raise mixed_precision.time_budget_s or lower mixed_precision.sweep_gmacs", stacklevel=2)
            break
        point_db[p] = score(ref, twin.run_points(feeds, (p,)))
        spent += one
    noise = {p: 10.0 ** (-db / 10.0) for p, db in point_db.items()}
    n_all = 10.0 ** (-all_db / 10.0)
    alone: Dict[str, Optional[float]] = {}
    kept: Dict[str, Optional[float]] = {}
    for n in names:
        mine = [p for p in twin.layer_points.get(n, ()) if p in noise]
        if not mine:
            alone[n] = kept[n] = None
            continue
        alone[n] = _db(sum(noise[p] for p in mine))
        only_mine = sum(noise[p] for p in mine if touching.get(p) == [n])
        kept[n] = _db(max(n_all - only_mine, n_all * 1e-3))
    ranked = sorted((n for n in names if alone[n] is not None), key=lambda n: alone[n]) + \
        [n for n in names if alone[n] is None]
    by = {x.name: x for x in twin.layers}
    rows = tuple(LayerSensitivity(n, by[n].op_type, by[n].macs, alone[n], kept[n]) for n in ranked)
    record = {"kind": "twin evaluation MACs (model MACs per sample x samples x evaluations)",
              "budget_gmacs": round(bound.gmacs, 6), "spent_gmacs": round(spent / 1e9, 6),
              "macs_per_sample": int(per_sample), "wall_guard_s": bound.wall_guard_s, "stopped_by": stopped_by}
    return SensitivityReport(layers=rows, all_int8_db=all_db, samples=len(feeds),
                             seconds=time.perf_counter() - t0, truncated=len(point_db) < len(points),
                             point_db=point_db, layer_points=dict(twin.layer_points),
                             point_size=dict(twin.point_size), bound=record)

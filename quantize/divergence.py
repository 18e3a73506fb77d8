"""Layer-wise divergence: SQNR of every activation along the graph, and the first layer that departs.

Two float models that share tensor names are run side by side on the same
feeds: the fp32 model and an int8 one (the switchable twin with every layer
quantized, or a target's Q/DQ graph, whose float tensors keep the source's
names).  Tensors are taken :data:`CHUNK` at a time as extra outputs and each
sample's values are folded into running signal and noise sums at once, so
memory holds one chunk of one sample, never every intermediate of a large
model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

#: tensors fetched per session
CHUNK = 32

#: run(feed, tensor names) → name → value
RunFn = Callable[[Mapping[str, np.ndarray], Sequence[str]], Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class TensorDivergence:
    tensor: str
    producer: str
    op_type: str
    sqnr_db: float

    def to_json(self) -> Dict[str, Any]:
        return {"tensor": self.tensor, "layer": self.producer, "op_type": self.op_type,
                "sqnr_db": round(self.sqnr_db, 2)}


@dataclass(frozen=True)
class DivergenceReport:
    rows: Tuple[TensorDivergence, ...]
    samples: int
    threshold_db: float
    what: str

    @property
    def first_departure(self) -> Optional[TensorDivergence]:
        """The first tensor along the graph below the threshold (None when every one holds it)."""
        return next((r for r in self.rows if r.sqnr_db < self.threshold_db), None)

    @property
    def largest_drop(self) -> Optional[TensorDivergence]:
        """The tensor whose SQNR falls most below its inputs' (where the damage is done)."""
        best, drop, prev = None, 0.0, None
        for r in self.rows:
            if prev is not None and prev - r.sqnr_db > drop:
                best, drop = r, prev - r.sqnr_db
            prev = r.sqnr_db
        return best

    def to_json(self, limit: int = 400) -> Dict[str, Any]:
        first = self.first_departure
        drop = self.largest_drop
        return {"what": self.what, "samples": self.samples, "threshold_db": self.threshold_db,
                "first_departure": first.to_json() if first else None,
                "largest_drop": drop.to_json() if drop else None,
                "tensors": len(self.rows), "rows": [r.to_json() for r in self.rows[:limit]]}

    def table(self, limit: int = 40) -> str:
        first = self.first_departure
        lines = [f"layer-wise divergence ({self.what}; {self.samples} samples; threshold {self.threshold_db:g} dB)"]
        lines.append("first layer below the threshold: " + (f"{first.producer} ({first.op_type}) {first.sqnr_db:.1f} dB"
                                                             if first else "none"))
        rows = list(self.rows)
        if len(rows) > limit:  # keep the start, the departure and the end in view
            keep = set(range(limit // 2)) | set(range(len(rows) - limit // 4, len(rows)))
            if first is not None:
                i = rows.index(first)
                keep |= set(range(max(0, i - 2), min(len(rows), i + limit // 4)))
            shown = sorted(keep)
        else:
            shown = list(range(len(rows)))
        last = -1
        for i in shown:
            if i != last + 1:
                lines.append("   …")
            r = rows[i]
            mark = " <" if r is first else ""
            lines.append(f"{i + 1:>4}  {r.producer[-38:]:<38} {r.op_type:<16} {r.sqnr_db:7.1f} dB{mark}")
            last = i
        return "\n".join(lines)


def graph_tensors(model: Any, floats: Mapping[str, str]) -> List[Tuple[str, str, str]]:
    """(tensor, producing node, op type) of every float activation, in graph order."""
    out = []
    for node in model.graph.node:
        for o in node.output:
            if o in floats:
                out.append((o, node.name or o, node.op_type))
    return out


def layerwise(run_ref: RunFn, run_cand: RunFn, tensors: Sequence[Tuple[str, str, str]],
              feeds: Sequence[Mapping[str, np.ndarray]], *, threshold_db: float, what: str,
              chunk: int = CHUNK) -> DivergenceReport:
    signal: Dict[str, float] = {}
    noise: Dict[str, float] = {}
    names = [t for t, _, _ in tensors]
    for start in range(0, len(names), chunk):
        part = names[start:start + chunk]
        for feed in feeds:
            r = run_ref(feed, part)
            c = run_cand(feed, part)
            for n in part:
                a = np.asarray(r[n], dtype=np.float64)
                b = np.asarray(c[n], dtype=np.float64)
                if a.shape != b.shape:
                    continue
                signal[n] = signal.get(n, 0.0) + float(np.sum(a * a))
                noise[n] = noise.get(n, 0.0) + float(np.sum((a - b) ** 2))
    rows = []
    for t, producer, op in tensors:
        if t not in signal:
            continue
        s, e = signal[t], noise[t]
        db = 200.0 if e <= 0 else (-200.0 if s <= 0 else float(min(200.0, 10 * np.log10(s / e))))
        rows.append(TensorDivergence(t, producer, op, db))
    return DivergenceReport(tuple(rows), len(feeds), threshold_db, what)


def session_runner(model: Any, *, extra_feeds: Optional[Mapping[str, np.ndarray]] = None,
                   basic: bool = False) -> RunFn:
    """A RunFn over an ONNX model: one session per distinct set of requested names (cached)."""
    import onnx
    import onnxruntime as ort

    cache: Dict[Tuple[str, ...], Any] = {}

    def run(feed: Mapping[str, np.ndarray], names: Sequence[str]) -> Mapping[str, np.ndarray]:
        key = tuple(names)
        if key not in cache:
            cache.clear()  # one chunk's session at a time
            m = onnx.ModelProto()
            m.CopyFrom(model)
            del m.graph.output[:]
            for n in names:
                m.graph.output.append(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None))
            so = ort.SessionOptions()
            so.log_severity_level = 3
            if basic:
                so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
            sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
            cache[key] = (sess, {i.name for i in sess.get_inputs()})
        sess, inputs = cache[key]
        full = {**{k: v for k, v in feed.items() if k in inputs}, **{k: v for k, v in (extra_feeds or {}).items()
                                                                     if k in inputs}}
        return dict(zip(names, sess.run(list(names), full)))
    return run


def of_twin(twin: Any, feeds: Sequence[Mapping[str, np.ndarray]], *, threshold_db: float,
            quantized: Optional[Sequence[str]] = None) -> DivergenceReport:
    """The twin with ``quantized`` layers (all by default) against the twin with none (= fp32)."""
    on = set(quantized if quantized is not None else [x.name for x in twin.layers])
    flags_off = twin.flag_feed(())
    flags_on = twin.flag_feed(on)
    tensors = graph_tensors(twin.source, twin.float_tensors)
    return layerwise(session_runner(twin.model, extra_feeds=flags_off),
                     session_runner(twin.model, extra_feeds=flags_on),
                     tensors, feeds, threshold_db=threshold_db,
                     what=f"int8 twin ({len(on)} of {len(twin.layers)} layers quantized) vs fp32")


def of_models(reference: Any, candidate: Any, feeds: Sequence[Mapping[str, np.ndarray]], *, threshold_db: float,
              what: str) -> DivergenceReport:
    """A target's Q/DQ ONNX graph against the fp32 source, on the float tensors both have."""
    from .ranges import float_tensors

    floats = float_tensors(reference)
    # what the next layer reads: a tensor followed by QuantizeLinear → DequantizeLinear is compared after
    # them (a Clip/Relu folded into the quantized range clips only there)
    cand_float = set(float_tensors(candidate))
    q_of = {n.input[0]: n.output[0] for n in candidate.graph.node if n.op_type == "QuantizeLinear"}
    dq_of = {n.input[0]: n.output[0] for n in candidate.graph.node if n.op_type == "DequantizeLinear"}
    seen = {t: dq_of.get(q_of.get(t, ""), t) for t in cand_float}
    tensors = [t for t in graph_tensors(reference, floats) if t[0] in seen]
    names = {t: seen[t] for t, _, _ in tensors}
    run_c = session_runner(candidate)

    def run_cand(feed: Mapping[str, np.ndarray], part: Sequence[str]) -> Mapping[str, np.ndarray]:
        out = run_c(feed, [names[n] for n in part])
        return {n: out[names[n]] for n in part}
    return layerwise(session_runner(reference), run_cand, tensors, feeds, threshold_db=threshold_db, what=what)

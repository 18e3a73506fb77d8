"""Per-tensor activation statistics and range choice from the shared calibration feeds.

:func:`collect` runs the fp32 model through onnxruntime on the calibration
feeds with the tensors of interest as extra outputs, one sample at a time,
and keeps only running statistics per tensor (min, max, and a fixed-bin
histogram filled in a second pass), so a large model's intermediates are
never all held at once.  :func:`choose` turns one tensor's statistics into a
quantization range by one of four rules:

* ``minmax``: the observed range;
* ``percentile``: clip the tails beyond the given percentile of the values;
* ``entropy``: the clipping threshold of ``|x|`` whose 128-level quantized
  histogram has the smallest KL divergence from the clipped one (the
  TensorRT calibration rule), intersected with the observed range;
* ``mse``: the shrink of the observed range with the smallest expected squared
  rounding + clipping error under an 8-bit affine grid.

Outputs of ops with a bounded codomain (Sigmoid, HardSigmoid, Softmax: [0, 1];
Tanh: [-1, 1]) get that natural range whatever the data showed: a calibration
set that never saturated them would otherwise clip real inputs.  Percentile,
entropy and MSE need a populated histogram: below
:data:`MIN_HISTOGRAM_SAMPLES` samples they fall back to min-max with a warning
naming the count.
"""
from __future__ import annotations

import enum
import warnings
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from edgekit._validate import coerce_enum

#: histogram resolution of every tensor (TensorRT and onnxruntime use 2048 too)
BINS = 2048
#: fewer calibration samples than this make tail-based rules (percentile, entropy, mse) guesswork
MIN_HISTOGRAM_SAMPLES = 16

#: op type → the range its output can take, whatever its input
NATURAL_RANGES: Mapping[str, Tuple[float, float]] = {
    "Sigmoid": (0.0, 1.0),
    "HardSigmoid": (0.0, 1.0),
    "Softmax": (0.0, 1.0),
    "LogSoftmax": (-np.inf, 0.0),  # only the upper end is natural; the lower one comes from data
    "Tanh": (-1.0, 1.0),
}


class RangeMethod(str, enum.Enum):
    """How one tensor's quantization range is chosen from its statistics."""

    MINMAX = "minmax"
    PERCENTILE = "percentile"
    ENTROPY = "entropy"
    MSE = "mse"

    @classmethod
    def parse(cls, value: "str | RangeMethod") -> "RangeMethod":
        return coerce_enum(value, cls, "range method")


@dataclass
class TensorStats:
    """Running statistics of one tensor over the calibration samples."""

    name: str
    lo: float = np.inf
    hi: float = -np.inf
    samples: int = 0
    #: counts over [lo, hi] in :data:`BINS` equal bins (None until the second pass)
    hist: Optional[np.ndarray] = None

    def update_minmax(self, x: np.ndarray) -> None:
        if x.size:
            self.lo = min(self.lo, float(np.min(x)))
            self.hi = max(self.hi, float(np.max(x)))
        self.samples += 1

    def update_hist(self, x: np.ndarray) -> None:
        if self.hist is None:
            self.hist = np.zeros(BINS, dtype=np.int64)
        if x.size and self.hi > self.lo:
            h, _ = np.histogram(x, bins=BINS, range=(self.lo, self.hi))
            self.hist += h

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(self.lo, self.hi, BINS + 1)


def _with_zero(lo: float, hi: float) -> Tuple[float, float]:
    """Affine int8 grids represent 0 exactly (padding, ReLU outputs): the range must hold it."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo < 1e-12:
        hi = lo + 1e-6
    return float(lo), float(hi)


def _percentile_range(s: TensorStats, pct: float) -> Tuple[float, float]:
    assert s.hist is not None
    cdf = np.cumsum(s.hist) / max(1, int(s.hist.sum()))
    tail = (100.0 - pct) / 100.0
    e = s.edges
    lo_i = int(np.searchsorted(cdf, tail, side="left"))
    hi_i = int(np.searchsorted(cdf, 1.0 - tail, side="left"))
    return float(e[lo_i]), float(e[min(BINS, hi_i + 1)])


def _abs_hist(s: TensorStats) -> Tuple[np.ndarray, float]:
    """The histogram of |x| over [0, max|x|] in BINS bins (rebinned from the signed one)."""
    assert s.hist is not None
    centres = (s.edges[:-1] + s.edges[1:]) / 2
    amax = max(abs(s.lo), abs(s.hi))
    h, _ = np.histogram(np.abs(centres), bins=BINS, range=(0.0, amax), weights=s.hist.astype(np.float64))
    return h, amax


def _entropy_threshold(hist: np.ndarray, amax: float, levels: int = 128) -> float:
    """TensorRT's KL rule: the clip threshold whose ``levels``-level quantization loses least information."""
    total = hist.sum()
    if total <= 0:
        return amax
    best_i, best_kl = len(hist), np.inf
    # coarse stride keeps this O(BINS²/stride); the optimum is flat at bin resolution
    for i in range(levels, len(hist) + 1, 16):
        p = hist[:i].astype(np.float64).copy()
        p[i - 1] += hist[i:].sum()
        nz = p > 0
        # merge the i bins into `levels` groups, spread each group's mass over its non-empty bins
        groups = np.array_split(np.arange(i), levels)
        q = np.zeros(i)
        for g in groups:
            mass = hist[g].sum()
            keep = nz[g]
            if keep.any():
                q[g[keep]] = mass / keep.sum()
        q[i - 1] += 0.0
        ps, qs = p[nz] / p.sum(), q[nz] / max(q.sum(), 1e-30)
        qs = np.maximum(qs, 1e-12)
        kl = float(np.sum(ps * np.log(ps / qs)))
        if kl < best_kl:
            best_kl, best_i = kl, i
    return amax * best_i / len(hist)


def _mse_range(s: TensorStats, levels: int = 256) -> Tuple[float, float]:
    """Shrink [lo, hi] by factors in (0.2, 1] and keep the one with the least expected squared error."""
    assert s.hist is not None
    centres = (s.edges[:-1] + s.edges[1:]) / 2
    w = s.hist.astype(np.float64)
    best, best_err = (s.lo, s.hi), np.inf
    for f in np.linspace(0.2, 1.0, 81):
        lo, hi = _with_zero(s.lo * f, s.hi * f)
        scale = (hi - lo) / (levels - 1)
        zp = np.round(-lo / scale)
        q = (np.clip(np.round(centres / scale) + zp, 0, levels - 1) - zp) * scale
        err = float(np.sum(w * (centres - q) ** 2))
        if err < best_err:
            best_err, best = err, (lo, hi)
    return best


def choose(s: TensorStats, method: RangeMethod, *, percentile: float = 99.999,
           producer: Optional[str] = None) -> Tuple[float, float]:
    """One tensor's quantization range (always holding 0)."""
    if producer in NATURAL_RANGES:
        nlo, nhi = NATURAL_RANGES[producer]
        lo = s.lo if not np.isfinite(nlo) else nlo
        hi = s.hi if not np.isfinite(nhi) else nhi
        return _with_zero(lo, hi)
    if not np.isfinite(s.lo) or not np.isfinite(s.hi):
        return _with_zero(0.0, 0.0)
    if method is RangeMethod.MINMAX or s.hist is None or s.hi <= s.lo:
        return _with_zero(s.lo, s.hi)
    if method is RangeMethod.PERCENTILE:
        return _with_zero(*_percentile_range(s, percentile))
    if method is RangeMethod.ENTROPY:
        h, amax = _abs_hist(s)
        t = _entropy_threshold(h, amax)
        return _with_zero(max(s.lo, -t), min(s.hi, t))
    return _mse_range(s)


def effective_method(method: RangeMethod, samples: int, *, stacklevel: int = 2) -> RangeMethod:
    """``method``, or min-max with a warning when too few samples make a histogram rule guesswork."""
    if method is not RangeMethod.MINMAX and samples < MIN_HISTOGRAM_SAMPLES:
        warnings.warn(
            f"calibration has {samples} sample(s), too few for {method.value} ranges (they need at least "
            f"{MIN_HISTOGRAM_SAMPLES} to see the tails): using min-max ranges; give more data with --calib",
            UserWarning, stacklevel=stacklevel + 1)
        return RangeMethod.MINMAX
    return method


# ----------------------------------------------------------------- collection
def float_tensors(model: Any) -> Dict[str, str]:
    """Every float32 activation tensor (not an initializer) → the op type that produces it ("" for inputs)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    inits = {t.name for t in model.graph.initializer}
    types: Dict[str, int] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        types[vi.name] = vi.type.tensor_type.elem_type
    out: Dict[str, str] = {}
    for i in model.graph.input:
        if i.name not in inits and types.get(i.name) == onnx.TensorProto.FLOAT:
            out[i.name] = ""
    for node in model.graph.node:
        for o in node.output:
            if o and types.get(o) == onnx.TensorProto.FLOAT:
                out[o] = node.op_type
    return out


def _session_with_outputs(model: Any, names: Sequence[str]) -> Any:
    import onnx
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for n in names:
        if n not in have:
            m.graph.output.append(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def collect(model: Any, feeds: Iterable[Mapping[str, np.ndarray]], names: Sequence[str], *,
            histograms: bool = True) -> Dict[str, TensorStats]:
    """Statistics of ``names`` over ``feeds`` (two passes when ``histograms``: min/max, then counts)."""
    feeds = list(feeds)
    sess = _session_with_outputs(model, names)
    stats = {n: TensorStats(n) for n in names}
    inputs = {i.name for i in sess.get_inputs()}
    for feed in feeds:
        values = sess.run(list(names), {k: v for k, v in feed.items() if k in inputs})
        for n, v in zip(names, values):
            stats[n].update_minmax(np.asarray(v))
    if histograms:
        for feed in feeds:
            values = sess.run(list(names), {k: v for k, v in feed.items() if k in inputs})
            for n, v in zip(names, values):
                stats[n].update_hist(np.asarray(v))
    return stats


#: one tensor's range rule: a method, or (method, percentile)
Rule = Union[str, RangeMethod, Tuple[Union[str, RangeMethod], float]]


def ranges(model: Any, feeds: Sequence[Mapping[str, np.ndarray]], *, method: "str | RangeMethod" = RangeMethod.MINMAX,
           percentile: float = 99.999, per_tensor: Optional[Mapping[str, Rule]] = None,
           names: Optional[Sequence[str]] = None) -> Dict[str, Tuple[float, float]]:
    """tensor name → (lo, hi) for every float activation of ``model`` (or ``names``).

    ``per_tensor`` picks another rule — a method, or (method, percentile) — for
    some tensors (:func:`recipe_rules`: the recipe's op-type / node choice
    resolved to the tensors those nodes output).
    """
    producers = float_tensors(model)
    wanted = list(names) if names is not None else list(producers)
    base = effective_method(RangeMethod.parse(method), len(feeds), stacklevel=2)
    chosen = {n: (base, percentile) for n in wanted}
    for n, rule in (per_tensor or {}).items():
        if n in chosen:
            m, pct = rule if isinstance(rule, tuple) else (rule, percentile)
            chosen[n] = (effective_method(RangeMethod.parse(m), len(feeds), stacklevel=2), float(pct))
    need_hist = any(m is not RangeMethod.MINMAX for m, _ in chosen.values())
    stats = collect(model, feeds, wanted, histograms=need_hist)
    return {n: choose(stats[n], m, percentile=pct, producer=producers.get(n)) for n, (m, pct) in chosen.items()}


def recipe_rules(model: Any, recipe: Any, *, everything: bool = False) -> Dict[str, Tuple[RangeMethod, float]]:
    """Activation tensor → (method, percentile) for the outputs of every node whose recipe config picks
    a rule other than the recipe's own (``everything``: for every node output and graph input, e.g. when
    the quantizer that consumes them cannot compute the recipe's method itself).

    A node's rule covers the tensors it outputs — where its activation
    quantization sits — and, when its output goes only through a Relu/Clip,
    that activation's outputs too: quantizers fold such an activation into the
    producer's range, so the folded tensor is the one that takes the rule.
    """
    base = (RangeMethod.parse(recipe.method.value), recipe.percentile)

    def key(node: Any) -> str:  # how a recipe names a node (an unnamed one by its first output)
        return node.name or (node.output[0] if node.output else node.op_type)

    def rule_of(node: Any) -> Tuple[RangeMethod, float]:
        method, pct = recipe.range_rule(key(node), node.op_type)
        return RangeMethod.parse(method.value), float(pct)

    consumers: Dict[str, List[Any]] = {}
    for node in model.graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    out: Dict[str, Tuple[RangeMethod, float]] = {}
    for node in model.graph.node:
        rule = rule_of(node)
        if rule == base:
            continue
        for o in (o for o in node.output if o):
            out[o] = rule
            readers = consumers.get(o, [])
            if readers and all(c.op_type in ("Relu", "Clip") for c in readers):
                out.update({t: rule for c in readers if rule_of(c) == base for t in c.output if t})
    inits = {t.name for t in model.graph.initializer}
    g = recipe.global_config  # graph inputs have no node: the whole model's rule
    in_rule = (RangeMethod.parse((g.method or recipe.method).value),
               float(g.percentile if g.percentile is not None else recipe.percentile))
    if in_rule != base or everything:
        out.update({i.name: in_rule for i in model.graph.input if i.name not in inits})
    if everything:
        for t in (o for node in model.graph.node for o in node.output if o):
            out.setdefault(t, base)
    return out


def describe(r: Mapping[str, Tuple[float, float]]) -> List[Dict[str, Any]]:
    return [{"tensor": n, "min": round(lo, 6), "max": round(hi, 6)} for n, (lo, hi) in r.items()]


def recipe_for_samples(recipe: Any, samples: int) -> Any:
    """``recipe``, with min-max ranges (and a warning naming the count) when ``samples`` is too few for its method."""
    import dataclasses

    from .recipe import CalibrationMethod

    if recipe.method is CalibrationMethod.MINMAX:
        return recipe
    chosen = effective_method(RangeMethod.parse(recipe.method.value), samples, stacklevel=3)
    if chosen is RangeMethod.MINMAX:
        return dataclasses.replace(recipe, method=CalibrationMethod.MINMAX)
    return recipe


def natural_range_overrides(model: Any, overrides: Mapping[str, List[Dict[str, Any]]]) -> Dict[str, List[Dict[str, Any]]]:
    """onnxruntime ``TensorQuantOverrides`` plus ``rmin``/``rmax`` for outputs of bounded ops (see
    :data:`NATURAL_RANGES`); a tensor the recipe already overrides keeps the recipe's settings."""
    out = {k: list(v) for k, v in overrides.items()}
    for node in model.graph.node:
        rng = NATURAL_RANGES.get(node.op_type)
        if rng is None or (node.domain or "") not in ("", "ai.onnx") or not np.all(np.isfinite(rng)):
            continue
        for o in node.output:
            if o and o not in out:
                out[o] = [{"rmin": np.float32(rng[0]), "rmax": np.float32(rng[1])}]
    return out

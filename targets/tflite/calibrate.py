"""Activation ranges for int8: run the fp32 TFLite model itself over the calibration feeds.

Measuring the lowered model (rather than the ONNX source) gives a range for
every tensor the int8 model will have — including those the lowering made
(transposes, the steps of a decomposed LayerNorm) — addressed by tensor
index.  The builtin kernels run with ``experimental_preserve_all_tensors``
(no delegate: XNNPACK would hide intermediates).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np

from edgekit.errors import CalibrationError

from .ir import Subgraph

Range = Tuple[float, float]


#: histogram bins per tensor for percentile calibration
BINS = 2048


def collect_ranges(model: bytes, graph: Subgraph, feeds: Iterable[Mapping[str, np.ndarray]],
                   progress: Optional[Callable[[int], None]] = None,
                   percentile: Optional[float] = None) -> Dict[int, Range]:
    """Per float tensor (min, max) over the feeds; with ``percentile`` (the recipe's
    ``method: percentile``) each range is clipped to that percentile of ``|x|``, from a
    second pass that histograms ``|x|`` over ``[0, max|x|]``."""
    feeds = list(feeds)
    ranges = _minmax(model, graph, feeds, progress)
    if percentile is None:
        return ranges
    return _clip_to_percentile(model, feeds, ranges, percentile)


def _interpreter(model: bytes) -> Tuple[Any, Dict[str, Any]]:
    from ai_edge_litert import interpreter as litert

    interp = litert.Interpreter(
        model_content=model,
        experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        experimental_preserve_all_tensors=True,
    )
    interp.allocate_tensors()
    return interp, {d["name"]: d for d in interp.get_input_details()}


def _feed(interp: Any, inputs: Mapping[str, Any], feed: Mapping[str, np.ndarray]) -> None:
    for name, d in inputs.items():
        if name not in feed:
            raise CalibrationError(f"calibration feed has no input {name!r} (it has {sorted(feed)})")
        value = np.asarray(feed[name])
        if tuple(value.shape) != tuple(d["shape"]):
            raise CalibrationError(f"calibration input {name!r}: shape {list(value.shape)}, the model takes "
                                   f"{list(d['shape'])}")
        interp.set_tensor(d["index"], value.astype(d["dtype"], copy=False))
    interp.invoke()


def _clip_to_percentile(model: bytes, feeds: List[Mapping[str, np.ndarray]], ranges: Dict[int, Range],
                        percentile: float) -> Dict[int, Range]:
    interp, inputs = _interpreter(model)
    top = {i: max(abs(lo), abs(hi)) for i, (lo, hi) in ranges.items()}
    hist = {i: np.zeros(BINS, np.int64) for i in ranges if top[i] > 0}
    for feed in feeds:
        _feed(interp, inputs, feed)
        for i, h in hist.items():
            h += np.histogram(np.abs(interp.get_tensor(i)), bins=BINS, range=(0.0, top[i]))[0]
    out = dict(ranges)
    for i, h in hist.items():
        cdf = np.cumsum(h) / max(int(h.sum()), 1)
        k = int(np.searchsorted(cdf, percentile / 100.0))
        thr = top[i] * min(k + 1, BINS) / BINS
        lo, hi = ranges[i]
        out[i] = (max(lo, -thr), min(hi, thr))
    return out


def _minmax(model: bytes, graph: Subgraph, feeds: List[Mapping[str, np.ndarray]],
            progress: Optional[Callable[[int], None]]) -> Dict[int, Range]:
    interp, inputs = _interpreter(model)
    watched = [t.index for t in graph.tensors if t.data is None and t.dtype == "float32"]
    lo: Dict[int, float] = {i: np.inf for i in watched}
    hi: Dict[int, float] = {i: -np.inf for i in watched}
    n = 0
    for feed in feeds:
        _feed(interp, inputs, feed)
        for i in watched:
            a = interp.get_tensor(i)
            if a.size:
                lo[i] = min(lo[i], float(np.min(a)))
                hi[i] = max(hi[i], float(np.max(a)))
        n += 1
        if progress is not None:
            progress(n)
    if n == 0:
        raise CalibrationError("int8 needs calibration data: pass --calib DIR|FILE.npz")
    return {i: (lo[i], hi[i]) for i in watched if np.isfinite(lo[i])}



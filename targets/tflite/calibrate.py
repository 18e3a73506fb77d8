"""Activation ranges for int8: run the fp32 TFLite model itself over the calibration feeds.

Measuring the lowered model (rather than the ONNX source) gives a range for
every tensor the int8 model will have — including those the lowering made
(transposes, the steps of a decomposed LayerNorm) — addressed by tensor
index.  The builtin kernels run with ``experimental_preserve_all_tensors``
(no delegate: XNNPACK would hide intermediates).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np

from edgekit.errors import CalibrationError

from .ir import Subgraph

if TYPE_CHECKING:  # pragma: no cover
    from edgekit.quantize.ranges import TensorStats

Range = Tuple[float, float]


def collect_ranges(model: bytes, graph: Subgraph, feeds: Iterable[Mapping[str, np.ndarray]],
                   progress: Optional[Callable[[int], None]] = None, *, method: str = "minmax",
                   percentile: float = 99.999, rules: Optional[Mapping[int, Tuple[Any, float]]] = None
                   ) -> Dict[int, Range]:
    """Per float tensor (lo, hi) over the feeds, by the shared range rules of
    :mod:`edgekit.quantize.ranges`: ``method`` / ``percentile`` for every tensor, ``rules``
    (tensor index → (method, percentile): the recipe's per-op choices) for some.  Min-max is the
    observed range; the histogram rules (percentile, entropy, mse) take a second pass that fills
    each tensor's histogram over its observed range, only for the tensors that need one."""
    from edgekit.quantize.ranges import RangeMethod, choose, effective_method

    feeds = list(feeds)
    stats = _minmax(model, graph, feeds, progress)
    base = (effective_method(RangeMethod.parse(method), len(feeds), stacklevel=2), float(percentile))
    chosen = {i: base for i in stats}
    for i, (m, pct) in (rules or {}).items():
        if i in chosen:
            chosen[i] = (effective_method(RangeMethod.parse(m), len(feeds), stacklevel=2), float(pct))
    need = [i for i, (m, _) in chosen.items() if m is not RangeMethod.MINMAX and stats[i].hi > stats[i].lo]
    if need:
        interp, inputs = _interpreter(model)
        for feed in feeds:
            _feed(interp, inputs, feed)
            for i in need:
                stats[i].update_hist(interp.get_tensor(i))
    return {i: (s.lo, s.hi) if chosen[i][0] is RangeMethod.MINMAX else choose(s, chosen[i][0], percentile=chosen[i][1])
            for i, s in stats.items()}


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


def _minmax(model: bytes, graph: Subgraph, feeds: List[Mapping[str, np.ndarray]],
            progress: Optional[Callable[[int], None]]) -> Dict[int, "TensorStats"]:
    from edgekit.quantize.ranges import TensorStats

    interp, inputs = _interpreter(model)
    stats = {t.index: TensorStats(t.name) for t in graph.tensors if t.data is None and t.dtype == "float32"}
    n = 0
    for feed in feeds:
        _feed(interp, inputs, feed)
        for i, st in stats.items():
            a = interp.get_tensor(i)
            if a.size:
                st.lo = min(st.lo, float(np.min(a)))
                st.hi = max(st.hi, float(np.max(a)))
            st.samples += 1
        n += 1
        if progress is not None:
            progress(n)
    if n == 0:
        raise CalibrationError("int8 needs calibration data: pass --calib DIR|FILE.npz")
    return {i: st for i, st in stats.items() if np.isfinite(st.lo)}

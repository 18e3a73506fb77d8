"""Activation ranges for int8: run the fp32 TFLite model itself over the calibration feeds.

Measuring the lowered model (rather than the ONNX source) gives a range for
every tensor the int8 model will have — including those the lowering made
(transposes, the steps of a decomposed LayerNorm) — addressed by tensor
index.  The builtin kernels run with ``experimental_preserve_all_tensors``
(no delegate: XNNPACK would hide intermediates).
"""
from __future__ import annotations

from typing import Callable, Dict, Iterable, Mapping, Optional, Tuple

import numpy as np

from edgekit.errors import CalibrationError

from .ir import Subgraph

Range = Tuple[float, float]


def collect_ranges(model: bytes, graph: Subgraph, feeds: Iterable[Mapping[str, np.ndarray]],
                   progress: Optional[Callable[[int], None]] = None) -> Dict[int, Range]:
    from ai_edge_litert import interpreter as litert

    interp = litert.Interpreter(
        model_content=model,
        experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        experimental_preserve_all_tensors=True,
    )
    interp.allocate_tensors()
    inputs = {d["name"]: d for d in interp.get_input_details()}
    watched = [t.index for t in graph.tensors if t.data is None and t.dtype == "float32"]
    lo: Dict[int, float] = {i: np.inf for i in watched}
    hi: Dict[int, float] = {i: -np.inf for i in watched}
    n = 0
    for feed in feeds:
        for name, d in inputs.items():
            if name not in feed:
                raise CalibrationError(f"calibration feed has no input {name!r} (it has {sorted(feed)})")
            value = np.asarray(feed[name])
            if tuple(value.shape) != tuple(d["shape"]):
                raise CalibrationError(f"calibration input {name!r}: shape {list(value.shape)}, the model takes "
                                       f"{list(d['shape'])}")
            interp.set_tensor(d["index"], value.astype(d["dtype"], copy=False))
        interp.invoke()
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



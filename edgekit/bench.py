"""Latency benchmark of a package through ``Model.infer`` (used by ``edgekit bench``)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

import numpy as np

from .manifest import TensorSpec

DEFAULT_ITERATIONS = 100


def synthetic_feed(inputs: "tuple[TensorSpec, ...]", seed: int = 0) -> Dict[str, np.ndarray]:
    """Deterministic inputs with the package's shapes and dtypes."""
    rng = np.random.default_rng(seed)
    feed = {}
    for t in inputs:
        dt = np.dtype(t.dtype)
        if dt.kind == "f":
            feed[t.name] = rng.standard_normal(t.shape).astype(dt)
        elif dt.kind in "iu":
            info = np.iinfo(dt)
            feed[t.name] = rng.integers(max(info.min, -128), min(info.max, 127) + 1, size=t.shape).astype(dt)
        else:
            feed[t.name] = np.zeros(t.shape, dtype=dt)
    return feed


def summarize(times_s: "list[float]") -> Dict[str, float]:
    a = np.asarray(times_s) * 1e3
    return {
        "iterations": int(a.size),
        "median_ms": float(np.median(a)),
        "mean_ms": float(a.mean()),
        "min_ms": float(a.min()),
        "p90_ms": float(np.percentile(a, 90)),
        "p99_ms": float(np.percentile(a, 99)),
        "throughput_ips": float(1e3 / np.median(a)),
    }


def benchmark_model(
    model: Any,
    *,
    warmup: int = 10,
    iterations: Optional[int] = None,
    duration: Optional[float] = None,
    progress: Optional[Callable[[str, int, int], None]] = None,
) -> Dict[str, Any]:
    feed = synthetic_feed(model.manifest.inputs)
    for _ in range(warmup):
        model.infer(feed)
    times = []
    total = iterations if duration is None else 0
    n = iterations or DEFAULT_ITERATIONS
    deadline = time.perf_counter() + duration if duration is not None else None
    i = 0
    while (deadline is None and i < n) or (deadline is not None and time.perf_counter() < deadline):
        t0 = time.perf_counter()
        model.infer(feed)
        times.append(time.perf_counter() - t0)
        i += 1
        if progress is not None and (i % 10 == 0 or i == n):
            progress("benchmark", i, total or 0)
    return summarize(times)


def benchmark_package(
    package: Union[str, Path],
    *,
    runtime: Optional[str] = None,
    warmup: int = 10,
    iterations: Optional[int] = None,
    duration: Optional[float] = None,
    progress: Optional[Callable[[str, int, int], None]] = None,
    **runtime_options: Any,
) -> Dict[str, Any]:
    from .model import load

    with load(package, runtime=runtime, **runtime_options) as m:
        stats = benchmark_model(m, warmup=warmup, iterations=iterations, duration=duration, progress=progress)
        stats["runtime"] = m.runner.name
        stats["precision"] = m.manifest.precision
        stats["target"] = m.manifest.target
        stats["options"] = {k: v for k, v in m.runner.options.items()}
    stats["package"] = str(package)
    return stats

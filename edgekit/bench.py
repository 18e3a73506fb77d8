"""Benchmark packages on this device (``edgekit bench``): what a user deploying them asks.

Per package: load time (open, verify checksums, create the runtime session),
first-inference time (often 10-100x a steady call: lazy allocation, kernel
selection, engine builds), then ``warmup`` untimed calls, then timed calls.
Throughput is measured, ``iterations / wall time`` of the timed loop, never
derived from the median.  Peak memory is the process's peak resident set
during load + run (Linux: ``VmHWM`` after resetting it; elsewhere the
lifetime peak, said so).  With ``image=`` an end-to-end mode times
decode + preprocess, infer and postprocess apart, on that image.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from .manifest import TensorSpec

DEFAULT_ITERATIONS = 100
ProgressFn = Callable[[str, int, int], None]


def synthetic_feed(inputs: "Sequence[TensorSpec]", seed: int = 0) -> Dict[str, np.ndarray]:
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


def summarize(times_s: Sequence[float], wall_s: Optional[float] = None) -> Dict[str, Any]:
    """Percentiles of per-call times; throughput from the loop's wall time when given."""
    a = np.asarray(times_s, dtype=np.float64) * 1e3
    wall = float(wall_s) if wall_s is not None else float(a.sum() / 1e3)
    return {
        "iterations": int(a.size),
        "wall_s": round(wall, 6),
        "throughput_ips": float(a.size / wall) if wall > 0 else None,
        "median_ms": float(np.median(a)),
        "mean_ms": float(a.mean()),
        "min_ms": float(a.min()),
        "max_ms": float(a.max()),
        "std_ms": float(a.std()),
        "p90_ms": float(np.percentile(a, 90)),
        "p99_ms": float(np.percentile(a, 99)),
    }


# ----------------------------------------------------------------- memory
def _proc_status_kb(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status", "r", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakMemory:
    """Peak resident memory of this process over a span (MiB)."""

    def __init__(self) -> None:
        # Linux: writing 5 to clear_refs resets VmHWM to the current RSS, so the peak is this span's
        self.scope = "process lifetime"
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
                f.write("5")
            self.scope = "this benchmark"
        except OSError:
            pass
        self.start_mib = self.rss_mib()

    @staticmethod
    def rss_mib() -> Optional[float]:
        kb = _proc_status_kb("VmRSS")
        return kb / 1024 if kb is not None else None

    def peak_mib(self) -> Optional[float]:
        kb = _proc_status_kb("VmHWM")
        if kb is not None:
            return kb / 1024
        try:
            import resource

            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
        except (ImportError, OSError):
            return None


# ----------------------------------------------------------------- loops
def _timed_loop(call: Callable[[], Any], *, iterations: Optional[int], duration: Optional[float],
                progress: Optional[ProgressFn], stage: str) -> Dict[str, Any]:
    times: List[float] = []
    n = iterations or DEFAULT_ITERATIONS
    total = 0 if duration is not None else n
    clock = time.perf_counter
    start = clock()
    deadline = start + duration if duration is not None else None
    while (deadline is None and len(times) < n) or (deadline is not None and clock() < deadline):
        t0 = clock()
        call()
        times.append(clock() - t0)
        if progress is not None and (len(times) % 10 == 0 or len(times) == n):
            progress(stage, len(times), total)
    wall = clock() - start
    return summarize(times, wall)


def benchmark_model(
    model: Any,
    *,
    warmup: int = 10,
    iterations: Optional[int] = None,
    duration: Optional[float] = None,
    image: Any = None,
    progress: Optional[ProgressFn] = None,
) -> Dict[str, Any]:
    """Time ``model.infer`` (and with ``image``, the end-to-end ``predict`` split by stage)."""
    from .postprocess import postprocess

    if image is not None:
        feed, _ = model._feeds(image)  # the real preprocessed tensor: realistic for data-dependent kernels
    else:
        feed = synthetic_feed(model.manifest.inputs)
    t0 = time.perf_counter()
    model.infer(feed)
    first = time.perf_counter() - t0
    for _ in range(warmup):
        model.infer(feed)
    stats: Dict[str, Any] = {"first_inference_ms": first * 1e3, "warmup": warmup,
                             "feed": "the preprocessed image" if image is not None else "synthetic (random) tensors"}
    stats.update(_timed_loop(lambda: model.infer(feed), iterations=iterations, duration=duration,
                             progress=progress, stage="infer"))
    if image is None:
        return stats

    # end to end: decode + preprocess, infer, postprocess, each timed; the sum is one predict()
    parts: Dict[str, List[float]] = {"preprocess": [], "infer": [], "postprocess": []}
    clock = time.perf_counter

    def one() -> None:
        a = clock()
        feeds, transform = model._feeds(image)
        b = clock()
        outputs = model.runner.infer(feeds)
        c = clock()
        postprocess(model.manifest.postprocess, outputs, transform=transform, labels=model.labels)
        d = clock()
        parts["preprocess"].append(b - a)
        parts["infer"].append(c - b)
        parts["postprocess"].append(d - c)

    for _ in range(min(warmup, 3)):
        one()
    for v in parts.values():
        v.clear()
    e2e = _timed_loop(one, iterations=iterations, duration=duration, progress=progress, stage="end to end")
    e2e["stages_median_ms"] = {k: float(np.median(v) * 1e3) for k, v in parts.items()}
    e2e["image"] = str(image)
    stats["end_to_end"] = e2e
    return stats


def benchmark_package(
    package: Union[str, "os.PathLike[str]"],
    *,
    runtime: Optional[str] = None,
    warmup: int = 10,
    iterations: Optional[int] = None,
    duration: Optional[float] = None,
    image: Any = None,
    progress: Optional[ProgressFn] = None,
    **runtime_options: Any,
) -> Dict[str, Any]:
    """Load ``package`` (timed), then :func:`benchmark_model`; memory is this process's peak over both."""
    from .model import load

    mem = PeakMemory()
    t0 = time.perf_counter()
    m = load(package, runtime=runtime, **runtime_options)
    load_s = time.perf_counter() - t0
    try:
        rss_loaded = mem.rss_mib()
        stats = benchmark_model(m, warmup=warmup, iterations=iterations, duration=duration, image=image,
                                progress=progress)
        stats = {
            "package": str(package),
            "name": m.manifest.name,
            "runtime": m.runner.name,
            "target": getattr(m.manifest, "target", None),
            "precision": getattr(m.manifest.precision, "value", m.manifest.precision),
            "options": {k: v for k, v in dict(getattr(m.runner, "options", {}) or {}).items()},
            "load_ms": load_s * 1e3,
            **stats,
            "memory": {
                "peak_rss_mib": mem.peak_mib(),
                "rss_before_load_mib": mem.start_mib,
                "rss_after_load_mib": rss_loaded,
                "peak_scope": mem.scope,
            },
        }
    finally:
        m.close()
    return stats


def benchmark_packages(packages: Sequence[Union[str, "os.PathLike[str]"]], **kwargs: Any) -> List[Dict[str, Any]]:
    """:func:`benchmark_package` for each, one after another in this process (same conditions)."""
    return [benchmark_package(p, **kwargs) for p in packages]


def _target_name(stats: Mapping[str, Any]) -> str:
    t = stats.get("target")
    return str(getattr(t, "name", None) or (t.get("name") if isinstance(t, dict) else t) or "-")


def table(rows: Sequence[Mapping[str, Any]]) -> List[str]:
    """The comparison table, one line per package."""
    head = (f"{'package':<34} {'target':<12} {'prec':<5} {'load ms':>8} {'first ms':>9} {'median':>8} {'p90':>8} "
            f"{'p99':>8} {'thr/s':>8} {'n':>5} {'wall s':>7} {'peak MiB':>9}")
    lines = [head, "-" * len(head)]
    for s in rows:
        name = Path(str(s["package"])).name
        lines.append(
            f"{name[:34]:<34} {_target_name(s)[:12]:<12} {str(s.get('precision'))[:5]:<5} {s['load_ms']:>8.1f} "
            f"{s['first_inference_ms']:>9.2f} {s['median_ms']:>8.3f} {s['p90_ms']:>8.3f} {s['p99_ms']:>8.3f} "
            f"{s['throughput_ips']:>8.1f} {s['iterations']:>5} {s['wall_s']:>7.2f} "
            f"{(s['memory'].get('peak_rss_mib') or float('nan')):>9.1f}"
        )
        e = s.get("end_to_end")
        if e:
            st = e["stages_median_ms"]
            lines.append(
                f"{'  end to end':<34} {'':<12} {'':<5} {'':>8} {'':>9} {e['median_ms']:>8.3f} {e['p90_ms']:>8.3f} "
                f"{e['p99_ms']:>8.3f} {e['throughput_ips']:>8.1f} {e['iterations']:>5} {e['wall_s']:>7.2f}   "
                f"(preprocess {st['preprocess']:.2f} + infer {st['infer']:.2f} + postprocess {st['postprocess']:.2f} ms)"
            )
    return lines

"""Timing helper shared by the benchmark scripts (run them as `python benchmarks/NAME.py`)."""
from __future__ import annotations

import statistics
import time
from typing import Callable, Dict


def interleaved(fns: Dict[str, Callable[[], object]], rounds: int, inner: int, stat: str = "median") -> Dict[str, float]:
    """Seconds per call of each function, timed in alternating rounds so that
    machine noise (other processes, frequency changes, cache state) hits every
    contender alike.  ``stat`` is ``median`` over the rounds, or ``min`` (the
    fastest round: on a shared machine other processes only ever add time)."""
    times: Dict[str, list] = {k: [] for k in fns}
    order = list(fns.items())
    for r in range(rounds):
        # reverse the order every other round: whoever runs second must not always pay for it
        for name, fn in (order if r % 2 == 0 else order[::-1]):
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            times[name].append((time.perf_counter() - t0) / inner)
    pick = min if stat == "min" else statistics.median
    return {k: pick(v) for k, v in times.items()}

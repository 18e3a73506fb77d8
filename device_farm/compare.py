"""Compare two packages measured on the same device fingerprint: p90 with a confidence interval.

Latency samples of every COMPLETE job of a package on that fingerprint are pooled; the p90 ratio
B/A gets a percentile-bootstrap 95% interval (resampling each package's queries).  An interval
that straddles 1.0 means the farm cannot tell the two apart on that device.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .errors import FarmError


def latencies_ms(result: Dict[str, Any]) -> np.ndarray:
    return np.asarray((result.get("results") or {}).get("latencies_ns") or [], dtype=np.float64) / 1e6


def p90_ci(a: np.ndarray, b: np.ndarray, *, confidence: float = 0.95, resamples: int = 2000,
           seed: int = 0) -> Dict[str, float]:
    """p90 of each, the ratio b/a and its bootstrap interval."""
    rng = np.random.default_rng(seed)
    ia = rng.integers(0, a.size, size=(resamples, a.size))
    ib = rng.integers(0, b.size, size=(resamples, b.size))
    ra = np.percentile(a[ia], 90, axis=1)
    rb = np.percentile(b[ib], 90, axis=1)
    ratio = rb / ra
    lo, hi = np.percentile(ratio, [100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2])
    pa, pb = float(np.percentile(a, 90)), float(np.percentile(b, 90))
    return {"p90_a_ms": pa, "p90_b_ms": pb, "ratio": pb / pa, "ci_low": float(lo), "ci_high": float(hi),
            "confidence": confidence, "n_a": int(a.size), "n_b": int(b.size)}


def compare(rows: Sequence[Dict[str, Any]], sha_a: str, sha_b: str,
            fingerprint: Optional[str] = None) -> List[Dict[str, Any]]:
    """One comparison per fingerprint both packages were measured on (or just ``fingerprint``)."""
    by: Dict[str, Dict[str, List[np.ndarray]]] = {}
    for r in rows:
        key = "a" if r["sha256"].startswith(sha_a) else "b" if r["sha256"].startswith(sha_b) else None
        if key is None or (fingerprint and r["fingerprint"] != fingerprint):
            continue
        lat = latencies_ms(r["result"])
        if lat.size:
            by.setdefault(r["fingerprint"], {"a": [], "b": []})[key].append(lat)
    out = []
    for fp, d in sorted(by.items()):
        if d["a"] and d["b"]:
            doc = p90_ci(np.concatenate(d["a"]), np.concatenate(d["b"]))
            doc["fingerprint"] = fp
            doc["verdict"] = ("B faster" if doc["ci_high"] < 1 else "B slower" if doc["ci_low"] > 1
                              else "no difference at this confidence")
            out.append(doc)
    if not out:
        raise FarmError(f"no device fingerprint has COMPLETE results of both {sha_a[:12]} and {sha_b[:12]}; "
                        "run both packages on the same device first")
    return out

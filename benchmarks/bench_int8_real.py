"""int8 on the real-model suite: SQNR with the default floor, the mix kept in float, int8 vs fp32 speed.

    python benchmarks/bench_int8_real.py                       # every real model × onnxruntime, openvino
    python benchmarks/bench_int8_real.py --models mtcnn-onet --targets onnxruntime --json out.json
    python benchmarks/bench_int8_real.py --timing yolov8n-nudenet-320 --samples 100

One row per model × target: the first build's SQNR (all int8), the final
SQNR after automatic mixed precision, whether the default floor holds, how
many layers stayed in float and the share of MACs left in int8, the int8/fp32
latency ratio measured by the build in the same runner side by side (fp32
package pinned to f32), and the build time with the mixed-precision stage's
share.  ``--timing`` measures the sensitivity sweep plus the twin's
mixed-precision search alone on one model with N calibration samples (the
issue's "≤ 5 minutes on a 2-core machine" figure).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "samples" / "real_models"))

import data as _data  # noqa: E402
import fetch as _fetch  # noqa: E402
import registry  # noqa: E402
import suite  # noqa: E402


def row(model: Any, target: str, out_dir: Path, calib: "suite.CalibrationCache") -> Dict[str, Any]:
    from edgekit.targets.pipeline import build_package

    t0 = time.perf_counter()
    r: Dict[str, Any] = {"model": model.name, "target": target}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = build_package(_fetch.fetch_one(model.name), target=target, precision="int8",
                                output=out_dir / f"{model.name}-{target}-int8.edgepkg", name=model.name,
                                allow_gate_failure=True, **suite.build_kwargs(model, calib.get(model.calibration)))
    except Exception as exc:  # noqa: BLE001 - a failed build is a row of the table
        r.update(error=f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}", seconds=time.perf_counter() - t0)
        return r
    m = res.manifest
    v, q = m["verification"], m.get("quantization") or {}
    mp = q.get("mixed_precision") or {}
    sp = q.get("speed") or {}
    stages = {s.name: s.seconds for s in res.timings}
    r.update(
        first_sqnr_db=(mp.get("attempts") or [{"sqnr_db": v["min_sqnr_db"]}])[0]["sqnr_db"],
        sqnr_db=v["min_sqnr_db"], weakest=v.get("weakest"), passed=v["passed"], floor=v["gates"]["min_sqnr_db"],
        float_layers=mp.get("float_layers", 0), quantizable_layers=mp.get("quantizable_layers"),
        int8_mac_share=mp.get("int8_mac_share", 1.0 if not mp else None),
        speed_ratio=sp.get("ratio"), int8_ms=sp.get("int8_median_ms"), fp32_ms=sp.get("fp32_median_ms"),
        seconds=round(time.perf_counter() - t0, 1), mixed_seconds=stages.get("mixed precision"),
        top1=v.get("top1_agreement"), samples=v["samples"], detection=v.get("detection"),
        parts={p["name"]: p["sqnr_db"] for p in v.get("parts") or []},
    )
    return r


def fmt(r: Dict[str, Any]) -> str:
    head = f"{r['model']:<20} {r['target']:<12}"
    if "error" in r:
        return f"{head} FAILED {r['error']}"
    share = r.get("int8_mac_share")
    mix = f"{r['float_layers']}/{r.get('quantizable_layers') or '-'} float" + \
        (f", {100 * share:.1f}% MACs int8" if share is not None else "")
    sp = f"int8/fp32 {r['speed_ratio']:.2f} ({r['int8_ms']:.2f}/{r['fp32_ms']:.2f} ms)" if r.get("speed_ratio") else \
        "speed -"
    d = r.get("detection")
    boxes = f"  boxes vs fp32 ({d['reference_detections']}): recall {d['recall']:.3f}, precision {d['precision']:.3f}" \
        if d else ""
    return (f"{head} {r['first_sqnr_db']:6.1f} → {r['sqnr_db']:6.1f} dB {'pass' if r['passed'] else 'MISS'} "
            f"(floor {r['floor']:g}, weakest {r['weakest']})  {mix}  {sp}  {r['seconds']:.0f}s "
            f"(mixed {r.get('mixed_seconds') or 0:.0f}s){boxes}  parts "
            + ", ".join(f"{k} {v:.1f}" for k, v in (r.get("parts") or {}).items()))


def timing(name: str, samples: int) -> Dict[str, Any]:
    """Sensitivity sweep + the twin's mixed-precision search alone, with ``samples`` calibration samples."""
    import dataclasses

    from edgekit.quantize import mixed as _mixed
    from edgekit.quantize import sensitivity as _sens
    from edgekit.targets import int8_stage, stages

    model = next(m for m in registry.MODELS if m.name == name)
    calib = suite.CalibrationCache(Path("/tmp/edgekit-bench-int8") / "calibration")
    if model.calibration == "people":  # enough scenes for `samples` calibration feeds after the held-out fifth
        folder = _data.people_folder(Path("/tmp/edgekit-bench-int8") / f"people-{samples}",
                                     count=int(samples * 1.25 + 0.5))
    else:
        folder = calib.get(model.calibration)
    kw = suite.build_kwargs(model, folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        req = stages.resolve_request(_fetch.fetch_one(name), target="onnxruntime", precision="int8", **kw)
        req = dataclasses.replace(req, recipe=dataclasses.replace(req.recipe, num_samples=samples))
        src = stages.load(req)
        canon = stages.canonicalize_stage(req, src)
        checked = stages.check(req, canon)
        data = stages.calibrate(req, canon, checked)
    n_params = sum(int(__import__("numpy").prod(t.dims)) for t in canon.model.model.graph.initializer)
    cfg = _mixed.MixedPrecisionConfig()
    t0, c0 = time.perf_counter(), time.process_time()
    twin, _ = int8_stage.build_twin(canon, data, data.spec.recipe)
    t_twin = time.perf_counter() - t0
    score = int8_stage._scorer(checked, canon)
    judge = data.verification if data.verification is not None else data.calibration
    feeds = int8_stage._evenly(judge.feeds, cfg.samples)
    rep = _sens.analyse(twin, feeds, score=score, bound=cfg.sweep_bound())
    t_sens = time.perf_counter() - t0
    floor = stages.DEFAULT_MIN_SQNR_DB[stages.Precision.INT8]
    pl = int8_stage.plan(twin, rep, feeds, score, floor + cfg.margin_db, cfg)
    order, k, tried = pl.order, pl.k, pl.tried
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    macs = {x.name: x.macs for x in twin.layers}
    return {"model": name, "params": n_params, "calibration_samples": len(data.calibration),
            "layers": len(twin.layers), "points": len(twin.points), "points_measured": len(rep.point_db),
            "sweep_samples": rep.samples, "ranges_and_twin_s": round(t_twin, 1),
            "sensitivity_s": round(t_sens, 1), "sensitivity_plus_search_s": round(total, 1),
            "process_cpu_s": round(cpu, 1), "cores": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2),
            "twin_all_int8_db": round(rep.all_int8_db, 2), "float_layers_for_floor": k,
            "twin_db": round(tried[k], 2) if k in tried else None,
            "int8_mac_share": _mixed.int8_mac_share(macs, [c.name for c in order[:k]]),
            "twin_evaluations": len(tried)}


def main(argv: Any = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*")
    ap.add_argument("--targets", nargs="*", default=["onnxruntime", "openvino"])
    ap.add_argument("--out-dir", type=Path, default=Path("/tmp/edgekit-bench-int8"))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--timing", help="time sensitivity + mixed-precision search on this model instead")
    ap.add_argument("--samples", type=int, default=100)
    a = ap.parse_args(argv)
    if a.timing:
        doc = timing(a.timing, a.samples)
        print(json.dumps(doc, indent=1))
        if a.json:
            a.json.write_text(json.dumps(doc, indent=1))
        return 0
    a.out_dir.mkdir(parents=True, exist_ok=True)
    calib = suite.CalibrationCache(a.out_dir / "calibration")
    rows: List[Dict[str, Any]] = []
    for m, t in suite.int8_cases(a.models, a.targets):
        r = row(m, t, a.out_dir, calib)
        rows.append(r)
        print(fmt(r), flush=True)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Quantization-friendly rewrites (targets/rewrites.py) on the real-model suite.

    python benchmarks/bench_rewrites.py                      # fp32 exactness on all 7, int8 on those rewritten
    python benchmarks/bench_rewrites.py --models ppocrv4-det --targets onnxruntime,openvino --ablate

Part 1, per model: what each rewrite found and changed (node counts before and
after), and fp32 exactness — the rewritten canonical graph against the
canonical graph without rewrites, both on onnxruntime, on the model's real
calibration inputs (the weakest output's SQNR; the goal is ≥ 120 dB).

Part 2, per model that any rewrite changed × target: the first int8 build's
SQNR vs fp32 on the held-out real inputs (mixed precision off, so the figure
is the quantizer's own) without rewrites, with all of them, and with
``--ablate`` each one alone.  The build pipeline reads
``edgekit.targets.rewrites.DEFAULT`` when it canonicalizes an int8 build;
this script sets it per row.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "samples" / "real_models"))

import fetch as _fetch  # noqa: E402
import registry  # noqa: E402
import suite  # noqa: E402


def _canonical(model: Any, rewrites: Sequence[str]) -> Any:
    from edgekit import preprocess as pre
    from edgekit.targets.canonicalize import canonicalize

    b = dict(model.build)
    steps = pre.steps_from_json(b["preprocess"]) if "preprocess" in b else ()
    layout = next((s.order.value for s in steps if isinstance(s, pre.Layout)), None)
    size = b.get("size") or next((tuple(s["size"]) for s in b.get("preprocess", []) if s.get("op") == "resize"), None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return canonicalize(_fetch.fetch_one(model.name), input_shapes=b.get("input_shapes"), size=size,
                            layout=layout, rewrites=rewrites), steps


def _feeds(model: Any, canon: Any, steps: Any, calib: "suite.CalibrationCache") -> List[Dict[str, np.ndarray]]:
    from edgekit.preprocess import Preprocessor
    from edgekit.quantize.calibration import load_feeds

    data = calib.get(model.calibration)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cs = load_feeds(data, canon.inputs, Preprocessor(steps) if steps else None)
    return [dict(f) for f in cs.feeds]


def _run(proto: Any, feeds: List[Dict[str, np.ndarray]]) -> List[List[np.ndarray]]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return [sess.run(None, f) for f in feeds]


def _sqnr(ref: List[List[np.ndarray]], got: List[List[np.ndarray]]) -> float:
    """The weakest output's SQNR (dB) over all feeds together."""
    worst = np.inf
    for k in range(len(ref[0])):
        r = np.concatenate([np.asarray(a[k], np.float64).ravel() for a in ref])
        g = np.concatenate([np.asarray(a[k], np.float64).ravel() for a in got])
        noise = float(np.sum((r - g) ** 2))
        worst = min(worst, np.inf if noise == 0 else 10 * np.log10(float(np.sum(r ** 2)) / noise))
    return float(worst)


def exactness(model: Any, calib: "suite.CalibrationCache") -> Dict[str, Any]:
    from edgekit.targets import rewrites

    plain, steps = _canonical(model, ())
    t0 = time.perf_counter()
    done, _ = _canonical(model, rewrites.DEFAULT)
    seconds = time.perf_counter() - t0
    feeds = _feeds(model, plain, steps, calib)
    fired = [n for n in done.notes if n.startswith("int8 rewrite")]
    return {"model": model.name, "nodes_before": len(plain.model.graph.node), "nodes_after": len(done.model.graph.node),
            "rewrites": fired, "fp32_sqnr_db": round(_sqnr(_run(plain.model, feeds), _run(done.model, feeds)), 1),
            "samples": len(feeds), "canonicalize_seconds_with_rewrites": round(seconds, 2)}


def int8_row(model: Any, target: str, enabled: Sequence[str], out: Path,
             calib: "suite.CalibrationCache") -> Dict[str, Any]:
    from edgekit.targets import rewrites
    from edgekit.targets.pipeline import build_package

    saved = rewrites.DEFAULT
    rewrites.DEFAULT = tuple(enabled)
    r: Dict[str, Any] = {"model": model.name, "target": target, "rewrites": "+".join(enabled) or "none"}
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = build_package(_fetch.fetch_one(model.name), target=target, precision="int8", mixed_precision=False,
                                output=out / f"{model.name}-{target}-{r['rewrites']}.edgepkg", name=model.name,
                                allow_gate_failure=True, **suite.build_kwargs(model, calib.get(model.calibration)))
        v = res.manifest["verification"]
        sp = (res.manifest.get("quantization") or {}).get("speed") or {}
        r.update(sqnr_db=round(v["min_sqnr_db"], 2), weakest=v.get("weakest"), top1=v.get("top1_agreement"),
                 samples=v["samples"], int8_ms=sp.get("int8_median_ms"), fp32_ms=sp.get("fp32_median_ms"))
    except Exception as exc:  # noqa: BLE001 - a failed build is a row
        r["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    finally:
        rewrites.DEFAULT = saved
    r["seconds"] = round(time.perf_counter() - t0, 1)
    return r


def main(argv: Sequence[str] = ()) -> int:
    from edgekit.targets import rewrites

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="", help="comma-separated names (default: all)")
    ap.add_argument("--targets", default="onnxruntime,openvino,tflite")
    ap.add_argument("--ablate", action="store_true", help="also each rewrite alone")
    ap.add_argument("--no-int8", action="store_true")
    ap.add_argument("--json", default="")
    args = ap.parse_args(list(argv) or None)
    names = [x for x in args.models.split(",") if x]
    models = [m for m in registry.MODELS if not names or m.name in names]
    installed = suite.installed_targets()
    targets = [t for t in args.targets.split(",") if t and t in installed]
    report: Dict[str, Any] = {"exactness": [], "int8": []}
    with tempfile.TemporaryDirectory(prefix="bench-rewrites-") as tmp:
        calib = suite.CalibrationCache(Path(tmp) / "data")
        for m in models:
            row = exactness(m, calib)
            report["exactness"].append(row)
            print(json.dumps(row), flush=True)
        if not args.no_int8:
            changed = [m for m, row in zip(models, report["exactness"]) if row["rewrites"]]
            variants: List[Sequence[str]] = [(), rewrites.DEFAULT]
            if args.ablate:
                variants += [(n,) for n in rewrites.DEFAULT]
            for m in changed:
                for t in targets:
                    for enabled in variants:
                        row = int8_row(m, t, enabled, Path(tmp), calib)
                        report["int8"].append(row)
                        print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

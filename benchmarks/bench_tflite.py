"""tflite target: XNNPACK fp32 / fp16 / int8 latency vs onnxruntime fp32, side by side, plus parity.

For each model: an onnxruntime fp32 package (the baseline) and tflite fp32,
fp16 and int8 packages are built, loaded with the same ``threads``, and
``Model.infer`` is timed in interleaved rounds in this one process (see
``_timing.interleaved``).  Printed per model: the medians, the ratios to
onnxruntime fp32 (< 1 = faster), and each package's verification figures
(weakest-output SQNR vs the fp32 source; top-1 agreement where the model
classifies).  The bundled model is verified on its 1,000 validation images.

    python benchmarks/bench_tflite.py [--threads 1] [--models NAME,...] [--real]

``--real`` adds the real pretrained models of ``samples/real_models`` (fetched
once into the cache; see samples/real_models/fetch.py).  Prints figures;
asserts nothing.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

import edgekit
from edgekit.bench import synthetic_feed
from edgekit.targets.pipeline import build_package
from edgekit.targets.quickstart import bundled_model

from _timing import interleaved  # noqa: E402  (benchmarks/ is the script's folder)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from models.meta import GOLDEN_MODELS  # noqa: E402

VARIANTS = (("ort-fp32", "onnxruntime", "fp32"), ("tfl-fp32", "tflite", "fp32"), ("tfl-fp16", "tflite", "fp16"),
            ("tfl-int8", "tflite", "int8"))


def _random_calibration(inputs: Any, n: int = 32, seed: int = 1) -> List[Dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{t.name: rng.standard_normal(t.shape).astype(np.float32) for t in inputs} for _ in range(n)]


def _cases(names: Optional[List[str]], real: bool, work: Path) -> List[Dict[str, Any]]:
    cases: List[Dict[str, Any]] = []
    b = bundled_model()
    cases.append({"name": "fashion_mnist (bundled)", "model": b["model"],
                  "kwargs": dict(preprocess=b["preprocess"], task="classify", labels=b["labels"],
                                 calibration=b["calibration"], validation=b["validation"])})
    for gm in GOLDEN_MODELS:
        cases.append({"name": gm.name, "model": gm.path,
                      "kwargs": dict(task=gm.task.value if gm.task.value != "detect" else "raw",
                                     calibration=_random_calibration(gm.inputs))})
    if real:
        sys.path.insert(0, str(ROOT / "samples" / "real_models"))
        import registry  # type: ignore[import-not-found]
        import suite  # type: ignore[import-not-found]
        from fetch import fetch_one  # type: ignore[import-not-found]

        calib = suite.CalibrationCache(work / "calibration")
        for m in registry.MODELS:
            path = fetch_one(m.name)
            cases.append({"name": m.name, "model": path,
                          "kwargs": suite.build_kwargs(m, calib.get(m.calibration))})
    if names:
        cases = [c for c in cases if c["name"].split(" ")[0] in names]
    return cases


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", type=lambda s: s.split(","), default=None)
    ap.add_argument("--real", action="store_true", help="add the real pretrained models (samples/real_models)")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--stat", choices=("median", "min"), default="median",
                    help="per-round statistic: min (best round) is robust to other processes on a shared host")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    print(f"threads={args.threads}; latency = Model.infer {args.stat} of {args.rounds} interleaved rounds (ms); "
          "ratio = / ort-fp32 (< 1 = faster)")
    header = f"{'model':<26}" + "".join(f"{v[0]:>10}" for v in VARIANTS) + \
        f"{'fp32 ×':>8}{'fp16 ×':>8}{'int8 ×':>8}   SQNR dB fp32/fp16/int8 (top-1 int8)"
    print(header)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for case in _cases(args.models, args.real, work):
            packages, figures = {}, {}
            try:
                for label, target, precision in VARIANTS:
                    kw = dict(case["kwargs"])
                    if precision != "int8" and "validation" not in kw:
                        kw.pop("calibration", None)
                    res = build_package(case["model"], target=target, precision=precision,
                                        output=work / f"{label}.edgepkg", allow_gate_failure=True, **kw)
                    packages[label] = res.path
                    figures[label] = res.package.verification
            except Exception as err:  # one model's failure is a row, not the end of the run
                print(f"{case['name']:<26} FAILED: {type(err).__name__}: {str(err).splitlines()[0][:160]}")
                continue
            models = {k: edgekit.load(p, threads=args.threads) for k, p in packages.items()}
            try:
                feeds = {k: synthetic_feed(m.manifest.inputs) for k, m in models.items()}
                for k, m in models.items():
                    for _ in range(5):
                        m.infer(feeds[k])
                inner = max(1, int(0.02 / max(1e-5, _once(models["ort-fp32"], feeds["ort-fp32"]))))
                fns = {k: (lambda m=m, f=feeds[k]: m.infer(f)) for k, m in models.items()}
                lat = interleaved(fns, args.rounds, inner, stat=args.stat)
            finally:
                for m in models.values():
                    m.close()
            base = lat["ort-fp32"]
            sq = "/".join(f"{figures[k].min_sqnr_db:.1f}" for k in ("tfl-fp32", "tfl-fp16", "tfl-int8"))
            top1 = figures["tfl-int8"].top1_agreement
            extra = f" ({100 * top1:.1f} % of {figures['tfl-int8'].samples})" if top1 is not None else ""
            print(f"{case['name']:<26}" + "".join(f"{1e3 * lat[v[0]]:>10.3f}" for v in VARIANTS)
                  + f"{lat['tfl-fp32'] / base:>8.2f}{lat['tfl-fp16'] / base:>8.2f}{lat['tfl-int8'] / base:>8.2f}   {sq}{extra}",
                  flush=True)


def _once(m: Any, feed: Any) -> float:
    import time

    t0 = time.perf_counter()
    m.infer(feed)
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()

"""Evidence for the default quality floors (edgekit.targets.stages.DEFAULT_MIN_SQNR_DB).

Builds every golden model (tests/models) and the bundled Fashion-MNIST CNN for
each installed target × precision, with the gates recorded but not enforced
(``allow_gate_failure``), and prints the weakest checked part's SQNR next to
the default floor.  Golden models are calibrated and verified on
random-normal tensors like the conformance suite (24 calibration, the
pipeline's hold-out for verification); the bundled model on its images.

    python benchmarks/quality_floors.py [--targets onnxruntime,openvino] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def _feeds(gm, n, seed):
    rng = np.random.default_rng(seed)
    return [{t.name: rng.standard_normal(t.shape).astype(np.float32) for t in gm.inputs} for _ in range(n)]


def main() -> int:
    from edgekit.errors import EdgekitError
    from edgekit.targets import TARGETS
    from edgekit.targets.pipeline import build_package
    from edgekit.targets.quickstart import bundled_model
    from edgekit.targets.stages import DEFAULT_MIN_SQNR_DB
    from models.meta import GOLDEN_MODELS

    ap = argparse.ArgumentParser()
    ap.add_argument("--targets", default="onnxruntime,openvino")
    ap.add_argument("--precisions", default="fp32,fp16,int8")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = []
    b = bundled_model()
    with tempfile.TemporaryDirectory() as tmp:
        for target in args.targets.split(","):
            tgt = TARGETS.get(target)()
            for precision in args.precisions.split(","):
                if precision not in {p.value for p in tgt.precisions}:
                    continue
                jobs = [(gm.name, dict(model=gm.path, calibration=_feeds(gm, 30, 1),
                                       task=gm.task.value if gm.task.value != "detect" else "detect")) for gm in GOLDEN_MODELS]
                jobs.append(("fashion_mnist (images)", dict(model=b["model"], calibration=b["calibration"],
                                                            validation=b["validation"], preprocess=b["preprocess"],
                                                            task="classify", labels=b["labels"])))
                for name, kw in jobs:
                    row = {"model": name, "target": target, "precision": precision}
                    try:
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            model = kw.pop("model")
                            r = build_package(model, target=target, precision=precision, allow_gate_failure=True,
                                              output=Path(tmp) / "p.edgepkg", **kw)
                        v = r.manifest["verification"]
                        row.update(weakest=v["weakest"], min_sqnr_db=v["min_sqnr_db"], floor=v["gates"]["min_sqnr_db"],
                                   passed=v["passed"], detection=v.get("detection"), samples=v["samples"])
                    except EdgekitError as exc:
                        row["error"] = " ".join(str(exc).split())[:160]
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    print(f"\n{'target':<12} {'prec':<5} {'model':<24} {'weakest part':<28} {'SQNR dB':>8} {'floor':>6}  ok")
    for r in rows:
        if "error" in r:
            print(f"{r['target']:<12} {r['precision']:<5} {r['model']:<24} error: {r['error']}")
            continue
        print(f"{r['target']:<12} {r['precision']:<5} {r['model']:<24} {r['weakest']:<28} {r['min_sqnr_db']:>8.1f} "
              f"{r['floor']:>6.0f}  {'yes' if r['passed'] else 'NO'}")
    print("default floors:", {p.value: f for p, f in DEFAULT_MIN_SQNR_DB.items()})
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

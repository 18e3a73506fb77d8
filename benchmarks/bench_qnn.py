"""qnn target figures (printed, not asserted).

1. The bundled Fashion-MNIST CNN, int8 (uint8 activations) on the simulated
   HTP vs fp32 onnxruntime on the 1,000 validation images: top-1 agreement,
   accuracy of both, SQNR, and the share of nodes placed on the HTP.
2. SQNR of the HTP-simulated outputs vs fp32 onnxruntime on every golden
   model: int8 with uint8 and uint16 activations, and fp16 (24 random-normal
   calibration samples, 6 held-out random-normal inputs, as the conformance
   suite does).

    python benchmarks/bench_qnn.py [--device snapdragon-8-gen-3] [--skip-golden]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))


def _sqnr(ref: np.ndarray, out: np.ndarray) -> float:
    noise = float(np.sum((ref.astype(np.float64) - out) ** 2))
    return 200.0 if noise == 0 else 10 * np.log10(float(np.sum(ref.astype(np.float64) ** 2)) / noise)


def bundled(device: str, out_dir: Path) -> None:
    from edgekit.targets.pipeline import build_package
    from edgekit.targets.quickstart import bundled_model

    b = bundled_model()
    t0 = time.perf_counter()
    res = build_package(b["model"], device=device, precision="int8", calibration=b["calibration"],
                        validation=b["validation"], preprocess=b["preprocess"], task="classify",
                        labels=b["labels"], output=out_dir / "fashion_mnist-qnn-int8.edgepkg", name="fashion_mnist_cnn")
    v = res.manifest["verification"]
    pl = res.manifest["target"]["details"]["placement"]
    print(f"bundled model, int8 (u8 activations, int8 per-channel weights) on the simulated HTP for {device}:")
    print(f"  validation images          {v['samples']}")
    print(f"  top-1 agreement vs fp32    {100 * v['top1_agreement']:.2f} %")
    print(f"  accuracy fp32 -> HTP int8  {100 * v['reference_accuracy']:.2f} % -> {100 * v['candidate_accuracy']:.2f} %")
    print(f"  min SQNR                   {v['min_sqnr_db']:.1f} dB")
    print(f"  nodes on HTP               {pl['htp_nodes']}/{pl['total_nodes']} "
          f"({100 * pl['htp_nodes'] / pl['total_nodes']:.0f} %), partitions {pl['partitions']}")
    print(f"  build + verify             {time.perf_counter() - t0:.1f} s; simulated-HTP median "
          f"{v['latency_ms']['artifact_median']:.2f} ms/img (a simulator, not device speed)")


def golden(out_dir: Path) -> None:
    import onnxruntime as ort

    import edgekit
    from conformance import CALIBRATION_SAMPLES, HOLDOUT_SAMPLES
    from models.meta import GOLDEN_MODELS

    variants = [
        ("int8 u8", "int8", None),
        ("int8 u16", "int8", {"global_config": {"activation_dtype": "uint16"}, "num_samples": CALIBRATION_SAMPLES}),
        ("fp16", "fp16", None),
    ]
    print()
    print("SQNR (dB) of the HTP-simulated outputs vs fp32 onnxruntime (min over outputs and 6 held-out inputs):")
    print(f"  {'model':<22}" + "".join(f"{v[0]:>11}" for v in variants) + f"{'on HTP':>10}")
    for gm in GOLDEN_MODELS:
        rng = np.random.default_rng(1)
        calib = [{t.name: rng.standard_normal(t.shape).astype(np.float32) for t in gm.inputs}
                 for _ in range(CALIBRATION_SAMPLES)]
        rng = np.random.default_rng(2)
        held = [{t.name: rng.standard_normal(t.shape).astype(np.float32) for t in gm.inputs}
                for _ in range(HOLDOUT_SAMPLES)]
        sess = ort.InferenceSession(str(gm.path), providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        refs = [sess.run(None, f) for f in held]
        cells, placed = [], ""
        for label, precision, recipe in variants:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    out = edgekit.build(gm.path, target="qnn", precision=precision, recipe=recipe,
                                        calibration=calib if precision == "int8" else None,
                                        output=out_dir / f"{gm.name}-{label.replace(' ', '_')}.edgepkg")
                with edgekit.load(out) as m:
                    pl = m.manifest.data["target"]["details"]["placement"]
                    placed = f"{pl['htp_nodes']}/{pl['total_nodes']}"
                    worst = min(_sqnr(r, m.infer(f)[n].astype(np.float32))
                                for f, rs in zip(held, refs) for n, r in zip(names, rs))
                cells.append(f"{worst:>11.1f}")
            except Exception as exc:  # report and go on: this is a table, not a test
                cells.append(f"{'error':>11}")
                print(f"    {gm.name} {label}: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
        print(f"  {gm.name:<22}" + "".join(cells) + f"{placed:>10}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="snapdragon-8-gen-3")
    ap.add_argument("--skip-golden", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-qnn-") as tmp:
        bundled(args.device, Path(tmp))
        if not args.skip_golden:
            golden(Path(tmp))


if __name__ == "__main__":
    main()

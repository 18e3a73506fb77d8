"""OpenVINO target figures (printed, not asserted; interleaved runs in one process).

1. int8 vs fp32 latency through the same edgekit runner and the same hint
   (LATENCY, one request at a time) for the bundled Fashion-MNIST CNN and the
   MobileNetV2-class golden model; ratio fp32 / int8 (target ≥ 2× for MobileNet
   on VNNI/AMX CPUs; see the printed CPU capabilities).
2. edgekit runner vs bare ``compiled_model(...)`` on the same compiled model and
   input: median ratio (target ≤ 1.03).
3. int8 vs fp32 top-1 agreement on the bundled model's 1,000 validation images
   (target ≥ 99 %), both through OpenVINO.
4. Throughput: ``infer_many`` (async queue, THROUGHPUT hint) vs a loop of ``infer``.

    python benchmarks/bench_openvino.py [--rounds 30] [--threads 0]
"""
from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path
from typing import Dict

import numpy as np

from _timing import interleaved  # noqa: E402  (benchmarks/ is the script's folder)

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--threads", type=int, default=0, help="INFERENCE_NUM_THREADS (0 = OpenVINO's default)")
    args = ap.parse_args()
    warnings.simplefilter("ignore")

    import openvino as ov

    import edgekit
    from edgekit.quantize.calibration import load_feeds
    from edgekit.targets.quickstart import bundled_model

    core = ov.Core()
    print(f"openvino {ov.get_version()}  CPU: {core.get_property('CPU', 'FULL_DEVICE_NAME')}  "
          f"capabilities {list(core.get_property('CPU', 'OPTIMIZATION_CAPABILITIES'))}")
    b = bundled_model()
    mnv2 = ROOT / "tests" / "models" / "mobilenet_v2_class.onnx"
    rng = np.random.default_rng(0)
    mnv2_calib = [{"input": rng.standard_normal((1, 3, 160, 160)).astype(np.float32)} for _ in range(64)]
    opts = {"cache_dir": "", "performance_hint": "LATENCY"}
    if args.threads:
        opts["num_threads"] = args.threads

    with tempfile.TemporaryDirectory() as tmp:
        pk: Dict[str, Path] = {}
        for prec in ("fp32", "int8"):
            pk[f"fashion_mnist {prec}"] = edgekit.build(
                b["model"], target="openvino", precision=prec, calibration=b["calibration"],
                preprocess=b["preprocess"], task="classify", labels=b["labels"],
                output=Path(tmp) / f"fm-{prec}.edgepkg")
            pk[f"mobilenet_v2_class {prec}"] = edgekit.build(
                mnv2, target="openvino", precision=prec, calibration=mnv2_calib if prec == "int8" else None,
                output=Path(tmp) / f"mnv2-{prec}.edgepkg")
        models = {k: edgekit.load(p, **opts) for k, p in pk.items()}
        try:
            # 1. int8 vs fp32, same runner and hint
            print("\n1. latency, edgekit runner, LATENCY hint (median of interleaved rounds)")
            for name in ("fashion_mnist", "mobilenet_v2_class"):
                m32, m8 = models[f"{name} fp32"], models[f"{name} int8"]
                spec = m32.manifest.inputs[0]
                feed = {spec.name: rng.standard_normal(spec.shape).astype(np.float32)}
                for _ in range(20):
                    m32.infer(feed), m8.infer(feed)
                inner = 20 if name == "fashion_mnist" else 5
                res = interleaved({"fp32": lambda: m32.infer(feed), "int8": lambda: m8.infer(feed)}, args.rounds, inner)
                s8 = m8.runner.describe()["precision_summary"]
                print(f"   {name:<20} fp32 {res['fp32'] * 1e3:8.3f} ms   int8 {res['int8'] * 1e3:8.3f} ms   "
                      f"speed-up {res['fp32'] / res['int8']:.2f}x   (int8 weighted layers running in int8: "
                      f"{s8['weighted_int8']}/{s8['weighted_layers']})")

            # 2. wrapper overhead on the same compiled model
            print("\n2. edgekit runner vs bare compiled_model(...) on the same compiled model and input")
            for key in ("fashion_mnist fp32", "mobilenet_v2_class fp32", "mobilenet_v2_class int8"):
                m = models[key]
                spec = m.manifest.inputs[0]
                feed = {spec.name: rng.standard_normal(spec.shape).astype(np.float32)}
                compiled = m.runner.compiled
                out_name = m.manifest.outputs[0].name
                np.testing.assert_allclose(compiled(feed)[compiled.output(out_name)], m.infer(feed)[out_name],
                                           rtol=1e-5, atol=1e-5)
                inner = 20 if key.startswith("fashion") else 5
                res = interleaved({"bare": lambda: compiled(feed), "edgekit": lambda: m.infer(feed)},
                                  args.rounds, inner)
                print(f"   {key:<24} bare {res['bare'] * 1e3:8.4f} ms   edgekit {res['edgekit'] * 1e3:8.4f} ms   "
                      f"ratio {res['edgekit'] / res['bare']:.3f}")

            # 3. top-1 agreement on the 1,000 validation images
            m32, m8 = models["fashion_mnist fp32"], models["fashion_mnist int8"]
            val = load_feeds(b["validation"], m32.manifest.inputs, m32._pre, class_names=m32.labels)
            t0 = time.perf_counter()
            y32 = np.array([int(np.argmax(r["logits"])) for r in m32.runner.infer_many(val.feeds)])
            y8 = np.array([int(np.argmax(r["logits"])) for r in m8.runner.infer_many(val.feeds)])
            labels = np.array(val.labels)
            print(f"\n3. fashion_mnist on {len(val)} validation images ({time.perf_counter() - t0:.2f} s): "
                  f"int8 vs fp32 top-1 agreement {np.mean(y32 == y8) * 100:.2f} %;  "
                  f"accuracy fp32 {np.mean(y32 == labels) * 100:.2f} %, int8 {np.mean(y8 == labels) * 100:.2f} %")
        finally:
            for m in models.values():
                m.close()

        # 4. throughput: async queue vs sequential
        print("\n4. mobilenet_v2_class int8, 64 inputs: THROUGHPUT hint + infer_many vs LATENCY hint + infer loop")
        with edgekit.load(pk["mobilenet_v2_class int8"], cache_dir="", performance_hint="THROUGHPUT") as mt, \
                edgekit.load(pk["mobilenet_v2_class int8"], cache_dir="", performance_hint="LATENCY") as ml:
            feeds = [{"input": rng.standard_normal((1, 3, 160, 160)).astype(np.float32)} for _ in range(64)]
            mt.runner.infer_many(feeds[:8])
            res = interleaved({"loop": lambda: [ml.infer(f) for f in feeds],
                               "infer_many": lambda: mt.runner.infer_many(feeds)}, max(3, args.rounds // 5), 1)
            d = mt.runner.describe()["compiled"]
            print(f"   loop {64 / res['loop']:.1f} img/s   infer_many {64 / res['infer_many']:.1f} img/s "
                  f"({d['num_streams']} streams, {d['optimal_requests']} requests)")

        # 5. model cache: first vs second load
        with tempfile.TemporaryDirectory() as cache:
            times = []
            for _ in range(2):
                with edgekit.load(pk["mobilenet_v2_class int8"], cache_dir=cache) as m:
                    times.append(m.runner.compile_s)
            print(f"\n5. model cache: compile_model {times[0] * 1e3:.1f} ms cold, {times[1] * 1e3:.1f} ms from the cache")


if __name__ == "__main__":
    main()

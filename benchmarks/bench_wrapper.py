"""Wrapper overhead: ``Model.infer`` vs a bare ``onnxruntime.InferenceSession.run``.

Same model file, same thread count, same input, interleaved in one process so
machine noise hits both alike.  Prints the median ratio (target ≤ 1.03).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _timing import interleaved  # noqa: E402  (benchmarks/ is the script's folder)

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "tests" / "models" / "mobilenet_v2_class.onnx"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=120)
    args = ap.parse_args()

    import onnxruntime as ort

    import edgekit

    with tempfile.TemporaryDirectory() as tmp:
        pkg = edgekit.build(args.model, target="onnxruntime", precision="fp32", output=Path(tmp) / "m.edgepkg")
        with edgekit.load(pkg, intra_op_num_threads=args.threads) as model:
            spec = model.manifest.inputs[0]
            x = np.random.default_rng(0).standard_normal(spec.shape).astype(np.float32)
            feeds = {spec.name: x}
            so = ort.SessionOptions()
            so.intra_op_num_threads = args.threads
            path = str(model.runner.root / model.manifest.entry)
            bare = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            # a second identical bare session: its ratio to the first is the noise floor of this measurement
            control = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            names = [o.name for o in bare.get_outputs()]
            np.testing.assert_allclose(bare.run(names, feeds)[0], model.infer(feeds)[names[0]], rtol=1e-5, atol=1e-5)
            for _ in range(10):
                bare.run(names, feeds)
                model.infer(feeds)
            res = interleaved(
                {"bare": lambda: bare.run(names, feeds), "edgekit": lambda: model.infer(feeds),
                 "control": lambda: control.run(names, feeds)},
                args.rounds,
                inner=5,
            )
            print(f"model {Path(args.model).name}, {args.threads} threads, input {list(spec.shape)}")
            print(f"bare InferenceSession.run  median {1e3 * res['bare']:.4f} ms")
            print(f"edgekit Model.infer        median {1e3 * res['edgekit']:.4f} ms")
            print(f"ratio Model.infer / bare   {res['edgekit'] / res['bare']:.4f}  (target ≤ 1.03)")
            print(f"noise floor: 2nd bare / bare {res['control'] / res['bare']:.4f}  (identical sessions; 1.0 ideally)")
            # the per-call cost of the checks alone, on the smallest possible work
            t0 = time.perf_counter()
            for _ in range(10000):
                model.runner._check(feeds)
            print(f"feed checks alone          {1e6 * (time.perf_counter() - t0) / 10000:.2f} µs per call")


if __name__ == "__main__":
    sys.exit(main())

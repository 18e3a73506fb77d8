"""int8 vs fp32 with the onnxruntime target: accuracy on real data and latency.

* Bundled Fashion-MNIST CNN: both packages run on the 1,000 committed
  validation images (top-1 agreement, accuracy of each, drop in points).
* Latency: ``Model.infer`` medians, interleaved in one process, same runner,
  same threads and input, for the bundled model and the MobileNetV2-class
  golden model.
Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import numpy as np

import edgekit
from edgekit.bench import synthetic_feed
from edgekit.quantize.calibration import load_feeds
from edgekit.targets.quickstart import bundled_model

from _timing import interleaved  # noqa: E402  (benchmarks/ is the script's folder)

ROOT = Path(__file__).resolve().parent.parent


def latency(models: dict, rounds: int = 30, inner: int = 20) -> dict:
    feeds = {k: synthetic_feed(m.manifest.inputs) for k, m in models.items()}
    for k, m in models.items():
        for _ in range(20):
            m.infer(feeds[k])
    return interleaved({k: (lambda m=m, f=feeds[k]: m.infer(f)) for k, m in models.items()}, rounds, inner)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    b = bundled_model()
    with tempfile.TemporaryDirectory() as tmp:
        common = dict(target="onnxruntime", preprocess=b["preprocess"], task="classify", labels=b["labels"])
        fp32 = edgekit.build(b["model"], precision="fp32", output=Path(tmp) / "fp32.edgepkg", **common)
        int8 = edgekit.build(b["model"], precision="int8", calibration=b["calibration"],
                             output=Path(tmp) / "int8.edgepkg", **common)
        opts = {"intra_op_num_threads": args.threads}
        with edgekit.load(fp32, **opts) as m32, edgekit.load(int8, **opts) as m8:
            val = load_feeds(b["validation"], m32.manifest.inputs, m32._pre)
            p32 = np.array([np.argmax(m32.infer(f)["logits"]) for f in val.feeds])
            p8 = np.array([np.argmax(m8.infer(f)["logits"]) for f in val.feeds])
            labels = np.array(val.labels)
            acc32, acc8 = (p32 == labels).mean(), (p8 == labels).mean()
            print(f"bundled model, {len(labels)} validation images:")
            print(f"  top-1 agreement int8 vs fp32  {100 * (p32 == p8).mean():.2f} %  (target ≥ 99 %)")
            print(f"  accuracy fp32 {100 * acc32:.2f} %, int8 {100 * acc8:.2f} %, drop {100 * (acc32 - acc8):+.2f} points  (target ≤ 0.5)")
            lat = latency({"fp32": m32, "int8": m8})
            print(f"  latency ({args.threads} thread(s)) fp32 {1e3 * lat['fp32']:.4f} ms, int8 {1e3 * lat['int8']:.4f} ms, "
                  f"int8/fp32 = {lat['int8'] / lat['fp32']:.3f}")
        mb = ROOT / "tests" / "models" / "mobilenet_v2_class.onnx"
        rng = np.random.default_rng(0)
        calib = [{"input": rng.standard_normal((1, 3, 160, 160)).astype(np.float32)} for _ in range(32)]
        m32p = edgekit.build(mb, target="onnxruntime", precision="fp32", output=Path(tmp) / "mb32.edgepkg")
        m8p = edgekit.build(mb, target="onnxruntime", precision="int8", calibration=calib, output=Path(tmp) / "mb8.edgepkg")
        with edgekit.load(m32p, **opts) as a, edgekit.load(m8p, **opts) as c:
            lat = latency({"fp32": a, "int8": c}, rounds=10, inner=5)
        print(f"mobilenet_v2_class 160x160 ({args.threads} thread(s)): fp32 {1e3 * lat['fp32']:.3f} ms, "
              f"int8 {1e3 * lat['int8']:.3f} ms, fp32/int8 speed-up {lat['fp32'] / lat['int8']:.2f}x")


if __name__ == "__main__":
    main()

"""Core ML target figures, measured through the numpy reference executor on this host.

* SQNR (dB) of every compression scheme vs the fp32 source on onnxruntime, for
  every golden model and the bundled Fashion-MNIST CNN (random-normal inputs;
  W8A8 calibrated on 24 other random-normal feeds, the bundled model on its
  300 calibration images).
* Bundled model, W8A8 (the iphone-15-pro profile) vs fp32 on the 1,000
  committed validation images: top-1 agreement and accuracy.
* The same for an LSTM (the tests' one-layer model with state inputs).
* Image input vs tensor input on the bundled model (the same 1,000 images):
  the folded scale/bias must not change a prediction.
* Speed of the reference executor vs onnxruntime fp32 on the same model
  (interleaved medians, one process): it is a checker, not a runtime; the
  Silero VAD LSTM too when the real-model cache holds it.
Prints figures; asserts nothing.  Run: ``python benchmarks/bench_coreml.py [--quick]``.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import edgekit  # noqa: E402
from edgekit.quantize.calibration import load_feeds  # noqa: E402
from edgekit.runners.coreml.program import load_program  # noqa: E402
from edgekit.runners.coreml.reference import MilInterpreter  # noqa: E402
from edgekit.targets.canonicalize import canonicalize, load_onnx  # noqa: E402
from edgekit.targets.coreml.compress import activation_ranges, activation_tensors, compress_weights  # noqa: E402
from edgekit.targets.coreml.lower import W8A8_CONSUMERS, lower  # noqa: E402
from edgekit.targets.coreml.schemes import Compression, DeploymentTarget  # noqa: E402
from edgekit.targets.quickstart import bundled_model  # noqa: E402
from models.meta import GOLDEN_MODELS  # noqa: E402

from _timing import interleaved  # noqa: E402

SCHEMES = [Compression.FP32, Compression.FP16, Compression.W8, Compression.PALETTIZE8, Compression.PALETTIZE6,
           Compression.PALETTIZE4, Compression.W8A8]


def sqnr(ref: np.ndarray, out: np.ndarray) -> float:
    noise = float(np.sum((ref.astype(np.float64) - out) ** 2))
    return 200.0 if noise == 0 else 10 * np.log10(float(np.sum(ref.astype(np.float64) ** 2)) / noise)


def package(model, scheme: Compression, path: Path, calib) -> Path:
    import coremltools as ct

    target = DeploymentTarget.IOS17 if scheme is Compression.W8A8 else DeploymentTarget.IOS16
    ranges = activation_ranges(model, activation_tensors(model, W8A8_CONSUMERS), calib) \
        if scheme is Compression.W8A8 else None
    lowered = lower(model, target.ct_target(), act_ranges=ranges)
    precision = ct.precision.FLOAT32 if scheme is Compression.FP32 else ct.precision.FLOAT16
    with contextlib.redirect_stderr(io.StringIO()):
        ml = ct.convert(lowered.program, convert_to="mlprogram", minimum_deployment_target=target.ct_target(),
                        compute_precision=precision)
        ml = compress_weights(ml, scheme)
    ml.save(str(path))
    return path


def sqnr_table(tmp: Path, quick: bool) -> None:
    import onnxruntime as ort

    b = bundled_model()
    import onnx
    from test_coreml import _lstm_model

    lstm_path = tmp / "lstm.onnx"
    onnx.save(_lstm_model("forward", True), str(lstm_path))
    models = [(gm.name, gm.path) for gm in GOLDEN_MODELS] + [("fashion_mnist_cnn (bundled)", b["model"]),
                                                             ("lstm 7 steps, 5→8 (tests)", lstm_path)]
    if quick:
        models = models[:3] + models[-2:]
    print("SQNR (dB) vs fp32 onnxruntime, reference executor (min over outputs, 4 random-normal inputs)")
    print(f"{'model':30s} " + " ".join(f"{s.value:>10s}" for s in SCHEMES))
    for name, path in models:
        canon = canonicalize(load_onnx(path)).model
        sess = ort.InferenceSession(canon.SerializeToString(), providers=["CPUExecutionProvider"])
        shapes = {i.name: i.shape for i in sess.get_inputs()}
        rng = np.random.default_rng(0)
        calib = [{k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()} for _ in range(24)]
        feeds = [{k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()} for _ in range(4)]
        refs = [sess.run(None, f) for f in feeds]
        row = []
        for scheme in SCHEMES:
            pkg = package(canon, scheme, tmp / f"{name[:20]}_{scheme.value}.mlpackage", calib)
            prog = load_program(pkg)
            interp = MilInterpreter(prog)
            worst = 200.0
            for f, ref in zip(feeds, refs):
                got = interp.run({pname: f[k] for (pname, _), k in zip(prog.inputs, f)})
                worst = min(worst, min(sqnr(r, got[o]) for r, o in zip(ref, prog.outputs)))
            row.append(worst)
        print(f"{name:30s} " + " ".join(f"{v:10.1f}" for v in row))


def bundled_agreement(tmp: Path) -> None:
    b = bundled_model()
    common = dict(preprocess=b["preprocess"], task="classify", labels=b["labels"])
    fp32 = edgekit.build(b["model"], target="onnxruntime", precision="fp32", output=tmp / "fp32.edgepkg", **common)
    w8a8 = edgekit.build(b["model"], device="iphone-15-pro", calibration=b["calibration"],
                         output=tmp / "w8a8.edgepkg", **common)
    with edgekit.load(fp32) as m32, edgekit.load(w8a8, runtime="coreml-reference") as mq:
        val = load_feeds(b["validation"], m32.manifest.inputs, m32._pre)
        p32 = np.array([np.argmax(m32.infer(f)["logits"]) for f in val.feeds])
        pq = np.array([np.argmax(mq.infer(f)["logits"]) for f in val.feeds])
        labels = np.array(val.labels)
        print(f"\nbundled model, W8A8 (iphone-15-pro profile: {mq.manifest.details['compression']}, "
              f"{mq.manifest.details['deployment_target']}) vs fp32, {len(labels)} validation images:")
        print(f"  top-1 agreement {100 * (p32 == pq).mean():.2f} %  (target ≥ 99 %)")
        print(f"  accuracy fp32 {100 * (p32 == labels).mean():.2f} %, W8A8 {100 * (pq == labels).mean():.2f} %")


def image_vs_tensor_input(tmp: Path) -> None:
    b = bundled_model()
    common = dict(preprocess=b["preprocess"], task="classify", labels=b["labels"], calibration=b["calibration"],
                  target="coreml", precision="fp16")
    img = edgekit.build(b["model"], output=tmp / "img.edgepkg", **common)
    ten = edgekit.build(b["model"], output=tmp / "ten.edgepkg", build_options={"image_input": False}, **common)
    with edgekit.load(img, runtime="coreml-reference") as mi, edgekit.load(ten, runtime="coreml-reference") as mt:
        val = load_feeds(b["validation"], mi.manifest.inputs, mi._pre)
        worst, same = 200.0, 0
        for f in val.feeds:
            yi, yt = mi.infer(f)["logits"], mt.infer(f)["logits"]
            worst = min(worst, sqnr(yt, yi))
            same += int(np.argmax(yi) == np.argmax(yt))
        print(f"\nbundled model fp16, image input ({mi.manifest.details.image_input.color_layout}, scale "
              f"{mi.manifest.details.image_input.scale:.6g}) vs tensor input, {len(val.feeds)} validation images: "
              f"top-1 agreement {100 * same / len(val.feeds):.2f} %, min SQNR {worst:.1f} dB")


def speed(tmp: Path) -> None:
    import onnxruntime as ort

    b = bundled_model()
    cases = [("fashion_mnist_cnn", b["model"], 30, 10),
             ("mobilenet_v2_class 160x160", ROOT / "tests" / "models" / "mobilenet_v2_class.onnx", 6, 2)]
    silero = Path.home() / ".cache" / "edgekit-real-models" / "silero-vad" / "6.2.3" / "silero_vad_16k_sequence.onnx"
    if silero.is_file():  # the real-model suite's LSTM, at the suite's shapes
        cases.append(("silero VAD LSTM (32x576)", silero, 10, 3))
    print("\nreference executor vs onnxruntime fp32 (1 thread for onnxruntime; numpy's BLAS threads as configured)")
    for name, path, rounds, inner in cases:
        shapes = {"input": [32, 576], "h": [1, 1, 128], "c": [1, 1, 128]} if "silero" in name else None
        canon = canonicalize(load_onnx(path), input_shapes=shapes).model
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        sess = ort.InferenceSession(canon.SerializeToString(), so, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        feed = {i.name: rng.standard_normal(i.shape).astype(np.float32) for i in sess.get_inputs()}
        progs = {s: load_program(package(canon, s, tmp / f"speed_{s.value}.mlpackage", None))
                 for s in (Compression.FP32, Compression.FP16)}
        interps = {s: MilInterpreter(p) for s, p in progs.items()}
        fns = {"onnxruntime": lambda: sess.run(None, feed)}
        for s, it in interps.items():
            mil_feed = {n: feed[k] for (n, _), k in zip(progs[s].inputs, feed)}
            fns[f"reference {s.value}"] = (lambda it=it, f=mil_feed: it.run(f))
        for fn in fns.values():
            fn()
        t = interleaved(fns, rounds, inner)
        base = t["onnxruntime"]
        parts = ", ".join(f"{k} {1e3 * v:.2f} ms ({v / base:.0f}x)" for k, v in t.items() if k != "onnxruntime")
        print(f"  {name}: onnxruntime {1e3 * base:.3f} ms; {parts}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer models in the SQNR table")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        sqnr_table(Path(tmp), args.quick)
        bundled_agreement(Path(tmp))
        image_vs_tensor_input(Path(tmp))
        speed(Path(tmp))


if __name__ == "__main__":
    main()

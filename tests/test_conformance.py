"""Every registered target × precision × golden model: build → load → infer → parity.

Calibration feeds are explicit, seeded random-normal tensors (golden models
have random weights, so no real data set fits them); the suite passes them in
as an iterable, so nothing falls back to random data silently.
"""
from __future__ import annotations

import numpy as np
import pytest

import edgekit
from conformance import CALIBRATION_SAMPLES, EXCLUDE, HOLDOUT_SAMPLES, HOST_RUNTIME, MIN_SQNR_DB, MODEL_SQNR_DB
from models.meta import GOLDEN_MODELS

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from edgekit.targets import TARGETS, Precision  # noqa: E402  (build side, after the skips)


def _cases():
    for target in TARGETS.names():
        tgt = TARGETS.get(target)()
        installed, detail = tgt.toolchain()
        for precision in [p.value for p in Precision if p in tgt.precisions]:
            for gm in GOLDEN_MODELS:
                marks = []
                if not installed:
                    marks.append(pytest.mark.skip(reason=f"{target} toolchain not installed here: {detail}"))
                reason = EXCLUDE.get((target, precision, gm.name))
                if reason:
                    marks.append(pytest.mark.skip(reason=reason))
                yield pytest.param(target, precision, gm, id=f"{target}-{precision}-{gm.name}", marks=marks)


def _feeds(gm, n, seed):
    rng = np.random.default_rng(seed)
    return [{t.name: rng.standard_normal(t.shape).astype(np.float32) for t in gm.inputs} for _ in range(n)]


def _sqnr(ref, out):
    noise = float(np.sum((ref.astype(np.float64) - out) ** 2))
    return 200.0 if noise == 0 else 10 * np.log10(float(np.sum(ref.astype(np.float64) ** 2)) / noise)


@pytest.mark.parametrize("target, precision, gm", list(_cases()))
def test_conformance(tmp_path, target, precision, gm):
    assert (target, precision) in MIN_SQNR_DB, f"add a MIN_SQNR_DB row for ({target!r}, {precision!r}) in tests/conformance.py"
    floor = MODEL_SQNR_DB.get((target, precision, gm.name), (MIN_SQNR_DB[(target, precision)], ""))[0]
    calib = _feeds(gm, CALIBRATION_SAMPLES, seed=1) if precision == "int8" else None
    out = edgekit.build(gm.path, target=target, precision=precision, calibration=calib,
                        task=gm.task.value if gm.task.value != "detect" else "raw",
                        output=tmp_path / f"{gm.name}.edgepkg")
    held_out = _feeds(gm, HOLDOUT_SAMPLES, seed=2)
    sess = ort.InferenceSession(str(gm.path), providers=["CPUExecutionProvider"])
    runtime, options = None, {}
    if target in HOST_RUNTIME:  # the device runtime cannot run here: use the package's verification runtime
        from edgekit.package import open_package

        opened = open_package(out)
        runtime, options = HOST_RUNTIME[target][0], dict(opened.manifest.verification.get("runtime_options") or {})
        opened.close()
    with edgekit.load(out, runtime=runtime, **options) as m:
        assert m.manifest.target == target and m.manifest.precision == precision
        assert m.manifest.verification["samples"] > 0
        for feed in held_out:
            got = m.infer({k: v.astype(m.runner.inputs[i].dtype) for i, (k, v) in enumerate(feed.items())})
            want = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))
            for name, ref in want.items():
                y = got[name].astype(np.float32)
                assert y.shape == ref.shape
                assert np.isfinite(y).all()
                sqnr = _sqnr(ref, y)
                assert sqnr >= floor, f"{name}: SQNR {sqnr:.1f} dB < {floor} dB"


DETECTOR_TARGETS = ("onnxruntime", "openvino", "qnn", "tensorrt", "tflite")
#: decoded detections of an int8 package matched with fp32's (same class, IoU ≥ 0.5)
MIN_DETECTION_RECALL = 0.95


@pytest.mark.parametrize("target", DETECTOR_TARGETS)
def test_int8_detector_detects_what_fp32_detects(tmp_path, target):
    """YOLOv8's output concatenates pixel boxes (0–128 here) and class scores (0–1): one int8 scale
    for both leaves the scores a few levels and the package detects little.  Every target keeps the
    decode tail out of that shared range (float, or 16 bits on the HTP)."""
    from edgekit import postprocess as post
    from edgekit.quantize.parity import match_detections

    if target not in TARGETS.names():
        pytest.skip(f"{target} is not registered")
    installed, detail = TARGETS.get(target)().toolchain()
    if not installed:
        pytest.skip(f"{target} toolchain not installed here: {detail}")
    gm = next(g for g in GOLDEN_MODELS if g.name == "yolo_head")
    out = edgekit.build(gm.path, target=target, precision="int8", calibration=_feeds(gm, CALIBRATION_SAMPLES, seed=1),
                        task="detect", output=tmp_path / "det.edgepkg")
    sess = ort.InferenceSession(str(gm.path), providers=["CPUExecutionProvider"])
    runtime, options = None, {}
    if target in HOST_RUNTIME:
        from edgekit.package import open_package

        opened = open_package(out)
        runtime, options = HOST_RUNTIME[target][0], dict(opened.manifest.verification.get("runtime_options") or {})
        opened.close()
    cfg = post.config_for_task("detect")
    matched = n_ref = 0
    with edgekit.load(out, runtime=runtime, **options) as m:
        assert m.manifest.data["quantization"]["detection_tail"], "the decode tail was not found"
        for feed in _feeds(gm, 12, seed=2):
            ref = post.postprocess(cfg, dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed))))
            got = post.postprocess(cfg, m.infer(feed))
            k, _ = match_detections(ref.detections, got.detections, 0.5)
            matched, n_ref = matched + k, n_ref + len(ref.detections)
    assert n_ref > 100, "the held-out feeds must give fp32 detections to compare with"
    assert matched / n_ref >= MIN_DETECTION_RECALL, f"{target}: recall {matched / n_ref:.3f} of {n_ref} detections"

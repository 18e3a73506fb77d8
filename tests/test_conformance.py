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

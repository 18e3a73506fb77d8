"""int8 on real pretrained networks (slow): with the default floor, mixed precision brings them over it.

Two small real models that full int8 loses on onnxruntime (measured: MTCNN
O-Net 18.7 dB, Silero VAD's LSTM 3.2 dB, default floor 25 dB); the whole
matrix with figures is ``benchmarks/bench_int8_real.py``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

REAL = Path(__file__).resolve().parent.parent / "samples" / "real_models"
if str(REAL) not in sys.path:
    sys.path.insert(0, str(REAL))

import fetch  # noqa: E402
import registry  # noqa: E402
import suite  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", ["mtcnn-onet", "silero-vad-lstm"])
def test_real_model_int8_meets_the_default_floor_with_layers_kept_in_float(tmp_path, name):
    from edgekit.targets.pipeline import build_package

    try:
        path = fetch.fetch_one(name)
    except fetch.FetchError as exc:
        pytest.skip(f"real models not reachable: {exc}")
    model = next(m for m in registry.MODELS if m.name == name)
    calib = suite.CalibrationCache(tmp_path / "calibration")
    res = build_package(path, target="onnxruntime", precision="int8", output=tmp_path / "m.edgepkg", name=name,
                        **suite.build_kwargs(model, calib.get(model.calibration)))
    v = res.package.verification
    assert v.passed and v.min_sqnr_db >= 25.0
    mp = res.package.quantization.to_json().get("mixed_precision")
    assert mp is not None and mp["attempts"][0]["sqnr_db"] < 25.0 and mp["kept_float"]
    assert mp["int8_mac_share"] is not None

"""int8 on real pretrained networks (slow): with the default floor, mixed precision brings them over it.

Two small real models that full int8 loses on onnxruntime (measured: MTCNN
O-Net 18.7 dB, Silero VAD's LSTM 3.2 dB, default floor 25 dB); the whole
matrix with figures is ``benchmarks/bench_int8_real.py``.
"""
from __future__ import annotations

import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from realbuild import build_real  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", ["mtcnn-onet", "silero-vad-lstm"])
def test_real_model_int8_meets_the_default_floor_with_layers_kept_in_float(tmp_path, name):
    res = build_real(name, "onnxruntime", tmp_path)
    v = res.package.verification
    assert v.passed and v.min_sqnr_db >= 25.0
    mp = res.package.quantization.to_json().get("mixed_precision")
    assert mp is not None and mp["attempts"][0]["sqnr_db"] < 25.0 and mp["kept_float"]
    assert mp["int8_mac_share"] is not None

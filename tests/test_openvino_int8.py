"""openvino int8: ops NNCF would quantize outside what the twin models stay float (issue 13, Silero VAD).

Quantized by NNCF, an LSTMSequence runs in OpenVINO's reference u8 kernel, which carries the hidden state
between time steps — and returns it as ``hn`` — in the FakeQuantize range of the initial state input ``h``.
Calibrated on the zero state a streaming model starts from, that range is about ±1e-3, so the hidden state
is clipped at every step.  The op (and Pow/Sqrt, which the mixed-precision search cannot name) is kept float.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

ov = pytest.importorskip("openvino")
nncf = pytest.importorskip("nncf")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import edgekit  # noqa: E402
from edgekit.package import open_package  # noqa: E402
from edgekit.targets.openvino.int8 import always_float, onnx_to_ov_ops  # noqa: E402

T, F, H = 24, 8, 16  # time steps, features, hidden size


def _sqnr(ref: np.ndarray, out: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / max(np.sum((ref - out) ** 2.0), 1e-30)))


def _lstm_model(path: Path) -> Path:
    """x [T, 1, F] → MatMul → Relu → LSTM(initial state h, c as graph inputs) → MatMul; outputs y, hn, cn."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.5, (F, F)).astype(np.float32), "w_in"),
        numpy_helper.from_array(rng.normal(0, 0.4, (1, 4 * H, F)).astype(np.float32), "lstm_w"),
        numpy_helper.from_array(rng.normal(0, 0.4, (1, 4 * H, H)).astype(np.float32), "lstm_r"),
        numpy_helper.from_array(rng.normal(0, 0.1, (1, 8 * H)).astype(np.float32), "lstm_b"),
        numpy_helper.from_array(np.array([-1, H], np.int64), "y_shape"),
        numpy_helper.from_array(rng.normal(0, 0.5, (H, 2)).astype(np.float32), "w_out"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w_in"], ["proj"], name="/proj/MatMul"),
        helper.make_node("Relu", ["proj"], ["feat"], name="/Relu"),  # unsigned, as Silero's encoder output
        helper.make_node("LSTM", ["feat", "lstm_w", "lstm_r", "lstm_b", "", "h", "c"], ["seq", "hn", "cn"],
                         name="/recurrent/LSTM", hidden_size=H),
        helper.make_node("Reshape", ["seq", "y_shape"], ["seq2d"], name="/Reshape"),
        helper.make_node("MatMul", ["seq2d", "w_out"], ["y"], name="/head/MatMul"),
    ]
    state = [1, 1, H]
    graph = helper.make_graph(
        nodes, "lstm_state",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["steps", 1, F]),
         helper.make_tensor_value_info("h", TensorProto.FLOAT, state),
         helper.make_tensor_value_info("c", TensorProto.FLOAT, state)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["steps", 2]),
         helper.make_tensor_value_info("hn", TensorProto.FLOAT, state),
         helper.make_tensor_value_info("cn", TensorProto.FLOAT, state)],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _feeds(n: int, seed: int) -> list:
    """Streaming feeds as a VAD gets them: the signal, and the zero state of the stream's first call."""
    rng = np.random.default_rng(seed)
    zeros = np.zeros((1, 1, H), np.float32)
    return [{"x": rng.normal(0, 1, (T, 1, F)).astype(np.float32), "h": zeros, "c": zeros.copy()} for _ in range(n)]


def _fq_fed(op) -> bool:
    """Whether an input of ``op`` is a FakeQuantize or int8 weights (through converts/transposes)."""
    for i in range(op.get_input_size()):
        src = op.input_value(i).get_node()
        for _ in range(4):
            kind = src.get_type_name()
            if kind == "FakeQuantize" or (kind == "Constant" and src.get_element_type().get_type_name() == "i8"):
                return True
            if kind not in ("Convert", "Transpose", "Multiply", "Subtract", "Reshape"):
                break
            src = src.input_value(0).get_node()
    return False


@pytest.fixture(scope="module")
def lstm_onnx(tmp_path_factory) -> Path:
    return _lstm_model(tmp_path_factory.mktemp("lstm") / "lstm_state.onnx")


def test_the_lstm_node_reaches_its_lstmsequence(lstm_onnx):
    """The frontend names the LSTMSequence "LSTMSequence_N" and reshapes its outputs into hn/cn: the ONNX node
    must map to the LSTMSequence itself, or an ignored scope naming it leaves the op int8."""
    ov_model = ov.convert_model(str(lstm_onnx))
    found = onnx_to_ov_ops(ov_model, onnx.load(str(lstm_onnx)), ["/recurrent/LSTM"])["/recurrent/LSTM"]
    kinds = {op.get_friendly_name(): op.get_type_name() for op in ov_model.get_ordered_ops()}
    assert "LSTMSequence" in {kinds[name] for name in found}, found


def test_plain_nncf_collapses_the_state_output(lstm_onnx):
    """The mechanism, on the tiny model: NNCF's default int8 clips the recurrent state to the zero-state range."""
    ov_model = ov.convert_model(str(lstm_onnx))
    calib, held = _feeds(16, 1), _feeds(8, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = nncf.quantize(ov_model, nncf.Dataset(calib), subset_size=len(calib),
                          preset=nncf.QuantizationPreset.MIXED)
    assert any(op.get_type_name() == "LSTMSequence" and _fq_fed(op) for op in q.get_ordered_ops())
    core = ov.Core()
    cfg = {"INFERENCE_PRECISION_HINT": "f32"}
    ref, out = core.compile_model(ov_model, "CPU", cfg), core.compile_model(q, "CPU", cfg)
    hn_ref = np.concatenate([ref(f)["hn"].ravel() for f in held])
    hn_q = np.concatenate([out(f)["hn"].ravel() for f in held])
    assert np.sqrt(np.mean(hn_ref ** 2)) > 0.05  # a live hidden state, not a dead one
    assert _sqnr(hn_ref, hn_q) < 10.0


def test_int8_package_keeps_the_lstm_float_and_its_state_intact(lstm_onnx, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pkg = edgekit.build(str(lstm_onnx), target="openvino", precision="int8", calibration=_feeds(40, 1),
                            validation=_feeds(12, 2), task="raw", input_shapes={"x": [T, 1, F]},
                            output=tmp_path / "lstm.edgepkg")
    opened = open_package(pkg)
    try:
        manifest = opened.manifest
        ov_model = ov.Core().read_model(str(opened.file(manifest.entry)))
    finally:
        opened.close()
    q = manifest.quantization
    assert "/recurrent/LSTM" in q["always_float_nodes"]
    lstm = [op for op in ov_model.get_ordered_ops() if op.get_type_name() == "LSTMSequence"]
    assert len(lstm) == 1 and not _fq_fed(lstm[0])
    assert any(op.get_type_name() == "FakeQuantize" for op in ov_model.get_ordered_ops())  # the MatMuls: int8
    by_output = {o.name: o.sqnr_db for o in manifest.verification.outputs}
    assert by_output["hn"] > 25.0 and by_output["cn"] > 25.0, by_output
    assert manifest.verification.passed


def test_pow_and_sqrt_stay_float(tmp_path):
    """A magnitude (sqrt(a² + b²)) between two int8 MatMuls: the twin does not model Pow/Sqrt, so NNCF must not
    quantize them either."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, (F, F)).astype(np.float32), n) for n in ("wa", "wb", "wc")]
    inits.append(numpy_helper.from_array(np.array(2.0, np.float32), "two"))
    nodes = [
        helper.make_node("MatMul", ["x", "wa"], ["a"], name="/a/MatMul"),
        helper.make_node("MatMul", ["x", "wb"], ["b"], name="/b/MatMul"),
        helper.make_node("Pow", ["a", "two"], ["a2"], name="/Pow"),
        helper.make_node("Pow", ["b", "two"], ["b2"], name="/Pow_1"),
        helper.make_node("Add", ["a2", "b2"], ["s"], name="/Add"),
        helper.make_node("Sqrt", ["s"], ["m"], name="/Sqrt"),
        helper.make_node("MatMul", ["m", "wc"], ["y"], name="/c/MatMul"),
    ]
    graph = helper.make_graph(nodes, "magnitude", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, F])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, F])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(tmp_path / "magnitude.onnx"))
    ops, nodes_kept = always_float(ov.convert_model(str(tmp_path / "magnitude.onnx")), model)
    assert sorted(nodes_kept) == ["/Pow", "/Pow_1", "/Sqrt"]
    assert {"/Pow", "/Pow_1", "/Sqrt"} <= set(ops)


@pytest.mark.slow
def test_real_silero_vad_int8_state_outputs(tmp_path):
    """Silero VAD v6 on openvino int8: hn was −0.0 dB (cn 2.4, speech_probs 8.9) even with every candidate
    layer float; with the LSTM and the STFT's Pow/Sqrt float the default floor holds on every output."""
    import sys

    real = Path(__file__).resolve().parent.parent / "samples" / "real_models"
    if str(real) not in sys.path:
        sys.path.insert(0, str(real))
    import fetch  # noqa: PLC0415
    import registry  # noqa: PLC0415
    import suite  # noqa: PLC0415
    from edgekit.targets.pipeline import build_package

    try:
        path = fetch.fetch_one("silero-vad-lstm")
    except fetch.FetchError as exc:
        pytest.skip(f"real models not reachable: {exc}")
    model = next(m for m in registry.MODELS if m.name == "silero-vad-lstm")
    calib = suite.CalibrationCache(tmp_path / "calibration")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = build_package(path, target="openvino", precision="int8", output=tmp_path / "vad.edgepkg",
                            name=model.name, **suite.build_kwargs(model, calib.get(model.calibration)))
    v = res.package.verification
    by_output = {o.name: o.sqnr_db for o in v.outputs}
    assert v.passed and min(by_output.values()) >= 25.0, by_output
    q = res.package.quantization.to_json()
    assert "/recurrent/LSTM" in q["always_float_nodes"]
    mp = q.get("mixed_precision")
    # the first build's weakest output is no longer pinned at 0 dB by the clipped state
    assert mp is None or mp["attempts"][0]["sqnr_db"] > 3.0

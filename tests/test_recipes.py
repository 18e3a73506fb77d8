"""Every target honours the recipe's precedence (global → op type → node name) and exclusions
through its own mechanism, or refuses the field it cannot honour with one error."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, numpy_helper  # noqa: E402

from edgekit.errors import ConfigError  # noqa: E402
from edgekit.quantize.calibration import CalibrationSet  # noqa: E402
from edgekit.quantize.recipe import OpConfig, Recipe  # noqa: E402
from edgekit.targets import TARGETS, BuildSpec, Precision  # noqa: E402
from edgekit.targets.canonicalize import canonicalize  # noqa: E402
from models.meta import by_name  # noqa: E402

GM = by_name("conv_bn_relu")  # conv_0 → relu_0 → conv_1 → relu_1 → GAP → flatten → gemm_0

#: global per-channel uint8; every Conv per-tensor (op type); conv_0 per-channel again with
#: 16-bit activations (node name beats op type); the Gemm excluded
PRECEDENCE = Recipe(
    num_samples=16,
    op_types={"Conv": OpConfig(per_channel=False)},
    nodes={"conv_0": OpConfig(per_channel=True, activation_dtype="uint16")},
    exclude_op_types=("Gemm",),
)


def _target(name: str):
    cls = TARGETS.get(name)
    installed, detail = cls().toolchain()
    if not installed:
        pytest.skip(f"{name} toolchain not installed here: {detail}")
    return cls()


@pytest.fixture(scope="module")
def canon():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return canonicalize(GM.path).model


@pytest.fixture(scope="module")
def calib():
    rng = np.random.default_rng(1)
    return CalibrationSet([{"input": rng.standard_normal(GM.inputs[0].shape).astype(np.float32)} for _ in range(16)])


def _build(target, canon, calib, tmp_path: Path, recipe: Recipe):
    spec = BuildSpec(precision=Precision.INT8, recipe=recipe)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return target.build(canon, spec, calib, tmp_path)


def _dq_of_input(model, node_name: str, index: int):
    """(scale array, zero-point element type) of the DequantizeLinear feeding ``node_name``'s input, or None."""
    inits = {t.name: t for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    node = next(n for n in model.graph.node if n.name == node_name)
    dq = producer.get(node.input[index])
    if dq is None or dq.op_type != "DequantizeLinear":
        return None
    zp = inits[dq.input[2]].data_type if len(dq.input) > 2 and dq.input[2] in inits else None
    return numpy_helper.to_array(inits[dq.input[1]]), zp


def _output_qtype(model, node_name: str) -> Optional[int]:
    """The element type of the zero point of the QuantizeLinear on ``node_name``'s output (None: not quantized)."""
    inits = {t.name: t for t in model.graph.initializer}
    node = next(n for n in model.graph.node if n.name == node_name)
    q = next((n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == node.output[0]), None)
    return None if q is None else inits[q.input[2]].data_type


def _precedence_holds(model, excluded_weight_type: Optional[int] = None) -> None:
    """``excluded_weight_type``: None where the excluded Gemm stays float, else the integer type its weight
    takes (QNN keeps an excluded layer on the HTP at 16 bits)."""
    conv0_w, conv1_w = _dq_of_input(model, "conv_0", 1), _dq_of_input(model, "conv_1", 1)
    assert conv0_w is not None and conv0_w[0].size > 1, "conv_0: its node config says per-channel"
    assert conv1_w is not None and conv1_w[0].size == 1, "conv_1: the Conv op-type config says per-tensor"
    gemm_w = _dq_of_input(model, "gemm_0", 1)
    if excluded_weight_type is None:
        assert gemm_w is None, "gemm_0 is excluded: its weight stays float"
    else:
        assert gemm_w is not None and gemm_w[1] == excluded_weight_type, "gemm_0 is excluded: 16-bit weight"


@pytest.mark.parametrize("name, qdq_file", [("onnxruntime", "model.onnx"), ("qnn", "model_qdq.onnx")])
def test_ort_quantizer_targets_follow_precedence(canon, calib, tmp_path, name, qdq_file):
    target = _target(name)
    art = _build(target, canon, calib, tmp_path, PRECEDENCE)
    model = onnx.load(str(tmp_path / qdq_file))
    _precedence_holds(model, TensorProto.INT16 if name == "qnn" else None)
    # conv_0's output is quantized with its node's 16-bit activations; the graph input with the global uint8
    assert _output_qtype(model, "conv_0") == TensorProto.UINT16
    inits = {t.name: t for t in model.graph.initializer}
    q_in = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "input")
    assert inits[q_in.input[2]].data_type == TensorProto.UINT8
    if name == "onnxruntime":  # (QNN keeps a chain in one type: the HTP converts where the type changes)
        assert _output_qtype(model, "conv_1") == TensorProto.UINT8
    kept = art.quantization["kept_out_of_int8_as_16_bit"] if name == "qnn" else art.quantization["excluded_nodes"]
    assert "gemm_0" in kept
    assert "conv_0" in art.quantization["per_node_settings"]


def test_tensorrt_follows_precedence_and_refuses_what_it_cannot_run(canon, calib, tmp_path):
    target = _target("tensorrt")
    recipe = Recipe(num_samples=16, op_types={"Conv": OpConfig(per_channel=False)},
                    nodes={"conv_0": OpConfig(per_channel=True)}, exclude_op_types=("Gemm",))
    art = _build(target, canon, calib, tmp_path, recipe)
    _precedence_holds(onnx.load(str(tmp_path / "model.onnx")))
    assert art.quantization["excluded_nodes"] == ["gemm_0"]
    with pytest.raises(ConfigError, match=r"tensorrt target cannot honour.*nodes\.conv_0\.activation_dtype='uint16'"):
        _build(target, canon, calib, tmp_path / "b", PRECEDENCE)


def test_openvino_ignored_scope_and_one_error_for_per_op_settings(canon, calib, tmp_path):
    target = _target("openvino")
    art = _build(target, canon, calib, tmp_path, Recipe(num_samples=16, exclude_nodes=("conv_1",),
                                                       exclude_op_types=("Gemm",)))
    scope = art.quantization["ignored_scope"]
    assert any(s.startswith("conv_1") for s in scope) and any(s.startswith("gemm_0") for s in scope)
    assert not any(s.startswith("conv_0") for s in scope)
    assert "conv_1" in art.quantization["float_layers"] or any(f.startswith("conv_1") for f in
                                                                 art.quantization["float_layers"])
    # NNCF applies one setting to the whole model: a per-op setting other than skip is refused, all in one error
    with pytest.raises(ConfigError, match=r"op_types\.Conv .*; nodes\.conv_0 "):
        _build(target, canon, calib, tmp_path / "b", PRECEDENCE)
    with pytest.raises(ConfigError, match="method='entropy'"):
        _build(target, canon, calib, tmp_path / "c", Recipe(num_samples=16, method="entropy"))


def test_qnn_refuses_activation_types_the_htp_lacks(canon, calib, tmp_path):
    """HTP takes unsigned activations only (onnxruntime's CPU kernels take every recipe dtype)."""
    target = _target("qnn")
    recipe = Recipe(num_samples=16, nodes={"conv_1": OpConfig(activation_dtype="int8")})
    with pytest.raises(ConfigError, match=r"qnn target cannot honour recipe setting\(s\) nodes\.conv_1\.activation_dtype='int8'"):
        _build(target, canon, calib, tmp_path, recipe)


# ------------------------------------------------------------------ reduce_range: decided by VNNI, not by "x86"
@pytest.mark.parametrize("features, options, recipe_value, expected", [
    ({"avx2"}, {}, None, True),  # x86 without VNNI: u8×s8 pair sums saturate int16
    ({"avx2", "avx512_vnni"}, {}, None, False),  # VNNI accumulates in int32
    ({"avx2", "avx_vnni"}, {"arch": "x86_64"}, None, False),
    ({"avx2", "avx512_vnni"}, {"arch": "x86_64", "vnni": False}, None, True),  # the device profile knows better
    ({"avx2"}, {"arch": "arm64"}, None, False),  # Arm kernels widen properly
    ({"avx2"}, {}, False, False),  # the recipe wins
])
def test_reduce_range_follows_the_cpu_features(monkeypatch, features, options, recipe_value, expected):
    import edgekit.cpu as cpu
    from edgekit.targets.onnxruntime import _reduce_range

    fake = cpu.CpuFeatures("x86_64", frozenset(features), "test")
    monkeypatch.setattr(cpu, "cpu_features", lambda: fake)
    value, why = _reduce_range(recipe_value, options)
    assert value is expected and why


def test_build_options_steer_the_build_and_stay_out_of_the_manifest(tmp_path):
    import edgekit

    _target("onnxruntime")
    out = edgekit.build(GM.path, target="onnxruntime", precision="fp16", build_options={"fp16_io": True},
                        output=tmp_path / "h.edgepkg")
    with edgekit.load(out) as m:
        assert m.manifest.inputs[0].dtype == "float16"
        assert "fp16_io" not in m.manifest.runtime_options
    with pytest.raises(ConfigError, match=r'"fp16_io_typo".*did you mean "fp16_io"'):
        edgekit.build(GM.path, target="onnxruntime", precision="fp16", build_options={"fp16_io_typo": True},
                      output=tmp_path / "x.edgepkg")

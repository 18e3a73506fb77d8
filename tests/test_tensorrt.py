"""The tensorrt target, its Q/DQ lint, build profile, engine cache and runners.

TensorRT cannot be installed on a Linux CI machine (its wheels come from
NVIDIA's index and need a GPU), so: the graph the target emits is checked
structurally and numerically through onnxruntime, the lint and the cache are
tested directly, and the tests that need TensorRT and a GPU run only where
``tensorrt`` imports (skipped with that reason elsewhere).
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import edgekit
from edgekit.errors import ConfigError, ManifestError, RuntimeMissingError, UnsupportedModelError
from edgekit.runners.tensorrt import cache as trt_cache
from edgekit.runners.tensorrt.cache import CacheWarning, EngineCache, EngineKey, atomic_write, resolve_cache_dir
from edgekit.runners.tensorrt.profile import BuildProfile, ShapeRange, TrtPrecision

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgekit.quantize.recipe import Recipe  # noqa: E402
from edgekit.targets.base import BuildSpec, Precision  # noqa: E402
from edgekit.targets.tensorrt import TensorRTTarget  # noqa: E402
from edgekit.targets.tensorrt.lint import lint_qdq, raise_on_violations  # noqa: E402
from edgekit.targets.tensorrt.ops import supported_ops, table_version  # noqa: E402
from edgekit.targets.tensorrt.qdq import quantize_weight  # noqa: E402
from models.meta import by_name  # noqa: E402

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
needs_trt = pytest.mark.skipif(not HAS_TRT, reason="tensorrt does not import here (it comes with JetPack / "
                               "NVIDIA's index and needs an NVIDIA GPU); the graph is verified through onnxruntime")


def _feeds(gm, n, seed):
    rng = np.random.default_rng(seed)
    return [{t.name: rng.standard_normal(t.shape).astype(np.float32) for t in gm.inputs} for _ in range(n)]


def _sqnr(ref, out):
    noise = float(np.sum((ref.astype(np.float64) - out) ** 2))
    return 200.0 if noise == 0 else 10 * np.log10(float(np.sum(ref.astype(np.float64) ** 2)) / noise)


def _model_from(pkg: Path):
    from edgekit.package import open_package

    opened = open_package(pkg)
    try:
        return onnx.load(str(opened.root / opened.manifest.entry)), opened.manifest
    finally:
        opened.close()


# --------------------------------------------------------------------------- build profile

def test_profile_roundtrip_and_int8_implies_fp16():
    p = BuildProfile(precisions=("int8",), shapes={"x": ShapeRange.static((1, 3, 8, 8))}, dla_core=0)
    assert p.precisions == (TrtPrecision.FP16, TrtPrecision.INT8)
    again = BuildProfile.from_json(json.loads(json.dumps(p.to_json())))
    assert again == p and again.canonical() == p.canonical()
    assert p.with_overrides({"dla_core": 1, "unrelated": 3}).dla_core == 1


@pytest.mark.parametrize("kwargs, match", [
    ({"dla_core": 0}, "DLA runs no fp32"),
    ({"precisions": ("fp8",)}, "precisions"),
    ({"builder_optimization_level": 7}, "builder_optimization_level"),
    ({"workspace_mib": 0}, "workspace_mib"),
    ({"trt_version": "latest"}, "trt_version"),
])
def test_profile_rejects_bad_values(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        BuildProfile(**kwargs)


def test_profile_json_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"build_profile\.bogus: unknown field"):
        BuildProfile.from_json({"bogus": 1})
    with pytest.raises(ConfigError, match=r"shapes\['x'\]"):
        BuildProfile.from_json({"shapes": {"x": {"min": [2], "opt": [1], "max": [1]}}})


# --------------------------------------------------------------------------- engine cache

def _key(**kw):
    base = dict(trt_version="10.3.0", gpu_name="Orin", compute_capability="8.7", artifact_sha256="a" * 64,
                profile=BuildProfile(precisions=("fp16",)).canonical(), name="m")
    base.update(kw)
    return EngineKey(**base)


def test_key_changes_with_every_field_but_not_the_name():
    k = _key()
    for field, value in [("trt_version", "10.4.0"), ("gpu_name", "Xavier"), ("compute_capability", "7.2"),
                         ("artifact_sha256", "b" * 64), ("profile", BuildProfile().canonical())]:
        assert _key(**{field: value}).digest != k.digest, field
    assert _key(name="other").digest == k.digest


def test_store_lookup_roundtrip(tmp_path):
    cache = EngineCache(tmp_path)
    k = _key()
    assert cache.lookup(k) is None and "no cached engine" in cache.last_miss
    path = cache.store(k, b"engine-bytes")
    assert path.read_bytes() == b"engine-bytes"
    assert cache.lookup(k) == b"engine-bytes" and cache.last_miss == ""
    assert [e["trt_version"] for e in cache.entries()] == ["10.3.0"]
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_engine_from_another_tensorrt_version_is_rebuilt_not_loaded(tmp_path):
    cache = EngineCache(tmp_path)
    old = _key(trt_version="8.6.2")
    cache.store(old, b"old-engine")
    new = _key(trt_version="10.3.0")
    assert cache.lookup(new) is None  # another key: never looked at
    # the same file names but metadata from another version (a copied cache folder): dropped, not loaded
    engine_path, meta_path = cache.paths(new)
    old_engine, old_meta = cache.paths(old)
    os.replace(old_engine, engine_path)
    os.replace(old_meta, meta_path)
    assert cache.lookup(new) is None
    assert "trt_version '8.6.2' (need '10.3.0')" in cache.last_miss
    assert not engine_path.exists() and not meta_path.exists()


def test_corrupt_or_half_written_entries_miss(tmp_path):
    cache = EngineCache(tmp_path)
    k = _key()
    engine_path, meta_path = cache.paths(k)
    engine_path.write_bytes(b"engine without metadata: a build interrupted before its commit")
    assert cache.lookup(k) is None
    cache.store(k, b"good")
    engine_path.write_bytes(b"goo")  # truncated copy
    assert cache.lookup(k) is None and "checksum" in cache.last_miss
    cache.store(k, b"good")
    meta_path.write_text("{not json")
    assert cache.lookup(k) is None and "unreadable" in cache.last_miss


def test_atomic_write_interrupted_leaves_nothing(tmp_path, monkeypatch):
    target = tmp_path / "x.engine"
    target.write_bytes(b"previous")

    def boom(src, dst):
        raise KeyboardInterrupt  # the user pressed Ctrl-C mid-build

    monkeypatch.setattr(trt_cache.os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, b"new engine")
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["x.engine"]


def test_unwritable_cache_dir_falls_back_to_temp_with_a_warning(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.warns(CacheWarning, match="not writable") as rec:
        cache = EngineCache(blocker / "cache")
    assert "does not survive a reboot" in str(rec[0].message)
    assert cache.folder != blocker / "cache" and cache.folder.is_dir()
    cache.store(_key(), b"e")
    assert cache.lookup(_key()) == b"e"
    folder, warning = resolve_cache_dir(tmp_path / "ok")
    assert folder == tmp_path / "ok" and warning is None


def test_default_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGEKIT_CACHE_DIR", str(tmp_path / "c"))  # edgekit's one cache root
    assert trt_cache.default_cache_dir() == tmp_path / "c" / "tensorrt"
    monkeypatch.delenv("EDGEKIT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert trt_cache.default_cache_dir() == tmp_path / "x" / "edgekit" / "tensorrt"


def test_timing_cache_is_per_gpu_and_version(tmp_path):
    cache = EngineCache(tmp_path)
    a = cache.timing_cache_path("10.3", "Orin", "8.7")
    assert a != cache.timing_cache_path("10.4", "Orin", "8.7") != cache.timing_cache_path("10.3", "Xavier", "7.2")
    assert cache.load_timing_cache(a) == b""
    cache.store_timing_cache(a, b"tactics")
    assert cache.load_timing_cache(a) == b"tactics"


def test_ensure_engine_builds_once_then_reuses_and_rebuilds_on_version_change(tmp_path, monkeypatch):
    """The orchestration around TensorRT's builder; the builder itself is replaced (it needs a GPU)."""
    from types import SimpleNamespace

    from edgekit.runners.tensorrt import runner as trt_runner  # the module whose build_engine ensure_engine calls

    pkg = edgekit.build(by_name("conv_bn_relu").path, target="tensorrt", precision="fp16",
                        output=tmp_path / "m.edgepkg")
    from edgekit.package import open_package

    opened = open_package(pkg)
    calls = []

    def fake_build(trt, onnx_path, profile, *, timing_cache=b"", progress=None, logger=None):
        calls.append((trt.__version__, timing_cache))
        return f"engine for {trt.__version__}".encode(), b"timing " + trt.__version__.encode()

    monkeypatch.setattr(trt_runner, "build_engine", fake_build)
    cache = EngineCache(tmp_path / "cache")
    profile = trt_runner.manifest_profile(opened.manifest)
    assert profile.precisions == (TrtPrecision.FP16,)
    quiet = lambda *a: None  # noqa: E731
    v10 = SimpleNamespace(__version__="10.3.0")
    first = trt_runner.ensure_engine(v10, opened.root, opened.manifest, profile, ("Orin", "8.7"), cache, progress=quiet)
    second = trt_runner.ensure_engine(v10, opened.root, opened.manifest, profile, ("Orin", "8.7"), cache, progress=quiet)
    assert first["built"] and not second["built"] and second["engine"] == b"engine for 10.3.0"
    v11 = SimpleNamespace(__version__="10.4.0")
    third = trt_runner.ensure_engine(v11, opened.root, opened.manifest, profile, ("Orin", "8.7"), cache, progress=quiet)
    assert third["built"] and third["engine"] == b"engine for 10.4.0"
    dla = profile.with_overrides({"dla_core": 0})
    fourth = trt_runner.ensure_engine(v10, opened.root, opened.manifest, dla, ("Orin", "8.7"), cache, progress=quiet)
    assert fourth["built"]  # another build profile, another engine
    # the timing cache of (10.3.0, Orin) was handed back to the later 10.3.0 build
    assert calls == [("10.3.0", b""), ("10.4.0", b""), ("10.3.0", b"timing 10.3.0")]
    opened.close()


# --------------------------------------------------------------------------- op table and lint

def _one_node_reason(op_type: str, version: str, domain: str = ""):
    """Why TensorRT ``version`` cannot build a one-node model of ``op_type`` (None: it can)."""
    node = helper.make_node(op_type, ["x"], ["y"], name="n", domain=domain)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    spec = BuildSpec(precision=Precision.FP32, recipe=Recipe(), runtime_options={"trt_version": version})
    report = TensorRTTarget().check(helper.make_model(g, opset_imports=opsets), spec)
    return report.unsupported[0].reason if report.unsupported else None


def test_op_table_versions():
    assert _one_node_reason("Relu", "10.3.0") is None
    assert "8.6+" in _one_node_reason("LayerNormalization", "8.5.2")
    assert _one_node_reason("LayerNormalization", "8.6") is None
    assert _one_node_reason("Unique", "10") == "TensorRT 10 cannot import Unique"
    assert "custom domain" in _one_node_reason("FusedConv", "10", domain="com.microsoft")
    assert table_version("10.3.0") == "10" and table_version("8.4") == "8.5"
    assert supported_ops("8.5") < supported_ops("8.6") < supported_ops("10")


def _qdq_graph(*, zp=0, zp_dtype=np.int8, scale=0.05, w_axis=0, w_scales=None, quantize_weight_too=True,
               q_consumer="DequantizeLinear", dq_scale=None, act_scales=1, bias_dq=False, extra_node=None,
               opset=17):
    """x → Q → DQ → Conv(W_dq) → y, with knobs to break each rule."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    q, s = quantize_weight(w, 0)
    if w_scales is not None:
        s = np.asarray(w_scales, dtype=np.float32)
    inits = [
        numpy_helper.from_array(np.full((act_scales,), scale, np.float32) if act_scales > 1
                                else np.array(scale, np.float32), "x_scale"),
        numpy_helper.from_array(np.full((act_scales,), zp, zp_dtype) if act_scales > 1
                                else np.array(zp, zp_dtype), "x_zp"),
        numpy_helper.from_array(np.array(dq_scale if dq_scale is not None else scale, np.float32), "x_scale_dq"),
        numpy_helper.from_array(q, "W_int8"),
        numpy_helper.from_array(s, "W_scale"),
        numpy_helper.from_array(np.zeros(s.shape, np.int8), "W_zp"),
        numpy_helper.from_array(w, "W"),
        numpy_helper.from_array(np.zeros(4, np.float32), "B"),
        numpy_helper.from_array(np.zeros(4, np.int32), "B_int32"),
        numpy_helper.from_array(np.ones(4, np.float32), "B_scale"),
    ]
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["xq"], name="q_x")]
    if q_consumer == "DequantizeLinear":
        nodes.append(helper.make_node("DequantizeLinear", ["xq", "x_scale_dq", "x_zp"], ["xdq"], name="dq_x"))
    else:  # a Q that feeds something else
        nodes.append(helper.make_node("Cast", ["xq"], ["xdq"], name="cast_x", to=TensorProto.FLOAT))
    wname = "W"
    if quantize_weight_too:
        nodes.append(helper.make_node("DequantizeLinear", ["W_int8", "W_scale", "W_zp"], ["Wdq"], name="dq_w",
                                      axis=w_axis))
        wname = "Wdq"
    bname = "B"
    if bias_dq:
        nodes.append(helper.make_node("DequantizeLinear", ["B_int32", "B_scale"], ["Bdq"], name="dq_b", axis=0))
        bname = "Bdq"
    nodes.append(helper.make_node("Conv", ["xdq", wname, bname], ["y"], name="conv", pads=[1, 1, 1, 1]))
    outputs = ["y"]
    if extra_node is not None:
        nodes.append(extra_node)
        outputs.append(extra_node.output[0])
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])]
        + [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs[1:]], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _rules(model, version="10"):
    return sorted({v.rule for v in lint_qdq(model, version)})


def test_lint_clean_graph_passes_and_runs_on_onnxruntime():
    m = _qdq_graph()
    assert lint_qdq(m) == []
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    assert sess.run(None, {"x": np.zeros((1, 3, 8, 8), np.float32)})[0].shape == (1, 4, 8, 8)


@pytest.mark.parametrize("kwargs, rule", [
    ({"zp": 3}, "asymmetric"),
    ({"zp": 128, "zp_dtype": np.uint8}, "zero-point-type"),
    ({"scale": -0.1}, "scale"),
    ({"scale": 0.0}, "scale"),
    ({"w_scales": [0.1, 0.0, 0.1, 0.1]}, "scale"),
    ({"q_consumer": "Cast"}, "unpaired-q"),
    ({"dq_scale": 0.07}, "pair-mismatch"),
    ({"act_scales": 3}, "per-channel-activation"),
    ({"w_axis": 1, "w_scales": [0.1, 0.1, 0.1]}, "weight-axis"),
    ({"w_scales": [0.1, 0.1]}, "weight-axis"),
    ({"quantize_weight_too": False}, "half-quantized"),
    ({"bias_dq": True}, "dq-type"),
    ({"opset": 21}, "opset"),
    ({"extra_node": helper.make_node("Unique", ["x"], ["u"], name="uniq")}, "unsupported-op"),
])
def test_lint_names_each_violation(kwargs, rule):
    assert rule in _rules(_qdq_graph(**kwargs))


def test_lint_reports_every_violation_at_once():
    m = _qdq_graph(zp=3, w_axis=1, w_scales=[0.1, 0.1, 0.1],
                   extra_node=helper.make_node("Relu", ["xq"], ["r"], name="relu_on_int8"))
    violations = lint_qdq(m)
    assert {"asymmetric", "weight-axis", "unpaired-q"} <= {v.rule for v in violations}
    with pytest.raises(UnsupportedModelError) as err:
        raise_on_violations(violations, "10.3")
    text = str(err.value)
    assert "TensorRT 10 Q/DQ rule violation(s)" in text
    for name in ("q_x", "conv", "dq_x"):
        assert name in text


def test_lint_unsupported_ops_depend_on_the_version():
    ln = helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], name="ln", axis=-1)
    graph = helper.make_graph([ln], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              initializer=[numpy_helper.from_array(np.ones(4, np.float32), "g"),
                                           numpy_helper.from_array(np.zeros(4, np.float32), "b")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert _rules(m, "8.5") == ["unsupported-op"] and _rules(m, "10") == []


# --------------------------------------------------------------------------- the target

def _int8(gm, tmp_path, **kw):
    return edgekit.build(gm.path, target="tensorrt", precision="int8", calibration=_feeds(gm, 16, 1),
                         recipe={"num_samples": 12}, task="raw", output=tmp_path / f"{gm.name}-int8.edgepkg", **kw)


def test_int8_graph_follows_tensorrt_placement(tmp_path):
    gm = by_name("residual_add")
    model, manifest = _model_from(_int8(gm, tmp_path))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    quantized_ops = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    assert quantized_ops
    for node in quantized_ops:
        x_dq, w_dq = producer[node.input[0]], producer[node.input[1]]
        assert x_dq.op_type == w_dq.op_type == "DequantizeLinear"
        assert producer[x_dq.input[0]].op_type == "QuantizeLinear"  # activation: Q → DQ
        assert inits[w_dq.input[0]].dtype == np.int8  # TensorRT 10: int8 weights behind the DQ
        w_scale = inits[w_dq.input[1]]
        axis = next(a.i for a in w_dq.attribute if a.name == "axis")
        out_channels = inits[w_dq.input[0]].shape[axis]
        assert w_scale.shape == (out_channels,) and (w_scale > 0).all()
        assert inits[x_dq.input[1]].shape == ()  # activations per tensor
        if len(node.input) > 2:
            assert node.input[2] in inits and inits[node.input[2]].dtype == np.float32  # bias stays float
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zp = inits[n.input[2]]
            assert zp.dtype == np.int8 and not zp.any()
    # nothing quantizes an op's output: every Q reads a float tensor that is not a Conv/Gemm's DQ path
    for n in model.graph.node:
        if n.op_type == "QuantizeLinear" and n.input[0] in producer:
            assert producer[n.input[0]].op_type != "DequantizeLinear"
    assert lint_qdq(model) == []
    details = manifest.data["target"]["details"]
    assert details["build_profile"]["precisions"] == ["fp16", "int8"]
    assert manifest.runtime == "tensorrt" and manifest.verification["runtime"] == "onnxruntime"
    assert "Q/DQ" in manifest.verification["note"]


def test_tensorrt_8_weights_are_fake_quantized(tmp_path):
    gm = by_name("conv_bn_relu")
    model, manifest = _model_from(_int8(gm, tmp_path, runtime_options={"trt_version": "8.5"}))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    w_q = producer[producer[conv.input[1]].input[0]]
    assert w_q.op_type == "QuantizeLinear" and inits[w_q.input[0]].dtype == np.float32
    assert manifest.data["target"]["details"]["build_profile"]["trt_version"] == "8.5"
    assert lint_qdq(model, "8.5") == []


def test_int8_matches_fp32_on_onnxruntime(tmp_path):
    gm = by_name("attention_block")  # MatMul between two activations, Gemm-like MatMuls with weights
    pkg = _int8(gm, tmp_path)
    sess = ort.InferenceSession(str(gm.path), providers=["CPUExecutionProvider"])
    with edgekit.load(pkg, runtime="onnxruntime", graph_optimization_level="basic") as m:
        for feed in _feeds(gm, 3, 2):
            got = m.infer(feed)
            for (name, ref) in zip([o.name for o in sess.get_outputs()], sess.run(None, feed)):
                assert _sqnr(ref, got[name]) > 25


def test_bundled_model_int8_top1_agreement(tmp_path):
    from edgekit.targets.quickstart import bundled_model

    b = bundled_model()
    result = edgekit.targets.pipeline.build_package(
        b["model"], target="tensorrt", precision="int8", calibration=b["calibration"], validation=b["validation"],
        preprocess=b["preprocess"], task="classify", labels=b["labels"], output=tmp_path / "fm.edgepkg")
    v = result.manifest["verification"]
    assert v["samples"] == 1000
    assert v["top1_agreement"] >= 0.99, v
    assert v["min_sqnr_db"] > 25
    assert v["runtime_options"] == ({"graph_optimization_level": "basic"}
                                    if v["runtime_options"] else {})


def test_unsupported_op_is_named_before_building(tmp_path):
    det = helper.make_node("Det", ["x"], ["y"], name="determinant")
    graph = helper.make_graph([det], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    path = tmp_path / "det.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(UnsupportedModelError, match=r"determinant \(Det\): TensorRT 10 cannot import Det"):
        edgekit.build(path, target="tensorrt", output=tmp_path / "det.edgepkg")
    assert not (tmp_path / "det.edgepkg").exists()


def test_xavier_profile_checks_against_tensorrt_8_5(tmp_path):
    gm = by_name("attention_block")
    with pytest.raises(UnsupportedModelError, match=r"LayerNormalization.*TensorRT 8.6\+ can"):
        edgekit.build(gm.path, device="jetson-xavier-nx", output=tmp_path / "a.edgepkg")


def test_device_profiles_and_dla(tmp_path):
    from edgekit.targets.devices import get_profile

    for name, precision in [("jetson-orin-nano", "fp16"), ("jetson-orin-nx", "int8"), ("jetson-agx-orin", "int8"),
                            ("jetson-xavier-nx", "fp16")]:
        p = get_profile(name)
        assert (p.target, p.precision) == ("tensorrt", precision)
    gm = by_name("conv_bn_relu")
    pkg = edgekit.build(gm.path, device="jetson-agx-orin", precision="fp16", output=tmp_path / "dla.edgepkg")
    _, manifest = _model_from(pkg)
    prof = manifest.data["target"]["details"]["build_profile"]
    assert prof["dla_core"] == 0 and prof["gpu_fallback"] is True and prof["workspace_mib"] == 2048
    assert prof["shapes"] == {"input": {"min": [1, 3, 32, 32], "opt": [1, 3, 32, 32], "max": [1, 3, 32, 32]}}
    with pytest.raises(ConfigError, match="DLA runs no fp32"):
        edgekit.build(gm.path, device="jetson-agx-orin", precision="fp32", output=tmp_path / "x.edgepkg")


def test_prequantized_models_are_linted_and_kept(tmp_path):
    bad = tmp_path / "qat_bad.onnx"
    onnx.save(_qdq_graph(zp=5), str(bad))
    with pytest.raises(UnsupportedModelError, match=r"q_x \(asymmetric\)"):
        edgekit.build(bad, target="tensorrt", precision="int8", output=tmp_path / "b.edgepkg")
    good = tmp_path / "qat.onnx"
    onnx.save(_qdq_graph(), str(good))
    with pytest.raises(ConfigError, match="--precision int8"):
        edgekit.build(good, target="tensorrt", precision="fp16", output=tmp_path / "g16.edgepkg")
    pkg = edgekit.build(good, target="tensorrt", precision="int8", output=tmp_path / "g.edgepkg")
    model, manifest = _model_from(pkg)
    assert sum(n.op_type == "QuantizeLinear" for n in model.graph.node) == 1
    assert "quantization-aware" in manifest.data["quantization"]["tool"]


# --------------------------------------------------------------------------- runners and CLI

@pytest.fixture(scope="module")
def fp16_package(tmp_path_factory):
    out = tmp_path_factory.mktemp("trt") / "cbr-fp16.edgepkg"
    return edgekit.build(by_name("conv_bn_relu").path, target="tensorrt", precision="fp16", output=out)


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed here")
def test_load_without_tensorrt_names_the_fallback_runners(fp16_package):
    with pytest.raises(RuntimeMissingError, match="runtime='onnxruntime-gpu'.*runtime='onnxruntime'"):
        edgekit.load(fp16_package)
    with edgekit.load(fp16_package, runtime="onnxruntime") as m:  # the fallback it names works
        assert m.infer({"input": np.zeros((1, 3, 32, 32), np.float32)})["logits"].shape == (1, 10)


def test_no_gpu_is_one_clear_error_naming_the_fallback():
    from edgekit.runners.tensorrt import gpu_info, import_cudart

    try:
        cudart = import_cudart()
    except RuntimeMissingError as exc:
        pytest.skip(f"cuda-python not installed: {exc}")
    err, count = cudart.cudaGetDeviceCount()
    if err == cudart.cudaError_t.cudaSuccess and count > 0:
        pytest.skip("this machine has a GPU")
    with pytest.raises(RuntimeMissingError, match="NVIDIA GPU.*runtime='onnxruntime'"):
        gpu_info(cudart)


def test_onnxruntime_gpu_runner(fp16_package):
    from edgekit.runners.onnxruntime_gpu import choose_providers, trt_provider_options

    if not set(ort.get_available_providers()) & {"TensorrtExecutionProvider", "CUDAExecutionProvider"}:
        with pytest.raises(RuntimeMissingError, match="pip install onnxruntime-gpu.*runtime='onnxruntime'"):
            edgekit.load(fp16_package, runtime="onnxruntime-gpu")
    feed = {"input": np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)}
    with edgekit.load(fp16_package, runtime="onnxruntime-gpu", allow_cpu=True) as gpu, \
            edgekit.load(fp16_package, runtime="onnxruntime") as cpu:
        np.testing.assert_allclose(gpu.infer(feed)["logits"], cpu.infer(feed)["logits"], rtol=1e-5, atol=1e-6)
    assert choose_providers(["TensorrtExecutionProvider", "CUDAExecutionProvider"],
                            ["CUDAExecutionProvider", "CPUExecutionProvider"], False) == ["CUDAExecutionProvider"]
    with pytest.raises(ConfigError, match="providers"):
        choose_providers(["OpenVINOExecutionProvider"], ["CPUExecutionProvider"], True)
    opts = trt_provider_options(BuildProfile(precisions=("int8",), dla_core=1, workspace_mib=256), Path("/c"), 0)
    assert opts["trt_int8_enable"] and opts["trt_fp16_enable"] and opts["trt_dla_core"] == 1
    assert opts["trt_max_workspace_size"] == 256 << 20 and opts["trt_engine_cache_enable"]


def test_runner_rejects_a_package_without_build_profile(tmp_path):
    from edgekit.runners.tensorrt import manifest_profile

    pkg = edgekit.build(by_name("conv_bn_relu").path, target="onnxruntime", output=tmp_path / "o.edgepkg")
    _, manifest = _model_from(pkg)
    with pytest.raises(ManifestError, match="build_profile: missing"):
        manifest_profile(manifest)


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed here")
def test_cli_prepare_without_tensorrt_exits_2(fp16_package):
    from typer.testing import CliRunner

    from edgekit.cli import app

    res = CliRunner().invoke(app, ["prepare", str(fp16_package), "--json"])
    assert res.exit_code == 2
    assert "tensorrt runtime is not installed" in json.loads(res.stdout)["error"]


def test_import_edgekit_does_not_import_tensorrt_or_cuda():
    import subprocess

    probe = "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorrt', 'cuda', 'onnx', 'onnxruntime')))"
    # cuda-bindings installs a .pth hook that imports a stub `cuda` module at start-up: compare with a bare run
    bare = subprocess.run([sys.executable, "-c", "import sys; " + probe], capture_output=True, text=True, check=True)
    code = "import sys, edgekit, edgekit.runners, edgekit.runners.tensorrt.cache, edgekit.runners.tensorrt.profile; " + probe
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == bare.stdout


# --------------------------------------------------------------------------- wherever TensorRT imports

@needs_trt
def test_tensorrt_engine_build_cache_and_inference(fp16_package, tmp_path):  # pragma: no cover - needs a GPU
    from edgekit.runners.tensorrt import prepare

    cache = tmp_path / "engines"
    first = prepare(fp16_package, cache_dir=cache, progress=False)
    assert first["built"] and Path(first["engine"]).is_file()
    assert not prepare(fp16_package, cache_dir=cache, progress=False)["built"]
    feed = {"input": np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)}
    with edgekit.load(fp16_package, cache_dir=cache, progress=False) as m, \
            edgekit.load(fp16_package, runtime="onnxruntime") as ref:
        assert m.runner.engine_info["built"] is False
        assert _sqnr(ref.infer(feed)["logits"], m.infer(feed)["logits"]) > 40


@needs_trt
def test_tensorrt_int8_engine(tmp_path):  # pragma: no cover - needs a GPU
    gm = by_name("conv_bn_relu")
    pkg = _int8(gm, tmp_path)
    feed = _feeds(gm, 1, 2)[0]
    with edgekit.load(pkg, cache_dir=tmp_path / "c", progress=False) as m, \
            edgekit.load(pkg, runtime="onnxruntime", graph_optimization_level="basic") as ref:
        assert _sqnr(ref.infer(feed)["logits"], m.infer(feed)["logits"]) > 20


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_histogram_calibration_clips_below_the_max(method):
    from edgekit.quantize.calibration import CalibrationSet
    from edgekit.targets.tensorrt.qdq import calibrate

    gm = by_name("conv_bn_relu")
    model = onnx.load(str(gm.path))
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    tensors = [conv.input[0]]
    calib = CalibrationSet(feeds=_feeds(gm, 16, 3))  # histogram rules need 16+ samples (else min-max)
    hi = calibrate(model, tensors, calib, "minmax")[tensors[0]]
    got = calibrate(model, tensors, calib, method, percentile=99.9)[tensors[0]]
    assert 0 < got < hi

"""onnxruntime int8 packages run the Q/DQ placement they were built and verified with.

No timings: the test counts what onnxruntime's optimizer leaves in the graph it executes.  The model is
the shape that made MTCNN O-Net's int8 package slower than ``quantize_static``'s default — a float first
convolution (kept out of int8, as mixed precision keeps it), PRelu with negative slopes (onnxruntime has no
int8 PRelu), a MaxPool, then an int8 convolution.  With onnxruntime's QDQ propagation the QuantizeLinear
the int8 convolution needs moves above the MaxPool, which then runs as a uint8 pool in NCHW layout
(onnxruntime's generic loop: 404 of 937 µs on O-Net); the package turns that transformer off.
A float 1-D convolution (Silero VAD's, kept float by mixed precision) reaches onnxruntime as a 2-D one, which
its NCHWc transformer gives MLAS's blocked kernels.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import edgekit  # noqa: E402
from edgekit.targets.onnxruntime import INT8_DISABLED_OPTIMIZERS  # noqa: E402
from edgekit.targets.pipeline import build_package  # noqa: E402

CONFIG_KEY = "optimization.disable_specified_optimizers"
NCHWC = "com.microsoft.nchwc"  # the domain of the blocked-layout ops onnxruntime's NCHWc transformer writes
SHAPE = (1, 3, 48, 48)


def _model(path: Path) -> Path:
    rng = np.random.default_rng(3)
    inits = [
        numpy_helper.from_array((0.3 * rng.standard_normal((16, 3, 3, 3))).astype(np.float32), "w_a"),
        numpy_helper.from_array((0.1 * rng.standard_normal(16)).astype(np.float32), "b_a"),
        # negative slopes, as MTCNN's: the activation does not commute with the pool
        numpy_helper.from_array(rng.uniform(-0.4, 0.6, (16, 1, 1)).astype(np.float32), "slope"),
        numpy_helper.from_array((0.1 * rng.standard_normal((16, 16, 3, 3))).astype(np.float32), "w_b"),
        numpy_helper.from_array((0.1 * rng.standard_normal(16)).astype(np.float32), "b_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w_a", "b_a"], ["a"], name="conv_a"),
        helper.make_node("PRelu", ["a", "slope"], ["p"], name="prelu_a"),
        helper.make_node("MaxPool", ["p"], ["m"], name="pool_a", kernel_shape=[3, 3], strides=[2, 2]),
        helper.make_node("Conv", ["m", "w_b", "b_b"], ["y"], name="conv_b"),
    ]
    graph = helper.make_graph(nodes, "float_stem", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, 16, 20, 20))], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _feeds(n: int, seed: int = 0) -> List[Dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal(SHAPE).astype(np.float32)} for _ in range(n)]


@pytest.fixture(scope="module")
def package(tmp_path_factory: Any) -> Any:
    tmp = tmp_path_factory.mktemp("ort_int8_speed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_package(_model(tmp / "float_stem.onnx"), target="onnxruntime", precision="int8",
                             calibration=_feeds(16), recipe={"exclude_nodes": ["conv_a"]}, mixed_precision=False,
                             allow_gate_failure=True, output=tmp / "int8.edgepkg")


def _optimized(model_path: Path, out: Path, disabled: str) -> Any:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = str(out)
    if disabled:
        so.add_session_config_entry(CONFIG_KEY, disabled)
    ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
    return onnx.load(str(out))


def _pool_reads(model: Any) -> str:
    """The op type that produces the (one) MaxPool's input in an optimized graph."""
    producer = {o: n for n in model.graph.node for o in n.output}
    pools = [n for n in model.graph.node if n.op_type == "MaxPool"]
    assert len(pools) == 1, [n.op_type for n in model.graph.node]
    return producer[pools[0].input[0]].op_type


def test_int8_package_records_and_applies_the_disabled_q_propagation(package):
    opts = package.package.target_info.runtime_options
    assert opts["disabled_optimizers"] == list(INT8_DISABLED_OPTIMIZERS) == ["QDQPropagationTransformer"]
    with edgekit.load(package.path, require_signature=False) as m:
        entry = m.runner.session.get_session_options().get_session_config_entry(CONFIG_KEY)
    assert entry == "QDQPropagationTransformer"


def test_float_stem_pool_stays_float_and_outputs_do_not_change(package, tmp_path):
    import zipfile

    # the build keeps the pool that reads a float PRelu float (its QuantizeLinear after it, on fewer elements)
    assert package.package.quantization.to_json()["pools_kept_float"] == ["pool_a"]
    zipfile.ZipFile(package.path).extractall(tmp_path / "pkg")
    model_path = tmp_path / "pkg" / "model" / "model.onnx"
    built = onnx.load(str(model_path))
    assert not any(n.op_type == "QuantizeLinear" and n.output[0] in {i for m in built.graph.node
                                                                      if m.name == "pool_a" for i in m.input}
                   for n in built.graph.node), "the build itself must not round the float stem's pool input"
    # onnxruntime's default: the QuantizeLinear conv_b needs is moved above the pool (a uint8 NCHW pool)
    assert _pool_reads(_optimized(model_path, tmp_path / "default.onnx", "")) == "QuantizeLinear"
    # as the package runs: the pool reads the float PRelu (NCHWc-reordered where MLAS has the blocked layout),
    # the rounding stays after it
    kept = _optimized(model_path, tmp_path / "kept.onnx", ";".join(INT8_DISABLED_OPTIMIZERS))
    assert _pool_reads(kept) in ("PRelu", "ReorderInput")
    assert sum(n.op_type == "QLinearConv" for n in kept.graph.node) == 1  # conv_b is still int8
    feed = _feeds(1, seed=7)[0]
    outs = []
    for disabled in ("", ";".join(INT8_DISABLED_OPTIMIZERS)):
        so = ort.SessionOptions()
        if disabled:
            so.add_session_config_entry(CONFIG_KEY, disabled)
        outs.append(ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"]).run(None, feed)[0])
    np.testing.assert_array_equal(outs[0], outs[1])  # the pool commutes with the rounding: same numbers


def test_fp32_package_keeps_every_optimizer(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = build_package(_model(tmp_path / "m.onnx"), target="onnxruntime", precision="fp32",
                            output=tmp_path / "fp32.edgepkg")
    assert "disabled_optimizers" not in res.package.target_info.runtime_options



def test_pools_after_float_follow_their_producer():
    from edgekit.targets.ort_int8_graph import pools_after_float

    def pool(src: str, out: str, name: str) -> Any:
        return helper.make_node("MaxPool", [src], [out], name=name, kernel_shape=[2, 2])

    nodes = [pool("x", "p0", "pool_on_input"), pool("p0", "p1", "pool_after_pool"),
             helper.make_node("Conv", ["p1", "w"], ["c"], name="conv_int8"), pool("c", "p2", "pool_after_int8"),
             helper.make_node("Conv", ["p2", "w"], ["d"], name="conv_float"), pool("d", "p3", "pool_after_excluded"),
             helper.make_node("PRelu", ["p3", "s"], ["e"], name="prelu"), pool("e", "y", "pool_after_prelu")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 1, 32, 32))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    assert pools_after_float(helper.make_model(graph), ["conv_float"]) == [
        "pool_on_input", "pool_after_pool", "pool_after_excluded", "pool_after_prelu"]


# ----------------------------------------------------------------- real networks (slow)
@pytest.mark.slow
def test_real_mtcnn_default_int8_runs_no_uint8_nchw_pool(tmp_path):
    """MTCNN O-Net (mixed precision keeps its first convolution float, before a PRelu and a pool): the default
    build passes its floor, and the graph onnxruntime runs, as packaged, has no uint8 NCHW pool."""
    import zipfile

    from realbuild import build_real

    res = build_real("mtcnn-onet", "onnxruntime", tmp_path)
    assert res.package.verification.passed
    disabled = res.package.target_info.runtime_options["disabled_optimizers"]
    zipfile.ZipFile(res.path).extractall(tmp_path / "pkg")
    runs = _optimized(tmp_path / "pkg" / "model" / "model.onnx", tmp_path / "opt.onnx", ";".join(disabled))
    producer = {o: n for n in runs.graph.node for o in n.output}
    pools = [n for n in runs.graph.node if n.op_type == "MaxPool" and (n.domain or "") == ""]
    assert not [p.name for p in pools if p.input[0] in producer and producer[p.input[0]].op_type == "QuantizeLinear"]


@pytest.mark.slow
def test_real_silero_vad_float_convolutions_run_blocked(tmp_path):
    """Silero VAD: mixed precision keeps its STFT convolution and encoder convolutions float (their int8 loses the
    model); each runs as a 2-D convolution on MLAS's blocked kernels in the graph onnxruntime executes — no 1-D
    float convolution is left on the im2col path — and the package still passes its floor."""
    import zipfile

    from realbuild import build_real

    res = build_real("silero-vad-lstm", "onnxruntime", tmp_path)
    assert res.package.verification.passed
    q = res.package.quantization.to_json()
    kept = {k["layer"] for k in q["mixed_precision"]["kept_float"] if k["op_type"] == "Conv"}
    assert kept and set(q["float_convs_as_2d"]) == kept
    zipfile.ZipFile(res.path).extractall(tmp_path / "pkg")
    runs = _optimized(tmp_path / "pkg" / "model" / "model.onnx", tmp_path / "opt.onnx",
                      ";".join(res.package.target_info.runtime_options["disabled_optimizers"]))
    blocked = sum(n.op_type == "Conv" and n.domain == NCHWC for n in runs.graph.node)
    if blocked == 0:
        pytest.skip("this onnxruntime build has no NCHWc kernels for this CPU")
    assert blocked == len(kept)
    assert not [n.name for n in runs.graph.node if n.op_type in ("Conv", "FusedConv") and n.domain != NCHWC]


# ----------------------------------------------------------------- HardSigmoid as a requantization
def _qdq_hardsigmoid(alpha: float, in_scale: float, in_zp: int) -> Any:
    """x → Q(in_scale, in_zp) → DQ → HardSigmoid(alpha, 0.5) → Q(1/255, 0) → DQ → y: what the quantizer writes."""
    f = np.float32
    inits = [numpy_helper.from_array(np.array(in_scale, f), "s_x"), numpy_helper.from_array(np.array(in_zp, np.uint8), "z_x"),
             numpy_helper.from_array(np.array(1 / 255, f), "s_h"), numpy_helper.from_array(np.array(0, np.uint8), "z_h")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s_x", "z_x"], ["xq"], name="q_x"),
             helper.make_node("DequantizeLinear", ["xq", "s_x", "z_x"], ["xd"], name="dq_x"),
             helper.make_node("HardSigmoid", ["xd"], ["h"], name="hsig", alpha=alpha, beta=0.5),
             helper.make_node("QuantizeLinear", ["h", "s_h", "z_h"], ["hq"], name="q_h"),
             helper.make_node("DequantizeLinear", ["hq", "s_h", "z_h"], ["y"], name="dq_h")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (256,))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, (256,))], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("alpha, in_scale, in_zp", [(1 / 6, 0.0857, 131), (1 / 6, 0.0312, 40), (0.2, 0.0192, 97)])
def test_hardsigmoid_becomes_one_int8_add_with_the_same_codes(alpha, in_scale, in_zp, tmp_path):
    from edgekit.targets.ort_int8_graph import hardsigmoid_as_requantize

    model = _qdq_hardsigmoid(alpha, in_scale, in_zp)
    x = {"x": (in_scale * (np.arange(256) - in_zp)).astype(np.float32)}  # every input code once
    before = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, x)[0]
    assert hardsigmoid_as_requantize(model, ()) == ["hsig"]
    assert [n.op_type for n in model.graph.node if n.name == "hsig"] == ["Add"]
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    after = sess.run(None, x)[0]
    ops = _ops(onnx.load(so.optimized_model_filepath))
    assert "HardSigmoid" not in ops and ops.get("QLinearAdd") == 1, ops
    # the same 8-bit codes, but for a tie rounded the other way (float scale products): at most one code, rarely
    diff = np.abs(np.round((after - before) * 255))
    assert diff.max() <= 1 and (diff > 0).sum() <= 2


def test_a_hardsigmoid_kept_float_or_quantized_otherwise_is_left_alone():
    from edgekit.targets.ort_int8_graph import hardsigmoid_as_requantize

    assert hardsigmoid_as_requantize(_qdq_hardsigmoid(1 / 6, 0.05, 128), ["hsig"]) == []
    model = _qdq_hardsigmoid(1 / 6, 0.05, 128)
    next(t for t in model.graph.initializer if t.name == "s_h").CopyFrom(
        numpy_helper.from_array(np.array(2 / 255, np.float32), "s_h"))  # a range other than [0, 1]
    assert hardsigmoid_as_requantize(model, ()) == []



def test_int8_build_of_a_hard_swish_runs_no_float_hardsigmoid(tmp_path):
    """conv → x * HardSigmoid(x) → conv, built int8: the graph onnxruntime runs is int8 from input to output."""
    from edgekit.quantize.calibration import CalibrationSet
    from edgekit.quantize.recipe import Recipe
    from edgekit.targets import BuildSpec, Precision
    from edgekit.targets.canonicalize import canonicalize
    from edgekit.targets.onnxruntime import OnnxRuntimeTarget

    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array((0.4 * rng.standard_normal((8, 3, 3, 3))).astype(np.float32), "w_a"),
             numpy_helper.from_array((0.2 * rng.standard_normal((8, 8, 1, 1))).astype(np.float32), "w_b")]
    nodes = [helper.make_node("Conv", ["x", "w_a"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
             helper.make_node("HardSigmoid", ["a"], ["g"], name="hsig", alpha=1 / 6, beta=0.5),
             helper.make_node("Mul", ["a", "g"], ["h"], name="hswish"),
             helper.make_node("Conv", ["h", "w_b"], ["y"], name="conv_b")]
    graph = helper.make_graph(nodes, "hswish", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 3, 16, 16))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, 8, 16, 16))], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "hs.onnx"))
    calib = CalibrationSet([{"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(16)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art = OnnxRuntimeTarget().build(canonicalize(tmp_path / "hs.onnx").model,
                                        BuildSpec(precision=Precision.INT8, recipe=Recipe(num_samples=16)), calib,
                                        tmp_path / "int8")
    assert art.quantization["hardsigmoids_requantized"] == 1
    ops = _ops(_optimized(tmp_path / "int8" / "model.onnx", tmp_path / "opt.onnx", ";".join(INT8_DISABLED_OPTIMIZERS)))
    assert "HardSigmoid" not in ops and ops.get("QLinearAdd") == 1 and ops.get("QLinearMul") == 1, ops
    assert ops.get("QuantizeLinear", 0) == 1 and ops.get("DequantizeLinear", 0) == 1, ops  # the model's input, output
    x = {"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)}
    y = ort.InferenceSession(str(tmp_path / "int8" / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, x)[0]
    y32 = ort.InferenceSession(str(tmp_path / "hs.onnx"), providers=["CPUExecutionProvider"]).run(None, x)[0]
    assert 10 * np.log10(np.sum(y32 ** 2) / np.sum((y - y32) ** 2)) > 25


def _ops(model: Any) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for n in model.graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return counts


# ----------------------------------------------------------------- float 1-D convolutions as 2-D


def _conv1d_model(specs: List[Dict[str, Any]], shape: tuple, opset: int = 13) -> Any:
    """A chain of 1-D convolutions (each ``dict(out=, k=, **attrs)``) with ReLUs between them."""
    rng = np.random.default_rng(11)
    nodes, inits, x, channels = [], [], "x", shape[1]
    for i, s in enumerate(specs):
        attrs = {k: v for k, v in s.items() if k not in ("out", "k")}
        group = attrs.get("group", 1)
        inits += [numpy_helper.from_array((0.3 * rng.standard_normal((s["out"], channels // group, s["k"])))
                                          .astype(np.float32), f"w{i}"),
                  numpy_helper.from_array((0.1 * rng.standard_normal(s["out"])).astype(np.float32), f"b{i}")]
        nodes += [helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], name=f"conv{i}", **attrs),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        x, channels = f"r{i}", s["out"]
    graph = helper.make_graph(nodes, "conv1d", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    # the output's shape, which the ONNX checker wants
    y = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": np.zeros(shape, np.float32)})[0]
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info(x, TensorProto.FLOAT, y.shape))
    return model


def _nchwc_convs(model: Any, tmp: Path, disabled: str = "") -> int:
    """How many convolutions onnxruntime runs with its blocked (NCHWc) kernels in ``model``."""
    onnx.save(model, str(tmp / "m.onnx"))
    return sum(n.op_type == "Conv" and n.domain == NCHWC
               for n in _optimized(tmp / "m.onnx", tmp / "opt.onnx", disabled).graph.node)


@pytest.mark.parametrize("specs, shape, opset, padded", [
    # Silero's encoder.0: 129 input channels, padded to 132; then a strided one
    ([dict(out=32, k=3, pads=[1, 1]), dict(out=16, k=3, pads=[1, 1], strides=[2])], (4, 129, 6), 13, ["conv0"]),
    # the STFT shape: one input channel, a long kernel with stride (MLAS's first-layer case, no padding)
    ([dict(out=34, k=16, strides=[8])], (3, 1, 72), 13, []),
    # dilation, uneven pads, 10 channels (padded to 12: AVX2's block is 8), a grouped convolution (its channels
    # left alone), axes as attributes before opset 13
    ([dict(out=24, k=3, dilations=[2], pads=[2, 1]), dict(out=24, k=3, group=2, pads=[1, 1])], (2, 10, 9), 11,
     ["conv0"]),
])
def test_conv1d_as_conv2d_is_exact(specs, shape, opset, padded):
    from edgekit.targets.ort_int8_graph import conv1d_as_conv2d

    model = _conv1d_model(specs, shape, opset)
    x = {"x": np.random.default_rng(2).standard_normal(shape).astype(np.float32)}
    before = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, x)[0]
    names = [f"conv{i}" for i in range(len(specs))]
    convs, helpers = conv1d_as_conv2d(model, names + ["relu0"])  # a name that is no convolution is ignored
    assert convs == names
    assert {n.name for n in model.graph.node if n.op_type == "Conv"} == set(names)  # the names stay
    assert all(len(t.dims) != 3 for t in model.graph.initializer)  # 2-D weights only; no stale 1-D copy left
    assert [h for h in helpers if h.endswith("/pad_channels")] == [f"{n}/pad_channels" for n in padded]
    after = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, x)[0]
    assert after.shape == before.shape
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5 * float(np.abs(before).max()))


def test_fp32_package_runs_its_conv1d_on_blocked_kernels(tmp_path):
    """fp32 too: every 1-D convolution of the package is a 2-D one onnxruntime blocks; the numbers are the
    source's (the pipeline verifies fp32 at 60 dB; here within float summation order)."""
    import zipfile

    plain = _conv1d_model([dict(out=32, k=3, pads=[1, 1]), dict(out=16, k=3, pads=[1, 1], strides=[2])], (8, 129, 6))
    onnx.save(plain, str(tmp_path / "conv1d.onnx"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = build_package(tmp_path / "conv1d.onnx", target="onnxruntime", precision="fp32",
                            output=tmp_path / "p.edgepkg")
    assert res.package.target_info.details["float_convs_as_2d"] == ["conv0", "conv1"]
    zipfile.ZipFile(res.path).extractall(tmp_path / "pkg")
    ops = _ops(_optimized(tmp_path / "pkg" / "model" / "model.onnx", tmp_path / "opt.onnx", ""))
    if not ops.get("ReorderOutput"):
        pytest.skip("this onnxruntime build has no NCHWc kernels for this CPU")
    assert ops.get("Conv") == 2 and "FusedConv" not in ops and ops["ReorderOutput"] == 1, ops
    x = {"x": np.random.default_rng(9).standard_normal((8, 129, 6)).astype(np.float32)}
    want = ort.InferenceSession(str(tmp_path / "conv1d.onnx"), providers=["CPUExecutionProvider"]).run(None, x)[0]
    with edgekit.load(res.path, require_signature=False) as m:
        got = next(iter(m.infer(x).values()))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))
    assert res.package.verification.passed


def test_a_chain_of_rewritten_convolutions_stays_4d(tmp_path):
    """conv → ReLU → conv → conv, all rewritten: no Squeeze/Unsqueeze between them, so onnxruntime keeps the
    blocked layout from the first convolution to the last (one reorder in, one out) and fuses the ReLUs."""
    from edgekit.targets.ort_int8_graph import conv1d_as_conv2d

    model = _conv1d_model([dict(out=32, k=3, pads=[1, 1]), dict(out=32, k=3, pads=[1, 1]),
                           dict(out=16, k=3, strides=[2])], (4, 32, 10))
    del model.graph.node[3]  # relu1: conv1 feeds conv2 directly
    model.graph.node[3].input[0] = "c1"
    x = {"x": np.random.default_rng(8).standard_normal((4, 32, 10)).astype(np.float32)}
    before = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, x)[0]
    convs, helpers = conv1d_as_conv2d(model, ["conv0", "conv1", "conv2"])
    assert convs == ["conv0", "conv1", "conv2"] and helpers == ["conv0/as_2d", "conv2/as_1d"]
    after = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, x)[0]
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5 * float(np.abs(before).max()))
    onnx.save(model, str(tmp_path / "chain.onnx"))
    ops = _ops(_optimized(tmp_path / "chain.onnx", tmp_path / "opt.onnx", ""))
    if not ops.get("ReorderOutput"):
        pytest.skip("this onnxruntime build has no NCHWc kernels for this CPU")
    # relu0 fused into conv0; relu2 reads the model's 1-D output after the last Squeeze
    assert ops["ReorderOutput"] == 1 and ops.get("ReorderInput", 0) <= 1 and ops.get("Relu") == 1, ops


def test_only_the_named_convolutions_are_rewritten():
    from edgekit.targets.ort_int8_graph import conv1d_as_conv2d

    model = _conv1d_model([dict(out=8, k=3), dict(out=8, k=3)], (1, 8, 12))
    model.graph.initializer.append(numpy_helper.from_array(np.zeros(3, np.float32), "spare"))  # read by no node
    assert conv1d_as_conv2d(model, ["conv1"]) == (["conv1"], ["conv1/as_2d", "conv1/as_1d"])
    inits = {t.name: t for t in model.graph.initializer}
    assert len(inits["w0"].dims) == 3 and "w1" not in inits
    assert "spare" in inits  # only the weights it replaced are dropped
    assert conv1d_as_conv2d(onnx.load_from_string(_model_bytes()), ["conv_a"]) == ([], [])  # already 2-D: untouched


def _model_bytes() -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return (_model(Path(tmp) / "m.onnx")).read_bytes()


def test_int8_package_runs_its_float_conv1d_on_blocked_kernels(tmp_path):
    """A 1-D convolution kept float (here by the recipe; on Silero VAD by mixed precision) reaches
    onnxruntime as a 2-D one and runs on MLAS's NCHWc kernels; as 1-D it runs im2col + one GEMM per batch
    item (Silero: 1.65 of 2.1 ms).  The int8 convolution after it stays int8, the outputs are the fp32
    model's within int8 noise."""
    plain = _conv1d_model([dict(out=32, k=3, pads=[1, 1]), dict(out=16, k=3, pads=[1, 1], strides=[2])], (8, 129, 6))
    if _nchwc_convs(plain, tmp_path) != 0 or \
            _nchwc_convs(_conv1d_model([dict(out=32, k=3, pads=[1, 1])], (8, 132, 6)), tmp_path) != 0:
        pytest.fail("onnxruntime now blocks 1-D convolutions itself: the rewrite may be dropped")
    onnx.save(plain, str(tmp_path / "conv1d.onnx"))
    rng = np.random.default_rng(4)
    feeds = [{"x": np.abs(rng.standard_normal((8, 129, 6))).astype(np.float32)} for _ in range(12)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = build_package(tmp_path / "conv1d.onnx", target="onnxruntime", precision="int8", calibration=feeds,
                            recipe={"exclude_nodes": ["conv0"]}, mixed_precision=False, output=tmp_path / "p.edgepkg")
    import zipfile

    zipfile.ZipFile(res.path).extractall(tmp_path / "pkg")
    built = onnx.load(str(tmp_path / "pkg" / "model" / "model.onnx"))
    runs = _optimized(tmp_path / "pkg" / "model" / "model.onnx", tmp_path / "opt.onnx",
                      ";".join(res.package.target_info.runtime_options["disabled_optimizers"]))
    ops = _ops(runs)
    assert ops.get("QLinearConv") == 1, ops  # conv1 is int8
    blocked = sum(n.op_type == "Conv" and n.domain == NCHWC for n in runs.graph.node)
    plain_conv = sum(n.op_type in ("Conv", "FusedConv") and n.domain in ("", "com.microsoft") for n in runs.graph.node)
    if blocked == 0 and plain_conv == 1 and _nchwc_convs(onnx.load(str(_model(tmp_path / "probe.onnx"))), tmp_path) == 0:
        pytest.skip("this onnxruntime build has no NCHWc kernels for this CPU")
    assert blocked == 1 and plain_conv == 0, ops
    # no rounding was added around the float convolution: its helpers stay float with it
    helper_names = {n.name for n in built.graph.node if n.name.startswith("conv0/")}
    assert helper_names == {"conv0/as_2d", "conv0/pad_channels", "conv0/as_1d"}
    producer = {o: n for n in built.graph.node for o in n.output}
    conv0 = next(n for n in built.graph.node if n.name == "conv0")
    assert producer[conv0.input[0]].op_type == "Pad" and producer[producer[conv0.input[0]].input[0]].op_type == "Unsqueeze"
    assert res.package.quantization.to_json()["float_convs_as_2d"] == ["conv0"]
    assert res.package.verification.passed

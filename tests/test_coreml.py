"""Core ML target: lowering, compression, the numpy reference executor, bad input.

The reference executor is compared with the fp32 source on onnxruntime; the
conformance suite (tests/conformance.py) runs every golden model through the
whole pipeline too.  Tests that need Core ML itself (macOS) skip elsewhere.
"""
from __future__ import annotations

import platform
import shutil
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
ct = pytest.importorskip("coremltools", reason="coremltools not installed: pip install 'edgekit[coreml]'")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import edgekit  # noqa: E402
from edgekit.errors import ConfigError, PackageError, RuntimeMissingError, UnsupportedModelError  # noqa: E402
from edgekit.runners.coreml.program import load_program  # noqa: E402
from edgekit.runners.coreml.reference import MilInterpreter  # noqa: E402
from edgekit.targets.coreml.image_input import plan_image_input  # noqa: E402
from edgekit.targets.canonicalize import canonicalize, load_onnx  # noqa: E402
from edgekit.targets.coreml.compress import compress_weights  # noqa: E402
from edgekit.targets.coreml.lower import lower  # noqa: E402
from edgekit.targets.coreml.schemes import Compression, DeploymentTarget, resolve_plan  # noqa: E402
from edgekit.targets.spec import Precision  # noqa: E402
from models.meta import GOLDEN_MODELS  # noqa: E402

BUNDLED = Path(__file__).resolve().parents[1] / "targets" / "data" / "fashion_mnist_cnn.onnx"


def _sqnr(ref: np.ndarray, out: np.ndarray) -> float:
    noise = float(np.sum((ref.astype(np.float64) - out) ** 2))
    return 200.0 if noise == 0 else 10 * np.log10(float(np.sum(ref.astype(np.float64) ** 2)) / noise)


def _save(model, path: Path, scheme: Compression = Compression.FP32, target=DeploymentTarget.IOS16) -> Path:
    """Lower, convert, compress and save; returns the .mlpackage (a fresh program per conversion)."""
    lowered = lower(model, target.ct_target())
    precision = ct.precision.FLOAT32 if scheme is Compression.FP32 else ct.precision.FLOAT16
    ml = ct.convert(lowered.program, convert_to="mlprogram", minimum_deployment_target=target.ct_target(),
                    compute_precision=precision)
    ml = compress_weights(ml, scheme)
    ml.save(str(path))
    return path


def _run_both(model, package: Path, seed: int = 0, fp16_rounding: bool = True):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    feed = {i.name: rng.standard_normal([d if isinstance(d, int) else 1 for d in i.shape]).astype(np.float32)
            for i in sess.get_inputs()}
    ref = sess.run(None, feed)
    prog = load_program(package)
    got = MilInterpreter(prog, fp16_rounding=fp16_rounding).run(
        {name: feed[k] for (name, _), k in zip(prog.inputs, feed)})
    return ref, [got[o] for o in prog.outputs]


# -- the lowering and the executor on every golden model ----------------------------

@pytest.mark.parametrize("gm", GOLDEN_MODELS, ids=lambda g: g.name)
def test_golden_fp32_and_fp16_match_onnxruntime(tmp_path, gm):
    canon = canonicalize(load_onnx(gm.path)).model
    for scheme, floor in ((Compression.FP32, 60.0), (Compression.FP16, 30.0)):
        pkg = _save(canon, tmp_path / f"{scheme.value}.mlpackage", scheme)
        ref, got = _run_both(canon, pkg)
        for r, g in zip(ref, got):
            assert g.shape == r.shape
            assert _sqnr(r, g) >= floor, f"{gm.name} {scheme.value}: {_sqnr(r, g):.1f} dB < {floor}"


def _extra_ops_model() -> "onnx.ModelProto":
    """Ops the golden models do not use: linear resizes (3 coordinate modes), ConvTranspose, Slice, Pad,
    PRelu, Elu, Softplus, one-sided Clip, ReduceMean, Squeeze/Unsqueeze, Gather, MatMul of two activations."""
    rng = np.random.default_rng(3)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.3, "w"),
        numpy_helper.from_array(rng.standard_normal((4, 4, 2, 2)).astype(np.float32) * 0.3, "wt"),
        numpy_helper.from_array(np.array([1.0, 1.0, 2.0, 2.0], np.float32), "scales"),
        numpy_helper.from_array(np.array([1, 4, 12, 20], np.int64), "sizes"),
        numpy_helper.from_array(np.array([1, 2], np.int64), "st"),
        numpy_helper.from_array(np.array([7, 9], np.int64), "en"),
        numpy_helper.from_array(np.array([2, 3], np.int64), "ax"),
        numpy_helper.from_array(np.array([0, 0, 1, 2, 0, 0, 1, 0], np.int64), "pads"),
        numpy_helper.from_array(rng.uniform(0.05, 0.3, (1, 4, 1, 1)).astype(np.float32), "slope"),
        numpy_helper.from_array(np.array(-0.5, np.float32), "lo"),
        numpy_helper.from_array(np.array([0], np.int64), "ax0"),
        numpy_helper.from_array(np.array([2, 0, 1], np.int64), "idx"),
        numpy_helper.from_array(np.array([3], np.int64), "ax3"),
    ]
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        n("Resize", ["c", "", "scales"], ["r1"], mode="linear", coordinate_transformation_mode="half_pixel"),
        n("Resize", ["c", "", "", "sizes"], ["r2"], mode="linear", coordinate_transformation_mode="align_corners"),
        n("Resize", ["c", "", "scales"], ["r3"], mode="linear", coordinate_transformation_mode="asymmetric"),
        n("ConvTranspose", ["c", "wt"], ["t"], strides=[2, 2]),
        n("Slice", ["r1", "st", "en", "ax"], ["s"]),
        n("Pad", ["s", "pads"], ["p"]),
        n("PRelu", ["p", "slope"], ["pr"]),
        n("Elu", ["pr"], ["e"], alpha=0.7),
        n("Softplus", ["e"], ["sp"]),
        n("Clip", ["sp", "lo"], ["cl"]),
        n("ReduceMean", ["cl"], ["rm"], axes=[2, 3], keepdims=0),
        n("Unsqueeze", ["rm", "ax0"], ["u"]),
        n("Squeeze", ["u", "ax0"], ["sq"]),
        n("Gather", ["sq", "idx"], ["g"], axis=1),
        n("Transpose", ["r2"], ["r2t"], perm=[0, 1, 3, 2]),
        n("MatMul", ["r2", "r2t"], ["mm"]),
        n("ReduceMax", ["mm"], ["mx"], axes=[3], keepdims=1),
        n("Add", ["r3", "t"], ["out2"]),
    ]
    graph = helper.make_graph(
        nodes, "extra_ops", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 10])],
        [helper.make_tensor_value_info("g", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("mx", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("out2", TensorProto.FLOAT, None)], inits)
    return _model(graph)


def _model(graph):
    """An opset-17 model whose outputs carry the shapes ONNX infers (the checker wants them)."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    ins = [i for i in model.graph.input if i.type.tensor_type.shape.dim
           and all(d.HasField("dim_value") for d in i.type.tensor_type.shape.dim)]
    if len(ins) == len(model.graph.input):  # static inputs: take the output shapes from a run
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        feed = {i.name: np.zeros([d.dim_value for d in i.type.tensor_type.shape.dim], np.float32) for i in ins}
        for out, value in zip(model.graph.output, sess.run(None, feed)):
            out.CopyFrom(helper.make_tensor_value_info(out.name, out.type.tensor_type.elem_type, list(value.shape)))
    return model


def test_ops_beyond_the_golden_models_match_onnxruntime(tmp_path):
    canon = canonicalize(_extra_ops_model()).model
    pkg = _save(canon, tmp_path / "extra.mlpackage")
    ref, got = _run_both(canon, pkg)
    for r, g in zip(ref, got):
        assert g.shape == r.shape
        assert _sqnr(r, g) >= 60.0, f"{_sqnr(r, g):.1f} dB"


# -- compression ----------------------------------------------------------------------

@pytest.mark.parametrize("scheme, floor", [(Compression.W8, 35.0), (Compression.PALETTIZE8, 30.0),
                                           (Compression.PALETTIZE6, 22.0), (Compression.PALETTIZE4, 12.0)])
@pytest.mark.parametrize("target", [DeploymentTarget.IOS16, DeploymentTarget.IOS18])
def test_weight_compression_through_the_executor(tmp_path, scheme, floor, target):
    canon = canonicalize(load_onnx(BUNDLED)).model
    pkg = _save(canon, tmp_path / "m.mlpackage", scheme, target)
    types = {op.type for op in load_program(pkg).ops}
    want = ("constexpr_lut_to_dense" if scheme.palette_bits else
            "constexpr_affine_dequantize" if target is DeploymentTarget.IOS16 else "constexpr_blockwise_shift_scale")
    assert want in types
    ref, got = _run_both(canon, pkg)
    assert floor <= _sqnr(ref[0], got[0]) < 80.0  # compressed: close, but not the fp32 weights


def test_executor_expands_weights_like_coremltools(tmp_path):
    """Our blob reader and constexpr kernels against coremltools' own decompression of the same model."""
    from coremltools.optimize.coreml import decompress_weights

    canon = canonicalize(load_onnx(BUNDLED)).model
    lowered = lower(canon, ct.target.iOS16)
    ml = ct.convert(lowered.program, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS16)
    packed = compress_weights(ml, Compression.PALETTIZE6)
    packed.save(str(tmp_path / "packed.mlpackage"))
    decompress_weights(packed).save(str(tmp_path / "plain.mlpackage"))
    x = np.random.default_rng(0).standard_normal((1, 1, 28, 28)).astype(np.float32)
    outs = []
    for name in ("packed", "plain"):
        prog = load_program(tmp_path / f"{name}.mlpackage")
        outs.append(MilInterpreter(prog).run({prog.inputs[0][0]: x})[prog.outputs[0]])
    np.testing.assert_array_equal(outs[0], outs[1])


def test_w8a8_package_on_the_bundled_model(tmp_path):
    out = edgekit.build(BUNDLED, device="iphone-15-pro", calibration=BUNDLED.parent / "fashion_mnist" / "calib",
                        preprocess=BUNDLED.parent / "fashion_mnist_model.json", task="classify",
                        output=tmp_path / "fm.edgepkg")
    with edgekit.load(out, runtime="coreml-reference") as m:
        details = m.manifest.details
        assert details["compression"] == "w8a8" and details["deployment_target"] == "ios17"
        assert m.manifest.quantization["activations"]["count"] == 4
        types = {op.type for op in m.runner.interpreter.program.ops}
        assert {"quantize", "dequantize", "constexpr_affine_dequantize"} <= types
        assert m.manifest.verification["passed"]


# -- plans and device profiles ------------------------------------------------------------

def test_compression_needing_a_newer_os_names_the_minimum():
    with pytest.raises(ConfigError, match=r"needs deployment target ios17 \(iOS 17\)"):
        resolve_plan(Precision.INT8, Compression.W8A8, True, DeploymentTarget.IOS16, True)
    with pytest.raises(ConfigError, match=r"macos14"):
        resolve_plan(Precision.INT8, Compression.W8A8, True, DeploymentTarget.MACOS13, True)
    plan = resolve_plan(Precision.INT8, Compression.W8A8, True, None, False)
    assert plan.deployment is DeploymentTarget.IOS17 and "raised" in plan.note
    with pytest.raises(ConfigError, match="precision is fp16"):
        resolve_plan(Precision.FP16, Compression.W8, True, None, False)


def test_build_refuses_w8a8_on_an_explicit_ios16(tmp_path):
    with pytest.raises(ConfigError, match="ios17"):
        edgekit.build(BUNDLED, target="coreml", precision="int8",
                      runtime_options={"compression": "w8a8", "deployment_target": "ios16"},
                      calibration=[{"input": np.zeros((1, 1, 28, 28), np.float32)}] * 4,
                      output=tmp_path / "x.edgepkg")
    assert not (tmp_path / "x.edgepkg").exists()


def test_apple_profiles():
    from edgekit.targets.devices import load_profiles

    from edgekit.targets.coreml import CoreMLTarget

    profiles = load_profiles()
    target = CoreMLTarget()
    for name in ("iphone-15-pro", "iphone-13", "mac-m1", "mac-m4"):
        p = profiles[name]
        assert p.target == "coreml"
        values = target.build_options.validate(p.target_options, source=name)
        plan = resolve_plan(Precision.parse(p.precision), values["compression"], False, values["deployment_target"], False)
        assert plan.deployment.level >= plan.compression.min_level


# -- bad input ------------------------------------------------------------------------------

def test_a_node_it_cannot_lower_is_named_with_the_reason(tmp_path):
    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"], name="act"),
         helper.make_node("NonZero", ["r"], ["nz"], name="where_nonzero")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("nz", TensorProto.INT64, None)])
    model = _model(g)
    with pytest.raises(UnsupportedModelError, match=r"where_nonzero \(NonZero\).*data-dependent"):
        edgekit.build(model, target="coreml", output=tmp_path / "x.edgepkg")


def test_a_runtime_weight_is_named_with_the_reason(tmp_path):
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv_dyn")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8]),
         helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 2, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = _model(g)
    with pytest.raises(UnsupportedModelError, match=r"conv_dyn \(Conv\).*computed at run time"):
        edgekit.build(model, target="coreml", output=tmp_path / "x.edgepkg")


def test_a_dynamic_dimension_without_size_asks_for_it(tmp_path):
    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, "h", "w"])])
    model = _model(g)
    with pytest.raises(UnsupportedModelError, match="--size"):
        edgekit.build(model, target="coreml", output=tmp_path / "x.edgepkg")


@pytest.fixture(scope="module")
def saved_package(tmp_path_factory):
    canon = canonicalize(load_onnx(BUNDLED)).model
    return _save(canon, tmp_path_factory.mktemp("pkg") / "m.mlpackage", Compression.FP16)


def test_missing_weight_file(tmp_path, saved_package):
    pkg = shutil.copytree(saved_package, tmp_path / "m.mlpackage")
    (pkg / "Data" / "com.apple.CoreML" / "weights" / "weight.bin").unlink()
    with pytest.raises(PackageError, match="weight file is missing"):
        load_program(pkg)


def test_short_weight_file(tmp_path, saved_package):
    pkg = shutil.copytree(saved_package, tmp_path / "m.mlpackage")
    blob = pkg / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    blob.write_bytes(blob.read_bytes()[: blob.stat().st_size // 2])
    with pytest.raises(PackageError, match="truncated"):
        load_program(pkg)


def test_weight_reader_agrees_with_coremltools_blob_reader(saved_package):
    from coremltools.libmilstoragepython import _BlobStorageReader

    from edgekit.runners.coreml.program import WeightFile

    path = saved_package / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    reader, ours = _BlobStorageReader(str(path)), WeightFile(path)
    spec = ct.utils.load_spec(str(saved_package))
    fn = spec.mlProgram.functions["main"]
    checked = 0
    for op in fn.block_specializations[fn.opset].operations:
        val = op.attributes.get("val")
        if op.type == "const" and val is not None and val.HasField("blobFileValue"):
            dims = tuple(int(d.constant.size) for d in val.type.tensorType.dimensions)
            mine = ours.read(int(val.blobFileValue.offset), "FLOAT16", dims)
            theirs = np.asarray(reader.read_fp16_data(int(val.blobFileValue.offset))).view(np.float16)
            np.testing.assert_array_equal(mine.reshape(-1), theirs.reshape(-1))
            checked += 1
    assert checked >= 3


def test_coreml_runner_off_macos_names_the_reference_runtime(tmp_path):
    if platform.system() == "Darwin":
        pytest.skip("on macOS the coreml runner runs Core ML itself (test_coreml_runner_on_macos)")
    out = edgekit.build(BUNDLED, target="coreml", output=tmp_path / "fm.edgepkg")
    with pytest.raises(RuntimeMissingError, match="--runtime coreml-reference"):
        edgekit.load(out)
    with edgekit.load(out, runtime="coreml-reference") as m:
        y = m.infer({"input": np.zeros((1, 1, 28, 28), np.float32)})
        assert y["logits"].shape == (1, 10)


@pytest.mark.skipif(platform.system() != "Darwin", reason="Core ML predicts only on macOS (coremltools on Linux cannot)")
def test_coreml_runner_on_macos(tmp_path):  # pragma: no cover - macOS only
    out = edgekit.build(BUNDLED, target="coreml", output=tmp_path / "fm.edgepkg")
    x = {"input": np.random.default_rng(0).standard_normal((1, 1, 28, 28)).astype(np.float32)}
    with edgekit.load(out, compute_units="CPU_ONLY") as m, edgekit.load(out, runtime="coreml-reference") as ref:
        assert _sqnr(ref.infer(x)["logits"], m.infer(x)["logits"]) >= 30.0


def test_neural_engine_report_flags_fp32_compute(tmp_path):
    out = edgekit.build(BUNDLED, target="coreml", precision="fp32", output=tmp_path / "fm32.edgepkg")
    with edgekit.load(out, runtime="coreml-reference") as m:
        report = m.manifest.details["neural_engine"]
        assert report["checked_ops"] > 0
        assert any("fp32 compute" in r["reason"] and r["op"] == "conv" for r in report["at_risk"])


# -- LSTM --------------------------------------------------------------------------------------

def _lstm_model(direction: str, state_inputs: bool, seed: int = 0) -> "onnx.ModelProto":
    """A one-layer LSTM (7 steps, 5 features, hidden 8) feeding a Relu; Y, Y_h and Y_c are all outputs."""
    rng = np.random.default_rng(seed)
    S, B, I, H = 7, 1, 5, 8
    inits = [numpy_helper.from_array(rng.standard_normal((1, 4 * H, I)).astype(np.float32) * 0.5, "W"),
             numpy_helper.from_array(rng.standard_normal((1, 4 * H, H)).astype(np.float32) * 0.5, "R"),
             numpy_helper.from_array(rng.standard_normal((1, 8 * H)).astype(np.float32) * 0.3, "B")]
    ins = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [S, B, I])]
    node_in = ["x", "W", "R", "B"]
    if state_inputs:  # streaming models (Silero VAD) feed the state back every call
        ins += [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, B, H]) for n in ("h0", "c0")]
        node_in += ["", "h0", "c0"]
    nodes = [helper.make_node("LSTM", node_in, ["Y", "Y_h", "Y_c"], hidden_size=H, direction=direction, name="lstm"),
             helper.make_node("Relu", ["Y"], ["y"])]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "Y_h", "Y_c")]
    return _model(helper.make_graph(nodes, "lstm", ins, outs, inits))


@pytest.mark.parametrize("direction", ["forward", "reverse"])
@pytest.mark.parametrize("state_inputs", [False, True], ids=["zero-state", "state-inputs"])
def test_lstm_matches_onnxruntime(tmp_path, direction, state_inputs):
    canon = canonicalize(_lstm_model(direction, state_inputs)).model
    for scheme, floor in ((Compression.FP32, 60.0), (Compression.FP16, 30.0)):
        pkg = _save(canon, tmp_path / f"{scheme.value}.mlpackage", scheme)
        assert "lstm" in {op.type for op in load_program(pkg).ops}
        ref, got = _run_both(canon, pkg)
        for r, g in zip(ref, got):
            assert g.shape == r.shape
            assert _sqnr(r, g) >= floor, f"{direction} {scheme.value}: {_sqnr(r, g):.1f} dB < {floor}"


def test_lstm_the_lowering_cannot_take_is_named(tmp_path):
    model = _lstm_model("forward", False)
    model.graph.node[0].attribute.append(helper.make_attribute("clip", 3.0))
    with pytest.raises(UnsupportedModelError, match=r"lstm \(LSTM.*clip is not lowered"):
        edgekit.build(model, target="coreml", output=tmp_path / "x.edgepkg")
    assert not (tmp_path / "x.edgepkg").exists()


# -- image inputs ----------------------------------------------------------------------------------

def _steps(color="rgb", mean=(0.5, 0.4, 0.3), std=(0.25,), layout="nchw", dtype="float32"):
    from edgekit.preprocess import default_image_steps

    return default_image_steps(16, 16, color=color, mean=mean, std=std, layout=layout, dtype=dtype)


def test_image_input_plan_folds_a_plain_scale_bias_only():
    plan, why = plan_image_input(_steps("bgr"), [("x", [1, 3, 16, 16])])
    assert why == "" and plan.color_layout == "BGR" and (plan.height, plan.width) == (16, 16)
    assert plan.scale == pytest.approx(1 / 255 / 0.25)
    assert plan.bias == pytest.approx((-0.5 / 0.25, -0.4 / 0.25, -0.3 / 0.25))
    gray, _ = plan_image_input(_steps("gray", mean=(0.5,), std=(0.5,)), [("x", [1, 1, 16, 16])])
    assert gray.color_layout == "GRAYSCALE" and gray.bias == pytest.approx((-1.0,))
    refusals = {
        "scales the channels differently": (_steps(std=(0.229, 0.224, 0.225)), [("x", [1, 3, 16, 16])]),  # ImageNet
        "NHWC": (_steps(layout="nhwc"), [("x", [1, 16, 16, 3])]),
        "2 inputs": (_steps(), [("x", [1, 3, 16, 16]), ("y", [1, 4])]),
        "not an image pipeline": ((), [("x", [1, 3, 16, 16])]),
    }
    for needle, (steps, inputs) in refusals.items():
        plan, why = plan_image_input(steps, inputs)
        assert plan is None and needle in why, (needle, why)


def _rgb_model() -> "onnx.ModelProto":
    rng = np.random.default_rng(5)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.3, "w")
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                           helper.make_node("Relu", ["c"], ["y"])], "rgb",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    return _model(g)


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(9)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root


def test_bgr_image_input_end_to_end(tmp_path, photo_folder):
    from PIL import Image

    from edgekit.runners.coreml.features import ImageFeed

    out = edgekit.build(_rgb_model(), target="coreml", precision="fp16", calibration=photo_folder,
                        preprocess=_steps("bgr"), output=tmp_path / "img.edgepkg")
    pkg = edgekit.load(out, runtime="coreml-reference")
    with pkg as m:
        details = m.manifest.details
        assert details.input_type == "image" and details.image_input.color_layout == "BGR"
        assert m.manifest.inputs[0].shape == (1, 3, 16, 16)  # the manifest keeps the preprocessed tensor
        spec = ct.utils.load_spec(str(m.runner.package))
        image = spec.description.input[0].type.imageType
        assert (image.width, image.height, ct.proto.FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name(image.colorSpace)) \
            == (16, 16, "BGR")
        assert m.manifest.verification["passed"] and m.manifest.verification["min_sqnr_db"] >= 30.0
        # the pixels an app would hand Core ML are the image's own: the feed undoes the folded scale/bias exactly
        photo = next(iter(sorted(photo_folder.glob("*.png"))))
        tensor = m.preprocess(str(photo))
        tensor = next(iter(tensor.values())) if isinstance(tensor, dict) else tensor
        feed = ImageFeed.of(m.manifest)
        resized = np.asarray(Image.open(photo).convert("RGB").resize((16, 16), Image.BILINEAR))[..., ::-1]
        np.testing.assert_allclose(feed.pixels(tensor)[0], np.transpose(resized, (2, 0, 1)), atol=1e-3)
        assert np.asarray(feed.pil_image(tensor)).shape == (16, 16, 3)


def test_image_input_can_be_turned_off(tmp_path, photo_folder):
    out = edgekit.build(_rgb_model(), target="coreml", precision="fp32", calibration=photo_folder,
                        preprocess=_steps("rgb"), build_options={"image_input": False}, output=tmp_path / "t.edgepkg")
    with edgekit.load(out, runtime="coreml-reference") as m:
        assert m.manifest.details.input_type == "tensor" and m.manifest.details.image_input is None
        assert "image_input is off" in m.manifest.details.extra["tensor_input_reason"]


def test_inspect_lists_the_neural_engine_layers_at_risk(tmp_path):
    from typer.testing import CliRunner

    from edgekit.cli import app

    out = edgekit.build(BUNDLED, target="coreml", precision="fp32", output=tmp_path / "fm32.edgepkg")
    res = CliRunner().invoke(app, ["inspect", str(out)])
    assert res.exit_code == 0, res.output
    assert "neural engine" in res.output and "layers at risk" in res.output
    assert "(conv, ONNX node conv1): fp32 compute" in res.output
    assert "input      tensor (MLMultiArray)" in res.output


# -- enumerated sizes ----------------------------------------------------------------------------------

def test_enumerated_sizes_on_a_fully_convolutional_model(tmp_path, photo_folder):
    out = edgekit.build(_rgb_model(), target="coreml", precision="fp16", calibration=photo_folder,
                        preprocess=_steps("bgr"), build_options={"enumerated_sizes": ["24x32", "8x8", "16x16"]},
                        output=tmp_path / "enum.edgepkg")
    with edgekit.load(out, runtime="coreml-reference") as m:
        shapes = m.manifest.details.enumerated_shapes
        assert [list(s.shape) for s in shapes] == [[1, 3, 16, 16], [1, 3, 24, 32], [1, 3, 8, 8]]  # default first, once
        assert shapes[0].default and all(s.sqnr_db >= 30.0 for s in shapes[1:])
        image = ct.utils.load_spec(str(m.runner.package)).description.input[0].type.imageType
        sizes = {(s.height, s.width) for s in image.enumeratedSizes.sizes}
        assert sizes == {(16, 16), (24, 32), (8, 8)}
        # enumerated sizes are specialized statically on the device: not reported as dynamic dims
        assert not any("dynamic" in r.reason for r in m.manifest.details.neural_engine.at_risk)
        # the program itself runs at every size (the manifest, and so edgekit's runners, keep the default)
        for shape in ([1, 3, 24, 32], [1, 3, 8, 8]):
            pixels = np.random.default_rng(1).integers(0, 256, shape).astype(np.float32)
            prog = m.runner.interpreter
            assert prog.run({prog.program.inputs[0][0]: pixels})[prog.program.outputs[0]].shape == (1, 4, *shape[2:])


def test_enumerated_sizes_refuse_a_graph_fixed_to_its_size(tmp_path):
    with pytest.raises(UnsupportedModelError, match=r"flatten \(Flatten\).*one package per size"):
        edgekit.build(BUNDLED, target="coreml", build_options={"enumerated_sizes": ["56x56"]},
                      output=tmp_path / "x.edgepkg")
    with pytest.raises(ConfigError, match='"enumerated_sizes" entries must be HxW'):
        edgekit.build(_rgb_model(), target="coreml", build_options={"enumerated_sizes": ["big"]},
                      output=tmp_path / "x.edgepkg")
    assert not (tmp_path / "x.edgepkg").exists()


def test_space_to_depth_and_depth_to_space_match_onnxruntime(tmp_path):
    """A YOLOX "Focus"-style SpaceToDepth, a conv, and DepthToSpace (DCR) back: MIL's ops keep ONNX's channel
    order (TensorFlow's); CRD is named as not lowered."""
    rng = np.random.default_rng(3)
    w = numpy_helper.from_array(rng.standard_normal((12, 12, 1, 1)).astype(np.float32), "w")
    nodes = [helper.make_node("SpaceToDepth", ["x"], ["s"], blocksize=2),
             helper.make_node("Conv", ["s", "w"], ["c"]),
             helper.make_node("DepthToSpace", ["c"], ["y"], blocksize=2, mode="DCR")]
    graph = helper.make_graph(nodes, "s2d", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 12])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    canon = canonicalize(_model(graph)).model
    ref, got = _run_both(canon, _save(canon, tmp_path / "s2d.mlpackage"), fp16_rounding=False)
    assert got[0].shape == ref[0].shape == (1, 3, 8, 12)
    assert _sqnr(ref[0], got[0]) >= 100.0
    nodes[2] = helper.make_node("DepthToSpace", ["c"], ["y"], blocksize=2, mode="CRD")
    crd = helper.make_graph(nodes, "crd", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 12])],
                            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    with pytest.raises(UnsupportedModelError, match="mode=CRD"):
        edgekit.build(_model(crd), target="coreml", precision="fp32", output=tmp_path / "crd.edgepkg")


def test_int8_layers_kept_out_leave_their_weights_float(tmp_path):
    """A layer the recipe (or the mixed-precision search) keeps out of int8: its weights stay uncompressed
    (ct.convert renames ops for fp16; the compression is told their new names) and the package computes
    what the fp16 model does."""
    import zipfile

    gm = next(g for g in GOLDEN_MODELS if g.name == "conv_bn_relu")
    shapes = {t.name: t.shape for t in gm.inputs}
    rng = np.random.default_rng(0)

    def feeds(n):
        return [{k: rng.standard_normal(v).astype(np.float32) for k, v in shapes.items()} for _ in range(n)]

    def build(recipe, name):
        out = edgekit.build(str(gm.path), target="coreml", precision="int8", calibration=feeds(24),
                            validation=feeds(8), recipe=recipe, mixed_precision=False, allow_gate_failure=True,
                            output=tmp_path / name)
        with edgekit.load(out, runtime="coreml-reference") as m:
            sqnr = m.manifest.verification.outputs[0].sqnr_db
        unpacked = tmp_path / (name + ".d")
        zipfile.ZipFile(out).extractall(unpacked)
        prog = load_program(next(unpacked.rglob("*.mlpackage")))
        return sqnr, sum(op.type == "constexpr_affine_dequantize" for op in prog.ops)

    int8_db, int8_compressed = build({}, "int8.edgepkg")
    types = sorted({n.op_type for n in onnx.load(str(gm.path)).graph.node})
    kept_db, kept_compressed = build({"exclude_op_types": types}, "kept.edgepkg")
    assert int8_compressed >= 1 and kept_compressed == 0
    assert kept_db > int8_db + 10.0, (int8_db, kept_db)


def test_int8_search_models_what_the_scheme_rounds(tmp_path):
    """The mixed-precision twin rounds what the Core ML scheme rounds: weights alone for ``w8`` (its default
    int8), activations too for ``w8a8`` — a w8 build judged on a twin that also rounded every activation
    kept layers in float it never needed (PP-OCRv4 rec: twin 11.8 dB, real w8 build 22.4 dB)."""
    from edgekit.quantize.recipe import Recipe
    from edgekit.targets.spec import BuildSpec
    from edgekit.targets.stages import get_target

    coreml = get_target("coreml")
    assert not coreml.int8_rounds_activations(BuildSpec(precision=Precision.INT8, recipe=Recipe()))
    assert coreml.int8_rounds_activations(BuildSpec(precision=Precision.INT8, recipe=Recipe(),
                                                    build_options={"compression": "w8a8"}))
    assert get_target("onnxruntime").int8_rounds_activations(BuildSpec(precision=Precision.INT8, recipe=Recipe()))

    gm = next(g for g in GOLDEN_MODELS if g.name == "conv_bn_relu")
    shapes = {t.name: t.shape for t in gm.inputs}
    rng = np.random.default_rng(0)

    def feeds(n):
        return [{k: rng.standard_normal(v).astype(np.float32) for k, v in shapes.items()} for _ in range(n)]

    # a floor above what w8 reaches (~47 dB) and under fp16 compute's (~68 dB): the search runs and meets it
    out = edgekit.build(str(gm.path), target="coreml", precision="int8", calibration=feeds(24),
                        validation=feeds(8), gates={"min_sqnr_db": 55.0},
                        mixed_precision={"max_float_share": 1.0, "speed_check": False}, output=tmp_path / "w8.edgepkg")
    with edgekit.load(out, runtime="coreml-reference") as m:
        mp = m.manifest.quantization["mixed_precision"]
    weighted = [n for n in onnx.load(str(gm.path)).graph.node if n.op_type in {"Conv", "Gemm", "MatMul"}]
    # one quantization point per weight, none for an activation
    assert mp["sensitivity"]["points"] == len(weighted) >= 1
    assert mp["passed"] and mp["attempts"][0]["sqnr_db"] < 55.0 <= mp["attempts"][-1]["sqnr_db"]

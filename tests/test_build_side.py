"""Build side: recipes, calibration feeds, parity, canonicalization and the onnxruntime target.

Models are made inline with onnx.helper so every test states what it needs.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgekit.errors import CalibrationError, ConfigError, GateError, ModelError  # noqa: E402
from edgekit.manifest import TensorSpec  # noqa: E402
from edgekit.quantize.calibration import CalibrationReader, CalibrationSet, load_feeds  # noqa: E402
from edgekit.quantize.parity import SQNR_CAP_DB, check_gates, compare_outputs  # noqa: E402
from edgekit.quantize.recipe import CalibrationMethod, OpConfig, QuantDtype, Recipe  # noqa: E402
from edgekit.targets.base import BuildSpec, Precision  # noqa: E402
from edgekit.targets.canonicalize import canonicalize, load_onnx, onnx_sha256  # noqa: E402
from edgekit.targets.onnxruntime import ORT_CPU_LACKS, OnnxRuntimeTarget  # noqa: E402

C_OUT, N_CLASSES = 8, 5


# ---------------------------------------------------------------------------
# tiny models
# ---------------------------------------------------------------------------

def make_cnn(batch: Any = "N", hw=(16, 16), opset: int = 17, layout: str = "nchw", seed: int = 0):
    """conv(3→8, 3x3) + BatchNorm + Relu + GlobalAveragePool + Flatten + Gemm(8→5); dynamic batch."""
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.3, (C_OUT, 3, 3, 3)).astype(np.float32)
    b = rng.normal(0, 0.1, C_OUT).astype(np.float32)
    scale = rng.uniform(0.5, 1.5, C_OUT).astype(np.float32)
    bias = rng.normal(0, 0.1, C_OUT).astype(np.float32)
    mean = rng.normal(0, 0.1, C_OUT).astype(np.float32)
    var = rng.uniform(0.5, 1.5, C_OUT).astype(np.float32)
    gw = rng.normal(0, 0.3, (N_CLASSES, C_OUT)).astype(np.float32)
    gb = rng.normal(0, 0.1, N_CLASSES).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in
             [(w, "W"), (b, "B"), (scale, "bn_s"), (bias, "bn_b"), (mean, "bn_m"), (var, "bn_v"), (gw, "GW"), (gb, "GB")]]
    nodes = []
    x = "x"
    if layout == "nhwc":
        nodes.append(helper.make_node("Transpose", ["x"], ["x_nchw"], name="to_nchw", perm=[0, 3, 1, 2]))
        x = "x_nchw"
    nodes += [
        helper.make_node("Conv", [x, "W", "B"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "bn_s", "bn_b", "bn_m", "bn_v"], ["bn"], name="bn"),
        helper.make_node("Relu", ["bn"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "GW", "GB"], ["logits"], name="fc", transB=1),
    ]
    in_shape = [batch, 3, *hw] if layout == "nchw" else [batch, *hw, 3]
    graph = helper.make_graph(
        nodes, "cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, N_CLASSES])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="test")
    model.ir_version = 8
    return model


def make_custom_op_model():
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("FancyOp", ["r"], ["y"], name="my_fancy_node", domain="acme.ops"),
    ]
    graph = helper.make_graph(nodes, "custom", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("acme.ops", 1)])
    model.ir_version = 8
    return model


def make_two_input_model():
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["y"], name="add")], "two",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 4]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def run(model_or_path: Any, feeds: List[Dict[str, np.ndarray]]) -> List[Dict[str, np.ndarray]]:
    src = model_or_path.SerializeToString() if hasattr(model_or_path, "SerializeToString") else str(model_or_path)
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return [dict(zip(names, sess.run(None, f))) for f in feeds]


def samples(n: int, seed: int, shape=(1, 3, 16, 16)) -> np.ndarray:
    """Calibration/validation data from one fixed distribution (seeded)."""
    return np.random.default_rng(seed).normal(0.2, 1.0, (n, *shape[1:])).astype(np.float32)


@pytest.fixture(scope="module")
def canon():
    return canonicalize(make_cnn())


@pytest.fixture(scope="module")
def calib(canon):
    return load_feeds(samples(64, seed=1), canon.inputs)


@pytest.fixture(scope="module")
def holdout():
    return [{"x": s[None]} for s in samples(16, seed=2)]


def spec_for(precision: str, recipe: Recipe = Recipe(), **options: Any) -> BuildSpec:
    return BuildSpec(precision=Precision(precision), recipe=recipe, runtime_options=options)


def quiet_build(target, model, spec, calibration, workdir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return target.build(model, spec, calibration, workdir)


# ---------------------------------------------------------------------------
# recipe
# ---------------------------------------------------------------------------

class TestRecipe:
    def test_defaults_and_enums(self):
        r = Recipe()
        assert r.method is CalibrationMethod.MINMAX and r.num_samples == 200 and r.percentile == 99.999
        assert r.global_config.activation_dtype is QuantDtype.UINT8
        assert OpConfig(activation_dtype="int16").activation_dtype is QuantDtype.INT16
        assert Recipe(method="entropy").method is CalibrationMethod.ENTROPY

    def test_precedence_global_optype_node(self):
        r = Recipe(
            global_config=OpConfig(activation_dtype="uint8"),
            op_types={"Conv": OpConfig(activation_dtype="int8")},
            nodes={"conv_special": OpConfig(activation_dtype="uint16"), "fc": OpConfig(skip=True)},
            exclude_nodes=("excluded_conv",),
            exclude_op_types=("Softmax",),
        )
        assert r.config_for("relu", "Relu").activation_dtype is QuantDtype.UINT8
        assert r.config_for("conv1", "Conv").activation_dtype is QuantDtype.INT8
        assert r.config_for("conv_special", "Conv").activation_dtype is QuantDtype.UINT16
        assert r.config_for("fc", "Gemm").skip
        exc = r.config_for("excluded_conv", "Conv")
        assert exc.skip and exc.activation_dtype is QuantDtype.INT8  # exclude keeps the rest of the config
        assert r.skips("sm", "Softmax") and not r.skips("conv1", "Conv")

    def test_json_round_trip(self, tmp_path):
        r = Recipe(method="percentile", percentile=99.9, num_samples=50,
                   global_config=OpConfig(activation_dtype="int8", per_channel=False, symmetric_activations=True),
                   op_types={"Gemm": OpConfig(skip=True)}, nodes={"conv": OpConfig(weight_dtype="uint8")},
                   exclude_nodes=("a", "b"), exclude_op_types=("Softmax",))
        data = json.loads(json.dumps(r.to_json()))
        assert Recipe.from_json(data) == r
        path = r.save(tmp_path / "recipe.json")
        assert Recipe.load(path) == r
        assert Recipe.from_json({}) == Recipe()
        assert hash(r) == hash(Recipe.from_json(data))

    def test_frozen_and_read_only_maps(self):
        r = Recipe(op_types={"Conv": OpConfig()})
        with pytest.raises(dataclasses.FrozenInstanceError):
            r.method = CalibrationMethod.ENTROPY  # type: ignore[misc]
        with pytest.raises(TypeError):
            r.op_types["Gemm"] = OpConfig()  # type: ignore[index]

    @pytest.mark.parametrize("kwargs, message", [
        ({"method": "x"}, "\"method\" must be one of {'minmax', 'percentile', 'entropy', 'mse'}, but got 'x'"),
        ({"percentile": 0}, '"percentile" must be a number in (0, 100], but got 0'),
        ({"percentile": 101.0}, '"percentile" must be a number in (0, 100]'),
        ({"num_samples": 0}, '"num_samples" must be a positive integer, but got 0'),
        ({"num_samples": True}, '"num_samples" must be a positive integer'),
        ({"exclude_nodes": "conv"}, '"exclude_nodes" must be a list of strings'),
        ({"op_types": {"Conv": {"skip": True}}}, '"op_types[\'Conv\']" must be an OpConfig'),
    ])
    def test_construction_errors(self, kwargs, message):
        with pytest.raises(ConfigError) as e:
            Recipe(**kwargs)
        assert message in str(e.value)

    def test_opconfig_errors(self):
        with pytest.raises(ConfigError, match=r"\"activation_dtype\" must be one of \{'uint8', 'int8', 'uint16', 'int16'\}, but got 'fp8'"):
            OpConfig(activation_dtype="fp8")
        with pytest.raises(ConfigError, match=r"\"weight_dtype\" must be one of \{'int8', 'uint8'\}, but got 'int16'"):
            OpConfig(weight_dtype="int16")
        with pytest.raises(ConfigError, match='"skip" must be true or false'):
            OpConfig(skip="yes")  # type: ignore[arg-type]

    @pytest.mark.parametrize("data, message", [
        ({"method": "fast"}, "recipe.method: must be one of"),
        ({"global_config": {"activation_dtype": "fp8"}}, "recipe.global_config.activation_dtype: must be one of"),
        ({"op_types": {"Conv": {"per_chanel": True}}}, "recipe.op_types.Conv.per_chanel: unknown field"),
        ({"nodes": {"fc": {"skip": "no"}}}, "recipe.nodes.fc.skip: must be true or false"),
        ({"nodes": []}, "recipe.nodes: expected an object"),
        ({"exclude_nodes": "fc"}, "recipe.exclude_nodes: expected a list"),
        ({"metod": "minmax"}, "recipe.metod: unknown field"),
        ({"schema": "edgekit.recipe/9"}, "recipe.schema"),
        ([], "recipe: expected an object"),
    ])
    def test_from_json_errors_name_the_field(self, data, message):
        with pytest.raises(ConfigError) as e:
            Recipe.from_json(data)
        assert message in str(e.value)

    def test_load_errors(self, tmp_path):
        with pytest.raises(ConfigError, match="does not exist"):
            Recipe.load(tmp_path / "nope.json")
        bad = tmp_path / "bad.json"
        bad.write_text("{\"method\": ")
        with pytest.raises(ConfigError, match=r"bad.json: not valid JSON \(line 1"):
            Recipe.load(bad)
        wrong = tmp_path / "wrong.json"
        wrong.write_text(json.dumps({"num_samples": -3}))
        with pytest.raises(ConfigError, match=r"wrong.json.num_samples: must be a positive integer"):
            Recipe.load(wrong)


# ---------------------------------------------------------------------------
# calibration feeds
# ---------------------------------------------------------------------------

X_SPEC = (TensorSpec("x", (1, 3, 8, 8), "float32", "nchw"),)
TWO_SPECS = (TensorSpec("a", (1, 4)), TensorSpec("b", (1, 4)))


def image_preprocessor(size=8):
    from edgekit.preprocess import Preprocessor, default_image_steps

    return Preprocessor(default_image_steps(size, size, layout="nchw"))


def write_png(path: Path, value: int, size=(10, 12)):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


class TestLoadFeeds:
    def test_npz_both_stackings(self, tmp_path):
        data = samples(5, 0, (1, 3, 8, 8))
        p1 = tmp_path / "a.npz"
        np.savez(p1, x=data)  # [N, 3, 8, 8]
        p2 = tmp_path / "b.npz"
        np.savez(p2, x=data[:, None])  # [N, 1, 3, 8, 8]
        for p in (p1, p2):
            cs = load_feeds(p, X_SPEC)
            assert len(cs) == 5 and cs.labels is None and str(p) in cs.source
            assert cs.feeds[3]["x"].shape == (1, 3, 8, 8)
            np.testing.assert_array_equal(cs.feeds[3]["x"][0], data[3])

    def test_npz_multi_input_and_dtype_cast(self, tmp_path):
        p = tmp_path / "two.npz"
        np.savez(p, a=np.arange(12, dtype=np.float64).reshape(3, 4), b=np.ones((3, 1, 4), np.int32))
        cs = load_feeds(p, TWO_SPECS)
        assert len(cs) == 3
        assert cs.feeds[1]["a"].dtype == np.float32 and cs.feeds[1]["b"].dtype == np.float32
        np.testing.assert_array_equal(cs.feeds[1]["a"], [[4, 5, 6, 7]])

    def test_npz_name_mismatch(self, tmp_path):
        p = tmp_path / "bad.npz"
        np.savez(p, images=samples(2, 0, (1, 3, 8, 8)))
        with pytest.raises(CalibrationError) as e:
            load_feeds(p, X_SPEC)
        msg = str(e.value)
        assert "['images']" in msg and "['x']" in msg and "np.savez" in msg and "\n" not in msg

    def test_npz_wrong_shape(self, tmp_path):
        p = tmp_path / "shape.npz"
        np.savez(p, x=np.zeros((2, 3, 9, 8), np.float32))
        with pytest.raises(CalibrationError, match=r"'x' expects samples of shape \[1, 3, 8, 8\].*got \[2, 3, 9, 8\]"):
            load_feeds(p, X_SPEC)

    def test_npz_refuses_pickled_arrays(self, tmp_path):
        p = tmp_path / "obj.npz"
        np.savez(p, x=np.array([{"a": 1}, None], dtype=object))
        with pytest.raises(CalibrationError, match="pickle"):
            load_feeds(p, X_SPEC)

    def test_npy_single_input_only(self, tmp_path):
        p = tmp_path / "x.npy"
        np.save(p, samples(4, 0, (1, 3, 8, 8)))
        assert len(load_feeds(p, X_SPEC)) == 4
        assert len(load_feeds(p, X_SPEC, limit=2)) == 2
        p2 = tmp_path / "a.npy"
        np.save(p2, np.zeros((2, 4), np.float32))
        with pytest.raises(CalibrationError, match="one input, but the model has 2"):
            load_feeds(p2, TWO_SPECS)

    def test_corrupt_npz(self, tmp_path):
        p = tmp_path / "broken.npz"
        p.write_bytes(b"not a zip")
        with pytest.raises(CalibrationError, match="cannot read the .npz"):
            load_feeds(p, X_SPEC)

    def test_iterables(self):
        arrays = [np.zeros((3, 8, 8)), np.ones((1, 3, 8, 8))]  # with and without the batch dim
        cs = load_feeds(iter(arrays), X_SPEC)
        assert [f["x"].shape for f in cs.feeds] == [(1, 3, 8, 8)] * 2 and cs.feeds[0]["x"].dtype == np.float32
        cs2 = load_feeds([{"a": np.zeros((1, 4)), "b": np.ones(4)}] * 3, TWO_SPECS, limit=2)
        assert len(cs2) == 2
        with pytest.raises(CalibrationError, match=r"calibration feed \[0\]: has inputs \['a'\] but the model inputs"):
            load_feeds([{"a": np.zeros((1, 4))}], TWO_SPECS)
        with pytest.raises(CalibrationError, match=r"'x' expects shape \[1, 3, 8, 8\], got \[3, 4\]"):
            load_feeds([np.zeros((3, 4))], X_SPEC)
        with pytest.raises(CalibrationError, match="iterable gave no feeds"):
            load_feeds([], X_SPEC)
        with pytest.raises(CalibrationError, match="NaN"):
            load_feeds([np.full((1, 3, 8, 8), np.nan)], X_SPEC)
        with pytest.raises(CalibrationError, match="single-input"):
            load_feeds([np.zeros((1, 4))], TWO_SPECS)

    def test_array_and_mapping_sources(self):
        assert len(load_feeds(samples(3, 0, (1, 3, 8, 8)), X_SPEC)) == 3
        assert len(load_feeds({"a": np.zeros((2, 4)), "b": np.zeros((2, 4))}, TWO_SPECS)) == 2
        with pytest.raises(CalibrationError, match="different sample counts"):
            load_feeds({"a": np.zeros((2, 4)), "b": np.zeros((3, 4))}, TWO_SPECS)

    def test_missing_path(self, tmp_path):
        with pytest.raises(CalibrationError, match="does not exist; pass a folder of images, a .npz"):
            load_feeds(tmp_path / "nowhere", X_SPEC)

    def test_empty_folder(self, tmp_path):
        (tmp_path / "notes.txt").write_text("hi")
        with pytest.raises(CalibrationError, match="no images found"):
            load_feeds(tmp_path, X_SPEC, image_preprocessor())

    def test_unsupported_file(self, tmp_path):
        p = tmp_path / "data.csv"
        p.write_text("1,2")
        with pytest.raises(CalibrationError, match="unsupported calibration file type '.csv'"):
            load_feeds(p, X_SPEC)

    def test_image_folder_with_classes(self, tmp_path):
        for cls, value in (("cat", 10), ("ant", 200)):
            for i in range(3):
                write_png(tmp_path / cls / f"{i}.png", value)
        (tmp_path / "ant" / "readme.txt").write_text("not an image")  # skipped silently
        cs = load_feeds(tmp_path, X_SPEC, image_preprocessor())
        assert len(cs) == 6 and cs.classes == ["ant", "cat"]
        assert cs.labels == [0, 0, 0, 1, 1, 1]  # subfolder names sorted
        np.testing.assert_allclose(cs.feeds[0]["x"], 200 / 255, rtol=1e-5)  # ant/0.png first
        assert cs.feeds[0]["x"].shape == (1, 3, 8, 8)
        # labels matched to the model's class names
        cs2 = load_feeds(tmp_path, X_SPEC, image_preprocessor(), class_names=["dog", "cat", "ant"])
        assert cs2.labels == [2, 2, 2, 1, 1, 1]
        with pytest.raises(CalibrationError, match="class folder 'ant' matches none of the 2 labels"):
            load_feeds(tmp_path, X_SPEC, image_preprocessor(), class_names=["dog", "cat"])
        s = cs.summary()
        assert s["count"] == 6 and s["labelled"] and s["inputs"]["x"]["shape"] == [1, 3, 8, 8]
        assert s["inputs"]["x"]["min"] == pytest.approx(10 / 255, rel=1e-5)
        assert s["inputs"]["x"]["max"] == pytest.approx(200 / 255, rel=1e-5)
        assert s["inputs"]["x"]["mean"] == pytest.approx(105 / 255, rel=1e-5)
        json.dumps(s, allow_nan=False)

    def test_index_prefixed_class_folders(self, tmp_path):
        for name in ("0_tshirt", "2_pullover", "10_boot"):
            write_png(tmp_path / name / "a.png", 50)
        cs = load_feeds(tmp_path, X_SPEC, image_preprocessor())
        # files sorted by path (0_tshirt, 10_boot, 2_pullover); the prefix is the label, not the sort order
        assert cs.labels == [0, 10, 2]
        assert cs.classes is not None and cs.classes[10] == "10_boot" and cs.classes[2] == "2_pullover"
        names = [str(i) for i in range(11)]
        cs2 = load_feeds(tmp_path, X_SPEC, image_preprocessor(), class_names=names)
        assert sorted(cs2.labels) == [0, 2, 10]

    def test_flat_folder_has_no_labels_and_limit_spreads(self, tmp_path):
        for i in range(10):
            write_png(tmp_path / f"img{i:02d}.jpg", i * 20)
        cs = load_feeds(tmp_path, X_SPEC, image_preprocessor(), limit=3)
        assert len(cs) == 3 and cs.labels is None
        # evenly spread over the sorted files: 0, 3, 6
        got = [round(float(f["x"].mean()) * 255) for f in cs.feeds]
        assert got == pytest.approx([0, 60, 120], abs=2)

    def test_corrupt_images_are_skipped_with_a_warning(self, tmp_path):
        write_png(tmp_path / "good.png", 100)
        (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8garbage")
        with pytest.warns(UserWarning, match=r"skipped 1 file\(s\).*bad.jpg"):
            cs = load_feeds(tmp_path, X_SPEC, image_preprocessor())
        assert len(cs) == 1

    def test_nothing_decodes(self, tmp_path):
        (tmp_path / "a.jpg").write_bytes(b"nope")
        (tmp_path / "b.png").write_bytes(b"nope")
        with pytest.raises(CalibrationError, match=r"none of the 2 image file\(s\) could be read"):
            load_feeds(tmp_path, X_SPEC, image_preprocessor())

    def test_images_need_single_input_and_preprocessing(self, tmp_path):
        write_png(tmp_path / "a.png", 1)
        with pytest.raises(CalibrationError, match="single-input model only"):
            load_feeds(tmp_path, TWO_SPECS, image_preprocessor())
        with pytest.raises(CalibrationError, match="need preprocessing steps"):
            load_feeds(tmp_path, X_SPEC, None)
        with pytest.raises(CalibrationError, match=r"expects shape \[1, 3, 8, 8\], got \[1, 3, 6, 6\]"):
            load_feeds(tmp_path, X_SPEC, image_preprocessor(size=6))

    def test_single_image_file(self, tmp_path):
        write_png(tmp_path / "one.png", 30)
        assert len(load_feeds(tmp_path / "one.png", X_SPEC, image_preprocessor())) == 1

    def test_split_and_reader(self):
        cs = CalibrationSet(feeds=[{"x": np.full((1, 2), i, np.float32)} for i in range(10)],
                            labels=list(range(10)), source="t")
        calib, held = cs.split(3)
        assert held.labels == [0, 3, 6] and len(calib) == 7 and 0 not in calib.labels
        assert cs.split(0)[0] is cs and len(cs.split(0)[1]) == 0
        with pytest.raises(CalibrationError, match="hold out 10 of 10"):
            cs.split(10)
        from onnxruntime.quantization import CalibrationDataReader

        reader = CalibrationReader(calib)
        assert isinstance(reader, CalibrationDataReader) and len(reader) == 7
        got = []
        while (feed := reader.get_next()) is not None:
            got.append(int(feed["x"][0, 0]))
        assert got == calib.labels
        reader.rewind()
        assert len(list(reader)) == 7
        reader.set_range(2, 4)
        assert len(list(reader)) == 2
        with pytest.raises(CalibrationError, match="labels for"):
            CalibrationSet(feeds=cs.feeds, labels=[1])


# ---------------------------------------------------------------------------
# parity
# ---------------------------------------------------------------------------

class TestParity:
    def test_metrics_by_hand(self):
        ref = [{"y": np.array([[3.0, 4.0]])}, {"y": np.array([[0.0, 1.0]])}]
        cand = [{"y": np.array([[3.0, 3.0]])}, {"y": np.array([[0.5, 1.0]])}]
        rep = compare_outputs(ref, cand, task="raw")
        o = rep.outputs["y"]
        assert o.max_abs == pytest.approx(1.0)
        assert o.mean_abs == pytest.approx(1.5 / 4)
        r, c = np.array([3, 4, 0, 1.0]), np.array([3, 3, 0.5, 1.0])
        assert o.cosine == pytest.approx(float(r @ c / np.linalg.norm(r) / np.linalg.norm(c)))
        assert o.sqnr_db == pytest.approx(10 * np.log10(26 / 1.25))
        assert rep.min_sqnr_db == pytest.approx(o.sqnr_db) and rep.top1_agreement is None
        assert rep.accuracy_drop_points is None

    def test_exact_match_is_capped_and_json_safe(self):
        ref = [{"y": np.ones((1, 3), np.float32)}]
        rep = compare_outputs(ref, ref, task="raw")
        assert rep.outputs["y"].sqnr_db == SQNR_CAP_DB == 200.0 and rep.outputs["y"].cosine == 1.0
        zero = [{"y": np.zeros((1, 3))}]
        rz = compare_outputs(zero, [{"y": np.ones((1, 3))}], task="raw")
        assert rz.outputs["y"].sqnr_db == -200.0 and rz.outputs["y"].cosine == 0.0
        nan = compare_outputs(ref, [{"y": np.array([[1.0, np.nan, 1.0]])}], task="raw")
        assert nan.outputs["y"].nonfinite == 1 and nan.outputs["y"].sqnr_db == -200.0
        for report in (rep, rz, nan):
            json.dumps(report.to_json(), allow_nan=False)

    def test_classify_agreement_and_accuracy(self):
        ref = [{"p": np.array([[0.1, 0.9]])}, {"p": np.array([[0.8, 0.2]])},
               {"p": np.array([[0.3, 0.7]])}, {"p": np.array([[0.6, 0.4]])}]
        cand = [{"p": np.array([[0.2, 0.8]])}, {"p": np.array([[0.4, 0.6]])},
                {"p": np.array([[0.3, 0.7]])}, {"p": np.array([[0.6, 0.4]])}]
        labels = [1, 0, 1, 1]
        rep = compare_outputs(ref, cand, task="classify", labels=labels)
        assert rep.top1_agreement == pytest.approx(0.75)
        # reference top-1 [1, 0, 1, 0], artifact top-1 [1, 1, 1, 0]
        assert rep.reference_accuracy == pytest.approx(0.75) and rep.candidate_accuracy == pytest.approx(0.5)
        assert rep.accuracy_drop_points == pytest.approx(25.0)
        rep2 = compare_outputs(ref, cand, task="classify", labels=[1, 0, 0, 0])
        assert rep2.reference_accuracy == pytest.approx(0.75) and rep2.candidate_accuracy == pytest.approx(0.5)
        assert rep2.accuracy_drop_points == pytest.approx(25.0)
        js = rep2.to_json()
        assert js["accuracy_drop_points"] == 25.0 and js["top1_agreement"] == 0.75 and js["labelled_samples"] == 4

    def test_mismatches(self):
        with pytest.raises(ModelError, match="2 reference results but 1"):
            compare_outputs([{"y": np.ones(1)}] * 2, [{"y": np.ones(1)}], task="raw")
        with pytest.raises(ModelError, match="outputs differ"):
            compare_outputs([{"y": np.ones(1)}], [{"z": np.ones(1)}], task="raw")
        with pytest.raises(ModelError, match="shape"):
            compare_outputs([{"y": np.ones(2)}], [{"y": np.ones(3)}], task="raw")

    def test_gates(self):
        ref = [{"y": np.array([[3.0, 4.0]])}, {"y": np.array([[0.0, 1.0]])}]
        cand = [{"y": np.array([[3.0, 3.0]])}, {"y": np.array([[0.5, 1.0]])}]
        rep = compare_outputs(ref, cand, task="classify", labels=[1, 1])
        assert check_gates(rep, min_sqnr_db=10.0, max_accuracy_drop=60.0) == []
        with pytest.raises(GateError) as e:
            check_gates(rep, min_sqnr_db=20.0)
        msg = str(e.value)
        assert "SQNR 13.18 dB < required 20.00 dB" in msg and "--min-sqnr 13.1" in msg and "'y'" in msg
        with pytest.raises(GateError) as e:
            check_gates(rep, max_accuracy_drop=10.0)
        msg = str(e.value)
        # fp32: both samples → class 1 (100%); artifact: [3,3] → class 0, so 50%
        assert "accuracy dropped 50.00 points (fp32 100.00% → artifact 50.00%" in msg
        assert "> allowed 10.00" in msg and "--max-accuracy-drop 50.0" in msg
        unlabelled = compare_outputs(ref, cand, task="raw")
        with pytest.raises(GateError, match="max_accuracy_drop gate could not be evaluated"):
            check_gates(unlabelled, max_accuracy_drop=1.0)  # never "passed" without labelled data


# ---------------------------------------------------------------------------
# load / canonicalize
# ---------------------------------------------------------------------------

class TestCanonicalize:
    def test_folds_batchnorm_and_matches_original(self):
        original = make_cnn()
        c = canonicalize(original)
        ops = [n.op_type for n in c.model.graph.node]
        assert "BatchNormalization" not in ops and ops.count("Conv") == 1
        feeds = [{"x": s[None]} for s in samples(4, 5)]
        for a, b in zip(run(original, feeds), run(c.model, feeds)):
            np.testing.assert_allclose(b["logits"], a["logits"], atol=1e-5, rtol=1e-5)
        assert [n.name for n in c.model.graph.node][0] == "conv"
        assert original.graph.node[1].op_type == "BatchNormalization"  # input not modified

    def test_fixes_batch_and_describes_io(self, canon):
        assert canon.inputs == (TensorSpec("x", (1, 3, 16, 16), "float32", "nchw"),)
        assert canon.outputs == (TensorSpec("logits", (1, N_CLASSES), "float32", None),)
        assert canon.opset == 17 and canon.dynamic_dims == ()
        assert any("batch" in n for n in canon.notes)
        dims = [d.dim_value for d in canon.model.graph.input[0].type.tensor_type.shape.dim]
        assert dims == [1, 3, 16, 16]

    def test_size_fills_hw_nchw_and_nhwc(self):
        c = canonicalize(make_cnn(hw=("H", "W")), size=(24, 20))
        assert c.inputs[0].shape == (1, 3, 24, 20) and c.inputs[0].layout == "nchw" and not c.dynamic_dims
        c2 = canonicalize(make_cnn(hw=("H", "W"), layout="nhwc"), size=(24, 20))
        assert c2.inputs[0].shape == (1, 24, 20, 3) and c2.inputs[0].layout == "nhwc"
        out = run(c2.model, [{"x": np.zeros((1, 24, 20, 3), np.float32)}])
        assert out[0]["logits"].shape == (1, N_CLASSES)

    def test_dynamic_dims_listed_and_input_shapes_win(self):
        c = canonicalize(make_cnn(hw=("H", "W")))
        assert c.dynamic_dims == ("x[2] ('H')", "x[3] ('W')")
        assert c.inputs[0].shape == (1, 3, -1, -1)
        report = OnnxRuntimeTarget().check(c.model, spec_for("fp32"))
        assert report.dynamic_dims == c.dynamic_dims and not report.ok
        c2 = canonicalize(make_cnn(hw=("H", "W")), input_shapes={"x": [1, 3, 12, 12]}, size=(30, 30))
        assert c2.inputs[0].shape == (1, 3, 12, 12)

    def test_shape_option_errors(self):
        with pytest.raises(ConfigError, match=r"input_shapes names 'images', but the model inputs are \['x'\]"):
            canonicalize(make_cnn(), input_shapes={"images": [1, 3, 8, 8]})
        with pytest.raises(ConfigError, match="rank 3"):
            canonicalize(make_cnn(), input_shapes={"x": [1, 3, 8]})
        with pytest.raises(ConfigError, match="fixed at 16x16 .* size asks for 32x32"):
            canonicalize(make_cnn(), size=(32, 32))
        with pytest.raises(ConfigError, match='"size" must be'):
            canonicalize(make_cnn(hw=("H", "W")), size=(0, 4))

    def test_load_errors(self, tmp_path):
        with pytest.raises(ModelError, match="does not exist"):
            load_onnx(tmp_path / "missing.onnx")
        data = make_cnn().SerializeToString()
        truncated = tmp_path / "truncated.onnx"
        truncated.write_bytes(data[: len(data) // 2])
        with pytest.raises(ModelError) as e:
            canonicalize(truncated)
        assert "truncated.onnx" in str(e.value) and "re-export" in str(e.value)
        with pytest.raises(ModelError, match="re-export"):
            load_onnx(b"\x00\x01garbage")
        with pytest.raises(ModelError, match="is a folder"):
            load_onnx(tmp_path)

    def test_path_bytes_and_external_data(self, tmp_path):
        model = make_cnn()
        path = tmp_path / "m.onnx"
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location="m.onnx.data", size_threshold=0)
        assert (tmp_path / "m.onnx.data").exists()
        c = canonicalize(path)
        assert "BatchNormalization" not in [n.op_type for n in c.model.graph.node]
        # (saving with external data rewrote `model` in place, so serialize a fresh one)
        assert len(canonicalize(make_cnn().SerializeToString()).model.graph.node) == 5
        (tmp_path / "m.onnx.data").unlink()
        with pytest.raises(ModelError, match="external weights cannot be read.*same folder"):
            load_onnx(path)

    def test_old_opset_is_converted(self):
        c = canonicalize(make_cnn(opset=11))
        assert c.opset == 13 and any("converted from opset 11" in n for n in c.notes)

    def test_custom_op_model_is_kept_for_check(self):
        c = canonicalize(make_custom_op_model())
        assert any("folding skipped" in n for n in c.notes)
        assert [n.name for n in c.model.graph.node] == ["relu", "my_fancy_node"]

    def test_sha256(self, tmp_path):
        data = make_cnn().SerializeToString()
        p = tmp_path / "m.onnx"
        p.write_bytes(data)
        assert onnx_sha256(p) == onnx_sha256(data) == hashlib.sha256(data).hexdigest()
        assert len(onnx_sha256(make_cnn())) == 64


# ---------------------------------------------------------------------------
# onnxruntime target: check
# ---------------------------------------------------------------------------

class TestCheck:
    def test_clean_model(self, canon):
        report = OnnxRuntimeTarget().check(canon.model, spec_for("int8"))
        assert report.ok and report.unsupported == ()

    def test_custom_domain_node_listed_by_name(self):
        c = canonicalize(make_custom_op_model())
        report = OnnxRuntimeTarget().check(c.model, spec_for("fp32"))
        assert not report.ok
        [node] = report.unsupported
        assert node.node == "my_fancy_node" and node.op_type == "acme.ops::FancyOp"
        assert "custom domain 'acme.ops'" in node.reason
        from edgekit.errors import UnsupportedModelError

        with pytest.raises(UnsupportedModelError, match="my_fancy_node"):
            report.raise_if_unsupported()

    def test_versioned_gap_and_unknown_op(self):
        nodes = [helper.make_node("RoiAlign", ["x", "rois", "idx"], ["y"], name="roi"),
                 helper.make_node("NotAnOp", ["y"], ["z"], name="typo")]
        graph = helper.make_graph(
            nodes, "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4]),
             helper.make_tensor_value_info("rois", TensorProto.FLOAT, [1, 4]),
             helper.make_tensor_value_info("idx", TensorProto.INT64, [1])],
            [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)])
        report = OnnxRuntimeTarget().check(model, spec_for("fp32"))
        by_name = {n.node: n for n in report.unsupported}
        assert "RoiAlign-22" in by_name["roi"].reason and "opset below 22" in by_name["roi"].reason
        assert "not an ONNX op" in by_name["typo"].reason
        assert OnnxRuntimeTarget().check(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
                                         spec_for("fp32")).unsupported[0].node == "typo"  # RoiAlign-16 runs

    def test_op_table_matches_installed_onnxruntime(self):
        """Re-derive the CPU gaps from ORT's kernel registry (ORT matches an open-ended kernel exactly)."""
        try:
            from onnxruntime.capi.onnxruntime_pybind11_state import get_all_opkernel_def
        except ImportError:  # pragma: no cover
            pytest.skip("this onnxruntime build does not expose its kernel registry")
        big = 2**31 - 1
        ranges: Dict[str, List[tuple]] = {}
        for k in get_all_opkernel_def():
            if k.provider == "CPUExecutionProvider" and (k.domain or "") == "":
                ranges.setdefault(k.op_name, []).append(tuple(k.version_range))
        missing = {}
        for s in onnx.defs.get_all_schemas_with_history():
            if s.domain != "" or s.since_version < 7 or s.has_function or s.has_context_dependent_function:
                continue
            if s.name == "Constant":  # ORT turns Constant nodes into initializers
                continue
            ok = any(lo == s.since_version or (lo < s.since_version <= hi and hi != big)
                     for lo, hi in ranges.get(s.name, []))
            if not ok:
                missing.setdefault(s.name, []).append(s.since_version)
        derived = {k: tuple(sorted(v)) for k, v in missing.items()}
        if ort.__version__.split(".")[:2] != ["1", "32"]:
            pytest.skip(f"op table was derived for onnxruntime 1.32; installed {ort.__version__}")
        assert derived == dict(ORT_CPU_LACKS)


# ---------------------------------------------------------------------------
# onnxruntime target: build
# ---------------------------------------------------------------------------

def qdq_nodes(path: Path) -> Dict[str, int]:
    m = onnx.load(str(path))
    out: Dict[str, int] = {}
    for n in m.graph.node:
        out[n.op_type] = out.get(n.op_type, 0) + 1
    return out


def conv_weight_scale(path: Path) -> np.ndarray:
    m = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    producer = {o: n for n in m.graph.node for o in n.output}
    conv = next(n for n in m.graph.node if n.op_type == "Conv")
    dq = producer[conv.input[1]]
    assert dq.op_type == "DequantizeLinear"
    return inits[dq.input[1]]


class TestBuild:
    def test_toolchain(self):
        ok, version = OnnxRuntimeTarget().toolchain()
        assert ok and version == f"onnxruntime {ort.__version__}"

    def test_fp32(self, canon, holdout, tmp_path):
        art = OnnxRuntimeTarget().build(canon.model, spec_for("fp32"), None, tmp_path)
        assert art.files == ["model.onnx"] and art.entry == "model.onnx"
        assert art.runtime_versions == {"onnxruntime": ort.__version__}
        assert art.runtime_options == {"intra_op_num_threads": 0, "execution_providers": ["CPUExecutionProvider"]}
        rep = compare_outputs(run(canon.model, holdout), run(tmp_path / "model.onnx", holdout), task="classify")
        assert rep.min_sqnr_db == 200.0

    def test_fp16_keeps_float32_io(self, canon, holdout, tmp_path):
        art = OnnxRuntimeTarget().build(canon.model, spec_for("fp16", intra_op_num_threads=2), None, tmp_path)
        assert [s.dtype for s in art.inputs] == ["float32"] and [s.dtype for s in art.outputs] == ["float32"]
        assert art.runtime_options["intra_op_num_threads"] == 2
        m = onnx.load(str(tmp_path / "model.onnx"))
        assert any(t.data_type == TensorProto.FLOAT16 for t in m.graph.initializer)
        rep = compare_outputs(run(canon.model, holdout), run(tmp_path / "model.onnx", holdout), task="classify")
        assert rep.min_sqnr_db > 40 and rep.top1_agreement == 1.0

    def test_fp16_io(self, canon, holdout, tmp_path):
        art = OnnxRuntimeTarget().build(canon.model, spec_for("fp16", fp16_io=True), None, tmp_path)
        assert art.inputs[0].dtype == "float16" and art.outputs[0].dtype == "float16"
        assert art.inputs[0].shape == (1, 3, 16, 16) and art.inputs[0].layout == "nchw"
        assert "fp16_io" not in art.runtime_options
        half = [{"x": f["x"].astype(np.float16)} for f in holdout]
        out = run(tmp_path / "model.onnx", half)
        assert out[0]["logits"].dtype == np.float16
        rep = compare_outputs(run(canon.model, holdout), out, task="classify")
        assert rep.min_sqnr_db > 30

    @pytest.mark.parametrize("method", ["minmax", "percentile", "entropy"])
    def test_int8_matches_fp32(self, canon, calib, holdout, tmp_path, method):
        recipe = Recipe(method=method, num_samples=64)
        art = OnnxRuntimeTarget().build(canon.model, spec_for("int8", recipe), calib, tmp_path)
        path = tmp_path / "model.onnx"
        counts = qdq_nodes(path)
        assert counts.get("QuantizeLinear", 0) > 0 and counts.get("DequantizeLinear", 0) > 0
        assert art.files == ["model.onnx"]  # no temporaries left behind as artifact files
        assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
        rep = compare_outputs(run(canon.model, holdout), run(path, holdout), task="classify")
        assert rep.min_sqnr_db > 20, rep.to_json()
        q = art.quantization
        assert q["recipe"] == recipe.to_json() and q["calibration"]["count"] == 64
        assert q["quantize_linear_nodes"] == counts["QuantizeLinear"]
        assert q["dequantize_linear_nodes"] == counts["DequantizeLinear"]
        assert q["quantized_nodes"] >= 2 and q["excluded_count"] == 0
        json.dumps(q, allow_nan=False)

    def test_int8_per_channel_scales(self, canon, calib, tmp_path):
        OnnxRuntimeTarget().build(canon.model, spec_for("int8", Recipe(num_samples=64)), calib, tmp_path / "pc")
        assert conv_weight_scale(tmp_path / "pc" / "model.onnx").shape == (C_OUT,)
        per_tensor = Recipe(num_samples=64, global_config=OpConfig(per_channel=False))
        OnnxRuntimeTarget().build(canon.model, spec_for("int8", per_tensor), calib, tmp_path / "pt")
        assert conv_weight_scale(tmp_path / "pt" / "model.onnx").size == 1

    def test_int8_exclusions(self, canon, calib, tmp_path):
        recipe = Recipe(num_samples=64, exclude_op_types=("Gemm",))
        art = OnnxRuntimeTarget().build(canon.model, spec_for("int8", recipe), calib, tmp_path)
        assert art.quantization["excluded_nodes"] == ["fc"]
        m = onnx.load(str(tmp_path / "model.onnx"))
        producer = {o: n for n in m.graph.node for o in n.output}
        gemm = next(n for n in m.graph.node if n.op_type == "Gemm")
        assert gemm.input[1] not in producer  # float weight initializer, no DequantizeLinear
        recipe2 = Recipe(num_samples=64, nodes={"conv": OpConfig(skip=True)})
        art2 = OnnxRuntimeTarget().build(canon.model, spec_for("int8", recipe2), calib, tmp_path / "b")
        assert art2.quantization["excluded_nodes"] == ["conv"]

    def test_int8_signed_and_symmetric_activations(self, canon, calib, holdout, tmp_path):
        def zero_points(path: Path) -> List[np.ndarray]:
            m = onnx.load(str(path))
            inits = {t.name: t for t in m.graph.initializer}
            return [inits[n.input[2]] for n in m.graph.node if n.op_type == "QuantizeLinear"]

        signed = Recipe(num_samples=64, global_config=OpConfig(activation_dtype="int8"))
        OnnxRuntimeTarget().build(canon.model, spec_for("int8", signed), calib, tmp_path / "s")
        assert all(z.data_type == TensorProto.INT8 for z in zero_points(tmp_path / "s" / "model.onnx"))
        rep = compare_outputs(run(canon.model, holdout), run(tmp_path / "s" / "model.onnx", holdout), task="classify")
        assert rep.min_sqnr_db > 20
        # symmetric: zero-point 0 everywhere (post-ReLU tensors lose half their range, so only a loose bound)
        sym = Recipe(num_samples=64, global_config=OpConfig(activation_dtype="int8", symmetric_activations=True))
        OnnxRuntimeTarget().build(canon.model, spec_for("int8", sym), calib, tmp_path / "y")
        assert all(numpy_helper.to_array(z).item() == 0 for z in zero_points(tmp_path / "y" / "model.onnx"))
        rep = compare_outputs(run(canon.model, holdout), run(tmp_path / "y" / "model.onnx", holdout), task="classify")
        assert rep.min_sqnr_db > 5

    def test_int8_16bit_activations(self, canon, calib, holdout, tmp_path):
        recipe = Recipe(num_samples=64, global_config=OpConfig(activation_dtype="uint16"))
        art = quiet_build(OnnxRuntimeTarget(), canon.model, spec_for("int8", recipe), calib, tmp_path)
        assert art.details["opset"] >= 21  # ORT moves 16-bit Q/DQ to opset 21
        rep = compare_outputs(run(canon.model, holdout), run(tmp_path / "model.onnx", holdout), task="classify")
        assert rep.min_sqnr_db > 40

    def test_int8_needs_calibration(self, canon, tmp_path):
        with pytest.raises(CalibrationError, match=r"int8 needs calibration data: pass --calib DIR\|FILE.npz"):
            OnnxRuntimeTarget().build(canon.model, spec_for("int8"), None, tmp_path)
        with pytest.raises(CalibrationError, match="int8 needs calibration data"):
            OnnxRuntimeTarget().build(canon.model, spec_for("int8"), CalibrationSet(feeds=[]), tmp_path)

    def test_int8_warnings(self, canon, calib, tmp_path):
        recipe = Recipe(num_samples=100, exclude_nodes=("no_such_node",),
                        op_types={"Conv": OpConfig(activation_dtype="uint16")})
        with pytest.warns(UserWarning) as record:
            OnnxRuntimeTarget().build(canon.model, spec_for("int8", recipe), calib, tmp_path)
        messages = [str(w.message) for w in record]
        assert any("64 sample(s), fewer than the recipe's num_samples=100" in m for m in messages)
        assert any("no_such_node" in m for m in messages)
        assert not any("ignored" in m for m in messages)  # per-op settings are honoured, not dropped

    def test_int8_caps_samples_at_recipe(self, canon, calib, tmp_path):
        art = quiet_build(OnnxRuntimeTarget(), canon.model, spec_for("int8", Recipe(num_samples=16)), calib, tmp_path)
        assert art.quantization["calibration"]["count"] == 16 and art.quantization["calibration_samples_given"] == 64

    def test_device_profile_threads(self, canon, tmp_path):
        class Profile:  # duck-typed: a device profile with runtime options
            runtime_options = {"intra_op_num_threads": 4}

        spec = BuildSpec(precision=Precision.FP32, recipe=Recipe(), device=Profile())  # type: ignore[arg-type]
        art = OnnxRuntimeTarget().build(canon.model, spec, None, tmp_path)
        assert art.runtime_options["intra_op_num_threads"] == 4
        spec2 = BuildSpec(precision=Precision.FP32, recipe=Recipe(), device=Profile(),  # type: ignore[arg-type]
                          runtime_options={"intra_op_num_threads": 1})
        assert OnnxRuntimeTarget().build(canon.model, spec2, None, tmp_path / "b").runtime_options[
            "intra_op_num_threads"] == 1


GOLDEN = sorted((Path(__file__).parent / "models").glob("*.onnx"))


@pytest.mark.parametrize("path", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_golden_models_canonicalize_and_pass_check(path):
    c = canonicalize(path)
    report = OnnxRuntimeTarget().check(c.model, spec_for("fp32"))
    assert report.unsupported == (), report.to_json()
    assert "BatchNormalization" not in [n.op_type for n in c.model.graph.node] or any(
        "not folded" in n for n in c.notes)

"""Layout from the model, outputs by name, segmentation and labels decided at build time,
undecodable calibration files named: end to end through edgekit.build, the CLI and a device load.

Models are made here with onnx.helper (an NHWC model with dynamic H/W, segmentation heads with
and without a final Sigmoid, a three-output model); images are real PNG files on disk.
"""
from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import edgekit  # noqa: E402
from edgekit.errors import ConfigError  # noqa: E402
from edgekit.layout import fit_steps_to_input, image_hw, infer_layout, resolve_layout  # noqa: E402
from edgekit.postprocess import SegmentScores  # noqa: E402
from edgekit.preprocess import Color, Dtype, Layout, LayoutOrder, Normalize, Resize, default_image_steps  # noqa: E402

OPSET = [helper.make_opsetid("", 17)]


def _save(graph, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=OPSET, producer_name="edgekit-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _init(name: str, array: np.ndarray):
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def nhwc_classifier(path: Path, classes: int = 4) -> Path:
    """A Keras-style export: [N, H, W, 3] with dynamic batch and H/W, transposed inside."""
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", "height", "width", 3])
    y = helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", classes])
    nodes = [
        helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Softmax", ["f"], ["probs"], axis=1),
    ]
    inits = [_init("w", rng.normal(0, 0.5, (classes, 3, 3, 3))), _init("b", rng.normal(0, 0.1, classes))]
    return _save(helper.make_graph(nodes, "nhwc_classifier", [x], [y], inits), path)


def segmenter(path: Path, sigmoid: bool, upsample: bool = True) -> Path:
    """[1, 3, 32, 32] → one-channel map; the logit is 40 · (brightness − 0.5), so a bright
    square is foreground.  With ``sigmoid`` the map is a probability, upsampled ×2 by a
    bicubic Resize whose overshoot takes it past 1 at the square's edges."""
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 32, 32])
    size = 64 if upsample else 32
    y = helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, size, size])
    w = np.full((1, 3, 1, 1), 40.0 / 3.0)
    nodes = [helper.make_node("Conv", ["image", "w", "b"], ["logit"])]
    last = "logit"
    if sigmoid:
        nodes.append(helper.make_node("Sigmoid", ["logit"], ["prob"]))
        last = "prob"
    inits = [_init("w", w), _init("b", [-20.0])]
    if upsample:
        nodes.append(helper.make_node("Resize", [last, "", "scales"], ["mask"], mode="cubic"))
        inits.append(_init("scales", [1.0, 1.0, 2.0, 2.0]))
    else:
        nodes.append(helper.make_node("Identity", [last], ["mask"]))
    return _save(helper.make_graph(nodes, "segmenter", [x], [y], inits), path)


def multiclass_segmenter(path: Path, classes: int = 4) -> Path:
    rng = np.random.default_rng(2)
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 16, 16])
    y = helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, classes, 16, 16])
    nodes = [helper.make_node("Conv", ["image", "w", "b"], ["c"]), helper.make_node("Softmax", ["c"], ["scores"], axis=1)]
    inits = [_init("w", rng.normal(0, 1, (classes, 3, 1, 1))), _init("b", np.zeros(classes))]
    return _save(helper.make_graph(nodes, "multiclass_segmenter", [x], [y], inits), path)


def nhwc_segmenter(path: Path, classes: int = 4) -> Path:
    """A Keras-style segmenter: [1, 16, 16, 3] in, [1, 16, 16, C] class scores out."""
    rng = np.random.default_rng(4)
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 16, 16, 3])
    y = helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 16, 16, classes])
    nodes = [
        helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "w", "b"], ["c"]),
        helper.make_node("Transpose", ["c"], ["scores"], perm=[0, 2, 3, 1]),
    ]
    inits = [_init("w", rng.normal(0, 1, (classes, 3, 1, 1))), _init("b", np.zeros(classes))]
    return _save(helper.make_graph(nodes, "nhwc_segmenter", [x], [y], inits), path)


def three_outputs(path: Path) -> Path:
    """A feature map first, then 4-class logits, then a 2-value auxiliary head."""
    rng = np.random.default_rng(1)
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 16, 16])
    outs = [
        helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 4, 16, 16]),
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4]),
        helper.make_tensor_value_info("aux", TensorProto.FLOAT, [1, 2]),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "w", "b"], ["features"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["features"], ["g"]),
        helper.make_node("Flatten", ["g"], ["logits"]),
        helper.make_node("Gemm", ["logits", "wa"], ["aux"]),
    ]
    inits = [_init("w", rng.normal(0, 0.5, (4, 3, 3, 3))), _init("b", rng.normal(0, 0.1, 4)),
             _init("wa", rng.normal(0, 1, (4, 2)))]
    return _save(helper.make_graph(nodes, "three_outputs", [x], outs, inits), path)


def square_png(path: Path, size=(100, 80), box=(30, 20, 46, 34)) -> Path:
    """A dark picture with one bright square (RGB, 8-bit PNG)."""
    w, h = size
    a = np.full((h, w, 3), 20, dtype=np.uint8)
    x1, y1, x2, y2 = box
    a[y1:y2, x1:x2] = 240
    Image.fromarray(a).save(path)
    return path


def photos(folder: Path, n: int = 6, size=(40, 30)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    return folder


def cli(*args):
    return subprocess.run([sys.executable, "-m", "edgekit", *map(str, args)], capture_output=True, text=True, timeout=600)


def one_line_error(proc) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.lstrip().startswith("warning")]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return errors[0]


# --------------------------------------------------------------------------- the one layout rule


@pytest.mark.parametrize(
    "shape, expected",
    [
        ([1, 3, 224, 224], LayoutOrder.NCHW),
        (["N", 3, "H", "W"], LayoutOrder.NCHW),
        ([1, 224, 224, 3], LayoutOrder.NHWC),
        ([1, "height", "width", 3], LayoutOrder.NHWC),  # keras2onnx, dynamic H/W
        ([0, 0, 0, 1], LayoutOrder.NHWC),  # unknown dims as 0 (how the CLI reads a proto)
        ([1, -1, -1, 3], LayoutOrder.NHWC),  # unknown dims as -1 (manifest shapes)
        ([1, 1, 28, 28], LayoutOrder.NCHW),
        ([1, 3, 32, 3], LayoutOrder.NCHW),  # a tie: channel-first
        ([1, "c", "h", "w"], None),
        ([1, 16, 32], None),
    ],
)
def test_infer_layout(shape, expected):
    assert infer_layout(shape) is expected


def test_resolve_layout_override_and_assumption():
    assert resolve_layout([1, "c", "h", "w"]) == (LayoutOrder.NCHW, True)
    assert resolve_layout([1, "c", "h", "w"], "nhwc") == (LayoutOrder.NHWC, False)
    assert resolve_layout([1, 3, 32, 3], "nhwc") == (LayoutOrder.NHWC, False)  # the tie leaves room
    with pytest.raises(ConfigError, match=r"layout nchw does not fit input 'x' \[1, \?, \?, 3\], which is NHWC.*--layout nhwc"):
        resolve_layout([1, "h", "w", 3], "nchw", "x")
    assert image_hw([1, 48, 64, 3], "nhwc") == (48, 64) and image_hw([1, 3, 0, 0], "nchw") == (None, None)


def test_fit_steps_adds_the_models_layout_and_checks_the_tensor():
    steps = (Color("rgb"), Resize(48, 48), Normalize(), Dtype("float32"))  # no layout step
    nhwc = fit_steps_to_input(steps, "image", [1, 48, 48, 3])
    assert [s for s in nhwc if isinstance(s, Layout)] == [Layout("nhwc")] and isinstance(nhwc[-1], Dtype)
    assert Layout("nchw") in fit_steps_to_input(steps, "image", [1, 3, 48, 48])
    tensor_steps = (Dtype("float32"),)
    assert fit_steps_to_input(tensor_steps, "x", [1, 3, 48, 48]) == tensor_steps  # tensors: untouched
    with pytest.raises(ConfigError, match=r"makes \[1, 3, 48, 48\] \(NCHW\) but input 'image' takes \[1, 48, 48, 3\] \(NHWC\); use --layout nhwc"):
        fit_steps_to_input(default_image_steps(48, 48, layout="nchw"), "image", [1, 48, 48, 3])
    with pytest.raises(ConfigError, match="use --color gray"):
        fit_steps_to_input(default_image_steps(48, 48), "image", [1, 1, 48, 48])
    with pytest.raises(ConfigError, match="resizes to 32x32"):
        fit_steps_to_input(default_image_steps(32, 32), "image", [1, 3, 48, 48])


# --------------------------------------------------------------------------- NHWC with dynamic H/W


def test_nhwc_dynamic_model_through_the_cli_runs_on_images(tmp_path):
    """The issue's case: `--size` on a [N, H, W, 3] model gave NCHW preprocessing, and
    `run` failed on every image."""
    model = nhwc_classifier(tmp_path / "keras.onnx")
    out = tmp_path / "keras.edgepkg"
    proc = cli("build", model, "-t", "onnxruntime", "--size", "48x48", "--calib", photos(tmp_path / "calib"),
               "--task", "classify", "-o", out, "--json")
    assert proc.returncode == 0, proc.stderr
    m = json.loads(proc.stdout)["manifest"]
    assert m["inputs"][0]["shape"] == [1, 48, 48, 3] and m["inputs"][0]["layout"] == "nhwc"
    assert {"op": "layout", "order": "nhwc"} in m["preprocess"]
    assert m["postprocess"]["output"] == "probs"
    run = cli("run", out, square_png(tmp_path / "sq.png"), "--json")
    assert run.returncode == 0, run.stderr
    # --layout the shape contradicts: one line, before anything is built
    err = one_line_error(cli("build", model, "-t", "onnxruntime", "--size", "48x48", "--layout", "nchw",
                             "--calib", tmp_path / "calib", "-o", tmp_path / "bad.edgepkg"))
    assert "layout nchw does not fit input 'image'" in err and "--layout nhwc" in err
    assert not (tmp_path / "bad.edgepkg").exists()


def test_nhwc_dynamic_model_through_the_api_gets_the_same_layout(tmp_path):
    model = nhwc_classifier(tmp_path / "keras.onnx")
    steps = [Color("rgb"), Resize(40, 40), Normalize(), Dtype("float32")]  # the API user gave no layout
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pkg = edgekit.build(model, target="onnxruntime", preprocess=steps, calibration=photos(tmp_path / "c"),
                            task="classify", output=tmp_path / "api.edgepkg")
    with edgekit.load(pkg) as m:
        assert m.manifest.inputs[0].layout == "nhwc"
        assert any(isinstance(s, Layout) and s.order is LayoutOrder.NHWC for s in m.manifest.preprocess)
        r = m.predict(square_png(tmp_path / "sq.png"))
    assert 0 <= r.index < 4
    with pytest.raises(ConfigError, match="layout nchw does not fit input 'image'"):
        edgekit.build(model, target="onnxruntime", preprocess=[*steps[:3], Layout("nchw"), steps[3]],
                      calibration=tmp_path / "c", output=tmp_path / "bad.edgepkg")


def test_dynamic_batch_fixed_to_one_is_said(tmp_path):
    model = nhwc_classifier(tmp_path / "keras.onnx")
    with pytest.warns(UserWarning, match=r"input 'image': the dynamic batch dim 'N' is fixed to 1"):
        edgekit.build(model, target="onnxruntime", input_shapes=None, size=(32, 32), output=tmp_path / "b.edgepkg")


# --------------------------------------------------------------------------- segmentation, decided at build time


def _old_binary_rule(score_map: np.ndarray) -> np.ndarray:
    """What postprocess did before: probabilities only while every value is in [0, 1]."""
    is_prob = float(score_map.min()) >= 0.0 and float(score_map.max()) <= 1.0
    return score_map > (0.5 if is_prob else 0.0)


@pytest.mark.parametrize("sigmoid", [True, False])
def test_binary_segmentation_threshold_recorded_from_the_graph(tmp_path, sigmoid):
    model = segmenter(tmp_path / "seg.onnx", sigmoid=sigmoid)
    steps = [Color("rgb"), Resize(32, 32), Normalize(), Layout("nchw"), Dtype("float32")]
    image = square_png(tmp_path / "sq.png")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pkg = edgekit.build(model, target="onnxruntime", preprocess=steps, task="segment",
                            labels=["background", "square"], output=tmp_path / "seg.edgepkg")
    with edgekit.load(pkg) as m:
        post = m.manifest.postprocess
        assert post.scores is (SegmentScores.PROBABILITIES if sigmoid else SegmentScores.LOGITS)
        assert post.output == "mask"
        r = m.predict(image)
        raw = m.infer({"image": m.preprocess(image)})["mask"][0, 0]
    # mapped back to the original 100x80 picture, like boxes
    assert r.mask.shape == (80, 100)
    truth = 16 * 14 / (100 * 80)  # the 16x14 bright square: 2.8 % of the picture
    assert abs(float(r.mask.mean()) - truth) < 0.01
    ys, xs = np.nonzero(r.mask)
    assert abs(xs.min() - 30) <= 2 and abs(xs.max() - 45) <= 2 and abs(ys.min() - 20) <= 2 and abs(ys.max() - 33) <= 2
    if sigmoid:  # the map: probabilities that pass 1 after the bicubic upsampling
        assert float(raw.max()) > 1.0
        assert float(_old_binary_rule(raw).mean()) > 0.9  # the per-image guess: nearly all "foreground"


def test_multiclass_segmentation_labels_must_match(tmp_path):
    model = multiclass_segmenter(tmp_path / "mseg.onnx")
    steps = [Color("rgb"), Resize(16, 16), Normalize(), Layout("nchw"), Dtype("float32")]
    with pytest.raises(ConfigError, match=r"3 labels, but output 'scores' \[1, 4, 16, 16\] has 4 class channel"):
        edgekit.build(model, target="onnxruntime", preprocess=steps, task="segment", labels=["a", "b", "c"],
                      output=tmp_path / "x.edgepkg")
    assert not (tmp_path / "x.edgepkg").exists()


def test_nhwc_segmentation_without_labels_reads_the_last_dim(tmp_path):
    model = nhwc_segmenter(tmp_path / "kseg.onnx")
    rng = np.random.default_rng(6)
    image = tmp_path / "p.png"
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(image)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pkg = edgekit.build(model, target="onnxruntime", preprocess=[Color("rgb"), Resize(16, 16), Normalize(), Dtype("float32")],
                            task="segment", output=tmp_path / "kseg.edgepkg")
    with edgekit.load(pkg) as m:
        assert m.manifest.postprocess.layout.value == "nhwc"  # from the model's NHWC input
        r = m.predict(image)
        raw = m.infer({"image": m.preprocess(image)})["scores"][0]
    np.testing.assert_array_equal(r.mask, np.argmax(raw, axis=-1))


# --------------------------------------------------------------------------- outputs by name, labels


def test_classify_on_a_three_output_model_needs_an_output_name(tmp_path):
    model = three_outputs(tmp_path / "three.onnx")
    with pytest.raises(ConfigError, match=r"task 'classify' reads one model output, but the model has 3: \['features', 'logits', 'aux'\]"):
        edgekit.build(model, target="onnxruntime", task="classify", output=tmp_path / "x.edgepkg")
    err = one_line_error(cli("build", model, "-t", "onnxruntime", "--task", "classify", "-o", tmp_path / "x.edgepkg"))
    assert "['features', 'logits', 'aux']" in err and "--output NAME" in err
    err = one_line_error(cli("build", model, "-t", "onnxruntime", "--task", "classify", "--output", "probs",
                             "-o", tmp_path / "x.edgepkg"))
    assert "no output 'probs'" in err
    out = tmp_path / "three.edgepkg"
    proc = cli("build", model, "-t", "onnxruntime", "--task", "classify", "--output", "logits", "-o", out, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["manifest"]["postprocess"]["output"] == "logits"
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    with edgekit.load(out) as m:
        r = m.predict(x)
        logits = m.infer({"image": x})["logits"][0]
    assert r.index == int(np.argmax(logits))  # read from "logits", not from the feature map


def test_two_labels_for_a_four_class_model_do_not_build(tmp_path):
    model = three_outputs(tmp_path / "three.onnx")
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n")
    err = one_line_error(cli("build", model, "-t", "onnxruntime", "--task", "classify", "--output", "logits",
                             "--labels", labels, "-o", tmp_path / "x.edgepkg"))
    assert "2 labels, but output 'logits' [1, 4] scores 4 classes" in err
    assert not (tmp_path / "x.edgepkg").exists()


# --------------------------------------------------------------------------- calibration files that fail to decode


def test_undecodable_calibration_files_are_named_with_the_count_kept(tmp_path):
    from edgekit.manifest import TensorSpec
    from edgekit.preprocess import Preprocessor
    from edgekit.quantize.calibration import load_feeds

    folder = photos(tmp_path / "calib", n=5)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (folder / "notes.png").write_text("not a picture")
    spec = TensorSpec(name="image", shape=(1, 3, 16, 16), dtype="float32", layout="nchw")
    with pytest.warns(UserWarning) as record:
        cs = load_feeds(folder, [spec], Preprocessor(default_image_steps(16, 16)))
    text = " ".join(str(w.message) for w in record)
    assert "skipped 2 file(s) that could not be decoded, kept 5 of 7 image(s)" in text
    assert "broken.jpg" in text and "notes.png" in text
    assert len(cs) == 5 and "2 undecodable skipped" in cs.source


def test_calibration_folder_of_16bit_and_float_tiffs(tmp_path):
    """Deep frames calibrate at their real scale: a 16-bit PNG/TIFF and a 0..1 float TIFF of the
    same picture give the same feeds as its 8-bit PNG (within one 8-bit step)."""
    from edgekit.manifest import TensorSpec
    from edgekit.preprocess import Preprocessor
    from edgekit.quantize.calibration import load_feeds

    rng = np.random.default_rng(8)
    eight = rng.integers(0, 256, (24, 32), dtype=np.uint8)
    folder = tmp_path / "deep"
    folder.mkdir()
    Image.fromarray(eight).save(folder / "a_8bit.png")
    Image.fromarray(eight.astype(np.uint16) * 257).save(folder / "b_16bit.png")
    Image.fromarray(eight.astype(np.uint16) * 257).save(folder / "c_16bit.tif")
    Image.fromarray(eight.astype(np.float32) / 255.0).save(folder / "d_float.tif")
    spec = TensorSpec(name="image", shape=(1, 1, 16, 16), dtype="float32", layout="nchw")
    cs = load_feeds(folder, [spec], Preprocessor(default_image_steps(16, 16, color="gray")))
    assert len(cs) == 4
    ref = cs.feeds[0]["image"]
    assert 0.3 < float(ref.mean()) < 0.7  # the picture itself (a clipped 16-bit frame would be ~1.0)
    for feed in cs.feeds[1:]:
        assert float(np.abs(feed["image"] - ref).max()) <= 1 / 255 + 1e-6

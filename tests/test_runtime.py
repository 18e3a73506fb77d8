"""Device runtime: load, infer checks, predict, runner options and errors."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw

import edgekit
from edgekit.errors import ConfigError, InputError, RuntimeMissingError
from edgekit.postprocess import ClassifyResult, DetectResult, RawResult, SegmentResult
from edgekit.runners import RUNNERS, Runner
from models.meta import GOLDEN_MODELS
from pkgtools import image_steps, make_package

pytestmark = pytest.mark.device
ort = pytest.importorskip("onnxruntime")
GM = {m.name: m for m in GOLDEN_MODELS}


def _bare(gm, feeds):
    sess = ort.InferenceSession(str(gm.path), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


@pytest.fixture()
def classifier(tmp_path):
    pkg = make_package(tmp_path, GM["conv_bn_relu"], labels=[f"class{i}" for i in range(10)],
                       preprocess=image_steps(32, 32), postprocess={"task": "classify", "top_k": 3})
    with edgekit.load(pkg) as m:
        yield m


def test_infer_matches_bare_onnxruntime(classifier):
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    out = classifier.infer({"input": x})
    np.testing.assert_allclose(out["logits"], _bare(GM["conv_bn_relu"], {"input": x})[0], rtol=1e-5, atol=1e-6)
    assert classifier.runner.last_latency_s > 0
    assert classifier.runner.name == "onnxruntime" and isinstance(classifier.runner, Runner)


def test_predict_uses_the_manifest_preprocessing(classifier, tmp_path):
    img = Image.new("RGB", (64, 48), (200, 30, 30))
    ImageDraw.Draw(img).ellipse((10, 10, 40, 40), fill=(10, 200, 10))
    path = tmp_path / "x.png"
    img.save(path)
    r = classifier.predict(path)
    assert isinstance(r, ClassifyResult) and len(r.top) == 3
    assert r.label == f"class{r.index}"
    logits = classifier.infer({"input": classifier.preprocess(path)})["logits"][0]
    assert r.index == int(np.argmax(logits))
    # every source form gives the same tensor
    t = classifier.preprocess(img)
    np.testing.assert_array_equal(t, classifier.preprocess(path.read_bytes()))
    np.testing.assert_array_equal(t, classifier.preprocess(np.asarray(img)))


@pytest.mark.parametrize(
    "feeds, message",
    [
        ({"image": np.zeros((1, 3, 32, 32), np.float32)}, r"feeds must be named \{input\}, but got \{image\}"),
        ({"input": np.zeros((1, 3, 16, 16), np.float32)}, r"expected shape \[1, 3, 32, 32\], got \[1, 3, 16, 16\]"),
        ({"input": np.zeros((1, 3, 32, 32), np.float64)}, r"expected dtype float32, got float64"),
        ({"input": [[0.0]]}, r"expected a numpy array, got list"),
    ],
)
def test_infer_rejects_wrong_feeds(classifier, feeds, message):
    with pytest.raises(InputError, match=message):
        classifier.infer(feeds)


def test_predict_rejects_bad_sources(classifier, tmp_path):
    txt = tmp_path / "notes.txt"
    txt.write_text("not an image")
    with pytest.raises(InputError, match="not an image"):
        classifier.predict(txt)
    with pytest.raises(InputError, match="channel"):
        classifier.predict(np.zeros((8, 8, 2), np.uint8))
    with pytest.raises(InputError):
        classifier.predict(tmp_path / "missing.jpg")


def test_detector_boxes_in_original_coordinates(tmp_path):
    gm = GM["yolo_head"]
    pkg = make_package(tmp_path, gm, labels=["a", "b", "c"], preprocess=image_steps(128, 128, "letterbox"),
                       postprocess={"task": "detect", "layout": "yolov8", "conf_threshold": 0.0})
    img = Image.new("RGB", (320, 200), (120, 120, 120))
    ImageDraw.Draw(img).rectangle((50, 40, 200, 160), fill=(250, 250, 0))
    with edgekit.load(pkg) as m:
        r = m.predict(img)
    assert isinstance(r, DetectResult) and len(r) > 0
    boxes = np.array([d.box for d in r.detections])
    assert boxes[:, [0, 2]].min() >= 0 and boxes[:, [0, 2]].max() <= 320
    assert boxes[:, [1, 3]].min() >= 0 and boxes[:, [1, 3]].max() <= 200
    assert all(d.label in ("a", "b", "c") for d in r.detections)


def test_segmenter_and_tensor_models(tmp_path):
    seg = make_package(tmp_path, GM["resize_concat"], "seg.edgepkg", preprocess=image_steps(64, 64),
                       postprocess={"task": "segment"})
    with edgekit.load(seg) as m:
        r = m.predict(Image.new("RGB", (64, 64), (5, 100, 200)))
    assert isinstance(r, SegmentResult) and r.mask.shape == (64, 64)
    audio = make_package(tmp_path, GM["attention_block"], "tok.edgepkg")
    x = np.random.default_rng(1).standard_normal((1, 16, 32)).astype(np.float32)
    with edgekit.load(audio) as m:
        r = m.predict(x)
        assert isinstance(r, RawResult)
        np.testing.assert_allclose(r.outputs["hidden"], _bare(GM["attention_block"], {"tokens": x})[0], rtol=1e-4, atol=1e-5)
        with pytest.raises(InputError):
            m.predict(Image.new("RGB", (16, 32)))


def test_runtime_options(tmp_path):
    pkg = make_package(tmp_path, GM["conv_bn_relu"])
    with edgekit.load(pkg, threads=2, graph_optimization_level="basic") as m:
        assert m.runner.options["threads"] == 2
        assert m.runner.option_sources["threads"] == "call"
        assert m.runner.describe()["providers"] == ["CPUExecutionProvider"]
    with edgekit.load(pkg, intra_op_num_threads=3) as m:  # the older name still works
        assert m.runner.options["threads"] == 3
    with pytest.raises(ConfigError, match="execution provider"):
        edgekit.load(pkg, execution_providers=["NoSuchExecutionProvider"])
    with pytest.raises(ConfigError, match="graph_optimization_level"):
        edgekit.load(pkg, graph_optimization_level="max")


def test_unknown_runtime_lists_known(tmp_path):
    pkg = make_package(tmp_path, GM["conv_bn_relu"])
    with pytest.raises(RuntimeMissingError, match="known runners: .*onnxruntime"):
        edgekit.load(pkg, runtime="nosuch")


def test_missing_runtime_names_the_extra(tmp_path, monkeypatch):
    pkg = make_package(tmp_path, GM["conv_bn_relu"])
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    with pytest.raises(RuntimeMissingError, match=r"pip install 'edgekit\[onnxruntime\]'"):
        edgekit.load(pkg)


def test_registry_rejects_duplicates():
    from edgekit.errors import RegistryError
    from edgekit.registry import Registry

    reg = Registry("runner", "edgekit.none", builtins={"a": "x:y"})
    with pytest.raises(RegistryError, match="already registered"):
        reg.register("a", object())
    assert "onnxruntime" in RUNNERS.names()


def test_import_edgekit_is_light():
    code = (
        "import sys, edgekit; heavy = [m for m in ('onnxruntime', 'onnx', 'openvino', 'torch', 'tensorflow',"
        " 'coremltools', 'ai_edge_litert', 'tensorrt', 'edgekit.targets', 'edgekit.quantize') if m in sys.modules];"
        " print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"

"""The ``yolox_raw`` detect layout: a YOLOX head without its grid decode in the graph.

Fast: the decode against a hand-decoded tensor, the wrong-N error, config
validation and its manifest round trip, the build-time decision from the graph
(a raw head is recorded as ``yolox_raw`` with the input size; a head that
decodes in the graph is not), and a real fp32 build of a tiny YOLOX-shaped
ONNX model that ships, loads and predicts through the layout.
Slow (``-m slow``): the real ddddocr YOLOX character detector (5.0 M
parameters) built int8 on onnxruntime keeps the recall floor vs fp32 on the
held-out glyph scenes of ``samples/real_models/data.py``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.errors import ConfigError, InputError, ManifestError
from edgekit.postprocess import (
    DetectConfig,
    DetectLayout,
    config_from_json,
    config_to_json,
    postprocess,
    resolve_for_model,
    yolox_cell_count,
    yolox_boxes,
    yolox_raw_head,
)

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT / "samples" / "real_models"

#: a 64x64 input at strides 8, 16, 32: 8x8 + 4x4 + 2x2 cells
SIZE, N = 64, 84


def raw_output(planted, classes=2, seed=0):
    """[1, 84, 5+C] raw head output, background cells at low scores; planted entries are
    (cell index, raw x, raw y, log w, log h, objectness, class, class score)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((N, 5 + classes), np.float32)
    out[:, :4] = rng.normal(0, 1, (N, 4))
    out[:, 4] = rng.uniform(0, 0.1, N)
    out[:, 5:] = rng.uniform(0, 1, (N, classes))
    for cell, x, y, lw, lh, obj, cls, score in planted:
        out[cell, :4] = [x, y, lw, lh]
        out[cell, 4] = obj
        out[cell, 5:] = 0.01
        out[cell, 5 + cls] = score
    return out[None]


def test_decode_matches_a_hand_decoded_tensor():
    # cell 64 + 1*4 + 2: the stride-16 map (4x4), row 1, column 2
    # cx = (0.5 + 2) * 16 = 40, cy = (0.25 + 1) * 16 = 20, w = e^ln2 * 16 = 32, h = e^0 * 16 = 16
    # cell 3: the stride-8 map, row 0, column 3: cx = (0 + 3) * 8 = 24, cy = 0 * 8 + 4 = 4 (raw y 0.5), w = h = 8
    # cell 83: the stride-32 map (2x2), row 1, column 1: cx = cy = (0 + 1) * 32 = 32, w = h = e^1 * 32
    out = raw_output([(70, 0.5, 0.25, np.log(2.0), 0.0, 0.8, 1, 0.9),
                      (3, 0.0, 0.5, 0.0, 0.0, 0.9, 0, 0.5),
                      (83, 0.0, 0.0, 1.0, 1.0, 0.3, 0, 0.5)])  # 0.15 < 0.25: filtered
    r = postprocess(DetectConfig(layout="yolox_raw", input_size=(SIZE, SIZE)), {"o": out}, labels=["a", "b"])
    got = [(d.class_id, d.label, round(d.score, 6), tuple(round(v, 4) for v in d.box)) for d in r]
    assert got == [(1, "b", 0.72, (24.0, 12.0, 56.0, 28.0)),
                   (0, "a", 0.45, (20.0, 0.0, 28.0, 8.0))]
    # the same tensor as yolov5 (decoded in the graph) would take the raw values as pixels: different boxes
    v5 = postprocess(DetectConfig(layout="yolov5"), {"o": out})
    assert [d.box for d in v5] != [d.box for d in r]
    # without input_size a square input is read from N
    assert [d.box for d in postprocess(DetectConfig(layout="yolox_raw"), {"o": out})] == [d.box for d in r]


def test_yolox_boxes_decodes_every_cell_of_a_stack():
    out = raw_output([(70, 0.5, 0.25, np.log(2.0), 0.0, 0.8, 1, 0.9)])
    stack = np.stack([out, out])  # [S, 1, N, 5+C], as verification stacks samples
    boxes = yolox_boxes(DetectConfig(layout="yolox_raw", input_size=(SIZE, SIZE)), stack)
    assert boxes.shape == (2, 1, N, 4)
    np.testing.assert_allclose(boxes[1, 0, 70], [40.0, 20.0, 32.0, 16.0], rtol=1e-6)
    raw = out[0, 0].astype(np.float64)  # the stride-8 cell (0, 0): offsets plus nothing, sizes × 8
    np.testing.assert_allclose(boxes[0, 0, 0], [raw[0] * 8, raw[1] * 8, np.exp(raw[2]) * 8, np.exp(raw[3]) * 8])


def test_boxes_map_back_through_the_transform_and_huge_sizes_are_dropped():
    class Half:
        original_size = (128, 128)

        def to_original(self, boxes):
            return boxes * 2

    out = raw_output([(70, 0.5, 0.25, np.log(2.0), 0.0, 0.8, 1, 0.9), (10, 0.0, 0.0, 1e4, 0.0, 0.99, 0, 0.99)])
    r = postprocess(DetectConfig(layout="yolox_raw", input_size=(SIZE, SIZE)), {"o": out}, transform=Half())
    assert [tuple(round(v, 4) for v in d.box) for d in r] == [(48.0, 24.0, 112.0, 56.0)]  # exp(1e4): not a box


def test_wrong_cell_count_is_one_error_naming_both():
    out = raw_output([])
    with pytest.raises(InputError) as exc:
        postprocess(DetectConfig(layout="yolox_raw", input_size=(96, 64)), {"o": out})
    msg = str(exc.value)
    assert "84 cells" in msg and "96x64" in msg and "makes 126" in msg and "[8, 16, 32]" in msg
    with pytest.raises(ConfigError, match="no square input has"):
        postprocess(DetectConfig(layout="yolox_raw"), {"o": out[:, :83]})
    assert yolox_cell_count((416, 416), (8, 16, 32)) == 3549
    assert yolox_cell_count((100, 60), (8, 16, 32)) == 13 * 8 + 7 * 4 + 4 * 2  # maps round up


@pytest.mark.parametrize("make, message", [
    (lambda: DetectConfig(input_size=(416,)), '"input_size" must be [height, width] (two integers >= 1) or null'),
    (lambda: DetectConfig(input_size=(0, 416)), '"input_size" must be [height, width]'),
    (lambda: DetectConfig(strides=(16, 8)), '"strides" must be a list of ascending integers >= 1'),
    (lambda: DetectConfig(strides=()), '"strides" must be a list of ascending integers >= 1'),
])
def test_config_validation(make, message):
    with pytest.raises(ConfigError) as exc:
        make()
    assert message in str(exc.value)


def test_manifest_round_trip():
    cfg = DetectConfig(layout="yolox_raw", input_size=[416, 416], strides=[8, 16, 32], output="output")
    assert cfg.layout is DetectLayout.YOLOX_RAW and cfg.input_size == (416, 416) and cfg.strides == (8, 16, 32)
    doc = config_to_json(cfg)
    assert doc["layout"] == "yolox_raw" and doc["input_size"] == [416, 416] and doc["strides"] == [8, 16, 32]
    import json

    assert config_from_json(json.loads(json.dumps(doc))) == cfg
    with pytest.raises(ManifestError, match=r"manifest.postprocess.input_size: expected \[height, width\]"):
        config_from_json({"task": "detect", "layout": "yolox_raw", "input_size": "416"})


# ----------------------------------------------------------------- the decision at build time, from the graph

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def tiny_yolox(decoded: bool = False, classes: int = 2, seed: int = 0):
    """A YOLOX-shaped ONNX model: 64x64 input, one conv per stride (8, 16, 32), per level a box conv (4),
    an objectness conv (1) and a class conv (C) with sigmoids, concatenated per level, flattened, levels
    concatenated and transposed to [1, 84, 5+C].  ``decoded`` adds an Exp on the sizes, as a YOLOX export
    with its decode in the graph has."""
    rng = np.random.default_rng(seed)
    inits, nodes, levels = [], [], []

    def weight(name, shape, scale=0.1):
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name))
        return name

    for s in (8, 16, 32):
        feat = f"f{s}"
        nodes.append(helper.make_node("Conv", ["images", weight(f"w{s}", [8, 3, s, s], 0.02)], [feat],
                                      strides=[s, s], name=f"stem{s}"))
        reg, obj, cls = f"reg{s}", f"obj{s}", f"cls{s}"
        nodes.append(helper.make_node("Conv", [feat, weight(f"wr{s}", [4, 8, 1, 1])], [reg], name=f"reg_conv{s}"))
        nodes.append(helper.make_node("Conv", [feat, weight(f"wo{s}", [1, 8, 1, 1])], [obj + "_l"], name=f"obj_conv{s}"))
        nodes.append(helper.make_node("Conv", [feat, weight(f"wc{s}", [classes, 8, 1, 1])], [cls + "_l"],
                                      name=f"cls_conv{s}"))
        nodes.append(helper.make_node("Sigmoid", [obj + "_l"], [obj]))
        nodes.append(helper.make_node("Sigmoid", [cls + "_l"], [cls]))
        if decoded:
            nodes.append(helper.make_node("Exp", [reg], [reg + "_e"]))
            reg = reg + "_e"
        nodes.append(helper.make_node("Concat", [reg, obj, cls], [f"cat{s}"], axis=1))
        inits.append(numpy_helper.from_array(np.array([1, 5 + classes, -1], np.int64), f"shape{s}"))
        nodes.append(helper.make_node("Reshape", [f"cat{s}", f"shape{s}"], [f"flat{s}"]))
        levels.append(f"flat{s}")
    nodes.append(helper.make_node("Concat", levels, ["all"], axis=2))
    nodes.append(helper.make_node("Transpose", ["all"], ["output"], perm=[0, 2, 1]))
    graph = helper.make_graph(nodes, "tiny_yolox",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, N, 5 + classes])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def test_raw_head_is_recorded_as_yolox_raw_with_its_input_size():
    g = tiny_yolox().graph
    assert yolox_raw_head(g, "output")
    cfg = resolve_for_model(DetectConfig(), g, [("output", [1, N, 7])], ["a", "b"], "nchw")
    assert cfg.layout is DetectLayout.YOLOX_RAW and cfg.input_size == (SIZE, SIZE) and cfg.output == "output"
    # a decode in the graph (Exp): not raw, the layout stays undecided (read as yolov5 from the shape)
    gd = tiny_yolox(decoded=True).graph
    assert not yolox_raw_head(gd, "output")
    assert resolve_for_model(DetectConfig(), gd, [("output", [1, N, 7])]).layout is DetectLayout.AUTO
    # the user's word wins, and a wrong grid for the input is refused at build time, naming both
    assert resolve_for_model(DetectConfig(layout="yolov5"), g, [("output", [1, N, 7])]).layout is DetectLayout.YOLOV5
    with pytest.raises(ConfigError, match=r"has 84 cells, but a 64x64 input at strides \[8, 16\] makes 80"):
        resolve_for_model(DetectConfig(layout="yolox_raw", strides=(8, 16)), g, [("output", [1, N, 7])])
    # a raw-looking head whose N is not the grid of the input is not guessed
    assert resolve_for_model(DetectConfig(), g, [("output", [1, 85, 7])]).layout is DetectLayout.AUTO


def test_tiny_yolox_builds_ships_and_predicts(tmp_path):
    pytest.importorskip("onnxruntime")
    import edgekit
    from PIL import Image

    path = tmp_path / "tiny_yolox.onnx"
    onnx.save(tiny_yolox(), str(path))
    rng = np.random.default_rng(0)
    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (48, 80, 3), dtype=np.uint8)).save(calib / f"{i}.png")
    steps = [{"op": "color", "mode": "rgb"},
             {"op": "resize", "size": [SIZE, SIZE], "mode": "letterbox", "pad_value": 114},
             {"op": "normalize", "scale": 1 / 255, "mean": [0.0] * 3, "std": [1.0] * 3},
             {"op": "layout", "order": "nchw"}]
    out = edgekit.build(path, target="onnxruntime", precision="fp32", calibration=calib, preprocess=steps,
                        task="detect", labels=["a", "b"], output=tmp_path / "y.edgepkg")
    with edgekit.load(out) as m:
        post = m.manifest.data["postprocess"]
        assert post["layout"] == "yolox_raw" and post["input_size"] == [SIZE, SIZE] and post["strides"] == [8, 16, 32]
        img = calib / "0.png"
        raw = m.infer({"images": m.preprocess(str(img))})["output"]
        # the package's boxes are the hand decode of the raw output, mapped to the 80x48 image
        res = postprocess(DetectConfig(layout="yolox_raw", input_size=(SIZE, SIZE), conf_threshold=0.0), {"o": raw})
        got = m.predict(str(img))
        assert len(got) == len([d for d in res if d.score > 0.25])
        for d in got:
            x1, y1, x2, y2 = d.box
            assert 0 <= x1 <= x2 <= 80 and 0 <= y1 <= y2 <= 48


# ----------------------------------------------------------------- the real YOLOX (slow)

#: a YOLOX int8 build is held to the default int8 recall floor of `targets/stages.py`
@pytest.mark.slow
def test_real_yolox_int8_recall_on_onnxruntime(tmp_path):
    pytest.importorskip("onnxruntime")
    if str(REAL) not in sys.path:
        sys.path.insert(0, str(REAL))
    import data
    import fetch
    import registry
    from edgekit.targets.pipeline import build_package
    from edgekit.targets.base import Precision
    from edgekit.targets.stages import DEFAULT_MIN_RECALL

    try:
        path = fetch.fetch_one("yolox-ddddocr-416")
        calib = data.glyph_folder(tmp_path / "calib")
        val = data.glyph_holdout_folder(tmp_path / "val")
    except fetch.FetchError as exc:
        pytest.skip(f"real models not reachable: {exc}")
    m = registry.get("yolox-ddddocr-416")
    # the first int8 build, as the target makes it (no mixed-precision rescue): its detections are what is held
    res = build_package(path, target="onnxruntime", precision="int8", calibration=calib, validation=val,
                        allow_gate_failure=True, mixed_precision={"enabled": False, "speed_check": False},
                        output=tmp_path / "y.edgepkg", **dict(m.build))
    post = res.manifest["postprocess"]
    assert post["layout"] == "yolox_raw" and post["input_size"] == [416, 416]
    det = res.manifest["verification"]["detection"]
    assert det["reference_detections"] >= 60, det
    assert det["recall"] >= DEFAULT_MIN_RECALL[Precision.INT8] and det["precision"] >= DEFAULT_MIN_RECALL[Precision.INT8], det

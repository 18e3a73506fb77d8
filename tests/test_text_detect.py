"""Task ``text-detect``: a DB text detector's probability map read as text boxes, on the device and in verification.

The decode itself (regions, rectangles, unclip, quad IoU) is tested in ``test_textdet.py``; here: the task
config and its JSON, boxes mapped back through the preprocessing geometry, the build's checks of the output
it reads, and verification that judges the map through its decoded boxes (recall, precision, box corners)
the way a detector's class scores are judged through its detections — and keeps the SQNR floor on the map
when too few fp32 boxes can judge it.  Builds run on a tiny sigmoid-map model (onnxruntime, seconds).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import edgekit  # noqa: E402
from edgekit import postprocess as post  # noqa: E402
from edgekit.errors import ConfigError, GateError  # noqa: E402
from edgekit.quantize.parity import MIN_RECALL_DETECTIONS, check_gates, compare_outputs  # noqa: E402
from edgekit.targets.pipeline import build_package  # noqa: E402

H, W = 64, 96


def _map_model(path: Path, channels: int = 1, sigmoid: bool = True) -> Path:
    """image [1, 3, H, W] → 1×1 conv (4 × channel mean − 2) → Sigmoid → maps [1, channels, H, W]."""
    w = numpy_helper.from_array(np.full((channels, 3, 1, 1), 4.0 / 3.0, np.float32), "w")
    b = numpy_helper.from_array(np.full((channels,), -2.0, np.float32), "b")
    nodes = [helper.make_node("Conv", ["image", "w", "b"], ["logits" if sigmoid else "maps"], name="conv")]
    if sigmoid:
        nodes.append(helper.make_node("Sigmoid", ["logits"], ["maps"], name="sigmoid"))
    graph = helper.make_graph(nodes, "text_map",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, H, W])],
                              [helper.make_tensor_value_info("maps", TensorProto.FLOAT, [1, channels, H, W])], [w, b])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def _page(rng: np.random.Generator, lines: int = 3) -> Dict[str, np.ndarray]:
    """Background −1 with ``lines`` bright bars (+1) of random length: text lines to the map model."""
    x = np.full((1, 3, H, W), -1.0, np.float32)
    for k in range(lines):
        y0 = 4 + k * 20 + int(rng.integers(0, 4))
        x0 = int(rng.integers(2, 20))
        x[:, :, y0:y0 + 8, x0:x0 + int(rng.integers(30, 70))] = 1.0
    return {"image": x + rng.normal(0, 0.05, x.shape).astype(np.float32)}


def _bar_map(boxes: List[tuple], noise: float = 0.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = np.full((1, 1, H, W), 0.02, np.float32)
    for y0, x0, h, w in boxes:
        m[0, 0, y0:y0 + h, x0:x0 + w] = 0.9
    return np.clip(m + rng.normal(0, noise, m.shape), 0, 1).astype(np.float32)


# ----------------------------------------------------------------- config and decode on the device
def test_config_round_trips_and_refuses_bad_values():
    cfg = post.config_for_task("text-detect", box_threshold=0.5, unclip_ratio=2.0)
    assert post.config_from_json(post.config_to_json(cfg)) == cfg
    assert post.config_to_json(cfg)["task"] == "text-detect"
    with pytest.raises(ConfigError, match="threshold"):
        post.config_for_task("text-detect", threshold=1.5)
    with pytest.raises(ConfigError, match="unclip_ratio"):
        post.config_for_task("text-detect", unclip_ratio=-1)
    with pytest.raises(ConfigError, match="conf_threshold"):
        post.config_for_task("text-detect", conf_threshold=0.3)  # a detect parameter, not this task's


class _Scale:
    """A stretch resize's geometry: model pixels × 2 = original pixels."""

    original_size = (2 * W, 2 * H)

    def to_original(self, boxes: np.ndarray) -> np.ndarray:
        return boxes * 2.0


def test_postprocess_gives_boxes_mapped_to_the_original_image():
    cfg = post.config_for_task("text-detect", output="maps")
    outputs = {"maps": _bar_map([(10, 20, 8, 40), (40, 5, 6, 30)])}
    plain = post.postprocess(cfg, outputs)
    scaled = post.postprocess(cfg, outputs, transform=_Scale())
    assert isinstance(plain, post.TextDetectResult) and len(plain) == 2
    top = np.array(plain.boxes[0].points)
    # the bar [20, 60) × [10, 18) grown by DB's unclip distance on every side
    d = 40 * 8 * 1.5 / (2 * (40 + 8))
    assert top[:, 0].min() == pytest.approx(20 - d, abs=0.6) and top[:, 1].max() == pytest.approx(18 + d, abs=0.6)
    assert np.allclose(np.array(scaled.boxes[0].points), 2 * top)
    assert plain.boxes[0].score == pytest.approx(0.9, abs=1e-3)
    doc = scaled.to_dict()
    assert doc["task"] == "text-detect" and len(doc["boxes"]) == 2 and len(doc["boxes"][0]["points"]) == 4


def test_a_map_of_the_wrong_shape_is_one_clear_input_error():
    cfg = post.config_for_task("text-detect", output="maps")
    with pytest.raises(edgekit.errors.InputError, match=r"expected one probability map \[1, 1, H, W\]"):
        post.postprocess(cfg, {"maps": np.zeros((1, 2, H, W), np.float32)})


# ----------------------------------------------------------------- verification: the map through its boxes
def _ref_and_noisy(n_samples: int, noise: float):
    rng = np.random.default_rng(3)
    ref, cand = [], []
    for i in range(n_samples):
        bars = [(4 + 20 * k + int(rng.integers(0, 4)), int(rng.integers(2, 20)), 8, int(rng.integers(30, 70)))
                for k in range(3)]
        ref.append({"maps": _bar_map(bars)})
        cand.append({"maps": _bar_map(bars, noise=noise, seed=i + 1)})
    return ref, cand


def test_noisy_map_with_the_same_boxes_passes_the_default_floors():
    ref, cand = _ref_and_noisy(8, noise=0.06)
    cfg = post.config_for_task("text-detect", output="maps")
    rep = compare_outputs(ref, cand, task="text-detect", postprocess=cfg)
    kinds = {p.kind: p for p in rep.parts}
    assert set(kinds) == {"scores", "boxes"}
    assert kinds["scores"].sqnr_db < 25  # the map alone would fail the int8 floor ...
    assert kinds["boxes"].sqnr_db > 40  # ... but its boxes are fp32's
    assert rep.detection.reference_detections == 24 >= MIN_RECALL_DETECTIONS
    assert rep.detection.recall == 1.0 and rep.detection.precision == 1.0
    check_gates(rep, min_sqnr_db=25.0, floor=True, min_recall=0.95, recall_floor=True)
    with pytest.raises(GateError, match="'maps' \\(scores\\)"):  # a user's --min-sqnr judges every part
        check_gates(rep, min_sqnr_db=25.0, floor=False, min_recall=0.95, recall_floor=True)
    # too few fp32 boxes to judge recall: the map keeps the SQNR floor
    few = compare_outputs(ref[:2], cand[:2], task="text-detect", postprocess=cfg)
    assert few.detection.reference_detections < MIN_RECALL_DETECTIONS
    with pytest.raises(GateError, match="'maps' \\(scores\\)"):
        check_gates(few, min_sqnr_db=25.0, floor=True, min_recall=0.95, recall_floor=True)


def test_a_lost_text_line_fails_recall():
    ref, cand = _ref_and_noisy(8, noise=0.0)
    cand[0] = {"maps": _bar_map([])}  # three lines gone on one page
    cand[1] = {"maps": _bar_map([])}
    rep = compare_outputs(ref, cand, task="text-detect", postprocess=post.config_for_task("text-detect", output="maps"))
    assert rep.detection.recall == pytest.approx(18 / 24)
    with pytest.raises(GateError, match="recall 0.750"):
        check_gates(rep, min_sqnr_db=25.0, floor=True, min_recall=0.95, recall_floor=True)


# ----------------------------------------------------------------- builds
def test_int8_build_records_the_task_and_judges_the_boxes(tmp_path):
    rng = np.random.default_rng(0)
    calib = [_page(rng) for _ in range(40)]
    res = build_package(_map_model(tmp_path / "map.onnx"), target="onnxruntime", precision="int8", task="text-detect",
                        calibration=calib, output=tmp_path / "map.edgepkg",
                        mixed_precision={"enabled": False, "speed_check": False})
    m = res.manifest
    assert m["postprocess"]["task"] == "text-detect" and m["postprocess"]["output"] == "maps"
    v = m["verification"]
    assert {p["kind"] for p in v["parts"]} == {"scores", "boxes"}
    assert v["detection"]["reference_detections"] >= 3 and v["detection"]["recall"] == 1.0
    from edgekit.targets.base import Precision
    from edgekit.targets.stages import DEFAULT_MIN_RECALL

    assert v["gates"]["min_recall"] == pytest.approx(DEFAULT_MIN_RECALL[Precision.INT8])
    with edgekit.load(res.path, require_signature=False) as model:
        feed = _page(np.random.default_rng(99))
        out = model.infer(feed)
        boxes = post.postprocess(post.config_from_json(m["postprocess"]), out).boxes
    assert len(boxes) == 3
    assert all(b.score > 0.6 for b in boxes)


def test_build_refuses_an_output_that_is_not_one_probability_map(tmp_path):
    calib = [_page(np.random.default_rng(0)) for _ in range(4)]
    with pytest.raises(ConfigError, match=r"one text probability map \[1, 1, H, W\].*\[1, 2, 64, 96\]"):
        build_package(_map_model(tmp_path / "two.onnx", channels=2), target="onnxruntime", precision="fp32",
                      task="text-detect", calibration=calib, output=tmp_path / "two.edgepkg")
    with pytest.raises(ConfigError, match="not made by a Sigmoid"):
        build_package(_map_model(tmp_path / "logits.onnx", sigmoid=False), target="onnxruntime", precision="fp32",
                      task="text-detect", calibration=calib, output=tmp_path / "logits.edgepkg")
    assert not (tmp_path / "two.edgepkg").exists() and not (tmp_path / "logits.edgepkg").exists()


def test_min_recall_is_accepted_for_text_detect_and_refused_for_raw(tmp_path):
    from edgekit.targets import stages

    stages.check_task_gates("text-detect", {"min_recall": 0.9})
    with pytest.raises(ConfigError, match="detect or text-detect"):
        stages.check_task_gates("raw", {"min_recall": 0.9})


# ----------------------------------------------------------------- the real PP-OCRv4 detector (slow)
@pytest.mark.slow
@pytest.mark.parametrize("target", ["openvino", "onnxruntime", "tflite"])
def test_real_ppocrv4_det_int8_keeps_fp32_text_boxes(tmp_path, target):
    """PP-OCRv4 det as the suite builds it (task text-detect) on the held-out pages: the default int8 build
    keeps fp32's text boxes (recall and precision at the default floor, corners ≥ 25 dB), while its map
    alone reads far under 25 dB (all-int8 openvino 16.7 dB, onnxruntime 9.4) — the map is judged by its boxes."""
    from realbuild import build_real

    res = build_real("ppocrv4-det", target, tmp_path)
    v = res.manifest["verification"]
    d = v["detection"]
    assert v["passed"] and d["reference_detections"] >= MIN_RECALL_DETECTIONS
    assert d["recall"] >= v["gates"]["min_recall"] and d["precision"] >= v["gates"]["min_recall"]
    parts = {p["kind"]: p["sqnr_db"] for p in v["parts"]}
    assert parts["boxes"] >= 25.0
    assert res.manifest["postprocess"]["task"] == "text-detect"


def test_the_search_aims_at_what_the_gates_judge():
    """int8_stage.gate_db: where the map answers to its boxes, the search aims at the boxes part and at
    recall/precision, not at the map's SQNR (which kept float layers the gates never asked for)."""
    from types import SimpleNamespace

    from edgekit.targets.base import Precision
    from edgekit.targets.int8_stage import gate_db

    cfg = post.config_for_task("text-detect", output="maps")
    ref, cand = _ref_and_noisy(8, noise=0.06)  # 24 fp32 boxes: the default recall floor judges
    rep = compare_outputs(ref, cand, task="text-detect", postprocess=cfg)
    parts = {p.kind: p.sqnr_db for p in rep.parts}
    req = SimpleNamespace(gates={}, precision=Precision.INT8, task="text-detect")
    assert gate_db(req, rep) == pytest.approx(parts["boxes"]) and parts["boxes"] > 25 > parts["scores"]
    lost = compare_outputs(ref, [{"maps": _bar_map([])}] + cand[1:], task="text-detect", postprocess=cfg)
    assert gate_db(req, lost) < 25.0  # recall 21/24: under the floor whatever the boxes that matched read
    # the plan's few samples (9 boxes) are judged as the gate judged the whole held-out set
    few = compare_outputs(ref[:3], cand[:3], task="text-detect", postprocess=cfg)
    assert gate_db(req, few) == pytest.approx(few.weakest.sqnr_db)  # the gate's own count rule: the map
    assert gate_db(req, few, by_detections=True) > 25.0
    user = SimpleNamespace(gates={"min_sqnr_db": 25.0}, precision=Precision.INT8, task="text-detect")
    assert gate_db(user, rep) == pytest.approx(parts["scores"])  # a user's --min-sqnr judges the map too
    raw = SimpleNamespace(gates={}, precision=Precision.INT8, task="raw")
    assert gate_db(raw, compare_outputs(ref, cand, task="raw")) == pytest.approx(parts["scores"])


def test_run_save_draws_the_text_boxes():
    """`edgekit run --save` (annotate): each text box's outline on the image, nothing inside it."""
    from edgekit.annotate import PALETTE, annotate

    res = post.postprocess(post.config_for_task("text-detect", output="maps"), {"maps": _bar_map([(20, 30, 10, 40)])})
    (box,) = res.boxes
    img = np.asarray(annotate(np.zeros((H, W, 3), np.uint8), res))
    x0, y0 = (int(round(v)) for v in box.points[0])
    x2, y2 = (int(round(v)) for v in box.points[2])
    assert tuple(img[y0, (x0 + x2) // 2]) == PALETTE[3]  # the top edge
    assert tuple(img[(y0 + y2) // 2, (x0 + x2) // 2]) == (0, 0, 0)  # inside stays as it was

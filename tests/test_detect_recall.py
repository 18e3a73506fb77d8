"""#9 item 5 and the detection-recall floor: detectors keep what fp32 detects after int8, on every target.

Fast (normal CI, golden ``yolo_head``): which nodes a detector keeps out of
the shared int8 ranges (decode tail, the head's last 1×1 convolutions, the
high-resolution stem) and none on a classifier; the recall gate — default
floor per precision for ``--task detect``, ``--min-recall`` to override, one
``error:`` line and no package when it fails, refused for other tasks; the
int8 mixed-precision search starts when the recall gate alone fails.
Slow (``-m slow``): the real Ultralytics YOLOv8n (NudeNet's 320² export)
built int8 on every installed target, recall vs fp32 on the held-out people
scenes of ``samples/real_models/data.py``.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import edgekit  # noqa: E402
from edgekit.errors import ConfigError, GateError  # noqa: E402
from edgekit.quantize.parity import (  # noqa: E402
    MIN_RECALL_DETECTIONS, DetectionParity, ParityReport, PartParity, check_gates,
)
from edgekit.targets import stages  # noqa: E402
from edgekit.targets.base import Precision  # noqa: E402
from edgekit.targets.graph import detection_tail, detector_stem  # noqa: E402
from models.meta import GOLDEN_MODELS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
YOLO = next(g for g in GOLDEN_MODELS if g.name == "yolo_head")


def _feeds(n, seed):
    rng = np.random.default_rng(seed)
    return [{t.name: rng.standard_normal(t.shape).astype(np.float32) for t in YOLO.inputs} for _ in range(n)]


def _report(recall, n_ref=100, task="detect"):
    part = PartParity("out class scores", "out", "scores", 40.0, 0.999, 0.01)
    det = DetectionParity(recall=recall, precision=1.0, matched=round(recall * n_ref), reference_detections=n_ref,
                          candidate_detections=round(recall * n_ref), score_error=0.01)
    return ParityReport(task=task, samples=8, outputs={}, parts=(part,), detection=det if task == "detect" else None)


# ----------------------------------------------------------------- what stays out of int8
def test_detector_keeps_stem_tail_and_last_pointwise_convs_out_of_int8():
    model = onnx.load(str(YOLO.path))
    stem = detector_stem(model)
    # input 128²: conv_0 (stride 2) and conv_1 (stride 4) with their SiLU; conv_2 works at stride 8
    assert stem == ["conv_0", "sigmoid_0", "mul_0", "conv_1", "sigmoid_1", "mul_1"]
    kept = detection_tail(model)
    assert set(stem) <= set(kept)
    convs = {n.name: n for n in model.graph.node if n.op_type == "Conv"}
    inits = {t.name: t for t in model.graph.initializer}
    pointwise_in_tail = [c for c in kept if c in convs and tuple(inits[convs[c].input[1]].dims[2:]) == (1, 1)]
    assert len(pointwise_in_tail) >= 4  # box and score 1×1 convs of both strides (and the DFL projection)
    # a 3×3 conv of the head, where the MACs are, stays int8
    heavy = [c for c in convs if c not in kept and tuple(inits[convs[c].input[1]].dims[2:]) == (3, 3)]
    assert heavy
    assert kept[-1] == model.graph.node[-1].name  # the output's Concat


def test_classifier_keeps_nothing_out_of_int8():
    gm = next(g for g in GOLDEN_MODELS if g.name == "mobilenet_v2_class")
    assert detection_tail(onnx.load(str(gm.path))) == []


# ----------------------------------------------------------------- the recall gate
def test_recall_gate_one_line_with_figure_floor_and_override():
    with pytest.raises(GateError) as err:
        check_gates(_report(0.78), min_recall=0.9, recall_floor=True)
    msg = str(err.value)
    assert "\n" not in msg
    assert "recall 0.780" in msg and "78 of 100" in msg and "default floor 0.90" in msg
    assert "--min-recall 0.78" in msg
    assert check_gates(_report(0.95), min_recall=0.9, recall_floor=True) == []
    with pytest.raises(GateError, match="< required 0.99"):
        check_gates(_report(0.95), min_recall=0.99)


def test_default_recall_floor_needs_enough_fp32_boxes_but_a_user_gate_always_judges():
    few = _report(0.5, n_ref=MIN_RECALL_DETECTIONS - 1)
    assert check_gates(few, min_recall=0.9, recall_floor=True) == []
    with pytest.raises(GateError):
        check_gates(few, min_recall=0.9)
    with pytest.raises(GateError, match="could not be evaluated"):
        check_gates(_report(1.0, task="raw"), min_recall=0.9)


def test_effective_gates_add_the_recall_floor_for_detect_only():
    det = stages.resolve_request(YOLO.path, target="onnxruntime", precision="int8", task="detect")
    gates, sources = stages.effective_gates(det)
    assert gates["min_recall"] == stages.DEFAULT_MIN_RECALL[Precision.INT8]
    assert sources["min_recall"].startswith("default floor")
    raw = stages.resolve_request(YOLO.path, target="onnxruntime", precision="int8", task="raw")
    assert "min_recall" not in stages.effective_gates(raw)[0]
    user = stages.resolve_request(YOLO.path, target="onnxruntime", precision="fp32", task="detect",
                                  gates={"min_recall": 0.5})
    assert stages.effective_gates(user) == ({"min_sqnr_db": 60.0, "min_recall": 0.5},
                                            {"min_sqnr_db": "default floor for fp32", "min_recall": "user"})
    assert all(0.5 < v <= 1.0 for v in stages.DEFAULT_MIN_RECALL.values())
    assert set(stages.DEFAULT_MIN_RECALL) == set(stages.DEFAULT_MIN_SQNR_DB)


def test_recall_gate_refused_for_other_tasks_and_out_of_range():
    with pytest.raises(ConfigError, match="min_recall.*--task detect"):
        stages.resolve_request(YOLO.path, target="onnxruntime", task="classify", gates={"min_recall": 0.9})
    with pytest.raises(ConfigError, match=r"fraction in \[0, 1\]"):
        stages.resolve_request(YOLO.path, target="onnxruntime", task="detect", gates={"min_recall": 95})


def test_build_under_the_recall_gate_fails_in_one_line_and_leaves_no_package(tmp_path):
    out = tmp_path / "det.edgepkg"
    with pytest.raises(GateError) as err:
        edgekit.build(YOLO.path, target="onnxruntime", precision="int8", calibration=_feeds(24, 1), task="detect",
                      gates={"min_recall": 1.0, "min_sqnr_db": 0.0}, mixed_precision=False, output=out)
    assert "--min-recall" in str(err.value) and "\n" not in str(err.value)
    assert not out.exists()


def test_cli_min_recall(tmp_path):
    out = tmp_path / "det.edgepkg"
    calib = tmp_path / "calib.npz"
    np.savez(calib, **{YOLO.inputs[0].name: np.stack([f[YOLO.inputs[0].name][0] for f in _feeds(24, 1)])})
    run = [sys.executable, "-m", "edgekit", "build", str(YOLO.path), "--target", "onnxruntime", "--task", "detect",
           "--calib", str(calib), "-o", str(out)]
    bad = subprocess.run(run + ["--task", "classify", "--min-recall", "0.9"], capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error:") and "--min-recall" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    ok = subprocess.run(run + ["--json"], capture_output=True, text=True, timeout=600)
    assert ok.returncode == 0, ok.stderr[-2000:]
    v = json.loads(ok.stdout)["manifest"]["verification"]
    assert v["gates"]["min_recall"] == stages.DEFAULT_MIN_RECALL[Precision.FP32]
    assert v["gate_sources"]["min_recall"] == "default floor for fp32 detection"
    assert v["detection"]["recall"] >= v["gates"]["min_recall"] and v["passed"]


def test_cli_verification_line_names_the_recall_gate():
    from edgekit.cli import _verification_line

    v = {"samples": 64, "data": "--val scenes", "detection": {"recall": 0.968, "precision": 0.99, "matched": 92,
                                                              "reference_detections": 95, "iou_threshold": 0.5},
         "gates": {"min_recall": 0.92}, "gate_sources": {"min_recall": "default floor for int8 detection"}}
    assert "recall 96.8%" in _verification_line(v) and "gate 92% (default)" in _verification_line(v)
    v["gate_sources"] = {"min_recall": "user"}
    assert "gate 92%)" in _verification_line(v)


def test_mixed_precision_search_starts_when_only_the_recall_gate_fails(tmp_path):
    """int8_stage.gates_hold judges through the gate stage's check: a detector whose SQNR passes but whose
    recall misses the gate is searched, not shipped."""
    from edgekit.targets.pipeline import build_package

    res = build_package(YOLO.path, target="onnxruntime", precision="int8", calibration=_feeds(24, 1), task="detect",
                        gates={"min_sqnr_db": 0.0, "min_recall": 1.0}, allow_gate_failure=True,
                        mixed_precision={"max_builds": 1, "time_budget_s": 30.0, "speed_check": False},
                        output=tmp_path / "det.edgepkg")
    mp = res.manifest["quantization"].get("mixed_precision")
    assert mp is not None and mp["attempts"], "the search did not start although the recall gate failed"


def _detector_report(scores_db, recall, precision, n_ref=100):
    parts = (PartParity("out boxes", "out", "boxes", 40.0, 0.9999, 0.5),
             PartParity("out class scores", "out", "scores", scores_db, 0.99, 0.05))
    det = DetectionParity(recall=recall, precision=precision, matched=round(recall * n_ref), reference_detections=n_ref,
                          candidate_detections=round(recall * n_ref / precision), score_error=0.01)
    return ParityReport(task="detect", samples=64, outputs={}, parts=parts, detection=det)


def test_default_floor_judges_class_scores_by_the_detections():
    """Under the default floors, a judged detector's class scores answer to recall and precision, not SQNR;
    boxes keep the SQNR floor; a user's --min-sqnr, or too few fp32 boxes, judges the scores by SQNR again."""
    kw = dict(min_sqnr_db=25.0, floor=True, min_recall=0.92, recall_floor=True)
    assert check_gates(_detector_report(20.5, 0.97, 0.97), **kw) == []
    with pytest.raises(GateError, match=r"precision 0\.800 .*< the default floor 0\.92"):
        check_gates(_detector_report(20.5, 0.97, 0.80), **kw)
    with pytest.raises(GateError, match=r"class scores.*SQNR 20\.50 dB < required 25\.00"):
        check_gates(_detector_report(20.5, 0.97, 0.97), **{**kw, "floor": False})
    few = MIN_RECALL_DETECTIONS - 1
    with pytest.raises(GateError, match=r"class scores.*SQNR 20\.50 dB < the default floor"):
        check_gates(_detector_report(20.5, 1.0, 1.0, n_ref=few), **kw)
    boxes_bad = _detector_report(30.0, 0.99, 0.99)
    boxes_bad = ParityReport(task="detect", samples=64, outputs={}, detection=boxes_bad.detection,
                             parts=(PartParity("out boxes", "out", "boxes", 18.0, 0.99, 3.0), boxes_bad.parts[1]))
    with pytest.raises(GateError, match=r"'out boxes' \(boxes\): SQNR 18\.00 dB"):
        check_gates(boxes_bad, **kw)


# ----------------------------------------------------------------- the real YOLOv8n (slow)
REAL = ROOT / "samples" / "real_models"
REAL_TARGETS = ("onnxruntime", "openvino", "qnn", "tensorrt", "tflite", "coreml")
#: #9 item 5: what fp32 detects, int8 detects (IoU ≥ 0.5, same class), on the held-out scenes
MIN_REAL_RECALL = 0.95


@pytest.mark.slow
@pytest.mark.parametrize("target", REAL_TARGETS)
def test_real_yolov8n_int8_recall(tmp_path, target):
    if str(REAL) not in sys.path:
        sys.path.insert(0, str(REAL))
    import data
    import fetch
    import registry
    from edgekit.targets import TARGETS
    from edgekit.targets.pipeline import build_package

    if target not in TARGETS.names() or not TARGETS.get(target)().toolchain()[0]:
        pytest.skip(f"{target} toolchain not installed here")
    try:
        path = fetch.fetch_one("yolov8n-nudenet-320")
        calib = data.people_folder(tmp_path / "calib")
        val = data.people_holdout_folder(tmp_path / "val")
    except fetch.FetchError as exc:
        pytest.skip(f"real models not reachable: {exc}")
    m = registry.get("yolov8n-nudenet-320")
    # the first int8 build, as the target makes it (no mixed-precision rescue)
    res = build_package(path, target=target, precision="int8", calibration=calib, validation=val,
                        allow_gate_failure=True, mixed_precision={"enabled": False, "speed_check": False},
                        output=tmp_path / "y.edgepkg", **dict(m.build))
    det = res.manifest["verification"]["detection"]
    assert det["reference_detections"] >= 60, det
    assert det["recall"] >= MIN_REAL_RECALL, f"{target}: {det}"

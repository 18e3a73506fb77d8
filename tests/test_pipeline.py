"""The staged build pipeline: stages alone, the build report, warnings, default floors, task-aware parity."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from edgekit.errors import ConfigError, GateError  # noqa: E402
from edgekit.manifest import json_schema  # noqa: E402
from edgekit.package import open_package  # noqa: E402
from edgekit.quantize.parity import check_gates, compare_outputs, match_detections  # noqa: E402
from edgekit.targets import stages  # noqa: E402
from edgekit.targets.pipeline import build, build_package  # noqa: E402
from edgekit.targets.spec import Precision  # noqa: E402
from models.meta import GOLDEN_MODELS  # noqa: E402

GM = {m.name: m for m in GOLDEN_MODELS}
STAGES = ["load", "canonicalize", "check", "calibrate", "target build", "verify", "gate"]


def feeds(gm, n, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return [{t.name: (scale * rng.standard_normal(t.shape)).astype(np.float32) for t in gm.inputs} for _ in range(n)]


# ----------------------------------------------------------------- stages alone
def test_stages_run_alone_with_typed_outputs():
    gm = GM["conv_bn_relu"]
    req = stages.resolve_request(gm.path, target="onnxruntime", precision="fp32", calibration=feeds(gm, 10),
                                 task="classify")
    assert req.precision is Precision.FP32 and req.task == "classify" and req.gates == {}
    src = stages.load(req)
    assert len(src.sha256) == 64 and src.name == "conv_bn_relu"
    canon = stages.canonicalize_stage(req, src)
    assert canon.model.inputs[0].shape[0] == 1
    checked = stages.check(req, canon)
    assert checked.support.ok and checked.spec.task == "classify"
    data = stages.calibrate(req, canon, checked)
    assert len(data.calibration.feeds) == 8 and len(data.verification.feeds) == 2
    assert "held out" in data.verify_source
    gates, sources = stages.effective_gates(req)
    assert gates == {"min_sqnr_db": 60.0} and sources["min_sqnr_db"] == "default floor for fp32"


def test_source_weights_dropped_after_canonicalize_but_never_the_callers(tmp_path):
    """The build frees its own copy of the source's weights once canonicalized (memory), keeps the header the
    manifest records, and leaves a ModelProto the caller passed as it was."""
    import onnx

    gm = GM["conv_bn_relu"]
    req = stages.resolve_request(gm.path, target="onnxruntime", precision="fp32")
    src = stages.load(req)
    src.proto.producer_name = "exporter-x"
    src.proto.metadata_props.add(key="k", value="v")
    stages.canonicalize_stage(req, src)
    light = stages.drop_source_weights(req, src)
    assert len(light.proto.graph.initializer) == 0 and light.sha256 == src.sha256
    assert light.proto.producer_name == "exporter-x" and {p.key: p.value for p in light.proto.metadata_props} == {"k": "v"}

    theirs = onnx.load(str(gm.path))
    before = theirs.SerializeToString()
    out = build(theirs, target="onnxruntime", precision="fp32", output=tmp_path / "m.edgepkg")
    assert theirs.SerializeToString() == before
    p = open_package(out)
    try:
        assert p.manifest.source.producer == (theirs.producer_name or None)
    finally:
        p.close()


def test_large_models_are_written_a_tensor_at_a_time_with_the_same_bytes(tmp_path):
    """save_onnx streams models above 32 MB (memory); the file is byte for byte what onnx.save writes."""
    import io

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgekit.targets.canonicalize import _write_streamed, model_size, save_onnx

    for gm in GOLDEN_MODELS:
        m = onnx.load(str(gm.path))
        buf = io.BytesIO()
        _write_streamed(m, buf)
        assert buf.getvalue() == m.SerializeToString(), gm.name
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((2560, 4096)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2560])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4096])], [w])
    big = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="t")
    big.metadata_props.add(key="k", value="v")
    assert abs(model_size(big) - big.ByteSize()) <= 1 << 20 and model_size(big) > 32 << 20
    save_onnx(big, tmp_path / "big.onnx")
    assert (tmp_path / "big.onnx").read_bytes() == big.SerializeToString()


def test_request_is_checked_before_any_long_step():
    gm = GM["conv_bn_relu"]
    with pytest.raises(ConfigError, match="unknown gate"):
        stages.resolve_request(gm.path, target="onnxruntime", gates={"min_sqnr": 3})
    with pytest.raises(ConfigError, match='gate "min_sqnr_db" must be a number'):
        stages.resolve_request(gm.path, target="onnxruntime", gates={"min_sqnr_db": "high"})
    with pytest.raises(ConfigError, match="precision"):
        stages.resolve_request(gm.path, target="onnxruntime", precision="int4")


def test_default_floors_cover_every_precision():
    assert {p: stages.DEFAULT_MIN_SQNR_DB[p] for p in Precision} == {
        Precision.FP32: 60.0, Precision.FP16: 30.0, Precision.BF16: 30.0, Precision.INT8: 25.0}


# ----------------------------------------------------------------- a whole build
def test_build_report_warnings_and_schema(tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    gm = GM["conv_bn_relu"]
    res = build_package(gm.path, target="onnxruntime", precision="fp32", output=tmp_path / "a.edgepkg")
    m = res.package
    assert [s.name for s in m.build.stages] == STAGES and all(s.seconds >= 0 for s in m.build.stages)
    assert m.verification.random_inputs and m.verification.passed
    assert m.verification.gate_sources["min_sqnr_db"] == "default floor for fp32"
    assert m.verification.min_sqnr_db >= 60.0 and m.verification.weakest == "logits"
    assert any("random-normal tensors" in w for w in res.warnings)
    assert tuple(res.warnings) == m.build.warnings
    assert all("\n" not in w for w in res.warnings)
    with _closing(res.path) as opened:
        assert opened.manifest == m
    # the committed schema accepts a real built manifest
    schema = json.loads((Path(__file__).resolve().parent.parent / "edgekit" / "schema" / "manifest.schema.json").read_text())
    jsonschema.validate(res.manifest, schema)
    assert schema == json_schema()


class _closing:
    def __init__(self, path):
        self.opened = open_package(path)

    def __enter__(self):
        return self.opened

    def __exit__(self, *exc):
        self.opened.close()


def test_public_build_reraises_the_warnings(tmp_path):
    gm = GM["conv_bn_relu"]
    with pytest.warns(UserWarning, match="verified on only 2 sample"):
        path = build(gm.path, target="onnxruntime", precision="fp32", calibration=feeds(gm, 10),
                     output=tmp_path / "b.edgepkg")
    assert path.exists()


def test_int8_under_the_default_floor_fails_with_one_line_and_no_package(tmp_path):
    gm = GM["conv_bn_relu"]
    # calibrated on inputs 100x smaller than what it is verified on: activations clip, SQNR collapses
    # (the mixed-precision rescue is off: on a three-layer model it can keep enough in float to pass; this is
    # about the gate and its message)
    out = tmp_path / "bad.edgepkg"
    with pytest.raises(GateError) as err:
        build_package(gm.path, target="onnxruntime", precision="int8", calibration=feeds(gm, 16, scale=0.01),
                      validation=feeds(gm, 8, seed=3), output=out, mixed_precision={"enabled": False})
    msg = str(err.value)
    assert "\n" not in msg and "default floor 25.00 dB" in msg and "--min-sqnr" in msg
    assert not out.exists() and not list(tmp_path.iterdir())
    # the user may accept it explicitly
    low = float(msg.split("--min-sqnr ")[1].split()[0])
    res = build_package(gm.path, target="onnxruntime", precision="int8", calibration=feeds(gm, 16, scale=0.01),
                        validation=feeds(gm, 8, seed=3), output=out, gates={"min_sqnr_db": low})
    assert res.package.verification.gate_sources == {"min_sqnr_db": "user"} and out.exists()


def test_accuracy_gate_without_labels_is_an_error(tmp_path):
    gm = GM["conv_bn_relu"]
    with pytest.raises(ConfigError, match="max_accuracy_drop gate needs labelled validation data"):
        build_package(gm.path, target="onnxruntime", precision="fp32", calibration=feeds(gm, 10), task="classify",
                      gates={"max_accuracy_drop": 0.1}, output=tmp_path / "c.edgepkg")
    assert not list(tmp_path.iterdir())


def test_detect_build_records_parts_and_decoded_agreement(tmp_path):
    gm = GM["yolo_head"]
    res = build_package(gm.path, target="onnxruntime", precision="fp32", calibration=feeds(gm, 10), task="detect",
                        labels=["a", "b", "c"], output=tmp_path / "d.edgepkg")
    v = res.package.verification
    assert [p.kind for p in v.parts] == ["boxes", "scores"]
    assert v.detection is not None and v.detection.iou_threshold == 0.5
    assert v.min_sqnr_db == min(p.sqnr_db for p in v.parts)


# ----------------------------------------------------------------- options
def _schema(runtime):
    s = stages._runner_options_schema(runtime)
    if s is None:
        pytest.skip(f"the {runtime} runner declares no OptionSchema yet")
    return s


def test_device_only_runtime_option_is_refused(tmp_path):
    for target in ("openvino", "tensorrt", "onnxruntime"):
        schema = stages._runner_options_schema(stages.get_target(target).runtime)
        device_only = [o.name for o in schema.options if o.device_only] if schema is not None else []
        if device_only:
            break
    else:
        pytest.skip("no runner declares a device-only option yet")
    gm = GM["conv_bn_relu"]
    with pytest.raises(ConfigError, match="device-only") as err:
        stages.resolve_request(gm.path, target=target, runtime_options={device_only[0]: str(tmp_path)})
    assert "\n" not in str(err.value) and device_only[0] in str(err.value)


def test_runtime_option_typo_fails_before_the_build(tmp_path):
    _schema("onnxruntime")
    gm = GM["conv_bn_relu"]
    with pytest.raises(ConfigError, match="thredas"):
        stages.resolve_request(gm.path, target="onnxruntime", runtime_options={"thredas": 2})


def test_build_options_never_reach_the_manifest(tmp_path):
    tgt = stages.get_target("openvino")
    bschema = getattr(tgt, "build_options", None)
    if bschema is None or "fast_bias_correction" not in bschema:
        pytest.skip("the openvino target declares no fast_bias_correction build option")
    if not tgt.toolchain()[0]:
        pytest.skip("openvino is not installed")
    gm = GM["conv_bn_relu"]
    res = build_package(gm.path, target="openvino", precision="int8", calibration=feeds(gm, 16),
                        runtime_options={"fast_bias_correction": False}, gates={"min_sqnr_db": 0.0},
                        output=tmp_path / "f.edgepkg")
    assert "fast_bias_correction" not in res.package.runtime_options
    assert "fast_bias_correction" not in json.dumps(res.manifest["target"])


# ----------------------------------------------------------------- task-aware parity (pure numpy)
def _yolov8(n=64, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    boxes = np.stack([rng.uniform(50, 600, n), rng.uniform(50, 600, n), rng.uniform(10, 60, n), rng.uniform(10, 60, n)])
    scores = rng.uniform(0, 0.05, (classes, n))
    scores[rng.integers(0, classes, 8), rng.choice(n, 8, replace=False)] = 0.9
    return np.concatenate([boxes, scores])[None].astype(np.float32)  # [1, 4+C, N]


def test_detect_parts_expose_broken_scores():
    ref = [{"out": _yolov8(seed=s)} for s in range(3)]
    cand = []
    for r in ref:
        c = r["out"].copy()
        c[:, 4:, :] = np.round(c[:, 4:, :] * 2) / 2  # scores crushed, boxes exact
        cand.append({"out": c})
    rep = compare_outputs(ref, cand, task="detect", class_names=["a", "b", "c"])
    parts = {p.kind: p for p in rep.parts}
    assert parts["boxes"].sqnr_db == 200.0 and parts["scores"].sqnr_db < 15
    tensor_wide = rep.outputs["out"].sqnr_db
    assert tensor_wide > 40  # what a tensor-wide figure would have said
    assert rep.weakest.kind == "scores" and rep.min_sqnr_db == parts["scores"].sqnr_db
    assert rep.detection.reference_detections == rep.detection.candidate_detections > 0
    assert rep.detection.recall == 1.0 and rep.detection.score_error == pytest.approx(0.1, abs=1e-6)
    with pytest.raises(GateError, match="class scores"):
        check_gates(rep, min_sqnr_db=25.0)
    doc = rep.to_json()
    assert doc["weakest"] == "out class scores" and doc["detection"]["recall"] == 1.0


def test_yolov5_layout_has_objectness_apart():
    rng = np.random.default_rng(1)
    pred = np.concatenate([rng.uniform(10, 600, (1, 200, 4)), rng.uniform(0, 1, (1, 200, 1)),
                           rng.uniform(0, 1, (1, 200, 3))], axis=2).astype(np.float32)  # [1, N, 5+C]
    rep = compare_outputs([{"o": pred}], [{"o": pred}], task="detect", class_names=["a", "b", "c"])
    assert [p.kind for p in rep.parts] == ["boxes", "objectness", "scores"]


def test_match_detections_same_class_and_iou():
    from edgekit.postprocess import Detection

    ref = [Detection(box=(0, 0, 10, 10), score=0.9, class_id=0, label=None),
           Detection(box=(20, 20, 30, 30), score=0.8, class_id=1, label=None)]
    cand = [Detection(box=(1, 1, 10, 10), score=0.7, class_id=0, label=None),   # IoU 0.81, same class
            Detection(box=(20, 20, 30, 30), score=0.8, class_id=2, label=None)]  # other class
    n, errors = match_detections(ref, cand)
    assert n == 1 and errors == [pytest.approx(0.2)]


def test_classify_top5_and_segment_mask_iou():
    ref = [{"p": np.arange(10, dtype=np.float32)[None]}]
    cand = [{"p": np.array([[10, 1, 2, 3, 4, 5, 6, 7, 8, 9]], np.float32)}]  # ref top-1 (9) is cand's 2nd
    rep = compare_outputs(ref, cand, task="classify")
    assert rep.top1_agreement == 0.0 and rep.top5_agreement == 1.0
    seg_ref = np.zeros((1, 2, 4, 4), np.float32)
    seg_ref[0, 1, :2] = 1.0  # class 1 on the top half
    seg_cand = seg_ref.copy()
    seg_cand[0, 1, 1] = 0.0  # one row lost
    rep = compare_outputs([{"s": seg_ref}], [{"s": seg_cand}], task="segment")
    # class 1: IoU 4/8; class 0: IoU 8/12
    assert rep.mask_iou == pytest.approx((4 / 8 + 8 / 12) / 2)


# ----------------------------------------------------------------- the CLI's warnings and usage errors
def _cli(*args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "edgekit", *map(str, args)], capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("args, needle", [
    (("nosuchcommand",), "No such command 'nosuchcommand'"),
    (("build", "--no-such-flag"), "No such option: --no-such-flag"),
    (("inspect",), "Missing argument"),
])
def test_usage_errors_are_one_error_line(args, needle):
    proc = _cli(*args)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and "Usage:" not in proc.stderr


def test_build_warnings_on_the_cli(tmp_path):
    gm = GM["conv_bn_relu"]
    proc = _cli("build", gm.path, "--target", "onnxruntime", "-o", tmp_path / "w.edgepkg")
    assert proc.returncode == 0, proc.stderr
    warns = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning: ")]
    assert any("random-normal tensors" in w for w in warns), proc.stderr
    assert "warnings.warn" not in proc.stderr and "UserWarning" not in proc.stderr  # no Python source lines
    proc = _cli("build", gm.path, "--target", "onnxruntime", "-o", tmp_path / "w.edgepkg", "--json")
    doc = json.loads(proc.stdout)
    assert proc.returncode == 0 and any("random-normal tensors" in w for w in doc["warnings"])
    assert doc["manifest"]["build"]["warnings"] == doc["warnings"]
    assert "warning:" not in proc.stderr


def test_labels_that_are_unicode_spaces_keep_their_index(tmp_path):
    """PaddleOCR-style dictionaries hold U+3000 as a class: dropping it would shift every label after it."""
    gm = GM["conv_bn_relu"]
    names = [f"c{i}" for i in range(10)]
    names[4] = "\u3000"
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(["  c0 "] + names[1:]) + "\n\n", encoding="utf-8")
    res = build_package(gm.path, target="onnxruntime", precision="fp32", task="classify", labels=labels,
                        output=tmp_path / "l.edgepkg")
    with _closing(res.path) as opened:
        assert list(opened.manifest.labels) == names

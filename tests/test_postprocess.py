"""edgekit.postprocess: task configs, decoding, NMS, results (device side, numpy only)."""
from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pytest

from edgekit.errors import ConfigError, EdgekitError, InputError, ManifestError
from edgekit.postprocess import (
    ClassifyConfig,
    ClassifyResult,
    DetectConfig,
    DetectLayout,
    DetectResult,
    RawConfig,
    RawResult,
    SegmentConfig,
    SegmentLayout,
    SegmentResult,
    SegmentScores,
    SoftmaxMode,
    Task,
    box_iou,
    check_class_count,
    config_for_task,
    config_from_json,
    config_to_json,
    nms,
    postprocess,
    resolve_for_model,
    segment_layout_for,
    segment_scores_from_graph,
    select_output,
    softmax,
)

pytestmark = pytest.mark.device


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


class Letterbox:
    """A fake preprocessing transform: original → model is ``x * scale + pad``."""

    def __init__(self, scale: float = 0.5, pad: tuple = (0.0, 80.0), original_size: tuple = (1280, 960)) -> None:
        self.scale = scale
        self.pad = np.array([pad[0], pad[1], pad[0], pad[1]], dtype=np.float64)
        self.original_size = original_size
        self.calls = 0

    def to_original(self, boxes: np.ndarray) -> np.ndarray:
        self.calls += 1
        assert boxes.ndim == 2 and boxes.shape[1] == 4
        out = (boxes - self.pad) / self.scale
        w, h = self.original_size
        out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, w)
        out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, h)
        return out


class LetterboxWithMask(Letterbox):
    def mask_to_original(self, mask: np.ndarray) -> np.ndarray:
        # nearest upsampling ×2 stands in for the real inverse resize
        return np.repeat(np.repeat(mask, 2, axis=0), 2, axis=1)


def to_model(box_xyxy, t: Letterbox) -> np.ndarray:
    return np.asarray(box_xyxy, dtype=np.float64) * t.scale + t.pad


def xyxy_to_cxcywh(b):
    x1, y1, x2, y2 = b
    return [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]


def yolov8_output(planted, num_classes=3, n=8400, seed=0):
    """[1, 4+C, N]: low-score noise plus planted (cx, cy, w, h, class, score) rows."""
    rng = np.random.default_rng(seed)
    out = np.zeros((4 + num_classes, n), dtype=np.float32)
    out[0:2] = rng.uniform(0, 640, size=(2, n))
    out[2:4] = rng.uniform(4, 100, size=(2, n))
    out[4:] = rng.uniform(0, 0.1, size=(num_classes, n))
    for j, (cx, cy, w, h, cls, score) in enumerate(planted):
        col = 1000 + 37 * j  # spread them out; position must not matter
        out[:4, col] = [cx, cy, w, h]
        out[4:, col] = 0.01
        out[4 + cls, col] = score
    return out[None]


def yolov5_output(planted, num_classes=20, n=25200, seed=1):
    """[1, N, 5+C]: planted (cx, cy, w, h, objectness, class, class_score)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, 5 + num_classes), dtype=np.float32)
    out[:, 0:2] = rng.uniform(0, 640, size=(n, 2))
    out[:, 2:4] = rng.uniform(4, 100, size=(n, 2))
    out[:, 4] = rng.uniform(0, 0.2, size=n)
    out[:, 5:] = rng.uniform(0, 1, size=(n, num_classes))
    for j, (cx, cy, w, h, obj, cls, cls_score) in enumerate(planted):
        row = 500 + 91 * j
        out[row, :4] = [cx, cy, w, h]
        out[row, 4] = obj
        out[row, 5:] = 0.01
        out[row, 5 + cls] = cls_score
    return out[None]


def reference_nms(boxes, scores, thr, class_ids=None, max_det=None):
    """Brute force: scalar IoU against every kept box, in stable score order."""

    def iou(a, b):
        iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = iw * ih
        area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
        area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
        union = area_a + area_b - inter
        return inter / union if union > 0 else 0.0

    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    keep = []
    for i in order:
        if max_det is not None and len(keep) >= max_det:
            break
        if all(
            (class_ids is not None and class_ids[i] != class_ids[j]) or iou(boxes[i], boxes[j]) <= thr
            for j in keep
        ):
            keep.append(i)
    return keep


# ---------------------------------------------------------------------------
# configs
# ---------------------------------------------------------------------------


def test_config_defaults_and_enums():
    c = ClassifyConfig()
    assert (c.top_k, c.softmax, c.output) == (5, SoftmaxMode.AUTO, None)
    d = DetectConfig(layout="yolov5")
    assert d.layout is DetectLayout.YOLOV5 and d.layout == "yolov5"  # str-valued enum
    assert (d.conf_threshold, d.iou_threshold, d.max_detections, d.class_agnostic) == (0.25, 0.45, 300, False)
    assert isinstance(DetectConfig(conf_threshold=1).conf_threshold, float)
    assert DetectConfig.task is Task.DETECT and SegmentConfig.task == "segment" and RawConfig.task == "raw"
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.iou_threshold = 0.5  # type: ignore[misc]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: config_for_task("x"), "\"task\" must be one of {'classify', 'detect', 'segment', 'text-detect', 'raw'}, but got 'x'"),
        (lambda: ClassifyConfig(softmax="maybe"), "\"softmax\" must be one of {'auto', 'always', 'never'}, but got 'maybe'"),
        (lambda: ClassifyConfig(top_k=0), '"top_k" must be an integer >= 1, but got 0'),
        (lambda: ClassifyConfig(top_k=True), '"top_k" must be an integer >= 1, but got True'),
        (lambda: ClassifyConfig(top_k=2.5), '"top_k" must be an integer >= 1, but got 2.5'),
        (lambda: DetectConfig(layout="yolov9"), "\"layout\" must be one of {'auto', 'yolov8', 'yolov5', 'yolox_raw'}, but got 'yolov9'"),
        (lambda: DetectConfig(iou_threshold=1.5), '"iou_threshold" must be a number in [0, 1], but got 1.5'),
        (lambda: DetectConfig(conf_threshold=-0.1), '"conf_threshold" must be a number in [0, 1], but got -0.1'),
        (lambda: DetectConfig(conf_threshold=float("nan")), '"conf_threshold" must be a number in [0, 1], but got nan'),
        (lambda: DetectConfig(max_detections=0), '"max_detections" must be an integer >= 1, but got 0'),
        (lambda: DetectConfig(class_agnostic="yes"), '"class_agnostic" must be true or false, but got \'yes\''),
        (lambda: SegmentConfig(output=""), '"output" must be an output name'),
        (lambda: config_for_task("detect", iou=0.5), "unknown parameter(s) ['iou'] for task 'detect'"),
    ],
)
def test_config_errors(make, message):
    with pytest.raises(ConfigError) as info:
        make()
    assert message in str(info.value)
    assert isinstance(info.value, EdgekitError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "cfg",
    [
        ClassifyConfig(),
        ClassifyConfig(top_k=3, softmax="never", output="logits"),
        DetectConfig(),
        DetectConfig(layout="yolov8", conf_threshold=0.5, iou_threshold=0.7, max_detections=10,
                     class_agnostic=True, output="output0"),
        SegmentConfig(),
        SegmentConfig(output="out"),
        SegmentConfig(output="out", scores="probabilities"),
        RawConfig(),
    ],
)
def test_config_json_round_trip(cfg):
    data = config_to_json(cfg)
    assert data["task"] == cfg.task.value
    text = json.dumps(data)  # plain JSON, no enums left
    back = config_from_json(json.loads(text))
    assert back == cfg and type(back) is type(cfg)
    assert config_for_task(data["task"], **{k: v for k, v in data.items() if k != "task"}) == cfg


def test_config_from_json_defaults():
    assert config_from_json({"task": "detect"}) == DetectConfig()
    assert config_from_json({"task": "classify", "top_k": 1}) == ClassifyConfig(top_k=1)
    assert config_from_json({"task": "raw"}) == RawConfig()


@pytest.mark.parametrize(
    "data, message",
    [
        ({"task": "detect", "iou_threshold": 2}, "manifest.postprocess.iou_threshold: expected a number in [0, 1], got 2"),
        ({"task": "detect", "conf_threshold": "0.3"}, "manifest.postprocess.conf_threshold: expected a number in [0, 1], got '0.3'"),
        ({"task": "detect", "layout": "ssd"}, "manifest.postprocess.layout: expected one of {'auto', 'yolov8', 'yolov5', 'yolox_raw'}, got 'ssd'"),
        ({"task": "detect", "max_detections": -1}, "manifest.postprocess.max_detections: expected an integer >= 1, got -1"),
        ({"task": "detect", "class_agnostic": 1}, "manifest.postprocess.class_agnostic: expected true or false, got 1"),
        ({"task": "classify", "top_k": None}, "manifest.postprocess.top_k: expected an integer >= 1, got None"),
        ({"task": "classify", "softmax": True}, "manifest.postprocess.softmax: expected one of {'auto', 'always', 'never'}, got True"),
        ({"task": "segment", "output": 3}, "manifest.postprocess.output: expected an output name"),
        ({"task": "detect", "iou_treshold": 0.5}, "manifest.postprocess.iou_treshold: unknown field for task 'detect'"),
        ({"task": "raw", "top_k": 5}, "manifest.postprocess.top_k: unknown field for task 'raw'"),
        ({"task": "pose"}, "manifest.postprocess.task: expected one of {'classify', 'detect', 'segment', 'text-detect', 'raw'}, got 'pose'"),
        ({"top_k": 5}, "manifest.postprocess.task: required field is missing"),
        ([1, 2], "manifest.postprocess: expected an object"),
    ],
)
def test_config_from_json_errors_name_the_field(data, message):
    with pytest.raises(ManifestError) as info:
        config_from_json(data)
    assert message in str(info.value)


def test_config_from_json_custom_where():
    with pytest.raises(ManifestError, match=r"^pkg\.post\.top_k: expected an integer >= 1, got 0$"):
        config_from_json({"task": "classify", "top_k": 0}, where="pkg.post")


def test_config_to_json_rejects_non_config():
    with pytest.raises(ConfigError):
        config_to_json({"task": "raw"})  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# softmax / classify
# ---------------------------------------------------------------------------


def test_softmax_is_stable_and_normalized():
    x = np.array([[1000.0, 1001.0, 1002.0], [-1e4, 0.0, 1e4]])
    p = softmax(x)
    assert np.all(np.isfinite(p))
    np.testing.assert_allclose(p.sum(axis=-1), 1.0)
    np.testing.assert_allclose(p[0], softmax(np.array([0.0, 1.0, 2.0])))
    np.testing.assert_allclose(softmax(np.array([[1.0, 2.0], [3.0, 5.0]]), axis=0).sum(axis=0), 1.0)
    assert softmax(np.array([1, 2, 3])).dtype == np.float64  # ints are promoted
    assert softmax(np.array([1, 2], dtype=np.float32)).dtype == np.float32
    q = softmax(np.array([-np.inf, 0.0]))
    np.testing.assert_allclose(q, [0.0, 1.0])


def test_classify_logits_get_softmax_and_top_k_order():
    logits = np.array([[2.0, -1.0, 5.0, 0.5, 3.0]], dtype=np.float32)
    labels = ["a", "b", "c", "d", "e"]
    r = postprocess(ClassifyConfig(top_k=3), {"logits": logits}, labels=labels)
    assert isinstance(r, ClassifyResult)
    assert [c.index for c in r.top] == [2, 4, 0]
    assert [c.label for c in r.top] == ["c", "e", "a"]
    expected = softmax(logits[0].astype(np.float64))
    np.testing.assert_allclose([c.score for c in r.top], expected[[2, 4, 0]], rtol=1e-6)
    assert (r.index, r.label) == (2, "c") and r.score == r.top[0].score
    assert r.outputs["logits"] is logits
    assert all(isinstance(c.score, float) and isinstance(c.index, int) for c in r.top)


def test_classify_probabilities_are_kept_as_is():
    probs = np.array([[0.1, 0.6, 0.3]], dtype=np.float32)
    r = postprocess(ClassifyConfig(), {"prob": probs})
    assert [c.index for c in r.top] == [1, 2, 0]  # top_k capped at C
    np.testing.assert_allclose([c.score for c in r.top], [0.6, 0.3, 0.1], rtol=1e-6)
    assert r.label is None  # no labels given


def test_classify_softmax_modes():
    probs = np.array([[0.1, 0.6, 0.3]])
    always = postprocess(ClassifyConfig(softmax="always"), {"p": probs})
    np.testing.assert_allclose(always.score, softmax(probs[0])[1])
    # non-negative but not summing to 1 (e.g. sigmoid outputs): auto applies softmax
    sig = np.array([[0.9, 0.8, 0.1]])
    auto = postprocess(ClassifyConfig(), {"p": sig})
    np.testing.assert_allclose(auto.score, softmax(sig[0])[0])
    never = postprocess(ClassifyConfig(softmax=SoftmaxMode.NEVER), {"p": np.array([[-3.0, 7.0]])})
    assert never.score == 7.0 and never.index == 1


def test_classify_shapes_ties_and_labels_out_of_range():
    scores = np.zeros((1, 4, 1, 1), dtype=np.float32)
    scores[0, :, 0, 0] = [0.25, 0.25, 0.4, 0.1]
    r = postprocess(ClassifyConfig(top_k=4), {"x": scores}, labels=["a", "b"])
    assert [c.index for c in r.top] == [2, 0, 1, 3]  # tie: lower index first
    assert [c.label for c in r.top] == [None, "a", "b", None]
    r1 = postprocess(ClassifyConfig(top_k=1), {"x": np.array([0.2, 0.8])})  # unbatched [C]
    assert r1.index == 1 and len(r1.top) == 1


def test_classify_rejects_feature_maps_and_batches():
    with pytest.raises(InputError, match="use task 'raw'"):
        postprocess(ClassifyConfig(), {"x": np.zeros((1, 197, 768))})
    with pytest.raises(InputError, match="one image at a time"):
        postprocess(ClassifyConfig(), {"x": np.zeros((2, 10))})
    with pytest.raises(InputError, match="empty"):
        postprocess(ClassifyConfig(), {"x": np.zeros((1, 0))})


def test_classify_result_to_dict_is_json():
    r = postprocess(ClassifyConfig(top_k=2), {"x": np.array([[1.0, 3.0, 2.0]], dtype=np.float32)}, labels=["a", "b", "c"])
    d = json.loads(json.dumps(r.to_dict()))
    assert d["task"] == "classify" and d["label"] == "b" and d["index"] == 1
    assert [t["label"] for t in d["top"]] == ["b", "c"]


# ---------------------------------------------------------------------------
# detect
# ---------------------------------------------------------------------------

# (cx, cy, w, h, class, score) in model pixels
V8_PLANTED = [
    (100, 200, 50, 80, 0, 0.90),   # A
    (102, 201, 50, 80, 0, 0.80),   # duplicate of A, same class → suppressed
    (100, 200, 50, 80, 1, 0.70),   # same box, other class → kept per class
    (400, 300, 120, 60, 2, 0.60),  # C
    (405, 302, 118, 60, 2, 0.20),  # below conf_threshold
]


def test_yolov8_decode_nms_per_class():
    out = yolov8_output(V8_PLANTED)
    r = postprocess(DetectConfig(), {"output0": out}, labels=["cat", "dog", "car"])
    assert isinstance(r, DetectResult) and len(r) == 3
    assert [d.class_id for d in r.detections] == [0, 1, 2]
    assert [d.label for d in r.detections] == ["cat", "dog", "car"]
    np.testing.assert_allclose([d.score for d in r.detections], [0.9, 0.7, 0.6], rtol=1e-6)
    np.testing.assert_allclose(r.detections[0].box, (75, 160, 125, 240), atol=1e-4)  # no transform: model coords
    np.testing.assert_allclose(r.detections[2].box, (340, 270, 460, 330), atol=1e-4)
    assert all(isinstance(v, float) for v in r.detections[0].box)
    assert isinstance(r.detections[0].class_id, int)


def test_yolov8_class_agnostic_suppresses_across_classes():
    out = yolov8_output(V8_PLANTED)
    r = postprocess(DetectConfig(class_agnostic=True), {"output0": out})
    assert [d.class_id for d in r.detections] == [0, 2]
    assert r.detections[0].label is None


def test_detect_thresholds_and_max_detections():
    out = yolov8_output(V8_PLANTED)
    assert len(postprocess(DetectConfig(conf_threshold=0.65), {"o": out})) == 2
    assert len(postprocess(DetectConfig(conf_threshold=0.15), {"o": out})) == 3  # 0.20 dup of C suppressed
    # iou_threshold 1.0 disables suppression: the same-class duplicate comes back
    assert len(postprocess(DetectConfig(iou_threshold=1.0), {"o": out})) == 4
    top1 = postprocess(DetectConfig(max_detections=1), {"o": out})
    assert len(top1) == 1 and top1.detections[0].score == pytest.approx(0.9)
    assert len(postprocess(DetectConfig(conf_threshold=0.95), {"o": out})) == 0


def test_detect_boxes_come_back_in_original_coordinates():
    t = Letterbox(scale=0.5, pad=(0, 80), original_size=(1280, 960))
    a_orig = [150.0, 160.0, 250.0, 320.0]
    edge_orig = [1200.0, 900.0, 1280.0, 960.0]
    planted = [
        (*xyxy_to_cxcywh(to_model(a_orig, t)), 0, 0.9),
        # a box that sticks out of the image in model space: clipped by the transform
        (*xyxy_to_cxcywh(to_model(edge_orig, t) + [0, 0, 20, 20]), 1, 0.8),
    ]
    r = postprocess(DetectConfig(layout="yolov8"), {"o": yolov8_output(planted)}, transform=t)
    assert t.calls == 1
    np.testing.assert_allclose(r.detections[0].box, a_orig, atol=1e-3)
    np.testing.assert_allclose(r.detections[1].box, edge_orig, atol=1e-3)


def test_detect_no_detections_skips_transform():
    t = Letterbox()
    r = postprocess(DetectConfig(conf_threshold=0.99), {"o": yolov8_output([])}, transform=t)
    assert len(r) == 0 and t.calls == 0
    assert r.to_dict() == {"task": "detect", "detections": []}


def test_yolov5_objectness_times_class_score():
    planted = [
        (320, 320, 100, 100, 0.9, 3, 0.9),   # 0.81
        (322, 321, 100, 100, 0.8, 3, 0.9),   # 0.72, same class duplicate → suppressed
        (320, 320, 100, 100, 0.9, 7, 0.8),   # 0.72, other class → kept
        (100, 100, 40, 40, 0.9, 5, 0.2),     # 0.18 < 0.25
        (500, 100, 40, 40, 0.2, 5, 0.99),    # high class score, low objectness: 0.198
        (500, 500, 60, 30, 0.6, 11, 0.95),   # 0.57
    ]
    out = yolov5_output(planted)
    labels = [f"c{i}" for i in range(20)]
    t = Letterbox(scale=0.5, pad=(0, 80), original_size=(1280, 960))
    r = postprocess(DetectConfig(), {"output": out}, labels=labels, transform=t)
    assert [d.class_id for d in r.detections] == [3, 7, 11]
    np.testing.assert_allclose([d.score for d in r.detections], [0.81, 0.72, 0.57], rtol=1e-5)
    assert r.detections[2].label == "c11"
    # (270, 270, 370, 370) in model pixels → ((x - 0) * 2, (y - 80) * 2)
    np.testing.assert_allclose(r.detections[0].box, (540, 380, 740, 580), atol=1e-3)
    d = json.loads(json.dumps(r.to_dict()))
    assert d["detections"][0]["label"] == "c3" and len(d["detections"][0]["box"]) == 4


def test_auto_layout_from_shape():
    v8 = yolov8_output(V8_PLANTED, num_classes=80)
    assert v8.shape == (1, 84, 8400)
    assert [d.class_id for d in postprocess(DetectConfig(), {"o": v8})] == [0, 1, 2]
    v5 = yolov5_output([(320, 320, 100, 100, 0.9, 3, 0.9)], num_classes=80)
    assert v5.shape == (1, 25200, 85)
    r = postprocess(DetectConfig(), {"o": v5})
    assert [d.class_id for d in r.detections] == [3]
    # labels resolve shapes the size heuristic cannot (features ≈ candidates)
    small = np.zeros((1, 7, 10), dtype=np.float32)  # 4+3 features, 10 candidates
    small[0, :4, 0] = [50, 50, 20, 20]
    small[0, 5, 0] = 0.9
    r = postprocess(DetectConfig(), {"o": small}, labels=["a", "b", "c"])
    assert [(d.class_id, d.label) for d in r.detections] == [(1, "b")]


@pytest.mark.parametrize(
    "shape, labels, message",
    [
        ((1, 84, 84), None, "cannot tell the layout"),
        ((1, 84, 150), None, "cannot tell the layout"),
        ((1, 7, 8), ["a", "b", "c"], "fits both yolov8 and yolov5"),
        ((1, 8400, 84), ["x"] * 80, "fits no known layout for 80 labels"),  # transposed YOLOv8
    ],
)
def test_auto_layout_ambiguity_tells_to_set_layout(shape, labels, message):
    out = np.zeros(shape, dtype=np.float32)
    with pytest.raises(ConfigError) as info:
        postprocess(DetectConfig(), {"o": out}, labels=labels)
    assert message in str(info.value) and '"layout"' in str(info.value)


def test_explicit_layout_bypasses_the_heuristic():
    out = np.zeros((1, 84, 84), dtype=np.float32)
    out[0, :4, 3] = [10, 10, 4, 4]
    out[0, 4 + 9, 3] = 0.5
    r = postprocess(DetectConfig(layout="yolov8"), {"o": out})
    assert [d.class_id for d in r.detections] == [9]


def test_detect_bad_shapes_and_batch():
    with pytest.raises(InputError, match="one image at a time"):
        postprocess(DetectConfig(), {"o": np.zeros((2, 84, 8400), dtype=np.float32)})
    with pytest.raises(InputError, match=r"expected \[1, 4\+C, N\]"):
        postprocess(DetectConfig(), {"o": np.zeros((84, 8400), dtype=np.float32)})
    with pytest.raises(InputError, match="needs dim 2 >= 6"):
        postprocess(DetectConfig(layout="yolov5"), {"o": np.zeros((1, 100, 5), dtype=np.float32)})


def test_detect_ignores_nan_and_inf():
    out = yolov8_output(V8_PLANTED)
    out[0, 4, 10] = np.nan
    out[0, :4, 11] = [np.inf, 1, 1, 1]
    out[0, 4, 11] = 0.99
    r = postprocess(DetectConfig(), {"o": out})
    assert [d.score for d in r.detections] == pytest.approx([0.9, 0.7, 0.6])


def test_detect_is_fast_on_8400_passing_candidates():
    rng = np.random.default_rng(3)
    out = np.empty((1, 84, 8400), dtype=np.float32)
    out[0, :2] = rng.uniform(0, 640, size=(2, 8400))
    out[0, 2:4] = rng.uniform(5, 60, size=(2, 8400))
    out[0, 4:] = rng.uniform(0.3, 1.0, size=(80, 8400))  # every candidate passes conf
    start = time.perf_counter()
    r = postprocess(DetectConfig(), {"o": out})
    elapsed = time.perf_counter() - start
    assert len(r) == 300
    assert elapsed < 5.0  # typically ~0.1 s; generous for slow CI boxes


# ---------------------------------------------------------------------------
# NMS against a brute-force reference
# ---------------------------------------------------------------------------


def random_boxes(rng, n, size=200.0):
    xy = rng.uniform(0, size, size=(n, 2))
    wh = rng.uniform(1, size / 3, size=(n, 2))
    return np.concatenate([xy, xy + wh], axis=1)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("per_class", [False, True])
def test_nms_matches_brute_force(seed, per_class):
    rng = np.random.default_rng(seed)
    n = 150
    boxes = random_boxes(rng, n)
    scores = rng.uniform(0, 1, size=n)
    scores[:10] = scores[10]  # some exact ties exercise the tie order
    classes = rng.integers(0, 4, size=n) if per_class else None
    for thr in (0.1, 0.3, 0.5, 0.7):
        got = nms(boxes, scores, thr, class_ids=classes)
        want = reference_nms(boxes.tolist(), scores.tolist(), thr,
                             None if classes is None else classes.tolist())
        assert got.tolist() == want
        limited = nms(boxes, scores, thr, class_ids=classes, max_detections=7)
        assert limited.tolist() == want[:7]


def test_nms_edge_cases():
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []
    assert nms([[0, 0, 10, 10]], [0.3], 0.5).tolist() == [0]
    # degenerate (zero-area) boxes never suppress anything
    assert nms([[5, 5, 5, 5], [5, 5, 5, 5]], [0.9, 0.8], 0.0).tolist() == [0, 1]
    with pytest.raises(ValueError):
        nms(np.zeros((3, 4)), np.zeros(2), 0.5)


def test_box_iou_matches_reference():
    rng = np.random.default_rng(7)
    a, b = random_boxes(rng, 20), random_boxes(rng, 30)
    got = box_iou(a, b)
    assert got.shape == (20, 30)
    for i in range(20):
        for j in range(30):
            x1, y1 = max(a[i, 0], b[j, 0]), max(a[i, 1], b[j, 1])
            x2, y2 = min(a[i, 2], b[j, 2]), min(a[i, 3], b[j, 3])
            inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
            area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
            assert got[i, j] == pytest.approx(inter / (area(a[i]) + area(b[j]) - inter))
    np.testing.assert_allclose(np.diag(box_iou(a, a)), 1.0)


# ---------------------------------------------------------------------------
# segment
# ---------------------------------------------------------------------------


def seg_scores(h=6, w=8, c=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(1, c, h, w)).astype(np.float32)


def test_segment_nchw_argmax():
    out = seg_scores()
    r = postprocess(SegmentConfig(), {"logits": out})
    assert isinstance(r, SegmentResult)
    assert r.mask.shape == (6, 8) and r.mask.dtype == np.int32
    np.testing.assert_array_equal(r.mask, np.argmax(out[0], axis=0))
    assert r.labels is None


def test_segment_nhwc_detected_from_labels():
    nchw = seg_scores(c=3)
    nhwc = np.ascontiguousarray(nchw.transpose(0, 2, 3, 1))  # [1, 6, 8, 3]
    labels = ["bg", "person", "car"]
    r = postprocess(SegmentConfig(), {"o": nhwc}, labels=labels)
    np.testing.assert_array_equal(r.mask, np.argmax(nchw[0], axis=0))
    assert r.labels == tuple(labels)
    d = json.loads(json.dumps(r.to_dict()))
    assert d["task"] == "segment" and d["shape"] == [6, 8]
    assert sum(c["pixels"] for c in d["classes"]) == 48
    assert {c["label"] for c in d["classes"]} <= set(labels)
    assert np.array_equal(np.array(d["mask"]), r.mask)
    assert "mask" not in r.to_dict(include_mask=False)


def test_segment_defaults_to_nchw_without_labels():
    out = seg_scores(h=5, w=3, c=4)  # W=3 would look like a small C, but no labels: NCHW
    r = postprocess(SegmentConfig(), {"o": out})
    assert r.mask.shape == (5, 3)
    np.testing.assert_array_equal(r.mask, np.argmax(out[0], axis=0))


def test_segment_mask_mapped_by_transform_when_it_can():
    out = seg_scores()
    r = postprocess(SegmentConfig(), {"o": out}, transform=LetterboxWithMask())
    assert r.mask.shape == (12, 16) and r.mask.dtype == np.int32
    np.testing.assert_array_equal(r.mask[::2, ::2], np.argmax(out[0], axis=0))
    # a transform without mask_to_original leaves the mask at model resolution
    assert postprocess(SegmentConfig(), {"o": out}, transform=Letterbox()).mask.shape == (6, 8)


def test_segment_binary_and_class_id_outputs():
    logit = np.array([[[[-1.0, 2.0], [0.5, -0.1]]]])  # [1, 1, 2, 2] logits
    np.testing.assert_array_equal(postprocess(SegmentConfig(scores="logits"), {"o": logit}).mask, [[0, 1], [1, 0]])
    prob = np.array([[[[0.2, 0.7], [0.51, 0.4]]]])
    np.testing.assert_array_equal(postprocess(SegmentConfig(scores="probabilities"), {"o": prob}).mask, [[0, 1], [1, 0]])
    # a [1, H, W] float map is one channel too
    np.testing.assert_array_equal(postprocess(SegmentConfig(scores="logits"), {"o": logit[0]}).mask, [[0, 1], [1, 0]])
    # undecided: never guessed from the values, one line saying what to set
    with pytest.raises(ConfigError, match=r'single-channel map.*set "scores" to "logits" or "probabilities"'):
        postprocess(SegmentConfig(), {"o": prob})
    # multi-class argmax does not depend on it
    assert postprocess(SegmentConfig(), {"o": seg_scores()}).mask.shape == (6, 8)
    ids = np.array([[[0, 3], [2, 2]]], dtype=np.int64)  # model ends with ArgMax
    r = postprocess(SegmentConfig(), {"o": ids})
    assert r.mask.dtype == np.int32 and r.class_ids() == [0, 2, 3]


def test_segment_bad_shapes_and_batch():
    with pytest.raises(InputError, match="one image at a time"):
        postprocess(SegmentConfig(), {"o": np.zeros((2, 3, 4, 4), dtype=np.float32)})
    with pytest.raises(InputError, match=r"expected \[1, C, H, W\]"):
        postprocess(SegmentConfig(), {"o": np.zeros((4, 4), dtype=np.float32)})


# ---------------------------------------------------------------------------
# raw, output selection, dispatch
# ---------------------------------------------------------------------------


def test_raw_returns_outputs():
    outs = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, 2], dtype=np.int64)}
    r = postprocess(RawConfig(), outs)
    assert isinstance(r, RawResult) and list(r.outputs) == ["a", "b"] and r.outputs["a"] is outs["a"]
    d = json.loads(json.dumps(r.to_dict()))
    assert d["outputs"]["a"] == {"shape": [2, 3], "dtype": "float32", "data": [[0, 1, 2], [3, 4, 5]]}
    assert "data" not in r.to_dict(include_data=False)["outputs"]["b"]


def test_output_selection():
    outs = {"features": np.zeros((1, 197, 768)), "logits": np.array([[0.0, 4.0, 1.0]])}
    with pytest.raises(InputError):  # first output is the feature map
        postprocess(ClassifyConfig(), outs)
    assert postprocess(ClassifyConfig(output="logits"), outs).index == 1
    with pytest.raises(InputError, match=r"no output 'scores'; its outputs are \['features', 'logits'\]"):
        postprocess(ClassifyConfig(output="scores"), outs)
    with pytest.raises(InputError, match="no output tensors"):
        postprocess(ClassifyConfig(), {})


def test_postprocess_rejects_non_config():
    with pytest.raises(ConfigError, match="config_from_json"):
        postprocess({"task": "classify"}, {"x": np.zeros((1, 3))})  # type: ignore[arg-type]


def test_results_repr_hides_outputs():
    r = postprocess(ClassifyConfig(top_k=1), {"x": np.zeros((1, 1000), dtype=np.float32)})
    assert "outputs" not in repr(r) and "Classification(" in repr(r)


# ---------------------------------------------------------------------------
# build-time decisions (pure functions the build pipeline calls)
# ---------------------------------------------------------------------------


def test_binary_threshold_is_decided_once_not_per_image():
    """The issue's case: a probability map whose max is 1.0000001 (an upsampled sigmoid,
    fp16/int8 arithmetic).  Deciding from the values flipped the threshold to 0 and marked
    nearly every pixel foreground; the recorded "probabilities" keeps it at 0.5."""
    rng = np.random.default_rng(3)
    prob = rng.uniform(0.0, 0.3, size=(1, 1, 64, 64)).astype(np.float32)  # background, p < 0.5
    prob[0, 0, 10:20, 10:21] = 0.97  # 110 foreground pixels = 2.7 %
    prob[0, 0, 15, 15] = np.float32(1.0000001)
    assert prob.max() > 1.0
    truth = float((prob > 0.5).mean())
    mask = postprocess(SegmentConfig(scores="probabilities"), {"o": prob}).mask
    assert float(mask.mean()) == pytest.approx(truth) and truth == pytest.approx(110 / 4096)
    # what the per-image guess did with this map: logits, threshold 0 → everything
    assert float(postprocess(SegmentConfig(scores="logits"), {"o": prob}).mask.mean()) == 1.0


class _Node:
    def __init__(self, op_type, inputs, outputs):
        self.op_type, self.input, self.output = op_type, list(inputs), list(outputs)


class _Graph:
    def __init__(self, *nodes):
        self.node = list(nodes)


def test_segment_scores_read_from_the_graph():
    conv = _Node("Conv", ["x", "w"], ["feat"])
    assert segment_scores_from_graph(_Graph(conv), "feat") is SegmentScores.LOGITS
    sig = _Graph(conv, _Node("Sigmoid", ["feat"], ["p"]), _Node("Resize", ["p", "", "scales"], ["up"]),
                 _Node("Transpose", ["up"], ["out"]))
    assert segment_scores_from_graph(sig, "out") is SegmentScores.PROBABILITIES  # through resize + transpose
    assert segment_scores_from_graph(sig, "feat") is SegmentScores.LOGITS
    soft = _Graph(conv, _Node("Softmax", ["feat"], ["out"]))
    assert segment_scores_from_graph(soft, "out") is SegmentScores.PROBABILITIES
    # an op that changes the values ends the walk: Sigmoid then Mul(2) is not a probability
    scaled = _Graph(conv, _Node("Sigmoid", ["feat"], ["p"]), _Node("Mul", ["p", "two"], ["out"]))
    assert segment_scores_from_graph(scaled, "out") is SegmentScores.LOGITS
    assert segment_scores_from_graph(_Graph(), "x") is SegmentScores.LOGITS  # an input passed through


def test_select_output_by_name():
    names = ["boxes", "scores", "labels"]
    with pytest.raises(ConfigError) as info:
        select_output(ClassifyConfig(), names)
    msg = str(info.value)
    assert "task 'classify' reads one model output, but the model has 3: ['boxes', 'scores', 'labels']" in msg
    assert "--output NAME" in msg
    assert select_output(ClassifyConfig(output="scores"), names).output == "scores"
    assert select_output(ClassifyConfig(top_k=2), ["logits"]) == ClassifyConfig(top_k=2, output="logits")
    with pytest.raises(ConfigError, match=r"no output 'probs'; its outputs are \['boxes', 'scores', 'labels'\]"):
        select_output(DetectConfig(output="probs"), names)
    with pytest.raises(ConfigError, match=r"package path is given with -o/--out"):
        select_output(SegmentConfig(output="model.edgepkg"), names)
    assert select_output(RawConfig(), names) == RawConfig()


@pytest.mark.parametrize(
    "cfg, labels, shape, message",
    [
        (ClassifyConfig(), 2, [1, 4], "2 labels, but output 'the output' [1, 4] scores 4 classes"),
        (ClassifyConfig(output="y"), 5, [1, 4, 1, 1], "output 'y' [1, 4, 1, 1] scores 4 classes"),
        (DetectConfig(), 2, [1, 84, 8400], "fits no known layout for 2 labels"),
        (DetectConfig(layout="yolov5"), 3, [1, 25200, 85], "in the yolov5 layout has 80 classes"),
        (SegmentConfig(), 3, [1, 21, 64, 64], "has 21 or 64 class channel(s)"),
        (SegmentConfig(), 1, [1, 1, 64, 64], "(2 or 64 lines; a one-channel mask takes 2"),
    ],
)
def test_label_count_must_match_the_class_count(cfg, labels, shape, message):
    names = [f"c{i}" for i in range(labels)]
    with pytest.raises(ConfigError) as info:
        check_class_count(cfg, names, shape)
    assert message in str(info.value)


def test_label_counts_that_fit():
    check_class_count(ClassifyConfig(), ["a"] * 4, [1, 4])
    check_class_count(ClassifyConfig(), ["a"] * 4, [4])
    check_class_count(ClassifyConfig(), ["a"] * 4, [1, -1])  # dynamic: nothing to check
    check_class_count(DetectConfig(), ["a"] * 80, [1, 84, 8400])
    check_class_count(DetectConfig(layout="yolov8"), ["a"] * 80, [1, 84, 8400])
    check_class_count(SegmentConfig(), ["a"] * 21, [1, 21, 64, 64])
    check_class_count(SegmentConfig(), ["a"] * 21, [1, 64, 64, 21])  # NHWC
    check_class_count(SegmentConfig(), ["bg", "fg"], [1, 1, 64, 64])
    check_class_count(SegmentConfig(), ["a"] * 7, [1, 64, 64])  # class ids: count not in the shape
    check_class_count(RawConfig(), ["a"], [1, 4])
    check_class_count(ClassifyConfig(), None, [1, 4])


def test_resolve_for_model_records_every_decision():
    graph = _Graph(_Node("Conv", ["x", "w"], ["logits"]), _Node("Sigmoid", ["logits"], ["mask"]))
    outs = [("logits", [1, 1, 32, 32]), ("mask", [1, 1, 32, 32])]
    cfg = resolve_for_model(SegmentConfig(output="mask"), graph, outs, ["bg", "fg"])
    assert cfg == SegmentConfig(output="mask", scores="probabilities", layout="nchw")
    assert config_to_json(cfg) == {"task": "segment", "output": "mask", "scores": "probabilities", "layout": "nchw"}
    assert resolve_for_model(SegmentConfig(output="logits"), graph, outs).scores is SegmentScores.LOGITS
    # the user's word wins over the graph
    assert resolve_for_model(SegmentConfig(output="mask", scores="logits"), graph, outs).scores is SegmentScores.LOGITS
    with pytest.raises(ConfigError, match="reads one model output, but the model has 2"):
        resolve_for_model(SegmentConfig(), graph, outs)
    with pytest.raises(ConfigError, match="3 labels"):
        resolve_for_model(SegmentConfig(output="mask"), graph, outs, ["a", "b", "c"])


def test_segment_layout_decided_at_build_time():
    # labels that fit one dim decide; otherwise the input's layout; otherwise NCHW
    assert segment_layout_for([1, 21, 64, 64], ["c"] * 21) is SegmentLayout.NCHW
    assert segment_layout_for([1, 64, 64, 21], ["c"] * 21) is SegmentLayout.NHWC
    assert segment_layout_for([1, 64, 64, 1], ["bg", "fg"]) is SegmentLayout.NHWC
    assert segment_layout_for([1, 64, 64, 5], None, "nhwc") is SegmentLayout.NHWC  # a Keras export, no labels
    assert segment_layout_for([1, 5, 64, 64], None, "nchw") is SegmentLayout.NCHW
    assert segment_layout_for([1, 5, 5, 5], None) is SegmentLayout.NCHW
    assert segment_layout_for([1, 64, 64], ["a"]) is SegmentLayout.AUTO
    # the recorded layout reads an NHWC map right even without labels
    nchw = seg_scores(h=5, w=3, c=4)
    nhwc = np.ascontiguousarray(nchw.transpose(0, 2, 3, 1))  # [1, 5, 3, 4]
    r = postprocess(SegmentConfig(layout="nhwc"), {"o": nhwc})
    np.testing.assert_array_equal(r.mask, np.argmax(nchw[0], axis=0))
    # and the label check looks at that dim only
    with pytest.raises(ConfigError, match="3 labels"):
        check_class_count(SegmentConfig(layout="nhwc"), ["a", "b", "c"], [1, 3, 64, 4])

"""Postprocessing: model outputs → typed results, one numpy implementation.

Every target (onnxruntime, OpenVINO, TFLite, Core ML, QNN, TensorRT) hands its
raw output tensors to :func:`postprocess`, so a detection from a Raspberry Pi
and one from a Jetson come out of the same code.  Device side: numpy only,
Python 3.9+, numpy 1.21 through 2.x.

Tasks (the ``postprocess`` object of ``manifest.json``, see
:func:`config_from_json` / :func:`config_to_json`):

``classify``  ``[1, C]`` (also ``[C]``, ``[1, C, 1, 1]``) → softmax if needed,
              top-k, labels → :class:`ClassifyResult`.
``detect``    ``[1, 4+C, N]`` (YOLOv8), ``[1, N, 5+C]`` (YOLOv5 / YOLOX) or raw
              YOLOX head outputs (grid decode here) → decode, confidence filter,
              greedy NMS, boxes mapped back to the original image →
              :class:`DetectResult`.
``segment``   ``[1, C, H, W]`` or ``[1, H, W, C]`` → per-pixel argmax →
              :class:`SegmentResult`.
``text-detect`` a DB text detector's probability map ``[1, 1, H, W]`` →
              regions, minimum-area rectangles, unclip, corners mapped back to the
              original image → :class:`TextDetectResult` (:mod:`edgekit.textdet`).
``raw``       the output tensors untouched → :class:`RawResult`.

Geometry comes from preprocessing as a duck-typed *transform* (see
:class:`BoxTransform`); this module never imports :mod:`edgekit.preprocess`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import field, fields
from enum import Enum
from typing import (
    Any,
    Callable,
    ClassVar,
    Dict,
    List,
    Mapping,
    Optional,
    Protocol,
    Sequence,
    Tuple,
    Type,
    Union,
)

import numpy as np

from ._validate import choices
from ._record import record
from .errors import ConfigError, InputError, ManifestError

__all__ = [
    "Task",
    "SoftmaxMode",
    "SegmentScores",
    "SegmentLayout",
    "DetectLayout",
    "ClassifyConfig",
    "DetectConfig",
    "SegmentConfig",
    "RawConfig",
    "TaskConfig",
    "config_from_json",
    "config_to_json",
    "config_for_task",
    "BoxTransform",
    "Classification",
    "ClassifyResult",
    "Detection",
    "DetectResult",
    "SegmentResult",
    "RawResult",
    "Result",
    "postprocess",
    "resolve_for_model",
    "select_output",
    "segment_scores_from_graph",
    "segment_layout_for",
    "check_class_count",
    "yolox_raw_head",
    "yolox_cell_count",
    "yolox_boxes",
    "softmax",
    "box_iou",
    "nms",
]


# ---------------------------------------------------------------------------
# Enums
# ---------------------------------------------------------------------------


class Task(str, Enum):
    """What the model's outputs mean."""

    CLASSIFY = "classify"
    DETECT = "detect"
    SEGMENT = "segment"
    TEXT_DETECT = "text-detect"
    RAW = "raw"


class SoftmaxMode(str, Enum):
    """When :class:`ClassifyConfig` applies a softmax to the scores.

    ``auto`` applies it unless the scores already are a probability
    distribution (all >= 0 and summing to 1 within ``1e-2``; the loose
    tolerance lets fp16 and dequantized int8 softmax outputs through, and
    logits practically never pass it by accident).
    """

    AUTO = "auto"
    ALWAYS = "always"
    NEVER = "never"


class SegmentScores(str, Enum):
    """What a segmentation output holds; decides the binary (one-channel) threshold.

    ``logits``         foreground where the score is > 0.
    ``probabilities``  foreground where the score is > 0.5 (the model ends with a
                       Sigmoid or Softmax).
    ``auto``           not decided yet: ``edgekit build`` decides it once from the
                       graph (:func:`segment_scores_from_graph`) and records it.  It is
                       never guessed per image from the values: a probability map that
                       reaches 1.0000001 (fp16, int8, an upsampling) must not flip the
                       threshold to 0.  Multi-class argmax does not depend on it.
    """

    AUTO = "auto"
    LOGITS = "logits"
    PROBABILITIES = "probabilities"


class SegmentLayout(str, Enum):
    """Where a ``[1, ·, ·, ·]`` segmentation output keeps its class scores.

    ``nchw``  ``[1, C, H, W]``;  ``nhwc``  ``[1, H, W, C]`` (Keras/TF exports).
    ``auto``  not decided: NHWC only when labels are given and the last dim (not
              the second) equals their count.  ``edgekit build`` decides it from the
              output shape, the labels and the input's layout, and records it.
    """

    AUTO = "auto"
    NCHW = "nchw"
    NHWC = "nhwc"


class DetectLayout(str, Enum):
    """How a detector's single output tensor is laid out.

    ``yolov8``  ``[1, 4+C, N]``: cx, cy, w, h, then C class scores (no objectness).
    ``yolov5``  ``[1, N, 5+C]``: cx, cy, w, h, objectness, then C class scores;
                score = objectness × class score.  A YOLOX export with its decode
                in the graph has the same layout.
    ``yolox_raw``  ``[1, N, 5+C]`` as a YOLOX head leaves it when the grid decode is
                not in the graph (YOLOX's ``decode_in_inference=False``): per grid
                cell raw x, y offsets, log w, log h, then objectness and C class
                scores (already through their sigmoids).  N counts the cells of
                the stride 8, 16, 32 maps (``strides``) of the model input
                (``input_size``), finest map first, each row-major; decoded as
                xy = (raw + cell) × stride, wh = exp(raw) × stride.
    ``auto``    decide from the shape, see :func:`_resolve_layout`; the build
                records ``yolox_raw`` when the graph shows it (:func:`yolox_raw_head`).
    """

    AUTO = "auto"
    YOLOV8 = "yolov8"
    YOLOV5 = "yolov5"
    YOLOX_RAW = "yolox_raw"


# ---------------------------------------------------------------------------
# Field validation, shared by the constructors (ConfigError) and by
# config_from_json (ManifestError with the field path).
# ---------------------------------------------------------------------------


class _Invalid(Exception):
    """A field value is wrong; ``expected`` completes "expected ..."."""

    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


def _show(value: Any) -> str:
    """A short rendering of a bad value for an error message."""
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, str):
        return repr(value) if len(value) < 40 else "a string"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return "an object"
    return repr(value)


_Check = Callable[[Any], Any]


def _enum(enum: Type[Enum]) -> _Check:
    def check(value: Any) -> Any:
        if isinstance(value, enum):
            return value
        if isinstance(value, str):
            try:
                return enum(value)
            except ValueError:
                pass
        raise _Invalid(f"one of {choices(enum)}")

    return check


def _int_min(minimum: int) -> _Check:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise _Invalid(f"an integer >= {minimum}")
        return int(value)

    return check


def _number_in(high: float, what: str) -> _Check:
    """A real number in [0, ``high``] (also rejects NaN and inf); ``what`` names the allowed values."""
    def check(value: Any) -> float:
        ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
        if not ok or not (0.0 <= float(value) <= high):
            raise _Invalid(what)
        return float(value)

    return check


_unit_number = _number_in(1.0, "a number in [0, 1]")
_non_negative = _number_in(1e6, "a number >= 0")


def _bool(value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise _Invalid("true or false")
    return bool(value)


def _input_size(value: Any) -> Optional[Tuple[int, int]]:
    if value is None:
        return None
    ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in value)
    if not ok:
        raise _Invalid("[height, width] (two integers >= 1) or null")
    return (int(value[0]), int(value[1]))


def _strides(value: Any) -> Tuple[int, ...]:
    ok = isinstance(value, (list, tuple)) and len(value) >= 1 and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in value)
    if not ok or any(int(a) >= int(b) for a, b in zip(value, value[1:])):
        raise _Invalid("a list of ascending integers >= 1, e.g. [8, 16, 32]")
    return tuple(int(v) for v in value)


def _output_name(value: Any) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise _Invalid("an output name (a non-empty string) or null")
    return value


def _validate(cfg: Any) -> None:
    """Check and normalize every field of a frozen config in place."""
    for name, check in _FIELDS[type(cfg)].items():
        value = getattr(cfg, name)
        try:
            normalized = check(value)
        except _Invalid as exc:
            raise ConfigError(f'"{name}" must be {exc.expected}, but got {_show(value)}') from None
        object.__setattr__(cfg, name, normalized)  # frozen: normalize str → enum, int → float


# ---------------------------------------------------------------------------
# Task configs
# ---------------------------------------------------------------------------


@record
class ClassifyConfig:
    """Classification: softmax if needed, then the ``top_k`` best classes.

    Args:
        top_k: how many classes to report (capped at the number of classes).
        softmax: a :class:`SoftmaxMode` or its value ("auto", "always", "never").
        output: the output tensor to read; None takes the first output.
    """

    task: ClassVar[Task] = Task.CLASSIFY
    top_k: int = 5
    softmax: Union[SoftmaxMode, str] = SoftmaxMode.AUTO
    output: Optional[str] = None

    def __post_init__(self) -> None:
        _validate(self)


@record
class DetectConfig:
    """Object detection: decode, confidence filter, greedy NMS.

    Args:
        layout: a :class:`DetectLayout` or its value ("auto", "yolov8", "yolov5", "yolox_raw").
        conf_threshold: keep candidates whose score is strictly above this.
        iou_threshold: suppress a box whose IoU with a better box of the same
            class (any class if ``class_agnostic``) is strictly above this.
        max_detections: keep at most this many, best first.
        class_agnostic: one NMS over all classes instead of one per class.
        output: the output tensor to read; None takes the first output.
        input_size: the model input's (height, width) in pixels: the grid of the
            ``yolox_raw`` layout (the build records it; None there means a square
            input whose size N tells).  Unused by the other layouts.
        strides: the ``yolox_raw`` layout's feature-map strides, finest first.
    """

    task: ClassVar[Task] = Task.DETECT
    layout: Union[DetectLayout, str] = DetectLayout.AUTO
    conf_threshold: float = 0.25
    iou_threshold: float = 0.45
    max_detections: int = 300
    class_agnostic: bool = False
    output: Optional[str] = None
    input_size: Optional[Tuple[int, int]] = None
    strides: Tuple[int, ...] = (8, 16, 32)

    def __post_init__(self) -> None:
        _validate(self)


@record
class SegmentConfig:
    """Semantic segmentation: per-pixel argmax over the class scores.

    The output is ``[1, C, H, W]`` or ``[1, H, W, C]`` as ``layout`` says (a
    :class:`SegmentLayout`; the build records it); undecided, it is ``[1, C, H, W]``
    unless labels are given and the last dimension (not the second) equals their
    count.  ``C == 1`` is a binary mask: foreground where the probability is > 0.5 or the
    logit > 0, as ``scores`` says (a :class:`SegmentScores`; the build records it
    from the graph).  An integer ``[1, H, W]`` output is taken as class ids
    already (models that end with ArgMax).
    """

    task: ClassVar[Task] = Task.SEGMENT
    output: Optional[str] = None
    scores: Union[SegmentScores, str] = SegmentScores.AUTO
    layout: Union[SegmentLayout, str] = SegmentLayout.AUTO

    def __post_init__(self) -> None:
        _validate(self)


@record
class TextDetectConfig:
    """Text detection as DB-style detectors (PP-OCR det, DBNet) are read: their one-channel text probability
    map ``[1, 1, H, W]`` (or ``[1, H, W]``), at the input's resolution, becomes text boxes.

    Pixels above ``threshold`` are text; each 8-connected region becomes its minimum-area rectangle, kept
    when the mean probability over the region is at least ``box_threshold`` and its shorter side at least
    ``min_size`` pixels, then grown on every side by area × ``unclip_ratio`` / perimeter (DB's maps mark a
    shrunk text core); at most ``max_candidates`` regions, largest first (:mod:`edgekit.textdet`).  The
    defaults are PP-OCR's own.
    """

    task: ClassVar[Task] = Task.TEXT_DETECT
    threshold: float = 0.3
    box_threshold: float = 0.6
    unclip_ratio: float = 1.5
    min_size: int = 3
    max_candidates: int = 1000
    output: Optional[str] = None

    def __post_init__(self) -> None:
        _validate(self)


@record
class RawConfig:
    """No postprocessing: the result carries the output tensors."""

    task: ClassVar[Task] = Task.RAW

    def __post_init__(self) -> None:
        _validate(self)


TaskConfig = Union[ClassifyConfig, DetectConfig, SegmentConfig, TextDetectConfig, RawConfig]

# Field tables as data: one checker per field, used for construction and JSON.
_FIELDS: Dict[type, Dict[str, _Check]] = {
    ClassifyConfig: {"top_k": _int_min(1), "softmax": _enum(SoftmaxMode), "output": _output_name},
    DetectConfig: {
        "layout": _enum(DetectLayout),
        "conf_threshold": _unit_number,
        "iou_threshold": _unit_number,
        "max_detections": _int_min(1),
        "class_agnostic": _bool,
        "output": _output_name,
        "input_size": _input_size,
        "strides": _strides,
    },
    SegmentConfig: {"output": _output_name, "scores": _enum(SegmentScores), "layout": _enum(SegmentLayout)},
    TextDetectConfig: {
        "threshold": _unit_number,
        "box_threshold": _unit_number,
        "unclip_ratio": _non_negative,
        "min_size": _int_min(1),
        "max_candidates": _int_min(1),
        "output": _output_name,
    },
    RawConfig: {},
}

_CONFIGS: Dict[Task, type] = {
    Task.CLASSIFY: ClassifyConfig,
    Task.DETECT: DetectConfig,
    Task.SEGMENT: SegmentConfig,
    Task.TEXT_DETECT: TextDetectConfig,
    Task.RAW: RawConfig,
}


_CONFIG_NAMES = ", ".join(c.__name__ for c in _FIELDS)


def config_for_task(task: Union[Task, str], **params: Any) -> TaskConfig:
    """Build the config of ``task`` ("classify", ...) from keyword parameters.

    Raises:
        ConfigError: unknown task, unknown parameter or bad value.
    """
    try:
        task = _enum(Task)(task)
    except _Invalid as exc:
        raise ConfigError(f'"task" must be {exc.expected}, but got {_show(task)}') from None
    cls = _CONFIGS[task]
    unknown = sorted(set(params) - set(_FIELDS[cls]))
    if unknown:
        known = ", ".join(_FIELDS[cls]) or "none"
        raise ConfigError(f"unknown parameter(s) {unknown} for task {task.value!r}; known: {known}")
    return cls(**params)


def config_to_json(cfg: TaskConfig) -> Dict[str, Any]:
    """The JSON object stored as ``manifest.postprocess`` (has a "task" key)."""
    if type(cfg) not in _FIELDS:
        raise ConfigError(f"expected a task config ({_CONFIG_NAMES}), got {type(cfg).__name__}")
    data: Dict[str, Any] = {"task": cfg.task.value}
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        data[f.name] = value.value if isinstance(value, Enum) else list(value) if isinstance(value, tuple) else value
    return data


def config_from_json(data: Any, where: str = "manifest.postprocess") -> TaskConfig:
    """Parse a ``postprocess`` JSON object; the inverse of :func:`config_to_json`.

    Missing fields take their defaults; unknown fields are errors (a typo such
    as ``iou_treshold`` must not silently fall back to the default).

    Raises:
        ManifestError: naming the field path, e.g.
            ``manifest.postprocess.iou_threshold: expected a number in [0, 1], got 2``.
    """
    if not isinstance(data, Mapping):
        raise ManifestError(f"{where}: expected an object with a \"task\" field, got {_show(data)}")
    if "task" not in data:
        raise ManifestError(f"{where}.task: required field is missing; expected one of {choices(Task)}")
    try:
        task = _enum(Task)(data["task"])
    except _Invalid as exc:
        raise ManifestError(f"{where}.task: expected {exc.expected}, got {_show(data['task'])}") from None
    cls = _CONFIGS[task]
    checks = _FIELDS[cls]
    kwargs: Dict[str, Any] = {}
    for key, value in data.items():
        if key == "task":
            continue
        if key not in checks:
            known = ", ".join(["task", *checks])
            raise ManifestError(f"{where}.{key}: unknown field for task {task.value!r}; known fields: {known}")
        try:
            kwargs[key] = checks[key](value)
        except _Invalid as exc:
            raise ManifestError(f"{where}.{key}: expected {exc.expected}, got {_show(value)}") from None
    try:
        return cls(**kwargs)
    except ConfigError as exc:  # pragma: no cover - every field was checked above
        raise ManifestError(f"{where}: {exc}") from None


# ---------------------------------------------------------------------------
# The geometry contract with preprocessing
# ---------------------------------------------------------------------------


class BoxTransform(Protocol):
    """What preprocessing records about the geometry of one image.

    ``to_original`` maps an ``(N, 4)`` float xyxy array from model-input pixels
    to original-image pixels (clipped to the image).  A transform may also have
    ``mask_to_original(mask: np.ndarray) -> np.ndarray`` mapping an ``(H, W)``
    class-id mask at model resolution to the original image; without it,
    segmentation masks stay at model resolution.
    """

    original_size: Tuple[int, int]  # (width, height)

    def to_original(self, boxes: np.ndarray) -> np.ndarray:
        ...


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------


def _label(labels: Optional[Sequence[str]], index: int) -> Optional[str]:
    if labels is not None and 0 <= index < len(labels):
        return str(labels[index])
    return None


@record
class Classification:
    """One class of a classification: index, label (if labels are known), score."""

    index: int
    label: Optional[str]
    score: float

    def to_dict(self) -> Dict[str, Any]:
        return {"index": self.index, "label": self.label, "score": self.score}


# Results hold arrays, so eq=False (array == array has no truth value) and the
# raw outputs stay out of repr.
@record(eq=False)
class ClassifyResult:
    """The ``top_k`` classes, best first; ``.label/.index/.score`` are the top-1."""

    top: List[Classification]
    outputs: Dict[str, np.ndarray] = field(repr=False)

    @property
    def label(self) -> Optional[str]:
        return self.top[0].label

    @property
    def index(self) -> int:
        return self.top[0].index

    @property
    def score(self) -> float:
        return self.top[0].score

    def to_dict(self) -> Dict[str, Any]:
        return {
            "task": Task.CLASSIFY.value,
            "index": self.index,
            "label": self.label,
            "score": self.score,
            "top": [c.to_dict() for c in self.top],
        }


@record
class Detection:
    """One object: ``box`` is (x1, y1, x2, y2) in original-image pixels."""

    box: Tuple[float, float, float, float]
    score: float
    class_id: int
    label: Optional[str]

    def to_dict(self) -> Dict[str, Any]:
        return {"box": list(self.box), "score": self.score, "class_id": self.class_id, "label": self.label}


@record(eq=False)
class DetectResult:
    """Detections after NMS, best first."""

    detections: List[Detection]
    outputs: Dict[str, np.ndarray] = field(repr=False)

    def __len__(self) -> int:
        return len(self.detections)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.detections)

    def to_dict(self) -> Dict[str, Any]:
        return {"task": Task.DETECT.value, "detections": [d.to_dict() for d in self.detections]}


@record(eq=False)
class SegmentResult:
    """``mask`` is an ``(H, W)`` int32 array of class ids: original image size when the
    transform can map masks (image inputs), else model resolution.  Original pixels
    the model never saw (outside a centre crop) are ``-1``."""

    mask: np.ndarray
    outputs: Dict[str, np.ndarray] = field(repr=False)
    labels: Optional[Tuple[str, ...]] = None

    def class_ids(self) -> List[int]:
        """The class ids present in the mask, ascending."""
        return [int(i) for i in np.unique(self.mask)]

    def to_dict(self, *, include_mask: bool = True) -> Dict[str, Any]:
        """Per-class pixel counts, plus the mask as nested lists unless
        ``include_mask`` is False (a 640×640 mask is ~1 MB of JSON)."""
        ids, counts = np.unique(self.mask, return_counts=True)
        total = max(int(self.mask.size), 1)
        classes = [
            {"class_id": int(i), "label": _label(self.labels, int(i)), "pixels": int(n), "fraction": int(n) / total}
            for i, n in zip(ids, counts)
        ]
        data: Dict[str, Any] = {"task": Task.SEGMENT.value, "shape": [int(s) for s in self.mask.shape], "classes": classes}
        if include_mask:
            data["mask"] = self.mask.tolist()
        return data


@record(eq=False)
class TextDetectResult:
    """Text boxes, top to bottom then left to right: each an :class:`edgekit.textdet.TextBox` whose four
    ``points`` (x, y), clockwise from the top-left one, are in original-image pixels (model-input pixels
    for tensor inputs), with ``score``, the mean text probability of its region."""

    boxes: List[Any]
    outputs: Dict[str, np.ndarray] = field(repr=False)

    def __len__(self) -> int:
        return len(self.boxes)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.boxes)

    def to_dict(self) -> Dict[str, Any]:
        return {"task": Task.TEXT_DETECT.value,
                "boxes": [{"points": [list(p) for p in b.points], "score": b.score} for b in self.boxes]}


@record(eq=False)
class RawResult:
    """The output tensors, untouched."""

    outputs: Dict[str, np.ndarray] = field(repr=False)

    def to_dict(self, *, include_data: bool = True) -> Dict[str, Any]:
        """Name → shape, dtype and (unless ``include_data`` is False) values."""
        out: Dict[str, Any] = {}
        for name, value in self.outputs.items():
            arr = np.asarray(value)
            entry: Dict[str, Any] = {"shape": [int(s) for s in arr.shape], "dtype": str(arr.dtype)}
            if include_data:
                entry["data"] = arr.tolist()
            out[name] = entry
        return {"task": Task.RAW.value, "outputs": out}


Result = Union[ClassifyResult, DetectResult, SegmentResult, TextDetectResult, RawResult]


# ---------------------------------------------------------------------------
# Numeric helpers
# ---------------------------------------------------------------------------


def softmax(x: Any, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax (subtracts the max; all ``-inf`` rows stay NaN-free
    where any value is finite)."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)  # a row of -inf would otherwise give inf - inf
    e = np.exp(x - m)
    return e / np.sum(e, axis=axis, keepdims=True)


def box_iou(boxes1: Any, boxes2: Any) -> np.ndarray:
    """Pairwise IoU of ``(N, 4)`` and ``(M, 4)`` xyxy boxes → ``(N, M)``.

    Degenerate boxes (zero or negative width/height) have area 0 and IoU 0.
    """
    a = np.asarray(boxes1, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes2, dtype=np.float64).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    union = area_a[:, None] + area_b[None, :] - inter
    # union is 0 only when both boxes are degenerate; then inter is 0 too → IoU 0
    return inter / np.maximum(union, np.finfo(np.float64).tiny)


def nms(
    boxes: Any,
    scores: Any,
    iou_threshold: float,
    *,
    class_ids: Any = None,
    max_detections: Optional[int] = None,
) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, best score first.

    Visits boxes by descending score (ties: lower index first) and drops every
    later box whose IoU with a kept box is strictly above ``iou_threshold``.
    With ``class_ids`` only boxes of the same class suppress each other (a mask
    rather than the coordinate-offset trick, so IoUs are exact at any scale).
    Stops once ``max_detections`` boxes are kept: greedy order means these are
    exactly the first ``max_detections`` of a full run.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if b.shape[0] != s.shape[0]:
        raise ValueError(f"nms: {b.shape[0]} boxes but {s.shape[0]} scores")
    cls = None if class_ids is None else np.asarray(class_ids).reshape(-1)
    limit = b.shape[0] if max_detections is None else max_detections
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    order = np.argsort(-s, kind="stable")
    keep: List[int] = []
    while order.size and len(keep) < limit:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        if not rest.size:
            break
        iw = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        ih = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = iw * ih
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, np.finfo(np.float64).tiny)
        suppress = iou > iou_threshold
        if cls is not None:
            suppress &= cls[rest] == cls[i]
        order = rest[~suppress]
    return np.asarray(keep, dtype=np.int64)


# ---------------------------------------------------------------------------
# Task implementations
# ---------------------------------------------------------------------------

# Ultralytics caps NMS input the same way: after the confidence filter, a
# badly calibrated (e.g. broken int8) model could still pass everything, and
# greedy NMS is quadratic.  Keeping the best 30000 changes nothing for a sane
# model and bounds the worst case.
_MAX_NMS_CANDIDATES = 30000

_ONE_AT_A_TIME = "predict handles one image at a time: call it once per image, or use Model.infer for batched tensors"


def _shape(arr: np.ndarray) -> str:
    return "[" + ", ".join(str(int(d)) for d in arr.shape) + "]"


def _check_batch(name: str, arr: np.ndarray) -> None:
    if arr.shape[0] != 1:
        raise InputError(f"output {name!r} has batch size {arr.shape[0]} (shape {_shape(arr)}); {_ONE_AT_A_TIME}")


def _select_output(outputs: Mapping[str, np.ndarray], wanted: Optional[str]) -> Tuple[str, np.ndarray]:
    if not outputs:
        raise InputError("postprocess got no output tensors")
    if wanted is None:
        name = next(iter(outputs))
    elif wanted in outputs:
        name = wanted
    else:
        raise InputError(f"the model has no output {wanted!r}; its outputs are {list(outputs)}")
    return name, np.asarray(outputs[name])


def _is_distribution(p: np.ndarray) -> bool:
    return bool(p.size) and bool(np.all(p >= 0)) and abs(float(np.sum(p)) - 1.0) <= 1e-2


def _classify(cfg: ClassifyConfig, name: str, out: np.ndarray, outputs: Dict[str, np.ndarray],
              transform: Any, labels: Optional[Sequence[str]]) -> ClassifyResult:
    if out.ndim == 0:
        raise InputError(f"classify: output {name!r} is a scalar; expected class scores shaped [1, C]")
    if out.ndim >= 2:
        _check_batch(name, out)
        # [1, C], [1, C, 1, 1] (convnets without a final flatten) → C
        non_unit = [d for d in out.shape[1:] if d != 1]
        if len(non_unit) > 1:
            raise InputError(
                f"classify: output {name!r} has shape {_shape(out)}; expected class scores shaped [1, C] "
                "(use task 'raw' for feature maps or embeddings)"
            )
    scores = out.reshape(-1).astype(np.float64)
    if scores.size == 0:
        raise InputError(f"classify: output {name!r} is empty (shape {_shape(out)})")
    mode = cfg.softmax
    if mode is SoftmaxMode.ALWAYS or (mode is SoftmaxMode.AUTO and not _is_distribution(scores)):
        scores = softmax(scores)
    k = min(cfg.top_k, scores.size)
    # stable sort on -score: equal scores keep the lower class index first
    order = np.argsort(-scores, kind="stable")[:k]
    top = [Classification(index=int(i), label=_label(labels, int(i)), score=float(scores[i])) for i in order]
    return ClassifyResult(top=top, outputs=outputs)


def _resolve_layout(layout: DetectLayout, shape: Tuple[int, int], num_labels: Optional[int]) -> DetectLayout:
    """Pick the detector layout for a ``[A, B]`` prediction (batch dim removed).

    ``yolov8`` is ``[4+C, N]`` and ``yolov5`` is ``[N, 5+C]``.  For ``auto``:

    * with labels (C known): the layout whose feature dimension equals 4+C
      (yolov8, dim 1) or 5+C (yolov5, dim 2); both or neither fitting is an error.
    * without labels: candidates far outnumber features (8400 vs 84 for a
      640² YOLOv8), so the smaller dimension holds the features: A < B →
      yolov8, A > B → yolov5.  Unless the larger dimension is at least twice
      the smaller, the guess is too weak and it is an error.

    A YOLOv8 export transposed to ``[1, N, 4+C]`` is indistinguishable from
    YOLOv5 by shape alone; labels catch that (4+C fits neither), otherwise set
    ``layout``.
    """
    if layout is not DetectLayout.AUTO:
        return layout
    a, b = shape
    fix = ('set "layout" to "yolov8" ([1, 4+C, N]), "yolov5" ([1, N, 5+C]; also a decoded YOLOX) or "yolox_raw" '
           '(a YOLOX head without its grid decode) in the detect config')
    if num_labels is not None:
        v8 = a == 4 + num_labels
        v5 = b == 5 + num_labels
        if v8 and not v5:
            return DetectLayout.YOLOV8
        if v5 and not v8:
            return DetectLayout.YOLOV5
        if v8 and v5:
            raise ConfigError(f"detect: output [1, {a}, {b}] fits both yolov8 and yolov5 for {num_labels} labels; {fix}")
        raise ConfigError(
            f"detect: output [1, {a}, {b}] fits no known layout for {num_labels} labels "
            f"(yolov8 needs dim 1 = {4 + num_labels}, yolov5 needs dim 2 = {5 + num_labels}); "
            f"check the labels file, or {fix}"
        )
    small, large = min(a, b), max(a, b)
    if large < 2 * small:
        raise ConfigError(
            f"detect: cannot tell the layout of output [1, {a}, {b}] (neither dimension clearly "
            f"counts candidates); {fix}, or give the labels"
        )
    return DetectLayout.YOLOV8 if a < b else DetectLayout.YOLOV5


def yolox_cell_count(input_size: Tuple[int, int], strides: Sequence[int]) -> int:
    """How many grid cells (N) a YOLOX head has for an ``(H, W)`` input: the cells of every stride's map.
    A map is ``ceil(H / stride)`` × ``ceil(W / stride)``: what stride-2 convolutions padded by half
    their kernel make of a size that does not divide."""
    h, w = input_size
    return sum(-(-h // s) * -(-w // s) for s in strides)


def _square_input(n: int, strides: Sequence[int]) -> Optional[Tuple[int, int]]:
    """The square input whose YOLOX grid has ``n`` cells, if one has exactly that many."""
    side = int(round((n / sum(1.0 / (s * s) for s in strides)) ** 0.5))
    for cand in range(max(1, side - strides[-1]), side + strides[-1] + 1):
        if yolox_cell_count((cand, cand), strides) == n:
            return (cand, cand)
    return None


def _yolox_grid(cfg: DetectConfig, name: str, out: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per cell of a ``yolox_raw`` output ``[..., N, 5+C]``: its (x, y) on its map and its stride, as float64
    arrays."""
    n = int(out.shape[-2])
    size = cfg.input_size if cfg.input_size is not None else _square_input(n, cfg.strides)
    strides = list(cfg.strides)
    if size is None:
        raise ConfigError(
            f"detect: yolox_raw output {name!r} {_shape(out)} has {n} cells, which no square input has at strides "
            f"{strides}; set \"input_size\" to the model input's [height, width] in the detect config"
        )
    expected = yolox_cell_count(size, strides)
    if expected != n:
        raise InputError(
            f"detect: yolox_raw output {name!r} {_shape(out)} has {n} cells, but a {size[0]}x{size[1]} input at "
            f"strides {strides} makes {expected}; the output does not belong to this input size (set \"input_size\" "
            "and \"strides\" to the model's, or use layout yolov5 for a head decoded in the graph)"
        )
    cells, steps = [], []
    for s in strides:
        gh, gw = -(-size[0] // s), -(-size[1] // s)
        ys, xs = np.meshgrid(np.arange(gh, dtype=np.float64), np.arange(gw, dtype=np.float64), indexing="ij")
        cells.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
        steps.append(np.full(gh * gw, float(s)))
    return np.concatenate(cells), np.concatenate(steps)


def yolox_boxes(config: DetectConfig, out: Any, name: str = "output") -> np.ndarray:
    """The (cx, cy, w, h) pixel boxes of every cell of ``yolox_raw`` outputs ``[..., N, 5+C]`` (any leading
    dims: a stack of samples), float64.  What verification compares: raw offsets and log sizes are not
    the boxes (an error of 0.1 in a raw offset is 0.8 px at stride 8, 3.2 px at stride 32)."""
    arr = np.asarray(out)
    cell, stride = _yolox_grid(config, name, arr)
    raw = arr[..., :4].astype(np.float64)
    with np.errstate(over="ignore"):
        return np.concatenate([(raw[..., :2] + cell) * stride[:, None], np.exp(raw[..., 2:4]) * stride[:, None]],
                              axis=-1)


def _detect(cfg: DetectConfig, name: str, out: np.ndarray, outputs: Dict[str, np.ndarray],
            transform: Any, labels: Optional[Sequence[str]]) -> DetectResult:
    if out.ndim != 3:
        raise InputError(
            f"detect: output {name!r} has shape {_shape(out)}; expected [1, 4+C, N] (yolov8) "
            "or [1, N, 5+C] (yolov5 / YOLOX)"
        )
    _check_batch(name, out)
    pred = out[0]
    layout = _resolve_layout(cfg.layout, (int(pred.shape[0]), int(pred.shape[1])), None if labels is None else len(labels))
    if layout is DetectLayout.YOLOV8:
        if pred.shape[0] < 5:
            raise InputError(f"detect: yolov8 output {name!r} {_shape(out)} needs dim 1 >= 5 (4 box values + classes)")
        pred = pred.T  # [N, 4+C]; a view, so no copy of the 8400×84 tensor
        xywh = pred[:, :4]
        class_scores = pred[:, 4:]
    else:
        if pred.shape[1] < 6:
            raise InputError(
                f"detect: {layout.value} output {name!r} {_shape(out)} needs dim 2 >= 6 "
                "(4 box values, objectness, classes)"
            )
        xywh = pred[:, :4]
        class_scores = pred[:, 5:] * pred[:, 4:5]
    grid = _yolox_grid(cfg, name, out) if layout is DetectLayout.YOLOX_RAW else None
    class_ids = np.argmax(class_scores, axis=1)
    scores = np.take_along_axis(class_scores, class_ids[:, None], axis=1)[:, 0]
    # pre-filter before anything quadratic; NaN scores fail the comparison
    candidates = np.nonzero(scores > cfg.conf_threshold)[0]
    xywh = xywh[candidates].astype(np.float64)
    if grid is not None:  # the grid decode only for the candidates: exp of 3549 rows is wasted on background
        cell, stride = grid[0][candidates], grid[1][candidates, None]
        with np.errstate(over="ignore"):  # a huge log-size is a non-finite box, dropped below
            xywh = np.concatenate([(xywh[:, :2] + cell) * stride, np.exp(xywh[:, 2:4]) * stride], axis=1)
    finite = np.all(np.isfinite(xywh), axis=1)
    candidates, xywh = candidates[finite], xywh[finite]
    if candidates.size > _MAX_NMS_CANDIDATES:
        best = np.sort(np.argpartition(-scores[candidates], _MAX_NMS_CANDIDATES)[:_MAX_NMS_CANDIDATES])
        candidates, xywh = candidates[best], xywh[best]
    scores = scores[candidates].astype(np.float64)
    class_ids = class_ids[candidates]
    boxes = np.empty_like(xywh)
    boxes[:, 0:2] = xywh[:, 0:2] - xywh[:, 2:4] / 2
    boxes[:, 2:4] = xywh[:, 0:2] + xywh[:, 2:4] / 2
    keep = nms(
        boxes,
        scores,
        cfg.iou_threshold,
        class_ids=None if cfg.class_agnostic else class_ids,
        max_detections=cfg.max_detections,
    )
    boxes, scores, class_ids = boxes[keep], scores[keep], class_ids[keep]
    if transform is not None and boxes.shape[0]:
        mapped = np.asarray(transform.to_original(boxes), dtype=np.float64)
        if mapped.shape != boxes.shape:  # a bug in the transform, not a user error
            raise ValueError(f"transform.to_original returned shape {mapped.shape} for boxes shaped {boxes.shape}")
        boxes = mapped
    detections = [
        Detection(
            box=(float(bx[0]), float(bx[1]), float(bx[2]), float(bx[3])),
            score=float(sc),
            class_id=int(ci),
            label=_label(labels, int(ci)),
        )
        for bx, sc, ci in zip(boxes, scores, class_ids)
    ]
    return DetectResult(detections=detections, outputs=outputs)


def _segment(cfg: SegmentConfig, name: str, out: np.ndarray, outputs: Dict[str, np.ndarray],
             transform: Any, labels: Optional[Sequence[str]]) -> SegmentResult:
    expected = "expected [1, C, H, W], [1, H, W, C] or integer class ids [1, H, W]"
    if out.ndim not in (3, 4):
        raise InputError(f"segment: output {name!r} has shape {_shape(out)}; {expected}")
    _check_batch(name, out)
    if out.ndim == 3:
        if np.issubdtype(out.dtype, np.integer):
            mask = out[0]
        else:  # a single score map: same as C == 1
            mask = _binary(out[0], cfg.scores, name)
    else:
        scores = out[0]
        n = None if labels is None else len(labels)
        if cfg.layout is SegmentLayout.NHWC or (
            cfg.layout is SegmentLayout.AUTO and n is not None and scores.shape[2] == n and scores.shape[0] != n
        ):
            scores = np.moveaxis(scores, 2, 0)  # HWC → CHW
        if scores.shape[0] == 1:
            mask = _binary(scores[0], cfg.scores, name)
        else:
            mask = np.argmax(scores, axis=0)
    mask = mask.astype(np.int32, copy=False)
    mapper = getattr(transform, "mask_to_original", None)
    if mapper is not None:
        mask = np.asarray(mapper(mask)).astype(np.int32, copy=False)
    return SegmentResult(mask=mask, outputs=outputs, labels=None if labels is None else tuple(labels))


def _binary(score_map: np.ndarray, scores: SegmentScores, name: str) -> np.ndarray:
    """Foreground (1) / background (0) from one channel: probabilities split at 0.5,
    logits at 0, as recorded at build time (never guessed from this image's values)."""
    if scores is SegmentScores.AUTO:
        raise ConfigError(
            f"segment: output {name!r} is a single-channel map, and whether it holds logits or probabilities "
            'is not recorded; set "scores" to "logits" or "probabilities" in the segment config '
            "(edgekit build records it from the graph)"
        )
    threshold = 0.5 if scores is SegmentScores.PROBABILITIES else 0.0
    return (np.asarray(score_map) > threshold).astype(np.int32)


def _text_map(name: str, out: np.ndarray) -> np.ndarray:
    """The ``(H, W)`` map of one image from a ``[1, 1, H, W]`` or ``[1, H, W]`` text-detect output."""
    if out.ndim not in (3, 4) or (out.ndim == 4 and out.shape[1] != 1):
        raise InputError(f"text-detect: output {name!r} has shape {_shape(out)}; expected one probability map "
                         "[1, 1, H, W] or [1, H, W]")
    _check_batch(name, out)
    return np.asarray(out[0, 0] if out.ndim == 4 else out[0], dtype=np.float32)


def _text_detect(cfg: TextDetectConfig, name: str, out: np.ndarray, outputs: Dict[str, np.ndarray],
                 transform: Any, labels: Optional[Sequence[str]]) -> TextDetectResult:
    from . import textdet

    boxes = textdet.decode_text_map(_text_map(name, out), threshold=cfg.threshold, box_threshold=cfg.box_threshold,
                                    unclip_ratio=cfg.unclip_ratio, min_size=cfg.min_size,
                                    max_candidates=cfg.max_candidates)
    if transform is not None and boxes:
        # corners as degenerate xyxy boxes: the transform maps (and clips) points the way it maps boxes
        pts = np.array([b.points for b in boxes], dtype=np.float64).reshape(-1, 2)
        mapped = np.asarray(transform.to_original(np.concatenate([pts, pts], axis=1)), dtype=np.float64)
        if mapped.shape != (len(pts), 4):  # a bug in the transform, not a user error
            raise ValueError(f"transform.to_original returned shape {mapped.shape} for boxes shaped {(len(pts), 4)}")
        quads = mapped[:, :2].reshape(-1, 4, 2)
        boxes = [dataclasses.replace(b, points=tuple((float(x), float(y)) for x, y in q)) for b, q in zip(boxes, quads)]
    return TextDetectResult(boxes=boxes, outputs=outputs)


def _raw(cfg: RawConfig, outputs: Dict[str, np.ndarray]) -> RawResult:
    return RawResult(outputs=outputs)


_TASKS: Dict[type, Callable[..., Any]] = {
    ClassifyConfig: _classify,
    DetectConfig: _detect,
    SegmentConfig: _segment,
    TextDetectConfig: _text_detect,
}


def postprocess(
    config: TaskConfig,
    outputs: Mapping[str, np.ndarray],
    *,
    transform: Optional[BoxTransform] = None,
    labels: Optional[Sequence[str]] = None,
) -> Result:
    """Turn one image's output tensors into a typed result.

    Args:
        config: the task config (from the manifest via :func:`config_from_json`).
        outputs: output name → array, in model order; the task reads
            ``config.output`` or, when that is None, the first one.
        transform: the preprocessing geometry (see :class:`BoxTransform`);
            None (tensor inputs) leaves boxes and masks in model coordinates.
        labels: class names, index → name.

    Raises:
        InputError: a batch larger than 1, a missing output, or a shape the task
            cannot read.
        ConfigError: ``config`` is not a task config, or the detect layout is ambiguous.
    """
    if type(config) not in _FIELDS:
        raise ConfigError(
            f"postprocess needs a task config ({_CONFIG_NAMES}), "
            f"got {type(config).__name__} (use config_from_json for a JSON object)"
        )
    outs = dict(outputs)
    if isinstance(config, RawConfig):
        return _raw(config, outs)
    name, out = _select_output(outs, config.output)
    return _TASKS[type(config)](config, name, out, outs, transform, labels)


# ---------------------------------------------------------------------------
# Build-time decisions: made once from the graph and recorded in the config,
# so the device never guesses.  Pure functions; the build pipeline calls
# resolve_for_model.  ``graph`` is duck-typed (an onnx GraphProto: .node with
# .op_type/.input/.output), so this module still imports nothing but numpy.
# ---------------------------------------------------------------------------

# Ops that turn scores into probabilities in [0, 1].
_PROBABILITY_OPS = frozenset({"Sigmoid", "Softmax", "HardSigmoid"})
# Ops through which probabilities stay probabilities (for the 0.5 threshold): shape
# and layout changes, resampling (a bicubic upsampling may overshoot 1 a little, which
# is exactly why the decision is not taken from the values), casts and Q/DQ pairs.
_PROBABILITY_KEEPING = frozenset({
    "Identity", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Slice", "Resize", "Upsample",
    "Cast", "QuantizeLinear", "DequantizeLinear", "MaxPool", "AveragePool", "Pad", "DepthToSpace",
})


def select_output(config: TaskConfig, output_names: Sequence[str]) -> TaskConfig:
    """``config`` with the output its task reads chosen by name, once, at build time.

    ``raw`` reads every output and comes back as given.  A named output must
    exist.  Without a name, a single-output model's output is recorded; with
    several outputs the choice is the user's, so it is a :class:`ConfigError`
    naming them (picking the first silently is how a classifier ends up reading
    a feature map).
    """
    if isinstance(config, RawConfig):
        return config
    names = list(output_names)
    task = config.task.value
    fix = f'pick one with --output NAME (API: postprocess={{"task": "{task}", "output": NAME}})'
    if config.output is not None:
        if config.output in names:
            return config
        hint = " (the package path is given with -o/--out)" if config.output.endswith(".edgepkg") else ""
        raise ConfigError(f"the model has no output {config.output!r}{hint}; its outputs are {names}; {fix}")
    if len(names) == 1:
        return dataclasses.replace(config, output=names[0])
    if not names:
        raise ConfigError(f"task {task!r} reads one model output, but the model has none")
    raise ConfigError(f"task {task!r} reads one model output, but the model has {len(names)}: {names}; {fix}")


def segment_scores_from_graph(graph: Any, output: str) -> SegmentScores:
    """PROBABILITIES when ``output`` is made by a Sigmoid/Softmax/HardSigmoid, possibly
    followed by ops that keep values probabilities (reshapes, resampling, Q/DQ);
    LOGITS otherwise.  A model that computes a sigmoid by hand (``1 / (1 + exp(-x))``)
    reads as logits: set ``scores`` in the segment config for those."""
    producers = {name: node for node in graph.node for name in node.output}
    name, seen = output, set()
    while name in producers and name not in seen:
        seen.add(name)
        node = producers[name]
        if node.op_type in _PROBABILITY_OPS:
            return SegmentScores.PROBABILITIES
        if node.op_type not in _PROBABILITY_KEEPING or not node.input:
            return SegmentScores.LOGITS
        name = node.input[0]
    return SegmentScores.LOGITS


def _dim(d: Any) -> Optional[int]:
    """A known dim as an int; None for dynamic (-1, 0, None, a symbolic name)."""
    if isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0:
        return int(d)
    return None


def _shape_text(shape: Sequence[Any]) -> str:
    return "[" + ", ".join(str(_dim(d)) if _dim(d) is not None else "?" for d in shape) + "]"


def check_class_count(config: TaskConfig, labels: Optional[Sequence[str]], shape: Sequence[Any]) -> None:
    """ConfigError when ``labels`` cannot name the classes of the output of ``shape``.

    A labels file that is one line short makes every later class name wrong, and one
    with too few makes ``run`` print a mix of names and indices; both are caught when
    the package is built.  Where the class dim is dynamic nothing can be checked.
    Binary segmentation (one channel) takes 2 labels: background, foreground.
    """
    if labels is None or isinstance(config, RawConfig):
        return
    n = len(labels)
    name = getattr(config, "output", None) or "the output"
    dims = [_dim(d) for d in shape]
    where = f"output {name!r} {_shape_text(shape)}"
    fix = "give a labels file with one class name per line, in class order"
    if isinstance(config, ClassifyConfig):
        rest = dims[1:] if len(dims) >= 2 else dims
        if not rest or any(d is None for d in rest):
            return
        non_unit = [d for d in rest if d != 1] or [1]
        if len(non_unit) == 1 and non_unit[0] != n:
            raise ConfigError(f"{n} labels, but {where} scores {non_unit[0]} classes; {fix} ({non_unit[0]} lines)")
        return
    if isinstance(config, DetectConfig):
        if len(dims) != 3 or dims[1] is None or dims[2] is None:
            return
        a, b = dims[1], dims[2]
        layout = config.layout
        if layout is DetectLayout.AUTO:
            _resolve_layout(layout, (a, b), n)  # raises when the labels fit neither layout
            return
        classes = a - 4 if layout is DetectLayout.YOLOV8 else b - 5  # yolov5 and yolox_raw: [1, N, 5+C]
        if classes != n:
            raise ConfigError(f"{n} labels, but {where} in the {layout.value} layout has {classes} classes; "
                              f"{fix} ({classes} lines)")
        return
    if isinstance(config, SegmentConfig):
        if len(dims) != 4:
            return  # [1, H, W] class ids (or a single map): the class count is not in the shape
        first, last = dims[1], dims[3]
        if config.layout is not SegmentLayout.AUTO:  # the class dim is known: only it counts
            first, last = (first, None) if config.layout is SegmentLayout.NCHW else (None, last)
        if first is None and last is None:
            return
        counts = sorted({c for c in (first, last) if c is not None})
        valid = sorted({2 if c == 1 else c for c in counts})  # a one-channel mask has classes 0 and 1
        if n in valid:
            return
        want = " or ".join(map(str, valid))
        raise ConfigError(
            f"{n} labels, but {where} has {' or '.join(map(str, counts))} class channel(s) (NCHW dim 1 / NHWC dim 3); "
            f"{fix} ({want} lines; a one-channel mask takes 2: background, foreground)"
        )


# Ops a raw YOLOX head may pass its convolutions' outputs through on the way to the output: layout
# changes and the objectness/class sigmoids.  Anything else (Add, Mul, Exp, Pow, Sub, Div, MatMul ...)
# is a decode in the graph, and then the output is not raw.
_RAW_HEAD_OPS = frozenset({"Concat", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity",
                           "Sigmoid", "Cast", "QuantizeLinear", "DequantizeLinear"})
# ops whose later inputs are shapes or axes, not data
_FIRST_INPUT_ONLY = frozenset({"Reshape", "Squeeze", "Unsqueeze", "QuantizeLinear", "DequantizeLinear"})


def yolox_raw_head(graph: Any, output: str) -> bool:
    """Whether ``output`` is a detector head with no decode in the graph: every path back from it passes
    only layout ops and sigmoids (:data:`_RAW_HEAD_OPS`) before it reaches a Conv.  A YOLOX export with its
    decode (grid Add, stride Mul, Exp) fails this, and so does every YOLOv5/v6/v8 export (their decode and
    anchors are in the graph); a path that reaches a graph input without a Conv fails it too."""
    producers = {name: node for node in graph.node for name in node.output}
    stack, seen, convs = [output], set(), 0
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        node = producers.get(name)
        if node is None:
            return False  # a graph input or a constant reached as data, not a convolution
        if node.op_type == "Conv":
            convs += 1
            continue
        if node.op_type not in _RAW_HEAD_OPS:
            return False
        data = node.input[:1] if node.op_type in _FIRST_INPUT_ONLY else node.input
        stack.extend(i for i in data if i)
    return convs > 0


def _input_hw(graph: Any, input_layout: Optional[str]) -> Optional[Tuple[int, int]]:
    """The (H, W) of the graph's single 4-D input (not an initializer), when both are fixed."""
    inits = {t.name for t in getattr(graph, "initializer", ())}
    images = [v for v in graph.input if v.name not in inits and len(v.type.tensor_type.shape.dim) == 4]
    if len(images) != 1:
        return None
    dims = [_dim(d.dim_value) for d in images[0].type.tensor_type.shape.dim]
    h, w = (dims[1], dims[2]) if input_layout == "nhwc" else (dims[2], dims[3])
    return (h, w) if h is not None and w is not None else None


def _resolve_yolox(cfg: "DetectConfig", graph: Any, shape: Sequence[Any], input_layout: Optional[str]) -> "DetectConfig":
    """A detect config with the ``yolox_raw`` decision made: recorded with the input size when the layout
    says so, or when ``auto`` and the graph shows a raw head (:func:`yolox_raw_head`) with one cell per
    grid position of the input at the config's strides; else unchanged."""
    dims = [_dim(d) for d in shape]
    if cfg.layout not in (DetectLayout.AUTO, DetectLayout.YOLOX_RAW) or len(dims) != 3 or dims[1] is None:
        return cfg
    size = cfg.input_size or _input_hw(graph, input_layout)
    n = dims[1]
    if cfg.layout is DetectLayout.AUTO:
        if size is None or dims[2] is None or dims[2] < 6 or yolox_cell_count(size, cfg.strides) != n \
                or not yolox_raw_head(graph, cfg.output):
            return cfg
        return dataclasses.replace(cfg, layout=DetectLayout.YOLOX_RAW, input_size=size)
    if size is None:
        raise ConfigError(
            f"layout yolox_raw decodes a grid of the model input, but the input size of output {cfg.output!r} "
            'is not fixed; give --size HxW, or set "input_size" to [height, width] in the detect config')
    expected = yolox_cell_count(size, cfg.strides)
    if expected != n:
        raise ConfigError(
            f"layout yolox_raw: output {cfg.output!r} {_shape_text(shape)} has {n} cells, but a {size[0]}x{size[1]} "
            f"input at strides {list(cfg.strides)} makes {expected}; set \"strides\" (and \"input_size\") to the "
            "model's, or use layout yolov5 for a head decoded in the graph")
    return dataclasses.replace(cfg, input_size=size)


def check_text_map(cfg: TextDetectConfig, graph: Any, shape: Sequence[Any]) -> None:
    """ConfigError unless the output text-detect reads is one probability map: ``[1, 1, H, W]`` or
    ``[1, H, W]``, made by a sigmoid (its thresholds are probabilities; a logit map read at 0.3 would be
    text everywhere the logit is above 0.3)."""
    dims = [_dim(d) for d in shape]
    one_map = (len(dims) == 4 and dims[1] in (1, None)) or len(dims) == 3
    if not one_map:
        raise ConfigError(
            f"task text-detect reads one text probability map [1, 1, H, W], but output {cfg.output!r} is "
            f"{_shape_text(shape)}; pick the map with --output NAME, or use --task segment / raw for this model")
    if segment_scores_from_graph(graph, cfg.output) is not SegmentScores.PROBABILITIES:
        raise ConfigError(
            f"task text-detect thresholds probabilities, but output {cfg.output!r} is not made by a Sigmoid "
            "(through reshapes or resampling at most): export the detector with its sigmoid, or use --task raw")


def segment_layout_for(shape: Sequence[Any], labels: Optional[Sequence[str]] = None,
                       input_layout: Optional[str] = None) -> SegmentLayout:
    """Where a 4-D segmentation output keeps its classes: the labels decide when their
    count fits exactly one of dim 1 / dim 3; else the input's layout (an NHWC model
    makes NHWC maps); else NCHW.  ``auto`` for other ranks (nothing to decide)."""
    if len(shape) != 4:
        return SegmentLayout.AUTO
    first, last = _dim(shape[1]), _dim(shape[3])
    if labels is not None:
        def classes(d: Optional[int]) -> Optional[int]:
            return None if d is None else (2 if d == 1 else d)  # one channel: background, foreground

        fits_first, fits_last = classes(first) == len(labels), classes(last) == len(labels)
        if fits_first != fits_last:
            return SegmentLayout.NCHW if fits_first else SegmentLayout.NHWC
    if input_layout in (SegmentLayout.NCHW.value, SegmentLayout.NHWC.value):
        return SegmentLayout(input_layout)
    return SegmentLayout.NCHW


def resolve_for_model(
    config: TaskConfig,
    graph: Any,
    outputs: Sequence[Tuple[str, Sequence[Any]]],
    labels: Optional[Sequence[str]] = None,
    input_layout: Optional[str] = None,
) -> TaskConfig:
    """The postprocess config a package records, decided once from the model:

    the output the task reads (:func:`select_output`), whether a segmentation
    output holds logits or probabilities (:func:`segment_scores_from_graph`) and
    where its classes are (:func:`segment_layout_for`), whether a detector's
    output is a raw YOLOX head and the input size its grid decode needs
    (:func:`_resolve_yolox`), each unless the config says, and labels that fit
    the class count (:func:`check_class_count`).
    ``outputs``: (name, shape) per model output; ``input_layout``: the image
    input's "nchw"/"nhwc", when known.
    """
    shapes = {name: shape for name, shape in outputs}
    cfg = select_output(config, list(shapes))
    if isinstance(cfg, SegmentConfig) and cfg.output is not None:
        if cfg.scores is SegmentScores.AUTO:
            cfg = dataclasses.replace(cfg, scores=segment_scores_from_graph(graph, cfg.output))
        if cfg.layout is SegmentLayout.AUTO:
            cfg = dataclasses.replace(cfg, layout=segment_layout_for(shapes[cfg.output], labels, input_layout))
    if isinstance(cfg, DetectConfig) and cfg.output is not None:
        cfg = _resolve_yolox(cfg, graph, shapes[cfg.output], input_layout)
    if isinstance(cfg, TextDetectConfig) and cfg.output is not None:
        check_text_map(cfg, graph, shapes[cfg.output])
    if not isinstance(cfg, RawConfig) and cfg.output is not None:
        check_class_count(cfg, labels, shapes[cfg.output])
    return cfg

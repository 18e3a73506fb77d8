"""Numeric parity between the fp32 source and a built artifact, per task (pure numpy).

For each output, over all samples (flattened and concatenated):

* ``max_abs`` / ``mean_abs`` — absolute error;
* ``cosine`` — cosine similarity (1.0 when both are all-zero);
* ``sqnr_db`` — ``10·log10(Σref² / Σ(ref−cand)²)``.  JSON has no infinity, so
  SQNR is clamped to ``[-200, 200]`` dB: **200.0 means bit-exact**, −200.0
  means the candidate has no signal in common with the reference (or has
  NaN/inf values, counted in ``nonfinite``).

A tensor-wide figure can hide a broken part: a YOLOv8 output holds box
coordinates (0–640) and class scores (0–1) in one tensor, so scores at 0 dB
still give 30 dB overall.  The report therefore lists the *checked parts*
of the task, and the gates apply to the weakest one:

* ``classify`` — the class-score output ("logits"); ``top1_agreement`` (same
  arg-max) and ``top5_agreement`` (fp32's top-1 among the artifact's top 5);
  with labels, the accuracy of both and ``accuracy_drop_points``
  = (fp32 accuracy − artifact accuracy) × 100.
* ``detect`` — box coordinates, class scores (and YOLOv5/YOLOX objectness)
  as separate parts (YOLOv8 ``[1, 4+C, N]``, YOLOv5/YOLOX ``[1, N, 5+C]``),
  and the decoded detections (edgekit.postprocess's decoder and NMS) matched
  with fp32's at IoU ≥ 0.5 with the same class: recall, precision and the
  mean score error of the matches.
* ``segment`` — the score map, and the mean IoU of the argmax masks.
* ``text-detect`` — the text probability map (kind ``scores``) and the corners of the decoded text boxes
  matched with fp32's at IoU ≥ 0.5 (kind ``boxes``, pixels), with recall and precision of the boxes: a
  DB map is read through its boxes, as a detector's class scores are through its detections.
* ``raw`` — every output.
Other outputs of a model are checked as tensors.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from edgekit.errors import GateError, ModelError

SQNR_CAP_DB = 200.0  #: stored instead of +inf (exact match); −SQNR_CAP_DB instead of −inf
MATCH_IOU = 0.5  #: a decoded detection matches fp32's at this IoU or more, with the same class
#: a default recall floor judges a detector only when fp32 found at least this many boxes: below it one
#: borderline box moves recall by more than the floor's margin (a user's --min-recall always applies)
MIN_RECALL_DETECTIONS = 20


def _r(x: Optional[float], nd: int = 6) -> Optional[float]:
    return None if x is None else float(round(x, nd)) if math.isfinite(x) else x


@dataclass(frozen=True)
class OutputParity:
    name: str
    max_abs: float
    mean_abs: float
    cosine: float
    sqnr_db: float
    nonfinite: int = 0
    top1_agreement: Optional[float] = None
    top5_agreement: Optional[float] = None

    def to_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {
            "name": self.name,
            "max_abs": _r(self.max_abs, 9),
            "mean_abs": _r(self.mean_abs, 9),
            "cosine": _r(self.cosine, 9),
            "sqnr_db": _r(self.sqnr_db, 3),
            "nonfinite": self.nonfinite,
        }
        if self.top1_agreement is not None:
            out["top1_agreement"] = _r(self.top1_agreement)
        if self.top5_agreement is not None:
            out["top5_agreement"] = _r(self.top5_agreement)
        return out


@dataclass(frozen=True)
class PartParity:
    """One checked part: a whole output, or a slice of one (boxes, class scores)."""

    name: str
    output: str
    kind: str  # tensor | logits | boxes | scores | objectness | streamed (edgekit.manifest.PART_KINDS)
    sqnr_db: float
    cosine: float
    max_abs: float

    def to_json(self) -> Dict[str, Any]:
        return {"name": self.name, "output": self.output, "kind": self.kind, "sqnr_db": _r(self.sqnr_db, 3),
                "cosine": _r(self.cosine, 9), "max_abs": _r(self.max_abs, 9)}


@dataclass(frozen=True)
class DetectionParity:
    """Decoded detections of the artifact matched with fp32's."""

    recall: float
    precision: float
    matched: int
    reference_detections: int
    candidate_detections: int
    score_error: Optional[float]
    iou_threshold: float = MATCH_IOU

    def to_json(self) -> Dict[str, Any]:
        return {"iou_threshold": self.iou_threshold, "recall": _r(self.recall), "precision": _r(self.precision),
                "matched": self.matched, "reference_detections": self.reference_detections,
                "candidate_detections": self.candidate_detections, "score_error": _r(self.score_error)}


@dataclass(frozen=True)
class ParityReport:
    task: str
    samples: int
    outputs: Mapping[str, OutputParity]
    parts: Tuple[PartParity, ...] = ()
    top1_agreement: Optional[float] = None
    top5_agreement: Optional[float] = None
    detection: Optional[DetectionParity] = None
    mask_iou: Optional[float] = None
    reference_accuracy: Optional[float] = None  #: fraction in [0, 1]
    candidate_accuracy: Optional[float] = None
    labelled_samples: int = 0

    @property
    def weakest(self) -> PartParity:
        """The checked part with the lowest SQNR: the one the gates judge."""
        return min(self.parts, key=lambda p: p.sqnr_db)

    @property
    def min_sqnr_db(self) -> float:
        return self.weakest.sqnr_db

    @property
    def min_cosine(self) -> float:
        return min(p.cosine for p in self.parts)

    @property
    def accuracy_drop_points(self) -> Optional[float]:
        if self.reference_accuracy is None or self.candidate_accuracy is None:
            return None
        return (self.reference_accuracy - self.candidate_accuracy) * 100.0

    def to_json(self) -> Dict[str, Any]:
        drop = self.accuracy_drop_points
        return {
            "task": self.task,
            "samples": self.samples,
            "outputs": [o.to_json() for o in self.outputs.values()],
            "parts": [p.to_json() for p in self.parts],
            "weakest": self.weakest.name,
            "min_sqnr_db": _r(self.min_sqnr_db, 3),
            "min_cosine": _r(self.min_cosine, 9),
            "top1_agreement": _r(self.top1_agreement),
            "top5_agreement": _r(self.top5_agreement),
            "detection": self.detection.to_json() if self.detection is not None else None,
            "mask_iou": _r(self.mask_iou),
            "labelled_samples": self.labelled_samples,
            "reference_accuracy": _r(self.reference_accuracy),
            "candidate_accuracy": _r(self.candidate_accuracy),
            "accuracy_drop_points": _r(drop, 4) if drop is not None else None,
        }


# ----------------------------------------------------------------- metrics
def sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB, clamped to ±:data:`SQNR_CAP_DB`."""
    ref = np.asarray(reference, dtype=np.float64).ravel()
    cand = np.asarray(candidate, dtype=np.float64).ravel()
    if not np.all(np.isfinite(cand)):
        return -SQNR_CAP_DB
    signal = float(np.sum(ref * ref))
    noise = float(np.sum((ref - cand) ** 2))
    if noise == 0.0:
        return SQNR_CAP_DB
    if signal == 0.0:
        return -SQNR_CAP_DB
    return float(min(SQNR_CAP_DB, max(-SQNR_CAP_DB, 10.0 * math.log10(signal / noise))))


def cosine(reference: np.ndarray, candidate: np.ndarray) -> float:
    ref = np.asarray(reference, dtype=np.float64).ravel()
    cand = np.nan_to_num(np.asarray(candidate, dtype=np.float64).ravel(), nan=0.0, posinf=0.0, neginf=0.0)
    nr, nc = float(np.linalg.norm(ref)), float(np.linalg.norm(cand))
    if nr == 0.0 and nc == 0.0:
        return 1.0
    if nr == 0.0 or nc == 0.0:
        return 0.0
    return float(np.clip(np.dot(ref, cand) / (nr * nc), -1.0, 1.0))


def _max_abs(ref: np.ndarray, cand: np.ndarray) -> Tuple[float, float, int]:
    finite = np.isfinite(cand)
    nonfinite = int(cand.size - np.count_nonzero(finite))
    diff = np.abs(ref - cand)[finite] if nonfinite else np.abs(ref - cand)
    return (float(diff.max()) if diff.size else 0.0, float(diff.mean()) if diff.size else 0.0, nonfinite)


def _part(name: str, output: str, kind: str, ref: np.ndarray, cand: np.ndarray) -> PartParity:
    return PartParity(name=name, output=output, kind=kind, sqnr_db=sqnr_db(ref, cand), cosine=cosine(ref, cand),
                      max_abs=_max_abs(np.asarray(ref, np.float64).ravel(), np.asarray(cand, np.float64).ravel())[0])


def _class_scores(sample: np.ndarray) -> np.ndarray:
    """One sample's scores ([1, C], [C], or [1, C, 1, 1]) as a flat vector."""
    return np.asarray(sample, dtype=np.float64).ravel()


def _top1(sample: np.ndarray) -> int:
    return int(np.argmax(_class_scores(sample)))


def _stack(samples: Sequence[Mapping[str, np.ndarray]], name: str) -> np.ndarray:
    return np.stack([np.asarray(s[name], dtype=np.float64).reshape(np.shape(samples[0][name])) for s in samples])


# ----------------------------------------------------------------- checks
def _check_inputs(reference: Sequence[Mapping[str, np.ndarray]], candidate: Sequence[Mapping[str, np.ndarray]],
                  labels: Optional[Sequence[int]]) -> List[str]:
    if len(reference) != len(candidate):
        raise ModelError(
            f"parity: {len(reference)} reference results but {len(candidate)} artifact results; "
            "run both models on the same samples"
        )
    if not reference:
        raise ModelError("parity: no samples to compare; give held-out samples for verification")
    if labels is not None and len(labels) != len(reference):
        raise ModelError(f"parity: {len(labels)} labels for {len(reference)} samples; give one label per sample")
    names = list(reference[0].keys())
    for i, (ref, cand) in enumerate(zip(reference, candidate)):
        if sorted(ref.keys()) != sorted(names) or sorted(cand.keys()) != sorted(names):
            raise ModelError(
                f"parity: sample {i}: outputs differ (reference {sorted(ref.keys())}, artifact {sorted(cand.keys())}); "
                "the artifact must keep the source model's output names"
            )
        for name in names:
            rs, cs = np.shape(ref[name]), np.shape(cand[name])
            if int(np.prod(rs)) != int(np.prod(cs)):
                raise ModelError(
                    f"parity: sample {i}: output {name!r} has shape {list(cs)} in the artifact "
                    f"but {list(rs)} in the source"
                )
    return names


def _output_parity(name: str, reference: Sequence[Mapping[str, np.ndarray]],
                   candidate: Sequence[Mapping[str, np.ndarray]], classify: bool) -> OutputParity:
    ref = np.concatenate([np.asarray(r[name], dtype=np.float64).ravel() for r in reference])
    cand = np.concatenate([np.asarray(c[name], dtype=np.float64).ravel() for c in candidate])
    max_abs, mean_abs, nonfinite = _max_abs(ref, cand)
    top1 = top5 = None
    if classify:
        top1 = float(np.mean([_top1(r[name]) == _top1(c[name]) for r, c in zip(reference, candidate)]))
        top5 = float(np.mean([_top1(r[name]) in np.argsort(-_class_scores(c[name]), kind="stable")[:5]
                              for r, c in zip(reference, candidate)]))
    return OutputParity(name=name, max_abs=max_abs, mean_abs=mean_abs, cosine=cosine(ref, cand),
                        sqnr_db=sqnr_db(ref, cand), nonfinite=nonfinite, top1_agreement=top1, top5_agreement=top5)


def _task_output(postprocess: Any, names: Sequence[str]) -> str:
    wanted = getattr(postprocess, "output", None)
    return wanted if wanted in names else names[0]


def _detect_parts(name: str, ref: np.ndarray, cand: np.ndarray, postprocess: Any,
                  class_names: Optional[Sequence[str]]) -> List[PartParity]:
    """Boxes, class scores (and objectness) of a [S, 1, A, B] detector output, apart."""
    from edgekit import postprocess as _post

    if ref.ndim != 4:  # not a [1, A, B] head: checked as one tensor
        return [_part(name, name, "tensor", ref, cand)]
    layout = _post._resolve_layout(getattr(postprocess, "layout", _post.DetectLayout.AUTO),
                                   (int(ref.shape[2]), int(ref.shape[3])),
                                   None if class_names is None else len(class_names))
    if layout is _post.DetectLayout.YOLOV8:  # [1, 4+C, N]
        return [_part(f"{name} boxes", name, "boxes", ref[:, :, :4, :], cand[:, :, :4, :]),
                _part(f"{name} class scores", name, "scores", ref[:, :, 4:, :], cand[:, :, 4:, :])]
    if layout is _post.DetectLayout.YOLOX_RAW:  # raw offsets and log sizes: judged as the pixel boxes they decode to
        boxes = _part(f"{name} boxes", name, "boxes", _post.yolox_boxes(postprocess, ref, name),
                      _post.yolox_boxes(postprocess, cand, name))
    else:
        boxes = _part(f"{name} boxes", name, "boxes", ref[..., :4], cand[..., :4])
    return [boxes,  # [1, N, 5+C]
            _part(f"{name} objectness", name, "objectness", ref[..., 4], cand[..., 4]),
            _part(f"{name} class scores", name, "scores", ref[..., 5:], cand[..., 5:])]


def _greedy_match(ious: np.ndarray, reference: Sequence[Any], candidate: Sequence[Any], iou: float,
                  same_class: bool) -> List[Tuple[int, int]]:
    """(reference, candidate) index pairs matched one to one, best reference score first, each to its highest
    IoU ≥ ``iou`` among the candidates left (of the same ``class_id`` when ``same_class``)."""
    used: set = set()
    pairs: List[Tuple[int, int]] = []
    for i in np.argsort([-d.score for d in reference], kind="stable"):
        best, best_iou = None, iou
        for j in range(len(candidate)):
            if j in used or (same_class and candidate[j].class_id != reference[i].class_id):
                continue
            if ious[i, j] >= best_iou:
                best, best_iou = j, ious[i, j]
        if best is not None:
            used.add(best)
            pairs.append((int(i), best))
    return pairs


def _detection_parity(matched: int, n_ref: int, n_cand: int, errors: Sequence[float]) -> DetectionParity:
    return DetectionParity(recall=matched / n_ref if n_ref else 1.0, precision=matched / n_cand if n_cand else 1.0,
                           matched=matched, reference_detections=n_ref, candidate_detections=n_cand,
                           score_error=float(np.mean(errors)) if errors else None)


def match_detections(reference: Sequence[Any], candidate: Sequence[Any], iou: float = MATCH_IOU) -> Tuple[int, List[float]]:
    """Greedy one-to-one matching (best score first) at IoU ≥ ``iou`` with the same class.

    Returns the number of matches and the |score difference| of each.
    """
    from edgekit.postprocess import box_iou

    if not reference or not candidate:
        return 0, []
    rb = np.array([d.box for d in reference], dtype=np.float64)
    cb = np.array([d.box for d in candidate], dtype=np.float64)
    pairs = _greedy_match(box_iou(rb, cb), reference, candidate, iou, same_class=True)
    return len(pairs), [abs(reference[i].score - candidate[j].score) for i, j in pairs]


def _aligned(ref: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """``cand``'s four corners in the cyclic order closest to ``ref``'s: a rectangle near 0° or 90° may start
    its corners one place apart in two decodes."""
    shifts = [np.roll(cand, k, axis=0) for k in range(4)]
    return min(shifts, key=lambda c: float(np.sum((c - ref) ** 2)))


def _text_agreement(name: str, reference: Sequence[Mapping[str, np.ndarray]],
                    candidate: Sequence[Mapping[str, np.ndarray]],
                    postprocess: Any) -> Tuple[List[PartParity], DetectionParity]:
    """The decoded text boxes of each sample matched one-to-one with fp32's (best fp32 score first, highest
    quad IoU ≥ :data:`MATCH_IOU`): the ``boxes`` part over the matched corners, and recall / precision."""
    from edgekit import postprocess as _post
    from edgekit.textdet import quad_iou

    ref_pts: List[np.ndarray] = []
    cand_pts: List[np.ndarray] = []
    errors: List[float] = []
    n_ref = n_cand = 0
    for r, c in zip(reference, candidate):
        # the device's own decode, in model pixels (no transform), on the output the task reads
        rb, cb = _post.postprocess(postprocess, r).boxes, _post.postprocess(postprocess, c).boxes
        n_ref, n_cand = n_ref + len(rb), n_cand + len(cb)
        if not rb or not cb:
            continue
        rq = np.array([b.points for b in rb], dtype=np.float64)
        cq = np.array([b.points for b in cb], dtype=np.float64)
        for i, j in _greedy_match(quad_iou(rq, cq), rb, cb, MATCH_IOU, same_class=False):
            ref_pts.append(rq[i])
            cand_pts.append(_aligned(rq[i], cq[j]))
            errors.append(abs(rb[i].score - cb[j].score))
    parts = []
    if ref_pts:
        parts.append(_part(f"{name} text boxes", name, "boxes", np.stack(ref_pts), np.stack(cand_pts)))
    return parts, _detection_parity(len(errors), n_ref, n_cand, errors)


def _detection_agreement(reference: Sequence[Mapping[str, np.ndarray]], candidate: Sequence[Mapping[str, np.ndarray]],
                         postprocess: Any, class_names: Optional[Sequence[str]]) -> DetectionParity:
    from edgekit import postprocess as _post

    matched = n_ref = n_cand = 0
    errors: List[float] = []
    for r, c in zip(reference, candidate):
        rd = _post.postprocess(postprocess, r, labels=class_names).detections
        cd = _post.postprocess(postprocess, c, labels=class_names).detections
        m, e = match_detections(rd, cd)
        matched, n_ref, n_cand = matched + m, n_ref + len(rd), n_cand + len(cd)
        errors += e
    return _detection_parity(matched, n_ref, n_cand, errors)


def _mask_iou(reference: Sequence[Mapping[str, np.ndarray]], candidate: Sequence[Mapping[str, np.ndarray]],
              postprocess: Any, class_names: Optional[Sequence[str]]) -> float:
    """Mean over samples of the mean IoU of the classes present in either mask."""
    from edgekit import postprocess as _post

    scores = []
    for r, c in zip(reference, candidate):
        rm = _post.postprocess(postprocess, r, labels=class_names).mask
        cm = _post.postprocess(postprocess, c, labels=class_names).mask
        ious = []
        for k in np.union1d(np.unique(rm), np.unique(cm)):
            inter = np.count_nonzero((rm == k) & (cm == k))
            union = np.count_nonzero((rm == k) | (cm == k))
            ious.append(inter / union)
        scores.append(float(np.mean(ious)) if ious else 1.0)
    return float(np.mean(scores))


def compare_outputs(
    reference: Sequence[Mapping[str, np.ndarray]],
    candidate: Sequence[Mapping[str, np.ndarray]],
    *,
    task: str,
    labels: Optional[Sequence[int]] = None,
    postprocess: Any = None,
    class_names: Optional[Sequence[str]] = None,
) -> ParityReport:
    """Compare per-sample outputs of the fp32 reference and the artifact.

    ``reference[i]`` and ``candidate[i]`` are the outputs (name → array) for
    sample ``i``; the candidate's arrays are compared as float64 (dequantize
    integer outputs first).  Output names must match.  ``postprocess`` (the
    package's task config) says which output the task reads and how to decode
    it; without it the task's defaults apply.  ``labels``: the true class per
    sample (accuracy); ``class_names``: the package's labels.
    """
    from edgekit import postprocess as _post

    names = _check_inputs(reference, candidate, labels)
    if postprocess is None:
        postprocess = _post.config_for_task(task)
    main = _task_output(postprocess, names) if task != "raw" else None
    outputs = {n: _output_parity(n, reference, candidate, task == "classify" and n == main) for n in names}
    parts: List[PartParity] = []
    detection = mask_iou = None
    for n in names:
        ref, cand = _stack(reference, n), _stack(candidate, n)
        if n == main and task == "detect":
            parts += _detect_parts(n, ref, cand, postprocess, class_names)
        elif n == main and task == "text-detect":
            text_parts, detection = _text_agreement(n, reference, candidate, postprocess)
            parts += [_part(n, n, "scores", ref, cand)] + text_parts
        else:
            parts.append(_part(n, n, "logits" if n == main else "tensor", ref, cand))
    if task == "detect":
        detection = _detection_agreement(reference, candidate, postprocess, class_names)
    elif task == "segment":
        mask_iou = _mask_iou(reference, candidate, postprocess, class_names)
    ref_acc = cand_acc = None
    if task == "classify" and labels is not None:
        lab = [int(x) for x in labels]
        ref_acc = float(np.mean([_top1(r[main]) == y for r, y in zip(reference, lab)]))
        cand_acc = float(np.mean([_top1(c[main]) == y for c, y in zip(candidate, lab)]))
    head = outputs[main] if task == "classify" else None
    return ParityReport(
        task=task, samples=len(reference), outputs=outputs, parts=tuple(parts),
        top1_agreement=head.top1_agreement if head else None, top5_agreement=head.top5_agreement if head else None,
        detection=detection, mask_iou=mask_iou, reference_accuracy=ref_acc, candidate_accuracy=cand_acc,
        labelled_samples=len(labels) if (labels is not None and task == "classify") else 0,
    )


def streamed_parts(reference: Sequence[Mapping[str, np.ndarray]],
                   candidate: Sequence[Mapping[str, np.ndarray]]) -> Tuple[PartParity, ...]:
    """Every output of a stateful model over a stream (targets/state.py): ``reference[k]`` and ``candidate[k]``
    are call k of the fp32 reference's and the artifact's streams, each fed its own state back."""
    names = _check_inputs(reference, candidate, None)
    return tuple(_part(f"{n} (streamed)", n, "streamed", _stack(reference, n), _stack(candidate, n)) for n in names)


#: part kinds that a judged detector's decoded detections stand for under the default floors (check_gates)
DETECTION_SCORE_KINDS = frozenset({"scores", "objectness"})


def recall_judged(report: ParityReport, recall_floor: bool) -> bool:
    """Whether a recall gate judges this report: a detector's, and for the default floor enough fp32 boxes."""
    d = report.detection
    return d is not None and (not recall_floor or d.reference_detections >= MIN_RECALL_DETECTIONS)


def judged_by_detections(report: ParityReport, *, floor: bool, min_recall: Optional[float],
                         recall_floor: bool) -> bool:
    """Whether the score parts (class scores, objectness, a text map) answer to the decoded detections instead
    of their SQNR: under the default SQNR floor, with a recall gate that judges this report."""
    return (floor and min_recall is not None and recall_judged(report, recall_floor)
            and any(p.kind in DETECTION_SCORE_KINDS for p in report.parts))


def _recall_failures(report: ParityReport, min_recall: float, recall_floor: bool, *,
                     precision_too: bool = False) -> List[str]:
    d = report.detection
    if d is None:
        return [] if recall_floor else [
            "the min_recall gate could not be evaluated: it judges decoded detections (give --task detect or "
            "text-detect, or drop --min-recall)"]
    if not recall_judged(report, recall_floor):
        return []
    what = "the default floor" if recall_floor else "required"
    same = " with the same class" if report.task == "detect" else ""
    out: List[str] = []
    if precision_too and d.precision < min_recall:
        # the class scores were judged by the detections: spurious boxes fail as surely as missed ones
        out.append(f"decoded detections: precision {d.precision:.3f} vs fp32 ({d.matched} of "
                   f"{d.candidate_detections} detections match fp32's at IoU ≥ {d.iou_threshold:g}{same}) < {what} "
                   f"{min_recall:.2f}; to accept it pass --min-sqnr and --min-recall of your own, "
                   "or build at a higher precision")
    if d.recall < min_recall:
        out.append(f"decoded detections: recall {d.recall:.3f} vs fp32 ({d.matched} of {d.reference_detections} "
                   f"fp32 detections matched at IoU ≥ {d.iou_threshold:g}{same}; precision "
                   f"{d.precision:.3f}) < {what} {min_recall:.2f}; to accept it pass --min-recall "
                   f"{math.floor(d.recall * 100) / 100:.2f} (or lower), or build at a higher precision")
    return out


def check_gates(
    report: ParityReport,
    min_sqnr_db: Optional[float] = None,
    max_accuracy_drop: Optional[float] = None,
    *,
    floor: bool = False,
    min_recall: Optional[float] = None,
    recall_floor: bool = False,
) -> List[str]:
    """Raise :class:`GateError` with the figures and the overriding flag when a gate fails.

    The SQNR gate judges the weakest checked part (one line: its figure, the
    gate, and ``--min-sqnr`` to override; ``floor`` says the gate is the
    precision's default floor).  The recall gate judges a detector's decoded
    detections against fp32's (``--min-recall``; ``recall_floor``: the
    default floor, which needs :data:`MIN_RECALL_DETECTIONS` fp32 boxes to
    judge).  An accuracy or recall gate that cannot be evaluated (no
    labelled samples; not a detector) is an error, never a pass.  Under the
    default SQNR floor, a detector whose detections the recall gate judges has
    its class-score and objectness parts judged by those detections (recall
    and precision) instead of by SQNR; boxes and every other part keep the
    floor.  Returns [] when every gate passed.
    """
    failures: List[str] = []
    # Under the default floors a judged detector's class scores (and objectness) answer to the decoded
    # detections, recall and precision both, instead of their SQNR: a score tensor at 20 dB whose detections
    # match fp32's is a good detector, and one whose detections do not is caught whatever its SQNR.  A user's
    # --min-sqnr judges every part.
    by_detections = judged_by_detections(report, floor=floor, min_recall=min_recall, recall_floor=recall_floor)
    if min_recall is not None:
        failures += _recall_failures(report, min_recall, recall_floor, precision_too=by_detections)
    if min_sqnr_db is not None:
        parts = [p for p in report.parts if not (by_detections and p.kind in DETECTION_SCORE_KINDS)] or report.parts
        weak = min(parts, key=lambda p: p.sqnr_db)
        if weak.sqnr_db < min_sqnr_db:
            below = sum(1 for p in parts if p.sqnr_db < min_sqnr_db)
            others = f" ({below - 1} other part(s) below it too)" if below > 1 else ""
            what = "the default floor" if floor else "required"
            failures.append(
                f"{weak.name!r} ({weak.kind}): SQNR {weak.sqnr_db:.2f} dB < {what} {min_sqnr_db:.2f} dB "
                f"(cosine {weak.cosine:.6f}, max abs error {weak.max_abs:.6g}){others}; to accept it pass "
                f"--min-sqnr {math.floor(weak.sqnr_db * 10) / 10:.1f} (or lower), or build at a higher precision"
            )
    if max_accuracy_drop is not None:
        drop = report.accuracy_drop_points
        if drop is None:
            failures.append(
                "the max_accuracy_drop gate could not be evaluated: no labelled verification samples "
                "(give --val as a folder of class subfolders with --task classify, or drop --max-accuracy-drop)"
            )
        elif drop > max_accuracy_drop:
            failures.append(
                f"accuracy dropped {drop:.2f} points (fp32 {report.reference_accuracy * 100:.2f}% → "  # type: ignore[operator]
                f"artifact {report.candidate_accuracy * 100:.2f}% on {report.labelled_samples} samples) "  # type: ignore[operator]
                f"> allowed {max_accuracy_drop:.2f}; to accept it pass --max-accuracy-drop "
                f"{math.ceil(drop * 10) / 10:.1f}, or build at a higher precision"
            )
    if failures:
        raise GateError(f"verification on {report.samples} samples failed: " + "; ".join(failures))
    return []

"""Numeric parity between the fp32 source and a built artifact (pure numpy).

For each output, over all samples (flattened and concatenated):

* ``max_abs`` / ``mean_abs`` — absolute error;
* ``cosine`` — cosine similarity (1.0 when both are all-zero);
* ``sqnr_db`` — ``10·log10(Σref² / Σ(ref−cand)²)``.  JSON has no infinity, so
  SQNR is clamped to ``[-200, 200]`` dB: **200.0 means bit-exact**, −200.0
  means the candidate has no signal in common with the reference (or has
  NaN/inf values, counted in ``nonfinite``).

For ``task="classify"`` the first output is the class scores: ``top1_agreement``
is the fraction of samples whose arg-max class matches, and with labels the
accuracy of both models is reported; ``accuracy_drop_points`` is
``(fp32 accuracy − artifact accuracy) × 100``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from edgekit.errors import GateError, ModelError

SQNR_CAP_DB = 200.0  #: stored instead of +inf (exact match); −SQNR_CAP_DB instead of −inf


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
        return out


@dataclass(frozen=True)
class ParityReport:
    task: str
    samples: int
    outputs: Mapping[str, OutputParity]
    top1_agreement: Optional[float] = None
    reference_accuracy: Optional[float] = None  #: fraction in [0, 1]
    candidate_accuracy: Optional[float] = None
    labelled_samples: int = 0

    @property
    def min_sqnr_db(self) -> float:
        return min(o.sqnr_db for o in self.outputs.values())

    @property
    def min_cosine(self) -> float:
        return min(o.cosine for o in self.outputs.values())

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
            "min_sqnr_db": _r(self.min_sqnr_db, 3),
            "min_cosine": _r(self.min_cosine, 9),
            "top1_agreement": _r(self.top1_agreement),
            "labelled_samples": self.labelled_samples,
            "reference_accuracy": _r(self.reference_accuracy),
            "candidate_accuracy": _r(self.candidate_accuracy),
            "accuracy_drop_points": _r(drop, 4) if drop is not None else None,
        }


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


def _top1(sample: np.ndarray) -> int:
    """Class index of one sample's scores ([1, C], [C], or [1, C, 1, 1])."""
    return int(np.argmax(np.asarray(sample, dtype=np.float64).ravel()))


def compare_outputs(
    reference: Sequence[Mapping[str, np.ndarray]],
    candidate: Sequence[Mapping[str, np.ndarray]],
    *,
    task: str,
    labels: Optional[Sequence[int]] = None,
) -> ParityReport:
    """Compare per-sample outputs of the fp32 reference and the artifact.

    ``reference[i]`` and ``candidate[i]`` are the outputs (name → array) for
    sample ``i``; the candidate's arrays are compared as float64 (dequantize
    integer outputs first).  Output names must match.
    """
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

    outputs: Dict[str, OutputParity] = {}
    for j, name in enumerate(names):
        ref = np.concatenate([np.asarray(r[name], dtype=np.float64).ravel() for r in reference])
        cand = np.concatenate([np.asarray(c[name], dtype=np.float64).ravel() for c in candidate])
        finite = np.isfinite(cand)
        nonfinite = int(cand.size - np.count_nonzero(finite))
        diff = np.abs(ref - cand)[finite] if nonfinite else np.abs(ref - cand)
        top1 = None
        if task == "classify" and j == 0:
            agree = [_top1(r[name]) == _top1(c[name]) for r, c in zip(reference, candidate)]
            top1 = float(np.mean(agree))
        outputs[name] = OutputParity(
            name=name,
            max_abs=float(diff.max()) if diff.size else 0.0,
            mean_abs=float(diff.mean()) if diff.size else 0.0,
            cosine=cosine(ref, cand),
            sqnr_db=sqnr_db(ref, cand),
            nonfinite=nonfinite,
            top1_agreement=top1,
        )

    top1_all = outputs[names[0]].top1_agreement if task == "classify" else None
    ref_acc = cand_acc = None
    if task == "classify" and labels is not None:
        first = names[0]
        lab = [int(x) for x in labels]
        ref_acc = float(np.mean([_top1(r[first]) == y for r, y in zip(reference, lab)]))
        cand_acc = float(np.mean([_top1(c[first]) == y for c, y in zip(candidate, lab)]))
    return ParityReport(
        task=task,
        samples=len(reference),
        outputs=outputs,
        top1_agreement=top1_all,
        reference_accuracy=ref_acc,
        candidate_accuracy=cand_acc,
        labelled_samples=len(labels) if (labels is not None and task == "classify") else 0,
    )


def check_gates(
    report: ParityReport,
    min_sqnr_db: Optional[float] = None,
    max_accuracy_drop: Optional[float] = None,
) -> List[str]:
    """Raise :class:`GateError` (with the figures and the overriding flag) when a gate fails.

    Returns notes about gates that could not be evaluated (an accuracy gate
    without labelled samples) so the caller can record them; such a gate does
    not fail the build.
    """
    failures: List[str] = []
    notes: List[str] = []
    if min_sqnr_db is not None:
        for o in report.outputs.values():
            if o.sqnr_db < min_sqnr_db:
                extra = f", {o.nonfinite} NaN/inf values" if o.nonfinite else ""
                failures.append(
                    f"output {o.name!r}: SQNR {o.sqnr_db:.2f} dB < required {min_sqnr_db:.2f} dB "
                    f"(cosine {o.cosine:.6f}, max abs error {o.max_abs:.6g}{extra}); "
                    f"to accept it pass --min-sqnr {math.floor(o.sqnr_db * 10) / 10:.1f} "
                    "(or a lower value), or build at a higher precision"
                )
    if max_accuracy_drop is not None:
        drop = report.accuracy_drop_points
        if drop is None:
            notes.append("accuracy gate not evaluated: no labelled validation samples (use class folders)")
        elif drop > max_accuracy_drop:
            assert report.reference_accuracy is not None and report.candidate_accuracy is not None
            failures.append(
                f"accuracy dropped {drop:.2f} points (fp32 {report.reference_accuracy * 100:.2f}% → "
                f"artifact {report.candidate_accuracy * 100:.2f}% on {report.labelled_samples} samples) "
                f"> allowed {max_accuracy_drop:.2f}; to accept it pass --max-accuracy-drop "
                f"{math.ceil(drop * 10) / 10:.1f}, or build at a higher precision"
            )
    if failures:
        head = f"verification failed {len(failures)} gate(s) on {report.samples} held-out samples:"
        raise GateError("\n".join([head] + [f"  - {f}" for f in failures]))
    return notes

"""Build every real model for every installed target and precision; one row of figures per build.

Used by ``tests/test_real_models.py`` (slow) and ``benchmarks/bench_real_models.py``.
A build that raises is a row with ``error`` (the exception type and its first
line), never a crash of the whole suite: the rows are the bug list.
Builds run with ``allow_gate_failure=True`` so a build under its default
quality floor still yields its figures; ``passed`` says whether the default
floor held.
"""
from __future__ import annotations

import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

try:
    from . import data as _data, fetch as _fetch, registry
except ImportError:  # top-level import (tests put this folder on sys.path)
    import data as _data  # type: ignore[no-redef]
    import fetch as _fetch  # type: ignore[no-redef]
    import registry  # type: ignore[no-redef]


def installed_targets() -> Dict[str, Tuple[str, ...]]:
    """target name → precisions, for the targets whose toolchain is installed here."""
    from edgekit.targets import TARGETS

    out: Dict[str, Tuple[str, ...]] = {}
    for name in TARGETS.names():
        try:
            tgt = TARGETS.get(name)()
            ok, _ = tgt.toolchain()
        except Exception:  # a plug-in that cannot even import is reported by `edgekit targets`
            continue
        if ok:
            out[name] = tuple(sorted(p.value for p in tgt.precisions))
    return out


class CalibrationCache:
    """Makes each kind of calibration data once per run."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._made: Dict[str, Any] = {}

    def get(self, kind: str) -> Any:
        if kind not in self._made:
            makers = {
                "photos": lambda: _data.photo_folder(self.root / "photos"),
                "people": lambda: _data.people_folder(self.root / "people"),
                "people-holdout": lambda: _data.people_holdout_folder(self.root / "people-holdout"),
                "glyphs": lambda: _data.glyph_folder(self.root / "glyphs"),
                "glyphs-holdout": lambda: _data.glyph_holdout_folder(self.root / "glyphs-holdout"),
                "pages": lambda: _data.page_folder(self.root / "pages"),
                "text-lines": lambda: _data.text_line_folder(self.root / "text-lines"),
                "faces": lambda: _data.face_folder(self.root / "faces"),
                "speech": lambda: _data.speech_feeds(),
            }
            if kind not in makers:
                raise KeyError(f"unknown calibration kind {kind!r}; known: {sorted(makers)}")
            self._made[kind] = makers[kind]()
        return self._made[kind]


def _figures(v: Dict[str, Any]) -> Dict[str, Any]:
    """The verification figures worth a column, whatever shape the report has today."""
    keep = ("samples", "min_sqnr_db", "top1_agreement", "top5_agreement", "passed", "gates", "gate_sources", "weakest",
            "parts", "detection", "mask_iou", "gate_failure", "note", "reference_accuracy", "candidate_accuracy")
    out = {k: v[k] for k in keep if k in v and v[k] is not None}
    outs = v.get("outputs") or []
    if outs:
        out["outputs_sqnr_db"] = {o["name"]: round(float(o["sqnr_db"]), 2) for o in outs if "sqnr_db" in o}
    return out


@dataclass
class Row:
    model: str
    target: str
    precision: str
    seconds: float = 0.0
    package: Optional[str] = None
    size_bytes: Optional[int] = None
    figures: Dict[str, Any] = field(default_factory=dict)
    error: Optional[str] = None
    error_where: Optional[str] = None
    warnings: List[str] = field(default_factory=list)

    @property
    def passed(self) -> Optional[bool]:
        if self.error:
            return None
        return self.figures.get("passed")

    def to_json(self) -> Dict[str, Any]:
        return {"model": self.model, "target": self.target, "precision": self.precision, "seconds": round(self.seconds, 2),
                "package": self.package, "size_bytes": self.size_bytes, "figures": self.figures, "passed": self.passed,
                "error": self.error, "error_where": self.error_where, "warnings": self.warnings}


#: calibration kinds verified on a held-out set of their own (other scenes), not on a fifth of the calibration data
HOLDOUT = {"people": "people-holdout", "glyphs": "glyphs-holdout"}


def build_kwargs(model: "registry.RealModel", calibration: Any, validation: Any = None) -> Dict[str, Any]:
    kw = dict(model.build)
    kw["calibration"] = calibration
    if validation is not None:
        kw["validation"] = validation
    return kw


def build_one(model: "registry.RealModel", target: str, precision: str, out_dir: Path, calib: CalibrationCache,
              *, keep: bool = True) -> Row:
    """One build; never raises for a build failure (the row carries it)."""
    from edgekit.targets.pipeline import build_package

    row = Row(model.name, target, precision)
    path = _fetch.fetch_one(model.name)
    out = out_dir / f"{model.name}-{target}-{precision}.edgepkg"
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            res = build_package(path, target=target, precision=precision, output=out, allow_gate_failure=True,
                                name=model.name, **build_kwargs(model, calib.get(model.calibration),
                                                                calib.get(HOLDOUT[model.calibration])
                                                                if model.calibration in HOLDOUT else None))
            row.package = str(res.path)
            row.size_bytes = sum(p.stat().st_size for p in res.path.rglob("*") if p.is_file()) if res.path.is_dir() \
                else res.path.stat().st_size
            row.figures = _figures(res.manifest.get("verification") or {})
        except Exception as exc:  # noqa: BLE001 - every failure is a row of the bug list
            row.error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}"
            tb = traceback.extract_tb(exc.__traceback__)
            row.error_where = " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in reversed(tb[-4:]))
    row.seconds = time.perf_counter() - t0
    row.warnings = sorted({" ".join(str(w.message).split())[:200] for w in caught})
    if not keep and row.package:
        import shutil

        p = Path(row.package)
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    return row


def run_suite(out_dir: Path, *, models: Optional[Sequence[str]] = None, targets: Optional[Sequence[str]] = None,
              precisions: Optional[Sequence[str]] = None, keep: bool = False,
              on_row: Any = None) -> List[Row]:
    out_dir.mkdir(parents=True, exist_ok=True)
    calib = CalibrationCache(out_dir / "calibration")
    avail = installed_targets()
    rows: List[Row] = []
    for m in registry.MODELS:
        if models and m.name not in models:
            continue
        for tname, precs in avail.items():
            if targets and tname not in targets:
                continue
            for p in precs:
                if precisions and p not in precisions:
                    continue
                row = build_one(m, tname, p, out_dir, calib, keep=keep)
                rows.append(row)
                if on_row is not None:
                    on_row(row)
    return rows


def int8_cases(models: Optional[Sequence[str]], targets: Sequence[str]) -> Iterator[Tuple[Any, str]]:
    """(model, target) for every chosen model × target that builds int8 here; a target whose toolchain is not
    installed is said once per model and skipped (the int8 benchmarks' common loop)."""
    avail = installed_targets()
    for m in registry.MODELS:
        if models and m.name not in models:
            continue
        for t in targets:
            if t not in avail or "int8" not in avail[t]:
                print(f"{m.name:<20} {t:<12} skipped: toolchain not installed here", flush=True)
                continue
            yield m, t


def format_row(r: Row) -> str:
    """One line: the weakest part's SQNR, every part's, task figures, and the default-floor verdict."""
    f = r.figures
    head = f"{r.model:<20} {r.target:<12} {r.precision:<5}"
    if r.error:
        return f"{head} FAILED {r.seconds:6.1f}s  {r.error}  [{r.error_where}]"
    sq = f.get("min_sqnr_db")
    parts = {p["name"]: p.get("sqnr_db") for p in f.get("parts") or []} or f.get("outputs_sqnr_db") or {}
    extra = []
    if f.get("top1_agreement") is not None:
        extra.append(f"top-1 {100 * f['top1_agreement']:.1f}%")
    det = f.get("detection")
    if isinstance(det, dict) and det.get("recall") is not None:
        extra.append(f"recall {det['recall']:.2f} precision {det.get('precision', 0):.2f} "
                     f"({det.get('matched')}/{det.get('reference_detections')} boxes)")
    pstr = ", ".join(f"{k} {v:.1f}" for k, v in list(parts.items())[:4] if isinstance(v, (int, float)))
    verdict = {True: "pass", False: "FLOOR", None: "?"}[f.get("passed")]
    floor = (f.get("gates") or {}).get("min_sqnr_db")
    sqs = f"{sq:6.1f} dB" if isinstance(sq, (int, float)) else "     -   "
    fl = f" (floor {floor:g})" if isinstance(floor, (int, float)) else ""
    return f"{head} {verdict:<5}{fl:<13} {sqs} n={f.get('samples', '?'):<3} {'; '.join(extra)}  [{pstr}]  {r.seconds:.0f}s"

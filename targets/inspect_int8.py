"""``edgekit inspect --divergence PKG``: what an int8 package's build found, and a fresh layer-wise divergence.

The build records in ``manifest.quantization`` the layers kept in float
(``mixed_precision``), the int8-vs-fp32 speed and, with ``--explain``, the
twin's divergence.  Given the fp32 source (``--source``), a package whose
artifact is an ONNX Q/DQ graph (onnxruntime, qnn, tensorrt) is compared
tensor by tensor with it on ``--data`` (through the package's own
preprocessing), chunk by chunk so memory stays bounded.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from edgekit.errors import ConfigError

#: samples a fresh divergence runs on at most
MAX_SAMPLES = 8


def divergence(package: Path, source: Optional[Path], data: Optional[Path],
               threshold_db: Optional[float] = None) -> Tuple[Dict[str, Any], List[str]]:
    """(JSON document, text lines) for ``inspect --divergence``."""
    from edgekit.package import open_package

    opened = open_package(package)
    try:
        manifest = opened.manifest
        q = manifest.quantization.to_json() if manifest.quantization is not None else {}
        entry = opened.root / manifest.artifact.entry if hasattr(opened, "root") else None
        doc: Dict[str, Any] = {"precision": manifest.precision, "mixed_precision": q.get("mixed_precision"),
                               "speed": q.get("speed"), "recorded_divergence": q.get("divergence")}
        gates = manifest.verification.gates if manifest.verification is not None else {}
        floor = threshold_db if threshold_db is not None else float(gates.get("min_sqnr_db", 25.0))
        lines = _recorded_lines(doc)
        if source is not None:
            if entry is None or not str(entry).endswith(".onnx"):
                raise ConfigError(f"{package}: the {manifest.target_info.name} artifact is not an ONNX graph; a fresh "
                                  "divergence needs one (onnxruntime, qnn, tensorrt packages) — drop --source to see "
                                  "what the build recorded")
            rep = _fresh(manifest, entry, source, data, floor)
            doc["divergence"] = rep.to_json()
            lines.append(rep.table())
        elif not doc["recorded_divergence"]:
            lines.append("no layer-wise divergence recorded (build with --explain), and no --source given to compute one")
    finally:
        opened.close()
    return doc, lines


def _recorded_lines(doc: Dict[str, Any]) -> List[str]:
    from .int8_stage import _mixed_lines, speed_line

    class _A:  # _mixed_lines reads built.artifact.quantization
        def __init__(self, q: Dict[str, Any]) -> None:
            self.artifact = type("Art", (), {"quantization": q})()

    lines = _mixed_lines(_A({"mixed_precision": doc["mixed_precision"]})) if doc["mixed_precision"] else []
    sp = doc.get("speed") or {}
    if sp.get("ratio") is not None:
        lines.append(speed_line("speed at build", sp))
    rec = doc.get("recorded_divergence")
    if rec:
        first = rec.get("first_departure")
        lines.append(f"recorded divergence ({rec['what']}): first layer below {rec['threshold_db']:g} dB: "
                     + (f"{first['layer']} ({first['op_type']}) {first['sqnr_db']:.1f} dB" if first else "none"))
        for r in rec["rows"][:60]:
            lines.append(f"      {r['layer'][-38:]:<38} {r['op_type']:<16} {r['sqnr_db']:7.1f} dB")
    return lines


def _fresh(manifest: Any, entry: Path, source: Path, data: Optional[Path], floor: float) -> Any:
    import onnx

    from edgekit import preprocess as _pre
    from edgekit.quantize import divergence as _div
    from edgekit.quantize.calibration import load_feeds

    from .canonicalize import canonicalize
    from .stages import random_feeds

    shapes = {t.name: list(t.shape) for t in manifest.inputs}
    canon = canonicalize(str(source), input_shapes=shapes)
    candidate = onnx.load(str(entry))
    if data is not None:
        feeds = load_feeds(data, canon.inputs, _pre.Preprocessor(manifest.preprocess), limit=MAX_SAMPLES).feeds
        what = f"{manifest.target_info.name} int8 graph vs fp32 source on {data}"
    else:
        feeds = random_feeds(canon, 4)
        what = f"{manifest.target_info.name} int8 graph vs fp32 source on 4 random-normal tensors (give --data)"
    return _div.of_models(canon.model, candidate, feeds, threshold_db=floor, what=what)

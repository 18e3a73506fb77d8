"""``edgekit quickstart``: the bundled Fashion-MNIST CNN through every installed target."""
from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from edgekit.errors import EdgekitError, RuntimeMissingError

from . import TARGETS
from .base import Precision
from .pipeline import build_package



def bundled_model_dir() -> Path:
    """The folder holding the bundled model, labels and images: build-side data (``edgekit.targets``),
    so the device-side package carries none of it."""
    return Path(__file__).resolve().parent / "data"


def bundled_model() -> Dict[str, Any]:
    root = bundled_model_dir()
    meta = json.loads((root / "fashion_mnist_model.json").read_text(encoding="utf-8"))
    return {
        "model": root / "fashion_mnist_cnn.onnx",
        "labels": root / "fashion_mnist_labels.txt",
        "calibration": root / "fashion_mnist" / "calib",
        "validation": root / "fashion_mnist" / "val",
        "preprocess": meta["preprocess"],
        "meta": meta,
    }


def run_quickstart(
    output_dir: Path,
    *,
    targets: Optional[List[str]] = None,
    latency_iterations: int = 200,
    progress: Optional[Callable[[str, int, int], None]] = None,
) -> List[Dict[str, Any]]:
    """Build, verify and time one package per installed target × precision."""
    from edgekit.bench import benchmark_model
    from edgekit.model import load

    b = bundled_model()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    rows: List[Dict[str, Any]] = []
    for name in targets or TARGETS.names():
        try:
            tgt = TARGETS.get(name)()
            installed, _detail = tgt.toolchain()
        except ImportError as exc:  # a plug-in that cannot even import: report it, keep going
            rows.append({"target": name, "precision": "-", "package": None, "error": f"plug-in failed to import: {exc}"})
            continue
        if not installed:
            continue
        for precision in [p.value for p in Precision if p in tgt.precisions]:
            out = output_dir / f"fashion_mnist-{name}-{precision}.edgepkg"
            row: Dict[str, Any] = {"target": name, "precision": precision, "package": str(out)}
            try:
                result = build_package(
                    b["model"],
                    target=name,
                    precision=precision,
                    calibration=b["calibration"],
                    validation=b["validation"],
                    preprocess=b["preprocess"],
                    task="classify",
                    labels=b["labels"],
                    output=out,
                    name="fashion_mnist_cnn",
                    progress=progress,
                )
            except EdgekitError as exc:
                row["error"] = " ".join(str(exc).split())
                rows.append(row)
                continue
            v = result.manifest["verification"]
            try:
                m = load(result.path)
            except RuntimeMissingError:  # device runtime not here (TensorRT): time the verification runtime
                m = load(result.path, runtime=v["runtime"], **(v.get("runtime_options") or {}))
                row["latency_runtime"] = v["runtime"]
            with m:
                stats = benchmark_model(m, warmup=20, iterations=latency_iterations)
                timed_with = m.runner.name
            if timed_with == "qnn" and platform.machine().lower() in ("x86_64", "amd64"):
                timed_with += " (x86 HTP simulator)"  # says nothing about a phone's speed
            elif row.get("latency_runtime"):
                timed_with += f" (no {result.manifest['target']['runtime']} here)"
            row.update(
                size_bytes=result.path.stat().st_size,
                top1_agreement=v.get("top1_agreement"),
                min_sqnr_db=v.get("min_sqnr_db"),
                reference_accuracy=v.get("reference_accuracy"),
                candidate_accuracy=v.get("candidate_accuracy"),
                samples=v.get("samples"),
                latency_ms=stats["median_ms"],
                runtime=result.manifest["target"]["runtime"],
                timed_with=timed_with,
            )
            rows.append(row)
    return rows

"""Hand-assembled packages for the device-side tests (no build-side libraries needed)."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from edgekit.manifest import SCHEMA
from edgekit.package import seal_directory, write_package

from models.meta import GoldenModel


def manifest_for(gm: GoldenModel, *, preprocess: Optional[List[Dict[str, Any]]] = None,
                 postprocess: Optional[Dict[str, Any]] = None, labels: bool = False) -> Dict[str, Any]:
    sha = hashlib.sha256(gm.path.read_bytes()).hexdigest()
    return {
        "schema": SCHEMA,
        "name": gm.name,
        "created": "2026-11-25T00:00:00Z",
        "edgekit_version": "0.1.0",
        "source": {"format": "onnx", "sha256": sha, "opset": 17, "producer": "tests", "canonicalization": []},
        "target": {"name": "onnxruntime", "device": None, "runtime": "onnxruntime",
                   "runtime_versions": {}, "runtime_options": {"intra_op_num_threads": 1}, "details": {}},
        "precision": "fp32",
        "quantization": None,
        "inputs": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype,
                    "layout": "nchw" if len(t.shape) == 4 else None, "quantization": None} for t in gm.inputs],
        "outputs": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype, "layout": None, "quantization": None}
                    for t in gm.outputs],
        "preprocess": preprocess or [],
        "postprocess": postprocess or {"task": "raw"},
        "labels": "labels.txt" if labels else None,
        "artifact": {"entry": "model/model.onnx", "files": ["model/model.onnx"]},
        "verification": None,
        "files": {},
    }


def make_package(tmp: Path, gm: GoldenModel, output: str = "pkg.edgepkg", *, labels: Optional[Sequence[str]] = None,
                 **kw: Any) -> Path:
    stage = tmp / f"stage-{output}"
    shutil.rmtree(stage, ignore_errors=True)
    (stage / "model").mkdir(parents=True)
    shutil.copy(gm.path, stage / "model" / "model.onnx")
    if labels:
        (stage / "labels.txt").write_text("\n".join(labels) + "\n")
    manifest = manifest_for(gm, labels=bool(labels), **kw)
    return write_package(stage, manifest, tmp / output)


def image_steps(h: int, w: int, resize: str = "stretch") -> List[Dict[str, Any]]:
    return [
        {"op": "color", "mode": "rgb"},
        {"op": "resize", "size": [h, w], "mode": resize, "interpolation": "bilinear", "pad_value": 114},
        {"op": "normalize", "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "scale": 1 / 255},
        {"op": "layout", "order": "nchw"},
        {"op": "dtype", "dtype": "float32"},
    ]


def rewrite_manifest(pkg_dir: Path, edit) -> None:
    path = pkg_dir / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    seal_directory(pkg_dir)  # the integrity record covers the manifest: re-seal after a hand edit

"""``edgekit export snpe PKG DIR``: the SNPE/QAIRT files of a qnn package, outside the package.

A device package holds only what the device runs (the EPContext model and its
QNN context binary).  The files a Qualcomm SDK user wants instead — the
HTP-shaped fp32 ONNX, the QDQ ONNX, AIMET encodings with the package's
ranges, the exact ``snpe-onnx-to-dlc`` / ``qairt-converter`` commands and the
few calibration samples those tools require — are build-side files (the
samples are the user's own data), so they are made here, on the build host:

the package's build is repeated from the same source (its sha256 must match
``manifest.source.sha256``), the same calibration data, preprocessing,
recipe and HTP settings, with the qnn target's ``snpe_export_dir`` build
option; the rebuilt context model is compared with the package's, so the
report says whether the exported ranges are byte-for-byte the package's.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional

from .errors import ConfigError


def export_snpe(package: Path, out_dir: Path, model: Path, calibration: Optional[Path] = None,
                progress: Any = None) -> Dict[str, Any]:
    """Re-derive the SNPE/QAIRT files of a qnn ``package`` into ``out_dir`` (which must not exist or be empty)."""
    from .package import open_package

    out_dir = Path(out_dir)
    if os.path.lexists(out_dir) and (not out_dir.is_dir() or out_dir.is_symlink() or any(out_dir.iterdir())):
        raise ConfigError(f"{out_dir}: exists and is not an empty folder; export into a new folder")
    opened = open_package(package)
    try:
        m = opened.manifest
        doc = opened.manifest.to_json()
        recipe_path = opened.root / "recipe.json"
        recipe = recipe_path.read_text(encoding="utf-8") if recipe_path.is_file() else None
    finally:
        opened.close()
    if m.target != "qnn":
        raise ConfigError(f"{package}: a {m.target!r} package has no SNPE/QAIRT export; give a package built --target qnn")
    from edgekit.targets.canonicalize import onnx_sha256

    if not Path(model).is_file():
        raise ConfigError(f"{model}: no such model file; give the .onnx the package was built from")
    sha = onnx_sha256(model)
    if sha != m.source.sha256:
        raise ConfigError(f"{model}: sha256 {sha[:12]}… is not the package's source ({m.source.sha256[:12]}…); "
                          "give the exact .onnx the package was built from")
    if m.precision == "int8" and calibration is None:
        raise ConfigError("an int8 qnn package was calibrated: give the same data with --calib (the encodings are "
                          "derived from it)")
    from edgekit.targets.pipeline import build_package

    parent = out_dir.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=str(parent)))
    try:
        build_options: Dict[str, Any] = {"snpe_export_dir": str(staging)}
        opts = dict(m.runtime_options)
        if m.device is None:
            build_options.update({k: opts[k] for k in ("htp_arch", "soc_model") if k in opts})
        with tempfile.TemporaryDirectory(prefix="edgekit-export-") as tmp:
            if recipe is not None:
                (Path(tmp) / "recipe.json").write_text(recipe, encoding="utf-8")
            res = build_package(
                model, target="qnn", device=m.device, precision=m.precision, calibration=calibration,
                preprocess=doc.get("preprocess") or None, postprocess=doc.get("postprocess"),
                labels=list(m.labels) if m.labels else None, recipe=Path(tmp) / "recipe.json" if recipe else None,
                input_shapes={t.name: list(t.shape) for t in m.inputs}, build_options=build_options,
                output=Path(tmp) / "rebuilt.edgepkg", name=m.name, allow_gate_failure=True, progress=progress,
            )
            del res
        # the context binary embeds build-time ids (two identical builds differ in ~60 bytes), so the proof
        # that the exported ranges are the package's is the encodings' sha256 the package recorded
        recorded = ((doc.get("target") or {}).get("details") or {}).get("aimet_encodings") or {}
        enc = staging / "model.encodings"
        if enc.is_file():
            import hashlib

            got = hashlib.sha256(enc.read_bytes()).hexdigest()
            same: Optional[bool] = got == recorded.get("sha256") if recorded.get("sha256") else None
        else:
            same = True  # fp16: no calibrated ranges; the fp32 graph follows from the source alone
        os.chmod(staging, 0o777 & ~_umask())
        os.rename(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    files = sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file())
    return {"package": str(package), "output": str(out_dir), "files": files,
            "ranges_match_package": same}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask

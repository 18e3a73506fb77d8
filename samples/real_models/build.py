"""Build a package of one real model: fetch it, make its calibration data, ``edgekit.build`` it.

    python samples/real_models/build.py yolov8n-nudenet-320 --target onnxruntime -o yolo.edgepkg
    python samples/real_models/build.py ppocrv4-rec --device raspberry-pi-5 --precision fp32 -o rec.edgepkg

The preprocessing, task and input size are the registry's (``registry.py``:
what each model's authors use).  For ``ppocrv4-rec`` the CTC dictionary is
written next to the package as ``<package>.keys.json`` (see the OCR sample:
labels.txt cannot carry a dictionary whose entries include a full-width space).
Prints the verification line; exits 2 with one line on a user error.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fetch  # noqa: E402
import registry  # noqa: E402
import suite  # noqa: E402


def ctc_keys(model_path: Path) -> List[str]:
    """The recognizer's dictionary from its ONNX metadata, as CTC indices: blank, the characters, space."""
    import onnx

    m = onnx.load(str(model_path), load_external_data=False)
    chars = next(p.value for p in m.metadata_props if p.key == "character").split("\n")
    return ["<blank>"] + chars + [" "]


def build(name: str, output: Path, *, target: Optional[str] = None, device: Optional[str] = None,
          precision: Optional[str] = None, min_sqnr: Optional[float] = None, allow_gate_failure: bool = False,
          workdir: Optional[Path] = None) -> Path:
    import edgekit

    model = registry.get(name)
    if not isinstance(model, registry.RealModel):
        raise SystemExit(f"error: {name} is sample data, not a model; models: "
                         f"{', '.join(m.name for m in registry.MODELS)}")
    path = fetch.fetch_one(name)
    with tempfile.TemporaryDirectory(prefix="edgekit-sample-calib-") as tmp:
        calib = suite.CalibrationCache(workdir or Path(tmp)).get(model.calibration)
        gates = {"min_sqnr_db": min_sqnr} if min_sqnr is not None else None
        out = edgekit.build(path, target=target, device=device, precision=precision, output=output, name=name,
                            gates=gates, allow_gate_failure=allow_gate_failure,
                            **suite.build_kwargs(model, calib))
    if name == "ppocrv4-rec":
        Path(str(out) + ".keys.json").write_text(json.dumps(ctc_keys(path), ensure_ascii=False), encoding="utf-8")
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="a model of registry.py (python samples/real_models/fetch.py --list)")
    ap.add_argument("--target", "-t")
    ap.add_argument("--device", "-d")
    ap.add_argument("--precision", "-p")
    ap.add_argument("--min-sqnr", type=float, help="override the default quality floor (dB)")
    ap.add_argument("--allow-gate-failure", action="store_true")
    ap.add_argument("-o", "--out", type=Path, required=True)
    args = ap.parse_args(argv)
    from edgekit.errors import EdgekitError

    try:
        out = build(args.model, args.out, target=args.target, device=args.device, precision=args.precision,
                    min_sqnr=args.min_sqnr, allow_gate_failure=args.allow_gate_failure)
    except (EdgekitError, fetch.FetchError, KeyError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    import edgekit

    with edgekit.load(out) as m:
        v = m.manifest.verification
        print(f"wrote {out}: {m.manifest.target} {m.manifest.precision}, verified on {v.samples} samples, "
              f"min SQNR {v.min_sqnr_db:.1f} dB, passed {v.passed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

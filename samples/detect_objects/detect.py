"""Detect objects in images and video files and save them with the boxes drawn.

    python samples/detect_objects/detect.py yolo.edgepkg photo.jpg photos/ clip.gif clip.mp4 --out annotated/

Device-side API only (``edgekit.load(...).predict(...)``, Pillow, numpy).
Images: every file given (folders: their images), saved as PNG with boxes.
Video: animated GIF / WebP / APNG are read and written with Pillow; other
containers (.mp4, .avi, .mov, .mkv) with OpenCV when it is installed
(``pip install opencv-python-headless``), else a one-line error.  Each frame
is run through the package and written back with its boxes; a summary says
how many detections per label and the steady-state latency per frame.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageOps

import edgekit
from edgekit.annotate import draw_detections
from edgekit.inputs import expand_inputs

ANIMATED = {".gif", ".webp", ".png", ".apng"}
VIDEO = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm"}


def _pil_frames(path: Path) -> Tuple[List[np.ndarray], List[int]]:
    """Every frame of an animated image as RGB, with its duration (ms)."""
    frames, durations = [], []
    with Image.open(path) as im:
        for i in range(getattr(im, "n_frames", 1)):
            im.seek(i)
            frames.append(np.asarray(im.convert("RGB")))
            durations.append(int(im.info.get("duration", 100)))
    return frames, durations


def _cv2_frames(path: Path) -> Tuple[Iterator[np.ndarray], float, Any]:
    try:
        import cv2  # type: ignore[import-not-found]
    except ImportError:
        raise SystemExit(f"error: {path.name}: reading {path.suffix} video needs OpenCV "
                         "(pip install opencv-python-headless); animated GIF/WebP work without it") from None
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise SystemExit(f"error: {path}: OpenCV cannot open this video")
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0

    def frames() -> Iterator[np.ndarray]:
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            yield bgr[:, :, ::-1].copy()
        cap.release()

    return frames(), fps, cv2


def is_video(path: Path) -> bool:
    if path.suffix.lower() in VIDEO:
        return True
    if path.suffix.lower() in ANIMATED:
        with Image.open(path) as im:
            return getattr(im, "n_frames", 1) > 1
    return False


def detect_video(model: "edgekit.Model", path: Path, out_dir: Path, stats: Dict[str, Any]) -> Path:
    """Each frame through the package; the annotated video next to the others in ``out_dir``."""
    if path.suffix.lower() in VIDEO:
        frames, fps, cv2 = _cv2_frames(path)
        out = out_dir / f"{path.stem}.mp4"
        writer = None
        for frame in frames:
            drawn = np.asarray(draw_detections(Image.fromarray(frame), _predict(model, frame, stats)))
            if writer is None:
                writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (drawn.shape[1], drawn.shape[0]))
            writer.write(drawn[:, :, ::-1])
        if writer is not None:
            writer.release()
        return out
    frames_rgb, durations = _pil_frames(path)
    drawn = [draw_detections(Image.fromarray(f), _predict(model, f, stats)) for f in frames_rgb]
    out = out_dir / f"{path.stem}.gif"
    drawn[0].save(out, save_all=True, append_images=drawn[1:], duration=durations, loop=0)
    return out


def _predict(model: "edgekit.Model", frame: Any, stats: Dict[str, Any]) -> List[Any]:
    t0 = time.perf_counter()
    result = model.predict(frame)
    stats["ms"].append((time.perf_counter() - t0) * 1e3)
    stats["labels"].update(d.label or str(d.class_id) for d in result.detections)
    stats["frames"] += 1
    return result.detections


def run(package: Path, inputs: Sequence[str], out_dir: Path, threads: Optional[int] = None) -> Dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    options = {"threads": threads} if threads else {}
    items = []
    with edgekit.load(package, **options) as model:
        if model.manifest.postprocess.task.value != "detect":
            raise SystemExit(f"error: {package} is a {model.manifest.postprocess.task.value} package; "
                             "this sample needs a detection package (--task detect)")
        for path in expand_inputs(inputs):
            stats: Dict[str, Any] = {"ms": [], "labels": Counter(), "frames": 0}
            if is_video(path):
                out = detect_video(model, path, out_dir, stats)
                kind = "video"
            else:
                with Image.open(path) as im:
                    image = ImageOps.exif_transpose(im).convert("RGB")
                dets = _predict(model, np.asarray(image), stats)
                out = out_dir / f"{path.stem}.png"
                draw_detections(image, dets).save(out)
                kind = "image"
            items.append({"input": str(path), "kind": kind, "frames": stats["frames"], "saved": str(out),
                          "detections": dict(stats["labels"]), "ms": stats["ms"]})
    all_ms = [m for it in items for m in it["ms"]]
    steady = all_ms[1:] or all_ms
    return {
        "items": [{k: v for k, v in it.items() if k != "ms"} for it in items],
        "first_ms": all_ms[0] if all_ms else None,
        "steady_median_ms": float(np.median(steady)) if steady else None,
        "calls": len(all_ms),
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("package", type=Path, help="a detection package (edgekit build ... --task detect)")
    ap.add_argument("inputs", nargs="+", help="images, folders, globs, animated GIF/WebP or video files")
    ap.add_argument("--out", type=Path, default=Path("detections"), help="folder for the annotated files")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    try:
        res = run(args.package, args.inputs, args.out, args.threads)
    except edgekit.EdgekitError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    for it in res["items"]:
        found = ", ".join(f"{k} x{v}" for k, v in sorted(it["detections"].items())) or "nothing"
        frames = f" ({it['frames']} frames)" if it["kind"] == "video" else ""
        print(f"{it['input']}{frames}: {found} -> {it['saved']}")
    print(f"{res['calls']} predict calls: first {res['first_ms']:.1f} ms, then median {res['steady_median_ms']:.1f} ms "
          "(decode + preprocess + infer + postprocess)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

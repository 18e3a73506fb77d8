"""Read the text of a scanned page: a text-detection package, then a text-recognition package.

    python samples/ocr_page/ocr.py det.edgepkg rec.edgepkg page.png [--keys rec.edgepkg.keys.json] [--save boxes.png]

Two PP-OCRv4 packages chained with the device-side API only (numpy + Pillow +
the packages' runtime): the detector package's text boxes (its runtime runs
the DB post-processing: threshold, connected components, box score, unclip)
are the lines, each box is cut from the page, scaled to 48 px high and padded to
the recognizer's 320 px, and the recognizer's per-step class scores are
decoded greedily (CTC: collapse repeats, drop blanks) with the dictionary
written next to the recognizer package.  Prints one line per text line,
top to bottom, and the time each stage took.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageOps

import edgekit

Box = Tuple[int, int, int, int]

REC_HEIGHT, REC_WIDTH = 48, 320
PAD_GREY = 128  # PaddleOCR pads with 0 after (x/255 - 0.5) / 0.5, i.e. mid grey


@dataclass(frozen=True)
class Line:
    """A text line as a rotated rectangle in page pixels."""

    cx: float
    cy: float
    width: float
    height: float
    angle: float  # radians, the line's slope (y grows downwards)
    score: float

    @property
    def box(self) -> Box:
        """The axis-aligned bounding box of the rotated rectangle."""
        c, s = abs(math.cos(self.angle)), abs(math.sin(self.angle))
        hw, hh = (self.width * c + self.height * s) / 2, (self.width * s + self.height * c) / 2
        return (int(self.cx - hw), int(self.cy - hh), int(math.ceil(self.cx + hw)), int(math.ceil(self.cy + hh)))


def detect_lines(det: "edgekit.Model", page: Image.Image) -> List[Line]:
    """Text lines in page pixels, top to bottom: the package's own text boxes (task text-detect: DB
    post-processing in the runtime, corners mapped back to the page), each widened by a quarter of its height
    at both ends — the map's round line ends clip the first and last letters."""
    if det.manifest.postprocess.task.value != "text-detect":
        raise SystemExit(f"error: {det.path} is a {det.manifest.postprocess.task.value!r} package; build the "
                         "detector with --task text-detect (samples/real_models/build.py ppocrv4-det does)")
    lines = []
    for box in det.predict(np.asarray(page)).boxes:
        p = np.asarray(box.points, dtype=np.float64)
        edges = [p[1] - p[0], p[2] - p[1]]
        along, across = sorted(edges, key=lambda e: -float(np.hypot(*e)))  # a text line runs along its long side
        if along[0] < 0:
            along = -along
        w, h = float(np.hypot(*along)), float(np.hypot(*across))
        cx, cy = p.mean(axis=0)
        lines.append(Line(cx=float(cx), cy=float(cy), width=w + h / 2, height=h, angle=math.atan2(along[1], along[0]),
                          score=box.score))
    return sorted(lines, key=lambda ln: (round(ln.cy / 10), ln.cx))


def line_images(page: Image.Image, line: Line) -> List[np.ndarray]:
    """The line cut out level and scaled to 48 px high, in pieces of at most 320 px (HWC uint8 RGB each).

    The recognizer package has a fixed 48x320 input (PaddleOCR widens it per
    batch instead): a long line is split where the ink is faintest, near each
    320 px mark, so no piece is squeezed; each piece is padded right with grey.
    """
    level = page.rotate(math.degrees(line.angle), resample=Image.BILINEAR, center=(line.cx, line.cy),
                        fillcolor=(255, 255, 255))
    crop = level.crop((int(line.cx - line.width / 2), int(line.cy - line.height / 2),
                       int(math.ceil(line.cx + line.width / 2)), int(math.ceil(line.cy + line.height / 2))))
    w = max(1, int(math.ceil(REC_HEIGHT * crop.width / max(crop.height, 1))))
    strip = np.asarray(crop.resize((w, REC_HEIGHT), Image.BILINEAR))
    ink = 255.0 - strip.mean(axis=(0, 2))  # dark text on a light page
    pieces, start = [], 0
    while w - start > REC_WIDTH:
        lo = start + int(REC_WIDTH * 0.75)
        cut = lo + int(np.argmin(ink[lo:start + REC_WIDTH]))
        pieces.append(strip[:, start:cut])
        start = cut
    pieces.append(strip[:, start:])
    out = []
    for piece in pieces:
        canvas = np.full((REC_HEIGHT, REC_WIDTH, 3), PAD_GREY, np.uint8)
        canvas[:, : piece.shape[1]] = piece
        out.append(canvas)
    return out


def ctc_decode(scores: np.ndarray, keys: Sequence[str]) -> Tuple[str, float]:
    """Greedy CTC: best class per step, repeats collapsed, blanks (index 0) dropped; mean confidence."""
    idx = scores.argmax(axis=-1)
    conf = scores.max(axis=-1)
    chars, confs, last = [], [], -1
    for i, c in zip(idx.tolist(), conf.tolist()):
        if i != last and i != 0:
            chars.append(keys[i] if i < len(keys) else "?")
            confs.append(c)
        last = i
    return "".join(chars), float(np.mean(confs)) if confs else 0.0


def read_page(det_pkg: Path, rec_pkg: Path, image: Path, keys_file: Optional[Path] = None,
              save: Optional[Path] = None) -> Dict[str, object]:
    keys = json.loads(Path(keys_file or f"{rec_pkg}.keys.json").read_text(encoding="utf-8"))
    with Image.open(image) as im:
        page = ImageOps.exif_transpose(im).convert("RGB")
    with edgekit.load(det_pkg) as det, edgekit.load(rec_pkg) as rec:
        t0 = time.perf_counter()
        found = detect_lines(det, page)
        t1 = time.perf_counter()
        lines = []
        for line in found:
            parts = [ctc_decode(next(iter(rec.predict(img).outputs.values()))[0], keys) for img in line_images(page, line)]
            text = "".join(t for t, _ in parts)
            conf = float(np.mean([c for _, c in parts]))
            if text.strip():
                lines.append({"box": list(line.box), "angle_deg": round(math.degrees(line.angle), 2), "text": text,
                              "confidence": round(conf, 4)})
        t2 = time.perf_counter()
    if save is not None:
        draw_page = page.copy()
        d = ImageDraw.Draw(draw_page)
        for ln in lines:
            d.rectangle(ln["box"], outline=(255, 0, 0), width=1)
        draw_page.save(save)
    return {"lines": lines, "detect_ms": (t1 - t0) * 1e3, "recognize_ms": (t2 - t1) * 1e3,
            "boxes": len(found)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("det", type=Path, help="text-detection package (PP-OCRv4 det)")
    ap.add_argument("rec", type=Path, help="text-recognition package (PP-OCRv4 rec)")
    ap.add_argument("image", type=Path, help="a scanned page")
    ap.add_argument("--keys", type=Path, help="the recognizer's dictionary (default: REC.keys.json)")
    ap.add_argument("--save", type=Path, help="write the page with the line boxes drawn")
    ap.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = ap.parse_args(argv)
    res = read_page(args.det, args.rec, args.image, args.keys, args.save)
    if args.json:
        print(json.dumps(res, ensure_ascii=False, indent=1))
        return 0
    for ln in res["lines"]:  # type: ignore[union-attr]
        print(ln["text"])
    print(f"-- {len(res['lines'])} lines from {res['boxes']} boxes; detection {res['detect_ms']:.1f} ms, "
          f"recognition {res['recognize_ms']:.1f} ms", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

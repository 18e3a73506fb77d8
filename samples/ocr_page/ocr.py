"""Read the text of a scanned page: a text-detection package, then a text-recognition package.

    python samples/ocr_page/ocr.py det.edgepkg rec.edgepkg page.png [--keys rec.edgepkg.keys.json] [--save boxes.png]

Two PP-OCRv4 packages chained with the device-side API only (numpy + Pillow +
the packages' runtime): the detector's probability map is turned into line
boxes (DB post-processing: threshold, connected components, box score,
unclip), each box is cut from the page, scaled to 48 px high and padded to
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

#: DB post-processing thresholds of PaddleOCR / RapidOCR
BIN_THRESHOLD = 0.3
BOX_THRESHOLD = 0.5
UNCLIP_RATIO = 1.6
MIN_SIDE = 3
REC_HEIGHT, REC_WIDTH = 48, 320
PAD_GREY = 128  # PaddleOCR pads with 0 after (x/255 - 0.5) / 0.5, i.e. mid grey


def components(mask: np.ndarray) -> List[Tuple[np.ndarray, np.ndarray]]:
    """4-connected components of a boolean mask, each as (ys, xs) pixel index arrays.

    Run-length labelling with union-find: one pass over the rows, merging a run
    with the runs it touches in the row above.  Fast enough for a 640x640 map.
    """
    parent: List[int] = []

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    runs: List[Tuple[int, int, int]] = []  # (row, start, end) end exclusive
    prev: List[int] = []
    for y in range(mask.shape[0]):
        row = mask[y]
        if not row.any():
            prev = []
            continue
        d = np.diff(np.concatenate(([0], row.astype(np.int8), [0])))
        starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
        cur = []
        j = 0
        for s, e in zip(starts.tolist(), ends.tolist()):
            idx = len(runs)
            runs.append((y, s, e))
            parent.append(idx)
            while j < len(prev) and runs[prev[j]][2] <= s:
                j += 1
            k = j
            while k < len(prev) and runs[prev[k]][1] < e:
                a, b = find(idx), find(prev[k])
                if a != b:
                    parent[max(a, b)] = min(a, b)
                k += 1
            cur.append(idx)
        prev = cur
    groups: Dict[int, List[int]] = {}
    for i in range(len(runs)):
        groups.setdefault(find(i), []).append(i)
    out = []
    for members in groups.values():
        ys = np.concatenate([np.full(runs[i][2] - runs[i][1], runs[i][0]) for i in members])
        xs = np.concatenate([np.arange(runs[i][1], runs[i][2]) for i in members])
        out.append((ys, xs))
    return out


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
    """Text lines in page pixels, top to bottom."""
    out = det.predict(np.asarray(page))
    prob = next(iter(out.outputs.values()))[0, 0]
    mh, mw = prob.shape
    sx, sy = page.width / mw, page.height / mh  # the package stretches the page to the model's size
    lines = []
    for ys, xs in components(prob > BIN_THRESHOLD):
        if xs.max() - xs.min() < MIN_SIDE or ys.max() - ys.min() < MIN_SIDE:
            continue
        score = float(prob[ys, xs].mean())
        if score < BOX_THRESHOLD:
            continue
        # the region's orientation in page pixels (scanned lines are rarely level), then its extent
        px, py = (xs + 0.5) * sx, (ys + 0.5) * sy
        slope = np.polyfit(px, py, 1)[0] if np.ptp(px) > 0 else 0.0
        angle = math.atan(slope)
        c, s = math.cos(angle), math.sin(angle)
        along, across = px * c + py * s, -px * s + py * c
        w, h = float(np.ptp(along)) + sx, float(np.ptp(across)) + sy
        # unclip: DB shrinks text regions when training; grow them back by area * ratio / perimeter
        d = w * h * UNCLIP_RATIO / (2 * (w + h))
        ma, mc = (along.max() + along.min()) / 2, (across.max() + across.min()) / 2
        # plus a quarter of the height at each end: the map's round line ends clip first/last letters
        lines.append(Line(cx=ma * c - mc * s, cy=ma * s + mc * c, width=w + 2 * d + (h + 2 * d) / 2, height=h + 2 * d, angle=angle,
                          score=score))
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

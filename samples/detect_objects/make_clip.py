"""Make a short clip (animated GIF) from a photo: a slow zoom and pan, so the detector tracks a moving subject.

    python samples/detect_objects/make_clip.py photo.png clip.gif [--frames 12]

For trying the video path without a video file at hand; any real video
(.mp4 with OpenCV, animated GIF/WebP) works the same way.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from PIL import Image


def make_clip(photo: Path, out: Path, frames: int = 12, size: int = 320) -> Path:
    with Image.open(photo) as im:
        rgb = im.convert("RGB")
    w, h = rgb.size
    shots = []
    for i in range(frames):
        t = i / max(frames - 1, 1)
        zoom = 1.0 - 0.45 * t  # from the whole photo to 55 % of it
        cw, ch = int(w * zoom), int(h * zoom)
        x0, y0 = int((w - cw) * 0.5 * (1 + 0.4 * t)), int((h - ch) * 0.2 * t)
        shots.append(rgb.crop((x0, y0, x0 + cw, y0 + ch)).resize((size, size * ch // cw), Image.BILINEAR))
    shots[0].save(out, save_all=True, append_images=shots[1:], duration=120, loop=0)
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("photo", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--frames", type=int, default=12)
    args = ap.parse_args(argv)
    print(make_clip(args.photo, args.out, args.frames))
    return 0


if __name__ == "__main__":
    sys.exit(main())

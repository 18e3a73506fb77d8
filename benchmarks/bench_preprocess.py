"""Preprocessing speed and fidelity: edgekit.preprocess vs the plain Pillow + numpy path.

Run:  python benchmarks/bench_preprocess.py [--runs 30] [--size 224]

Makes a 1920x1080 JPEG (quality 90) that looks like a photo to the codec: smooth
gradients, shapes with hard edges, fine texture and sensor-like noise.  Then, in the
same process, times (median of --runs after a warm-up):

  baseline  Image.open -> convert('RGB') -> resize((S, S), BILINEAR) -> np.asarray
            -> float32 / 255 -> (x - mean) / std -> transpose(2, 0, 1)
  edgekit   Preprocessor(default_image_steps(S, S, ImageNet mean/std)), stretch bilinear

and compares the two pictures in grey levels (0..255) before normalisation.
Prints one figure per line; asserts nothing.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgekit.preprocess import Preprocessor, default_image_steps  # noqa: E402

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
_BILINEAR = getattr(Image, "Resampling", Image).BILINEAR


def make_photo(path: Path, width: int = 1920, height: int = 1080, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    sky = np.stack(
        [
            90 + 120 * (x / width),
            130 + 80 * np.sin(y / height * np.pi),
            200 - 120 * (y / height),
        ],
        axis=-1,
    )
    texture = 18 * np.sin(x / 7.0) * np.cos(y / 11.0)  # fine detail the resize must average
    img = sky + texture[..., None]
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(40):
        x0, y0 = int(rng.integers(0, width - 200)), int(rng.integers(0, height - 200))
        x1, y1 = x0 + int(rng.integers(30, 400)), y0 + int(rng.integers(30, 300))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse([x0, y0, x1, y1], fill=color)
        else:
            draw.rectangle([x0, y0, x1, y1], fill=color, outline=(0, 0, 0), width=3)
    arr = np.asarray(im).astype(np.float32) + rng.normal(0, 6, (height, width, 3))
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path, quality=90)


def baseline(path: Path, size: int) -> np.ndarray:
    im = Image.open(path).convert("RGB").resize((size, size), _BILINEAR)
    x = np.asarray(im).astype(np.float32) / 255.0
    x = (x - np.array(MEAN, dtype=np.float32)) / np.array(STD, dtype=np.float32)
    return x.transpose(2, 0, 1)


def median_ms(fn, runs: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    size = args.size

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "photo_1920x1080.jpg"
        make_photo(path)
        pre = Preprocessor(default_image_steps(size, size, mean=MEAN, std=STD))

        base_ms = median_ms(lambda: baseline(path, size), args.runs)
        ek_ms = median_ms(lambda: pre(path), args.runs)

        # The pictures before normalisation, in grey levels.
        base_px = np.asarray(Image.open(path).convert("RGB").resize((size, size), _BILINEAR)).astype(np.float64)
        raw = Preprocessor(default_image_steps(size, size, layout="nhwc", dtype="uint8"))
        ek_px = raw(path).tensor[0].astype(np.float64)
        diff = np.abs(base_px - ek_px)

        # And the normalised tensors, in normalised units (what the model sees).
        t_diff = np.abs(baseline(path, size) - pre(path).tensor[0])

        print(f"image: {path.stat().st_size / 1024:.0f} KiB JPEG 1920x1080 -> {size}x{size}, median of {args.runs} runs")
        print(f"baseline (PIL full decode + resize + numpy normalize): {base_ms:.2f} ms")
        print(f"edgekit Preprocessor (draft decode + fused normalize): {ek_ms:.2f} ms")
        print(f"speedup: {base_ms / ek_ms:.2f}x (target >= 2x)")
        print(f"mean abs pixel difference: {diff.mean():.3f} grey levels (target <= 2)")
        print(f"max abs pixel difference: {diff.max():.0f} grey levels")
        print(f"mean abs tensor difference after normalize: {t_diff.mean():.4f}")


if __name__ == "__main__":
    main()

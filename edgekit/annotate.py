"""Draw a result on its image: boxes with labels for detections, text boxes as outlines, a coloured overlay
for masks.

Device side: Pillow and numpy only.  Used by ``edgekit run --save`` and the
sample apps.  The image is the original one (EXIF orientation applied, as the
preprocessing does), so boxes and masks in original coordinates land where
they belong.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from .errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")

#: a colour per class id, distinguishable on photos (Tableau 10)
PALETTE: Tuple[Tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)


def color(class_id: int) -> Tuple[int, int, int]:
    return PALETTE[int(class_id) % len(PALETTE)]


def open_rgb(source: Union[str, Path, Image.Image, np.ndarray]) -> Image.Image:
    """The image as the model's preprocessing saw it before resizing: RGB, EXIF-upright."""
    if isinstance(source, Image.Image):
        return source.convert("RGB")
    if isinstance(source, np.ndarray):
        if source.dtype != np.uint8 or source.ndim not in (2, 3):
            raise InputError(f"annotate: expected an HxW or HxWxC uint8 array, got {source.dtype} {source.shape}")
        return Image.fromarray(source).convert("RGB")
    with Image.open(source) as im:
        return ImageOps.exif_transpose(im).convert("RGB")


def draw_detections(image: Image.Image, detections: Sequence[Any], *, width: Optional[int] = None) -> Image.Image:
    """A copy of ``image`` with each detection's box and ``label score`` drawn."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    lw = width or max(2, round(min(out.size) / 200))
    for d in detections:
        x0, y0, x1, y1 = (float(v) for v in d.box)
        c = color(d.class_id)
        draw.rectangle((x0, y0, x1, y1), outline=c, width=lw)
        text = f"{d.label if d.label is not None else d.class_id} {d.score:.2f}"
        tx0, ty0, tx1, ty1 = draw.textbbox((x0, y0), text)
        ty = y0 - (ty1 - ty0) - 2 * lw if y0 - (ty1 - ty0) - 2 * lw >= 0 else y0
        draw.rectangle((x0, ty, x0 + (tx1 - tx0) + 2 * lw, ty + (ty1 - ty0) + 2 * lw), fill=c)
        draw.text((x0 + lw, ty + lw - (ty0 - y0)), text, fill=(255, 255, 255))
    return out


def draw_text_boxes(image: Image.Image, boxes: Sequence[Any], *, width: Optional[int] = None) -> Image.Image:
    """A copy of ``image`` with each text box's four corners joined (a text-detect result)."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    lw = width or max(1, round(min(out.size) / 300))
    for b in boxes:
        pts = [(float(x), float(y)) for x, y in b.points]
        draw.line(pts + pts[:1], fill=PALETTE[3], width=lw)
    return out


def draw_mask(image: Image.Image, mask: np.ndarray, *, alpha: float = 0.45, background: int = 0) -> Image.Image:
    """A copy of ``image`` with every class but ``background`` tinted in its colour.

    A mask at another resolution than the image (model resolution) is scaled
    to it with nearest-neighbour; ``-1`` (pixels the model never saw) stays untinted.
    """
    m = np.asarray(mask)
    if m.ndim != 2:
        raise InputError(f"annotate: expected an (H, W) mask, got shape {m.shape}")
    if (m.shape[1], m.shape[0]) != image.size:
        m = np.asarray(Image.fromarray(m.astype(np.int32)).resize(image.size, Image.NEAREST))  # int32 → mode "I"
    rgb = np.asarray(image, dtype=np.float32).copy()
    for cid in np.unique(m):
        if cid < 0 or cid == background:
            continue
        sel = m == cid
        rgb[sel] = (1 - alpha) * rgb[sel] + alpha * np.asarray(color(int(cid)), np.float32)
    return Image.fromarray(np.clip(rgb + 0.5, 0, 255).astype(np.uint8))


def annotate(source: Any, result: Any) -> Image.Image:
    """``source`` (path, PIL image or uint8 array) with ``result`` (detections, text boxes or mask) drawn on it."""
    image = open_rgb(source)
    if hasattr(result, "detections"):
        return draw_detections(image, result.detections)
    if hasattr(result, "mask"):
        return draw_mask(image, result.mask)
    if hasattr(result, "boxes"):  # text boxes
        return draw_text_boxes(image, result.boxes)
    top = getattr(result, "top", None)
    if top:  # a classification: its best guess in the corner
        out = image.copy()
        best = top[0]
        ImageDraw.Draw(out).text((4, 4), f"{best.label if best.label is not None else best.index} {best.score:.2f}",
                                 fill=(255, 0, 0))
        return out
    raise InputError("nothing to draw: --save of an image needs a classify, detect, segment or text-detect package; "
                     "save raw outputs to an .npz instead")

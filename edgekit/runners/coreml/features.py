"""Manifest tensors ↔ Core ML features: names, and what an image input is fed.

A package's manifest describes its inputs as the preprocessed tensors the
pipeline verified (NCHW float32).  When the ``.mlpackage`` takes a Core ML
*image* input instead (the target folded a plain scale/bias normalization
into it, ``manifest.details.image_input``), the device passes a pixel buffer
and Core ML computes ``pixel * scale + bias[c]`` itself.  A runner fed the
manifest tensor therefore recovers the pixels, ``(tensor - bias[c]) / scale``.
For a tensor the package's own preprocessing made from an 8-bit image these
are that image's pixels (integers up to float rounding), so the package
computes what the device computes.  The reference executor passes them on
unrounded, so any tensor (the random ones a build without data verifies
with, too) runs through the program as given; Core ML itself takes an 8-bit
image, so the macOS runner rounds and clips them to 0..255.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from ...errors import InputError, ModelError
from ...manifest import Manifest


def io_names(manifest: Manifest, inputs: Sequence[str], outputs: Sequence[str]) -> Tuple[Dict[str, str], Dict[str, str]]:
    """Manifest tensor name → Core ML feature name: the names the target recorded, else by position."""
    recorded: Any = getattr(manifest.details, "io_names", None)
    if recorded is None:  # packages from before the typed details kept them in ``extra``
        recorded = (getattr(manifest.details, "extra", None) or {}).get("io_names")
    rec_in: Mapping[str, str] = (recorded or {}).get("inputs", {}) if recorded else {}
    rec_out: Mapping[str, str] = (recorded or {}).get("outputs", {}) if recorded else {}
    if len(inputs) != len(manifest.inputs) or len(outputs) != len(manifest.outputs):
        raise ModelError(
            f"the Core ML program has {len(inputs)} inputs / {len(outputs)} outputs, the manifest lists "
            f"{len(manifest.inputs)} / {len(manifest.outputs)}; the package does not match its model (rebuild it)")
    in_map = {t.name: rec_in.get(t.name, inputs[i]) for i, t in enumerate(manifest.inputs)}
    out_map = {t.name: rec_out.get(t.name, outputs[i]) for i, t in enumerate(manifest.outputs)}
    return in_map, out_map


class ImageFeed:
    """Turns the manifest tensor of an image input back into the pixels Core ML is given."""

    def __init__(self, details: Any) -> None:
        self.input: str = details.input
        self.color_layout: str = details.color_layout
        self.scale = float(details.scale)
        self.bias = np.asarray(details.bias, np.float64)
        self.size = (int(details.height), int(details.width))

    @classmethod
    def of(cls, manifest: Manifest) -> Optional["ImageFeed"]:
        img = getattr(manifest.details, "image_input", None)
        return None if img is None else cls(img)

    def pixels(self, tensor: np.ndarray) -> np.ndarray:
        """[1, C, H, W] pixels (float32, unrounded) in ``color_layout`` channel order."""
        x = np.asarray(tensor, np.float64)
        channels = 1 if self.color_layout == "GRAYSCALE" else 3
        if x.ndim != 4 or x.shape[1] != channels or x.shape[2:] != self.size:
            raise InputError(f"{self.input}: the Core ML image input takes [1, {channels}, {self.size[0]}, "
                             f"{self.size[1]}], got {list(x.shape)}")
        return ((x - self.bias.reshape(1, -1, 1, 1)) / self.scale).astype(np.float32)

    def pil_image(self, tensor: np.ndarray) -> Any:
        """The pixels as a PIL image (what coremltools' ``predict`` takes for an image input)."""
        from PIL import Image

        px = np.clip(np.rint(self.pixels(tensor)[0]), 0, 255).astype(np.uint8)  # an 8-bit pixel buffer
        if self.color_layout == "GRAYSCALE":
            return Image.fromarray(px[0], mode="L")
        hwc = np.transpose(px, (1, 2, 0))
        if self.color_layout == "BGR":  # Core ML converts the RGB image to the model's BGR itself
            hwc = hwc[..., ::-1]
        return Image.fromarray(np.ascontiguousarray(hwc), mode="RGB")

"""When the model takes a Core ML image input, and with which scale and bias.

Core ML's image input (``ct.ImageType``) computes ``pixel * scale + bias[c]``
from the pixel buffer an app passes: ONE scale for every channel, a bias per
channel, in RGB, BGR or grayscale.  So the package's preprocessing folds into
it exactly when it is a plain scale/bias normalization: an image (color,
resize) made into a float32 NCHW tensor whose ``normalize`` step has the same
``scale / std`` on every channel (``y = x * a + b[c]``).  Anything else — a
per-channel std (ImageNet's), NHWC, integer or fp16 tensors, several inputs —
keeps a tensor input, and :func:`plan_image_input` says why.

The manifest's input stays the preprocessed tensor the pipeline verifies
with; the runners recover the pixels from it (``edgekit.runners.coreml.features``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np

from edgekit.preprocess import Color, ColorMode, Dtype, Layout, LayoutOrder, Normalize, Resize, TensorDtype

#: relative difference under which the channels' scales count as one scale
_SAME_SCALE = 1e-6


@dataclass(frozen=True)
class ImagePlan:
    """The image input of one model input: Core ML color layout, scale, bias, size."""

    input: str  #: the ONNX / manifest input name
    color_layout: str  #: RGB | BGR | GRAYSCALE (``ct.colorlayout`` names)
    scale: float
    bias: Tuple[float, ...]
    height: int
    width: int

    def image_type(self, feature: str, shape: Any = None) -> Any:
        """``ct.ImageType`` of this input; ``shape`` overrides the static one (``ct.EnumeratedShapes``)."""
        import coremltools as ct

        channels = 1 if self.color_layout == "GRAYSCALE" else 3
        bias: Union[float, list] = self.bias[0] if channels == 1 else list(self.bias)
        if shape is None:
            shape = (1, channels, self.height, self.width)
        return ct.ImageType(name=feature, shape=shape, scale=self.scale,
                            bias=bias, color_layout=getattr(ct.colorlayout, self.color_layout))

    def to_details(self, feature: str) -> dict:
        return {"input": self.input, "feature": feature, "color_layout": self.color_layout, "scale": self.scale,
                "bias": list(self.bias), "height": self.height, "width": self.width}


def plan_image_input(steps: Sequence[Any], inputs: Sequence[Tuple[str, Sequence[int]]]) -> Tuple[Optional[ImagePlan], str]:
    """(the image input, "") when the preprocessing folds into one, else (None, why not)."""
    steps = tuple(steps)
    if not any(isinstance(s, (Color, Resize)) for s in steps):
        return None, "the preprocessing is not an image pipeline (no color/resize step)"
    if len(inputs) != 1:
        return None, f"the model has {len(inputs)} inputs; a Core ML image input is made for a single image input"
    name, shape = inputs[0]
    find = lambda kind: next((s for s in steps if isinstance(s, kind)), None)  # noqa: E731
    layout, dtype = find(Layout), find(Dtype)
    if layout is None or layout.order is not LayoutOrder.NCHW:
        return None, "the tensor is NHWC; Core ML image inputs feed NCHW"
    if dtype is not None and (dtype.dtype is not TensorDtype.FLOAT32 or dtype.quantized):
        return None, f"the tensor is {dtype.dtype.value}; Core ML image inputs make float32"
    color = find(Color)
    mode = color.mode if color is not None else ColorMode.RGB
    channels = 1 if mode is ColorMode.GRAY else 3
    if len(shape) != 4 or int(shape[0]) != 1 or int(shape[1]) != channels:
        return None, f"input {name!r} is {list(shape)}, not [1, {channels}, H, W]"
    norm = find(Normalize) or Normalize(mean=(0.0,), std=(1.0,), scale=1.0)
    a, b = norm.coefficients(channels)
    if np.max(np.abs(a - a[0])) > _SAME_SCALE * abs(a[0]):
        return None, (f"the normalization scales the channels differently ({', '.join(f'{v:.6g}' for v in a)}); "
                      "a Core ML image input has one scale for all channels")
    layout_name = {ColorMode.RGB: "RGB", ColorMode.BGR: "BGR", ColorMode.GRAY: "GRAYSCALE"}[mode]
    return ImagePlan(input=name, color_layout=layout_name, scale=float(a[0]), bias=tuple(float(v) for v in b),
                     height=int(shape[2]), width=int(shape[3])), ""

"""Declarative preprocessing: one implementation for calibration, verification and the device.

A model's preprocessing is a short tuple of frozen, validated steps::

    Color(rgb|bgr|gray) -> Resize(H, W, stretch|letterbox|crop, interpolation)
        -> Normalize(mean, std, scale) -> Layout(nchw|nhwc) -> Dtype(float32|float16|uint8|int8)

stored in the package manifest as JSON (:func:`steps_to_json` / :func:`steps_from_json`)
and executed by :class:`Preprocessor`, which also records the geometric
:class:`Transform` so that detections map back onto the original image.

Device side: only numpy and Pillow, Python 3.9+, numpy 1.21 .. 2.x.

How the work is split, and why:

* Decoding, colour conversion and resampling happen in Pillow on uint8 data (its
  resamplers are antialiased, fast C, and identical on every platform we ship to).
  A JPEG that will be downscaled is decoded in draft mode: libjpeg's DCT scaling
  produces a 1/2, 1/4 or 1/8 size image directly, which is several times faster
  than a full decode plus resize, and the draft size is chosen so the decoded image
  is never smaller than what the resize needs (no detail is lost that the resize
  would have kept).
* Everything after the resize is a handful of numpy ops: the normalisation
  ``(x * scale - mean) / std`` is folded into one multiply-add ``x * a + b``
  (and, for a quantized input, the quantization ``y / s + zp`` is folded into the
  same ``a`` and ``b``), computed straight into the final contiguous layout.
"""
from __future__ import annotations

import enum
import io
import math
import numbers
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

from ._validate import choices, coerce_enum
from ._record import record
from .errors import ConfigError, InputError, ManifestError

__all__ = [
    "ColorMode",
    "ResizeMode",
    "Interpolation",
    "LayoutOrder",
    "TensorDtype",
    "Color",
    "Resize",
    "Normalize",
    "Layout",
    "Dtype",
    "Step",
    "Transform",
    "Preprocessed",
    "Preprocessor",
    "preprocess",
    "steps_to_json",
    "steps_from_json",
    "default_image_steps",
    "quantize_into",
    "draft_request",
    "KNOWN_OPS",
]


def _pil() -> Any:
    """``PIL.Image``, imported on the first image this process decodes or resizes.

    Not at import: Pillow costs a device service 15-60 ms at every start, and a
    model fed tensors (or arrays at the model's size) never needs it.
    """
    from PIL import Image

    return Image


def _pil_image_type() -> Optional[type]:
    """``PIL.Image.Image`` if Pillow is loaded; a PIL image cannot exist before that, so nothing is imported."""
    module = sys.modules.get("PIL.Image")
    return None if module is None else module.Image


def _resampling(name: str) -> int:
    # Pillow >= 9.1 moved the filter / transpose constants into enums; 9.0 only has
    # the module-level names.  Both spellings resolve to the same integers.
    image = _pil()
    return getattr(getattr(image, "Resampling", image), name)


def _transpose(im: Image.Image, orientation: int) -> Image.Image:
    image = _pil()
    return im.transpose(getattr(getattr(image, "Transpose", image), _EXIF_TRANSPOSE[orientation]))


# -- device-side input limits (a hostile or careless input costs one line, not the device's memory) --
#: decoded pixels allowed per image; below Pillow's own bomb guard (~89 MP warns, ~179 MP refuses), since
#: a 12000x12000 PNG of 420 KB would otherwise cost ~800 MB.  EDGEKIT_MAX_IMAGE_PIXELS overrides it.
MAX_IMAGE_PIXELS = 50_000_000
#: bytes a .npy tensor may claim before it is allocated; EDGEKIT_MAX_TENSOR_BYTES overrides it
MAX_TENSOR_BYTES = 1 << 30


def _env_limit(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
        if value <= 0:
            raise ValueError
    except ValueError:
        raise ConfigError(f'"{name}" must be a positive integer, but got {raw!r}') from None
    return value


def _check_pixels(size: Tuple[int, int], name: str) -> None:
    limit = _env_limit("EDGEKIT_MAX_IMAGE_PIXELS", MAX_IMAGE_PIXELS)
    if size[0] * size[1] > limit:
        raise InputError(
            f"{name} is {size[0]}x{size[1]} = {size[0] * size[1]} pixels, over the limit of {limit}; "
            "downscale it first, or raise EDGEKIT_MAX_IMAGE_PIXELS"
        )


def _check_npy_header(fp: Any, name: str) -> None:
    """Read a .npy header and refuse, before numpy allocates, a shape larger than the limit or than the data."""
    from numpy.lib import format as npf

    start = fp.tell()
    try:
        version = npf.read_magic(fp)
        if version == (1, 0):
            shape, _fortran, dtype = npf.read_array_header_1_0(fp)
        elif version in ((2, 0), (3, 0)):
            shape, _fortran, dtype = npf.read_array_header_2_0(fp)
        else:
            raise ValueError(f"unsupported .npy version {version}")
        header_end = fp.tell()
        fp.seek(0, os.SEEK_END)
        available = fp.tell() - header_end
    except (ValueError, OSError, EOFError, SyntaxError, TypeError, OverflowError) as exc:
        raise InputError(f"{name} is not a readable .npy tensor ({exc}); save it with numpy.save") from None
    fp.seek(start)
    if dtype.hasobject:
        raise InputError(f"{name} holds Python objects; only numeric .npy tensors are read (never unpickled)")
    count = 1
    for d in shape:
        count *= int(d)
    need = count * dtype.itemsize
    limit = _env_limit("EDGEKIT_MAX_TENSOR_BYTES", MAX_TENSOR_BYTES)
    if need > limit:
        raise InputError(f"{name} claims shape {tuple(shape)} ({need} bytes), over the limit of {limit}; "
                         "pass a smaller tensor, or raise EDGEKIT_MAX_TENSOR_BYTES")
    if need > available:
        raise InputError(f"{name} claims shape {tuple(shape)} ({need} bytes) but holds {available}; "
                         "the file is truncated — save it again with numpy.save")


# --------------------------------------------------------------------------- enums


class ColorMode(str, enum.Enum):
    """Channel order / count of the model input image."""

    RGB = "rgb"
    BGR = "bgr"
    GRAY = "gray"


class ResizeMode(str, enum.Enum):
    """How the image is fitted to the model input size."""

    STRETCH = "stretch"  # scale each axis independently; aspect ratio not kept
    LETTERBOX = "letterbox"  # keep aspect, fit inside, pad the rest (image centred)
    CROP = "crop"  # keep aspect, cover the target, centre-crop the overflow


class Interpolation(str, enum.Enum):
    """Resampling filter."""

    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    AREA = "area"


class LayoutOrder(str, enum.Enum):
    """Memory layout of the output tensor (always with a batch dimension of 1)."""

    NCHW = "nchw"
    NHWC = "nhwc"


class TensorDtype(str, enum.Enum):
    """Element type of the output tensor."""

    FLOAT32 = "float32"
    FLOAT16 = "float16"
    UINT8 = "uint8"
    INT8 = "int8"


_INT_RANGES = {TensorDtype.UINT8: (0, 255), TensorDtype.INT8: (-128, 127)}
_NP_DTYPES = {
    TensorDtype.FLOAT32: np.float32,
    TensorDtype.FLOAT16: np.float16,
    TensorDtype.UINT8: np.uint8,
    TensorDtype.INT8: np.int8,
}


# --------------------------------------------------------------------------- validation helpers


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _positive_int(field: str, value: Any) -> int:
    if not _is_int(value) or int(value) <= 0:
        raise ConfigError(f'"{field}" must be a positive integer, but got {value!r}')
    return int(value)


def _positive_float(field: str, value: Any) -> float:
    if not _is_number(value) or not math.isfinite(float(value)) or float(value) <= 0:
        raise ConfigError(f'"{field}" must be a positive finite number, but got {value!r}')
    return float(value)


def _float_tuple(field: str, value: Any, positive: bool = False) -> Tuple[float, ...]:
    if _is_number(value):
        value = (value,)
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) == 0:
        raise ConfigError(f'"{field}" must be a non-empty sequence of numbers, but got {value!r}')
    out = []
    for v in value:
        if not _is_number(v) or not math.isfinite(float(v)) or (positive and float(v) <= 0):
            kind = "positive finite numbers" if positive else "finite numbers"
            raise ConfigError(f'"{field}" must be {kind}, but got {tuple(value)!r}')
        out.append(float(v))
    return tuple(out)


# --------------------------------------------------------------------------- steps


@record
class Color:
    """Convert the image to RGB, BGR or single-channel gray (ITU-R 601 luma, as Pillow's "L")."""

    mode: ColorMode = ColorMode.RGB

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", coerce_enum(self.mode, ColorMode, "mode"))

    @property
    def channels(self) -> int:
        return 1 if self.mode is ColorMode.GRAY else 3


@record
class Resize:
    """Resize to ``height`` x ``width`` model-input pixels.

    ``pad_value`` (0..255, all channels) fills the letterbox borders; 114 is the
    grey YOLO-family detectors are trained with.
    """

    height: int
    width: int
    mode: ResizeMode = ResizeMode.STRETCH
    interpolation: Interpolation = Interpolation.BILINEAR
    pad_value: int = 114

    def __post_init__(self) -> None:
        object.__setattr__(self, "height", _positive_int("height", self.height))
        object.__setattr__(self, "width", _positive_int("width", self.width))
        object.__setattr__(self, "mode", coerce_enum(self.mode, ResizeMode, "mode"))
        object.__setattr__(
            self, "interpolation", coerce_enum(self.interpolation, Interpolation, "interpolation")
        )
        if not _is_int(self.pad_value) or not 0 <= int(self.pad_value) <= 255:
            raise ConfigError(f'"pad_value" must be an integer in 0..255, but got {self.pad_value!r}')
        object.__setattr__(self, "pad_value", int(self.pad_value))

    @property
    def size(self) -> Tuple[int, int]:
        """(height, width)."""
        return (self.height, self.width)


@record
class Normalize:
    """``y = (x * scale - mean) / std`` per channel, ``x`` the 0..255 pixel.

    ``mean`` / ``std`` have one value per channel, or one value for all channels.
    """

    mean: Tuple[float, ...] = (0.0,)
    std: Tuple[float, ...] = (1.0,)
    scale: float = 1.0 / 255.0

    def __post_init__(self) -> None:
        mean = _float_tuple("mean", self.mean)
        std = _float_tuple("std", self.std, positive=True)
        if len(mean) > 1 and len(std) > 1 and len(mean) != len(std):
            raise ConfigError(
                f'"mean" and "std" must have the same length (or length 1), '
                f"but got {len(mean)} and {len(std)}"
            )
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "scale", _positive_float("scale", self.scale))

    def coefficients(self, channels: int) -> Tuple[np.ndarray, np.ndarray]:
        """Per-channel float64 ``(a, b)`` with ``y = x * a + b``; InputError on a count mismatch."""
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, channels):
                raise InputError(
                    f"normalize has {len(values)} {name} values but the image has {channels} "
                    f"channel{'s' if channels != 1 else ''}; give 1 or {channels} {name} values, "
                    f"or change the color step"
                )
        mean = np.broadcast_to(np.asarray(self.mean, dtype=np.float64), (channels,))
        std = np.broadcast_to(np.asarray(self.std, dtype=np.float64), (channels,))
        # Fold in float64, store float32: one rounding instead of three per pixel.
        return self.scale / std, -mean / std


@record
class Layout:
    """Output layout; the output always gets a leading batch dimension of 1."""

    order: LayoutOrder = LayoutOrder.NCHW

    def __post_init__(self) -> None:
        object.__setattr__(self, "order", coerce_enum(self.order, LayoutOrder, "order"))


@record
class Dtype:
    """Output element type.

    For ``uint8`` / ``int8`` with ``scale`` the (normalized) value ``y`` is quantized:
    ``q = clip(round_half_even(y / scale) + zero_point)`` (ONNX QuantizeLinear rounding).
    ``uint8`` without ``scale`` keeps the raw 0..255 pixels (no Normalize allowed).
    """

    dtype: TensorDtype = TensorDtype.FLOAT32
    scale: Optional[float] = None
    zero_point: Optional[int] = None

    def __post_init__(self) -> None:
        value = self.dtype
        if isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic)):
            value = np.dtype(value).name
        dtype = coerce_enum(value, TensorDtype, "dtype")
        object.__setattr__(self, "dtype", dtype)
        if self.scale is None:
            if self.zero_point is not None:
                raise ConfigError(f'"zero_point" needs "scale", but got scale=None, zero_point={self.zero_point!r}')
            return
        if dtype not in _INT_RANGES:
            raise ConfigError(
                f'"scale" applies only to integer dtypes {{\'uint8\', \'int8\'}}, but got dtype {dtype.value!r}'
            )
        object.__setattr__(self, "scale", _positive_float("scale", self.scale))
        zp = 0 if self.zero_point is None else self.zero_point
        lo, hi = _INT_RANGES[dtype]
        if not _is_int(zp) or not lo <= int(zp) <= hi:
            raise ConfigError(f'"zero_point" must be an integer in {lo}..{hi} for {dtype.value}, but got {zp!r}')
        object.__setattr__(self, "zero_point", int(zp))

    @property
    def quantized(self) -> bool:
        return self.scale is not None


Step = Union[Color, Resize, Normalize, Layout, Dtype]

_STEP_OPS: Dict[type, str] = {Color: "color", Resize: "resize", Normalize: "normalize", Layout: "layout", Dtype: "dtype"}
KNOWN_OPS: Tuple[str, ...] = tuple(_STEP_OPS.values())
_IMAGE_STEPS = (Color, Resize)
_TENSOR_STEPS = (Normalize, Layout, Dtype)


def _image_channels(steps: Sequence[Step]) -> int:
    for step in steps:
        if isinstance(step, Color):
            return step.channels
    return 3  # images are converted to RGB unless a color step says otherwise


def _check_steps(steps: Sequence[Any]) -> None:
    """Ordering and combination rules; ConfigError naming the offending step index."""
    seen: Dict[type, int] = {}
    first_tail: Optional[int] = None
    for i, step in enumerate(steps):
        kind = type(step)
        if kind not in _STEP_OPS:
            raise ConfigError(
                f"steps[{i}] must be a Color, Resize, Normalize, Layout or Dtype step, but got "
                f"{type(step).__name__}" + (" (use steps_from_json for JSON dicts)" if isinstance(step, dict) else "")
            )
        op = _STEP_OPS[kind]
        if kind in seen:
            raise ConfigError(f"steps[{i}]: more than one {op} step (the first is steps[{seen[kind]}])")
        seen[kind] = i
        if kind in _IMAGE_STEPS and first_tail is not None:
            raise ConfigError(
                f"steps[{i}]: {op} must come before normalize, layout and dtype "
                f"(found after {_STEP_OPS[type(steps[first_tail])]} at steps[{first_tail}])"
            )
        if kind in _TENSOR_STEPS and first_tail is None:
            first_tail = i
        if kind is Normalize and Dtype in seen:
            raise ConfigError(f"steps[{i}]: normalize must come before dtype (steps[{seen[Dtype]}])")
    dtype = next((s for s in steps if isinstance(s, Dtype)), None)
    if dtype is None or dtype.quantized:
        return
    is_image = Color in seen or Resize in seen
    if dtype.dtype is TensorDtype.UINT8 and Normalize in seen:
        raise ConfigError(
            "dtype uint8 without scale keeps the raw 0..255 pixels, so it cannot follow normalize; "
            "give Dtype a scale and zero_point to quantize, or drop the normalize step"
        )
    if dtype.dtype is TensorDtype.INT8 and is_image:
        raise ConfigError(
            "dtype int8 needs scale and zero_point to quantize image pixels (0..255 does not fit int8); "
            "e.g. Dtype('int8', scale=..., zero_point=...)"
        )


def quantize_into(steps: Sequence[Step], dtype: Any, scale: float, zero_point: int) -> Tuple[Step, ...]:
    """``steps`` ending in the dtype step that quantizes into an integer model input.

    A target may give its artifact an integer input (a full-int8 TFLite model with
    int8 IO) while the user's preprocessing ends in float32: the last dtype step
    (or a new one at the end) becomes ``Dtype(dtype, scale, zero_point)``, so the
    same steps feed the package on the device.  The normalize step is kept: the
    quantization folds into its multiply-add.
    """
    step = Dtype(dtype, scale=scale, zero_point=zero_point)
    steps = tuple(steps)
    at = next((i for i in range(len(steps) - 1, -1, -1) if isinstance(steps[i], Dtype)), None)
    out = steps + (step,) if at is None else steps[:at] + (step,) + steps[at + 1 :]
    _check_steps(out)
    return out


# --------------------------------------------------------------------------- JSON form


def steps_to_json(steps: Sequence[Step]) -> List[Dict[str, Any]]:
    """The manifest form of ``steps``; mean/std are written out per channel."""
    channels = _image_channels(steps)
    out: List[Dict[str, Any]] = []
    for i, step in enumerate(steps):
        if isinstance(step, Color):
            out.append({"op": "color", "mode": step.mode.value})
        elif isinstance(step, Resize):
            out.append(
                {
                    "op": "resize",
                    "size": [step.height, step.width],
                    "mode": step.mode.value,
                    "interpolation": step.interpolation.value,
                    "pad_value": step.pad_value,
                }
            )
        elif isinstance(step, Normalize):
            mean, std = list(step.mean), list(step.std)
            mean = mean * channels if len(mean) == 1 else mean
            std = std * channels if len(std) == 1 else std
            out.append({"op": "normalize", "mean": mean, "std": std, "scale": step.scale})
        elif isinstance(step, Layout):
            out.append({"op": "layout", "order": step.order.value})
        elif isinstance(step, Dtype):
            out.append(
                {"op": "dtype", "dtype": step.dtype.value, "scale": step.scale, "zero_point": step.zero_point}
            )
        else:
            raise ConfigError(f"steps[{i}] must be a Color, Resize, Normalize, Layout or Dtype step, but got {type(step).__name__}")
    return out


_JSON_FIELDS: Dict[str, Tuple[Tuple[str, ...], Tuple[str, ...]]] = {
    # op: (required fields, optional fields)
    "color": (("mode",), ()),
    "resize": (("size",), ("mode", "interpolation", "pad_value")),
    "normalize": (("mean", "std"), ("scale",)),
    "layout": (("order",), ()),
    "dtype": (("dtype",), ("scale", "zero_point")),
}


def _typename(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(type(value), type(value).__name__)


def steps_from_json(data: Any, where: str = "preprocess") -> Tuple[Step, ...]:
    """Parse and validate the manifest form; ManifestError names the exact field path."""
    if not isinstance(data, list):
        raise ManifestError(f"{where}: expected a list of steps, got {_typename(data)}")
    steps: List[Step] = []
    channels = 3
    for i, item in enumerate(data):
        at = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise ManifestError(f'{at}: expected an object with an "op" field, got {_typename(item)}')
        if "op" not in item:
            raise ManifestError(f"{at}.op: missing; known ops: {', '.join(KNOWN_OPS)}")
        op = item["op"]
        if not isinstance(op, str) or op not in _JSON_FIELDS:
            raise ManifestError(f"{at}.op: unknown op {op!r}; known ops: {', '.join(KNOWN_OPS)}")
        required, optional = _JSON_FIELDS[op]
        for key in item:
            if key != "op" and key not in required and key not in optional:
                raise ManifestError(
                    f"{at}: unknown field {key!r} for op {op!r}; known fields: {', '.join(required + optional)}"
                )
        for key in required:
            if key not in item:
                raise ManifestError(f"{at}.{key}: missing (required for op {op!r})")

        def enum_field(key: str, cls: Any, default: Any = None) -> Any:
            value = item.get(key, default)
            if isinstance(value, cls):
                return value
            if not isinstance(value, str) or value not in {m.value for m in cls}:
                raise ManifestError(f"{at}.{key}: expected one of {choices(cls)}, got {value!r}")
            return cls(value)

        def numbers_field(key: str, count: int) -> List[float]:
            value = item[key]
            if not isinstance(value, list) or not all(_is_number(v) for v in value):
                raise ManifestError(
                    f"{at}.{key}: expected a list of {count} number{'s' if count != 1 else ''}, got {value!r}"
                )
            if len(value) != count:
                raise ManifestError(f"{at}.{key}: expected {count} number{'s' if count != 1 else ''}, got {len(value)}")
            return value

        def number_field(key: str, default: Any, integer: bool = False) -> Any:
            value = item.get(key, default)
            if value is None:
                return None
            ok = _is_int(value) if integer else _is_number(value)
            if not ok:
                raise ManifestError(f"{at}.{key}: expected {'an integer' if integer else 'a number'}, got {value!r}")
            return value

        try:
            if op == "color":
                step: Step = Color(enum_field("mode", ColorMode))
                channels = step.channels
            elif op == "resize":
                size = item["size"]
                if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) and v > 0 for v in size)):
                    raise ManifestError(f"{at}.size: expected [height, width] as 2 positive integers, got {size!r}")
                step = Resize(
                    size[0],
                    size[1],
                    mode=enum_field("mode", ResizeMode, "stretch"),
                    interpolation=enum_field("interpolation", Interpolation, "bilinear"),
                    pad_value=number_field("pad_value", 114, integer=True),
                )
            elif op == "normalize":
                scale = number_field("scale", 1.0 / 255.0)
                step = Normalize(
                    tuple(numbers_field("mean", channels)),
                    tuple(numbers_field("std", channels)),
                    1.0 / 255.0 if scale is None else scale,
                )
            elif op == "layout":
                step = Layout(enum_field("order", LayoutOrder))
            else:
                step = Dtype(
                    enum_field("dtype", TensorDtype),
                    scale=number_field("scale", None),
                    zero_point=number_field("zero_point", None, integer=True),
                )
        except ConfigError as exc:  # a value the step itself rejects (std 0, pad 300 ...)
            raise ManifestError(f"{at}: {exc}") from None
        steps.append(step)
    try:
        _check_steps(steps)
    except ConfigError as exc:
        raise ManifestError(f"{where}: {str(exc).replace('steps[', where + '[')}") from None
    return tuple(steps)


def default_image_steps(
    height: int,
    width: int,
    *,
    color: str = "rgb",
    resize: str = "stretch",
    interpolation: str = "bilinear",
    mean: Sequence[float] = (0.0, 0.0, 0.0),
    std: Sequence[float] = (1.0, 1.0, 1.0),
    scale: float = 1.0 / 255.0,
    layout: str = "nchw",
    dtype: str = "float32",
    quant_scale: Optional[float] = None,
    zero_point: Optional[int] = None,
) -> Tuple[Step, ...]:
    """The usual image pipeline, from CLI-style options.

    ``dtype="uint8"`` without ``quant_scale`` feeds raw pixels (no normalize step;
    mean/std must be left at their defaults).  A quantized input takes
    ``quant_scale`` / ``zero_point`` (the model input's quantization parameters).
    """
    color_step = Color(color)  # type: ignore[arg-type]
    mean_t = _float_tuple("mean", mean)
    std_t = _float_tuple("std", std, positive=True)
    if color_step.mode is ColorMode.GRAY:
        # The (0, 0, 0) / (1, 1, 1) defaults mean "the same for every channel": one gray value.
        if len(set(mean_t)) == 1:
            mean_t = mean_t[:1]
        if len(set(std_t)) == 1:
            std_t = std_t[:1]
    steps: List[Step] = [color_step, Resize(height, width, mode=resize, interpolation=interpolation)]  # type: ignore[arg-type]
    dtype_step = Dtype(dtype, scale=quant_scale, zero_point=zero_point)  # type: ignore[arg-type]
    raw_pixels = dtype_step.dtype is TensorDtype.UINT8 and not dtype_step.quantized
    if raw_pixels:
        if set(mean_t) != {0.0} or set(std_t) != {1.0}:
            raise ConfigError(
                "dtype uint8 without a quantization scale feeds raw 0..255 pixels, so mean/std cannot apply; "
                "pass quant_scale/zero_point to quantize, or leave mean/std at their defaults"
            )
    else:
        steps.append(Normalize(mean_t, std_t, scale))
    steps.append(Layout(layout))  # type: ignore[arg-type]
    steps.append(dtype_step)
    _check_steps(steps)
    return tuple(steps)


# --------------------------------------------------------------------------- geometry


@record
class Transform:
    """Where the model-input pixels came from in the original image.

    A point in the original image maps to the model input as
    ``x_in = x_orig * scale[0] - crop[0] + pad[0]`` (same for y), i.e. the image is
    scaled, then ``crop`` (in scaled pixels) is cut off the left/top, then ``pad``
    (model-input pixels) is added on the left/top.  Sizes are (width, height).
    ``original_size`` is None for tensors (no image, nothing to clip to).
    """

    original_size: Optional[Tuple[int, int]] = None
    scale: Tuple[float, float] = (1.0, 1.0)
    pad: Tuple[float, float] = (0.0, 0.0)
    crop: Tuple[float, float] = (0.0, 0.0)
    input_size: Optional[Tuple[int, int]] = None

    @classmethod
    def identity(cls, original_size: Optional[Tuple[int, int]] = None) -> "Transform":
        return cls(original_size=original_size, input_size=original_size)

    @staticmethod
    def _boxes(boxes: Any) -> Tuple[np.ndarray, Any]:
        arr = np.asarray(boxes)
        if arr.ndim == 0 or arr.shape[-1] != 4:
            raise InputError(f"boxes must have shape (N, 4) as x1, y1, x2, y2, but got shape {arr.shape}")
        out_dtype = arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.dtype(np.float32)
        return np.array(arr, dtype=np.float64), out_dtype

    def to_original(self, boxes: Any) -> np.ndarray:
        """Map ``(N, 4)`` xyxy boxes in model-input pixels to original-image pixels (clipped)."""
        b, out_dtype = self._boxes(boxes)
        sx, sy = self.scale
        b[..., 0::2] = (b[..., 0::2] - self.pad[0] + self.crop[0]) / sx
        b[..., 1::2] = (b[..., 1::2] - self.pad[1] + self.crop[1]) / sy
        if self.original_size is not None:
            w, h = self.original_size
            np.clip(b[..., 0::2], 0.0, float(w), out=b[..., 0::2])
            np.clip(b[..., 1::2], 0.0, float(h), out=b[..., 1::2])
        return b.astype(out_dtype, copy=False)

    def mask_to_original(self, mask: Any) -> np.ndarray:
        """Map an ``(H, W)`` class-id mask from the model's output onto the original image.

        Nearest neighbour (class ids do not interpolate), through the same geometry as
        :meth:`to_original`: each original pixel centre goes to the model input, then to
        the mask, which is taken to cover the whole model input (a head at 1/4 or 1/8 of
        the input resolution works the same).  Letterbox borders drop out; original pixels
        the model never saw (outside a centre crop) are ``-1``.  Without an image
        (tensor inputs) the mask comes back unchanged.
        """
        m = np.asarray(mask)
        if m.ndim != 2 or m.shape[0] == 0 or m.shape[1] == 0:
            raise InputError(f"a mask must be a non-empty (H, W) array of class ids, but got shape {m.shape}")
        if self.original_size is None or self.input_size is None:
            return m
        (w0, h0), (w_in, h_in) = self.original_size, self.input_size

        def axis(n0: int, scale: float, crop: float, pad: float, n_in: int, n_mask: int) -> Tuple[np.ndarray, np.ndarray]:
            centres = (np.arange(n0, dtype=np.float64) + 0.5) * scale - crop + pad  # model-input pixels
            idx = np.floor(centres * (n_mask / n_in)).astype(np.intp)
            seen = (idx >= 0) & (idx < n_mask)
            return np.clip(idx, 0, n_mask - 1), seen

        xs, x_seen = axis(w0, self.scale[0], self.crop[0], self.pad[0], w_in, m.shape[1])
        ys, y_seen = axis(h0, self.scale[1], self.crop[1], self.pad[1], h_in, m.shape[0])
        out = m[ys[:, None], xs[None, :]]
        if not (x_seen.all() and y_seen.all()):
            out = out.astype(np.int32)
            out[~y_seen, :] = -1
            out[:, ~x_seen] = -1
        return out

    def to_input(self, boxes: Any) -> np.ndarray:
        """The forward map (original pixels -> model-input pixels), unclipped."""
        b, out_dtype = self._boxes(boxes)
        b[..., 0::2] = b[..., 0::2] * self.scale[0] - self.crop[0] + self.pad[0]
        b[..., 1::2] = b[..., 1::2] * self.scale[1] - self.crop[1] + self.pad[1]
        return b.astype(out_dtype, copy=False)


class _Geometry(NamedTuple):
    box: Tuple[float, float, float, float]  # source region, original pixels
    size: Tuple[int, int]  # (w, h) the region is resampled to
    offset: Tuple[int, int]  # where it lands in the output (letterbox padding)
    canvas: Tuple[int, int]  # (W, H) output
    transform: Transform


def _geometry(original: Tuple[int, int], resize: Resize) -> _Geometry:
    w0, h0 = original
    W, H = resize.width, resize.height
    full = (0.0, 0.0, float(w0), float(h0))
    if resize.mode is ResizeMode.STRETCH:
        t = Transform(original, (W / w0, H / h0), input_size=(W, H))
        return _Geometry(full, (W, H), (0, 0), (W, H), t)
    if resize.mode is ResizeMode.LETTERBOX:
        s = min(W / w0, H / h0)
        nw = min(W, max(1, int(round(w0 * s))))
        nh = min(H, max(1, int(round(h0 * s))))
        left, top = (W - nw) // 2, (H - nh) // 2
        t = Transform(original, (nw / w0, nh / h0), pad=(float(left), float(top)), input_size=(W, H))
        return _Geometry(full, (nw, nh), (left, top), (W, H), t)
    # CROP: scale so the target is covered, take the centred W x H window.  The window
    # is resampled straight from the source region (Pillow's resize box), which is
    # exact to the sub-pixel and never resamples pixels that are then thrown away.
    s = max(W / w0, H / h0)
    cw, ch = W / s, H / s
    # max(0, ...): W / (W / w0) can round to a hair above w0, and Pillow refuses a negative box
    left, top = max(0.0, (w0 - cw) / 2.0), max(0.0, (h0 - ch) / 2.0)
    t = Transform(original, (s, s), crop=(left * s, top * s), input_size=(W, H))
    return _Geometry((left, top, left + cw, top + ch), (W, H), (0, 0), (W, H), t)


def draft_request(original_size: Tuple[int, int], resize: Resize) -> Optional[Tuple[int, int]]:
    """The smallest (width, height) a downscaled JPEG decode may have without losing
    what ``resize`` keeps, or None when it is not downscaled by 2x or more (no DCT
    scale would apply; the JPEG is decoded at full size).

    stretch: both target dims; letterbox: the scaled image dims; crop: the whole image
    scaled so it covers the target (its shorter side stays >= the target).  Pillow's
    ``draft`` picks the largest DCT scale 1/8, 1/4, 1/2 whose output is still >= this.
    """
    w0, h0 = original_size
    if resize.mode is ResizeMode.STRETCH:
        need = (resize.width, resize.height)
    else:
        g = _geometry(original_size, resize)
        if resize.mode is ResizeMode.LETTERBOX:
            need = g.size
        else:
            s = g.transform.scale[0]
            need = (min(w0, int(math.ceil(w0 * s - 1e-9))), min(h0, int(math.ceil(h0 * s - 1e-9))))
    if need[0] * 2 > w0 or need[1] * 2 > h0:
        return None  # no DCT scale (>= 2) fits; decode at full size
    return need


def _draft_scale(original_size: Tuple[int, int], need: Tuple[int, int]) -> int:
    """The DCT scale Pillow's JPEG ``draft`` picks for ``need`` (mirrors JpegImagePlugin)."""
    scale = min(original_size[0] // need[0], original_size[1] // need[1])
    for s in (8, 4, 2, 1):
        if scale >= s:
            return s
    return 1


# --------------------------------------------------------------------------- running


class Preprocessed(NamedTuple):
    tensor: np.ndarray
    transform: Transform


# Filters.  "area" is Pillow's BOX filter when downscaling: every output pixel is
# the exact area-weighted mean of the source pixels it covers (OpenCV INTER_AREA).
# Upscaling with BOX would degrade to blocky nearest-neighbour, whereas INTER_AREA
# upscales bilinearly, so "area" uses BILINEAR whenever either axis grows.
# reducing_gap=3.0 (Pillow: "indistinguishable from fair resampling in most cases")
# lets a large downscale of a non-JPEG first box-reduce by an integer factor; it is
# used for the wide bilinear / bicubic kernels, where it pays, not for nearest (where
# it would change the result from point sampling to averaging) nor for area (which
# is a box filter already).
_FILTERS = {
    Interpolation.NEAREST: ("NEAREST", None),
    Interpolation.BILINEAR: ("BILINEAR", 3.0),
    Interpolation.BICUBIC: ("BICUBIC", 3.0),
    Interpolation.AREA: ("BOX", None),
}

_ORIENTATION_TAG = 0x0112
_EXIF_TRANSPOSE = {  # EXIF orientation -> the Pillow transpose that shows the picture upright
    2: "FLIP_LEFT_RIGHT",
    3: "ROTATE_180",
    4: "FLIP_TOP_BOTTOM",
    5: "TRANSPOSE",
    6: "ROTATE_270",
    7: "TRANSVERSE",
    8: "ROTATE_90",
}
_JPEG_FORMATS = ("JPEG", "MPO")
_DECODE_HINT = "pass a JPEG/PNG/BMP/WebP/TIFF image or a .npy tensor"


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # a malformed EXIF block must not make the picture unreadable
        return 1
    return value if value in _EXIF_TRANSPOSE else 1


# Single-channel images deeper than 8 bits.  Pillow's convert("L"/"RGB") clips them to
# 0..255 (a 16-bit PNG turns white, a 0..1 float TIFF black), so they are brought to the
# 0..255 scale the normalize step expects by their real full scale instead, kept as float
# ("F") through the resize.  (16-bit RGB/RGBA PNGs need nothing: Pillow decodes those to
# 8 bits per channel by their high byte, which is the right scale.)
_UNSIGNED_16 = ("I;16", "I;16L", "I;16B", "I;16N")
_HIGH_DEPTH_MODES = _UNSIGNED_16 + ("I;16S", "I;16BS", "I", "F")
_SMIN_SAMPLE_VALUE, _SMAX_SAMPLE_VALUE = 340, 341  # TIFF tags: the data's real range


def _tiff_range(im: Image.Image) -> Optional[Tuple[float, float]]:
    """(SMinSampleValue, SMaxSampleValue) of a TIFF that records them, else None."""
    tags = getattr(im, "tag_v2", None)
    if tags is None or _SMAX_SAMPLE_VALUE not in tags:
        return None

    def first(value: Any) -> float:
        return float(value[0] if isinstance(value, (tuple, list)) else value)

    try:
        lo = first(tags.get(_SMIN_SAMPLE_VALUE, 0))
        hi = first(tags[_SMAX_SAMPLE_VALUE])
    except (TypeError, ValueError, IndexError):
        return None
    return (lo, hi) if math.isfinite(lo) and math.isfinite(hi) and hi > lo else None


def _high_depth(im: Image.Image, name: str) -> Image.Image:
    """A 16-bit or float gray image as float ("F") on the 0..255 scale, by its real range;
    other images unchanged.  InputError (one line) when the range cannot be known."""
    if im.mode not in _HIGH_DEPTH_MODES:
        return im
    recorded = _tiff_range(im)
    if recorded is not None:
        lo, hi, why = recorded[0], recorded[1], "its TIFF SMin/SMaxSampleValue"
    elif im.mode in _UNSIGNED_16 or (im.mode == "I" and im.format == "PNG"):
        # PNG stores 16-bit samples scaled to the full 0..65535 range (older Pillow opens them as "I")
        lo, hi, why = 0.0, 65535.0, "16 bits"
    elif im.mode == "F":
        lo, hi, why = 0.0, 1.0, "the 0..1 convention of float images"
    else:
        raise InputError(
            f"{name} is a {'signed 16-bit' if im.mode in ('I;16S', 'I;16BS') else '32-bit integer'} image "
            f"(mode {im.mode}) with no recorded white level; convert it to 8- or 16-bit unsigned, or to "
            "float 0..1, and pass that"
        )
    arr = np.asarray(im, dtype=np.float64)
    vmin, vmax = (float(np.min(arr)), float(np.max(arr))) if arr.size else (lo, hi)
    if not (math.isfinite(vmin) and math.isfinite(vmax)):
        raise InputError(f"{name} has NaN or infinite pixels; clean the image, or pass an array")
    if vmin < lo or vmax > hi:
        raise InputError(
            f"{name} has values {vmin:g}..{vmax:g}, outside its {lo:g}..{hi:g} range ({why}); "
            "scale it into that range, or convert it to 8 bits yourself; edgekit does not clip images silently"
        )
    return _pil().fromarray(((arr - lo) * (255.0 / (hi - lo))).astype(np.float32))


class Preprocessor:
    """Runs a validated tuple of steps on an image or tensor source.

    Images (a path, encoded bytes, a PIL image, an HWC/HW uint8 array) go through
    color -> resize -> normalize -> layout -> dtype.  Tensors (a ``.npy`` path or
    ``.npy`` bytes, or any other array) skip the image steps; only the dtype step
    applies.  EXIF orientation is applied to decoded and PIL images, so boxes come
    back in the orientation a viewer shows.  Images are RGB unless a color step
    says otherwise; an alpha channel is dropped.  Image outputs always carry a
    batch dimension of 1: NHWC unless a layout step says NCHW; float32 unless a
    dtype step says otherwise (without normalize the values are the 0..255 pixels).
    A 3-channel array is taken as RGB (convert an OpenCV BGR array first).
    """

    def __init__(self, steps: Sequence[Step]) -> None:
        if isinstance(steps, (str, bytes, dict)) or not isinstance(steps, Sequence):
            raise ConfigError(f"steps must be a sequence of steps, but got {type(steps).__name__}")
        steps = tuple(steps)
        _check_steps(steps)
        self.steps: Tuple[Step, ...] = steps
        find = lambda kind: next((s for s in steps if isinstance(s, kind)), None)  # noqa: E731
        color = find(Color)
        self._resize: Optional[Resize] = find(Resize)
        self._normalize: Optional[Normalize] = find(Normalize)
        layout = find(Layout)
        self._dtype: Optional[Dtype] = find(Dtype)
        self._is_image = color is not None or self._resize is not None
        self._color = color.mode if color is not None else ColorMode.RGB
        self._channels = 1 if self._color is ColorMode.GRAY else 3
        self._pil_mode = "L" if self._color is ColorMode.GRAY else "RGB"
        self._nchw = layout is not None and layout.order is LayoutOrder.NCHW
        self._kernel_error: Optional[InputError] = None
        self._a: Optional[np.ndarray] = None
        self._b: Optional[np.ndarray] = None
        self._prepare_kernel()

    # -- public ---------------------------------------------------------------

    @property
    def is_image(self) -> bool:
        """True when the steps take an image (they contain color or resize)."""
        return self._is_image

    @property
    def channels(self) -> int:
        return self._channels

    @property
    def size(self) -> Optional[Tuple[int, int]]:
        """(height, width) of the model input image, or None without a resize step."""
        return None if self._resize is None else self._resize.size

    def __repr__(self) -> str:
        return f"Preprocessor({list(self.steps)!r})"

    def __call__(self, source: Any) -> Preprocessed:
        if isinstance(source, np.ndarray):
            if self._is_image and source.dtype == np.uint8 and source.ndim in (2, 3):
                return self._run_array(source)
            return self._run_tensor(source)
        if isinstance(source, (str, os.PathLike)):
            path = Path(os.fspath(source))
            if path.suffix.lower() == ".npy":
                return self._run_tensor(_load_npy(path, str(path)))
            if not path.exists():
                raise InputError(f"{path}: no such file; check the path")
            if path.is_dir():
                raise InputError(f"{path} is a directory; pass an image file or a .npy tensor")
            self._require_image(str(path))
            return self._run_encoded(path, str(path))
        if isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
            if data[:6] == b"\x93NUMPY":
                return self._run_tensor(_load_npy(io.BytesIO(data), "the given .npy bytes"))
            self._require_image("the given bytes")
            return self._run_encoded(io.BytesIO(data), "the given bytes")
        pil_image = _pil_image_type()
        if pil_image is not None and isinstance(source, pil_image):
            self._require_image("the given PIL image")
            try:
                source.load()
            except (OSError, SyntaxError, ValueError) as exc:
                raise InputError(f"the given PIL image could not be decoded ({exc}); {_DECODE_HINT}") from None
            im = source
            orientation = _orientation(im)
            im = _high_depth(im, "the given PIL image")
            if orientation != 1:
                im = _transpose(im, orientation)
            return self._run_pil(im, im.size, (1.0, 1.0))
        raise InputError(
            f"cannot preprocess a {type(source).__name__}; pass an image path, encoded image bytes, "
            f"a PIL.Image.Image, an HWC uint8 numpy array, a .npy path or a numpy tensor"
        )

    # -- sources --------------------------------------------------------------

    def _require_image(self, what: str) -> None:
        if not self._is_image:
            raise InputError(
                f"{what} is an image, but this model takes tensors (its preprocessing has no color or "
                f"resize step); pass a numpy array or a .npy file"
            )

    def _run_encoded(self, fp: Any, name: str) -> Preprocessed:
        image = _pil()
        try:
            im = image.open(fp)
        except (image.UnidentifiedImageError, OSError, SyntaxError, ValueError, image.DecompressionBombError) as exc:
            raise InputError(f"{name} is not an image Pillow can decode ({exc}); {_DECODE_HINT}") from None
        with im:
            orientation = 1
            swap = False
            factor = (1.0, 1.0)
            w0, h0 = im.size
            if im.format in _JPEG_FORMATS:
                orientation = _orientation(im)
                swap = orientation in (5, 6, 7, 8)
                if swap:
                    w0, h0 = h0, w0
                im, factor = self._draft(im, (w0, h0), swap)
            _check_pixels(im.size, name)  # after draft: the pixels libjpeg/Pillow will actually decode
            try:
                im.load()
            except (OSError, SyntaxError, ValueError, image.DecompressionBombError) as exc:
                raise InputError(f"{name} could not be decoded ({exc}); {_DECODE_HINT}") from None
            if im.format not in _JPEG_FORMATS:
                orientation = _orientation(im)
                if orientation in (5, 6, 7, 8):
                    w0, h0 = h0, w0
            im = _high_depth(im, name)
            if orientation != 1:
                im = _transpose(im, orientation)
            return self._run_pil(im, (w0, h0), factor)

    def _draft(self, im: Image.Image, original: Tuple[int, int], swap: bool) -> Tuple[Image.Image, Tuple[float, float]]:
        """Ask libjpeg for a DCT-scaled decode; returns the image and the per-axis shrink factor."""
        if self._resize is None:
            return im, (1.0, 1.0)
        need = draft_request(original, self._resize)
        if need is None:
            return im, (1.0, 1.0)
        if swap:
            need = (need[1], need[0])
        stored = im.size
        # draft("L") makes libjpeg emit only the luma plane: gray for free.
        im.draft(self._pil_mode, need)
        if im.size == stored:
            return im, (1.0, 1.0)
        # libjpeg scales by exactly 1/k; the last row/column may be a partial block,
        # so recover k rather than dividing sizes.
        k = next(
            (k for k in (2, 4, 8) if -(-stored[0] // k) == im.size[0] and -(-stored[1] // k) == im.size[1]),
            None,
        )
        fx, fy = (float(k), float(k)) if k else (stored[0] / im.size[0], stored[1] / im.size[1])
        return im, ((fy, fx) if swap else (fx, fy))

    def _run_array(self, arr: np.ndarray) -> Preprocessed:
        if arr.ndim == 3 and arr.shape[2] not in (1, 3, 4):
            hint = (
                "; for a CHW array use arr.transpose(1, 2, 0)" if arr.shape[0] in (1, 3) else ""
            )
            raise InputError(
                f"an image array must be HWC (or HW) uint8 with 1, 3 (RGB) or 4 (RGBA) channels, but got "
                f"shape {arr.shape} ({arr.shape[2]} channels){hint}"
            )
        if arr.shape[0] == 0 or arr.shape[1] == 0:
            raise InputError(f"the image array is empty (shape {arr.shape})")
        h0, w0 = arr.shape[:2]
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        channels = 1 if arr.ndim == 2 else arr.shape[2]
        # Fast path: already the right channels and no resampling -> no PIL round trip.
        if channels == self._channels and channels in (1, 3) and not self._needs_resample((w0, h0)):
            return self._finish(arr, Transform.identity((w0, h0)), None)
        return self._run_pil(_pil().fromarray(np.ascontiguousarray(arr)), (w0, h0), (1.0, 1.0))

    def _run_pil(self, im: Image.Image, original: Tuple[int, int], factor: Tuple[float, float]) -> Preprocessed:
        # "F": a 16-bit or float gray image already on the 0..255 scale (_high_depth); it is
        # resampled as float and its channel repeated for RGB/BGR, as Pillow's L -> RGB does.
        high_depth = im.mode == "F"
        if im.mode != self._pil_mode and not high_depth:
            im = im.convert(self._pil_mode)
        if self._resize is None:
            return self._finish(self._pixels(im, high_depth), Transform.identity(original), None)
        g = _geometry(original, self._resize)
        fx, fy = factor
        box = (g.box[0] / fx, g.box[1] / fy, g.box[2] / fx, g.box[3] / fy)
        full = box == (0.0, 0.0, float(im.size[0]), float(im.size[1]))
        if not (full and im.size == g.size):
            name, gap = _FILTERS[self._resize.interpolation]
            if name == "BOX" and (g.size[0] > box[2] - box[0] or g.size[1] > box[3] - box[1]):
                name = "BILINEAR"
            resample = _resampling(name)
            im = im.resize(g.size, resample, box=None if full else box, reducing_gap=gap)
        return self._finish(self._pixels(im, high_depth), g.transform, g)

    def _pixels(self, im: Image.Image, high_depth: bool) -> np.ndarray:
        arr = np.asarray(im)
        if high_depth and self._channels == 3:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        return arr

    def _needs_resample(self, original: Tuple[int, int]) -> bool:
        if self._resize is None:
            return False
        g = _geometry(original, self._resize)
        return not (g.size == original and g.canvas == original)

    # -- the numeric part -----------------------------------------------------

    def _prepare_kernel(self) -> None:
        """Precompute the per-channel ``a``, ``b`` of ``out = x * a + b`` (float32)."""
        if not self._is_image:
            return
        c = self._channels
        if self._normalize is not None:
            try:
                a, b = self._normalize.coefficients(c)
            except InputError as exc:  # reported when an image is run (tensors skip normalize)
                self._kernel_error = exc
                return
        else:
            a, b = np.ones(c), np.zeros(c)
        d = self._dtype
        if d is not None and d.quantized:
            assert d.scale is not None
            # q = round(y / s) + zp: the 1/s folds into the same multiply-add.  The zero
            # point is added after rounding: round-half-even of (v + odd zp) differs
            # from round(v) + zp on exact ties.
            a, b = a / d.scale, b / d.scale
        if self._normalize is None and not (d is not None and d.quantized):
            return  # plain cast, no multiply-add needed
        shape = (c, 1, 1) if self._nchw else (c,)
        self._a = np.asarray(a, dtype=np.float32).reshape(shape)
        self._b = np.asarray(b, dtype=np.float32).reshape(shape)

    def _finish(self, arr: np.ndarray, transform: Transform, g: Optional[_Geometry]) -> Preprocessed:
        if self._kernel_error is not None:
            raise self._kernel_error
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if g is not None and g.canvas != g.size:  # letterbox padding
            assert self._resize is not None
            W, H = g.canvas
            canvas = np.full((H, W, arr.shape[2]), self._resize.pad_value, dtype=arr.dtype)
            left, top = g.offset
            canvas[top : top + arr.shape[0], left : left + arr.shape[1]] = arr
            arr = canvas
        if self._color is ColorMode.BGR:
            arr = arr[:, :, ::-1]
        src = arr.transpose(2, 0, 1) if self._nchw else arr  # views; one copy happens below
        d = self._dtype
        target = d.dtype if d is not None else TensorDtype.FLOAT32
        if self._a is None:
            if target is TensorDtype.UINT8 and src.dtype != np.uint8:
                # raw pixels of a high-depth image: its values are on 0..255 already; the clip only
                # catches a bicubic resize's overshoot, as Pillow's own uint8 resize saturates
                out = np.clip(np.rint(src), 0, 255).astype(np.uint8)[None]
            elif target is TensorDtype.UINT8:
                out = np.ascontiguousarray(src)[None]
            else:
                out = np.empty((1,) + src.shape, dtype=_NP_DTYPES[target])
                out[0] = src
            return Preprocessed(out, transform)
        out = np.empty((1,) + src.shape, dtype=np.float32)
        np.multiply(src, self._a, out=out[0])
        out += self._b
        if target is TensorDtype.FLOAT32:
            return Preprocessed(out, transform)
        if target is TensorDtype.FLOAT16:
            return Preprocessed(out.astype(np.float16), transform)
        assert d is not None and d.zero_point is not None
        lo, hi = _INT_RANGES[target]
        np.rint(out, out=out)
        # clip(round(v) + zp, lo, hi) == clip(round(v), lo - zp, hi - zp) + zp
        np.clip(out, lo - d.zero_point, hi - d.zero_point, out=out)
        if d.zero_point:
            out += d.zero_point
        return Preprocessed(out.astype(_NP_DTYPES[target]), transform)

    def _run_tensor(self, x: np.ndarray) -> Preprocessed:
        d = self._dtype
        if d is None:
            return Preprocessed(x, Transform.identity())
        np_dtype = _NP_DTYPES[d.dtype]
        if d.quantized and x.dtype == np_dtype:
            return Preprocessed(x, Transform.identity())  # already quantized into the input's dtype
        if d.quantized:
            assert d.scale is not None and d.zero_point is not None
            lo, hi = _INT_RANGES[d.dtype]
            q = np.rint(np.asarray(x, dtype=np.float64) / d.scale) + d.zero_point
            return Preprocessed(np.clip(q, lo, hi).astype(np_dtype), Transform.identity())
        if d.dtype in _INT_RANGES and x.dtype != np_dtype:
            if x.dtype.kind not in "biuf":
                raise InputError(f"cannot cast a {x.dtype} tensor to {d.dtype.value}; pass a numeric array")
            lo, hi = _INT_RANGES[d.dtype]
            y = np.rint(x) if x.dtype.kind == "f" else x
            if y.size and (not np.all(np.isfinite(y)) or y.min() < lo or y.max() > hi):
                raise InputError(
                    f"the tensor has values outside {d.dtype.value}'s range {lo}..{hi} "
                    f"(min {x.min()}, max {x.max()}); pass values in range, or a tensor of the right dtype"
                )
            return Preprocessed(y.astype(np_dtype), Transform.identity())
        if x.dtype.kind not in "biuf":
            raise InputError(f"cannot cast a {x.dtype} tensor to {d.dtype.value}; pass a numeric array")
        return Preprocessed(x.astype(np_dtype, copy=False), Transform.identity())


def _load_npy(fp: Any, name: str) -> np.ndarray:
    try:
        if isinstance(fp, (str, os.PathLike)):
            with open(fp, "rb") as f:
                _check_npy_header(f, name)
                return np.load(f, allow_pickle=False)
        _check_npy_header(fp, name)
        return np.load(fp, allow_pickle=False)
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"{name}: no such file; check the path") from None
    except IsADirectoryError:
        raise InputError(f"{name} is a directory; pass a .npy file") from None
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(
            f"{name} is not a readable .npy tensor ({exc}); save it with numpy.save (object arrays are refused)"
        ) from None


def preprocess(steps: Sequence[Step], source: Any) -> Preprocessed:
    """One-off convenience: ``Preprocessor(steps)(source)``."""
    return Preprocessor(steps)(source)

"""Image input layout (NCHW / NHWC) read from a model's input shape.

One rule, used by the CLI (to pick the preprocessing layout and the input
size), by the build API (to complete and check the preprocessing steps) and by
the canonicalizer (to know which dims ``size`` fills), so the three can never
disagree about the same model:

* a 4-D shape whose dim 1 is a known channel count (1, 3 or 4) is NCHW;
* otherwise one whose dim 3 is a known channel count is NHWC;
* otherwise the layout is not evident (``None``): callers assume NCHW, the
  convention of PyTorch exports (the canonicalizer notes it in the manifest),
  unless ``--layout`` decides.

``[1, 3, 224, 3]`` fits both; channel-first wins that tie (PyTorch exports
outnumber odd NHWC images 3 pixels high).  A dim counts as known when it is
a positive integer: ``0``/``-1``/``None`` or a symbolic name (``"height"``)
is unknown, whichever convention the caller's shape uses.

Device side: imports only :mod:`edgekit.preprocess` (its step types).
"""
from __future__ import annotations

import numbers
from typing import Any, List, Optional, Sequence, Tuple

from .errors import ConfigError
from .preprocess import Color, Dtype, Layout, LayoutOrder, Resize, _image_channels

__all__ = ["CHANNEL_COUNTS", "infer_layout", "resolve_layout", "image_hw", "fit_steps_to_input"]

#: channel counts that identify the channel dim of an image input (gray, RGB, RGBA)
CHANNEL_COUNTS: Tuple[int, ...] = (1, 3, 4)


def _known(dim: Any) -> Optional[int]:
    """The dim as a positive int, or None when it is dynamic/unknown."""
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):  # numpy ints count
        return None
    return int(dim) if dim > 0 else None


def infer_layout(shape: Sequence[Any]) -> Optional[LayoutOrder]:
    """NCHW / NHWC of a 4-D image input shape, or None when the shape does not tell."""
    if len(shape) != 4:
        return None
    if _known(shape[1]) in CHANNEL_COUNTS:
        return LayoutOrder.NCHW
    if _known(shape[3]) in CHANNEL_COUNTS:
        return LayoutOrder.NHWC
    return None


def _channel_axis(order: LayoutOrder) -> int:
    return 1 if order is LayoutOrder.NCHW else 3


def resolve_layout(shape: Sequence[Any], override: Any = None, name: str = "the input") -> Tuple[LayoutOrder, bool]:
    """``(layout, assumed)`` of the input ``name`` of ``shape``.

    ``override`` (``--layout``, or the preprocessing's layout step) wins where the
    shape leaves room for it: when the shape does not tell, or in a tie such as
    ``[1, 3, 32, 3]``.  An override the shape contradicts (``nchw`` for
    ``[1, ?, ?, 3]``, whose dim 1 is not a known channel count) is a
    :class:`ConfigError`: it would size the wrong dims and feed the wrong tensor.
    Without an override: the inferred layout, else NCHW with ``assumed=True``
    (the caller should say it assumed).
    """
    inferred = infer_layout(shape)
    if override is not None:
        order = Layout(override).order
        if inferred is not None and order is not inferred and _known(shape[_channel_axis(order)]) not in CHANNEL_COUNTS:
            raise ConfigError(
                f"layout {order.value} does not fit input {name!r} {_fmt(shape)}, which is {inferred.value.upper()} "
                f"(its channels are dim {_channel_axis(inferred)}); use --layout {inferred.value}, or drop --layout "
                "(the layout is read from the model)"
            )
        return order, False
    if inferred is None:
        return LayoutOrder.NCHW, True
    return inferred, False


def image_hw(shape: Sequence[Any], layout: Any) -> Tuple[Optional[int], Optional[int]]:
    """(height, width) of a 4-D input in ``layout``, each None when dynamic."""
    if len(shape) != 4:
        return None, None
    order = Layout(layout).order
    h, w = (shape[2], shape[3]) if order is LayoutOrder.NCHW else (shape[1], shape[2])
    return _known(h), _known(w)


def _fmt(shape: Sequence[Any]) -> str:
    return "[" + ", ".join(str(d) if _known(d) is not None else "?" for d in shape) + "]"


def fit_steps_to_input(steps: Sequence[Any], name: str, shape: Sequence[Any]) -> Tuple[Any, ...]:
    """Complete image preprocessing ``steps`` for the model input ``name`` of ``shape``.

    * Tensor preprocessing (no color/resize step) and non-4-D inputs come back as given.
    * Image steps without a layout step get the model's layout (see :func:`infer_layout`;
      NCHW when the shape does not tell), inserted before the dtype step.  Without this,
      the preprocessor's default NHWC would feed an NCHW model.
    * The tensor the steps make, ``[1, C, H, W]`` or ``[1, H, W, C]``, must fit the
      input wherever its dims are known; otherwise a :class:`ConfigError` names both
      shapes and the flag that fixes it, at build time rather than on the device.
    """
    steps = tuple(steps)
    is_image = any(isinstance(s, (Color, Resize)) for s in steps)
    if not is_image or len(shape) != 4:
        return steps
    layout = next((s for s in steps if isinstance(s, Layout)), None)
    if layout is None:
        order, _ = resolve_layout(shape, None, name)
        at = next((i for i, s in enumerate(steps) if isinstance(s, Dtype)), len(steps))
        steps = steps[:at] + (Layout(order),) + steps[at:]
    else:
        order = layout.order
    channels = _image_channels(steps)
    resize = next((s for s in steps if isinstance(s, Resize)), None)
    hw: List[Optional[int]] = [None, None] if resize is None else [resize.height, resize.width]

    def made(o: LayoutOrder) -> List[Optional[int]]:
        return [1, channels, *hw] if o is LayoutOrder.NCHW else [1, *hw, channels]

    def fits(o: LayoutOrder) -> bool:
        # the batch dim is not the preprocessing's business (it always makes 1)
        return all(a is None or _known(b) is None or a == b for a, b in zip(made(o)[1:], shape[1:]))

    if fits(order):
        return steps
    made_text = f"{_fmt(made(order))} ({order.value.upper()})"
    takes = f"input {name!r} takes {_fmt(shape)}"
    other = LayoutOrder.NHWC if order is LayoutOrder.NCHW else LayoutOrder.NCHW
    if fits(other):
        raise ConfigError(
            f"the preprocessing makes {made_text} but {takes} ({other.value.upper()}); "
            f"use --layout {other.value} (or a layout step with order {other.value!r})"
        )
    c_axis = _channel_axis(order)
    want_c = _known(shape[c_axis])
    if want_c is not None and want_c != channels:
        raise ConfigError(
            f"the preprocessing makes {channels}-channel images {made_text} but {takes}; "
            f"use --color {'gray' if want_c == 1 else 'rgb'} to match its channel count"
            + ("" if want_c in (1, 3) else f" (edgekit images have 1 or 3 channels, not {want_c})")
        )
    raise ConfigError(
        f"the preprocessing resizes to {hw[0]}x{hw[1]} {made_text} but {takes}; "
        "drop --size (the model's own size is used) or give --size matching the model"
    )

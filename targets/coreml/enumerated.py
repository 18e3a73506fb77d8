"""Enumerated input sizes (build option ``enumerated_sizes``): one program, a few fixed H×W.

The Neural Engine wants static shapes, so packages are static by default.
Core ML's *enumerated* shapes keep that: the model lists the sizes it
accepts and Core ML specializes the program for each on the device.  The
program itself is lowered with symbolic H and W; any node whose lowering
needs the concrete size (a Reshape whose target shape the export computed
for one size, a Slice, a Resize to fixed sizes …) stops the build with its
name: such a graph is only right at the size it was exported for, and the
fix is one package per size.

Every enumerated size other than the default (which the pipeline verifies
like any build) is checked here: the saved program, through the reference
executor, against the canonical ONNX model on onnxruntime at that size,
with the build's SQNR floor.
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgekit.errors import ConfigError, UnsupportedModelError

_SIZE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def parse_sizes(values: Sequence[str]) -> List[Tuple[int, int]]:
    """``["320x320", "480x640"]`` → ``[(320, 320), (480, 640)]`` (height × width, order kept, no repeats)."""
    out: List[Tuple[int, int]] = []
    for v in values:
        m = _SIZE.match(str(v))
        if not m or int(m.group(1)) <= 0 or int(m.group(2)) <= 0:
            raise ConfigError(f'"enumerated_sizes" entries must be HxW with positive integers (e.g. "320x320"), '
                              f"but got {v!r}")
        size = (int(m.group(1)), int(m.group(2)))
        if size not in out:
            out.append(size)
    return out


def flexible_input(model: Any, steps: Sequence[Any]) -> Tuple[str, List[int], Tuple[int, int]]:
    """(name, default shape, H/W axes) of the model's single 4-D input; ConfigError otherwise."""
    from edgekit.preprocess import Layout, LayoutOrder

    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    shapes = [[d.dim_value for d in i.type.tensor_type.shape.dim] for i in inputs]
    if len(inputs) != 1 or len(shapes[0]) != 4:
        raise ConfigError(f"enumerated_sizes apply to a model with one 4-D image input, but this one takes "
                          f"{[(i.name, s) for i, s in zip(inputs, shapes)]}; drop enumerated_sizes")
    layout = next((s for s in steps if isinstance(s, Layout)), None)
    nhwc = layout.order is LayoutOrder.NHWC if layout is not None else (shapes[0][3] in (1, 3, 4) and shapes[0][1] not in (1, 3, 4))
    return inputs[0].name, shapes[0], ((1, 2) if nhwc else (2, 3))


def input_shapes(default: Sequence[int], axes: Tuple[int, int], sizes: Sequence[Tuple[int, int]]) -> List[List[int]]:
    """Every enumerated shape, the default (the model's own size) first."""
    out = [list(default)]
    for h, w in sizes:
        shape = list(default)
        shape[axes[0]], shape[axes[1]] = h, w
        if shape not in out:
            out.append(shape)
    return out


def explain(err: UnsupportedModelError) -> UnsupportedModelError:
    return type(err)(f"{err}; with enumerated_sizes the program is lowered for any H and W, and this node depends on "
                     "the size the model was exported for: build one package per size instead (drop enumerated_sizes)")


def _at_size(model: Any, name: str, shape: Sequence[int]) -> Any:
    """The canonical model with its input at ``shape`` and no stale shapes recorded on other values."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in m.graph.input:
        if vi.name == name:
            for d, n in zip(vi.type.tensor_type.shape.dim, shape):
                d.dim_value = int(n)
    del m.graph.value_info[:]
    for out in m.graph.output:
        out.type.tensor_type.ClearField("shape")
    return m


def verify_sizes(model: Any, program: Any, io_names: Tuple[Dict[str, str], Dict[str, str]], name: str,
                 shapes: Sequence[Sequence[int]], image: Optional[Any], floor: float, fp16: bool) -> List[Dict[str, Any]]:
    """SQNR of the saved program vs onnxruntime at every non-default shape; raises below ``floor``."""
    import onnxruntime as ort

    from edgekit.quantize.parity import sqnr_db
    from edgekit.runners.coreml.reference import MilInterpreter

    interp = MilInterpreter(program, fp16_rounding=fp16)
    rng = np.random.default_rng(0)
    results = []
    for shape in shapes[1:]:
        if image is not None:  # the program takes pixels; onnxruntime takes what the folded scale/bias make of them
            pixels = rng.integers(0, 256, size=shape).astype(np.float32)
            bias = np.asarray(image.bias, np.float32).reshape(1, -1, 1, 1)
            tensor = pixels * np.float32(image.scale) + bias
            feed = pixels
        else:
            tensor = feed = rng.standard_normal(shape).astype(np.float32)
        m = _at_size(model, name, shape)
        so = ort.SessionOptions()
        so.log_severity_level = 3
        try:
            sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
            ref = sess.run(None, {name: tensor})
        except Exception as exc:  # noqa: BLE001 - onnxruntime's errors are one type per failure site
            raise UnsupportedModelError(
                f"the model does not run at input shape {list(shape)} on onnxruntime ({str(exc).splitlines()[0][:200]}); "
                "its graph is fixed to the exported size: drop enumerated_sizes or build one package per size") from None
        got = interp.run({io_names[0][name]: feed})
        worst = min(sqnr_db(r, got[io_names[1][o.name]]) for r, o in zip(ref, model.graph.output))
        results.append({"shape": list(shape), "sqnr_db": round(float(worst), 2)})
        if worst < floor:
            raise UnsupportedModelError(
                f"at input shape {list(shape)} the Core ML program reaches {worst:.1f} dB vs onnxruntime, under the "
                f"{floor:g} dB floor; drop that size from enumerated_sizes")
    return results

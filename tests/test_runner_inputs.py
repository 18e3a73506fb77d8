"""Every runner computes on what it was given (issue 9): views, foreign memory layouts and read-only
arrays give the outputs of their C-contiguous copies, on every runner whose runtime imports here.

One package per runner from the same golden model; each input variant is fed as is and as a
contiguous copy, twice each (a runtime reading freed or foreign memory gives different values per call).
"""
from __future__ import annotations

import importlib.util
import warnings
from typing import Callable, Dict

import numpy as np
import pytest

import edgekit
from edgekit.errors import RuntimeMissingError
from models.meta import GOLDEN_MODELS
from pkgtools import make_package

pytestmark = pytest.mark.device
GM = {m.name: m for m in GOLDEN_MODELS}["conv_bn_relu"]
SHAPE = tuple(GM.inputs[0].shape)  # (1, 3, 32, 32)


def _x() -> np.ndarray:
    return np.random.default_rng(7).standard_normal(SHAPE).astype(np.float32)


def _nhwc_transposed() -> np.ndarray:  # the everyday way to make an NCHW tensor from an HWC image
    return np.ascontiguousarray(_x().transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def _read_only() -> np.ndarray:
    x = _x()
    x.setflags(write=False)
    return x


def _sliced() -> np.ndarray:
    big = np.random.default_rng(8).standard_normal((2, 4, 2 * SHAPE[2], 2 * SHAPE[3])).astype(np.float32)
    return big[1:, 1:, ::2, 1::2]


def _broadcast() -> np.ndarray:  # zero strides: one row repeated
    return np.broadcast_to(_x()[:, :, :1, :], SHAPE)


def _unaligned() -> np.ndarray:  # float32 data starting at an odd address (a buffer from a file or socket)
    raw = bytearray(1 + 4 * int(np.prod(SHAPE)))
    view = np.frombuffer(raw, dtype=np.float32, offset=1, count=int(np.prod(SHAPE))).reshape(SHAPE)
    view[...] = _x()
    return view


VARIANTS: Dict[str, Callable[[], np.ndarray]] = {
    "nhwc_transposed": _nhwc_transposed,
    "fortran_order": lambda: np.asfortranarray(_x()),
    "read_only": _read_only,
    "sliced": _sliced,
    "broadcast_view": _broadcast,
    "negative_strides": lambda: _x()[:, ::-1, ::-1, :],
    "unaligned": _unaligned,
}

#: runner → (target that builds its packages, precision, runtime to load with, load options)
RUNNERS = {
    "onnxruntime": (None, "fp32", "onnxruntime", {}),  # a hand-made package: no build side needed
    # on a host without a GPU provider: the same session path on the CPU provider
    "onnxruntime-gpu": (None, "fp32", "onnxruntime-gpu", {"allow_cpu": True}),
    "openvino": ("openvino", "fp32", "openvino", {}),
    "qnn": ("qnn", "int8", "qnn", {}),  # the HTP simulator on x86_64
    "tensorrt": ("tensorrt", "fp16", "tensorrt", {}),  # where tensorrt and a GPU are present
    "tflite": ("tflite", "fp32", "tflite", {}),
    "coreml-reference": ("coreml", "fp16", "coreml-reference", {}),
}
_MODULES = {"openvino": "openvino", "qnn": "onnxruntime_qnn", "tensorrt": "tensorrt", "tflite": "ai_edge_litert",
            "coreml-reference": "coremltools"}


@pytest.fixture(scope="module", params=sorted(RUNNERS))
def model(request, tmp_path_factory):
    runner = request.param
    target, precision, runtime, options = RUNNERS[runner]
    module = _MODULES.get(runner, "onnxruntime")
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed here (the {runner} runner's runtime)")
    tmp = tmp_path_factory.mktemp(runner)
    if target is None:
        pkg = make_package(tmp, GM)
    else:
        from edgekit.targets import TARGETS

        if target not in TARGETS.names():
            pytest.skip(f"the {target} target is not registered in this checkout")
        rng = np.random.default_rng(0)
        calib = [{GM.inputs[0].name: rng.standard_normal(SHAPE).astype(np.float32)} for _ in range(8)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # few random samples: the build says so; not what is tested here
            pkg = edgekit.build(GM.path, target=target, precision=precision, calibration=calib,
                                output=tmp / f"{runner}.edgepkg")
    try:
        m = edgekit.load(pkg, runtime=runtime, **options)
    except RuntimeMissingError as exc:
        pytest.skip(f"the {runner} runner cannot run here: {exc}")
    with m:
        yield m


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_views_give_the_outputs_of_their_contiguous_copies(model, variant):
    name = model.manifest.inputs[0].name
    view = VARIANTS[variant]()
    assert view.shape == SHAPE and view.dtype == np.float32
    before = view.copy()
    copy = np.ascontiguousarray(view)
    want = model.infer({name: copy})
    for _ in range(2):
        got = model.infer({name: view})
        assert got.keys() == want.keys()
        for key in want:
            np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6,
                                       err_msg=f"{model.runner.name}: {variant} input read as other memory")
    np.testing.assert_array_equal(view, before)  # and the caller's array is left as it was


def test_contiguous_input_is_not_copied(model):
    """The base class copies only what needs it: a C-contiguous aligned array reaches the runtime as is."""
    name = model.manifest.inputs[0].name
    x = _x()
    assert model.runner._check({name: x})[name] is x
    fixed = model.runner._check({name: _nhwc_transposed()})[name]
    assert fixed.flags.c_contiguous and fixed.flags.aligned


def test_the_async_queue_takes_views_too(model):
    """OpenVINO's infer_many (an async request queue) gets the same treatment as infer."""
    if not hasattr(model.runner, "infer_many"):
        pytest.skip(f"the {model.runner.name} runner has no infer_many")
    name = model.manifest.inputs[0].name
    views = [VARIANTS[v]() for v in sorted(VARIANTS)]
    got = model.runner.infer_many([{name: v} for v in views])
    for view, out in zip(views, got):
        want = model.infer({name: np.ascontiguousarray(view)})
        for key in want:
            np.testing.assert_allclose(out[key], want[key], rtol=1e-5, atol=1e-6)

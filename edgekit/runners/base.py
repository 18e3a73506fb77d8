"""The Runner base class: one subclass per runtime.

Template method (as in Polygraphy's runners): :meth:`Runner.infer` checks the
feed names, shapes and dtypes against the manifest and times the call; a
runtime implements only :meth:`Runner._infer`.  The checks are precomputed so
the wrapper stays within a few microseconds of the bare runtime.

Options: each subclass declares ``options: ClassVar[OptionSchema]``; the base
``__init__`` checks the package's ``runtime_options`` and the call's options
against it (one validator, one error style) and keeps the result, every
option filled, in ``self.options`` (the instance attribute shadows the class's
schema; the schema stays at ``type(self).options``).

Inputs: ``_infer`` always gets C-contiguous, aligned arrays (and writable ones
where the runner says ``writable_inputs``).  A runtime that
wraps a buffer without copying (OpenVINO's shared tensors, a CUDA memcpy)
would otherwise read a transposed view, a slice or a broadcast view as the
wrong memory; the copy is made once here, only for arrays that need it.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Dict, Mapping, Optional, Tuple

import numpy as np

from ..errors import InputError, RuntimeMissingError
from ..manifest import Manifest, TensorSpec
from ..options import OptionSchema

#: where the options came from, per name (``self.option_sources``)
FROM_CALL, FROM_PACKAGE, FROM_DEFAULT = "call", "package", "default"


def missing_runtime(module: str, extra: str, exc: Optional[BaseException] = None) -> RuntimeMissingError:
    detail = f" ({exc})" if exc is not None else ""
    return RuntimeMissingError(f"the {module} runtime is not installed{detail}; install it with: pip install 'edgekit[{extra}]'")


class Runner(ABC):
    """Runs a package's artifact.  Use as a context manager or call :meth:`close`."""

    name: ClassVar[str]
    #: the pip extra that installs this runtime
    extra: ClassVar[str]
    #: the options this runner takes (checked by the base ``__init__``)
    options: ClassVar[OptionSchema]
    #: True when the runtime wraps input buffers as writable memory (OpenVINO's shared tensors refuse
    #: read-only arrays): read-only inputs are then copied too
    writable_inputs: ClassVar[bool] = False

    def __init__(self, root: Path, manifest: Manifest, **options: Any) -> None:
        self.root = Path(root)
        self.manifest = manifest
        values, self.option_sources = self.resolve_options(manifest, options)
        self.options = values  # type: ignore[misc]  # the checked values shadow the class's schema
        self.last_latency_s: float = 0.0
        self._expected: Tuple[Tuple[str, Tuple[int, ...], np.dtype], ...] = tuple(
            (t.name, tuple(t.shape), np.dtype(t.dtype)) for t in manifest.inputs
        )
        self._names = frozenset(t.name for t in manifest.inputs)
        #: integer inputs with quantization params: a float tensor must be quantized, not cast
        self._quantized = {t.name: t.quantization for t in manifest.inputs
                           if t.quantization is not None and np.dtype(t.dtype).kind in "iu"}

    @classmethod
    def resolve_options(
        cls, manifest: Manifest, call: Mapping[str, Any]
    ) -> Tuple[Dict[str, Any], Dict[str, str]]:
        """Every option of this runner: the call's, else the package's, else the default; and where each came from.

        The package's ``runtime_options`` are checked against this runner's
        schema when the package was built for this runner; a package built
        for another runtime (a ``tensorrt`` package run by ``onnxruntime``)
        contributes only the options both share (``threads`` ...).
        Device-only options in a package are ignored with a warning.
        """
        schema = cls.options
        packaged = dict(manifest.runtime_options)
        if manifest.runtime != cls.name:
            packaged = {k: v for k, v in packaged.items() if k in schema and not schema[k].device_only}
        from_call = schema.parse(call, source="edgekit.load()")
        # what the call sets replaces the package's value, which is then not used (nor checked): a way to run
        # a package whose recorded option this device cannot take
        packaged = {k: v for k, v in packaged.items() if k not in schema or schema[k].name not in from_call}
        source = f"the package's manifest.target.runtime_options ({manifest.name})"
        from_package = schema.parse(packaged, source=source, from_package=True)
        values = {**schema.defaults(), **from_package, **from_call}
        sources = {name: FROM_CALL if name in from_call else FROM_PACKAGE if name in from_package else FROM_DEFAULT
                   for name in values}
        return values, sources

    @property
    def inputs(self) -> Tuple[TensorSpec, ...]:
        return self.manifest.inputs

    @property
    def outputs(self) -> Tuple[TensorSpec, ...]:
        return self.manifest.outputs

    def _check(self, feeds: Mapping[str, Any]) -> Mapping[str, np.ndarray]:
        """The feeds checked against the manifest, with any array a runtime could misread made C-contiguous."""
        if len(feeds) != len(self._expected) or not self._names.issuperset(feeds):
            expected = ", ".join(sorted(self._names))
            got = ", ".join(sorted(map(str, feeds))) or "nothing"
            raise InputError(f"feeds must be named {{{expected}}}, but got {{{got}}}; pass one array per model input")
        fixed: Optional[Dict[str, np.ndarray]] = None
        for name, shape, dtype in self._expected:
            value = feeds[name]
            if not isinstance(value, np.ndarray):
                raise InputError(f"input {name!r}: expected a numpy array, got {type(value).__name__}")
            if value.shape != shape:
                raise InputError(
                    f"input {name!r}: expected shape {list(shape)}, got {list(value.shape)}; "
                    "preprocess with model.preprocess(...) or reshape the tensor"
                )
            if value.dtype != dtype:
                raise InputError(f"input {name!r}: expected dtype {dtype}, got {value.dtype}; {self._dtype_hint(name, dtype)}")
            flags = value.flags
            # transposed / Fortran-ordered / sliced / broadcast (zero strides) / misaligned views: copy once
            if not (flags.c_contiguous and flags.aligned and (flags.writeable or not self.writable_inputs)):
                if fixed is None:
                    fixed = dict(feeds)
                fixed[name] = value.copy(order="C")  # a fresh copy: contiguous and aligned
        return feeds if fixed is None else fixed

    def _dtype_hint(self, name: str, dtype: np.dtype) -> str:
        q = self._quantized.get(name)
        if q is None:
            return f"convert with .astype(np.{dtype})"
        # a cast would feed real values as integers: they must be quantized with the input's own parameters
        scale, zp = float(q.scale), int(q.zero_point)
        return (f"the input is quantized (manifest inputs[].quantization: scale {scale!r}, zero point {zp}), so a "
                f"cast is wrong: preprocess with model.preprocess(...), or quantize: np.clip(np.rint(x / {scale!r})"
                f" + {zp}, {np.iinfo(dtype).min}, {np.iinfo(dtype).max}).astype(np.{dtype})")

    def infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Run the artifact on named tensors and return named outputs."""
        feeds = self._check(feeds)
        start = time.perf_counter()
        out = self._infer(feeds)
        self.last_latency_s = time.perf_counter() - start
        return out

    @abstractmethod
    def _infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Run the runtime; feeds are already checked."""

    def describe(self) -> Dict[str, Any]:
        """Runtime facts for `edgekit inspect` (versions, devices, placement)."""
        return {"runner": self.name}

    def close(self) -> None:
        pass

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

"""The Runner base class: one subclass per runtime.

Template method (as in Polygraphy's runners): :meth:`Runner.infer` checks the
feed names, shapes and dtypes against the manifest and times the call; a
runtime implements only :meth:`Runner._infer`.  The checks are precomputed so
the wrapper stays within a few microseconds of the bare runtime.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Dict, Mapping, Optional, Tuple

import numpy as np

from ..errors import InputError, RuntimeMissingError
from ..manifest import Manifest, TensorSpec


def missing_runtime(module: str, extra: str, exc: Optional[BaseException] = None) -> RuntimeMissingError:
    detail = f" ({exc})" if exc is not None else ""
    return RuntimeMissingError(f"the {module} runtime is not installed{detail}; install it with: pip install 'edgekit[{extra}]'")


class Runner(ABC):
    """Runs a package's artifact.  Use as a context manager or call :meth:`close`."""

    name: ClassVar[str]
    #: the pip extra that installs this runtime
    extra: ClassVar[str]

    def __init__(self, root: Path, manifest: Manifest, **options: Any) -> None:
        self.root = Path(root)
        self.manifest = manifest
        self.options: Dict[str, Any] = {**dict(manifest.runtime_options), **options}
        self.last_latency_s: float = 0.0
        self._expected: Tuple[Tuple[str, Tuple[int, ...], np.dtype], ...] = tuple(
            (t.name, tuple(t.shape), np.dtype(t.dtype)) for t in manifest.inputs
        )
        self._names = frozenset(t.name for t in manifest.inputs)

    @property
    def inputs(self) -> Tuple[TensorSpec, ...]:
        return self.manifest.inputs

    @property
    def outputs(self) -> Tuple[TensorSpec, ...]:
        return self.manifest.outputs

    def _check(self, feeds: Mapping[str, Any]) -> None:
        if len(feeds) != len(self._expected) or not self._names.issuperset(feeds):
            expected = ", ".join(sorted(self._names))
            got = ", ".join(sorted(map(str, feeds))) or "nothing"
            raise InputError(f"feeds must be named {{{expected}}}, but got {{{got}}}; pass one array per model input")
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
                raise InputError(
                    f"input {name!r}: expected dtype {dtype}, got {value.dtype}; convert with .astype(np.{dtype})"
                )

    def infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Run the artifact on named tensors and return named outputs."""
        self._check(feeds)
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

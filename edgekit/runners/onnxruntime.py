"""ONNX Runtime runner (any CPU; execution providers as an option)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping

import numpy as np

from ..errors import ConfigError
from ..manifest import Manifest
from .base import Runner, missing_runtime

_LEVELS = ("disable", "basic", "extended", "all")


class OnnxRuntimeRunner(Runner):
    """Options: ``intra_op_num_threads``, ``inter_op_num_threads``,
    ``execution_providers`` (list of names), ``graph_optimization_level``
    (disable / basic / extended / all)."""

    name = "onnxruntime"
    extra = "onnxruntime"

    def __init__(self, root: Path, manifest: Manifest, **options: Any) -> None:
        super().__init__(root, manifest, **options)
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise missing_runtime("onnxruntime", self.extra, exc) from None
        self._ort = ort
        so = ort.SessionOptions()
        opts = self.options
        threads = opts.get("intra_op_num_threads")
        if threads is not None:
            so.intra_op_num_threads = int(threads)
        if opts.get("inter_op_num_threads") is not None:
            so.inter_op_num_threads = int(opts["inter_op_num_threads"])
        level = opts.get("graph_optimization_level", "all")
        if level not in _LEVELS:
            raise ConfigError(f'"graph_optimization_level" must be one of {set(_LEVELS)}, but got {level!r}')
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[level]
        providers: List[str] = list(opts.get("execution_providers") or ["CPUExecutionProvider"])
        available = ort.get_available_providers()
        unknown = [p for p in providers if p not in available]
        if unknown:
            raise ConfigError(
                f"execution provider(s) {unknown} are not available in this onnxruntime build; "
                f"available: {available}"
            )
        self.session = ort.InferenceSession(str(self.root / manifest.entry), sess_options=so, providers=providers)
        self._output_names = [o.name for o in self.session.get_outputs()]

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        values = self.session.run(self._output_names, feeds)
        return dict(zip(self._output_names, values))

    def describe(self) -> Dict[str, Any]:
        return {
            "runner": self.name,
            "onnxruntime": self._ort.__version__,
            "providers": self.session.get_providers(),
        }

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]

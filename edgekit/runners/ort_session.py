"""What the onnxruntime-based runners share: the import, session options, run and close.

``onnxruntime``, ``onnxruntime-gpu`` and ``qnn`` differ only in how they pick
execution providers; the session they end up with runs the same way.
"""
from __future__ import annotations

import enum
from typing import Any, Dict, List, Mapping

import numpy as np

from ..options import Option, threads_option
from .base import Runner, missing_runtime


class GraphOptimizationLevel(str, enum.Enum):
    DISABLE = "disable"
    BASIC = "basic"
    EXTENDED = "extended"
    ALL = "all"


#: the options every onnxruntime-based runner takes
THREADS = threads_option("intra-op threads (SessionOptions.intra_op_num_threads); 0 = one per physical core",
                         aliases=("intra_op_num_threads",))
INTER_OP_THREADS = Option("inter_op_threads", int, 0, "inter-op threads (parallel graph branches); 0 = default",
                          min=0, max=THREADS.max, aliases=("inter_op_num_threads",))
GRAPH_LEVEL = Option("graph_optimization_level", GraphOptimizationLevel, GraphOptimizationLevel.ALL,
                     "onnxruntime graph optimizations applied when the session is created")


def import_onnxruntime(extra: str) -> Any:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise missing_runtime("onnxruntime", extra, exc) from None
    return ort


def session_options(ort: Any, options: Mapping[str, Any], precision: str = "") -> Any:
    """``SessionOptions`` from checked options (``threads``, ``inter_op_threads``, ``graph_optimization_level``).

    ``precision`` is the package's: an fp32 package keeps MLAS's Arm64 bf16 GEMM fast-math off (off by
    default today; said explicitly so that a default change cannot downcast what verification measured).
    """
    so = ort.SessionOptions()
    if precision == "fp32":
        so.add_session_config_entry("mlas.enable_gemm_fastmath_arm64_bfloat16", "0")
    if options.get("threads"):
        so.intra_op_num_threads = int(options["threads"])
    if options.get("inter_op_threads"):
        so.inter_op_num_threads = int(options["inter_op_threads"])
    level = options.get("graph_optimization_level")
    if level is not None:
        so.graph_optimization_level = {
            GraphOptimizationLevel.DISABLE: ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            GraphOptimizationLevel.BASIC: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            GraphOptimizationLevel.EXTENDED: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            GraphOptimizationLevel.ALL: ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[GraphOptimizationLevel(level)]
    return so


class OrtSessionRunner(Runner):
    """A runner whose ``__init__`` creates ``self.session`` (an ``onnxruntime.InferenceSession``)."""

    session: Any
    _ort: Any

    def _start(self, session: Any) -> None:
        self.session = session
        self._output_names: List[str] = [o.name for o in session.get_outputs()]

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        values = self.session.run(self._output_names, feeds)
        return dict(zip(self._output_names, values))

    def describe(self) -> Dict[str, Any]:
        return {"runner": self.name, "onnxruntime": self._ort.__version__, "providers": self.session.get_providers()}

    def close(self) -> None:
        self.session = None

"""ONNX Runtime runner (any CPU; execution providers as an option)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, List

from ..errors import ConfigError
from ..manifest import Manifest
from ..options import Option, OptionSchema
from .ort_session import GRAPH_LEVEL, INTER_OP_THREADS, THREADS, OrtSessionRunner, import_onnxruntime, session_options


class OnnxRuntimeRunner(OrtSessionRunner):
    """Runs an ONNX package through ``onnxruntime.InferenceSession`` (see ``options`` for what it takes)."""

    name = "onnxruntime"
    extra = "onnxruntime"
    options = OptionSchema("onnxruntime runner", [
        THREADS,
        INTER_OP_THREADS,
        Option("execution_providers", list, ["CPUExecutionProvider"],
               "onnxruntime execution providers in preference order"),
        GRAPH_LEVEL,
        Option("disabled_optimizers", list, [],
               "onnxruntime graph optimizers not to run, by name (an int8 package names the ones that would "
               "undo its Q/DQ placement)"),
    ])

    def __init__(self, root: Path, manifest: Manifest, **options: Any) -> None:
        super().__init__(root, manifest, **options)
        ort = self._ort = import_onnxruntime(self.extra)
        providers: List[str] = list(self.options["execution_providers"] or ["CPUExecutionProvider"])
        available = ort.get_available_providers()
        unknown = [p for p in providers if p not in available]
        if unknown:
            raise ConfigError(
                f"execution provider(s) {unknown} are not available in this onnxruntime build; "
                f"available: {available}"
            )
        so = session_options(ort, self.options, manifest.precision)
        disabled = [str(name) for name in self.options["disabled_optimizers"] or []]
        if disabled:  # the session config entry onnxruntime reads the list from (names joined by ";")
            so.add_session_config_entry("optimization.disable_specified_optimizers", ";".join(disabled))
        self._start(ort.InferenceSession(str(self.root / manifest.entry), sess_options=so, providers=providers))

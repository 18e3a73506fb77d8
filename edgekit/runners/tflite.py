"""LiteRT (TFLite) runner: ai-edge-litert's Interpreter, or tflite-runtime's on older images.

XNNPACK is LiteRT's default CPU delegate and is applied to fp32, fp16-weight
and int8 models alike; ``xnnpack=False`` runs the builtin kernels instead
(for debugging a delegate issue).  ``threads`` is the Interpreter's
``num_threads``: 0 leaves the runtime's default, a device profile sets the
board's core count.  ``interpreter`` picks the package that provides the
Interpreter ("litert" = ai-edge-litert, "tflite-runtime", or "auto": the first
that imports).  It is not called ``runtime``: ``edgekit.load(pkg, runtime=...)``
takes that name itself, so a runner option of that name could never be passed.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Mapping, Tuple

import numpy as np

from ..errors import ModelError
from ..manifest import Manifest
from ..options import Option, OptionSchema, threads_option
from .base import Runner, missing_runtime

#: which Python package provides the Interpreter, in the order ``interpreter="auto"`` tries them
RUNTIMES = ("ai-edge-litert", "tflite-runtime")
#: the runner option ``interpreter``'s values → the package each one names
INTERPRETERS = {"litert": "ai-edge-litert", "tflite-runtime": "tflite-runtime"}


def import_interpreter(which: str = "auto") -> Tuple[Any, str, str]:
    """(Interpreter class, package name, version) of the first runtime that imports."""
    errors = []
    for name in RUNTIMES if which == "auto" else (which,):
        try:
            if name == "ai-edge-litert":
                from ai_edge_litert import interpreter as mod
                import ai_edge_litert as pkg
            else:
                from tflite_runtime import interpreter as mod  # type: ignore[no-redef]
                import tflite_runtime as pkg  # type: ignore[no-redef]
        except (ImportError, AttributeError) as exc:  # tflite-runtime 2.14 raises AttributeError under numpy 2
            errors.append(f"{name}: {exc}")
            continue
        return mod, name, str(getattr(pkg, "__version__", "?"))
    raise missing_runtime("LiteRT (ai-edge-litert or tflite-runtime)", "tflite", ImportError("; ".join(errors)))


class TfliteRunner(Runner):
    """Runs a ``.tflite`` package through the LiteRT Interpreter with XNNPACK."""

    name = "tflite"
    extra = "tflite"
    options = OptionSchema("tflite runner", [
        threads_option("interpreter threads (num_threads, used by XNNPACK); 0 = the runtime's default"),
        Option("xnnpack", bool, True, "apply the XNNPACK delegate (LiteRT's default CPU delegate)"),
        Option("interpreter", str, "auto", "which package provides the Interpreter: litert (ai-edge-litert), "
               "tflite-runtime, or auto (the first that imports)", choices=("auto",) + tuple(INTERPRETERS)),
    ])

    def __init__(self, root: Path, manifest: Manifest, **options: Any) -> None:
        super().__init__(root, manifest, **options)
        mod, self._runtime, self._version = import_interpreter(INTERPRETERS.get(self.options["interpreter"], "auto"))
        kwargs: Dict[str, Any] = {}
        threads = int(self.options["threads"] or 0)
        if threads > 0:
            kwargs["num_threads"] = threads
        if not self.options["xnnpack"]:
            kwargs["experimental_op_resolver_type"] = mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        path = self.root / manifest.entry
        try:
            self._interp = mod.Interpreter(model_path=os.fspath(path), **kwargs)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as err:
            raise ModelError(f"{path.name}: LiteRT cannot load the model ({str(err).strip().splitlines()[0]}); "
                             "rebuild the package, or report this with the model") from None
        self._in = {d["name"]: d["index"] for d in self._interp.get_input_details()}
        self._out = [(d["name"], d["index"]) for d in self._interp.get_output_details()]
        missing = [t.name for t in manifest.inputs if t.name not in self._in]
        if missing:
            raise ModelError(f"{path.name} has no input(s) {missing} that the manifest lists; the package is "
                             "inconsistent: rebuild it")

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        interp = self._interp
        for name, value in feeds.items():
            interp.set_tensor(self._in[name], value)
        interp.invoke()
        return {name: interp.get_tensor(index) for name, index in self._out}

    def describe(self) -> Dict[str, Any]:
        return {"runner": self.name, "runtime": self._runtime, "version": self._version,
                "threads": self.options["threads"], "xnnpack": self.options["xnnpack"]}

    def close(self) -> None:
        self._interp = None  # type: ignore[assignment]

"""The ``tensorrt`` runner: engine built on the device from the packaged ONNX and cached.

``runner`` (the Runner, engine build, ``prepare``), ``cache`` (engine cache:
keys, atomic entries, timing caches) and ``profile`` (the build profile a
package carries).  ``cache`` and ``profile`` are pure Python: the build side
and tests use them without TensorRT.
"""
from __future__ import annotations

from .runner import (
    FALLBACK_HINT,
    TensorRTRunner,
    build_engine,
    engine_key,
    ensure_engine,
    gpu_info,
    import_cudart,
    import_tensorrt,
    manifest_profile,
    prepare,
)

__all__ = ["FALLBACK_HINT", "TensorRTRunner", "build_engine", "engine_key", "ensure_engine", "gpu_info",
           "import_cudart", "import_tensorrt", "manifest_profile", "prepare"]

"""Fallback runner for ``tensorrt`` packages: onnxruntime-gpu with the TensorRT or CUDA execution provider.

For machines with onnxruntime-gpu but without the TensorRT Python API (a
workstation, a container without JetPack's bindings).  The package's build
profile maps onto the TensorRT execution provider's options (fp16 / int8
flags, workspace, DLA core, builder optimization level, engine and timing
caches under the same cache folder as the ``tensorrt`` runner); the CUDA
execution provider takes what TensorRT cannot.

Options: ``providers`` (preference order, default TensorRT then CUDA),
``allow_cpu`` (also accept the CPU provider; off by default, so a silent CPU
run never passes for a GPU one), ``cache_dir``, ``device`` (CUDA device id),
``graph_optimization_level``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np

from ..errors import ConfigError, RuntimeMissingError
from ..manifest import Manifest
from .base import Runner, missing_runtime
from .trt_cache import resolve_cache_dir
from .trt_profile import BuildProfile, TrtPrecision

GPU_PROVIDERS: Tuple[str, ...] = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
_LEVELS = ("disable", "basic", "extended", "all")


def _profile(manifest: Manifest) -> BuildProfile:
    details = ((manifest.data.get("target") or {}).get("details") or {})
    if "build_profile" in details:
        try:
            return BuildProfile.from_json(details["build_profile"], where="manifest.target.details.build_profile")
        except ConfigError:
            pass  # the fallback runs any ONNX package; a profile it cannot read only loses the TensorRT hints
    return BuildProfile()


def trt_provider_options(profile: BuildProfile, cache_dir: Path, device: int) -> Dict[str, Any]:
    """TensorRT execution provider options equivalent to the package's build profile."""
    opts: Dict[str, Any] = {
        "device_id": device,
        "trt_max_workspace_size": profile.workspace_mib << 20,
        "trt_fp16_enable": TrtPrecision.FP16 in profile.precisions,
        "trt_int8_enable": TrtPrecision.INT8 in profile.precisions,  # Q/DQ graph: explicit quantization
        "trt_builder_optimization_level": profile.builder_optimization_level,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache_dir / "onnxruntime-trt"),
        "trt_timing_cache_enable": profile.timing_cache,
        "trt_timing_cache_path": str(cache_dir / "onnxruntime-trt"),
    }
    if profile.dla_core is not None:
        opts.update(trt_dla_enable=True, trt_dla_core=profile.dla_core)
    return opts


def choose_providers(
    wanted: Sequence[str], available: Sequence[str], allow_cpu: bool
) -> List[str]:
    """The wanted GPU providers this onnxruntime has, in order; one clear error when there are none."""
    known = set(GPU_PROVIDERS) | {"CPUExecutionProvider"}
    unknown = [p for p in wanted if p not in known]
    if unknown:
        raise ConfigError(f'"providers" entries must be one of {sorted(known)}, but got {unknown}')
    chosen = [p for p in wanted if p in available and p != "CPUExecutionProvider"]
    if not chosen and not allow_cpu:
        raise RuntimeMissingError(
            f"the onnxruntime-gpu runner needs the TensorRT or CUDA execution provider, but this onnxruntime has "
            f"only {list(available)}: pip install onnxruntime-gpu (on a Jetson, the JetPack build of it), or run "
            "on the CPU with runtime='onnxruntime'"
        )
    if allow_cpu or "CPUExecutionProvider" in wanted:
        chosen.append("CPUExecutionProvider")
    return chosen


class OnnxRuntimeGpuRunner(Runner):
    """A ``tensorrt`` (or any ONNX) package through onnxruntime-gpu's TensorRT / CUDA providers."""

    name = "onnxruntime-gpu"
    extra = "onnxruntime"

    def __init__(self, root: Path, manifest: Manifest, **options: Any) -> None:
        super().__init__(root, manifest, **options)
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise missing_runtime("onnxruntime", self.extra, exc) from None
        self._ort = ort
        opts = self.options
        wanted = list(opts.get("providers") or GPU_PROVIDERS)
        providers = choose_providers(wanted, ort.get_available_providers(), bool(opts.get("allow_cpu", False)))
        device = int(opts.get("device", 0))
        profile = _profile(manifest).with_overrides(opts)
        cache_dir, self.cache_warning = resolve_cache_dir(opts.get("cache_dir"))
        if self.cache_warning:
            import warnings

            warnings.warn(self.cache_warning, stacklevel=2)
        with_opts: List[Any] = []
        for p in providers:
            if p == "TensorrtExecutionProvider":
                (cache_dir / "onnxruntime-trt").mkdir(parents=True, exist_ok=True)
                with_opts.append((p, trt_provider_options(profile, cache_dir, device)))
            elif p == "CUDAExecutionProvider":
                with_opts.append((p, {"device_id": device}))
            else:
                with_opts.append(p)
        so = ort.SessionOptions()
        level = opts.get("graph_optimization_level", "all")
        if level not in _LEVELS:
            raise ConfigError(f'"graph_optimization_level" must be one of {set(_LEVELS)}, but got {level!r}')
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[level]
        self.session = ort.InferenceSession(str(self.root / manifest.entry), sess_options=so, providers=with_opts)
        self._output_names = [o.name for o in self.session.get_outputs()]

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        values = self.session.run(self._output_names, feeds)
        return dict(zip(self._output_names, values))

    def describe(self) -> Dict[str, Any]:
        return {"runner": self.name, "onnxruntime": self._ort.__version__, "providers": self.session.get_providers()}

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]

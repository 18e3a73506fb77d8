"""Fallback runner for ``tensorrt`` packages: onnxruntime-gpu with the TensorRT or CUDA execution provider.

For machines with onnxruntime-gpu but without the TensorRT Python API (a
workstation, a container without JetPack's bindings).  The package's build
profile maps onto the TensorRT execution provider's options (fp16 / int8
flags, workspace, DLA core, builder optimization level, engine and timing
caches under the same cache folder as the ``tensorrt`` runner); the CUDA
execution provider takes what TensorRT cannot.

Options: see ``OnnxRuntimeGpuRunner.options`` (``edgekit targets --json``
lists them): ``providers`` (preference order, default TensorRT then CUDA),
``allow_cpu``, ``cache_dir`` (device only), ``device`` (CUDA device index),
``threads``, ``graph_optimization_level`` and the build-profile overrides.
An fp32 package runs without TF32 (``use_tf32=0`` on the CUDA provider).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from ..errors import ConfigError, RuntimeMissingError
from ..manifest import Manifest
from ..options import Option, OptionSchema
from .ort_session import GRAPH_LEVEL, THREADS, OrtSessionRunner, import_onnxruntime, session_options
from .tensorrt.cache import resolve_cache_dir
from .tensorrt.profile import PROFILE_OVERRIDES, BuildProfile, TrtPrecision

GPU_PROVIDERS: Tuple[str, ...] = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def _profile(manifest: Manifest) -> BuildProfile:
    details = manifest.details  # typed per target (edgekit.manifest.TensorrtDetails), read as a mapping
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


class OnnxRuntimeGpuRunner(OrtSessionRunner):
    """A ``tensorrt`` (or any ONNX) package through onnxruntime-gpu's TensorRT / CUDA providers."""

    name = "onnxruntime-gpu"
    extra = "onnxruntime"
    options = OptionSchema("onnxruntime-gpu runner", [
        THREADS,
        Option("device", int, 0, "CUDA device index", min=0),
        Option("providers", list, list(GPU_PROVIDERS), "execution providers in preference order",),
        Option("allow_cpu", bool, False, "also accept the CPU provider (off: a silent CPU run never passes for a GPU one)"),
        Option("cache_dir", Path, None, "TensorRT engine and timing cache folder (default: edgekit's cache dir)",
               device_only=True),
        GRAPH_LEVEL,
        *PROFILE_OVERRIDES,
    ])

    def __init__(self, root: Path, manifest: Manifest, **options: Any) -> None:
        super().__init__(root, manifest, **options)
        ort = self._ort = import_onnxruntime(self.extra)
        opts = self.options
        providers = choose_providers(list(opts["providers"]), ort.get_available_providers(), opts["allow_cpu"])
        device = opts["device"]
        profile = _profile(manifest).with_overrides(opts)
        cache_dir, self.cache_warning = resolve_cache_dir(opts["cache_dir"])
        if self.cache_warning:
            import warnings

            warnings.warn(self.cache_warning, stacklevel=2)
        fp32 = manifest.precision == "fp32"
        with_opts: List[Any] = []
        for p in providers:
            if p == "TensorrtExecutionProvider":
                if fp32:
                    # the TensorRT provider has no TF32 switch, only NVIDIA's process-wide variable (read when the
                    # first engine is built); a user who set it keeps their choice
                    os.environ.setdefault("NVIDIA_TF32_OVERRIDE", "0")
                (cache_dir / "onnxruntime-trt").mkdir(parents=True, exist_ok=True)
                with_opts.append((p, trt_provider_options(profile, cache_dir, device)))
            elif p == "CUDAExecutionProvider":
                # an fp32 package runs in fp32: TF32 tensor-core math (10-bit mantissa) is a silent downcast
                with_opts.append((p, {"device_id": device, "use_tf32": 0 if fp32 else 1}))
            else:
                with_opts.append(p)
        so = session_options(ort, opts, manifest.precision)
        self._start(ort.InferenceSession(str(self.root / manifest.entry), sess_options=so, providers=with_opts))

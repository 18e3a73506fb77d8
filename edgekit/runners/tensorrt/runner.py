"""TensorRT runner (TensorRT 10 Python API; 8.5/8.6 as on JetPack 5/6.0), device memory through cuda-python.

On first load the engine is built on the device from the packaged ONNX and
the package's build profile (``manifest.target.details.build_profile``), with
a progress indication, then cached (:mod:`edgekit.runners.tensorrt.cache`) under a
key of (TensorRT version, GPU name and compute capability, artifact sha256,
build profile).  Later loads deserialize the cached engine; a key change (new
JetPack, another GPU, another profile) or an engine TensorRT refuses rebuilds.
The timing cache of the device is reused across builds.  ``edgekit prepare
PKG`` builds the engine ahead of time (:func:`prepare`).

Inference uses named I/O tensors (``set_tensor_address``) and
``execute_async_v3`` on a CUDA stream.

Options (``edgekit.load(pkg, **options)``, declared in ``TensorRTRunner.options``):
``cache_dir`` (device only); ``progress`` (True: lines on stderr, False:
silent, or a ``progress(stage, done, total)`` callable); ``rebuild`` (ignore
the cache); ``device`` (CUDA device index); and build-profile overrides:
``workspace_mib``, ``dla_core``, ``gpu_fallback``,
``builder_optimization_level``, ``timing_cache``.  An fp32 package's engine
is built without TF32, so what runs is the fp32 that verification measured.

Without TensorRT or without a GPU the runner raises one
:class:`~edgekit.errors.RuntimeMissingError` naming the fallbacks:
``runtime="onnxruntime-gpu"`` (onnxruntime-gpu, TensorRT/CUDA execution
providers) or ``runtime="onnxruntime"`` (CPU).
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from ...errors import ConfigError, EdgekitError, ManifestError, ModelError, RuntimeMissingError
from ...manifest import Manifest
from ...options import Option, OptionSchema
from ..base import Runner
from .cache import EngineCache, EngineKey
from .profile import PROFILE_OVERRIDES, BuildProfile, TrtPrecision

ProgressFn = Callable[[str, int, int], None]

FALLBACK_HINT = (
    "to run this package without TensorRT use the fallback runners: edgekit.load(pkg, runtime='onnxruntime-gpu') "
    "(pip install onnxruntime-gpu; TensorRT/CUDA execution providers) or edgekit.load(pkg, runtime='onnxruntime') "
    "(CPU), or --runtime on the CLI"
)


# --------------------------------------------------------------------------- imports and GPU facts

def import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise RuntimeMissingError(
            f"the tensorrt runtime is not installed ({exc}); on a Jetson it comes with JetPack "
            "(sudo apt install python3-libnvinfer), elsewhere from NVIDIA's index, and pip install "
            f"'edgekit[tensorrt]' adds cuda-python; {FALLBACK_HINT}"
        ) from None
    return trt


def import_cudart() -> Any:
    try:  # cuda-python 12.6+: cuda.bindings; older: cuda.cudart
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # type: ignore[no-redef]
        except ImportError as exc:
            raise RuntimeMissingError(
                f"cuda-python is not installed ({exc}); the tensorrt runner moves tensors with it: "
                f"pip install 'edgekit[tensorrt]'; {FALLBACK_HINT}"
            ) from None
    return cudart


def _ok(cudart: Any, result: Any, what: str) -> Any:
    """cuda-python returns (err, *values): raise on err, return the value(s)."""
    err, rest = result[0], result[1:]
    if err != cudart.cudaError_t.cudaSuccess:
        name = getattr(err, "name", str(err))
        raise RuntimeMissingError(f"CUDA {what} failed ({name}); {FALLBACK_HINT}")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else rest


def gpu_info(cudart: Any, device: int = 0) -> Tuple[str, str]:
    """(GPU name, compute capability "major.minor"); one clear error when there is no usable GPU."""
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess or count == 0:
        why = "no CUDA GPU is visible" if err == cudart.cudaError_t.cudaSuccess else \
            f"CUDA reports {getattr(err, 'name', err)} (no GPU or no driver)"
        raise RuntimeMissingError(f"this package runs on an NVIDIA GPU through TensorRT, but {why}; {FALLBACK_HINT}")
    if not 0 <= device < count:
        raise ConfigError(f'"device" must be a CUDA device index in [0, {count - 1}], but got {device!r}')
    props = _ok(cudart, cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name
    if isinstance(name, (bytes, bytearray)):
        name = bytes(name).split(b"\0", 1)[0].decode("utf-8", "replace")
    return str(name).strip(), f"{props.major}.{props.minor}"


def manifest_profile(manifest: Manifest) -> BuildProfile:
    details = manifest.details  # typed per target (edgekit.manifest.TensorrtDetails), read as a mapping
    if "build_profile" not in details:
        raise ManifestError(
            "manifest.target.details.build_profile: missing; this package was not built for TensorRT "
            "(rebuild with --target tensorrt or a jetson-* device)"
        )
    try:
        return BuildProfile.from_json(details["build_profile"], where="manifest.target.details.build_profile")
    except ConfigError as err:
        raise ManifestError(str(err)) from None


def engine_key(manifest: Manifest, profile: BuildProfile, trt_version: str, gpu: Tuple[str, str]) -> EngineKey:
    sha = manifest.files.get(manifest.entry)
    if sha is None:  # pragma: no cover - parse_manifest guarantees it
        raise ManifestError(f"manifest.files: no checksum for {manifest.entry}")
    return EngineKey(trt_version=trt_version, gpu_name=gpu[0], compute_capability=gpu[1], artifact_sha256=sha,
                     profile=profile.canonical(), name=manifest.name)


# --------------------------------------------------------------------------- progress

def _stderr_progress(stage: str, done: int, total: int) -> None:
    if total:
        sys.stderr.write(f"\r  {stage}: {done}/{total}   ")
        if done >= total:
            sys.stderr.write("\n")
    else:
        sys.stderr.write(f"  {stage}\n")
    sys.stderr.flush()


def _progress_fn(option: Any) -> ProgressFn:
    if option is None or option is True:
        return _stderr_progress
    if option is False:
        return lambda stage, done, total: None
    if callable(option):
        return option
    raise ConfigError(f'"progress" must be true, false or a callable(stage, done, total), but got {option!r}')


def _monitor(trt: Any, progress: ProgressFn) -> Optional[Any]:
    """A TensorRT IProgressMonitor (TensorRT 10) that forwards builder phases to ``progress``."""
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class _Monitor(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self._steps: Dict[str, int] = {}

        def phase_start(self, phase_name: str, parent_phase: Optional[str], num_steps: int) -> None:
            self._steps[phase_name] = num_steps
            if parent_phase is None:
                progress(f"TensorRT: {phase_name}", 0, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            if phase_name in self._steps and len(self._steps) <= 2:
                progress(f"TensorRT: {phase_name}", step + 1, self._steps[phase_name])
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            self._steps.pop(phase_name, None)

    return _Monitor()


# --------------------------------------------------------------------------- engine build

def _version_tuple(version: str) -> Tuple[int, int]:
    parts = (version.split(".") + ["0"])[:2]
    try:
        return int(parts[0]), int(parts[1])
    except ValueError:
        return 0, 0


def build_engine(
    trt: Any,
    onnx_path: Path,
    profile: BuildProfile,
    *,
    timing_cache: bytes = b"",
    progress: ProgressFn = _stderr_progress,
    logger: Any = None,
) -> Tuple[bytes, bytes]:
    """Parse the ONNX and build a serialized engine: (engine bytes, updated timing cache bytes)."""
    logger = logger or trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = _version_tuple(trt.__version__)[0]
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    progress("TensorRT: parse ONNX", 0, 0)
    if not parser.parse_from_file(str(onnx_path)):
        errors = []
        for i in range(parser.num_errors):
            e = parser.get_error(i)
            node = e.node_name() if hasattr(e, "node_name") else e.node()
            op = e.node_operator() if hasattr(e, "node_operator") else ""
            errors.append(f"{node} ({op}): {e.desc()}" if op else f"node {node}: {e.desc()}")
        raise ModelError(
            f"TensorRT {trt.__version__} cannot parse the packaged model: {'; '.join(errors) or 'unknown error'}; "
            f"rebuild the package for this TensorRT (device profile trt_version), or {FALLBACK_HINT}"
        )
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, profile.workspace_mib << 20)
    if TrtPrecision.FP16 in profile.precisions:
        config.set_flag(trt.BuilderFlag.FP16)
    if TrtPrecision.INT8 in profile.precisions:
        config.set_flag(trt.BuilderFlag.INT8)  # explicit quantization: the Q/DQ nodes carry the scales
    if not profile.precisions and hasattr(trt.BuilderFlag, "TF32"):
        # an fp32 package runs in fp32: TensorRT's default TF32 (a 10-bit mantissa on Ampere+, e.g. Orin)
        # would be a silent downcast of what verification measured
        config.clear_flag(trt.BuilderFlag.TF32)
    if hasattr(config, "builder_optimization_level"):  # TensorRT 8.6+
        config.builder_optimization_level = profile.builder_optimization_level
    if profile.dla_core is not None:
        available = int(getattr(builder, "num_DLA_cores", 0))
        if profile.dla_core >= available:
            raise ConfigError(
                f'"dla_core" {profile.dla_core} does not exist on this device ({available} DLA core(s)); '
                "load with dla_core=None (GPU only) or build for a device profile without a DLA"
            )
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = profile.dla_core
        if profile.gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    dynamic = []
    for i in range(network.num_inputs):
        t = network.get_input(i)
        if any(d < 0 for d in t.shape):
            dynamic.append(t.name)
    if dynamic:
        opt = builder.create_optimization_profile()
        for name in dynamic:
            rng = profile.shapes.get(name)
            if rng is None:
                raise ManifestError(f"build_profile.shapes: input {name!r} is dynamic but has no min/opt/max shapes")
            opt.set_shape(name, rng.min, rng.opt, rng.max)
        config.add_optimization_profile(opt)
    cache_obj = None
    if profile.timing_cache:
        cache_obj = config.create_timing_cache(timing_cache or b"")
        if not config.set_timing_cache(cache_obj, False):  # another GPU/version's cache: start afresh
            cache_obj = config.create_timing_cache(b"")
            config.set_timing_cache(cache_obj, False)
    monitor = _monitor(trt, progress)
    if monitor is not None:
        config.progress_monitor = monitor
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelError(
            f"TensorRT {trt.__version__} could not build an engine from the packaged model (its log above says "
            f"why; often too small a workspace: load with workspace_mib=...); {FALLBACK_HINT}"
        )
    new_cache = b""
    if cache_obj is not None:
        new_cache = bytes(memoryview(config.get_timing_cache().serialize()))
    return bytes(memoryview(serialized)), new_cache


def ensure_engine(
    trt: Any,
    root: Path,
    manifest: Manifest,
    profile: BuildProfile,
    gpu: Tuple[str, str],
    cache: EngineCache,
    *,
    progress: ProgressFn = _stderr_progress,
    rebuild: bool = False,
) -> Dict[str, Any]:
    """The engine for this package on this device: from the cache, else built and cached."""
    key = engine_key(manifest, profile, trt.__version__, gpu)
    data = None if rebuild else cache.lookup(key)
    engine_path, _ = cache.paths(key)
    if data is not None:
        return {"engine": data, "key": key, "built": False, "path": engine_path, "seconds": 0.0, "reason": ""}
    reason = "rebuild requested" if rebuild else cache.last_miss
    progress(f"building the TensorRT engine for {manifest.name} ({reason}); the first build takes minutes", 0, 0)
    timing_path = cache.timing_cache_path(trt.__version__, gpu[0], gpu[1])
    start = time.perf_counter()
    engine, timing = build_engine(trt, Path(root) / manifest.entry, profile,
                                  timing_cache=cache.load_timing_cache(timing_path) if profile.timing_cache else b"",
                                  progress=progress)
    seconds = time.perf_counter() - start
    try:
        if timing:
            cache.store_timing_cache(timing_path, timing)
        cache.store(key, engine, build_seconds=round(seconds, 3), package=str(manifest.name))
    except OSError as exc:  # a full disk must not stop the model from running
        import warnings

        warnings.warn(f"could not cache the TensorRT engine in {cache.folder}: {exc}; it is rebuilt on the next load",
                      stacklevel=2)
    progress(f"TensorRT engine built in {seconds:.1f} s, cached at {engine_path}", 0, 0)
    return {"engine": engine, "key": key, "built": True, "path": engine_path, "seconds": seconds, "reason": reason}


# --------------------------------------------------------------------------- the runner

def _handle(obj: Any) -> int:
    try:
        return int(obj)
    except TypeError:
        return int(obj.getPtr())


class TensorRTRunner(Runner):
    """Runs a ``tensorrt`` package: engine from the cache (or built once), then execute_async_v3."""

    name = "tensorrt"
    extra = "tensorrt"
    options = OptionSchema("tensorrt runner", [
        Option("device", int, 0, "CUDA device index", min=0),
        Option("cache_dir", Path, None, "engine and timing cache folder (default: edgekit's cache dir)",
               device_only=True),
        Option("progress", object, None, "engine-build progress: true (stderr), false, or a callable(stage, done, total)"),
        Option("rebuild", bool, False, "build the engine even when a cached one exists"),
        *PROFILE_OVERRIDES,
    ])

    def __init__(self, root: Path, manifest: Manifest, **options: Any) -> None:
        self._buffers: List[Any] = []
        self._stream: Any = None
        super().__init__(root, manifest, **options)
        trt = import_tensorrt()
        cudart = import_cudart()
        self._trt, self._cudart = trt, cudart
        device = self.options["device"]
        gpu = gpu_info(cudart, device)
        _ok(cudart, cudart.cudaSetDevice(device), "cudaSetDevice")
        profile = manifest_profile(manifest).with_overrides(self.options)
        progress = _progress_fn(self.options["progress"])
        self.cache = EngineCache(self.options["cache_dir"])
        self._logger = trt.Logger(trt.Logger.WARNING)
        info = ensure_engine(trt, self.root, manifest, profile, gpu, self.cache, progress=progress,
                             rebuild=self.options["rebuild"])
        engine = self._deserialize(info["engine"], profile)
        if engine is None and not info["built"]:
            # TensorRT refused a cached engine (another build of the same version, a corrupt file): rebuild once
            self.cache.invalidate(info["key"], "TensorRT could not deserialize the cached engine")
            info = ensure_engine(trt, self.root, manifest, profile, gpu, self.cache, progress=progress, rebuild=True)
            engine = self._deserialize(info["engine"], profile)
        if engine is None:
            raise ModelError(f"TensorRT {trt.__version__} could not load the engine it just built; {FALLBACK_HINT}")
        self.engine = engine
        self.engine_info = {k: (str(v) if isinstance(v, Path) else v) for k, v in info.items()
                            if k not in ("engine", "key")}
        self.engine_info["key"] = info["key"].digest
        self.profile, self.gpu = profile, gpu
        self.context = engine.create_execution_context()
        self._stream = _ok(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._inputs: List[Tuple[str, int, np.dtype]] = []
        self._outputs: List[Tuple[str, int, np.ndarray]] = []
        specs = {t.name: t for t in manifest.inputs}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                if name not in specs:
                    raise ManifestError(f"manifest.inputs: the engine has input {name!r}, the manifest does not")
                shape = tuple(specs[name].shape)
                if any(d < 0 for d in engine.get_tensor_shape(name)):
                    self.context.set_input_shape(name, shape)
                nbytes = int(np.prod(shape)) * dtype.itemsize
                ptr = _ok(cudart, cudart.cudaMalloc(max(1, nbytes)), "cudaMalloc")
                self._buffers.append(ptr)
                self.context.set_tensor_address(name, _handle(ptr))
                self._inputs.append((name, _handle(ptr), dtype))
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            if engine.get_tensor_mode(name) != trt.TensorIOMode.OUTPUT:
                continue
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            shape = tuple(int(d) for d in self.context.get_tensor_shape(name))
            host = np.empty(shape, dtype=dtype)
            ptr = _ok(cudart, cudart.cudaMalloc(max(1, host.nbytes)), "cudaMalloc")
            self._buffers.append(ptr)
            self.context.set_tensor_address(name, _handle(ptr))
            self._outputs.append((name, _handle(ptr), host))

    def _deserialize(self, data: bytes, profile: BuildProfile) -> Any:
        runtime = self._trt.Runtime(self._logger)
        if profile.dla_core is not None:
            runtime.DLA_core = profile.dla_core
        self._runtime = runtime  # keep alive as long as the engine
        return runtime.deserialize_cuda_engine(data)

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        cudart, stream = self._cudart, self._stream
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        keep = []
        for name, ptr, dtype in self._inputs:
            x = np.ascontiguousarray(feeds[name], dtype=dtype)
            keep.append(x)  # the copy is asynchronous: the host array must outlive it
            _ok(cudart, cudart.cudaMemcpyAsync(ptr, x.ctypes.data, x.nbytes, h2d, stream), "copy to the GPU")
        if not self.context.execute_async_v3(_handle(stream)):
            raise EdgekitError("TensorRT execute_async_v3 failed (see the TensorRT log above)")
        for name, ptr, host in self._outputs:
            _ok(cudart, cudart.cudaMemcpyAsync(host.ctypes.data, ptr, host.nbytes, d2h, stream), "copy from the GPU")
        _ok(cudart, cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        return {name: host.copy() for name, _, host in self._outputs}

    def describe(self) -> Dict[str, Any]:
        return {
            "runner": self.name,
            "tensorrt": self._trt.__version__,
            "gpu": self.gpu[0],
            "compute_capability": self.gpu[1],
            "dla_core": self.profile.dla_core,
            "cache_dir": str(self.cache.folder),
            "cache_warning": self.cache.warning,
            "engine": self.engine_info,
        }

    def close(self) -> None:
        cudart = getattr(self, "_cudart", None)
        if cudart is None:
            return
        for ptr in self._buffers:
            cudart.cudaFree(ptr)
        self._buffers = []
        if self._stream is not None:
            cudart.cudaStreamDestroy(self._stream)
            self._stream = None
        self.context = None
        self.engine = None


def prepare(
    package: Union[str, "os.PathLike[str]"],
    *,
    cache_dir: Union[str, "os.PathLike[str]", None] = None,
    progress: Any = True,
    rebuild: bool = False,
    **overrides: Any,
) -> Dict[str, Any]:
    """Build (or find) the engine for ``package`` on this device without running it: ``edgekit prepare``."""
    from ...package import open_package

    opened = open_package(package)
    try:
        manifest = opened.manifest
        if manifest.runtime != "tensorrt":
            raise ConfigError(
                f"{package}: this package runs on {manifest.runtime!r}, not TensorRT; only tensorrt packages "
                "have an engine to prepare"
            )
        opts, _ = TensorRTRunner.resolve_options(manifest, {**overrides, "cache_dir": cache_dir})
        trt = import_tensorrt()
        cudart = import_cudart()
        device = opts["device"]
        gpu = gpu_info(cudart, device)
        profile = manifest_profile(manifest).with_overrides(opts)
        cache = EngineCache(opts["cache_dir"])
        info = ensure_engine(trt, opened.root, manifest, profile, gpu, cache, progress=_progress_fn(progress),
                             rebuild=rebuild)
        return {
            "package": str(package),
            "engine": str(info["path"]),
            "built": info["built"],
            "build_seconds": round(info["seconds"], 3),
            "reason": info["reason"],
            "key": info["key"].digest,
            "tensorrt": trt.__version__,
            "gpu": gpu[0],
            "compute_capability": gpu[1],
            "cache_dir": str(cache.folder),
            "cache_warning": cache.warning,
            "build_profile": profile.to_json(),
        }
    finally:
        opened.close()

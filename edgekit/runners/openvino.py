"""OpenVINO runner: an IR (``model.xml`` + ``model.bin``) on an Intel CPU, iGPU or NPU.

Options (from the manifest's ``runtime_options``, the device profile, or
``edgekit.load(..., **options)``), validated up front by :class:`OpenVinoConfig`:

``device``
    ``CPU``, ``GPU``, ``NPU``, ``AUTO`` (OpenVINO picks; the CPU serves the
    first requests while the GPU/NPU compiles), a numbered device such as
    ``GPU.1``, or a virtual device with a list (``AUTO:GPU,CPU``).
``performance_hint``
    ``LATENCY`` (one request at a time as fast as possible, the default) or
    ``THROUGHPUT`` / ``CUMULATIVE_THROUGHPUT`` (several streams; use
    :meth:`OpenVinoRunner.infer_many`).
``num_streams``
    a positive integer or ``"AUTO"``; None leaves it to the hint.
``num_threads``
    ``INFERENCE_NUM_THREADS`` (CPU); None / 0 = OpenVINO's default.
``inference_precision``
    ``f32``, ``bf16`` or ``f16`` (``INFERENCE_PRECISION_HINT``).  None keeps
    the device default, which on CPUs with AMX/AVX512-BF16 is bf16; the build
    records ``f32`` here when its compile check saw the default fail.
``cache_dir``
    OpenVINO's model cache (``CACHE_DIR``): the compiled blob is stored there
    so the second load skips compilation.  None = ``$EDGEKIT_CACHE_DIR/openvino``
    or ``$XDG_CACHE_HOME/edgekit/openvino`` (``~/.cache/...``); ``""`` or
    ``False`` turns caching off.
``num_requests``
    size of the async request queue behind :meth:`infer_many`; None = the
    compiled model's ``OPTIMAL_NUMBER_OF_INFER_REQUESTS``.
"""
from __future__ import annotations

import enum
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import ConfigError, PackageError
from ..manifest import Manifest
from .base import Runner, missing_runtime

#: virtual devices: their targets follow a colon (``AUTO:GPU,CPU``)
VIRTUAL_DEVICES = ("AUTO", "MULTI", "HETERO", "BATCH")

#: runtime-model layer types that are bookkeeping, not computation
_NON_COMPUTE = frozenset({"Const", "Input", "Output", "Parameter", "Result"})
#: layer types that hold weights: the ones whose precision a user asks about
_WEIGHTED = frozenset({"Convolution", "GroupConvolution", "Deconvolution", "FullyConnected", "MatMul", "Gemm",
                       "BinaryConvolution"})
_INT_PRECISIONS = frozenset({"u8", "i8", "u4", "i4", "i16", "u16"})


class PerformanceHint(str, enum.Enum):
    LATENCY = "LATENCY"
    THROUGHPUT = "THROUGHPUT"
    CUMULATIVE_THROUGHPUT = "CUMULATIVE_THROUGHPUT"


class InferencePrecision(str, enum.Enum):
    F32 = "f32"
    BF16 = "bf16"
    F16 = "f16"


def _choices(cls: Any) -> str:
    return "{" + ", ".join(repr(m.value) for m in cls) + "}"


def _parse_enum(cls: Any, value: Any, name: str) -> Any:
    if isinstance(value, cls):
        return value
    if isinstance(value, str):
        for member in cls:
            if member.value.lower() == value.strip().lower():
                return member
    raise ConfigError(f'"{name}" must be one of {_choices(cls)}, but got {value!r}')


def _opt_int(value: Any, name: str, minimum: int) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f'"{name}" must be an integer >= {minimum} or null, but got {value!r}')
    return int(value)


def default_cache_dir() -> Path:
    base = os.environ.get("EDGEKIT_CACHE_DIR")
    if base:
        return Path(base).expanduser() / "openvino"
    xdg = os.environ.get("XDG_CACHE_HOME")
    root = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return root / "edgekit" / "openvino"


@dataclass(frozen=True)
class OpenVinoConfig:
    """The runner's options, typed and validated (see the module docstring)."""

    device: str = "CPU"
    performance_hint: PerformanceHint = PerformanceHint.LATENCY
    num_streams: Union[int, str, None] = None
    num_threads: Optional[int] = None
    inference_precision: Optional[InferencePrecision] = None
    cache_dir: Optional[str] = None  # None = default dir; "" = off
    num_requests: Optional[int] = None

    KNOWN = ("device", "performance_hint", "num_streams", "num_threads", "inference_precision", "cache_dir",
             "num_requests")

    def __post_init__(self) -> None:
        if not isinstance(self.device, str) or not self.device.strip():
            raise ConfigError(f'"device" must be a device name such as "CPU", "GPU", "NPU" or "AUTO", '
                              f"but got {self.device!r}")
        object.__setattr__(self, "device", self.device.strip().upper())
        object.__setattr__(self, "performance_hint",
                           _parse_enum(PerformanceHint, self.performance_hint, "performance_hint"))
        streams = self.num_streams
        if isinstance(streams, str):
            if streams.strip().upper() != "AUTO":
                raise ConfigError(f'"num_streams" must be a positive integer, "AUTO" or null, but got {streams!r}')
            object.__setattr__(self, "num_streams", "AUTO")
        elif streams is not None and (isinstance(streams, bool) or not isinstance(streams, int) or streams < 1):
            raise ConfigError(f'"num_streams" must be a positive integer, "AUTO" or null, but got {streams!r}')
        _opt_int(self.num_threads, "num_threads", 0)
        if self.inference_precision is not None:
            object.__setattr__(self, "inference_precision",
                               _parse_enum(InferencePrecision, self.inference_precision, "inference_precision"))
        cache = self.cache_dir
        if cache is False:
            object.__setattr__(self, "cache_dir", "")
        elif cache is not None and not isinstance(cache, (str, os.PathLike)):
            raise ConfigError(f'"cache_dir" must be a folder path, "" (off) or null (default), but got {cache!r}')
        elif cache is not None:
            object.__setattr__(self, "cache_dir", str(cache))
        _opt_int(self.num_requests, "num_requests", 1)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> "OpenVinoConfig":
        """Take this runner's keys from ``options``; other runners' keys are ignored."""
        return cls(**{k: options[k] for k in cls.KNOWN if k in options})

    @property
    def cache_path(self) -> Optional[Path]:
        if self.cache_dir == "":
            return None
        return Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir()

    def compile_config(self) -> Dict[str, Any]:
        """The OpenVINO properties for ``Core.compile_model``."""
        cfg: Dict[str, Any] = {"PERFORMANCE_HINT": self.performance_hint.value}
        if self.num_streams is not None:
            cfg["NUM_STREAMS"] = str(self.num_streams)
        if self.num_threads:
            cfg["INFERENCE_NUM_THREADS"] = int(self.num_threads)
        if self.inference_precision is not None:
            cfg["INFERENCE_PRECISION_HINT"] = self.inference_precision.value
        return cfg

    def to_json(self) -> Dict[str, Any]:
        return {
            "device": self.device,
            "performance_hint": self.performance_hint.value,
            "num_streams": self.num_streams,
            "num_threads": self.num_threads,
            "inference_precision": self.inference_precision.value if self.inference_precision else None,
            "cache_dir": self.cache_dir,
            "num_requests": self.num_requests,
        }


def _device_names(device: str) -> List[str]:
    """The physical devices a device string names: ``AUTO:GPU,CPU`` → [GPU, CPU]."""
    head, _, rest = device.partition(":")
    if head in VIRTUAL_DEVICES:
        return [d.strip() for d in rest.split(",") if d.strip()]
    return [device]


def check_device(core: Any, device: str) -> None:
    """Raise a ConfigError listing the available devices when ``device`` is not on this host."""
    available = list(core.available_devices)
    # "GPU" names the first of GPU.0, GPU.1 ...
    known = set(available) | {a.split(".")[0] for a in available}
    missing = [name for name in _device_names(device) if name not in known]
    if missing:
        raise ConfigError(
            f"OpenVINO device {', '.join(missing)} is not available on this host; available: "
            f"{', '.join(available + ['AUTO'])} (fix: pass device=... or set the \"device\" runtime option)"
        )


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("Check ")]
    return (lines[0] if lines else type(err).__name__)[:300]


def _type_name(value: Any) -> Optional[str]:
    """``f32`` for an ``openvino.Type`` (its repr is ``<Type: 'float32'>``)."""
    if value is None:
        return None
    to_string = getattr(value, "to_string", None)
    return str(to_string()) if callable(to_string) else str(value)


def runtime_layers(compiled: Any) -> List[Dict[str, str]]:
    """Per-layer execution facts of a compiled model (OpenVINO's runtime model)."""
    layers = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()

        def get(key: str) -> str:
            try:
                return str(info[key].astype(str)) if key in info else ""
            except Exception:  # noqa: BLE001 - a plugin may store a type we cannot print
                return ""

        kind = get("layerType")
        if kind in _NON_COMPUTE:
            continue
        layers.append({
            "name": get("originalLayersNames") or op.get_friendly_name(),
            "type": kind,
            "precision": get("runtimePrecision"),
            "kernel": get("primitiveType"),
            "output_precision": get("outputPrecisions"),
        })
    return layers


def precision_summary(layers: Sequence[Mapping[str, str]]) -> Dict[str, Any]:
    """Counts per execution precision, and which weighted layers run in integers vs float."""
    counts: Dict[str, int] = {}
    for layer in layers:
        counts[layer["precision"]] = counts.get(layer["precision"], 0) + 1
    weighted = [x for x in layers if x["type"] in _WEIGHTED]
    ints = [x["name"] for x in weighted if x["precision"] in _INT_PRECISIONS]
    floats = [x["name"] for x in weighted if x["precision"] not in _INT_PRECISIONS]
    return {
        "layers_by_precision": dict(sorted(counts.items())),
        "weighted_layers": len(weighted),
        "weighted_int8": len(ints),
        "weighted_float": floats,
    }


class OpenVinoRunner(Runner):
    """Runs an OpenVINO IR through ``openvino.Core``; see the module docstring for options."""

    name = "openvino"
    extra = "openvino"

    def __init__(self, root: Path, manifest: Manifest, **options: Any) -> None:
        unknown = sorted(set(options) - set(OpenVinoConfig.KNOWN))
        if unknown:
            raise ConfigError(f"unknown openvino runner option(s) {unknown}; known: {', '.join(OpenVinoConfig.KNOWN)}")
        super().__init__(root, manifest, **options)
        try:
            import openvino as ov
        except ImportError as exc:
            raise missing_runtime("openvino", self.extra, exc) from None
        self._ov = ov
        self.config = OpenVinoConfig.from_options(self.options)
        cfg = self.config
        core = ov.Core()
        check_device(core, cfg.device)
        cache = cfg.cache_path
        if cache is not None:
            try:
                cache.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise ConfigError(f"cannot create the OpenVINO cache folder {cache}: {err.strerror or err}; "
                                  'pass cache_dir="..." or cache_dir="" to turn caching off') from None
            core.set_property({"CACHE_DIR": str(cache)})
        self.core = core
        xml = self.root / manifest.entry
        weights = xml.with_suffix(".bin")
        if not weights.is_file():
            raise PackageError(f"{weights.name}: the IR weights file is missing next to {xml.name}; rebuild the package")
        try:
            model = core.read_model(str(xml), str(weights))
        except RuntimeError as err:
            raise PackageError(
                f"{xml.name} / {weights.name}: OpenVINO cannot read the IR ({_first_line(err)}); "
                "the package is corrupt or truncated — rebuild it with `edgekit build`"
            ) from None
        start = time.perf_counter()
        try:
            self.compiled = core.compile_model(model, cfg.device, cfg.compile_config())
        except RuntimeError as err:
            msg = _first_line(err)
            hint = ""
            if cfg.inference_precision is None and "suitable" in str(err).lower():
                hint = ' (try inference_precision="f32": this CPU\'s default bf16 has no kernel for a layer)'
            raise ConfigError(f"OpenVINO cannot compile {xml.name} for {cfg.device}: {msg}{hint}") from None
        self.compile_s = time.perf_counter() - start
        self._request = self.compiled.create_infer_request()
        self._queue: Any = None
        ports = {}
        for i, out in enumerate(self.compiled.outputs):
            for n in out.get_names():
                ports[n] = i
        missing = [t.name for t in manifest.outputs if t.name not in ports]
        if missing:
            raise PackageError(f"{xml.name}: the IR has no output(s) {missing} that the manifest lists; rebuild the package")
        self._out: Tuple[Tuple[str, int], ...] = tuple((t.name, ports[t.name]) for t in manifest.outputs)
        self._out_ports = tuple((name, self.compiled.outputs[i]) for name, i in self._out)
        in_ports = {n: port for port in self.compiled.inputs for n in port.get_names()}
        missing = [t.name for t in manifest.inputs if t.name not in in_ports]
        if missing:
            raise PackageError(f"{xml.name}: the IR has no input(s) {missing} that the manifest lists; rebuild the package")
        self._in = tuple((t.name, in_ports[t.name]) for t in manifest.inputs)

    # -- inference --------------------------------------------------------
    def _infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        # The fastest synchronous path measured (OpenVINO 2026): wrap the caller's arrays
        # as tensors without a copy, run, copy the outputs out (the next call reuses them).
        # It beats InferRequest.infer(dict), which builds an OVDict per call.
        request = self._request
        tensor = self._ov.Tensor
        for name, port in self._in:
            request.set_tensor(port, tensor(np.ascontiguousarray(feeds[name]), shared_memory=True))
        request.infer()
        return {name: request.get_tensor(port).data.copy() for name, port in self._out_ports}

    def infer_many(self, feeds: Sequence[Mapping[str, np.ndarray]]) -> List[Dict[str, np.ndarray]]:
        """Run many samples through an async request queue (throughput); results in input order.

        Every feed is checked like :meth:`infer`.  With ``performance_hint=THROUGHPUT``
        the requests run in parallel streams.
        """
        feeds = list(feeds)
        for f in feeds:
            self._check(f)
        if self._queue is None:
            jobs = self.config.num_requests or 0
            self._queue = self._ov.AsyncInferQueue(self.compiled, jobs)
        results: List[Any] = [None] * len(feeds)
        out = self._out

        def done(request: Any, index: int) -> None:
            results[index] = {name: request.get_output_tensor(i).data.copy() for name, i in out}

        self._queue.set_callback(done)
        start = time.perf_counter()
        for i, f in enumerate(feeds):
            self._queue.start_async(dict(f), userdata=i)
        self._queue.wait_all()
        self.last_latency_s = (time.perf_counter() - start) / max(1, len(feeds))
        return results

    # -- facts -------------------------------------------------------------
    def _prop(self, key: str) -> Any:
        try:
            return self.compiled.get_property(key)
        except Exception:  # noqa: BLE001 - not every device exposes every property
            return None

    def describe(self) -> Dict[str, Any]:
        """Versions, where it runs, and the per-layer execution precision of the compiled model."""
        layers = runtime_layers(self.compiled)
        precision = self._prop("INFERENCE_PRECISION_HINT")
        cache = self.config.cache_path
        return {
            "runner": self.name,
            "openvino": self._ov.get_version(),
            "compiled": {
                "device": self.config.device,
                "execution_devices": list(self._prop("EXECUTION_DEVICES") or []),
                "performance_hint": str(self._prop("PERFORMANCE_HINT") or self.config.performance_hint.value),
                "num_streams": str(self._prop("NUM_STREAMS")),
                "optimal_requests": self._prop("OPTIMAL_NUMBER_OF_INFER_REQUESTS"),
                "inference_precision": _type_name(precision),
                "cache_dir": str(cache) if cache is not None else None,
                "compile_ms": round(self.compile_s * 1e3, 2),
            },
            "precision_summary": precision_summary(layers),
            "layers": layers,
        }

    def close(self) -> None:
        self._queue = None
        self._request = None
        self.compiled = None

"""OpenVINO runner: an IR (``model.xml`` + ``model.bin``) on an Intel CPU, iGPU or NPU.

Options: declared once in :data:`OPTIONS` (``edgekit targets --json`` lists
them with their defaults), given by ``edgekit.load(..., **options)``, the
package's ``runtime_options`` or the device profile: ``device``,
``performance_hint``, ``num_streams``, ``threads`` (``INFERENCE_NUM_THREADS``;
``num_threads`` is its older name), ``inference_precision``, ``cache_dir``
(device only: OpenVINO's compiled-model cache, default
``edgekit.options.cache_dir("openvino")``; ``""`` turns it off),
``num_requests``.

Precision: a package runs in the precision it was verified in.  OpenVINO
would run an f32 IR in bf16 on CPUs with AMX / AVX512-BF16; unless the call
or the package names ``inference_precision``, :func:`pinned_precision`
decides (fp32 → f32, bf16 → bf16 on a CPU that has it).  An int8 package
built on a bf16 host pins its float parts to bf16 (verified so); on a CPU
without bf16 they run in f32 instead (more exact than verified, never refused).
"""
from __future__ import annotations

import enum
import hashlib
import json
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .. import cpu
from .._validate import first_line
from ..errors import ConfigError, PackageError
from ..manifest import Manifest
from ..options import MAX_THREADS, Option, OptionSchema, cache_dir, threads_option
from .base import FROM_DEFAULT, FROM_PACKAGE, Runner, missing_runtime

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


OPTIONS = OptionSchema("openvino runner", [
    Option("device", str, "CPU", 'CPU, GPU, NPU, AUTO, a numbered device ("GPU.1") or a list ("AUTO:GPU,CPU")'),
    Option("performance_hint", PerformanceHint, PerformanceHint.LATENCY,
           "LATENCY (one request at a time) or THROUGHPUT / CUMULATIVE_THROUGHPUT (streams; use infer_many)"),
    Option("num_streams", (int, str), None, "parallel streams; null = what the hint picks", min=1, max=MAX_THREADS,
           choices=("AUTO",)),
    threads_option("INFERENCE_NUM_THREADS (CPU); 0 = OpenVINO's default", aliases=("num_threads",)),
    Option("inference_precision", InferencePrecision, None,
           "INFERENCE_PRECISION_HINT; null = what the package was verified in (fp32 packages run f32)"),
    Option("cache_dir", (Path, bool), None,
           'the compiled-model cache folder (null = edgekit\'s cache dir, "" or false = off)', device_only=True),
    Option("num_requests", int, None, "async request queue size for infer_many; null = OpenVINO's optimal", min=1,
           max=1024),
])


@dataclass(frozen=True)
class OpenVinoConfig:
    """The runner's options, typed; build it with :meth:`from_options` (checked by :data:`OPTIONS`)."""

    device: str = "CPU"
    performance_hint: PerformanceHint = PerformanceHint.LATENCY
    num_streams: Union[int, str, None] = None
    threads: int = 0
    inference_precision: Optional[InferencePrecision] = None
    cache_dir: Optional[str] = None  # None = default dir; "" = off
    num_requests: Optional[int] = None

    #: every name the runner accepts (current names and older aliases such as num_threads)
    KNOWN = tuple(n for o in OPTIONS.options for n in (o.name, *o.aliases))

    @classmethod
    def from_options(cls, options: Mapping[str, Any], *, source: str = "edgekit.load()") -> "OpenVinoConfig":
        """Take this runner's keys from ``options`` (other runners' keys are ignored) and check them."""
        mine = {k: v for k, v in options.items() if k in OPTIONS}
        return cls.from_checked(OPTIONS.validate(mine, source=source))

    @classmethod
    def from_checked(cls, values: Mapping[str, Any]) -> "OpenVinoConfig":
        device = values["device"].strip().upper()
        if not device:
            raise ConfigError('"device" must be a device name such as "CPU", "GPU", "NPU" or "AUTO", but got \'\'')
        cache = values["cache_dir"]
        cache = "" if cache is False else None if cache is True else cache
        return cls(device=device, performance_hint=values["performance_hint"], num_streams=values["num_streams"],
                   threads=values["threads"], inference_precision=values["inference_precision"], cache_dir=cache,
                   num_requests=values["num_requests"])

    @property
    def cache_path(self) -> Optional[Path]:
        if self.cache_dir == "":
            return None
        return Path(self.cache_dir).expanduser() if self.cache_dir else cache_dir("openvino")

    @property
    def compiled_cache_path(self) -> Optional[Path]:
        """The folder OpenVINO's CACHE_DIR points at: one subfolder per device and compile config.

        OpenVINO 2026.4's CPU plugin keys a cached blob on the model, not on the
        inference precision hint: an IR compiled with ``f32`` and then loaded
        with ``bf16`` imported the f32 blob and returned non-finite outputs.  A
        subfolder per (device, compile config) keeps every pinned precision its own blob.
        """
        root = self.cache_path
        if root is None:
            return None
        text = json.dumps({"device": self.device, **self.compile_config()}, sort_keys=True)
        precision = self.inference_precision.value if self.inference_precision else "default"
        device = re.sub(r"[^A-Za-z0-9.]+", "_", self.device)
        return root / f"{device}-{precision}-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:12]}"

    def compile_config(self) -> Dict[str, Any]:
        """The OpenVINO properties for ``Core.compile_model``."""
        cfg: Dict[str, Any] = {"PERFORMANCE_HINT": self.performance_hint.value}
        if self.num_streams is not None:
            cfg["NUM_STREAMS"] = str(self.num_streams)
        if self.threads:
            cfg["INFERENCE_NUM_THREADS"] = int(self.threads)
        if self.inference_precision is not None:
            cfg["INFERENCE_PRECISION_HINT"] = self.inference_precision.value
        return cfg

    def to_json(self) -> Dict[str, Any]:
        return {
            "device": self.device,
            "performance_hint": self.performance_hint.value,
            "num_streams": self.num_streams,
            "threads": self.threads,
            "inference_precision": self.inference_precision.value if self.inference_precision else None,
            "cache_dir": self.cache_dir,
            "num_requests": self.num_requests,
        }


def runs_on_cpu(device: str) -> bool:
    """Whether ``device`` may run on this host's CPU (CPU itself, or a virtual device that can pick it)."""
    head, _, rest = device.partition(":")
    return device == "CPU" or (head in VIRTUAL_DEVICES and (not rest or "CPU" in _device_names(device)))


def pinned_precision(manifest_precision: str, device: str) -> Tuple[Optional[InferencePrecision], str]:
    """The inference precision a package runs in when neither the call nor the package names one, and why.

    OpenVINO picks the CPU's fastest float type by itself: bf16 on CPUs with
    AMX / AVX512-BF16.  A package runs in what it was verified in, and
    verification runs through this runner, so the choice is made here, the
    same on every host: fp32 → f32 everywhere; bf16 → bf16 (a CPU with
    bf16 compute is required); fp16 and int8 packages that recorded nothing
    run their float parts in f32 on the CPU and in the device default elsewhere.
    """
    if manifest_precision == "fp32":
        return InferencePrecision.F32, "pinned: an fp32 package runs in f32"
    if manifest_precision == "bf16":
        if runs_on_cpu(device) and not cpu.has_bf16():
            raise ConfigError(
                "this package was built and verified in bf16, which needs a CPU with AVX512-BF16 or AMX; this CPU "
                f"has neither (features: {', '.join(sorted(cpu.cpu_features().features)) or 'none detected'}); "
                "rebuild it as fp32, fp16 or int8, or load it with inference_precision=\"f32\" (not what was verified)"
            )
        return InferencePrecision.BF16, "pinned: a bf16 package runs in bf16"
    if device == "CPU":
        return InferencePrecision.F32, f"pinned: the float parts of an {manifest_precision} package run in f32 on the CPU"
    return None, "the device's default"


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
    options = OPTIONS
    writable_inputs = True  # ov.Tensor(shared_memory=True) refuses read-only arrays

    def __init__(self, root: Path, manifest: Manifest, **options: Any) -> None:
        super().__init__(root, manifest, **options)
        cfg = OpenVinoConfig.from_checked(self.options)
        source = self.option_sources["inference_precision"]
        if source == FROM_DEFAULT:
            pinned, self.precision_reason = pinned_precision(manifest.precision, cfg.device)
            cfg = replace(cfg, inference_precision=pinned)
        elif source == FROM_PACKAGE and cfg.inference_precision is InferencePrecision.BF16 \
                and manifest.precision == "int8" and runs_on_cpu(cfg.device) and not cpu.has_bf16():
            # the float parts of an int8 package built on a bf16 host: this CPU computes them in f32
            cfg = replace(cfg, inference_precision=InferencePrecision.F32)
            self.precision_reason = ("the package's float parts were verified in bf16; this CPU has no AVX512-BF16 "
                                     "or AMX, so they run in f32 (closer to fp32 than what was verified)")
        else:
            self.precision_reason = f"set by the {source}"
        self.config = cfg
        try:
            import openvino as ov
        except ImportError as exc:
            raise missing_runtime("openvino", self.extra, exc) from None
        self._ov = ov
        core = ov.Core()
        check_device(core, cfg.device)
        cache = cfg.compiled_cache_path
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
                f"{xml.name} / {weights.name}: OpenVINO cannot read the IR ({first_line(err)}); "
                "the package is corrupt or truncated — rebuild it with `edgekit build`"
            ) from None
        start = time.perf_counter()
        try:
            self.compiled = core.compile_model(model, cfg.device, cfg.compile_config())
        except RuntimeError as err:
            msg = first_line(err)
            hint = ""
            if cfg.inference_precision is not InferencePrecision.F32 and "suitable" in str(err).lower():
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
        # It beats InferRequest.infer(dict), which builds an OVDict per call.  The base class
        # hands over C-contiguous arrays that ``feeds`` keeps alive until infer() returns: a
        # shared tensor over a temporary copy would read freed memory.
        request = self._request
        tensor = self._ov.Tensor
        for name, port in self._in:
            request.set_tensor(port, tensor(feeds[name], shared_memory=True))
        request.infer()
        return {name: request.get_tensor(port).data.copy() for name, port in self._out_ports}

    def infer_many(self, feeds: Sequence[Mapping[str, np.ndarray]]) -> List[Dict[str, np.ndarray]]:
        """Run many samples through an async request queue (throughput); results in input order.

        Every feed is checked like :meth:`infer`.  With ``performance_hint=THROUGHPUT``
        the requests run in parallel streams.
        """
        feeds = [self._check(f) for f in feeds]
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
        cache = self.config.compiled_cache_path
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
                "inference_precision_reason": self.precision_reason,
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

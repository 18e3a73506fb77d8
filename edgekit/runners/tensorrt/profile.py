"""The TensorRT build profile: how the device builds its engine from the packaged ONNX.

TensorRT engines are tied to the GPU, the TensorRT version and the OS, so the
package ships the ONNX graph plus this profile (``manifest.target.details.
build_profile``) and the ``tensorrt`` runner builds the engine on the device.
The profile is part of the engine cache key: change a field, get a new engine.

Pure Python, no TensorRT import: the build host writes it, the device reads it,
and the tests check it without a GPU.
"""
from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..._validate import choices
from ...errors import ConfigError
from ...options import Option

#: bump when the meaning of a field changes, so old cache entries miss
PROFILE_SCHEMA = "edgekit.tensorrt-profile/1"

#: TensorRT's default builder optimization level (0 = fastest build … 5 = most tactics)
DEFAULT_OPTIMIZATION_LEVEL = 3
DEFAULT_WORKSPACE_MIB = 1024


class TrtPrecision(str, enum.Enum):
    """Builder precision flags (fp32 is always allowed; these add lower-precision kernels)."""

    FP16 = "fp16"
    INT8 = "int8"


def _int(value: Any, name: str, lo: int, hi: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        rng = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"
        raise ConfigError(f'"{name}" must be {rng}, but got {value!r}')
    return value


def _shape(value: Any, name: str) -> Tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f'"{name}" must be a non-empty list of positive integers, but got {value!r}')
    for d in value:
        if isinstance(d, bool) or not isinstance(d, int) or d <= 0:
            raise ConfigError(f'"{name}" must be a non-empty list of positive integers, but got {value!r}')
    return tuple(value)


@dataclass(frozen=True)
class ShapeRange:
    """min / opt / max shape of one input (equal for static inputs)."""

    min: Tuple[int, ...]
    opt: Tuple[int, ...]
    max: Tuple[int, ...]

    def __post_init__(self) -> None:
        mn, op, mx = (_shape(getattr(self, k), k) for k in ("min", "opt", "max"))
        if not (len(mn) == len(op) == len(mx)):
            raise ConfigError(f'"shapes" min/opt/max must have the same rank, but got {list(mn)}, {list(op)}, {list(mx)}')
        if not all(a <= b <= c for a, b, c in zip(mn, op, mx)):
            raise ConfigError(f'"shapes" must satisfy min <= opt <= max per dimension, but got {list(mn)}, {list(op)}, {list(mx)}')
        object.__setattr__(self, "min", mn)
        object.__setattr__(self, "opt", op)
        object.__setattr__(self, "max", mx)

    @classmethod
    def static(cls, shape: Tuple[int, ...]) -> "ShapeRange":
        return cls(tuple(shape), tuple(shape), tuple(shape))

    @property
    def is_static(self) -> bool:
        return self.min == self.opt == self.max

    def to_json(self) -> Dict[str, List[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


@dataclass(frozen=True)
class BuildProfile:
    """Everything the device-side engine build depends on besides the ONNX bytes.

    ``precisions``: builder flags (int8 implies fp16 so layers left in float run
    in half precision, as NVIDIA recommends for explicitly quantized networks).
    ``workspace_mib``: builder workspace memory-pool limit.  ``shapes``: per
    input min/opt/max (one optimization profile).  ``dla_core``: run on that
    DLA core (Jetson AGX Orin / Xavier), with ``gpu_fallback`` for layers the
    DLA lacks.  ``builder_optimization_level``: 0–5 (TensorRT 8.6+).
    ``timing_cache``: reuse / update the on-device timing cache.
    ``trt_version``: the TensorRT version the graph was checked against.
    """

    precisions: Tuple[TrtPrecision, ...] = ()
    workspace_mib: int = DEFAULT_WORKSPACE_MIB
    shapes: Mapping[str, ShapeRange] = field(default_factory=dict)
    dla_core: Optional[int] = None
    gpu_fallback: bool = True
    builder_optimization_level: int = DEFAULT_OPTIMIZATION_LEVEL
    timing_cache: bool = True
    trt_version: str = "10"

    def __post_init__(self) -> None:
        precs = []
        for p in self.precisions:
            if isinstance(p, TrtPrecision):
                precs.append(p)
                continue
            try:
                precs.append(TrtPrecision(p))
            except ValueError:
                raise ConfigError(f'"precisions" entries must be one of {choices(TrtPrecision)}, but got {p!r}') from None
        if TrtPrecision.INT8 in precs and TrtPrecision.FP16 not in precs:
            precs.append(TrtPrecision.FP16)
        object.__setattr__(self, "precisions", tuple(sorted(set(precs), key=lambda p: p.value)))
        _int(self.workspace_mib, "workspace_mib", 16)
        if self.dla_core is not None:
            _int(self.dla_core, "dla_core", 0, 1)
            if not self.precisions:
                raise ConfigError(
                    '"dla_core" needs fp16 or int8: the DLA runs no fp32 layers; build with --precision fp16 or int8, '
                    "or drop dla_core"
                )
        if not isinstance(self.gpu_fallback, bool):
            raise ConfigError(f'"gpu_fallback" must be true or false, but got {self.gpu_fallback!r}')
        if not isinstance(self.timing_cache, bool):
            raise ConfigError(f'"timing_cache" must be true or false, but got {self.timing_cache!r}')
        _int(self.builder_optimization_level, "builder_optimization_level", 0, 5)
        if not isinstance(self.trt_version, str) or not self.trt_version.replace(".", "").isdigit():
            raise ConfigError(f'"trt_version" must be a version such as "10.3" or "8.5", but got {self.trt_version!r}')
        if not isinstance(self.shapes, Mapping):
            raise ConfigError(f'"shapes" must map input names to min/opt/max, but got {self.shapes!r}')
        for name, rng in self.shapes.items():
            if not isinstance(rng, ShapeRange):
                raise ConfigError(f'"shapes[{name!r}]" must be a ShapeRange, but got {type(rng).__name__}')
        object.__setattr__(self, "shapes", dict(sorted(self.shapes.items())))

    # -- JSON -------------------------------------------------------------
    def to_json(self) -> Dict[str, Any]:
        return {
            "schema": PROFILE_SCHEMA,
            "precisions": [p.value for p in self.precisions],
            "workspace_mib": self.workspace_mib,
            "shapes": {k: v.to_json() for k, v in self.shapes.items()},
            "dla_core": self.dla_core,
            "gpu_fallback": self.gpu_fallback,
            "builder_optimization_level": self.builder_optimization_level,
            "timing_cache": self.timing_cache,
            "trt_version": self.trt_version,
        }

    @classmethod
    def from_json(cls, data: Any, where: str = "build_profile") -> "BuildProfile":
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected an object, got {type(data).__name__}")
        schema = data.get("schema", PROFILE_SCHEMA)
        if schema != PROFILE_SCHEMA:
            raise ConfigError(
                f"{where}.schema: this edgekit reads {PROFILE_SCHEMA!r}, but got {schema!r}; rebuild the package "
                "with this edgekit or upgrade edgekit on the device"
            )
        known = {"schema", "precisions", "workspace_mib", "shapes", "dla_core", "gpu_fallback",
                 "builder_optimization_level", "timing_cache", "trt_version"}
        for key in data:
            if key not in known:
                raise ConfigError(f"{where}.{key}: unknown field; known fields are {sorted(known - {'schema'})}")
        kwargs = {k: v for k, v in data.items() if k != "schema"}
        shapes = kwargs.pop("shapes", {}) or {}
        if not isinstance(shapes, Mapping):
            raise ConfigError(f"{where}.shapes: expected an object of input name → {{min, opt, max}}")
        ranges = {}
        for name, rng in shapes.items():
            if not isinstance(rng, Mapping) or set(rng) != {"min", "opt", "max"}:
                raise ConfigError(f"{where}.shapes[{name!r}]: expected {{\"min\": [...], \"opt\": [...], \"max\": [...]}}")
            try:
                ranges[name] = ShapeRange(rng["min"], rng["opt"], rng["max"])
            except ConfigError as err:
                raise ConfigError(f"{where}.shapes[{name!r}]: {err}") from None
        if "precisions" in kwargs and not isinstance(kwargs["precisions"], (list, tuple)):
            raise ConfigError(f"{where}.precisions: expected a list such as [\"fp16\"], got {kwargs['precisions']!r}")
        try:
            return cls(shapes=ranges, **{k: (tuple(v) if k == "precisions" else v) for k, v in kwargs.items()})
        except ConfigError as err:
            msg = str(err)
            if msg.startswith('"'):
                end = msg.find('"', 1)
                msg = f"{where}.{msg[1:end]}: {msg[end + 2:]}"
            raise ConfigError(msg) from None

    def canonical(self) -> str:
        """Stable text of the profile (sorted keys): what the cache key hashes."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))

    #: fields a user may override when loading a package (``edgekit.load(pkg, dla_core=1)``)
    OVERRIDABLE = ("workspace_mib", "dla_core", "gpu_fallback", "builder_optimization_level", "timing_cache")

    def with_overrides(self, options: Mapping[str, Any]) -> "BuildProfile":
        """The profile with the overridable fields that ``options`` sets (None = keep the package's)."""
        changes = {k: options[k] for k in self.OVERRIDABLE if options.get(k) is not None}
        return replace(self, **changes) if changes else self

    @property
    def uses_dla(self) -> bool:
        return self.dla_core is not None


#: runner options that override the package's build profile on the device (None = the package's value);
#: shared by the ``tensorrt`` and ``onnxruntime-gpu`` runners.  Range checks stay in :class:`BuildProfile`.
PROFILE_OVERRIDES = (
    Option("workspace_mib", int, None, "TensorRT builder workspace (MiB)", min=16),
    Option("dla_core", int, None, "run on this DLA core (Jetson AGX Orin / Xavier)", min=0, max=1),
    Option("gpu_fallback", bool, None, "let layers the DLA lacks run on the GPU"),
    Option("builder_optimization_level", int, None, "TensorRT builder optimization level", min=0, max=5),
    Option("timing_cache", bool, None, "reuse and update the device's timing cache"),
)

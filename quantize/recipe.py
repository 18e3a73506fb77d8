"""Quantization recipes as data.

A :class:`Recipe` says *how* to quantize: the calibration method, how many
samples to calibrate on, and per-op settings with the precedence
``global_config`` → ``op_types[op_type]`` → ``nodes[node_name]`` (the most
specific wins, as a whole — fields are not merged; the coremltools
``OptimizationConfig`` rule).  ``exclude_nodes`` / ``exclude_op_types`` are
short-hands for a config with ``skip=True`` and win over everything.

Recipes are frozen, validated at construction, and round-trip through JSON
(``Recipe.from_json(recipe.to_json()) == recipe``); the pipeline saves the
JSON next to the artifact (``manifest.quantization.recipe``).  Errors name the
field path: ``recipe.op_types.Conv.activation_dtype: must be one of
{'uint8', 'int8', 'uint16', 'int16'}, but got 'fp8'``.

Example recipe file::

    {"method": "percentile", "percentile": 99.99, "num_samples": 300,
     "global_config": {"activation_dtype": "uint8", "weight_dtype": "int8"},
     "op_types": {"Softmax": {"skip": true}},
     "nodes": {"/head/Gemm": {"activation_dtype": "uint16"},
               "/neck/Concat": {"method": "mse"}},
     "exclude_nodes": ["/stem/Conv"]}

``method`` / ``percentile`` inside an op config choose the range rule of the
activations that op *outputs* (``null``: the recipe's own); every target
that calibrates per tensor honours them (openvino refuses them: NNCF has one
range estimator per model).
"""
from __future__ import annotations

import enum
import json
import math
import types
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from edgekit._validate import coerce_enum
from edgekit.errors import ConfigError

SCHEMA = "edgekit.recipe/1"


class CalibrationMethod(str, enum.Enum):
    """How activation ranges are chosen from the calibration samples."""

    MINMAX = "minmax"  #: the observed min/max
    PERCENTILE = "percentile"  #: clip to the given percentile of |x|
    ENTROPY = "entropy"  #: KL-divergence (TensorRT-style) threshold
    MSE = "mse"  #: the shrink of the observed range with the least expected squared error


class QuantDtype(str, enum.Enum):
    """Integer storage type of a quantized tensor."""

    UINT8 = "uint8"
    INT8 = "int8"
    UINT16 = "uint16"
    INT16 = "int16"


ACTIVATION_DTYPES: Tuple[QuantDtype, ...] = (QuantDtype.UINT8, QuantDtype.INT8, QuantDtype.UINT16, QuantDtype.INT16)
WEIGHT_DTYPES: Tuple[QuantDtype, ...] = (QuantDtype.INT8, QuantDtype.UINT8)


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f'"{name}" must be true or false, but got {value!r}')
    return value


def _percentile(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0.0 < value <= 100.0:
        raise ConfigError(f'"{name}" must be a number in (0, 100], but got {value!r}')
    return float(value)


def _fields_of(cls: Any, data: Any, where: str, extra: Tuple[str, ...] = ()) -> None:
    """``data`` is a JSON object whose keys are fields of ``cls`` (or ``extra``); else a ConfigError naming the path."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected an object, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    for key in data:
        if key not in known and key not in extra:
            raise ConfigError(f"{where}.{key}: unknown field; known fields are {sorted(known)}")


def _prefixed(where: str, err: ConfigError) -> ConfigError:
    """Turn ``"x" must be ...`` into ``where.x: must be ...`` so the path is exact."""
    msg = str(err)
    if msg.startswith('"'):
        end = msg.find('"', 1)
        if end > 0:
            return ConfigError(f"{where}.{msg[1:end]}: {msg[end + 2:]}")
    return ConfigError(f"{where}: {msg}")


@dataclass(frozen=True)
class OpConfig:
    """Quantization settings for one op (or the whole model, as ``global_config``).

    ``activation_dtype``: integer type of activations (uint8 is the portable
    default: every CPU kernel and OpenVINO accept it).  ``weight_dtype``: int8
    (symmetric) or uint8.  ``per_channel``: one weight scale per output
    channel.  ``symmetric_activations``: zero-point fixed at 0 / the midpoint.
    ``skip``: keep this op in float.  ``reduce_range``: 7-bit weights, for
    x86 CPUs without VNNI whose u8×s8 int8 kernels saturate 16-bit pair sums;
    None lets the target decide from the device's CPU features (VNNI), never
    from the architecture name alone.  ``method`` / ``percentile``: the range
    rule for the activations this op outputs (None: the recipe's ``method`` /
    ``percentile``) — e.g. MSE for a head whose outliers min-max would keep.
    """

    activation_dtype: QuantDtype = QuantDtype.UINT8
    weight_dtype: QuantDtype = QuantDtype.INT8
    per_channel: bool = True
    symmetric_activations: bool = False
    skip: bool = False
    reduce_range: Optional[bool] = None
    method: Optional[CalibrationMethod] = None
    percentile: Optional[float] = None

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "activation_dtype", coerce_enum(self.activation_dtype, QuantDtype, "activation_dtype", ACTIVATION_DTYPES)
        )
        object.__setattr__(self, "weight_dtype", coerce_enum(self.weight_dtype, QuantDtype, "weight_dtype", WEIGHT_DTYPES))
        _bool(self.per_channel, "per_channel")
        _bool(self.symmetric_activations, "symmetric_activations")
        _bool(self.skip, "skip")
        if self.reduce_range is not None:
            _bool(self.reduce_range, "reduce_range")
        if self.method is not None:
            object.__setattr__(self, "method", coerce_enum(self.method, CalibrationMethod, "method"))
        if self.percentile is not None:
            object.__setattr__(self, "percentile", _percentile(self.percentile, "percentile"))

    def to_json(self) -> Dict[str, Any]:
        return {f.name: getattr(getattr(self, f.name), "value", getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_json(cls, data: Any, where: str = "op_config") -> "OpConfig":
        _fields_of(cls, data, where)
        try:
            return cls(**data)
        except ConfigError as err:
            raise _prefixed(where, err) from None


def _op_map(value: Any, name: str) -> Mapping[str, OpConfig]:
    if not isinstance(value, Mapping):
        raise ConfigError(f'"{name}" must be a mapping of name to OpConfig, but got {type(value).__name__}')
    out: Dict[str, OpConfig] = {}
    for key, cfg in value.items():
        if not isinstance(key, str) or not key:
            raise ConfigError(f'"{name}" keys must be non-empty strings, but got {key!r}')
        if not isinstance(cfg, OpConfig):
            raise ConfigError(f'"{name}[{key!r}]" must be an OpConfig, but got {type(cfg).__name__}')
        out[key] = cfg
    # read-only view: a frozen recipe must not change under the pipeline's feet
    return types.MappingProxyType(out)


def _str_tuple(value: Any, name: str) -> Tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple, set, frozenset)):
        raise ConfigError(f'"{name}" must be a list of strings, but got {value!r}')
    items = tuple(sorted(value)) if isinstance(value, (set, frozenset)) else tuple(value)
    for item in items:
        if not isinstance(item, str) or not item:
            raise ConfigError(f'"{name}" must be a list of non-empty strings, but got {item!r}')
    return items


@dataclass(frozen=True)
class Recipe:
    """How to quantize a model; see the module docstring for the precedence rules."""

    method: CalibrationMethod = CalibrationMethod.MINMAX
    percentile: float = 99.999
    num_samples: int = 200
    global_config: OpConfig = field(default_factory=OpConfig)
    op_types: Mapping[str, OpConfig] = field(default_factory=dict)
    nodes: Mapping[str, OpConfig] = field(default_factory=dict)
    exclude_nodes: Tuple[str, ...] = ()
    exclude_op_types: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", coerce_enum(self.method, CalibrationMethod, "method"))
        object.__setattr__(self, "percentile", _percentile(self.percentile, "percentile"))
        n = self.num_samples
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f'"num_samples" must be a positive integer, but got {n!r}')
        if not isinstance(self.global_config, OpConfig):
            raise ConfigError(f'"global_config" must be an OpConfig, but got {type(self.global_config).__name__}')
        object.__setattr__(self, "op_types", _op_map(self.op_types, "op_types"))
        object.__setattr__(self, "nodes", _op_map(self.nodes, "nodes"))
        object.__setattr__(self, "exclude_nodes", _str_tuple(self.exclude_nodes, "exclude_nodes"))
        object.__setattr__(self, "exclude_op_types", _str_tuple(self.exclude_op_types, "exclude_op_types"))
        for where, cfg in self.configs():
            # a percentile under another rule would be silently unused: say so instead
            if cfg.percentile is not None and (cfg.method or self.method) is not CalibrationMethod.PERCENTILE:
                raise ConfigError(f'"{where}.percentile" needs method \'percentile\', but the method '
                                  f"there is {(cfg.method or self.method).value!r}; set \"method\": \"percentile\" "
                                  "or drop the percentile")

    # MappingProxyType is unhashable; hash what identifies the recipe instead.
    def __hash__(self) -> int:
        return hash(json.dumps(self.to_json(), sort_keys=True))

    def config_for(self, node_name: str, op_type: str) -> OpConfig:
        """The settings for one node: node name beats op type beats global; excludes win."""
        cfg = self.nodes.get(node_name) or self.op_types.get(op_type) or self.global_config
        if node_name in self.exclude_nodes or op_type in self.exclude_op_types:
            cfg = replace(cfg, skip=True)
        return cfg

    def range_rule(self, node_name: str, op_type: str) -> Tuple[CalibrationMethod, float]:
        """(method, percentile) for the activations one node outputs: its config's, else the recipe's."""
        cfg = self.config_for(node_name, op_type)
        return cfg.method or self.method, cfg.percentile if cfg.percentile is not None else self.percentile

    @property
    def per_op_methods(self) -> bool:
        """Whether some op type or node picks its own range rule."""
        return any(cfg.method is not None or cfg.percentile is not None for _, cfg in self.configs())

    def skips(self, node_name: str, op_type: str) -> bool:
        return self.config_for(node_name, op_type).skip

    def configs(self) -> Tuple[Tuple[str, OpConfig], ...]:
        """Every config with its path: ``global_config``, ``op_types.X``, ``nodes.Y``."""
        return (("global_config", self.global_config), *((f"op_types.{k}", c) for k, c in self.op_types.items()),
                *((f"nodes.{k}", c) for k, c in self.nodes.items()))

    def require(self, target: str, *, activation_dtypes: Tuple[QuantDtype, ...], weight_dtypes: Tuple[QuantDtype, ...],
                reduce_range: bool = True, why: str = "") -> None:
        """One ConfigError naming every (non-skipped) setting outside what ``target``'s kernels run."""
        problems = []
        for where, cfg in self.configs():
            if cfg.skip:
                continue
            if cfg.activation_dtype not in activation_dtypes:
                problems.append(f"{where}.activation_dtype={cfg.activation_dtype.value!r}")
            if cfg.weight_dtype not in weight_dtypes:
                problems.append(f"{where}.weight_dtype={cfg.weight_dtype.value!r}")
            if cfg.reduce_range and not reduce_range:
                problems.append(f"{where}.reduce_range=true")
        if problems:
            raise ConfigError(
                f"the {target} target cannot honour recipe setting(s) {', '.join(problems)}: "
                + (why or f"it quantizes activations to {{{', '.join(repr(d.value) for d in activation_dtypes)}}} "
                          f"and weights to {{{', '.join(repr(d.value) for d in weight_dtypes)}}}")
                + "; change the recipe or pick another target")

    # -- JSON ---------------------------------------------------------------
    def to_json(self) -> Dict[str, Any]:
        return {
            "schema": SCHEMA,
            "method": self.method.value,
            "percentile": self.percentile,
            "num_samples": self.num_samples,
            "global_config": self.global_config.to_json(),
            "op_types": {k: v.to_json() for k, v in self.op_types.items()},
            "nodes": {k: v.to_json() for k, v in self.nodes.items()},
            "exclude_nodes": list(self.exclude_nodes),
            "exclude_op_types": list(self.exclude_op_types),
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2) + "\n"

    @classmethod
    def from_json(cls, data: Any, where: str = "recipe") -> "Recipe":
        """Parse a recipe document; every error (a :class:`ConfigError`) names the field path."""
        _fields_of(cls, data, where, extra=("schema",))
        schema = data.get("schema", SCHEMA)
        if schema != SCHEMA:
            raise ConfigError(f"{where}.schema: this edgekit reads {SCHEMA!r}, but got {schema!r}")
        kwargs: Dict[str, Any] = {}
        for key in ("method", "percentile", "num_samples"):
            if key in data:
                kwargs[key] = data[key]
        if "global_config" in data:
            kwargs["global_config"] = OpConfig.from_json(data["global_config"], f"{where}.global_config")
        for key in ("op_types", "nodes"):
            if key in data:
                value = data[key]
                if not isinstance(value, dict):
                    raise ConfigError(f"{where}.{key}: expected an object of name to config, got {type(value).__name__}")
                kwargs[key] = {k: OpConfig.from_json(v, f"{where}.{key}.{k}") for k, v in value.items()}
        for key in ("exclude_nodes", "exclude_op_types"):
            if key in data:
                value = data[key]
                if not isinstance(value, list):
                    raise ConfigError(f"{where}.{key}: expected a list of names, got {type(value).__name__}")
                kwargs[key] = tuple(value)
        try:
            return cls(**kwargs)
        except ConfigError as err:
            raise _prefixed(where, err) from None

    @classmethod
    def load(cls, path: Union[str, Path]) -> "Recipe":
        """Read a recipe JSON file."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"recipe file {p} does not exist; check the path") from None
        except OSError as err:
            raise ConfigError(f"cannot read recipe file {p}: {err.strerror or err}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{p}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
        return cls.from_json(data, where=p.name)

    def save(self, path: Union[str, Path]) -> Path:
        p = Path(path)
        p.write_text(self.dumps(), encoding="utf-8")
        return p

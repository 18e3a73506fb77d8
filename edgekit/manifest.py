"""The package manifest (``manifest.json``, schema ``edgekit.manifest/1``).

The manifest is plain JSON so that apps in any language can read it; the JSON
Schema ships as ``edgekit/schema/manifest.schema.json``.  This module parses it
into frozen objects and names the exact field when something is wrong
(``manifest.inputs[0].shape[1]: expected a positive integer, got -1``).
Validation is hand-written so the device side needs no jsonschema.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .errors import ManifestError

SCHEMA = "edgekit.manifest/1"
PRECISIONS = ("fp32", "fp16", "int8")
DTYPES = ("float32", "float16", "int8", "uint8", "int16", "uint16", "int32", "int64", "bool")
LAYOUTS = ("nchw", "nhwc", "nc", "ncw", "nwc", "ntc", "any")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return repr(value) if len(value) < 40 else "a string"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


class _Reader:
    """Typed access to a JSON object that reports the field path on error."""

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, dict):
            raise ManifestError(f"{path}: expected an object, got {_type_name(data)}")
        self.data = data
        self.path = path

    def _missing(self, key: str) -> ManifestError:
        return ManifestError(f"{self.path}.{key}: required field is missing")

    def raw(self, key: str, default: Any = ..., ) -> Any:
        if key not in self.data:
            if default is ...:
                raise self._missing(key)
            return default
        return self.data[key]

    def str(self, key: str, default: Any = ..., choices: Optional[Sequence[str]] = None) -> Any:
        value = self.raw(key, default)
        if value is None and default is None:
            return None
        if not isinstance(value, str):
            raise ManifestError(f"{self.path}.{key}: expected a string, got {_type_name(value)}")
        if choices is not None and value not in choices:
            raise ManifestError(
                f"{self.path}.{key}: must be one of {{{', '.join(map(repr, choices))}}}, but got {value!r}"
            )
        return value

    def obj(self, key: str, default: Any = ...) -> Any:
        value = self.raw(key, default)
        if value is None and default is None:
            return None
        if not isinstance(value, dict):
            raise ManifestError(f"{self.path}.{key}: expected an object, got {_type_name(value)}")
        return value

    def list(self, key: str, default: Any = ...) -> Any:
        value = self.raw(key, default)
        if value is None and default is None:
            return None
        if not isinstance(value, list):
            raise ManifestError(f"{self.path}.{key}: expected a list, got {_type_name(value)}")
        return value

    def number(self, key: str, default: Any = ...) -> Any:
        value = self.raw(key, default)
        if value is None and default is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ManifestError(f"{self.path}.{key}: expected a number, got {_type_name(value)}")
        return value

    def int(self, key: str, default: Any = ...) -> Any:
        value = self.raw(key, default)
        if value is None and default is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ManifestError(f"{self.path}.{key}: expected an integer, got {_type_name(value)}")
        return value


@dataclass(frozen=True)
class QuantParams:
    """Affine quantization of an integer tensor: real = (q - zero_point) * scale."""

    scale: float
    zero_point: int

    def to_json(self) -> Dict[str, Any]:
        return {"scale": self.scale, "zero_point": self.zero_point}


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output as the artifact sees it."""

    name: str
    shape: Tuple[int, ...]
    dtype: str = "float32"
    layout: Optional[str] = None
    quantization: Optional[QuantParams] = None

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ManifestError(f'"dtype" must be one of {set(DTYPES)}, but got {self.dtype!r}')

    def to_json(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "layout": self.layout,
            "quantization": self.quantization.to_json() if self.quantization else None,
        }

    @classmethod
    def from_json(cls, data: Any, path: str) -> "TensorSpec":
        r = _Reader(data, path)
        shape = r.list("shape")
        for i, dim in enumerate(shape):
            if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
                raise ManifestError(f"{path}.shape[{i}]: expected a positive integer, got {_type_name(dim)}")
        q = r.obj("quantization", None)
        quant = None
        if q is not None:
            qr = _Reader(q, f"{path}.quantization")
            quant = QuantParams(float(qr.number("scale")), int(qr.int("zero_point")))
        return cls(
            name=r.str("name"),
            shape=tuple(shape),
            dtype=r.str("dtype", choices=DTYPES),
            layout=r.str("layout", None, choices=LAYOUTS) if r.raw("layout", None) is not None else None,
            quantization=quant,
        )


@dataclass(frozen=True)
class Manifest:
    """Parsed ``manifest.json``.  ``data`` keeps the full JSON document."""

    name: str
    created: str
    edgekit_version: str
    target: str
    device: Optional[str]
    runtime: str
    runtime_options: Mapping[str, Any]
    precision: str
    inputs: Tuple[TensorSpec, ...]
    outputs: Tuple[TensorSpec, ...]
    preprocess: Tuple[Any, ...]
    postprocess: Any
    labels: Optional[Tuple[str, ...]]
    entry: str
    files: Mapping[str, str]
    data: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def input_names(self) -> List[str]:
        return [t.name for t in self.inputs]

    @property
    def verification(self) -> Mapping[str, Any]:
        return self.data.get("verification") or {}

    def to_json(self) -> Dict[str, Any]:
        return dict(self.data)


def parse_manifest(data: Any, labels: Optional[Sequence[str]] = None) -> Manifest:
    """Validate a manifest document; every error names the field path."""
    from . import postprocess as _post
    from . import preprocess as _pre

    r = _Reader(data, "manifest")
    schema = r.str("schema")
    if schema != SCHEMA:
        raise ManifestError(
            f"manifest.schema: this edgekit reads {SCHEMA!r}, but the package says {schema!r}; "
            "rebuild the package with this edgekit or upgrade edgekit"
        )
    source = _Reader(r.obj("source"), "manifest.source")
    source.str("format")
    sha = source.str("sha256")
    if not _SHA256.match(sha):
        raise ManifestError(f"manifest.source.sha256: expected 64 lowercase hex digits, got {_type_name(sha)}")
    target = _Reader(r.obj("target"), "manifest.target")
    runtime_options = target.obj("runtime_options", {})
    target.obj("runtime_versions", {})
    inputs = tuple(TensorSpec.from_json(x, f"manifest.inputs[{i}]") for i, x in enumerate(r.list("inputs")))
    outputs = tuple(TensorSpec.from_json(x, f"manifest.outputs[{i}]") for i, x in enumerate(r.list("outputs")))
    if not inputs:
        raise ManifestError("manifest.inputs: expected at least one input, got an empty list")
    if not outputs:
        raise ManifestError("manifest.outputs: expected at least one output, got an empty list")
    preprocess = _pre.steps_from_json(r.list("preprocess"), where="manifest.preprocess")
    postprocess = _post.config_from_json(r.obj("postprocess"), where="manifest.postprocess")
    artifact = _Reader(r.obj("artifact"), "manifest.artifact")
    entry = artifact.str("entry")
    files = r.obj("files")
    for name, digest in files.items():
        if not isinstance(digest, str) or not _SHA256.match(digest):
            raise ManifestError(f"manifest.files[{name!r}]: expected a sha256 hex digest, got {_type_name(digest)}")
    if entry not in files:
        raise ManifestError(f"manifest.artifact.entry: {entry!r} is not listed in manifest.files")
    precision = r.str("precision", choices=PRECISIONS)
    return Manifest(
        name=r.str("name"),
        created=r.str("created"),
        edgekit_version=r.str("edgekit_version"),
        target=target.str("name"),
        device=target.str("device", None),
        runtime=target.str("runtime"),
        runtime_options=dict(runtime_options),
        precision=precision,
        inputs=inputs,
        outputs=outputs,
        preprocess=preprocess,
        postprocess=postprocess,
        labels=tuple(labels) if labels is not None else None,
        entry=entry,
        files=dict(files),
        data=data,
    )


def dumps(data: Mapping[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=False) + "\n"

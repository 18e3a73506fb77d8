"""Frozen dataclasses as JSON documents: one description → parser, writer and JSON Schema.

The manifest model (:mod:`edgekit.manifest`) is a tree of frozen dataclasses.
Their type hints are the single description of the format: :func:`parse`
type-checks a JSON value against them and names the exact field on error
(``manifest.verification.samples: expected an integer, got 'ten'``),
:func:`dump` writes them back, and :func:`schema` derives the JSON Schema
that ships in ``edgekit/schema/``.  Hand-written so the device side needs
neither pydantic nor jsonschema.

Supported field types: ``str``, ``int``, ``float``, ``bool``, ``Any`` (any
JSON value), ``Optional[X]``, ``Tuple[X, ...]``, ``Mapping[str, X]`` and
nested dataclasses.  Per-field options go in ``dataclasses.field(metadata=
meta(...))``: a JSON name, allowed strings, a pattern, a minimum, a custom
codec, ``extra`` (the field collects the keys the class does not declare,
and they are written back flat) and ``skip`` (not part of the JSON).
Unknown keys in a class without an ``extra`` field are ignored, so a reader
accepts manifests that later versions of the same schema extend.
"""
from __future__ import annotations

import collections.abc
import dataclasses
import math
import re
import typing
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from .errors import ManifestError

_NoneType = type(None)
_SEQUENCES = (tuple, list, collections.abc.Sequence)
_MAPPINGS = (dict, collections.abc.Mapping)


class Codec(typing.NamedTuple):
    """A field with its own JSON form (e.g. the preprocessing steps).

    ``parse(value, path, parent)`` gets the raw parent object too, for fields
    whose type depends on a sibling (target details depend on the target name).
    """

    parse: Callable[[Any, str, Mapping[str, Any]], Any]
    dump: Callable[[Any], Any]
    schema: Callable[[Dict[str, Any]], Dict[str, Any]]


def meta(
    *,
    json: Optional[str] = None,
    choices: Optional[Sequence[str]] = None,
    pattern: Optional[str] = None,
    minimum: Optional[float] = None,
    codec: Optional[Codec] = None,
    extra: bool = False,
    skip: bool = False,
    description: Optional[str] = None,
) -> Dict[str, Any]:
    """Field metadata understood by :func:`parse`, :func:`dump` and :func:`schema`."""
    out: Dict[str, Any] = {}
    for key, value in (("json", json), ("choices", tuple(choices) if choices is not None else None),
                       ("pattern", pattern), ("minimum", minimum), ("codec", codec),
                       ("description", description)):
        if value is not None:
            out[key] = value
    if extra:
        out["extra"] = True
    if skip:
        out["skip"] = True
    return out


def show(value: Any) -> str:
    """A short description of a JSON value for error messages."""
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


def _fail(path: str, expected: str, value: Any) -> ManifestError:
    return ManifestError(f"{path}: expected {expected}, got {show(value)}")


# ----------------------------------------------------------------- type introspection
_HINTS: Dict[type, Dict[str, Any]] = {}


def _hints(cls: type) -> Dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _optional_arg(tp: Any) -> Optional[Any]:
    """X for Optional[X], else None."""
    if typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not _NoneType]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0]
    return None


def _json_fields(cls: type) -> List[Tuple[dataclasses.Field, str, Any]]:
    hints = _hints(cls)
    return [(f, f.metadata.get("json", f.name), hints[f.name]) for f in dataclasses.fields(cls)
            if not f.metadata.get("skip")]


def _has_default(f: dataclasses.Field) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING  # type: ignore[misc]


# ----------------------------------------------------------------- parse
def _check_any(value: Any, path: str) -> Any:
    """A JSON value: objects with string keys, lists, strings, finite numbers, booleans, null."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _fail(path, "a finite number", value)
        return value
    if isinstance(value, list):
        return [_check_any(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise _fail(path, "an object with string keys", value)
            out[k] = _check_any(v, f"{path}.{k}")
        return out
    raise _fail(path, "a JSON value", value)


def parse_value(tp: Any, value: Any, path: str, md: Mapping[str, Any] = {}) -> Any:  # noqa: B006 - read only
    """Check ``value`` against type ``tp``; return the typed Python value."""
    inner = _optional_arg(tp)
    if inner is not None:
        return None if value is None else parse_value(inner, value, path, md)
    if tp is Any:
        return _check_any(value, path)
    if dataclasses.is_dataclass(tp):
        return parse(tp, value, path)
    origin = typing.get_origin(tp)
    if origin in _SEQUENCES:
        if not isinstance(value, list):
            raise _fail(path, "a list", value)
        item = typing.get_args(tp)[0]
        return tuple(parse_value(item, v, f"{path}[{i}]", md) for i, v in enumerate(value))
    if origin in _MAPPINGS:
        if not isinstance(value, dict):
            raise _fail(path, "an object", value)
        item = typing.get_args(tp)[1]
        return {str(k): parse_value(item, v, f"{path}[{k!r}]", md) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise _fail(path, "true or false", value)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(path, "an integer", value)
        _check_min(value, path, md)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise _fail(path, "a number", value)
        _check_min(value, path, md)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _fail(path, "a string", value)
        choices = md.get("choices")
        if choices is not None and value not in choices:
            raise ManifestError(f"{path}: must be one of {{{', '.join(map(repr, choices))}}}, but got {value!r}")
        pattern = md.get("pattern")
        if pattern is not None and not re.match(pattern, value):
            raise ManifestError(f"{path}: {md.get('description') or 'does not match ' + pattern}, got {show(value)}")
        return value
    raise TypeError(f"edgekit._jsontypes: unsupported field type {tp!r} at {path}")  # a bug in the model


def _check_min(value: float, path: str, md: Mapping[str, Any]) -> None:
    minimum = md.get("minimum")
    if minimum == 1 and isinstance(value, int) and value < 1:
        raise ManifestError(f"{path}: expected a positive integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ManifestError(f"{path}: expected a number ≥ {minimum:g}, got {value!r}")


def parse(cls: type, data: Any, path: str) -> Any:
    """Build dataclass ``cls`` from a JSON object, checking every field."""
    if not isinstance(data, dict):
        raise _fail(path, "an object", data)
    kwargs: Dict[str, Any] = {}
    declared = set()
    extra_field = None
    for f, key, tp in _json_fields(cls):
        if f.metadata.get("extra"):
            extra_field = f
            continue
        declared.add(key)
        where = f"{path}.{key}"
        if key not in data:
            if _has_default(f):
                continue
            raise ManifestError(f"{where}: required field is missing")
        codec = f.metadata.get("codec")
        if codec is not None:
            kwargs[f.name] = codec.parse(data[key], where, data)
        else:
            kwargs[f.name] = parse_value(tp, data[key], where, f.metadata)
    if extra_field is not None:
        kwargs[extra_field.name] = {k: _check_any(v, f"{path}.{k}") for k, v in data.items() if k not in declared}
    return cls(**kwargs)


# ----------------------------------------------------------------- dump
def dump_value(tp: Any, value: Any) -> Any:
    if value is None:
        return None
    inner = _optional_arg(tp)
    if inner is not None:
        return dump_value(inner, value)
    if dataclasses.is_dataclass(tp):
        return dump(value)
    origin = typing.get_origin(tp)
    if origin in _SEQUENCES:
        item = typing.get_args(tp)[0]
        return [dump_value(item, v) for v in value]
    if origin in _MAPPINGS:
        item = typing.get_args(tp)[1]
        return {str(k): dump_value(item, v) for k, v in value.items()}
    if tp is float:
        return float(value)
    if tp is int:
        return int(value)
    if tp is Any:
        return _plain(value)
    return value


def _plain(value: Any) -> Any:
    """Any value as plain JSON types (tuples → lists, numpy scalars → numbers)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy arrays and scalars
        return value.tolist()
    if hasattr(value, "value") and isinstance(getattr(value, "value"), str):  # str enums
        return value.value
    return value


def dump(obj: Any) -> Dict[str, Any]:
    """The JSON object for a dataclass built by :func:`parse` (or constructed directly)."""
    out: Dict[str, Any] = {}
    extra: Mapping[str, Any] = {}
    for f, key, tp in _json_fields(type(obj)):
        value = getattr(obj, f.name)
        if f.metadata.get("extra"):
            extra = value or {}
            continue
        codec = f.metadata.get("codec")
        out[key] = codec.dump(value) if codec is not None else dump_value(tp, value)
    for k, v in extra.items():
        out.setdefault(k, _plain(v))
    return out


# ----------------------------------------------------------------- schema
_SIMPLE = {str: "string", int: "integer", float: "number", bool: "boolean"}


def schema_value(tp: Any, defs: Dict[str, Any], md: Mapping[str, Any] = {}) -> Dict[str, Any]:  # noqa: B006
    inner = _optional_arg(tp)
    if inner is not None:
        s = schema_value(inner, defs, md)
        if set(s) == {"type"} and isinstance(s["type"], str):
            return {"type": [s["type"], "null"]}
        return {"anyOf": [s, {"type": "null"}]}
    if tp is Any:
        return {}
    if dataclasses.is_dataclass(tp):
        name = tp.__name__
        if name not in defs:
            defs[name] = {}  # placeholder against recursion
            defs[name] = schema_object(tp, defs)
        return {"$ref": f"#/$defs/{name}"}
    origin = typing.get_origin(tp)
    if origin in _SEQUENCES:
        return {"type": "array", "items": schema_value(typing.get_args(tp)[0], defs, md)}
    if origin in _MAPPINGS:
        return {"type": "object", "additionalProperties": schema_value(typing.get_args(tp)[1], defs, md)}
    s: Dict[str, Any] = {"type": _SIMPLE[tp]}
    if md.get("choices") is not None:
        s = {"enum": list(md["choices"])} if len(md["choices"]) > 1 else {"const": md["choices"][0]}
    if md.get("pattern") is not None:
        s["pattern"] = md["pattern"]
    if md.get("minimum") is not None:
        s["minimum"] = md["minimum"]
    return s


def schema_object(cls: type, defs: Dict[str, Any]) -> Dict[str, Any]:
    props: Dict[str, Any] = {}
    required: List[str] = []
    for f, key, tp in _json_fields(cls):
        if f.metadata.get("extra"):
            continue
        codec = f.metadata.get("codec")
        s = codec.schema(defs) if codec is not None else schema_value(tp, defs, f.metadata)
        if f.metadata.get("description"):
            s = {**s, "description": f.metadata["description"]}
        props[key] = s
        if not _has_default(f):
            required.append(key)
    out: Dict[str, Any] = {"type": "object"}
    doc = (cls.__doc__ or "").strip().split("\n")[0]
    if doc and not doc.startswith(cls.__name__ + "("):
        out["description"] = doc
    if required:
        out["required"] = required
    out["properties"] = props
    return out

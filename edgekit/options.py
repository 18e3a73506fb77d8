"""Typed runtime (and build) options: declared once per runner or target, checked by one validator.

A runner declares its options as an :class:`OptionSchema` of :class:`Option`
(name, type, default, range, one-line help).  :meth:`OptionSchema.validate`
is the only place option values are checked, so every runner answers a typo,
a wrong type or an out-of-range value with the same one-line
:class:`~edgekit.errors.ConfigError`::

    unknown option "runtme" for the openvino runner (from edgekit.load()); did you mean "runtime"?
    known options: cache_dir, device, inference_precision, ...

The same meaning has the same name on every runner: ``threads`` (0 = the
runtime's default), ``device``, ``inference_precision``.  Options that touch
the device's file system (cache folders) are ``device_only``: they come from
the call or the environment, never from a package (see
:meth:`OptionSchema.parse`).

:func:`cache_dir` is the one resolver of on-device cache folders.
"""
from __future__ import annotations

import enum
import os
import re
import warnings
from dataclasses import field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from ._record import record  # frozen dataclasses that are cheap to define (import time on devices)
from .errors import ConfigError

#: ``threads`` above this is a mistake (``--threads 100000`` once made 26k threads and 16 GB):
#: 4x the cores this machine has, at most 256 and at least 16.
MAX_THREADS = max(16, min(256, 4 * (os.cpu_count() or 1)))

#: the environment variable naming the root of every edgekit cache on the device
ENV_CACHE_DIR = "EDGEKIT_CACHE_DIR"

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_SIMPLE_TYPES = (int, float, bool, str, list, Path, object)


class OptionWarning(UserWarning):
    """An option was given where it does not apply and was ignored (e.g. a cache folder in a package)."""


def _type_text(tp: Any) -> str:
    if isinstance(tp, tuple):
        return " | ".join(_type_text(t) for t in tp)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "str"
    return {int: "int", float: "float", bool: "bool", str: "str", list: "list[str]", Path: "path",
            object: "any"}[tp]


def _plain(value: Any) -> Any:
    """A JSON-friendly form of a value (enum members as their value)."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@record
class Option:
    """One option: its name, type and the values it takes.

    ``type`` is ``int``, ``float``, ``bool``, ``str``, ``list`` (of strings),
    ``pathlib.Path`` (a folder or file path, kept as text), ``object`` (any
    value, e.g. a callback), an :class:`enum.Enum` subclass (given as a member
    or its value, case-insensitive), or a tuple of these (the first that
    fits).  ``min``/``max`` bound numbers; ``choices`` lists the allowed
    strings (matched case-insensitively, returned as written here).  ``None``
    always means "not set": the option takes its default.  ``aliases`` are
    older names still accepted (``intra_op_num_threads`` for ``threads``).
    """

    name: str
    type: Any
    default: Any = None
    help: str = ""
    min: Optional[float] = None
    max: Optional[float] = None
    choices: Optional[Sequence[Any]] = None
    device_only: bool = False
    aliases: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ConfigError(f'"name" must be a lowercase identifier such as "threads", but got {self.name!r}')
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        for tp in types:
            if tp not in _SIMPLE_TYPES and not (isinstance(tp, type) and issubclass(tp, enum.Enum)):
                raise ConfigError(f'option "{self.name}": "type" must be one of int, float, bool, str, list, '
                                  f"pathlib.Path, object, an Enum class or a tuple of them, but got {tp!r}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ConfigError(f'option "{self.name}": "min" {self.min} is above "max" {self.max}')
        object.__setattr__(self, "aliases", tuple(self.aliases))
        if self.choices is not None:
            object.__setattr__(self, "choices", tuple(self.choices))
        if self.default is not None:  # a schema whose default fails its own check is a bug: fail at import
            object.__setattr__(self, "default", self.coerce(self.default, owner="(default)", source="its declaration"))

    # -- checking one value ------------------------------------------------
    def coerce(self, value: Any, *, owner: str, source: str) -> Any:
        """``value`` checked and normalized, or one ConfigError that says what is allowed."""
        if value is None:
            return self.default
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        for tp in types:
            ok, out = self._as(tp, value)
            if ok:
                return self._in_range(out, value, owner, source)
        raise self._error(value, owner, source)

    def _as(self, tp: Any, value: Any) -> Tuple[bool, Any]:
        if tp is object:
            return True, value
        if tp is bool:
            return isinstance(value, bool), value
        if tp is int:  # bool is an int subclass: True is not a thread count
            return (isinstance(value, int) and not isinstance(value, bool)), value
        if tp is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            return ok, float(value) if ok else value
        if tp is str:
            return isinstance(value, str), value
        if tp is Path:
            ok = isinstance(value, (str, os.PathLike))
            return ok, os.fspath(value) if ok else value
        if tp is list:
            ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
            return ok, list(value) if ok else value
        # an Enum class
        if isinstance(value, tp):
            return True, value
        if isinstance(value, str):
            for member in tp:
                if str(member.value).lower() == value.strip().lower():
                    return True, member
        return False, value

    def _in_range(self, out: Any, given: Any, owner: str, source: str) -> Any:
        if isinstance(out, (int, float)) and not isinstance(out, bool):
            if (self.min is not None and out < self.min) or (self.max is not None and out > self.max):
                raise self._error(given, owner, source)
        if self.choices is not None and isinstance(out, str):
            for choice in self.choices:
                if isinstance(choice, str) and choice.lower() == out.strip().lower():
                    return choice
            raise self._error(given, owner, source)
        return out

    def expects(self) -> str:
        """What the option takes, in words: ``an integer in [0, 8]``."""
        parts: List[str] = []
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        for tp in types:
            if isinstance(tp, type) and issubclass(tp, enum.Enum):
                parts.append("one of {" + ", ".join(repr(m.value) for m in tp) + "}")
            elif tp in (int, float):
                word = "an integer" if tp is int else "a number"
                if self.min is not None and self.max is not None:
                    parts.append(f"{word} in [{_num(self.min)}, {_num(self.max)}]")
                elif self.min is not None:
                    parts.append(f"{word} >= {_num(self.min)}")
                elif self.max is not None:
                    parts.append(f"{word} <= {_num(self.max)}")
                else:
                    parts.append(word)
            elif tp is str and self.choices is not None:
                parts.append("one of {" + ", ".join(repr(c) for c in self.choices if isinstance(c, str)) + "}")
            else:
                parts.append({bool: "true or false", str: "a string", list: "a list of strings",
                              Path: "a folder path", object: "any value"}[tp])
        return " or ".join(parts)

    def _error(self, value: Any, owner: str, source: str) -> ConfigError:
        return ConfigError(f'"{self.name}" must be {self.expects()}, but got {value!r} ({owner} option, from {source})')

    def describe(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "type": _type_text(self.type),
            "default": _plain(self.default),
            "help": self.help,
            "min": self.min,
            "max": self.max,
            "choices": _choices_of(self),
            "device_only": self.device_only,
            "aliases": list(self.aliases),
        }


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _choices_of(opt: Option) -> Optional[List[Any]]:
    if opt.choices is not None:
        return [_plain(c) for c in opt.choices]
    types = opt.type if isinstance(opt.type, tuple) else (opt.type,)
    for tp in types:
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return [m.value for m in tp]
    return None


@record
class OptionSchema:
    """The options of one runner (or target): ``owner`` names it in errors (``"openvino runner"``)."""

    owner: str
    options: Sequence[Option]
    _by_name: Mapping[str, Option] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", tuple(self.options))
        by_name: Dict[str, Option] = {}
        for opt in self.options:
            if not isinstance(opt, Option):
                raise ConfigError(f"{self.owner}: options must be Option objects, but got {opt!r}")
            for key in (opt.name, *opt.aliases):
                if key in by_name:
                    raise ConfigError(f'{self.owner}: option name "{key}" is declared twice')
                by_name[key] = opt
        object.__setattr__(self, "_by_name", by_name)

    @property
    def names(self) -> List[str]:
        return [o.name for o in self.options]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __getitem__(self, name: str) -> Option:
        return self._by_name[name]

    def defaults(self) -> Dict[str, Any]:
        return {o.name: o.default for o in self.options}

    def parse(
        self,
        values: Mapping[str, Any],
        *,
        source: str,
        from_package: bool = False,
        also_known: Iterable[str] = (),
    ) -> Dict[str, Any]:
        """Only the options given in ``values``, checked, under their current names (no defaults).

        ``from_package``: the values come from a package manifest, so
        ``device_only`` options (cache folders) are dropped with an
        :class:`OptionWarning` — a package never decides where the device
        writes; the package still runs with the device's own setting — and
        so are unknown names (a build option an older edgekit recorded).
        A known option with a bad value is an error either way.
        ``also_known``: other names valid where the values came from (e.g.
        ``runtime`` for ``edgekit.load``), offered as the closest match.
        """
        if not isinstance(values, Mapping):
            raise ConfigError(f"{self.owner} options (from {source}) must be a mapping of name to value, "
                              f"but got {type(values).__name__}")
        unknown = [k for k in values if k not in self._by_name]
        if unknown and not from_package:
            raise self._unknown(unknown, source, also_known)
        if unknown:
            # the device user cannot edit a package, and an option the runner does not know does nothing:
            # say so and run (builds refuse such names up front; older packages carried build options here)
            warnings.warn(f"{self._unknown(unknown, source, also_known)}; ignored", OptionWarning, stacklevel=4)
        out: Dict[str, Any] = {}
        given_as: Dict[str, str] = {}
        for key, value in values.items():
            opt = self._by_name.get(key)
            if opt is None:
                continue
            if opt.name in given_as:
                raise ConfigError(f'"{key}" and "{given_as[opt.name]}" (from {source}) are the same {self.owner} '
                                  f'option "{opt.name}"; give it once')
            given_as[opt.name] = key
            if from_package and opt.device_only:
                warnings.warn(
                    f'the package sets the device-only option "{opt.name}" ({value!r}); ignored: '
                    f"{opt.help or 'it touches the device file system'} is chosen on the device "
                    f"(edgekit.load(..., {opt.name}=...) or the environment), never by a package",
                    OptionWarning,
                    stacklevel=4,
                )
                continue
            out[opt.name] = opt.coerce(value, owner=self.owner, source=source)
        return out

    def validate(self, values: Mapping[str, Any], *, source: str, also_known: Iterable[str] = ()) -> Dict[str, Any]:
        """Every option of the schema: the given values checked, the others at their defaults."""
        return {**self.defaults(), **self.parse(values, source=source, also_known=also_known)}

    def describe(self) -> List[Dict[str, Any]]:
        """One JSON-friendly dict per option (for ``edgekit targets --json`` and the docs)."""
        return [o.describe() for o in self.options]

    def _unknown(self, unknown: Sequence[str], source: str, also_known: Iterable[str]) -> ConfigError:
        import difflib  # only for an error's suggestion: not on every load's import path

        candidates = list(self._by_name) + [n for n in also_known if n not in self._by_name]
        parts = []
        for key in unknown:
            match = difflib.get_close_matches(str(key), candidates, n=1, cutoff=0.6)
            hint = ""
            if match:
                best = match[0]
                best = self._by_name[best].name if best in self._by_name else best
                hint = f' (did you mean "{best}"?)'
            parts.append(f'"{key}"{hint}')
        noun = "option" if len(unknown) == 1 else "options"
        known = ", ".join(self.names) or "none"
        return ConfigError(f"unknown {self.owner} {noun} {', '.join(parts)} (from {source}); known options: {known}")


def threads_option(help: str = "threads for one inference; 0 = the runtime's default", *,
                   aliases: Tuple[str, ...] = ()) -> Option:
    """The shared ``threads`` option (same name, type and range on every runner)."""
    return Option("threads", int, 0, help, min=0, max=MAX_THREADS, aliases=aliases)


def cache_dir(kind: str) -> Path:
    """The folder for the ``kind`` cache (``openvino``, ``tensorrt`` …): not created here.

    ``$EDGEKIT_CACHE_DIR/<kind>``, else ``$XDG_CACHE_HOME/edgekit/<kind>``,
    else ``~/.cache/edgekit/<kind>``.
    """
    if not isinstance(kind, str) or not re.match(r"^[a-z0-9][a-z0-9_-]*$", kind):
        raise ConfigError(f'"kind" must be a short lowercase name such as "openvino", but got {kind!r}')
    root = os.environ.get(ENV_CACHE_DIR)
    if root:
        return Path(root).expanduser() / kind
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "edgekit" / kind


__all__ = ["MAX_THREADS", "Option", "OptionSchema", "OptionWarning", "cache_dir", "threads_option"]

"""Name → plug-in registries (runners, targets).

A registry is an instance, not a module global filled by scanning.  Plug-ins
come from three places: the built-ins map given at construction, the
entry-point group (so third-party packages can add runners and targets) and
explicit :meth:`Registry.register` calls.  Registering a name twice is an
error; a missed lookup lists every known name.

Why built-ins are looked up without the entry points: reading the entry
points means ``importlib.metadata`` (and the ``email`` package it parses
metadata with) plus one pass over every installed distribution — 50–120 ms,
on a device that restarts its service often more than the model's own
session costs.  So a built-in name resolves straight from the map; the entry
points are read only when a name is not a built-in, or when every name is
listed (:meth:`Registry.names`, ``in``, iteration, the error of a missed
lookup).  That listing is also where a conflict is reported: two
distributions declaring one name with different objects, a plug-in reusing a
built-in's name for another object, or an entry point clashing with a
:meth:`register` call.  A plug-in cannot replace a built-in: ``get`` of a
built-in name always serves the built-in.
"""
from __future__ import annotations

import sys
from typing import Callable, Dict, Generic, Iterator, List, Optional, Tuple, TypeVar

from .errors import RegistryError

T = TypeVar("T")


def _entry_points(group: str) -> List[Tuple[str, str]]:
    """``(name, "module:attr")`` of every entry point in ``group``, across installed distributions."""
    from importlib.metadata import entry_points  # costly: imported only when entry points are read

    if sys.version_info >= (3, 10):
        eps = entry_points(group=group)
    else:  # pragma: no cover - 3.9 returns a dict of groups
        eps = entry_points().get(group, [])
    return [(ep.name, ep.value) for ep in eps]


class Registry(Generic[T]):
    """Holds plug-ins of one kind by name.

    ``builtins`` maps names to "module:attr" strings resolved lazily, so a
    plug-in's heavy SDK is imported only when that plug-in is asked for.
    """

    def __init__(self, kind: str, group: str, builtins: Optional[Dict[str, str]] = None) -> None:
        self.kind = kind
        self.group = group
        self._builtins: Dict[str, str] = dict(builtins or {})
        #: "module:attr" of the plug-ins found through the entry points (filled by _scan)
        self._plugins: Dict[str, str] = {}
        self._loaded: Dict[str, T] = {}
        self._scanned = False

    def register(self, name: str, obj: T) -> T:
        if name in self._loaded or name in self._builtins or name in self._plugins:
            raise RegistryError(f"{self.kind} {name!r} is already registered; pick another name")
        self._loaded[name] = obj
        return obj

    def _scan(self) -> None:
        """Read the entry points once; every conflict among them (or with a built-in or a registered
        object) is an error naming both sides."""
        if self._scanned:
            return
        found: Dict[str, str] = {}
        for name, value in _entry_points(self.group):
            if name in self._builtins:
                if value == self._builtins[name]:
                    continue  # our own built-in, also declared as an entry point (an installed edgekit)
                raise RegistryError(
                    f"{self.kind} {name!r} is declared twice: built into edgekit as {self._builtins[name]!r} and by "
                    f"the entry point {value!r}; uninstall the package providing the entry point, or rename its plug-in"
                )
            if name in self._loaded:
                raise RegistryError(
                    f"{self.kind} {name!r} is declared twice: registered in this process and by the entry point "
                    f"{value!r}; uninstall one of them or pick another name"
                )
            if name in found and found[name] != value:
                raise RegistryError(
                    f"{self.kind} {name!r} is declared twice, by the entry points {found[name]!r} and {value!r}; "
                    "uninstall one of the packages providing it"
                )
            found[name] = value  # the same value twice (one package seen through two paths) is one plug-in
        self._plugins = found
        self._scanned = True

    def names(self) -> List[str]:
        self._scan()
        return sorted(set(self._loaded) | set(self._builtins) | set(self._plugins))

    def __contains__(self, name: object) -> bool:
        if name in self._loaded or name in self._builtins:
            return True
        return name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> T:
        if name in self._loaded:
            return self._loaded[name]
        value = self._builtins.get(name)
        if value is None:
            self._scan()
            value = self._plugins.get(name)
            if value is None:
                known = ", ".join(self.names()) or "none"
                raise RegistryError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}")
        module_name, _, attr = value.partition(":")
        import importlib

        obj = getattr(importlib.import_module(module_name), attr)
        self._loaded[name] = obj
        return obj


Factory = Callable[..., T]

"""Name → plug-in registries (runners, targets).

A registry is an instance, not a module global filled by scanning.  Plug-ins
come from the entry-point group (so third-party packages can add runners and
targets) and from explicit :meth:`Registry.register` calls.  Registering a name
twice is an error; a missed lookup lists every known name.
"""
from __future__ import annotations

import sys
from typing import Callable, Dict, Generic, Iterator, List, Optional, TypeVar

from .errors import RegistryError

T = TypeVar("T")


def _entry_points(group: str) -> list:
    if sys.version_info >= (3, 10):
        from importlib.metadata import entry_points

        return list(entry_points(group=group))
    from importlib.metadata import entry_points  # pragma: no cover - 3.9

    return list(entry_points().get(group, []))  # pragma: no cover


class Registry(Generic[T]):
    """Holds plug-ins of one kind by name.

    ``builtins`` maps names to "module:attr" strings resolved lazily, so a
    plug-in's heavy SDK is imported only when that plug-in is asked for.
    """

    def __init__(self, kind: str, group: str, builtins: Optional[Dict[str, str]] = None) -> None:
        self.kind = kind
        self.group = group
        self._lazy: Dict[str, str] = dict(builtins or {})
        self._loaded: Dict[str, T] = {}
        self._scanned = False

    def register(self, name: str, obj: T) -> T:
        if name in self._loaded or name in self._lazy:
            raise RegistryError(f"{self.kind} {name!r} is already registered; pick another name")
        self._loaded[name] = obj
        return obj

    def _scan(self) -> None:
        if self._scanned:
            return
        self._scanned = True
        for ep in _entry_points(self.group):
            if ep.name in self._loaded or ep.name in self._lazy:
                if self._lazy.get(ep.name) == ep.value:
                    continue  # our own built-in, also declared as an entry point
                raise RegistryError(
                    f"{self.kind} {ep.name!r} is declared twice (entry point {ep.value!r}); "
                    "uninstall one of the packages providing it"
                )
            self._lazy[ep.name] = ep.value

    def names(self) -> List[str]:
        self._scan()
        return sorted(set(self._loaded) | set(self._lazy))

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> T:
        if name in self._loaded:
            return self._loaded[name]
        self._scan()
        if name not in self._lazy:
            known = ", ".join(self.names()) or "none"
            raise RegistryError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}")
        module_name, _, attr = self._lazy[name].partition(":")
        import importlib

        obj = getattr(importlib.import_module(module_name), attr)
        self._loaded[name] = obj
        return obj


Factory = Callable[..., T]

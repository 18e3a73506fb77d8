"""``@record``: a frozen dataclass that is cheap to define.

``@dataclass(frozen=True)`` compiles six methods per class with ``exec``
(``__init__``, ``__repr__``, ``__eq__``, ``__hash__``, ``__setattr__``,
``__delattr__``).  The device side defines about fifty such records (the
manifest's sections, pre/postprocessing steps, package limits), and compiling
them was the largest part of ``import edgekit`` — paid by every service start
on a device.  ``record`` lets dataclasses compile only ``__init__`` and the
frozen guards, and gives every record the same three functions below, which
read the class's fields when called and return what the generated ones would:
equality of same-class instances over the ``compare`` fields, the hash of
those (``hash=`` honoured), and ``Name(field=value, ...)`` over the ``repr``
fields.  The classes stay ordinary frozen dataclasses (``fields``,
``replace``, ``asdict``, ``FrozenInstanceError``, subclasses declared with
``@dataclass(frozen=True)``).
"""
from __future__ import annotations

import dataclasses
import reprlib
from typing import Any, Dict, Optional, Tuple, Type, TypeVar

T = TypeVar("T", bound=type)

#: per class: (compare names, hash names, repr names), computed on first use
_NAMES: Dict[type, Tuple[Tuple[str, ...], Tuple[str, ...], Tuple[str, ...]]] = {}


def _names(cls: type) -> Tuple[Tuple[str, ...], Tuple[str, ...], Tuple[str, ...]]:
    names = _NAMES.get(cls)
    if names is None:
        fs = dataclasses.fields(cls)
        names = _NAMES[cls] = (
            tuple(f.name for f in fs if f.compare),
            tuple(f.name for f in fs if (f.compare if f.hash is None else f.hash)),
            tuple(f.name for f in fs if f.repr),
        )
    return names


def _eq(self: Any, other: Any) -> Any:
    if other.__class__ is not self.__class__:
        return NotImplemented
    names = _names(self.__class__)[0]
    # tuples, as the generated method compares: an element is equal to itself (a NaN field included)
    return tuple(getattr(self, n) for n in names) == tuple(getattr(other, n) for n in names)


def _hash(self: Any) -> int:
    return hash(tuple(getattr(self, n) for n in _names(self.__class__)[1]))


@reprlib.recursive_repr()
def _repr(self: Any) -> str:
    fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in _names(self.__class__)[2])
    return f"{self.__class__.__qualname__}({fields})"


def record(cls: Optional[T] = None, *, eq: bool = True) -> Any:
    """``@dataclass(frozen=True)`` with shared ``__eq__``/``__hash__``/``__repr__`` (see the module doc).

    ``@record(eq=False)`` is ``@dataclass(frozen=True, eq=False)``: identity equality and hash (records that
    hold arrays).
    """

    def wrap(c: T) -> T:
        own = set(c.__dict__)  # methods the class body defines itself are kept, as dataclasses does
        out: Type[Any] = dataclasses.dataclass(frozen=True, eq=False, repr=False)(c)
        if eq and "__eq__" not in own:
            out.__eq__ = _eq
            if "__hash__" not in own:
                out.__hash__ = _hash
        if "__repr__" not in own:
            out.__repr__ = _repr
        return out

    return wrap if cls is None else wrap(cls)

"""``@record``: a frozen dataclass that is cheap to define.

``@dataclass(frozen=True)`` compiles six methods per class with ``exec``
(``__init__``, ``__repr__``, ``__eq__``, ``__hash__``, ``__setattr__``,
``__delattr__``).  The device side defines about fifty such records (the
manifest's sections, pre/postprocessing steps, package limits), and compiling
them was the largest part of ``import edgekit`` — paid by every service start
on a device.  ``record`` lets dataclasses compile ``__init__`` alone and gives
every record the same five functions below, which read the class's fields
when called and do what the generated ones do: equality of same-class
instances over the ``compare`` fields (compared as tuples), the hash of those
(``hash=`` honoured), ``Name(field=value, ...)`` over the ``repr`` fields, and
``FrozenInstanceError`` on any assignment or deletion after ``__init__``.  The
classes stay frozen dataclasses to every tool (``fields``, ``replace``,
``asdict``, pickling, ``__dataclass_params__.frozen``), so a subclass declared
with ``@dataclass(frozen=True)`` extends one as usual.  tests/test_record.py
compares them with standard twins.
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


def _setattr(self: Any, name: str, value: Any) -> None:
    # __init__ sets each field once; anything after that is an assignment to a frozen record
    if name in self.__dict__ or name not in self.__dataclass_fields__:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")
    object.__setattr__(self, name, value)


def _delattr(self: Any, name: str) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")


def record(cls: Optional[T] = None, *, eq: bool = True) -> Any:
    """``@dataclass(frozen=True)`` with shared methods (see the module doc).

    ``@record(eq=False)`` is ``@dataclass(frozen=True, eq=False)``: identity equality and hash (records that
    hold arrays).
    """

    def wrap(c: T) -> T:
        own = set(c.__dict__)  # methods the class body defines itself are kept, as dataclasses does
        if any(dataclasses.is_dataclass(b) for b in c.__mro__[1:]):
            # extends a (frozen) dataclass: dataclasses requires the same frozen flag, so the standard guards
            out: Type[Any] = dataclasses.dataclass(frozen=True, eq=False, repr=False)(c)
        else:
            # only __init__ is compiled (assigning through _setattr); the frozen guards are shared, and the
            # class declares itself frozen so that a subclass written as @dataclass(frozen=True) is accepted
            out = dataclasses.dataclass(eq=False, repr=False)(c)
            out.__setattr__ = _setattr
            out.__delattr__ = _delattr
            out.__dataclass_params__.frozen = True
        if eq and "__eq__" not in own:
            out.__eq__ = _eq
            if "__hash__" not in own:
                out.__hash__ = _hash
        if "__repr__" not in own:
            out.__repr__ = _repr
        return out

    return wrap if cls is None else wrap(cls)

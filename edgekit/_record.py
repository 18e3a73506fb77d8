"""``@record``: a frozen dataclass that is cheap to define.

``@dataclass(frozen=True)`` compiles six methods per class with ``exec``
(``__init__``, ``__repr__``, ``__eq__``, ``__hash__``, ``__setattr__``,
``__delattr__``).  The device side defines about fifty such records (the
manifest's sections, pre/postprocessing steps, package limits), and compiling
them was the largest part of ``import edgekit`` — paid by every service start
on a device.  ``record`` lets dataclasses collect the fields and compile
nothing: every record shares the functions below, which read the class's
fields (cached per class) when called and do what the generated ones do:
``__init__`` with the fields in order, positional or by name, defaults,
factories, ``__post_init__`` and the same ``TypeError`` for a missing, extra
or repeated argument (``inspect.signature`` shows the fields); equality of
same-class instances over the ``compare`` fields (compared as tuples); the
hash of those (``hash=`` honoured); ``Name(field=value, ...)`` over the
``repr`` fields; ``FrozenInstanceError`` on any assignment or deletion.  The
classes stay frozen dataclasses to every tool (``fields``, ``replace``,
``asdict``, pickling, ``__dataclass_params__.frozen``), so a subclass declared
with ``@dataclass(frozen=True)`` extends one as usual.  Plain fields only (no
``InitVar``, no ``kw_only``).  tests/test_record.py compares records with
standard twins.
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


#: per class: (init field names, their defaults, their default factories, the other fields' defaults and
#: factories, whether __post_init__ runs), computed on first construction
_INIT: Dict[type, Any] = {}


def _init_spec(cls: type) -> Any:
    spec = _INIT.get(cls)
    if spec is None:
        missing = dataclasses.MISSING
        fs = dataclasses.fields(cls)
        spec = _INIT[cls] = (
            tuple(f.name for f in fs if f.init),
            {f.name: f.default for f in fs if f.init and f.default is not missing},
            {f.name: f.default_factory for f in fs if f.init and f.default_factory is not missing},
            [(f.name, f.default, f.default_factory) for f in fs if not f.init
             and (f.default is not missing or f.default_factory is not missing)],
            hasattr(cls, "__post_init__"),
        )
    return spec


def _init(self: Any, *args: Any, **kwargs: Any) -> None:
    """The generated ``__init__``'s contract: fields in order, positionally or by name, defaults and
    factories, ``__post_init__`` last; the same TypeErrors for missing, extra or repeated arguments."""
    cls = type(self)
    names, defaults, factories, others, post_init = _init_spec(cls)
    where = f"{cls.__qualname__}.__init__()"
    if len(args) > len(names):
        raise TypeError(f"{where} takes {len(names) + 1} positional arguments but {len(args) + 1} were given")
    values = dict(zip(names, args))
    for key, value in kwargs.items():
        if key in values:
            raise TypeError(f"{where} got multiple values for argument {key!r}")
        if key not in defaults and key not in factories and key not in names:
            raise TypeError(f"{where} got an unexpected keyword argument {key!r}")
        values[key] = value
    absent = [n for n in names if n not in values and n not in defaults and n not in factories]
    if absent:
        listed = " and ".join(repr(n) for n in absent) if len(absent) <= 2 else \
            ", ".join(repr(n) for n in absent[:-1]) + f", and {absent[-1]!r}"
        raise TypeError(f"{where} missing {len(absent)} required argument{'s' if len(absent) > 1 else ''}: {listed}")
    put = object.__setattr__
    for name in names:
        if name in values:
            put(self, name, values[name])
        elif name in defaults:
            put(self, name, defaults[name])
        else:
            put(self, name, factories[name]())
    for name, default, factory in others:
        put(self, name, factory() if default is dataclasses.MISSING else default)
    if post_init:
        self.__post_init__()


class _Factory:
    def __repr__(self) -> str:
        return "<factory>"  # what the generated __init__'s signature shows for a default_factory


class _InitSignature:
    """``Record.__signature__``: the fields as ``__init__``'s parameters (``inspect.signature``, ``help``), built
    when asked for, since the shared ``__init__`` itself takes ``*args, **kwargs``."""

    def __get__(self, obj: Any, owner: type) -> Any:
        import inspect

        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        params = [inspect.Parameter(f.name, kind, annotation=f.type,
                                    default=f.default if f.default is not dataclasses.MISSING
                                    else _Factory() if f.default_factory is not dataclasses.MISSING
                                    else inspect.Parameter.empty)
                  for f in dataclasses.fields(owner) if f.init]
        return inspect.Signature(params, return_annotation=None)


def _setattr(self: Any, name: str, value: Any) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")


def _delattr(self: Any, name: str) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")


_SIGNATURE = _InitSignature()


def record(cls: Optional[T] = None, *, eq: bool = True) -> Any:
    """``@dataclass(frozen=True)`` with shared methods (see the module doc).

    ``@record(eq=False)`` is ``@dataclass(frozen=True, eq=False)``: identity equality and hash (records that
    hold arrays).
    """

    def wrap(c: T) -> T:
        own = set(c.__dict__)  # methods the class body defines itself are kept, as dataclasses does
        if any(dataclasses.is_dataclass(b) for b in c.__mro__[1:]):
            # extends a (frozen) dataclass: dataclasses requires the same frozen flag, so the standard guards
            out: Type[Any] = dataclasses.dataclass(frozen=True, init=False, eq=False, repr=False)(c)
        else:
            # nothing is compiled: the frozen guards are shared, and the class declares itself frozen so that a
            # subclass written as @dataclass(frozen=True) is accepted
            out = dataclasses.dataclass(init=False, eq=False, repr=False)(c)
            out.__setattr__ = _setattr
            out.__delattr__ = _delattr
            out.__dataclass_params__.frozen = True
        for f in out.__dataclass_fields__.values():
            if getattr(f, "kw_only", False) is True or "InitVar" in str(f.type):
                raise TypeError(f"{c.__qualname__}.{f.name}: @record takes plain fields (no InitVar or kw_only); "
                                "declare this class with @dataclass(frozen=True)")
        if "__init__" not in own:
            out.__init__ = _init
            out.__signature__ = _SIGNATURE
        if eq and "__eq__" not in own:
            out.__eq__ = _eq
            if "__hash__" not in own:
                out.__hash__ = _hash
        if "__repr__" not in own:
            out.__repr__ = _repr
        return out

    return wrap if cls is None else wrap(cls)

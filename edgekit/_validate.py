"""Small validators shared by the frozen config objects (one error style everywhere)."""
from __future__ import annotations

import enum
from typing import Any, Optional, Sequence, Type, TypeVar

from .errors import ConfigError

E = TypeVar("E", bound=enum.Enum)


def choices(values: Any) -> str:
    """``{'a', 'b'}`` for an enum class or a sequence of members/values."""
    return "{" + ", ".join(repr(v.value if isinstance(v, enum.Enum) else v) for v in values) + "}"


def coerce_enum(value: Any, cls: Type[E], name: str, allowed: Optional[Sequence[E]] = None) -> E:
    """``value`` (a member or its string value) as a member of ``cls``, else a ConfigError
    of the form ``"name" must be one of {...}, but got X``."""
    members = tuple(allowed) if allowed is not None else tuple(cls)
    if isinstance(value, cls) and value in members:
        return value
    if isinstance(value, str):
        for member in members:
            if member.value == value:
                return member
    raise ConfigError(f'"{name}" must be one of {choices(members)}, but got {value!r}')


def first_line(err: BaseException) -> str:
    """The first meaningful line of a runtime's or toolchain's error (they append source paths and checks)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip() and not ln.strip().startswith("Check ")]
    return (lines[0] if lines else type(err).__name__)[:300]

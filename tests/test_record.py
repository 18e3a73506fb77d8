"""edgekit._record.record behaves as @dataclass(frozen=True): compared against a twin declared the standard way."""
from __future__ import annotations

import copy
import dataclasses
import pickle
from dataclasses import field
from typing import Any, Dict, Optional, Tuple

import pytest

from edgekit._record import record


@record
class Point:
    """module level, so that pickle finds it"""

    x: int
    tags: Tuple[str, ...] = ()


def _pair(eq: bool = True) -> Tuple[type, type]:
    """The same class body declared with @record and with @dataclass(frozen=True)."""

    def body() -> Dict[str, Any]:
        return {
            "__annotations__": {"name": "str", "shape": "Tuple[int, ...]", "score": "float",
                                "note": "Optional[str]", "tags": "Tuple[str, ...]"},
            "__doc__": "a record",
            "shape": (),
            "score": 0.0,
            "note": field(default=None, compare=False, repr=False),
            "tags": field(default_factory=tuple),
        }

    ours = record(eq=eq)(type("Rec", (), body()))
    theirs = dataclasses.dataclass(frozen=True, eq=eq)(type("Rec", (), body()))
    return ours, theirs


@pytest.mark.parametrize("eq", [True, False])
def test_same_results_as_a_frozen_dataclass(eq: bool) -> None:
    ours, theirs = _pair(eq)
    nan = float("nan")
    samples = [dict(name="a"), dict(name="a", shape=(1, 3), score=0.5, note="x", tags=("t",)),
               dict(name="a", note="other"), dict(name="b"), dict(name="a", score=nan)]
    for kw in samples:
        a, b = ours(**kw), theirs(**kw)
        assert repr(a) == repr(b)
        assert dataclasses.asdict(a) == dataclasses.asdict(b) or kw.get("score") != kw.get("score")
        assert (a == a) == (b == b)  # a NaN field still equals itself (tuple comparison), as generated
        if eq:
            assert hash(a) == hash(b)
        for kw2 in samples:
            assert (ours(**kw) == ours(**kw2)) == (theirs(**kw) == theirs(**kw2)), (kw, kw2)
    assert (ours(name="a") == theirs(name="a")) is False  # another class is never equal
    assert [f.name for f in dataclasses.fields(ours)] == [f.name for f in dataclasses.fields(theirs)]


def test_frozen_and_standard_tools() -> None:
    ours, _ = _pair()
    r = ours(name="a", shape=(1, 2))
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.name = "b"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.other = 1  # type: ignore[attr-defined]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del r.name  # type: ignore[misc]
    assert dataclasses.replace(r, name="b").name == "b" and r.name == "a"
    assert copy.deepcopy(r) == r and copy.copy(r) == r
    p = Point(1, ("a",))
    assert pickle.loads(pickle.dumps(p)) == p
    with pytest.raises(TypeError):
        ours(name="a", bogus=1)  # type: ignore[call-arg]
    assert ours.__dataclass_params__.frozen  # type: ignore[attr-defined]


def test_subclasses_either_way() -> None:
    ours, _ = _pair()

    @dataclasses.dataclass(frozen=True)
    class Plugin(ours):  # type: ignore[misc, valid-type]  # a plug-in extends a record the standard way
        extra: int = 0

    @record
    class Again(ours):  # type: ignore[misc, valid-type]
        extra: int = 0

    for cls in (Plugin, Again):
        x = cls(name="a", extra=2)
        assert x == cls(name="a", extra=2) and x != cls(name="a", extra=3)
        assert repr(x).endswith("extra=2)")
        with pytest.raises(dataclasses.FrozenInstanceError):
            x.extra = 5  # type: ignore[misc]


def test_class_body_methods_are_kept() -> None:
    @record
    class Custom:
        """custom repr and eq"""

        x: int

        def __repr__(self) -> str:
            return "custom"

        def __eq__(self, other: object) -> bool:
            return True

    assert repr(Custom(1)) == "custom" and Custom(1) == 5
    assert Custom.__hash__ is None  # an __eq__ of its own without __hash__: unhashable, as dataclasses leaves it


def test_init_contract_as_generated() -> None:
    ours, theirs = _pair()
    import inspect

    assert str(inspect.signature(ours)) == str(inspect.signature(theirs))
    good = [(("a",), {}), (("a", (1,)), {"score": 2.0}), ((), {"name": "a", "tags": ("x",)}),
            (("a", (1,), 0.5, "n", ("t",)), {})]
    for args, kw in good:
        a, b = ours(*args, **kw), theirs(*args, **kw)
        assert dataclasses.asdict(a) == dataclasses.asdict(b)
    assert ours("a").tags == () and ours("a").tags is not None
    bad = [((), {}), (("a",), {"name": "b"}), (("a",), {"bogus": 1}), (("a", (), 0.0, None, (), 9), {})]
    for args, kw in bad:
        with pytest.raises(TypeError):
            theirs(*args, **kw)
        with pytest.raises(TypeError):
            ours(*args, **kw)


def test_post_init_and_init_false_fields() -> None:
    calls = []

    @record
    class WithPost:
        """post-init normalizes, an init=False field is derived"""

        values: Tuple[int, ...]
        total: int = field(init=False, default=0)
        cache: Dict[str, int] = field(init=False, default_factory=dict)

        def __post_init__(self) -> None:
            calls.append(1)
            object.__setattr__(self, "values", tuple(self.values))
            object.__setattr__(self, "total", sum(self.values))

    w = WithPost([1, 2, 3])  # type: ignore[arg-type]
    assert w.values == (1, 2, 3) and w.total == 6 and w.cache == {} and calls == [1]
    with pytest.raises(TypeError):
        WithPost([1], total=3)  # type: ignore[call-arg]  # not an __init__ parameter


def test_unsupported_fields_are_refused() -> None:
    with pytest.raises(TypeError, match="InitVar"):
        @record
        class Bad:
            """an InitVar"""

            x: "dataclasses.InitVar[int]"

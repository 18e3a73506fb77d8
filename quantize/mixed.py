"""Automatic mixed precision: which layers an int8 build keeps in float to meet its floor.

The search runs on the switchable twin (:mod:`edgekit.quantize.sensitivity`):
layers ranked most damaging first, bisection over how many of the top ones
stay in float (the twin's SQNR grows, near enough, with each layer taken out of
int8) for the fewest that meet the floor plus a margin.  The target then builds
that mix for real — its own mechanism keeps the layers in float, through the
recipe's ``exclude_nodes`` every target honours — and its verification is the
verdict; when the real build still misses, more layers follow
(:func:`next_count`) until the floor holds or the float budget is spent.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from edgekit.errors import ConfigError


@dataclass(frozen=True)
class MixedPrecisionConfig:
    """How far an int8 build may go to meet its floor.

    ``enabled``: search at all (else a missed floor fails as before).
    ``max_float_share``: at most this share of the quantizable layers stays in
    float.  ``max_builds``: target builds after the first.  ``samples``:
    calibration feeds the sensitivity sweep runs on.  ``time_budget_s``: the
    sweep's time bound.  ``margin_db``: the twin must clear the floor by this
    much before a real build is tried (the twin is a model of the target, not
    the target).  ``speed_check``: time the int8 package against the target's
    fp32 package in the same runner and warn when int8 is not faster.
    """

    enabled: bool = True
    max_float_share: float = 0.5
    max_builds: int = 4
    samples: int = 16
    time_budget_s: float = 180.0
    margin_db: float = 1.0
    speed_check: bool = True

    def __post_init__(self) -> None:
        for name in ("enabled", "speed_check"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f'"mixed_precision.{name}" must be true or false, but got {getattr(self, name)!r}')
        s = self.max_float_share
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0.0 < s <= 1.0:
            raise ConfigError(f'"mixed_precision.max_float_share" must be a number in (0, 1], but got {s!r}')
        for name, low in (("max_builds", 1), ("samples", 2)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ConfigError(f'"mixed_precision.{name}" must be an integer ≥ {low}, but got {v!r}')
        for name in ("time_budget_s", "margin_db"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ConfigError(f'"mixed_precision.{name}" must be a number ≥ 0, but got {v!r}')

    @classmethod
    def parse(cls, value: Any) -> "MixedPrecisionConfig":
        """None → defaults; a bool → enabled or not; a mapping → fields (unknown names refused)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, bool):
            return cls(enabled=value)
        if isinstance(value, Mapping):
            known = {f.name for f in fields(cls)}
            unknown = sorted(set(value) - known)
            if unknown:
                raise ConfigError(f"mixed_precision: unknown field(s) {unknown}; known fields are {sorted(known)}")
            return cls(**dict(value))
        raise ConfigError(f'"mixed_precision" must be true/false or a mapping of settings, but got {value!r}')

    def budget(self, n_layers: int) -> int:
        return max(1, math.ceil(self.max_float_share * n_layers)) if n_layers else 0


#: evaluate(number of top-ranked layers kept in float) → the twin's SQNR (dB)
EvalFn = Callable[[int], float]


def bisect_count(evaluate: EvalFn, target_db: float, max_count: int) -> Tuple[int, float, List[Tuple[int, float]]]:
    """The fewest top-ranked layers in float for which the twin reaches ``target_db``.

    Returns (count, its SQNR, every (count, SQNR) tried).  When even
    ``max_count`` misses, returns ``max_count`` (the closest the budget allows).
    """
    tried: List[Tuple[int, float]] = []

    def ev(k: int) -> float:
        for kk, db in tried:
            if kk == k:
                return db
        db = evaluate(k)
        tried.append((k, db))
        return db

    if ev(0) >= target_db:
        return 0, tried[0][1], tried
    hi_db = ev(max_count)
    if hi_db < target_db:
        return max_count, hi_db, tried
    lo, hi = 0, max_count
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ev(mid) >= target_db:
            hi = mid
        else:
            lo = mid
    return hi, ev(hi), tried


def next_count(k: int, max_count: int) -> int:
    """After a real build missed with ``k`` layers in float: half as many again (at least one more)."""
    return min(max_count, max(k + 1, math.ceil(k * 1.5)))


@dataclass(frozen=True)
class Attempt:
    """One real target build of the search."""

    float_layers: int
    sqnr_db: float
    twin_db: Optional[float]
    passed: bool

    def to_json(self) -> Dict[str, Any]:
        return {"float_layers": self.float_layers, "sqnr_db": round(self.sqnr_db, 2),
                "twin_sqnr_db": None if self.twin_db is None else round(self.twin_db, 2), "passed": self.passed}


def int8_mac_share(macs: Mapping[str, int], kept_float: Sequence[str]) -> Optional[float]:
    """Share of the weighted layers' multiply-accumulates that still run in int8 (None when none were counted)."""
    total = sum(macs.values())
    if total <= 0:
        return None
    kept = set(kept_float)
    return round(sum(v for k, v in macs.items() if k not in kept) / total, 6)


def failure_message(floor_db: float, attempts: Sequence[Attempt], ranked: Sequence[str], budget: int,
                    n_layers: int, *, default_floor: bool = True) -> str:
    """A floor no mix met: the best SQNR reached, the layers tried, the mix that came closest."""
    best = max(attempts, key=lambda a: a.sqnr_db)
    tried = ", ".join(f"{a.float_layers} in float → {a.sqnr_db:.1f} dB" for a in attempts)
    closest = list(ranked[:best.float_layers])
    shown = ", ".join(closest[:8]) + (f" and {len(closest) - 8} more" if len(closest) > 8 else "")
    what = "the default floor" if default_floor else "the required"
    return (f"int8 misses {what} {floor_db:.2f} dB SQNR with every precision mix tried (up to {budget} of {n_layers} "
            f"quantizable layers in float): best SQNR {best.sqnr_db:.2f} dB with {best.float_layers} layer(s) in float "
            f"[{shown}]; tried {tried}. To accept it pass --min-sqnr {math.floor(best.sqnr_db * 10) / 10:.1f} "
            "(or lower), build at fp16/fp32, or raise mixed_precision.max_float_share")

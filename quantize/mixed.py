"""Automatic mixed precision: which layers an int8 build keeps in float to meet its floor.

The search runs on the switchable twin (:mod:`edgekit.quantize.sensitivity`).
Layers are taken in the order of :func:`benefit_order` — the int8 noise a
layer's return to float removes per unit of what it costs in speed (its
multiply-accumulates, plus the int8↔float conversions it adds or saves at its
edges), so cheap, damaging layers go first and float layers gather into
contiguous regions — and a bisection over how many of the first ones stay in
float finds the fewest that meet the floor plus a margin on the twin.  The
target then builds that mix for real — its own mechanism keeps the layers in
float, through the recipe's ``exclude_nodes`` every target honours — and its
verification is the verdict; when the real build still misses, the fewest further layers whose
modelled gain covers what the build fell short follow (:func:`next_after_miss`),
until the gates hold or the float budget is spent.  After a pass, the twin
re-aimed by what the real build beat it by names heavy float layers to return,
and real builds decide how many go back (:func:`descend`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from edgekit.errors import ConfigError


@dataclass(frozen=True)
class MixedPrecisionConfig:
    """How far an int8 build may go to meet its floor.

    ``enabled``: search at all (else a missed floor fails as before).
    ``max_float_share``: at most this share of the quantizable layers that carry
    MACs stays in float (ops without MACs are free: :meth:`budget_in`).
    ``max_builds``: target builds after the first (5: YOLOv8n's search on openvino reads 22.3 → 21.9 → 22.4
    → 23.8 → 24.9 → 27.0 dB at 0, 40, 41, 89, 106 and 117 float layers, its twin far from the real
    build; the builds a passing search leaves go to the descent: ``int8_stage._refine``).  ``samples``: held-out
    feeds the sensitivity sweep runs on at most.  ``sweep_gmacs``: the sweep's
    bound in giga multiply-accumulates of twin evaluation (model MACs per
    sample × samples × evaluations;
    :class:`~edgekit.quantize.sensitivity.SweepBound`) — counted, not timed,
    so a package is the same whether the build host was idle or loaded.
    Sized on the 5 M-parameter YOLOX at 416² (3.2 GMACs a sample, 280
    points): every point on 3 samples, ~1.5 minutes of a 2-core host,
    leaving the rest of 5 minutes to the search's target builds.
    ``time_budget_s``: a wall-time guard only, for a host far slower than
    planned: the sweep stops there and warns.  ``prune_evals``: after the
    bisection, at most this many twin evaluations try to return float layers
    to int8, heaviest first (:func:`prune`; 0 turns it off).  ``margin_db``: the twin must clear the floor by this
    much before a real build is tried (the twin is a model of the target, not
    the target).  ``speed_check``: time the int8 package against the target's
    fp32 package in the same runner and warn when int8 is not faster.
    """

    enabled: bool = True
    max_float_share: float = 0.75
    max_builds: int = 5
    samples: int = 16
    sweep_gmacs: float = 3000.0
    time_budget_s: float = 1800.0
    prune_evals: int = 16
    margin_db: float = 1.0
    speed_check: bool = True

    def __post_init__(self) -> None:
        for name in ("enabled", "speed_check"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f'"mixed_precision.{name}" must be true or false, but got {getattr(self, name)!r}')
        s = self.max_float_share
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0.0 < s <= 1.0:
            raise ConfigError(f'"mixed_precision.max_float_share" must be a number in (0, 1], but got {s!r}')
        for name, low in (("max_builds", 1), ("samples", 2), ("prune_evals", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ConfigError(f'"mixed_precision.{name}" must be an integer ≥ {low}, but got {v!r}')
        for name in ("sweep_gmacs", "time_budget_s", "margin_db"):
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

    def sweep_bound(self) -> Any:
        from .sensitivity import SweepBound

        return SweepBound(gmacs=float(self.sweep_gmacs), wall_guard_s=float(self.time_budget_s))

    def budget(self, n_layers: int) -> int:
        return max(1, math.ceil(self.max_float_share * n_layers)) if n_layers else 0

    def budget_in(self, order: Sequence[str], macs: Mapping[str, int]) -> int:
        """How many of the first layers of ``order`` the float budget allows.

        Two caps, and the longer prefix wins: ``max_float_share`` of the layers that carry MACs
        (convolutions, matrix products; ops without MACs ride along), or ``max_float_share`` of the MACs
        themselves.  The count alone let a cheap-first order spend the budget on activations and pools
        and never reach the one heavy layer a small network needs in float (measured: MTCNN O-Net stopped
        at 24.1 dB with 9 of its 12 layers in float, 95 % of the MACs still int8) — hence counting only
        MAC layers; the MACs let a network with many cheap sensitive layers keep them all in float
        (measured: PP-OCRv4 det needs ~160 of its 189 layers in float for 25 dB on the twin, 58 % of the
        MACs still int8, where 48 of its 64 convolutions were the count's end at 23.8 dB).
        """
        weighted = [n for n in order if macs.get(n, 0) > 0]
        if not weighted:
            return self.budget(len(order))
        allowed, used, by_count = self.budget(len(weighted)), 0, len(order)
        for i, n in enumerate(order):
            if macs.get(n, 0) > 0:
                if used == allowed:
                    by_count = i
                    break
                used += 1
        total = float(sum(max(0, macs.get(n, 0)) for n in order))
        cap, spent, by_macs = self.max_float_share * total, 0.0, len(order)
        for i, n in enumerate(order):
            spent += max(0, macs.get(n, 0))
            if spent > cap * (1 + 1e-12):
                by_macs = i
                break
        return max(by_count, by_macs)


#: a float↔int8 boundary costs about this many multiply-accumulates per element of the tensor crossing it
#: (a reorder/FakeQuantize or a Q/DQ pair is one memory-bound pass over the tensor; a float FMA is a
#: fraction of a cycle, so one element converted is worth a few tens of MACs) ...
BOUNDARY_MACS_PER_ELEMENT = 16.0
#: ... plus a fixed price per boundary (one more kernel to launch and schedule)
BOUNDARY_FIXED_MACS = 20_000.0


def noise_ratio(db: Optional[float]) -> float:
    """Noise power over signal power for an SQNR in dB (0 for an unmeasured layer)."""
    return 0.0 if db is None else 10.0 ** (-float(db) / 10.0)


@dataclass(frozen=True)
class Choice:
    """One layer in the order the search keeps layers in float."""

    name: str
    #: share of the all-int8 output noise this pick removes (points no int8 layer touches any more)
    benefit: float
    #: multiply-accumulates plus the boundary conversions it adds (or saves, when it joins float neighbours)
    cost: float
    #: the additive model's SQNR with this layer and every earlier pick in float (dB)
    predicted_db: float


def point_noise(point_db: Mapping[str, float], points: Sequence[str], all_int8_db: float) -> Dict[str, float]:
    """Each point's noise (power relative to the signal), adding up to the measured all-int8 noise.

    Measured points keep their proportions; when the time budget left some unmeasured, the all-int8
    noise the measured ones do not explain is spread evenly over those (unknown is not noiseless).
    """
    n_all = noise_ratio(all_int8_db)
    raw = {p: noise_ratio(point_db[p]) for p in points if p in point_db}
    missing = [p for p in points if p not in point_db]
    measured = sum(raw.values())
    if not missing or measured >= n_all:
        scale = n_all / measured if measured > 0 else 0.0
        out = {p: v * scale for p, v in raw.items()}
        out.update({p: 0.0 for p in missing})
        return out
    out = dict(raw)
    out.update({p: (n_all - measured) / len(missing) for p in missing})
    return out


def benefit_order(layers: Sequence[Tuple[str, int]], point_db: Mapping[str, float],
                  layer_points: Mapping[str, Sequence[str]], all_int8_db: float,
                  point_size: Mapping[str, int] = {}, *, per_element: float = BOUNDARY_MACS_PER_ELEMENT,
                  per_boundary: float = BOUNDARY_FIXED_MACS) -> List[Choice]:
    """Every layer, in the order a speed-aware search should keep them in float.

    The noise model: each quantization point (an activation tensor, a weight;
    :class:`edgekit.quantize.sensitivity.Twin`) adds its own noise
    (:func:`point_noise`), and a tensor's noise goes only when *every* layer
    touching it is float.  A move is one layer, or one layer with the int8
    layers that share its tensors (what it takes to free them); its benefit is
    the noise it frees, its cost the float MACs it adds (float MACs are what
    makes a mix slower than int8) plus the conversions it adds or saves: a
    boundary is a tensor with float and int8 layers around it.  Greedy: the
    move with the best benefit per cost next, re-evaluated after every move —
    so float layers gather into contiguous regions and cheap, damaging layers
    go first.  ``layers``: (name, MACs).
    """
    n_all = noise_ratio(all_int8_db)
    touching: Dict[str, Set[str]] = {}
    for name, _ in layers:
        for p in layer_points.get(name, ()):
            touching.setdefault(p, set()).add(name)
    noise = point_noise(point_db, list(touching), all_int8_db)
    macs = {name: float(max(0, m)) for name, m in layers}
    floats: Set[str] = set()
    left = sum(noise.values())
    pending = [name for name, _ in layers]
    out: List[Choice] = []

    def boundary(p: str, fl: Set[str]) -> bool:
        t = touching[p]
        return bool(t & fl) and bool(t - fl)

    def gain(move: Set[str]) -> float:
        after = floats | move
        pts = {p for n in move for p in layer_points.get(n, ())}
        return sum(noise[p] for p in pts if touching[p] <= after and not touching[p] <= floats)

    def cost(move: Set[str]) -> float:
        after = floats | move
        c = sum(macs[n] for n in move)
        for p in {p for n in move for p in layer_points.get(n, ()) if p.startswith("t:")}:
            change = int(boundary(p, after)) - int(boundary(p, floats))
            c += change * (per_element * point_size.get(p, 0) + per_boundary)
        return max(1.0, c)

    while pending:
        best: Optional[Tuple[Tuple[float, float, float], str, List[str]]] = None
        for n in pending:
            partners = sorted({m for p in layer_points.get(n, ()) for m in touching[p] - floats} - {n})
            for move in ([n], [n] + partners) if partners else ([n],):
                g, c = gain(set(move)), cost(set(move))
                key = (g / c, g, -c)
                if best is None or key > best[0]:
                    best = (key, n, move)
        assert best is not None
        _, _, move = best
        for i, n in enumerate(move):
            c = cost({n})
            g = gain({n})
            floats.add(n)
            pending.remove(n)
            left = max(0.0, left - g)
            out.append(Choice(n, g / n_all if n_all > 0 else 0.0, c,
                              200.0 if left <= 0 else float(min(200.0, -10.0 * math.log10(left)))))
    return out


def prune(kept: Sequence[str], macs: Mapping[str, int], holds: Callable[[Sequence[str]], bool],
          max_evals: int) -> Tuple[List[str], List[Tuple[str, bool]]]:
    """Return layers of a float set to int8, heaviest first, while ``holds`` (the twin at its target) says yes.

    The bisection keeps a prefix of an order ranked by an additive noise model; quantization noises do not
    add exactly (measured: PP-OCRv4 det's twin read 4.5 dB under the additive prediction at the float
    budget), so a prefix that reaches the target can carry heavy layers it does not need — and every float
    MAC is speed the int8 package gives away.  Each candidate costs one twin evaluation; at most
    ``max_evals`` of them, the layers with the most MACs first (ops without MACs cost nothing in float
    and stay).  Returns (the float set left, in its order; each layer tried and whether it went back to int8).
    """
    current = list(kept)
    trials: List[Tuple[str, bool]] = []
    candidates = sorted((n for n in kept if macs.get(n, 0) > 0), key=lambda n: (-macs[n], n))
    for n in candidates[:max(0, max_evals)]:
        trial = [x for x in current if x != n]
        ok = bool(holds(trial))
        trials.append((n, ok))
        if ok:
            current = trial
    return current, trials


def descend(count: int, holds: Callable[[int], bool], builds: int) -> Tuple[int, List[Tuple[int, bool]]]:
    """How many of ``count`` candidates, first ones first, can leave the float set: ``holds(n)`` builds the mix
    without the first ``n`` and says whether it held every gate.

    All of them are tried first (one build when the twin was right); after a miss, a bisection between the most
    known to hold (0 at the start: the mix as it passed) and the fewest known to miss, within ``builds`` calls.
    Returns (the most that held, 0 when none did; every (n, held) tried, in order).
    """
    tried: List[Tuple[int, bool]] = []
    good, bad, n = 0, count + 1, count
    while builds > len(tried) and good < n < bad:
        ok = bool(holds(n))
        tried.append((n, ok))
        good, bad = (n, bad) if ok else (good, n)
        n = (good + bad) // 2
    return good, tried


#: evaluate(number of top-ranked layers kept in float) → the twin's SQNR (dB)
EvalFn = Callable[[int], float]


def bisect_count(evaluate: EvalFn, target_db: float, max_count: int,
                 min_count: int = 0) -> Tuple[int, float, List[Tuple[int, float]]]:
    """The fewest top-ranked layers in float (at least ``min_count``) for which the twin reaches ``target_db``.

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

    lo = min(min_count, max_count)
    if ev(lo) >= target_db:
        return lo, ev(lo), tried
    hi_db = ev(max_count)
    if hi_db < target_db:
        return max_count, hi_db, tried
    hi = max_count
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ev(mid) >= target_db:
            hi = mid
        else:
            lo = mid
    return hi, ev(hi), tried


def next_after_miss(order: Sequence[Choice], k: int, real_db: float, floor_db: float, budget: int) -> int:
    """After a real build with the first ``k`` layers in float reached ``real_db``: the fewest further layers
    whose gain in the additive model covers what the build fell short (at least one more, at most ``budget``).

    The model's curve (:attr:`Choice.predicted_db`) rises with every layer; the twin's own measurements on a
    few samples do not always (measured: a text-line classifier's twin read 32.6 dB with 60 layers in float
    and 22.2 with 82), so a search that re-aimed on them overshot by dozens of layers.  At least half a dB
    more is asked, so a build that failed on another gate (recall, accuracy) still moves on.
    """
    if k >= budget or not order:
        return min(k, budget)
    need = max(floor_db - real_db, 0.0) + 0.5
    base = order[k - 1].predicted_db if k > 0 else order[0].predicted_db
    for j in range(k + 1, min(budget, len(order)) + 1):
        if order[j - 1].predicted_db >= base + need:
            return j
    return min(budget, len(order))


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


def failure_message(floor_db: float, attempts: Sequence[Attempt], closest: Sequence[str], budget: int,
                    n_layers: int, *, default_floor: bool = True) -> str:
    """A floor no mix met: the best SQNR reached, the layers tried, the mix that came closest (``closest``)."""
    best = max(attempts, key=lambda a: a.sqnr_db)
    tried = ", ".join(f"{a.float_layers} in float → {a.sqnr_db:.1f} dB" for a in attempts)
    closest = list(closest)
    shown = ", ".join(closest[:8]) + (f" and {len(closest) - 8} more" if len(closest) > 8 else "")
    what = "the default floor" if default_floor else "the required"
    return (f"int8 misses {what} {floor_db:.2f} dB SQNR with every precision mix tried (up to {budget} of {n_layers} "
            f"quantizable layers in float): best SQNR {best.sqnr_db:.2f} dB with {best.float_layers} layer(s) in float "
            f"[{shown}]; tried {tried}. To accept it pass --min-sqnr {math.floor(best.sqnr_db * 10) / 10:.1f} "
            "(or lower), build at fp16/fp32, or raise mixed_precision.max_float_share")

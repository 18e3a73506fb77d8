"""The int8 stages the pipeline runs after verify: mixed precision when the floor is missed, then speed.

:func:`mixed_precision` is a no-op unless the build is int8, has calibration
data, and its first build misses one of its gates (the SQNR floor, an accuracy
budget, a task metric's floor).  Then it measures the layers on the switchable
twin (:mod:`edgekit.quantize.sensitivity`), orders them by benefit per cost
and picks the fewest first ones that meet the floor on the twin
(:mod:`edgekit.quantize.mixed`) and
rebuilds through the target with those layers in the recipe's
``exclude_nodes`` — the node exclusion every target honours with its own
mechanism (Q/DQ placement for onnxruntime and TensorRT, 16-bit layers on the
QNN HTP, NNCF's ignored scope for OpenVINO, float ops in the TFLite lowering,
uncompressed weights and float inputs in Core ML) — until the
target's own verification meets the gates or the float budget is spent.  The
manifest's ``quantization.mixed_precision`` records the layers kept in float
and why, the share of MACs left in int8, the attempts and the ranked table.

:func:`speed` builds the same model at fp32 through the same target (a fp32
package pins f32 execution), runs both packages side by side in the same
runner on the verification feeds and records the median latencies; int8 that
is not faster warns.  Where the target's runtime runs a float model in another
precision by default on this host (``Target.host_float_runs``: OpenVINO in
bf16 on an AVX512-BF16/AMX CPU), the fp32 package is timed that way too, with
its SQNR against f32, and int8 that is not faster than that warns as well.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from edgekit.errors import EdgekitError, GateError
from edgekit.quantize import mixed as _mixed
from edgekit.quantize import ranges as _ranges
from edgekit.quantize import sensitivity as _sens
from edgekit.quantize.parity import compare_outputs, sqnr_db

from . import stages
from .base import Precision
from .toolchain import first_line

#: calibration feeds the ranges of the twin are computed on (the sweep itself uses config.samples)
RANGE_SAMPLES = 64


@dataclass(frozen=True)
class Int8Outcome:
    built: Any
    verified: Any
    #: the ranked sensitivity table (None when no search ran)
    sensitivity: Optional[_sens.SensitivityReport] = None
    twin: Optional[_sens.Twin] = None


def gates_hold(req: Any, verified: Any) -> bool:
    try:  # the gate stage's own check: every gate it applies (SQNR, accuracy, a detector's recall floor)
        stages.check_effective_gates(req, verified.parity)
    except GateError:
        return False
    return True


def _evenly(items: Sequence[Any], n: int) -> List[Any]:
    if len(items) <= n:
        return list(items)
    return [items[(k * len(items)) // n] for k in range(n)]


def build_twin(canon: Any, data: Any, recipe: Any, activations: bool = True) -> Tuple[_sens.Twin, Dict[str, str]]:
    """The twin of the canonical model over the recipe's calibration method; layers the recipe skips stay out.

    ``activations=False``: a weights-only int8 scheme (Core ML's default ``w8``) — the twin rounds the
    weights alone (measured: PP-OCRv4 rec's first w8 build read 22.4 dB where a twin rounding activations
    too said 11.8, and the search kept 178 of 195 layers in float)."""
    model = canon.model.model
    floats = _ranges.float_tensors(model)
    method = recipe.method.value if recipe.method.value in {m.value for m in _ranges.RangeMethod} else "minmax"
    feeds = _evenly(data.calibration.feeds, RANGE_SAMPLES)
    # the recipe's per-op-type / per-node range rules too: the twin must see the ranges the targets will use
    act = _ranges.ranges(model, feeds, method=method, percentile=recipe.percentile, names=list(floats),
                         per_tensor=_ranges.recipe_rules(model, recipe)) if activations else {}
    producers = {n.name: n.op_type for n in model.graph.node}
    from .graph import detection_tail

    # a detector's decode tail stays out of int8 on every target already: not a candidate
    tail = set(detection_tail(model))
    layers = [x for x in _sens.find_layers(model, floats)
              if not recipe.skips(x.name, producers.get(x.name, "")) and x.name not in tail]
    return _sens.Twin(model, act, layers, float_tensors=floats), producers


def _scorer(checked: Any, canon: Any) -> _sens.ScoreFn:
    """The weakest checked part, judged as verification judges it (task-aware parts), else the weakest output:
    the continuous figure the sensitivity sweep ranks layers by.  A text detector's map is scored as a tensor
    (its boxes are the plan's business, :func:`gate_db`): each of the sweep's hundreds of evaluations would
    otherwise decode every map twice."""
    task = "raw" if checked.spec.task == "text-detect" else checked.spec.task

    def score(ref: _sens.Outputs, cand: _sens.Outputs) -> float:
        try:
            return float(compare_outputs(ref, cand, task=task, postprocess=canon.postprocess).weakest.sqnr_db)
        except Exception:  # noqa: BLE001 - a task decoder that cannot judge the twin: plain tensors still can
            return _sens.weakest_output_sqnr(ref, cand)
    return score


def gate_db(req: Any, report: Any, by_detections: Optional[bool] = None) -> float:
    """One figure for the search to aim at, judged as the gates judge: the weakest checked part — but where the
    score parts answer to the decoded detections (a detector's class scores, a text detector's map), the weakest
    of the other parts, put under the floor when recall or precision misses its floor.  Aiming at the score
    parts' SQNR instead keeps float layers the gates never asked for: PP-OCRv4 det on onnxruntime shipped 157
    float layers (62 % of MACs int8) to lift its map to 26 dB, with recall 0.969 on fp32's boxes.

    ``by_detections``: whether the detections judge, decided by the caller on the gate's own data — the
    plan's few samples hold fewer boxes than the gate's count rule wants, so the twin cannot tell (YOLOv8n's
    13 held-out boxes put its class scores under SQNR; a twin that judged them by its boxes planned 0 float
    layers and four real builds missed).  None: the gate's rule on ``report`` itself."""
    from edgekit.quantize.parity import DETECTION_SCORE_KINDS

    gates = stages.effective_gates(req)[0]
    floor, min_recall = gates["min_sqnr_db"], gates.get("min_recall")
    if by_detections is None:
        by_detections = _judged_by_detections(req, report)
    if not by_detections or report.detection is None or min_recall is None:
        return float(report.weakest.sqnr_db)
    rest = [p.sqnr_db for p in report.parts if p.kind not in DETECTION_SCORE_KINDS]
    db = float(min(rest)) if rest else float(report.weakest.sqnr_db)
    d = report.detection
    if d.recall < min_recall or d.precision < min_recall:
        db = min(db, floor - 0.01)
    return db


def _judged_by_detections(req: Any, report: Any) -> bool:
    from edgekit.quantize.parity import judged_by_detections

    gates, sources = stages.effective_gates(req)
    return judged_by_detections(report, floor=sources["min_sqnr_db"] != "user", min_recall=gates.get("min_recall"),
                                recall_floor=sources.get("min_recall") != "user")


def _gate_scorer(req: Any, checked: Any, canon: Any, by_detections: bool) -> _sens.ScoreFn:
    """:func:`gate_db` of the twin's outputs against fp32's."""
    def score(ref: _sens.Outputs, cand: _sens.Outputs) -> float:
        try:
            return gate_db(req, compare_outputs(ref, cand, task=checked.spec.task, postprocess=canon.postprocess),
                           by_detections)
        except Exception:  # noqa: BLE001 - as _scorer
            return _sens.weakest_output_sqnr(ref, cand)
    return score


@dataclass(frozen=True)
class Plan:
    """What the twin search settled on before any real build of the mix."""

    #: every layer, in the order the search keeps them in float
    order: List[_mixed.Choice]
    #: the fewest first layers of ``order`` that reach the target on the twin (the bisection)
    k: int
    #: layers of that prefix the prune pass returned to int8 (the twin still reached the target)
    returned: List[str]
    #: (float layers, twin SQNR) of every mix the bisection measured
    tried: Dict[int, float]
    #: the prune pass's trials: (layer, its MACs, the twin's SQNR without it in float, returned or not)
    prune_trials: List[Tuple[str, int, float, bool]]
    #: the twin's SQNR of any float set (cached)
    twin_db: Callable[[Sequence[str]], float]
    #: the pruned set checked on every held-out feed: how many, and the twin's SQNR (None: not needed)
    confirmation: Optional[Dict[str, Any]] = None

    @property
    def ranked(self) -> List[str]:
        return [c.name for c in self.order]

    def keep(self, k: int, pruned: bool) -> Tuple[str, ...]:
        out = set(self.returned) if pruned else set()
        return tuple(n for n in self.ranked[:k] if n not in out)


def plan(twin: _sens.Twin, report: _sens.SensitivityReport, feeds: Sequence[Mapping[str, np.ndarray]],
         score: _sens.ScoreFn, target_db: float, config: _mixed.MixedPrecisionConfig,
         confirm_feeds: Sequence[Mapping[str, np.ndarray]] = ()) -> Plan:
    """The order layers go float in, the fewest first ones that reach ``target_db`` on the twin, less the heavy
    ones the prune pass finds the twin does not need (:func:`edgekit.quantize.mixed.prune`).

    The prune's trials run on the sweep's few ``feeds``; its result must then hold on every one of
    ``confirm_feeds`` (the gate's held-out set) or it is dropped: a layer whose int8 range clips on one
    held-out input the few do not show looks free on them (measured: a text-line classifier's pruned mix
    read 26.3 dB on 16 feeds and 21.3 dB in the real build on all of them)."""
    # kept in float in order of benefit per cost, not of damage: a damaging layer that is cheap (few MACs,
    # next to float neighbours) goes before a heavy one whose float kernel would eat int8's speed
    order = _mixed.benefit_order([(x.name, x.macs) for x in twin.layers], report.point_db, report.layer_points,
                                 report.all_int8_db, report.point_size)
    ranked = [c.name for c in order]
    names = [x.name for x in twin.layers]
    macs = {x.name: x.macs for x in twin.layers}
    ref = twin.run_all(feeds, ())
    cache: Dict[frozenset, float] = {}

    def twin_db(keep: Sequence[str]) -> float:
        key = frozenset(keep)
        if key not in cache:
            cache[key] = score(ref, twin.run_all(feeds, [n for n in names if n not in key]))
        return cache[key]

    tried: Dict[int, float] = {}

    def prefix_db(k: int) -> float:
        tried[k] = twin_db(ranked[:k])
        return tried[k]

    budget = config.budget_in(ranked, macs)
    k, reached, _ = _mixed.bisect_count(prefix_db, target_db, budget)
    trials: List[Tuple[str, int, float, bool]] = []
    returned: List[str] = []
    confirmation: Optional[Dict[str, Any]] = None
    if k > 0 and reached >= target_db and config.prune_evals > 0:
        last: List[float] = []

        def holds(keep: Sequence[str]) -> bool:
            last.append(twin_db(keep))
            return last[-1] >= target_db

        left, tested = _mixed.prune(ranked[:k], macs, holds, config.prune_evals)
        trials = [(n, macs[n], db, ok) for (n, ok), db in zip(tested, last)]
        returned = [n for n, ok in tested if ok]
        confirmed = None
        if returned and len(confirm_feeds) > len(feeds):
            full_ref = twin.run_all(confirm_feeds, ())
            confirmed = score(full_ref, twin.run_all(confirm_feeds, [n for n in names if n not in set(left)]))
            if confirmed < target_db:
                returned = []
        confirmation = {"feeds": len(confirm_feeds), "twin_sqnr_db": None if confirmed is None else round(confirmed, 2)}
    return Plan(order, k, returned, tried, trials, twin_db, confirmation)


def mixed_precision(req: Any, src: Any, canon: Any, checked: Any, data: Any, built: Any, verified: Any,
                    workdir: Path, config: _mixed.MixedPrecisionConfig, explain: bool = False) -> Int8Outcome:
    """Keep the most sensitive layers in float until the gates hold (see the module docstring)."""
    needed = req.precision is Precision.INT8 and data.calibration is not None and len(data.calibration) > 0
    if needed and config.enabled and gates_hold(req, verified):
        # a first build that passes may be offered a faster one by its target (openvino: symmetric activations)
        from .int8_variant import try_faster

        built, verified = try_faster(req, src, canon, checked, data, built, verified, workdir)
    # the search starts when any gate fails (SQNR floor, accuracy budget, a task metric's floor) and stops
    # when all of them hold: SQNR alone would ship a detector that lost its recall
    if not needed or (not config.enabled and not explain) or (gates_hold(req, verified) and not explain):
        return Int8Outcome(built, verified)
    recipe = data.spec.recipe
    req.progress("sensitivity", 0, 0)
    twin, _ = build_twin(canon, data, recipe, activations=req.target.int8_rounds_activations(data.spec))
    score = _scorer(checked, canon)
    # judged on the samples the gate judges (held out of calibration): ranges fitted to the very feeds they
    # are scored on never clip, and would hide exactly the damage verification then finds
    judge = data.verification if data.verification is not None and len(data.verification) else data.calibration
    feeds = _evenly(judge.feeds, config.samples)
    report = _sens.analyse(twin, feeds, score=score, bound=config.sweep_bound())
    if not config.enabled or gates_hold(req, verified):
        return Int8Outcome(built, verified, report, twin)

    gates, sources = stages.effective_gates(req)
    floor, default_floor = gates["min_sqnr_db"], sources["min_sqnr_db"] != "user"
    # the twin's search runs on the samples the sweep kept (its MAC bound cut them evenly): bounded the same way
    feeds = _evenly(feeds, report.samples)
    target = floor + config.margin_db
    # whether the detections judge the score parts, as the gate decided on the first build's held-out data
    by_detections = _judged_by_detections(req, verified.parity)
    pl = plan(twin, report, feeds, _gate_scorer(req, checked, canon, by_detections), target, config,
              confirm_feeds=judge.feeds)
    order, ranked, tried = pl.order, pl.ranked, pl.tried
    budget = config.budget_in(ranked, {x.name: x.macs for x in twin.layers})
    first = _mixed.Attempt(0, float(verified.parity.weakest.sqnr_db), report.all_int8_db, False)
    attempts: List[_mixed.Attempt] = [first]
    kept_by_attempt: List[Tuple[str, ...]] = [()]
    best: Tuple[float, Any, Any, Tuple[str, ...]] = (first.sqnr_db, built, verified, ())
    k, pruned = max(1, pl.k), bool(pl.returned)
    for i in range(config.max_builds):
        keep = pl.keep(k, pruned)
        req.progress("mixed precision", i + 1, config.max_builds)
        b, v = build_mix(req, src, canon, checked, data, workdir / f"mixed-{i}", keep)
        ok = gates_hold(req, v)
        real = float(v.parity.weakest.sqnr_db)
        attempts.append(_mixed.Attempt(len(keep), real, pl.twin_db(keep) if pruned else tried.get(k), ok))
        kept_by_attempt.append(keep)
        if real > best[0] or ok:
            best = (real, b, v, keep)
        if ok or (k >= budget and not pruned):
            break
        if pruned:  # the twin's prune did not carry over to the target: the whole prefix first
            pruned = False
        else:  # the fewest further layers whose modelled gain covers what the real build fell short
            k = _mixed.next_after_miss(order, k, gate_db(req, v.parity), floor, budget)
    passed = attempts[-1].passed
    closest = kept_by_attempt[max(range(len(attempts)), key=lambda j: attempts[j].sqnr_db)]
    if not passed and not req.allow_gate_failure:
        raise GateError(_mixed.failure_message(floor, attempts, closest, budget, len(ranked),
                                                  default_floor=default_floor))
    _, b, v, kept = best
    if passed:  # the target may offer a faster build of the same mix (openvino: symmetric activations, bf16 parts)
        from .int8_variant import kept_options, try_faster

        # before the descent below: a variant costs accuracy (symmetric activations ~1 dB) and is judged with
        # the margin the search left; the descent then spends what margin is left on returning layers to int8
        b, v = try_faster(req, src, canon, checked, data, b, v, workdir / "after-search", keep=kept)
    refine: Optional[Dict[str, Any]] = None
    builds_left = config.max_builds - (len(attempts) - 1)
    if passed and builds_left > 0 and config.prune_evals > 0:
        variants = (b.artifact.quantization or {}).get("faster_variant")
        b, v, kept, refine = _refine(req, src, canon, checked, data, pl, twin, (b, v, kept),
                                     gate_db(req, v.parity), target, floor, config, workdir, builds_left,
                                     kept_options(b.artifact.quantization or {}))
        if refine.get("kept"):
            attempts.append(_mixed.Attempt(len(kept), float(v.parity.weakest.sqnr_db), pl.twin_db(kept), True))
            if variants:  # the descent's build carries the variants it was built with; their record stays
                art = b.artifact
                b = dataclasses.replace(b, artifact=dataclasses.replace(
                    art, quantization={**(art.quantization or {}), "faster_variant": variants}))
    by = {x.name: x for x in report.layers}
    kept_set = set(kept)
    record = {
        "floor_db": floor,
        "float_precision": "fp32",
        "selection": "benefit per cost: share of the int8 output noise removed per float MAC, "
                     "int8/float boundaries counted; then the heaviest float layers the twin does not need "
                     "returned to int8",
        "kept_float": [{"layer": c.name, "op_type": by[c.name].op_type, "macs": by[c.name].macs,
                        "reason": _reason(i, len(ranked), c, by[c.name])}
                       for i, c in enumerate(order) if c.name in kept_set],
        "float_layers": len(kept),
        "quantizable_layers": len(ranked),
        "int8_mac_share": _mixed.int8_mac_share({x.name: x.macs for x in report.layers}, kept),
        "attempts": [a.to_json() for a in attempts],
        "twin_search": [{"float_layers": kk, "twin_sqnr_db": round(db, 2)} for kk, db in sorted(tried.items())],
        "prune": {"target_db": round(target, 2), "prefix_float_layers": pl.k,
                  "returned_to_int8": [n for n in pl.returned if n not in kept_set],
                  "confirmation": pl.confirmation,
                  "trials": [{"layer": n, "macs": m, "twin_sqnr_db": round(db, 2), "returned": ok}
                             for n, m, db, ok in pl.prune_trials],
                  "after_pass": refine},
        "passed": passed,
        "sensitivity": report.to_json(),
    }
    if not passed:
        warnings.warn(_mixed.failure_message(floor, attempts, closest, budget, len(ranked),
                                                  default_floor=default_floor), stacklevel=2)
    art = b.artifact
    art = dataclasses.replace(art, quantization={**(art.quantization or {}), "mixed_precision": record})
    return Int8Outcome(dataclasses.replace(b, artifact=art), v, report, twin)


def mix_spec(spec: Any, keep: Sequence[str] = (), build_options: Optional[Mapping[str, Any]] = None) -> Any:
    """``spec`` with the layers ``keep`` added to its recipe's ``exclude_nodes`` and ``build_options`` over its own."""
    recipe = spec.recipe
    if keep:
        recipe = dataclasses.replace(recipe, exclude_nodes=tuple(recipe.exclude_nodes)
                                     + tuple(x for x in keep if x not in recipe.exclude_nodes))
    return dataclasses.replace(spec, recipe=recipe,
                               build_options={**dict(spec.build_options), **dict(build_options or {})})


def build_mix(req: Any, src: Any, canon: Any, checked: Any, data: Any, wd: Path, keep: Sequence[str] = (),
              build_options: Optional[Mapping[str, Any]] = None) -> Tuple[Any, Any]:
    """(built, verified) of the target with :func:`mix_spec`'s spec; the first build's warnings are not repeated."""
    data_k = dataclasses.replace(data, spec=mix_spec(data.spec, keep, build_options))
    wd.mkdir(parents=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the first build already said what these builds would repeat
        b = stages.target_build(req, canon, data_k, wd)
        return b, stages.verify(req, src, canon, checked, data_k, b, wd)


#: a passing mix is pruned again only when the real build beat its twin by at least this much (dB)
REFINE_MIN_OFFSET_DB = 0.5


def _refine(req: Any, src: Any, canon: Any, checked: Any, data: Any, pl: Plan, twin: _sens.Twin,
            passing: Tuple[Any, Any, Tuple[str, ...]], real_db: float, target_db: float, floor_db: float,
            config: _mixed.MixedPrecisionConfig, workdir: Path, builds: int,
            options: Optional[Mapping[str, Any]] = None) -> Tuple[Any, Any, Tuple[str, ...], Dict[str, Any]]:
    """After a passing build: return float layers to int8 while the real build still holds its gates.

    The twin is a model of the target, and where the target rounds better than the twin (NNCF's bias
    correction and ranges: PP-OCRv4 det's first openvino build read 16.5 dB where the twin said 11.4, and
    27.6 against 26.1 at the mix the search kept) a twin target of floor + margin keeps float layers the
    target never needed.  The offset measured at this very mix (real − twin) lowers the twin's target for one
    more prune, which names the candidates, heaviest first.  The offset is not a constant, so the real builds
    decide how many of them go back: all of them first, then — when that misses a gate — a bisection over
    how many of the first (heaviest) ones, within ``builds`` real builds; the most that held every gate are
    kept (measured: PP-OCRv4 rec's five candidates together read 21.9 dB against a 25 dB floor, where its
    first three had passed in another build).  ``options``: the build options the passing build was made
    with (a faster variant the target kept), so every descent build is the same kind of build.
    """
    b, v, kept = passing
    offset = real_db - pl.twin_db(kept)
    record: Dict[str, Any] = {"real_db": round(real_db, 2), "twin_db": round(pl.twin_db(kept), 2),
                              "offset_db": round(offset, 2), "kept": False}
    if offset < REFINE_MIN_OFFSET_DB or real_db < floor_db + REFINE_MIN_OFFSET_DB:
        record["why"] = "the real build did not beat its twin (or the floor) by enough to prune on"
        return b, v, kept, record
    lowered = target_db - offset
    macs = {x.name: x.macs for x in twin.layers}
    _, tested = _mixed.prune(list(kept), macs, lambda keep: pl.twin_db(keep) >= lowered, config.prune_evals)
    candidates = [n for n, ok in tested if ok]
    record.update(twin_target_db=round(lowered, 2), tried=len(tested), candidates=candidates, returned_to_int8=[])
    if not candidates:
        record["why"] = "no heavy float layer could return to int8 on the calibrated twin"
        return b, v, kept, record
    built: Dict[int, Tuple[Any, Any, Tuple[str, ...]]] = {}

    def holds(n: int) -> bool:
        back = set(candidates[:n])
        mix = tuple(x for x in kept if x not in back)
        req.progress("mixed precision", len(built) + 1, builds)
        b2, v2 = build_mix(req, src, canon, checked, data, workdir / f"mixed-refine-{len(built)}", mix, options)
        built[n] = (b2, v2, mix)
        return gates_hold(req, v2)

    good, tried = _mixed.descend(len(candidates), holds, builds)
    tries = [{"returned": n, "sqnr_db": round(float(built[n][1].parity.weakest.sqnr_db), 2), "passed": ok}
             for n, ok in tried]
    record["builds"] = tries
    if not good:
        record["why"] = "every descent build missed a gate in the real build"
        return b, v, kept, record
    b, v, mix = built[good]
    record.update(kept=True, returned_to_int8=candidates[:good], refined_db=round(float(v.parity.weakest.sqnr_db), 2))
    return b, v, mix, record


def _reason(i: int, n: int, choice: _mixed.Choice, row: _sens.LayerSensitivity) -> str:
    alone = f"{row.alone_db:.1f} dB" if row.alone_db is not None else "not measured"
    kept = f", whole model with it in float {row.kept_float_db:.1f} dB" if row.kept_float_db is not None else ""
    return (f"pick {i + 1} of {n} by benefit per cost: frees {100 * choice.benefit:.1f}% of the int8 noise "
            f"for {choice.cost:,.0f} MAC-equivalents (model with the picks so far in float ~{choice.predicted_db:.1f} "
            f"dB); quantized alone ~{alone}{kept}")


# ----------------------------------------------------------------- speed
def speed(req: Any, src: Any, canon: Any, checked: Any, data: Any, built: Any, workdir: Path,
          feeds: Sequence[Mapping[str, np.ndarray]], rounds: int = 3) -> Optional[Dict[str, Any]]:
    """int8 vs fp32 of the same target in the same runner, side by side; None when not measurable."""
    from edgekit.model import load as _load
    from edgekit.package import write_package

    if req.precision is not Precision.INT8 or Precision.FP32 not in req.target.precisions or not feeds:
        return None
    if (req.target.verify_runtime or req.target.runtime) != req.target.runtime:
        # verified through a stand-in (Core ML's reference executor, TensorRT's graph on onnxruntime): its
        # timings say nothing about the device's runtime
        return {"skipped": f"the {req.target.name} target is verified with {req.target.verify_runtime}, not "
                           f"{req.target.runtime}: time it on the device with `edgekit bench`"}
    wd = workdir / "speed-fp32"
    wd.mkdir()
    spec32 = dataclasses.replace(data.spec, precision=Precision.FP32)
    req32 = dataclasses.replace(req, precision=Precision.FP32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b32 = stages.target_build(req32, canon, dataclasses.replace(data, spec=spec32), wd)
    staged = {}
    for tag, b, r in (("int8", built, req), ("fp32", b32, req32)):
        path = workdir / f"speed-{tag}.staged"
        manifest = stages.assemble_manifest(r, src, canon, checked, b, runtime_versions=dict(b.artifact.runtime_versions))
        write_package(b.stage, manifest.to_json(), path)
        staged[tag] = path
    runtime = req.target.verify_runtime or req.target.runtime
    feeds = list(feeds)[:8]
    # the fp32 package as this host's runtime runs a float model by default where that is not f32 (OpenVINO on
    # an AVX512-BF16/AMX CPU: bf16): int8 must be worth it against that too
    also = dict(getattr(req.target, "host_float_runs", lambda spec: {})(data.spec))
    skipped: Dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        models = {"int8": stack.enter_context(_load(staged["int8"], runtime=runtime, require_signature=False)),
                  "fp32": stack.enter_context(_load(staged["fp32"], runtime=runtime, require_signature=False))}
        for name, options in also.items():
            try:
                models[f"fp32_{name}"] = stack.enter_context(_load(staged["fp32"], runtime=runtime,
                                                                   require_signature=False, **options))
            except EdgekitError as err:  # this host cannot run it that way after all: the f32 verdict stands
                skipped[f"fp32_{name}"] = {"skipped": first_line(err)}
        ready = {tag: [stages.adapt_feed(f, m.runner) for f in feeds] for tag, m in models.items()}
        outs = {tag: [m.infer(x) for x in ready[tag]] for tag, m in models.items()}  # also the warm-up
        times: Dict[str, List[float]] = {tag: [] for tag in models}
        for _ in range(rounds):  # interleaved so all see the same machine load
            for i in range(len(feeds)):
                for tag, m in models.items():
                    t0 = time.perf_counter()
                    m.infer(ready[tag][i])
                    times[tag].append(time.perf_counter() - t0)
    ms = {tag: float(np.median(t)) * 1e3 for tag, t in times.items()}
    i8, f32 = ms["int8"], ms["fp32"]
    ratio = i8 / f32 if f32 > 0 else None
    out: Dict[str, Any] = {
        "int8_median_ms": round(i8, 4), "fp32_median_ms": round(f32, 4),
        "ratio": None if ratio is None else round(ratio, 3), "runs_each": len(times["int8"]), "runtime": runtime,
        "note": "same runner on the build host, fp32 package pinned to f32, runs interleaved", **skipped}
    if ratio is not None and ratio >= 1.0:
        warnings.warn(f"the int8 package is not faster than fp32 on this build host with {runtime}: "
                      f"{i8:.3f} ms vs {f32:.3f} ms (×{ratio:.2f}); int8 may still pay off on the device, "
                      "but check with `edgekit bench` there", stacklevel=2)
    for name, options in also.items():
        tag = f"fp32_{name}"
        if tag not in models:
            continue
        db = min(sqnr_db(np.concatenate([np.ravel(o[k]) for o in outs["fp32"]]),
                         np.concatenate([np.ravel(o[k]) for o in outs[tag]])) for k in outs["fp32"][0])
        alt = {"median_ms": round(ms[tag], 4), "int8_ratio": round(i8 / ms[tag], 3) if ms[tag] > 0 else None,
               "sqnr_db_vs_f32": round(float(db), 2), "runner_options": dict(options)}
        out[tag] = alt
        if alt["int8_ratio"] is not None and alt["int8_ratio"] >= 1.0:
            warnings.warn(f"the int8 package is not faster than the fp32 package run in {name} on this build host "
                          f"with {runtime} ({i8:.3f} ms vs {ms[tag]:.3f} ms, ×{alt['int8_ratio']:.2f}; {name} reads "
                          f"{alt['sqnr_db_vs_f32']:.1f} dB against f32): build --precision {name} may serve better",
                          stacklevel=2)
    return out


def applies(req: Any) -> bool:
    return req.precision is Precision.INT8


def finish(req: Any, src: Any, canon: Any, checked: Any, data: Any, built: Any, outcome: Int8Outcome,
           workdir: Path) -> Tuple[Any, Tuple[str, ...]]:
    """After the gate: the speed verdict into the manifest; with ``explain``, the tables as text."""
    from edgekit.quantize import divergence as _div

    config: _mixed.MixedPrecisionConfig = req.mixed_precision
    extra: Dict[str, Any] = {}
    lines: List[str] = []
    feeds = list(data.verification.feeds) if data.verification is not None else []
    if config.speed_check and feeds:
        try:
            extra["speed"] = speed(req, src, canon, checked, data, built, workdir, feeds)
        except Exception as exc:  # noqa: BLE001 - a timing that cannot run must not fail a verified build
            extra["speed"] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
            warnings.warn(f"int8 vs fp32 speed not measured: {extra['speed']['error']}", stacklevel=2)
    if req.explain and outcome.twin is not None and outcome.sensitivity is not None:
        floor = stages.effective_gates(req)[0]["min_sqnr_db"]
        mp = (built.artifact.quantization or {}).get("mixed_precision") or {}
        kept = {x["layer"] for x in mp.get("kept_float", [])}
        quantized = [x.name for x in outcome.twin.layers if x.name not in kept]
        div = _div.of_twin(outcome.twin, _evenly(data.calibration.feeds, 4), threshold_db=floor, quantized=quantized)
        extra["divergence"] = div.to_json(limit=200)
        if "mixed_precision" not in (built.artifact.quantization or {}):
            extra["sensitivity"] = outcome.sensitivity.to_json()
        lines += [outcome.sensitivity.table(), div.table()]
    if mp_lines := _mixed_lines(built):
        lines = mp_lines + lines
    sp = extra.get("speed") or {}
    if sp.get("ratio") is not None:
        lines.append(speed_line("speed on this host", sp))
    if not extra:
        return built, tuple(lines)
    art = built.artifact
    art = dataclasses.replace(art, quantization={**(art.quantization or {}), **extra})
    return dataclasses.replace(built, artifact=art), tuple(lines if req.explain else ())


def speed_line(head: str, sp: Mapping[str, Any]) -> str:
    """One line of the speed verdict (``edgekit build --explain``, ``edgekit inspect``)."""
    line = (f"{head} ({sp['runtime']}): int8 {sp['int8_median_ms']:.3f} ms, fp32 {sp['fp32_median_ms']:.3f} ms, "
            f"ratio {sp['ratio']:.2f}")
    for key, alt in sp.items():
        if key.startswith("fp32_") and isinstance(alt, dict) and alt.get("int8_ratio") is not None:
            line += (f"; fp32 run in {key[5:]} {alt['median_ms']:.3f} ms ({alt['sqnr_db_vs_f32']:.1f} dB vs f32), "
                     f"ratio {alt['int8_ratio']:.2f}")
    return line


def _mixed_lines(built: Any) -> List[str]:
    mp = (built.artifact.quantization or {}).get("mixed_precision")
    if not mp:
        return []
    share = mp.get("int8_mac_share")
    out = [f"mixed precision: {mp['float_layers']} of {mp['quantizable_layers']} layers kept in float"
           + (f", {100 * share:.1f}% of MACs in int8" if share is not None else "")
           + f" (floor {mp['floor_db']:g} dB; attempts: "
           + ", ".join(f"{a['float_layers']} float → {a['sqnr_db']:.1f} dB" for a in mp["attempts"]) + ")"]
    out += [f"  float: {x['layer']} ({x['op_type']}): {x['reason']}" for x in mp["kept_float"][:20]]
    return out

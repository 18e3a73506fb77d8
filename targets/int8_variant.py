"""Faster int8 builds a target offers once an int8 build holds the gates, each kept only if it holds them too.

A target may offer them: ``faster_int8_options(spec, artifact)`` returns
build-option overrides in the order to try, and ``compare_int8_speed({name:
(model.xml, pinned precision)}, feed)`` times IRs side by side on this host.
OpenVINO offers symmetric activations (NNCF's PERFORMANCE preset) where the
recipe's are asymmetric — the CPU plugin's int8 convolutions then skip their
zero-point compensation — and bf16 float parts where ``auto`` kept f32 from a
few calibration feeds.  The int8 stage builds each offer on top of what was
kept so far, verifies it like any build, and keeps it only when every gate
still holds (on the held-out data) and it costs at least :data:`MIN_GAIN`
less CPU time per inference here without taking longer (wall time) — CPU time
alone is a coin toss on a loaded host: PP-OCRv4 det's symmetric variant once
read 5.7 % less CPU time and 33 % more latency, and cost 2 dB of its map,
one of fp32's 32 text boxes and two spurious ones, for a speed interleaved
benchmark runs put at 1-2 % (17.4 vs 17.7 ms); the manifest records every try
(``quantization.faster_variant``).  It runs after a first build that passes
and after a mixed-precision search that passes, on the mix the search kept
(before the search's descent returns float layers to int8, which then builds
with the options kept here: :func:`kept_options`).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from edgekit.errors import EdgekitError

from .toolchain import first_line

#: the variant must cost at least this much less CPU time per inference than the first build (ratio ≤ 1 − MIN_GAIN)
MIN_GAIN = 0.05


def _ir(built: Any) -> Tuple[Path, Any]:
    return built.stage / "model" / built.artifact.entry, (built.artifact.runtime_options or {}).get("inference_precision")


def try_faster(req: Any, src: Any, canon: Any, checked: Any, data: Any, built: Any, verified: Any,
               workdir: Path, keep: Sequence[str] = ()) -> Tuple[Any, Any]:
    """(built, verified): the cheapest of the target's faster int8 builds that still holds the gates, else the
    first.  ``keep``: the layers mixed precision kept in float for ``built`` (its recipe's ``exclude_nodes``)."""
    offer = getattr(req.target, "faster_int8_options", None)
    feeds = list(data.calibration.feeds) if data.calibration is not None else []
    if offer is None or not feeds:
        return built, verified
    from .int8_stage import mix_spec

    tries: List[Dict[str, Any]] = []
    options: Dict[str, Any] = {}
    tried: List[Dict[str, Any]] = []
    while True:
        # asked again after each try: what was kept may already give the next offer (a symmetric build whose
        # auto float parts came out bf16 needs no bf16 try)
        override = next((o for o in offer(mix_spec(data.spec, keep, options), built.artifact) if o not in tried), None)
        if override is None:
            break
        tried.append(override)
        b, v, record = _one(req, src, canon, checked, data, keep, {**options, **override}, built, verified,
                            workdir / f"faster-{len(tried) - 1}")
        record["build_options"] = dict(override)
        tries.append(record)
        if record["kept"]:  # the next offer builds on what was kept, not on a rejected one
            built, verified, options = b, v, {**options, **override}
    if not tries:
        return built, verified
    art = built.artifact
    art = dataclasses.replace(art, quantization={**(art.quantization or {}), "faster_variant": tries})
    return dataclasses.replace(built, artifact=art), verified


def kept_options(quantization: Mapping[str, Any]) -> Dict[str, Any]:
    """The build options of the faster variants :func:`try_faster` kept, from a build's quantization record
    (empty: none)."""
    out: Dict[str, Any] = {}
    for record in quantization.get("faster_variant") or ():
        if record.get("kept"):
            out.update(record["build_options"])
    return out


def _one(req: Any, src: Any, canon: Any, checked: Any, data: Any, keep: Sequence[str], options: Dict[str, Any],
         built: Any, verified: Any, wd: Path) -> Tuple[Any, Any, Dict[str, Any]]:
    """Build and verify one variant; (its built, verified, the record with ``kept``)."""
    from .int8_stage import build_mix, gates_hold

    req.progress("faster int8", 0, 0)
    record: Dict[str, Any] = {"rule": f"kept when every gate holds and it costs ≥ {MIN_GAIN:.0%} less CPU time "
                                      "per inference on this host than what was kept before it, and no more "
                                      "wall time"}
    try:
        b, v = build_mix(req, src, canon, checked, data, wd, keep, options)
    except EdgekitError as err:  # e.g. no kernel for signed activations on this CPU: the first build stands
        record.update(kept=False, why=f"the variant did not build here: {first_line(err)}")
        return built, verified, record
    record.update(before_sqnr_db=round(float(verified.parity.weakest.sqnr_db), 2),
                  variant_sqnr_db=round(float(v.parity.weakest.sqnr_db), 2))
    if not gates_hold(req, v):
        record.update(kept=False, why="the variant misses a gate")
        return built, verified, record
    feed = data.calibration.feeds[0]
    timing = req.target.compare_int8_speed({"before": _ir(built), "variant": _ir(b)}, feed)
    cpu = {k: round(t["cpu"] * 1e3, 3) for k, t in timing.items()}
    record.update(cpu_ms=cpu, latency_ms={k: round(t["wall"] * 1e3, 3) for k, t in timing.items()})
    if cpu["variant"] > (1.0 - MIN_GAIN) * cpu["before"]:
        record.update(kept=False, why=f"not cheaper here ({cpu['variant']} vs {cpu['before']} ms CPU per inference)")
        return built, verified, record
    wall = record["latency_ms"]
    if wall["variant"] > wall["before"]:
        record.update(kept=False, why=f"cheaper in CPU time but slower ({wall['variant']} vs {wall['before']} ms "
                                      "per inference): the two measures disagree, and the build before it stands")
        return built, verified, record
    record["kept"] = True
    return b, v, record

"""A faster int8 build a target offers once its first int8 build holds the gates, kept only if it holds them too.

A target may offer one: ``faster_int8_options(spec)`` returns build-option
overrides (or None), and ``compare_int8_speed({name: (model.xml, pinned
precision)}, feed)`` times the IRs side by side on this host.  OpenVINO offers
symmetric activations (NNCF's PERFORMANCE preset) when the recipe's scheme is
asymmetric: the CPU plugin's int8 convolutions then skip their zero-point
compensation.  The int8 stage builds the offer, verifies it like any build,
and keeps it only when every gate still holds and it costs at least
:data:`MIN_GAIN` less CPU time per inference here; the manifest records the
try either way (``quantization.faster_variant``).  Only a first build that
already passes is offered a variant: when the mixed-precision search has to
run, the more accurate scheme needs fewer float layers, which is what makes
it fast.
"""
from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any, Dict, Tuple

from edgekit.errors import EdgekitError

from . import stages
from .toolchain import first_line

#: the variant must cost at least this much less CPU time per inference than the first build (ratio ≤ 1 − MIN_GAIN)
MIN_GAIN = 0.05


def _ir(built: Any) -> Tuple[Path, Any]:
    return built.stage / "model" / built.artifact.entry, (built.artifact.runtime_options or {}).get("inference_precision")


def _with_record(built: Any, record: Dict[str, Any]) -> Any:
    art = built.artifact
    art = dataclasses.replace(art, quantization={**(art.quantization or {}), "faster_variant": record})
    return dataclasses.replace(built, artifact=art)


def try_faster(req: Any, src: Any, canon: Any, checked: Any, data: Any, built: Any, verified: Any,
               workdir: Path) -> Tuple[Any, Any]:
    """(built, verified): the target's faster int8 variant when it holds the gates and is cheaper, else the first."""
    from .int8_stage import gates_hold

    offer = getattr(req.target, "faster_int8_options", None)
    overrides = offer(data.spec) if offer is not None else None
    feeds = list(data.calibration.feeds) if data.calibration is not None else []
    if not overrides or not feeds:
        return built, verified
    spec = dataclasses.replace(data.spec, build_options={**dict(data.spec.build_options), **overrides})
    data_v = dataclasses.replace(data, spec=spec)
    wd = workdir / "faster-int8"
    wd.mkdir()
    req.progress("faster int8", 0, 0)
    record: Dict[str, Any] = {"build_options": dict(overrides)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the first build already said what this one would repeat
        try:
            b = stages.target_build(req, canon, data_v, wd)
            v = stages.verify(req, src, canon, checked, data_v, b, wd)
        except EdgekitError as err:  # e.g. no kernel for signed activations on this CPU: the first build stands
            record.update(kept=False, why=f"the variant did not build here: {first_line(err)}")
            return _with_record(built, record), verified
    record.update({
        "first_sqnr_db": round(float(verified.parity.weakest.sqnr_db), 2),
        "variant_sqnr_db": round(float(v.parity.weakest.sqnr_db), 2),
        "rule": f"kept when every gate holds and it costs ≥ {MIN_GAIN:.0%} less CPU time per inference on this host",
    })
    if not gates_hold(req, v):
        record.update(kept=False, why="the variant misses a gate")
        return _with_record(built, record), verified
    timing = req.target.compare_int8_speed({"first": _ir(built), "variant": _ir(b)}, feeds[0])
    cpu = {k: round(t["cpu"] * 1e3, 3) for k, t in timing.items()}
    record.update(cpu_ms=cpu, latency_ms={k: round(t["wall"] * 1e3, 3) for k, t in timing.items()})
    if cpu["variant"] > (1.0 - MIN_GAIN) * cpu["first"]:
        record.update(kept=False, why=f"not cheaper here ({cpu['variant']} vs {cpu['first']} ms CPU per inference)")
        return _with_record(built, record), verified
    record["kept"] = True
    return _with_record(b, record), v

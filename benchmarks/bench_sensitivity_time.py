"""#13's timing goal: sensitivity analysis plus mixed-precision search on a ~5 M-parameter model, 100
calibration samples, ≤ 5 minutes on a 2-core machine.

    python benchmarks/bench_sensitivity_time.py                          # YOLOX (ddddocr, 5.0 M), onnxruntime
    python benchmarks/bench_sensitivity_time.py --min-sqnr 30 --samples 100 --target openvino --json out.json

One real int8 build through ``edgekit``'s pipeline, as a user gets it, with
a floor its first build misses (``--min-sqnr``, default 30 dB: the YOLOX first
int8 build on onnxruntime gives ~26 dB on its weakest score part), so the
mixed-precision stage (``targets/int8_stage.py`` ``mixed_precision``) runs in
full: twin build (ranges + the switchable twin), the sensitivity sweep, the
twin's search for the float count, the target builds after the first and
their verification.  Each phase is timed where the pipeline calls it
(wrappers around the stage functions, installed by this script only), wall
and this process's CPU seconds (every thread of it: onnxruntime's included),
plus the load average before and after: on a shared host wall time is what
the machine gave, CPU time what the work cost.  The sweep's own record says
how many quantization points it measured of how many, on how many samples,
its evaluation budget (``MixedPrecisionConfig.sweep_gmacs``: deterministic,
it sets the samples and points) and what it spent, and whether its wall-time
guard (``time_budget_s``) stopped it.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "samples" / "real_models"))

import data as _data  # noqa: E402
import fetch as _fetch  # noqa: E402
import registry  # noqa: E402
import suite  # noqa: E402

DEFAULT_MODEL = "yolox-ddddocr-416"
#: calibration folders per kind that take a ``count`` (the others have a fixed size)
SIZED = {"glyphs": _data.glyph_folder, "people": _data.people_folder}


class PhaseClock:
    """Wall and CPU seconds per phase, accumulated over calls; a phase inside the mixed-precision stage is
    named apart from the same function called by the first build."""

    def __init__(self) -> None:
        self.wall: Dict[str, float] = {}
        self.cpu: Dict[str, float] = {}
        self.calls: Dict[str, int] = {}
        self.in_mixed = False

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        w0, c0 = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - w0
            self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - c0
            self.calls[name] = self.calls.get(name, 0) + 1

    def wrap(self, owner: Any, attr: str, name: str, *, mixed_name: str = "", marks_mixed: bool = False) -> None:
        fn: Callable[..., Any] = getattr(owner, attr)

        def timed(*a: Any, **kw: Any) -> Any:
            label = mixed_name if (self.in_mixed and mixed_name) else name
            if marks_mixed:
                self.in_mixed = True
            try:
                with self.phase(label):
                    return fn(*a, **kw)
            finally:
                if marks_mixed:
                    self.in_mixed = False

        setattr(owner, attr, timed)


def instrument(clock: PhaseClock) -> None:
    from edgekit.quantize import sensitivity as _sens
    from edgekit.targets import int8_stage, stages

    clock.wrap(int8_stage, "mixed_precision", "mixed precision stage (all)", marks_mixed=True)
    clock.wrap(int8_stage, "build_twin", "twin build (ranges + twin)")
    clock.wrap(_sens, "analyse", "sensitivity sweep")
    clock.wrap(int8_stage, "plan", "twin search (float count)")
    # outside the search: the first int8 build, and the speed check's fp32 build after it
    clock.wrap(stages, "target_build", "target builds outside the search", mixed_name="search target builds")
    clock.wrap(stages, "verify", "first verification", mixed_name="search verifications")


def calibration(model: Any, samples: int, root: Path) -> Any:
    maker = SIZED.get(model.calibration)
    if maker is not None:
        return maker(root / f"{model.calibration}-{samples}", count=samples)
    return suite.CalibrationCache(root).get(model.calibration)


def run(name: str, target: str, samples: int, min_sqnr: float, root: Path) -> Dict[str, Any]:
    from edgekit.targets.pipeline import build_package

    model = registry.get(name)
    calib = calibration(model, samples, root)
    holdout = suite.HOLDOUT.get(model.calibration)
    val = suite.CalibrationCache(root).get(holdout) if holdout else None
    clock = PhaseClock()
    instrument(clock)
    load0 = os.getloadavg()
    w0, c0 = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = build_package(_fetch.fetch_one(name), target=target, precision="int8", calibration=calib,
                            validation=val, gates={"min_sqnr_db": min_sqnr}, allow_gate_failure=True,
                            recipe={"num_samples": samples}, output=root / f"{name}-{target}-int8.edgepkg",
                            **{k: v for k, v in model.build.items()})
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    load1 = os.getloadavg()
    m = res.manifest
    q = m.get("quantization") or {}
    mp = q.get("mixed_precision") or {}
    sens = mp.get("sensitivity") or {}
    bound = sens.get("bound") or {}
    import onnx

    proto = onnx.load(str(_fetch.fetch_one(name)), load_external_data=False)
    params = sum(int(np.prod(t.dims)) for t in proto.graph.initializer)
    from edgekit.quantize.mixed import MixedPrecisionConfig

    cfg = MixedPrecisionConfig()
    holdout_n = len(list(Path(val).iterdir())) if isinstance(val, Path) else None
    wanted = min(cfg.samples, holdout_n) if holdout_n else cfg.samples

    phases = {k: {"wall_s": round(clock.wall[k], 1), "cpu_s": round(clock.cpu[k], 1), "calls": clock.calls[k]}
              for k in clock.wall}
    search = [k for k in ("twin build (ranges + twin)", "sensitivity sweep", "twin search (float count)",
                          "search target builds", "search verifications") if k in clock.wall]
    return {
        "model": name, "target": target, "params": params, "calibration_samples": samples,
        "min_sqnr_db": min_sqnr, "cores": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load0], "load_average_after": [round(x, 2) for x in load1],
        "build_wall_s": round(wall, 1), "build_cpu_s": round(cpu, 1),
        "sensitivity_plus_search_wall_s": round(sum(clock.wall[k] for k in search), 1),
        "sensitivity_plus_search_cpu_s": round(sum(clock.cpu[k] for k in search), 1),
        "phases": phases,
        "sweep": {"points_measured": sens.get("points_measured"), "points": sens.get("points"),
                  "samples": sens.get("samples"), "layers": sens.get("layers_analysed"),
                  "samples_wanted": wanted, "points_cut": sens.get("truncated"),
                  # the sweep's bound: an evaluation budget in GMACs (the same on any host: it cuts the samples,
                  # then the points) and a wall-time guard that stops it only on a host far slower than planned
                  "budget_gmacs": bound.get("budget_gmacs"), "spent_gmacs": bound.get("spent_gmacs"),
                  "stopped_by": bound.get("stopped_by"),
                  "hit_wall_time_guard": bound.get("stopped_by") == "wall-time guard",
                  "wall_guard_s": bound.get("wall_guard_s", cfg.time_budget_s)},
        "first_build_db": (mp.get("attempts") or [{"sqnr_db": m["verification"]["min_sqnr_db"]}])[0]["sqnr_db"],
        "final_db": m["verification"]["min_sqnr_db"], "weakest": m["verification"].get("weakest"),
        "passed": m["verification"]["passed"], "float_layers": mp.get("float_layers"),
        "quantizable_layers": mp.get("quantizable_layers"), "int8_mac_share": mp.get("int8_mac_share"),
        "attempts": mp.get("attempts"), "detection": m["verification"].get("detection"),
    }


def fmt(doc: Dict[str, Any]) -> str:
    lines = [f"{doc['model']} ({doc['params'] / 1e6:.2f} M parameters) on {doc['target']}, {doc['calibration_samples']} "
             f"calibration samples, --min-sqnr {doc['min_sqnr_db']:g}; {doc['cores']} cores, load average "
             f"{doc['load_average_before'][0]:.2f} → {doc['load_average_after'][0]:.2f}",
             f"  sensitivity + search: {doc['sensitivity_plus_search_wall_s']:.1f} s wall, "
             f"{doc['sensitivity_plus_search_cpu_s']:.1f} s CPU (whole build {doc['build_wall_s']:.1f} s wall, "
             f"{doc['build_cpu_s']:.1f} s CPU)"]
    for k, v in doc["phases"].items():
        lines.append(f"  {k:<32} {v['wall_s']:7.1f} s wall {v['cpu_s']:7.1f} s CPU  ({v['calls']} call(s))")
    s = doc["sweep"]
    spent = "" if s["spent_gmacs"] is None else f", {s['spent_gmacs']:,.0f} of {s['budget_gmacs']:,.0f} GMACs spent"
    lines.append(f"  sweep: {s['points_measured']} of {s['points']} quantization points measured on {s['samples']} "
                 f"of {s['samples_wanted']} samples, {s['layers']} layers{spent}; stopped by: {s['stopped_by']}; "
                 f"hit its {s['wall_guard_s']:g} s wall-time guard: {s['hit_wall_time_guard']}")
    share = doc.get("int8_mac_share")
    lines.append(f"  first build {doc['first_build_db']:.1f} dB → {doc['final_db']:.1f} dB ({doc['weakest']}), "
                 f"passed {doc['passed']}, {doc.get('float_layers')}/{doc.get('quantizable_layers')} layers float"
                 + (f", {100 * share:.1f} % MACs int8" if share is not None else ""))
    return "\n".join(lines)


def main(argv: Any = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--target", default="onnxruntime")
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--min-sqnr", type=float, default=30.0,
                    help="a floor the first int8 build misses, so the search runs (default 30 dB)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgekit-bench-sensitivity"))
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    doc = run(a.model, a.target, a.samples, a.min_sqnr, a.work)
    print(fmt(doc), flush=True)
    if a.json:
        a.json.write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

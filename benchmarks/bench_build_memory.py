"""Peak memory of `edgekit build` for a large model, as a multiple of the model's size.

    python benchmarks/bench_build_memory.py [--mb 200] [--target onnxruntime] [--precision fp32] [--stages] [--json]

Makes the model itself (a chain of MatMul/Relu layers with random fp32
weights totalling ``--mb`` MB, saved as one .onnx file), then runs
``edgekit build`` on it in a fresh process and reads that process's peak
resident set size (``ru_maxrss`` of the child).  The baseline, run the same
way beside it, is a process that only imports the same libraries and loads
the model once with ``onnx.load`` (the least any build must hold), so the
report separates what the pipeline adds from what reading the model costs.
Goal: build peak ≤ 3 × the model's size.  Prints figures; asserts nothing.

``--stages`` runs the build once more in-process and reports, per build
stage, the RSS when it started, its peak RSS (the kernel's high-water mark,
reset at the stage's start) and the RSS when it ended: which stage holds
what (tracemalloc does not see onnxruntime's allocations).  Linux only.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

BASELINE = """
import sys
import numpy, onnx, onnxruntime, edgekit.targets.pipeline  # the build's imports
m = onnx.load(sys.argv[1])
"""

#: the build in-process, each stage's peak RSS read exactly (Linux): the kernel's high-water mark (VmHWM) is
#: reset when a stage starts (writing 5 to /proc/self/clear_refs) and read when it ends.  A sampling thread
#: would miss what happens inside long C calls that hold the GIL (onnx.load, serialization, the checker).
STAGES = """
import json, os, sys
import edgekit
from edgekit.targets import stages

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
rows = []
run = stages.StageClock.run
def measured(self, name, fn, *args):
    start = status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    try:
        return run(self, name, fn, *args)
    finally:
        rows.append([name, start, status("VmHWM"), status("VmRSS")])
stages.StageClock.run = measured
edgekit.build(sys.argv[1], target=sys.argv[2], precision=sys.argv[3], output=sys.argv[4])
print(json.dumps(rows))
"""


def stage_peaks(model: Path, target: str, precision: str, output: Path, env: dict) -> list:
    """[(stage, RSS at start, peak RSS during, RSS after)] of one in-process build (needs /proc)."""
    out = subprocess.run([sys.executable, "-c", STAGES, str(model), target, precision, str(output)],
                         capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def make_model(path: Path, mb: int) -> int:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    width = 2048
    per_layer = width * width * 4
    layers = max(1, (mb << 20) // per_layer)
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    x = "x"
    for i in range(layers):
        w = (rng.standard_normal((width, width), dtype=np.float32) / np.sqrt(width)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"]))
        nodes.append(helper.make_node("Relu", [f"m{i}"], [f"r{i}"]))
        x = f"r{i}"
    nodes[-1] = helper.make_node("Relu", [f"m{layers - 1}"], ["y"])
    graph = helper.make_graph(nodes, "big_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    return path.stat().st_size


def peak_rss(cmd: list, env: dict) -> tuple:
    """Run ``cmd`` in a fresh process; (peak RSS bytes, seconds, return code, stderr tail)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    # one child per measurement through a wrapper, so RUSAGE_CHILDREN's max is this child's alone
    wrapper = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); print(p.returncode); "
               "sys.stderr.write(p.stderr[-2000:])")
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True, env=env)
    del before
    lines = out.stdout.strip().splitlines()
    kib, rc = int(lines[-2]), int(lines[-1])
    return kib * 1024, time.perf_counter() - t0, rc, out.stderr[-1500:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--target", default="onnxruntime")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--stages", action="store_true", help="also report each stage's peak RSS (Linux)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgekit-bench-mem-"))
    try:
        model = work / "big.onnx"
        size = make_model(model, args.mb)
        env = dict(os.environ, PYTHONPATH=str(ROOT), EDGEKIT_CACHE_DIR=str(work / "cache"))
        base, base_s, rc0, err0 = peak_rss([sys.executable, "-c", BASELINE, str(model)], env)
        build, build_s, rc, err = peak_rss(
            [sys.executable, "-m", "edgekit", "build", str(model), "--target", args.target, "--precision", args.precision,
             "-o", str(work / "big.edgepkg"), "--json"], env)
        report = {
            "model_bytes": size,
            "target": args.target,
            "precision": args.precision,
            "build_rc": rc,
            "build_seconds": round(build_s, 1),
            "build_peak_rss_bytes": build,
            "build_peak_over_model": round(build / size, 2),
            "baseline_peak_rss_bytes": base,
            "baseline_peak_over_model": round(base / size, 2),
            "goal_peak_over_model": 3.0,
        }
        if rc != 0:
            report["build_error"] = err
        if args.stages:
            rows = stage_peaks(model, args.target, args.precision, work / "staged.edgepkg", env)
            report["stages"] = [{"stage": n, "start_over_model": round(a / size, 2), "peak_over_model": round(p / size, 2),
                                 "end_over_model": round(e / size, 2)} for n, a, p, e in rows]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    mb = 1 << 20
    print(f"model: {size / mb:.0f} MB ({args.target} {args.precision})")
    print(f"  edgekit build peak RSS   {build / mb:7.0f} MB  = {build / size:4.2f}× the model  ({build_s:.0f} s, rc {rc})  goal ≤ 3×")
    print(f"  baseline (imports + onnx.load) {base / mb:5.0f} MB  = {base / size:4.2f}× the model")
    for row in report.get("stages", []):
        print(f"  stage {row['stage']:<16} start {row['start_over_model']:4.2f}×  peak {row['peak_over_model']:4.2f}×  "
              f"end {row['end_over_model']:4.2f}×")
    if rc != 0:
        print(err)


if __name__ == "__main__":
    main()

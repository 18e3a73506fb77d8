"""Device farm figures on simulated devices (asyncssh servers on 127.0.0.1).

1. Overhead per job: wall time of a job (reserve + probe + cached push + run + collect) minus the
   benchmark's own timed duration (result_duration_ns), on one device, push cached after the first job.
2. Accuracy pass: fp32 and int8 packages with ``--samples`` inputs pushed with each job; per-output
   SQNR / cosine / max-abs vs fp32 onnxruntime on the host, and what the pass adds to a run.
3. Fault soak: D devices x J jobs with random faults (kill, drop, hang, truncate, disk full):
   every job must end COMPLETE or INCOMPLETE with its attempts spent, no COMPLETE result missing
   from the store, and no two runner processes overlapping on one device.

    python benchmarks/bench_farm.py [--jobs 10] [--devices 8] [--soak-jobs 50] [--rate 0.2] [--samples 32]
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

from edgekit.device_farm.farm import Farm, FarmSettings, make_jobs
from edgekit.device_farm.inventory import load_inventory
from edgekit.device_farm.jobs import BenchSettings, JobState, LoadgenMode, RetryPolicy
from edgekit.device_farm.locks import DeviceLocks, HostLeaser
from edgekit.device_farm.simulate import start_fleet
from edgekit.device_farm.store import Store
from edgekit.device_farm.transport import Timeouts

ROOT = Path(__file__).resolve().parent.parent


def build(out: Path, precision: str = "fp32") -> Path:
    import numpy as np

    import edgekit

    rng = np.random.default_rng(0)
    calib = [{"input": rng.standard_normal((1, 3, 32, 32)).astype("float32")} for _ in range(16)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return edgekit.build(ROOT / "tests" / "models" / "conv_bn_relu.onnx", target="onnxruntime", precision=precision,
                             calibration=calib, task="classify", output=out)


async def overhead(tmp: Path, pkg: Path, n: int, loadgen: LoadgenMode) -> None:
    fleet = await start_fleet(tmp / f"fleet1-{loadgen.value}", 1)
    try:
        inv = load_inventory(fleet.inventory())
        store = Store(tmp / "o.sqlite")
        farm = Farm(inv.pool("sim"), store, HostLeaser(DeviceLocks(tmp / "locks1")), FarmSettings())
        s = BenchSettings(min_duration_s=0.5, min_queries=10, warmup=5, loadgen=loadgen)
        await farm.run(make_jobs([pkg], s))  # first job: push and the device's package cache (not counted)
        # n jobs back to back in one run (as `farm run --repeat n`): one connect + probe, push cached
        jobs = make_jobs([pkg], s, repeat=n)
        t0 = time.perf_counter()
        await farm.run(jobs)
        wall = time.perf_counter() - t0
        assert all(j.state is JobState.COMPLETE and len(j.attempts) == 1 for j in jobs), [j.to_json() for j in jobs]
        spans = [j.attempts[0].ended - j.attempts[0].started for j in jobs]
        bench = [j.result["results"]["result_duration_ns"] / 1e9 for j in jobs]
        over = (wall - sum(bench)) / n
        run_only = statistics.median(sp - b for sp, b in zip(spans, bench))
        load = statistics.median(j.result["load_ms"] for j in jobs)
        print(f"overhead per job ({loadgen.value}, cached push, 1 device, {n} jobs in one run): "
              f"{over:.3f} s beyond the benchmark's own duration (goal <= 1.5 s); of which the runner process "
              f"(python start, imports, load, warm-up, write, exit) {run_only:.3f} s, edgekit.load {load:.0f} ms")
    finally:
        await fleet.close()


async def accuracy(tmp: Path, pkgs: "list[Path]", samples: int) -> None:
    """The accuracy pass on 2 devices: each package's outputs on the device vs fp32 onnxruntime on the host."""
    import numpy as np

    from edgekit.device_farm.accuracy import plan

    rng = np.random.default_rng(1)  # not the calibration seed: held-out inputs
    feeds = tmp / "feeds.npz"
    np.savez(feeds, input=rng.standard_normal((samples, 3, 32, 32)).astype("float32"))
    fleet = await start_fleet(tmp / "fleetA", 2)
    try:
        inv = load_inventory(fleet.inventory())
        store = Store(tmp / "a.sqlite")
        farm = Farm(inv.pool("sim"), store, HostLeaser(DeviceLocks(tmp / "locksA")), FarmSettings())
        s = BenchSettings(min_duration_s=0.5, min_queries=10, warmup=5, loadgen=LoadgenMode.OFF)
        t0 = time.perf_counter()
        plans = plan(ROOT / "tests" / "models" / "conv_bn_relu.onnx", feeds, pkgs, tmp)
        prep = time.perf_counter() - t0
        await farm.run(make_jobs(pkgs, s))  # pushes and package caches warm
        for with_data in (False, True):
            jobs = make_jobs(pkgs, s, repeat=2, accuracy=plans if with_data else None)
            t0 = time.perf_counter()
            await farm.run(jobs)
            wall = time.perf_counter() - t0
            assert all(j.state is JobState.COMPLETE for j in jobs), [j.to_json() for j in jobs]
            print(f"{len(jobs)} jobs on 2 devices {'with' if with_data else 'without'} the accuracy pass "
                  f"({samples} samples): {wall:.2f} s")
        print(f"accuracy pass: fp32 reference on the host for {samples} samples, per package data written: {prep:.2f} s")
        for j in jobs:
            par = j.result["parity"]
            parts = "; ".join(f"{p['name']}: SQNR {p['sqnr_db']:.2f} dB, cosine {p['cosine']:.6f}, max-abs {p['max_abs']:.4g}"
                              for p in par["parts"])
            built = plans[j.sha256].manifest.to_json()["verification"]["min_sqnr_db"]
            print(f"  {j.package.name} on {j.device}: {parts}; top-1 agreement {par['top1_agreement']} "
                  f"(the build's own verification: {built:.2f} dB)")
        print(f"  store: {len(store.parity())} parity rows")
    finally:
        await fleet.close()


async def soak(tmp: Path, pkg: Path, devices: int, jobs_n: int, rate: float) -> None:
    fleet = await start_fleet(tmp / "fleetN", devices, seed=7)
    try:
        for d in fleet.devices:
            d.faults.rate = rate
        inv = load_inventory(fleet.inventory())
        store = Store(tmp / "s.sqlite")
        farm = Farm(inv.pool("sim"), store, HostLeaser(DeviceLocks(tmp / "locksN")),
                    FarmSettings(timeouts=Timeouts(heartbeat_s=2.0, command_s=30, job_s=120),
                                 retry=RetryPolicy(max_attempts=3, bad_after=3, health_backoff_s=0.5)))
        jobs = make_jobs([pkg], BenchSettings(min_duration_s=0.2, min_queries=10, warmup=2, loadgen=LoadgenMode.OFF),
                         repeat=jobs_n)
        t0 = time.perf_counter()
        await farm.run(jobs)
        wall = time.perf_counter() - t0
        states = {s.value: sum(j.state is s for j in jobs) for s in JobState if any(j.state is s for j in jobs)}
        stored = {r["job_id"] for r in store.results()}
        lost = [j.id for j in jobs if j.state is JobState.COMPLETE and j.id not in stored]
        wrong = [j.id for j in jobs if j.state is JobState.INCOMPLETE
                 and sum(a.state is JobState.INCOMPLETE for a in j.attempts) != 3]
        faults: dict = {}
        for d in fleet.devices:
            for f, _ in d.injected:
                faults[f] = faults.get(f, 0) + 1
        print(f"soak: {devices} devices x {jobs_n} jobs, fault rate {rate}: {wall:.1f} s; states {states}; "
              f"faults injected {faults}; lost results {len(lost)}; INCOMPLETE without 3 attempts {len(wrong)}; "
              f"overlapping runs {sum(len(v) for v in fleet.overlaps().values())}")
    finally:
        await fleet.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=10)
    ap.add_argument("--devices", type=int, default=8)
    ap.add_argument("--soak-jobs", type=int, default=50)
    ap.add_argument("--rate", type=float, default=0.2)
    ap.add_argument("--samples", type=int, default=32, help="accuracy pass: input samples pushed with each job")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-farm-"))
    pkg = build(tmp / "conv.edgepkg")
    asyncio.run(accuracy(tmp, [pkg, build(tmp / "conv-int8.edgepkg", "int8")], args.samples))
    asyncio.run(overhead(tmp, pkg, args.jobs, LoadgenMode.OFF))
    try:
        import mlperf_loadgen  # noqa: F401

        asyncio.run(overhead(tmp, pkg, args.jobs, LoadgenMode.ON))
    except ImportError:
        print("mlperf_loadgen not installed: LoadGen overhead not measured", file=sys.stderr)
    asyncio.run(soak(tmp, pkg, args.devices, args.soak_jobs, args.rate))


if __name__ == "__main__":
    main()

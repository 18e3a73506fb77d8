"""``edgekit farm devices|run|results|report|compare`` and ``edgekit report`` (registered in edgekit/cli.py).

Only typer at import time; the farm, asyncssh, labgrid and numpy load inside the commands.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import typer

from edgekit.cli import JsonOpt, _emit_json, _Progress, command
from edgekit.errors import ConfigError

farm_app = typer.Typer(help="Run, benchmark and compare packages on a fleet of devices (devices.yaml).",
                       no_args_is_help=True)

InventoryOpt = typer.Option(..., "--inventory", "-i", help="The devices.yaml inventory.")
DbOpt = typer.Option(None, "--db", help="Results store (SQLite); default $XDG_DATA_HOME/edgekit/farm.sqlite.")


def _packages(packages: List[Path]) -> List[Path]:
    for p in packages:
        if not p.exists():
            raise ConfigError(f"{p}: no such package; give .edgepkg files or package directories")
    return packages


@farm_app.command("devices")
@command
def devices(inventory: Path = InventoryOpt, as_json: bool = JsonOpt) -> None:
    """List the inventory's devices and pools (validated)."""
    from .inventory import load_inventory

    inv = load_inventory(inventory)
    doc = {"devices": [d.to_json() for d in inv.devices.values()],
           "pools": {name: {"match": dict(p.match), "devices": [d.id for d in inv.devices.values() if d.matches(p.match)]}
                     for name, p in inv.pools.items()}}
    if as_json:
        _emit_json(doc)
        return
    for d in inv.devices.values():
        where = "local" if d.address is None else f"{d.user}@{d.address}:{d.port}"
        tags = ", ".join(f"{k}={v}" for k, v in d.tags.items())
        typer.echo(f"{d.id:<16} {d.transport.value:<5} {where:<28} {d.profile or '-':<18} {tags}")
    for name, p in doc["pools"].items():
        typer.echo(f"pool {name}: {', '.join(p['devices']) or '(no device)'}  (match {p['match']})")


@farm_app.command("run")
@command
def run(
    packages: List[Path] = typer.Argument(..., help="Packages to run (.edgepkg or package directories)."),
    inventory: Path = InventoryOpt,
    pool: Optional[str] = typer.Option(None, "--pool", help="Run on any device of this pool."),
    device: Optional[str] = typer.Option(None, "--device", help="Run on this device."),
    scenario: str = typer.Option("single-stream", "--scenario", help="single-stream (latency) or offline (throughput)."),
    min_duration: float = typer.Option(1.0, "--min-duration", help="Seconds the timed run lasts at least."),
    min_queries: int = typer.Option(100, "--min-queries", help="Queries the timed run issues at least."),
    warmup: int = typer.Option(10, "--warmup", help="Untimed queries first."),
    repeat: int = typer.Option(1, "--repeat", min=1, help="Jobs per package."),
    loadgen: str = typer.Option("auto", "--loadgen", help="auto: mlcommons-loadgen when it imports on the device; on; off."),
    coordinator: Optional[str] = typer.Option(None, "--coordinator", help="Lab mode: labgrid coordinator HOST:PORT."),
    heartbeat: float = typer.Option(10.0, "--heartbeat-timeout", help="Seconds without a heartbeat before a job is INCOMPLETE."),
    job_timeout: float = typer.Option(3600.0, "--job-timeout", help="Seconds a job may run."),
    max_attempts: int = typer.Option(3, "--max-attempts", help="INCOMPLETE attempts before giving up on a job."),
    reference: Optional[Path] = typer.Option(None, "--reference", help="Accuracy pass: the fp32 source .onnx, run on this host."),
    data: Optional[Path] = typer.Option(None, "--data", help="Accuracy pass: input samples (.npz, one array per input "
                                        "name, samples on axis 0; .npy for one input), pushed with each job."),
    db: Optional[Path] = DbOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Run packages on a pool or one device; results go to the store.  Exit 1 when a job is not COMPLETE."""
    import asyncio

    from .farm import Farm, FarmSettings, job_summary, make_jobs
    from .inventory import load_inventory
    from .jobs import BenchSettings, LoadgenMode, RetryPolicy, Scenario
    from .locks import DeviceLocks, HostLeaser
    from .store import Store, default_db
    from .transport import Timeouts

    if (pool is None) == (device is None):
        raise ConfigError("give exactly one of --pool NAME or --device ID")
    try:
        settings = BenchSettings(Scenario(scenario), min_duration, min_queries, warmup, LoadgenMode(loadgen))
    except ValueError as exc:
        raise ConfigError(f"--scenario must be one of {{single-stream, offline}} and --loadgen one of "
                          f"{{auto, on, off}}: {exc}") from None
    if (reference is None) != (data is None):
        raise ConfigError("the accuracy pass needs both --reference MODEL.onnx and --data FEEDS.npz")
    inv = load_inventory(inventory)
    devs = inv.pool(pool) if pool else [inv.device(device)]  # type: ignore[arg-type]
    import tempfile

    data_dir = tempfile.TemporaryDirectory(prefix="edgekit-farm-data-")  # the samples as pushed, per package
    plans = None
    if reference is not None:
        from .accuracy import plan

        plans = plan(reference, data, _packages(packages), Path(data_dir.name))  # type: ignore[arg-type]
    jobs = make_jobs(_packages(packages), settings, repeat=repeat, accuracy=plans)
    store = Store(db)
    fs = FarmSettings(timeouts=Timeouts(heartbeat_s=heartbeat, job_s=job_timeout),
                      retry=RetryPolicy(max_attempts=max_attempts))

    async def go(bar: Any) -> Any:
        lab = None
        if coordinator:
            from .lab import LabLeaser, LabSession

            lab = await LabSession(coordinator).start()
            match = dict(inv.pools[pool].match) if pool else {"name": devs[0].labgrid_place}
            leaser: Any = LabLeaser(lab, match, devs)
        else:
            leaser = HostLeaser(DeviceLocks(default_db().parent / "farm-locks"))
        done = [0]

        def on_event(job: Any, note: Optional[str]) -> None:
            if job.state.terminal:
                done[0] += 1
                bar("jobs", done[0], len(jobs))
            if note and not as_json and not sys.stderr.isatty():
                sys.stderr.write(f"{job.id} {job.device or '-'}: {note}\n")

        farm = Farm(devs, store, leaser, fs, on_event=on_event)
        try:
            await farm.run(jobs)
        finally:
            if lab is not None:
                await lab.close()
        return farm.run_id

    try:
        with _Progress(not as_json) as bar:
            run_id = asyncio.run(go(bar))
    finally:
        data_dir.cleanup()
    store.close()
    summary = job_summary(jobs)
    doc = {"run_id": run_id, "db": str(store.path), "summary": summary, "jobs": [j.to_json() for j in jobs]}
    for j, d in zip(jobs, doc["jobs"]):
        if j.result and j.result.get("results"):
            d["results"] = {k: v for k, v in j.result["results"].items() if k != "latencies_ns"}
            d["fingerprint"] = (j.result.get("fingerprint") or {}).get("id")
            d["parity"] = j.result.get("parity")
    if as_json:
        _emit_json(doc)
    else:
        for j in jobs:
            r = (j.result or {}).get("results") or {}
            p90 = r.get("result_90.00_percentile_latency_ns")
            fig = f"p90 {p90 / 1e6:.3f} ms" if p90 else (j.reason or "")
            par = (j.result or {}).get("parity")
            if par:
                fig += f"  min SQNR {par['min_sqnr_db']:.2f} dB ({par['weakest']}, {par['samples']} samples)"
            typer.echo(f"{j.id}  {j.state.value:<10} {j.device or '-':<14} {j.package.name:<28} {fig}")
        typer.echo(f"run {run_id}: " + ", ".join(f"{k} {v}" for k, v in sorted(summary.items())) + f"  (store {store.path})")
    if any(j.state.value != "COMPLETE" for j in jobs):
        raise typer.Exit(code=1)


@farm_app.command("results")
@command
def results(db: Optional[Path] = DbOpt, run_id: Optional[str] = typer.Option(None, "--run", help="Only this run."),
            as_json: bool = JsonOpt) -> None:
    """Jobs and their results from the store."""
    from .store import Store

    with Store(db) as store:
        jobs = store.jobs(run_id)
        res = {r["job_id"]: r for r in store.results(run_id=run_id)}
        health = store.device_health()
        parity: Dict[str, List[Dict[str, Any]]] = {}
        for row in store.parity():
            parity.setdefault(row["job_id"], []).append(row)
    rows = []
    for j in jobs:
        r = res.get(j["id"])
        fields = ((r or {}).get("result") or {}).get("results") or {}
        rows.append({**j, "fingerprint": (r or {}).get("fingerprint"),
                     "results": {k: v for k, v in fields.items() if k != "latencies_ns"},
                     "parity": parity.get(j["id"], [])})
    if as_json:
        _emit_json({"jobs": rows, "devices": health})
        return
    for r in rows:
        p90 = r["results"].get("result_90.00_percentile_latency_ns")
        typer.echo(f"{r['id']}  {r['state']:<10} {r['device'] or '-':<14} {Path(r['package']).name:<28} "
                   f"{(f'p90 {p90 / 1e6:.3f} ms' if p90 else r['reason'] or '')}")
    for dev, h in health.items():
        if h["bad"]:
            typer.echo(f"device {dev} is marked bad: {h['reason']}")


def _manifests(paths: List[str]) -> Dict[str, Dict[str, Any]]:
    from edgekit.package import open_package

    from .farm import sha256_file

    out = {}
    for p in set(paths):
        if Path(p).is_file():
            try:
                opened = open_package(p)
            except Exception:  # a package moved or replaced since the run: report without its parity
                continue
            try:
                out[sha256_file(Path(p))] = opened.manifest.to_json()
            finally:
                opened.close()
    return out


@farm_app.command("report")
@command
def farm_report(db: Optional[Path] = DbOpt, output: Path = typer.Option(..., "--output", "-o", help="report.html"),
                run_id: Optional[str] = typer.Option(None, "--run", help="Only this run."), as_json: bool = JsonOpt) -> None:
    """Static HTML report of the store's results (plus .json and .csv next to it)."""
    from .report import farm_rows, write_report
    from .store import Store

    with Store(db) as store:
        res = list(store.results(run_id=run_id))
    if not res:
        raise ConfigError(f"no results in {db or 'the default store'}{' for run ' + run_id if run_id else ''}; "
                          "run `edgekit farm run` first")
    rows = farm_rows(res, _manifests([r["package"] for r in res]))
    paths = write_report(rows, output, title="edgekit device farm report",
                         notes=[f"{len(res)} results; latencies pooled per package and device fingerprint"])
    if as_json:
        _emit_json({k: str(v) for k, v in paths.items()})
        return
    typer.echo(f"wrote {paths['html']} ({len(rows)} rows), {paths['json']}, {paths['csv']}")


@farm_app.command("compare")
@command
def farm_compare(a: str = typer.Argument(..., help="Package A: a file or a sha256 prefix."),
                 b: str = typer.Argument(..., help="Package B: a file or a sha256 prefix."),
                 db: Optional[Path] = DbOpt, as_json: bool = JsonOpt) -> None:
    """p90 of B vs A on each device fingerprint both ran on, with a 95% bootstrap interval."""
    from .compare import compare
    from .farm import sha256_file
    from .store import Store

    sha = [sha256_file(Path(x)) if Path(x).is_file() else x for x in (a, b)]
    with Store(db) as store:
        rows = list(store.results())
    out = compare(rows, sha[0], sha[1])
    if as_json:
        _emit_json({"a": sha[0], "b": sha[1], "comparisons": out})
        return
    for c in out:
        typer.echo(f"fingerprint {c['fingerprint']}: p90 A {c['p90_a_ms']:.3f} ms, B {c['p90_b_ms']:.3f} ms, "
                   f"B/A {c['ratio']:.3f} [{c['ci_low']:.3f}, {c['ci_high']:.3f}] ({int(c['confidence'] * 100)}%): {c['verdict']}")


@command
def report(
    packages: List[Path] = typer.Argument(..., help="Packages of one model (several targets / precisions)."),
    output: Path = typer.Option(..., "--output", "-o", help="report.html (the .json and .csv go next to it)."),
    min_duration: float = typer.Option(1.0, "--min-duration", help="Seconds each package is timed at least."),
    min_queries: int = typer.Option(100, "--min-queries", help="Queries each package is timed at least."),
    as_json: bool = JsonOpt,
) -> None:
    """Compare packages of one model on this host: size, parity per part, accuracy, latency, load time, with plots."""
    from .report import package_rows, write_report

    rows = package_rows(_packages(packages), min_duration_s=min_duration, min_queries=min_queries)
    paths = write_report(rows, output, title="edgekit package report",
                         notes=["latency: SingleStream on this host (synthetic inputs), after 10 warm-up queries",
                                "parity: the package's own verification against the fp32 source"])
    if as_json:
        _emit_json({"files": {k: str(v) for k, v in paths.items()},
                    "rows": [{k: v for k, v in r.items() if k != "latencies_ms"} for r in rows]})
        return
    for r in rows:
        typer.echo(f"{r['label']:<30} {r['target'] or '-':<12} {r['precision'] or '-':<5} "
                   f"{r['size_bytes'] / 1024:>8.1f} KiB  p50 {r['p50_ms']:.3f} ms  p90 {r['p90_ms']:.3f} ms  "
                   f"min SQNR {r['min_sqnr_db'] if r['min_sqnr_db'] is not None else '-'}")
    typer.echo(f"wrote {paths['html']}, {paths['json']}, {paths['csv']}")

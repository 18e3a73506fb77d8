"""The device farm end to end on simulated devices: real asyncssh servers on 127.0.0.1, real runner
processes, real packages, faults injected where real devices fail."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any, List, Optional

import pytest

pytest.importorskip("asyncssh")
pytest.importorskip("yaml")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from edgekit.device_farm.farm import Farm, FarmSettings, make_jobs  # noqa: E402
from edgekit.device_farm.inventory import load_inventory  # noqa: E402
from edgekit.device_farm.jobs import BenchSettings, JobState, LoadgenMode, RetryPolicy  # noqa: E402
from edgekit.device_farm.locks import DeviceLocks, HostLeaser  # noqa: E402
from edgekit.device_farm.simulate import FAULTS, FleetThread, start_fleet  # noqa: E402
from edgekit.device_farm.store import Store  # noqa: E402
from edgekit.device_farm.transport import Timeouts  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
QUICK = BenchSettings(min_duration_s=0.1, min_queries=10, warmup=2, loadgen=LoadgenMode.OFF)
TIMEOUTS = Timeouts(connect_s=10, command_s=30, job_s=60, heartbeat_s=1.5, keepalive_s=2)


def _build(out: Path, precision: str) -> Path:
    import numpy as np

    import edgekit

    rng = np.random.default_rng(0)
    calib = [{"input": rng.standard_normal((1, 3, 32, 32)).astype("float32")} for _ in range(16)]
    with warnings.catch_warnings():  # few calibration samples on purpose: the build warns, the tests need speed
        warnings.simplefilter("ignore")
        return edgekit.build(ROOT / "tests" / "models" / "conv_bn_relu.onnx", target="onnxruntime", precision=precision,
                         calibration=calib, task="classify", output=out)


@pytest.fixture(scope="module")
def packages(tmp_path_factory: Any) -> "tuple[Path, Path]":
    d = tmp_path_factory.mktemp("farm-pkgs")
    fp32 = _build(d / "conv-fp32.edgepkg", "fp32")
    int8 = _build(d / "conv-int8.edgepkg", "int8")
    return fp32, int8


@pytest.fixture(scope="module")
def broken(packages: Any, tmp_path_factory: Any) -> Path:
    """A package whose model file is missing: the package's fault (FAILED)."""
    src = packages[0]
    out = tmp_path_factory.mktemp("farm-broken") / "broken.edgepkg"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w") as zout:
        for item in zin.infolist():
            if not item.filename.endswith(".onnx"):
                zout.writestr(item, zin.read(item.filename))
    return out


async def _run(tmp: Path, n: int, jobs_for: Any, *, faults: Optional[List[Optional[str]]] = None, rate: float = 0.0,
               retry: RetryPolicy = RetryPolicy(health_backoff_s=0.1), per_device: Optional[dict] = None,
               runs: int = 1) -> Any:
    fleet = await start_fleet(tmp / "fleet", n)
    try:
        for d in fleet.devices:
            d.faults.queue = list((per_device or {}).get(d.id, faults or []))
            d.faults.rate = rate
        inv = load_inventory(fleet.inventory())
        store = Store(tmp / "farm.sqlite")
        farm = Farm(inv.pool("sim"), store, HostLeaser(DeviceLocks(tmp / "locks")),
                    FarmSettings(timeouts=TIMEOUTS, retry=retry, local_root=tmp / "local"))
        jobs: List[Any] = []
        for _ in range(runs):  # one Farm, several runs: each run connects and probes afresh
            batch = jobs_for()
            await farm.run(batch)
            jobs += batch
        return fleet, store, jobs
    finally:
        await fleet.close()


def _no_overlap(fleet: Any, store: Store) -> None:
    assert fleet.overlaps() == {}, fleet.overlaps()          # device side: runner processes
    by_dev: dict = {}
    for a in store.attempts():                                 # host side: RUNNING spans
        if a["started"] is not None:
            by_dev.setdefault(a["device"], []).append((a["started"], a["ended"]))
    for spans in by_dev.values():
        spans.sort()
        assert all(b[0] >= a[1] for a, b in zip(spans, spans[1:])), spans
    for d in fleet.devices:
        assert d.running == {}, f"{d.id} still runs {d.running}; ran {d.intervals}"


def test_jobs_complete_push_is_cached_and_results_stored(packages: Any, tmp_path: Path) -> None:
    fp32, int8 = packages
    fleet, store, jobs = asyncio.run(_run(tmp_path, 2, lambda: make_jobs([fp32, int8], QUICK, repeat=2), runs=2))
    assert [j.state for j in jobs] == [JobState.COMPLETE] * 8
    assert all(len(j.attempts) == 1 for j in jobs), [j.to_json() for j in jobs]  # no stale link from the run before
    rows = list(store.results())
    assert len(rows) == 8 and {r["job_id"] for r in rows} == {j.id for j in jobs}
    for r in rows:
        res = r["result"]["results"]
        for p in ("50.00", "90.00", "95.00", "99.00", "99.90"):
            assert res[f"result_{p}_percentile_latency_ns"] > 0
        assert res["result_min_latency_ns"] <= res["result_50.00_percentile_latency_ns"] <= res["result_max_latency_ns"]
        assert res["result_query_count"] >= 10 and res["result_validity"] == "VALID"
        assert len(res["latencies_ns"]) == res["result_query_count"]
        assert r["fingerprint"] and r["result"]["fingerprint"]["kernel"]
    for d in fleet.devices:  # content-addressed: each package at most once per device, no partial files left
        blobs = sorted(p.name for p in (d.root / "edgekit-farm" / "blobs").iterdir())
        assert all(not b.startswith(".") for b in blobs) and len(blobs) <= 2
    _no_overlap(fleet, store)


@pytest.mark.parametrize("fault", FAULTS)
def test_fault_is_incomplete_and_retried_on_another_device(packages: Any, tmp_path: Path, fault: str) -> None:
    fleet, store, jobs = asyncio.run(_run(tmp_path, 2, lambda: make_jobs([packages[0]], QUICK), faults=[fault]))
    (job,) = jobs
    states = [a.state for a in job.attempts]
    assert states == [JobState.INCOMPLETE, JobState.INCOMPLETE, JobState.COMPLETE], job.to_json()
    assert job.attempts[0].device != job.attempts[1].device  # the retry went to the other device
    expected = {"kill": "runner died", "drop": "connection lost", "hang": "no heartbeat",
                "truncate": "truncated", "disk_full": "push of"}[fault]
    assert expected in (job.attempts[0].reason or ""), job.attempts[0].reason
    assert [f for d in fleet.devices for f, _ in d.injected] == [fault, fault]
    assert len(list(store.results())) == 1
    _no_overlap(fleet, store)


def test_failed_is_never_retried(broken: Path, tmp_path: Path) -> None:
    fleet, store, jobs = asyncio.run(_run(tmp_path, 2, lambda: make_jobs([broken], QUICK)))
    (job,) = jobs
    assert job.state is JobState.FAILED and len(job.attempts) == 1
    assert "model/model.onnx" in job.reason and "PackageError" in job.reason, job.reason
    assert not any(h["bad"] for h in store.device_health().values())


def test_device_marked_bad_until_health_check_passes(packages: Any, tmp_path: Path) -> None:
    retry = RetryPolicy(max_attempts=4, bad_after=2, health_backoff_s=0.1)
    fleet, store, jobs = asyncio.run(_run(tmp_path, 1, lambda: make_jobs([packages[0]], QUICK),
                                          faults=["kill", "kill"], retry=retry))
    (job,) = jobs
    assert [a.state for a in job.attempts] == [JobState.INCOMPLETE, JobState.INCOMPLETE, JobState.COMPLETE]
    health = list((fleet.devices[0].root / "edgekit-farm" / "jobs").glob("health-*"))
    assert len(health) == 1 and json.loads((health[0] / "result.json").read_text())["health_check"] is True
    assert store.device_health()["sim0"]["bad"] is False


def test_bad_device_stays_out_when_health_checks_fail(packages: Any, tmp_path: Path) -> None:
    retry = RetryPolicy(max_attempts=5, bad_after=1, health_checks=2, health_backoff_s=0.05)
    # every run on sim0 is killed (health checks too); sim0 is marked bad, fails its health checks, is left out
    fleet, store, jobs = asyncio.run(_run(tmp_path, 2, lambda: make_jobs([packages[0]], QUICK, repeat=4),
                                          retry=retry, per_device={"sim0": ["kill"] * 20}))
    assert all(j.state is JobState.COMPLETE for j in jobs), [j.to_json() for j in jobs]
    assert store.device_health()["sim0"]["bad"] is True
    sim0_runs = len(fleet.devices[0].intervals)
    assert 2 <= sim0_runs <= 3, fleet.devices[0].intervals  # 1 job attempt (bad_after=1) + 2 failed health checks
    assert {j.device for j in jobs} == {"sim1"}


def test_random_faults_every_job_accounted_for(packages: Any, tmp_path: Path) -> None:
    retry = RetryPolicy(max_attempts=3, bad_after=3, health_backoff_s=0.1)
    fleet, store, jobs = asyncio.run(_run(tmp_path, 4, lambda: make_jobs([packages[0], packages[1]], QUICK, repeat=6),
                                          rate=0.3, retry=retry))
    assert all(j.state in (JobState.COMPLETE, JobState.INCOMPLETE) for j in jobs), [j.to_json() for j in jobs]
    assert sum(len(d.injected) for d in fleet.devices) > 0
    stored = {r["job_id"] for r in store.results()}
    for j in jobs:
        if j.state is JobState.COMPLETE:
            assert j.id in stored  # no result lost
        else:
            assert sum(a.state is JobState.INCOMPLETE for a in j.attempts) == 3
    db_states = {r["id"]: r["state"] for r in store.jobs()}
    assert db_states == {j.id: j.state.value for j in jobs}
    _no_overlap(fleet, store)


def test_local_transport(packages: Any, tmp_path: Path) -> None:
    inv_path = tmp_path / "devices.yaml"
    inv_path.write_text(f"devices:\n  here:\n    transport: local\n    python: {sys.executable}\n"
                        f"    workdir: {tmp_path / 'here'}\n    tags: {{os: host}}\n")
    inv = load_inventory(inv_path)
    store = Store(tmp_path / "farm.sqlite")
    farm = Farm([inv.device("here")], store, HostLeaser(DeviceLocks(tmp_path / "locks")), FarmSettings(timeouts=TIMEOUTS))
    jobs = make_jobs([packages[0]], QUICK)
    asyncio.run(farm.run(jobs))
    assert jobs[0].state is JobState.COMPLETE and (tmp_path / "here" / "blobs" / f"{jobs[0].sha256}.edgepkg").is_file()


def _feeds(path: Path, n: int = 8) -> Path:
    import numpy as np

    np.savez(path, input=np.random.default_rng(1).standard_normal((n, 3, 32, 32)).astype("float32"))
    return path


def test_accuracy_pass_parity_in_result_store_and_report(packages: Any, tmp_path: Path) -> None:
    from edgekit.device_farm.accuracy import parity, plan
    from edgekit.device_farm.agent import fingerprint
    from edgekit.device_farm.report import farm_rows
    from edgekit.device_farm.transport import DeviceFault

    fp32, int8 = packages
    plans = plan(ROOT / "tests" / "models" / "conv_bn_relu.onnx", _feeds(tmp_path / "feeds.npz"), [fp32, int8], tmp_path)
    fleet, store, jobs = asyncio.run(_run(tmp_path, 2, lambda: make_jobs([fp32, int8], QUICK, accuracy=plans)))
    assert [j.state for j in jobs] == [JobState.COMPLETE] * 2, [j.to_json() for j in jobs]
    sqnr = {}
    for j in jobs:
        par = j.result["parity"]
        assert par["samples"] == 8 and par["data_sha256"] == plans[j.sha256].data_sha256
        (part,) = par["parts"]
        assert part["output"] == "logits" and part["cosine"] > 0.99 and part["max_abs"] >= 0
        assert par["top1_agreement"] is not None
        sqnr[j.package.name] = part["sqnr_db"]
        rows = store.parity(j.id)
        assert [(r["part"], r["sqnr_db"], r["samples"]) for r in rows] == [("logits", part["sqnr_db"], 8)]
        # the stable fingerprint came from the probe, the governor/temperatures from the job: same id as a full read
        assert j.result["fingerprint"]["id"] == fingerprint()["id"] and "fingerprint_volatile" not in j.result
    # fp32 on the same runtime matches its source; int8 is the lossy one but still close
    assert sqnr["conv-fp32.edgepkg"] > 60 and 15 < sqnr["conv-int8.edgepkg"] < sqnr["conv-fp32.edgepkg"], sqnr
    for d in fleet.devices:  # the data went content-addressed next to the packages
        assert any(b.suffix == ".npz" for b in (d.root / "edgekit-farm" / "blobs").iterdir())
    rows = {r["label"].split(" @ ")[0]: r for r in farm_rows(list(store.results()))}
    assert rows["conv-int8"]["parity_source"].startswith("on the device: 8 samples")
    assert rows["conv-int8"]["min_sqnr_db"] == sqnr["conv-int8.edgepkg"]
    with pytest.raises(DeviceFault, match="truncated or corrupt"):  # an outputs.npz cut short on the device
        parity(plans[jobs[0].sha256], b"PK\x03\x04", "0" * 64)


def test_accuracy_pass_errors_name_the_fix(packages: Any, tmp_path: Path) -> None:
    import numpy as np

    from edgekit.device_farm.accuracy import plan
    from edgekit.errors import EdgekitError

    model = ROOT / "tests" / "models" / "conv_bn_relu.onnx"
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, image=np.zeros((2, 3, 32, 32), "float32"))
    with pytest.raises(EdgekitError, match="model inputs are \\['input'\\]"):
        plan(model, wrong, [packages[0]], tmp_path)
    with pytest.raises(EdgekitError, match="give input tensors as a .npz"):
        plan(model, tmp_path / "images", [packages[0]], tmp_path)
    other = ROOT / "tests" / "models" / "attention_block.onnx"  # its input is 'tokens'
    with pytest.raises(EdgekitError, match="inputs are \\['tokens'\\] but the package's are \\['input'\\]"):
        plan(other, _feeds(tmp_path / "feeds.npz", 2), [packages[0]], tmp_path)


# ----------------------------------------------------------------- the CLI, against a fleet served from a thread
def cli(*args: Any, check_rc: Optional[int] = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "edgekit", *map(str, args)], capture_output=True, text=True, timeout=300)
    if check_rc is not None:
        assert proc.returncode == check_rc, f"rc={proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc


def test_cli_run_results_report_compare(packages: Any, tmp_path: Path) -> None:
    fp32, int8 = packages
    ft = FleetThread(tmp_path / "fleet", 2)
    try:
        inv = ft.fleet.inventory()
        doc = json.loads(cli("farm", "devices", "-i", inv, "--json").stdout)
        assert doc["pools"]["sim"]["devices"] == ["sim0", "sim1"]
        db = tmp_path / "farm.sqlite"
        common = ["--min-duration", "0.2", "--min-queries", "20", "--warmup", "2", "--loadgen", "off", "--db", db]
        run = json.loads(cli("farm", "run", fp32, int8, "-i", inv, "--device", "sim0", *common,
                             "--reference", ROOT / "tests" / "models" / "conv_bn_relu.onnx",
                             "--data", _feeds(tmp_path / "feeds.npz", 4), "--json").stdout)
        assert run["summary"] == {"COMPLETE": 2}
        assert all(j["parity"]["samples"] == 4 and j["parity"]["min_sqnr_db"] > 15 for j in run["jobs"])
        assert {j["device"] for j in run["jobs"]} == {"sim0"}
        res = json.loads(cli("farm", "results", "--db", db, "--json").stdout)
        assert len(res["jobs"]) == 2 and all(j["results"]["result_90.00_percentile_latency_ns"] for j in res["jobs"])
        out = tmp_path / "farm.html"
        cli("farm", "report", "--db", db, "-o", out)
        page = out.read_text()
        assert page.count("<svg") == 2 and "conv-int8 @ sim0" in page and "<script" not in page
        rows = json.loads(out.with_suffix(".json").read_text())["rows"]
        assert {(r["label"], r["jobs"]) for r in rows} == {("conv-fp32 @ sim0", 1), ("conv-int8 @ sim0", 1)}
        assert all(r["min_sqnr_db"] is not None and r["parity_source"].startswith("on the device") for r in rows)
        cmp_doc = json.loads(cli("farm", "compare", fp32, int8, "--db", db, "--json").stdout)
        (c,) = cmp_doc["comparisons"]
        assert c["ci_low"] <= c["ratio"] <= c["ci_high"] and c["n_a"] >= 20
    finally:
        ft.close()


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "devices.yaml"
    bad.write_text("devices:\n  a:\n    transport: telnet\n")
    proc = cli("farm", "devices", "-i", bad, check_rc=2)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines == [f"error: {bad}: devices.a.transport: must be one of {{local, ssh}}, but got 'telnet'"]
    proc = cli("farm", "run", ROOT / "nope.edgepkg", "-i", bad, "--pool", "x", check_rc=2)
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    good = tmp_path / "good.yaml"
    good.write_text("devices:\n  a:\n    transport: local\n")
    proc = cli("farm", "run", ROOT / "nope.edgepkg", "-i", good, "--device", "a", "--reference", bad, check_rc=2)
    assert proc.stderr.strip() == "error: the accuracy pass needs both --reference MODEL.onnx and --data FEEDS.npz"

"""Lab mode against a real labgrid-coordinator and exporter on 127.0.0.1, with simulated devices."""
from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("labgrid")
pytest.importorskip("asyncssh")
if shutil.which("labgrid-coordinator") is None or shutil.which("labgrid-exporter") is None:
    pytest.skip("labgrid-coordinator / labgrid-exporter not on PATH", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_farm import QUICK, TIMEOUTS, _build, _no_overlap  # noqa: E402

from edgekit.device_farm.farm import Farm, FarmSettings, make_jobs  # noqa: E402
from edgekit.device_farm.inventory import load_inventory  # noqa: E402
from edgekit.device_farm.jobs import JobState  # noqa: E402
from edgekit.device_farm.lab import LabLeaser, LabSession, place_tags  # noqa: E402
from edgekit.device_farm.simulate import start_fleet  # noqa: E402
from edgekit.device_farm.store import Store  # noqa: E402


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _lab_run(tmp: Path, pkg: Path) -> Any:
    port = _port()
    addr = f"127.0.0.1:{port}"
    log = open(tmp / "labgrid.log", "w")
    coord = subprocess.Popen(["labgrid-coordinator", "-l", addr], cwd=tmp, stdout=log, stderr=subprocess.STDOUT)
    fleet = await start_fleet(tmp / "fleet", 2)
    exporter = None
    try:
        inv = load_inventory(fleet.inventory(places=True))
        cfg = tmp / "exporter.yaml"
        cfg.write_text("".join(f"{d.id}:\n  NetworkService:\n    address: 127.0.0.1\n    username: farm\n"
                               f"    port: {d.port}\n" for d in fleet.devices))
        lab = None
        for _ in range(100):  # the coordinator takes a moment to listen
            try:
                lab = await LabSession(addr).start()
                break
            except Exception:
                await asyncio.sleep(0.1)
        assert lab is not None, (tmp / "labgrid.log").read_text()[-2000:]
        # the exporter only once the coordinator listens: one that starts first may give up on it
        exporter = subprocess.Popen(["labgrid-exporter", "-c", addr, "--name", "simexp", "--hostname", "127.0.0.1",
                                     str(cfg)], cwd=tmp, stdout=log, stderr=subprocess.STDOUT)
        try:
            for _ in range(300):  # the exporter registers its resources a moment after it starts
                await lab.session.sync_with_coordinator()
                if all(d.id in lab.session.resources.get("simexp", {}) for d in fleet.devices):
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"the exporter registered no resources: {(tmp / 'labgrid.log').read_text()[-2000:]}")
            for d in inv.pool("sim"):
                await lab.add_place(d.labgrid_place, place_tags(d), [f"simexp/{d.id}/NetworkService"])
            # another team member (their own labgrid-client) holds sim1: the farm must run everything on sim0
            colleague = dict(os.environ, LG_USERNAME="colleague")
            for _ in range(20):  # a fresh client may not have the exporter's resources yet: it refuses, try again
                got = subprocess.run(["labgrid-client", "-x", addr, "-p", "sim1", "acquire"], env=colleague,
                                     capture_output=True, text=True, timeout=60)
                if got.returncode == 0 or "no matching remote resource" not in got.stderr:
                    break
                await asyncio.sleep(0.5)
            assert got.returncode == 0, got.stderr
            store = Store(tmp / "farm.sqlite")
            farm = Farm(inv.pool("sim"), store, LabLeaser(lab, inv.pools["sim"].match, inv.pool("sim")),
                        FarmSettings(timeouts=TIMEOUTS))
            jobs = make_jobs([pkg], QUICK, repeat=2)
            t = asyncio.ensure_future(farm.run(jobs))
            await asyncio.sleep(0.5)
            held = (await lab.places())["sim1"]["acquired"]
            await t
            first = [j.device for j in jobs]
            subprocess.run(["labgrid-client", "-x", addr, "-p", "sim1", "release"], env=colleague, check=True,
                           capture_output=True, timeout=60)
            jobs2 = make_jobs([pkg], QUICK, repeat=2)
            await farm.run(jobs2)
            places = await lab.places()
        finally:
            await lab.close()
        return fleet, store, jobs + jobs2, first, held, places
    finally:
        for p in (exporter, coord):
            if p is not None:
                p.terminate()
                p.wait(10)
        await fleet.close()
        log.close()


def test_lab_mode_on_a_real_coordinator(tmp_path: Path) -> None:
    pkg = _build(tmp_path / "conv.edgepkg", "fp32")
    fleet, store, jobs, first, held, places = asyncio.run(_lab_run(tmp_path, pkg))
    assert held, "the other user's acquisition of sim1 was visible"
    assert first == ["sim0"] * 2  # sim1 was taken by someone else
    assert all(j.state is JobState.COMPLETE for j in jobs)
    assert {j.device for j in jobs[2:]} <= {"sim0", "sim1"}
    assert all(len(j.attempts) == 1 for j in jobs)  # the second run on the same farm started on fresh links
    assert all(p["acquired"] is None and p["reservation"] is None for p in places.values()), places
    _no_overlap(fleet, store)

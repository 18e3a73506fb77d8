"""Run jobs on a pool of devices: one job per device at a time, retries, bad devices, results saved.

One worker per device of the pool takes the next PENDING job, reserves a device for it (host lock
files, or a labgrid place in lab mode), then PROBING (connect, push the pinned runner, probe the
device, kill a runner left by a dropped link, run ``prepare`` once), PUSHING (the package,
content-addressed, skipped when present), RUNNING (heartbeats watched), COLLECTING (result.json).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence

from edgekit.options import cache_dir
from edgekit.package import sha256_file

from .accuracy import AccuracyPlan, parity
from .agent import fingerprint_of
from .inventory import Device
from .jobs import BenchSettings, Attempt, Job, JobState, RetryPolicy
from .store import Store
from .transport import Completed, Connection, DeviceFault, Timeouts, connect

EventFn = Callable[[Job, Optional[str]], None]
AGENT = Path(__file__).with_name("agent.py")


def pinned_agent(directory: Path) -> Path:
    """agent.py with this host's edgekit version written in; named by its sha256 (content-addressed)."""
    import edgekit

    text = AGENT.read_text(encoding="utf-8").replace('PINNED = "@EDGEKIT_VERSION@"',
                                                     f'PINNED = "{edgekit.__version__}"', 1)
    digest = hashlib.sha256(text.encode()).hexdigest()
    path = directory / f"agent-{digest[:16]}.py"
    if not path.exists():  # several farms may share the directory: write aside, then rename
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{path.name}.{uuid.uuid4().hex[:8]}"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return path


class Lease(Protocol):
    device: Device

    async def release(self) -> None: ...


class Leaser(Protocol):
    async def acquire(self, candidates: Callable[[], Sequence[Device]]) -> Optional[Lease]: ...


@dataclass
class DeviceState:
    device: Device
    conn: Optional[Connection] = None
    probed: Optional[Dict[str, Any]] = None
    prepared: bool = False
    consecutive: int = 0
    bad: bool = False
    bad_reason: Optional[str] = None
    health_failures: int = 0
    next_health: float = 0.0
    retired: bool = False


@dataclass
class FarmSettings:
    timeouts: Timeouts = field(default_factory=Timeouts)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    local_root: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "edgekit-farm-local")


class Farm:
    def __init__(self, devices: Sequence[Device], store: Store, leaser: Leaser, settings: FarmSettings,
                 on_event: Optional[EventFn] = None) -> None:
        self.devices = {d.id: DeviceState(d) for d in devices}
        self.store = store
        self.leaser = leaser
        self.settings = settings
        self.on_event = on_event or (lambda job, note: None)
        self.run_id = uuid.uuid4().hex[:12]
        self._pending: List[Job] = []
        self._in_flight = 0
        self._changed = asyncio.Event()
        self._agent = pinned_agent(cache_dir("farm"))  # content-addressed: one file per agent version, reused
        self._agent_rel = f"runner/{self._agent.name}"
        # devices marked bad by an earlier run stay bad until a health check passes
        for dev_id, h in store.device_health().items():
            if dev_id in self.devices and h["bad"]:
                ds = self.devices[dev_id]
                ds.bad, ds.bad_reason, ds.consecutive = True, h["reason"], h["consecutive_incomplete"]

    # ------------------------------------------------------------- public
    async def run(self, jobs: Sequence[Job]) -> List[Job]:
        for j in jobs:
            self.store.save_job(self.run_id, j)
        self._pending = list(jobs)
        workers = [asyncio.ensure_future(self._worker()) for _ in self.devices]
        try:
            await asyncio.gather(*workers)
        finally:
            for w in workers:
                w.cancel()
            for ds in self.devices.values():  # closed *and* forgotten: a later run() connects and probes afresh
                await self._drop(ds)
        return list(jobs)

    # ------------------------------------------------------------- scheduling
    def _candidates(self, job: Job) -> List[Device]:
        live = [ds for ds in self.devices.values() if not ds.retired]
        if job.pin_device is not None:
            live = [ds for ds in live if ds.device.id == job.pin_device]
        fresh = [ds for ds in live if ds.device.id not in job.tried_on]
        return [ds.device for ds in (fresh or live)]  # another device when there is one, else any

    def _set(self, job: Job, state: JobState, note: Optional[str] = None) -> None:
        job.state = state
        if job.attempts:
            job.attempts[-1].state = state
        self.on_event(job, note)

    def _finish(self, job: Job, state: JobState, reason: Optional[str]) -> None:
        job.reason = reason
        self._set(job, state, reason)
        self.store.save_job(self.run_id, job)

    async def _worker(self) -> None:
        while True:
            if not self._pending:
                if self._in_flight == 0:
                    self._changed.set()
                    return
                self._changed.clear()
                await self._changed.wait()
                continue
            job = self._pending.pop(0)
            self._in_flight += 1
            try:
                await self._serve(job)
            finally:
                self._in_flight -= 1
                self._changed.set()

    async def _serve(self, job: Job) -> None:
        job.state = JobState.RESERVING
        self.on_event(job, None)
        if not self._candidates(job):
            self._finish(job, JobState.INCOMPLETE, job.reason or "no healthy device left in the pool")
            return
        lease = await self.leaser.acquire(lambda: self._candidates(job))
        if lease is None:
            self._finish(job, JobState.INCOMPLETE, job.reason or "no healthy device left in the pool")
            return
        try:
            ds = self.devices[lease.device.id]
            if ds.bad and not await self._health(ds, job):
                self._pending.append(job)  # not this job's attempt: the device was not fit to take it
                job.state = JobState.PENDING
                return
            await self._attempt(job, ds)
        finally:
            await lease.release()

    # ------------------------------------------------------------- device health
    def _device_fault(self, ds: DeviceState, reason: str) -> None:
        ds.consecutive += 1
        if ds.consecutive >= self.settings.retry.bad_after and not ds.bad:
            ds.bad, ds.bad_reason = True, f"{ds.consecutive} consecutive INCOMPLETE jobs (last: {reason})"
            ds.next_health = 0.0
        self.store.set_device(ds.device.id, bad=ds.bad, consecutive=ds.consecutive, reason=ds.bad_reason)

    def _device_ok(self, ds: DeviceState) -> None:
        ds.consecutive, ds.bad, ds.bad_reason, ds.health_failures = 0, False, None, 0
        self.store.set_device(ds.device.id, bad=False, consecutive=0, reason=None)

    async def _health(self, ds: DeviceState, job: Job) -> bool:
        """Load + one inference of the job's package; the device is good again when it passes."""
        wait = ds.next_health - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        try:
            await self._probe(ds)
            await self._push(ds, job)
            out = f"jobs/health-{uuid.uuid4().hex[:8]}"
            await self._exec_agent(ds, job, out, health=True)
            doc = await self._collect(ds, job, out)
            ok = doc.get("status") == "complete"
        except DeviceFault:
            await self._drop(ds)
            ok = False
        if ok:
            self._device_ok(ds)
            return True
        ds.health_failures += 1
        ds.next_health = time.monotonic() + self.settings.retry.health_backoff_s * ds.health_failures
        if ds.health_failures >= self.settings.retry.health_checks:
            ds.retired = True  # left out of this run; still marked bad in the store
        return False

    # ------------------------------------------------------------- one attempt
    async def _attempt(self, job: Job, ds: DeviceState) -> None:
        job.attempts.append(Attempt(device=ds.device.id))
        job.device = ds.device.id
        out = f"jobs/{job.id}-{len(job.attempts)}"
        try:
            self._set(job, JobState.PROBING)
            await self._probe(ds)
            self._set(job, JobState.PUSHING)
            await self._push(ds, job)
            self._set(job, JobState.RUNNING)
            job.attempts[-1].started = time.time()
            try:
                await self._exec_agent(ds, job, out, health=False)
            finally:
                job.attempts[-1].ended = time.time()
            self._set(job, JobState.COLLECTING)
            doc = await self._collect(ds, job, out)
        except DeviceFault as exc:
            await self._drop(ds)
            self._device_fault(ds, str(exc))
            job.attempts[-1].state = JobState.INCOMPLETE
            job.attempts[-1].reason = str(exc)
            tries = sum(1 for a in job.attempts if a.state is JobState.INCOMPLETE)
            if tries >= self.settings.retry.max_attempts:
                self._finish(job, JobState.INCOMPLETE, f"{tries} attempts INCOMPLETE; last on {ds.device.id}: {exc}")
            else:
                job.reason = str(exc)
                self.on_event(job, f"INCOMPLETE on {ds.device.id}: {exc}; retrying")
                job.state = JobState.PENDING
                self.store.save_job(self.run_id, job)
                self._pending.append(job)
            return
        self._device_ok(ds)
        job.result = doc
        if doc.get("status") == "complete":
            self._finish(job, JobState.COMPLETE, None)
        else:
            self._finish(job, JobState.FAILED, doc.get("error") or "the runner reported a failure")

    async def _drop(self, ds: DeviceState) -> None:
        if ds.conn is not None:
            await ds.conn.close()
        ds.conn, ds.probed = None, None

    async def _conn(self, ds: DeviceState) -> Connection:
        if ds.conn is None:
            ds.conn = await connect(ds.device, self.settings.timeouts, self.settings.local_root)
        return ds.conn

    async def _probe(self, ds: DeviceState) -> None:
        if ds.probed is not None:
            return
        conn = await self._conn(ds)
        if not await conn.exists(self._agent_rel):
            await conn.push(self._agent, self._agent_rel)
        t = self.settings.timeouts
        r = await conn.run([ds.device.python, self._agent_rel, "probe", "--kill-stale"], timeout=t.command_s)
        try:
            doc = json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise DeviceFault(f"probe failed (exit {r.rc}): {_tail(r.stderr) or 'no output'}") from None
        if not doc.get("ok"):
            raise DeviceFault(f"device not fit: {doc.get('reason')}")
        if not ds.prepared:
            for cmd in ds.device.prepare:
                p = await conn.run(["sh", "-c", cmd], timeout=t.command_s)
                if p.rc != 0:
                    raise DeviceFault(f"prepare command {cmd!r} exited {p.rc}: {_tail(p.stderr)}")
            ds.prepared = True
        ds.probed = doc

    async def _push(self, ds: DeviceState, job: Job) -> None:
        await self._push_blob(ds, job.package, _package_rel(job))
        if job.accuracy is not None:
            await self._push_blob(ds, job.accuracy.data, _data_rel(job))

    async def _push_blob(self, ds: DeviceState, local: Path, rel: str) -> None:
        """Content-addressed: skipped when the device has it (``rel`` names the sha256)."""
        conn = await self._conn(ds)
        if await conn.exists(rel):
            return
        free = (ds.probed or {}).get("free_bytes")
        size = local.stat().st_size
        if free is not None and free < size + (16 << 20):
            raise DeviceFault(f"device disk full: {free} bytes free, {local.name} needs {size} (+16 MiB)")
        await conn.push(local, rel)

    async def _exec_agent(self, ds: DeviceState, job: Job, out: str, *, health: bool) -> Completed:
        conn = await self._conn(ds)
        argv = [ds.device.python, self._agent_rel, "run", "--package", _package_rel(job),
                "--sha256", job.sha256, "--out", out, *job.settings.argv()]
        if (ds.probed or {}).get("fingerprint"):
            argv += ["--fingerprint", "volatile"]  # the stable part is this connection's probe
        if health:
            argv.append("--health")
        elif job.accuracy is not None:
            argv += ["--data", _data_rel(job)]
        seen: Dict[str, Any] = {}

        async def on_line(line: str) -> None:
            try:
                ev = json.loads(line)
            except ValueError:
                return  # a library printing to stdout is not a heartbeat, but not an error either
            if isinstance(ev, dict):
                seen.update(last=ev)
                if isinstance(ev.get("pid"), int):
                    seen["pid"] = ev["pid"]

        t = self.settings.timeouts
        try:
            done = await conn.stream(argv, on_line, heartbeat_s=t.heartbeat_s, timeout=t.job_s)
        except DeviceFault:
            await self._kill_runner(ds, out, seen.get("pid"))
            raise
        last = seen.get("last") or {}
        if done.rc == 3:
            raise DeviceFault(f"device not fit: {last.get('error') or _tail(done.stderr)}")
        if done.rc != 0:
            how = f"signal {done.signal}" if done.signal else f"exit code {done.rc}"
            raise DeviceFault(f"runner died ({how}) {_tail(done.stderr)}".strip())
        return done

    async def _kill_runner(self, ds: DeviceState, out: str, pid: Optional[int]) -> None:
        """A hung runner must be gone before the device takes another job (best effort over a new link)."""
        find = f"p={pid}" if pid else f"p=$(cat {out}/pid 2>/dev/null) || exit 0"
        script = (f"{find}; kill -KILL $p 2>/dev/null; "
                  "i=0; while kill -0 $p 2>/dev/null && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done")
        try:
            await self._drop(ds)
            conn = await self._conn(ds)
            await conn.run(["sh", "-c", script], timeout=self.settings.timeouts.command_s)
        except DeviceFault:
            pass  # unreachable now: the next probe kills it (--kill-stale)

    async def _collect(self, ds: DeviceState, job: Job, out: str) -> Dict[str, Any]:
        conn = await self._conn(ds)
        raw = await conn.read(f"{out}/result.json")
        try:
            doc = json.loads(raw)
        except ValueError:
            raise DeviceFault(f"result.json is truncated or corrupt ({len(raw)} bytes)") from None
        if not isinstance(doc, dict) or doc.get("status") not in ("complete", "failed"):
            raise DeviceFault("result.json has no status")
        if doc["status"] == "failed" and doc.get("fault") == "device":
            raise DeviceFault(f"device not fit: {doc.get('error')}")
        volatile = doc.pop("fingerprint_volatile", None)
        if volatile is not None:
            doc["fingerprint"] = fingerprint_of((ds.probed or {}).get("fingerprint") or {}, volatile)
        acc = doc.get("accuracy")
        if job.accuracy is not None and doc["status"] == "complete":
            if not isinstance(acc, dict) or not acc.get("outputs_file"):
                raise DeviceFault("result.json lacks the accuracy pass the job asked for")
            outputs = await conn.read(f"{out}/{acc['outputs_file']}")
            doc["parity"] = await asyncio.to_thread(parity, job.accuracy, outputs, acc.get("outputs_sha256"))
        return doc


def _package_rel(job: Job) -> str:
    return f"blobs/{job.sha256}.edgepkg"


def _data_rel(job: Job) -> str:
    return f"blobs/{job.accuracy.data_sha256}.npz"


def _tail(text: str, n: int = 300) -> str:
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    return " ".join(lines[-1].split())[:n] if lines else ""


def make_jobs(packages: Sequence[Path], settings: BenchSettings, *, repeat: int = 1,
              pin: Optional[Sequence[str]] = None, accuracy: Optional[Dict[str, AccuracyPlan]] = None) -> List[Job]:
    """``accuracy``: package sha256 -> its plan (:func:`accuracy.plan`); those jobs add the accuracy pass."""
    jobs = []
    for p in packages:
        sha = sha256_file(p)
        for _ in range(repeat):
            for dev in (pin or [None]):
                jobs.append(Job(package=p, sha256=sha, settings=settings, pin_device=dev,
                                accuracy=(accuracy or {}).get(sha)))
    return jobs


def job_summary(jobs: Sequence[Job]) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for j in jobs:
        out[j.state.value] = out.get(j.state.value, 0) + 1
    return out

"""Simulated devices: asyncssh servers on 127.0.0.1, each with its own work dir, and injectable faults.

For tests, benchmarks and trying the farm without hardware.  Each device is a real SSH server (key
authentication, exec, SFTP chrooted to the device's directory); commands run as real processes on
this machine with the device directory as home.  It only ever binds 127.0.0.1.

Faults act where a real device would fail, never inside the runner.  A kill, drop or hang hits when
the runner's first stdout line (its start heartbeat, written before it loads the package) reaches the
device's sshd: always mid-job, whatever the speed of the machine (a timer could fire after a fast
runner had already finished, and the fault would silently not happen):

* ``kill``      the runner gets SIGKILL mid-job (OOM killer, crash)
* ``drop``      the SSH connection is aborted mid-job (Wi-Fi, cable); the session gets SIGHUP like sshd's
* ``hang``      the runner gets SIGSTOP mid-job: no more heartbeats, no exit
* ``truncate``  result.json is cut short after the runner exits (storage corruption, power loss)
* ``disk_full`` SFTP writes fail with "no space left on device" (and cached blobs are gone)

``Device.intervals`` records when each runner process ran, from the device's side, so a test can
check that no two jobs ever overlapped on one device.
"""
from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

FAULTS = ("kill", "drop", "hang", "truncate", "disk_full")
LOOPBACK = "127.0.0.1"


@dataclass
class FaultPlan:
    """Faults for the next runs: a queue of named faults first, then random ones at ``rate``."""

    queue: List[Optional[str]] = field(default_factory=list)
    rate: float = 0.0
    kinds: Sequence[str] = FAULTS
    rng: random.Random = field(default_factory=lambda: random.Random(0))

    def next(self, stage: str) -> Optional[str]:
        """The fault for this stage ('push' or 'run'), if any."""
        if self.queue:
            if (self.queue[0] == "disk_full") == (stage == "push"):
                return self.queue.pop(0)
            return None
        if self.rate and self.rng.random() < self.rate:
            kinds = [k for k in self.kinds if (k == "disk_full") == (stage == "push")]
            return self.rng.choice(kinds) if kinds else None
        return None


@dataclass
class SimDevice:
    id: str
    root: Path
    port: int = 0
    faults: FaultPlan = field(default_factory=FaultPlan)
    intervals: List[Tuple[float, float, str]] = field(default_factory=list)
    injected: List[Tuple[str, str]] = field(default_factory=list)   # (fault, command)
    server: Any = None
    conns: set = field(default_factory=set)
    running: Dict[int, float] = field(default_factory=dict)

    def overlaps(self) -> List[Tuple[Tuple[float, float, str], Tuple[float, float, str]]]:
        iv = sorted(self.intervals)
        return [(a, b) for a, b in zip(iv, iv[1:]) if b[0] < a[1]]


def _is_runner(cmd: str) -> bool:
    """A runner process (a job or a health check): what must never overlap on one device."""
    return " run " in cmd and "--package" in cmd


def _out_dir(cmd: str) -> Optional[str]:
    parts = cmd.split()
    return parts[parts.index("--out") + 1].strip("'") if "--out" in parts else None


class _Handler:
    def __init__(self, dev: SimDevice) -> None:
        self.dev = dev

    async def __call__(self, process: Any) -> None:
        import asyncssh  # noqa: F401

        dev, cmd = self.dev, process.command or ""
        env = dict(os.environ, HOME=str(dev.root))
        proc = await asyncio.create_subprocess_shell(
            cmd, cwd=dev.root, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True)
        runner = _is_runner(cmd)
        fault = dev.faults.next("run") if runner else None
        started = time.time()
        if runner:
            dev.running[proc.pid] = started
            if fault:
                dev.injected.append((fault, cmd))
        conn = process.get_extra_info("connection")
        started_output = asyncio.Event()
        fault_task = (asyncio.ensure_future(self._inject(fault, proc, conn, started_output))
                      if fault in ("kill", "drop", "hang") else None)

        async def pump(src: Any, dst: Any) -> None:
            while True:
                chunk = await src.read(65536)
                if not chunk:
                    return
                if src is proc.stdout:
                    started_output.set()
                try:
                    dst.write(chunk.decode("utf-8", "replace"))
                except Exception:  # the client went away; keep draining so the process never blocks
                    pass

        pumps = asyncio.gather(pump(proc.stdout, process.stdout), pump(proc.stderr, process.stderr))
        pumps.add_done_callback(lambda f: f.cancelled() or f.exception())  # cancelled when the fleet stops
        rc = await proc.wait()
        await pumps
        ended = time.time()
        if runner:
            dev.running.pop(proc.pid, None)
            dev.intervals.append((started, ended, cmd))
            if fault == "truncate":
                out = _out_dir(cmd)
                res = dev.root / dev_workdir(cmd) / out / "result.json" if out else None
                if res is not None and res.exists():
                    data = res.read_bytes()
                    res.write_bytes(data[: max(1, len(data) // 2)])
        if fault_task is not None:
            fault_task.cancel()
        try:
            if rc is not None and rc < 0:
                process.exit_with_signal(signal.Signals(-rc).name.replace("SIG", ""))
            else:
                process.exit(rc or 0)
        except Exception:  # channel already gone (dropped link)
            pass

    async def _inject(self, fault: Optional[str], proc: Any, conn: Any, started_output: asyncio.Event) -> None:
        await started_output.wait()
        if proc.returncode is not None:
            return
        if fault == "kill":
            _signal(proc.pid, signal.SIGKILL)
        elif fault == "hang":
            _signal(proc.pid, signal.SIGSTOP)
        elif fault == "drop":
            conn.abort()


def dev_workdir(cmd: str) -> str:
    """The ``cd DIR`` a farm command starts with (the device work dir, relative to its home)."""
    parts = cmd.split()
    return parts[1].strip("'") if len(parts) > 1 and parts[0] == "cd" else "."


def _signal(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _sftp_factory(dev: SimDevice) -> Any:
    import asyncssh

    class _SFTP(asyncssh.SFTPServer):
        def __init__(self, chan: Any) -> None:
            super().__init__(chan, chroot=str(dev.root).encode())
            self._full = False

        def open(self, path: bytes, pflags: int, attrs: Any) -> Any:
            if pflags & asyncssh.FXF_WRITE:
                fault = dev.faults.next("push")
                if fault == "disk_full":
                    dev.injected.append((fault, path.decode("utf-8", "replace")))
                    for blob in (dev.root).glob("*/blobs/*"):
                        blob.unlink(missing_ok=True)
                    self._full = True
            return super().open(path, pflags, attrs)

        def write(self, file_obj: Any, offset: int, data: bytes) -> Any:
            if self._full:
                self._full = False
                raise asyncssh.SFTPFailure("No space left on device")
            return super().write(file_obj, offset, data)

    return _SFTP


@dataclass
class Fleet:
    """N simulated devices, their keys and an inventory that reaches them."""

    base: Path
    devices: List[SimDevice]
    client_key: Path
    known_hosts: Path

    def inventory(self, path: Optional[Path] = None, *, python: str = sys.executable,
                  tags: Optional[Dict[str, Any]] = None, places: bool = False) -> Path:
        import yaml

        doc: Dict[str, Any] = {"devices": {}, "pools": {"sim": {"match": {"os": "simulated"}}}}
        for d in self.devices:
            doc["devices"][d.id] = {
                "transport": "ssh", "address": LOOPBACK, "port": d.port, "user": "farm",
                "key": str(self.client_key), "known_hosts": str(self.known_hosts), "python": python,
                "workdir": "edgekit-farm",
                "tags": dict(tags or {"arch": os.uname().machine, "os": "simulated", "accelerators": []}),
            }
            if places:
                doc["devices"][d.id]["labgrid_place"] = d.id
        path = path or self.base / "devices.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        return path

    def overlaps(self) -> Dict[str, Any]:
        return {d.id: d.overlaps() for d in self.devices if d.overlaps()}

    async def close(self) -> None:
        for d in self.devices:
            for pid in list(d.running):
                _signal(pid, signal.SIGKILL)
                _signal(pid, signal.SIGCONT)
            if d.server is not None:
                d.server.close()
                await d.server.wait_closed()


async def start_fleet(base: Path, n: int, *, prefix: str = "sim", seed: int = 0) -> Fleet:
    """Start ``n`` devices on 127.0.0.1 (ephemeral ports), keys and known_hosts under ``base``."""
    import asyncssh

    base.mkdir(parents=True, exist_ok=True)
    client = asyncssh.generate_private_key("ssh-ed25519")
    client_key = base / "client_ed25519"
    client.write_private_key(str(client_key))
    os.chmod(client_key, 0o600)
    authorized = asyncssh.import_authorized_keys(client.export_public_key().decode())
    host = asyncssh.generate_private_key("ssh-ed25519")
    devices, lines = [], []
    for i in range(n):
        dev = SimDevice(id=f"{prefix}{i}", root=base / f"{prefix}{i}", faults=FaultPlan(rng=random.Random(seed + i)))
        dev.root.mkdir(parents=True, exist_ok=True)

        class _Server(asyncssh.SSHServer):
            def __init__(self, d: SimDevice = dev) -> None:
                self._d = d

            def connection_made(self, conn: Any) -> None:
                self._conn = conn
                self._d.conns.add(conn)

            def connection_lost(self, exc: Optional[Exception]) -> None:
                self._d.conns.discard(self._conn)
                # like sshd: the session's processes get SIGHUP when the link drops
                for pid in list(self._d.running):
                    _signal(pid, signal.SIGHUP)

        dev.server = await asyncssh.create_server(
            _Server, LOOPBACK, 0, server_host_keys=[host], authorized_client_keys=authorized,
            process_factory=_Handler(dev), sftp_factory=_sftp_factory(dev), allow_scp=False,
            keepalive_interval=5, encoding="utf-8")
        dev.port = dev.server.sockets[0].getsockname()[1]
        lines.append(f"[{LOOPBACK}]:{dev.port} {host.export_public_key().decode().strip()}")
        devices.append(dev)
    known = base / "known_hosts"
    known.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Fleet(base, devices, client_key, known)


class FleetThread:
    """A fleet served from its own event loop in a background thread (for CLI runs in subprocesses)."""

    def __init__(self, base: Path, n: int, **kw: Any) -> None:
        import threading

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.fleet: Fleet = asyncio.run_coroutine_threadsafe(start_fleet(base, n, **kw), self._loop).result(30)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.fleet.close(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

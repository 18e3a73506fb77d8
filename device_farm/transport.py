"""How the host reaches a device: ``ssh`` (asyncssh) or ``local`` (this machine, its own work dir).

A :class:`Connection` works on paths relative to the device's work dir and offers what a job needs:
run a command to completion, stream one with a heartbeat watchdog, test/push/read files.  Pushes
are content-addressed by the caller (``blobs/<sha256>``); :meth:`Connection.push` writes to a
temporary name and renames, so a dropped upload never leaves a file under the final name.

Failures the device (not the package) causes raise :class:`DeviceFault`; the job becomes INCOMPLETE.
"""
from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import signal
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable, List, Optional

from .inventory import Device, Transport

LineFn = Callable[[str], Awaitable[None]]


class DeviceFault(Exception):
    """The device, its link or its disk failed: the job is INCOMPLETE (retried elsewhere)."""


class HeartbeatLost(DeviceFault):
    pass


@dataclass(frozen=True)
class Completed:
    rc: Optional[int]
    stdout: str
    stderr: str
    signal: Optional[str] = None


@dataclass(frozen=True)
class Timeouts:
    connect_s: float = 15.0
    command_s: float = 60.0      # probe, kill, prepare
    job_s: float = 3600.0        # a whole benchmark
    heartbeat_s: float = 10.0    # no stdout line for this long = hung runner
    keepalive_s: float = 5.0     # ssh keepalive interval; 3 misses drop the link


class Connection:
    device: Device

    async def run(self, argv: List[str], *, timeout: float) -> Completed:
        raise NotImplementedError

    async def stream(self, argv: List[str], on_line: LineFn, *, heartbeat_s: float, timeout: float) -> Completed:
        raise NotImplementedError

    async def exists(self, rel: str) -> bool:
        raise NotImplementedError

    async def push(self, local: Path, rel: str) -> None:
        raise NotImplementedError

    async def read(self, rel: str) -> bytes:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


async def _watch(readline: Callable[[], Awaitable[bytes]], on_line: LineFn, heartbeat_s: float) -> None:
    """Feed stdout lines to ``on_line``; raise HeartbeatLost when none arrives for ``heartbeat_s``."""
    while True:
        try:
            raw = await asyncio.wait_for(readline(), heartbeat_s)
        except asyncio.TimeoutError:
            raise HeartbeatLost(f"no heartbeat for {heartbeat_s:g} s (runner hung or stopped)") from None
        if not raw:
            return
        line = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        await on_line(line.rstrip("\n"))


# ----------------------------------------------------------------- local
class LocalConnection(Connection):
    def __init__(self, device: Device, root: Path) -> None:
        self.device = device
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, rel: str) -> Path:
        return self.root / rel

    async def run(self, argv: List[str], *, timeout: float) -> Completed:
        proc = await asyncio.create_subprocess_exec(*argv, cwd=self.root, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE, start_new_session=True)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except asyncio.TimeoutError:
            _kill_group(proc.pid)
            await proc.wait()
            raise DeviceFault(f"{argv[0]} timed out after {timeout:g} s") from None
        return Completed(proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"),
                         _signame(proc.returncode))

    async def stream(self, argv: List[str], on_line: LineFn, *, heartbeat_s: float, timeout: float) -> Completed:
        proc = await asyncio.create_subprocess_exec(*argv, cwd=self.root, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE, start_new_session=True)
        err_task = asyncio.ensure_future(proc.stderr.read())  # type: ignore[union-attr]
        try:
            await asyncio.wait_for(_watch(proc.stdout.readline, on_line, heartbeat_s), timeout)  # type: ignore[union-attr]
            await proc.wait()
        except asyncio.TimeoutError:
            raise DeviceFault(f"job ran past its {timeout:g} s limit") from None
        finally:
            if proc.returncode is None:
                _kill_group(proc.pid)
                await proc.wait()
        err = (await err_task).decode("utf-8", "replace")
        return Completed(proc.returncode, "", err, _signame(proc.returncode))

    async def exists(self, rel: str) -> bool:
        return self._path(rel).exists()

    async def push(self, local: Path, rel: str) -> None:
        dest = self._path(rel)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            await asyncio.to_thread(shutil.copyfile, local, tmp)
            os.replace(tmp, dest)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise DeviceFault(f"push of {local.name} failed: {exc}") from None

    async def read(self, rel: str) -> bytes:
        try:
            return self._path(rel).read_bytes()
        except OSError as exc:
            raise DeviceFault(f"cannot read {rel}: {exc}") from None

    async def close(self) -> None:
        pass


def _quiet(task: "asyncio.Future[object]") -> None:
    if not task.cancelled():
        task.exception()


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _signame(rc: Optional[int]) -> Optional[str]:
    if rc is not None and rc < 0:
        try:
            return signal.Signals(-rc).name
        except ValueError:
            return str(-rc)
    return None


# ----------------------------------------------------------------- ssh
class SshConnection(Connection):
    def __init__(self, device: Device, conn: "object", sftp: "object") -> None:
        self.device = device
        self._conn = conn
        self._sftp = sftp
        self._wd = device.workdir.rstrip("/")

    @classmethod
    async def open(cls, device: Device, timeouts: Timeouts) -> "SshConnection":
        import asyncssh

        kw = dict(port=device.port, username=device.user, connect_timeout=timeouts.connect_s,
                  keepalive_interval=timeouts.keepalive_s, keepalive_count_max=3)
        if device.key is not None:
            kw["client_keys"] = [str(device.key)]
        if device.known_hosts is not None:
            kw["known_hosts"] = str(device.known_hosts)
        try:
            conn = await asyncssh.connect(device.address, **kw)
            sftp = await conn.start_sftp_client()
        except (OSError, asyncssh.Error, asyncio.TimeoutError) as exc:
            raise DeviceFault(f"cannot connect to {device.user}@{device.address}:{device.port}: "
                              f"{' '.join(str(exc).split()) or type(exc).__name__}") from None
        return cls(device, conn, sftp)

    def _rel(self, rel: str) -> str:
        return f"{self._wd}/{rel}"

    def _command(self, argv: List[str]) -> str:
        # login shells start in the home directory, so a relative workdir means the same thing as for sftp
        return f"cd {shlex.quote(self._wd)} && exec {' '.join(shlex.quote(a) for a in argv)}"

    async def run(self, argv: List[str], *, timeout: float) -> Completed:
        import asyncssh

        try:
            r = await asyncio.wait_for(self._conn.run(self._command(argv), check=False), timeout)  # type: ignore[attr-defined]
        except asyncio.TimeoutError:
            raise DeviceFault(f"{argv[0]} timed out after {timeout:g} s") from None
        except (OSError, asyncssh.Error) as exc:
            raise DeviceFault(f"connection lost: {' '.join(str(exc).split()) or type(exc).__name__}") from None
        return Completed(r.exit_status, str(r.stdout or ""), str(r.stderr or ""), r.exit_signal[0] if r.exit_signal else None)

    async def stream(self, argv: List[str], on_line: LineFn, *, heartbeat_s: float, timeout: float) -> Completed:
        import asyncssh

        # the shell announces its pid before exec'ing the runner (same pid), so the host can kill a runner
        # that hangs before it writes anything of its own
        announce = 'echo "{\\"event\\": \\"spawned\\", \\"pid\\": $$}"'
        command = f"cd {shlex.quote(self._wd)} && {announce} && exec {' '.join(shlex.quote(a) for a in argv)}"
        try:
            proc = await self._conn.create_process(command)  # type: ignore[attr-defined]
        except (OSError, asyncssh.Error) as exc:
            raise DeviceFault(f"connection lost: {' '.join(str(exc).split()) or type(exc).__name__}") from None
        err_task = asyncio.ensure_future(proc.stderr.read())
        err_task.add_done_callback(_quiet)  # a dropped link fails this read too; the watcher reports it
        try:
            await asyncio.wait_for(_watch(proc.stdout.readline, on_line, heartbeat_s), timeout)
            await asyncio.wait_for(proc.wait_closed(), heartbeat_s)
        except asyncio.TimeoutError:
            raise DeviceFault(f"job ran past its {timeout:g} s limit") from None
        except (OSError, asyncssh.Error) as exc:
            raise DeviceFault(f"connection lost: {' '.join(str(exc).split()) or type(exc).__name__}") from None
        finally:
            if proc.exit_status is None and proc.exit_signal is None:
                proc.close()
            if not err_task.done():
                err_task.cancel()
        if self._conn.is_closed() if hasattr(self._conn, "is_closed") else False:  # type: ignore[attr-defined]
            raise DeviceFault("connection lost while the runner ran")
        if proc.exit_status is None and proc.exit_signal is None:
            raise DeviceFault("connection lost while the runner ran (no exit status)")
        err = err_task.result() if err_task.done() and not err_task.cancelled() else ""
        sig = proc.exit_signal[0] if proc.exit_signal else None
        rc = proc.exit_status if proc.exit_status is not None and proc.exit_status >= 0 else None
        return Completed(rc, "", str(err or ""), sig)

    async def exists(self, rel: str) -> bool:
        import asyncssh

        try:
            return bool(await self._sftp.exists(self._rel(rel)))  # type: ignore[attr-defined]
        except (OSError, asyncssh.Error) as exc:
            raise DeviceFault(f"connection lost: {exc}") from None

    async def push(self, local: Path, rel: str) -> None:
        import asyncssh

        dest = self._rel(rel)
        parent, name = dest.rsplit("/", 1)
        tmp = f"{parent}/.{name}.{uuid.uuid4().hex[:8]}.part"
        sftp = self._sftp
        try:
            await sftp.makedirs(parent, exist_ok=True)  # type: ignore[attr-defined]
            await sftp.put(str(local), tmp)  # type: ignore[attr-defined]
            await sftp.posix_rename(tmp, dest)  # type: ignore[attr-defined]
        except (OSError, asyncssh.Error) as exc:
            try:
                await sftp.remove(tmp)  # type: ignore[attr-defined]
            except (OSError, asyncssh.Error):
                pass
            raise DeviceFault(f"push of {local.name} failed: {' '.join(str(exc).split()) or type(exc).__name__}") from None

    async def read(self, rel: str) -> bytes:
        import asyncssh

        try:
            async with self._sftp.open(self._rel(rel), "rb") as f:  # type: ignore[attr-defined]
                return await f.read()
        except (OSError, asyncssh.Error) as exc:
            raise DeviceFault(f"cannot read {rel}: {' '.join(str(exc).split()) or type(exc).__name__}") from None

    async def close(self) -> None:
        try:
            self._sftp.exit()  # type: ignore[attr-defined]
            self._conn.close()  # type: ignore[attr-defined]
            await self._conn.wait_closed()  # type: ignore[attr-defined]
        except Exception:  # closing a dead link must not mask the job's outcome
            pass


async def connect(device: Device, timeouts: Timeouts, local_root: Path) -> Connection:
    if device.transport is Transport.LOCAL:
        wd = Path(device.workdir).expanduser()
        return LocalConnection(device, wd if wd.is_absolute() else local_root / device.id)
    return await SshConnection.open(device, timeouts)

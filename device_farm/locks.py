"""Zero-infrastructure mode: one job per device at a time through per-device lock files on the host.

``fcntl.flock`` on ``<lock dir>/<device>.lock``: held by the process, released by the kernel when the
process dies (no stale locks after a crash), honoured by every ``edgekit farm run`` on this host.
Lab mode replaces this with labgrid places (:mod:`.lab`).
"""
from __future__ import annotations

import asyncio
import fcntl
import os
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Optional, Sequence


class DeviceLocks:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def try_lock(self, device_id: str) -> Optional[int]:
        fd = os.open(self.directory / f"{device_id}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    @staticmethod
    def unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    @asynccontextmanager
    async def hold(self, device_id: str, poll_s: float = 0.05) -> AsyncIterator[None]:
        while True:
            fd = self.try_lock(device_id)
            if fd is not None:
                break
            await asyncio.sleep(poll_s)
        try:
            yield
        finally:
            self.unlock(fd)


class _HostLease:
    def __init__(self, device: Any, fd: int) -> None:
        self.device = device
        self._fd: Optional[int] = fd

    async def release(self) -> None:
        if self._fd is not None:
            DeviceLocks.unlock(self._fd)
            self._fd = None


class HostLeaser:
    """Lease any free device among the candidates through its host lock file (round robin)."""

    def __init__(self, locks: DeviceLocks, poll_s: float = 0.05) -> None:
        self.locks = locks
        self.poll_s = poll_s
        self._turn = 0

    async def acquire(self, candidates: Callable[[], Sequence[Any]]) -> Optional[_HostLease]:
        while True:
            devices = list(candidates())
            if not devices:
                return None
            self._turn += 1
            for i in range(len(devices)):
                dev = devices[(self._turn + i) % len(devices)]
                fd = self.locks.try_lock(dev.id)
                if fd is not None:
                    return _HostLease(dev, fd)
            await asyncio.sleep(self.poll_s)

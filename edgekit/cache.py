"""Content-addressed cache of unpacked packages.

A zip package is unpacked once into ``<cache>/packages/<digest>/root`` where
``digest`` is the sha256 of the package's integrity record (which pins the
sha256 and size of every file, the manifest included).  The next load of the
same package, under any file name, reuses the verified tree instead of
unpacking again: devices restart services often, and a fresh temp copy per
start is what used to fill RAM-backed /tmp when the service was killed.

Why a cache rather than a temp dir removed at exit: SIGTERM/SIGKILL skip
cleanup, so a temp dir leaks a full model copy per kill.  Here a kill leaves
at most one ``*.partial-<pid>-*`` folder, which the next load removes, and
finished entries are bounded by an LRU size limit.

Layout of one entry::

    <digest>/root/...        the package's files (what runners read)
    <digest>/entry.json      size in bytes, signatures already verified
    <digest>/lock            shared flock while a process uses the entry

Entries in use (shared lock held) are never evicted; on systems without
``fcntl`` (Windows) eviction skips entries used in the last minute instead.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

try:  # POSIX: advisory locks keep a running entry from being evicted
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

from ._atomic import atomic_write
from .errors import ConfigError, PackageError
from .options import cache_dir

ENV_MAX_MB = "EDGEKIT_PACKAGE_CACHE_MB"
DEFAULT_MAX_BYTES = 2 << 30
ROOT = "root"
ENTRY = "entry.json"
LOCK = "lock"
PARTIAL = ".partial-"
#: a partial unpack older than this is removed even if its pid looks alive (pid reuse in containers)
STALE_PARTIAL_S = 6 * 3600
RECENT_USE_S = 60


def _base_dir() -> Path:
    """``EDGEKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/edgekit``, else ``~/.cache/edgekit`` (the options contract)."""
    return cache_dir("packages")


def max_bytes() -> int:
    raw = os.environ.get(ENV_MAX_MB)
    if raw is None or raw == "":
        return DEFAULT_MAX_BYTES
    try:
        mb = int(raw)
        if mb < 0:
            raise ValueError
    except ValueError:
        raise ConfigError(f'"{ENV_MAX_MB}" must be a whole number of MiB (0 = keep only the package in use), but got {raw!r}') from None
    return mb << 20


def _usable(path: Path) -> bool:
    """The cache must be ours: created 0700, owned by this user, writable."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = path.lstat()
    except OSError:
        return False
    if not os.path.isdir(path) or os.path.islink(path):
        return False
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        return False  # another user could swap verified files under us
    return os.access(path, os.W_OK | os.X_OK)


def cache_root() -> Path:
    """Where unpacked packages live; falls back to a per-user folder in the temp dir."""
    first = _base_dir()
    if _usable(first):
        return first
    uid = os.getuid() if hasattr(os, "getuid") else 0
    fallback = Path(tempfile.gettempdir()) / f"edgekit-{uid}" / "packages"
    if _usable(fallback):
        return fallback
    raise PackageError(
        f"cannot use {first} (nor {fallback}) to unpack packages: not writable or not owned by this user; "
        "set EDGEKIT_CACHE_DIR to a writable folder"
    )


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def remove_stale_partials(root: Path) -> int:
    """Remove unpacks left by killed processes; returns how many were removed."""
    removed = 0
    now = time.time()
    try:
        names = os.listdir(root)
    except OSError:
        return 0
    for name in names:
        if PARTIAL not in name:
            continue
        try:
            pid = int(name.split(PARTIAL, 1)[1].split("-", 1)[0])
        except ValueError:
            pid = -1
        p = root / name
        try:
            age = now - p.lstat().st_mtime
        except OSError:
            continue
        if pid < 0 or not _pid_alive(pid) or age > STALE_PARTIAL_S:
            shutil.rmtree(p, ignore_errors=True)
            removed += 1
    return removed


@dataclass
class CacheEntry:
    """One unpacked package; holds a shared lock until :meth:`release`."""

    path: Path
    info: Dict[str, Any]
    _fd: Optional[int] = None

    @property
    def root(self) -> Path:
        return self.path / ROOT

    def acquire(self) -> None:
        if self._fd is not None:
            return
        try:
            fd = os.open(str(self.path / LOCK), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH)
            except OSError:
                pass
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)  # closing drops the flock
            finally:
                self._fd = None

    def touch(self) -> None:
        try:
            os.utime(self.path / ENTRY)
        except OSError:
            pass

    def record_signature(self, key_id: str, signature: str) -> None:
        """Remember that this digest's signature by ``key_id`` verified, so the next load skips the crypto."""
        sigs = dict(self.info.get("verified_signatures") or {})
        if sigs.get(key_id) == signature:
            return
        sigs[key_id] = signature
        self.info["verified_signatures"] = sigs
        atomic_write(self.path / ENTRY, json.dumps(self.info).encode("utf-8"))


def _read_entry(path: Path) -> Optional[Dict[str, Any]]:
    try:
        with open(path / ENTRY, "rb") as f:
            raw = f.read(1 << 20)
        info = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or not isinstance(info.get("size"), int):
        return None
    return info


def lookup(digest: str, files: Dict[str, int]) -> Optional[CacheEntry]:
    """The entry for ``digest`` if it is complete: every file present with its recorded size.

    Contents were hashed when the entry was made; re-hashing on every start
    would cost what the cache saves, and the folder is this user's own.
    """
    base = cache_root()
    path = base / digest
    info = _read_entry(path)
    if info is None or info.get("digest") != digest:
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
        return None
    root = path / ROOT
    for rel, size in files.items():
        try:
            st = os.lstat(root / rel)
        except OSError:
            shutil.rmtree(path, ignore_errors=True)
            return None
        if st.st_size != size or not _regular(st.st_mode):
            shutil.rmtree(path, ignore_errors=True)
            return None
    entry = CacheEntry(path=path, info=info)
    entry.acquire()
    entry.touch()
    return entry


def _regular(mode: int) -> bool:
    import stat

    return stat.S_ISREG(mode)


def new_partial(digest: str) -> Path:
    """A fresh folder to unpack into; :func:`commit` moves it into place."""
    base = cache_root()
    remove_stale_partials(base)
    path = Path(tempfile.mkdtemp(prefix=f"{digest}{PARTIAL}{os.getpid()}-", dir=str(base)))
    (path / ROOT).mkdir()
    return path


def commit(partial: Path, digest: str, size: int) -> CacheEntry:
    """Publish a verified unpack under its digest (another process may have won the race)."""
    base = partial.parent
    info = {"digest": digest, "size": size, "created": time.time(), "verified_signatures": {}}
    atomic_write(partial / ENTRY, json.dumps(info).encode("utf-8"))
    final = base / digest
    try:
        os.rename(partial, final)
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
        existing = _read_entry(final)
        if existing is None:
            raise PackageError(f"{final}: cannot publish the unpacked package in the cache; set EDGEKIT_CACHE_DIR") from None
        info = existing
    entry = CacheEntry(path=final, info=info)
    entry.acquire()
    evict(base, keep=digest)
    return entry


def entries(base: Optional[Path] = None) -> List[Dict[str, Any]]:
    base = base or cache_root()
    out = []
    for name in os.listdir(base):
        if PARTIAL in name:
            continue
        p = base / name
        info = _read_entry(p)
        if info is None:
            continue
        try:
            used = (p / ENTRY).stat().st_mtime
        except OSError:
            continue
        out.append({"digest": name, "path": p, "size": info["size"], "used": used})
    return out


def _busy(path: Path) -> bool:
    if fcntl is None:
        try:
            return time.time() - (path / ENTRY).stat().st_mtime < RECENT_USE_S
        except OSError:
            return False
    try:
        fd = os.open(str(path / LOCK), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def evict(base: Path, keep: str = "", limit: Optional[int] = None) -> List[str]:
    """Drop least-recently-used entries until the cache fits ``limit`` bytes; entries in use stay."""
    limit = max_bytes() if limit is None else limit
    items = sorted(entries(base), key=lambda e: e["used"])
    total = sum(e["size"] for e in items)
    removed = []
    for e in items:
        if total <= limit:
            break
        if e["digest"] == keep or _busy(e["path"]):
            continue
        shutil.rmtree(e["path"], ignore_errors=True)
        total -= e["size"]
        removed.append(e["digest"])
    return removed

"""On-device TensorRT engine cache: keys, atomic entries, timing caches.

Pure Python and no TensorRT import, so every rule here is tested on machines
without a GPU:

* an entry's key is (TensorRT version, GPU name, compute capability, sha256 of
  the packaged ONNX, canonical build profile); any change gives another key, so
  the engine is rebuilt rather than a stale one loaded;
* an entry is ``<stem>.engine`` plus ``<stem>.json`` (the key's fields and the
  engine's sha256).  Both are written to a temporary file in the same folder and
  renamed into place (``os.replace`` is atomic on POSIX), the metadata last, so
  an interrupted build leaves at most an orphan temp file, never an entry that
  looks valid;
* a lookup re-checks the metadata against the key and the engine's checksum,
  and drops entries that fail (a foreign TensorRT version, a truncated copy);
* a cache folder that cannot be written falls back to a private temporary
  folder, with a warning that says so.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from ..._atomic import atomic_write
from ...options import ENV_CACHE_DIR, cache_dir

#: bump when the entry layout or what an engine is built with changes, so old entries miss instead of
#: misloading (2: fp32 engines are built without TF32)
CACHE_FORMAT = 2


class CacheWarning(UserWarning):
    """The engine cache could not be used as asked (it still works, elsewhere)."""


@dataclass(frozen=True)
class EngineKey:
    """What an engine depends on.  Two keys are equal iff an engine is reusable."""

    trt_version: str
    gpu_name: str
    compute_capability: str
    artifact_sha256: str
    profile: str  # BuildProfile.canonical()
    name: str = "model"  # for readable file names only; not part of the identity

    def fields(self) -> Dict[str, Any]:
        d = asdict(self)
        d.pop("name")
        d["format"] = CACHE_FORMAT
        return d

    @property
    def digest(self) -> str:
        text = json.dumps(self.fields(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    @property
    def stem(self) -> str:
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.name).strip("._")[:40] or "model"
        return f"{slug}-{self.digest[:24]}"


def default_cache_dir() -> Path:
    """edgekit's one cache resolver (:func:`edgekit.options.cache_dir`): ``$EDGEKIT_CACHE_DIR/tensorrt``,
    else ``$XDG_CACHE_HOME/edgekit/tensorrt``, else ``~/.cache/edgekit/tensorrt``."""
    return cache_dir("tensorrt")


def _writable(folder: Path) -> Optional[str]:
    """None when ``folder`` exists (or was made) and a file can be created in it; else why not."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=str(folder))
        os.close(fd)
        os.unlink(probe)
        return None
    except OSError as exc:
        return exc.strerror or str(exc)


def resolve_cache_dir(requested: Union[str, "os.PathLike[str]", None] = None) -> Tuple[Path, Optional[str]]:
    """The folder to use and, when it is not the requested one, the warning text.

    An unwritable folder (read-only image, another user's home) is no reason to
    fail: the engine goes to a private temporary folder instead — rebuilt after
    a reboot, which the warning says.
    """
    folder = Path(requested).expanduser() if requested is not None else default_cache_dir()
    why = _writable(folder)
    if why is None:
        return folder, None
    uid = os.getuid() if hasattr(os, "getuid") else 0
    fallback = Path(tempfile.gettempdir()) / f"edgekit-tensorrt-{uid}"
    why_fallback = _writable(fallback)
    if why_fallback is not None:
        fallback = Path(tempfile.mkdtemp(prefix="edgekit-tensorrt-"))
    message = (
        f"TensorRT engine cache {folder} is not writable ({why}); using {fallback} instead, which does not "
        f"survive a reboot (fix: pass cache_dir=... / --cache-dir, or set ${ENV_CACHE_DIR} to a writable folder)"
    )
    return fallback, message


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class EngineCache:
    """Engines and timing caches in one folder.  ``warning`` is set when it fell back."""

    def __init__(self, folder: Union[str, "os.PathLike[str]", None] = None, *, warn: bool = True) -> None:
        self.folder, self.warning = resolve_cache_dir(folder)
        self.requested = Path(folder).expanduser() if folder is not None else default_cache_dir()
        #: why the last :meth:`lookup` missed ("" after a hit)
        self.last_miss = ""
        if self.warning and warn:
            warnings.warn(self.warning, CacheWarning, stacklevel=2)

    # -- engines ----------------------------------------------------------
    def paths(self, key: EngineKey) -> Tuple[Path, Path]:
        return self.folder / f"{key.stem}.engine", self.folder / f"{key.stem}.json"

    def lookup(self, key: EngineKey) -> Optional[bytes]:
        """The cached engine for ``key``, or None (see :attr:`last_miss`) when it must be built."""
        engine_path, meta_path = self.paths(key)
        if not meta_path.is_file() or not engine_path.is_file():
            self.last_miss = "no cached engine for this package, GPU, TensorRT version and build profile"
            return None
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.last_miss = f"{meta_path.name} is unreadable"
            self._drop(key)
            return None
        want = key.fields()
        got = {k: meta.get(k) for k in want}
        if got != want:
            diff = ", ".join(f"{k} {got[k]!r} (need {want[k]!r})" for k in want if got[k] != want[k])
            self.last_miss = f"cached engine was built for another configuration: {diff}"
            self._drop(key)
            return None
        data = engine_path.read_bytes()
        if _sha256(data) != meta.get("engine_sha256"):
            self.last_miss = f"{engine_path.name} does not match its checksum (a partial copy?)"
            self._drop(key)
            return None
        self.last_miss = ""
        return data

    def store(self, key: EngineKey, engine: bytes, **extra: Any) -> Path:
        """Add an entry atomically: the engine first, then the metadata that makes it valid."""
        engine_path, meta_path = self.paths(key)
        atomic_write(engine_path, bytes(engine))
        meta = {**key.fields(), "name": key.name, "engine_sha256": _sha256(bytes(engine)),
                "engine_bytes": len(engine), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra}
        atomic_write(meta_path, (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode("utf-8"))
        return engine_path

    def invalidate(self, key: EngineKey, reason: str) -> None:
        """Forget an entry TensorRT refused to load (e.g. deserialization failed)."""
        self.last_miss = reason
        self._drop(key)

    def _drop(self, key: EngineKey) -> None:
        for p in self.paths(key)[::-1]:  # metadata first: without it the entry is already invalid
            try:
                p.unlink()
            except OSError:
                pass

    def entries(self) -> List[Dict[str, Any]]:
        """Metadata of every entry in the folder (for `edgekit prepare --json` and debugging)."""
        out = []
        for meta_path in sorted(self.folder.glob("*.json")):
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(meta, dict) and "engine_sha256" in meta:
                out.append({"file": meta_path.with_suffix(".engine").name, **meta})
        return out

    # -- timing caches ----------------------------------------------------
    def timing_cache_path(self, trt_version: str, gpu_name: str, compute_capability: str) -> Path:
        """One timing cache per (TensorRT version, GPU): shared by every model built on it."""
        tag = hashlib.sha256(f"{trt_version}|{gpu_name}|{compute_capability}".encode("utf-8")).hexdigest()[:16]
        return self.folder / f"timing-{tag}.cache"

    def load_timing_cache(self, path: Path) -> bytes:
        try:
            return path.read_bytes()
        except OSError:
            return b""

    def store_timing_cache(self, path: Path, data: bytes) -> None:
        atomic_write(path, bytes(data))

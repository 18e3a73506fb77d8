"""sha256 of small byte strings without importing :mod:`hashlib`.

``import hashlib`` loads OpenSSL's libcrypto: 3.5-7 ms measured here, paid by
every service start on a device.  A load of a cached package hashes only a
few KB (the integrity record, a manifest), for which CPython's own sha256
module (``_sha2`` from Python 3.12, ``_sha256`` before; hashlib's fallback)
loads in ~0.3 ms and is as exact.  Whole files still go through hashlib,
whose OpenSSL code is several times faster per byte.
"""
from __future__ import annotations

from typing import Any, Callable

_SHA256: Any = None


def _constructor() -> Callable[[bytes], Any]:
    global _SHA256
    if _SHA256 is None:
        try:
            from _sha2 import sha256 as ctor  # type: ignore[import-not-found]  # CPython >= 3.12
        except ImportError:
            try:
                from _sha256 import sha256 as ctor  # type: ignore[import-not-found, no-redef]  # CPython <= 3.11
            except ImportError:  # another interpreter: hashlib it is
                from hashlib import sha256 as ctor
        _SHA256 = ctor
    return _SHA256  # type: ignore[no-any-return]


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of ``data`` (meant for KB, not model files: use hashlib there)."""
    return _constructor()(data).hexdigest()  # type: ignore[no-any-return]

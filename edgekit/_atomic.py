"""Whole-file writes that readers never see half done (the package cache and the TensorRT engine cache)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Union


def atomic_write(path: Union[str, "os.PathLike[str]"], data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the whole new one, never a part.

    The bytes go to a temporary file in the same folder (so the rename stays on one file system),
    reach the disk (fsync: a power cut must not leave a renamed but empty file), then replace
    ``path`` with ``os.replace``, atomic on POSIX and Windows.  On any failure the temporary file
    is removed and the error raised.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise

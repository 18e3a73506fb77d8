"""Device profiles (``devices.toml``): name → target, default precision, options."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

from edgekit.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEVICES_FILE = Path(__file__).with_name("devices.toml")


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    target: str
    precision: str
    description: str = ""
    runtime_options: Mapping[str, Any] = field(default_factory=dict)
    target_options: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "target": self.target,
            "precision": self.precision,
            "description": self.description,
            "runtime_options": dict(self.runtime_options),
            "target_options": dict(self.target_options),
        }


def load_profiles(path: Optional[Path] = None) -> Dict[str, DeviceProfile]:
    path = path or DEVICES_FILE
    with open(path, "rb") as f:
        data = tomllib.load(f)
    profiles: Dict[str, DeviceProfile] = {}
    for name, entry in data.items():
        for key in ("target", "precision"):
            if key not in entry:
                raise ConfigError(f"{path.name}: [{name}] has no {key!r}")
        profiles[name] = DeviceProfile(
            name=name,
            target=entry["target"],
            precision=entry["precision"],
            description=entry.get("description", ""),
            runtime_options=dict(entry.get("runtime_options", {})),
            target_options=dict(entry.get("target_options", {})),
        )
    return profiles


def get_profile(name: str) -> DeviceProfile:
    profiles = load_profiles()
    if name not in profiles:
        raise ConfigError(f"unknown device {name!r}; known devices: {', '.join(sorted(profiles))} (see `edgekit targets`)")
    return profiles[name]

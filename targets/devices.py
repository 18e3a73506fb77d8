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


def check_profile(profile: DeviceProfile, path: Path = DEVICES_FILE) -> None:
    """Check a profile's options against the schemas they are for, one ConfigError naming the table.

    ``runtime_options`` go into every package built for the device, so they
    must be options of the runner that runs the target's artifact (and never
    device-only ones such as cache folders); a build option listed there is
    accepted (the pipeline moves it to the build).  ``target_options`` must be
    the target's build options.
    """
    from edgekit.errors import RegistryError
    from edgekit.runners import RUNNERS

    from . import TARGETS

    try:
        target = TARGETS.get(profile.target)
    except RegistryError as err:
        raise ConfigError(f"{path.name}: [{profile.name}] target: {err}") from None
    build = target.build_options
    runner = RUNNERS.get(target.runtime).options
    table = f"{path.name}: [{profile.name}.runtime_options]"
    runtime = {k: v for k, v in profile.runtime_options.items() if k not in build}
    device_only = [k for k in runtime if k in runner and runner[k].device_only]
    if device_only:
        raise ConfigError(f"{table}: {device_only[0]!r} is a device-only {target.runtime} runner option (it touches "
                          "the device's file system) and a package never carries it; remove it from the profile")
    runner.parse(runtime, source=table, also_known=build.names)
    build.parse(profile.target_options, source=f"{path.name}: [{profile.name}.target_options]")


def get_profile(name: str) -> DeviceProfile:
    profiles = load_profiles()
    if name not in profiles:
        raise ConfigError(f"unknown device {name!r}; known devices: {', '.join(sorted(profiles))} (see `edgekit targets`)")
    check_profile(profiles[name])
    return profiles[name]

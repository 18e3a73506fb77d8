"""devices.yaml validation: every mistake is one line naming the file, the key path and the fix."""
from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("yaml")

from edgekit.device_farm.inventory import InventoryError, Transport, load_inventory  # noqa: E402

GOOD = """
devices:
  pi5-a:
    transport: ssh
    address: 127.0.0.1
    port: 2222
    user: pi
    tags: {arch: aarch64, soc: bcm2712, accelerators: [hailo8], os: bookworm}
    profile: raspberry-pi-5
    prepare: "echo ready"
  here:
    transport: local
    tags: {arch: x86_64, os: linux}
pools:
  pis: {match: {arch: aarch64}}
  hailo: {match: {accelerators: hailo8}}
"""


def _inv(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "devices.yaml"
    p.write_text(text)
    return p


def test_good_inventory(tmp_path: Path) -> None:
    inv = load_inventory(_inv(tmp_path, GOOD))
    assert inv.device("pi5-a").transport is Transport.SSH and inv.device("pi5-a").port == 2222
    assert inv.device("pi5-a").prepare == ("echo ready",)
    assert [d.id for d in inv.pool("pis")] == ["pi5-a"] and [d.id for d in inv.pool("hailo")] == ["pi5-a"]


@pytest.mark.parametrize("text, needle", [
    ("devices: {}", "devices: must map at least one device"),
    ("devices:\n  a: {transport: ssh, user: u}", "devices.a: an ssh device needs 'address'"),
    ("devices:\n  a: {transport: ftp}", "devices.a.transport: must be one of {local, ssh}, but got 'ftp'"),
    ("devices:\n  a: {transport: local, adress: x}", "devices.a.adress: unknown key"),
    ("devices:\n  a: {transport: ssh, address: h, user: u, port: 70000}", "devices.a.port: must be an integer in 1..65535"),
    ("devices:\n  a: {transport: ssh, address: h, user: u, key: /nonexistent/key}", "devices.a.key: no such file"),
    ("devices:\n  a: {transport: local, profile: toaster}", "devices.a.profile: unknown edgekit device profile 'toaster'"),
    ("devices:\n  a: {transport: local, prepare: [1]}", "devices.a.prepare: must be a list of shell commands"),
    ("devices:\n  a: {transport: local}\npools:\n  p: {tags: {}}", "pools.p: must be exactly 'match:"),
    ("devices:\n  a: {transport: local}\nfleet: 1", "fleet: unknown top-level key"),
    ("devices:\n  a: [transport: local", "not valid YAML at line"),
])
def test_one_line_errors(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(InventoryError) as e:
        load_inventory(_inv(tmp_path, text))
    msg = str(e.value)
    assert needle in msg and "\n" not in msg and msg.startswith(str(tmp_path / "devices.yaml")), msg


def test_unknown_pool_and_device(tmp_path: Path) -> None:
    inv = load_inventory(_inv(tmp_path, GOOD))
    with pytest.raises(InventoryError, match="no pool 'jetsons'; known pools: hailo, pis"):
        inv.pool("jetsons")
    with pytest.raises(InventoryError, match="no device 'x'; known devices: here, pi5-a"):
        inv.device("x")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="no such inventory file"):
        load_inventory(tmp_path / "nope.yaml")

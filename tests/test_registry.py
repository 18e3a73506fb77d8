"""The plug-in registry: built-ins without reading entry points, plug-ins from real installed
distributions (a dist-info folder on sys.path), and every name conflict reported."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgekit.errors import RegistryError
from edgekit.registry import Registry

GROUP = "edgekit.test_registry_plugins"


def _install(site: Path, dist: str, entry_points: dict, module: str = "", code: str = "") -> None:
    """A minimal installed distribution: what pip leaves in site-packages (METADATA, entry_points.txt)."""
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n", encoding="utf-8")
    lines = "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[{GROUP}]\n{lines}", encoding="utf-8")
    if module:
        (site / f"{module}.py").write_text(textwrap.dedent(code), encoding="utf-8")


@pytest.fixture
def site(tmp_path, monkeypatch):
    d = tmp_path / "site"
    d.mkdir()
    monkeypatch.syspath_prepend(str(d))
    return d


def test_builtin_resolves_without_reading_entry_points(site):
    # a plug-in that reuses a built-in's name for another object: get() of the built-in never reads it
    _install(site, "shadow", {"json": "shadow_mod:Thing"})
    reg = Registry("runner", GROUP, builtins={"json": "json:JSONDecoder"})
    import json

    assert reg.get("json") is json.JSONDecoder
    assert "json" in reg
    assert not reg._scanned
    # listing reads them and names both sides of the conflict
    with pytest.raises(RegistryError, match=r"'json' is declared twice: built into edgekit as 'json:JSONDecoder' "
                                            r"and by the entry point 'shadow_mod:Thing'"):
        reg.names()
    assert reg.get("json") is json.JSONDecoder  # a plug-in cannot replace a built-in


def test_plugin_found_through_its_entry_point(site):
    _install(site, "plug", {"toy": "toy_plugin_mod:Toy"}, "toy_plugin_mod", "class Toy:\n    pass\n")
    reg = Registry("runner", GROUP, builtins={"json": "json:JSONDecoder"})
    assert "toy" in reg
    assert reg.names() == ["json", "toy"]
    import toy_plugin_mod

    assert reg.get("toy") is toy_plugin_mod.Toy


def test_builtin_declared_again_by_its_own_entry_point_is_one_plugin(site):
    _install(site, "edgekit_copy", {"json": "json:JSONDecoder"})
    reg = Registry("runner", GROUP, builtins={"json": "json:JSONDecoder"})
    assert reg.names() == ["json"]


def test_same_plugin_seen_twice_is_one_plugin(site, tmp_path, monkeypatch):
    # one package visible through two sys.path entries (a stale copy): same name, same object
    _install(site, "plug", {"toy": "toy_twice_mod:Toy"}, "toy_twice_mod", "class Toy:\n    pass\n")
    other = tmp_path / "site2"
    _install(other, "plug", {"toy": "toy_twice_mod:Toy"})
    monkeypatch.syspath_prepend(str(other))
    reg = Registry("runner", GROUP)
    assert reg.names() == ["toy"]


def test_two_plugins_with_one_name_are_refused(site):
    _install(site, "plug_a", {"toy": "toy_a:Toy"})
    _install(site, "plug_b", {"toy": "toy_b:Toy"})
    reg = Registry("runner", GROUP, builtins={"json": "json:JSONDecoder"})
    for ask in (lambda: reg.get("toy"), reg.names, lambda: "toy" in reg):
        with pytest.raises(RegistryError, match=r"'toy' is declared twice, by the entry points 'toy_(a|b):Toy' and "
                                                r"'toy_(a|b):Toy'; uninstall one"):
            ask()
        reg._scanned = False  # each way of asking reads the entry points and reports it


def test_registered_name_clashing_with_an_entry_point_is_refused(site):
    _install(site, "plug", {"toy": "toy_reg_mod:Toy"})
    reg = Registry("runner", GROUP)
    reg.register("toy", object())
    with pytest.raises(RegistryError, match="registered in this process and by the entry point 'toy_reg_mod:Toy'"):
        reg.names()


def test_register_refuses_builtin_and_plugin_names(site):
    _install(site, "plug", {"toy": "toy_x:Toy"})
    reg = Registry("runner", GROUP, builtins={"json": "json:JSONDecoder"})
    with pytest.raises(RegistryError, match="'json' is already registered"):
        reg.register("json", object())
    reg.names()
    with pytest.raises(RegistryError, match="'toy' is already registered"):
        reg.register("toy", object())
    obj = object()
    assert reg.register("mine", obj) is obj and reg.get("mine") is obj


def test_unknown_name_lists_every_known_name(site):
    _install(site, "plug", {"toy": "toy_y:Toy"})
    reg = Registry("runner", GROUP, builtins={"json": "json:JSONDecoder"})
    with pytest.raises(RegistryError, match=r"unknown runner 'tyo'; known runners: json, toy"):
        reg.get("tyo")


def test_loading_a_package_reads_no_entry_points():
    """A built-in runner is found without importlib.metadata (50-120 ms of a device's cold start)."""
    code = ("import sys; from edgekit.runners import RUNNERS; cls = RUNNERS.get('onnxruntime'); "
            "print(cls.__name__, 'importlib.metadata' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["OnnxRuntimeRunner", "False"]

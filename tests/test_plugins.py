"""Every registered plug-in (target, runner) imports and declares what its contract needs;
a new target is one module plus one registration.
"""
from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import edgekit  # noqa: E402
from edgekit.errors import UnsupportedModelError  # noqa: E402
from edgekit.options import OptionSchema  # noqa: E402
from edgekit.quantize.recipe import Recipe  # noqa: E402
from edgekit.runners import RUNNERS, Runner  # noqa: E402
from edgekit.targets import TARGETS, BuildSpec, Precision, SupportReport, Target  # noqa: E402
from edgekit.targets.optable import OpTable  # noqa: E402
from models.meta import by_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_entry_points(group: str) -> dict:
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return dict(data["project"]["entry-points"][group])


@pytest.mark.parametrize("name", TARGETS.names())
def test_every_target_declares_its_contract(name):
    cls = TARGETS.get(name)
    assert isinstance(cls, type) and issubclass(cls, Target)
    assert cls.name == name and cls.description
    assert cls.precisions and all(isinstance(p, Precision) for p in cls.precisions)
    assert cls.runtime in RUNNERS.names(), f"{name}: its device runtime {cls.runtime!r} is not a registered runner"
    assert cls.verify_runtime is None or cls.verify_runtime in RUNNERS.names()
    assert isinstance(cls.op_table, OpTable) and cls.op_table.target == name
    assert isinstance(cls.build_options, OptionSchema)
    assert cls._build is not Target._build or cls.build is not Target.build, f"{name} builds nothing"
    # check() is cheap and needs no vendor SDK: it answers for any golden model
    model = onnx.load(str(by_name("conv_bn_relu").path))
    precision = sorted(cls.precisions, key=lambda p: p.value)[0]
    report = cls().check(model, BuildSpec(precision=precision, recipe=Recipe()))
    assert isinstance(report, SupportReport) and report.target == name


@pytest.mark.parametrize("name", RUNNERS.names())
def test_every_runner_declares_its_contract(name):
    cls = RUNNERS.get(name)  # runner modules import their runtime only when a runner is created
    assert isinstance(cls, type) and issubclass(cls, Runner)
    assert cls.name == name and isinstance(cls.extra, str) and cls.extra
    assert isinstance(cls.options, OptionSchema)
    assert not getattr(cls, "__abstractmethods__", None), f"{name} leaves {set(cls.__abstractmethods__)} abstract"


@pytest.mark.parametrize("group, registry", [("edgekit.targets", TARGETS), ("edgekit.runners", RUNNERS)])
def test_entry_points_and_registry_agree(group, registry):
    """One registration per plug-in: the pyproject entry point names the class the registry serves."""
    declared = _pyproject_entry_points(group)
    assert set(declared) == set(registry.names())
    for name, value in declared.items():
        module, _, attr = value.partition(":")
        assert getattr(importlib.import_module(module), attr) is registry.get(name)


TOY_TARGET = '''
"""A toy target: the canonical graph, unchanged, run by onnxruntime (all a new target needs)."""
from edgekit.targets.base import Artifact, Precision, Target
from edgekit.targets.canonicalize import save_onnx
from edgekit.targets.optable import OpTable


class ToyTarget(Target):
    name = "toy"
    runtime = "onnxruntime"
    verify_runtime = "onnxruntime"
    precisions = frozenset({Precision.FP32})
    description = "a toy: the canonical fp32 graph, run by onnxruntime"
    requires = {"onnxruntime": "onnxruntime"}
    op_table = OpTable.build("toy", "the toy table", supported_ops={"": {
        "Conv", "Relu", "GlobalAveragePool", "Flatten", "Gemm", "Add", "Mul"}})

    def _build(self, job):
        save_onnx(job.model, job.workdir / "model.onnx")
        return Artifact(files=["model.onnx"], entry="model.onnx")
'''


def test_a_new_target_is_one_module_and_one_registration(tmp_path, monkeypatch):
    (tmp_path / "toy_target.py").write_text(textwrap.dedent(TOY_TARGET), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(TARGETS, "_loaded", dict(TARGETS._loaded))  # the registration ends with the test
    toy = importlib.import_module("toy_target")
    TARGETS.register("toy", toy.ToyTarget)  # the one registration
    try:
        gm = by_name("conv_bn_relu")
        out = edgekit.build(gm.path, target="toy", precision="fp32", output=tmp_path / "toy.edgepkg")
        feed = {"input": np.random.default_rng(0).standard_normal(gm.inputs[0].shape).astype(np.float32)}
        want = ort.InferenceSession(str(gm.path), providers=["CPUExecutionProvider"]).run(None, feed)[0]
        with edgekit.load(out) as m:
            assert m.manifest.target == "toy" and m.manifest.verification["samples"] > 0
            np.testing.assert_allclose(m.infer(feed)["logits"], want, rtol=1e-5, atol=1e-5)
        # the one check: an op outside the toy's table is named, with what the toy has
        with pytest.raises(UnsupportedModelError, match=r"\(Sigmoid\).*builds these op types.*Conv, Flatten, Gemm"):
            edgekit.build(by_name("yolo_head").path, target="toy", precision="fp32", output=tmp_path / "y.edgepkg")
        with pytest.raises(Exception, match="already registered"):
            TARGETS.register("toy", toy.ToyTarget)
    finally:
        sys.modules.pop("toy_target", None)


def test_every_device_profile_names_a_target_and_valid_build_options():
    """devices.toml's target_options are build options: a typo there fails here, not on a user's build."""
    from edgekit.targets.devices import load_profiles

    for name, profile in load_profiles().items():
        assert profile.target in TARGETS.names(), f"{name}: unknown target {profile.target!r}"
        target = TARGETS.get(profile.target)()
        spec = BuildSpec(precision=Precision.parse(profile.precision), recipe=Recipe(), device=profile)
        target.build_option_values(spec)  # raises a ConfigError naming the option and the profile

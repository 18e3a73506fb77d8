"""The golden models in tests/models are exactly what make_models.py builds, and they run."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

MODELS_DIR = Path(__file__).resolve().parent / "models"


def _load(name: str) -> ModuleType:
    # Loaded by path so this works whether or not tests/ is a package.
    mod_name = f"_edgekit_golden_{name}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, MODELS_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


meta = _load("meta")
make_models = _load("make_models")

NAMES = [m.name for m in meta.GOLDEN_MODELS]
SIZE_LIMITS = {"mobilenet_v2_class": 3_500_000}  # bytes; every other model stays under 1 MB


def test_registry_builders_and_files_agree() -> None:
    assert NAMES == list(make_models.BUILDERS), "meta.GOLDEN_MODELS and make_models.BUILDERS differ"
    on_disk = sorted(p.name for p in MODELS_DIR.glob("*.onnx"))
    assert on_disk == sorted(m.file for m in meta.GOLDEN_MODELS)
    for m in meta.GOLDEN_MODELS:
        assert m.file == f"{m.name}.onnx"
        assert (m.image_size is not None) == m.is_image
        assert m.path.is_file()
    with pytest.raises(KeyError, match="known: conv_bn_relu"):
        meta.by_name("nope")


@pytest.mark.parametrize("name", NAMES)
def test_committed_file_is_what_the_script_builds(name: str, tmp_path: Path) -> None:
    regenerated = tmp_path / f"{name}.onnx"
    regenerated.write_bytes(make_models.build(name).SerializeToString())
    committed = meta.by_name(name).path
    assert committed.read_bytes() == regenerated.read_bytes(), (
        f"{committed} is stale; regenerate with: python tests/models/make_models.py"
    )


@pytest.mark.parametrize("name", NAMES)
def test_model_matches_registry_and_runs(name: str) -> None:
    entry = meta.by_name(name)
    model = onnx.load(str(entry.path))
    assert model.ir_version == make_models.IR_VERSION
    assert [(o.domain, o.version) for o in model.opset_import] == [("", make_models.OPSET)]
    assert entry.path.stat().st_size < SIZE_LIMITS.get(name, 1_000_000)

    def specs(values) -> list:
        return [(v.name, tuple(d.dim_value for d in v.type.tensor_type.shape.dim)) for v in values]

    assert specs(model.graph.input) == [(t.name, t.shape) for t in entry.inputs]
    assert specs(model.graph.output) == [(t.name, t.shape) for t in entry.outputs]

    # Every ONNX op named in `exercises` really is in the graph.
    op_types = {n.op_type for n in model.graph.node}
    named_ops = {e for e in entry.exercises if onnx.defs.has(e)}
    assert named_ops <= op_types, f"{name}: exercises {sorted(named_ops - op_types)} not in the graph"

    # Full checker, onnxruntime run: right shapes, finite, not degenerate.
    make_models.verify(model)

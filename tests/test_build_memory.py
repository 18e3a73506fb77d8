"""What the build does to hold less memory changes no result: a source handed over to canonicalize (owned)
canonicalizes to the same model as a copy of it, and a caller's model is never touched."""
from __future__ import annotations

import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from edgekit.targets import stages  # noqa: E402
from edgekit.targets.canonicalize import canonicalize, load_onnx  # noqa: E402
from models.meta import GOLDEN_MODELS  # noqa: E402

GM = {g.name: g for g in GOLDEN_MODELS}


@pytest.mark.parametrize("name", ["conv_bn_relu", "resize_concat"])
def test_owned_source_canonicalizes_like_a_copy(name: str) -> None:
    gm = GM[name]
    theirs = load_onnx(gm.path)
    before = theirs.SerializeToString()
    copied = canonicalize(theirs)
    assert theirs.SerializeToString() == before  # not owned: the caller's proto is left as it was
    from_path = canonicalize(gm.path)  # read here, so canonicalize's own: no copy needed
    owned = canonicalize(load_onnx(gm.path), owned=True)
    want = copied.model.SerializeToString()
    assert from_path.model.SerializeToString() == want and owned.model.SerializeToString() == want
    assert owned.inputs == copied.inputs and owned.outputs == copied.outputs and owned.notes == copied.notes


def test_build_hands_its_own_source_over_but_copies_a_callers(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    seen = []
    real = stages.canonicalize

    def spy(model, *a, **kw):
        seen.append(kw.get("owned"))
        return real(model, *a, **kw)

    monkeypatch.setattr(stages, "canonicalize", spy)
    gm = GM["conv_bn_relu"]
    req = stages.resolve_request(gm.path, target="onnxruntime", precision="fp32")
    stages.canonicalize_stage(req, stages.load(req))
    theirs = onnx.load(str(gm.path))
    req = stages.resolve_request(theirs, target="onnxruntime", precision="fp32")
    stages.canonicalize_stage(req, stages.load(req))
    assert seen == [True, False]


def test_map_large_allocations_is_harmless_to_repeat() -> None:
    stages.map_large_allocations()
    stages.map_large_allocations()  # set once per process; a no-op where malloc is not glibc's
    assert stages.MMAP_THRESHOLD == 1 << 20

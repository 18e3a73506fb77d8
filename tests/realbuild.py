"""One model of the real-model suite, built in a slow test as the suite builds it.

The model comes from its pinned wheel (``samples/real_models/fetch.py``; the
test skips when the cache and the registry are out of reach), with the
suite's own calibration and held-out data and build settings
(``suite.build_kwargs``), so a slow test checks the package a user of the
suite gets.
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any, Tuple

import pytest

REAL = Path(__file__).resolve().parent.parent / "samples" / "real_models"


def real_modules() -> Tuple[ModuleType, ModuleType, ModuleType]:
    """The suite's ``fetch``, ``registry`` and ``suite`` modules (its folder put on ``sys.path`` once)."""
    if str(REAL) not in sys.path:
        sys.path.insert(0, str(REAL))
    import fetch  # noqa: PLC0415
    import registry  # noqa: PLC0415
    import suite  # noqa: PLC0415

    return fetch, registry, suite


def build_real(name: str, target: str, tmp_path: Path, precision: str = "int8", **overrides: Any) -> Any:
    """Build the suite's model ``name`` for ``target`` (warnings silenced); ``overrides`` replace build kwargs."""
    from edgekit.targets.pipeline import build_package

    fetch, registry, suite = real_modules()
    try:
        path = fetch.fetch_one(name)
    except fetch.FetchError as exc:
        pytest.skip(f"real models not reachable: {exc}")
    model = registry.get(name)
    calib = suite.CalibrationCache(tmp_path / "calibration").get(model.calibration)
    kwargs = {**suite.build_kwargs(model, calib), **overrides}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_package(path, target=target, precision=precision, output=tmp_path / f"{name}-{target}.edgepkg",
                             name=model.name, **kwargs)

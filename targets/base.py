"""The Target interface: what a compiler for one device family provides.

The pipeline (:mod:`edgekit.targets.pipeline`) owns everything that is the
same for every target — canonicalize, calibrate, verify, package — so a
target is small: ``check`` (cheap, no vendor SDK) and ``build``.
"""
from __future__ import annotations

from abc import ABC
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple

from edgekit.errors import UnsupportedModelError
from edgekit.manifest import TensorSpec
from edgekit.options import OptionSchema

from .spec import BuildSpec, Precision  # noqa: F401 - re-exported: targets import them from here

if TYPE_CHECKING:  # pragma: no cover
    import onnx

    from edgekit.quantize.calibration import CalibrationSet

    from .graph import GraphInfo
    from .optable import OpTable


@dataclass(frozen=True)
class UnsupportedNode:
    """One node a target cannot build: its name, op type, the attributes that matter, and why."""

    node: str
    op_type: str
    reason: str
    attributes: Mapping[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        attrs = ", ".join(f"{k}={v!r}" for k, v in self.attributes.items())
        return f"{self.node} ({self.op_type}{' ' + attrs if attrs else ''}): {self.reason}"

    def to_json(self) -> Dict[str, Any]:
        return {"node": self.node, "op_type": self.op_type, "reason": self.reason,
                "attributes": {k: _jsonable(v) for k, v in self.attributes.items()}}


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


@dataclass(frozen=True)
class SupportReport:
    """Result of :meth:`Target.check`: every problem, found before any long step.

    ``fallback`` holds nodes the target cannot run on its accelerator but
    that will run elsewhere (the QNN target's CPU fallback): not errors,
    but listed.  ``available`` says, for the domains of the unsupported
    nodes, which op types the target has.
    """

    target: str
    unsupported: Tuple[UnsupportedNode, ...] = ()
    dynamic_dims: Tuple[str, ...] = ()
    notes: Tuple[str, ...] = ()
    fallback: Tuple[UnsupportedNode, ...] = ()
    available: Tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.unsupported and not self.dynamic_dims

    def raise_if_unsupported(self) -> None:
        """One error listing every problem: the CLI prints it as one line."""
        if self.ok:
            return
        parts = []
        if self.unsupported:
            listed = "; ".join(str(n) for n in self.unsupported)
            parts.append(
                f"{len(self.unsupported)} node(s) the {self.target} target cannot build: {listed} "
                "(fix: replace these ops in the model, or pick another target from `edgekit targets`)"
            )
            parts.extend(self.available)
        if self.dynamic_dims:
            parts.append(
                "dynamic dimensions left unfixed: " + ", ".join(self.dynamic_dims)
                + " (fix: --size HxW, or input_shapes={...} in edgekit.build)"
            )
        raise UnsupportedModelError("; ".join(parts))

    def to_json(self) -> Dict[str, Any]:
        return {
            "target": self.target,
            "ok": self.ok,
            "unsupported": [n.to_json() for n in self.unsupported],
            "fallback": [n.to_json() for n in self.fallback],
            "dynamic_dims": list(self.dynamic_dims),
            "notes": list(self.notes),
        }


@dataclass
class Artifact:
    """What :meth:`Target.build` produced inside its workdir.

    ``files`` are paths relative to the workdir; the pipeline copies them under
    ``model/`` in the package.  ``inputs``/``outputs`` default to the source
    model's when None.  ``details`` lands in ``manifest.target.details`` and
    ``quantization`` in ``manifest.quantization``.  ``verify_options`` are
    runner options the pipeline uses only while verifying on the build host
    (with ``verify_note`` saying why), e.g. to emulate a device's exact integer
    arithmetic where the host's kernels differ.
    """

    files: List[str]
    entry: str
    runtime_options: Dict[str, Any] = field(default_factory=dict)
    runtime_versions: Dict[str, str] = field(default_factory=dict)
    inputs: Optional[Sequence[TensorSpec]] = None
    outputs: Optional[Sequence[TensorSpec]] = None
    details: Dict[str, Any] = field(default_factory=dict)
    quantization: Optional[Dict[str, Any]] = None
    verify_options: Dict[str, Any] = field(default_factory=dict)
    verify_note: str = ""


_NO_OPTIONS = OptionSchema("target", [])

#: what most targets build: float, half and 8-bit integer artifacts
FLOAT_AND_INT8: FrozenSet[Precision] = frozenset({Precision.FP32, Precision.FP16, Precision.INT8})


class Target(ABC):
    """One compiler per device family.  Subclasses set the class attributes.

    A target declares ``op_table`` (what it builds, as data) and implements
    ``build``; ``check`` is implemented here once, over the op table, with
    :meth:`extra_checks` for what a table cannot say (a whole-model rule).
    """

    name: ClassVar[str]
    runtime: ClassVar[str]  # the runner that runs the artifact on the device
    precisions: ClassVar[FrozenSet[Precision]]
    description: ClassVar[str] = ""
    #: runner used by the pipeline to verify the artifact on the build host
    verify_runtime: ClassVar[Optional[str]] = None
    #: what this target builds (see :mod:`edgekit.targets.optable`)
    op_table: ClassVar["OpTable"]
    #: build-time options (HTP arch, DLA core, NNCF settings …): read from the build spec and the
    #: device profile's ``target_options``, never written into a manifest
    build_options: ClassVar["OptionSchema"] = _NO_OPTIONS

    #: Python module → distribution the build needs (checked by :meth:`toolchain`), and the extra installing them
    requires: ClassVar[Mapping[str, str]] = {}
    extra: ClassVar[str] = "build"
    #: fp32-exact graph rewrites (targets/rewrites.py) an int8 build runs beside the default ones, where this
    #: target's runtime measured them faster
    int8_rewrites: ClassVar[Tuple[str, ...]] = ()

    def toolchain(self) -> Tuple[bool, str]:
        """(installed here?, versions or the pip command that installs it)."""
        import importlib.util
        from importlib.metadata import version

        if any(importlib.util.find_spec(module) is None for module in self.requires):
            return False, f"pip install 'edgekit[{self.extra}]'"
        return True, ", ".join(f"{dist} {version(dist)}" for dist in self.requires.values())

    def build_option_values(self, spec: BuildSpec) -> Dict[str, Any]:
        """This build's options, checked against :attr:`build_options` (defaults filled in).

        Sources, later wins: the device profile's ``target_options``, the
        spec's ``build_options``, and — for callers that still pass them
        mixed in — the spec's runtime options that name a build option.
        """
        values: Dict[str, Any] = {}
        sources = []
        if spec.device is not None and getattr(spec.device, "target_options", None):
            values.update(spec.device.target_options)
            sources.append(f"device profile {getattr(spec.device, 'name', '?')!r} target_options")
        given = dict(getattr(spec, "build_options", None) or {})
        given.update({k: v for k, v in (spec.runtime_options or {}).items() if k in self.build_options})
        if given:
            values.update(given)
            sources.append("the build options")
        return self.build_options.validate(values, source=" and ".join(sources) or "defaults")

    def runtime_option_values(self, spec: BuildSpec) -> Dict[str, Any]:
        """The runtime options given for this build, without the build options among them."""
        return {k: v for k, v in (spec.runtime_options or {}).items() if k not in self.build_options}

    # -- check (one implementation; cheap, no vendor SDK) ---------------------
    def op_table_for(self, spec: BuildSpec) -> "OpTable":
        """The table for this build (a target whose support depends on a build option overrides it)."""
        return self.op_table

    def extra_checks(self, model: "onnx.ModelProto", spec: BuildSpec, graph: "GraphInfo") -> "CheckFindings":
        """Problems an op table cannot express (whole-model rules, settings); none by default."""
        return CheckFindings()

    def int8_rounds_activations(self, spec: BuildSpec) -> bool:
        """Whether this build's int8 rounds activations as well as weights (False: weights only).

        The mixed-precision twin models only what the target rounds: a weights-only scheme judged on a
        twin that also rounds every activation looks far worse than it is, and the search then keeps
        layers in float that the target never needed to.
        """
        return True

    def falls_back_to(self, spec: BuildSpec) -> Optional[str]:
        """Where nodes the table refuses still run (e.g. "the CPU"), or None when they stop the build."""
        return None

    def check(self, model: "onnx.ModelProto", spec: BuildSpec) -> SupportReport:
        """Every node and dim this target cannot handle, found before any long step."""
        from .graph import GraphInfo, domain_of, dynamic_dims, iter_nodes, qualified_op
        from .optable import NodeView

        table = self.op_table_for(spec)
        graph = GraphInfo(model)
        found: List[UnsupportedNode] = []
        seen = set()
        missing_domains: List[str] = []
        for name, node in iter_nodes(model.graph):
            reason = table.why_not(NodeView(name, node, graph.opset_for(node), graph))
            if reason is None or name in seen:
                continue
            seen.add(name)
            attrs = {a: graph.attr(node, a) for a in table.rule_attributes(domain_of(node), node.op_type)}
            found.append(UnsupportedNode(node=name, op_type=qualified_op(node), reason=reason,
                                         attributes={k: v for k, v in attrs.items() if v is not None}))
            if domain_of(node) not in missing_domains:
                missing_domains.append(domain_of(node))
        extra = self.extra_checks(model, spec, graph)
        found.extend(extra.unsupported)
        notes = list(extra.notes)
        fallback: Tuple[UnsupportedNode, ...] = ()
        where = self.falls_back_to(spec)
        if where is not None and found:
            fallback, found = tuple(found), []
            notes.append(f"{len(fallback)} node(s) will run on {where}: " + "; ".join(str(u) for u in fallback))
        return SupportReport(
            target=self.name,
            unsupported=tuple(found),
            dynamic_dims=tuple(dynamic_dims(model)),
            notes=tuple(notes),
            fallback=fallback,
            available=tuple(table.available(d) for d in missing_domains) if found else (),
        )

    # -- build (template: the base prepares and validates, the target writes :meth:`_build`) ----------
    def build(
        self,
        model: "onnx.ModelProto",
        spec: BuildSpec,
        calibration: Optional["CalibrationSet"],
        workdir: Path,
    ) -> Artifact:
        """Compile the canonical fp32 model into files under ``workdir``."""
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        return self._build(BuildJob(model=model, spec=spec, calibration=calibration, workdir=workdir,
                                    precision=Precision.parse(spec.precision),
                                    options=self.build_option_values(spec)))

    def _build(self, job: "BuildJob") -> Artifact:
        raise NotImplementedError(f"{type(self).__name__} implements neither _build nor build")


@dataclass(frozen=True)
class BuildJob:
    """What :meth:`Target._build` works on: the model, the spec, and what the base derived from them."""

    model: Any
    spec: BuildSpec
    calibration: Optional["CalibrationSet"]
    workdir: Path  # exists
    precision: Precision
    options: Mapping[str, Any]  # the build options, checked, defaults filled in


@dataclass(frozen=True)
class CheckFindings:
    """What :meth:`Target.extra_checks` adds to the op-table walk."""

    unsupported: Tuple[UnsupportedNode, ...] = ()
    notes: Tuple[str, ...] = ()

"""QNN runner: onnxruntime with the QNN execution provider on the Hexagon HTP.

The package's entry is an EPContext model whose single node points at a QNN
context binary (``*_qnn.bin``) compiled ahead of time for one HTP
architecture.  This runner loads it through onnxruntime-qnn: the plug-in
execution provider (onnxruntime-qnn 2.x, registered with
``onnxruntime.register_execution_provider_library``) or, on older installs
where onnxruntime itself was built with QNN (e.g. ``onnxruntime-qnn`` 1.x on
Windows on Snapdragon), the built-in provider.  On Linux x86_64 the HTP
backend simulates the NPU.

CPU fallback is disabled (``session.disable_cpu_ep_fallback``) unless the
package's placement report lists nodes that were built to run on the CPU, so
a node silently leaving the NPU fails the load instead of running slowly.

Options (``QnnRunner.options``): ``htp_performance_mode`` (one of
:data:`PERFORMANCE_MODES`), ``htp_arch`` (the device's HTP architecture,
default the package's; a context binary built for another architecture is
refused), ``soc_model``, ``require_npu`` (refuse packages with CPU-placed
nodes), ``threads`` (for CPU-placed nodes; ``intra_op_num_threads`` is its
older name).
"""
from __future__ import annotations

import contextlib
import os
import platform
import re
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple


from .._validate import first_line
from ..errors import ConfigError, ModelError, PackageError
from ..manifest import Manifest
from ..options import Option, OptionSchema
from .base import missing_runtime
from .ort_session import THREADS, OrtSessionRunner, session_options

EP_NAME = "QNNExecutionProvider"

PERFORMANCE_MODES = (
    "default", "burst", "balanced", "high_performance", "high_power_saver", "low_balanced",
    "low_power_saver", "power_saver", "extreme_power_saver", "sustained_high_performance",
)

_ARCH_RE = re.compile(rb";arch=(\d+);")
_SOC_RE = re.compile(rb";soc_type=([A-Za-z0-9_]+);")

_registered: Dict[str, bool] = {}


def _arch_number(value: Any, what: str) -> int:
    text = str(value).strip().lower().lstrip("v")
    if not text.isdigit():
        raise ConfigError(f'"{what}" must be an HTP architecture like 73 or "v75", but got {value!r}')
    return int(text)


def context_binary_info(path: Path) -> Tuple[Optional[int], Optional[str]]:
    """(HTP architecture, SoC name) recorded inside a QNN HTP context binary, when present.

    The HTP backend stores its graph-preparation settings as text in the
    binary (``...;soc_type=SM8650;arch=75;...``); reading them needs no SDK.
    """
    data = Path(path).read_bytes()
    arch = _ARCH_RE.search(data)
    soc = _SOC_RE.search(data)
    return (int(arch.group(1)) if arch else None, soc.group(1).decode() if soc else None)


@contextlib.contextmanager
def native_stdout_to_stderr() -> Iterator[None]:
    """Send what native code prints on file descriptor 1 to stderr for the duration.

    The QNN HTP backend prints a banner on stdout from C++ when a session is
    created; `edgekit ... --json` must print one JSON document and nothing else.
    """
    try:
        out_fd = sys.stdout.fileno()
        sys.stderr.fileno()
        # fd 2 itself, not sys.stderr's descriptor: the CLI points fd 2 at its chatter capture
        # (shown with --debug) while sys.stderr keeps writing to the terminal
        err_fd = 2
    except (AttributeError, OSError, ValueError):  # captured streams without descriptors
        yield
        return
    sys.stdout.flush()
    saved = os.dup(out_fd)
    try:
        os.dup2(err_fd, out_fd)
        yield
    finally:
        try:
            sys.stdout.flush()
        except (OSError, ValueError):
            pass
        os.dup2(saved, out_fd)
        os.close(saved)


def _load_ort(extra: str) -> Tuple[Any, Any]:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise missing_runtime("onnxruntime", extra, exc) from None
    qnn = None
    try:
        import onnxruntime_qnn as qnn  # the plug-in EP (onnxruntime-qnn 2.x)
    except ImportError:
        if EP_NAME not in ort.get_available_providers():
            raise missing_runtime("onnxruntime-qnn", extra) from None
    return ort, qnn


def qnn_devices(ort: Any, qnn: Any) -> List[Any]:
    """Register the plug-in once per process and return its devices."""
    get_devices = getattr(ort, "get_ep_devices", None)
    if qnn is None or get_devices is None:
        return []
    devices = [d for d in get_devices() if d.ep_name == EP_NAME]
    if not devices and not _registered.get(EP_NAME):
        ort.register_execution_provider_library(EP_NAME, qnn.get_library_path())
        _registered[EP_NAME] = True
        devices = [d for d in get_devices() if d.ep_name == EP_NAME]
    return devices


class QnnRunner(OrtSessionRunner):
    """Runs a QNN EPContext package on the Hexagon HTP (simulated on Linux x86_64)."""

    name = "qnn"
    extra = "qnn"
    options = OptionSchema("qnn runner", [
        Option("htp_performance_mode", str, "burst", "HTP power/performance mode", choices=PERFORMANCE_MODES),
        Option("htp_arch", (int, str), None, 'the device\'s HTP architecture (73 or "v73"); null = the package\'s'),
        Option("soc_model", int, None, "QNN SoC model id of the device", min=0),
        Option("require_npu", bool, False, "refuse packages that place nodes on the CPU"),
        THREADS,
    ])

    def __init__(self, root: Path, manifest: Manifest, **options: Any) -> None:
        super().__init__(root, manifest, **options)
        opts = self.options
        details: Mapping[str, Any] = manifest.details  # edgekit.manifest.QnnDetails, typed at load
        self._details = details
        self.placement: Mapping[str, Any] = details.get("placement") or {}

        # 1. the context binary: present, and built for this device's HTP
        rel = details.get("context_binary")
        if not rel:
            raise PackageError(
                "manifest.target.details.context_binary: missing; this is not a qnn package built by edgekit "
                "(rebuild it with `edgekit build --target qnn`)"
            )
        self.context_binary = self.root / rel
        if not self.context_binary.is_file():
            raise PackageError(
                f"the package is missing its QNN context binary {rel!r} (the EPContext model "
                f"{manifest.entry!r} points at it); re-copy the whole package or rebuild it"
            )
        bin_arch, bin_soc = context_binary_info(self.context_binary)
        built_arch = details.get("htp_arch")
        self.binary_arch = bin_arch if bin_arch is not None else (
            _arch_number(built_arch, "htp_arch") if built_arch is not None else None)
        self.binary_soc = bin_soc or details.get("soc")
        device_arch = opts["htp_arch"]
        self.device_arch = _arch_number(device_arch, "htp_arch") if device_arch is not None else self.binary_arch
        if self.binary_arch is not None and self.device_arch != self.binary_arch:
            raise ConfigError(
                f"{rel} is a QNN context binary compiled for HTP v{self.binary_arch}"
                f"{f' ({self.binary_soc})' if self.binary_soc else ''}, but this device is HTP v{self.device_arch} "
                f"(htp_arch={device_arch!r}); a context binary runs only on the HTP architecture it was built "
                f"for: rebuild with the device's profile (`edgekit build --device ...`, see `edgekit targets`)"
            )

        mode = opts["htp_performance_mode"]
        self.performance_mode = mode
        fallback_nodes = list(self.placement.get("cpu_nodes") or [])
        require_npu = opts["require_npu"]
        if require_npu and fallback_nodes:
            listed = ", ".join(f"{n['node']} ({n['op_type']})" for n in fallback_nodes)
            raise ConfigError(
                f"require_npu: this package runs {len(fallback_nodes)} node(s) on the CPU: {listed}; "
                "rebuild with `edgekit build --require-npu` after replacing those ops"
            )
        self.cpu_fallback = bool(fallback_nodes)

        # 2. the session: QNN EP, HTP backend, CPU fallback only where the build placed nodes there
        ort, qnn = _load_ort(self.extra)
        self._ort, self._qnn = ort, qnn
        so = session_options(ort, opts)
        so.log_severity_level = 3
        so.add_session_config_entry("session.disable_cpu_ep_fallback", "0" if self.cpu_fallback else "1")
        provider_options = {"backend_type": "htp", "htp_performance_mode": mode}
        if self.device_arch is not None:
            provider_options["htp_arch"] = str(self.device_arch)
        if opts["soc_model"] is not None:
            provider_options["soc_model"] = str(opts["soc_model"])
        entry = self.root / manifest.entry
        try:
            with native_stdout_to_stderr():
                session = self._session(ort, qnn, entry, so, provider_options)
        except Exception as err:  # ORT raises its own Fail/RuntimeException types
            first = first_line(err)
            raise ModelError(
                f"the QNN HTP backend could not load {manifest.entry}: {first}; check that onnxruntime-qnn "
                "matches the version the package was built with (`edgekit inspect`), or rebuild"
            ) from None
        providers = session.get_providers()
        if EP_NAME not in providers:
            raise ModelError(f"onnxruntime did not use the QNN execution provider (got {providers}); "
                             "install onnxruntime-qnn: pip install 'edgekit[qnn]'")
        self._start(session)

    @staticmethod
    def _session(ort: Any, qnn: Any, entry: Path, so: Any, provider_options: Mapping[str, str]) -> Any:
        devices = qnn_devices(ort, qnn)
        if devices:
            so.add_provider_for_devices(devices, dict(provider_options))
            return ort.InferenceSession(str(entry), sess_options=so)
        # onnxruntime built with QNN in-tree
        return ort.InferenceSession(
            str(entry), sess_options=so, providers=[(EP_NAME, dict(provider_options)), "CPUExecutionProvider"]
        )

    def describe(self) -> Dict[str, Any]:
        versions = {"onnxruntime": self._ort.__version__}
        if self._qnn is not None:
            versions["onnxruntime-qnn"] = getattr(self._qnn, "__version__", "?")
        machine = platform.machine().lower()
        simulated = " (simulated on x86_64)" if machine in ("x86_64", "amd64") else ""
        soc = f" {self.binary_soc}" if self.binary_soc else ""
        on_htp, total = self.placement.get("htp_nodes"), self.placement.get("total_nodes")
        return {
            "runner": self.name,
            **versions,
            "providers": self.session.get_providers(),
            "qnn_backend": f"HTP v{self.binary_arch}{soc}{simulated}",
            "htp_performance_mode": self.performance_mode,
            "placement": f"{on_htp}/{total} nodes on HTP" if total is not None else "unknown",
            "cpu_fallback": "allowed (package places nodes on the CPU)" if self.cpu_fallback else "disabled",
        }

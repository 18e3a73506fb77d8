"""CPU features of this machine, detected (never inferred from the architecture name).

Two machines that both say "x86_64" differ in what matters here: one has
AVX2 only, another AVX512-VNNI, AVX512-BF16 and AMX.  That decides whether
onnxruntime's u8s8 int8 kernels saturate (``reduce_range`` is needed only
without VNNI) and whether OpenVINO can run ``bf16`` (and runs an f32 model
in bf16 unless told otherwise).

What matters is what the CPU running *this process* executes, which is not
always what the kernel lists: under user-mode emulation (``qemu-x86_64 -cpu
Haswell``) ``/proc/cpuinfo`` is the host's file, AMX and all, while the
process gets Haswell.  So on x86-64 the CPUID instruction, run by this
process (with XGETBV for the register state the OS enabled,
:mod:`edgekit.cpuid`), wins: it is the CPU and OS the code actually runs on.
Where it cannot be run, ``/proc/cpuinfo`` counts only for the features that
numpy's own runtime dispatch table (which also ran CPUID) confirms; a
feature neither can confirm is not claimed.  Other sources: ``/proc/cpuinfo``
``Features`` on Arm Linux, ``sysctl`` ``hw.optional.*`` on macOS, numpy's
table anywhere else.  Never claim a feature the CPU lacks: a missed one costs
a little speed or accuracy (``reduce_range``), a wrong one crashes or
saturates.  The answer is cached for the process; tests replace
:func:`cpu_features` to play another CPU.
"""
from __future__ import annotations

import functools
import platform
import subprocess
import sys
from dataclasses import dataclass
from typing import Dict, FrozenSet, Iterable, Optional

#: feature names used here → the Linux /proc/cpuinfo flag(s) that show them (any one suffices)
_X86 = {
    "avx2": ("avx2",),
    "avx512f": ("avx512f",),
    "avx512_vnni": ("avx512_vnni",),
    "avx_vnni": ("avx_vnni",),
    "avx512_bf16": ("avx512_bf16",),
    "amx_bf16": ("amx_bf16",),
    "amx_int8": ("amx_int8",),
    "amx_tile": ("amx_tile",),
}
_ARM = {
    "neon": ("asimd", "neon"),
    "dotprod": ("asimddp",),
    "i8mm": ("i8mm",),
    "bf16": ("bf16",),
    "sve": ("sve",),
    "fp16": ("asimdhp", "fphp"),
}
#: numpy's dispatch names (numpy._core._multiarray_umath.__cpu_features__) for the same features
_NUMPY = {
    "avx2": "AVX2", "avx512f": "AVX512F", "avx512_vnni": "AVX512VNNI", "avx_vnni": "AVX_VNNI",
    "avx512_bf16": "AVX512BF16", "neon": "ASIMD", "dotprod": "ASIMDDP", "fp16": "ASIMDHP",
    "i8mm": "I8MM", "bf16": "BF16", "sve": "SVE",
}
#: macOS sysctl keys (Apple silicon); every Apple silicon core has NEON
_SYSCTL = {"dotprod": "hw.optional.arm.FEAT_DotProd", "i8mm": "hw.optional.arm.FEAT_I8MM",
           "bf16": "hw.optional.arm.FEAT_BF16", "fp16": "hw.optional.arm.FEAT_FP16",
           "avx2": "hw.optional.avx2_0", "avx512f": "hw.optional.avx512f"}


def _any_of(*names: str, doc: str = "") -> property:
    """A read-only ``CpuFeatures`` property: True when the CPU has any of ``names``."""
    wanted = frozenset(names)

    def has(self: "CpuFeatures") -> bool:
        return bool(wanted & self.features)

    has.__doc__ = doc or f"{' or '.join(names)}."
    return property(has)


@dataclass(frozen=True)
class CpuFeatures:
    """What this CPU can do, as far as edgekit's runtimes care.  ``source`` says how it was found."""

    machine: str
    features: FrozenSet[str]
    source: str

    def __contains__(self, name: object) -> bool:
        return name in self.features

    @property
    def is_x86(self) -> bool:
        return self.machine in ("x86_64", "amd64", "i386", "i686", "x86")

    @property
    def is_arm(self) -> bool:
        return self.machine.startswith(("arm", "aarch64"))

    # each is "any of these features": one rule, so a table of names, not a property body per feature
    vnni = _any_of("avx512_vnni", "avx_vnni", "amx_int8",
                   doc="x86 int8 dot-product instructions (AVX512-VNNI or AVX-VNNI): u8s8 kernels do not saturate.")
    amx = _any_of("amx_bf16", "amx_int8", "amx_tile", doc="Intel AMX tiles (bf16 or int8).")
    avx512_bf16 = _any_of("avx512_bf16")
    bf16 = _any_of("avx512_bf16", "amx_bf16", "bf16",
                   doc="Native bf16 compute: AVX512-BF16 or AMX-BF16 on x86, the BF16 extension on Arm.")
    avx2 = _any_of("avx2")
    neon = _any_of("neon")
    dotprod = _any_of("dotprod", doc="Arm int8 dot product (SDOT/UDOT), the Arm counterpart of VNNI.")

    def to_json(self) -> Dict[str, object]:
        return {"machine": self.machine, "features": sorted(self.features), "source": self.source}


def _normalize_machine(machine: str) -> str:
    m = machine.lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m)


def parse_cpuinfo(text: str, machine: str) -> CpuFeatures:
    """Features from the text of ``/proc/cpuinfo`` (the first processor's flags / Features line)."""
    flags: set = set()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
            break
    machine = _normalize_machine(machine)
    return CpuFeatures(machine, frozenset(_map_flags(flags, machine)), "/proc/cpuinfo")


def _map_flags(flags: Iterable[str], machine: str) -> Iterable[str]:
    have = set(flags)
    # only this architecture's names: an emulated aarch64 process reading an x86 host's file gets nothing
    table = _ARM if machine.startswith(("arm", "aarch64")) else _X86
    for name, aliases in table.items():
        if have.intersection(aliases):
            yield name


def _numpy_table() -> Optional[Dict[str, bool]]:
    """numpy's runtime dispatch table (it ran CPUID in this process), or None."""
    for mod in ("numpy._core._multiarray_umath", "numpy.core._multiarray_umath"):
        try:
            table = getattr(__import__(mod, fromlist=["__cpu_features__"]), "__cpu_features__")
        except (ImportError, AttributeError):
            continue
        if isinstance(table, dict):
            return table
    return None


def _from_numpy(machine: str) -> Optional[CpuFeatures]:
    table = _numpy_table()
    if table is None:
        return None
    found = {name for name, key in _NUMPY.items() if table.get(key)}
    return CpuFeatures(machine, frozenset(found), "numpy")


def _confirmed_by_numpy(kernel: CpuFeatures) -> CpuFeatures:
    """The kernel's x86 flags that numpy's table also reports; a flag numpy has no name for is dropped."""
    table = _numpy_table()
    if table is None:
        return kernel  # numpy too old to say: the kernel is all there is
    kept = {name for name in kernel.features if _NUMPY.get(name) in table and table[_NUMPY[name]]}
    return CpuFeatures(kernel.machine, frozenset(kept), "/proc/cpuinfo confirmed by numpy")


def _from_sysctl(machine: str) -> Optional[CpuFeatures]:
    found = set()
    try:
        for name, key in _SYSCTL.items():
            out = subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, timeout=5)
            if out.returncode == 0 and out.stdout.strip() == "1":
                found.add(name)
    except (OSError, subprocess.SubprocessError):
        return None
    if machine == "aarch64":
        found.add("neon")
    return CpuFeatures(machine, frozenset(found), "sysctl")


@functools.lru_cache(maxsize=None)
def cpu_features() -> CpuFeatures:
    """This machine's CPU features (cached for the process)."""
    from .cpuid import read_x86_features

    machine = _normalize_machine(platform.machine() or "unknown")
    if machine == "x86_64":
        own = read_x86_features()
        if own is not None:
            return CpuFeatures(machine, own, "cpuid")
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                info = parse_cpuinfo(f.read(), machine)
            if info.features and info.is_x86:
                return _confirmed_by_numpy(info)
            if info.features or machine not in ("x86_64", "aarch64"):
                return info
        except OSError:
            pass
    if sys.platform == "darwin":
        found = _from_sysctl(machine)
        if found is not None:
            return found
    return _from_numpy(machine) or CpuFeatures(machine, frozenset(), "unknown")


def has_vnni() -> bool:
    """True when this x86 CPU has VNNI (AVX512-VNNI / AVX-VNNI / AMX-INT8): onnxruntime's u8s8 int8
    kernels then do not saturate, so ``reduce_range`` is not needed.  False on non-x86 CPUs."""
    return cpu_features().vnni


def has_bf16() -> bool:
    """True when this CPU computes bf16 natively (AVX512-BF16 / AMX-BF16 on x86, BF16 on Arm)."""
    return cpu_features().bf16


__all__ = ["CpuFeatures", "cpu_features", "has_bf16", "has_vnni", "parse_cpuinfo"]

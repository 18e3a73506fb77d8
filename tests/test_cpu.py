"""CPU feature detection answers for the CPU this process runs on, not the kernel's file.

Under user-mode emulation ``/proc/cpuinfo`` is the host's (AMX, AVX512) while
the process executes, say, Haswell; detection must follow the process.  The
emulated run itself is ``test_emulated_haswell_detects_avx2_only`` (needs
qemu-user) and ``benchmarks/cpu_matrix.sh`` for the CPU-sensitive suite.
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Tuple

import pytest

from edgekit import cpu, cpuid

pytestmark = pytest.mark.cpu_sensitive

IS_X86_64 = platform.machine().lower() in ("x86_64", "amd64")


def _regs(leaves: Dict[Tuple[int, int], Tuple[int, int, int, int]]):
    return lambda leaf, sub: leaves.get((leaf, sub), (0, 0, 0, 0))


def _bits(*ns: int) -> int:
    return sum(1 << n for n in ns)


OSXSAVE_AVX = _bits(27, 28)           # CPUID.1:ECX OSXSAVE + AVX
XCR0_AVX, XCR0_AVX512, XCR0_AMX = 0b111, 0b1110_0111, 0b1110_0111 | _bits(17, 18)
HASWELL = {(0, 0): (0xD, 0, 0, 0), (1, 0): (0, 0, OSXSAVE_AVX, 0), (7, 0): (0, _bits(5), 0, 0)}
SAPPHIRE = {(0, 0): (0x20, 0, 0, 0), (1, 0): (0, 0, OSXSAVE_AVX, 0),
            (7, 0): (1, _bits(5, 16), _bits(11), _bits(22, 24, 25)), (7, 1): (_bits(4, 5), 0, 0, 0)}


def test_register_decoding_haswell_and_sapphire_rapids():
    assert cpuid.features_from_registers(_regs(HASWELL), XCR0_AVX) == {"avx2"}
    f = cpuid.features_from_registers(_regs(SAPPHIRE), XCR0_AMX)
    assert f == {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8"}
    c = cpu.CpuFeatures("x86_64", f, "cpuid")
    assert c.vnni and c.bf16 and c.amx


def test_features_the_os_does_not_enable_are_not_claimed():
    # AVX512 and AMX in CPUID, but the OS saves only SSE/AVX state (old kernel, or a VM hiding it)
    f = cpuid.features_from_registers(_regs(SAPPHIRE), XCR0_AVX)
    assert f == {"avx2", "avx_vnni"}
    # ZMM state on, tile state off: AVX512 yes, AMX no
    f = cpuid.features_from_registers(_regs(SAPPHIRE), XCR0_AVX512)
    assert "avx512_bf16" in f and not f & {"amx_bf16", "amx_tile", "amx_int8"}
    # no OSXSAVE: XGETBV would fault, no AVX state at all
    no_os = {**SAPPHIRE, (1, 0): (0, 0, _bits(28), 0)}
    assert cpuid.features_from_registers(_regs(no_os), None) == frozenset()
    # leaf 7 sub-leaf 1 is read only when leaf 7 says it exists
    no_sub1 = {**SAPPHIRE, (7, 0): (0, _bits(5, 16), _bits(11), 0)}
    assert "avx512_bf16" not in cpuid.features_from_registers(_regs(no_sub1), XCR0_AMX)


def _kernel_flags() -> set:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def _numpy_says() -> Dict[str, bool]:
    table = cpu._numpy_table() or {}
    return {name: bool(table[key]) for name, key in cpu._NUMPY.items() if key in table}


@pytest.mark.skipif(not IS_X86_64, reason="CPUID is an x86-64 instruction")
def test_cpuid_agrees_with_numpys_own_dispatch():
    own = cpuid.read_x86_features()
    if own is None:
        pytest.skip("this OS refuses a writable+executable page; detection falls back to /proc/cpuinfo + numpy")
    for name, has in _numpy_says().items():
        assert (name in own) == has, f"{name}: CPUID says {name in own}, numpy says {has}"


@pytest.mark.skipif(not sys.platform.startswith("linux") or not IS_X86_64, reason="Linux x86-64 /proc/cpuinfo")
def test_detection_never_claims_what_the_kernel_or_the_process_lacks(monkeypatch):
    kernel = cpu.parse_cpuinfo(Path("/proc/cpuinfo").read_text(), "x86_64").features
    numpy_says = _numpy_says()
    f = cpu.cpu_features()
    assert f is cpu.cpu_features()  # cached
    assert cpu.has_vnni() == f.vnni and cpu.has_bf16() == f.bf16
    for name in f.features:
        assert numpy_says.get(name, True), f"{name} claimed but this process's CPU (numpy) lacks it"
    # without CPUID (W^X kernels): only what the kernel lists AND numpy confirms; unconfirmable names dropped
    monkeypatch.setattr(cpuid, "read_x86_features", lambda: None)
    fallback = cpu.cpu_features.__wrapped__()
    assert fallback.source == "/proc/cpuinfo confirmed by numpy"
    assert fallback.features <= kernel
    assert all(numpy_says.get(name) for name in fallback.features)
    assert not fallback.features & {"avx_vnni", "amx_bf16", "amx_int8", "amx_tile"}  # numpy has no name for them


def test_cpuinfo_of_another_architecture_gives_nothing():
    x86 = "processor : 0\nflags : fpu avx2 avx512f avx512_vnni amx_int8\n"
    assert cpu.parse_cpuinfo(x86, "aarch64").features == frozenset()  # qemu-aarch64 on an x86 host
    arm = "processor : 0\nFeatures : fp asimd asimddp i8mm bf16\n"
    a = cpu.parse_cpuinfo(arm, "aarch64")
    assert a.dotprod and a.bf16 and a.neon and not a.vnni
    assert cpu.parse_cpuinfo(arm, "x86_64").features == frozenset()


QEMU = shutil.which("qemu-x86_64")


@pytest.mark.skipif(QEMU is None or not IS_X86_64 or not sys.platform.startswith("linux"),
                    reason="needs qemu-user (apt-get install qemu-user) on Linux x86-64")
def test_emulated_haswell_detects_avx2_only():
    """A real process on an emulated Haswell reads this host's /proc/cpuinfo but must report Haswell's features."""
    code = ("import json; from edgekit import cpu; f = cpu.cpu_features(); "
            "print(json.dumps([sorted(f.features), f.source, cpu.has_vnni(), cpu.has_bf16()]))")
    exe = os.readlink("/proc/self/exe")  # the interpreter's ELF (sys.executable may be a shim script)
    out = subprocess.run([QEMU, "-cpu", "Haswell-noTSX", exe, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    import json

    features, source, vnni, bf16 = json.loads(out.stdout.strip().splitlines()[-1])
    assert features == ["avx2"] and source == "cpuid" and not vnni and not bf16

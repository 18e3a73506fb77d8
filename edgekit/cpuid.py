"""x86-64 CPUID and XGETBV, executed by this process.

``/proc/cpuinfo`` is the kernel's view of the machine; a process can run on
something else: under user-mode emulation (``qemu-x86_64 -cpu Haswell``) the
file is the host's, with AVX512 and AMX, while the instructions the process
can execute are Haswell's.  The CPUID instruction answers for the CPU the
process really runs on, and XGETBV says which register state the OS saves
(AVX512 or AMX state not enabled by the OS means the feature is unusable).

The two instructions are run from a few bytes of machine code in an
executable anonymous mapping called through ctypes.  Where that is not
possible (not x86-64, Windows' other calling convention, a kernel or
sandbox that forbids writable+executable memory) :func:`read_x86_features`
returns None and the caller falls back to other sources.
"""
from __future__ import annotations

import ctypes
import mmap
import platform
import sys
from typing import Callable, FrozenSet, Optional, Tuple

# System V AMD64 calling convention (Linux, macOS): leaf in edi, subleaf in esi, out pointer in rdx.
_CPUID_CODE = bytes([
    0x53,                    # push rbx            (callee-saved; CPUID clobbers it)
    0x89, 0xF8,              # mov eax, edi        leaf
    0x89, 0xF1,              # mov ecx, esi        subleaf
    0x49, 0x89, 0xD0,        # mov r8, rdx         out: uint32[4]
    0x0F, 0xA2,              # cpuid
    0x41, 0x89, 0x00,        # mov [r8], eax
    0x41, 0x89, 0x58, 0x04,  # mov [r8+4], ebx
    0x41, 0x89, 0x48, 0x08,  # mov [r8+8], ecx
    0x41, 0x89, 0x50, 0x0C,  # mov [r8+12], edx
    0x5B,                    # pop rbx
    0xC3,                    # ret
])
_XGETBV_CODE = bytes([
    0x89, 0xF9,              # mov ecx, edi        XCR index
    0x0F, 0x01, 0xD0,        # xgetbv              -> edx:eax
    0x48, 0xC1, 0xE2, 0x20,  # shl rdx, 32
    0x48, 0x09, 0xD0,        # or rax, rdx
    0xC3,                    # ret
])

Regs = Tuple[int, int, int, int]  # eax, ebx, ecx, edx

# XCR0 state components the OS must enable for a feature family to be usable
_XCR0_AVX = 0b110                   # SSE + AVX (YMM upper halves)
_XCR0_AVX512 = 0b1110_0000 | _XCR0_AVX  # opmask, ZMM_Hi256, Hi16_ZMM
_XCR0_AMX = (1 << 17) | (1 << 18)   # XTILECFG, XTILEDATA


def _bit(value: int, n: int) -> bool:
    return bool((value >> n) & 1)


def features_from_registers(cpuid: Callable[[int, int], Regs], xcr0: Optional[int]) -> FrozenSet[str]:
    """edgekit's x86 feature names from CPUID leaves and XCR0 (``None`` when the OS does not expose XGETBV).

    Bit positions: Intel SDM vol. 2A, CPUID leaf 07H sub-leaves 0 and 1; XCR0 components: vol. 1, 13.1.
    """
    max_leaf = cpuid(0, 0)[0]
    _, _, ecx1, _ = cpuid(1, 0)
    osxsave = _bit(ecx1, 27)
    if not osxsave or xcr0 is None or max_leaf < 7:
        return frozenset()  # no OS-managed AVX state: none of the features below is usable
    eax7, ebx7, ecx7, edx7 = cpuid(7, 0)
    eax71 = cpuid(7, 1)[0] if eax7 >= 1 else 0
    avx_os = xcr0 & _XCR0_AVX == _XCR0_AVX
    avx512_os = xcr0 & _XCR0_AVX512 == _XCR0_AVX512
    amx_os = xcr0 & _XCR0_AMX == _XCR0_AMX
    found = set()
    for name, present, os_ok in (
        ("avx2", _bit(ebx7, 5) and _bit(ecx1, 28), avx_os),
        ("avx512f", _bit(ebx7, 16), avx512_os),
        ("avx512_vnni", _bit(ecx7, 11) and _bit(ebx7, 16), avx512_os),
        ("avx_vnni", _bit(eax71, 4), avx_os),
        ("avx512_bf16", _bit(eax71, 5) and _bit(ebx7, 16), avx512_os),
        ("amx_bf16", _bit(edx7, 22), amx_os),
        ("amx_tile", _bit(edx7, 24), amx_os),
        ("amx_int8", _bit(edx7, 25), amx_os),
    ):
        if present and os_ok:
            found.add(name)
    return frozenset(found)


def _can_run_here() -> bool:
    machine = platform.machine().lower()
    return (machine in ("x86_64", "amd64") and sys.platform != "win32"
            and ctypes.sizeof(ctypes.c_void_p) == 8 and hasattr(mmap, "PROT_EXEC"))


def read_x86_features() -> Optional[FrozenSet[str]]:
    """This process's x86 features from CPUID + XGETBV, or None where the instructions cannot be run."""
    if not _can_run_here():
        return None
    try:
        page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except (OSError, ValueError):
        return None  # W^X policy (SELinux execmem, hardened runtimes): fall back
    try:
        page.write(_CPUID_CODE + _XGETBV_CODE)
        base = ctypes.addressof(ctypes.c_char.from_buffer(page))
        cpuid_fn = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32,
                                    ctypes.POINTER(ctypes.c_uint32))(base)
        xgetbv_fn = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_uint32)(base + len(_CPUID_CODE))

        def cpuid(leaf: int, subleaf: int) -> Regs:
            out = (ctypes.c_uint32 * 4)()
            cpuid_fn(leaf, subleaf, out)
            return out[0], out[1], out[2], out[3]

        osxsave = _bit(cpuid(1, 0)[2], 27)
        # XGETBV faults (#UD) unless the OS set CR4.OSXSAVE, which CPUID.1:ECX[27] reports
        xcr0 = int(xgetbv_fn(0)) if osxsave else None
        result = features_from_registers(cpuid, xcr0)
        del cpuid_fn, xgetbv_fn, base  # no pointer into the page may outlive it
        return result
    finally:
        try:
            page.close()
        except BufferError:  # a ctypes view still exported (should not happen): leave it to GC
            pass


__all__ = ["features_from_registers", "read_x86_features"]

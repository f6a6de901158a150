"""The CPU's instruction-set extensions that change numeric results or speed.

ONNX Runtime's CPU kernels (MLAS) pick their code path from the CPU at run time: an optimized model written on
an AVX-512 machine lays out tensors for 16-wide registers, and its int8 matrix kernels differ in *results*,
not only in speed. On x86 without VNNI (AVX2, or AVX-512 without VNNI) the u8 x s8 kernels multiply pairs of
8-bit values and add them into a 16-bit sum that saturates (``vpmaddubsw``); with AVX512-VNNI, AVX-VNNI or AMX
the products are accumulated in 32 bits and nothing saturates. On Arm the int8 dot products (``asimddp``,
``i8mm``) accumulate in 32 bits as well.

So these features go into every row's environment, into the ``ort_cpu`` engine's cache key, and into the
conditions a registry can scope its expectations by (``device = "x86 and not vnni"``).

Where possible the features come from the ``cpuid`` instruction itself (and ``xgetbv``, which says whether the
operating system saves the AVX-512 and AMX registers: what MLAS checks too), so that the answer is the one the
kernels will see, also under a virtual machine or an emulator that reports a different CPU than the host's
``/proc/cpuinfo``. Where ``cpuid`` cannot be executed (not x86-64, no executable memory), the kernel's flags in
``/proc/cpuinfo`` are used.
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import platform
from collections.abc import Iterable

# x86 features reported, in Linux's /proc/cpuinfo spelling
X86_FEATURES = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
                "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16")
# Arm features: int8 dot products, int8 matrix multiply, SVE, fp16 and bf16 arithmetic
ARM_FEATURES = ("asimd", "asimddp", "i8mm", "sve", "sve2", "asimdhp", "bf16")

# (leaf, subleaf, register index eax=0 ebx=1 ecx=2 edx=3, bit) -> name
_CPUID_BITS = {
    "avx": (1, 0, 2, 28), "fma": (1, 0, 2, 12), "f16c": (1, 0, 2, 29),
    "avx2": (7, 0, 1, 5), "avx512f": (7, 0, 1, 16), "avx512bw": (7, 0, 1, 30),
    "avx512_vnni": (7, 0, 2, 11), "avx512_fp16": (7, 0, 3, 23),
    "amx_bf16": (7, 0, 3, 22), "amx_tile": (7, 0, 3, 24), "amx_int8": (7, 0, 3, 25),
    "avx_vnni": (7, 1, 0, 4), "avx512_bf16": (7, 1, 0, 5),
}
# which register state the operating system must save (XCR0 bits) for a feature to be usable
_XCR0_AVX, _XCR0_AVX512, _XCR0_AMX = 0b110, 0b11100110, 0b1100000000000000000
_NEEDS_STATE = {name: (_XCR0_AMX if name.startswith("amx") else _XCR0_AVX512 if name.startswith("avx512")
                       else _XCR0_AVX) for name in _CPUID_BITS}

# x86-64 System V machine code: cpuid(leaf=edi, subleaf=esi, out=rdx) and xgetbv(0) -> rax
_CPUID_CODE = bytes([
    0x53,                          # push rbx (callee-saved; cpuid overwrites it)
    0x89, 0xF8,                    # mov eax, edi
    0x89, 0xF1,                    # mov ecx, esi
    0x49, 0x89, 0xD0,              # mov r8, rdx
    0x0F, 0xA2,                    # cpuid
    0x41, 0x89, 0x00,              # mov [r8], eax
    0x41, 0x89, 0x58, 0x04,        # mov [r8+4], ebx
    0x41, 0x89, 0x48, 0x08,        # mov [r8+8], ecx
    0x41, 0x89, 0x50, 0x0C,        # mov [r8+12], edx
    0x5B,                          # pop rbx
    0xC3,                          # ret
])
_XGETBV_CODE = bytes([
    0x31, 0xC9,                    # xor ecx, ecx
    0x0F, 0x01, 0xD0,              # xgetbv
    0x48, 0xC1, 0xE2, 0x20,        # shl rdx, 32
    0x48, 0x09, 0xD0,              # or rax, rdx
    0xC3,                          # ret
])


def _cpuid_features() -> set[str] | None:
    """The x86 features from cpuid/xgetbv, or None when the instructions cannot be run from here."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    try:
        buf = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except (OSError, AttributeError, ValueError):  # no executable anonymous memory (hardened kernels, Windows)
        return None
    pad = bytes(-len(_CPUID_CODE) % 16)
    buf.write(_CPUID_CODE + pad + _XGETBV_CODE)
    anchor = ctypes.c_char.from_buffer(buf)  # exports the buffer: released below before the mmap closes
    try:
        return _read_cpuid(ctypes.addressof(anchor), len(_CPUID_CODE) + len(pad))
    except Exception:  # anything odd (a sandbox refusing the call): fall back to the kernel's flags
        return None
    finally:
        del anchor
        buf.close()


def _read_cpuid(base: int, xgetbv_offset: int) -> set[str]:
    regs_t = ctypes.c_uint32 * 4
    cpuid = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32, ctypes.POINTER(regs_t))(base)
    xgetbv = ctypes.CFUNCTYPE(ctypes.c_uint64)(base + xgetbv_offset)

    def regs(leaf: int, sub: int = 0) -> tuple[int, ...]:
        out = regs_t()
        cpuid(leaf, sub, ctypes.byref(out))
        return tuple(out)

    table = {(1, 0): regs(1)}
    if regs(0)[0] >= 7:
        table[(7, 0)] = regs(7, 0)
        if table[(7, 0)][0] >= 1:  # eax of leaf 7 is the highest subleaf
            table[(7, 1)] = regs(7, 1)
    osxsave = bool(table[(1, 0)][2] >> 27 & 1)
    xcr0 = int(xgetbv()) if osxsave else 0
    found = set()
    for name, (leaf, sub, reg, bit) in _CPUID_BITS.items():
        values = table.get((leaf, sub))
        state = _NEEDS_STATE[name]
        if values is not None and values[reg] >> bit & 1 and xcr0 & state == state:
            found.add(name)
    return found


def _proc_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key = line.split(":", 1)[0].strip().lower()
                if key in ("flags", "features"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@functools.cache
def cpu_features() -> tuple[str, ...]:
    """The ISA extensions of this CPU that change results or speed, sorted (empty for unknown CPUs)."""
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64", "i386", "i686"):
        found = _cpuid_features()
        if found is None:
            found = _proc_flags() & set(X86_FEATURES)
        return tuple(f for f in X86_FEATURES if f in found)
    if machine in ("aarch64", "arm64"):
        flags = _proc_flags()
        return tuple(f for f in ARM_FEATURES if f in flags)
    return ()


def arch_family() -> str:
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64", "i386", "i686"):
        return "x86"
    if machine in ("aarch64", "arm64") or machine.startswith("arm"):
        return "arm"
    return machine


def feature_words(features: Iterable[str] | None = None, arch: str | None = None) -> set[str]:
    """The words a registry condition can test: the features, the architecture family, and the groups
    ``vnni`` (AVX512-VNNI or AVX-VNNI), ``amx`` (AMX int8) and ``avx512`` (AVX-512 F)."""
    feats = set(cpu_features() if features is None else features)
    words = set(feats)
    words.add(arch or arch_family())
    if feats & {"avx512_vnni", "avx_vnni"}:
        words.add("vnni")
    if "amx_int8" in feats:
        words.add("amx")
    if "avx512f" in feats:
        words.add("avx512")
    return words


def int8_kernels(words: Iterable[str] | None = None) -> str:
    """How ONNX Runtime's CPU int8 matrix kernels accumulate on a CPU with these feature words (this CPU's by
    default), in a few words."""
    w = feature_words() if words is None else set(words)
    if "x86" in w:
        if "amx" in w:
            return "amx (32-bit accumulation)"
        if "vnni" in w:
            return "vnni (32-bit accumulation)"
        return "u8s8 pairs summed in 16 bits (saturates; no VNNI)"
    if "arm" in w:
        return "dot product (32-bit accumulation)" if w & {"asimddp", "i8mm"} else "neon (32-bit accumulation)"
    return "unknown"


def saturating_int8(words: Iterable[str] | None = None) -> bool:
    """Whether ONNX Runtime's x86 u8s8 kernels sum pairs of products in 16 bits here (x86 without VNNI or AMX)."""
    w = feature_words() if words is None else set(words)
    return "x86" in w and not w & {"vnni", "amx"}

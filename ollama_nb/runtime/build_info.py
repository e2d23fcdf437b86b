"""What the installed llama.cpp is: its version, the backends and devices it registered (GPUs
with their free memory), and the CPU features compiled into it, held against the CPU's own.

A user who meets a slow or crashing machine should see why in one command (``ollama-nb info``):
a wheel built elsewhere (a pip cache, an image) can carry instructions this CPU lacks, and a
CPU-only build silently ignores a GPU.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass
from typing import Any

from . import cpu
from .library import lib, system_info

# ggml's names for CPU instruction sets -> the /proc/cpuinfo flags that provide them. Features
# not listed here (OPENMP, REPACK, LLAMAFILE, KLEIDIAI, ...) are build options, not instructions.
_ISA_FLAGS = {
    "SSE3": ("pni",), "SSSE3": ("ssse3",), "AVX": ("avx",), "AVX_VNNI": ("avx_vnni",), "AVX2": ("avx2",),
    "F16C": ("f16c",), "FMA": ("fma",), "BMI2": ("bmi2",), "AVX512": ("avx512f",),
    "AVX512_VBMI": ("avx512vbmi",), "AVX512_VNNI": ("avx512_vnni",), "AVX512_BF16": ("avx512_bf16",),
    "AMX_INT8": ("amx_int8", "amx_tile"), "NEON": ("asimd",), "ARM_FMA": ("asimd",), "FP16_VA": ("asimdhp",),
    "MATMUL_INT8": ("i8mm",), "SVE": ("sve",), "DOTPROD": ("asimddp",), "SME": ("sme",), "SME2": ("sme2",),
}
_DEVICE_KINDS = {0: "cpu", 1: "gpu", 2: "igpu", 3: "accel", 4: "meta"}


@dataclass(frozen=True)
class Device:
    name: str
    description: str
    kind: str  # cpu, gpu, igpu, accel
    memory_free: int
    memory_total: int


@dataclass(frozen=True)
class CpuFeatures:
    compiled: list[str]  # instruction sets compiled into the CPU backend
    missing: list[str]  # of those, the ones this CPU does not list: illegal instructions ahead
    options: list[str]  # build options (OPENMP, REPACK, LLAMAFILE, ...)


def library_version() -> str:
    return f"llama-cpp-python {lib().__version__}"


def sections() -> dict[str, dict[str, str]]:
    """``llama_print_system_info`` as {backend: {feature: value}}: "CPU : AVX2 = 1 | ..."."""
    out: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for part in system_info().split("|"):
        part = part.strip()
        if not part:
            continue
        # A backend's first entry is written "NAME : FEATURE = VALUE".
        if " : " in part:
            name, _, part = part.partition(" : ")
            current = out.setdefault(name.strip(), {})
        key, _, value = part.partition("=")
        if current is not None and key.strip():
            current[key.strip()] = value.strip()
    return out


def cpu_features() -> CpuFeatures:
    compiled_in = sections().get("CPU", {})
    flags = cpu.flags()
    isa = [name for name, value in compiled_in.items() if name in _ISA_FLAGS and value == "1"]
    options = [name for name, value in compiled_in.items() if name not in _ISA_FLAGS and value == "1"]
    missing = [name for name in isa if flags and not all(f in flags for f in _ISA_FLAGS[name])]
    return CpuFeatures(isa, missing, options)


@functools.lru_cache(maxsize=1)
def _ggml() -> Any:
    """libggml with the registry calls typed (llama-cpp-python binds none of them)."""
    from llama_cpp._ggml import libggml

    lib()
    for name, restype, argtypes in (
        ("ggml_backend_reg_count", ctypes.c_size_t, []),
        ("ggml_backend_reg_get", ctypes.c_void_p, [ctypes.c_size_t]),
        ("ggml_backend_reg_name", ctypes.c_char_p, [ctypes.c_void_p]),
        ("ggml_backend_dev_count", ctypes.c_size_t, []),
        ("ggml_backend_dev_get", ctypes.c_void_p, [ctypes.c_size_t]),
        ("ggml_backend_dev_name", ctypes.c_char_p, [ctypes.c_void_p]),
        ("ggml_backend_dev_description", ctypes.c_char_p, [ctypes.c_void_p]),
        ("ggml_backend_dev_type", ctypes.c_int, [ctypes.c_void_p]),
        ("ggml_backend_dev_memory", None,
         [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t)]),
    ):
        fn = getattr(libggml, name)
        fn.restype, fn.argtypes = restype, argtypes
    return libggml


def _text(raw: bytes | None) -> str:
    return (raw or b"").decode("utf-8", "replace")


def backends() -> list[str]:
    """The backends llama.cpp registered (CPU, CUDA, Metal, Vulkan, BLAS, ...)."""
    g = _ggml()
    return [_text(g.ggml_backend_reg_name(g.ggml_backend_reg_get(i))) for i in range(g.ggml_backend_reg_count())]


def devices() -> list[Device]:
    """Every device with its free and total memory (for a GPU: VRAM, as the driver reports it now)."""
    g = _ggml()
    out = []
    for i in range(g.ggml_backend_dev_count()):
        dev = g.ggml_backend_dev_get(i)
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        g.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        kind = _DEVICE_KINDS.get(g.ggml_backend_dev_type(dev), "other")
        out.append(Device(_text(g.ggml_backend_dev_name(dev)), _text(g.ggml_backend_dev_description(dev)),
                          kind, int(free.value), int(total.value)))
    return out

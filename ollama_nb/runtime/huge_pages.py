"""Put the weights a CPU reads for every token in 2 MiB pages.

A decode step streams every weight once: SmolLM2-135M's 98 MB are 24,000 pages of 4 KiB, a
TLB miss each, and inside a virtual machine each miss walks two page tables (the guest's and the
host's). Measured on two cores of an AMD EPYC VM, with models loaded side by side in one process
and decoding in turns, SmolLM2 ran 1.04-1.07x as fast from weights in huge pages as from the
mapped file and 1.01-1.06x as fast as from weights read into 4 KiB pages (four runs of 12
rounds); the host may back the VM with 4 KiB pages itself, which caps the gain to a shorter
page walk.

Linux gives anonymous memory huge pages only where asked (``transparent_hugepage`` is usually
``madvise``), and llama.cpp does not ask. ``madvise(MADV_COLLAPSE)`` (Linux 6.1) asks after the
fact: it copies a resident 2 MiB range into one huge page, whatever the sysfs setting, without
changing a byte the program sees, and it is safe while other threads read the memory. File
pages of a memory-mapped GGUF cannot be collapsed this way (read-only file THP is rarely built
in), so on the CPU the weights are read into llama.cpp's own buffer instead of mapped, unless
the request says ``use_mmap`` (Ollama's option) or the file would crowd RAM.

Only chunks that are resident in full are collapsed: the KV cache that ``runtime.memory`` just
handed back must not come back as zero-filled huge pages, and a cache that fills token by token
stays in small pages (one token's row in every layer would otherwise pin 2 MiB per layer).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import mmap
import os

from ..base import config
from .memory import Range, anonymous_writable, libc_calls, subtract

log = logging.getLogger("ollama_nb.runtime")

MADV_COLLAPSE = 25
HUGE_PAGE = 2 << 20


@functools.cache
def collapse_works() -> bool:
    """Whether this kernel collapses anonymous memory into huge pages on request: tried once on
    a scratch mapping (kernels before 6.1, or without THP, answer EINVAL)."""
    if not config.huge_pages() or not os.path.exists("/proc/self/maps"):
        return False
    scratch = mmap.mmap(-1, 2 * HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        scratch.write(b"\1" * len(scratch))
        base = ctypes.addressof(ctypes.c_char.from_buffer(scratch))
        aligned = (base + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1)
        ok = libc_calls(keep_gil=False).madvise(aligned, HUGE_PAGE, MADV_COLLAPSE) == 0
        if not ok:
            log.debug("no huge pages on request (errno %d)", ctypes.get_errno())
        return ok
    finally:
        scratch.close()


def _available_ram() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def copy_weights(model_path: str, gpu_layers: int) -> bool:
    """Whether to read the weights into memory rather than map them (``use_mmap`` unset): only
    where the CPU computes with them, the kernel can give them huge pages, and a copy takes at
    most half of the RAM that is free (a mapped file's pages can be dropped under pressure and
    read again, a copy cannot)."""
    if gpu_layers != 0 or not collapse_works():
        return False
    try:
        size = os.path.getsize(model_path)
    except OSError:
        return False
    return size <= _available_ram() // 2


def collapse_resident(before: list[Range]) -> int:
    """Collapse into huge pages the fully resident 2 MiB chunks of anonymous memory mapped since
    ``before`` (:func:`runtime.memory.mapped_ranges` taken before the engine was created).
    Returns the bytes now in huge pages; a chunk the kernel refuses stays as it was."""
    if not before or not collapse_works():
        return 0
    libc = libc_calls(keep_gil=False)  # a collapse copies memory: other threads may run meanwhile
    page = mmap.PAGESIZE
    residency = ctypes.create_string_buffer(HUGE_PAGE // page)
    collapsed = 0
    for start, end in subtract(anonymous_writable(), before):
        chunk = (start + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1)
        while chunk + HUGE_PAGE <= end:
            resident = libc.mincore(chunk, HUGE_PAGE, residency) == 0 and b"\0" not in residency.raw
            if resident and libc.madvise(chunk, HUGE_PAGE, MADV_COLLAPSE) == 0:
                collapsed += HUGE_PAGE
            chunk += HUGE_PAGE
    return collapsed

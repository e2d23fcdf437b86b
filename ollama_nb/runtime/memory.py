"""Hand llama.cpp's freshly zeroed buffers back to the OS until they are used.

llama.cpp clears the KV cache with ``memset`` when it creates a context, which makes every page
of it resident at once: 90 MiB for SmolLM2-135M at Ollama's default 4096-token context, four
times that with ``OLLAMA_NUM_PARALLEL=4``, before a single token is cached. A kernel that keeps
a model loaded for hours should pay for the context it uses, not the one it might.

For private anonymous memory, ``madvise(MADV_DONTNEED)`` means "the next access reads zeros",
so dropping a page that already holds only zeros changes no byte the program can observe; the
page simply comes back (zero-filled) when llama.cpp first writes a token there. We look only at
anonymous mappings that appeared while the engine was being created (llama.cpp's own buffers:
KV cache, compute and output buffers; never the memory-mapped weights, which are file-backed),
and we read and release them while holding the GIL, so no Python thread writes there meanwhile.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import mmap

log = logging.getLogger("ollama_nb.runtime")

MADV_DONTNEED = 4
CHUNK = 1 << 20  # examine and release in 1 MiB steps

Range = tuple[int, int]


@functools.cache
def libc_calls(*, keep_gil: bool) -> ctypes.CDLL:
    """``madvise`` and ``mincore``: through a PyDLL (``keep_gil``), whose calls keep the GIL held
    while this module reads memory no Python thread may write meanwhile, or through a CDLL,
    which lets go of it for calls that take long (``runtime.huge_pages`` copies memory)."""
    libc = (ctypes.PyDLL if keep_gil else ctypes.CDLL)(None, use_errno=True)
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    libc.madvise.restype = ctypes.c_int
    libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p)
    libc.mincore.restype = ctypes.c_int
    return libc


def _maps() -> list[list[str]]:
    """The fields of each line of /proc/self/maps (address range, permissions, offset, device,
    inode, and the path when there is one); empty where it cannot be read."""
    try:
        with open("/proc/self/maps", encoding="ascii", errors="replace") as maps:
            return [line.split() for line in maps]
    except OSError:
        return []


def _range(address: str) -> Range:
    start, _, end = address.partition("-")
    return int(start, 16), int(end, 16)


def mapped_ranges() -> list[Range]:
    """Every mapped address range of this process (any permissions)."""
    return [_range(fields[0]) for fields in _maps()]


def anonymous_writable() -> list[Range]:
    """Private, writable mappings backed by no file (and not the brk heap or a stack, which
    carry a name: ``[heap]``, ``[stack]``)."""
    return [
        _range(fields[0])
        for fields in _maps()
        if len(fields) == 5 and fields[1][:2] == "rw" and fields[1][3] == "p" and fields[4] == "0"
    ]


def subtract(ranges: list[Range], taken: list[Range]) -> list[Range]:
    """The parts of ``ranges`` that overlap nothing in ``taken`` (both sorted by start)."""
    out: list[Range] = []
    taken = sorted(taken)
    for start, end in sorted(ranges):
        cursor = start
        for t_start, t_end in taken:
            if t_end <= cursor or t_start >= end:
                continue
            if t_start > cursor:
                out.append((cursor, t_start))
            cursor = max(cursor, t_end)
        if cursor < end:
            out.append((cursor, end))
    return out


def release_zero_pages(before: list[Range]) -> int:
    """Release the all-zero 1 MiB chunks of anonymous memory mapped since ``before``.

    ``before`` is :func:`mapped_ranges` taken just before the engine was created. Address
    ranges that were mapped then in any form are left alone, so a heap that merely grew inside
    its earlier reservation (another thread's malloc arena) is never read. Returns the bytes
    released; any failure just leaves the memory resident.
    """
    if not before:
        return 0
    page = mmap.PAGESIZE
    zero = bytes(CHUNK)
    libc = libc_calls(keep_gil=True)
    residency = ctypes.create_string_buffer(CHUNK // page)
    released = 0
    for start, end in subtract(anonymous_writable(), before):
        addr = start
        while addr < end:
            size = min(CHUNK, end - addr)
            # Pages never touched are not resident: nothing to give back, and no need to read them.
            if libc.mincore(addr, size, residency) == 0 and not any(residency.raw[: size // page]):
                addr += size
                continue
            if ctypes.string_at(addr, size) == zero[:size]:
                if libc.madvise(addr, size, MADV_DONTNEED) != 0:
                    log.debug("madvise failed with errno %d", ctypes.get_errno())
                    return released
                released += size
            addr += size
    return released

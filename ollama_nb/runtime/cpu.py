"""What the kernel says about this machine's CPU (/proc/cpuinfo), read once per process.

The CPU probe's cache key, the thread count and ``info`` all need it; where there is no
/proc/cpuinfo (not Linux) every answer is empty and callers fall back to ``platform``.
"""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def processors() -> tuple[dict[str, str], ...]:
    """One dict per logical CPU, with /proc/cpuinfo's fields."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in [*f, "\n"]:
                key, sep, value = line.partition(":")
                if sep:
                    current[key.strip()] = value.strip()
                elif current:
                    blocks.append(current)
                    current = {}
    except OSError:
        return ()
    return tuple(blocks)


def first() -> dict[str, str]:
    cpus = processors()
    return cpus[0] if cpus else {}


def model_name() -> str:
    return first().get("model name", "")


def flags() -> set[str]:
    """The CPU's feature flags (x86 "flags", ARM "Features")."""
    info = first()
    return set((info.get("flags") or info.get("Features") or "").split())


def core_of() -> dict[int, tuple[str, str]]:
    """Logical CPU -> (socket, core); {} where /proc/cpuinfo does not say."""
    mapping = {}
    for block in processors():
        if {"processor", "physical id", "core id"} <= block.keys() and block["processor"].isdigit():
            mapping[int(block["processor"])] = (block["physical id"], block["core id"])
    return mapping

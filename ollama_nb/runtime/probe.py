"""Does llama.cpp's CPU backend survive its extra buffer types on this machine? Ask a child.

Extra buffer types are where the CPU backend keeps weights in the layout of a faster kernel:
AMX tiles on Intel Xeons (``ggml-cpu/amx``) and interleaved "repacked" blocks for AVX2,
AVX-512 and NEON (``ggml-cpu/repack``). A native build compiles in whatever the build machine
lists, and a VM can list AMX while its tiles still fault: then the first real prompt dies with
SIGILL, and in a notebook it takes the kernel with it. A fault cannot be caught in-process, so
the probe runs in a child: it decodes a real batch through the installed library, first with
extra buffer types off (the baseline), then on, and prints one JSON line after each. How the
child ended says which of the two the machine can run.

The child is ``python -m ollama_nb.runtime.probe_child``; ``run_probe`` here is the parent.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TOLERANCE = 0.05  # largest logit difference, as a share of the largest logit, still "the same"
PROBE_TIMEOUT_S = 120.0

#: What a probe can conclude.
OK = "ok"  # both passes ran and agree: extra buffer types work here
EXTRA_FAULT = "extra-buffers-fault"  # the baseline ran, the pass with extra buffer types died
MISMATCH = "mismatch"  # both ran, with different results: the fast kernels compute wrong
BUILD_FAULT = "build-fault"  # even the baseline died: the build does not fit this CPU at all
PROBE_ERROR = "probe-error"  # the probe itself failed (no fault): nothing learned


@dataclass(frozen=True)
class ProbeReport:
    verdict: str
    detail: str
    extra_buffer_types: list[str] = field(default_factory=list)
    seconds: float = 0.0


# ---- the parent --------------------------------------------------------------------------------


def probe_command() -> list[str]:
    return [sys.executable, "-m", "ollama_nb.runtime.probe_child"]


# How Windows reports a process killed by a CPU fault (NTSTATUS exit codes).
_WINDOWS_FAULTS = {0xC000001D: "STATUS_ILLEGAL_INSTRUCTION", 0xC0000005: "STATUS_ACCESS_VIOLATION",
                   0xC0000096: "STATUS_PRIVILEGED_INSTRUCTION"}


def _fault(returncode: int) -> str | None:
    """The signal (or Windows fault) that ended the child, None for an ordinary exit."""
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return _WINDOWS_FAULTS.get(returncode & 0xFFFFFFFF)


def _child_env() -> dict[str, str]:
    """The parent's environment, quiet, and able to import this very ollama_nb (a notebook may
    have put it on ``sys.path`` by hand rather than installing it)."""
    here = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "OLLAMA_DEBUG": "0", "PYTHONPATH": here + (os.pathsep + path if path else "")}


def run_probe(command: Sequence[str] | None = None, *, timeout: float = PROBE_TIMEOUT_S) -> ProbeReport:
    """Run the child (``command`` replaces it in tests) and read its verdict from how it ended."""
    started = time.perf_counter()
    try:
        done = subprocess.run(list(command or probe_command()), check=False, capture_output=True, text=True,
                              timeout=timeout, env=_child_env(), stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return ProbeReport(PROBE_ERROR, f"the probe did not finish in {timeout:.0f} s",
                           seconds=time.perf_counter() - started)
    except OSError as exc:
        return ProbeReport(PROBE_ERROR, f"the probe could not start ({exc})", seconds=time.perf_counter() - started)
    seconds = time.perf_counter() - started
    passes: dict[str, dict[str, Any]] = {}
    for line in done.stdout.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("pass"), str):
            passes[record["pass"]] = record
    how = _fault(done.returncode)
    if how is not None:
        if "baseline" in passes:
            return ProbeReport(EXTRA_FAULT, f"{how} with extra buffer types on; the baseline ran", seconds=seconds)
        return ProbeReport(BUILD_FAULT, f"{how} even with extra buffer types off", seconds=seconds)
    extra = passes.get("extra")
    if done.returncode != 0 or extra is None or "baseline" not in passes:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return ProbeReport(PROBE_ERROR, f"the probe failed: {last}", seconds=seconds)
    if passes["baseline"].get("buffers"):  # the switch did nothing: the comparison means nothing
        return ProbeReport(PROBE_ERROR, "llama.cpp used extra buffer types with them switched off "
                           f"({', '.join(map(str, passes['baseline']['buffers']))})", seconds=seconds)
    buffers = [str(b) for b in extra.get("buffers") or []]
    difference = float(extra.get("difference", float("inf")))
    if not difference <= TOLERANCE:
        return ProbeReport(MISMATCH, f"logits differ by {difference:.3g} of their range with extra buffer "
                           "types on", buffers, seconds)
    return ProbeReport(OK, f"logits agree within {difference:.2g}", buffers, seconds)



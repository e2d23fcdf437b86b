"""Whether models load with llama.cpp's CPU extra buffer types (AMX, repacked weights).

``OLLAMA_NB_EXTRA_BUFFERS`` decides when it is set. Otherwise the probe (``runtime.probe``)
does, once per library build, CPU and kernel: its verdict is kept in the user's cache directory
under a fingerprint of the three, so a new build, a CPU with other flags or microcode, or a
kernel update each get probed afresh, and everything else pays nothing. Where the extra types
work they stay on: AMX is the fast path for prompts on the CPUs that have it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from ..base import config
from ..base.errors import BuildDoesNotFitCpu
from . import cpu
from .probe import BUILD_FAULT, EXTRA_FAULT, MISMATCH, OK, PROBE_ERROR, ProbeReport, run_probe

log = logging.getLogger("ollama_nb.runtime")

OVERRIDE = "OLLAMA_NB_EXTRA_BUFFERS"
_CACHE_FORMAT = 1


@dataclass(frozen=True)
class ExtraBuffersDecision:
    """What every model load in this process uses, and why."""

    enabled: bool
    source: str  # "OLLAMA_NB_EXTRA_BUFFERS", "probe" (run now) or "cache" (an earlier probe)
    verdict: str  # the probe's verdict, or "forced on" / "forced off"
    detail: str
    buffer_types: tuple[str, ...] = ()  # the extra types the probe saw in use (CPU_REPACK, AMX)

    @property
    def refuses_loads(self) -> bool:
        """The build faults even without extra types: loading would kill the process."""
        return self.verdict == BUILD_FAULT


def library_files() -> dict[str, str]:
    """Each shared library of the installed llama.cpp build: name -> "size:mtime".

    A rebuilt or reinstalled wheel rewrites these files, which is all a cache key needs; hashing
    them would read hundreds of MB on a CUDA build at every start.
    """
    from .library import lib

    directory = Path(lib().llama_cpp._lib._name).parent
    files = {}
    for entry in sorted(directory.iterdir()):
        if entry.is_file() and ("ggml" in entry.name or "llama" in entry.name):
            stat = entry.stat()
            files[entry.name] = f"{stat.st_size}:{stat.st_mtime_ns}"
    return files


def fingerprint() -> dict[str, str]:
    """The library build, the CPU and the kernel: what a verdict is valid for."""
    from .library import lib

    info = cpu.first()
    files = json.dumps(library_files(), sort_keys=True)
    return {
        "library": f"llama-cpp-python {lib().__version__} {hashlib.sha256(files.encode()).hexdigest()[:16]}",
        "cpu": " | ".join(
            [info.get(k, "") for k in ("vendor_id", "model name", "cpu family", "model", "stepping", "microcode")]
            + [hashlib.sha256(" ".join(sorted(cpu.flags())).encode()).hexdigest()[:16]]
        ) if info else platform.processor() or platform.machine(),
        "kernel": f"{platform.system()} {platform.release()} {platform.version()}",
        "machine": platform.machine(),
    }


def cache_file(fp: dict[str, str]) -> Path:
    key = hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:24]
    return config.cache_dir() / "cpu-probe" / f"{key}.json"


def read_cached(fp: dict[str, str]) -> ProbeReport | None:
    """The stored verdict for exactly this fingerprint; None for a missing, unreadable or
    foreign entry (which is then simply probed again)."""
    try:
        entry = json.loads(cache_file(fp).read_text(encoding="utf-8"))
        if entry.get("format") != _CACHE_FORMAT or entry.get("fingerprint") != fp:
            return None
        report = entry["report"]
        return ProbeReport(str(report["verdict"]), str(report["detail"]),
                           [str(b) for b in report.get("extra_buffer_types", [])], float(report.get("seconds", 0)))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def store(fp: dict[str, str], report: ProbeReport) -> None:
    """Write the verdict atomically (two kernels may probe at once); a cache that cannot be
    written only means probing again next time."""
    path = cache_file(fp)
    entry = {"format": _CACHE_FORMAT, "fingerprint": fp, "report": asdict(report),
             "probed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entry, indent=1), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        log.debug("cannot cache the CPU probe's verdict in %s: %s", path, exc)


def decision_from(report: ProbeReport, source: str) -> ExtraBuffersDecision:
    """A verdict's consequence: only a probe that ran cleanly and agreed keeps the fast types on,
    except that a probe which learned nothing keeps llama.cpp's own default (on)."""
    enabled = report.verdict in (OK, PROBE_ERROR)
    return ExtraBuffersDecision(enabled, source, report.verdict, report.detail, tuple(report.extra_buffer_types))


def forced(value: bool) -> ExtraBuffersDecision:
    return ExtraBuffersDecision(value, OVERRIDE, f"forced {'on' if value else 'off'}",
                                f"{OVERRIDE}={'1' if value else '0'}")


_lock = threading.Lock()
_probed: ExtraBuffersDecision | None = None


def decide(probe: Callable[[], ProbeReport] = run_probe) -> ExtraBuffersDecision:
    """The decision for this process: the override, else the cached or freshly probed verdict
    (probed at most once per process, and once per machine while the cache holds)."""
    global _probed
    setting = config.extra_buffers()
    if setting is not None:
        return forced(setting)
    with _lock:
        if _probed is None:
            fp = fingerprint()
            report, source = read_cached(fp), "cache"
            if report is None:
                report, source = probe(), "probe"
                if report.verdict != PROBE_ERROR:
                    store(fp, report)
            _probed = decision_from(report, source)
            _announce(_probed, fresh=source == "probe")
        return _probed


def reset() -> None:
    """Forget this process's decision (the next load decides again)."""
    global _probed
    with _lock:
        _probed = None


def _announce(decision: ExtraBuffersDecision, *, fresh: bool) -> None:
    """One line where the machine made us give something up or the probe could not tell (a
    build that does not fit the CPU says so in the error every load raises instead).

    A verdict just probed is a warning; the same verdict read from the cache is logged at info,
    so a user sees it once per machine and build, not in every kernel's first output
    (``ollama-nb info`` reports it any time)."""
    if decision.verdict in (EXTRA_FAULT, MISMATCH):
        log.log(
            logging.WARNING if fresh else logging.INFO,
            "llama.cpp's CPU extra buffer types (AMX, repacked weights) %s on this machine (%s); "
            "loading models without them. %s=1 forces them on.",
            "crash" if decision.verdict == EXTRA_FAULT else "compute wrong results", decision.detail, OVERRIDE)
    elif decision.verdict == PROBE_ERROR:
        log.warning("CPU probe inconclusive (%s); models load with llama.cpp's defaults", decision.detail)


def check_loadable(decision: ExtraBuffersDecision) -> None:
    """Refuse a load that would kill the process, with what to do instead."""
    if decision.refuses_loads:
        raise BuildDoesNotFitCpu(decision.detail)

"""How many threads llama.cpp computes with: the cores this process may use, less the ones other
work is using right now, re-measured while a model decodes.

Why not simply one thread per core: llama.cpp's CPU backend splits every matrix among its
threads and waits for all of them at a barrier, spinning. When another program (or a notebook
cell in this very kernel) holds one of the cores, one of our threads is descheduled and the
others spin until it comes back. On two cores with one of them busy, two threads made 19
tokens/s where one thread made 57, while on idle cores two threads beat one by a quarter
(bench/results/cpu.md). So the count follows the machine: every quarter second the governor
reads how much CPU time the cores got beyond our own decoding threads, and uses the cores that
were left. ``llama_set_n_threads`` makes the change between two decode steps, for free.

An explicit ``num_thread`` is never second-guessed: the engine then has no governor.
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from . import cpu

MEASURE_EVERY_S = 0.25
MIN_WINDOW_TICKS = 3  # per CPU: a shorter window is mostly rounding
# A thread is given up only when other work takes more than this share of a CPU: below it the
# lost moments cost less than computing with one thread fewer all the time (on two cores, a
# process busy half the time still left two threads ahead: 0.5 x 110 + 0.5 x 34 > 66 tokens/s).
YIELD_ABOVE = 0.6


def allowed_cpus() -> set[int]:
    """The logical CPUs this process may run on (its affinity mask)."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def physical_cores() -> int:
    """Distinct physical cores among the CPUs we may use (SMT siblings count once)."""
    cpus = allowed_cpus()
    mapping = cpu.core_of()
    if not all(c in mapping for c in cpus):  # no topology (some VMs, ARM): count what we may use
        return max(1, len(cpus))
    return max(1, len({mapping[c] for c in cpus}))


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup"),
                     membership: Path = Path("/proc/self/cgroup")) -> float | None:
    """The CPU quota of our cgroup in cores (``docker --cpus``, Kubernetes limits, a JupyterHub
    spawner's ``cpu_limit``), None when there is none: cgroup v2 ``cpu.max``, else v1 CFS."""
    group = "/"
    try:
        for line in membership.read_text().splitlines():
            if line.startswith("0::"):  # the v2 hierarchy
                group = line[3:] or "/"
    except OSError:
        return None
    candidates = [(root / group.lstrip("/") / "cpu.max", None), (root / "cpu.max", None),
                  (root / "cpu" / "cpu.cfs_quota_us", root / "cpu" / "cpu.cfs_period_us"),
                  (root / "cpu,cpuacct" / "cpu.cfs_quota_us", root / "cpu,cpuacct" / "cpu.cfs_period_us")]
    for quota_file, period_file in candidates:
        try:
            if period_file is None:
                quota, _, period = quota_file.read_text().strip().partition(" ")
            else:
                quota, period = quota_file.read_text().strip(), period_file.read_text().strip()
        except OSError:
            continue
        if quota in ("max", "-1") or not quota.isdigit() or not period.isdigit() or int(period) == 0:
            return None
        return int(quota) / int(period)
    return None


def usable_cores() -> int:
    """One thread per physical core we may run on, within the cgroup's CPU quota."""
    cores = physical_cores()
    quota = cgroup_cpu_limit()
    if quota is not None:
        cores = min(cores, max(1, math.floor(quota + 0.01)))
    return cores


# ---- measuring other work ----------------------------------------------------------------------


def _cpu_ticks(cpus: set[int]) -> tuple[int, int]:
    """(busy, total) clock ticks of the given CPUs since boot, from /proc/stat."""
    busy = total = 0
    with open("/proc/stat", encoding="ascii") as f:
        for line in f:
            if not line.startswith("cpu"):
                break  # the per-CPU lines come first
            name, *values = line.split()
            if name == "cpu" or int(name[3:]) not in cpus:
                continue
            # user nice system idle iowait irq softirq steal [guest guest_nice: already in user]
            ticks = [int(v) for v in values[:8]]
            total += sum(ticks)
            busy += sum(ticks) - ticks[3] - ticks[4]
    return busy, total


def _thread_ticks(tids: set[str]) -> int:
    """User + system ticks of our own threads (a thread that has exited counts nothing)."""
    used = 0
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rpartition(")")[2].split()
            used += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return used


def _tasks() -> set[str]:
    try:
        return set(os.listdir("/proc/self/task"))
    except OSError:
        return set()


@dataclass(frozen=True)
class ThreadChoice:
    """What the governor last saw and chose (for ``info``)."""

    threads: int
    cores: int
    busy_elsewhere: float  # CPUs' worth of time taken by work other than our decoding threads


class ThreadGovernor:
    """Chooses llama.cpp's thread count for one engine, between its decode steps.

    Our own decoding threads are the worker thread that calls ``llama_decode`` and the OpenMP
    helpers it starts: the threads that appear while it runs its first step at a new width.
    Everything else, in other processes or in this one, is other work.
    """

    def __init__(self, cores: int | None = None, *, interval: float = MEASURE_EVERY_S) -> None:
        self.cores = cores or usable_cores()
        self.interval = interval
        self.cpus = allowed_cpus()
        self.available = os.path.exists("/proc/stat") and os.path.isdir("/proc/self/task")
        self._own: set[str] = set()
        self._widest = 0
        self._known: set[str] = set()
        self._last: tuple[float, int, int, int] | None = None
        self._pending: int | None = None
        self.choice = ThreadChoice(self.cores, self.cores, 0.0)

    @property
    def threads(self) -> int:
        return self.choice.threads

    def begin(self) -> None:
        """Called by the thread about to decode; starts a measuring window. A new worker thread
        starts afresh (its OpenMP pool is new too); the same thread again, back from lingering
        (serving/worker.py), still has its helpers, which are still ours."""
        me = str(threading.get_native_id())
        if me not in self._own:
            self._own = {me}
            self._widest = 0
        self._last = None
        self._pending = None
        if self.available:
            self._measure(time.monotonic())

    def before_step(self) -> int:
        """The thread count for the next decode step; re-measures at most every ``interval``."""
        if self.available:
            now = time.monotonic()
            if self._last is None or now - self._last[0] >= self.interval:
                self._measure(now)
        n = self.choice.threads
        if n > self._widest:
            self._known = _tasks()  # the OpenMP helpers a wider step starts are ours
        return n

    def after_step(self, threads: int) -> None:
        if threads > self._widest:
            self._widest = threads
            self._own |= _tasks() - self._known

    def settle(self) -> int:
        """Measure the window since ``begin`` and take its count at once (nothing decodes yet,
        so there is no flapping to guard against)."""
        if self.available:
            self._measure(time.monotonic(), adopt=True)
        return self.choice.threads

    def measure_now(self, seconds: float = 0.1) -> ThreadChoice:
        """What the count would be with the machine as it is, measured over ``seconds``."""
        self.begin()
        time.sleep(seconds)
        self.settle()
        return self.choice

    def _measure(self, now: float, *, adopt: bool = False) -> None:
        try:
            busy, total = _cpu_ticks(self.cpus)
        except (OSError, ValueError):
            self.available = False
            return
        own = _thread_ticks(self._own)
        last = self._last
        if last is not None and total - last[2] < MIN_WINDOW_TICKS * len(self.cpus):
            return  # too short to tell (ticks are 10 ms): let the window grow
        self._last = (now, busy, total, own)
        if last is None:
            return
        elsewhere = max(0.0, (busy - last[1]) - (own - last[3])) * len(self.cpus) / (total - last[2])
        target = max(1, min(self.cores, math.floor(len(self.cpus) - elsewhere + YIELD_ABOVE)))
        # Two windows in a row must agree before the count changes: one busy moment of another
        # program should not cost a quarter second at half speed, nor should one quiet moment.
        if target != self.choice.threads and (adopt or target == self._pending):
            self._pending = None
            self.choice = ThreadChoice(target, self.cores, elsewhere)
        else:
            self._pending = target if target != self.choice.threads else None
            self.choice = ThreadChoice(self.choice.threads, self.cores, elsewhere)

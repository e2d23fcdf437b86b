"""The thread count: the cores we may use (affinity, cgroup quota), the governor that measures
how much of them other work takes, and a real model that drops a thread while another process
keeps a core busy and takes it back when the core is free again. An explicit num_thread wins."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ollama_nb.runtime import threads
from ollama_nb.runtime.threads import ThreadGovernor

from .conftest import SMOLLM


@contextlib.contextmanager
def busy_core() -> Iterator[None]:
    """Another process that keeps one CPU busy."""
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        yield
    finally:
        burner.kill()
        burner.wait()


def expected_with_one_busy_cpu() -> int:
    return max(1, min(threads.usable_cores(), len(threads.allowed_cpus()) - 1))


# ---- what we may use ------------------------------------------------------------------------------


def test_usable_cores_fit_the_affinity_mask() -> None:
    cores = threads.usable_cores()
    assert 1 <= cores <= len(threads.allowed_cpus()) == len(os.sched_getaffinity(0))


@pytest.mark.parametrize(("files", "limit"), [
    ({"cpu.max": "150000 100000"}, 1.5),
    ({"cpu.max": "max 100000"}, None),
    ({"kube/pod/cpu.max": "200000 100000"}, 2.0),  # our own group, not the root's
    ({"cpu/cpu.cfs_quota_us": "50000", "cpu/cpu.cfs_period_us": "100000"}, 0.5),  # cgroup v1
    ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, None),
    ({}, None),
])
def test_the_cgroup_quota_is_read_from_v2_and_v1_files(tmp_path: Path, files: dict[str, str],
                                                       limit: float | None) -> None:
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text + "\n")
    membership = tmp_path / "self-cgroup"
    membership.write_text("0::/kube/pod\n" if any(n.startswith("kube/") for n in files) else "0::/\n")
    assert threads.cgroup_cpu_limit(root, membership) == limit


def test_a_quota_caps_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda *a: 1.0)
    assert threads.usable_cores() == 1


# ---- the governor's measurement ---------------------------------------------------------------------


def test_our_own_thread_s_work_is_not_other_work() -> None:
    """The measuring thread spins the whole window: that is our decoding, not a busy machine."""
    governor = ThreadGovernor()
    governor.begin()
    end = time.monotonic() + 0.3
    while time.monotonic() < end:
        hashlib.sha256(b"x" * 4096).digest()
    governor.settle()
    assert governor.choice.busy_elsewhere < 0.5
    assert governor.threads == governor.cores


def test_another_process_keeping_a_core_busy_is_seen() -> None:
    governor = ThreadGovernor()
    with busy_core():
        choice = governor.measure_now(0.4)
    assert choice.busy_elsewhere > 0.7
    assert choice.threads == expected_with_one_busy_cpu()


def test_a_busy_thread_of_this_very_process_counts_as_other_work() -> None:
    """A notebook cell crunching numbers in the kernel competes for the cores like any program."""
    stop = threading.Event()
    data = os.urandom(1 << 20)

    def burn() -> None:
        while not stop.is_set():
            hashlib.sha256(data).digest()  # releases the GIL: a core's worth of work

    burner = threading.Thread(target=burn)
    burner.start()
    try:
        time.sleep(0.2)
        choice = ThreadGovernor().measure_now(0.4)
    finally:
        stop.set()
        burner.join()
    assert choice.busy_elsewhere > 0.7
    assert choice.threads == expected_with_one_busy_cpu()


def test_one_busy_window_alone_does_not_change_the_count() -> None:
    """While decoding, two windows in a row must agree before the count moves."""
    governor = ThreadGovernor(interval=0.0)
    governor.begin()
    start = governor.threads
    with busy_core():
        time.sleep(0.3)
        assert governor.before_step() == start  # first window: pending
        time.sleep(0.3)
        second = governor.before_step()
    assert second == expected_with_one_busy_cpu()


# ---- on a real model -------------------------------------------------------------------------------------


def _engine(manager: object) -> object:
    return next(r.engine for r in manager.scheduler._runners.values() if r.key.endswith(SMOLLM))


def _generate(manager: object, tokens: int, **options: object) -> object:
    return manager.generate(model=SMOLLM, prompt=f"Tell a long story {time.time()}:", raw=True,
                            stream=False, options={"temperature": 0, "num_predict": tokens, **options})


def test_automatic_threads_follow_the_machine_while_a_model_decodes(manager: object) -> None:
    manager.unload(SMOLLM)
    _generate(manager, 4)
    engine = _engine(manager)
    assert engine.params.num_thread == 0 and engine.governor is not None
    with busy_core():
        reply = _generate(manager, 160)
    assert reply.eval_count > 40
    assert engine.threads == expected_with_one_busy_cpu()
    time.sleep(0.3)
    _generate(manager, 120)  # the core is free again: the thread comes back
    assert engine.threads == threads.usable_cores()
    assert _engine(manager) is engine  # the same load throughout: no reload for a thread change


def test_an_explicit_num_thread_always_wins(manager: object) -> None:
    with busy_core():
        _generate(manager, 80, num_thread=2)
        engine = _engine(manager)
        assert engine.governor is None
        assert engine.threads == 2 and engine.params.num_thread == 2
    manager.unload(SMOLLM)

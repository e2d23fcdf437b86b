"""The model worker: tasks in order on one thread at a time, and no thread while idle (an idle
thread that once decoded keeps an OpenMP pool that slows every other model down), except for a
short linger while no other model works, so a run of requests keeps one warm pool."""

from __future__ import annotations

import threading
import time

import pytest

from ollama_nb.serving.worker import Worker

from .conftest import GEMMA, SMOLLM


def _wait_idle(worker: Worker, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while worker._thread is not None and time.monotonic() < deadline:
        time.sleep(0.01)


def test_tasks_run_in_order_on_one_thread_at_a_time_and_results_come_back() -> None:
    worker = Worker("test")
    running = []
    seen: list[int] = []

    def task(i: int) -> int:
        running.append(threading.current_thread())
        assert sum(t.is_alive() for t in set(running)) == 1
        seen.append(i)
        time.sleep(0.001)
        return i * i

    futures = [worker.submit(task, i) for i in range(20)]
    assert [f.result(10) for f in futures] == [i * i for i in range(20)]
    assert seen == list(range(20))
    worker.shutdown()


def test_errors_reach_the_caller_and_the_worker_goes_on() -> None:
    worker = Worker("test")

    def boom() -> None:
        raise ValueError("bad grammar")

    with pytest.raises(ValueError, match="bad grammar"):
        worker.submit(boom).result(10)
    assert worker.submit(lambda: 42).result(10) == 42
    worker.shutdown()


def test_the_thread_exists_only_while_there_is_work() -> None:
    worker = Worker("test", linger=0)
    names = {worker.submit(lambda: threading.current_thread().name).result(10)}
    _wait_idle(worker)
    assert worker._thread is None
    names.add(worker.submit(lambda: threading.current_thread().name).result(10))
    assert names == {"test"}
    worker.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        worker.submit(lambda: None)


def test_a_lingering_thread_takes_the_next_task_then_leaves() -> None:
    worker = Worker("test", linger=0.5)
    first = worker.submit(threading.get_ident).result(10)
    assert worker._thread is not None  # waiting for the next task
    assert worker.submit(threading.get_ident).result(10) == first  # the same thread, its pool warm
    _wait_idle(worker)
    assert worker._thread is None  # gone once the linger passed with nothing to do
    worker.shutdown()


def test_a_lingering_thread_leaves_as_soon_as_another_worker_gets_work() -> None:
    idle, busy = Worker("idle", linger=60), Worker("busy", linger=0)
    idle.submit(lambda: None).result(10)
    assert idle._thread is not None
    busy.submit(lambda: None).result(10)
    _wait_idle(idle, timeout=5)  # far sooner than its 60 s linger
    assert idle._thread is None
    idle.shutdown()
    busy.shutdown()


def test_a_thread_whose_task_ends_after_another_worker_got_one_does_not_linger() -> None:
    """The other worker's task came while this one's ran, so this one was not lingering to be
    dismissed yet: it must not start lingering afterwards either."""
    first, second = Worker("first", linger=60), Worker("second", linger=60)
    release = threading.Event()
    running = first.submit(release.wait, 10)
    second.submit(lambda: None).result(10)
    release.set()
    running.result(10)
    _wait_idle(first, timeout=5)
    try:
        assert first._thread is None
        assert second._thread is not None  # the one that got work last lingers for its next
    finally:
        first.shutdown()
        second.shutdown()


def test_shutdown_ends_a_lingering_thread_at_once() -> None:
    worker = Worker("test", linger=60)
    worker.submit(lambda: None).result(10)
    started = time.monotonic()
    worker.shutdown()
    assert time.monotonic() - started < 5
    assert worker._thread is None


def test_shutdown_waits_for_queued_work() -> None:
    worker = Worker("test")
    done = []
    worker.submit(lambda: (time.sleep(0.2), done.append(1)))
    worker.submit(done.append, 2)
    worker.shutdown()
    assert done == [1, 2]


def test_idle_loaded_models_hold_no_threads(manager) -> None:
    """Of two loaded models, only the one that answered last keeps its thread for a moment (the
    first one's left when the second got work), and then it is gone too: no decoding thread
    (and no OpenMP pool) stays behind to slow the next generation."""
    for model in (SMOLLM, GEMMA):
        manager.generate(model=model, prompt="Hi", stream=False, options={"num_predict": 2})
    loaded = {r.name for r in manager.scheduler.loaded()}
    assert {SMOLLM, GEMMA} <= {n.rsplit("/", 1)[-1] for n in loaded}
    runners = {r.key.rsplit("/", 1)[-1]: r for r in manager.scheduler._runners.values()}
    _wait_idle(runners[SMOLLM]._worker, timeout=2)
    assert runners[SMOLLM]._worker._thread is None  # dismissed when gemma started, not after its linger
    for runner in runners.values():
        _wait_idle(runner._worker, timeout=runner._worker.linger + 10)
        assert runner._worker._thread is None
    # Another session manager's model may be unloading right now (its keep-alive ran out while
    # this test ran): its thread ends with the unload, so every model thread must be gone soon.
    deadline = time.monotonic() + runners[GEMMA]._worker.linger + 10
    while (left := _model_threads()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left


def _model_threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("ollama_nb:"))

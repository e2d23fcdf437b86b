"""Helpers shared by the benchmarks (run as scripts: ``python bench/<name>.py``)."""

from __future__ import annotations

from typing import Any


def in_fresh_thread(fn: Any, *args: Any) -> Any:
    """Run ``fn`` on a thread that then exits. llama.cpp's OpenMP helpers belong to the thread
    that decoded; a pool left on this process's main thread would make libgomp throttle the
    spinning of every later decode (see ollama_nb/serving/worker.py) and slow the other side down."""
    import threading

    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # re-raised on the caller's thread
            box["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]

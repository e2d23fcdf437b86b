"""What the widgets share: one background job at a time with a cancel flag, Markdown outputs,
and the backend they talk to.

Generation and pulls run in a worker thread so the kernel keeps handling comm messages (a Stop
click, another cell) meanwhile. The thread never prints (a print from a thread lands in
whichever cell runs at that moment); it only sets widget traits, throttled by the caller.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .. import connection as backend
from ..display import error_line


def resolve_backend(manager: Any) -> Any:
    """The given manager/client, else whatever the notebook uses now (see ollama_nb.notebook.connection)."""
    if manager is not None:
        return manager

    return backend.current()


def markdown_outputs(text: str, metadata: dict[str, Any] | None = None) -> tuple[dict[str, Any], ...]:
    """The ``outputs`` of an Output widget showing ``text`` as Markdown (plain text elsewhere).
    Assigning the tuple replaces the content in one message; ``clear_output`` from a thread is
    not safe."""
    return ({
        "output_type": "display_data",
        "data": {"text/markdown": text, "text/plain": text},
        "metadata": metadata or {},
    },)


def installed_names(backend: Any) -> list[str]:
    return [value for _, value in grouped_models(backend)[0]]


def grouped_models(backend: Any) -> tuple[list[tuple[str, str]], list[str]]:
    """``(label, model name)`` pairs grouped by backend, the kernel's own first (labelled
    ``gpu · llama3.1:70b`` once there are several backends), and one line per backend that did
    not answer. A backend without named ones gives its models' names as they are."""
    by_backend = getattr(backend, "list_by_backend", None)
    if by_backend is None or not backend.names():
        return [(n, n) for n in sorted(m.name for m in backend.list().models)], []
    pairs: list[tuple[str, str]] = []
    problems: list[str] = []
    for name, listing in by_backend().items():
        if isinstance(listing, Exception):
            problems.append(error_line(listing))
            continue
        for model in sorted(m.name for m in listing.models):
            pairs.append((f"{name} · {model}", backend.qualify(name, model)))
    return pairs, problems


class Worker:
    """Runs one job at a time in a daemon thread; ``cancel`` is set by :meth:`stop` and cleared
    at each start. A job's exception goes to ``on_error`` as one line, never to stdout."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.cancel = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, job: Callable[[], None], *, on_error: Callable[[str], None],
              on_finish: Callable[[], None] | None = None) -> bool:
        if self.busy:
            return False
        self.cancel.clear()

        def run() -> None:
            try:
                job()
            except BaseException as exc:  # noqa: BLE001 - shown in the widget; the thread must not die loudly
                on_error(error_line(exc))
            finally:
                if on_finish is not None:
                    on_finish()

        self._thread = threading.Thread(target=run, name=f"ollama_nb-{self.name}", daemon=True)
        self._thread.start()
        return True

    def stop(self) -> None:
        self.cancel.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the current job; True when none is running any more."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return not self.busy

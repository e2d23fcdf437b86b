"""A real server on loopback for the /v1 and metrics tests, on its own loop in a daemon thread
(as the kernel runs it), so blocking clients such as ``openai.OpenAI`` can call it from the test
thread.

:func:`running_server` is the production path, ``lifecycle.serve``. :func:`serve_in_thread`
runs a given app (from :func:`build_app`: the core's ``make_app``, or a bare app with just the
two setup functions under test) for tests that need the application object itself.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web


def build_app(manager: Any) -> web.Application:
    from ollama_nb.server.dashboard import setup_metrics
    from ollama_nb.server.keys import MANAGER
    from ollama_nb.server.openai_compat import setup_openai

    try:
        from ollama_nb.server.app import make_app
    except ImportError:
        make_app = None
    if make_app is not None:
        app = make_app(manager)
        paths = {r.canonical for r in app.router.resources()}
        if "/v1/models" not in paths:
            setup_openai(app)
        if "/metrics" not in paths:
            setup_metrics(app)
        return app
    app = web.Application()
    app[MANAGER] = manager
    setup_openai(app)
    setup_metrics(app)
    return app


@dataclass
class RunningServer:
    url: str
    app: web.Application
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread

    def stop(self) -> None:
        """Stop the loop (the runner's cleanup runs shutdown hooks) and wait for the thread."""
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(30)


@contextmanager
def serve_in_thread(app: web.Application, *, shutdown_timeout: float = 5) -> Iterator[RunningServer]:
    """Start ``app`` on 127.0.0.1 (a free port) in a daemon thread; stop it on exit."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, shutdown_timeout=shutdown_timeout)
    started = threading.Event()
    port: list[int] = []
    failure: list[BaseException] = []

    async def start() -> None:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port.append(runner.addresses[0][1])

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(start())
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            failure.append(exc)
            started.set()
            return
        started.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=main, name="test-server", daemon=True)
    thread.start()
    started.wait(30)
    if failure:
        raise failure[0]
    server = RunningServer(url=f"http://127.0.0.1:{port[0]}", app=app, loop=loop, thread=thread)
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def running_server(manager: Any) -> Iterator[Any]:
    """``lifecycle.serve`` on a free loopback port (an object with ``url`` and ``stop()``)."""
    try:
        from ollama_nb.server.lifecycle import serve
    except ImportError:
        with serve_in_thread(build_app(manager)) as server:
            yield server
        return
    handle = serve(manager, "127.0.0.1", 0)
    try:
        yield handle
    finally:
        handle.stop()


def sse_events(body: bytes) -> list[Any]:
    """The ``data:`` payloads of an SSE body, JSON-decoded except ``[DONE]``."""
    events = []
    for block in body.decode().split("\n\n"):
        data = [line[len("data: "):] for line in block.split("\n") if line.startswith("data: ")]
        if data:
            text = "\n".join(data)
            events.append(text if text == "[DONE]" else json.loads(text))
    return events

"""A real server on loopback for the /v1 and metrics tests, on its own loop in a daemon thread
(as the kernel runs it), so blocking clients such as ``openai.OpenAI`` can call it from the test
thread. ``tests/conftest.py`` loads this module as a plugin, which provides the module-scoped
``server`` and ``client`` fixtures.

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

import openai
import pytest
from aiohttp import web

from .conftest import SMOLLM

#: Greedy, seeded sampling so replies can be compared exactly, and a prompt every test can use.
GREEDY: dict[str, Any] = {"temperature": 0, "seed": 42}
HELLO = [{"role": "user", "content": "Name three colours."}]


@pytest.fixture(scope="module")
def server(manager: Any) -> Iterator[Any]:
    """One real server per test module, over the session's shared manager."""
    with running_server(manager) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: Any) -> openai.OpenAI:
    """The official ``openai`` client pointed at ``server``."""
    return openai.OpenAI(base_url=server.url + "/v1", api_key="ollama", max_retries=0, timeout=120)


TOOL_TEMPLATE = r"""{{- if or .System .Tools }}<|im_start|>system
{{ if .System }}{{ .System }}{{ end }}
{{- if .Tools }}

You can call these functions. Their signatures are inside <tools></tools>:
<tools>
{{- range .Tools }}
{{ json .Function }}
{{- end }}
</tools>

To call a function, answer with <tool_call>{"name": <function-name>, "arguments": <args-json-object>}</tool_call>
{{- end }}<|im_end|>
{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ if .Content }}{{ .Content }}{{ else if .ToolCalls }}{{ range .ToolCalls }}<tool_call>{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}</tool_call>{{ end }}{{ end }}
{{- if not $last }}<|im_end|>
{{ end }}
{{- else if eq .Role "tool" }}<|im_start|>user
<tool_response>
{{ .Content }}
</tool_response><|im_end|>
{{ end }}
{{- if and (ne .Role "assistant") $last }}<|im_start|>assistant
{{ end }}
{{- end }}"""

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
ASK_WEATHER = [{"role": "user", "content": "What is the weather in London?"}]


@pytest.fixture(scope="module")
def tooly(manager: Any) -> str:
    """smollm2 with a Hermes-style tool template and two example calls to imitate."""
    modelfile = (
        f'FROM {SMOLLM}\nTEMPLATE """{TOOL_TEMPLATE}"""\n'
        "SYSTEM You are a helpful assistant that calls functions.\n"
        "MESSAGE user What is the weather in Paris?\n"
        'MESSAGE assistant <tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>\n'
        "MESSAGE user What is the weather in Rome?\n"
        'MESSAGE assistant <tool_call>{"name": "get_weather", "arguments": {"city": "Rome"}}</tool_call>\n'
    )
    assert [p.status for p in manager.create("tooly", modelfile)][-1] == "success"
    assert "tools" in manager.show("tooly").capabilities
    return "tooly"


def build_app(manager: Any) -> web.Application:
    """The production application (``make_app`` installs the /v1 and metrics routes)."""
    from ollama_nb.server.app import make_app

    return make_app(manager)


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
    from ollama_nb.server.lifecycle import serve

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

"""Starting and stopping the server: in-process (daemon thread), at exit, and ``ollama-nb serve``."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from ollama_nb.base import config
from ollama_nb.base.errors import OllamaNbError
from ollama_nb.manager.core import ModelManager
from ollama_nb.models.store import Store
from ollama_nb.server.lifecycle import serve

from .conftest import SMOLLM
from .server_fixtures import FAST, http, store_view

PYTHON = sys.executable


@pytest.fixture
def manager(tmp_path):
    m = ModelManager(Store(tmp_path / "store"))
    yield m
    m.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ("127.0.0.1", 11434, False)),
        ("", ("127.0.0.1", 11434, False)),
        ("0.0.0.0", ("0.0.0.0", 11434, True)),
        ("127.0.0.1:8080", ("127.0.0.1", 8080, True)),
        (":9000", ("0.0.0.0", 9000, True)),
        ("localhost", ("localhost", 11434, True)),
        ("http://example.com", ("example.com", 80, True)),
        ("https://example.com/ollama", ("example.com", 443, True)),
        ("http://127.0.0.1:5000/path", ("127.0.0.1", 5000, True)),
        ("[::1]:1234", ("::1", 1234, True)),
        ("::1", ("::1", 11434, True)),
        ("'127.0.0.1:7000'", ("127.0.0.1", 7000, True)),
        ("127.0.0.1:99999", ("127.0.0.1", 11434, True)),
    ],
)
def test_ollama_host_is_parsed_like_ollama(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("OLLAMA_HOST", raising=False)
    else:
        monkeypatch.setenv("OLLAMA_HOST", value)
    got = config.host()
    assert (got.host, got.port, got.explicit) == expected


def test_serve_publishes_ollama_host_and_is_idempotent(manager, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", "elsewhere:1")
    server = serve(manager, "127.0.0.1", 0)
    try:
        assert server.running and server.port > 0 and server.host == "127.0.0.1"
        assert server.url == f"http://127.0.0.1:{server.port}" and server.url in repr(server)
        assert os.environ["OLLAMA_HOST"] == f"127.0.0.1:{server.port}"
        assert serve(manager, "127.0.0.1") is server and serve(manager, port=server.port) is server
        import ollama

        assert ollama.Client().list().models == []  # found through OLLAMA_HOST alone
        other = serve(manager, "127.0.0.1", free_port())
        assert other is not server and other.running
        other.stop()
        assert os.environ["OLLAMA_HOST"] == f"127.0.0.1:{server.port}"  # ours again
    finally:
        server.stop()
    assert not server.running and "stopped" in repr(server)
    assert os.environ["OLLAMA_HOST"] == "elsewhere:1"
    with pytest.raises(OSError):
        urllib.request.urlopen(server.url, timeout=5)
    server.stop()  # idempotent


def test_default_port_falls_back_when_11434_is_taken(manager, monkeypatch):
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a TIME_WAIT must not stop it
    try:
        blocker.bind(("127.0.0.1", config.DEFAULT_PORT))
        blocker.listen()
    except OSError as exc:  # someone (a real Ollama?) holds it already: just as good
        assert exc.errno == errno.EADDRINUSE
    try:
        server = serve(manager)
        try:
            assert server.port != config.DEFAULT_PORT
            assert http(server.url, "GET", "/").body == b"Ollama is running"
        finally:
            server.stop()
    finally:
        blocker.close()


def test_an_explicit_busy_port_is_an_error(manager, monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OllamaNbError, match=f"listen tcp 127.0.0.1:{port}: bind: address already in use"):
            serve(manager, "127.0.0.1", port)
        monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{port}")
        with pytest.raises(OllamaNbError, match="address already in use"):
            serve(manager)


def test_stop_cancels_streams_in_flight(shared_models, tmp_path):
    manager = ModelManager(Store(store_view(shared_models, tmp_path / "view")))
    server = serve(manager, "127.0.0.1", 0)
    body = {"model": SMOLLM, "prompt": "1, 2, 3, 4,", "raw": True,
            "options": {"temperature": 0, "num_predict": 100000}}

    async def stream_then_stop():
        async with aiohttp.ClientSession() as session:
            response = await session.post(server.url + "/api/generate", json=body)
            first = json.loads(await response.content.readline())
            await asyncio.to_thread(server.stop)
            rest = [json.loads(line) async for line in response.content]
            return first, rest

    try:
        first, rest = asyncio.run(stream_then_stop())
        assert first["done"] is False and not any(line.get("done") for line in rest)
        assert rest[-1] == {"error": "server is shutting down"}  # told, not just cut off
        runner = manager.scheduler.get(manager.spec(SMOLLM).ref.full)
        deadline = time.monotonic() + 60
        while runner.refcount and time.monotonic() < deadline:
            time.sleep(0.01)
        assert runner.refcount == 0, "generation went on after the server stopped"
    finally:
        server.stop()
        manager.close()


def test_import_stays_light_and_serve_is_exported():
    code = ("import sys, ollama_nb; assert 'aiohttp' not in sys.modules; "
            "from ollama_nb.server.lifecycle import serve; assert ollama_nb.serve is serve; print('ok')")
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_servers_stop_at_interpreter_exit(tmp_path):
    code = f"""
import atexit, ollama_nb
from ollama_nb.manager.core import ModelManager
from ollama_nb.models.store import Store
server = None
atexit.register(lambda: print("running at exit:", server.running, flush=True))  # runs after ours
server = ollama_nb.serve(ModelManager(Store({str(tmp_path)!r})), "127.0.0.1", 0)
print("started", server.running, flush=True)
"""
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["started True", "running at exit: False"]


def _cli_serve(env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    """Start ``ollama-nb serve``; return it and its "Listening on" line (other log lines, e.g.
    from llama.cpp, are skipped and the rest of stderr is drained so the child never blocks)."""
    proc = subprocess.Popen([PYTHON, "-m", "ollama_nb.cli", "serve"], env=env, stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "Listening on" in line:
            break
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    return proc, "".join(seen)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_cli_serve_answers_and_stops_cleanly(models_env: Path, sig):
    port = free_port()
    env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{port}", "OLLAMA_MODELS": str(models_env)}
    proc, line = _cli_serve(env)
    try:
        assert f"Listening on http://127.0.0.1:{port}" in line, line
        url = f"http://127.0.0.1:{port}"
        assert http(url, "GET", "/api/version").json() == {"version": config.api_version()}
        assert SMOLLM in {m["model"] for m in http(url, "GET", "/api/tags").json()["models"]}
        if sig == signal.SIGINT:  # one real request through the CLI's own manager
            reply = http(url, "POST", "/api/generate", {"model": SMOLLM, "prompt": "Hi", "stream": False,
                                                         "options": FAST})
            assert reply.json()["eval_count"] == FAST["num_predict"]
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_serve_fails_on_a_busy_port(models_env: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{port}", "OLLAMA_MODELS": str(models_env)}
        out = subprocess.run([PYTHON, "-m", "ollama_nb.cli", "serve"], env=env, capture_output=True,
                             text=True, timeout=60, check=False)
    assert out.returncode == 1 and "address already in use" in out.stderr

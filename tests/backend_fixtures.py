"""Real remote engines for the backend tests: a second ``ollama-nb serve`` process (a remote
Ollama) and llama.cpp's own ``llama-server`` (an OpenAI-compatible engine), built from the llama.cpp
sources the installed llama-cpp-python vendors (``bench/anchors.py``; cached, the first build takes
about 15 minutes on 2 cores).

Each engine is a separate process on a free loopback port, over a view of the shared store, so
killing one (the test of a backend that dies mid-reply) touches nothing else.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .server_fixtures import store_view

ROOT = Path(__file__).resolve().parents[1]
#: The key the llama-server fixture requires (``--api-key``), read by the backend from LLAMA_KEY.
LLAMA_KEY = "sesame-0123"
LLAMA_ALIAS = "smollm2-gguf"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until ``url`` answers 200; a process that exits first fails at once with its output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise RuntimeError(f"the engine exited with {proc.returncode} before {url} answered:\n{out[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


@dataclass
class Engine:
    proc: subprocess.Popen
    url: str

    def kill(self) -> None:
        """SIGKILL: the engine dies as a crashed or cut-off server does, mid-reply."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def start_ollama_nb(store: Path, **env: str) -> Engine:
    """``ollama-nb serve`` in its own process, over ``store``."""
    port = free_port()
    inherited = {k: v for k, v in os.environ.items() if k not in ("OLLAMA_NB_BACKENDS", "OLLAMA_NB_ROUTE_BACKENDS")}
    environ = {**inherited, "OLLAMA_HOST": f"127.0.0.1:{port}", "OLLAMA_MODELS": str(store), **env}
    proc = subprocess.Popen([sys.executable, "-m", "ollama_nb.cli", "serve"], env=environ,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    engine = Engine(proc, f"http://127.0.0.1:{port}")
    try:
        wait_for(engine.url + "/api/version", proc)
    except BaseException:
        engine.stop()
        raise
    _drain(proc)
    return engine


def _drain(proc: subprocess.Popen) -> None:
    """Read an engine's output while it runs, so a full pipe never blocks it."""
    def read() -> None:
        with proc.stdout:
            for _ in iter(proc.stdout.readline, b""):
                pass

    threading.Thread(target=read, daemon=True).start()


def _anchors():
    """bench/anchors.py, which builds and caches llama.cpp's own programs."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import anchors
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return anchors


def llama_server_binary() -> str:
    """The cached llama-server of the installed llama-cpp-python (built first if need be)."""
    return _anchors().ensure().llama_server


def start_llama_server(binary: str, gguf: Path, *, api_key: str | None = LLAMA_KEY) -> Engine:
    """llama-server on the GGUF, one slot, named ``LLAMA_ALIAS`` in ``/v1/models``."""
    port = free_port()
    cmd = [binary, "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port), "-t", "2", "-c", "2048",
           "-np", "1", "--alias", LLAMA_ALIAS, "--no-webui"]
    if not _anchors().extra_buffers_on():
        cmd.append("--no-repack")  # where ours loads without AMX or repacked weights, so does it
    if api_key:
        cmd += ["--api-key", api_key]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    engine = Engine(proc, f"http://127.0.0.1:{port}")
    try:
        wait_for(engine.url + "/health", proc)
    except BaseException:
        engine.stop()
        raise
    _drain(proc)
    return engine


@pytest.fixture(scope="module")
def remote_ollama(shared_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """A second ``ollama-nb serve``: the remote Ollama."""
    engine = start_ollama_nb(store_view(shared_models, tmp_path_factory.mktemp("remote-store")))
    yield engine
    engine.stop()


@pytest.fixture(scope="session")
def llama_binary() -> str:
    return llama_server_binary()


@pytest.fixture(scope="module")
def llama_server(llama_binary: str) -> Iterator[Engine]:
    """llama-server on SmolLM2's GGUF, requiring ``LLAMA_KEY``: the OpenAI-compatible engine."""
    from .conftest import SMOLLM, model_file

    engine = start_llama_server(llama_binary, model_file(SMOLLM))
    yield engine
    engine.stop()

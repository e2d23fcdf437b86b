"""A real server on loopback over a real manager, for the server tests.

The store is a *view* of the session's shared store: blobs are hard links (no copy, and deleting
here never touches the shared files) and manifests are copies, so tests may create, copy and
delete models freely.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

FAST = {"temperature": 0, "seed": 1, "num_predict": 8}


def store_view(shared: Path, dest: Path) -> Path:
    """A store at ``dest`` with the shared store's models, sharing its blob files."""
    (dest / "blobs").mkdir(parents=True)
    for blob in (shared / "blobs").iterdir():
        if blob.is_file() and not blob.name.endswith("-partial"):
            try:
                os.link(blob, dest / "blobs" / blob.name)
            except OSError:
                shutil.copy2(blob, dest / "blobs" / blob.name)
    shutil.copytree(shared / "manifests", dest / "manifests")
    return dest


@dataclass
class Live:
    manager: Any
    server: Any

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="module", name="live")
def live_server(shared_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """One server per test module, on a free loopback port, over a view of the shared store."""
    from ollama_nb.manager.core import ModelManager
    from ollama_nb.models.store import Store
    from ollama_nb.server.lifecycle import serve

    root = store_view(shared_models, tmp_path_factory.mktemp("server-store"))
    manager = ModelManager(Store(root))
    server = serve(manager, "127.0.0.1", 0)
    yield Live(manager, server)
    server.stop()
    manager.close()


@pytest.fixture(name="client")
def ollama_client(live: Live) -> Any:
    import ollama

    return ollama.Client(host=live.url)


@dataclass
class Reply:
    status: int
    headers: Any
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.body.decode().splitlines()]


def http(url: str, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Reply:
    """One raw request; ``body`` may be bytes or a JSON-able value. Never raises on a status."""
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return Reply(response.status, response.headers, response.read())
    except urllib.error.HTTPError as err:
        return Reply(err.code, err.headers, err.read())

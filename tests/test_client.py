"""``ollama_nb.client.Client`` against a real ollama_nb server (``ollama_nb.serve``) on loopback:
the same method names and return types as the ModelManager, errors with the server's text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ollama_nb.api.types import (
    ChatResponse,
    EmbedResponse,
    GenerateResponse,
    ListResponse,
    ShowResponse,
)
from ollama_nb.base.errors import InvalidRequest, ModelNotFound, OllamaNbError
from ollama_nb.client import Client, parse_host

from .conftest import GEMMA, SMOLLM, model_file
from .server_fixtures import live_server  # noqa: F401  (the `live` fixture)

GREEDY = {"temperature": 0, "seed": 1}


@pytest.fixture
def api(live: Any) -> Client:
    return Client(live.url)


@pytest.mark.parametrize(("given", "url"), [
    (None, "http://127.0.0.1:11434"),
    ("", "http://127.0.0.1:11434"),
    ("localhost", "http://localhost:11434"),
    ("example.com:8000", "http://example.com:8000"),
    ("0.0.0.0:11500", "http://127.0.0.1:11500"),
    (":9000", "http://127.0.0.1:9000"),
    ("https://example.com", "https://example.com:443"),
    ("http://example.com/", "http://example.com:80"),
    ("http://hub.example/user/ada/proxy/8000/", "http://hub.example:80/user/ada/proxy/8000"),
    ("[::1]:11434", "http://[::1]:11434"),
])
def test_parse_host(given: str | None, url: str) -> None:
    assert parse_host(given) == url


def test_catalog_calls_return_the_managers_types(api: Client, live: Any) -> None:
    listing = api.list()
    assert isinstance(listing, ListResponse)
    names = {m.name for m in listing.models}
    assert names == {m.name for m in live.manager.list().models} and {SMOLLM, GEMMA} <= names
    info = api.show(SMOLLM)
    assert isinstance(info, ShowResponse) and info.details.family == "llama"
    assert info.capabilities == live.manager.show(SMOLLM).capabilities
    assert api.version()


def test_chat_and_generate_match_the_manager(api: Client, live: Any) -> None:
    messages = [{"role": "user", "content": "Name three colours."}]
    over_http = api.chat(model=SMOLLM, messages=messages, stream=False, options={**GREEDY, "num_predict": 10})
    in_process = live.manager.chat(model=SMOLLM, messages=messages, stream=False,
                                   options={**GREEDY, "num_predict": 10})
    assert isinstance(over_http, ChatResponse) and over_http.eval_count == 10
    assert over_http.message.content == in_process.message.content
    chunks = list(api.chat(model=SMOLLM, messages=messages, options={**GREEDY, "num_predict": 10}))
    assert all(isinstance(c, ChatResponse) for c in chunks) and chunks[-1].done
    assert "".join(c.message.content for c in chunks) == over_http.message.content
    gen = api.generate(model=GEMMA, prompt="The capital of France is", raw=True, stream=False,
                       options={**GREEDY, "num_predict": 6})
    assert isinstance(gen, GenerateResponse) and gen.eval_count == 6 and gen.response
    streamed = list(api.generate(model=GEMMA, prompt="The capital of France is", raw=True,
                                 options={**GREEDY, "num_predict": 6}))
    assert "".join(c.response for c in streamed) == gen.response


def test_closing_a_stream_stops_generation(api: Client, live: Any) -> None:
    stream = api.chat(model=SMOLLM, messages=[{"role": "user", "content": "Write a long essay."}],
                      options={**GREEDY, "num_predict": 2000})
    first = [next(stream) for _ in range(3)]
    stream.close()
    assert all(not c.done for c in first)
    after = api.chat(model=SMOLLM, messages=[{"role": "user", "content": "Hi"}], stream=False,
                     options={**GREEDY, "num_predict": 3})
    assert after.eval_count == 3  # the model is free again at once


def test_embed(api: Client) -> None:
    res = api.embed(model=SMOLLM, input=["a", "b"])
    assert isinstance(res, EmbedResponse) and len(res.embeddings) == 2 and len(res.embeddings[0]) > 100


def test_errors_carry_the_servers_text(api: Client) -> None:
    with pytest.raises(ModelNotFound) as info:
        api.chat(model="nosuchmodel:1b", messages=[{"role": "user", "content": "hi"}])
    assert "not found" in str(info.value) and info.value.name == "nosuchmodel:1b"
    with pytest.raises(ModelNotFound):
        api.show("nosuchmodel:1b")
    with pytest.raises(InvalidRequest, match="invalid format"):
        api.chat(model=SMOLLM, messages=[{"role": "user", "content": "hi"}], format="yaml")
    with pytest.raises(OllamaNbError, match="could not connect"):
        Client("http://127.0.0.1:9").list()


def test_copy_create_delete_load_unload(api: Client, live: Any) -> None:
    api.copy(SMOLLM, "client-copy")
    statuses = [p.status for p in api.create("client-made", f"FROM {SMOLLM}\nSYSTEM Be terse.\n")]
    assert statuses[-1] == "success"
    assert api.show("client-made").system == "Be terse."
    names = {m.name for m in api.list().models}
    assert {"client-copy:latest", "client-made:latest"} <= names
    api.delete("client-copy")
    api.delete("client-made")
    assert not {"client-copy:latest", "client-made:latest"} & {m.name for m in api.list().models}
    with pytest.raises(ModelNotFound):
        api.delete("client-copy")
    api.load(GEMMA)
    assert GEMMA in {m.name for m in api.ps().models}
    assert api.unload(GEMMA) is True
    assert GEMMA not in {m.name for m in api.ps().models}
    assert api.unload(GEMMA) is False


def test_pull_and_create_from_an_uploaded_gguf(tmp_path: Path) -> None:
    """An empty server: pull a bundled model, then create one from a local GGUF, whose bytes
    the client uploads as a blob first (as ``ollama create`` does)."""
    from ollama_nb.manager.core import ModelManager
    from ollama_nb.models.store import Store
    from ollama_nb.server.lifecycle import serve

    manager = ModelManager(Store(tmp_path / "empty"))
    with serve(manager, "127.0.0.1", 0) as server:
        api = Client(server.url)
        events = list(api.pull(SMOLLM))
        assert events[-1].status == "success"
        assert any(e.total and e.completed == e.total for e in events)
        (tmp_path / "work").mkdir()
        (tmp_path / "work" / "model.gguf").symlink_to(model_file(SMOLLM))
        api.delete(SMOLLM)  # so the server holds no copy of those bytes
        progress = list(api.create("uploaded", "FROM ./model.gguf\nPARAMETER num_ctx 512\n",
                                   base_dir=str(tmp_path / "work")))
        assert progress[0].status.startswith("copying file sha256:")
        assert progress[1].completed == progress[1].total and progress[-1].status == "success"
        assert "num_ctx" in (api.show("uploaded").parameters or "")
        reply = api.chat(model="uploaded", messages=[{"role": "user", "content": "Hi"}], stream=False,
                         options={**GREEDY, "num_predict": 3})
        assert reply.eval_count == 3
    manager.close()


def test_connect_switches_the_notebook_api_to_the_server(live: Any) -> None:
    import ollama_nb
    from ollama_nb.notebook import connection as backend

    backend.connect(live.url)
    try:
        assert isinstance(backend.current(), Client) and backend.connected_url() == live.url
        reply = ollama_nb.chat(SMOLLM, "Say hi", options={**GREEDY, "num_predict": 4})
        assert reply.eval_count == 4
        df = ollama_nb.compare([SMOLLM], "Hi", options={**GREEDY, "num_predict": 3})
        assert df.iloc[0]["eval_count"] == 3 and df.iloc[0]["ttft_s"] > 0
    finally:
        backend.connect(None)
    assert backend.connected_url() is None

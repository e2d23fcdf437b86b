"""Ollama's native API over HTTP: a real server on loopback, real models, the official client."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import threading
import time

import aiohttp
import ollama
import pytest

from .conftest import GEMMA, SMOLLM, model_file
from .registry_fixture import RegistryFixture
from .server_fixtures import FAST, http, live_server, ollama_client  # noqa: F401  (fixtures)

TIMINGS = ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration",
           "eval_count", "eval_duration")
COUNTING = {"model": SMOLLM, "prompt": "1, 2, 3, 4, 5, 6, 7, 8,", "raw": True,
            "options": {"temperature": 0, "num_predict": 100000}}


def wait_for(predicate, timeout: float = 30.0) -> bool:
    """Poll until ``predicate()``; the timeout only turns a hang into a failure."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def runner_of(live, name):
    return live.manager.scheduler.get(live.manager.spec(name).ref.full)


# ---- general ---------------------------------------------------------------------------------


def test_root_version_and_methods(live):
    root = http(live.url, "GET", "/")
    assert (root.status, root.body) == (200, b"Ollama is running")
    assert root.headers["Content-Type"].startswith("text/plain")
    assert http(live.url, "HEAD", "/").status == 200
    version = http(live.url, "GET", "/api/version")
    assert version.status == 200 and version.headers["Content-Type"] == "application/json; charset=utf-8"
    assert list(version.json()) == ["version"] and version.json()["version"].count(".") == 2
    assert http(live.url, "HEAD", "/api/version").status == 200
    assert http(live.url, "HEAD", "/api/tags").status == 200
    wrong = http(live.url, "GET", "/api/show")
    assert (wrong.status, wrong.body) == (405, b"405 method not allowed")
    assert http(live.url, "HEAD", "/api/ps").status == 405
    assert http(live.url, "POST", "/api/tags", {}).status == 405
    missing = http(live.url, "GET", "/api/nothing")
    assert (missing.status, missing.body) == (404, b"404 page not found")


# ---- inference with the official client ------------------------------------------------------


def test_generate_stream_and_not_stream_agree(client):
    client.generate(model=SMOLLM, prompt="Name a colour.", options=FAST)  # warm: same KV state below
    chunks = list(client.generate(model=SMOLLM, prompt="Name a colour.", options=FAST, stream=True))
    whole = client.generate(model=SMOLLM, prompt="Name a colour.", options=FAST)
    assert whole.done and whole.done_reason == "length" and whole.eval_count == FAST["num_predict"]
    assert whole.response and whole.context and whole.total_duration >= whole.eval_duration > 0
    assert all(not c.done for c in chunks[:-1]) and chunks[-1].done
    assert "".join(c.response for c in chunks) == whole.response
    assert chunks[-1].context == whole.context


def test_chat_with_logprobs_over_http(client):
    reply = client.chat(model=SMOLLM, messages=[{"role": "user", "content": "Hi"}],
                        options=FAST, logprobs=True, top_logprobs=3)
    assert reply.message.role == "assistant" and reply.message.content
    assert reply.logprobs and len(reply.logprobs) == reply.eval_count == FAST["num_predict"]
    first = reply.logprobs[0]
    assert first.logprob <= 0 and len(first.top_logprobs) == 3
    assert math.isclose(first.top_logprobs[0].logprob, first.logprob, abs_tol=1e-4)  # greedy picks the best
    streamed = list(client.chat(model=SMOLLM, messages=[{"role": "user", "content": "Hi"}],
                                options=FAST, logprobs=True, stream=True))
    token_chunks = [c for c in streamed if not c.done]
    assert all(c.logprobs and len(c.logprobs) == 1 for c in token_chunks)
    assert "".join(c.message.content for c in streamed) == reply.message.content
    generated = client.generate(model=SMOLLM, prompt="Hi", options=FAST, logprobs=True, top_logprobs=2)
    assert len(generated.logprobs) == FAST["num_predict"] and len(generated.logprobs[0].top_logprobs) == 2


def test_embed_and_legacy_embeddings(client):
    batch = client.embed(model=SMOLLM, input=["a cat", "a dog"])
    assert len(batch.embeddings) == 2 and batch.prompt_eval_count > 0
    assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-3) for v in batch.embeddings)
    legacy = client.embeddings(model=SMOLLM, prompt="a cat")
    assert len(legacy.embedding) == len(batch.embeddings[0])
    assert client.embeddings(model=SMOLLM, prompt="").embedding == []


def test_tags_give_each_model_the_capabilities_show_gives(live, client):
    template = "{{ if .Tools }}{{ json .Tools }}{{ end }}{{ .Prompt }}{{ if .Suffix }}{{ .Suffix }}{{ end }}"
    assert client.create(model="tags-caps", from_=SMOLLM, template=template).status == "success"
    try:
        models = {m["model"]: m for m in http(live.url, "GET", "/api/tags").json()["models"]}
        assert models["tags-caps:latest"]["capabilities"] == ["completion", "tools", "insert"]
        assert models[SMOLLM]["capabilities"] == ["completion"]
        for name, entry in models.items():
            assert entry["capabilities"] == client.show(name).capabilities
    finally:
        client.delete("tags-caps")


def test_list_show_and_ps(client):
    client.generate(model=SMOLLM, prompt="", keep_alive="5m")  # load only
    names = {m.model for m in client.list().models}
    assert {SMOLLM, GEMMA} <= names
    info = client.show(SMOLLM)
    assert "completion" in info.capabilities and info.modelinfo["general.architecture"] == "llama"
    assert info.modelfile.startswith('# Modelfile generated by "ollama show"')
    loaded = {m.model: m for m in client.ps().models}
    assert SMOLLM in loaded and loaded[SMOLLM].context_length > 0 and loaded[SMOLLM].size > 0


def test_load_and_unload_by_empty_prompt(live):
    loaded = http(live.url, "POST", "/api/generate", {"model": GEMMA, "stream": False})
    assert loaded.json()["done_reason"] == "load"
    unloaded = http(live.url, "POST", "/api/chat", {"model": GEMMA, "messages": [], "keep_alive": 0,
                                                   "stream": False})
    assert unloaded.json()["done_reason"] == "unload" and unloaded.json()["message"]["role"] == "assistant"
    assert GEMMA not in [m["model"] for m in http(live.url, "GET", "/api/ps").json()["models"]]


# ---- NDJSON framing --------------------------------------------------------------------------


def test_ndjson_stream_is_the_default_and_ends_with_metrics(live):
    reply = http(live.url, "POST", "/api/generate", {"model": SMOLLM, "prompt": "Hello", "options": FAST})
    assert reply.status == 200 and reply.headers["Content-Type"] == "application/x-ndjson"
    raw_lines = reply.body.decode().split("\n")
    assert raw_lines[-1] == "" and all(raw_lines[:-1])  # one object per line, newline-terminated
    lines = [json.loads(line) for line in raw_lines[:-1]]
    assert len(lines) == FAST["num_predict"] + 1
    for line in lines[:-1]:
        assert line["done"] is False and line["model"] == SMOLLM and line["created_at"].endswith("Z")
        assert "done_reason" not in line and "eval_count" not in line
    final = lines[-1]
    assert final["done"] is True and final["done_reason"] == "length" and final["response"] == ""
    assert all(isinstance(final[key], int) and final[key] > 0 for key in TIMINGS)
    assert final["context"]
    single = http(live.url, "POST", "/api/chat", {"model": SMOLLM, "stream": False, "options": FAST,
                                                  "messages": [{"role": "user", "content": "Hello"}]})
    assert single.headers["Content-Type"] == "application/json; charset=utf-8"
    body = single.json()
    assert body["done"] is True and body["message"]["content"] and all(key in body for key in TIMINGS)


def _events(body: bytes) -> list[dict]:
    """The JSON of each ``data:`` event of an SSE body (comments such as pings skipped)."""
    events = [block for block in body.decode().split("\n\n") if block.strip()]
    assert all(block.startswith("data: ") and "\n" not in block for block in events), events
    return [json.loads(block.removeprefix("data: ")) for block in events]


def test_a_request_that_accepts_events_gets_the_same_chunks_as_sse(live):
    """What a browser behind jupyter-server-proxy asks for: the proxy streams only responses to
    requests that accept text/event-stream, and buffers NDJSON whole."""
    body = {"model": SMOLLM, "messages": [{"role": "user", "content": "Hello"}],
            "options": {**FAST, "temperature": 0, "seed": 1}}
    ndjson = http(live.url, "POST", "/api/chat", body)
    sse = http(live.url, "POST", "/api/chat", body, headers={"Accept": "text/event-stream"})
    assert sse.status == 200 and sse.headers["Content-Type"] == "text/event-stream"
    assert sse.headers["Cache-Control"] == "no-cache"
    events = _events(sse.body)
    lines = [json.loads(line) for line in ndjson.body.decode().splitlines()]
    assert [e["message"]["content"] for e in events] == [line["message"]["content"] for line in lines]
    assert events[-1]["done"] is True and events[-1]["eval_count"] == FAST["num_predict"]
    assert not any(e["done"] for e in events[:-1])
    # errors before the stream starts keep their status, whatever the client accepts
    missing = http(live.url, "POST", "/api/chat", {**body, "model": "nosuchmodel:1b"},
                   headers={"Accept": "text/event-stream"})
    assert missing.status == 404 and missing.json() == {"error": "model 'nosuchmodel:1b' not found"}


def test_cancel_by_request_id_ends_the_stream_and_the_generation(live):
    """What a Stop button behind jupyter-server-proxy does: the proxy keeps our connection open
    after the browser has gone, so the page names its request and asks for it to be cancelled."""
    from http.client import HTTPConnection
    from urllib.parse import urlsplit

    records = []
    live.manager.observers.append(records.append)
    host = urlsplit(live.url)
    conn = HTTPConnection(host.hostname, host.port, timeout=60)
    conn.request("POST", "/api/generate", body=json.dumps(COUNTING),
                 headers={"X-Request-Id": "page-1", "Accept": "text/event-stream"})
    response = conn.getresponse()
    first = response.readline()  # the first event: generation is under way
    assert first.startswith(b"data: ")
    assert http(live.url, "POST", "/api/cancel", {"id": "nope"}).status == 404
    assert http(live.url, "POST", "/api/cancel", {}).json() == {"error": "id is required"}
    cancelled = http(live.url, "POST", "/api/cancel", {"id": "page-1"})
    assert cancelled.status == 200 and cancelled.json() == {"cancelled": "page-1"}
    events = _events(first + response.read())
    conn.close()
    assert events[-1] == {"error": "request cancelled"}
    assert wait_for(lambda: [r.done_reason for r in records] == ["cancel"])
    assert records[0].timings.eval_count < 1000
    assert http(live.url, "POST", "/api/cancel", {"id": "page-1"}).status == 404  # it is over


def test_error_after_streaming_began_is_the_last_line(live, monkeypatch):
    """A failure mid-generation can no longer change the status: it becomes a final error line."""
    real_generate = live.manager.generate

    def failing(request):
        chunks = real_generate(request)

        def first_then_fail():
            try:
                yield next(chunks)
                raise RuntimeError("the GPU caught fire\n(traceback stays in the log)")
            finally:
                chunks.close()

        return first_then_fail()

    monkeypatch.setattr(live.manager, "generate", failing)
    reply = http(live.url, "POST", "/api/generate", {"model": SMOLLM, "prompt": "Hi", "options": FAST})
    assert reply.status == 200
    lines = reply.lines()
    assert len(lines) == 2 and lines[0]["done"] is False
    assert lines[1] == {"error": "the GPU caught fire (traceback stays in the log)"}
    with pytest.raises(ollama.ResponseError, match="the GPU caught fire"):
        list(ollama.Client(host=live.url).generate(model=SMOLLM, prompt="Hi", options=FAST, stream=True))


# ---- errors before streaming get their status ------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "status", "error"),
    [
        ("/api/generate", {"model": "nosuch", "prompt": "x"}, 404, "model 'nosuch' not found"),
        ("/api/generate", {"prompt": "x"}, 404, "model '' not found"),
        ("/api/chat", {"messages": [{"role": "user", "content": "x"}]}, 400, "model is required"),
        ("/api/chat", {"model": "bad name!", "messages": [{"role": "user", "content": "x"}]}, 400,
         "invalid model name"),
        ("/api/generate", {"model": SMOLLM, "prompt": "x", "logprobs": True, "top_logprobs": 21}, 400,
         "top_logprobs must be between 0 and 20"),
        ("/api/generate", {"model": SMOLLM, "prompt": "x", "options": {"temperature": "hot"}}, 400,
         'option "temperature" must be of type float32'),
        ("/api/generate", {"model": SMOLLM, "prompt": "x", "keep_alive": "300"}, 400,
         'time: missing unit in duration "300"'),
        ("/api/generate", {"model": SMOLLM, "prompt": "x", "raw": True, "system": "s"}, 400,
         "raw mode does not support template, system, or context"),
        ("/api/embed", {"model": "nosuch", "input": "x"}, 404, 'model "nosuch" not found, try pulling it first'),
        ("/api/embed", {"model": SMOLLM, "input": ["ok", 3]}, 400, "invalid input type"),
        ("/api/show", {}, 400, "model is required"),
        ("/api/show", {"model": "nosuch"}, 404, "model 'nosuch' not found"),
        ("/api/show", {"model": "NoSuch:1b"}, 404, "model 'NoSuch:1b' not found"),
        ("/api/chat", {"model": "nosuch", "messages": [{"role": "user", "content": "x"}]}, 404,
         "model 'nosuch' not found"),
        ("/api/pull", {"model": "not a name"}, 400, "invalid model name"),
        ("/api/copy", {"source": "nosuch", "destination": "x"}, 404, 'model "nosuch" not found'),
        ("/api/copy", {"source": SMOLLM, "destination": "bad name!"}, 400, 'destination "bad name!" is invalid'),
    ],
)
def test_errors_get_ollamas_status_and_text(live, path, body, status, error):
    reply = http(live.url, "POST", path, body)  # streaming requests too: nothing was sent yet
    assert reply.status == status
    assert reply.headers["Content-Type"] == "application/json; charset=utf-8"
    assert reply.json()["error"].startswith(error)


def test_delete_unknown_model_is_404(client):
    with pytest.raises(ollama.ResponseError) as err:
        client.delete("nosuch:latest")
    assert err.value.status_code == 404 and err.value.error == "model 'nosuch:latest' not found"
    with pytest.raises(ollama.ResponseError) as err:
        client.delete("nosuch")
    assert err.value.status_code == 404 and err.value.error == "model 'nosuch' not found"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"", "missing request body"),
        (b"  \n", "missing request body"),
        (b'{"model":', "unexpected EOF"),
        (b'{"model": "m",}', "invalid character '}' looking for beginning of object key string"),
        (b"{model}", "invalid character 'm' looking for beginning of object key string"),
        (b"nonsense", "invalid character 'o' in literal"),
        (b'{"model": 5}', "json: cannot unmarshal number into Go struct field GenerateRequest.model of type string"),
        (b'{"stream": "yes"}', "json: cannot unmarshal string into Go struct field GenerateRequest.stream of type bool"),
        (b'{"context": [1, "a"]}', "json: cannot unmarshal string into Go struct field GenerateRequest.context of type int"),
        (b"[1, 2]", "json: cannot unmarshal array into Go value of type api.GenerateRequest"),
    ],
)
def test_malformed_bodies_are_400_not_500(live, body, error):
    reply = http(live.url, "POST", "/api/generate", body)
    assert reply.status == 400
    message = reply.json()["error"]
    if error.startswith("invalid character 'o'"):  # Go names the offending letter; so do we, roughly
        assert message.startswith("invalid character")
    else:
        assert message == error


def test_unknown_fields_and_nulls_are_ignored(live):
    reply = http(live.url, "POST", "/api/generate", {"model": SMOLLM, "prompt": "Hi", "stream": None,
                                                     "brand_new_field": {"x": 1}, "options": FAST})
    assert reply.status == 200 and reply.lines()[-1]["done"] is True  # null stream = default (true)


# ---- model management with the official client -----------------------------------------------


def test_copy_show_delete(client):
    assert client.copy(SMOLLM, "copied:v1").status == "success"
    assert "copied:v1" in {m.model for m in client.list().models}
    assert client.show("copied:v1").details.family == "llama"
    assert client.delete("copied:v1").status == "success"
    with pytest.raises(ollama.ResponseError) as err:
        client.show("copied:v1")
    assert err.value.status_code == 404


def test_pull_bundled_model_offline(client):
    events = list(client.pull(SMOLLM, stream=True))
    assert events[0].status == "pulling manifest" and events[-1].status == "success"
    assert any(e.digest and e.total for e in events)
    assert client.pull(SMOLLM).status == "success"  # non-streamed: the last status only


def test_push_through_the_api_to_a_registry_and_the_library_refused(client, monkeypatch):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)  # a proxy would capture 127.0.0.1 (the server is in-process)
    with pytest.raises(ollama.ResponseError) as err:
        client.push(SMOLLM)  # registry.ollama.ai: never without the user's ollama.com key
    assert "needs your ollama.com key" in err.value.error
    registry = RegistryFixture().start()
    try:
        name = f"{registry.host}/me/smol:v1"
        client.copy(SMOLLM, name)
        events = list(client.push(name, insecure=True, stream=True))
        assert events[0].status == "retrieving manifest" and events[-1].status == "success"
        assert any(e.status.startswith("pushing ") and e.digest and e.completed == e.total for e in events)
        manifest = registry.manifests[("me", "smol", "v1")]
        assert {layer["digest"] for layer in json.loads(manifest)["layers"]} <= registry.repo_blobs[("me", "smol")]
    finally:
        client.delete(name)
        registry.stop()


def test_create_from_a_model_with_layers(client, live):
    statuses = [e.status for e in client.create(
        model="pirate:v1", from_=SMOLLM, system="You are a pirate.", license="MIT",
        parameters={"temperature": 0.5, "stop": ["Arr"]},
        messages=[{"role": "user", "content": "Ahoy"}, {"role": "assistant", "content": "Arr"}],
        stream=True)]
    assert statuses[-1] == "success" and "writing manifest" in statuses
    info = client.show("pirate:v1")
    raw = http(live.url, "POST", "/api/show", {"model": "pirate:v1"}).json()
    assert raw["system"] == "You are a pirate." and info.license == "MIT"
    assert raw["messages"] == [{"role": "user", "content": "Ahoy"}, {"role": "assistant", "content": "Arr"}]
    assert "temperature" in info.parameters and '"Arr"' in info.parameters
    assert info.details.parent_model == SMOLLM
    reply = client.chat(model="pirate:v1", messages=[{"role": "user", "content": "Hi"}], options=FAST)
    assert reply.done
    assert client.delete("pirate:v1").status == "success"


def test_create_from_an_uploaded_gguf(client, live):
    path = model_file(SMOLLM)
    digest = client.create_blob(path)  # HEAD-less POST; the blob is known already: 200
    assert http(live.url, "HEAD", f"/api/blobs/{digest}").status == 200
    final = client.create(model="uploaded:v1", files={path.name: digest}, template="{{ .Prompt }}")
    assert final.status == "success"
    info = client.show("uploaded:v1")
    assert info.template == "{{ .Prompt }}" and info.details.parent_model == ""
    assert client.generate(model="uploaded:v1", prompt="Once upon", options=FAST).eval_count == 8
    client.delete("uploaded:v1")


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"model": "x"}, 400, "neither 'from' or 'files' was specified"),
        ({"model": "x", "files": {}}, 400, "no files provided to convert"),
        ({"model": "x", "from": "/etc/passwd"}, 400, "invalid model name"),
        ({"model": "x", "files": {"../m.gguf": "sha256:" + "a" * 64}}, 400, "file path must be relative"),
        ({"model": "x", "files": {"m.gguf": "nope"}}, 400, "invalid digest format"),
        ({"model": "x", "files": {"m.gguf": "sha256:" + "a" * 64}}, 404, 'blob "sha256:' + "a" * 64),
        ({"model": "x", "from": SMOLLM, "parameters": {"bogus": 1}}, 400, "unknown parameter 'bogus'"),
        ({"model": "bad name!", "from": SMOLLM}, 400, "invalid model name"),
    ],
)
def test_create_refusals(live, body, status, error):
    reply = http(live.url, "POST", "/api/create", body)
    assert reply.status == status and reply.json()["error"].startswith(error)


def test_blob_upload_is_verified(live):
    data = b"a small blob for the upload test\n" * 1000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert http(live.url, "HEAD", f"/api/blobs/{digest}").status == 404
    assert http(live.url, "POST", f"/api/blobs/{digest}", data).status == 201
    assert http(live.url, "POST", f"/api/blobs/{digest}", data).status == 200  # already there
    assert http(live.url, "HEAD", f"/api/blobs/{digest}").status == 200
    assert live.manager.store.blob_path(digest).read_bytes() == data
    wrong = "sha256:" + "0" * 64
    mismatch = http(live.url, "POST", f"/api/blobs/{wrong}", data)
    assert mismatch.status == 400
    assert mismatch.json()["error"] == f'digest mismatch, expected "{wrong}", got "{digest}"'
    assert not live.manager.store.has_blob(wrong)
    bad = http(live.url, "POST", "/api/blobs/sha256:xyz", data)
    assert (bad.status, bad.json()["error"]) == (400, "invalid digest format")


# ---- beyond Ollama ----------------------------------------------------------------------------


def test_tokenize_detokenize_roundtrip(live):
    text = "Hello, notebook world!"
    tokens = http(live.url, "POST", "/api/tokenize", {"model": SMOLLM, "content": text}).json()["tokens"]
    assert tokens and all(isinstance(t, int) for t in tokens)
    back = http(live.url, "POST", "/api/detokenize", {"model": SMOLLM, "tokens": tokens}).json()
    assert back == {"content": text}
    with_bos = http(live.url, "POST", "/api/tokenize", {"model": GEMMA, "prompt": text, "add_special": True})
    plain = http(live.url, "POST", "/api/tokenize", {"model": GEMMA, "prompt": text})
    assert with_bos.json()["tokens"][1:] == plain.json()["tokens"]
    bad = http(live.url, "POST", "/api/detokenize", {"model": SMOLLM, "tokens": [10**9]})
    assert bad.status == 400 and "out of range" in bad.json()["error"]
    assert http(live.url, "POST", "/api/tokenize", {"content": "x"}).json() == {"error": "model is required"}


# ---- concurrency, queueing, disconnects -------------------------------------------------------


async def _first_lines(session, url, body, n):
    response = await session.post(url + "/api/generate", json=body)
    assert response.status == 200
    lines = [json.loads(await response.content.readline()) for _ in range(n)]
    return response, lines


def test_client_disconnect_cancels_generation(live, monkeypatch):
    """Hanging up mid-stream closes the manager's iterator, which cancels generation: the
    iterator is closed long before the 100000 tokens asked for, and the model is free again."""
    produced, closed = [], threading.Event()
    real_generate = live.manager.generate

    def watched(request):
        chunks = real_generate(request)

        def relay():
            try:
                for chunk in chunks:
                    produced.append(chunk)
                    yield chunk
            finally:
                chunks.close()  # returns once the worker has let go of the sequence
                closed.set()

        return relay()

    monkeypatch.setattr(live.manager, "generate", watched)

    async def hang_up():
        async with aiohttp.ClientSession() as session:
            response, lines = await _first_lines(session, live.url, COUNTING, 2)
            response.close()
            return lines

    lines = asyncio.run(hang_up())
    assert [line["done"] for line in lines] == [False, False]
    assert closed.wait(60), "generation was not cancelled after the client went away"
    assert not any(chunk.done for chunk in produced) and len(produced) < 1000
    assert wait_for(lambda: runner_of(live, SMOLLM).refcount == 0)
    monkeypatch.undo()
    after = http(live.url, "POST", "/api/generate", {"model": SMOLLM, "prompt": "Hi", "stream": False,
                                                     "options": FAST})
    assert after.status == 200 and after.json()["eval_count"] == FAST["num_predict"]
    assert SMOLLM in [m["model"] for m in http(live.url, "GET", "/api/ps").json()["models"]]


def test_hanging_up_on_a_non_streamed_request_cancels_it_too(live, monkeypatch):
    """``stream: false`` is what ollama-python sends by default: the server still drives the
    stream itself, so an interrupted notebook call does not leave the model busy."""
    produced, closed = [], threading.Event()
    real_generate = live.manager.generate

    def watched(request):
        chunks = real_generate(request)

        def relay():
            try:
                for chunk in chunks:
                    produced.append(chunk)
                    yield chunk
            finally:
                chunks.close()
                closed.set()

        return relay()

    monkeypatch.setattr(live.manager, "generate", watched)

    async def give_up():
        async with aiohttp.ClientSession() as session:
            request = asyncio.ensure_future(
                session.post(live.url + "/api/generate", json={**COUNTING, "stream": False}))
            await asyncio.to_thread(wait_for, lambda: len(produced) >= 2)
            request.cancel()  # the connection closes with nothing received
            with pytest.raises(asyncio.CancelledError):
                await request

    asyncio.run(give_up())
    assert closed.wait(60), "generation went on after the client gave up"
    assert not any(chunk.done for chunk in produced)
    assert wait_for(lambda: runner_of(live, SMOLLM).refcount == 0)


def test_two_models_stream_at_the_same_time(live):
    async def both():
        async with aiohttp.ClientSession() as session:
            # smollm2 counts "forever"; gemma3 must still answer while it does
            long_response, _ = await _first_lines(session, live.url, COUNTING, 1)
            short = await session.post(live.url + "/api/generate",
                                       json={"model": GEMMA, "prompt": "Hi", "options": FAST})
            short_lines = [json.loads(line) async for line in short.content]
            still_counting = runner_of(live, SMOLLM).refcount == 1
            long_response.close()
            pair = [session.post(live.url + "/api/generate", json={"model": m, "prompt": "Hi", "options": FAST})
                    for m in (SMOLLM, GEMMA)]
            finals = []
            for response in await asyncio.gather(*pair):
                finals.append([json.loads(line) async for line in response.content][-1])
            return short_lines, still_counting, finals

    short_lines, still_counting, finals = asyncio.run(both())
    assert short_lines[-1]["done"] is True and short_lines[-1]["eval_count"] == FAST["num_predict"]
    assert still_counting, "gemma3 waited for smollm2 instead of running beside it"
    assert [(f["model"], f["done"]) for f in finals] == [(SMOLLM, True), (GEMMA, True)]


def test_queue_full_is_503_and_requests_run_in_arrival_order(live, monkeypatch):
    monkeypatch.setenv("OLLAMA_MAX_QUEUE", "2")
    order: list[tuple[str | None, int]] = []
    live.manager.observers.append(lambda record: order.append((record.done_reason, record.timings.eval_count)))

    async def scenario():
        async with aiohttp.ClientSession() as session:
            running, _ = await _first_lines(session, live.url, COUNTING, 1)  # owns the model
            waiting = []
            for k, n in enumerate((3, 5), start=1):  # queued one after the other
                body = {"model": SMOLLM, "prompt": "Hi", "stream": False,
                        "options": {"temperature": 0, "num_predict": n}}
                waiting.append(asyncio.ensure_future(session.post(live.url + "/api/generate", json=body)))
                await asyncio.to_thread(wait_for, lambda k=k: live.manager.scheduler.admission.waiting == k)
            refused = await session.post(live.url + "/api/generate",
                                         json={"model": SMOLLM, "prompt": "Hi", "options": FAST})
            refusal = (refused.status, await refused.json())
            running.close()  # cancels the counting; the queue drains in order
            answers = [await (await w).json() for w in waiting]
            return refusal, answers

    try:
        refusal, answers = asyncio.run(scenario())
    finally:
        live.manager.observers.clear()
    assert refusal == (503, {"error": "server busy, please try again.  maximum pending requests exceeded"})
    assert [a["eval_count"] for a in answers] == [3, 5]
    assert [n for reason, n in order if reason != "cancel"] == [3, 5]
    assert wait_for(lambda: any(reason == "cancel" for reason, _ in order))  # the counting one, abandoned
    assert [reason for reason, _ in order].count("cancel") == 1


def test_think_is_refused_as_ollama_refuses_it(client, live):
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model=SMOLLM, messages=[{"role": "user", "content": "hi"}], think=True)
    assert (err.value.status_code, err.value.error) == (400, f'"{SMOLLM}" does not support thinking')
    bad = http(live.url, "POST", "/api/generate", {"model": SMOLLM, "prompt": "hi", "think": "ultra"})
    assert bad.status == 400
    assert bad.json()["error"] == 'invalid think value: "ultra" (must be "high", "medium", "low", "max", true, or false)'
    off = client.chat(model=SMOLLM, messages=[{"role": "user", "content": "hi"}], think=False,
                      options={"num_predict": 2})
    assert off.done  # false is always accepted

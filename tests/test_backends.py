"""Named backends beside the kernel's models, on real engines: a second ``ollama-nb serve``
process as a remote Ollama, llama.cpp's ``llama-server`` as the OpenAI-compatible engine (and the
second server's own ``/v1`` as another one, which reports usage but no timings, as vLLM does)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from ollama_nb.backends.router import Router
from ollama_nb.backends.settings import BackendSpec, route_from_env, specs_from_env
from ollama_nb.base.errors import BackendError, BackendUnauthorized, InvalidRequest, NotSupported
from ollama_nb.base.timings import Timings
from ollama_nb.notebook import connection

from .backend_fixtures import LLAMA_ALIAS, LLAMA_KEY, free_port, start_llama_server, start_ollama_nb
from .conftest import GEMMA, SMOLLM, model_file
from .server_fixtures import store_view

GREEDY = {"temperature": 0, "seed": 1, "num_predict": 12}
QUESTION = [{"role": "user", "content": "Name a colour."}]
REMOTE = f"remote/{SMOLLM}"
LLAMA = f"llama/{LLAMA_ALIAS}"


@pytest.fixture(autouse=True)
def _llama_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAMA_KEY", LLAMA_KEY)


@pytest.fixture(scope="module")
def router(manager: Any, remote_ollama: Any, llama_server: Any) -> Router:
    """The kernel's manager, the remote Ollama, llama-server, and the remote's /v1 as ``ours``."""
    r = Router(manager)
    r.register(BackendSpec("remote", remote_ollama.url))
    r.register(BackendSpec("llama", llama_server.url + "/v1", kind="openai", api_key_env="LLAMA_KEY"))
    r.register(BackendSpec("ours", remote_ollama.url + "/v1", kind="openai"))
    return r


@pytest.fixture(scope="module")
def local_reply(manager: Any) -> str:
    """What the kernel's own smollm2 says, greedy: every engine runs the same GGUF on the same llama.cpp."""
    return manager.chat(model=SMOLLM, messages=QUESTION, options=GREEDY, stream=False).message.content


@pytest.fixture
def records(manager: Any) -> Iterator[list[Any]]:
    """The request records the kernel's observers (its dashboard, /metrics) receive meanwhile."""
    seen: list[Any] = []
    manager.observers.append(seen.append)
    yield seen
    manager.observers.remove(seen.append)


# ---- settings and timings (no engine) ----------------------------------------------------------


def test_backend_names_kinds_and_key_variables_are_checked() -> None:
    for bad in ({"name": "a/b"}, {"name": "gpu.box"}, {"name": "local"}, {"kind": "grpc"},
                {"api_key_env": "not a var"}, {"url": ""}):
        with pytest.raises(InvalidRequest):
            BackendSpec(**{"name": "gpu", "url": "http://x:1", **bad})
    assert BackendSpec("gpu", "http://x:1", api_key_env="K").api_key() is None


def test_backends_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"OLLAMA_NB_BACKENDS": json.dumps({
        "gpu": "http://gpu-box:11434",
        "vllm": {"url": "http://vllm:8000/v1", "kind": "openai", "api_key_env": "VLLM_API_KEY"}}),
        "OLLAMA_NB_ROUTE_BACKENDS": "1"}
    specs = specs_from_env(env)
    assert [(s.name, s.kind, s.api_key_env) for s in specs] == [("gpu", "ollama", None),
                                                                ("vllm", "openai", "VLLM_API_KEY")]
    assert route_from_env(env) and not route_from_env({})
    with pytest.raises(InvalidRequest, match="OLLAMA_NB_BACKENDS is not valid JSON"):
        specs_from_env({"OLLAMA_NB_BACKENDS": "{gpu: 1"})
    with pytest.raises(InvalidRequest, match="unknown settings"):
        specs_from_env({"OLLAMA_NB_BACKENDS": '{"gpu": {"url": "http://x", "api_key": "secret"}}'})


def test_the_notebook_registers_the_environments_backends_on_first_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_NB_BACKENDS", json.dumps({"hub": "http://gpu-box:11434"}))
    monkeypatch.setattr(connection, "_env_loaded", False)
    try:
        entry = connection.router().entry("hub")
        assert entry.spec.kind == "ollama" and entry.backend.url == "http://gpu-box:11434"
    finally:
        connection.unregister("hub")
    monkeypatch.setenv("OLLAMA_NB_BACKENDS", "[not json")
    monkeypatch.setattr(connection, "_env_loaded", False)
    connection.router()  # a typo costs one line, not the kernel's models
    assert "OLLAMA_NB_BACKENDS is not valid JSON" in connection.router().problems.pop("OLLAMA_NB_BACKENDS")


def test_timings_never_show_a_number_nobody_measured() -> None:
    t = Timings(total_duration=2_000_000_000, ttft_duration=500_000_000, eval_count=10,
                eval_duration=1_000_000_000, client_side=("ttft_duration", "total_duration", "eval_duration"),
                absent=("prompt_eval_duration", "load_duration", "queue_duration"))
    row = t.row()
    assert row["prompt_eval_s"] is None and row["load_s"] is None and row["queue_s"] is None
    assert row["tokens_per_second"] == 10.0 and row["ttft_s"] == 0.5
    assert row["timed_by"] == "client-side: tokens_per_second, ttft_s, eval_s, total_s"
    assert Timings(eval_count=1).row()["timed_by"] == "engine"


# ---- a remote Ollama ----------------------------------------------------------------------------


def test_remote_ollama_streams_the_kernels_reply_under_its_name(router: Router, local_reply: str,
                                                                records: list[Any], remote_ollama: Any) -> None:
    chunks = list(router.chat(model=REMOTE, messages=QUESTION, options=GREEDY, stream=True))
    assert len(chunks) > 3 and {c.model for c in chunks} == {REMOTE}
    assert {(c.remote_model, c.remote_host) for c in chunks} == {(SMOLLM, remote_ollama.url)}  # Ollama's fields
    assert "".join(c.message.content for c in chunks) == local_reply
    final = chunks[-1]
    assert final.done and final.eval_count == 12
    row = final.timings.row()
    assert row["timed_by"] == "client-side: ttft_s" and row["ttft_s"] > 0 and row["queue_s"] is None
    assert row["prompt_eval_s"] > 0  # the remote Ollama's own measurement
    (record,) = records
    assert record.model == REMOTE and record.endpoint == "chat" and record.timings is final.timings


def test_remote_ollama_keeps_list_ps_show_delete_and_pull(router: Router) -> None:
    names = [m.name for m in router.list().models]
    assert SMOLLM in names and REMOTE in names and f"remote/{GEMMA}" in names and LLAMA in names
    router.chat(model=REMOTE, messages=QUESTION, options=GREEDY, stream=False)
    assert REMOTE in [m.name for m in router.ps().models]  # llama-server has no ps: left out, no error
    assert router.show(REMOTE).details.family == "llama"
    router.delete(f"remote/{GEMMA}")
    assert f"remote/{GEMMA}" not in [m.name for m in router.list().models]
    assert GEMMA in [m.name for m in router.local().list().models]  # the kernel's copy is untouched
    events = list(router.pull(f"remote/{GEMMA}"))
    assert events[-1].status == "success" and any(e.total for e in events)  # progress with sizes
    assert f"remote/{GEMMA}" in [m.name for m in router.list().models]


# ---- OpenAI-compatible engines ------------------------------------------------------------------


def test_llama_server_streams_with_its_own_timings(router: Router, local_reply: str, records: list[Any]) -> None:
    chunks = list(router.chat(model=LLAMA, messages=QUESTION, options=GREEDY, stream=True))
    assert {c.model for c in chunks} == {LLAMA} and chunks[-1].done and chunks[-1].done_reason == "length"
    assert "".join(c.message.content for c in chunks) == local_reply  # the same GGUF, the same llama.cpp
    row = chunks[-1].timings.row()
    assert row["eval_count"] == 12 and row["prompt_eval_count"] > 0  # llama-server's own counts ...
    assert row["eval_s"] > 0 and row["prompt_eval_s"] > 0  # ... and milliseconds
    assert row["timed_by"] == "client-side: ttft_s, total_s" and row["load_s"] is None
    assert records[-1].model == LLAMA


def test_an_engine_without_timings_gets_them_measured_here_and_labelled(router: Router, local_reply: str) -> None:
    reply = router.chat(model=f"ours/{SMOLLM}", messages=QUESTION, options=GREEDY, stream=False)
    assert reply.message.content == local_reply and reply.model == f"ours/{SMOLLM}"
    row = reply.timings.row()
    assert row["eval_count"] == 12  # usage, from stream_options.include_usage
    assert row["prompt_eval_s"] is None and row["tokens_per_second"] > 0
    assert row["timed_by"] == "client-side: tokens_per_second, ttft_s, eval_s, total_s"


def test_response_format_and_raw_completion_on_llama_server(router: Router, manager: Any) -> None:
    schema = {"type": "object", "properties": {"colour": {"type": "string"}}, "required": ["colour"]}
    reply = router.chat(model=LLAMA, messages=[{"role": "user", "content": "Give me a colour as JSON."}],
                        format=schema, options={**GREEDY, "num_predict": 40}, stream=False)
    assert isinstance(json.loads(reply.message.content)["colour"], str)  # the grammar held
    raw = router.generate(model=LLAMA, prompt="The sky is", raw=True, options=GREEDY, stream=False)
    local = manager.generate(model=SMOLLM, prompt="The sky is", raw=True, options=GREEDY, stream=False)
    assert raw.response == local.response and raw.model == LLAMA  # /v1/completions: plain completion


def test_tool_calls_come_back_through_an_openai_engine(router: Router) -> None:
    from .conftest import TOOLS_MODEL, WEATHER_TOOL

    modelfile = Path(__file__).parent / "data" / "tools.Modelfile"
    statuses = [e.status for e in router.create(f"remote/{TOOLS_MODEL}", modelfile.read_text(),
                                                base_dir=str(modelfile.parent))]
    assert statuses[-1] == "success"
    reply = router.chat(model=f"ours/{TOOLS_MODEL}", tools=[WEATHER_TOOL], options={**GREEDY, "num_predict": 60},
                        messages=[{"role": "user", "content": "What is the weather in Paris?"}], stream=False)
    (call,) = reply.message.tool_calls
    assert call.function.name == "get_weather" and call.function.arguments == {"city": "Paris"}


def test_embeddings_through_an_openai_engine(router: Router, manager: Any) -> None:
    remote = router.embed(model=f"ours/{SMOLLM}", input=["cats purr", "dogs bark"])
    local = manager.embed(model=SMOLLM, input=["cats purr", "dogs bark"])
    assert remote.model == f"ours/{SMOLLM}" and len(remote.embeddings) == 2
    assert all(math.isclose(a, b, abs_tol=1e-5) for u, v in zip(remote.embeddings, local.embeddings, strict=True)
               for a, b in zip(u, v, strict=True))
    assert remote.timings.row()["timed_by"] == "client-side: total_s"


def test_what_an_engine_cannot_do_says_so(router: Router) -> None:
    for call in (lambda: router.pull(LLAMA), lambda: router.delete(LLAMA), lambda: router.show(LLAMA),
                 lambda: router.create(LLAMA, f"FROM {SMOLLM}"), lambda: router.unload(LLAMA)):
        with pytest.raises(NotSupported, match="not supported by this backend: 'llama' is an OpenAI-compatible"):
            call()
    with pytest.raises(InvalidRequest, match="cannot copy from backend 'remote' to backend 'local'"):
        router.copy(REMOTE, "mine")


def test_a_wrong_api_key_is_a_401_naming_the_variable(router: Router, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAMA_KEY", "not-the-key")
    with pytest.raises(BackendUnauthorized) as wrong:
        router.chat(model=LLAMA, messages=QUESTION, options=GREEDY)
    assert wrong.value.status == 401 and "LLAMA_KEY" in wrong.value.for_humans()
    monkeypatch.delenv("LLAMA_KEY")
    with pytest.raises(BackendUnauthorized) as unset:
        router.chat(model=LLAMA, messages=QUESTION, options=GREEDY)
    assert "set the environment variable LLAMA_KEY to its API key (LLAMA_KEY is not set)" in unset.value.for_humans()
    assert REMOTE in [m.name for m in router.list().models]  # the other backends still list
    assert "401" in router.problems["llama"]


# ---- failures that must not spread --------------------------------------------------------------


def test_an_unreachable_backend_is_one_line_and_the_others_keep_working(router: Router, local_reply: str) -> None:
    r = router.bound(router.local())
    r.register(BackendSpec("down", f"http://127.0.0.1:{free_port()}"))
    try:
        names = [m.name for m in r.list().models]
        assert REMOTE in names and LLAMA in names and not any(n.startswith("down/") for n in names)
        line = r.problems["down"]
        assert "\n" not in line and "backend 'down'" in line and "unreachable" in line
        with pytest.raises(BackendError) as exc:
            r.chat(model="down/anything", messages=QUESTION)
        assert exc.value.status == 502 and "backend 'down'" in str(exc.value)
        health = {h.name: h for h in r.health()}
        assert not health["down"].ok and health["remote"].ok and health["llama"].models == 1
        assert r.chat(model=REMOTE, messages=QUESTION, options=GREEDY, stream=False).message.content == local_reply
    finally:
        r.remove("down")


@pytest.mark.parametrize("kind", ["ollama", "openai"])
def test_a_backend_that_dies_mid_reply_leaves_the_partial_reply_marked(
        kind: str, manager: Any, shared_models: Path, tmp_path: Path, llama_binary: str) -> None:
    if kind == "ollama":
        engine = start_ollama_nb(store_view(shared_models, tmp_path / "store"))
        spec, model = BackendSpec("dying", engine.url), f"dying/{SMOLLM}"
    else:
        engine = start_llama_server(llama_binary, model_file(SMOLLM), api_key=None)
        spec, model = BackendSpec("dying", engine.url, kind="openai"), f"dying/{LLAMA_ALIAS}"
    r = Router(manager)
    r.register(spec)
    try:
        chunks = r.chat(model=model, messages=[{"role": "user", "content": "Tell a long story."}],
                        options={"temperature": 0, "num_predict": 400}, stream=True)
        result = connection.read_reply(chunks, model=model, interval=0,
                                       on_text=lambda text: engine.kill() if text else None)
    finally:
        engine.stop()
    assert result.interrupted and result.timings is None and result.text  # the text so far is kept
    assert result.error is not None and "backend 'dying'" in result.error and "\n" not in result.error
    assert "broken off: backend 'dying'" in result._repr_mimebundle_()[0]["text/plain"]  # and marked


# ---- the faces ----------------------------------------------------------------------------------


@pytest.fixture
def registered(remote_ollama: Any, llama_server: Any, manager: Any) -> Iterator[None]:
    """The notebook faces' own router, with the two engines, over the test manager."""
    previous = connection.use(manager)
    connection.register("remote", remote_ollama.url)
    connection.register("llama", llama_server.url, kind="openai", api_key_env="LLAMA_KEY")
    yield
    connection.unregister("remote")
    connection.unregister("llama")
    connection.use(previous)


def test_compare_across_three_backends_in_one_frame(registered: None, local_reply: str) -> None:
    import ollama_nb
    from ollama_nb.base.timings import COLUMNS

    models = [SMOLLM, REMOTE, LLAMA]
    df = ollama_nb.compare(models, "Name a colour.", options=GREEDY)
    assert list(df.columns) == ["model", "prompt", "reply", *COLUMNS, "error"]
    assert list(df["model"]) == models and (df["reply"] == local_reply).all() and df["error"].isna().all()
    assert (df["eval_count"] == 12).all() and (df["tokens_per_second"] > 0).all() and (df["ttft_s"] > 0).all()
    assert list(df["timed_by"]) == ["engine", "client-side: ttft_s", "client-side: ttft_s, total_s"]
    assert pd.isna(df.loc[1, "queue_s"]) and pd.isna(df.loc[2, "load_s"])  # not reported, not invented
    table = ollama_nb.list_backends()
    assert list(table["name"]) == ["local", "remote", "llama"] and (table["status"] == "ok").all()
    assert ollama_nb.chat(LLAMA_ALIAS, QUESTION, options=GREEDY, backend="llama").model == LLAMA


def test_magics_connect_list_chat_and_disconnect(registered: None, remote_ollama: Any, local_reply: str,
                                                 capsys: Any) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.extension_manager.load_extension("ollama_nb")
    magics = shell.magics_manager.registry["OllamaMagics"]
    magics.stream_to = "text"
    try:
        shell.run_line_magic("ollama", f"connect other {remote_ollama.url}/v1 --kind openai --api-key-env OTHER_KEY")
        out = capsys.readouterr().out
        assert "connected backend 'other' (openai at " in out and " model(s), addressed as other/MODEL" in out
        table = shell.run_line_magic("ollama", "backends")
        assert list(table["name"]) == ["local", "remote", "llama", "other"]
        assert table.set_index("name").loc["other", "api_key_env"] == "OTHER_KEY"
        listing = shell.run_line_magic("ollama", "list --backend remote")
        assert SMOLLM in list(listing["name"])  # that backend's own names
        shell.run_cell_magic("chat", f"--backend other -m {SMOLLM} --format text --options '{json.dumps(GREEDY)}'",
                             "Name a colour.")
        assert local_reply in capsys.readouterr().out
        assert magics.sessions.get().turns[-1].model == f"other/{SMOLLM}"
        shell.run_line_magic("ollama", f"connect gone http://127.0.0.1:{free_port()}")
        captured = capsys.readouterr()
        assert captured.err.count("\n") == 1 and "backend 'gone'" in captured.err
        assert "registered backend 'gone'" in captured.out
        listing = shell.run_line_magic("ollama", "list")
        assert f"other/{SMOLLM}" in list(listing["name"])
        assert "backend 'gone'" in capsys.readouterr().err  # one line; the others are listed
        shell.run_line_magic("ollama", "disconnect gone")
        shell.run_line_magic("ollama", "disconnect other")
        assert "disconnected backend 'other'" in capsys.readouterr().out
        shell.run_line_magic("ollama", "disconnect other")
        assert "Error: no backend named 'other'" in capsys.readouterr().err
    finally:
        connection.unregister("other")
        connection.unregister("gone")
        shell.extension_manager.unload_extension("ollama_nb")


def test_widgets_group_models_by_backend(registered: None) -> None:
    from ollama_nb.notebook.widgets import ChatPanel, ModelManagerPanel

    panel = ChatPanel(options={"num_predict": 8, "seed": 1}, temperature=0.0)
    labels = dict(panel.model.options)
    assert labels[f"remote · {SMOLLM}"] == REMOTE and labels[f"llama · {LLAMA_ALIAS}"] == LLAMA
    assert labels[f"local · {SMOLLM}"] == SMOLLM
    first = [label.split(" · ")[0] for label in labels]
    assert first == sorted(first, key=["local", "remote", "llama"].index)  # grouped, the kernel's first
    panel.model.value = REMOTE
    assert panel.submit("Name a colour.")
    assert panel._worker.join(120)
    assert panel.last_result is not None and panel.last_result.model == REMOTE and panel.last_result.text
    assert panel.last_result.timings.timed_by == "client-side: ttft_s"
    manager_panel = ModelManagerPanel()
    assert "Backends" in manager_panel.backends_html.value and "llama" in manager_panel.backends_html.value
    assert REMOTE in manager_panel.installed_names()


# ---- routing through the kernel's server ---------------------------------------------------------


def test_the_kernels_server_routes_to_the_backends_when_asked(router: Router, manager: Any,
                                                             local_reply: str) -> None:
    import urllib.request

    import ollama
    import openai

    from ollama_nb.server.lifecycle import serve

    with serve(router, "127.0.0.1", 0) as server:
        client = ollama.Client(host=server.url)
        text = "".join(c.message.content for c in client.chat(model=REMOTE, messages=QUESTION,
                                                               options=GREEDY, stream=True))
        assert text == local_reply
        listed = {m["name"]: m for m in json.loads(urllib.request.urlopen(server.url + "/api/tags").read())["models"]}
        assert listed[LLAMA]["remote_model"] == LLAMA_ALIAS and listed[LLAMA]["remote_host"].startswith("http://127.0.0.1:")
        assert "remote_host" not in listed[SMOLLM]  # the kernel's own: Ollama's omitempty
        oai = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
        stream = oai.chat.completions.create(model=LLAMA, messages=QUESTION, temperature=0, max_tokens=12,
                                             stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == local_reply
        assert LLAMA in [m.id for m in oai.models.list()]
        with pytest.raises(ollama.ResponseError) as unsupported:
            client.pull(LLAMA)
        assert unsupported.value.status_code == 501 and "not supported by this backend" in unsupported.value.error
        rows = json.loads(urllib.request.urlopen(server.url + "/api/metrics").read())["records"]
        remote_rows = [r for r in rows if r["model"] == REMOTE]
        assert remote_rows and remote_rows[-1]["timed_by"] == "client-side: ttft_s"  # beside local rows
    with serve(manager, "127.0.0.1", 0) as plain:  # routing is off unless asked for
        with pytest.raises(ollama.ResponseError) as missing:
            ollama.Client(host=plain.url).chat(model=REMOTE, messages=QUESTION)
        assert missing.value.status_code == 404 and f"model '{REMOTE}' not found" in missing.value.error


def test_ollama_nb_serve_routes_the_backends_its_environment_names(shared_models: Path, tmp_path: Path,
                                                                   llama_server: Any, local_reply: str) -> None:
    """An admin's setup: the backends in OLLAMA_NB_BACKENDS, routing on, no magic typed."""
    import ollama

    backends_json = json.dumps({"llama": {"url": llama_server.url, "kind": "openai", "api_key_env": "LLAMA_KEY"}})
    engine = start_ollama_nb(store_view(shared_models, tmp_path / "store"), OLLAMA_NB_BACKENDS=backends_json,
                             OLLAMA_NB_ROUTE_BACKENDS="1", LLAMA_KEY=LLAMA_KEY)
    try:
        client = ollama.Client(host=engine.url)
        assert LLAMA in [m.model for m in client.list().models]
        reply = client.chat(model=LLAMA, messages=QUESTION, options=GREEDY)
        assert reply.message.content == local_reply and reply.model == LLAMA
    finally:
        engine.stop()


def test_backends_configured_as_a_traitlet_register_at_once(llama_server: Any) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.extension_manager.load_extension("ollama_nb")
    try:
        config = {"cluster": {"url": llama_server.url + "/v1", "kind": "openai", "api_key_env": "LLAMA_KEY"}}
        shell.run_line_magic("config", f"OllamaMagics.backends = {config!r}")
        entry = connection.router().entry("cluster")
        assert entry.spec.kind == "openai" and entry.spec.api_key_env == "LLAMA_KEY"
        assert f"cluster/{LLAMA_ALIAS}" in [m.name for m in connection.current().list().models]
    finally:
        shell.run_line_magic("config", "OllamaMagics.backends = {}")  # a later load registers nothing
        connection.unregister("cluster")
        shell.extension_manager.unload_extension("ollama_nb")

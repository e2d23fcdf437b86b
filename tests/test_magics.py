"""The IPython magics on a bare InteractiveShell, driving the real bundled models.

Display output is *recorded* (the shell's display publisher is a CapturingDisplayPublisher), not
faked; one recorder raises KeyboardInterrupt mid-stream to play the kernel's interrupt.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from IPython.core.displaypub import CapturingDisplayPublisher
from IPython.core.interactiveshell import InteractiveShell

from .conftest import GEMMA, SMOLLM
from .registry_fixture import RegistryFixture


def opts(**options: Any) -> str:
    return "--options '" + json.dumps({"temperature": 0, "seed": 1, **options}) + "'"


class Recording:
    """A backend that forwards everything to the real manager and remembers the chat requests."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.chats: list[dict[str, Any]] = []

    def chat(self, *args: Any, **fields: Any) -> Any:
        self.chats.append(fields)
        return self.inner.chat(*args, **fields)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class InterruptingPublisher(CapturingDisplayPublisher):
    """Records like its parent; the ``n``-th update raises KeyboardInterrupt, as a kernel
    interrupt arriving while the reply streams would."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n
        self.updates = 0

    def publish(self, data, metadata=None, source=None, *, transient=None, update=False):  # type: ignore[override]
        super().publish(data, metadata, transient=transient, update=update)
        if update:
            self.updates += 1
            if self.updates == self.n:
                raise KeyboardInterrupt


@pytest.fixture(scope="module")
def shell() -> Any:
    ip = InteractiveShell.instance()
    ip.extension_manager.load_extension("ollama_nb")
    yield ip
    ip.extension_manager.unload_extension("ollama_nb")


@pytest.fixture
def magics(shell: Any, manager: Any) -> Any:
    mg = shell.magics_manager.registry["OllamaMagics"]
    mg.use_manager(manager)
    mg.host = None
    mg.stream_to = "display"
    mg.stream_interval = 0.0
    mg.sessions.reset_all()
    shell.display_pub = CapturingDisplayPublisher()
    return mg


def outputs(shell: Any) -> list[dict[str, Any]]:
    return shell.display_pub.outputs


def test_load_ext_registers_the_magics_and_their_config(shell: Any, magics: Any) -> None:
    table = shell.magics_manager.magics
    assert {"ollama", "chat", "generate"} <= set(table["cell"]) and "ollama" in table["line"]
    shell.run_line_magic("config", 'OllamaMagics.default_model = "gemma3:270m"')
    shell.run_line_magic("config", "OllamaMagics.max_history = 3")
    try:
        assert magics.default_model == GEMMA and magics.max_history == 3
    finally:
        magics.default_model, magics.max_history = SMOLLM, 20


def test_list_and_ps_are_dataframes(shell: Any, magics: Any, manager: Any) -> None:
    listing = shell.run_line_magic("ollama", "list")
    assert {SMOLLM, GEMMA} <= set(listing["name"])
    assert list(listing.columns) == ["name", "id", "size", "family", "parameters", "quantization", "modified"]
    row = listing.set_index("name").loc[SMOLLM]
    assert row["family"] == "llama" and row["quantization"] == "Q4_1" and row["size"].endswith("MB")
    assert SMOLLM in listing.to_string()  # readable as text in a terminal
    manager.load(SMOLLM)
    running = shell.run_line_magic("ollama", "ps")
    assert SMOLLM in set(running["name"]) and running.iloc[0]["processor"].endswith(("CPU", "GPU"))


def test_chat_streams_into_one_display_and_ends_as_markdown(shell: Any, magics: Any) -> None:
    shell.run_cell_magic("chat", f"-m {SMOLLM} {opts(num_predict=12)} -o reply", "Say hi")
    out = outputs(shell)
    ids = {o["transient"]["display_id"] for o in out}
    assert len(ids) == 1  # one output area, updated in place
    assert out[0]["update"] is False and all(o["update"] for o in out[1:])
    streamed = [o["data"]["text/plain"] for o in out[1:-1]]
    assert len(streamed) >= 3  # partial replies while generating
    assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(streamed))
    final = out[-1]
    reply = shell.user_ns["reply"]
    assert final["data"]["text/markdown"] == reply.text and reply.text.startswith(streamed[0])
    meta = final["metadata"]["ollama_nb"]
    assert meta["model"] == SMOLLM and meta["eval_count"] == 12 and meta["done_reason"] == "length"
    assert meta["tokens_per_second"] > 0 and meta["total_duration"] > 0


def test_output_variable_holds_text_model_and_timings(shell: Any, magics: Any) -> None:
    result = shell.run_cell_magic("chat", f"{opts(num_predict=6)} -o r --session other", "Name a fruit.")
    assert result is None  # markdown replies are displayed, not returned
    r = shell.user_ns["r"]
    assert r.model == SMOLLM and r.session == "other" and r.prompt == "Name a fruit."
    t = r.timings
    assert r.text and t.eval_count == 6 and t.prompt_eval_count > 0
    assert t.total_duration >= t.eval_duration > 0 and t.ttft_s > 0 and t.tokens_per_second > 0
    assert r.metadata()["ollama_nb"]["session"] == "other"
    bundle, meta = r._repr_mimebundle_()
    assert bundle["text/markdown"] == r.text and meta["ollama_nb"]["eval_count"] == 6


def test_memory_across_cells_reuses_the_kv_cache(shell: Any, magics: Any, manager: Any) -> None:
    recorder = Recording(manager)
    magics.use_manager(recorder)
    try:
        # begins with its own words: a conversation kept in the model's prompt cache by another
        # test must not share more than the template with it
        first = ("Turn 7731. My name is Ada Lovelace and I was born in London in 1815. I wrote the first "
                 "program for Babbage's Analytical Engine, worked with Bernoulli numbers, and loved poetry. "
                 "Please remember all of this carefully.")
        shell.run_cell_magic("chat", f"--session kv --new {opts(num_predict=16)} -o r1", first)
        shell.run_cell_magic("chat", f"--session kv {opts(num_predict=8)} -o r2", "What is my name?")
    finally:
        magics.use_manager(manager)
    r1, r2 = shell.user_ns["r1"], shell.user_ns["r2"]
    sent = recorder.chats[-1]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[0]["content"] == first and sent[1]["content"] == r1.text
    assert r1.timings.prompt_eval_count > 45  # the long first turn was evaluated
    # turn 2's prompt holds all of turn 1, but only its own new tokens were evaluated
    assert 0 < r2.timings.prompt_eval_count < r1.timings.prompt_eval_count // 2
    turns = magics.sessions.get("kv").turns
    assert [t.prompt for t in turns] == [first, "What is my name?"]


def test_interpolation_from_the_namespace(shell: Any, magics: Any) -> None:
    shell.run_cell("animal = 'otter'", store_history=True)
    shell.run_cell("6 * 7", store_history=True)
    n = shell.execution_count - 1
    cell = ("Tell me about {animal}; code {In[" + str(n) + "]} gave {Out[" + str(n) + "]}; {unknown} "
            '{{animal}} stays, as does {"a": {animal}}')
    shell.run_cell_magic("chat", f"{opts(num_predict=1)} -o r", cell)
    assert shell.user_ns["r"].prompt == (
        'Tell me about otter; code 6 * 7 gave 42; {unknown} {animal} stays, as does {"a": otter}')
    shell.run_cell_magic("chat", f"{opts(num_predict=1)} -o r --no-interpolate", "about {animal}")
    assert shell.user_ns["r"].prompt == "about {animal}"


def test_json_format_returns_a_python_object(shell: Any, magics: Any) -> None:
    value = shell.run_cell_magic(
        "chat", f"--format json --new {opts(num_predict=60)} -o r",
        "Reply in JSON with keys city and country: the capital of France.")
    assert isinstance(value, dict) and value == shell.user_ns["r"].value
    assert set(value) >= {"city", "country"}
    final = outputs(shell)[-1]
    assert "JSON reply" in final["data"]["text/plain"]
    assert final["metadata"]["ollama_nb"]["format"] == "json"


def test_code_format_puts_the_code_in_a_new_cell(shell: Any, magics: Any) -> None:
    shell.rl_next_input = None
    shell.run_cell_magic("chat", f"--format code --new {opts(num_predict=40)} -o r",
                         "Write a Python function that adds two numbers.")
    code = shell.user_ns["r"].value
    assert shell.rl_next_input == code
    assert code.lstrip().startswith("def ") and "```" not in code
    compile(code, "<reply>", "exec")


def test_sessions_history_and_reset(shell: Any, magics: Any, capsys: Any) -> None:
    shell.run_cell_magic("chat", f"--session a --system 'Be brief.' {opts(num_predict=2)}", "First in a")
    shell.run_cell_magic("chat", f"--session b {opts(num_predict=2)}", "First in b")
    capsys.readouterr()
    shell.run_line_magic("ollama", "history a")
    text = capsys.readouterr().out
    assert "First in a" in text and "Be brief." in text and "First in b" not in text
    shell.run_line_magic("ollama", "history --all")
    assert "First in b" in capsys.readouterr().out
    shell.run_line_magic("ollama", "reset a")
    assert "a" not in magics.sessions and "b" in magics.sessions
    shell.run_line_magic("ollama", "history a")
    assert "no session 'a'" in capsys.readouterr().err
    shell.run_line_magic("ollama", "reset --all")
    assert len(magics.sessions) == 0


def test_generate_raw_on_the_base_model(shell: Any, magics: Any) -> None:
    shell.run_cell_magic("generate", f"-m {GEMMA} --raw {opts(num_predict=8)} -o g", "The capital of France is")
    g = shell.user_ns["g"]
    assert g.kind == "generate" and g.model == GEMMA and g.text.strip()
    assert g.timings.eval_count == 8 and g.timings.prompt_eval_count <= 8  # raw: just the prompt's own tokens
    final = outputs(shell)[-1]
    assert final["data"] == {"text/plain": g.text}  # completions show as text by default
    assert len(magics.sessions) == 0  # %%generate keeps no conversation


def test_bad_input_is_one_line_and_records_nothing(shell: Any, magics: Any, capsys: Any) -> None:
    shell.run_cell_magic("chat", f"-m nosuchmodel:1b {opts()}", "hi")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not found" in err and "`%ollama pull nosuchmodel:1b`" in err
    assert magics.sessions.get().turns == [] and outputs(shell) == []

    shell.run_line_magic("ollama", "frobnicate")
    err = capsys.readouterr().err
    assert err.startswith("usage: %ollama") and "invalid choice: 'frobnicate'" in err

    shell.run_cell_magic("chat", "--options '{not json'", "hi")
    err = capsys.readouterr().err
    assert "usage: %%chat" in err and "invalid JSON" in err

    shell.run_cell_magic("chat", "--bogus-flag", "hi")
    assert "unrecognized arguments: --bogus-flag" in capsys.readouterr().err

    shell.run_cell_magic("chat", "", "   \n ")
    assert "the prompt is empty" in capsys.readouterr().err

    shell.run_line_magic("chat", "hello there")
    assert "%%chat is a cell magic" in capsys.readouterr().err

    result = shell.run_cell("%ollama show nosuchmodel:1b")
    captured = capsys.readouterr()
    assert result.success and "Traceback" not in captured.out + captured.err
    assert "`%ollama pull nosuchmodel:1b`" in captured.err
    assert magics.sessions.get().turns == []


def test_kernel_interrupt_keeps_the_partial_reply(shell: Any, magics: Any, manager: Any, capsys: Any) -> None:
    shell.display_pub = InterruptingPublisher(3)
    cell = f"%%chat --session story --new {opts(num_predict=400)}\nWrite a long story about a dragon."
    result = shell.run_cell(cell)
    captured = capsys.readouterr()
    assert isinstance(result.error_in_exec, KeyboardInterrupt)
    assert "Interrupted: generation stopped" in captured.out and "Traceback" not in captured.out
    published = shell.display_pub.outputs
    final = published[-1]
    assert final["metadata"]["ollama_nb"]["interrupted"] is True
    turns = magics.sessions.get("story").turns
    assert len(turns) == 1 and turns[0].interrupted and turns[0].reply
    assert final["data"]["text/markdown"].startswith(turns[0].reply)
    assert turns[0].reply == published[3]["data"]["text/plain"]  # nothing generated after the interrupt
    # the model answers again at once, and the conversation goes on from the partial turn
    shell.display_pub = CapturingDisplayPublisher()
    shell.run_cell_magic("chat", f"--session story {opts(num_predict=4)} -o after", "Go on.")
    after = shell.user_ns["after"]
    assert not after.interrupted and after.timings.eval_count == 4
    assert len(magics.sessions.get("story").turns) == 2


class InterruptedBeforeTheFirstToken(Recording):
    """A backend whose reply stream is interrupted before it yields anything."""

    def chat(self, *args: Any, **fields: Any) -> Any:
        self.chats.append(fields)

        def stream() -> Any:
            raise KeyboardInterrupt
            yield  # a generator, like the real stream

        return stream()


def test_interrupt_before_the_first_token_leaves_the_session_as_it_was(
    shell: Any, magics: Any, manager: Any, capsys: Any
) -> None:
    shell.run_cell_magic("chat", f"--session early --new {opts(num_predict=4)}", "Hi.")
    magics.use_manager(InterruptedBeforeTheFirstToken(manager))
    try:
        result = shell.run_cell(f"%%chat --session early {opts(num_predict=4)}\nAnd again?")
    finally:
        magics.use_manager(manager)
    assert isinstance(result.error_in_exec, KeyboardInterrupt)
    out = capsys.readouterr().out
    assert "before the first token" in out and "Traceback" not in out
    turns = magics.sessions.get("early").turns
    assert [t.prompt for t in turns] == ["Hi."] and not turns[0].interrupted
    # the next turn sends no empty assistant message
    recorder = Recording(manager)
    magics.use_manager(recorder)
    try:
        shell.run_cell_magic("chat", f"--session early {opts(num_predict=4)}", "Once more.")
    finally:
        magics.use_manager(manager)
    assert [m["role"] for m in recorder.chats[-1]["messages"]] == ["user", "assistant", "user"]


def test_model_that_fails_to_load(shell: Any, magics: Any, tmp_path: Path, capsys: Any) -> None:
    from ollama_nb.manager.core import ModelManager
    from ollama_nb.models.store import Store

    broken = ModelManager(Store(tmp_path / "broken"))
    assert [e.status for e in broken.pull(SMOLLM)][-1] == "success"
    blob = max((tmp_path / "broken" / "blobs").iterdir(), key=lambda p: p.stat().st_size)
    with open(blob, "rb") as f:
        head = f.read(4 << 20)  # header intact, tensor data gone
    blob.unlink()  # a new file, so no hard link to another copy is ever cut short
    blob.write_bytes(head)
    magics.use_manager(broken)
    try:
        shell.run_cell_magic("chat", f"-m {SMOLLM} {opts()}", "hi")
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("Error: invalid GGUF file") and "truncated" in err
        assert magics.sessions.get().turns == []
        shown = outputs(shell)  # nothing, or a placeholder blanked again: never a stuck "…"
        assert not shown or shown[-1]["data"] == {"text/plain": ""}
    finally:
        magics.use_manager(None)
        broken.close()


def test_store_subcommands(shell: Any, magics: Any, tmp_path: Path, capsys: Any,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)  # the push below goes to a registry on 127.0.0.1
    from ollama_nb.manager.core import ModelManager
    from ollama_nb.models.store import Store

    own = ModelManager(Store(tmp_path / "own"))
    magics.use_manager(own)
    try:
        shell.run_line_magic("ollama", f"pull {SMOLLM}")
        assert "success" in capsys.readouterr().out
        shell.run_line_magic("ollama", f"cp {SMOLLM} mine")
        registry = RegistryFixture().start()
        try:
            pushed = f"{registry.host}/me/mine:v1"
            shell.run_line_magic("ollama", f"cp mine {pushed}")
            capsys.readouterr()
            shell.run_line_magic("ollama", f"push {pushed} --insecure")
            assert capsys.readouterr().out.splitlines()[-1] == "success"
            assert ("me", "mine", "v1") in registry.manifests
            shell.run_line_magic("ollama", "push mine")
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and "needs your ollama.com key" in err
            shell.run_line_magic("ollama", f"rm {pushed}")
        finally:
            registry.stop()
        shell.run_cell_magic("ollama", "create terse", f"FROM {SMOLLM}\nSYSTEM You are terse.\n"
                                                       "PARAMETER temperature 0\n")
        assert set(shell.run_line_magic("ollama", "list")["name"]) == {SMOLLM, "mine:latest", "terse:latest"}
        capsys.readouterr()
        shell.run_line_magic("ollama", "show terse --system")
        assert capsys.readouterr().out.strip() == "You are terse."
        shell.run_line_magic("ollama", "show terse --parameters")
        assert "temperature" in capsys.readouterr().out
        shell.run_line_magic("ollama", "show terse")
        assert "architecture        llama" in capsys.readouterr().out
        modelfile = tmp_path / "Modelfile.alt"
        modelfile.write_text(f"FROM {SMOLLM}\nSYSTEM From a file.\n")
        shell.run_line_magic("ollama", f"create fromfile -f {modelfile}")
        assert own.show("fromfile").system == "From a file."

        shell.run_line_magic("ollama", f"run {SMOLLM} Say hi {opts(num_predict=3)}")
        assert outputs(shell)[-1]["metadata"]["ollama_nb"]["eval_count"] == 3
        assert len(magics.sessions) == 0  # run is one-shot
        capsys.readouterr()
        shell.run_line_magic("ollama", f"stop {SMOLLM}")
        assert f"stopped '{SMOLLM}'" in capsys.readouterr().out and own.ps().models == []
        shell.run_line_magic("ollama", f"stop {SMOLLM}")
        assert "couldn't find model" in capsys.readouterr().err

        shell.run_line_magic("ollama", "rm mine terse fromfile")
        assert set(shell.run_line_magic("ollama", "list")["name"]) == {SMOLLM}
        shell.run_line_magic("ollama", "rm mine")
        assert "not found" in capsys.readouterr().err
        shell.run_cell_magic("ollama", "list", "a body")
        assert "takes no cell body" in capsys.readouterr().err
        shell.run_line_magic("ollama", "help")
        helptext = capsys.readouterr().out
        assert "usage: %ollama" in helptext and "usage: %%chat" in helptext and "usage: %%generate" in helptext
    finally:
        magics.use_manager(None)
        own.close()


def test_serve_connect_and_unload_ext(shell: Any, magics: Any, manager: Any, capsys: Any) -> None:
    from ollama_nb.client import Client
    from ollama_nb.notebook import connection as backend

    shell.run_line_magic("ollama", "serve --host 127.0.0.1 --port 0")
    server = magics.server
    assert server is not None and server.running and server.url in capsys.readouterr().out
    try:
        shell.run_line_magic("ollama", f"connect {server.url}")
        assert isinstance(magics.backend, Client) and isinstance(backend.current(), Client)
        assert "connected to" in capsys.readouterr().out
        assert {SMOLLM, GEMMA} <= set(shell.run_line_magic("ollama", "list")["name"])
        shell.run_cell_magic("chat", f"-m {SMOLLM} {opts(num_predict=6)} -o remote", "Say hi")
        remote = shell.user_ns["remote"]
        assert remote.timings.eval_count == 6 and len(outputs(shell)) >= 4  # streamed over HTTP too
        shell.run_cell_magic("chat", f"-m nosuchmodel:1b {opts()}", "hi")
        assert "`%ollama pull nosuchmodel:1b`" in capsys.readouterr().err
        shell.run_line_magic("ollama", "connect --local")
        assert magics.backend is manager and backend.connected_url() is None
        shell.run_line_magic("ollama", "connect http://127.0.0.1:9")  # nothing listens there
        assert "could not connect" in capsys.readouterr().err and backend.connected_url() is None
    finally:
        shell.run_line_magic("ollama", "connect --local")
        shell.extension_manager.unload_extension("ollama_nb")
        shell.extension_manager.load_extension("ollama_nb")
    assert not server.running  # %unload_ext stopped the server it started
    assert manager.ps().models  # ... and nothing else: the models stay loaded


def test_terminal_mode_writes_the_reply_as_plain_text(shell: Any, magics: Any, capsys: Any) -> None:
    magics.stream_to = "auto"  # a bare shell has no kernel: plain text, as in terminal IPython
    shell.run_cell_magic("chat", f"--new {opts(num_predict=8)} -o r", "Say hi")
    out = capsys.readouterr().out
    assert out == shell.user_ns["r"].text + "\n"  # streamed once, never repeated per update
    assert outputs(shell) == []


def test_in_a_real_kernel(models_env: Path) -> None:
    """nbclient runs an ipykernel: the reply streams into a display (auto mode), errors are one
    stderr line, and a widget renders as a widget view."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in (
        "%load_ext ollama_nb",
        f"%%chat -m {SMOLLM} {opts(num_predict=4)} -o r\nSay hi",
        "%%chat -m nosuchmodel:1b\nhi",
        "print(r.timings.eval_count, r.model)",
        "from ollama_nb.notebook.widgets import ChatPanel\nChatPanel()",
    )]
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    chat, error, check, widget = (c.outputs for c in nb.cells[1:])
    assert [o["output_type"] for o in chat] == ["display_data"]  # the updates collapsed into one
    assert chat[0]["metadata"]["ollama_nb"]["eval_count"] == 4 and chat[0]["data"]["text/markdown"]
    assert [o["name"] for o in error] == ["stderr"] and "`%ollama pull nosuchmodel:1b`" in error[0]["text"]
    assert check[0]["text"] == f"4 {SMOLLM}\n"
    assert "application/vnd.jupyter.widget-view+json" in widget[0]["data"]

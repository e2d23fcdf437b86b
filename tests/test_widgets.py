"""The ipywidgets (chat panel, model manager, comparison view) on the real models, driven the
way a person would: set values, click buttons, wait for the background thread, read the widgets.
Outside a kernel ipywidgets uses a dummy comm, so no browser is needed."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path
from typing import Any

import pytest

from ollama_nb.notebook.throttle import Throttle

from .conftest import GEMMA, SMOLLM

GREEDY = {"temperature": 0, "seed": 1}


def text_of(output: Any) -> str:
    return output.outputs[0]["data"]["text/markdown"] if output.outputs else ""


def test_throttle_flushes_first_change_then_at_most_once_per_interval() -> None:
    now = [0.0]
    flushed: list[float] = []
    t = Throttle(lambda: flushed.append(now[0]), 0.1, clock=lambda: now[0])
    for step in range(100):  # 100 changes over 0.5 s
        now[0] = step * 0.005
        t.poke()
    assert flushed[0] == 0.0 and len(flushed) == 5  # 0.0, 0.1, 0.2, 0.3, 0.4
    assert all(b - a >= 0.1 - 1e-9 for a, b in itertools.pairwise(flushed))
    assert t.pending
    t.close()
    assert len(flushed) == 6 and not t.pending  # the tail is never lost
    t.close()
    assert len(flushed) == 6  # nothing pending, nothing sent


def test_chat_panel_streams_a_reply_and_continues_the_conversation(manager: Any) -> None:
    from ollama_nb.notebook.widgets import ChatPanel

    panel = ChatPanel(manager, model=SMOLLM, temperature=0, options={"num_predict": 10, "seed": 1}, interval=0)
    assert {SMOLLM, GEMMA} <= set(panel.model.options)
    seen: list[str] = []

    def watch(change: Any) -> None:  # the reply area exists before the thread starts
        if len(change["new"]) == 3:
            out = change["new"][1]
            out.observe(lambda _: seen.append(text_of(out)), names="outputs")

    panel.transcript.observe(watch, names="children")
    panel.prompt.value = "Say hi"
    panel.send.click()
    assert panel.wait(120)
    result = panel.last_result
    assert result is not None and result.timings.eval_count == 10 and not result.interrupted
    user, reply, stats = panel.transcript.children
    assert text_of(user) == "**You:** Say hi"
    assert text_of(reply) == f"**{SMOLLM}:** {result.text}"
    assert reply.outputs[0]["metadata"]["ollama_nb"]["eval_count"] == 10
    assert "tokens/s" in stats.value and panel.prompt.value == ""
    assert len(seen) >= 3  # the reply grew in place while generating
    assert not panel.send.disabled and panel.stop.disabled

    panel.system.value = "You are terse."
    assert panel.submit("And again?") and panel.wait(120)
    assert [t.prompt for t in panel.session.turns] == ["Say hi", "And again?"]
    assert panel.session.system == "You are terse." and len(panel.transcript.children) == 6
    panel.clear.click()
    assert panel.session.turns == [] and panel.transcript.children == ()


def test_chat_panel_stop_ends_the_reply_and_keeps_the_partial_text(manager: Any) -> None:
    from ollama_nb.notebook.widgets import ChatPanel

    panel = ChatPanel(manager, model=SMOLLM, options={"num_predict": 400, **GREEDY}, interval=0)
    panel.prompt.value = "Write a very long story about a dragon."
    first_text = threading.Event()
    panel.send.click()
    reply = panel.transcript.children[1]
    reply.observe(lambda change: first_text.set(), names="outputs")
    assert first_text.wait(60)
    panel.stop.click()
    assert panel.wait(60)
    result = panel.last_result
    assert result.interrupted and result.text and result.timings is None
    turn = panel.session.turns[-1]
    assert turn.interrupted and turn.reply == result.text
    assert text_of(reply).endswith("*[stopped]*")
    again = manager.chat(model=SMOLLM, messages=[{"role": "user", "content": "Hi"}], stream=False,
                         options={**GREEDY, "num_predict": 3})
    assert again.eval_count == 3  # the model is free again


def test_chat_panel_unknown_model_says_how_to_get_it(manager: Any) -> None:
    from ollama_nb.notebook.widgets import ChatPanel

    panel = ChatPanel(manager, model="nosuchmodel:1b")
    assert panel.submit("hi") and panel.wait(30)
    assert "%ollama pull nosuchmodel:1b" in panel.status.value
    assert panel.session.turns == [] and not panel.send.disabled


def test_model_manager_pull_delete_unload(tmp_path: Path) -> None:
    from ollama_nb.manager.core import ModelManager
    from ollama_nb.models.store import Store
    from ollama_nb.notebook.widgets import ModelManagerPanel

    own = ModelManager(Store(tmp_path / "store"))
    try:
        panel = ModelManagerPanel(own, interval=0)
        assert panel.installed_names() == [] and "no models installed" in panel.installed_html.value
        values: list[float] = []
        panel.progress.observe(lambda change: values.append(change["new"]), names="value")
        panel.pull_name.value = SMOLLM
        panel.pull.click()
        assert panel.wait(120)
        assert panel.progress.value == 100.0 and values[-1] == 100.0
        assert len(values) >= 3 and values == sorted(values)  # the bar moved forward, to 100%
        assert panel.installed_names() == [SMOLLM] and "Q4_1" in panel.installed_html.value

        own.load(SMOLLM)
        panel.refresh_button.click()
        assert panel.loaded_names() == [SMOLLM] and "100% CPU" in panel.loaded_html.value
        panel.unload.click()
        assert panel.loaded_names() == [] and own.ps().models == []

        own.copy(SMOLLM, "spare")
        panel.refresh()
        panel.installed.value = "spare:latest"
        panel.delete.click()  # first click only arms
        assert "spare:latest" in panel.installed_names() and "spare" in panel.delete.description
        panel.delete.click()
        assert panel.installed_names() == [SMOLLM]
        assert [m.name for m in own.list().models] == [SMOLLM]

        panel.pull_name.value = "nosuchmodel:1b"
        panel.pull.click()
        assert panel.wait(60)
        assert panel.progress.bar_style == "danger" and "Error" in panel.status.value
    finally:
        own.close()


def test_comparison_view_fills_a_row_per_model(manager: Any) -> None:
    from ollama_nb.notebook.widgets import ComparisonView

    view = ComparisonView([SMOLLM, GEMMA], manager, prompt="Name a colour.", num_predict=6,
                          options={"seed": 1}, interval=0)
    view.run.click()
    assert view.wait(120)
    frame = view.frame()
    assert list(frame["model"]) == [SMOLLM, GEMMA]
    assert (frame["eval_count"] == 6).all() and (frame["tokens_per_second"] > 0).all()
    assert (frame["prompt"] == "Name a colour.").all()
    columns = view.columns.children
    assert len(columns) == 2
    for column, (_, row) in zip(columns, frame.iterrows()):
        header, reply, stats = column.children
        assert row["model"] in header.value and text_of(reply) == row["reply"] and "tokens/s" in stats.value
    assert SMOLLM in view.summary.value and GEMMA in view.summary.value
    assert not view.run.disabled


def test_chat_panel_works_while_the_server_serves_another_client(manager: Any) -> None:
    from ollama_nb.client import Client
    from ollama_nb.notebook.widgets import ChatPanel
    from ollama_nb.server.lifecycle import serve

    with serve(manager, "127.0.0.1", 0) as server:
        remote: list[Any] = []
        stream = Client(server.url).chat(model=SMOLLM, messages=[{"role": "user", "content": "Tell a story."}],
                                         options={**GREEDY, "num_predict": 24})
        reader = threading.Thread(target=lambda: remote.extend(stream))
        reader.start()
        panel = ChatPanel(manager, model=SMOLLM, options={**GREEDY, "num_predict": 6}, interval=0)
        assert panel.submit("Say hi") and panel.wait(120)
        reader.join(120)
    assert panel.last_result.timings.eval_count == 6 and not panel.last_result.interrupted
    assert remote[-1].done and remote[-1].eval_count == 24


@pytest.mark.parametrize("name", ["ChatPanel", "ModelManagerPanel", "ComparisonView"])
def test_widgets_are_exported_lazily(name: str) -> None:
    from ollama_nb.notebook import widgets

    assert getattr(widgets, name).__name__ == name


def test_chat_panel_parts_carry_stable_css_classes(manager: Any) -> None:
    """Pages and the JupyterLab browser test find the panel's parts by these classes."""
    from ollama_nb.notebook.widgets import ChatPanel

    panel = ChatPanel(manager, model=SMOLLM, temperature=0, options={"num_predict": 2, "seed": 1}, interval=0)
    assert "ollama-nb-chat-panel" in panel._dom_classes
    parts = {"model": panel.model, "transcript": panel.transcript, "input": panel.prompt, "send": panel.send,
             "stop": panel.stop, "clear": panel.clear, "status": panel.status}
    for name, part in parts.items():
        assert f"ollama-nb-chat-{name}" in part._dom_classes
    assert panel.submit("Hi") and panel.wait(120)
    user, reply, stats = panel.transcript.children
    assert "ollama-nb-chat-user" in user._dom_classes and "ollama-nb-chat-reply" in reply._dom_classes
    assert "ollama-nb-chat-stats" in stats._dom_classes

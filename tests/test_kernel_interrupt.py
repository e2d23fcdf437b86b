"""A real kernel interrupt during a streaming ``%%chat`` cell, end to end.

jupyter_client starts an ipykernel with ``OLLAMA_MODELS`` at the shared store. The test runs a
``%%chat`` cell that asks for a long reply (``num_predict`` 2000) and, once the reply is visibly
streaming (two non-empty updates of its display), interrupts the kernel the way JupyterLab's
stop button does: ``KernelManager.interrupt_kernel()``, i.e. SIGINT to the kernel process. The
unit test in test_magics.py plays the interrupt by raising KeyboardInterrupt in a display hook;
here it is the real signal, run by Python's handler wherever the kernel's main thread is.

That is one of two places, and the test runs once for each:

* ``waiting``: as it comes. The main thread spends nearly all its time waiting for the next
  token inside the manager's stream, so that is where the KeyboardInterrupt is raised; the
  stream ends by the exception.
* ``showing``: the kernel holds in its display publisher right after sending the second
  update (a wrapper that sleeps until the signal comes, 60 s at most), so the KeyboardInterrupt
  is raised in the magics' own code, outside the stream, which then must be *closed* to stop
  generation; and the reply kept is exactly the text on screen when the signal came.

What must hold (converse.py, "a kernel interrupt ends the stream at once ..."): the cell ends
with the one-line ``Interrupted`` error; generation stopped early (the manager's record of the
request says ``done_reason="cancel"`` with far fewer than 2000 tokens); the last output of the
cell is the partial reply marked ``interrupted``; the session holds that same partial reply; the
model stays loaded, and the next ``%%chat`` cell in the same kernel and session just works.
No assertion is on time: waits have generous timeouts only so that a hang fails the test.
"""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ollama_nb.notebook.magics.converse import Interrupted

from .conftest import SMOLLM

jupyter_client = pytest.importorskip("jupyter_client")
pytest.importorskip("ipykernel")

WAIT = 180.0  # seconds any one cell may take before the test gives up (a hang, not a timing)
NUM_PREDICT = 2000
PROMPT = "Write a long story about a dragon who learns to fly. Describe every chapter in detail."
DISPLAYS = ("display_data", "update_display_data")

# Kernel code for ``showing``: after the second non-empty update of a display, sleep in the
# publisher until the interrupt raises KeyboardInterrupt in the sleep (60 s at most). Updates
# are counted before they are sent: the test interrupts as soon as it receives the second one,
# and on a busy machine the signal can be handled before the line after the send has run.
HOLD_IN_PUBLISHER = """
import time as _time
_pub = get_ipython().display_pub
_publish, _updates = _pub.publish, []
def _held_publish(*args, **kwargs):
    text = (kwargs.get("data") or {}).get("text/plain", "")
    counted = kwargs.get("update") and text.strip() and not kwargs.get("metadata")
    if counted:
        _updates.append(text)  # before sending: the signal may come the moment it is sent
    _publish(*args, **kwargs)
    if counted and len(_updates) == 2:
        deadline = _time.monotonic() + 60
        while _time.monotonic() < deadline:
            _time.sleep(0.01)
_pub.publish = _held_publish
"""


def _options(**options: Any) -> str:
    return "--options '" + json.dumps({"temperature": 0, "seed": 1, **options}) + "'"


@pytest.fixture
def kernel(models_env: Path) -> Iterator[tuple[Any, Any]]:
    """A fresh ipykernel (the test's env, so OLLAMA_MODELS is the shared store) and its client."""
    km, kc = jupyter_client.manager.start_new_kernel(kernel_name="python3", startup_timeout=WAIT)
    try:
        yield km, kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def _run(
    kc: Any, code: str, on_iopub: Callable[[dict[str, Any]], None] | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Execute ``code``; returns its execute_reply content and its iopub messages, in order."""
    msg_id = kc.execute(code)
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + WAIT
    while True:
        try:
            msg = kc.get_iopub_msg(timeout=max(deadline - time.monotonic(), 0.1))
        except queue.Empty:
            pytest.fail(f"no idle status within {WAIT:.0f} s for the cell:\n{code}")
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        messages.append(msg)
        if on_iopub is not None:
            on_iopub(msg)
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    while True:
        reply = kc.get_shell_msg(timeout=WAIT)
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply["content"], messages


def _ok(kc: Any, code: str) -> list[dict[str, Any]]:
    reply, messages = _run(kc, code)
    errors = [m["content"] for m in messages if m["msg_type"] == "error"]
    assert reply["status"] == "ok", (reply, errors, _stream(messages, "stderr"))
    return messages


def _stream(messages: list[dict[str, Any]], name: str = "stdout") -> str:
    return "".join(
        m["content"]["text"]
        for m in messages
        if m["msg_type"] == "stream" and m["content"]["name"] == name
    )


def _value(kc: Any, expression: str) -> Any:
    """A JSON-able value computed in the kernel."""
    out = _stream(_ok(kc, f"import json as _j\nprint(_j.dumps({expression}))"))
    return json.loads(out)


@pytest.mark.parametrize("lands", ["waiting", "showing"])
def test_a_kernel_interrupt_stops_a_streaming_chat_and_keeps_the_partial_reply(
    kernel: tuple[Any, Any], lands: str
) -> None:
    km, kc = kernel
    _ok(
        kc,
        "%load_ext ollama_nb\n"
        "import ollama_nb\n"
        "_records = []  # every finished or abandoned request, as the manager reports it\n"
        "ollama_nb.default_manager().observers.append(_records.append)\n"
        "_magics = get_ipython().magics_manager.registry['OllamaMagics']",
    )
    # the model loads here, so the interrupted cell below streams at once
    _ok(kc, f"%%chat -m {SMOLLM} --session warm {_options(num_predict=2)}\nHi")

    streamed: list[str] = []  # non-empty text of the reply's display, update by update
    interrupted: list[bool] = []

    def interrupt_once_streaming(msg: dict[str, Any]) -> None:
        if msg["msg_type"] in DISPLAYS:
            text = msg["content"]["data"].get("text/plain", "")
            if text.strip() and text != "…":
                streamed.append(text)
        if len(streamed) >= 2 and not interrupted:
            interrupted.append(True)
            km.interrupt_kernel()  # SIGINT to the kernel process, as the stop button sends

    if lands == "showing":
        _ok(kc, HOLD_IN_PUBLISHER)
    cell = f"%%chat -m {SMOLLM} --session story {_options(num_predict=NUM_PREDICT)}\n{PROMPT}"
    reply, messages = _run(kc, cell, on_iopub=interrupt_once_streaming)
    if lands == "showing":
        _ok(kc, "_pub.publish = _publish")

    # the interrupt arrived while the reply streamed, and ended the cell as an interrupt
    assert interrupted, "the reply never streamed two updates, so no interrupt was sent"
    assert reply["status"] == "error", reply
    assert reply["ename"] == "Interrupted", reply  # ollama_nb's KeyboardInterrupt subclass
    assert reply["evalue"].startswith("generation stopped; the partial reply (")
    assert reply["evalue"].endswith("characters) is kept in session 'story'")
    errors = [m["content"] for m in messages if m["msg_type"] == "error"]
    assert len(errors) == 1 and errors[0]["ename"] == "Interrupted"
    assert errors[0]["traceback"] == [f"Interrupted: {reply['evalue']}"]  # one line, no traceback
    assert issubclass(Interrupted, KeyboardInterrupt)  # "Run all" stops here, as at any interrupt

    # one display, streamed then finished: its last state is the partial reply, marked interrupted
    shown = [m for m in messages if m["msg_type"] in DISPLAYS]
    assert shown[0]["msg_type"] == "display_data"
    assert all(m["msg_type"] == "update_display_data" for m in shown[1:])
    assert len({m["content"]["transient"]["display_id"] for m in shown}) == 1
    final = shown[-1]["content"]
    meta = final["metadata"]["ollama_nb"]
    assert meta["interrupted"] is True and meta["session"] == "story" and meta["model"] == SMOLLM
    assert meta["done_reason"] is None and meta["eval_count"] is None
    plain = final["data"]["text/plain"]
    assert plain.endswith("\n[interrupted]")
    partial = plain.removesuffix("\n[interrupted]")
    assert partial.strip(), "the partial reply is empty"
    assert final["data"]["text/markdown"] == partial + "\n\n*[interrupted]*"
    assert f"({len(partial)} characters)" in reply["evalue"]
    # every state shown while streaming is a beginning of the kept reply: nothing shown is lost
    during = [m["content"] for m in shown[:-1]]
    assert all(not c["metadata"] for c in during)
    assert all(partial.startswith(c["data"]["text/plain"]) for c in during[1:])
    assert len(during) > 2 and during[-1]["data"]["text/plain"].strip()
    if lands == "showing":
        # held right after the second update: not one more token reached the reply, so what
        # was on screen when the signal came is exactly what is kept
        assert _value(kc, "len(_updates)") == 2
        assert during[-1]["data"]["text/plain"] == streamed[1] == partial

    # generation really stopped: the manager's record of the request is a cancel, far short
    # of num_predict (the worker let go of the sequence before the cell ended)
    records = _value(kc, "[(r.endpoint, r.model, r.done_reason, r.timings.eval_count) for r in _records]")
    assert len(records) == 2, records  # the warm-up, then the interrupted chat
    endpoint, model, done_reason, eval_count = records[1]
    assert (endpoint, model, done_reason) == ("chat", SMOLLM, "cancel")
    assert 0 < eval_count < NUM_PREDICT // 2, records
    # and it stopped at once: the worker generated hardly more than the reply that was kept (it
    # ends the token in flight; a few more may wait unread in the queue if the kernel's thread
    # was slow to run the signal handler), nowhere near the 2000 it was asked for
    kept = _value(
        kc,
        f"len(ollama_nb.default_manager().tokenize({SMOLLM!r}, "
        "_magics.sessions.get('story').turns[0].reply))",
    )
    assert kept - 2 <= eval_count <= kept + 32, (eval_count, kept)

    # the session kept the partial turn, with the same text that was displayed
    turns = _value(
        kc,
        "[(t.prompt, t.reply, t.model, t.interrupted) for t in _magics.sessions.get('story').turns]",
    )
    assert turns == [[PROMPT, partial, SMOLLM, True]]
    history = _stream(_ok(kc, "%ollama history story"))
    assert history == (
        f"# session 'story'\n[1] user: {PROMPT}\n[1] {SMOLLM} [interrupted]: {partial}\n"
    )

    # the model is still loaded (the interrupt cancelled a request, it did not unload anything)
    ps_messages = _ok(kc, "%ollama ps")
    table = [m["content"] for m in ps_messages if m["msg_type"] == "execute_result"]
    assert len(table) == 1 and SMOLLM in table[0]["data"]["text/plain"]
    assert _value(kc, "[m.name for m in ollama_nb.default_manager().ps().models]") == [SMOLLM]

    # the kernel and the session stay usable: the next turn of the same session just works
    messages = _ok(
        kc, f"%%chat --session story {_options(num_predict=4)} -o _after\nGo on, briefly."
    )
    assert not [m for m in messages if m["msg_type"] == "error"]
    after = _value(kc, "[_after.interrupted, _after.done_reason, _after.timings.eval_count, _after.text]")
    assert after[:3] == [False, "length", 4] and after[3]
    last = [m for m in messages if m["msg_type"] in DISPLAYS][-1]["content"]
    assert last["metadata"]["ollama_nb"]["interrupted"] is False
    turns = _value(kc, "[(t.reply, t.interrupted) for t in _magics.sessions.get('story').turns]")
    assert turns == [[partial, True], [after[3], False]]
    records = _value(kc, "[(r.done_reason, r.timings.eval_count) for r in _records]")
    assert records[1:] == [["cancel", eval_count], ["length", 4]]  # no late tokens, no stray record
    assert km.is_alive()

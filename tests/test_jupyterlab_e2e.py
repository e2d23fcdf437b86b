"""End to end in a real JupyterLab and a real browser (headless Chromium through Playwright):
open ``notebooks/02-chat-panel.ipynb``, run all its cells, type a question into the chat panel
widget, press Send, and watch the reply stream in, as a person would (see ``lab_fixtures``)."""

from __future__ import annotations

import itertools
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import SMOLLM
from .lab_fixtures import (
    UI_TIMEOUT_MS,
    evidence_on_failure,
    needs_chromium,
    running_jupyterlab,
    wait_for_kernel,
)

pytest.importorskip("jupyterlab")
pytest.importorskip("ipywidgets")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOK = "02-chat-panel.ipynb"
QUESTION = "Why is the sky blue? Answer in two sentences."

pytestmark = needs_chromium


@pytest.fixture
def jupyterlab(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A JupyterLab serving a copy of notebooks/; the notebook pulls the model it uses."""
    root = tmp_path / "root"
    shutil.copytree(NOTEBOOKS, root)
    with running_jupyterlab(tmp_path, root) as lab:
        yield lab


# Runs in the page: record every distinct text the reply area shows, from before Send is pressed.
_RECORD_REPLIES = """() => {
    window.__replies = [];
    const panel = document.querySelector('.ollama-nb-chat-panel');
    const note = () => {
        const el = panel.querySelector('.ollama-nb-chat-reply');
        if (!el) return;
        const text = el.innerText.trim();
        const seen = window.__replies;
        if (text && (seen.length === 0 || seen[seen.length - 1] !== text)) seen.push(text);
    };
    new MutationObserver(note).observe(panel, {subtree: true, childList: true, characterData: true});
}"""


def _run_all_cells(page: Any) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()


def test_chat_panel_streams_a_reply_in_jupyterlab(jupyterlab: tuple[str, str], page: Any,
                                              tmp_path: Path) -> None:
    with evidence_on_failure(page, tmp_path):
        _chat_in_jupyterlab(*jupyterlab, page)


def _chat_in_jupyterlab(url: str, token: str, page: Any) -> None:
    page.set_default_timeout(UI_TIMEOUT_MS)
    page.goto(f"{url}/lab/tree/{NOTEBOOK}?token={token}")

    # The notebook is open and its kernel (python3, from the notebook's metadata) is ready.
    page.locator(".jp-NotebookPanel").first.wait_for(state="visible")
    wait_for_kernel(url, token, NOTEBOOK)
    page.wait_for_function(
        "() => document.querySelector('.jp-NotebookPanel .jp-Notebook-ExecutionIndicator')"
        "?.getAttribute('data-status') === 'idle'", timeout=UI_TIMEOUT_MS)
    _run_all_cells(page)

    # The widget renders once the pull and the panel's cell have run.
    panel = page.locator(".ollama-nb-chat-panel")
    panel.wait_for(state="visible")
    model = panel.locator(".ollama-nb-chat-model select")
    page.wait_for_function(
        "(m) => document.querySelector('.ollama-nb-chat-model select')?.value === m", arg=SMOLLM)
    assert model.input_value() == SMOLLM
    page.locator(".jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for()

    page.evaluate(_RECORD_REPLIES)
    box = panel.locator(".ollama-nb-chat-input textarea")
    box.click()
    box.fill(QUESTION)
    send = panel.locator("button.ollama-nb-chat-send")
    assert send.is_enabled()
    send.click()

    # The question shows at once; the reply streams in; a stats line with tokens/s ends it.
    assert QUESTION in panel.locator(".ollama-nb-chat-user").inner_text()
    stats = panel.locator(".ollama-nb-chat-stats")
    page.wait_for_function(  # the stats line is written when the reply is complete
        "() => (document.querySelector('.ollama-nb-chat-panel .ollama-nb-chat-stats')?.innerText || '').trim()",
        timeout=UI_TIMEOUT_MS)
    line = stats.inner_text()
    assert SMOLLM in line and re.search(r"\b\d+ tokens\b", line) and re.search(r"[\d.]+ tokens/s", line), line
    final = panel.locator(".ollama-nb-chat-reply").inner_text().strip()
    prefix = f"{SMOLLM}:"
    assert final.startswith(prefix)
    answer = final[len(prefix):].strip()
    assert answer and answer != "…"
    assert box.input_value() == ""  # the input box was emptied for the next message
    page.wait_for_function("() => !document.querySelector('.ollama-nb-chat-panel button.ollama-nb-chat-send').disabled")

    # What the reply area showed over time: the reply was on screen before it was complete, and
    # every text it showed was a beginning of the final one, each longer than the last. The
    # panel sends the first token at once and then an update every 0.1 s, so a 64-token reply
    # shows at least one partial state; how many depends on speed (the browser may take
    # several updates as one), so only their order is checked.
    seen: list[str] = page.evaluate("() => window.__replies")
    placeholder = f"{prefix} …"
    assert seen and seen[-1] == final, seen
    assert placeholder not in seen[1:], seen
    assert [s for s in seen if s not in (placeholder, final)], f"no partial reply was shown: {seen}"

    def flat(text: str) -> str:  # the reply without the model's name, whitespace normalised
        return " ".join(text[len(prefix):].split())

    states = [flat(s) for s in seen if s != placeholder]
    assert all(flat(final).startswith(s) for s in states), seen
    assert all(len(a) < len(b) for a, b in itertools.pairwise(states)), seen

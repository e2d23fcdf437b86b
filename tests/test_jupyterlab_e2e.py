"""End to end in a real JupyterLab and a real browser (headless Chromium through Playwright):
open ``notebooks/02-chat-panel.ipynb``, run all its cells, type a question into the chat panel,
press Send, and watch the reply stream in, as a person would.

JupyterLab runs in a subprocess of its own (its own process group, killed at the end) with
every per-user directory (settings, workspaces, config, runtime, models) in a temporary
folder, and with news and update checks switched off in its settings, so nothing reaches the
network and no first-run notification shows. On failure a screenshot and the page's text are
left in the test's tmp_path, next to JupyterLab's log.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import SMOLLM

sync_api = pytest.importorskip("playwright.sync_api")
pytest.importorskip("jupyterlab")
pytest.importorskip("ipywidgets")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOK = "02-chat-panel.ipynb"
QUESTION = "Why is the sky blue? Answer in two sentences."
#: Generous: on 2 busy cores JupyterLab's first page load alone can take tens of seconds.
START_TIMEOUT_S = 120
UI_TIMEOUT_MS = 180_000

pytestmark = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason=f"no Chromium at {CHROMIUM}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


@pytest.fixture
def jupyterlab(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A JupyterLab on a free port serving a copy of notebooks/; yields (base URL, token)."""
    root = tmp_path / "root"
    shutil.copytree(NOTEBOOKS, root)
    home = tmp_path / "home"
    settings = home / "settings"
    # First-run UI: no "get Jupyter news?" toast, no update check (both would go online).
    _write_json(settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings",
                {"fetchNews": "false", "checkForUpdates": False})
    token = secrets.token_hex(16)
    port = _free_port()
    env = {
        **os.environ,
        "OLLAMA_MODELS": str(tmp_path / "models"),  # empty: the notebook pulls what it uses
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
    }
    for var in ("OLLAMA_HOST", "OLLAMA_NB_API_KEY"):
        env.pop(var, None)
    log_path = tmp_path / "jupyterlab.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
         f"--ServerApp.token={token}", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
         "--ServerApp.ip=127.0.0.1", f"--ServerApp.root_dir={root}", "--ServerApp.open_browser=False",
         "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def tail() -> str:
        return log_path.read_text(errors="replace")[-4000:]

    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert proc.poll() is None, f"JupyterLab exited:\n{tail()}"
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5) as res:
                    if res.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert time.monotonic() < deadline, f"JupyterLab did not answer:\n{tail()}"
            time.sleep(0.3)
        yield url, token
    finally:
        # The server's process group. Its kernels run in sessions of their own; SIGTERM makes the
        # server shut them down, and a kernel whose server is gone exits by itself.
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()


@pytest.fixture
def page() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        pg = context.new_page()
        pg.console_lines = []  # type: ignore[attr-defined]
        pg.on("console", lambda msg: pg.console_lines.append(f"{msg.type}: {msg.text}"))
        pg.on("pageerror", lambda exc: pg.console_lines.append(f"pageerror: {exc}"))
        try:
            yield pg
        finally:
            context.close()
            browser.close()


@contextlib.contextmanager
def evidence_on_failure(page: Any, where: Path) -> Iterator[None]:
    """On failure, leave a screenshot, the page's text and its console in ``where``."""
    try:
        yield
    except BaseException:
        try:
            page.screenshot(path=str(where / "failure.png"), full_page=True)
            (where / "failure-page.txt").write_text(page.inner_text("body"))
        except Exception as exc:  # noqa: BLE001 - best effort: the browser may be gone
            (where / "failure-screenshot-error.txt").write_text(repr(exc))
        (where / "failure-console.txt").write_text("\n".join(page.console_lines))
        raise


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


def _wait_for_kernel(url: str, token: str) -> None:
    """Until the notebook's session has a kernel that is idle and connected to the page, the same
    kernel on two polls in a row. The toolbar's indicator reads "idle" before any kernel exists,
    and Run All pressed then starts a second kernel that replaces the first mid-run."""
    deadline = time.monotonic() + UI_TIMEOUT_MS / 1000
    previous = None
    while True:
        with urllib.request.urlopen(f"{url}/api/sessions?token={token}", timeout=10) as res:
            sessions = json.load(res)
        ready = [s["kernel"]["id"] for s in sessions
                 if s.get("path", "").endswith(NOTEBOOK) and s.get("kernel")
                 and s["kernel"].get("execution_state") == "idle" and s["kernel"].get("connections", 0) >= 1]
        current = ready[0] if len(ready) == 1 and len(sessions) == 1 else None
        if current is not None and current == previous:
            return
        previous = current
        assert time.monotonic() < deadline, f"no ready kernel for {NOTEBOOK}: {sessions}"
        time.sleep(1.0)


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
    _wait_for_kernel(url, token)
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

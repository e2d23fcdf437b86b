"""The JupyterLab extension end to end: a real JupyterLab with the extension installed (the one
this package ships), a real kernel that pulls the bundled SmolLM2 and serves it, and headless
Chromium driving the page as a person would.

One JupyterLab session walks through everything in order, because starting JupyterLab and a
kernel costs tens of seconds on two cores: the sidebar finds the kernel's server and lists the
model; a pull shows its progress and ends in the list; a chat panel streams a reply and shows
its speed, and the status bar shows it too; Stop ends a reply and the server's record says it
was cancelled; typing in a code cell brings an inline suggestion from the model. A screenshot
of each step is saved under tests/artifacts/ (git-ignored).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import nbformat
import pytest

from .conftest import GEMMA, SMOLLM
from .lab_fixtures import (
    UI_TIMEOUT_MS,
    evidence_on_failure,
    needs_chromium,
    running_jupyterlab,
    wait_for_kernel,
)

pytest.importorskip("jupyterlab")
pytest.importorskip("jupyter_server_proxy")

pytestmark = needs_chromium

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
NOTEBOOK = "serve.ipynb"

# The kernel pulls the bundled model (offline) and serves it; the extension has to find it.
SERVE_CELLS = (
    "%load_ext ollama_nb",
    f"%ollama pull {SMOLLM}",
    "import ollama_nb\nserver = ollama_nb.serve(port=0)\nprint(server.url)",
)

# Settings a user would set: inline completion on, fast enough for a test.
SETTINGS = {"ollama-nb/plugin": {"inlineCompletion": True, "completionModel": SMOLLM,
                                 "completionMaxTokens": 12, "completionDebounceMs": 150}}


def _extension_installed() -> bool:
    listing = subprocess.run([sys.executable, "-m", "jupyter", "labextension", "list"],
                             capture_output=True, text=True, check=False)
    return re.search(r"ollama-nb v[\d.]+ .*enabled.*OK", listing.stdout + listing.stderr) is not None


def _shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"labextension-{name}.png"))


def _json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as res:
        return json.load(res)


def _kernel_idle(url: str, token: str) -> None:
    """Until the notebook's kernel reports idle (the toolbar's indicator may be folded away when
    panels share the screen, so ask the server)."""
    deadline = time.monotonic() + UI_TIMEOUT_MS / 1000
    while True:
        sessions = _json(f"{url}/api/sessions?token={token}")
        if sessions and all(s["kernel"]["execution_state"] == "idle" for s in sessions):
            return
        assert time.monotonic() < deadline, sessions
        time.sleep(0.5)


def _wait_idle(page: Any) -> None:
    page.wait_for_function(
        "() => document.querySelector('.jp-NotebookPanel .jp-Notebook-ExecutionIndicator')"
        "?.getAttribute('data-status') === 'idle'", timeout=UI_TIMEOUT_MS)


def test_the_extension_is_shipped_and_enabled() -> None:
    """`pip install` put the prebuilt extension where JupyterLab looks, enabled."""
    assert _extension_installed()


def test_sidebar_chat_status_bar_and_completion_in_jupyterlab(page: Any, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in SERVE_CELLS] + [nbformat.v4.new_code_cell("")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(nb, root / NOTEBOOK)
    with running_jupyterlab(tmp_path, root, settings=SETTINGS) as (url, token), evidence_on_failure(page, tmp_path):
        page.set_default_timeout(UI_TIMEOUT_MS)
        page.goto(f"{url}/lab/tree/{NOTEBOOK}?token={token}")
        page.locator(".jp-NotebookPanel").first.wait_for(state="visible")
        wait_for_kernel(url, token, NOTEBOOK)
        _wait_idle(page)
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        served = page.locator(".jp-OutputArea-output", has_text="http://127.0.0.1:")
        served.wait_for()
        server_url = re.search(r"http://127\.0\.0\.1:\d+", served.inner_text()).group(0)
        _wait_idle(page)

        # ---- sidebar: the kernel's server is found, its model listed ----------------------
        page.locator('.lm-TabBar-tab[data-id="ollama-nb-models"]').click()
        sidebar = page.locator("#ollama-nb-models")
        sidebar.locator(".onb-refresh").click()
        sidebar.locator(".onb-server", has_text=server_url).wait_for()
        row = sidebar.locator(f'.onb-installed .onb-model[data-model="{SMOLLM}"]')
        row.wait_for()
        assert "MB" in row.locator(".onb-model-size").inner_text()
        assert row.locator(".onb-model-family").inner_text() == "llama"
        page.wait_for_function(  # capabilities come from /api/show, one request per model
            "() => document.querySelector('.onb-installed .onb-model-caps')?.innerText.includes('completion')")
        _shot(page, "1-sidebar")

        # ---- pull: progress is shown, the model ends in the list ---------------------------
        page.evaluate("""() => {
            window.__pull = [];
            const status = document.querySelector('#ollama-nb-models .onb-pull-status');
            new MutationObserver(() => window.__pull.push(status.innerText))
                .observe(status, {subtree: true, childList: true, characterData: true});
        }""")
        sidebar.locator(".onb-pull-name").fill(GEMMA)
        sidebar.locator(".onb-pull-button").click()
        sidebar.locator(f'.onb-installed .onb-model[data-model="{GEMMA}"]').wait_for()
        statuses: list[str] = page.evaluate("() => window.__pull")
        assert statuses[-1] == f"{GEMMA}: success", statuses
        assert any(s not in ("starting…", f"{GEMMA}: success") for s in statuses), statuses  # live progress
        assert GEMMA in [m["name"] for m in _json(f"{server_url}/api/tags")["models"]]
        _shot(page, "2-pulled")

        # a pull that fails says why in the sidebar, and the store is as it was
        before = sorted(m["name"] for m in _json(f"{server_url}/api/tags")["models"])
        sidebar.locator(".onb-pull-name").fill("Not A Model!")
        sidebar.locator(".onb-pull-button").click()
        failed = sidebar.locator(".onb-pull-status.onb-error")
        failed.wait_for()
        assert failed.inner_text().startswith("Not A Model!: ") and "invalid" in failed.inner_text()
        assert sorted(m["name"] for m in _json(f"{server_url}/api/tags")["models"]) == before

        # ---- chat panel: from the notebook toolbar, streams a reply with its speed ---------
        page.locator(".jp-NotebookPanel .onb-toolbar-chat").first.click()
        panel = page.locator(".onb-chat").nth(0)
        panel.wait_for(state="visible")
        page.wait_for_function(f"() => [...document.querySelectorAll('.onb-chat-model option')]"
                               f".some(o => o.value === '{SMOLLM}')")
        panel.locator(".onb-chat-model").select_option(SMOLLM)
        panel.locator(".onb-chat-temperature").fill("0")
        panel.locator(".onb-chat-prompt").fill("Name three colours.")
        panel.locator(".onb-chat-send").click()
        stats = panel.locator(".onb-chat-stats").last
        page.wait_for_function(
            "() => /tokens\\/s/.test([...document.querySelectorAll('.onb-chat-stats')].pop()?.innerText || '')")
        assert re.search(rf"{re.escape(SMOLLM)} · \d+ tokens · [\d.]+ tokens/s", stats.inner_text())
        reply = panel.locator(".onb-chat-assistant .onb-chat-body").last.inner_text().strip()
        assert reply
        status_item = page.locator(".onb-statusbar")
        page.wait_for_function("() => /tok\\/s/.test(document.querySelector('.onb-statusbar')?.innerText || '')")
        # the speed is noted when the reply ends, the loaded models once /api/ps answers after it
        page.wait_for_function(f"() => (document.querySelector('.onb-statusbar')?.innerText || '')"
                               f".includes('{SMOLLM}')")
        assert SMOLLM in status_item.inner_text()
        _shot(page, "3-chat")

        # ---- Stop: the reply ends early and the server records a cancel --------------------
        since = _json(f"{server_url}/api/metrics")["last_seq"]
        panel.locator(".onb-chat-prompt").fill("Write a very long story about a dragon, in many chapters.")
        panel.locator(".onb-chat-send").click()
        page.wait_for_function(  # some of the reply is on screen
            "() => ([...document.querySelectorAll('.onb-chat-assistant .onb-chat-body')].pop()?.innerText || '')"
            ".trim().length > 20")
        panel.locator(".onb-chat-stop").click()
        page.wait_for_function(
            "() => /stopped/.test([...document.querySelectorAll('.onb-chat-stats')].pop()?.innerText || '')")
        deadline = time.monotonic() + 30
        records: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not records:
            records = _json(f"{server_url}/api/metrics?since={since}")["records"]
            time.sleep(0.2)
        assert [r["done_reason"] for r in records] == ["cancel"], records
        _shot(page, "4-stopped")

        # ---- two panels at once, on two models: each reply goes to its own panel ------------
        page.locator(".jp-NotebookPanel .onb-toolbar-chat").first.click()
        page.wait_for_function("() => document.querySelectorAll('.onb-chat').length === 2")
        second = page.locator(".onb-chat").nth(1)
        page.wait_for_function(f"() => [...document.querySelectorAll('.onb-chat')].pop()"
                               f".querySelector('.onb-chat-model option[value=\"{GEMMA}\"]')")
        second.locator(".onb-chat-model").select_option(GEMMA)
        for p_, text in ((panel, "Write a long story about a cat."), (second, "Write a long story about a dog.")):
            p_.locator(".onb-chat-temperature").fill("0")
            p_.locator(".onb-chat-prompt").fill(text)
        panel.locator(".onb-chat-send").click()
        second.locator(".onb-chat-send").click()
        page.wait_for_function(  # both stream at the same time
            "() => [...document.querySelectorAll('.onb-chat')].every(p => "
            "([...p.querySelectorAll('.onb-chat-assistant .onb-chat-body')].pop()?.innerText || '').length > 20)")
        _shot(page, "5-two-panels")
        for index, (p_, model) in enumerate(((panel, SMOLLM), (second, GEMMA))):
            page.evaluate("(i) => { const stop = document.querySelectorAll('.onb-chat')[i]"
                          ".querySelector('.onb-chat-stop'); if (!stop.disabled) stop.click(); }", index)
            ended = p_.locator(".onb-chat-stats").last.filter(has_text=re.compile("stopped|tokens/s"))
            ended.wait_for()
            assert ended.inner_text().startswith(f"{model} · ")  # each reply in its own panel
        assert second.locator(".onb-chat-user").count() == 1  # the other panel's turns stay there
        assert "dog" in second.locator(".onb-chat-user").inner_text()

        # ---- a code block goes into the notebook -----------------------------------------------
        panel.locator(".onb-chat-new").click()  # a fresh conversation: the history would change the reply
        assert panel.locator(".onb-chat-turn").count() == 0
        panel.locator(".onb-chat-prompt").fill("Write a Python function that adds two numbers, in a code block.")
        panel.locator(".onb-chat-send").click()
        panel.locator(".onb-chat-assistant pre").last.wait_for()  # rendered while it streams
        page.wait_for_timeout(1000)
        # Stop it if it is still going (in the page, in one step: the reply may end on its own first)
        page.evaluate("() => { const stop = document.querySelector('.onb-chat .onb-chat-stop');"
                      " if (!stop.disabled) stop.click(); }")
        panel.locator(".onb-chat-stats").last.filter(has_text=re.compile("stopped|tokens/s")).wait_for()
        cells_before = page.locator(".jp-NotebookPanel .jp-Cell").count()
        code = panel.locator(".onb-chat-assistant pre").last.inner_text().strip()
        panel.locator(".onb-chat-insert").last.click()
        page.wait_for_function(
            f"() => document.querySelectorAll('.jp-NotebookPanel .jp-Cell').length === {cells_before + 1}")
        first_line = code.split("\n")[0]
        assert code and any(first_line in t for t in page.locator(".jp-NotebookPanel .jp-Cell .cm-content").all_inner_texts())

        # ---- the kernel restarts mid-reply: one line says so; once served again, chat works --
        panel.locator(".onb-chat-prompt").fill("Write a very long story about a castle, in many chapters.")
        panel.locator(".onb-chat-send").click()
        page.wait_for_function(
            "() => ([...document.querySelectorAll('.onb-chat-assistant .onb-chat-body')].pop()?.innerText || '')"
            ".trim().length > 20")
        (kernel,) = [s_["kernel"]["id"] for s_ in _json(f"{url}/api/sessions?token={token}")]
        restart = urllib.request.Request(f"{url}/api/kernels/{kernel}/restart?token={token}", method="POST", data=b"")
        urllib.request.urlopen(restart, timeout=60).read()
        gone = panel.locator(".onb-chat-stats.onb-error").last
        gone.wait_for()
        assert gone.inner_text().startswith("The model server stopped mid-reply")
        _kernel_idle(url, token)
        page.locator(".jp-NotebookPanel").first.click()
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        page.wait_for_function(  # the new kernel serves again, on a new port
            "(old) => [...document.querySelectorAll('.jp-OutputArea-output')]"
            ".some(o => o.innerText.includes('http://127.0.0.1:') && !o.innerText.includes(old))", arg=server_url)
        _kernel_idle(url, token)
        panel.locator(".onb-chat-new").click()
        panel.locator(".onb-chat-prompt").fill("Name three colours.")
        panel.locator(".onb-chat-send").click()
        panel.locator(".onb-chat-stats").last.filter(has_text="tokens/s").wait_for()
        _shot(page, "6-after-restart")

        # ---- inline completion in a code cell ------------------------------------------------
        page.locator(".jp-NotebookPanel").first.click()
        cell = page.locator(".jp-NotebookPanel .jp-Cell").last
        cell.locator(".cm-content").click()
        # typed as a person types: every pause longer than the debounce starts a request, and
        # the next keystroke cancels the one in flight
        page.keyboard.type("def add(a, b):\n", delay=80)
        page.keyboard.type("re", delay=400)
        ghost = page.locator('.jp-GhostText[data-provided-by="ollama-nb:inline"]')
        ghost.first.wait_for(timeout=120_000)
        assert "".join(ghost.all_inner_texts()).strip()  # the model's suggestion, shown in the cell
        _shot(page, "7-completion")


def test_built_extension_bundle_is_what_the_wheel_ships() -> None:
    """The shared-data copy JupyterLab loads is the build in ollama_nb/labextension."""
    built = Path(__file__).resolve().parents[1] / "ollama_nb" / "labextension" / "package.json"
    if not built.exists():
        pytest.fail("the extension was not built: run `pip install -e .` with Node.js present")
    installed = Path(sys.prefix) / "share" / "jupyter" / "labextensions" / "ollama-nb" / "package.json"
    assert json.loads(installed.read_text())["jupyterlab"]["_build"] == json.loads(built.read_text())["jupyterlab"]["_build"]
    assert (installed.parent / "install.json").exists() and shutil.which("jupyter")

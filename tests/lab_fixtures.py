"""Shared parts of the browser tests: a JupyterLab of its own and headless Chromium.

JupyterLab runs in a subprocess (its own process group, killed at the end) with every per-user
directory (settings, workspaces, config, runtime, models) in a temporary folder, and with news
and update checks switched off in its settings, so nothing reaches the network and no first-run
notification shows. On failure a screenshot and the page's text are left in the test's
tmp_path, next to JupyterLab's log.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
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

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: Generous: on 2 busy cores JupyterLab's first page load alone can take tens of seconds.
START_TIMEOUT_S = 120
UI_TIMEOUT_MS = 180_000

needs_chromium = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason=f"no Chromium at {CHROMIUM}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


@contextlib.contextmanager
def running_jupyterlab(tmp_path: Path, root: Path, *, settings: dict[str, dict[str, Any]] | None = None,
                       env: dict[str, str] | None = None) -> Iterator[tuple[str, str]]:
    """A JupyterLab on a free port serving ``root``; yields (base URL, token). ``settings`` maps
    ``<plugin-path>`` (e.g. ``ollama-nb/plugin``) to that plugin's user settings."""
    home = tmp_path / "home"
    settings_dir = home / "settings"
    # First-run UI: no "get Jupyter news?" toast, no update check (both would go online).
    write_json(settings_dir / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings",
               {"fetchNews": "false", "checkForUpdates": False})
    for plugin, values in (settings or {}).items():
        write_json(settings_dir / f"{plugin}.jupyterlab-settings", values)
    token = secrets.token_hex(16)
    port = free_port()
    full_env = {
        **os.environ,
        "OLLAMA_MODELS": str(tmp_path / "models"),  # empty unless the test fills it
        "JUPYTERLAB_SETTINGS_DIR": str(settings_dir),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        **(env or {}),
    }
    for var in ("OLLAMA_HOST", "OLLAMA_NB_API_KEY"):
        full_env.pop(var, None)
    log_path = tmp_path / "jupyterlab.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
         f"--ServerApp.token={token}", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
         "--ServerApp.ip=127.0.0.1", f"--ServerApp.root_dir={root}", "--ServerApp.open_browser=False",
         "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        cwd=root, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
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


def wait_for_kernel(url: str, token: str, notebook: str) -> None:
    """Until the notebook's session has a kernel that is idle and connected to the page, the same
    kernel on two polls in a row. The toolbar's indicator reads "idle" before any kernel exists,
    and Run All pressed then starts a second kernel that replaces the first mid-run."""
    deadline = time.monotonic() + UI_TIMEOUT_MS / 1000
    previous = None
    while True:
        with urllib.request.urlopen(f"{url}/api/sessions?token={token}", timeout=10) as res:
            sessions = json.load(res)
        ready = [s["kernel"]["id"] for s in sessions
                 if s.get("path", "").endswith(notebook) and s.get("kernel")
                 and s["kernel"].get("execution_state") == "idle" and s["kernel"].get("connections", 0) >= 1]
        current = ready[0] if len(ready) == 1 and len(sessions) == 1 else None
        if current is not None and current == previous:
            return
        previous = current
        assert time.monotonic() < deadline, f"no ready kernel for {notebook}: {sessions}"
        time.sleep(1.0)


@pytest.fixture
def page() -> Iterator[Any]:
    """Headless Chromium (Debian's) through Playwright, one page, closed at the end."""
    sync_api = pytest.importorskip("playwright.sync_api")
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

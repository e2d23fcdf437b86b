"""The performance dashboard in a real browser (headless Chromium through Playwright): the SVG
plots render with data, update live over Server-Sent Events, and the page works behind
jupyter-server-proxy at ``<jupyter>/proxy/<port>/dashboard``, the way JupyterLab users reach it.

Behind the proxy, the ``Host`` header our server sees is the one the browser sent to Jupyter
(jupyter-server-proxy copies the request headers). For a Jupyter on this machine that is
``localhost``/``127.0.0.1`` and passes the DNS-rebinding check unchanged; for a JupyterHub or
Binder it is the hub's public name, which the user allows with ``OLLAMA_NB_ALLOWED_HOSTS`` (or
which JupyterHub announces in ``JUPYTERHUB_PUBLIC_URL``). The hub case is played here by a
Chromium that resolves ``hub.example.test`` to 127.0.0.1 and a Jupyter server that, like a
hub's, accepts remote Host names.
"""

from __future__ import annotations

import io
import os
import shutil
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
from .lab_fixtures import CHROMIUM, CHROMIUM_ARGS, free_port, needs_chromium
from .server_fixtures import http, store_view

sync_api = pytest.importorskip("playwright.sync_api")
Image = pytest.importorskip("PIL.Image")

HUB = "hub.example.test"  # a JupyterHub's public name, resolved to 127.0.0.1 by this Chromium only
BROWSER_ARGS = [*CHROMIUM_ARGS, f"--host-resolver-rules=MAP {HUB} 127.0.0.1"]
TOKEN = "dashboard-test-token"

# chart container -> (its data marks, marks per request, the colours they are drawn in)
CHARTS = {
    "c-tps": ("circle", 1, ["#1f77b4"]),
    "c-ttft": ("circle", 1, ["#1f77b4"]),
    "c-split": ("rect", 2, ["#4c72b0", "#dd8452"]),  # prompt eval stacked under generation
    "c-load": ("rect", 1, ["#1f77b4"]),
}

pytestmark = needs_chromium


# ---- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(shared_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A server over a fresh manager (so the dashboard starts empty) that also answers the
    hub's Host name, as a JupyterHub user would configure it."""
    from ollama_nb.manager.core import ModelManager
    from ollama_nb.models.store import Store
    from ollama_nb.server.lifecycle import serve

    manager = ModelManager(Store(store_view(shared_models, tmp_path_factory.mktemp("browser-store"))))
    previous = os.environ.get("OLLAMA_NB_ALLOWED_HOSTS")
    os.environ["OLLAMA_NB_ALLOWED_HOSTS"] = HUB  # read once, when the app is made
    try:
        running = serve(manager, "127.0.0.1", 0)
    finally:
        if previous is None:
            os.environ.pop("OLLAMA_NB_ALLOWED_HOSTS")
        else:
            os.environ["OLLAMA_NB_ALLOWED_HOSTS"] = previous
    yield running
    running.stop()
    manager.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def jupyter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Jupyter server with jupyter-server-proxy, answering any Host name as a hub does."""
    if shutil.which("jupyter-server", path=os.path.dirname(sys.executable)) is None:
        pytest.skip("jupyter-server is not installed")
    pytest.importorskip("jupyter_server_proxy")
    root = tmp_path_factory.mktemp("jupyter")
    port = free_port()
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(root / "config"), "JUPYTER_RUNTIME_DIR": str(root / "runtime")}
    log = (root / "jupyter.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter_server", "--allow-root", "--no-browser",
         f"--ServerApp.token={TOKEN}", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
         "--ServerApp.ip=127.0.0.1", "--ServerApp.allow_remote_access=True", f"--ServerApp.root_dir={root}"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (root / "jupyter.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=5) as res:
                    if res.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.monotonic() < deadline, (root / "jupyter.log").read_text()[-3000:]
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


# ---- helpers ---------------------------------------------------------------------------------


def _generate(server: Any, prompt: str) -> None:
    body = {"model": SMOLLM, "prompt": prompt, "stream": False,
            "options": {"temperature": 0, "seed": 1, "num_predict": 8}}
    reply = http(server.url, "POST", "/api/generate", body)
    assert reply.status == 200 and reply.json()["eval_count"] == 8


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def _has_colour(colours: list[tuple[int, int, int]], hex_colour: str, tolerance: int = 12) -> bool:
    want = _rgb(hex_colour)
    return any(all(abs(c[i] - want[i]) <= tolerance for i in range(3)) for c in colours)


class Dashboard:
    """One open dashboard page, with every console error and page error it produced."""

    def __init__(self, browser: Any, url: str) -> None:
        self.page = browser.new_page(viewport={"width": 1280, "height": 1000})
        self.errors: list[str] = []
        self.page.on("console", lambda msg: self.errors.append(msg.text) if msg.type == "error" else None)
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        response = self.page.goto(url)
        assert response is not None and response.status == 200, (response and response.status, url)

    # Functions, not expression strings: the page's CSP forbids eval, which Playwright would use.
    def points(self, chart: str = "c-tps") -> int:
        return int(self.page.evaluate("(c) => document.querySelectorAll('#' + c + ' svg circle').length", chart))

    def wait_for_points(self, n: int) -> None:
        self.page.wait_for_function("(n) => document.querySelectorAll('#c-tps svg circle').length >= n",
                                    arg=n, timeout=60_000)

    def wait_until_live(self) -> None:
        self.page.wait_for_function("() => document.getElementById('status').className === 'live'",
                                    timeout=60_000)

    def check_plots(self, requests: int) -> None:
        for chart, (mark, per_request, colours) in CHARTS.items():
            boxes = self.page.evaluate(
                """([chart, mark]) => Array.from(document.querySelectorAll('#' + chart + ' svg ' + mark))
                       .map(e => { const b = e.getBBox(); return [b.width, b.height]; })""",
                [chart, mark])
            assert len(boxes) == requests * per_request, (chart, boxes)
            assert any(w > 0 and h > 0 for w, h in boxes), (chart, boxes)
            shot = self.page.locator(f"#{chart}").screenshot()
            image = Image.open(io.BytesIO(shot)).convert("RGB")
            distinct = [c for _, c in image.getcolors(maxcolors=image.width * image.height)]
            assert image.width > 200 and image.height > 100, (chart, image.size)
            assert len(distinct) > 8, chart  # axes, labels and data, not a blank box
            for colour in colours:
                assert _has_colour(distinct, colour), (chart, colour)  # the data itself is drawn
        assert self.page.evaluate("() => document.querySelectorAll('#t-recent tbody tr').length") == requests

    def close(self) -> None:
        self.page.close()


# ---- tests -----------------------------------------------------------------------------------


def test_dashboard_renders_and_updates_live(server: Any, browser: Any) -> None:
    for prompt in ("Name a colour.", "Name a fruit.", "Name an animal."):
        _generate(server, prompt)
    board = Dashboard(browser, server.url + "/dashboard")
    try:
        board.wait_for_points(3)
        board.wait_until_live()
        board.check_plots(3)
        _generate(server, "Name a city.")
        board.wait_for_points(4)  # pushed over the event stream, no reload
        assert board.points() == 4 and board.points("c-ttft") == 4
        board.check_plots(4)
        assert board.page.locator("#count").inner_text() == "4 requests"
        assert board.errors == []
    finally:
        board.close()


def test_dashboard_behind_jupyter_server_proxy(server: Any, browser: Any, jupyter: str) -> None:
    jport = jupyter.rsplit(":", 1)[1]
    # A Jupyter on this machine: the proxy forwards Host 127.0.0.1:<jport>, a local name.
    local = Dashboard(browser, f"{jupyter}/proxy/{server.port}/dashboard?token={TOKEN}")
    try:
        local.wait_until_live()  # the SSE stream goes through the proxy unbuffered
        shown = local.points()
        assert shown >= 1
        local.check_plots(shown)
        _generate(server, "Name a river.")
        local.wait_for_points(shown + 1)
        assert local.errors == []
    finally:
        local.close()
    # A hub: the browser reaches Jupyter as hub.example.test, the proxy forwards that Host, and
    # the server answers it because OLLAMA_NB_ALLOWED_HOSTS names it.
    hub = Dashboard(browser, f"http://{HUB}:{jport}/proxy/{server.port}/dashboard?token={TOKEN}")
    try:
        hub.wait_until_live()
        shown = hub.points()
        hub.check_plots(shown)
        _generate(server, "Name a mountain.")
        hub.wait_for_points(shown + 1)
        assert hub.errors == []
    finally:
        hub.close()
    # Any other name the proxy forwards is still refused: the DNS-rebinding rule stands.
    refused = http(jupyter, "GET", f"/proxy/{server.port}/dashboard?token={TOKEN}",
                   headers={"Host": f"elsewhere.example.test:{jport}"})
    assert refused.status == 403 and "OLLAMA_NB_ALLOWED_HOSTS" in refused.json()["error"]

"""``ollama-nb info``, ``%ollama info`` and ``GET /api/info``: one report of what the runtime does
here (build, devices, CPU features, the probe's verdict, threads, and each loaded model as it
really runs), the same data through every face."""

from __future__ import annotations

import json
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell

from ollama_nb.api.types import InfoResponse
from ollama_nb.runtime import build_info, extra_buffers, threads

from .conftest import SMOLLM
from .server_fixtures import Live, http, live_server  # noqa: F401 - the module's server
from .test_cli import cli


def _check_report(info: InfoResponse) -> None:
    decision = extra_buffers.decide()
    assert info.library.startswith("llama-cpp-python ")
    assert "CPU" in info.backends
    assert any(d.type == "cpu" and d.memory_total > 0 for d in info.devices)
    assert info.cpu.cores == threads.usable_cores() and info.cpu.logical_cpus >= info.cpu.cores
    assert info.cpu.features == build_info.cpu_features().compiled and info.cpu.features
    assert info.cpu.features_missing == []  # this build runs on this CPU
    assert info.extra_buffers.enabled is decision.enabled
    assert info.extra_buffers.verdict == decision.verdict
    assert info.threads.setting == "automatic" and 1 <= info.threads.threads <= info.threads.cores
    assert info.flash_attention == "auto" and info.kv_cache_type == "f16"


def test_the_cli_prints_every_section(models_env: Any) -> None:
    done = cli("info")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for section in ("Runtime", "Devices", "CPU", "Extra buffer types", "Threads", "Settings"):
        assert f"\n  {section}\n" in f"\n{out}"
    assert "llama-cpp-python" in out and "compiled in" in out
    assert "automatic: " in out and "busy elsewhere" in out
    assert ("probe: " in out and ("cached verdict" in out or "probed now" in out))


def test_the_cli_json_is_the_api_body(models_env: Any) -> None:
    done = cli("info", "--json")
    assert done.returncode == 0, done.stderr
    _check_report(InfoResponse.model_validate(json.loads(done.stdout)))


def test_the_cli_says_when_the_override_decides(models_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_NB_EXTRA_BUFFERS", "0")
    out = cli("info").stdout
    assert "off (forced by OLLAMA_NB_EXTRA_BUFFERS=0)" in out


def test_api_info_reports_the_loaded_models_as_they_run(live: Live) -> None:
    reply = http(live.url, "POST", "/api/generate",
                 {"model": SMOLLM, "prompt": "hi", "stream": False, "options": {"num_predict": 2}})
    assert reply.status == 200
    got = http(live.url, "GET", "/api/info")
    assert got.status == 200 and got.headers["Content-Type"].startswith("application/json")
    info = InfoResponse.model_validate(got.json())
    _check_report(info)
    (model,) = [m for m in info.loaded if m.name == SMOLLM]
    assert model.automatic_threads and 1 <= model.threads <= info.cpu.cores
    assert model.extra_buffers is extra_buffers.decide().enabled
    assert model.flash_attention is True and model.kv_cache_type == "f16" and model.gpu_layers == 0
    assert not model.weights_mapped and model.huge_page_bytes >= 64 << 20  # the weights, in 2 MiB pages
    assert http(live.url, "POST", "/api/info").status == 405


def test_the_http_client_reads_it_too(live: Live) -> None:
    from ollama_nb.client import Client

    _check_report(Client(live.url).info())


def test_a_server_without_api_info_gets_a_clear_error() -> None:
    """A plain Ollama has no /api/info: the client says so instead of a bare 404."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from ollama_nb.base.errors import NotSupported
    from ollama_nb.client import Client

    class NotFound(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"404 page not found"
            self.send_response(404)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return

    server = HTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(NotSupported, match="does not report its runtime"):
            Client(url).info()
    finally:
        server.shutdown()


def test_the_magic_prints_the_report(manager: Any, capsys: pytest.CaptureFixture[str]) -> None:
    shell = InteractiveShell.instance()
    shell.extension_manager.load_extension("ollama_nb")
    magics = shell.magics_manager.registry["OllamaMagics"]
    magics.use_manager(manager)
    manager.load(SMOLLM)
    shell.run_line_magic("ollama", "info")
    out = capsys.readouterr().out
    assert "  Extra buffer types\n" in out and "  Loaded models\n" in out
    assert f"    {SMOLLM}" in out and "threads (automatic)" in out
    assert "weights read in, " in out and " MiB in huge pages" in out

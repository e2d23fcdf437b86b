"""The server in a real Jupyter kernel: it answers while a cell blocks the kernel, and after.

nbclient runs an ipykernel; the notebook starts ``ollama_nb.serve()`` in one cell and then runs
a cell that blocks the kernel's main thread. Meanwhile this process sends ``/api/version``,
``/api/tags`` and a streaming ``/api/generate`` to the kernel's server: the server has its own
loop in a thread of the kernel, so a busy cell must not stop it (ARCHITECTURE.md, "the kernel
must never block"). The blocking cell waits for a file this test writes once its requests are
answered, so "answered while the cell was running" holds by construction, with no timing.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from .conftest import SMOLLM
from .server_fixtures import http

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")


def _ask_server(url: str) -> dict[str, Any]:
    """The three requests; returns what a check needs from each answer."""
    version = http(url, "GET", "/api/version")
    tags = http(url, "GET", "/api/tags")
    body = {"model": SMOLLM, "prompt": "Say hi", "stream": True,
            "options": {"temperature": 0, "seed": 1, "num_predict": 8}}
    generated = http(url, "POST", "/api/generate", body)
    return {
        "version": (version.status, version.json()),
        "tags": (tags.status, sorted(m["name"] for m in tags.json()["models"])),
        "generate": (generated.status, generated.headers.get("Content-Type"), generated.lines()),
    }


def _check(answers: dict[str, Any]) -> None:
    status, version = answers["version"]
    assert status == 200 and version["version"]
    status, names = answers["tags"]
    assert status == 200 and SMOLLM in names
    status, content_type, lines = answers["generate"]
    assert status == 200 and content_type == "application/x-ndjson"
    assert len(lines) > 1 and all(not line["done"] for line in lines[:-1])  # streamed, token by token
    final = lines[-1]
    assert final["done"] and final["done_reason"] == "length" and final["eval_count"] == 8
    assert "".join(line["response"] for line in lines)


def _text(cell: Any) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o["output_type"] == "stream")


def test_the_kernels_server_answers_while_a_cell_blocks(shared_models: Path, tmp_path: Path) -> None:
    started, release = tmp_path / "cell-started", tmp_path / "release-cell"
    nb = nbformat.v4.new_notebook()
    start_server = (
        "import os, ollama_nb\n"
        f"os.environ['OLLAMA_MODELS'] = {str(shared_models)!r}\n"
        "h = ollama_nb.serve(host='127.0.0.1', port=0)\n"
        "print(h.port)"
    )
    block = (  # the kernel's main thread is busy until the test has its answers (60 s at most)
        "import os, time\n"
        f"open({str(started)!r}, 'w').close()\n"
        "deadline = time.monotonic() + 60\n"
        f"while not os.path.exists({str(release)!r}) and time.monotonic() < deadline:\n"
        "    time.sleep(0.05)\n"
        f"print('released' if os.path.exists({str(release)!r}) else 'gave up')"
    )
    stop_server = "h.stop()\nprint(h.running)"
    nb.cells = [nbformat.v4.new_code_cell(src) for src in (start_server, block, stop_server)]
    client = nbclient.NotebookClient(nb, timeout=90, kernel_name="python3")
    during: dict[str, Any] = {}
    failure: list[BaseException] = []

    def while_busy(url: str) -> None:
        try:
            for _ in range(1200):  # the blocking cell has begun once this file exists
                if started.exists():
                    break
                threading.Event().wait(0.05)
            assert started.exists(), "the blocking cell never started"
            during.update(_ask_server(url))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            failure.append(exc)
        finally:
            release.touch()

    with client.setup_kernel():
        client.execute_cell(nb.cells[0], 0)
        port = int(_text(nb.cells[0]).split()[-1])
        url = f"http://127.0.0.1:{port}"
        asker = threading.Thread(target=while_busy, args=(url,), daemon=True)
        asker.start()
        client.execute_cell(nb.cells[1], 1)  # returns when the cell ends, i.e. after the answers
        asker.join(60)
        if failure:
            raise failure[0]
        assert _text(nb.cells[1]).strip() == "released"  # the cell was still running throughout
        _check(during)
        _check(_ask_server(url))  # and with the kernel idle
        client.execute_cell(nb.cells[2], 2)
        assert _text(nb.cells[2]).strip() == "False"
        with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=5):
            pass

"""Helpers shared by the benchmarks (run as scripts: ``python bench/<name>.py``)."""

from __future__ import annotations

from typing import Any

#: The chat templates of the two bundled models, written out so that ours and llama-server get
#: the very same raw prompt. A bare instruction without its template is a coin toss: on some
#: builds the model answers it with end-of-text at once, and a stream of one token measures nothing.
TEMPLATES = {
    "smollm2:135m": "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n",
    "gemma3:270m": "<start_of_turn>user\n{}<end_of_turn>\n<start_of_turn>model\n",
}


def in_fresh_thread(fn: Any, *args: Any) -> Any:
    """Run ``fn`` on a thread that then exits. llama.cpp's OpenMP helpers belong to the thread
    that decoded; a pool left on this process's main thread would make libgomp throttle the
    spinning of every later decode (see ollama_nb/serving/worker.py) and slow the other side down."""
    import threading

    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # re-raised on the caller's thread
            box["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, timeout: float = 60) -> None:
    """Until ``url`` answers 200 (a server that is still loading its model answers 503)."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def start_ollama_nb(models: str, *, parallel: int, num_ctx: int,
                    env: dict[str, str] | None = None) -> tuple[Any, str]:
    """``ollama-nb serve`` as the anchors are run: models kept loaded, flash attention on,
    ``num_ctx`` per sequence, ``parallel`` sequences, ``env`` on top; (process, base URL) once it
    answers."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    port = free_port()
    env = dict(os.environ, OLLAMA_MODELS=models, OLLAMA_HOST=f"127.0.0.1:{port}",
               OLLAMA_NUM_PARALLEL=str(parallel), OLLAMA_KEEP_ALIVE="-1", OLLAMA_CONTEXT_LENGTH=str(num_ctx),
               OLLAMA_FLASH_ATTENTION="1", **(env or {}))
    cli = Path(sys.executable).with_name("ollama-nb")
    proc = subprocess.Popen([str(cli), "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(url + "/api/version")
    except BaseException:
        proc.kill()
        raise
    return proc, url


def bundled_store(name: str, prefix: str) -> tuple[str, str]:
    """A new model store holding the bundled model ``name`` (imported from its Python package:
    nothing is downloaded), made this process's ``OLLAMA_MODELS``; (the store, the GGUF path)."""
    import os
    import tempfile

    models = tempfile.mkdtemp(prefix=prefix)
    os.environ["OLLAMA_MODELS"] = models
    from ollama_nb.manager.core import ModelManager

    manager = ModelManager()
    for _ in manager.pull(name):
        pass
    return models, manager.spec(name).model_path


def rotate(sides: list[Any], round_: int) -> list[Any]:
    """The sides, starting with a different one each round: whoever runs first (or right after
    another side's burst) meets a different machine on this noisy box."""
    k = round_ % len(sides)
    return sides[k:] + sides[:k]


def write_results(out_dir: str, name: str, results: Any, markdown: str) -> None:
    """``bench/results/<name>.json`` and ``.md`` (where the README quotes them from), and the
    table on stdout."""
    import json
    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown)
    print(markdown)

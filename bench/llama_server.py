"""Driving the anchors (see anchors.py) the way the benchmarks drive ``ollama-nb serve``: start
``llama-server`` with the settings Ollama gives it, stream a completion from it with the same lean
client, and read ``llama-bench``'s generation speed as the ceiling."""

from __future__ import annotations

import http.client
import json
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from anchors import extra_buffers_on
from common import free_port, wait_for

#: Ollama's default sampling (temperature 0.8, top_k 40, top_p 0.9, no min_p), spelled for
#: llama-server, whose own defaults differ (min_p 0.05); greedy is temperature 0.
GREEDY: dict[str, Any] = {"temperature": 0}
OLLAMA_DEFAULT: dict[str, Any] = {"temperature": 0.8, "top_k": 40, "top_p": 0.9, "min_p": 0.0, "seed": 42}


@dataclass
class LlamaServer:
    proc: subprocess.Popen
    url: str

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def no_mmap(gpu_layers: int) -> list[str]:
    """What Ollama adds for a load on the CPU alone (server/sched.go turns mmap off, reason
    "cpu", and llm/llama_server.go passes that as ``--load-mode none``)."""
    return ["--load-mode", "none"] if gpu_layers == 0 else []


def no_repack() -> list[str]:
    """llama-server's switch for loading without extra buffer types, where ours does (see
    ``anchors.extra_buffers_on``)."""
    return [] if extra_buffers_on() else ["--no-repack"]


def start(binary: str, model_path: str, *, threads: int, parallel: int = 1, num_ctx: int = 4096,
          flash_attention: bool = True, gpu_layers: int = 0) -> LlamaServer:
    """llama-server as Ollama runs it: ``num_ctx`` per sequence (Ollama passes num_ctx x parallel
    as the total), ``parallel`` slots, flash attention, the same threads for prompt and tokens,
    and on the CPU the weights read in rather than mapped (Ollama's scheduler passes
    ``--load-mode none`` when no GPU takes layers and ``use_mmap`` is unset)."""
    port = free_port()
    cmd = [binary, "-m", model_path, "--host", "127.0.0.1", "--port", str(port),
           "-t", str(threads), "-tb", str(threads), "-c", str(num_ctx * parallel), "-np", str(parallel),
           "-b", "512", "-fa", "on" if flash_attention else "off", "-ngl", str(gpu_layers),
           "--no-webui", "--log-disable", *no_mmap(gpu_layers), *no_repack()]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(url + "/health", timeout=120)
    except BaseException:
        proc.kill()
        raise
    return LlamaServer(proc, url)


def stream_completion(url: str, prompt: str, tokens: int, sampling: dict[str, Any] = GREEDY) -> dict[str, float]:
    """One streamed ``/completion`` (SSE), read exactly as ``stream_generate`` reads ours."""
    host, _, port = url.removeprefix("http://").partition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=600)
    body = json.dumps({"prompt": prompt, "n_predict": tokens, "stream": True, "cache_prompt": True, **sampling})
    start_s = time.perf_counter()
    conn.request("POST", "/completion", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    first = None
    last = b""
    while line := resp.readline():
        if not line.startswith(b"data: "):
            continue
        if first is None:
            first = time.perf_counter()
        last = line
    end = time.perf_counter()
    conn.close()
    final = json.loads(last[len(b"data: "):])
    assert final.get("stop") and first is not None, final
    n = final["tokens_predicted"]
    timings = final.get("timings", {})
    return {"ttft_s": first - start_s, "gen_tps": max(n - 1, 0) / max(end - first, 1e-9), "tokens": n, "end": end,
            "start": start_s, "prefill_s": timings.get("prompt_ms", 0.0) / 1000,
            "cached": timings.get("cache_n", 0)}


def bench_tg(binary: str, model_path: str, *, threads: int, tokens: int, reps: int = 3,
             flash_attention: bool = True, gpu_layers: int = 0) -> float:
    """llama-bench's generation tokens/s (tg``tokens``): llama.cpp with nothing around it."""
    out = subprocess.run([binary, "-m", model_path, "-t", str(threads), "-fa", "1" if flash_attention else "0",
                          "-ngl", str(gpu_layers), "-lm", "none" if no_mmap(gpu_layers) else "auto",
                          "-p", "0", "-n", str(tokens), "-r", str(reps), "-o", "json",
                          "--repack", "1" if extra_buffers_on() else "0"],
                         check=True, capture_output=True, text=True).stdout
    (row,) = [r for r in json.loads(out) if r.get("n_gen") == tokens]
    return float(row["avg_ts"])

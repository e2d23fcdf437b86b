"""The server under load: /api/generate streaming vs raw llama-cpp-python, concurrent clients,
kernel responsiveness while serving, and the memory of a serving kernel.

One run measures everything against baselines taken in the same run, and prints ratios:

1. single stream: generation tokens/s and time to first token through ``ollama-nb serve``
   (``/api/generate``, NDJSON) vs the same GGUF driven directly with llama-cpp-python's
   streaming ``create_completion`` (same threads, context and prompt);
2. aggregate tokens/s with 1, 2 and 4 concurrent clients, serving them one after another
   (``OLLAMA_NUM_PARALLEL=1``, Ollama's default) and batched (``OLLAMA_NUM_PARALLEL=4``);
3. a real ipykernel hosting the server: the round trip of a trivial cell while a client streams
   from that kernel, vs while it is idle;
4. that kernel's anonymous resident memory (RSS beyond the mapped model file) when idle after
   loading, and after 1,000 requests.

    python bench/bench_server.py [--tokens 128] [--requests 1000] [--reps 5]

Results go to bench/results/server.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from common import in_fresh_thread

MODEL = "smollm2:135m"
PROMPT = "Write a long, detailed story about a lighthouse keeper and a storm. " * 6
PROMPTS = [
    "Tell me a long story about a dragon who learns to cook.",
    "Explain in detail how a steam engine works.",
    "Write a long letter to a friend about a summer holiday.",
    "Describe the history of the printing press at length.",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, timeout: float = 60) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


# ---- 1. single stream --------------------------------------------------------------------


def raw_single(path: str, tokens: int, threads: int, flash_attn: bool = True) -> dict[str, float]:
    import llama_cpp

    llm = llama_cpp.Llama(model_path=path, n_ctx=4096, n_batch=512, n_threads=threads,
                          n_threads_batch=threads, flash_attn=flash_attn, verbose=False)
    llm.create_completion("warm up", max_tokens=4, temperature=0)
    llm.reset()
    llama_cpp.llama_perf_context_reset(llm._ctx.ctx)
    prefill_s = None
    start = time.perf_counter()
    first = None
    n = 0
    for _ in llm.create_completion(PROMPT, max_tokens=tokens, temperature=0, stream=True):
        if first is None:
            first = time.perf_counter()
            prefill_s = llama_cpp.llama_perf_context(llm._ctx.ctx).t_p_eval_ms / 1000
        n += 1
    end = time.perf_counter()
    llm.close()
    assert first is not None
    return {"ttft_s": first - start, "gen_tps": (n - 1) / (end - first), "tokens": n, "prefill_s": prefill_s}


def stream_generate(url: str, prompt: str, tokens: int, *, raw: bool = True) -> dict[str, float]:
    """One streamed /api/generate, read with the leanest client there is (http.client, one
    thread, only the last line parsed). The client runs on the same two cores as the model, and
    raw llama-cpp-python has no client at all, so the less CPU it takes the fairer the ratio."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
    body = json.dumps({"model": MODEL, "prompt": prompt, "raw": raw, "stream": True,
                       "options": {"temperature": 0, "num_predict": tokens}})
    start = time.perf_counter()
    conn.request("POST", "/api/generate", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    first = None
    last_line = b""
    while line := resp.readline():
        if first is None:
            first = time.perf_counter()
        last_line = line
    end = time.perf_counter()
    conn.close()
    final = json.loads(last_line)
    assert final.get("done") and first is not None, final
    return {"ttft_s": first - start, "gen_tps": (final["eval_count"] - 1) / (end - first),
            "tokens": final["eval_count"], "end": end, "start": start,
            "prefill_s": final["prompt_eval_duration"] / 1e9}


async def stream_generate_aiohttp(session, url: str, prompt: str, tokens: int) -> dict[str, float]:
    """The same request through aiohttp, parsing every line, as an asyncio application would."""
    body = {"model": MODEL, "prompt": prompt, "raw": True, "stream": True,
            "options": {"temperature": 0, "num_predict": tokens}}
    start = time.perf_counter()
    first = None
    final = None
    async with session.post(url + "/api/generate", json=body) as resp:
        assert resp.status == 200, await resp.text()
        async for line in resp.content:
            chunk = json.loads(line)
            if first is None:
                first = time.perf_counter()
            if chunk.get("done"):
                final = chunk
    end = time.perf_counter()
    assert final is not None and first is not None
    return {"ttft_s": first - start, "gen_tps": (final["eval_count"] - 1) / (end - first),
            "tokens": final["eval_count"], "prefill_s": final["prompt_eval_duration"] / 1e9}


def served_single(url: str, tokens: int) -> dict[str, float]:
    stream_generate(url, "warm up", 4)
    return stream_generate(url, PROMPT, tokens)


def served_single_aiohttp(url: str, tokens: int) -> dict[str, float]:
    import aiohttp

    async def go() -> dict[str, float]:
        async with aiohttp.ClientSession() as session:
            await stream_generate_aiohttp(session, url, "warm up", 4)
            return await stream_generate_aiohttp(session, url, PROMPT, tokens)

    return asyncio.run(go())


def median_run(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in ("ttft_s", "gen_tps", "tokens", "prefill_s")}


# ---- 2. concurrent clients ----------------------------------------------------------------


def concurrent(url: str, clients: int, tokens: int) -> float:
    """Aggregate generated tokens/s of ``clients`` simultaneous streams (chat-style prompts)."""
    from concurrent.futures import ThreadPoolExecutor

    stream_generate(url, "warm up", 4, raw=False)
    with ThreadPoolExecutor(clients) as pool:
        t0 = time.perf_counter()
        results = list(pool.map(lambda i: stream_generate(url, PROMPTS[i % len(PROMPTS)], tokens, raw=False),
                                range(clients)))
    elapsed = max(r["end"] for r in results) - t0
    return sum(r["tokens"] for r in results) / elapsed


def start_server(models: str, parallel: int, threads: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, OLLAMA_MODELS=models, OLLAMA_HOST=f"127.0.0.1:{port}",
               OLLAMA_NUM_PARALLEL=str(parallel), OLLAMA_KEEP_ALIVE="-1")
    cli = Path(sys.executable).with_name("ollama-nb")
    proc = subprocess.Popen([str(cli), "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_for(url + "/api/version")
    return proc, url


# ---- 3 and 4. a real kernel ---------------------------------------------------------------


def kernel_checks(models: str, requests: int) -> dict[str, float]:
    """Cell round trips with the kernel's server idle and streaming; its anonymous memory."""
    from jupyter_client.manager import start_new_kernel

    port = free_port()
    km, kc = start_new_kernel(kernel_name="python3", env=dict(os.environ, OLLAMA_MODELS=models))
    try:
        def run(code: str) -> dict:
            reply = kc.execute_interactive(code, timeout=120, output_hook=lambda msg: None)
            assert reply["content"]["status"] == "ok", reply["content"]
            return reply

        def cell_ms(samples: int = 20) -> list[float]:
            out = []
            for _ in range(samples):
                t0 = time.perf_counter()
                run("1 + 1")
                out.append((time.perf_counter() - t0) * 1000)
            return out

        run(f"import ollama_nb; h = ollama_nb.serve(host='127.0.0.1', port={port})")
        url = f"http://127.0.0.1:{port}"
        wait_for(url + "/api/version")

        def rss_anon_mb() -> float:
            status = Path(f"/proc/{km.provisioner.process.pid}/status").read_text()
            line = next(ln for ln in status.splitlines() if ln.startswith("RssAnon:"))
            return int(line.split()[1]) / 1024

        stream_generate(url, "Hi", 4, raw=False)  # load the model
        idle = cell_ms()
        rss_idle = rss_anon_mb()

        stop = threading.Event()

        def client() -> None:
            while not stop.is_set():
                stream_generate(url, PROMPT, 64)

        t = threading.Thread(target=client)
        t.start()
        time.sleep(1.0)
        streaming = cell_ms()
        stop.set()
        t.join()
        rss_warm = rss_anon_mb()

        for _ in range(requests):
            stream_generate(url, "Hi", 1, raw=False)
        time.sleep(1.0)
        rss_after = rss_anon_mb()
        run("h.stop()")
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    return {
        "cell_ms_idle_median": statistics.median(idle),
        "cell_ms_streaming_median": statistics.median(streaming),
        "cell_ms_streaming_max": max(streaming),
        "rss_anon_mb_idle": rss_idle,
        "rss_anon_mb_warm": rss_warm,
        "rss_anon_mb_after": rss_after,
        "requests": requests,
    }


# ---- main ---------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()

    models = tempfile.mkdtemp(prefix="bench-server-models-")
    os.environ["OLLAMA_MODELS"] = models
    from ollama_nb.manager.core import ModelManager
    from ollama_nb.runtime import system_info
    from ollama_nb.runtime.threads import usable_cores

    m = ModelManager()
    for _ in m.pull(MODEL):
        pass
    path = m.spec(MODEL).model_path
    threads = usable_cores()
    results: dict[str, object] = {"model": MODEL, "threads": threads, "tokens": args.tokens,
                                  "date": time.strftime("%Y-%m-%d %H:%M"), "system": system_info()}

    proc, url = start_server(models, 1, threads)
    try:
        # Paired, interleaved repetitions: this machine's speed drifts by several percent from
        # one minute to the next, so each served run is compared with the raw run next to it.
        reps = []
        for _ in range(args.reps):
            raw = in_fresh_thread(raw_single, path, args.tokens, threads)
            served = served_single(url, args.tokens)
            via_aiohttp = served_single_aiohttp(url, args.tokens)
            no_fa = in_fresh_thread(raw_single, path, args.tokens, threads, False)
            reps.append({"raw": raw, "served": served, "aiohttp": via_aiohttp, "raw_no_fa": no_fa})
        serial = {n: statistics.median(concurrent(url, n, args.tokens) for _ in range(3)) for n in (1, 2, 4)}
    finally:
        proc.terminate()
        proc.wait()
    proc, url = start_server(models, 4, threads)
    try:
        batched = {n: statistics.median(concurrent(url, n, args.tokens) for _ in range(3)) for n in (1, 2, 4)}
    finally:
        proc.terminate()
        proc.wait()
    raw = median_run([r["raw"] for r in reps])
    served = median_run([r["served"] for r in reps])
    via_aiohttp = median_run([r["aiohttp"] for r in reps])
    raw_no_fa = median_run([r["raw_no_fa"] for r in reps])

    def paired(kind: str) -> dict[str, float]:
        return {
            "gen_ratio": statistics.median(r[kind]["gen_tps"] / r["raw"]["gen_tps"] for r in reps),
            "ttft_overhead_ms": statistics.median((r[kind]["ttft_s"] - r["raw"]["ttft_s"]) * 1000 for r in reps),
            # What the first token costs beyond evaluating the prompt, served minus raw: the
            # prompt's evaluation time swings by tens of ms from run to run on this machine.
            "beyond_prefill_overhead_ms": statistics.median(
                ((r[kind]["ttft_s"] - r[kind]["prefill_s"]) - (r["raw"]["ttft_s"] - r["raw"]["prefill_s"])) * 1000
                for r in reps),
        }

    results["single"] = {"raw": raw, "served": served, "aiohttp": via_aiohttp, "raw_no_fa": raw_no_fa, "reps": reps,
                         **paired("served"), "aiohttp_paired": paired("aiohttp")}
    results["concurrency"] = {
        "serial_tps": serial, "batched_tps": batched,
        "serial_scaling": {n: serial[n] / serial[1] for n in serial},
        "batched_scaling": {n: batched[n] / serial[1] for n in batched},
    }
    results["kernel"] = kernel_checks(models, args.requests)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "server.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    s, c, k = results["single"], results["concurrency"], results["kernel"]
    md = [
        f"# Server: ollama-nb serve vs raw llama-cpp-python ({MODEL}, {threads} threads, "
        f"{args.tokens} tokens, {results['date']})",
        "",
        f"Single stream: median of {args.reps} paired runs (raw, then served, then served again "
        "through aiohttp); ratios and overheads are medians of the per-pair values. Flash attention "
        "is on for both, as Ollama and llama-server have it on the CPU by default.",
        "",
        "| single stream | raw llama-cpp-python | /api/generate | ratio |",
        "|---|---|---|---|",
        f"| generation tokens/s | {raw['gen_tps']:.1f} | {served['gen_tps']:.1f} | {s['gen_ratio']:.2f} |",
        f"| time to first token | {raw['ttft_s'] * 1000:.1f} ms | {served['ttft_s'] * 1000:.1f} ms "
        f"| {s['ttft_overhead_ms']:+.1f} ms |",
        f"| first token beyond prompt evaluation | {(raw['ttft_s'] - raw['prefill_s']) * 1000:.1f} ms "
        f"| {(served['ttft_s'] - served['prefill_s']) * 1000:.1f} ms | {s['beyond_prefill_overhead_ms']:+.1f} ms |",
        f"| generation tokens/s, aiohttp client | {raw['gen_tps']:.1f} | {via_aiohttp['gen_tps']:.1f} "
        f"| {s['aiohttp_paired']['gen_ratio']:.2f} |",
        f"| raw without flash attention (llama-cpp-python's default) | {raw_no_fa['gen_tps']:.1f} tok/s, "
        f"first token {raw_no_fa['ttft_s'] * 1000:.1f} ms | | |",
        "",
        "The main client is `http.client` reading lines in one thread; the aiohttp client (an asyncio "
        "loop parsing every line) costs more CPU, and on two cores that CPU is the model's.",
        "",
        "| concurrent clients | one after another (NUM_PARALLEL=1) | batched (NUM_PARALLEL=4) |",
        "|---|---|---|",
        *[f"| {n} | {serial[n]:.1f} tok/s ({c['serial_scaling'][n]:.2f}x) | "
          f"{batched[n]:.1f} tok/s ({c['batched_scaling'][n]:.2f}x) |" for n in (1, 2, 4)],
        "",
        "Scaling is relative to one client served alone; each figure is the median of 3 runs.",
        "",
        "| kernel hosting the server | value |",
        "|---|---|",
        f"| cell round trip, idle (median) | {k['cell_ms_idle_median']:.1f} ms |",
        f"| cell round trip while a client streams (median / max) | {k['cell_ms_streaming_median']:.1f} / "
        f"{k['cell_ms_streaming_max']:.1f} ms |",
        f"| anonymous RSS, idle after load | {k['rss_anon_mb_idle']:.0f} MB |",
        f"| anonymous RSS after the streaming above (its KV pages now in use) | {k['rss_anon_mb_warm']:.0f} MB |",
        f"| anonymous RSS after {k['requests']} requests | {k['rss_anon_mb_after']:.0f} MB |",
        "",
    ]
    (out / "server.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()

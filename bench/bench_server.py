"""The server under load, against llama.cpp's own llama-server (Ollama's runner, so Ollama's
speed) built from the same llama.cpp sources with the same CPU flags (anchors.py), with raw
llama-cpp-python beside it and llama-bench's generation speed as the ceiling.

One run measures every side, interleaved, and prints ratios:

1. single stream, greedy and with Ollama's default sampling (temperature 0.8, top_k 40,
   top_p 0.9): generation tokens/s and time to first token of a cached prompt through
   ``ollama-nb serve`` (``/api/generate``, NDJSON), llama-server (``/completion``, SSE) and raw
   llama-cpp-python's streaming ``create_completion``; each round runs the sides in a rotated
   order, and a ratio is the median of the per-round ratios, with their spread;
2. aggregate tokens/s of 1, 2, 4 and 8 concurrent clients: ours with ``OLLAMA_NUM_PARALLEL=n``
   against llama-server with ``-np n``, the same context per sequence; and, from one more run,
   how much CPU llama.cpp's compute threads took and what the rest of our server cost per token;
3. a real ipykernel hosting the server: the round trip of a trivial cell while a client streams
   from that kernel, vs while it is idle;
4. that kernel's anonymous resident memory (RSS beyond the mapped model file) when idle after
   loading, and after 1,000 requests.

    python bench/bench_server.py [--tokens 128] [--rounds 7] [--requests 1000]

Results go to bench/results/server.{json,md}.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anchors
import llama_server
from common import (
    TEMPLATES,
    bundled_store,
    free_port,
    in_fresh_thread,
    rotate,
    start_ollama_nb,
    wait_for,
)
from llama_server import GREEDY, OLLAMA_DEFAULT

MODEL = "smollm2:135m"
PROMPT = "Write a long, detailed story about a lighthouse keeper and a storm. " * 6
#: The concurrent clients' prompts, in the model's chat template, so each asks for a long reply.
PROMPTS = [TEMPLATES[MODEL].format(p) for p in (
    "Tell me a long story about a dragon who learns to cook.",
    "Explain in detail how a steam engine works.",
    "Write a long letter to a friend about a summer holiday.",
    "Write a long, detailed essay about the history of the printing press.",
)]
SAMPLINGS = {"greedy": GREEDY, "ollama default": OLLAMA_DEFAULT}
NUM_CTX = 4096


# ---- the three sides of a single stream ---------------------------------------------------


class Raw:
    """The same GGUF driven directly with llama-cpp-python, kept loaded across rounds."""

    def __init__(self, path: str, threads: int) -> None:
        import llama_cpp

        self.llm = in_fresh_thread(lambda: llama_cpp.Llama(
            model_path=path, n_ctx=NUM_CTX, n_batch=512, n_threads=threads, n_threads_batch=threads,
            flash_attn=True, verbose=False))

    def run(self, prompt: str, tokens: int, sampling: dict[str, Any]) -> dict[str, float]:
        return in_fresh_thread(self._run, prompt, tokens, sampling)

    def _run(self, prompt: str, tokens: int, sampling: dict[str, Any]) -> dict[str, float]:
        start = time.perf_counter()
        first = None
        n = 0
        for _ in self.llm.create_completion(prompt, max_tokens=tokens, stream=True, repeat_penalty=1.0,
                                            **sampling):
            if first is None:
                first = time.perf_counter()
            n += 1
        end = time.perf_counter()
        assert first is not None
        return {"ttft_s": first - start, "gen_tps": (n - 1) / (end - first), "tokens": n}


def stream_generate(url: str, prompt: str, tokens: int, sampling: dict[str, Any] = GREEDY, *,
                    raw: bool = True, model: str = MODEL) -> dict[str, float]:
    """One streamed /api/generate, read with the leanest client there is (http.client, one
    thread, only the last line parsed). The client runs on the same two cores as the model, so
    the less CPU it takes the fairer the ratio; llama-server's stream is read the same way."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
    body = json.dumps({"model": model, "prompt": prompt, "raw": raw, "stream": True,
                       "options": {"num_predict": tokens, "repeat_penalty": 1.0, **sampling}})
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
    n = final.get("eval_count", 0)  # omitted when zero, as Go's omitempty does
    return {"ttft_s": first - start, "gen_tps": max(n - 1, 0) / max(end - first, 1e-9),
            "tokens": n, "end": end, "start": start}


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


# ---- 2. concurrent clients ----------------------------------------------------------------


def concurrent(run_one: Callable[[str, int], dict[str, float]], clients: int, tokens: int) -> float:
    """Aggregate generated tokens/s of ``clients`` simultaneous streams."""
    from concurrent.futures import ThreadPoolExecutor

    run_one("warm up", 4)
    with ThreadPoolExecutor(clients) as pool:
        t0 = time.perf_counter()
        results = list(pool.map(lambda i: run_one(PROMPTS[i % len(PROMPTS)], tokens), range(clients)))
    short = min(r["tokens"] for r in results)
    if short < tokens:  # an aggregate of streams that stopped early compares nothing
        raise RuntimeError(f"a stream ended after {short} of {tokens} tokens: give the prompts longer replies")
    elapsed = max(r["end"] for r in results) - t0
    return sum(r["tokens"] for r in results) / elapsed


def thread_cpu_ns(pid: int) -> dict[str, int]:
    """CPU time so far of each thread of process ``pid`` (/proc schedstat, nanoseconds)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            out[tid] = int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return out


def where_cpu_goes(pid: int, run: Callable[[], float], clients: int, tokens: int) -> dict[str, float]:
    """One more concurrent run with the server's threads' CPU time read before and after: the
    two busiest threads are llama.cpp's compute threads (the model's worker and its OpenMP
    helper); the rest is the server's own work (event loop, HTTP, shaping chunks)."""
    before = thread_cpu_ns(pid)
    started = time.perf_counter()
    run()
    wall = time.perf_counter() - started
    spent = sorted((ns - before.get(tid, 0) for tid, ns in thread_cpu_ns(pid).items()), reverse=True)
    generated = clients * tokens
    return {"compute_cores": sum(spent[:2]) / 1e9 / wall, "rest_ms_per_token": sum(spent[2:]) / 1e6 / generated,
            "compute_ms_per_token": sum(spent[:2]) / 1e6 / generated}


def start_server(models: str, parallel: int) -> tuple[subprocess.Popen, str]:
    return start_ollama_nb(models, parallel=parallel, num_ctx=NUM_CTX)


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


def single_stream(url: str, small_pages_url: str, server: llama_server.LlamaServer, raw: Raw, tokens: int,
                  rounds: int, sampling: dict[str, Any]) -> dict[str, Any]:
    """Ours, ours with the weights in 4 KiB pages (``OLLAMA_NB_HUGE_PAGES=0``: the before of
    runtime.huge_pages), llama-server and raw llama-cpp-python, in a rotated order each round."""
    sides = [
        ("ours", lambda: stream_generate(url, PROMPT, tokens, sampling)),
        ("ours, 4 KiB pages", lambda: stream_generate(small_pages_url, PROMPT, tokens, sampling)),
        ("llama-server", lambda: llama_server.stream_completion(server.url, PROMPT, tokens, sampling)),
        ("raw", lambda: raw.run(PROMPT, tokens, sampling)),
    ]
    for _, fn in sides:  # the prompt is cached everywhere before the first round
        fn()
    runs = [{name: fn() for name, fn in rotate(sides, r)} for r in range(rounds)]
    out: dict[str, Any] = {"runs": runs}
    for name, _ in sides:
        out[name] = {k: statistics.median(r[name][k] for r in runs) for k in ("gen_tps", "ttft_s", "tokens")}
    out["ours_vs_llama_server"] = summary([r["ours"]["gen_tps"] / r["llama-server"]["gen_tps"] for r in runs])
    out["ours_vs_small_pages"] = summary([r["ours"]["gen_tps"] / r["ours, 4 KiB pages"]["gen_tps"] for r in runs])
    out["small_pages_vs_llama_server"] = summary(
        [r["ours, 4 KiB pages"]["gen_tps"] / r["llama-server"]["gen_tps"] for r in runs])
    out["raw_vs_llama_server"] = summary([r["raw"]["gen_tps"] / r["llama-server"]["gen_tps"] for r in runs])
    out["ttft_ours_minus_llama_server_ms"] = summary(
        [(r["ours"]["ttft_s"] - r["llama-server"]["ttft_s"]) * 1000 for r in runs])
    return out


def scaling(models: str, path: str, binary: str, threads: int, tokens: int, clients: tuple[int, ...],
            reps: int) -> dict[int, dict[str, Any]]:
    """Ours with n sequences against llama-server with n slots, each pair of servers up together."""
    table: dict[int, dict[str, Any]] = {}
    for n in clients:
        proc, url = start_server(models, n)
        server = llama_server.start(binary, path, threads=threads, parallel=n, num_ctx=NUM_CTX)
        try:
            sides = [
                ("ours", lambda: concurrent(lambda p, t: stream_generate(url, p, t), n, tokens)),
                ("llama-server", lambda: concurrent(
                    lambda p, t: llama_server.stream_completion(server.url, p, t), n, tokens)),
            ]
            runs = [{k: {"tps": v} for k, v in ((k, fn()) for k, fn in rotate(sides, r))} for r in range(reps)]
            cpu = where_cpu_goes(proc.pid, sides[0][1], n, tokens)
        finally:
            proc.terminate()
            proc.wait()
            server.stop()
        table[n] = {
            "ours_tps": statistics.median(r["ours"]["tps"] for r in runs),
            "llama_server_tps": statistics.median(r["llama-server"]["tps"] for r in runs),
            "ratio": summary([r["ours"]["tps"] / r["llama-server"]["tps"] for r in runs]),
            "cpu": cpu,
        }
    return table


def spread(s: dict[str, float], fmt: str = "{:.2f}") -> str:
    return f"{fmt.format(s['median'])} ({fmt.format(s['min'])}–{fmt.format(s['max'])})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--clients", default="1,2,4,8")
    ap.add_argument("--no-kernel", action="store_true", help="skip the kernel checks (3 and 4)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    clients = tuple(int(c) for c in args.clients.split(","))

    from ollama_nb.runtime import system_info
    from ollama_nb.runtime.threads import usable_cores

    built = anchors.ensure()
    models, path = bundled_store(MODEL, "bench-server-models-")
    threads = usable_cores()
    results: dict[str, Any] = {"model": MODEL, "threads": threads, "tokens": args.tokens, "rounds": args.rounds,
                               "date": time.strftime("%Y-%m-%d %H:%M"), "system": system_info(),
                               "anchors": {"llama_cpp_python": built.llama_cpp_python, "cmake_args": built.cmake_args}}

    def ceiling() -> float:
        return llama_server.bench_tg(built.llama_bench, path, threads=threads, tokens=args.tokens)

    ceilings = [ceiling()]
    proc, url = start_server(models, 1)
    small_proc, small_url = start_ollama_nb(models, parallel=1, num_ctx=NUM_CTX, env={"OLLAMA_NB_HUGE_PAGES": "0"})
    server = llama_server.start(built.llama_server, path, threads=threads, parallel=1, num_ctx=NUM_CTX)
    raw = Raw(path, threads)
    try:
        results["single"] = {name: single_stream(url, small_url, server, raw, args.tokens, args.rounds, sampling)
                             for name, sampling in SAMPLINGS.items()}
    finally:
        for p in (proc, small_proc):
            p.terminate()
            p.wait()
        server.stop()
        raw.llm.close()
    ceilings.append(ceiling())
    results["llama_bench_tg"] = {"before": ceilings[0], "after": ceilings[1], "median": statistics.median(ceilings)}
    results["scaling"] = scaling(models, path, built.llama_server, threads, args.tokens, clients, 3)
    if not args.no_kernel:
        results["kernel"] = kernel_checks(models, args.requests)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "server.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    tg = results["llama_bench_tg"]["median"]
    md = [
        f"# Server: ollama-nb serve vs llama-server ({MODEL}, {threads} threads, {args.tokens} tokens, "
        f"{results['date']})",
        "",
        f"llama-server and llama-bench built from llama-cpp-python {built.llama_cpp_python}'s llama.cpp with "
        f"`{' '.join(built.cmake_args)}` (bench/anchors.py). Flash attention on, context {NUM_CTX} per sequence, "
        f"on every side. Single stream: {args.rounds} rounds, the sides in a rotated order each round; "
        "a ratio is the median of the per-round ratios, (min–max) its spread. The ceiling is llama-bench's "
        f"tg{args.tokens}, run before and after: {ceilings[0]:.1f} and {ceilings[1]:.1f} tokens/s. As Ollama does on "
        "the CPU, llama-server and llama-bench read the weights in (`--load-mode none`, `-lm none`); ours reads "
        "them in too and puts them in 2 MiB pages (runtime/huge_pages.py), and `ours, 4 KiB pages` is the same server "
        "with `OLLAMA_NB_HUGE_PAGES=0`.",
        "",
        "| single stream | ours /api/generate | ours, 4 KiB pages | llama-server /completion "
        "| raw llama-cpp-python | ours / llama-server | ours / 4 KiB pages | 4 KiB pages / llama-server "
        "| ours / ceiling | raw / llama-server |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in results["single"].items():
        md.append(f"| generation tokens/s, {name} | {s['ours']['gen_tps']:.1f} "
                  f"| {s['ours, 4 KiB pages']['gen_tps']:.1f} | {s['llama-server']['gen_tps']:.1f} "
                  f"| {s['raw']['gen_tps']:.1f} | {spread(s['ours_vs_llama_server'])} "
                  f"| {spread(s['ours_vs_small_pages'])} | {spread(s['small_pages_vs_llama_server'])} "
                  f"| {s['ours']['gen_tps'] / tg:.2f} | {spread(s['raw_vs_llama_server'])} |")
    for name, s in results["single"].items():
        md.append(f"| first token, cached prompt, {name} | {s['ours']['ttft_s'] * 1000:.1f} ms "
                  f"| {s['ours, 4 KiB pages']['ttft_s'] * 1000:.1f} ms "
                  f"| {s['llama-server']['ttft_s'] * 1000:.1f} ms | {s['raw']['ttft_s'] * 1000:.1f} ms "
                  f"| {spread(s['ttft_ours_minus_llama_server_ms'], '{:+.1f}')} ms | | | | |")
    md += [
        "",
        ("| concurrent clients | ours (OLLAMA_NUM_PARALLEL=n) | llama-server (-np n) | ours / llama-server "
         "| ours: llama.cpp's compute threads | ours: the rest of the server, per token |"),
        "|---|---|---|---|---|---|",
        *[(f"| {n} | {row['ours_tps']:.1f} tok/s | {row['llama_server_tps']:.1f} tok/s | {spread(row['ratio'])} "
           f"| {row['cpu']['compute_cores']:.2f} cores | {row['cpu']['rest_ms_per_token']:.3f} ms |")
          for n, row in results["scaling"].items()],
        "",
        ("Aggregate tokens/s of n simultaneous streams (greedy), each figure the median of 3 runs. The last "
         "two columns come from one more run of ours, with each server thread's CPU time read from /proc: "
         "the two busiest threads are llama.cpp's (the worker that decodes and its OpenMP helper), and the "
         "rest (event loop, HTTP, chunks) is what the server itself costs per generated token."),
        "",
    ]
    if "kernel" in results:
        k = results["kernel"]
        md += [
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

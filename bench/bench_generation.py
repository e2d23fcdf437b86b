"""Generation through the manager vs the same model driven directly with llama-cpp-python.

One run measures both, on the same GGUF, thread count and context size, and prints ratios:
generation tokens/s (128 and 2000 tokens), prompt tokens/s, time to first token and load time.
The baseline is llama-cpp-python's streaming ``create_completion``, the way most Python code
drives it. Results go to bench/results/generation.{json,md}.

    python bench/bench_generation.py [--reps 3] [--model smollm2:135m]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from common import in_fresh_thread

PROMPT = "Write a long, detailed story about a lighthouse keeper and a storm. " * 6


def bench_raw(path: str, n_predict: int, threads: int, n_ctx: int) -> dict[str, float]:
    import llama_cpp

    t0 = time.perf_counter()
    llm = llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_batch=512, n_threads=threads,
                          n_threads_batch=threads, flash_attn=True, verbose=False)
    load = time.perf_counter() - t0
    start = time.perf_counter()
    first = None
    n = 0
    for chunk in llm.create_completion(PROMPT, max_tokens=n_predict, temperature=0, stream=True):
        now = time.perf_counter()
        if first is None:
            first = now
        n += 1
    end = time.perf_counter()
    prompt_tokens = len(llm.tokenize(PROMPT.encode()))
    llm.close()
    return {"load_s": load, "ttft_s": first - start, "gen_tps": (n - 1) / (end - first),
            "prompt_tps": prompt_tokens / (first - start), "tokens": n}


def bench_manager(manager, name: str, n_predict: int, threads: int, n_ctx: int) -> dict[str, float]:
    opts = {"temperature": 0, "num_predict": n_predict, "num_thread": threads, "num_ctx": n_ctx}
    t0 = time.perf_counter()
    manager.generate(model=name, prompt="", stream=False, options=opts)
    load = time.perf_counter() - t0
    start = time.perf_counter()
    first = None
    n = 0
    final = None
    chunks = manager.generate(model=name, prompt=PROMPT, raw=True, stream=True, options=opts)
    for chunk in chunks:
        now = time.perf_counter()
        if chunk.done:
            final = chunk
            break
        if first is None:
            first = now
        n += 1
    end = time.perf_counter()
    chunks.close()  # the request lets go of the model
    # Unloaded now, and waited for: a model's worker thread lingers for its next task with its
    # OpenMP pool, which halved the raw side's speed when it ran next, and a model still loaded
    # made the next round's "load" a no-op.
    assert manager.unload(name), f"{name} was not loaded"
    deadline = time.monotonic() + 30
    while manager.scheduler.loaded() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not manager.scheduler.loaded(), f"{name} is still loaded"
    # Count tokens, not chunks: text held back while it may still become a stop string, or an
    # incomplete UTF-8 sequence, leaves some tokens without a chunk of their own.
    return {"load_s": load, "ttft_s": first - start, "gen_tps": (final.eval_count - 1) / (end - first),
            "prompt_tps": final.prompt_eval_count / (first - start), "tokens": final.eval_count,
            "engine_gen_tps": final.eval_count / final.eval_duration * 1e9}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2:135m")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()

    os.environ.setdefault("OLLAMA_MODELS", tempfile.mkdtemp(prefix="bench-models-"))
    from ollama_nb.manager.core import ModelManager
    from ollama_nb.runtime import system_info
    from ollama_nb.runtime.threads import usable_cores

    manager = ModelManager()
    for _ in manager.pull(args.model):
        pass
    path = manager.spec(args.model).model_path
    threads, n_ctx = usable_cores(), 4096
    rows = []
    for n_predict in (128, 2000):
        raw_runs, ours_runs = [], []
        for _ in range(args.reps):  # interleaved so load on the machine hits both sides alike
            raw_runs.append(in_fresh_thread(bench_raw, path, n_predict, threads, n_ctx))
            ours_runs.append(bench_manager(manager, args.model, n_predict, threads, n_ctx))
        med = lambda runs, key: statistics.median(r[key] for r in runs)  # noqa: E731
        row = {"n_predict": n_predict}
        for key in ("gen_tps", "prompt_tps", "ttft_s", "load_s"):
            row[f"raw_{key}"] = med(raw_runs, key)
            row[f"ours_{key}"] = med(ours_runs, key)
        row["gen_ratio"] = row["ours_gen_tps"] / row["raw_gen_tps"]
        row["prompt_ratio"] = row["ours_prompt_tps"] / row["raw_prompt_tps"]
        row["ttft_delta_ms"] = (row["ours_ttft_s"] - row["raw_ttft_s"]) * 1000
        row["load_ratio"] = row["ours_load_s"] / row["raw_load_s"]
        rows.append(row)
        print(f"n={n_predict}: generation {row['ours_gen_tps']:.1f} vs raw {row['raw_gen_tps']:.1f} tok/s "
              f"(ratio {row['gen_ratio']:.2f}); prompt ratio {row['prompt_ratio']:.2f}; "
              f"first token {row['ttft_delta_ms']:+.1f} ms vs raw; load ratio {row['load_ratio']:.2f}")
    manager.close()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"model": args.model, "threads": threads, "num_ctx": n_ctx, "reps": args.reps,
            "system_info": system_info(), "date": time.strftime("%Y-%m-%d %H:%M")}
    (out / "generation.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [f"# Generation: manager vs raw llama-cpp-python ({args.model}, {threads} threads, "
             f"num_ctx {n_ctx}, median of {args.reps}, {meta['date']})", "",
             "| tokens | ours tok/s | raw tok/s | gen ratio | prompt ratio | first token vs raw | load ratio |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['n_predict']} | {r['ours_gen_tps']:.1f} | {r['raw_gen_tps']:.1f} | "
                     f"{r['gen_ratio']:.2f} | {r['prompt_ratio']:.2f} | {r['ttft_delta_ms']:+.1f} ms | "
                     f"{r['load_ratio']:.2f} |")
    (out / "generation.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

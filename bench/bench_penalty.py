"""The repeat penalty: ours (``ollama-nb serve``) beside llama-server on both bundled models.

llama.cpp's penalties sampler, which llama-server runs, looks every token of the vocabulary up
in its table of recent tokens; ours changes only the logits of those recent tokens
(runtime.penalties). Both sides get the same prompt, 128 tokens, ``repeat_penalty`` 1.1 over the
last 64 tokens, greedy and with Ollama's sampling (temperature 0.8, top_k 40, top_p 0.9, a fixed
seed). Greedy without a penalty runs in the same rounds as the control: the ratio the two sides
have before any penalty. Rounds in a rotated order; a ratio is the median of the per-round
ratios, (min–max) its spread.

    python bench/bench_penalty.py [--rounds 5]

Results go to bench/results/penalty.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import anchors
import llama_server
from bench_server import NUM_CTX, spread, start_server, stream_generate, summary
from common import TEMPLATES, bundled_store, rotate, write_results

TOKENS = 128
PROMPT = "Write a long, detailed story about a lighthouse keeper and a storm."
PENALTY = {"repeat_penalty": 1.1, "repeat_last_n": 64}
SAMPLINGS = {
    "greedy, no penalty (control)": {"temperature": 0, "repeat_penalty": 1.0},
    "greedy, repeat_penalty 1.1": {"temperature": 0, **PENALTY},
    "Ollama's sampling, repeat_penalty 1.1": {"temperature": 0.8, "top_k": 40, "top_p": 0.9, "seed": 42, **PENALTY},
}


def measure(ours: str, server: str, model: str, rounds: int) -> dict[str, Any]:
    prompt = TEMPLATES[model].format(PROMPT)
    out: dict[str, Any] = {}
    for name, sampling in SAMPLINGS.items():
        sides = [("ours", lambda s=sampling: stream_generate(ours, prompt, TOKENS, s, model=model)),
                 ("llama-server", lambda s=sampling: llama_server.stream_completion(server, prompt, TOKENS, s))]
        for _, fn in sides:
            fn()  # the prompt is cached on both sides from here on
        runs = [{side: fn() for side, fn in rotate(sides, r)} for r in range(rounds)]
        out[name] = {side: statistics.median(r[side]["gen_tps"] for r in runs) for side, _ in sides}
        out[name]["ratio"] = summary([r["ours"]["gen_tps"] / r["llama-server"]["gen_tps"] for r in runs])
        out[name]["tokens"] = {side: statistics.median(r[side]["tokens"] for r in runs) for side, _ in sides}
        print(f"{model}, {name}: {out[name]['ours']:.1f} / {out[name]['llama-server']:.1f} tok/s", file=sys.stderr)
    return out


def markdown(results: dict[str, Any]) -> str:
    md = [f"# The repeat penalty: ollama-nb serve vs llama-server ({results['threads']} threads, {results['date']})", "",
          (f"Generation tokens/s seen by the client, {TOKENS} tokens of a story, medians of {results['rounds']} rounds "
           "in a rotated order; the ratio is ours / llama-server, the median of the per-round ratios with its "
           "spread. The penalty is `repeat_penalty` 1.1 over the last 64 tokens on both sides; the control "
           "row has none."), "",
          "| model | sampling | ours | llama-server | ours / llama-server |", "|---|---|---|---|---|"]
    for model, rows in results["models"].items():
        for name, row in rows.items():
            md.append(f"| {model} | {name} | {row['ours']:.1f} | {row['llama-server']:.1f} | {spread(row['ratio'])} |")
    return "\n".join(md) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--models", default=",".join(TEMPLATES))
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()

    from ollama_nb.runtime.threads import usable_cores

    built = anchors.ensure()
    threads = usable_cores()
    results: dict[str, Any] = {"threads": threads, "rounds": args.rounds, "date": time.strftime("%Y-%m-%d %H:%M"),
                               "anchors": {"llama_cpp_python": built.llama_cpp_python}, "models": {}}
    for model in args.models.split(","):
        models, path = bundled_store(model, "bench-penalty-models-")
        proc, ours = start_server(models, 1)
        server = llama_server.start(built.llama_server, path, threads=threads, num_ctx=NUM_CTX)
        try:
            results["models"][model] = measure(ours, server.url, model, args.rounds)
        finally:
            proc.terminate()
            proc.wait()
            server.stop()
    write_results(args.out, "penalty", results, markdown(results))


if __name__ == "__main__":
    main()

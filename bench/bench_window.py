"""Requests that share a long beginning and then part, on a sliding-window model: ours
(``ollama-nb serve``) beside llama-server (Ollama's runner), both with the window layers' ring
of cells (llama.cpp's default, ``swa_full`` off).

The same instructions (about 700 tokens) come before each of ``--documents`` documents (about
700 tokens each: longer than the ring reaches back), as when a notebook runs one prompt over the
rows of a table; 16 greedy tokens each, raw prompts (``/api/generate`` raw and ``/completion``).
Each round has new instructions, so it starts cold. Once the ring has moved past the
instructions, a side must evaluate them again for every document, unless it kept their window
cells: ours keeps a checkpoint where two prompts parted (runtime.window_checkpoints);
llama-server keeps its checkpoints at chat-message starts and near a prompt's end.

The table gives, per document, the prompt tokens each side processed and its first-token time
(medians over rounds, the sides in alternating order), and the ratio ours / llama-server.

A second table regenerates a long reply: a prompt whose greedy reply runs ``LONG_REPLY`` tokens
(further than the ring's spare cells, so the reply overwrites window cells its prompt's end
attends to), then the same prompt again. Ours keeps the window of the prompt's end before the
reply's second token (and the last prompt token's logits); llama-server keeps checkpoints 4 and
4 + n_ubatch tokens before a prompt's end.

    python bench/bench_window.py [--documents 6] [--rounds 3]

Results go to bench/results/window.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import anchors
import llama_server
from bench_context import ours_prompt, server_prompt
from common import bundled_store, rotate, start_ollama_nb, write_results

MODEL = "gemma3:270m"
TOKENS = 16
LONG_REPLY = 600
NUM_CTX = 4096
STATES = ("calm", "wild", "grey", "bright")


def instructions(round_: int) -> str:
    return "".join(f"Rule {i}: when the keeper of lighthouse number {i + 50 * round_} reports a "
                   f"{STATES[(i + round_) % 4]} storm, log it.\n" for i in range(30))


def reports(round_: int, j: int) -> str:
    return "".join(f"Report {j}.{k}: lighthouse {k + 50 * round_} saw a storm that was "
                   f"{STATES[(j + k + round_) % 4]}.\n" for k in range(40))


def document(round_: int, j: int) -> str:
    return reports(round_, j) + "Summary:"


def run(ours: str, server: str, documents: int, rounds: int) -> list[dict[str, Any]]:
    runs: list[dict[str, list[dict[str, float]]]] = [{"ours": [], "llama-server": []} for _ in range(documents)]
    for r in range(rounds):
        head = instructions(r)
        for j in range(documents):
            prompt = head + document(r, j)
            sides = [("ours", lambda p=prompt: ours_prompt(ours, p, model=MODEL, tokens=TOKENS)),
                     ("llama-server", lambda p=prompt: server_prompt(server, p, tokens=TOKENS))]
            for side, call in rotate(sides, r + j):
                runs[j][side].append(call())
            print(f"  round {r + 1} document {j + 1}: new tokens {runs[j]['ours'][-1]['new_tokens']} / "
                  f"{runs[j]['llama-server'][-1]['new_tokens']}, first token "
                  f"{runs[j]['ours'][-1]['ttft_ms']:.0f} / {runs[j]['llama-server'][-1]['ttft_ms']:.0f} ms", flush=True)
    rows = []
    for j, by_side in enumerate(runs):
        row: dict[str, Any] = {"document": j + 1}
        for side, measured in by_side.items():
            row[side] = {key: statistics.median(m[key] for m in measured) for key in ("new_tokens", "ttft_ms")}
        row["ttft_ratio"] = row["ours"]["ttft_ms"] / row["llama-server"]["ttft_ms"]
        rows.append(row)
    return rows


def regenerate(ours: str, server: str, rounds: int) -> dict[str, Any]:
    """A long reply, then the same prompt again (a regenerated reply): what each side evaluates
    for the second one, and its first-token time. The reports go on as a list, so the greedy
    reply runs its full length."""
    by_side: dict[str, list[dict[str, float]]] = {"ours": [], "llama-server": []}
    replies: dict[str, list[float]] = {"ours": [], "llama-server": []}
    for r in range(rounds):
        prompt = instructions(100 + r) + reports(100 + r, 0)
        sides = [("ours", lambda tokens, p=prompt: ours_prompt(ours, p, model=MODEL, tokens=tokens)),
                 ("llama-server", lambda tokens, p=prompt: server_prompt(server, p, tokens=tokens))]
        for side, call in rotate(sides, r):
            replies[side].append(call(LONG_REPLY)["generated"])
            by_side[side].append(call(TOKENS))
        print(f"  regenerate, round {r + 1}: long replies {replies['ours'][-1]:.0f} / "
              f"{replies['llama-server'][-1]:.0f} tokens, then new tokens {by_side['ours'][-1]['new_tokens']} / "
              f"{by_side['llama-server'][-1]['new_tokens']}, first token {by_side['ours'][-1]['ttft_ms']:.0f} / "
              f"{by_side['llama-server'][-1]['ttft_ms']:.0f} ms", flush=True)
    row: dict[str, Any] = {side: {"long_reply": statistics.median(replies[side]),
                                  **{key: statistics.median(m[key] for m in measured) for key in ("new_tokens", "ttft_ms")}}
                           for side, measured in by_side.items()}
    row["ttft_ratio"] = row["ours"]["ttft_ms"] / row["llama-server"]["ttft_ms"]
    return row


def markdown(results: dict[str, Any]) -> str:
    md = [(f"# The same instructions before each document: ollama-nb serve vs llama-server ({results['model']}, "
           f"{results['threads']} threads, {results['date']})"), "",
          (f"Raw prompts of about 700 tokens of instructions and 700 of document, {TOKENS} greedy tokens each, "
           f"num_ctx {NUM_CTX}, one sequence, flash attention on both sides; medians of {results['rounds']} rounds "
           "(new instructions each round), the sides in alternating order. New tokens are what each side "
           "processed for the request; the first-token ratio is ours / llama-server (below 1 is faster)."), "",
          "| document | new tokens, ours | llama-server | first token, ours | llama-server | ratio |",
          "|---|---|---|---|---|---|"]
    for row in results["rows"]:
        o, s = row["ours"], row["llama-server"]
        md.append(f"| {row['document']} | {o['new_tokens']:.0f} | {s['new_tokens']:.0f} | {o['ttft_ms']:.0f} ms "
                  f"| {s['ttft_ms']:.0f} ms | {row['ttft_ratio']:.2f} |")
    again = results.get("regenerate")
    if again:
        o, s = again["ours"], again["llama-server"]
        md += ["", (f"A regenerated long reply: a prompt of about 1,400 tokens whose greedy reply runs {LONG_REPLY} "
                    "tokens (past the ring's spare cells), then the same prompt again, "
                    f"{TOKENS} tokens; medians of {results['rounds']} rounds."), "",
               "| side | long reply | new tokens, again | first token, again |", "|---|---|---|---|",
               f"| ours | {o['long_reply']:.0f} | {o['new_tokens']:.0f} | {o['ttft_ms']:.1f} ms |",
               f"| llama-server | {s['long_reply']:.0f} | {s['new_tokens']:.0f} | {s['ttft_ms']:.1f} ms |",
               f"| ours / llama-server | | | {again['ttft_ratio']:.2f} |"]
    return "\n".join(md) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--documents", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()

    from ollama_nb.runtime.threads import usable_cores

    built = anchors.ensure()
    models, path = bundled_store(MODEL, "bench-window-models-")
    threads = usable_cores()
    proc, ours = start_ollama_nb(models, parallel=1, num_ctx=NUM_CTX)
    server = llama_server.start(built.llama_server, path, threads=threads, parallel=1, num_ctx=NUM_CTX)
    try:
        ours_prompt(ours, "Hello", model=MODEL, tokens=1)  # load the model
        server_prompt(server.url, "Hello", tokens=1)
        rows = run(ours, server.url, args.documents, args.rounds)
        again = regenerate(ours, server.url, args.rounds)
    finally:
        proc.terminate()
        proc.wait()
        server.stop()
    results = {"model": MODEL, "threads": threads, "rounds": args.rounds, "date": time.strftime("%Y-%m-%d %H:%M"),
               "anchors": {"llama_cpp_python": built.llama_cpp_python}, "rows": rows, "regenerate": again}
    write_results(args.out, "window", results, markdown(results))


if __name__ == "__main__":
    main()

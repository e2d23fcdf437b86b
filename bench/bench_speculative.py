"""Speculative decoding from the prompt, measured: an edit-style task (a 60-line code cell to
repeat with one change) and free text, greedy, through ``ollama-nb serve`` with
``draft_num_predict`` off and on, and llama-server with and without its own n-gram speculation
(``--spec-type ngram-simple``), all in one run, rotated order, medians of the rounds.

    python bench/bench_speculative.py [--rounds 3] [--draft 8,16]

Results go to bench/results/speculative.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anchors
import llama_server
from bench_server import NUM_CTX, spread, start_server, stream_generate, summary
from common import TEMPLATES, free_port, rotate, wait_for


def code_cell(lines: int = 60) -> str:
    """A notebook cell of the kind people ask to have fixed: loading, cleaning, plotting."""
    out = ["import pandas as pd", "import numpy as np", "import matplotlib.pyplot as plt", ""]
    i = 0
    while len(out) < lines - 3:
        out += [f"def clean_{i}(frame, threshold=0.{i % 9 + 1}):",
                f"    frame = frame.dropna(subset=['col_{i}'])",
                f"    frame['col_{i}'] = frame['col_{i}'].clip(lower=threshold)",
                "    return frame", ""]
        i += 1
    out += ["data = pd.read_csv('measurements.csv')", "data = clean_0(data)", "data.plot()"]
    return "\n".join(out[:lines])


EDIT = ("Repeat this cell exactly, changing only the file name to 'runs.csv':\n```python\n"
        f"{code_cell()}\n```")
FREE = "Write a long, detailed story about a lighthouse keeper and a storm."


def tasks(model: str) -> dict[str, tuple[str, int]]:
    """The raw prompts for ``model``; the edit's reply is begun with the code fence, as editing
    tools do, so that even a small model writes the cell back rather than describing it."""
    chat = TEMPLATES[model]
    return {"edit (60-line cell)": (chat.format(EDIT) + "```python\n", 640), "free text": (chat.format(FREE), 256)}


def start_spec_server(binary: str, path: str, threads: int) -> llama_server.LlamaServer:
    """llama-server with its own prompt-lookup speculation (the n-gram type closest to ours)."""
    port = free_port()
    cmd = [binary, "-m", path, "--host", "127.0.0.1", "--port", str(port), "-t", str(threads), "-tb", str(threads),
           "-c", str(NUM_CTX), "-np", "1", "-fa", "on", "--no-webui", "--log-disable", "--spec-type", "ngram-simple",
           *llama_server.no_mmap(0), *llama_server.no_repack()]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(f"http://127.0.0.1:{port}/health", timeout=120)
    return llama_server.LlamaServer(proc, f"http://127.0.0.1:{port}")


def measure(url: str, spec_url: str, plain_url: str, model: str, drafts: list[int], rounds: int) -> dict[str, Any]:
    greedy = {"temperature": 0}
    out: dict[str, Any] = {}
    for task, (prompt, tokens) in tasks(model).items():
        sides = [("ours", lambda: stream_generate(url, prompt, tokens, greedy, model=model))]
        sides += [(f"ours, draft {d}", lambda d=d: stream_generate(url, prompt, tokens,
                                                                    {**greedy, "draft_num_predict": d}, model=model))
                  for d in drafts]
        sides += [("llama-server", lambda: llama_server.stream_completion(plain_url, prompt, tokens, greedy)),
                  ("llama-server ngram-simple", lambda: llama_server.stream_completion(spec_url, prompt, tokens, greedy))]
        for _, fn in sides:
            fn()  # warm: the prompt is cached everywhere
        runs = [{name: fn() for name, fn in rotate(sides, r)} for r in range(rounds)]
        row: dict[str, Any] = {"runs": runs}
        for name, _ in sides:
            row[name] = {"tps": statistics.median(r[name]["gen_tps"] for r in runs),
                         "tokens": statistics.median(r[name]["tokens"] for r in runs)}
        for d in drafts:
            row[f"draft {d} vs off"] = summary([r[f"ours, draft {d}"]["gen_tps"] / r["ours"]["gen_tps"] for r in runs])
            row[f"draft {d} vs llama-server"] = summary(
                [r[f"ours, draft {d}"]["gen_tps"] / r["llama-server"]["gen_tps"] for r in runs])
        row["llama-server ngram vs off"] = summary(
            [r["llama-server ngram-simple"]["gen_tps"] / r["llama-server"]["gen_tps"] for r in runs])
        out[task] = row
        print(f"{model}: {task} done", file=sys.stderr)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--draft", default="8,16")
    ap.add_argument("--models", default=",".join(TEMPLATES))
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    drafts = [int(d) for d in args.draft.split(",")]

    models = tempfile.mkdtemp(prefix="bench-spec-models-")
    os.environ["OLLAMA_MODELS"] = models
    from ollama_nb.manager.core import ModelManager
    from ollama_nb.runtime.threads import usable_cores

    built = anchors.ensure()
    m = ModelManager()
    names = args.models.split(",")
    for name in names:
        for _ in m.pull(name):
            pass
    threads = usable_cores()
    results: dict[str, Any] = {"threads": threads, "rounds": args.rounds, "date": time.strftime("%Y-%m-%d %H:%M"),
                               "models": {}}
    proc, url = start_server(models, 1)
    try:
        for name in names:
            path = m.spec(name).model_path
            plain = llama_server.start(built.llama_server, path, threads=threads, num_ctx=NUM_CTX)
            spec = start_spec_server(built.llama_server, path, threads)
            try:
                results["models"][name] = measure(url, spec.url, plain.url, name, drafts, args.rounds)
            finally:
                plain.stop()
                spec.stop()
    finally:
        proc.terminate()
        proc.wait()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "speculative.json").write_text(json.dumps(results, indent=2) + "\n")
    sides = ["ours", *(f"ours, draft {d}" for d in drafts), "llama-server", "llama-server ngram-simple"]
    ratios = [*(f"draft {d} vs off" for d in drafts), *(f"draft {d} vs llama-server" for d in drafts),
              "llama-server ngram vs off"]
    md = [f"# Speculative decoding from the prompt ({threads} threads, greedy, {results['date']})", "",
          f"Generation tokens/s seen by the client, median of {args.rounds} rounds in a rotated order; ratios are "
          "medians of the per-round ratios, (min–max) their spread. The edit task repeats a 60-line code cell "
          "with one change (the reply begun with its code fence); free text is a story. `draft N` is "
          "`options.draft_num_predict`; llama-server's own n-gram speculation is `--spec-type ngram-simple`.", "",
          "| model | task | " + " | ".join(sides) + " |", "|---|---|" + "---|" * len(sides)]
    for name, rows in results["models"].items():
        for task, row in rows.items():
            md.append(f"| {name} | {task} | " + " | ".join(f"{row[s]['tps']:.1f}" for s in sides) + " |")
    md += ["", "| model | task | " + " | ".join(ratios) + " |", "|---|---|" + "---|" * len(ratios)]
    for name, rows in results["models"].items():
        for task, row in rows.items():
            md.append(f"| {name} | {task} | " + " | ".join(spread(row[r]) for r in ratios) + " |")
    md.append("")
    (out / "speculative.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()

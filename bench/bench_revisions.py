"""The manager's own cost at two revisions of this repository, measured in one run.

A refactor must not make a reply slower. This checks out ``--baseline`` (a git revision) into a
temporary worktree and runs the same workload against it and against the working tree, each in
a fresh process, alternating A, B, A, B... so the machine's drift falls on both sides. Each
process loads the model through the manager, warms up once, then measures a streamed
``generate`` and a streamed ``chat`` (greedy, fixed length): generation tokens/s from the
caller's side, and the time from the call to the first chunk. Results go to
bench/results/revisions.{json,md}.

    python bench/bench_revisions.py --baseline e03f0be [--rounds 5] [--model smollm2:135m]
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

REPO = Path(__file__).resolve().parent.parent

# Runs inside each measured process; imports ollama_nb from the tree on PYTHONPATH.
_WORKLOAD = r"""
import json, sys, time
from ollama_nb import ModelManager  # the public name, at every revision

name, n_predict = sys.argv[1], int(sys.argv[2])
opts = {"temperature": 0, "num_predict": n_predict, "num_thread": 2, "seed": 1}
m = ModelManager()
prompt = "Write a long story about a lighthouse keeper and a storm."

def measure(chunks):
    start = time.perf_counter()
    first = None
    for chunk in chunks:
        now = time.perf_counter()
        if chunk.done:
            end, final = now, chunk
            break
        if first is None:
            first = now
    return {"first_chunk_ms": (first - start) * 1e3, "tps": (final.eval_count - 1) / (end - first)}

def generate():
    return m.generate(model=name, prompt=prompt, stream=True, options=opts)

def chat():
    return m.chat(model=name, messages=[{"role": "user", "content": prompt}], stream=True, options=opts)

measure(generate())  # load and warm up
out = {"generate": measure(generate()), "chat": measure(chat())}
m.close()
print(json.dumps(out))
"""


def run_once(tree: Path, model: str, n_predict: int) -> dict[str, dict[str, float]]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run([sys.executable, "-c", _WORKLOAD, model, str(n_predict)], env=env, cwd=tree,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", required=True, help="git revision to compare the working tree with")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--model", default="smollm2:135m")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = ap.parse_args()
    rev = subprocess.run(["git", "rev-parse", "--short", args.baseline], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(base), rev], cwd=REPO, check=True,
                       capture_output=True)
        try:
            runs: dict[str, list[dict[str, dict[str, float]]]] = {"baseline": [], "now": []}
            for i in range(args.rounds):
                order = (("baseline", base), ("now", REPO)) if i % 2 == 0 else (("now", REPO), ("baseline", base))
                for label, tree in order:
                    runs[label].append(run_once(tree, args.model, args.tokens))
                print(f"round {i + 1}/{args.rounds} done", file=sys.stderr)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=REPO, check=True)

    rows = []
    for endpoint in ("generate", "chat"):
        row: dict[str, float | str] = {"endpoint": endpoint}
        for label in ("baseline", "now"):
            for key in ("tps", "first_chunk_ms"):
                values = [r[endpoint][key] for r in runs[label]]
                row[f"{label}_{key}"] = statistics.median(values)
                row[f"{label}_{key}_spread"] = max(values) - min(values)
        row["tps_ratio"] = row["now_tps"] / row["baseline_tps"]
        row["first_chunk_delta_ms"] = row["now_first_chunk_ms"] - row["baseline_first_chunk_ms"]
        rows.append(row)

    stamp = time.strftime("%Y-%m-%d %H:%M")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "revisions.json").write_text(json.dumps(
        {"baseline": rev, "model": args.model, "tokens": args.tokens, "rounds": args.rounds, "when": stamp,
         "rows": rows, "runs": runs}, indent=2) + "\n")
    lines = [
        f"# The manager now vs {rev} ({args.model}, {args.tokens} tokens greedy, 2 threads, "
        f"median of {args.rounds} interleaved rounds, {stamp})",
        "",
        "| endpoint | tok/s then | tok/s now | ratio | first chunk then | first chunk now | delta |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['endpoint']} | {r['baseline_tps']:.1f} (±{r['baseline_tps_spread'] / 2:.1f}) "
            f"| {r['now_tps']:.1f} (±{r['now_tps_spread'] / 2:.1f}) | {r['tps_ratio']:.2f} "
            f"| {r['baseline_first_chunk_ms']:.1f} ms | {r['now_first_chunk_ms']:.1f} ms "
            f"| {r['first_chunk_delta_ms']:+.1f} ms |")
    (out / "revisions.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

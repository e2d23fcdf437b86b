"""Cost as work grows: first-token time and generation speed against the context a request
carries, ours (``ollama-nb serve``) beside llama.cpp's llama-server (Ollama's runner) built from
the same sources with the same CPU flags (anchors.py).

1. **Context length.** A fresh prompt of about 0.5k, 2k, 4k and 8k tokens (a new first line each
   round, so neither side reuses a cache), then 64 generated tokens: time to the first token
   (the whole prompt's processing) and tokens/s while generating at that depth.
2. **Turns of a chat.** One conversation of ``--turns`` turns, each a new user message of about
   100 tokens and a 64-token reply, each side keeping its own replies in the history (the two
   sides' chat templates render the same ChatML: turn 1's prompt has the same token count).
   Turn N's first-token time shows what the turn costs: with prefix reuse only its new tokens are
   processed, however long the conversation. ``new tokens`` is what each side reports it
   processed (ours ``prompt_eval_count``, llama-server ``timings.prompt_n``).
3. **Two chats taking turns.** Conversations A and B alternate on one sequence (``-np 1``, our
   ``OLLAMA_NUM_PARALLEL=1``): each turn of A finds B's KV in the sequence. What saves the turn
   is a prompt cache in RAM: ours (``OLLAMA_NB_PROMPT_CACHE_MB``, 256 by default) and
   llama-server's (``--cache-ram``, 8192 MiB by default), each side with its shipped default.

Every measurement runs the two sides in alternating order, ``--rounds`` times; the tables give
medians and the ratio ours / llama-server (first token: below 1 is faster; tokens/s: above 1).

    python bench/bench_context.py [--lengths 512,2048,4096,8192] [--turns 12] [--rounds 3]
                                  [--sections lengths,turns,interleaved]

A run of some sections keeps the others' last results (from context.json).

Results go to bench/results/context.{json,md,png}.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anchors
import llama_server
from common import bundled_store, rotate, start_ollama_nb

MODEL = "smollm2:135m"
GEN_TOKENS = 64
NUM_CTX = 8192 + 1024  # the longest prompt plus its reply, on both sides
GREEDY = {"temperature": 0, "repeat_penalty": 1.0}
WORDS = [
    "the", "keeper", "climbed", "the", "tower", "each", "night", "to", "light", "the", "lamp",
    "while", "storms", "rolled", "over", "the", "grey", "sea", "and", "ships", "passed", "far",
    "away", "carrying", "wool", "salt", "iron", "and", "letters", "from", "distant", "towns",
]


def filler(n_words: int, seed: int) -> str:
    """Plain prose of ``n_words`` words (about 1.07 tokens each for this tokenizer)."""
    words = [WORDS[(i * 7 + seed) % len(WORDS)] for i in range(n_words)]
    return " ".join(words)


def _post_lines(url: str, path: str, body: dict[str, Any]) -> tuple[float, float | None, float, list[bytes]]:
    """POST, read the streamed reply line by line; (start, first content line, end, lines)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=900)
    start = time.perf_counter()
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    first = None
    lines = []
    while line := resp.readline():
        if not line.strip():
            continue
        if first is None and not line.startswith(b":"):
            first = time.perf_counter()
        lines.append(line)
    end = time.perf_counter()
    conn.close()
    return start, first, end, lines


# ---- one request on each side ------------------------------------------------------------------


def ours_prompt(url: str, prompt: str, *, model: str = MODEL, tokens: int = GEN_TOKENS) -> dict[str, float]:
    start, first, end, lines = _post_lines(url, "/api/generate", {
        "model": model, "prompt": prompt, "raw": True, "stream": True,
        "options": {"num_predict": tokens, **GREEDY}})
    final = json.loads(lines[-1])
    return _measure(start, first, end, final.get("eval_count", 0), final.get("prompt_eval_count", 0))


def server_prompt(url: str, prompt: str, *, tokens: int = GEN_TOKENS) -> dict[str, float]:
    start, first, end, lines = _post_lines(url, "/completion", {
        "prompt": prompt, "n_predict": tokens, "stream": True, "cache_prompt": True, **GREEDY})
    final = json.loads(lines[-1][len(b"data: "):])
    return _measure(start, first, end, final["tokens_predicted"], final["timings"]["prompt_n"])


def ours_chat(url: str, messages: list[dict[str, str]]) -> tuple[dict[str, float], str]:
    start, first, end, lines = _post_lines(url, "/api/chat", {
        "model": MODEL, "messages": messages, "stream": True, "options": {"num_predict": GEN_TOKENS, **GREEDY}})
    chunks = [json.loads(line) for line in lines]
    reply = "".join(c.get("message", {}).get("content", "") for c in chunks)
    final = chunks[-1]
    return _measure(start, first, end, final.get("eval_count", 0), final.get("prompt_eval_count", 0)), reply


def server_chat(url: str, messages: list[dict[str, str]]) -> tuple[dict[str, float], str]:
    start, first, end, lines = _post_lines(url, "/v1/chat/completions", {
        "messages": messages, "max_tokens": GEN_TOKENS, "stream": True, "temperature": 0,
        "stream_options": {"include_usage": True}, "timings_per_token": False})
    events = [json.loads(line[len(b"data: "):]) for line in lines
              if line.startswith(b"data: ") and line.strip() != b"data: [DONE]"]
    reply = "".join((e["choices"][0].get("delta", {}).get("content") or "") for e in events if e.get("choices"))
    last = events[-1]
    usage, timings = last.get("usage", {}), last.get("timings", {})
    # The first streamed event is the role alone, sent before any token: time the first content.
    return _measure(start, first, end, usage.get("completion_tokens", 0), timings.get("prompt_n", 0)), reply


def _measure(start: float, first: float | None, end: float, generated: int, prompt_new: int) -> dict[str, float]:
    assert first is not None
    return {"ttft_ms": (first - start) * 1000, "gen_tps": max(generated - 1, 0) / max(end - first, 1e-9),
            "generated": generated, "new_tokens": prompt_new}


# ---- the two measurements ----------------------------------------------------------------------


def by_length(ours: str, server: str, lengths: list[int], rounds: int) -> list[dict[str, Any]]:
    rows = []
    for length in lengths:
        runs: dict[str, list[dict[str, float]]] = {"ours": [], "llama-server": []}
        for r in range(rounds):
            prompt = f"Note {length}-{r}-{time.time_ns()}:\n" + filler(int(length / 1.07), r)
            sides = [("ours", lambda p=prompt: ours_prompt(ours, p)),
                     ("llama-server", lambda p=prompt: server_prompt(server, p))]
            for name, fn in rotate(sides, r):
                runs[name].append(fn())
        rows.append({"length": length, **_medians(runs)})
        print(f"  {length:>5} tokens: {_line(rows[-1])}", flush=True)
    return rows


def by_turn(ours: str, server: str, turns: int, rounds: int) -> list[dict[str, Any]]:
    """The same conversation on both sides, turn by turn, ``rounds`` times from scratch."""
    per_turn: list[dict[str, list[dict[str, float]]]] = [{"ours": [], "llama-server": []} for _ in range(turns)]
    for r in range(rounds):
        history = {"ours": [{"role": "system", "content": f"Session {r}-{time.time_ns()}. You are concise."}],
                   "llama-server": []}
        history["llama-server"] = list(history["ours"])
        for t in range(turns):
            question = f"Question {t + 1}: " + filler(75, t + r) + ". What happens next?"
            sides = [("ours", ours_chat, ours), ("llama-server", server_chat, server)]
            for name, fn, url in rotate(sides, r + t):
                history[name].append({"role": "user", "content": question})
                measured, reply = fn(url, history[name])
                history[name].append({"role": "assistant", "content": reply})
                per_turn[t][name].append(measured)
    rows = [{"turn": t + 1, **_medians(runs)} for t, runs in enumerate(per_turn)]
    for row in rows:
        print(f"  turn {row['turn']:>2}: {_line(row)}", flush=True)
    return rows


def by_interleaved(ours: str, server: str, turns: int, rounds: int) -> list[dict[str, Any]]:
    """Two conversations, A then B each turn, on one sequence per side: every turn of one
    finds the other's KV in the sequence, so only a prompt cache spares its history."""
    per_turn: dict[tuple[int, str], dict[str, list[dict[str, float]]]] = {
        (t, chat): {"ours": [], "llama-server": []} for t in range(turns) for chat in "AB"}
    for r in range(rounds):
        histories = {}
        for chat in "AB":
            system = [{"role": "system", "content": f"Chat {chat}, session {r}-{time.time_ns()}. You are concise."}]
            histories[chat] = {"ours": list(system), "llama-server": list(system)}
        for t in range(turns):
            for chat in "AB":
                question = f"{chat} asks {t + 1}: " + filler(75, t + r + (7 if chat == "B" else 0)) + ". And then?"
                sides = [("ours", ours_chat, ours), ("llama-server", server_chat, server)]
                for name, fn, url in rotate(sides, r + t):
                    history = histories[chat][name]
                    history.append({"role": "user", "content": question})
                    measured, reply = fn(url, history)
                    history.append({"role": "assistant", "content": reply})
                    per_turn[(t, chat)][name].append(measured)
    rows = [{"turn": t + 1, "chat": chat, **_medians(runs)} for (t, chat), runs in per_turn.items()]
    for row in rows:
        print(f"  turn {row['turn']:>2}{row['chat']}: {_line(row)}", flush=True)
    return rows


def _medians(runs: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, samples in runs.items():
        out[name] = {k: statistics.median(s[k] for s in samples) for k in samples[0]}
    pairs = list(zip(runs["ours"], runs["llama-server"], strict=True))
    out["ttft_ratio"] = statistics.median(a["ttft_ms"] / b["ttft_ms"] for a, b in pairs)
    out["tps_ratio"] = statistics.median(a["gen_tps"] / b["gen_tps"] for a, b in pairs)
    return out


def _line(row: dict[str, Any]) -> str:
    o, s = row["ours"], row["llama-server"]
    return (f"first token {o['ttft_ms']:.0f} vs {s['ttft_ms']:.0f} ms ({row['ttft_ratio']:.2f}), "
            f"{o['gen_tps']:.1f} vs {s['gen_tps']:.1f} tok/s ({row['tps_ratio']:.2f}), "
            f"new tokens {o['new_tokens']:.0f} vs {s['new_tokens']:.0f}")


# ---- output ------------------------------------------------------------------------------------


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7), constrained_layout=True)
    for col, (key, rows, label) in enumerate((("length", results["lengths"], "prompt tokens"),
                                             ("turn", results["turns"], "chat turn"))):
        xs = [row[key] for row in rows]
        for side, style in (("ours", "o-"), ("llama-server", "s--")):
            axes[0][col].plot(xs, [row[side]["ttft_ms"] for row in rows], style, label=side)
            axes[1][col].plot(xs, [row[side]["gen_tps"] for row in rows], style, label=side)
        axes[0][col].set_ylabel("first token (ms)")
        axes[1][col].set_ylabel("generation (tokens/s)")
        axes[1][col].set_xlabel(label)
        axes[1][col].set_ylim(bottom=0)
        axes[0][col].set_ylim(bottom=0)
        for ax in (axes[0][col], axes[1][col]):
            ax.grid(alpha=0.3)
            ax.legend()
    axes[0][0].set_title("a fresh prompt of N tokens")
    axes[0][1].set_title("turn N of one chat")
    fig.suptitle(f"{results['model']}, {results['threads']} threads: ollama-nb serve vs llama-server")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def measured(results: dict[str, Any], key: str) -> str:
    """When a section was measured and with how many rounds: a run of some sections keeps the
    others' results from an earlier run."""
    return (f"Measured {results.get(f'{key}_date', results['date'])}, "
            f"{results.get(f'{key}_rounds', results['rounds'])} rounds.")


def markdown(results: dict[str, Any]) -> str:
    md = [(f"# Cost as work grows: ollama-nb serve vs llama-server ({results['model']}, {results['threads']} "
          f"threads, {results['date']})"), "",
          (f"Greedy, {GEN_TOKENS} generated tokens per request, num_ctx {NUM_CTX}, flash attention on both sides; "
          "medians of each section's rounds in alternating order. Ratios are ours / llama-server: "
          "first token below 1 is faster, tokens/s above 1 is faster."), "",
          "![first token and tokens/s against context length and chat turns](context.png)", "",
          "## A fresh prompt of N tokens", "", measured(results, "lengths"), "",
          "| prompt tokens | first token, ours | llama-server | ratio | tokens/s, ours | llama-server | ratio |",
          "|---|---|---|---|---|---|---|"]
    for row in results["lengths"]:
        o, s = row["ours"], row["llama-server"]
        md.append(f"| {o['new_tokens']:.0f} | {o['ttft_ms']:.0f} ms | {s['ttft_ms']:.0f} ms | {row['ttft_ratio']:.2f} "
                  f"| {o['gen_tps']:.1f} | {s['gen_tps']:.1f} | {row['tps_ratio']:.2f} |")
    md += ["", "## Turn N of one chat", "",
           "New tokens are what each side processed for the turn (the rest came from its cache). "
           + measured(results, "turns"), "",
           ("| turn | new tokens, ours | llama-server | first token, ours | llama-server | ratio "
           "| tokens/s, ours | llama-server | ratio |"),
           "|---|---|---|---|---|---|---|---|---|"]
    for row in results["turns"]:
        o, s = row["ours"], row["llama-server"]
        md.append(f"| {row['turn']} | {o['new_tokens']:.0f} | {s['new_tokens']:.0f} | {o['ttft_ms']:.0f} ms "
                  f"| {s['ttft_ms']:.0f} ms | {row['ttft_ratio']:.2f} | {o['gen_tps']:.1f} | {s['gen_tps']:.1f} "
                  f"| {row['tps_ratio']:.2f} |")
    if results.get("interleaved"):
        md += ["", "## Two chats taking turns on one sequence", "",
               ("Chats A and B alternate; each turn finds the other chat's KV in the sequence, so its own "
                "history comes back only from a prompt cache in RAM (ours: 256 MB by default; "
                "llama-server's `--cache-ram`: 8192 MiB by default). " + measured(results, "interleaved")), "",
               ("| turn | new tokens, ours | llama-server | first token, ours | llama-server | ratio "
                "| tokens/s, ours | llama-server | ratio |"),
               "|---|---|---|---|---|---|---|---|---|"]
        for row in results["interleaved"]:
            o, s = row["ours"], row["llama-server"]
            md.append(f"| {row['turn']}{row['chat']} | {o['new_tokens']:.0f} | {s['new_tokens']:.0f} "
                      f"| {o['ttft_ms']:.0f} ms | {s['ttft_ms']:.0f} ms | {row['ttft_ratio']:.2f} "
                      f"| {o['gen_tps']:.1f} | {s['gen_tps']:.1f} | {row['tps_ratio']:.2f} |")
    return "\n".join(md) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", default="512,2048,4096,8192")
    ap.add_argument("--turns", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--interleaved-turns", type=int, default=6)
    ap.add_argument("--sections", default="lengths,turns,interleaved")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    sections = set(args.sections.split(","))
    out = Path(args.out)
    previous = json.loads((out / "context.json").read_text()) if (out / "context.json").exists() else {}

    from ollama_nb.runtime.threads import usable_cores

    built = anchors.ensure()
    models, path = bundled_store(MODEL, "bench-context-models-")
    threads = usable_cores()
    proc, ours = start_ollama_nb(models, parallel=1, num_ctx=NUM_CTX)
    server = llama_server.start(built.llama_server, path, threads=threads, parallel=1, num_ctx=NUM_CTX)
    results: dict[str, Any] = {"model": MODEL, "threads": threads, "rounds": args.rounds,
                               "date": time.strftime("%Y-%m-%d %H:%M"),
                               "anchors": {"llama_cpp_python": built.llama_cpp_python}}
    try:
        ours_prompt(ours, "Hello")  # load the model
        server_prompt(server.url, "Hello")
        for key in ("lengths", "turns", "interleaved"):  # what this run does not measure is kept
            if key not in sections and key in previous:
                results[key] = previous[key]
                results[f"{key}_date"] = previous.get(f"{key}_date", previous.get("date"))
                results[f"{key}_rounds"] = previous.get(f"{key}_rounds", previous.get("rounds"))
        if "lengths" in sections:
            print("fresh prompts:", flush=True)
            results["lengths"] = by_length(ours, server.url, [int(x) for x in args.lengths.split(",")], args.rounds)
        if "turns" in sections:
            print("chat turns:", flush=True)
            results["turns"] = by_turn(ours, server.url, args.turns, args.rounds)
        if "interleaved" in sections:
            print("two chats taking turns:", flush=True)
            results["interleaved"] = by_interleaved(ours, server.url, args.interleaved_turns, args.rounds)
        for key in sections:
            results[f"{key}_date"], results[f"{key}_rounds"] = results["date"], args.rounds
    finally:
        proc.terminate()
        proc.wait()
        server.stop()

    out.mkdir(parents=True, exist_ok=True)
    (out / "context.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, out / "context.png")
    (out / "context.md").write_text(markdown(results))
    print(f"wrote {out / 'context.md'} and context.png")


if __name__ == "__main__":
    main()

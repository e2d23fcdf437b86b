"""The two CPU choices the runtime makes, each measured against its alternatives in one run.

1. llama.cpp's CPU extra buffer types (AMX tiles, repacked weights) on and off, on each bundled
   model: prompt and generation tokens/s. Off is what a machine whose probe faulted gets.
2. The thread count: fixed at 1, fixed at one per core (the old default) and automatic (the
   governor in ``ollama_nb/runtime/threads.py``), with the cores idle, with one core busy in
   another process, and with one core busy in a thread of this very process (a notebook cell).

Every setting is a model loaded in its own manager, all loaded at once; repetitions interleave
the settings and the tables show medians, so the machine's drift hits every column alike.
Results go to bench/results/cpu.{json,md}.

    python bench/bench_cpu.py [--reps 5]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PROMPT_WORDS = "The lighthouse keeper watched the storm roll in over the harbour while the ships"
GENERATED = 128


def prompt(rep: int, words: int = 506) -> str:
    """About 512 tokens, with a different start on every repetition so no KV prefix is reused."""
    text = " ".join(PROMPT_WORDS.split() * (words // len(PROMPT_WORDS.split()) + 1))
    return f"Run {rep}: {text[: words * 6]}"


def speeds(manager: Any, model: str, rep: int) -> dict[str, float]:
    """Prompt tokens/s on a ~512-token prompt, then generation tokens/s over 128 tokens."""
    load = manager.bench_options  # the same load options as the model was loaded with: no reload
    pp = manager.generate(model=model, prompt=prompt(rep), raw=True, stream=False,
                          options={**load, "temperature": 0, "num_predict": 1})
    tg = manager.generate(model=model, prompt=f"Story {rep}: once upon a time", raw=True, stream=False,
                          options={**load, "temperature": 0, "num_predict": GENERATED})
    return {"prompt_tps": pp.prompt_eval_count / pp.prompt_eval_duration * 1e9,
            "gen_tps": tg.eval_count / tg.eval_duration * 1e9, "prompt_tokens": pp.prompt_eval_count}


def loaded(model: str, env: dict[str, str], options: dict[str, Any]) -> Any:
    """A manager of its own with ``model`` loaded under ``env`` (read at load time)."""
    from ollama_nb import ModelManager

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        manager = ModelManager()
        for _ in manager.pull(model):
            pass
        manager.load(model, options=options, keep_alive=-1)
        manager.bench_options = options
        return manager
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def engine_of(manager: Any) -> Any:
    return next(iter(manager.scheduler._runners.values())).engine


def median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def spread(rows: list[dict[str, float]], key: str) -> str:
    values = [r[key] for r in rows]
    return f"{min(values):.0f}-{max(values):.0f}"


# ---- 1. extra buffer types -------------------------------------------------------------------------


def bench_extra_buffers(models: list[str], reps: int) -> list[dict[str, Any]]:
    results = []
    for model in models:
        on = loaded(model, {"OLLAMA_NB_EXTRA_BUFFERS": "1"}, {})
        off = loaded(model, {"OLLAMA_NB_EXTRA_BUFFERS": "0"}, {})
        assert engine_of(on).params.extra_buffers and not engine_of(off).params.extra_buffers
        rows: dict[str, list[dict[str, float]]] = {"on": [], "off": []}
        speeds(on, model, -1), speeds(off, model, -2)  # warm both
        for rep in range(reps):
            for name, manager in (("on", on), ("off", off)) if rep % 2 == 0 else (("off", off), ("on", on)):
                rows[name].append(speeds(manager, model, rep))
        on.close(), off.close()
        results.append({
            "model": model,
            "prompt_tokens": rows["on"][0]["prompt_tokens"],
            "on": {k: median(rows["on"], k) for k in ("prompt_tps", "gen_tps")},
            "off": {k: median(rows["off"], k) for k in ("prompt_tps", "gen_tps")},
            "spread": {name: {k: spread(r, k) for k in ("prompt_tps", "gen_tps")} for name, r in rows.items()},
        })
        print(json.dumps(results[-1]), flush=True)
    return results


# ---- 2. threads ------------------------------------------------------------------------------------


@contextlib.contextmanager
def busy_process() -> Iterator[None]:
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        yield
    finally:
        burner.kill()
        burner.wait()


@contextlib.contextmanager
def busy_thread() -> Iterator[None]:
    """A thread of this process that keeps one core busy without holding the GIL (hashing a large
    buffer releases it), like a notebook cell crunching numbers beside the server."""
    stop = threading.Event()
    data = os.urandom(1 << 20)

    def burn() -> None:
        while not stop.is_set():
            hashlib.sha256(data).digest()

    t = threading.Thread(target=burn, daemon=True)
    t.start()
    try:
        time.sleep(0.5)
        yield
    finally:
        stop.set()
        t.join()


def bench_threads(model: str, reps: int) -> dict[str, Any]:
    from ollama_nb.runtime.threads import usable_cores

    cores = usable_cores()
    settings = {"1 thread": {"num_thread": 1}, f"{cores} threads (one per core)": {"num_thread": cores},
                "automatic": {}}
    managers = {name: loaded(model, {}, opts) for name, opts in settings.items()}
    engines = {name: engine_of(m) for name, m in managers.items()}
    conditions = {"idle cores": contextlib.nullcontext, "one core busy in another process": busy_process,
                  "one core busy in this process": busy_thread}
    out: dict[str, Any] = {"model": model, "cores": cores, "conditions": {}}
    for condition, context in conditions.items():
        rows: dict[str, list[dict[str, float]]] = {name: [] for name in settings}
        chosen: list[int] = []
        with context():
            for name, manager in managers.items():  # warm up, and let the governor see the load
                speeds(manager, model, -1)
            for rep in range(reps):
                order = list(managers.items())
                for name, manager in order[rep % len(order):] + order[: rep % len(order)]:
                    rows[name].append(speeds(manager, model, rep))
                    if name == "automatic":
                        chosen.append(engine_of(manager).threads)
        out["conditions"][condition] = {
            name: {"gen_tps": median(r, "gen_tps"), "prompt_tps": median(r, "prompt_tps"),
                   "gen_spread": spread(r, "gen_tps")} for name, r in rows.items()
        }
        out["conditions"][condition]["automatic"]["threads_chosen"] = sorted(set(chosen))
        print(condition, json.dumps(out["conditions"][condition]), flush=True)
    for name, manager in managers.items():  # still the engines loaded at the start: none reloaded
        assert engine_of(manager) is engines[name]
    for manager in managers.values():
        manager.close()
    return out


# ---- report ----------------------------------------------------------------------------------------


def write_markdown(path: Path, data: dict[str, Any]) -> None:
    lines = [f"# CPU choices ({data['cpu']}, {data['cores']} cores, median of {data['reps']}, {data['when']})", "",
             f"llama.cpp build: `{data['system_info']}`", "",
             "## Extra buffer types (AMX, repacked weights): on vs off", "",
             f"Prompt of about {data['extra_buffers'][0]['prompt_tokens']} tokens; {GENERATED} generated tokens.",
             "",
             "| model | prompt tok/s on | off | ratio | generation tok/s on | off | ratio |",
             "|---|---|---|---|---|---|---|"]
    for r in data["extra_buffers"]:
        on, off = r["on"], r["off"]
        lines.append(f"| {r['model']} | {on['prompt_tps']:.0f} | {off['prompt_tps']:.0f} | "
                     f"{on['prompt_tps'] / off['prompt_tps']:.2f} | {on['gen_tps']:.1f} | {off['gen_tps']:.1f} | "
                     f"{on['gen_tps'] / off['gen_tps']:.2f} |")
    t = data["threads"]
    names = list(next(iter(t["conditions"].values())))
    lines += ["", f"## Threads ({t['model']}): generation tok/s (prompt tok/s)", "",
              "| condition | " + " | ".join(names) + " | automatic vs one per core (the old default) "
              "| automatic vs best fixed | automatic chose |",
              "|---|" + "---|" * (len(names) + 3)]
    for condition, row in t["conditions"].items():
        best_fixed = max(v["gen_tps"] for k, v in row.items() if k != "automatic")
        per_core = next(v["gen_tps"] for k, v in row.items() if "one per core" in k)
        cells = [f"{row[n]['gen_tps']:.1f} ({row[n]['prompt_tps']:.0f})" for n in names]
        chose = ", ".join(str(c) for c in row["automatic"]["threads_chosen"])
        lines.append(f"| {condition} | " + " | ".join(cells) + f" | {row['automatic']['gen_tps'] / per_core:.2f}"
                     f" | {row['automatic']['gen_tps'] / best_fixed:.2f} | {chose} |")
    lines += ["", "Spreads (generation tok/s, min-max over the repetitions):", ""]
    for condition, row in t["conditions"].items():
        lines.append(f"- {condition}: " + "; ".join(f"{n} {row[n]['gen_spread']}" for n in names))
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--models", default="smollm2:135m,gemma3:270m")
    parser.add_argument("--thread-model", default="smollm2:135m")
    parser.add_argument("--markdown-only", action="store_true", help="rewrite cpu.md from cpu.json")
    args = parser.parse_args()

    import platform

    from ollama_nb.runtime import system_info
    from ollama_nb.runtime.cpu import model_name
    from ollama_nb.runtime.threads import usable_cores

    if args.markdown_only:  # re-render the last results
        out = Path(__file__).parent / "results"
        write_markdown(out / "cpu.md", json.loads((out / "cpu.json").read_text()))
        print((out / "cpu.md").read_text())
        return
    data: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M"), "reps": args.reps, "cpu": model_name() or platform.processor(),
        "cores": usable_cores(), "system_info": system_info(),
        "extra_buffers": bench_extra_buffers(args.models.split(","), args.reps),
        "threads": bench_threads(args.thread_model, args.reps),
    }
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "cpu.json").write_text(json.dumps(data, indent=2) + "\n")
    write_markdown(out / "cpu.md", data)
    print((out / "cpu.md").read_text())


if __name__ == "__main__":
    main()

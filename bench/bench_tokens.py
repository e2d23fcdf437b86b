"""Where one generated token's time goes, thread by thread, at two revisions of this repository.

On a 2-core machine llama.cpp's compute threads want both cores, so every CPU-millisecond spent
anywhere else (the worker's Python between two decodes, the thread that turns pieces into
chunks, the event loop that encodes and writes them) is taken from a compute thread, or makes
it wait. This runs the server in-process, as a notebook kernel hosts it, streams from it with a
client in another process, and reads each thread's CPU time from ``/proc/self/task/*/schedstat``
(nanoseconds) around every reply. Threads are told apart by their Python names; the threads
Python does not know are llama.cpp's OpenMP helpers.

It does the same with the manager alone (``ModelManager.generate`` iterated on the calling
thread, no HTTP) and with llama.cpp alone (``llama_decode`` and the C sampler chain in a loop,
through llama-cpp-python's bindings), so the table reads from the floor up. ``--baseline REV``
runs the whole workload at that git revision too, in fresh processes alternating with the
working tree: the before/after of an optimisation in one run.

    python bench/bench_tokens.py [--baseline REV] [--rounds 5] [--tokens 128]

Results go to bench/results/tokens.{json,md}.
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

REPO = Path(__file__).resolve().parent.parent
SAMPLINGS = {
    "greedy": {"temperature": 0},
    "ollama default": {"temperature": 0.8, "top_k": 40, "top_p": 0.9, "seed": 42},
}

# Runs inside each measured process; imports ollama_nb from the tree on PYTHONPATH.
_WORKLOAD = r"""
import json, os, statistics, subprocess, sys, threading, time
import ollama_nb
from ollama_nb import ModelManager

model, n_predict, samplings = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
PROMPT = "Write a long, detailed story about a lighthouse keeper and a storm. " * 6
CLIENT = r'''
import http.client, json, sys, time
port, body = int(sys.argv[1]), sys.argv[2]
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
conn.request("POST", "/api/generate", body, {"Content-Type": "application/json"})
resp = conn.getresponse()
first = None
last = b""
while line := resp.readline():
    if first is None:
        first = time.perf_counter()
    last = line
end = time.perf_counter()
final = json.loads(last)
print(json.dumps({"wall_ns": (end - first) * 1e9, "tokens": final["eval_count"]}))
'''


# Every llama_decode the engine makes, timed where it is called (the engine reaches llama.cpp
# through runtime.library.lib(), at every revision this bench compares): the decode step itself,
# and the worker's time from the end of one step to the start of the next, which is what the
# server costs the decode loop in wall time, whether it burns CPU or waits for the GIL.
from ollama_nb.runtime import engine as engine_module
STEPS = []


class TimedLibrary:
    def __init__(self, real):
        self.real = real

    def __getattr__(self, name):
        return getattr(self.real, name)

    def llama_decode(self, ctx, batch):
        start = time.perf_counter_ns()
        rc = self.real.llama_decode(ctx, batch)
        STEPS.append((start, time.perf_counter_ns()))
        return rc


_timed_library = TimedLibrary(engine_module.lib())
engine_module.lib = lambda: _timed_library


def step_times():
    if len(STEPS) < 2:
        return None, None
    decode = statistics.median(end - start for start, end in STEPS) / 1e6
    between = statistics.median(b[0] - a[1] for a, b in zip(STEPS, STEPS[1:])) / 1e3
    return decode, between


def cpu_by_thread():
    # {tid: ns on CPU}; a thread that ends in between is simply missing from one side
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                out[int(tid)] = int(f.read().split()[0])
        except OSError:
            pass
    return out


def role(name):
    if name is None:
        return "llama.cpp helper threads"
    if name.startswith("ollama_nb-http"):
        return "pump threads (pieces to chunks)"
    if name.startswith("ollama_nb-server"):
        return "event loop (JSON, socket)"
    if name == "MainThread":
        return "caller"
    if name == "llama.cpp-loop":
        return "decode loop"
    if name == "bench-sampler":
        return "this bench's sampler"
    return "worker (decode loop, sampling, text)"


class Sampler:
    # Every thread's CPU time, read every 50 ms: the worker and its OpenMP helpers end with the
    # reply, and a thread that has ended has no /proc entry left to read afterwards.
    def __init__(self):
        self.last = {}
        self.names = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, name="bench-sampler")

    def sample(self):
        self.names.update({t.native_id: t.name for t in threading.enumerate()})
        self.last.update(cpu_by_thread())

    def run(self):
        while not self.stop.wait(0.05):
            self.sample()

    def __enter__(self):
        self.sample()
        self.start = dict(self.last)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.sample()


def measured(run):
    cpu0 = time.process_time_ns()
    STEPS.clear()
    with Sampler() as sampler:
        wall_ns, tokens = run()
    total = time.process_time_ns() - cpu0
    decode_ms, between_us = step_times()
    roles = {}
    for tid, ns in sampler.last.items():
        spent = ns - sampler.start.get(tid, 0)
        if spent > 0:
            r = role(sampler.names.get(tid))
            roles[r] = roles.get(r, 0) + spent
    roles["not seen (ended between samples)"] = max(total - sum(roles.values()), 0)
    per = max(tokens - 1, 1)
    return {"wall_ms_per_token": wall_ns / per / 1e6, "tokens": tokens,
            "cpu_ms_per_token": {r: ns / per / 1e6 for r, ns in roles.items()},
            "decode_step_ms": decode_ms, "between_steps_us": between_us}


m = ModelManager()
for _ in m.pull(model):  # the bundled model, from its Python package: nothing is downloaded
    pass
handle = ollama_nb.serve(m, host="127.0.0.1", port=0)
port = int(handle.url.rsplit(":", 1)[1])
opts_for = lambda s: {"num_predict": n_predict, "repeat_penalty": 1.0, "num_thread": 2, **s}


def served(sampling):
    body = json.dumps({"model": model, "prompt": PROMPT, "raw": True, "stream": True, "options": opts_for(sampling)})
    def run():
        out = subprocess.run([sys.executable, "-c", CLIENT, str(port), body], capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(out.stderr)
        r = json.loads(out.stdout)
        return r["wall_ns"], r["tokens"]
    return run


def manager_only(sampling):
    def run():
        first = end = None
        final = None
        for chunk in m.generate(model=model, prompt=PROMPT, raw=True, stream=True, options=opts_for(sampling)):
            now = time.perf_counter_ns()
            if chunk.done:
                end, final = now, chunk
            elif first is None:
                first = now
        return end - first, final.eval_count
    return run


def llama_cpp_only(sampling):
    import llama_cpp
    from ollama_nb.runtime.sampling import build_sampler
    from ollama_nb.runtime.jobs import GenerationJob, SamplingParams
    (runner,) = m.scheduler._runners.values()  # the model the layers above just used
    engine = runner.engine
    lc = llama_cpp
    def run():
        box = {}
        t = threading.Thread(target=lambda: box.update(r=loop()), name="llama.cpp-loop")  # fresh: see common.py
        t.start()
        t.join()
        return box["r"]

    def loop():
        # the same context the server decodes in, on this thread: decode one token, sample, repeat
        tokens = engine.tokenize(PROMPT)
        job = GenerationJob(tokens, SamplingParams(**{k: v for k, v in opts_for(sampling).items()
                                                       if k in ("temperature", "top_k", "top_p", "seed", "repeat_penalty")}))
        chain = build_sampler(job, vocab=engine.vocab, n_vocab=engine.n_vocab, n_ctx=engine.n_ctx)
        ctx = engine._ctx
        mem = lc.llama_get_memory(ctx)
        lc.llama_memory_seq_rm(mem, 0, -1, -1)
        batch = lc.llama_batch_get_one((lc.llama_token * len(tokens))(*tokens), len(tokens))
        lc.llama_decode(ctx, batch)
        tok = lc.llama_sampler_sample(chain, ctx, -1)
        one = (lc.llama_token * 1)()
        start = time.perf_counter_ns()
        for _ in range(n_predict - 1):
            one[0] = tok
            lc.llama_decode(ctx, lc.llama_batch_get_one(one, 1))
            tok = lc.llama_sampler_sample(chain, ctx, -1)
        end = time.perf_counter_ns()
        lc.llama_sampler_free(chain)
        lc.llama_memory_seq_rm(mem, 0, -1, -1)
        engine._forget_cache()
        return end - start, n_predict
    return run


out = {}
for name, sampling in samplings.items():
    for kind, make in (("served", served), ("manager", manager_only), ("llama.cpp", llama_cpp_only)):
        run = make(sampling)
        measured(run)  # warm: the model loads, the prompt is cached where the layer caches it
        out[f"{name}/{kind}"] = measured(run)
handle.stop()
m.close()
print(json.dumps(out))
"""


def run_once(tree: Path, model: str, tokens: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run([sys.executable, "-c", _WORKLOAD, model, str(tokens), json.dumps(SAMPLINGS)], env=env,
                          cwd=tree, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"the workload failed at {tree}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in runs[0]:
        roles = sorted({r for run in runs for r in run[key]["cpu_ms_per_token"]})
        out[key] = {
            "wall_ms_per_token": statistics.median(run[key]["wall_ms_per_token"] for run in runs),
            "cpu_ms_per_token": {r: statistics.median(run[key]["cpu_ms_per_token"].get(r, 0.0) for run in runs)
                                 for r in roles},
        }
        for step in ("decode_step_ms", "between_steps_us"):
            seen = [run[key].get(step) for run in runs if run[key].get(step) is not None]
            out[key][step] = statistics.median(seen) if seen else None
    return out


def table(label: str, m: dict[str, Any]) -> list[str]:
    roles = sorted({r for v in m.values() for r in v["cpu_ms_per_token"]})
    lines = [f"### {label}", "",
             "| layer, sampling | ms/token (wall) | tok/s | decode step (ms) | worker between steps (us) | "
             + " | ".join(roles) + " |",
             "|---|---|---|---|---|" + "---|" * len(roles)]

    def cell(value: float | None, fmt: str) -> str:
        return "-" if value is None else fmt.format(value)

    for key, v in m.items():
        cells = " | ".join(f"{v['cpu_ms_per_token'].get(r, 0.0):.3f}" for r in roles)
        steps = f"{cell(v.get('decode_step_ms'), '{:.2f}')} | {cell(v.get('between_steps_us'), '{:.0f}')}"
        lines.append(f"| {key} | {v['wall_ms_per_token']:.3f} | {1000 / v['wall_ms_per_token']:.1f} | {steps} | {cells} |")
    return lines + [""]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", help="git revision to compare the working tree with")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--model", default="smollm2:135m")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = ap.parse_args()
    trees: dict[str, Path] = {"now": REPO}
    with tempfile.TemporaryDirectory() as tmp:
        rev = None
        if args.baseline:
            rev = subprocess.run(["git", "rev-parse", "--short", args.baseline], cwd=REPO, capture_output=True,
                                 text=True, check=True).stdout.strip()
            trees["baseline"] = Path(tmp) / "baseline"
            subprocess.run(["git", "worktree", "add", "--detach", str(trees["baseline"]), rev], cwd=REPO,
                           check=True, capture_output=True)
        try:
            runs: dict[str, list[dict[str, Any]]] = {label: [] for label in trees}
            for i in range(args.rounds):
                order = list(trees.items()) if i % 2 == 0 else list(reversed(trees.items()))
                for label, tree in order:
                    runs[label].append(run_once(tree, args.model, args.tokens))
                print(f"round {i + 1}/{args.rounds} done", file=sys.stderr)
        finally:
            if rev:
                subprocess.run(["git", "worktree", "remove", "--force", str(trees["baseline"])], cwd=REPO, check=True)

    result = {label: medians(r) for label, r in runs.items()}
    stamp = time.strftime("%Y-%m-%d %H:%M")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokens.json").write_text(json.dumps({"baseline": rev, "model": args.model, "tokens": args.tokens,
                                                 "rounds": args.rounds, "when": stamp, "medians": result,
                                                 "runs": runs}, indent=2) + "\n")
    lines = [
        f"# One token's time, thread by thread ({args.model}, {args.tokens} tokens, 2 threads, "
        f"median of {args.rounds} rounds, {stamp})",
        "",
        "Wall time per generated token as the caller sees it, and each thread's CPU time per token "
        "(from /proc schedstat). `served` is an HTTP client in another process streaming "
        "/api/generate from the server this process hosts; `manager` iterates ModelManager.generate "
        "on the caller's thread; `llama.cpp` is llama_decode and the same C sampler chain in a loop, "
        "on the same context. `decode step` and `worker between steps` are medians over the "
        "engine's llama_decode calls, timed where the engine makes them: the time from the end of "
        "one step to the start of the next is what the layers above cost the decode loop in wall "
        "time, whether as CPU or as a wait for the GIL (the llama.cpp loop calls llama_decode "
        "itself and is not timed so).",
        "",
    ]
    if rev:
        lines += table(f"baseline {rev}", result["baseline"])
    lines += table("working tree", result["now"])
    (out / "tokens.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

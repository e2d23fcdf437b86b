"""Lazily committed KV cache: llama.cpp zeroes the whole cache when it creates a context; we give
those zero pages back to the OS, and nothing a request can observe changes."""

from __future__ import annotations

from ollama_nb.manager.core import ModelManager
from ollama_nb.runtime.memory import mapped_ranges, release_zero_pages, subtract

from .conftest import GEMMA, SMOLLM

LONG = "Tell me everything about lighthouses, storms and the sea. " * 12


#: Loads the model eagerly and lazily in a fresh process (so that no earlier test's freed memory
#: blurs the numbers) and reports what each load added to the resident anonymous memory.
_MEASURE = """
import dataclasses, json, sys
from ollama_nb.manager.core import ModelManager
from ollama_nb.runtime import Engine
from ollama_nb.models.store import Store

def resident_kib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("RssAnon:"))

manager = ModelManager(Store(sys.argv[1]))
spec = manager.spec(sys.argv[2])
params = manager.load_params(spec, {})
out = {}
for lazy in (False, True):
    before = resident_kib()
    engine = Engine(spec.model_path, dataclasses.replace(params, lazy_memory=lazy))
    out[str(lazy)] = {"growth_kib": resident_kib() - before, "released": engine.released_bytes}
    engine.close()
print(json.dumps(out))
"""


def test_the_zeroed_kv_cache_is_not_resident_after_loading(shared_models, manager) -> None:
    import json
    import subprocess
    import sys

    from ollama_nb.serving.gpu import kv_cache_bytes

    spec = manager.spec(SMOLLM)
    kv = kv_cache_bytes(spec, manager.load_params(spec, {}).num_ctx)
    assert kv >= 64 << 20  # 30 layers x 4096 cells: the cache is most of what a load allocates
    done = subprocess.run([sys.executable, "-c", _MEASURE, str(shared_models), SMOLLM],
                          capture_output=True, text=True, timeout=300, check=True)
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    eager, lazy = measured["False"], measured["True"]
    assert eager["released"] == 0
    assert lazy["released"] >= 0.95 * kv
    assert eager["growth_kib"] >= kv / 1024  # llama.cpp's memset made the whole cache resident
    assert eager["growth_kib"] - lazy["growth_kib"] >= 0.8 * kv / 1024


def test_generation_is_unchanged_when_the_cache_fills_lazily(manager, monkeypatch) -> None:
    """Same greedy tokens, on a prompt long enough to write hundreds of cache pages, and on a
    second turn that reuses the cached prefix; on a plain model and on gemma3's sliding window."""
    options = {"temperature": 0, "num_predict": 16}
    messages = [{"role": "user", "content": LONG}]
    replies = {}
    for lazy in ("1", "0"):
        monkeypatch.setenv("OLLAMA_NB_LAZY_MEMORY", lazy)
        for model in (SMOLLM, GEMMA):
            m = ModelManager(manager.store)
            try:
                first = m.chat(model=model, messages=messages, stream=False, options=options)
                follow = messages + [first.message.model_dump(exclude_none=True),
                                     {"role": "user", "content": "Say it shorter."}]
                second = m.chat(model=model, messages=follow, stream=False, options=options)
                replies[lazy, model] = (first.message.content, second.message.content)
                assert second.prompt_eval_count < first.prompt_eval_count  # the prefix was reused
                runner = next(r for r in m.scheduler._runners.values())
                if model == SMOLLM:  # gemma3's ring of window cells is small enough that malloc
                    # may hand out memory freed earlier in this process, not new pages to release
                    assert (runner.engine.released_bytes > 0) == (lazy == "1")
                else:
                    assert lazy == "1" or runner.engine.released_bytes == 0
            finally:
                m.close()
    for model in (SMOLLM, GEMMA):
        assert replies["1", model] == replies["0", model]
        assert all(replies["1", model])


def test_only_ranges_mapped_during_the_load_are_examined() -> None:
    assert subtract([(0, 100), (200, 300)], [(50, 250)]) == [(0, 50), (250, 300)]
    assert subtract([(0, 100)], [(10, 20), (30, 40)]) == [(0, 10), (20, 30), (40, 100)]
    assert subtract([(0, 100)], []) == [(0, 100)]
    # Nothing new since the snapshot: nothing is read or released.
    assert release_zero_pages(mapped_ranges()) == 0
    assert release_zero_pages([]) == 0

"""keep_alive, load/unload, eviction and reloads, as Ollama's scheduler behaves."""

from __future__ import annotations

import time

import pytest

from ollama_nb.manager.core import ModelManager
from ollama_nb.models.store import Store

from .conftest import GEMMA, SMOLLM


@pytest.fixture
def fresh(shared_models):
    m = ModelManager(Store(shared_models))
    yield m
    m.close()


def loaded(m: ModelManager) -> list[str]:
    return [p.name for p in m.ps().models]


def test_empty_prompt_loads_and_keep_alive_zero_unloads(fresh):
    r = fresh.generate(model=SMOLLM, prompt="", stream=False)
    assert r.done_reason == "load" and r.response == ""
    assert loaded(fresh) == [SMOLLM]
    info = fresh.ps().models[0]
    assert info.context_length == 4096 and info.size > 90_000_000 and info.size_vram == 0
    r = fresh.generate(model=SMOLLM, prompt="", keep_alive=0, stream=False)
    assert r.done_reason == "unload"
    assert loaded(fresh) == []
    c = fresh.chat(model=SMOLLM, messages=[], stream=False)
    assert c.done_reason == "load" and c.message.role == "assistant"


def test_keep_alive_zero_unloads_after_the_request(fresh):
    r = fresh.generate(model=SMOLLM, prompt="Hi", keep_alive=0, stream=False, options={"num_predict": 2})
    assert r.done and loaded(fresh) == []


def test_keep_alive_expiry(fresh):
    fresh.generate(model=SMOLLM, prompt="Hi", keep_alive="1s", stream=False, options={"num_predict": 1})
    assert loaded(fresh) == [SMOLLM]
    deadline = time.monotonic() + 10
    while loaded(fresh) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert loaded(fresh) == []


def test_negative_keep_alive_is_forever(fresh):
    fresh.generate(model=SMOLLM, prompt="", keep_alive=-1, stream=False)
    assert fresh.ps().models[0].expires_at.startswith("2318")


def test_env_keep_alive_default(fresh, monkeypatch):
    monkeypatch.setenv("OLLAMA_KEEP_ALIVE", "0")
    fresh.generate(model=SMOLLM, prompt="Hi", stream=False, options={"num_predict": 1})
    assert loaded(fresh) == []


def test_max_loaded_models_evicts_the_idle_model_expiring_first(fresh, monkeypatch):
    monkeypatch.setenv("OLLAMA_MAX_LOADED_MODELS", "1")
    fresh.generate(model=SMOLLM, prompt="", stream=False)
    fresh.generate(model=GEMMA, prompt="", stream=False)
    assert loaded(fresh) == [GEMMA]
    monkeypatch.setenv("OLLAMA_MAX_LOADED_MODELS", "2")
    fresh.generate(model=SMOLLM, prompt="", keep_alive="1h", stream=False)
    assert sorted(loaded(fresh)) == sorted([SMOLLM, GEMMA])
    assert loaded(fresh)[0] == SMOLLM  # longest remaining time first


def test_load_option_change_reloads_but_sampling_change_does_not(fresh):
    fresh.generate(model=SMOLLM, prompt="Hi", stream=False, options={"num_predict": 1})
    first = fresh.scheduler.get(fresh.spec(SMOLLM).ref.full).engine
    fresh.generate(model=SMOLLM, prompt="Hi", stream=False, options={"num_predict": 1, "temperature": 0.1, "top_k": 5})
    assert fresh.scheduler.get(fresh.spec(SMOLLM).ref.full).engine is first
    fresh.generate(model=SMOLLM, prompt="Hi", stream=False, options={"num_predict": 1, "num_ctx": 1024})
    runner = fresh.scheduler.get(fresh.spec(SMOLLM).ref.full)
    assert runner.engine is not first and runner.engine.n_ctx == 1024
    assert first.closed
    assert fresh.ps().models[0].context_length == 1024


def test_context_length_env_and_cap(fresh, monkeypatch):
    monkeypatch.setenv("OLLAMA_CONTEXT_LENGTH", "100000")
    fresh.generate(model=SMOLLM, prompt="", stream=False)
    assert fresh.ps().models[0].context_length == 8192  # SmolLM2's trained context


def test_stop_unloads(fresh):
    fresh.generate(model=SMOLLM, prompt="", stream=False)
    assert fresh.unload(SMOLLM) is True
    assert loaded(fresh) == []


def test_observers_get_one_record_per_request(fresh):
    records = []
    fresh.observers.append(records.append)
    chunks = list(fresh.generate(model=SMOLLM, prompt="Hi", stream=True, options={"num_predict": 5, "temperature": 0}))
    fresh.chat(model=SMOLLM, messages=[{"role": "user", "content": "Hi"}], stream=False, options={"num_predict": 3})
    fresh.embed(model=SMOLLM, input=["a", "b"])
    assert [r.endpoint for r in records] == ["generate", "chat", "embed"]
    gen = records[0].timings
    final = chunks[-1]
    assert final.timings is gen  # one value per reply: the record holds the reply's own
    assert records[0].model == SMOLLM and gen.eval_count == final.eval_count == 5
    assert gen.eval_duration == final.eval_duration and gen.total_duration == final.total_duration
    assert gen.ttft_duration is not None and 0 < gen.ttft_duration <= gen.total_duration
    assert gen.tokens_per_second and gen.tokens_per_second > 0
    assert records[2].timings.prompt_eval_count > 0 and records[2].timings.ttft_duration is None
    row = records[0].as_row()
    assert row["tokens_per_second"] == gen.tokens_per_second and row["done_reason"] == "length"
    assert row["eval_s"] == gen.eval_duration / 1e9


def test_a_failing_observer_does_not_fail_the_request(fresh):
    def broken(record):
        raise RuntimeError("observer bug")

    fresh.observers.append(broken)
    r = fresh.generate(model=SMOLLM, prompt="Hi", stream=False, options={"num_predict": 2})
    assert r.done and r.eval_count == 2


def test_max_queue_refuses_with_ollamas_503(fresh, monkeypatch):
    import threading

    from ollama_nb.base.errors import ServerBusy

    monkeypatch.setenv("OLLAMA_MAX_QUEUE", "1")
    running = fresh.generate(model=SMOLLM, prompt="Count to fifty:", stream=True, options={"num_predict": 200})
    next(running)  # the first request now owns the worker
    waiting_result = []
    waiter = threading.Thread(
        target=lambda: waiting_result.append(
            fresh.generate(model=SMOLLM, prompt="Hi", stream=False, options={"num_predict": 2})
        )
    )
    waiter.start()
    deadline = time.monotonic() + 10
    while fresh.scheduler.admission.waiting < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fresh.scheduler.admission.waiting == 1
    with pytest.raises(ServerBusy) as refused:
        list(fresh.generate(model=SMOLLM, prompt="Hi", stream=True, options={"num_predict": 2}))
    assert refused.value.status == 503
    assert str(refused.value).startswith("server busy, please try again.  maximum pending requests exceeded")
    running.close()  # cancels the first; the waiting one then runs to completion
    waiter.join(30)
    assert waiting_result and waiting_result[0].eval_count == 2
    assert fresh.scheduler.admission.waiting == 0


def test_a_stream_the_consumer_closes_is_recorded_as_cancel(fresh):
    records = []
    fresh.observers.append(records.append)
    opts = {"num_predict": 400, "temperature": 0, "seed": 1}
    gen = fresh.generate(model=SMOLLM, prompt="Write a long story about a dragon.", stream=True, options=opts)
    got = [next(gen) for _ in range(3)]
    assert not any(c.done for c in got)
    gen.close()
    assert [(r.endpoint, r.done_reason) for r in records] == [("generate", "cancel")]
    left = records[0].timings
    assert records[0].model == SMOLLM and 3 <= left.eval_count < 400  # the tokens produced so far
    assert left.prompt_eval_count > 0 and left.ttft_duration is not None
    assert 0 < left.ttft_duration <= left.total_duration
    chat = fresh.chat(model=SMOLLM, messages=[{"role": "user", "content": "Tell me a long story."}],
                      stream=True, options=opts)
    next(chat)
    chat.close()
    assert [(r.endpoint, r.done_reason) for r in records][1:] == [("chat", "cancel")]
    assert 1 <= records[1].timings.eval_count < 400
    # a stream read to the end is one record, not two; and the model is free for the next request
    list(fresh.generate(model=SMOLLM, prompt="Hi", stream=True, options={"num_predict": 2}))
    assert [r.done_reason for r in records][2:] == ["length"]


def test_quantized_kv_cache_needs_flash_attention_and_halves_the_cache(fresh, monkeypatch):
    opts = {"num_predict": 8, "temperature": 0}
    fresh.generate(model=SMOLLM, prompt="Hi", stream=False, options=opts)
    f16_size = fresh.ps().models[0].size
    monkeypatch.setenv("OLLAMA_KV_CACHE_TYPE", "q8_0")
    monkeypatch.setenv("OLLAMA_FLASH_ATTENTION", "0")
    fresh.generate(model=SMOLLM, prompt="Hi", stream=False, options=opts)
    assert fresh.ps().models[0].size == f16_size  # without flash attention the cache stays f16
    monkeypatch.delenv("OLLAMA_FLASH_ATTENTION")  # automatic: on, as llama.cpp has it on the CPU
    r = fresh.generate(model=SMOLLM, prompt="Hi", stream=False, options=opts)  # a reload
    assert r.eval_count == 8 and r.response
    q8_size = fresh.ps().models[0].size
    assert f16_size - q8_size > 40_000_000  # 4096 tokens of smollm2's f16 cache is ~94 MB


def test_a_model_without_flash_attention_loads_without_it(shared_models, monkeypatch):
    """Flash attention is a wish: where llama.cpp cannot create such a context the model loads
    without it (and with an f16 cache), instead of failing as a corrupt model."""
    from ollama_nb.manager.core import ModelManager
    from ollama_nb.models.store import Store
    from ollama_nb.runtime import Engine

    real_load = Engine._load
    tried = []

    def no_flash(model_path, params, parallel):
        tried.append((params.flash_attention, params.kv_cache_type))
        if params.flash_attention:
            raise ValueError("Failed to create llama_context")
        return real_load(model_path, params, parallel)

    monkeypatch.setattr(Engine, "_load", staticmethod(no_flash))
    monkeypatch.setenv("OLLAMA_KV_CACHE_TYPE", "q8_0")
    m = ModelManager(Store(shared_models))
    try:
        r = m.generate(model=SMOLLM, prompt="Hi", stream=False, options={"num_predict": 4, "temperature": 0})
        assert r.eval_count == 4 and r.response
        assert tried == [(True, 8), (False, 1)]
        (runner,) = m.scheduler._runners.values()
        assert not runner.engine.params.flash_attention and runner.engine.params.kv_cache_type == 1
    finally:
        m.close()


def test_a_second_interrupt_still_waits_for_the_worker_to_let_go() -> None:
    """Ctrl-C twice in a kernel: the cancelled stream still waits for its worker before the
    model is released (the second KeyboardInterrupt lands in that wait)."""
    import threading

    from ollama_nb.manager.pipeline import _wait_through_interrupts

    class InterruptedOnce(threading.Event):
        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        def wait(self, timeout: float | None = None) -> bool:
            self.calls += 1
            if self.calls == 1:
                raise KeyboardInterrupt
            return super().wait(timeout)

    finished = InterruptedOnce()
    threading.Timer(0.05, finished.set).start()
    _wait_through_interrupts(finished)
    assert finished.is_set() and finished.calls == 2


def test_tokenize_answers_while_the_model_is_generating(manager) -> None:
    """/api/tokenize reads only the vocabulary: it does not wait behind a running batch."""
    import threading

    from .conftest import SMOLLM

    first = threading.Event()
    finished = threading.Event()
    pieces: list[str] = []

    def generate() -> None:
        for chunk in manager.generate(model=SMOLLM, prompt="Count from one to a thousand in words.",
                                      stream=True, options={"temperature": 0, "num_predict": 400}):
            pieces.append(chunk.response)
            first.set()
        finished.set()

    worker = threading.Thread(target=generate)
    worker.start()
    try:
        assert first.wait(120)
        ids = manager.tokenize(SMOLLM, "Hello, world")
        text = manager.detokenize(SMOLLM, ids)
        assert not finished.is_set()  # answered while the generation was still running
        assert ids and text == "Hello, world"
    finally:
        worker.join(300)
    assert finished.is_set() and len(pieces) > 1

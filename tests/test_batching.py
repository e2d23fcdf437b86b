"""OLLAMA_NUM_PARALLEL: several requests to one model decode together in one llama.cpp context."""

from __future__ import annotations

import threading

import pytest

from ollama_nb.manager.core import ModelManager
from ollama_nb.models.store import Store

from .conftest import SMOLLM

PROMPTS = ["Name three colors.", "What is 2+2?", "Write a haiku about rain.", "Say hello in French."]
GREEDY = {"temperature": 0, "num_predict": 24}


@pytest.fixture
def parallel(shared_models, monkeypatch):
    monkeypatch.setenv("OLLAMA_NUM_PARALLEL", "4")
    m = ModelManager(Store(shared_models))
    yield m
    m.close()


def ask(m: ModelManager, prompt: str) -> str:
    r = m.chat(model=SMOLLM, messages=[{"role": "user", "content": prompt}], stream=False, options=GREEDY)
    return r.message.content


#: Raw completions whose greedy continuations win by a wide margin (>= 1.4 nats over the runner-up
#: for their first tokens), so they do not hinge on rounding, and that differ from each other
#: from their first token: a reply that went to the wrong request would show at once.
SEQUENCES = ["1, 2, 3, 4, 5, 6,", "a b c d e f g", "2, 4, 6, 8, 10,", "100, 200, 300, 400,"]


def complete(m: ModelManager, prompt: str) -> str:
    return m.generate(model=SMOLLM, prompt=prompt, raw=True, stream=False, options=GREEDY).response


def test_batched_replies_equal_the_serial_ones(manager, parallel):
    serial = {p: complete(manager, p) for p in SEQUENCES}
    assert len({text[:8] for text in serial.values()}) == len(SEQUENCES)
    replies: dict[str, str] = {}
    order: list[str] = []  # which request produced each streamed piece, in time order
    lock = threading.Lock()

    def stream(prompt: str) -> None:
        parts = []
        for chunk in parallel.generate(model=SMOLLM, prompt=prompt, raw=True, stream=True, options=GREEDY):
            parts.append(chunk.response)
            with lock:
                order.append(prompt)
        replies[prompt] = "".join(parts)

    threads = [threading.Thread(target=stream, args=(p,)) for p in SEQUENCES]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    # Each batched reply is its own prompt's greedy reply. The unified KV cache evaluates
    # attention in another order than a lone sequence does, so float rounding may flip a late
    # near-tie; a mixed-up sequence would differ from the first token on.
    assert replies.keys() == serial.keys()
    for prompt, text in replies.items():
        assert text[:12] == serial[prompt][:12], (prompt, text, serial[prompt])
    assert sum(replies[p] == serial[p] for p in SEQUENCES) >= len(SEQUENCES) // 2
    # They really ran together: some request streamed before another had finished.
    last_piece = {p: max(i for i, q in enumerate(order) if q == p) for p in SEQUENCES}
    first_piece = {p: order.index(p) for p in SEQUENCES}
    assert any(first_piece[a] < last_piece[b] and first_piece[b] < last_piece[a]
               for a in SEQUENCES for b in SEQUENCES if a != b)
    info = parallel.ps().models[0]
    assert info.context_length == 4096  # each sequence gets num_ctx, as in Ollama


def test_each_conversation_keeps_its_own_kv_cache(parallel):
    def reply(messages: list[dict]) -> tuple[dict, int]:
        r = parallel.chat(model=SMOLLM, messages=messages, stream=False, options=GREEDY)
        return r.message.to_dict(), r.prompt_eval_count

    cats = [{"role": "user", "content": "Tell me about cats."}]
    sea = [{"role": "user", "content": "Tell me about the sea."}]
    answer, full_cats = reply(cats)
    cats += [answer, {"role": "user", "content": "Shorter, please."}]
    answer, full_sea = reply(sea)  # another conversation: must not overwrite the cats sequence
    sea += [answer, {"role": "user", "content": "Shorter, please."}]
    _, cats_turn_two = reply(cats)
    _, sea_turn_two = reply(sea)
    # Each second turn evaluates only what is new since its own first turn: the new user
    # message (and the end of the previous reply the template closes), not the whole history.
    assert full_cats > 25
    assert full_sea < full_cats - 20  # it starts from the cells of the system prompt both conversations begin with
    assert cats_turn_two < 20 and sea_turn_two < 20


def test_cancelling_one_stream_leaves_the_others_running(parallel):
    keep = parallel.chat(model=SMOLLM, messages=[{"role": "user", "content": PROMPTS[0]}], stream=True,
                         options=GREEDY)
    drop = parallel.chat(model=SMOLLM, messages=[{"role": "user", "content": PROMPTS[1]}], stream=True,
                         options={"temperature": 0, "num_predict": 500})
    first = next(keep)
    next(drop)
    drop.close()  # the other sequence goes on to its natural end, unchanged
    chunks = [first, *keep]
    assert chunks[-1].done and chunks[-1].done_reason == "stop"
    assert "".join(c.message.content for c in chunks) == ask(parallel, PROMPTS[0])


def test_errors_in_one_request_do_not_touch_the_others(parallel):
    good = parallel.generate(model=SMOLLM, prompt="Hi", stream=True, options=GREEDY)
    next(good)
    with pytest.raises(Exception, match="invalid"):
        parallel.generate(model=SMOLLM, prompt="Hi", format={"type": "nonsense-type"}, stream=False)
    assert list(good)[-1].done

"""Generation, chat and embeddings on the real llama.cpp with the bundled models."""

from __future__ import annotations

import asyncio
import json
import math

import jsonschema
import pytest

from ollama_nb.api.types import ChatRequest, GenerateRequest
from ollama_nb.base.errors import InvalidModelName, InvalidRequest, ModelNotFound

from .conftest import GEMMA, SMOLLM

GREEDY = {"temperature": 0, "seed": 42}


def ask(manager, text, **options):
    return manager.chat(
        model=SMOLLM, messages=[{"role": "user", "content": text}], stream=False,
        options={**GREEDY, **options},
    )


def test_greedy_output_is_deterministic(manager):
    first = ask(manager, "Name three colours.", num_predict=24)
    second = ask(manager, "Name three colours.", num_predict=24)
    assert first.message.content and first.message.content == second.message.content


def test_seeded_sampling_is_reproducible(manager):
    opts = {"temperature": 0.9, "seed": 7, "num_predict": 24}
    a = manager.generate(model=SMOLLM, prompt="Tell me a word.", stream=False, options=opts)
    b = manager.generate(model=SMOLLM, prompt="Tell me a word.", stream=False, options=opts)
    assert a.response == b.response


def test_num_predict_gives_length_and_counts(manager):
    reply = manager.generate(model=SMOLLM, prompt="Count from one to fifty.", stream=False,
                             options={**GREEDY, "num_predict": 7})
    assert reply.done_reason == "length"
    assert reply.eval_count == 7
    for field in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(getattr(reply, field), int)
    assert reply.total_duration >= reply.eval_duration > 0
    assert reply.context and len(reply.context) >= reply.prompt_eval_count


def test_stop_sequence_is_honoured_and_not_returned(manager):
    base = manager.generate(model=GEMMA, prompt="1, 2, 3, 4, 5,", raw=True, stream=False,
                            options={**GREEDY, "num_predict": 20})
    assert " 7" in base.response
    cut = manager.generate(model=GEMMA, prompt="1, 2, 3, 4, 5,", raw=True, stream=False,
                           options={**GREEDY, "num_predict": 20, "stop": [" 7"]})
    assert cut.done_reason == "stop"
    assert cut.response == base.response[: base.response.index(" 7")]


def test_streaming_chunks_add_up_to_the_whole_reply(manager):
    req = dict(model=SMOLLM, prompt="Write a haiku about rain.", options={**GREEDY, "num_predict": 30})
    chunks = list(manager.generate(**req, stream=True))
    assert all(not c.done for c in chunks[:-1]) and chunks[-1].done
    assert len(chunks) > 5
    whole = manager.generate(**req, stream=False)
    assert "".join(c.response for c in chunks) == whole.response


def test_json_format_produces_json(manager):
    reply = ask(manager, "Give me a JSON object describing a cat.", num_predict=80)
    fmt = manager.chat(model=SMOLLM, messages=[{"role": "user", "content": "Reply in JSON: what is the capital of France?"}],
                       format="json", stream=False, options={**GREEDY, "num_predict": 600})
    assert fmt.done_reason == "stop"
    assert isinstance(json.loads(fmt.message.content), (dict, list))
    assert reply.message.content  # unconstrained output exists too


def test_json_schema_format_validates(manager):
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 24},
                       "age": {"type": "integer", "minimum": 0, "maximum": 120},
                       "colours": {"type": "array", "items": {"type": "string", "maxLength": 12},
                                   "minItems": 1, "maxItems": 3}},
        "required": ["name", "age", "colours"],
    }
    reply = manager.generate(model=SMOLLM, prompt="Invent a person with favourite colours.",
                             format=schema, stream=False, options={**GREEDY, "num_predict": 200})
    jsonschema.validate(json.loads(reply.response), schema)


def test_integer_bounds_are_enforced_by_the_grammar():
    """llama.cpp's own converter (Ollama's) keeps integers in their bounds; the Python one we
    call ignores them, so small ranges are spelled out as enums first."""
    from ollama_nb.runtime.library import _bounded_integers_as_enums, json_grammar

    schema = {"type": "object", "properties": {
        "age": {"type": "integer", "minimum": 0, "maximum": 120, "title": "Age"},
        "rank": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 4},
        "big": {"type": "integer", "minimum": 0, "maximum": 10**9},
        "open": {"type": "integer", "minimum": 5}}}
    props = _bounded_integers_as_enums(schema)["properties"]
    assert props["age"] == {"title": "Age", "enum": list(range(121))}
    assert props["rank"] == {"enum": [1, 2, 3]}
    assert props["big"] == schema["properties"]["big"] and props["open"] == schema["properties"]["open"]
    grammar = json_grammar(schema)
    assert '"120"' in grammar and '"121"' not in grammar


def test_chat_template_is_applied(manager):
    from ollama_nb.api.types import Message
    from ollama_nb.prompt.building import chat_tokens, conversation, render_chat

    spec = manager.spec(SMOLLM)
    runner = manager._acquire(spec, manager._options(spec, {}), 300)
    try:
        msgs = conversation(spec, [Message(role="user", content="Hello there")])
        text = runner.call(lambda: render_chat(runner.engine, spec, msgs))
        tokens = runner.call(lambda: chat_tokens(runner.engine, spec, msgs))
    finally:
        manager.scheduler.release(runner)
    assert text == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
                    "Hugging Face<|im_end|>\n<|im_start|>user\nHello there<|im_end|>\n"
                    "<|im_start|>assistant\n")
    im_start = runner.engine.tokenize("<|im_start|>", add_special=False)
    assert len(im_start) == 1 and tokens[0] == im_start[0]  # parsed as one special token


def test_multi_turn_chat_reuses_the_kv_cache(manager):
    history = [{"role": "user", "content": "My name is Ada. Remember it."}]
    first = manager.chat(model=SMOLLM, messages=history, stream=False, options={**GREEDY, "num_predict": 20})
    history += [first.message.to_dict(), {"role": "user", "content": "What is my name?"}]
    second = manager.chat(model=SMOLLM, messages=history, stream=False, options={**GREEDY, "num_predict": 20})
    spec = manager.spec(SMOLLM)
    runner = manager._acquire(spec, manager._options(spec, {}), 300)
    try:
        from ollama_nb.api.types import Message
        from ollama_nb.prompt.building import chat_tokens, conversation

        full = runner.call(lambda: chat_tokens(runner.engine, spec, conversation(spec, [Message(**m) for m in history])))
    finally:
        manager.scheduler.release(runner)
    assert second.prompt_eval_count < len(full) // 2
    assert second.prompt_eval_count >= 5  # the new user turn was evaluated


def test_generate_context_continues(manager):
    first = manager.generate(model=SMOLLM, prompt="Remember the number 17.", stream=False,
                             options={**GREEDY, "num_predict": 10})
    follow = manager.generate(model=SMOLLM, prompt="What number?", context=first.context, stream=False,
                              options={**GREEDY, "num_predict": 10})
    assert follow.context[: len(first.context)] == first.context
    assert follow.prompt_eval_count < len(first.context)


def test_suffix_needs_insert_and_works_with_a_suffix_template(manager):
    assert "insert" not in manager.show(SMOLLM).capabilities  # SmolLM2 has no FIM tokens
    with pytest.raises(InvalidRequest, match="smollm2:135m does not support insert"):
        manager.generate(model=SMOLLM, prompt="a", suffix="b", stream=False)
    template = ('{{ if .Suffix }}<|im_start|>user\nFill in: {{ .Prompt }}___{{ .Suffix }}<|im_end|>\n'
                '<|im_start|>assistant\n{{ else }}{{ .Prompt }}{{ end }}')
    modelfile = f'FROM {SMOLLM}\nTEMPLATE """{template}"""\n'
    assert [p.status for p in manager.create("fim-test:latest", modelfile)][-1] == "success"
    assert "insert" in manager.show("fim-test").capabilities
    reply = manager.generate(model="fim-test", prompt="def add(a, b):\n    return ",
                             suffix="\n\nprint(add(1, 2))", stream=False, options={**GREEDY, "num_predict": 8})
    assert reply.done and reply.eval_count > 0
    assert reply.prompt_eval_count > 15  # the suffix reached the model through the template
    manager.unload("fim-test")
    manager.delete("fim-test")  # keep the shared store to the two bundled models


def test_embeddings_are_unit_and_meaningful(manager):
    res = manager.embed(model=SMOLLM, input=["The cat sat on the mat.", "A kitten rested on the rug.",
                                             "Stock markets fell sharply on Tuesday."])
    vecs = res.embeddings
    assert len(vecs) == 3 and res.prompt_eval_count > 10
    for v in vecs:
        assert math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-6)
    dot = lambda a, b: sum(x * y for x, y in zip(a, b))  # noqa: E731
    assert dot(vecs[0], vecs[1]) > dot(vecs[0], vecs[2])
    short = manager.embed(model=SMOLLM, input="hello", dimensions=8)
    assert len(short.embeddings[0]) == 8
    assert math.isclose(sum(x * x for x in short.embeddings[0]), 1.0, rel_tol=1e-6)
    legacy = manager.embeddings(model=SMOLLM, prompt="hello")
    assert len(legacy.embedding) == len(vecs[0])
    # The legacy endpoint returns the raw pooled vector (Ollama does not normalise it), which
    # points the same way as the normalised one.
    norm = math.sqrt(sum(x * x for x in legacy.embedding))
    assert not math.isclose(norm, 1.0, rel_tol=1e-3)
    unit = manager.embed(model=SMOLLM, input="hello").embeddings[0]
    assert all(math.isclose(x / norm, y, rel_tol=1e-4, abs_tol=1e-6) for x, y in zip(legacy.embedding, unit))


def test_embed_truncate_false_rejects_long_input(manager):
    long_text = "word " * 5000
    with pytest.raises(InvalidRequest, match="exceeds the context length"):
        manager.embed(model=SMOLLM, input=long_text, truncate=False)


def test_logprobs(manager):
    reply = manager.generate(model=SMOLLM, prompt="Hi", stream=False, logprobs=True, top_logprobs=3,
                             options={**GREEDY, "num_predict": 5})
    assert reply.logprobs and len(reply.logprobs) == 5
    first = reply.logprobs[0]
    assert first.logprob <= 0 and len(first.top_logprobs) == 3
    assert math.isclose(first.top_logprobs[0].logprob, first.logprob, abs_tol=1e-4)  # greedy = best


def test_cancelling_a_stream_stops_generation_and_keeps_the_model_usable(manager):
    chunks = manager.generate(model=SMOLLM, prompt="Write a very long essay about oceans.",
                              options={**GREEDY, "num_predict": 2000})
    got = [next(chunks) for _ in range(3)]
    chunks.close()
    assert len(got) == 3
    after = ask(manager, "Say ok.", num_predict=4)
    assert after.done and after.eval_count > 0


def test_async_chat_stream(manager):
    async def run():
        stream = await manager.achat(ChatRequest(model=SMOLLM, messages=[{"role": "user", "content": "Hi"}],
                                                 options={**GREEDY, "num_predict": 6}))
        return [c async for c in stream]

    chunks = asyncio.run(run())
    assert chunks[-1].done and chunks[-1].eval_count == len(chunks) - 1 or chunks[-1].eval_count >= 1


def test_request_errors_carry_ollamas_texts(manager):
    with pytest.raises(ModelNotFound) as err:
        manager.generate(model="nosuch:latest", prompt="x", stream=False)
    assert str(err.value) == "model 'nosuch:latest' not found" and err.value.status == 404
    for call in (lambda: manager.generate(model="nosuch", prompt="x", stream=False),  # echoed as given
                 lambda: manager.chat(model="nosuch", messages=[{"role": "user", "content": "x"}], stream=False),
                 lambda: manager.show("nosuch"), lambda: manager.delete("nosuch")):
        with pytest.raises(ModelNotFound) as err:
            call()
        assert str(err.value) == "model 'nosuch' not found" and err.value.name == "nosuch"
    with pytest.raises(InvalidModelName) as bad:
        manager.chat(model="bad name!", messages=[{"role": "user", "content": "x"}], stream=False)
    assert str(bad.value) == "invalid model name" and bad.value.status == 400
    with pytest.raises(InvalidRequest, match="^model is required$"):
        manager.chat(ChatRequest(model="", messages=[{"role": "user", "content": "x"}], stream=False))
    with pytest.raises(InvalidRequest, match="^top_logprobs must be between 0 and 20$"):
        manager.generate(model=SMOLLM, prompt="x", logprobs=True, top_logprobs=21, stream=False)
    with pytest.raises(InvalidRequest, match="^raw mode does not support template, system, or context$"):
        manager.generate(GenerateRequest(model=SMOLLM, prompt="x", raw=True, system="s", stream=False))
    with pytest.raises(InvalidRequest, match="does not support insert$"):
        manager.generate(model=GEMMA, prompt="x", suffix="y", stream=False)
    with pytest.raises(InvalidRequest, match="^registry.ollama.ai/library/smollm2:135m does not support tools$"):
        manager.chat(model=SMOLLM, messages=[{"role": "user", "content": "x"}], stream=False,
                     tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
    with pytest.raises(InvalidRequest, match='option "temperature" must be of type float32'):
        ask(manager, "x", temperature="hot")


def test_tool_calls_end_to_end(tools_manager):
    from .conftest import TOOLS_MODEL, WEATHER_TOOL

    m = tools_manager
    assert "tools" in m.show(TOOLS_MODEL).capabilities
    ask = {"role": "user", "content": "What is the weather in London?"}
    opts = {"temperature": 0, "num_predict": 40}
    reply = m.chat(model=TOOLS_MODEL, messages=[ask], tools=[WEATHER_TOOL], stream=False, options=opts)
    calls = reply.message.tool_calls
    assert reply.message.content == "" and calls and len(calls) == 1
    assert calls[0].function.name == "get_weather" and calls[0].function.arguments == {"city": "London"}
    # Streaming holds the call's text back and delivers it as one parsed chunk, never as content.
    chunks = list(m.chat(model=TOOLS_MODEL, messages=[ask], tools=[WEATHER_TOOL], stream=True, options=opts))
    assert "".join(c.message.content for c in chunks) == ""
    streamed = [c.message.tool_calls for c in chunks if c.message.tool_calls]
    assert len(streamed) == 1 and streamed[0][0].function.arguments == {"city": "London"}
    # The tool's answer goes back into the conversation through the template's tool role.
    follow = m.chat(
        model=TOOLS_MODEL,
        messages=[ask, reply.message.to_dict(), {"role": "tool", "content": "Sunny, 21 C", "tool_name": "get_weather"}],
        tools=[WEATHER_TOOL],
        stream=False,
        options={"temperature": 0, "num_predict": 30},
    )
    assert follow.message.content and not follow.message.tool_calls
    assert follow.prompt_eval_count > 0


def test_without_tools_the_same_model_answers_in_text(tools_manager):
    from .conftest import TOOLS_MODEL

    reply = tools_manager.chat(
        model=TOOLS_MODEL, messages=[{"role": "user", "content": "Say hello."}], stream=False,
        options={"temperature": 0, "num_predict": 20},
    )
    assert reply.message.tool_calls is None

"""The OpenAI-compatible API, driven by the official ``openai`` client against a real server on
loopback and the real smollm2:135m (greedy decoding, so replies can be compared exactly)."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import struct
import time
from typing import Any

import aiohttp
import jsonschema
import openai
import pytest

from .conftest import GEMMA, SMOLLM
from .openai_fixtures import ASK_WEATHER, GREEDY, HELLO, WEATHER, sse_events


def post_raw(url: str, body: bytes | dict[str, Any]) -> tuple[int, str, bytes]:
    """POST with aiohttp and return (status, content type, raw body) — no client parsing."""

    async def go() -> tuple[int, str, bytes]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        async with aiohttp.ClientSession() as session, session.post(url, data=data, headers=headers) as res:
            return res.status, res.headers.get("Content-Type", ""), await res.read()

    return asyncio.run(go())


def assert_openai_error(body: bytes, kind: str) -> str:
    err = json.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == kind and err["param"] is None and err["code"] is None
    return err["message"]


# ---- chat ------------------------------------------------------------------------------------


def test_chat_completion_matches_native_chat(client, manager):
    reply = client.chat.completions.create(model=SMOLLM, messages=HELLO, max_tokens=24, **GREEDY)
    assert reply.id.startswith("chatcmpl-") and reply.object == "chat.completion"
    assert reply.system_fingerprint == "fp_ollama" and reply.model == SMOLLM
    choice = reply.choices[0]
    assert choice.index == 0 and choice.message.role == "assistant"
    # Ollama's defaults for /v1: top_p 1.0 when absent; max_tokens -> num_predict
    native = manager.chat(model=SMOLLM, messages=HELLO, stream=False,
                          options={**GREEDY, "top_p": 1.0, "num_predict": 24})
    assert choice.message.content == native.message.content != ""
    assert choice.finish_reason == native.done_reason
    usage = reply.usage
    assert usage.completion_tokens == native.eval_count
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_chat_stream_chunk_sequence_and_usage(client):
    whole = client.chat.completions.create(model=SMOLLM, messages=HELLO, max_tokens=24, **GREEDY)
    chunks = list(client.chat.completions.create(
        model=SMOLLM, messages=HELLO, max_tokens=24, stream=True,
        stream_options={"include_usage": True}, **GREEDY))
    assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in chunks[1:-2])
    content = chunks[:-2]
    assert all(c.choices[0].finish_reason is None for c in content)
    assert "".join(c.choices[0].delta.content or "" for c in content) == whole.choices[0].message.content
    finish, usage = chunks[-2], chunks[-1]
    assert finish.choices[0].finish_reason == whole.choices[0].finish_reason
    assert finish.choices[0].delta.content is None
    assert usage.choices == [] and usage.usage.completion_tokens == whole.usage.completion_tokens
    assert usage.usage.total_tokens == usage.usage.prompt_tokens + usage.usage.completion_tokens


def test_raw_sse_stream_ends_with_done(server):
    status, ctype, body = post_raw(server.url + "/v1/chat/completions", {
        "model": SMOLLM, "messages": HELLO, "max_tokens": 5, "stream": True, **GREEDY})
    assert status == 200 and ctype.startswith("text/event-stream")
    assert body.endswith(b"data: [DONE]\n\n")
    events = sse_events(body)
    assert events[-1] == "[DONE]"
    first, finish = events[0], events[-2]
    assert first["choices"][0]["delta"]["role"] == "assistant"
    assert first["choices"][0]["finish_reason"] is None  # present as null, as OpenAI sends it
    assert finish["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "length"}
    assert "usage" not in finish  # only with stream_options.include_usage


def test_client_leaving_mid_stream_ends_the_request(server, manager):
    """Hanging up closes the native stream: the model is released without the 400 tokens being
    generated (its record says ``cancel``), and the next request is served normally."""
    since = json.loads(asyncio.run(_get(server.url + "/api/metrics")))["last_seq"]

    async def read_two_events_and_hang_up() -> None:
        body = {"model": SMOLLM, "stream": True, "max_tokens": 400, **GREEDY,
                "messages": [{"role": "user", "content": "Write a very long essay about the sea."}]}
        async with aiohttp.ClientSession() as session, session.post(
                server.url + "/v1/chat/completions", json=body) as res:
            assert res.status == 200
            for _ in range(2):
                assert (await res.content.readline()).startswith(b"data: ")
                await res.content.readline()

    asyncio.run(read_two_events_and_hang_up())
    runner = manager.scheduler.get(manager.spec(SMOLLM).ref.full)  # loaded, kept alive
    deadline = time.monotonic() + 120  # a generous wait, not a timing assertion
    while runner.refcount and time.monotonic() < deadline:
        time.sleep(0.05)
    assert runner.refcount == 0
    after = openai.OpenAI(base_url=server.url + "/v1", api_key="ollama", max_retries=0).chat.completions.create(
        model=SMOLLM, messages=HELLO, max_tokens=3, **GREEDY)
    assert after.usage.completion_tokens == 3
    rows = json.loads(asyncio.run(_get(f"{server.url}/api/metrics?since={since}")))["records"]
    assert [r["done_reason"] for r in rows] == ["cancel", "length"]
    assert rows[0]["eval_count"] < 400 and rows[1]["eval_count"] == 3


def test_pings_in_a_stream_change_nothing_a_client_reads(server, client, monkeypatch):
    """A stream carries ``: ping`` comments (every 15 s; here every 2 ms, so this one has some):
    SSE clients skip them, so the official client and a raw reader see the same events."""
    from ollama_nb.server import openai_compat

    body = {"model": SMOLLM, "messages": HELLO, "max_tokens": 24, "stream": True, **GREEDY}
    _, _, quiet = post_raw(server.url + "/v1/chat/completions", body)
    assert b": ping" not in quiet  # too short for the real interval
    monkeypatch.setattr(openai_compat, "_PING_S", 0.002)
    status, ctype, pinged = post_raw(server.url + "/v1/chat/completions", body)
    assert status == 200 and ctype == "text/event-stream"
    assert b"\n\n: ping\n\n" in pinged and b"\r" not in pinged
    assert pinged.endswith(b"data: [DONE]\n\n")

    def choices(raw: bytes) -> list[Any]:
        return [e if e == "[DONE]" else e["choices"] for e in sse_events(raw)]

    assert choices(pinged) == choices(quiet)
    chunks = list(client.chat.completions.create(**body))
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "".join(c[0]["delta"].get("content") or "" for c in choices(quiet)[:-1]) != ""


def test_an_error_mid_stream_is_a_last_error_event(manager):
    """After the first chunk the status is sent, so an error travels as a last ``data:
    {"error": ...}`` event (no ``[DONE]``), which the official client raises; the native stream
    is closed either way."""
    from aiohttp import web

    from ollama_nb.base.errors import OllamaNbError
    from ollama_nb.server.keys import MANAGER
    from ollama_nb.server.openai_compat import setup_openai

    from .openai_fixtures import serve_in_thread

    closed: list[bool] = []

    class FailsAfterTwoChunks:
        async def achat(self, request: Any) -> Any:
            chunks = await manager.achat(request)

            async def two_then_fail() -> Any:
                try:
                    for _ in range(2):
                        yield await chunks.__anext__()
                    raise OllamaNbError("the runner crashed")
                finally:
                    await chunks.aclose()
                    closed.append(True)

            return two_then_fail()

    app = web.Application()
    app[MANAGER] = FailsAfterTwoChunks()
    setup_openai(app)
    body = {"model": SMOLLM, "messages": HELLO, "max_tokens": 24, "stream": True, **GREEDY}
    with serve_in_thread(app) as srv:
        status, ctype, raw = post_raw(srv.url + "/v1/chat/completions", body)
        with pytest.raises(openai.APIError, match="the runner crashed"):
            list(openai.OpenAI(base_url=srv.url + "/v1", api_key="ollama", max_retries=0)
                 .chat.completions.create(**body))
    assert status == 200 and ctype == "text/event-stream" and closed == [True, True]
    events = sse_events(raw)
    assert "[DONE]" not in events and len(events) == 3
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert raw.endswith(b"\n\n") and events[-1] == {"error": {
        "message": "the runner crashed", "type": "api_error", "param": None, "code": None}}


async def _get(url: str) -> bytes:
    async with aiohttp.ClientSession() as session, session.get(url) as res:
        return await res.read()


def test_max_tokens_gives_length(client):
    for limit in ({"max_tokens": 3}, {"max_completion_tokens": 3}):
        reply = client.chat.completions.create(model=SMOLLM, messages=HELLO, **limit, **GREEDY)
        assert reply.choices[0].finish_reason == "length"
        assert reply.usage.completion_tokens == 3


def test_stop_sequence_cuts_the_reply(client):
    full = client.chat.completions.create(model=SMOLLM, messages=HELLO, max_tokens=30, **GREEDY)
    text = full.choices[0].message.content
    stop = text[len(text) // 2:][:3]
    assert stop.strip(), text
    cut = client.chat.completions.create(model=SMOLLM, messages=HELLO, max_tokens=30, stop=[stop], **GREEDY)
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == text[: text.index(stop)]


def test_multi_part_text_content_and_system_message(client):
    parts = [{"type": "text", "text": "Name three"}, {"type": "text", "text": "colours."}]
    reply = client.chat.completions.create(
        model=SMOLLM, max_tokens=8, **GREEDY,
        messages=[{"role": "system", "content": "You answer briefly."}, {"role": "user", "content": parts}])
    assert reply.choices[0].message.content


def test_response_format_json_schema_validates(client):
    # short outputs: constrained sampling is slow on a small CPU, and greedy JSON can ramble
    schema = {
        "type": "object",
        "properties": {"colour": {"type": "string", "maxLength": 12},
                       "count": {"type": "integer", "minimum": 0, "maximum": 9}},
        "required": ["colour", "count"],
    }
    reply = client.chat.completions.create(
        model=SMOLLM, max_tokens=100, **GREEDY,
        messages=[{"role": "user", "content": "Name a colour and a small number."}],
        response_format={"type": "json_schema", "json_schema": {"name": "pick", "schema": schema}})
    assert reply.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(reply.choices[0].message.content), schema)
    obj = client.chat.completions.create(
        model=SMOLLM, max_tokens=100, **GREEDY, response_format={"type": "json_object"},
        messages=[{"role": "user", "content": 'Reply in JSON with the key "city": the capital of France.'}])
    assert obj.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(obj.choices[0].message.content), dict)


def test_chat_logprobs(client):
    reply = client.chat.completions.create(model=SMOLLM, messages=HELLO, max_tokens=4, logprobs=True,
                                           top_logprobs=2, **GREEDY)
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens == 4
    assert "".join(t.token for t in content) == reply.choices[0].message.content
    for t in content:
        assert t.logprob <= 0 and len(t.top_logprobs) == 2
        assert t.bytes == list(t.token.encode())
        assert math.isclose(t.top_logprobs[0].logprob, t.logprob, abs_tol=1e-4)  # greedy picks the best


# ---- tools -----------------------------------------------------------------------------------

def test_tool_calls(client, tooly):
    reply = client.chat.completions.create(model=tooly, messages=ASK_WEATHER, tools=[WEATHER],
                                           max_tokens=40, **GREEDY)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "London"}  # a JSON string, as OpenAI's

    # the result goes back as a tool message found by its call id; the model then answers
    def answer(result: str):
        return client.chat.completions.create(
            model=tooly, tools=[WEATHER], max_tokens=20, **GREEDY,
            messages=[*ASK_WEATHER, choice.message.model_dump(exclude_none=True),
                      {"role": "tool", "tool_call_id": call.id, "content": result}])

    short = "Rainy, 12 degrees."
    follow = answer(short)
    assert follow.choices[0].finish_reason == "stop" and not follow.choices[0].message.tool_calls
    assert follow.choices[0].message.content
    # The tool's answer reached the model's prompt: a longer result costs its extra tokens.
    # (Both requests below reuse the cache up to the tool message, so they count from there;
    # each result is new, so no cached conversation holds more of it.)
    with_short = answer("Sunny, 20 degrees.").usage.prompt_tokens
    with_longer = answer("Cloudy, 15 degrees. Wind from the west at thirty kilometres an hour, "
                         "humidity eighty percent.").usage.prompt_tokens
    assert with_longer - with_short >= 10


def test_tool_messages_translate_to_native():
    from ollama_nb.api.openai import chat_request
    from ollama_nb.api.openai_types import ChatCompletionRequest

    native = chat_request(ChatCompletionRequest.model_validate({"model": "m", "messages": [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_x", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "call_x", "content": "sunny"},
    ], "stop": ["\n", 3], "max_tokens": 7}))
    system, user, assistant, tool = native.messages
    assert (system.role, system.content) == ("system", "Be brief.")
    assert user.content == "a\nb"
    assert assistant.tool_calls[0].function.arguments == {"city": "Oslo"} and assistant.content == ""
    assert (tool.tool_name, tool.tool_call_id) == ("get_weather", "call_x")
    assert native.options == {"stop": ["\n"], "num_predict": 7, "temperature": 1.0, "top_p": 1.0}
    assert native.stream is False


def test_tool_calls_streamed(client, tooly):
    chunks = list(client.chat.completions.create(model=tooly, messages=ASK_WEATHER, tools=[WEATHER],
                                                 max_tokens=40, stream=True, **GREEDY))
    calls = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert [tc.function.name for tc in calls] == ["get_weather"]
    assert json.loads(calls[0].function.arguments) == {"city": "London"}
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_bad_tool_call_arguments_are_refused(server):
    status, _, body = post_raw(server.url + "/v1/chat/completions", {"model": SMOLLM, "messages": [
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "call_1", "type": "function",
                         "function": {"name": "f", "arguments": "{not json"}}]}]})
    assert status == 400 and assert_openai_error(body, "invalid_request_error") == "invalid tool call arguments"


# ---- completions -----------------------------------------------------------------------------


def test_completions(client, manager):
    reply = client.completions.create(model=SMOLLM, prompt="Tell me a colour.", max_tokens=10, **GREEDY)
    assert reply.id.startswith("cmpl-") and reply.object == "text_completion"
    native = manager.generate(model=SMOLLM, prompt="Tell me a colour.", stream=False,
                              options={**GREEDY, "top_p": 1.0, "num_predict": 10})
    assert reply.choices[0].text == native.response != ""
    assert reply.choices[0].finish_reason == native.done_reason
    assert reply.usage.completion_tokens == native.eval_count

    chunks = list(client.completions.create(model=SMOLLM, prompt="Tell me a colour.", max_tokens=10,
                                            stream=True, stream_options={"include_usage": True}, **GREEDY))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == native.response
    assert chunks[-2].choices[0].finish_reason == native.done_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == native.eval_count


def test_completions_echo_and_logprobs(client):
    plain = client.completions.create(model=SMOLLM, prompt="Tell me a colour.", max_tokens=5, **GREEDY)
    echoed = client.completions.create(model=SMOLLM, prompt="Tell me a colour.", max_tokens=5, echo=True,
                                       logprobs=2, **GREEDY)
    choice = echoed.choices[0]
    assert choice.text == "Tell me a colour." + plain.choices[0].text
    lp = choice.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 5
    assert "".join(lp.tokens) == plain.choices[0].text
    assert lp.text_offset[0] == len("Tell me a colour.")
    assert all(len(alts) >= 1 for alts in lp.top_logprobs)


def test_completions_suffix_needs_insert(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model=SMOLLM, prompt="def f():", suffix="return 1", max_tokens=5)
    assert err.value.body["message"].endswith("does not support insert")


# ---- embeddings ------------------------------------------------------------------------------


def test_embeddings_float_and_base64(client, server):
    texts = ["The cat sat on the mat.", "Stock markets fell."]
    floats = client.embeddings.create(model=SMOLLM, input=texts, encoding_format="float")
    assert floats.object == "list" and floats.model == SMOLLM
    assert [d.index for d in floats.data] == [0, 1]
    assert floats.usage.prompt_tokens == floats.usage.total_tokens > 0
    for d in floats.data:
        assert d.object == "embedding"
        assert math.isclose(sum(x * x for x in d.embedding), 1.0, rel_tol=1e-5)

    # raw base64: little-endian float32, as OpenAI encodes it
    status, _, body = post_raw(server.url + "/v1/embeddings",
                               {"model": SMOLLM, "input": texts[0], "encoding_format": "base64"})
    assert status == 200
    raw = base64.b64decode(json.loads(body)["data"][0]["embedding"])
    decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert len(decoded) == len(floats.data[0].embedding)
    assert all(math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-7) for a, b in zip(decoded, floats.data[0].embedding))

    # the official client asks for base64 by default and decodes it itself
    default = client.embeddings.create(model=SMOLLM, input=texts[0])
    assert all(math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-7)
               for a, b in zip(default.data[0].embedding, floats.data[0].embedding))

    short = client.embeddings.create(model=SMOLLM, input="hello", dimensions=8, encoding_format="float")
    assert len(short.data[0].embedding) == 8
    assert math.isclose(sum(x * x for x in short.data[0].embedding), 1.0, rel_tol=1e-5)


@pytest.mark.parametrize(("body", "message"), [
    ({"model": SMOLLM, "input": []}, "invalid input"),
    ({"model": SMOLLM}, "invalid input"),
    ({"model": SMOLLM, "input": [[1, 2, 3]]}, "invalid input type"),
    ({"model": SMOLLM, "input": "x", "encoding_format": "int8"},
     "Invalid value for 'encoding_format' = int8. Supported values: ['float', 'base64']."),
])
def test_embedding_errors(server, body, message):
    status, _, raw = post_raw(server.url + "/v1/embeddings", body)
    assert status == 400 and assert_openai_error(raw, "invalid_request_error") == message


# ---- models ----------------------------------------------------------------------------------


def test_models_list_and_retrieve(client):
    listed = {m.id: m for m in client.models.list().data}
    assert {SMOLLM, GEMMA} <= set(listed)
    for m in listed.values():
        assert m.object == "model" and m.owned_by == "library" and m.created > 0
    one = client.models.retrieve(SMOLLM)
    assert (one.id, one.object, one.owned_by) == (SMOLLM, "model", "library")
    assert one.created == listed[SMOLLM].created


def test_unknown_model_is_a_404_in_openai_shape(client, server):
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("no-such-model")
    assert err.value.body["type"] == "not_found_error" and "not found" in err.value.body["message"]
    for stream in (False, True):  # a stream fails before its first byte: still a 404
        status, ctype, body = post_raw(server.url + "/v1/chat/completions",
                                       {"model": "no-such-model", "messages": HELLO, "stream": stream})
        assert status == 404 and ctype.startswith("application/json")
        assert "not found" in assert_openai_error(body, "not_found_error")


# ---- request errors --------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "message"), [
    (b"{not json", "invalid character 'n' looking for beginning of object key string"),
    (b'{"model": "m",', "unexpected EOF"),
    (b"", "missing request body"),
    (b"[1, 2]", "json: cannot unmarshal array into Go value of type openai.ChatCompletionRequest"),
    ({"messages": HELLO}, "model is required"),
    ({"model": SMOLLM, "messages": []}, "[] is too short - 'messages'"),
    ({"model": SMOLLM, "messages": HELLO, "temperature": "hot"},
     "json: cannot unmarshal string into Go struct field ChatCompletionRequest.temperature of type float64"),
    ({"model": SMOLLM, "messages": HELLO, "max_tokens": "ten"},
     "json: cannot unmarshal string into Go struct field ChatCompletionRequest.max_tokens of type int"),
    ({"model": SMOLLM, "messages": [{"role": "user", "content": 5}]}, "invalid message content type: float64"),
    ({"model": SMOLLM, "messages": [{"role": "user"}]}, "invalid message content type: <nil>"),
    ({"model": SMOLLM, "messages": HELLO, "n": 2}, "n=2 is not supported"),
    ({"model": SMOLLM, "messages": HELLO, "reasoning_effort": "huge"}, 'invalid reasoning value: "huge"'),
    ({"model": SMOLLM, "messages": HELLO, "tools": [WEATHER]},
     "registry.ollama.ai/library/smollm2:135m does not support tools"),
    ({"model": SMOLLM, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]},
     "image URLs are not currently supported, please use base64 encoded data instead"),
    ({"model": SMOLLM, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]},
     "image input is not supported - hint: if this is unexpected, you may need to provide the mmproj"),
    ({"model": SMOLLM, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:text/plain;base64,aGk="}}]}]},
     "invalid image input"),
])
def test_chat_request_errors(server, body, message):
    status, ctype, raw = post_raw(server.url + "/v1/chat/completions", body)
    assert status == 400 and ctype.startswith("application/json")
    assert assert_openai_error(raw, "invalid_request_error").startswith(message)


def test_completion_stop_must_be_strings(server):
    status, _, raw = post_raw(server.url + "/v1/completions", {"model": SMOLLM, "prompt": "x", "stop": ["a", 1]})
    assert status == 400
    assert assert_openai_error(raw, "invalid_request_error") == "invalid type for 'stop' field: float64"


def test_client_errors_carry_the_shape(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=SMOLLM, messages=[])
    assert err.value.status_code == 400 and err.value.body["message"] == "[] is too short - 'messages'"

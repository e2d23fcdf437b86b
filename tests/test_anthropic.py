"""``POST /v1/messages`` judged by the official ``anthropic`` client against a real server on
loopback running the real model, plus the request and stream translations on their own."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import anthropic
import pytest

from ollama_nb.api.anthropic import MessagesRequest, MessagesStream, messages_request
from ollama_nb.api.types import ChatResponse, Message, ToolCall, ToolCallFunction

from .conftest import SMOLLM

SYSTEM = "You are a terse assistant."
#: The current client has no sampling parameters; extra_body sends them, as users do.
GREEDY = {"temperature": 0}
QUESTION = [{"role": "user", "content": "Name three colours."}]


@pytest.fixture(scope="module")
def claude(server: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key="ollama", max_retries=0, timeout=120)


def native(manager: Any, max_tokens: int, **options: Any) -> Any:
    """The native chat reply the same conversation gets."""
    messages = [{"role": "system", "content": SYSTEM}, *QUESTION]
    return manager.chat(model=SMOLLM, messages=messages, stream=False,
                        options={"temperature": 0, "num_predict": max_tokens, **options})


def post(server: Any, body: bytes) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(server.url + "/v1/messages", data=body,
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


# ---- through the anthropic client --------------------------------------------------------


def test_a_message_is_the_native_reply_in_anthropic_shape(claude, manager) -> None:
    reply = claude.messages.create(model=SMOLLM, max_tokens=12, system=SYSTEM, messages=QUESTION, extra_body=GREEDY)
    expected = native(manager, 12)
    assert reply.id.startswith("msg_") and len(reply.id) == 28
    assert (reply.type, reply.role, reply.model) == ("message", "assistant", SMOLLM)
    assert [block.type for block in reply.content] == ["text"]
    assert reply.content[0].text == expected.message.content
    assert reply.stop_reason == {"length": "max_tokens", "stop": "end_turn"}[expected.done_reason]
    assert reply.usage.output_tokens == expected.eval_count
    assert reply.usage.input_tokens >= 1  # what was evaluated: a prefix cached by an earlier turn is not


def test_a_stream_sends_every_event_in_order_and_the_same_text(claude, manager) -> None:
    with claude.messages.stream(model=SMOLLM, max_tokens=12, system=SYSTEM, messages=QUESTION,
                                extra_body=GREEDY) as stream:
        kinds = [event.type for event in stream if not event.type.startswith(("text", "thinking", "input_json"))]
        final = stream.get_final_message()
    expected = native(manager, 12)
    deltas = kinds.count("content_block_delta")
    assert kinds == ["message_start", "content_block_start", *["content_block_delta"] * deltas,
                     "content_block_stop", "message_delta", "message_stop"]
    assert deltas > 1  # streamed piece by piece, not in one go
    assert final.content[0].text == expected.message.content
    assert final.usage.output_tokens == expected.eval_count
    assert final.stop_reason == {"length": "max_tokens", "stop": "end_turn"}[expected.done_reason]


def test_stop_sequences_end_the_reply_before_them(claude, manager) -> None:
    free = claude.messages.create(model=SMOLLM, max_tokens=30, system=SYSTEM, messages=QUESTION, extra_body=GREEDY)
    text = free.content[0].text
    word = next(w for w in text.split()[1:] if len(w) > 3)
    stopped = claude.messages.create(model=SMOLLM, max_tokens=30, system=SYSTEM, messages=QUESTION, extra_body=GREEDY,
                                     stop_sequences=[word])
    assert stopped.content[0].text == text[: text.index(word)]
    assert stopped.stop_reason == "end_turn"  # Ollama's mapping of a stop string's "stop"


def test_an_unknown_model_is_a_404_in_anthropic_shape(claude, server) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        claude.messages.create(model="no-such-model", max_tokens=5, messages=QUESTION)
    body = caught.value.body
    assert body["type"] == "error" and body["error"]["type"] == "not_found_error"
    assert "no-such-model" in body["error"]["message"] and "not found" in body["error"]["message"]
    assert body["request_id"].startswith("req_")
    # streaming too: the status comes before the stream
    with pytest.raises(anthropic.NotFoundError), claude.messages.stream(
            model="no-such-model", max_tokens=5, messages=QUESTION) as stream:
        list(stream)


def test_bad_requests_get_ollamas_texts(server) -> None:
    status, body = post(server, json.dumps({"model": SMOLLM, "messages": QUESTION}).encode())
    assert (status, body["error"]) == (400, {"type": "invalid_request_error",
                                             "message": "max_tokens is required and must be positive"})
    status, body = post(server, json.dumps({"model": SMOLLM, "max_tokens": 5, "messages": []}).encode())
    assert (status, body["error"]["message"]) == (400, "messages is required")
    status, body = post(server, b'{"model": ')
    assert status == 400 and body["error"]["type"] == "invalid_request_error" and body["error"]["message"]
    image = {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}}
    status, body = post(server, json.dumps({"model": SMOLLM, "max_tokens": 5,
                                            "messages": [{"role": "user", "content": [image]}]}).encode())
    assert (status, body["error"]["message"]) == (
        400, "invalid image source type: url. Only base64 images are supported.")


# ---- the translations ---------------------------------------------------------------------


def test_tool_use_and_results_become_native_tool_calls_and_tool_messages() -> None:
    req = MessagesRequest.model_validate({
        "model": "m", "max_tokens": 7, "system": [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}],
        "stop_sequences": ["END"], "top_k": 5,
        "tools": [{"name": "weather", "description": "Weather now", "input_schema": {"type": "object"}}],
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [
                {"type": "text", "text": "Thanks."},
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "sunny"}]}]},
        ],
    })
    chat = messages_request(req)
    assert [(m.role, m.content) for m in chat.messages] == [
        ("system", "Be brief."), ("user", "Weather in Paris?"), ("assistant", "Let me look."),
        ("tool", "sunny"), ("user", "Thanks.")]  # a tool result goes before the user's text
    assert chat.messages[2].tool_calls[0].function.arguments == {"city": "Paris"}
    assert chat.messages[3].tool_call_id == "toolu_1"
    assert chat.options == {"num_predict": 7, "stop": ["END"], "top_k": 5}
    assert chat.tools[0].function.name == "weather" and chat.tools[0].function.parameters == {"type": "object"}


def test_a_stream_of_thinking_text_and_a_tool_call_gets_its_blocks_in_order() -> None:
    def chunk(**message: Any) -> ChatResponse:
        return ChatResponse(model="m", message=Message(role="assistant", **message))

    stream = MessagesStream("msg_x", "m", input_tokens=3)
    call = ToolCall(id="call_abc", function=ToolCallFunction(name="weather", arguments={"city": "Paris"}))
    done = ChatResponse(model="m", message=Message(role="assistant"), done=True, done_reason="stop",
                        prompt_eval_count=9, eval_count=4)
    events = [e for c in (chunk(thinking="Hm"), chunk(thinking="m."), chunk(content="Sure."),
                          chunk(tool_calls=[call]), done) for e in stream.feed(c)]
    names = [(name, data.get("index"), (data.get("delta") or data.get("content_block") or {}).get("type"))
             for name, data in events]
    assert names == [
        ("message_start", None, None),
        ("content_block_start", 0, "thinking"), ("content_block_delta", 0, "thinking_delta"),
        ("content_block_delta", 0, "thinking_delta"), ("content_block_stop", 0, None),
        ("content_block_start", 1, "text"), ("content_block_delta", 1, "text_delta"), ("content_block_stop", 1, None),
        ("content_block_start", 2, "tool_use"), ("content_block_delta", 2, "input_json_delta"),
        ("content_block_stop", 2, None),
        ("message_delta", None, None), ("message_stop", None, None),
    ]
    assert events[0][1]["message"]["usage"] == {"input_tokens": 3, "output_tokens": 0}
    assert json.loads(events[9][1]["delta"]["partial_json"]) == {"city": "Paris"}
    assert events[-2][1] == {"type": "message_delta", "delta": {"stop_reason": "tool_use"},
                             "usage": {"input_tokens": 9, "output_tokens": 4}}


def test_thinking_asked_of_a_model_that_cannot_think_is_relaxed_as_in_ollama(claude, manager) -> None:
    reply = claude.messages.create(model=SMOLLM, max_tokens=12, system=SYSTEM, messages=QUESTION, extra_body=GREEDY,
                                   thinking={"type": "enabled", "budget_tokens": 1024})
    assert [block.type for block in reply.content] == ["text"]
    assert reply.content[0].text == native(manager, 12).message.content


def test_tool_use_round_trips_through_the_client_on_a_real_model(claude, tooly) -> None:
    from .openai_fixtures import ASK_WEATHER, WEATHER

    tool = {"name": WEATHER["function"]["name"], "description": WEATHER["function"]["description"],
            "input_schema": WEATHER["function"]["parameters"]}
    reply = claude.messages.create(model=tooly, max_tokens=40, tools=[tool], messages=ASK_WEATHER, extra_body=GREEDY)
    assert reply.stop_reason == "tool_use"
    (use,) = [block for block in reply.content if block.type == "tool_use"]
    assert use.name == "get_weather" and use.input == {"city": "London"} and use.id.startswith("call_")
    with claude.messages.stream(model=tooly, max_tokens=40, tools=[tool], messages=ASK_WEATHER,
                                extra_body=GREEDY) as stream:
        streamed = stream.get_final_message()
    assert [b.input for b in streamed.content if b.type == "tool_use"] == [{"city": "London"}]

    def answer(result: str) -> Any:
        return claude.messages.create(model=tooly, max_tokens=20, tools=[tool], extra_body=GREEDY, messages=[
            *ASK_WEATHER, {"role": "assistant", "content": [use.model_dump()]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": result}]}])

    follow = answer("Rainy, 12 degrees.")
    assert follow.stop_reason in ("end_turn", "max_tokens") and follow.content[0].type == "text"
    # the result reached the prompt: a longer one costs its extra tokens (each result is new)
    short = answer("Sunny, 22 degrees.").usage.input_tokens
    longer = answer("Drizzle, 9 degrees. Wind from the south at fifteen kilometres an hour, "
                    "humidity ninety percent.").usage.input_tokens
    assert longer - short >= 10

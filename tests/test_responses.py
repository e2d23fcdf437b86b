"""``POST /v1/responses`` judged by the official ``openai`` client's ``responses`` API against a
real server on loopback running the real model, plus the request and stream translations."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from ollama_nb.api.responses import ResponsesRequest, ResponsesStream, responses_request
from ollama_nb.api.types import ChatResponse, Message, ToolCall, ToolCallFunction
from ollama_nb.base.errors import InvalidRequest

from .conftest import SMOLLM
from .openai_fixtures import ASK_WEATHER, WEATHER

INSTRUCTIONS = "You are a terse assistant."
QUESTION = "Name three colours."
#: Responses tools are flat: the function's fields sit beside ``type``.
FLAT_WEATHER = {"type": "function", **WEATHER["function"]}


def native(manager: Any, max_tokens: int) -> Any:
    """The native chat reply the same conversation gets, greedily."""
    messages = [{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": QUESTION}]
    return manager.chat(model=SMOLLM, messages=messages, stream=False,
                        options={"temperature": 0, "num_predict": max_tokens})


# ---- through the openai client ------------------------------------------------------------


def test_a_response_is_the_native_reply_in_responses_shape(client, manager) -> None:
    reply = client.responses.create(model=SMOLLM, instructions=INSTRUCTIONS, input=QUESTION,
                                    max_output_tokens=12, temperature=0)
    expected = native(manager, 12)
    assert reply.id.startswith("resp_") and reply.object == "response" and reply.status == "completed"
    assert (reply.model, reply.instructions, reply.max_output_tokens) == (SMOLLM, INSTRUCTIONS, 12)
    (item,) = reply.output
    assert (item.type, item.role, item.status) == ("message", "assistant", "completed")
    assert item.id.startswith("msg_")
    assert reply.output_text == expected.message.content
    assert reply.usage.output_tokens == expected.eval_count
    assert reply.usage.total_tokens == reply.usage.input_tokens + reply.usage.output_tokens
    assert reply.usage.input_tokens >= 1


def test_a_stream_sends_every_event_in_order_and_the_same_text(client, manager) -> None:
    with client.responses.stream(model=SMOLLM, instructions=INSTRUCTIONS, input=QUESTION,
                                 max_output_tokens=12, temperature=0) as stream:
        events = list(stream)
        final = stream.get_final_response()
    expected = native(manager, 12)
    kinds = [e.type for e in events]
    deltas = kinds.count("response.output_text.delta")
    assert kinds == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added", *["response.output_text.delta"] * deltas,
                     "response.output_text.done", "response.content_part.done", "response.output_item.done",
                     "response.completed"]
    assert deltas > 1  # streamed piece by piece, not in one go
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == expected.message.content
    assert final.output_text == expected.message.content
    assert final.usage.output_tokens == expected.eval_count
    assert events[0].response.id == final.id


def test_message_items_carry_a_conversation(client, manager) -> None:
    story = "My cat is called Bramble."
    items = [{"role": "developer", "content": INSTRUCTIONS},
             {"type": "message", "role": "user", "content": [{"type": "input_text", "text": story}]},
             {"role": "assistant", "content": [{"type": "output_text", "text": "What a lovely name."}]},
             {"role": "user", "content": "What is my cat called?"}]
    reply = client.responses.create(model=SMOLLM, input=items, max_output_tokens=16, temperature=0)
    expected = manager.chat(model=SMOLLM, stream=False, options={"temperature": 0, "num_predict": 16}, messages=[
        {"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": story},
        {"role": "assistant", "content": "What a lovely name."}, {"role": "user", "content": "What is my cat called?"}])
    assert reply.output_text == expected.message.content


def test_tool_calls_come_back_as_function_call_items_and_their_outputs_reach_the_model(client, tooly) -> None:
    reply = client.responses.create(model=tooly, input=ASK_WEATHER, tools=[FLAT_WEATHER],
                                    max_output_tokens=40, temperature=0)
    (call,) = reply.output  # a reply with tool calls has no message item, as in Ollama
    assert (call.type, call.name, call.status) == ("function_call", "get_weather", "completed")
    assert call.call_id.startswith("call_") and call.id.startswith("fc_")
    assert json.loads(call.arguments) == {"city": "London"}
    assert reply.tools[0].name == "get_weather"

    def answer(result: str) -> Any:
        return client.responses.create(model=tooly, tools=[FLAT_WEATHER], max_output_tokens=20, temperature=0, input=[
            *ASK_WEATHER, call.model_dump(exclude_none=True),
            {"type": "function_call_output", "call_id": call.call_id, "output": result}])

    follow = answer("Rainy, 12 degrees.")
    assert [item.type for item in follow.output] == ["message"] and follow.output_text
    # the output reached the prompt: a longer one costs its extra tokens (each result is new)
    short = answer("Sunny, 21 degrees.").usage.input_tokens
    longer = answer("Overcast, 14 degrees. Wind from the north at twenty kilometres an hour, "
                    "humidity seventy percent.").usage.input_tokens
    assert longer - short >= 10


def test_a_streamed_tool_call_is_one_whole_function_call_item(client, tooly) -> None:
    with client.responses.stream(model=tooly, input=ASK_WEATHER, tools=[FLAT_WEATHER],
                                 max_output_tokens=40, temperature=0) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert kinds == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.function_call_arguments.delta", "response.function_call_arguments.done",
                     "response.output_item.done", "response.completed"]
    (call,) = final.output
    assert call.type == "function_call" and json.loads(call.arguments) == {"city": "London"}


def test_previous_response_id_is_refused_clearly(client) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=SMOLLM, input="And then?", previous_response_id="resp_1")
    assert caught.value.status_code == 400
    message = caught.value.body["message"]
    assert message.startswith("previous_response_id is not supported") and "stateless" in message


def test_an_unknown_model_is_a_404_in_openai_shape(client) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model="no-such-model", input=QUESTION)
    assert caught.value.body == {"message": "model 'no-such-model' not found", "type": "not_found_error",
                                 "param": None, "code": None}
    with pytest.raises(openai.NotFoundError), client.responses.stream(model="no-such-model", input=QUESTION) as s:
        list(s)  # the status comes before the stream


def test_bad_input_gets_ollamas_texts(client) -> None:
    cases = [
        ([{"type": "mystery"}], 'input[0]: unknown input item type: "mystery"'),
        ([{"content": "hi"}], "input[0]: input item missing required 'type' field"),
        ([{"role": "user", "content": [{"type": "input_file", "file_data": "x"}]}],
         "file inputs are not currently supported"),
        ([{"role": "user", "content": [{"type": "input_image", "image_url": "https://example.com/cat.png"}]}],
         "image URLs are not currently supported, please use base64 encoded data instead"),
        ([{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{oops"}],
         "failed to parse function call arguments: Expecting property name enclosed in double quotes"),
    ]
    for value, text in cases:
        with pytest.raises(openai.BadRequestError) as caught:
            client.responses.create(model=SMOLLM, input=value)
        assert caught.value.body["message"] == text


# ---- the translations ---------------------------------------------------------------------


def test_input_items_become_native_messages_as_in_ollama() -> None:
    req = ResponsesRequest.model_validate({
        "model": "m", "instructions": "Be brief.", "max_output_tokens": 9, "top_p": 0.5,
        "reasoning": {"effort": "minimal"},
        "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}}},
        "tools": [{"type": "namespace", "name": "geo", "tools": [FLAT_WEATHER]}],
        "input": [
            {"role": "user", "content": "Weather in Paris?"},
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "I should look it up."},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}'},
            {"role": "assistant", "content": [{"type": "output_text", "text": "Looking."}]},
            {"type": "function_call_output", "call_id": "call_1",
             "output": [{"type": "input_text", "text": "sun"}, {"type": "input_text", "text": "ny"}]},
        ],
    })
    chat = responses_request(req)
    assert [(m.role, m.content) for m in chat.messages] == [
        ("system", "Be brief."), ("user", "Weather in Paris?"), ("assistant", "Looking."), ("tool", "sunny")]
    assistant = chat.messages[2]  # the replayed text joined the call it sits between, before its output
    assert assistant.thinking == "I should look it up."
    assert assistant.tool_calls[0].id == "call_1" and assistant.tool_calls[0].function.arguments == {"city": "Paris"}
    assert chat.messages[3].tool_call_id == "call_1"
    assert chat.options == {"temperature": 1.0, "top_p": 0.5, "num_predict": 9}
    assert chat.think == "low" and chat.format == {"type": "object"}
    assert [t.function.name for t in chat.tools] == ["geo.get_weather"]


def test_built_in_tools_and_conversations_are_refused() -> None:
    with pytest.raises(InvalidRequest, match='tool type "web_search" is not supported'):
        responses_request(ResponsesRequest(model="m", input="x", tools=[{"type": "web_search"}]))
    with pytest.raises(InvalidRequest, match="conversation is not supported"):
        responses_request(ResponsesRequest(model="m", input="x", conversation="conv_1"))
    with pytest.raises(InvalidRequest, match="input must be a string or array"):
        responses_request(ResponsesRequest(model="m", input=5))


def test_a_stream_of_thinking_then_text_gets_a_reasoning_item_then_a_message() -> None:
    def chunk(**message: Any) -> ChatResponse:
        return ChatResponse(model="m", message=Message(role="assistant", **message))

    stream = ResponsesStream("resp_1", "msg_1", ResponsesRequest(model="m", input="x", reasoning={"effort": "high"}))
    done = ChatResponse(model="m", done=True, done_reason="stop", prompt_eval_count=9, eval_count=4)
    events = [e for c in (chunk(thinking="Hm"), chunk(thinking="m."), chunk(content="Red."), done)
              for e in stream.feed(c)]
    assert [(name, data.get("output_index")) for name, data in events] == [
        ("response.created", None), ("response.in_progress", None),
        ("response.output_item.added", 0), ("response.reasoning_summary_text.delta", 0),
        ("response.reasoning_summary_text.delta", 0), ("response.reasoning_summary_text.done", 0),
        ("response.output_item.done", 0),
        ("response.output_item.added", 1), ("response.content_part.added", 1), ("response.output_text.delta", 1),
        ("response.output_text.done", 1), ("response.content_part.done", 1), ("response.output_item.done", 1),
        ("response.completed", None)]
    final = events[-1][1]["response"]
    assert [item["type"] for item in final["output"]] == ["reasoning", "message"]
    assert final["output"][0]["summary"] == [{"type": "summary_text", "text": "Hmm."}]
    assert final["reasoning"] == {"effort": "high", "summary": None}
    assert final["usage"]["input_tokens"] == 9 and final["usage"]["total_tokens"] == 13


def test_a_tool_call_after_text_suppresses_the_message_as_ollama_does() -> None:
    stream = ResponsesStream("resp_1", "msg_1", ResponsesRequest(model="m", input="x"))
    call = ToolCall(id="call_a", function=ToolCallFunction(name="f", arguments={"x": 1}))
    events = stream.feed(ChatResponse(model="m", message=Message(role="assistant", tool_calls=[call])))
    events += stream.feed(ChatResponse(model="m", message=Message(role="assistant", content="ignored")))
    events += stream.feed(ChatResponse(model="m", done=True, done_reason="stop"))
    assert "response.output_text.delta" not in [name for name, _ in events]
    (item,) = events[-1][1]["response"]["output"]
    assert item["type"] == "function_call" and item["arguments"] == '{"x":1}'


def test_a_failure_mid_stream_ends_it_with_response_failed() -> None:
    stream = ResponsesStream("resp_1", "msg_1", ResponsesRequest(model="m", input="x"))
    stream.feed(ChatResponse(model="m", message=Message(role="assistant", content="Par")))
    name, data = stream.failed("api_error", "the model stopped")[-1]
    assert name == "response.failed" and data["sequence_number"] == 5
    assert data["response"]["status"] == "failed"
    assert data["response"]["error"] == {"code": "api_error", "message": "the model stopped"}


def test_a_translated_stream_that_fails_ends_with_its_dialects_error_event() -> None:
    import asyncio

    from ollama_nb.base.errors import OllamaNbError
    from ollama_nb.server.streaming import named_events

    async def chunks():
        yield ChatResponse(model="m", message=Message(role="assistant", content="Par"))
        raise OllamaNbError("the model stopped")

    async def collect() -> list[tuple[str | None, str]]:
        source = chunks()
        first = await source.__anext__()
        stream = ResponsesStream("resp_1", "msg_1", ResponsesRequest(model="m", input="x"))
        return [e async for e in named_events(source, first, stream.feed,
                                              lambda exc: stream.failed("api_error", str(exc)))]

    events = asyncio.run(collect())
    assert [name for name, _ in events][-2:] == ["response.output_text.delta", "response.failed"]
    assert json.loads(events[-1][1])["response"]["error"]["message"] == "the model stopped"

"""Pydantic models of the OpenAI-compatible API (``/v1``), as Ollama's ``openai/openai.go`` writes
them: the one definition of every ``/v1`` request and response (their translation to and from
the native types is ``api.openai``).

Requests are decoded leniently about unknown fields (OpenAI clients send many we ignore:
``user``, ``logit_bias``, ...) and strictly about types (Go's decoder refuses a string where a
number belongs; pydantic would quietly coerce it). Responses keep ``null`` only where OpenAI
clients expect the key to exist (``finish_reason``, the error's ``param``/``code``); every other
None is left out, as Go's ``omitempty`` does.
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field

from .types import ApiModel, Logprob, Tool

# Keys an OpenAI client expects to find even when null; every other None is omitted.
_OPENAI_KEEP_NULL = frozenset({"finish_reason", "param", "code"})


def _omit_none(value: Any) -> Any:
    if isinstance(value, dict):
        keep = _OPENAI_KEEP_NULL
        return {k: _omit_none(v) for k, v in value.items() if v is not None or k in keep}
    if isinstance(value, list):
        return [_omit_none(v) for v in value]
    return value


class OpenAIShape(ApiModel):
    """Base of the ``/v1`` shapes: strict request types, Go-style ``omitempty`` on output."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, strict=True)

    def to_dict(self) -> dict[str, Any]:
        return _omit_none(self.model_dump(mode="json", by_alias=True))


class StreamOptions(OpenAIShape):
    include_usage: bool = False


class OpenAIFunctionCall(OpenAIShape):
    name: str = ""
    # A JSON string on the wire; some clients send the object itself, which we accept too.
    arguments: str | dict[str, Any] = ""


class OpenAIToolCall(OpenAIShape):
    id: str = ""
    index: int | None = None
    type: str = "function"
    function: OpenAIFunctionCall = Field(default_factory=OpenAIFunctionCall)


class ChatCompletionMessage(OpenAIShape):
    """A message in ``messages`` (request) or in ``choices[].message`` (response).

    ``content`` is a string, a list of parts (``{"type": "text", "text": ...}``, ``image_url``,
    ``input_audio``) or null (only beside ``tool_calls``). ``reasoning`` is Ollama's name for
    the thinking text.
    """

    role: str
    content: Any = None  # checked when converted, as Ollama checks its interface {}
    reasoning: str | None = None
    tool_calls: list[OpenAIToolCall] | None = None
    name: str | None = None
    tool_call_id: str | None = None


class ResponseFormatSchema(OpenAIShape):
    name: str | None = None
    schema_: dict[str, Any] | bool | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(OpenAIShape):
    type: str = ""
    json_schema: ResponseFormatSchema | None = None


class ReasoningOptions(OpenAIShape):
    effort: str | None = None


class ChatCompletionRequest(OpenAIShape):
    """``POST /v1/chat/completions``. ``stop`` stays untyped: Ollama drops non-strings from a
    chat stop list instead of refusing them."""

    model: str = ""
    messages: list[ChatCompletionMessage] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    seed: int | None = None
    stop: Any = None
    temperature: float | None = None
    top_p: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    tool_choice: Any = None
    reasoning: ReasoningOptions | None = None
    reasoning_effort: str | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    n: int | None = None
    keep_alive: float | str | None = None


class CompletionRequest(OpenAIShape):
    """``POST /v1/completions`` (legacy text completion). ``prompt`` is one string (a list
    holding exactly one string is accepted too); ``logprobs`` is the number of alternatives."""

    model: str = ""
    prompt: str | list[Any] = ""
    suffix: str | None = None
    max_tokens: int | None = None
    seed: int | None = None
    stop: Any = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: float | None = None
    top_p: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logprobs: int | None = None
    echo: bool | None = None
    n: int | None = None
    keep_alive: float | str | None = None


class EmbeddingRequest(OpenAIShape):
    """``POST /v1/embeddings``; ``input`` is checked by hand for Ollama's error texts."""

    model: str = ""
    input: Any = None
    dimensions: int | None = None
    encoding_format: str | None = None
    keep_alive: float | str | None = None


class Usage(OpenAIShape):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ChoiceLogprobs(OpenAIShape):
    content: list[Logprob] = Field(default_factory=list)


class ChatChoice(OpenAIShape):

    index: int = 0
    message: ChatCompletionMessage
    finish_reason: str | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletion(OpenAIShape):
    id: str
    object: str = "chat.completion"
    created: int
    model: str
    system_fingerprint: str = "fp_ollama"
    choices: list[ChatChoice]
    usage: Usage = Field(default_factory=Usage)


class ChatDelta(OpenAIShape):
    """A streamed piece; every field is dropped when unset, so the finish chunk's delta is ``{}``."""

    role: str | None = None
    content: str | None = None
    reasoning: str | None = None
    tool_calls: list[OpenAIToolCall] | None = None


class ChatChunkChoice(OpenAIShape):

    index: int = 0
    delta: ChatDelta = Field(default_factory=ChatDelta)
    finish_reason: str | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(OpenAIShape):
    id: str
    object: str = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str = "fp_ollama"
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class CompletionLogprobs(OpenAIShape):
    """The legacy completions shape: parallel lists, alternatives as ``{token: logprob}``."""

    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float] = Field(default_factory=list)
    top_logprobs: list[dict[str, float]] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


class CompletionChoice(OpenAIShape):

    text: str = ""
    index: int = 0
    finish_reason: str | None = None
    logprobs: CompletionLogprobs | None = None


class Completion(OpenAIShape):
    """A ``text_completion`` object: the whole reply, or one streamed chunk of it."""

    id: str
    object: str = "text_completion"
    created: int
    model: str
    system_fingerprint: str = "fp_ollama"
    choices: list[CompletionChoice]
    usage: Usage | None = None


class EmbeddingData(OpenAIShape):
    object: str = "embedding"
    embedding: list[float] | str  # floats, or base64 of little-endian float32
    index: int = 0


class EmbeddingUsage(OpenAIShape):
    prompt_tokens: int = 0
    total_tokens: int = 0


class EmbeddingList(OpenAIShape):
    object: str = "list"
    data: list[EmbeddingData] = Field(default_factory=list)
    model: str
    usage: EmbeddingUsage = Field(default_factory=EmbeddingUsage)


class OpenAIModelCard(OpenAIShape):
    """One entry of ``/v1/models`` (named apart from pydantic's ``BaseModel``)."""

    id: str
    object: str = "model"
    created: int = 0
    owned_by: str = "library"


class ModelList(OpenAIShape):
    object: str = "list"
    data: list[OpenAIModelCard] = Field(default_factory=list)


class OpenAIErrorDetail(OpenAIShape):

    message: str
    type: str = "api_error"
    param: Any = None
    code: str | None = None


class OpenAIError(OpenAIShape):
    """``{"error": {"message", "type", "param", "code"}}``: every ``/v1`` failure."""

    error: OpenAIErrorDetail

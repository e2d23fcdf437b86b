"""Pydantic models for Ollama's native API: the one definition of every request and response.

The manager returns these, the server serialises them, the notebook faces display them, so a
``%%chat`` reply, an ``/api/chat`` reply and a plot row carry the same fields. Requests ignore
unknown fields (Go's decoder does); responses drop None and zero-valued metrics when dumped
(Go's ``omitempty``), see :meth:`ApiModel.to_json`.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["system", "user", "assistant", "tool"]
DoneReason = Literal["stop", "length", "load", "unload"]

#: Ollama's timing fields, in the order its final chunk lists them (nanoseconds and counts).
TIMING_FIELDS = (
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
)
_OMIT_WHEN_ZERO = frozenset(TIMING_FIELDS)


def now_rfc3339() -> str:
    """UTC timestamp with nanosecond-style precision, as Go's time.Time marshals it."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ApiModel(BaseModel):
    """Base: dict-style access like ollama-python's types, Go-like JSON output."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)

    def __contains__(self, key: str) -> bool:
        return getattr(self, key, None) is not None

    def to_dict(self) -> dict[str, Any]:
        data = self.model_dump(exclude_none=True, by_alias=True)
        for key in _OMIT_WHEN_ZERO & data.keys():
            if not data[key]:
                del data[key]
        return data


# ---- shared pieces ---------------------------------------------------------------------------


class ToolCallFunction(ApiModel):
    index: int | None = None
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolCall(ApiModel):
    id: str | None = None
    function: ToolCallFunction


class Message(ApiModel):
    role: str
    content: str = ""
    thinking: str | None = None
    images: list[str] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None
    tool_call_id: str | None = None


class ToolFunction(ApiModel):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(ApiModel):
    type: str = "function"
    function: ToolFunction


class TokenLogprob(ApiModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class Logprob(TokenLogprob):
    top_logprobs: list[TokenLogprob] | None = None


class Metrics(ApiModel):
    """Timing fields in nanoseconds, named as Ollama names them."""

    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None


# ---- requests --------------------------------------------------------------------------------


class BaseRequest(ApiModel):
    model: str = ""
    stream: bool = True
    options: dict[str, Any] | None = None
    keep_alive: float | str | None = None


class GenerateRequest(BaseRequest):
    prompt: str = ""
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None
    raw: bool = False
    format: str | dict[str, Any] | None = None
    images: list[str] | None = None
    think: bool | str | None = None
    truncate: bool | None = None
    shift: bool | None = None
    logprobs: bool = False
    top_logprobs: int = 0


class ChatRequest(BaseRequest):
    messages: list[Message] = Field(default_factory=list)
    tools: list[Tool] | None = None
    format: str | dict[str, Any] | None = None
    think: bool | str | None = None
    truncate: bool | None = None
    shift: bool | None = None
    logprobs: bool = False
    top_logprobs: int = 0


class EmbedRequest(BaseRequest):
    input: str | list[str] = ""
    truncate: bool = True
    dimensions: int | None = None


class EmbeddingsRequest(BaseRequest):
    prompt: str = ""


class ShowRequest(ApiModel):
    model: str = ""
    name: str = ""  # legacy spelling, still sent by old clients
    verbose: bool = False
    system: str | None = None
    options: dict[str, Any] | None = None


class PullRequest(ApiModel):
    model: str = ""
    name: str = ""
    insecure: bool = False
    stream: bool = True


class PushRequest(PullRequest):
    pass


class CreateRequest(ApiModel):
    model: str = ""
    name: str = ""
    from_: str = Field("", alias="from")
    files: dict[str, str] | None = None
    adapters: dict[str, str] | None = None
    template: str | None = None
    system: str | None = None
    license: str | list[str] | None = None
    parameters: dict[str, Any] | None = None
    messages: list[Message] | None = None
    quantize: str | None = None
    stream: bool = True


class CopyRequest(ApiModel):
    source: str = ""
    destination: str = ""


class DeleteRequest(ApiModel):
    model: str = ""
    name: str = ""


class TokenizeRequest(ApiModel):
    """``/api/tokenize`` (not in Ollama): ``content`` (or ``prompt``) as the model's tokenizer
    splits it; ``add_special`` adds BOS/EOS as a prompt would (off, as in llama-server)."""

    model: str = ""
    content: str | None = None
    prompt: str | None = None
    add_special: bool = False
    keep_alive: float | str | None = None
    options: dict[str, Any] | None = None


class DetokenizeRequest(ApiModel):
    model: str = ""
    tokens: list[int] = Field(default_factory=list)
    keep_alive: float | str | None = None
    options: dict[str, Any] | None = None


# ---- responses -------------------------------------------------------------------------------


class GenerateResponse(Metrics):
    model: str
    created_at: str = Field(default_factory=now_rfc3339)
    response: str = ""
    thinking: str | None = None
    done: bool = False
    done_reason: str | None = None
    context: list[int] | None = None
    tool_calls: list[ToolCall] | None = None
    logprobs: list[Logprob] | None = None


class ChatResponse(Metrics):
    model: str
    created_at: str = Field(default_factory=now_rfc3339)
    message: Message = Field(default_factory=lambda: Message(role="assistant", content=""))
    done: bool = False
    done_reason: str | None = None
    logprobs: list[Logprob] | None = None


class EmbedResponse(ApiModel):
    model: str
    embeddings: list[list[float]] = Field(default_factory=list)
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None


class EmbeddingsResponse(ApiModel):
    embedding: list[float] = Field(default_factory=list)


class ProgressResponse(ApiModel):
    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None


class ModelDetails(ApiModel):
    """``details`` of ``/api/tags``, ``/api/show`` and ``/api/ps``."""

    parent_model: str = ""
    format: str = ""
    family: str = ""
    families: list[str] | None = None
    parameter_size: str = ""
    quantization_level: str = ""
    context_length: int | None = None
    embedding_length: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Ollama's JSON: ``families`` is null rather than absent; the two lengths only when known."""
        data = super().to_dict()
        data.setdefault("families", None)
        for key in ("context_length", "embedding_length"):
            if not data.get(key):
                data.pop(key, None)
        return data


class ListModel(ApiModel):
    name: str
    model: str
    modified_at: str
    size: int
    digest: str
    details: ModelDetails = Field(default_factory=ModelDetails)


class ListResponse(ApiModel):
    models: list[ListModel] = Field(default_factory=list)


class ShowResponse(ApiModel):
    license: str | None = None
    modelfile: str = ""
    parameters: str | None = None
    template: str | None = None
    system: str | None = None
    details: ModelDetails = Field(default_factory=ModelDetails)
    messages: list[Message] | None = None
    model_info: dict[str, Any] = Field(default_factory=dict)
    tensors: list[dict[str, Any]] | None = None
    capabilities: list[str] | None = None
    modified_at: str | None = None


class ProcessModel(ApiModel):
    name: str
    model: str
    size: int
    digest: str
    details: ModelDetails = Field(default_factory=ModelDetails)
    expires_at: str
    size_vram: int = 0
    context_length: int = 0


class ProcessResponse(ApiModel):
    models: list[ProcessModel] = Field(default_factory=list)


class TokenizeResponse(ApiModel):
    tokens: list[int] = Field(default_factory=list)


class DetokenizeResponse(ApiModel):
    content: str = ""


# ---- /api/info (beyond Ollama): what the runtime is doing on this machine ----------------------


class DeviceInfo(ApiModel):
    name: str
    description: str = ""
    type: str  # cpu, gpu, igpu, accel
    memory_free: int = 0
    memory_total: int = 0


class CpuInfo(ApiModel):
    model: str = ""
    cores: int  # physical cores this process may use, within its cgroup quota
    logical_cpus: int
    cpu_quota: float | None = None  # the cgroup's CPU limit in cores, when there is one
    features: list[str] = Field(default_factory=list)  # instruction sets compiled into llama.cpp
    features_missing: list[str] = Field(default_factory=list)  # compiled in, absent on this CPU
    build_options: list[str] = Field(default_factory=list)  # OPENMP, REPACK, LLAMAFILE, ...


class ExtraBuffersInfo(ApiModel):
    """llama.cpp's CPU extra buffer types (AMX, repacked weights) and the probe's verdict."""

    enabled: bool
    source: str  # OLLAMA_NB_EXTRA_BUFFERS, probe, cache
    verdict: str
    detail: str = ""
    types: list[str] = Field(default_factory=list)


class ThreadsInfo(ApiModel):
    setting: str  # "automatic" (num_thread unset): the count follows the free cores
    threads: int  # what a model loaded now would compute with
    cores: int
    busy_elsewhere: float  # CPUs' worth of time other work took while it was measured


class LoadedRuntime(ApiModel):
    """How one loaded model really runs (after every fallback)."""

    name: str
    threads: int
    automatic_threads: bool
    extra_buffers: bool
    flash_attention: bool
    kv_cache_type: str
    gpu_layers: int
    parallel: int


class InfoResponse(ApiModel):
    version: str  # ollama_nb's
    api_version: str  # the Ollama API version /api/version reports
    library: str  # e.g. "llama-cpp-python 0.3.36"
    system_info: str  # llama.cpp's own line
    backends: list[str] = Field(default_factory=list)
    devices: list[DeviceInfo] = Field(default_factory=list)
    gpu_offload: bool = False  # the build can offload to a GPU
    cpu: CpuInfo
    extra_buffers: ExtraBuffersInfo
    threads: ThreadsInfo
    flash_attention: str  # "auto" (OLLAMA_FLASH_ATTENTION unset), "on" or "off"
    kv_cache_type: str
    loaded: list[LoadedRuntime] = Field(default_factory=list)


# ---- OpenAI-compatible API -------------------------------------------------------------------
#
# The ``/v1`` shapes, as Ollama's ``openai/openai.go`` writes them. Requests are decoded leniently
# about unknown fields (OpenAI clients send many we ignore: ``user``, ``logit_bias``, ...) and
# strictly about types (Go's decoder refuses a string where a number belongs; pydantic would
# quietly coerce it). Responses keep ``null`` only where OpenAI clients expect the key to exist
# (``finish_reason``, the error's ``param``/``code``); every other None is left out, as Go's
# ``omitempty`` does.


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
    content: str | list[Any] | None = None
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

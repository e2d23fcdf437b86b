"""Pydantic models for Ollama's native API: the one definition of every request and response.

The manager returns these, the server serialises them, the notebook faces display them, so a
``%%chat`` reply, an ``/api/chat`` reply and a plot row carry the same fields. Requests ignore
unknown fields (Go's decoder does); responses drop None and zero-valued metrics when dumped
(Go's ``omitempty``), see :meth:`ApiModel.to_json`.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from ..base.timings import OLLAMA_FIELDS, Timings

Role = Literal["system", "user", "assistant", "tool"]
DoneReason = Literal["stop", "length", "load", "unload"]

_OMIT_WHEN_ZERO = frozenset(OLLAMA_FIELDS)


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


class TimedReply(ApiModel):
    """A reply that carries the one :class:`~ollama_nb.base.timings.Timings` of its request.

    In the process that made it, :attr:`timings` is the manager's own object, the one its request
    record and its notebook result hold too; a reply read off the wire gets one rebuilt from its
    Ollama fields. Either way the JSON fields are read off the value, never copied by hand.
    """

    _timings: Timings | None = PrivateAttr(default=None)

    @classmethod
    def finished(cls, timings: Timings, **fields: Any) -> Any:
        """The final reply of a request, its Ollama timing fields taken from ``timings``."""
        names = cls.model_fields.keys()
        reply = cls(**fields, **{k: v for k, v in timings.ollama_fields().items() if k in names})
        reply._timings = timings
        return reply

    @property
    def timings(self) -> Timings:
        return self._timings if self._timings is not None else Timings.from_ollama(self)


class Metrics(TimedReply):
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
    remote_model: str | None = None  # Ollama's: the upstream model and host that made the reply
    remote_host: str | None = None
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
    remote_model: str | None = None
    remote_host: str | None = None
    created_at: str = Field(default_factory=now_rfc3339)
    message: Message = Field(default_factory=lambda: Message(role="assistant", content=""))
    done: bool = False
    done_reason: str | None = None
    logprobs: list[Logprob] | None = None


class EmbedResponse(TimedReply):
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
    remote_model: str | None = None  # Ollama's: a model that runs on another host, and that host
    remote_host: str | None = None
    modified_at: str
    size: int
    digest: str
    details: ModelDetails = Field(default_factory=ModelDetails)
    capabilities: list[str] | None = None


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
    projector_info: dict[str, Any] | None = None
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
    weights_mapped: bool = True  # the GGUF memory-mapped rather than read in (use_mmap)
    huge_page_bytes: int = 0  # of its buffers, how much sits in 2 MiB pages (runtime.huge_pages)


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

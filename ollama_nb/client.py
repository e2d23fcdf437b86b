"""A small synchronous client for an Ollama-compatible server (real Ollama or ollama_nb's own).

It has the method names and return types of :class:`~ollama_nb.manager.ModelManager` that the
notebook faces use (see :class:`~ollama_nb.notebook.connection.Backend`), so ``%ollama connect URL`` can swap
one for the other without the magics or widgets noticing. Only the standard library is used
(``http.client``): streamed replies are read as NDJSON lines, one pydantic object per line, and
closing a stream closes the connection, which is how Ollama learns to stop generating. Errors
come back as :class:`~ollama_nb.base.errors.OllamaNbError` subclasses carrying the server's own text.
"""

from __future__ import annotations

import http.client
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from .api.types import (
    ChatRequest,
    ChatResponse,
    EmbedRequest,
    EmbedResponse,
    GenerateRequest,
    GenerateResponse,
    InfoResponse,
    ListResponse,
    ProcessResponse,
    ProgressResponse,
    ShowResponse,
)
from .base import config
from .base.errors import (
    BackendError,
    BackendUnauthorized,
    Forbidden,
    InvalidRequest,
    ModelNotFound,
    NotSupported,
    OllamaNbError,
    ServerBusy,
    Unauthorized,
)
from .base.refs import ModelRef
from .models.modelfile import (
    collect_files,
    expand_path,
    file_digest,
    is_local_path,
    parse_modelfile,
    to_create_request,
)

DEFAULT_PORT = 11434


def parse_host(host: str | None) -> str:
    """``http://host:port[/prefix]`` from what a person types (as the ``ollama`` Python client
    reads ``OLLAMA_HOST``): a bare host gets ``http://`` and port 11434, ``:port`` means
    127.0.0.1, an explicit ``http``/``https`` scheme without a port means 80/443. A path prefix
    is kept, so a server behind jupyter-server-proxy (``.../proxy/8000``) works."""
    raw = (host or "").strip() or "127.0.0.1"
    scheme, sep, rest = raw.partition("://")
    port_default = DEFAULT_PORT
    if not sep:
        scheme, rest = "http", raw
    else:
        scheme = scheme.lower()
        port_default = 443 if scheme == "https" else 80
    parts = urlsplit(f"{scheme}://{rest}")
    hostname = parts.hostname or "127.0.0.1"
    if hostname == "0.0.0.0":
        hostname = "127.0.0.1"
    try:
        port = parts.port or port_default
    except ValueError as exc:
        raise InvalidRequest(f"invalid server address {host!r}: {exc}") from None
    netloc = f"[{hostname}]" if ":" in hostname else hostname
    return f"{scheme}://{netloc}:{port}{parts.path.rstrip('/')}"


def _error(status: int, text: str, model: str | None) -> OllamaNbError:
    """The exception for an error answer, with the server's text as its message."""
    exc: OllamaNbError
    if status == 404 and model and "not found" in text:
        exc = ModelNotFound(model)
        exc.message = text
        return exc
    if status == 400:
        return InvalidRequest(text)
    if status == 401:
        return Unauthorized()
    if status == 403:
        return Forbidden(text)
    if status == 503 and "busy" in text:
        return ServerBusy()
    exc = OllamaNbError(text or f"HTTP {status}")
    exc.status = status
    return exc


def error_text(payload: str) -> str:
    """The message of an error body: Ollama's ``{"error": "..."}``, OpenAI's ``{"error":
    {"message": ...}}``, or the body itself."""
    try:
        text = json.loads(payload).get("error", payload)
        if isinstance(text, dict):
            text = text.get("message", str(text))
    except (ValueError, AttributeError):
        text = payload.strip()
    return str(text)


def unreachable(backend: str, url: str, detail: str) -> BackendError:
    """A named backend that cannot be reached (or broke off): one line naming it."""
    return BackendError(f"backend {backend!r} at {url}: {detail}",
                        hint=f"the other backends still work; `%ollama disconnect {backend}` removes it")


def refused_key(backend: str, url: str, api_key_env: str | None, text: str) -> BackendUnauthorized:
    """A 401 from a named backend: say which environment variable the key is read from."""
    if api_key_env and not os.environ.get(api_key_env):
        step = f"set the environment variable {api_key_env} to its API key ({api_key_env} is not set)"
    elif api_key_env:
        step = f"set the environment variable {api_key_env} to a key this backend accepts"
    else:
        step = "reconnect it with --api-key-env VAR and set the environment variable VAR to its API key"
    return BackendUnauthorized(f"backend {backend!r} at {url} refused the request (401 {text or 'unauthorized'})",
                               hint=step)


class HttpFailure(Exception):
    """An HTTP error answer: its status and the message its body carried."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


class Unreachable(Exception):
    """No answer at all (refused, reset, timed out), with the operating system's words."""


class Transport:
    """One request per connection over ``http.client`` to a base URL (with its path prefix).

    Raises :class:`HttpFailure` for a 4xx/5xx answer and :class:`Unreachable` when no answer came;
    each caller turns those into its own errors (a remote Ollama's, an OpenAI engine's)."""

    def __init__(self, url: str, *, timeout: float | None, headers: dict[str, str]) -> None:
        parts = urlsplit(url)
        self.url = url
        self._scheme = parts.scheme
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self.headers = headers

    def connection(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
        return cls(self._host, self._port, timeout=self.timeout)

    def open(self, method: str, path: str, body: Any = None, *, raw: Any = None,
             extra_headers: dict[str, str] | None = None
             ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send a request; return the open connection and a 2xx response, or raise."""
        headers = dict(self.headers)
        headers.update(extra_headers or {})
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn = self.connection()
        try:
            conn.request(method, self.prefix + path, body=data, headers=headers)
            resp = conn.getresponse()
        except OSError as exc:
            conn.close()
            raise Unreachable(exc.strerror or str(exc) or type(exc).__name__) from None
        except BaseException:
            conn.close()
            raise
        if resp.status >= 400:
            try:
                payload = resp.read().decode("utf-8", "replace")
            finally:
                conn.close()
            raise HttpFailure(resp.status, error_text(payload))
        return conn, resp


def read_line(resp: http.client.HTTPResponse) -> bytes:
    """One line of a streamed body; a connection that dies mid-body raises :class:`Unreachable`."""
    try:
        return resp.readline()
    except (OSError, http.client.HTTPException) as exc:
        raise Unreachable(f"the reply broke off: {exc or type(exc).__name__}") from None


def _typed(lines: Iterator[dict[str, Any]], cls: Any) -> Iterator[Any]:
    """Parse each line into ``cls``; closing this closes the connection underneath at once."""
    try:
        for item in lines:
            yield cls.model_validate(item)
    finally:
        close = getattr(lines, "close", None)
        if close is not None:
            close()


class Client:
    """An Ollama server at ``host`` (default: ``$OLLAMA_HOST``, else 127.0.0.1:11434).

    One connection per request, so one client may be used from several threads at once (the
    chat panel's thread and a cell, say). ``timeout`` bounds each socket read; None waits as long
    as the model takes (a kernel interrupt still stops the wait).
    """

    def __init__(self, host: str | None = None, *, timeout: float | None = None,
                 api_key: str | None = None, headers: dict[str, str] | None = None,
                 backend: str | None = None, api_key_env: str | None = None) -> None:
        self.url = parse_host(host if host is not None else os.environ.get("OLLAMA_HOST"))
        self.timeout = timeout
        self.headers = {"Accept": "application/json", "User-Agent": "ollama_nb-client", **(headers or {})}
        self.backend = backend
        self.api_key_env = api_key_env
        if api_key is None and api_key_env:
            api_key = os.environ.get(api_key_env)
        elif api_key is None and backend is None:
            api_key = config.api_key()
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self._transport = Transport(self.url, timeout=timeout, headers=self.headers)

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    # ---- transport ---------------------------------------------------------------------------

    def _open(self, method: str, path: str, body: Any = None, *, model: str | None = None,
              raw: Any = None, extra_headers: dict[str, str] | None = None
              ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send a request; return the open connection and a 2xx response, or raise."""
        try:
            return self._transport.open(method, path, body, raw=raw, extra_headers=extra_headers)
        except Unreachable as exc:
            if self.backend is not None:
                raise unreachable(self.backend, self.url, f"unreachable: {exc}") from None
            raise OllamaNbError(
                f"could not connect to the server at {self.url}: {exc}",
                hint="is it running? start one with `%ollama serve`, or go back to this kernel's "
                "models with `%ollama connect --local`",
            ) from None
        except HttpFailure as exc:
            if exc.status == 401 and self.backend is not None:
                raise refused_key(self.backend, self.url, self.api_key_env, exc.text) from None
            raise _error(exc.status, exc.text, model) from None

    def _call(self, method: str, path: str, body: Any = None, *, model: str | None = None) -> Any:
        conn, resp = self._open(method, path, body, model=model)
        try:
            payload = resp.read()
        finally:
            conn.close()
        return json.loads(payload) if payload.strip() else None

    def _lines(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse) -> Iterator[dict[str, Any]]:
        """NDJSON objects until the server ends the stream; an ``error`` line raises."""
        try:
            while True:
                try:
                    line = read_line(resp)
                except Unreachable as exc:
                    raise unreachable(self.backend or "server", self.url, str(exc)) from None
                if not line:
                    return
                if not line.strip():
                    continue
                item = json.loads(line)
                if isinstance(item, dict) and "error" in item and len(item) == 1:
                    raise OllamaNbError(str(item["error"]))
                yield item
        finally:
            conn.close()

    def _stream(self, path: str, body: dict[str, Any], *, model: str | None = None) -> Iterator[dict[str, Any]]:
        """Open the request now (so a bad model fails at the call), read it lazily."""
        conn, resp = self._open("POST", path, body, model=model)
        return self._lines(conn, resp)

    # ---- catalog -----------------------------------------------------------------------------

    def version(self) -> str:
        return str((self._call("GET", "/api/version") or {}).get("version", ""))

    def list(self) -> ListResponse:
        return ListResponse.model_validate(self._call("GET", "/api/tags") or {})

    def show(self, name: str, *, verbose: bool = False) -> ShowResponse:
        body = {"model": name, "verbose": True} if verbose else {"model": name}
        return ShowResponse.model_validate(self._call("POST", "/api/show", body, model=name))

    def ps(self) -> ProcessResponse:
        return ProcessResponse.model_validate(self._call("GET", "/api/ps") or {})

    def info(self) -> InfoResponse:
        """The server's runtime (``GET /api/info``, which only ollama_nb servers have)."""
        try:
            return InfoResponse.model_validate(self._call("GET", "/api/info") or {})
        except OllamaNbError as exc:
            if getattr(exc, "status", None) != 404:
                raise
            raise NotSupported(f"{self.url} does not report its runtime (/api/info is ollama_nb's; "
                               "a plain Ollama has none)") from None

    def pull(self, name: str, *, insecure: bool = False) -> Iterator[ProgressResponse]:
        body = {"model": name, "insecure": insecure, "stream": True}
        return _typed(self._stream("/api/pull", body, model=name), ProgressResponse)

    def push(self, name: str, *, insecure: bool = False) -> Iterator[ProgressResponse]:
        body = {"model": name, "insecure": insecure, "stream": True}
        return _typed(self._stream("/api/push", body, model=name), ProgressResponse)

    def copy(self, source: str, destination: str) -> None:
        self._call("POST", "/api/copy", {"source": source, "destination": destination}, model=source)

    def delete(self, name: str) -> None:
        self._call("DELETE", "/api/delete", {"model": name}, model=name)

    def create(self, name: str, modelfile: str | None = None, *, base_dir: str | None = None,
               quantize: str | None = None) -> Iterator[ProgressResponse]:
        """Parse the Modelfile here, upload the local files it names (as ``ollama create``
        does), then let the server build the model; yields the server's progress."""

        base = base_dir or os.getcwd()
        parsed = parse_modelfile(modelfile or "")
        digests: dict[Path, str] = {}

        def digest(path: Path) -> str:
            if path not in digests:
                digests[path] = file_digest(path)
            return digests[path]

        body = to_create_request(parsed, base, digest=digest)
        local = [v for v in (parsed.from_, *parsed.extra_from, *parsed.adapters, parsed.draft or "")
                 if v and is_local_path(v, base)]
        uploads = [p for v in local for p in collect_files(expand_path(v, base)).values()]
        return self._create_stream(name, body, uploads, digest, quantize)

    def _create_stream(self, name: str, body: dict[str, Any], uploads: list[Path], digest: Any,
                       quantize: str | None) -> Iterator[ProgressResponse]:
        for path in uploads:
            d = digest(path)
            size = path.stat().st_size
            yield ProgressResponse(status=f"copying file {d}", digest=d, total=size, completed=0)
            self._upload(path, d)
            yield ProgressResponse(status=f"copying file {d}", digest=d, total=size, completed=size)
        request = {"model": name, **body, "stream": True}
        if quantize:
            request["quantize"] = quantize
        yield from _typed(self._stream("/api/create", request, model=name), ProgressResponse)

    def _upload(self, path: Path, digest: str) -> None:
        where = f"/api/blobs/{quote(digest)}"
        try:
            conn, _ = self._open("HEAD", where)
            conn.close()
            return  # the server has it already
        except OllamaNbError as exc:
            if getattr(exc, "status", None) != 404 and not isinstance(exc, ModelNotFound):
                raise
        with open(path, "rb") as fh:
            conn, resp = self._open("POST", where, raw=fh, extra_headers={
                "Content-Type": "application/octet-stream",
                "Content-Length": str(path.stat().st_size),
            })
            resp.read()
            conn.close()

    # ---- loaded models -----------------------------------------------------------------------

    def load(self, name: str, *, keep_alive: Any = None) -> None:
        body: dict[str, Any] = {"model": name, "stream": False}
        if keep_alive is not None:
            body["keep_alive"] = keep_alive
        self._call("POST", "/api/generate", body, model=name)

    def unload(self, name: str) -> bool:
        """Unload now (``keep_alive: 0``); False when the model was not loaded."""

        want = ModelRef.parse(name).fold_key()
        loaded = any(ModelRef.parse(m.model or m.name).fold_key() == want for m in self.ps().models)
        self._call("POST", "/api/generate", {"model": name, "keep_alive": 0, "stream": False}, model=name)
        return loaded

    # ---- inference ---------------------------------------------------------------------------

    @staticmethod
    def _body(req: Any) -> dict[str, Any]:
        return req.model_dump(mode="json", exclude_none=True, by_alias=True)

    def chat(self, request: ChatRequest | None = None, /, **fields: Any) -> Any:
        """A ChatResponse, or an iterator of chunks when ``stream`` (the default, as in Ollama)."""
        req = request or ChatRequest(**fields)
        if not req.stream:
            return ChatResponse.model_validate(self._call("POST", "/api/chat", self._body(req), model=req.model))
        return _typed(self._stream("/api/chat", self._body(req), model=req.model), ChatResponse)

    def generate(self, request: GenerateRequest | None = None, /, **fields: Any) -> Any:
        req = request or GenerateRequest(**fields)
        if not req.stream:
            return GenerateResponse.model_validate(self._call("POST", "/api/generate", self._body(req), model=req.model))
        return _typed(self._stream("/api/generate", self._body(req), model=req.model), GenerateResponse)

    def embed(self, request: EmbedRequest | None = None, /, **fields: Any) -> EmbedResponse:
        req = request or EmbedRequest(**fields)
        return EmbedResponse.model_validate(self._call("POST", "/api/embed", self._body(req), model=req.model))


__all__ = ["Client", "HttpFailure", "Transport", "Unreachable", "error_text", "parse_host", "read_line",
           "refused_key", "unreachable"]

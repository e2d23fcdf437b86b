"""Safety at the door: CORS, the DNS-rebinding Host check, an optional bearer token, a body
limit, and the one place where exceptions become HTTP answers.

A kernel-hosted server is reachable by every web page the user opens, so the browser-facing
rules are Ollama's own (``server/routes.go``: gin-contrib/cors with ``OLLAMA_ORIGINS`` and
``allowedHostsMiddleware``): a page from an origin outside the list gets 403, and a server bound
to loopback refuses requests whose ``Host`` is not a local name or address, which is what stops
a DNS-rebinding page from driving it. A bearer token (``OLLAMA_NB_API_KEY``) is off by default,
as Ollama has none; it is there for servers bound beyond loopback.

jupyter-server-proxy forwards the browser's own ``Host`` header (the name it used for Jupyter),
so a Jupyter on this machine passes the Host check as is, while a JupyterHub or Binder name has
to be declared (``OLLAMA_NB_ALLOWED_HOSTS``, or JupyterHub's ``JUPYTERHUB_PUBLIC_URL``). The
proxy's ``X-Forwarded-*`` headers are not a reason to trust a request: a rebinding page is
same-origin with the server and can send any header it likes.

Errors are answered in the shape of the path's API: Anthropic's on ``/v1/messages``, OpenAI's
under the rest of ``/v1/``, Ollama's elsewhere.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import ipaddress
import json
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web

from ..api.anthropic import error_body as anthropic_error_body
from ..api.openai import error_body
from ..base.errors import Forbidden, OllamaNbError, PayloadTooLarge, Unauthorized
from .streaming import error_response, one_line

log = logging.getLogger("ollama_nb.server")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: The address the server listens on, set by ``lifecycle`` (the Host check depends on it).
LISTEN_HOST: web.AppKey[str] = web.AppKey("ollama_nb.listen_host", str)

# gin-contrib/cors as Ollama configures it.
ALLOW_METHODS = "GET,POST,PUT,PATCH,DELETE,HEAD,OPTIONS"
ALLOW_HEADERS = (
    "Authorization,Content-Type,User-Agent,Accept,X-Requested-With,OpenAI-Beta,"
    "x-api-key,anthropic-version,anthropic-beta,"
    "x-stainless-arch,x-stainless-async,x-stainless-custom-poll-interval,"
    "x-stainless-helper-method,x-stainless-lang,x-stainless-os,"
    "x-stainless-package-version,x-stainless-poll-helper,x-stainless-retry-count,"
    "x-stainless-runtime,x-stainless-runtime-version,x-stainless-timeout"
)
MAX_AGE = "43200"  # 12 hours, cors.DefaultConfig
_CORS_ORIGIN: web.RequestKey[str] = web.RequestKey("ollama_nb.cors_origin", str)

# Go's netip.Addr.IsPrivate: RFC 1918 and RFC 4193 only (Python's is_private is much wider).
_PRIVATE_NETS = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")]
_LOCAL_TLDS = (".localhost", ".local", ".internal")


def streams_body(handler: Handler) -> Handler:
    """Mark a handler that reads its body as a stream (blob uploads): no size limit applies."""
    handler.streams_body = True  # type: ignore[attr-defined]
    return handler


# ---- CORS ------------------------------------------------------------------------------------


class OriginPolicy:
    """gin-contrib/cors origin matching: exact entries, ``*`` alone for any origin, and one
    ``*`` per entry as a wildcard (``chrome-extension://*``, ``http://*.example.com``).

    One deliberate tightening: a ``:*`` port wildcard matches digits only, so the default
    ``http://localhost:*`` cannot be stretched to ``http://localhost:1.evil.example``.
    """

    def __init__(self, origins: Iterable[str]) -> None:
        self.allow_all = False
        self.exact: set[str] = set()
        self.patterns: list[tuple[str, str]] = []
        for origin in origins:
            origin = origin.strip()
            if origin == "*":
                self.allow_all = True
            elif "*" in origin:
                prefix, _, suffix = origin.partition("*")
                self.patterns.append((prefix, suffix))
            elif origin:
                self.exact.add(origin)

    def allows(self, origin: str) -> bool:
        if self.allow_all or origin in self.exact:
            return True
        for prefix, suffix in self.patterns:
            if len(origin) < len(prefix) + len(suffix):
                continue
            if not (origin.startswith(prefix) and origin.endswith(suffix)):
                continue
            middle = origin[len(prefix) : len(origin) - len(suffix)]
            if prefix.endswith(":") and not suffix and not middle.isdigit():
                continue
            return True
        return False


def cors_middleware(policy: OriginPolicy) -> Any:
    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if not origin or origin in (f"http://{request.host}", f"https://{request.host}"):
            return await handler(request)  # not a cross-origin request
        if not policy.allows(origin):
            raise Forbidden(f"origin {origin!r} is not allowed; add it to OLLAMA_ORIGINS")
        request[_CORS_ORIGIN] = "*" if policy.allow_all else origin
        if request.method == "OPTIONS":
            return web.Response(status=204, headers={
                "Access-Control-Allow-Methods": ALLOW_METHODS,
                "Access-Control-Allow-Headers": ALLOW_HEADERS,
                "Access-Control-Max-Age": MAX_AGE,
                "Vary": "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
            })
        return await handler(request)

    return cors


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every answer to an allowed cross-origin request, streamed ones
    and error ones included, names the origin."""
    allowed = request.get(_CORS_ORIGIN)
    if allowed:
        response.headers["Access-Control-Allow-Origin"] = allowed
        if "Vary" not in response.headers:
            response.headers["Vary"] = "Origin"


# ---- Host check (DNS rebinding) --------------------------------------------------------------


def _split_host_header(host: str) -> str:
    """Go's ``net.SplitHostPort`` on the Host header, falling back to the whole value."""
    if host.startswith("[") and "]" in host:
        inner, _, rest = host[1:].partition("]")
        return inner if rest.startswith(":") else host
    name, sep, _port = host.rpartition(":")
    return name if sep and ":" not in name else host


@functools.lru_cache(maxsize=1)
def _machine() -> tuple[str, frozenset[str]]:
    """This machine's host name and the addresses it resolves to (Go's ``isLocalIP`` walks the
    interfaces; the addresses of our own host name are the portable approximation)."""
    name = socket.gethostname()
    addresses: set[str] = set()
    try:
        for info in socket.getaddrinfo(name, None):
            addresses.add(str(info[4][0]).split("%", 1)[0])
    except OSError:
        pass
    return name.lower(), frozenset(addresses)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def host_allowed(host_header: str, extra: Iterable[str] = ()) -> bool:
    """May a loopback-bound server answer a request with this ``Host`` header? (Ollama's rule:
    loopback, private or unspecified addresses and this machine's own; ``localhost``, this
    machine's name and ``*.localhost``, ``*.local``, ``*.internal``; plus ``extra``.)"""
    host = _split_host_header(host_header).lower()
    extra = set(extra)
    if "*" in extra or host in extra:
        return True
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        addr = None
    if addr is not None:
        if addr.is_loopback or addr.is_unspecified or any(addr in net for net in _PRIVATE_NETS):
            return True
        return str(addr) in _machine()[1]
    if host in ("", "localhost") or host == _machine()[0]:
        return True
    return host.endswith(_LOCAL_TLDS)


def host_middleware(extra_hosts: Iterable[str]) -> Any:
    extra = frozenset(h.lower() for h in extra_hosts)

    @web.middleware
    async def check_host(request: web.Request, handler: Handler) -> web.StreamResponse:
        listen = request.app.get(LISTEN_HOST)
        if listen is None:  # not started by lifecycle: judge by the address the client reached
            sockname = request.transport.get_extra_info("sockname") if request.transport else None
            listen = str(sockname[0]) if sockname else ""
        if is_loopback(listen) and not host_allowed(request.host, extra):
            raise Forbidden(
                f"host {request.host!r} is not allowed on a server bound to loopback; "
                "add it to OLLAMA_NB_ALLOWED_HOSTS"
            )
        if request.method == "OPTIONS":
            return web.Response(status=204)
        return await handler(request)

    return check_host


# ---- bearer token and body size --------------------------------------------------------------


def auth_middleware(api_key: str) -> Any:
    expected = api_key.encode()

    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":  # the anthropic client sends its key as x-api-key
            token = request.headers.get("x-api-key", "")
        if not hmac.compare_digest(token.strip().encode(), expected):
            raise Unauthorized()
        return await handler(request)

    return require_token


def body_limit_middleware(max_body: int) -> Any:
    @web.middleware
    async def limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        route_handler = request.match_info.handler
        if not getattr(route_handler, "streams_body", False):
            length = request.content_length
            if length is not None and length > max_body:
                raise PayloadTooLarge()
        return await handler(request)

    return limit


# ---- errors ----------------------------------------------------------------------------------


def _is_openai_path(path: str) -> bool:
    return path == "/v1" or path.startswith("/v1/")


def _error_answer(request: web.Request, status: int, message: str, *, plain: bool = False,
                  headers: dict[str, str] | None = None) -> web.Response:
    """One error in the shape the path's clients parse: OpenAI's ``{"error": {"message", "type",
    "param", "code"}}`` under ``/v1/`` (the ``openai`` package reads ``error.message``), else
    Ollama's ``{"error": msg}``, or gin's plain text where Ollama answers with it (``plain``)."""
    if request.path == "/v1/messages":  # the anthropic client reads Anthropic's shape
        return web.json_response(anthropic_error_body(status, message), status=status, headers=headers,
                                 dumps=_compact)
    if _is_openai_path(request.path):
        body = error_body(status, message).to_dict()
        return web.json_response(body, status=status, headers=headers, dumps=_compact)
    if plain:
        return web.Response(status=status, text=message, content_type="text/plain", headers=headers)
    response = error_response(status, message)
    if headers:
        response.headers.update(headers)
    return response


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes the answer its client expects: on native paths Ollama's
    ``{"error": msg}`` with the error's status, gin's plain-text 404/405 bodies and a one-line 500
    for bugs (the traceback goes to the log); under ``/v1/`` the same statuses and texts in
    OpenAI's error shape, so refusals at the door (401, 403, 413, 404/405) parse there too."""
    try:
        return await handler(request)
    except OllamaNbError as exc:
        return _error_answer(request, exc.status, str(exc))
    except web.HTTPException as exc:
        if exc.status == 404:
            return _error_answer(request, 404, "404 page not found", plain=True)
        if exc.status == 405:
            headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            return _error_answer(request, 405, "405 method not allowed", plain=True, headers=headers)
        if exc.status == 413:
            return _error_answer(request, 413, str(PayloadTooLarge()))
        raise
    except (asyncio.CancelledError, ConnectionError):
        raise
    except Exception as exc:
        log.exception("%s %s failed", request.method, request.path)
        return _error_answer(request, 500, one_line(exc))


def setup_security(
    app: web.Application,
    *,
    api_key: str | None,
    origins: Iterable[str],
    max_body: int,
    allowed_hosts: Iterable[str] = (),
) -> None:
    """Install the middlewares, outermost first: errors, CORS, Host, token, body size."""
    app.middlewares.extend([
        error_middleware,
        cors_middleware(OriginPolicy(origins)),
        host_middleware(allowed_hosts),
        *([auth_middleware(api_key)] if api_key else []),
        body_limit_middleware(max_body),
    ])
    app.on_response_prepare.append(add_cors_headers)


__all__ = ["LISTEN_HOST", "OriginPolicy", "host_allowed", "setup_security", "streams_body"]

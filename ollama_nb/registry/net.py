"""HTTP plumbing shared by the registry and Hugging Face clients.

* one way to build an aiohttp session: proxies from ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY``
  (``trust_env``), no transparent decompression (byte ranges must be raw bytes), a socket
  read timeout that doubles as the stall detector;
* redirects followed by hand, so that their number is bounded, only ``http``/``https`` targets
  are accepted (a registry must not point us at ``file:///etc/passwd``) and credentials are
  never forwarded to another host (a CDN gets a presigned URL, not the user's token);
* network failures described the way Go prints them, because Ollama users and scripts know
  ``dial tcp: lookup registry.ollama.ai: no such host`` and ``connection refused``.
"""

from __future__ import annotations

import asyncio
import errno
import platform
from collections.abc import Mapping

import aiohttp
from yarl import URL

from ..base.errors import RegistryError
from ..base.version import __version__
from .settings import PullSettings

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_CREDENTIAL_HEADERS = ("Authorization", "Cookie", "Proxy-Authorization")


def user_agent() -> str:

    return (
        f"ollama_nb/{__version__} ({platform.machine()} {platform.system().lower()}) "
        f"Python/{platform.python_version()} aiohttp/{aiohttp.__version__}"
    )


def new_session(settings: PullSettings) -> aiohttp.ClientSession:
    """A session for one pull or one blob; must be created on the loop that will use it."""
    timeout = aiohttp.ClientTimeout(
        total=None,
        sock_connect=settings.connect_seconds,
        sock_read=settings.stall_seconds,
    )
    return aiohttp.ClientSession(
        timeout=timeout,
        trust_env=True,
        auto_decompress=False,
        headers={"User-Agent": user_agent(), "Accept-Encoding": "identity"},
        connector=aiohttp.TCPConnector(limit=64, resolver=aiohttp.ThreadedResolver()),
    )


class FatalHTTPError(RegistryError):
    """An answer that retrying will not change (404, 401, a bad redirect ...)."""

    def __init__(self, message: str, *, status: int = 0, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.http_status = status


def _same_origin(a: URL, b: URL) -> bool:
    return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)


async def request(
    session: aiohttp.ClientSession,
    method: str,
    url: str | URL,
    *,
    headers: Mapping[str, str] | None = None,
    max_redirects: int,
) -> tuple[aiohttp.ClientResponse, URL]:
    """Send ``method url`` and follow redirects safely; return the final response (not yet
    read: the caller must release it) and the URL that answered it."""
    current = URL(url)
    hdrs = dict(headers or {})
    for _ in range(max_redirects + 1):
        resp = await session.request(method, current, headers=hdrs, allow_redirects=False)
        if resp.status not in REDIRECT_STATUSES:
            return resp, current
        location = resp.headers.get("Location", "")
        resp.release()
        if not location:
            raise FatalHTTPError(f"{resp.status} redirect from {current} has no Location header")
        try:
            target = current.join(URL(location))
        except ValueError:
            raise FatalHTTPError(f"invalid redirect location {location!r}") from None
        if target.scheme not in ("http", "https") or not target.host:
            raise FatalHTTPError(
                f"refusing redirect to {target.scheme or 'a relative'} URL {str(target)[:200]!r}: "
                "only http and https are allowed"
            )
        if not _same_origin(current, target):
            hdrs = {k: v for k, v in hdrs.items() if k.title() not in _CREDENTIAL_HEADERS}
        if resp.status == 303 and method != "HEAD":
            method = "GET"
        current = target
    raise FatalHTTPError(f"stopped after {max_redirects} redirects: maximum redirects exceeded")


async def read_limited(resp: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
    """The whole body, refused (without reading on) when it is larger than ``limit``."""
    declared = resp.content_length
    if declared is not None and declared > limit:
        resp.release()
        raise FatalHTTPError(f"{what} is {declared} bytes, more than the {limit} allowed")
    data = bytearray()
    async for chunk in resp.content.iter_any():
        data += chunk
        if len(data) > limit:
            resp.close()
            raise FatalHTTPError(f"{what} is more than the {limit} bytes allowed")
    return bytes(data)


def describe_network_error(method: str, url: str | URL, exc: BaseException) -> str:
    """``Get "URL": <what went wrong>``, in the words Go's net/http uses."""
    target = URL(url)
    host = target.host or ""
    port = target.port or (443 if target.scheme == "https" else 80)
    detail: str
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        detail = f"dial tcp: lookup {host}: no such host"
    elif isinstance(exc, aiohttp.ClientProxyConnectionError):
        detail = f"proxyconnect tcp: {_os_detail(exc.os_error, exc.host, exc.port)}"
    elif isinstance(exc, aiohttp.ClientSSLError):
        detail = f"tls: {getattr(exc, 'os_error', exc)}"
    elif isinstance(exc, aiohttp.ClientConnectorError):
        detail = _os_detail(exc.os_error, host, port)
    elif isinstance(exc, aiohttp.ConnectionTimeoutError):
        detail = f"dial tcp {host}:{port}: i/o timeout"
    elif isinstance(exc, (aiohttp.SocketTimeoutError, asyncio.TimeoutError, TimeoutError)):
        detail = "part stalled: no data received"
    elif isinstance(exc, aiohttp.ServerDisconnectedError):
        detail = "EOF"
    elif isinstance(exc, aiohttp.ClientPayloadError):
        detail = "unexpected EOF"
    elif isinstance(exc, OSError) and exc.errno == errno.ECONNRESET:
        detail = "read: connection reset by peer"
    else:
        detail = str(exc) or type(exc).__name__
    return f'{method.capitalize()} "{target}": {detail}'


def _os_detail(err: OSError | None, host: str, port: int | None) -> str:
    where = f"dial tcp {host}:{port}"
    if err is None:
        return f"{where}: connect: failed"
    if err.errno == errno.ECONNREFUSED:
        return f"{where}: connect: connection refused"
    if err.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return f"{where}: connect: network is unreachable"
    return f"{where}: connect: {(err.strerror or str(err)).lower()}"


def is_transient(exc: BaseException) -> bool:
    """Worth another try: a dropped or stalled connection, a short body, a timeout."""
    return isinstance(
        exc,
        (
            aiohttp.ClientPayloadError,
            aiohttp.ServerDisconnectedError,
            aiohttp.ServerTimeoutError,
            aiohttp.ClientOSError,
            asyncio.TimeoutError,
            TimeoutError,
            ConnectionError,
        ),
    ) and not isinstance(exc, (aiohttp.ClientConnectorDNSError, aiohttp.ClientSSLError))

"""Running the server: its own asyncio loop in a daemon thread of the process (the kernel).

A thread of its own, not the kernel's loop, because the kernel's loop stops while a cell runs
synchronously, and a server that stops answering whenever a cell computes is no server. The
socket is bound in the caller's thread, so "port in use" is an immediate error there, and the
address becomes ``OLLAMA_HOST`` for every client in the same process. One server per process
unless another address (or manager) is asked for; all of them stop at interpreter exit.
"""

from __future__ import annotations

import asyncio
import atexit
import errno
import logging
import os
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from ..base import config
from ..base.errors import OllamaNbError

if TYPE_CHECKING:
    from typing_extensions import Self

    from ..manager.core import ModelManager
    from ..observe.metrics import MetricsRecorder

log = logging.getLogger("ollama_nb.server")

#: Seconds a stop waits for requests in flight before cancelling them (and their generation).
SHUTDOWN_TIMEOUT = 3.0
#: Threads for blocking work of the HTTP side: one per streaming request plus short disk jobs.
HTTP_THREADS = 64

_lock = threading.Lock()
_servers: list[ServerHandle] = []
_atexit_registered = False


def _connectable(host: str) -> str:
    """Where a client on this machine connects: unspecified binds become loopback."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _bind(host: str, port: int, *, fallback_to_free: bool) -> socket.socket:
    """A listening socket on ``host:port``; with ``fallback_to_free`` a busy port is replaced by
    one the OS picks. Errors read like Go's (``listen tcp 127.0.0.1:11434: bind: ...``)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise OllamaNbError(f"listen tcp {_join(host, port)}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        if os.name != "nt":  # POSIX: reuse a TIME_WAIT port; an active listener still refuses
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if not (fallback_to_free and exc.errno == errno.EADDRINUSE):
                raise
            sock.bind((address[0], 0, *address[2:]))
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        reason = (exc.strerror or str(exc)).lower()
        raise OllamaNbError(f"listen tcp {_join(host, port)}: bind: {reason}",
                            hint="another server uses this port; set OLLAMA_HOST to another one") from None
    return sock


class ServerHandle:
    """A running server: ``url``, ``host``, ``port``, ``running``, ``metrics`` and ``stop()``.

    Usable as a context manager (``with serve(m) as server: ...`` stops it on exit).
    """

    def __init__(self, manager: ModelManager, sock: socket.socket, *, api_key: str | None) -> None:
        self.manager = manager
        self._sock = sock
        self._api_key = api_key
        sockname = sock.getsockname()
        self.host: str = str(sockname[0])
        self.port: int = int(sockname[1])
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        self._started = threading.Event()
        self._stopped = threading.Event()
        self._error: BaseException | None = None
        self._metrics: MetricsRecorder | None = None
        self._env_value: str | None = None
        self._env_previous: str | None = None
        self._thread = threading.Thread(target=self._run, name=f"ollama_nb-server:{self.port}", daemon=True)

    # ---- public face -------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """``host:port`` a local client connects to (the ``OLLAMA_HOST`` form)."""
        return _join(_connectable(self.host), self.port)

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def metrics(self) -> MetricsRecorder | None:
        """The recorder behind ``/metrics`` and ``/dashboard``: every generate/chat/embed request
        of this server's manager (native API, OpenAI API, and the notebook's own calls) since
        the server started. ``metrics.to_dataframe()`` gives the rows that the dashboard plots;
        :mod:`ollama_nb.plots` draws them. None only if the metrics routes are not installed."""
        return self._metrics

    @property
    def running(self) -> bool:
        return self._started.is_set() and not self._stopped.is_set() and self._error is None

    def stop(self, timeout: float = SHUTDOWN_TIMEOUT + 5) -> None:
        """Stop accepting, let requests in flight finish for a moment, cancel the rest, and give
        back ``OLLAMA_HOST`` as it was. Idempotent; the manager (and its models) stay."""
        loop, event = self._loop, self._stop_requested
        if loop is not None and event is not None and not self._stopped.is_set():
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # the loop already closed
                pass
            if threading.current_thread() is not self._thread:
                self._thread.join(timeout)
        with _lock:
            if self in _servers:
                _servers.remove(self)
            self._restore_env()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<ollama_nb server {self.url} ({state})>"

    # ---- the server thread -------------------------------------------------------------------

    def _start(self) -> None:
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error

    def _run(self) -> None:
        from aiohttp import web

        from .app import make_app
        from .keys import METRICS
        from .security import LISTEN_HOST

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        executor = ThreadPoolExecutor(max_workers=HTTP_THREADS, thread_name_prefix="ollama_nb-http")
        loop.set_default_executor(executor)
        runner: web.AppRunner | None = None
        try:
            app = make_app(self.manager, api_key=self._api_key)
            app[LISTEN_HOST] = self.host
            self._metrics = app.get(METRICS)
            debug = config.debug_level() > 0
            runner = web.AppRunner(
                app,
                handle_signals=False,
                handler_cancellation=True,  # a client that hangs up cancels its handler at once
                shutdown_timeout=SHUTDOWN_TIMEOUT,
                access_log=logging.getLogger("ollama_nb.server.access") if debug else None,
            )
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.SockSite(runner, self._sock).start())
            self._stop_requested = asyncio.Event()
            self._loop = loop
        except BaseException as exc:  # noqa: BLE001 - re-raised in the thread that called serve()
            self._error = exc
            self._sock.close()
            if runner is not None:
                loop.run_until_complete(runner.cleanup())
            loop.close()
            executor.shutdown(wait=False)
            self._stopped.set()
            self._started.set()
            return
        self._started.set()
        try:
            loop.run_until_complete(self._stop_requested.wait())
        finally:
            try:
                loop.run_until_complete(runner.cleanup())
                loop.run_until_complete(loop.shutdown_asyncgens())
            except Exception:
                log.exception("server shutdown failed")
            finally:
                executor.shutdown(wait=False, cancel_futures=True)
                loop.close()
                self._sock.close()
                self._stopped.set()

    def _publish_env(self) -> None:
        """Point same-process clients (``ollama.Client()``, openai via OLLAMA_HOST) at us."""
        self._env_previous = os.environ.get("OLLAMA_HOST")
        self._env_value = self.address
        os.environ["OLLAMA_HOST"] = self._env_value

    def _restore_env(self) -> None:
        if self._env_value is None or os.environ.get("OLLAMA_HOST") != self._env_value:
            return  # someone (another server, the user) changed it since: leave theirs
        if self._env_previous is None:
            os.environ.pop("OLLAMA_HOST", None)
        else:
            os.environ["OLLAMA_HOST"] = self._env_previous
        self._env_value = None


def _stop_all() -> None:
    for server in _servers[:]:  # stop() removes it from the list
        try:
            server.stop(timeout=SHUTDOWN_TIMEOUT + 2)
        except Exception:  # at exit, one failing server must not keep the others running
            log.exception("stopping %r at exit failed", server)


def running_servers() -> list[ServerHandle]:
    with _lock:
        return [s for s in _servers if s.running]


def serve(
    manager: ModelManager | None = None,
    host: str | None = None,
    port: int | None = None,
    *,
    api_key: str | None = None,
) -> ServerHandle:
    """Start Ollama's API in this process, in a background thread, and return its handle.

    Address: ``host``/``port`` when given (port 0 = any free port); else ``OLLAMA_HOST`` when
    set (exactly that address, as ``ollama serve`` would); else 127.0.0.1 on 11434, or on a free
    port when 11434 is taken (a real Ollama may be running). Calling it again returns the running
    server unless another address or another manager is asked for. The server stops with
    ``.stop()`` or at interpreter exit.
    """
    global _atexit_registered
    from ..manager.default import default_manager

    manager = manager or default_manager()
    setting = config.host()
    with _lock:
        for server in _servers:
            if not server.running or server.manager is not manager:
                continue
            if host is not None and host not in (server.host, _connectable(server.host)):
                continue
            if port not in (None, 0, server.port):
                continue
            return server
        bind_host = host if host is not None else setting.host
        if port is not None:
            sock = _bind(bind_host, port, fallback_to_free=False)
        elif setting.explicit:
            sock = _bind(bind_host, setting.port, fallback_to_free=False)
        else:
            sock = _bind(bind_host, config.DEFAULT_PORT, fallback_to_free=True)
        server = ServerHandle(manager, sock, api_key=api_key)
        server._start()
        server._publish_env()
        _servers.append(server)
        if not _atexit_registered:
            atexit.register(_stop_all)
            _atexit_registered = True
    log.debug("listening on %s", server.address)
    return server


__all__ = ["ServerHandle", "running_servers", "serve"]

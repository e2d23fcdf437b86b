"""Resumable, parallel, verified blob downloads into the store (Ollama's ``server/download.go``,
rebuilt on aiohttp).

A blob of ``size`` bytes is split into parts (:meth:`PullSettings.part_size_for`) that are
fetched with concurrent ``Range`` requests and written at their offsets into a sparse file next
to the blob, with Ollama's own names and resume format::

    blobs/sha256-<hex>-partial        the bytes, at their final offsets
    blobs/sha256-<hex>-partial-<N>    {"N":0,"Offset":0,"Size":...,"Completed":...}

A part's ``Completed`` is written only after its bytes are, so after a crash, a kill or a lost
connection the next pull (in this process or another) continues every part where its state
says, instead of starting over (a partial that real Ollama left behind is resumed too). A part
that gets no byte for ``stall_seconds`` or loses its connection is retried with exponential
back-off; ``max_retries`` attempts in a row without a new byte end the pull with Ollama's
``max retries exceeded: ...``.

Nothing unverified ever carries a real blob name: :func:`commit_blobs` hashes the finished
partial file and only then renames it to ``sha256-<hex>``; a mismatch deletes the partial and
its part files and raises :class:`~ollama_nb.base.errors.PullDigestMismatch`.

Two pulls in one process that need the same blob share one download (Ollama's
``blobDownloadManager``): the second waits on the first one's task and reports its progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import logging
import os
import random
import re
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from yarl import URL

from ..api.types import ProgressResponse
from ..base.errors import (
    OllamaNbError,
    PullDigestMismatch,
    RegistryError,
    RegistryUnauthorized,
    StorageError,
)
from ..base.refs import parse_digest
from ..models.store import Store
from . import net
from .settings import PullSettings

log = logging.getLogger(__name__)

Emit = Callable[[ProgressResponse], None]
_CHUNK = 1 << 20
_HAS_PWRITE = hasattr(os, "pwrite")
_O_BINARY = getattr(os, "O_BINARY", 0)  # Windows would otherwise translate newlines
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


@dataclass(frozen=True)
class BlobSource:
    """Where a blob comes from: ``url`` answers GET with Range (redirects allowed), and
    ``headers`` (e.g. a Hugging Face token) go to that URL's host only."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    unauthorized: str | None = None  # the message for a 401/403 (what credential to set)


class _Retry(Exception):
    """One attempt failed in a way another attempt may not (a 5xx, a short body)."""


class _RangesUnsupported(Exception):
    """The server answered a ranged request with the whole blob (200): fall back to one part."""


@dataclass
class _Part:
    n: int
    offset: int
    size: int
    completed: int = 0

    @property
    def done(self) -> bool:
        return self.completed >= self.size

    def to_json(self) -> bytes:
        # Ollama's jsonBlobDownloadPart, as Go's json.Encoder writes it.
        state = {"N": self.n, "Offset": self.offset, "Size": self.size, "Completed": self.completed}
        return (json.dumps(state, separators=(",", ":")) + "\n").encode()


def partial_path(store: Store, digest: str) -> Path:
    """``blobs/sha256-<hex>-partial``: the in-progress bytes of one blob."""
    return Path(f"{store.blob_path(digest)}-partial")


def partial_files(store: Store, digest: str) -> list[Path]:
    """The partial data file and every part state file of ``digest`` that exist."""
    data = partial_path(store, digest)
    found = [data] if data.exists() else []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(data.parent):
            rest = entry.name[len(data.name) + 1 :]
            if entry.name.startswith(data.name + "-") and (rest.isdigit() or rest.endswith(".tmp")):
                found.append(Path(entry.path))
    return found


def remove_partial(store: Store, digest: str) -> None:
    for path in partial_files(store, digest):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


# -- one download ------------------------------------------------------------------------------


class _Download:
    """The download of one blob into its ``-partial`` file, shared by every pull waiting on it."""

    def __init__(
        self, store: Store, digest: str, size: int, source: BlobSource, settings: PullSettings
    ) -> None:
        self.store = store
        self.digest = digest
        self.total = size
        self.source = source
        self.settings = settings
        self.origin = URL(source.url)
        self.direct: URL | None = None  # where the registry's redirects led (a CDN URL)
        self.partial = partial_path(store, digest)
        self.parts: list[_Part] = []
        self.completed = 0
        self.waiters = 0
        self.task: asyncio.Task[None] | None = None
        self.discard = False  # set when the registry's answers make the partial worthless
        self._saved_at: dict[int, float] = {}

    # -- part state on disk --

    def _state_path(self, part: _Part) -> Path:
        return Path(f"{self.partial}-{part.n}")

    def _save(self, part: _Part) -> None:
        path = self._state_path(part)
        temp = Path(f"{path}.tmp")
        try:
            temp.write_bytes(part.to_json())
            os.replace(temp, path)
        except OSError as exc:
            raise _storage_error(exc, self.store) from None
        self._saved_at[part.n] = time.monotonic()

    def _load(self) -> list[_Part] | None:
        """The parts of an earlier run, if they describe exactly this blob; else None."""
        states = [p for p in partial_files(self.store, self.digest) if p.name.split("-")[-1].isdigit()]
        if not states:
            return None
        try:
            if self.partial.stat().st_size != self.total:
                return None
            parts = []
            for path in states:
                raw = json.loads(path.read_bytes())
                part = _Part(int(raw["N"]), int(raw["Offset"]), int(raw["Size"]), int(raw["Completed"]))
                if part.n != int(path.name.split("-")[-1]) or not 0 <= part.completed <= part.size:
                    return None
                parts.append(part)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        parts.sort(key=lambda p: p.offset)
        offset = 0
        for part in parts:
            if part.offset != offset or part.size <= 0:
                return None
            offset += part.size
        return parts if offset == self.total else None

    def _plan(self, part_size: int) -> list[_Part]:
        parts, offset = [], 0
        while offset < self.total:
            size = min(part_size, self.total - offset)
            parts.append(_Part(len(parts), offset, size))
            offset += size
        return parts

    def _start_fresh(self, part_size: int) -> None:
        remove_partial(self.store, self.digest)
        try:
            self.partial.parent.mkdir(parents=True, exist_ok=True)
            if shutil.disk_usage(self.partial.parent).free < self.total:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            fd = os.open(self.partial, os.O_RDWR | os.O_CREAT | os.O_TRUNC | _O_BINARY, 0o644)
            try:
                os.ftruncate(fd, self.total)  # sparse: disk blocks are taken as bytes arrive
            finally:
                os.close(fd)
        except OSError as exc:
            raise _storage_error(exc, self.store) from None
        self.parts = self._plan(part_size)
        for part in self.parts:
            self._save(part)

    # -- the run --

    async def run(self) -> None:
        async with _lock_for(self.partial):
            if self.store.has_blob(self.digest):  # finished by another pull meanwhile
                self.completed = self.total
                return
            loaded = self._load()
            if loaded is None:
                self._start_fresh(self.settings.part_size_for(self.total))
            else:
                self.parts = loaded
                log.info("resuming %s from %d bytes", self.digest[7:19], sum(p.completed for p in loaded))
            self.completed = sum(p.completed for p in self.parts)
            if self.completed < self.total:
                need = self.total - self.completed
                if shutil.disk_usage(self.partial.parent).free < need:
                    raise _storage_error(OSError(errno.ENOSPC, "no space"), self.store)
            log.info("downloading %s in %d part(s)", self.digest[7:19], len(self.parts))
            try:
                try:
                    await self._download_parts()
                except _RangesUnsupported:
                    log.info("%s: server ignores Range, downloading in one stream", self.digest[7:19])
                    self._start_fresh(max(self.total, 1))
                    self.completed = 0
                    await self._download_parts()
            except BaseException:
                # Keep what can be resumed; drop a partial with nothing in it, or one whose
                # bytes came from a registry that lied about the blob.
                if self.discard or self.completed == 0:
                    remove_partial(self.store, self.digest)
                raise

    async def _download_parts(self) -> None:
        pending = [p for p in self.parts if not p.done]
        if not pending:
            return
        try:
            fd = os.open(self.partial, os.O_RDWR | _O_BINARY)
        except OSError as exc:
            raise _storage_error(exc, self.store) from None
        gate = asyncio.Semaphore(self.settings.concurrency)
        try:
            async with net.new_session(self.settings) as session:
                tasks = [asyncio.create_task(self._part_worker(session, fd, p, gate)) for p in pending]
                try:
                    await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
                    for task in tasks:
                        if task.done() and not task.cancelled() and task.exception() is not None:
                            raise task.exception()  # type: ignore[misc]
                finally:
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            os.close(fd)

    async def _part_worker(
        self, session: aiohttp.ClientSession, fd: int, part: _Part, gate: asyncio.Semaphore
    ) -> None:
        async with gate:
            failures = 0
            while not part.done:
                before = part.completed
                try:
                    await self._fetch(session, fd, part)
                    if not part.done:
                        raise _Retry("unexpected EOF")
                except (asyncio.CancelledError, OllamaNbError, _RangesUnsupported):
                    raise
                except Exception as exc:
                    if not (isinstance(exc, _Retry) or net.is_transient(exc)):
                        raise
                    why = str(exc) if isinstance(exc, _Retry) else net.describe_network_error(
                        "GET", self.direct or self.origin, exc
                    )
                    failures = 1 if part.completed > before else failures + 1
                    if failures >= self.settings.max_retries:
                        raise RegistryError(
                            f"max retries exceeded: {why}",
                            hint="the connection to the registry keeps failing; "
                            "run the pull again later and it resumes where it stopped",
                        ) from None
                    delay = self.settings.backoff(failures) * random.uniform(0.5, 1.5)
                    log.info("%s part %d attempt %d failed: %s, retrying in %.2fs",
                             self.digest[7:19], part.n, failures, why, delay)
                    await asyncio.sleep(delay)
                finally:
                    self._save(part)

    async def _fetch(self, session: aiohttp.ClientSession, fd: int, part: _Part) -> None:
        start, end = part.offset + part.completed, part.offset + part.size - 1
        url = self.direct or self.origin
        headers = dict(self.source.headers) if url == self.origin else {}
        headers["Range"] = f"bytes={start}-{end}"
        resp, final = await net.request(
            session, "GET", url, headers=headers, max_redirects=self.settings.max_redirects
        )
        async with resp:
            self._check_status(resp, url)
            if resp.status == 200:  # the whole blob, whatever we asked for
                if len(self.parts) > 1:
                    raise _RangesUnsupported()
                self.completed -= part.completed
                part.completed, start = 0, 0
                self._check_length(resp.content_length, self.total)
            else:
                self._check_range(resp.headers.get("Content-Range", ""), start, end)
                self._check_length(resp.content_length, end - start + 1, ranged=True)
            if final != self.origin:
                self.direct = final
            pos = start
            async for chunk in resp.content.iter_chunked(_CHUNK):
                if pos + len(chunk) > end + 1:
                    self.discard = True
                    raise RegistryError(
                        f"registry sent more than the {end - start + 1} bytes asked for "
                        f"(sha256:{self.digest[7:19]}, bytes {start}-{end})"
                    )
                _pwrite(fd, chunk, pos, self.store)
                pos += len(chunk)
                part.completed += len(chunk)
                self.completed += len(chunk)
                if time.monotonic() - self._saved_at.get(part.n, 0.0) >= self.settings.state_interval:
                    self._save(part)

    def _check_status(self, resp: aiohttp.ClientResponse, url: URL) -> None:
        status = resp.status
        if status in (200, 206):
            return
        if status in net.TRANSIENT_STATUSES:
            raise _Retry(f"{status}: {resp.reason or 'server error'}")
        if url != self.origin and status in (401, 403, 404, 410):
            self.direct = None  # a presigned CDN URL that expired: ask the registry again
            raise _Retry(f"{status} from {url.host}")
        if status in (401, 403):
            raise RegistryUnauthorized(
                self.source.unauthorized or f"{status}: unauthorized: access denied",
                hint="the registry needs credentials for this model",
            )
        if status == 404:
            raise RegistryError(
                f"pulling {self.digest[7:19]}: file does not exist",
                hint=f"the registry has no blob {self.digest}",
            )
        if status == 416:
            raise RegistryError(
                f"registry refused the byte range of sha256:{self.digest[7:19]} (416): "
                f"it does not hold the {self.total} bytes the manifest promises"
            )
        raise RegistryError(f"pulling {self.digest[7:19]}: {status}: {resp.reason or 'error'}")

    def _check_range(self, header: str, start: int, end: int) -> None:
        m = _CONTENT_RANGE.fullmatch(header.strip())
        if m is None or (int(m.group(1)), int(m.group(2))) != (start, end):
            self.discard = True
            raise RegistryError(
                f"registry answered bytes {start}-{end} of sha256:{self.digest[7:19]} "
                f"with Content-Range {header!r}"
            )
        if m.group(3) != "*":
            self._check_length(int(m.group(3)), self.total)

    def _check_length(self, reported: int | None, expected: int, *, ranged: bool = False) -> None:
        if reported is not None and reported != expected:
            self.discard = True
            what = "a range of" if ranged else "blob sha256:" + self.digest[7:19] + " of"
            raise RegistryError(
                f"registry reports {reported} bytes for {what} {expected} bytes "
                "(the manifest and the Content-Length disagree)",
                hint="the registry or a proxy on the way is misbehaving; nothing was saved",
            )


# -- the shared-download registry (touched only on the background loop) ------------------------

_ACTIVE: dict[str, _Download] = {}
_LOCKS: dict[str, asyncio.Lock] = {}


def _lock_for(path: Path) -> asyncio.Lock:
    """Serialises download and commit of one blob file (its partial must not be renamed while
    another task is reading its part states)."""
    return _LOCKS.setdefault(str(path), asyncio.Lock())


async def fetch_blob(
    store: Store,
    digest: str,
    size: int,
    source: BlobSource,
    emit: Emit,
    settings: PullSettings,
) -> bool:
    """Bring ``digest`` into its ``-partial`` file, reporting ``pulling <hex>`` progress.

    Returns False when the blob is already in the store (one event with completed = total, no
    download, as Ollama's cache hit), True when it was downloaded and still has to go through
    :func:`commit_blobs`.
    """
    digest = parse_digest(digest)
    label = f"pulling {digest[7:19]}"
    path = store.blob_path(digest)
    if path.is_file():
        have = path.stat().st_size
        emit(ProgressResponse(status=label, digest=digest, total=have, completed=have))
        return False
    key = str(path)
    dl = _ACTIVE.get(key)
    if dl is None or dl.task is None or dl.task.done():
        dl = _Download(store, digest, size, source, settings)
        dl.task = asyncio.create_task(dl.run(), name=f"download {digest[7:19]}")
        _ACTIVE[key] = dl
        dl.task.add_done_callback(lambda _t, dl=dl: _ACTIVE.pop(key) if _ACTIVE.get(key) is dl else None)
    task = dl.task
    dl.waiters += 1
    try:
        last = -1
        while True:
            done, _ = await asyncio.wait({task}, timeout=settings.progress_interval)
            failed = bool(done) and (task.cancelled() or task.exception() is not None)
            if dl.completed != last and not failed:
                last = dl.completed
                emit(ProgressResponse(status=label, digest=digest, total=dl.total, completed=last))
            if done:
                break
        task.result()
    finally:
        dl.waiters -= 1
        if dl.waiters == 0 and not task.done():
            task.cancel()  # nobody wants it any more; the part states keep what we have
            with contextlib.suppress(BaseException):
                await asyncio.shield(asyncio.gather(task, return_exceptions=True))
    return True


async def commit_blobs(store: Store, digests: Iterable[str]) -> None:
    """Verify each downloaded blob and move it into the store; a bad one is deleted.

    Every good blob is committed even when another is bad (it is verified, and a retry then
    skips it); the first mismatch is raised afterwards.
    """
    loop = asyncio.get_running_loop()
    failure: PullDigestMismatch | None = None
    for digest in dict.fromkeys(digests):
        async with _lock_for(partial_path(store, digest)):
            if store.has_blob(digest):
                await loop.run_in_executor(None, remove_partial, store, digest)
                continue
            try:
                await loop.run_in_executor(None, _verify_and_move, store, digest)
            except PullDigestMismatch as exc:
                failure = failure or exc
    if failure is not None:
        raise failure


def _verify_and_move(store: Store, digest: str) -> None:
    partial = partial_path(store, digest)
    h = hashlib.sha256()
    try:
        with open(partial, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
            os.fsync(f.fileno())
    except FileNotFoundError:
        raise RegistryError(f"download of {digest} vanished before it was verified") from None
    got = "sha256:" + h.hexdigest()
    if got != digest:
        remove_partial(store, digest)
        raise PullDigestMismatch(digest, got)
    final = store.blob_path(digest)
    try:
        os.chmod(partial, 0o644)
        os.replace(partial, final)
    except OSError as exc:
        raise _storage_error(exc, store) from None
    remove_partial(store, digest)  # the part state files
    with contextlib.suppress(OSError):
        fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _pwrite(fd: int, data: bytes, offset: int, store: Store) -> None:
    """Write at an offset. Only the download loop's thread writes, so where ``os.pwrite`` is
    missing (Windows) a seek + write pair cannot interleave with another part's."""
    view = memoryview(data)
    try:
        while view:
            if _HAS_PWRITE:
                n = os.pwrite(fd, view, offset)
            else:  # pragma: no cover - Windows
                os.lseek(fd, offset, os.SEEK_SET)
                n = os.write(fd, view)
            view, offset = view[n:], offset + n
    except OSError as exc:
        raise _storage_error(exc, store) from None


def _storage_error(exc: OSError, store: Store) -> StorageError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        msg = ("no space left on device while downloading a blob: "
               "free up disk space or set OLLAMA_MODELS to a larger disk")
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        msg = f"permission denied while downloading a blob: make {store.root} writable or set OLLAMA_MODELS"
    else:
        msg = f"could not finish downloading a blob: {exc.strerror or exc}; check {store.root}"
    return StorageError(msg, hint=f"models are stored in {store.root}")

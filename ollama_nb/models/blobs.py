"""Content-addressed blob I/O: the ``blobs/`` half of Ollama's model store.

::

    $OLLAMA_MODELS/blobs/sha256-<hex>                           content-addressed blobs

This module exists so that writing, importing, hard-linking, reading and re-hashing blobs lives
apart from the manifests that name them (:mod:`ollama_nb.models.store`): it knows digests and
files, never models. Every blob goes to a ``sha256-*-partial`` temp file next to its destination,
is hashed while written, fsynced and moved into place with ``os.replace``, so a crash, a full
disk or a bad download never leaves a half written blob under a real name; a blob whose hash is
not the one promised is refused. :class:`~ollama_nb.models.store.Store` builds on
:class:`BlobStore` and adds manifests, copy/delete and garbage collection.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..base import config
from ..base.errors import BlobNotFound, DigestMismatch, StorageError
from ..base.refs import blob_filename, parse_digest

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["CHUNK_SIZE", "BlobInfo", "BlobStore", "BlobWriter"]

log = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
_ACTIVE_TEMPS: set[str] = set()  # temp files being written in this process; prune leaves them


def _storage_error(exc: OSError, action: str, root: Path) -> StorageError:
    """One line that says what failed and what to do about it."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        msg = (
            f"no space left on device while {action}: "
            "free up disk space or set OLLAMA_MODELS to a larger disk"
        )
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        msg = f"permission denied while {action}: make {root} writable or set OLLAMA_MODELS"
    else:
        msg = f"could not finish {action}: {exc.strerror or exc}; check {root}"
    return StorageError(msg, hint=f"models are stored in {root}")


def _fsync_dir(path: Path) -> None:
    """Make a rename durable (best effort: not every filesystem can fsync a directory)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    with contextlib.suppress(OSError):
        os.fsync(fd)
    os.close(fd)


def _unlink_quietly(path: str | Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not remove %s: %s", path, exc)


@dataclass(frozen=True)
class BlobInfo:
    """A blob in the store: its digest, its size, and whether this call created it."""

    digest: str
    size: int
    created: bool = True


class BlobWriter:
    """Streams bytes into ``blobs/`` via a ``sha256-*-partial`` temp file.

    Bytes are hashed as they are written; :meth:`commit` fsyncs, checks the digest and renames
    the temp file to ``sha256-<hex>``; :meth:`abort` (or leaving the ``with`` block without
    committing) removes it. Any OSError removes the temp file and becomes a :class:`StorageError`.
    """

    def __init__(self, store: BlobStore, expected_digest: str | None = None, size_hint: int = 0):
        self.store = store
        self.expected = parse_digest(expected_digest) if expected_digest else None
        self.size = 0
        self._hash = hashlib.sha256()
        self._fd: int | None = None
        blobs = store.blobs_dir
        try:
            blobs.mkdir(parents=True, exist_ok=True)
            if size_hint and shutil.disk_usage(blobs).free < size_hint:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self._fd, self.temp_path = tempfile.mkstemp("-partial", "sha256-", blobs)
        except OSError as exc:
            raise _storage_error(exc, "creating a blob", store.root) from None
        _ACTIVE_TEMPS.add(self.temp_path)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._fd is None:
            raise ValueError("blob writer is closed")
        view = memoryview(data).cast("B")
        self._hash.update(view)
        self.size += len(view)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            self.abort()
            raise _storage_error(exc, "writing a blob", self.store.root) from None

    def commit(self) -> BlobInfo:
        """Verify and move into place; a wrong hash raises :class:`DigestMismatch`."""
        if self._fd is None:
            raise ValueError("blob writer is closed")
        digest = "sha256:" + self._hash.hexdigest()
        try:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
            if self.expected is not None and digest != self.expected:
                raise DigestMismatch(self.expected, digest)
            final = self.store.blob_path(digest)
            if final.is_file():  # someone else finished it first: keep theirs
                self.abort()
                return BlobInfo(digest, self.size, created=False)
            os.chmod(self.temp_path, 0o644)
            os.replace(self.temp_path, final)
        except OSError as exc:
            self.abort()
            raise _storage_error(exc, "saving a blob", self.store.root) from None
        except BaseException:
            self.abort()
            raise
        _ACTIVE_TEMPS.discard(self.temp_path)
        _fsync_dir(final.parent)
        return BlobInfo(digest, self.size, created=True)

    def abort(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        _unlink_quietly(self.temp_path)
        _ACTIVE_TEMPS.discard(self.temp_path)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._fd is not None:  # not committed: an error, or the caller gave up
            self.abort()


class BlobStore:
    """The ``blobs/`` directory under ``root`` (``$OLLAMA_MODELS``, read on each use, unless given).

    Content-addressed storage only: blobs go in by digest and come out by digest; which
    blobs a model uses is :class:`~ollama_nb.models.store.Store`'s business."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self._root = Path(root).expanduser() if root is not None else None

    @property
    def root(self) -> Path:
        return self._root if self._root is not None else config.models_dir()

    @property
    def blobs_dir(self) -> Path:
        return self.root / "blobs"

    # -- blobs --------------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        """``blobs/sha256-<hex>``; the digest is validated first, so the path stays in blobs/."""
        return self.blobs_dir / blob_filename(digest)

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def blob_writer(self, expected_digest: str | None = None, size_hint: int = 0) -> BlobWriter:
        """A :class:`BlobWriter` for callers that receive bytes piecemeal (uploads, downloads)."""
        return BlobWriter(self, expected_digest, size_hint)

    def write_blob_bytes(self, data: bytes) -> BlobInfo:
        """Store small content (a template, params JSON, a config blob) by its digest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if self.has_blob(digest):
            return BlobInfo(digest, len(data), created=False)
        with self.blob_writer(digest, len(data)) as w:
            w.write(data)
            return w.commit()

    def write_blob_stream(self, chunks: Iterable[bytes], expected_digest: str) -> BlobInfo:
        """Store a stream that must hash to ``expected_digest`` (``POST /api/blobs/:digest``).

        An existing blob is not rewritten and ``chunks`` is not consumed (``created=False``, as
        Ollama answers 200 instead of 201); a mismatch raises :class:`DigestMismatch` and keeps
        nothing.
        """
        digest = parse_digest(expected_digest)
        path = self.blob_path(digest)
        if path.is_file():
            return BlobInfo(digest, path.stat().st_size, created=False)
        with self.blob_writer(digest) as w:
            for chunk in chunks:
                w.write(chunk)
            return w.commit()

    def import_file(
        self,
        path: str | os.PathLike[str],
        *,
        expected_digest: str | None = None,
        link: bool = False,
    ) -> BlobInfo:
        """Put a local file (a GGUF) into ``blobs/``.

        Without ``expected_digest`` the file is hashed first (a read), so a model that is already
        in the store costs no copy and no disk space. With ``link=True`` the blob becomes a hard
        link to the file when both are on one filesystem (no copy; the file must then not be
        modified in place); otherwise the bytes are copied and verified while copying.
        """
        src = Path(path)
        try:  # OSErrors of the store itself arrive as StorageError; these are about ``src``
            size = src.stat().st_size
            digest = parse_digest(expected_digest) if expected_digest else None
            if digest is not None and self.has_blob(digest):
                return BlobInfo(digest, self.blob_path(digest).stat().st_size, created=False)
            if digest is None or link:
                actual = _hash_file(src)
                if digest is not None and actual != digest:
                    raise DigestMismatch(digest, actual)
                digest = actual
                if self.has_blob(digest):
                    return BlobInfo(digest, size, created=False)
            if link and self._link_blob(src, digest):
                return BlobInfo(digest, size, created=True)
            with open(src, "rb") as f, self.blob_writer(digest, size) as w:
                while chunk := f.read(CHUNK_SIZE):
                    w.write(chunk)
                return w.commit()
        except OSError as exc:
            raise StorageError(f"cannot read {src}: {exc.strerror or exc}") from None

    def _link_blob(self, src: Path, digest: str) -> bool:
        """Hard-link ``src`` as the blob; False when the filesystem will not (then we copy)."""
        try:
            self.blobs_dir.mkdir(parents=True, exist_ok=True)
            temp = self.blobs_dir / f"{blob_filename(digest)}-link-{os.getpid()}-partial"
            _unlink_quietly(temp)
            os.link(src, temp)
        except OSError:
            return False
        try:
            os.replace(temp, self.blob_path(digest))
        except OSError as exc:
            _unlink_quietly(temp)
            raise _storage_error(exc, "linking a blob", self.root) from None
        return True

    def verify_blob(self, digest: str, *, remove_bad: bool = False) -> int:
        """Re-hash a blob; return its size, or raise :class:`DigestMismatch` (removing the blob if
        ``remove_bad``, as Ollama does after a bad download) or :class:`BlobNotFound`."""
        digest = parse_digest(digest)
        path = self.blob_path(digest)
        if not path.is_file():
            raise BlobNotFound(digest)
        actual = _hash_file(path)
        if actual != digest:
            if remove_bad:
                _unlink_quietly(path)
            raise DigestMismatch(digest, actual)
        return path.stat().st_size

    def read_blob_bytes(self, digest: str, *, max_bytes: int = 64 << 20) -> bytes:
        path = self.blob_path(digest)
        try:
            if path.stat().st_size > max_bytes:
                raise ValueError(f"blob {digest} is larger than {max_bytes} bytes")
            return path.read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(digest) from None


def _hash_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            h.update(chunk)
    return "sha256:" + h.hexdigest()

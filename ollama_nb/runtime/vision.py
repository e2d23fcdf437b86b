"""Images into a prompt, through llama.cpp's multimodal library (``libmtmd``, bound by
llama-cpp-python as ``llama_cpp.mtmd_cpp``), as llama-server (and so Ollama) does it.

A model with a vision projector (an ``mmproj`` GGUF: a CLIP-style vision tower and the projection
into the text model's embedding space) gets a :class:`Projector`. A prompt with images is the
rendered text with one media marker per image; ``mtmd_tokenize`` cuts it into text chunks and
image chunks, and each image chunk is encoded by the vision tower and decoded into the sequence
as embeddings, occupying as many KV positions as the image has tokens.

The engine keeps a list of token ids per sequence to find the prefix a new prompt shares with
what is cached. An image's positions are written into that list as negative ids derived from
the image's bytes (:func:`image_placeholders`), so the same image at the same place matches
(the next chat turn reuses it) and another image never does.

Loading a projector in the kernel's own process is only safe once it is known to load:
llama.cpp aborts the process on some malformed projector files (a key of the wrong type, a
missing projection tensor). :func:`check_projector` therefore loads it once in a child process
first (:mod:`ollama_nb.runtime.vision_probe`), and a file that kills the child is a clear
:class:`~ollama_nb.base.errors.CorruptModel` instead of a dead kernel.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..base.errors import CorruptModel, InvalidRequest, OllamaNbError
from .library import lib

log = logging.getLogger(__name__)

__all__ = ["MediaPrompt", "Projector", "check_projector", "image_placeholders"]

#: What Ollama answers (llama-server's words) when images go to a model without a projector.
NO_PROJECTOR = "image input is not supported - hint: if this is unexpected, you may need to provide the mmproj"
_CHUNK_TEXT, _CHUNK_IMAGE = 0, 1
_checked: dict[tuple[str, int, int], str | None] = {}  # projector file -> None (loads) or the failure
_check_lock = threading.Lock()


_routed = False


def _mtmd() -> Any:
    global _routed
    lib()  # the llama library first: mtmd's bindings load after it, and its log callback exists
    from llama_cpp import mtmd_cpp

    if not _routed:  # mtmd logs every prompt it cuts: to Python logging, as llama.cpp's own lines
        from . import library

        mtmd_cpp.mtmd_log_set(library._log_callback, ctypes.c_void_p(0))
        mtmd_cpp.mtmd_helper_log_set(library._log_callback, ctypes.c_void_p(0))
        _routed = True
    return mtmd_cpp


def image_placeholders(data: bytes, n: int) -> list[int]:
    """The ids standing for an image's ``n`` KV positions: negative (never a real token),
    different for every position and for every image."""
    seed = int.from_bytes(hashlib.sha256(data).digest()[:4], "little") & 0x3FFFFFFF
    return [-(1 + ((seed + i) & 0x3FFFFFFF)) for i in range(n)]


# ---- the child-process check -----------------------------------------------------------------


def check_projector(projector: str, text_model: str, *, timeout: float = 120.0) -> None:
    """Load ``projector`` for ``text_model`` in a child process and encode one small image
    there; raise :class:`CorruptModel` (with the child's last words) when it fails or dies.
    Each file is checked once per process."""
    try:
        st = os.stat(projector)
    except OSError as exc:
        raise CorruptModel(projector, exc.strerror or str(exc)) from None
    key = (os.path.realpath(projector), st.st_size, st.st_mtime_ns)
    with _check_lock:
        if key not in _checked:
            _checked[key] = _run_check(projector, text_model, timeout)
        failure = _checked[key]
    if failure is not None:
        raise CorruptModel(projector, f"llama.cpp's multimodal loader cannot use this projector ({failure})")


def _run_check(projector: str, text_model: str, timeout: float) -> str | None:
    cmd = [sys.executable, "-m", "ollama_nb.runtime.vision_probe", projector, text_model]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return f"the check did not finish in {timeout:.0f} s"
    if done.returncode == 0 and "PROJECTOR OK" in done.stdout:
        return None
    words = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    said = next((w for w in reversed(words) if "error" in w.lower() or "failed" in w.lower()), words[-1] if words else "")
    if done.returncode < 0:
        import signal

        name = signal.Signals(-done.returncode).name
        return f"it crashed the loader with {name}" + (f": {said[:200]}" if said else "")
    return said[:300] or f"exit code {done.returncode}"


# ---- prompts with images ---------------------------------------------------------------------


@dataclass
class MediaPrompt:
    """A prompt cut into chunks: ``tokens`` has one id per KV position (text tokens, and each
    image's placeholders), ``spans`` the start and end position of every chunk."""

    chunks: Any  # mtmd_input_chunks_p, owned: free with close()
    tokens: list[int]
    spans: list[tuple[int, int, int]] = field(default_factory=list)  # (start, end, chunk index)

    def safe_prefix(self, n: int) -> int:
        """``n`` moved back to the start of the image it would cut through, if any."""
        for start, end, index in self.spans:
            if start < n < end and self._kind(index) == _CHUNK_IMAGE:
                return start
        return n

    def _kind(self, index: int) -> int:
        mtmd = _mtmd()
        return int(mtmd.mtmd_input_chunk_get_type(mtmd.mtmd_input_chunks_get(self.chunks, index)))

    def close(self) -> None:
        if self.chunks:
            _mtmd().mtmd_input_chunks_free(self.chunks)
            self.chunks = None


class Projector:
    """One loaded vision projector, bound to the text model it projects into."""

    def __init__(self, path: str, model: Any, *, use_gpu: bool, threads: int) -> None:
        mtmd = _mtmd()
        params = mtmd.mtmd_context_params_default()
        params.use_gpu = use_gpu
        params.n_threads = max(1, threads)
        params.print_timings = False
        self.path = path
        self._ctx = mtmd.mtmd_init_from_file(path.encode(), model, params)
        if not self._ctx:
            raise CorruptModel(path, "llama.cpp's multimodal loader could not load this projector")
        if not mtmd.mtmd_support_vision(self._ctx):
            self.close()
            raise CorruptModel(path, "this projector has no vision encoder")
        self.marker: str = mtmd.mtmd_default_marker().decode()
        self.use_mrope = bool(mtmd.mtmd_decode_use_mrope(self._ctx))

    def _bitmap(self, data: bytes, index: int) -> Any:
        """A bitmap from an image file's bytes: what llama.cpp decodes itself (PNG, JPEG, BMP,
        GIF), else what Pillow reads (WebP, TIFF ...) re-encoded as PNG, as Ollama converts WebP
        before llama-server sees it."""
        mtmd = _mtmd()
        bitmap = self._decode(data)
        if not bitmap:
            converted = _as_png(data)
            bitmap = self._decode(converted) if converted else None
        if not bitmap:
            raise InvalidRequest(f"Failed to load image or audio file: image {index} is not image data "
                                 "this server can read (PNG, JPEG, WebP, BMP, GIF, TIFF)")
        mtmd.mtmd_bitmap_set_id(bitmap, hashlib.sha256(data).hexdigest().encode())
        return bitmap

    def _decode(self, data: bytes) -> Any:
        buffer = (ctypes.c_uint8 * max(len(data), 1)).from_buffer_copy(data or b"\0")
        return _mtmd().mtmd_helper_bitmap_init_from_buf(self._ctx, buffer, len(data), False)

    def prompt(self, text: str, images: Sequence[bytes], *, add_special: bool = True) -> MediaPrompt:
        """Cut ``text`` (one marker per image, in order) and ``images`` into chunks."""
        mtmd = _mtmd()
        if text.count(self.marker) != len(images):
            raise InvalidRequest(f"the prompt has {text.count(self.marker)} image markers for {len(images)} images")
        bitmaps = []
        try:
            for i, data in enumerate(images):
                bitmaps.append(self._bitmap(data, i))
            raw = text.encode("utf-8")
            source = mtmd.mtmd_input_text()
            source.text, source.text_len, source.add_special, source.parse_special = raw, len(raw), add_special, True
            chunks = mtmd.mtmd_input_chunks_init()
            array = (mtmd.mtmd_bitmap_p_ctypes * max(len(bitmaps), 1))(*bitmaps)
            rc = mtmd.mtmd_tokenize(self._ctx, chunks, ctypes.byref(source), array, len(bitmaps))
            if rc != 0:
                mtmd.mtmd_input_chunks_free(chunks)
                raise InvalidRequest("the images could not be prepared for this model's vision encoder")
        finally:
            for bitmap in bitmaps:
                mtmd.mtmd_bitmap_free(bitmap)
        media = MediaPrompt(chunks=chunks, tokens=[])
        image = 0
        for index in range(mtmd.mtmd_input_chunks_size(chunks)):
            chunk = mtmd.mtmd_input_chunks_get(chunks, index)
            start = len(media.tokens)
            if mtmd.mtmd_input_chunk_get_type(chunk) == _CHUNK_TEXT:
                n = ctypes.c_size_t(0)
                ids = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
                media.tokens.extend(ids[i] for i in range(n.value))
            else:
                n_pos = int(mtmd.mtmd_input_chunk_get_n_pos(chunk))
                media.tokens.extend(image_placeholders(images[image], n_pos))
                image += 1
            media.spans.append((start, len(media.tokens), index))
        return media

    def evaluate(self, lctx: Any, media: MediaPrompt, start: int, seq: int, n_batch: int) -> None:
        """Decode every position of ``media`` from ``start`` on into sequence ``seq``, with
        logits for the last one. A text chunk the cache covers in part is decoded from where
        the cache ends; an image chunk always whole (``start`` is never inside one)."""
        mtmd = _mtmd()
        lc = lib()
        last = len(media.spans) - 1
        for i, (begin, end, index) in enumerate(media.spans):
            if end <= start:
                continue
            chunk = mtmd.mtmd_input_chunks_get(media.chunks, index)
            if begin < start:  # the tail of a text chunk
                _decode_tokens(lc, lctx, media.tokens[start:end], start, seq, n_batch, logits_last=i == last)
                continue
            new_n_past = lc.llama_pos(0)
            rc = mtmd.mtmd_helper_eval_chunk_single(self._ctx, lctx, chunk, begin, seq, n_batch, i == last,
                                                    ctypes.byref(new_n_past))
            if rc != 0:
                raise OllamaNbError(f"llama.cpp could not evaluate part {index} of the prompt (code {rc})")

    def close(self) -> None:
        if self._ctx:
            _mtmd().mtmd_free(self._ctx)
            self._ctx = None


def _as_png(data: bytes) -> bytes | None:
    """``data`` re-encoded as PNG by Pillow, or None when Pillow cannot read it either."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            out = io.BytesIO()
            image.convert("RGB").save(out, format="PNG")
            return out.getvalue()
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def _decode_tokens(lc: Any, lctx: Any, tokens: list[int], pos: int, seq: int, n_batch: int, *,
                   logits_last: bool) -> None:
    batch = lc.llama_batch_init(max(1, min(n_batch, len(tokens))), 0, 1)
    try:
        done = 0
        while done < len(tokens):
            part = tokens[done : done + n_batch]
            for j, token in enumerate(part):
                batch.token[j] = token
                batch.pos[j] = pos + done + j
                batch.n_seq_id[j] = 1
                batch.seq_id[j][0] = seq
                batch.logits[j] = logits_last and done + j == len(tokens) - 1
            batch.n_tokens = len(part)
            rc = lc.llama_decode(lctx, batch)
            if rc != 0:
                raise OllamaNbError(f"llama_decode failed with code {rc}")
            done += len(part)
    finally:
        lc.llama_batch_free(batch)

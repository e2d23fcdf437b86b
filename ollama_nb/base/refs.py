"""Model names and blob digests, parsed with Ollama's own rules (``types/model/name.go``).

A name is ``[scheme://][host/][namespace/]model[:tag]``; missing parts are filled with
``registry.ollama.ai``, ``library`` and ``latest``. Every part is checked against Ollama's
character rules before it is ever used as a directory name, so a valid :class:`ModelRef` can
always be turned into a path under the store without escaping it.

>>> ModelRef.parse("llama3.2").full
'registry.ollama.ai/library/llama3.2:latest'
>>> ModelRef.parse("hf.co/bartowski/SmolLM2-135M-Instruct-GGUF:Q4_K_M").display
'hf.co/bartowski/SmolLM2-135M-Instruct-GGUF:Q4_K_M'

The tag is split off at the last ``:`` only when it comes after the last ``/``, so a host port
is never mistaken for a tag:

>>> ModelRef.parse("localhost:5000/me/m").manifest_parts
('localhost:5000', 'me', 'm', 'latest')
>>> ModelRef.parse("http://localhost:5000/me/m:v1").registry_url
'http://localhost:5000'

Anything outside the rules is refused, most importantly anything that could walk out of the store:

>>> ModelRef.parse("../etc/passwd")
Traceback (most recent call last):
...
ollama_nb.base.errors.InvalidModelName: invalid model name
>>> parse_digest("sha256:../../etc/passwd")
Traceback (most recent call last):
...
ollama_nb.base.errors.InvalidDigest: invalid digest format
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidDigest, InvalidModelName

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_NAMESPACE",
    "DEFAULT_SCHEME",
    "DEFAULT_TAG",
    "HUGGINGFACE_HOSTS",
    "ModelRef",
    "blob_filename",
    "is_valid_name",
    "parse_digest",
]

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
DEFAULT_SCHEME = "https"
HUGGINGFACE_HOSTS = frozenset({"hf.co", "huggingface.co"})

# name.go isValidPart: first byte alphanumeric or "_", then alphanumerics and "_-", plus "."
# everywhere but the namespace and ":" only in the host (a port). Lengths from isValidLen.
_PART_RULES: dict[str, tuple[re.Pattern[str], int]] = {
    "host": (re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]*"), 350),
    "namespace": (re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*"), 80),
    "model": (re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*"), 80),
    "tag": (re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*"), 80),
}

# manifest/paths.go BlobsPath accepts "sha256:" or "sha256-" and either case of hex.
_DIGEST_RE = re.compile(r"sha256[:-]([0-9a-fA-F]{64})")

# name.go MissingPart: stands in for a part promised by a separator but empty, never valid.
_MISSING = "!MISSING!"


def _valid_part(kind: str, value: str) -> bool:
    pattern, max_len = _PART_RULES[kind]
    return 1 <= len(value) <= max_len and pattern.fullmatch(value) is not None


def _cut_promised(s: str, sep: str) -> tuple[str, str, bool]:
    """name.go cutPromised: split at the last ``sep``; an empty side becomes ``_MISSING``."""
    i = s.rfind(sep)
    if i < 0:
        return s, "", False
    return (s[:i] or _MISSING), (s[i + len(sep) :] or _MISSING), True


def _parse_bare(s: str) -> tuple[str, str, str, str, str]:
    """name.go ParseNameBare: (scheme, host, namespace, model, tag), empty where absent."""
    scheme = host = namespace = tag = ""
    # "/" is an illegal tag character, so a ":" after the last "/" starts the tag.
    if s.rfind(":") > s.rfind("/"):
        s, tag, _ = _cut_promised(s, ":")
    s, model, promised = _cut_promised(s, "/")
    if not promised:
        return scheme, host, namespace, s, tag
    s, namespace, promised = _cut_promised(s, "/")
    if not promised:
        return scheme, host, s, model, tag
    if "://" in s:
        scheme, host = s.split("://", 1)
    else:
        host = s
    return scheme, host, namespace, model, tag


@dataclass(frozen=True)
class ModelRef:
    """A fully qualified, validated model name (case preserved, compared case-insensitively).

    >>> ref = ModelRef.parse("Me/Model:V1")
    >>> (ref.host, ref.namespace, ref.model, ref.tag, ref.scheme)
    ('registry.ollama.ai', 'Me', 'Model', 'V1', 'https')
    >>> ref.display, ref.equal_fold(ModelRef.parse("me/model:v1"))
    ('Me/Model:V1', True)
    """

    host: str
    namespace: str
    model: str
    tag: str
    scheme: str = DEFAULT_SCHEME

    def __post_init__(self) -> None:
        parts = (self.host, self.namespace, self.model, self.tag)
        if not all(_valid_part(k, v) for k, v in zip(("host", "namespace", "model", "tag"), parts)):
            raise InvalidModelName("/".join(parts[:3]) + ":" + self.tag)

    @classmethod
    def parse(cls, name: str) -> ModelRef:
        """Parse ``name`` as Ollama's ``model.ParseName`` does; raise :class:`InvalidModelName`.

        >>> ModelRef.parse("user/m:tag").display
        'user/m:tag'
        >>> ModelRef.parse("example.com/library/m").display
        'example.com/library/m:latest'
        >>> ModelRef.parse("huggingface.co/TheBloke/x-GGUF").is_huggingface
        True
        >>> for bad in ["", "m:", "ns.x/m", "a/b/c/d", "m:t/x", "-m", "h/n/m:a:b", "bad name"]:
        ...     try:
        ...         ModelRef.parse(bad)
        ...     except InvalidModelName:
        ...         pass
        ...     else:
        ...         print("accepted", bad)
        """
        if not isinstance(name, str):
            raise InvalidModelName(repr(name))
        scheme, host, namespace, model, tag = _parse_bare(name)
        try:
            return cls(
                host or DEFAULT_HOST,
                namespace or DEFAULT_NAMESPACE,
                model,
                tag or DEFAULT_TAG,
                scheme or DEFAULT_SCHEME,
            )
        except InvalidModelName:
            raise InvalidModelName(name) from None

    @classmethod
    def from_parts(cls, host: str, namespace: str, model: str, tag: str) -> ModelRef | None:
        """The name of a manifest at ``manifests/<host>/<ns>/<model>/<tag>``, or None if invalid.

        Mirrors ``ParseNameFromFilepath``: all four parts must be present and valid.
        """
        try:
            return cls(host, namespace, model, tag)
        except InvalidModelName:
            return None

    @property
    def display(self) -> str:
        """``DisplayShortest``: drop the default host (and ``library``); always show ``:tag``."""
        if self.host.lower() != DEFAULT_HOST:
            return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"
        if self.namespace.lower() != DEFAULT_NAMESPACE:
            return f"{self.namespace}/{self.model}:{self.tag}"
        return f"{self.model}:{self.tag}"

    @property
    def full(self) -> str:
        """``host/namespace/model:tag``, Ollama's ``Name.String()`` (no scheme)."""
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    @property
    def manifest_parts(self) -> tuple[str, str, str, str]:
        """The four directory levels under ``manifests/``."""
        return (self.host, self.namespace, self.model, self.tag)

    @property
    def is_huggingface(self) -> bool:
        return self.host.lower() in HUGGINGFACE_HOSTS

    @property
    def registry_url(self) -> str:
        """Base URL of the registry, e.g. ``https://registry.ollama.ai``."""
        return f"{self.scheme}://{self.host}"

    @property
    def repository(self) -> str:
        """``namespace/model``, the repository path in ``/v2/<repository>/manifests/<tag>``."""
        return f"{self.namespace}/{self.model}"

    def equal_fold(self, other: ModelRef) -> bool:
        """Same model ignoring case (scheme ignored), as Ollama's ``Name.EqualFold``."""
        return self.fold_key() == other.fold_key()

    def fold_key(self) -> tuple[str, str, str, str]:
        """Lower-cased parts: a dict key for case-insensitive lookups."""
        return (self.host.lower(), self.namespace.lower(), self.model.lower(), self.tag.lower())

    def with_tag(self, tag: str) -> ModelRef:
        return ModelRef(self.host, self.namespace, self.model, tag, self.scheme)

    def __str__(self) -> str:
        return self.display


def is_valid_name(name: str) -> bool:
    """True when :meth:`ModelRef.parse` would accept ``name``.

    >>> is_valid_name("llama3.2:1b"), is_valid_name("a//b")
    (True, False)
    """
    try:
        ModelRef.parse(name)
    except InvalidModelName:
        return False
    return True


def parse_digest(text: str) -> str:
    """Validate a blob digest and normalise it to ``sha256:<64 lowercase hex>``.

    This is the only gate between a digest that came from outside (a manifest, a URL, a request
    body) and a file name under ``blobs/``. The file form ``sha256-<hex>`` is accepted too, and
    upper-case hex is lowered (Ollama's ``BlobsPath`` accepts both; hashes are written lower).

    >>> parse_digest("sha256-" + "AB" * 32) == "sha256:" + "ab" * 32
    True
    >>> parse_digest("sha256:" + "0" * 63)
    Traceback (most recent call last):
    ...
    ollama_nb.base.errors.InvalidDigest: invalid digest format
    """
    if not isinstance(text, str):
        raise InvalidDigest(repr(text))
    m = _DIGEST_RE.fullmatch(text)
    if m is None:
        raise InvalidDigest(text)
    return "sha256:" + m.group(1).lower()


def blob_filename(digest: str) -> str:
    """The file name of a blob: ``sha256-<hex>`` (":" is not portable in file names).

    >>> blob_filename("sha256:" + "a" * 64) == "sha256-" + "a" * 64
    True
    """
    return parse_digest(digest).replace(":", "-", 1)

"""Manifests and config blobs, byte-compatible with the ones Ollama writes.

Ollama writes a manifest with Go's ``json.Encoder``: compact JSON, fields in struct order,
``omitempty`` fields left out, ``<``, ``>`` and ``&`` escaped, one trailing newline. The digest
``/api/tags`` reports is the sha256 of exactly those bytes, so :meth:`Manifest.to_bytes`
reproduces them and a manifest read from disk keeps its original bytes.

Every digest is validated with :func:`~ollama_nb.base.refs.parse_digest` while the manifest is
parsed, so a manifest naming ``sha256:../../etc`` is rejected before any path is built from it.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from ..base.errors import OllamaNbError
from ..base.refs import parse_digest

__all__ = [
    "MEDIA_TYPE_ADAPTER",
    "MEDIA_TYPE_CONFIG",
    "MEDIA_TYPE_DRAFT",
    "MEDIA_TYPE_EMBED",
    "MEDIA_TYPE_JSON",
    "MEDIA_TYPE_LICENSE",
    "MEDIA_TYPE_MANIFEST",
    "MEDIA_TYPE_MESSAGES",
    "MEDIA_TYPE_MODEL",
    "MEDIA_TYPE_PARAMS",
    "MEDIA_TYPE_PROJECTOR",
    "MEDIA_TYPE_PROMPT",
    "MEDIA_TYPE_SYSTEM",
    "MEDIA_TYPE_TEMPLATE",
    "MEDIA_TYPE_TENSOR",
    "TEMPLATE_MEDIA_TYPES",
    "InvalidManifest",
    "Layer",
    "Manifest",
    "ModelConfig",
    "go_json",
]

MEDIA_TYPE_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_TYPE_CONFIG = "application/vnd.docker.container.image.v1+json"
MEDIA_TYPE_MODEL = "application/vnd.ollama.image.model"
MEDIA_TYPE_PROJECTOR = "application/vnd.ollama.image.projector"
MEDIA_TYPE_ADAPTER = "application/vnd.ollama.image.adapter"
MEDIA_TYPE_TEMPLATE = "application/vnd.ollama.image.template"
MEDIA_TYPE_PROMPT = "application/vnd.ollama.image.prompt"  # legacy alias of template
MEDIA_TYPE_SYSTEM = "application/vnd.ollama.image.system"
MEDIA_TYPE_PARAMS = "application/vnd.ollama.image.params"
MEDIA_TYPE_MESSAGES = "application/vnd.ollama.image.messages"
MEDIA_TYPE_LICENSE = "application/vnd.ollama.image.license"
MEDIA_TYPE_DRAFT = "application/vnd.ollama.image.draft"
MEDIA_TYPE_EMBED = "application/vnd.ollama.image.embed"  # deprecated, ignored
MEDIA_TYPE_TENSOR = "application/vnd.ollama.image.tensor"  # safetensors/MLX layers
MEDIA_TYPE_JSON = "application/vnd.ollama.image.json"
TEMPLATE_MEDIA_TYPES = frozenset({MEDIA_TYPE_TEMPLATE, MEDIA_TYPE_PROMPT})


class InvalidManifest(OllamaNbError):
    """A manifest file that is not valid JSON, lacks fields, or names a malformed digest."""


# -- Go encoding/json, byte for byte -----------------------------------------------------------

_GO_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_GO_ESCAPES.update({c: f"\\u{ord(c):04x}" for c in "<>&\u2028\u2029"})
_GO_ESCAPES.update({chr(i): f"\\u{i:04x}" for i in range(0x20) if chr(i) not in _GO_ESCAPES})


def _go_str(s: str) -> str:
    # Go writes invalid UTF-8 (here: lone surrogates) as U+FFFD.
    if not s.isascii():
        s = s.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return '"' + "".join(_GO_ESCAPES.get(c, c) for c in s) + '"'


def _go_float(x: float) -> str:
    """Go's float64 encoding: shortest digits, positional between 1e-6 and 1e21."""
    if not math.isfinite(x):
        raise ValueError(f"json: unsupported value: {x}")
    if x == 0 or 1e-6 <= abs(x) < 1e21:
        text = format(Decimal(repr(x)), "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    text = repr(x)
    return re.sub(r"e([+-])0(\d)$", r"e\g<1>\g<2>", text)  # e-07 -> e-7, as Go does


def go_json(value: Any, *, sort_keys: bool = False) -> str:
    """Encode like Go's ``json.Marshal`` (HTML-safe escaping, compact).

    Structs keep field order; Go maps sort their keys (``sort_keys=True``).

    >>> go_json({"a": "<x & y>", "b": [1, None, True], "c": 1.5, "d": 1e-05, "e": 3.0})
    '{"a":"\\\\u003cx \\\\u0026 y\\\\u003e","b":[1,null,true],"c":1.5,"d":0.00001,"e":3}'
    """
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _go_str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, dict):
        items = sorted(value.items()) if sort_keys else value.items()
        body = ",".join(f"{_go_str(str(k))}:{go_json(v, sort_keys=sort_keys)}" for k, v in items)
        return "{" + body + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(go_json(v, sort_keys=sort_keys) for v in value) + "]"
    raise TypeError(f"cannot encode {type(value).__name__}")


def _omit_empty(data: dict[str, Any], omitempty: frozenset[str]) -> dict[str, Any]:
    """Go's ``omitempty``: drop listed keys whose value is None, "", 0, [] or {}."""
    return {k: v for k, v in data.items() if not (k in omitempty and v in (None, "", 0, [], {}))}


# -- manifest ----------------------------------------------------------------------------------


class Layer(BaseModel):
    """One blob of a model: ``{"mediaType","digest","size","from"?,"name"?}``."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)

    mediaType: str
    digest: str
    size: int = Field(ge=0)
    from_: str | None = Field(default=None, alias="from")
    name: str | None = None  # tensor name of safetensors layers

    @field_validator("digest")
    @classmethod
    def _check_digest(cls, v: str) -> str:
        return parse_digest(v)

    def to_dict(self) -> dict[str, Any]:
        return _omit_empty(self.model_dump(by_alias=True), frozenset({"from", "name"}))


class Manifest(BaseModel):
    """A Docker v2 schema 2 manifest as Ollama stores it under ``manifests/``."""

    model_config = ConfigDict(extra="ignore")

    schemaVersion: int = 2
    mediaType: str = MEDIA_TYPE_MANIFEST
    config: Layer
    layers: list[Layer] = Field(default_factory=list)

    _raw: bytes | None = PrivateAttr(default=None)
    _raw_fields: dict[str, Any] | None = PrivateAttr(default=None)

    @field_validator("layers", mode="before")
    @classmethod
    def _null_layers(cls, v: Any) -> Any:
        return [] if v is None else v

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str = "manifest") -> Manifest:
        """Parse manifest bytes; keep them so :attr:`digest` matches the file.

        Raises :class:`InvalidDigest` for a malformed digest, :class:`InvalidManifest` otherwise.
        """
        try:
            obj = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidManifest(f"{source}: not valid JSON ({exc})") from None
        if not isinstance(obj, dict):
            raise InvalidManifest(f"{source}: not a JSON object")
        try:
            manifest = cls.model_validate(obj)  # InvalidDigest propagates as itself
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise InvalidManifest(f"{source}: {where}: {first['msg']}") from None
        manifest._raw = bytes(data)
        manifest._raw_fields = manifest.to_dict()
        return manifest

    def __eq__(self, other: object) -> bool:
        """Same content (how the bytes were formatted does not matter)."""
        return isinstance(other, Manifest) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schemaVersion": self.schemaVersion,
            "mediaType": self.mediaType,
            "config": self.config.to_dict(),
            "layers": [layer.to_dict() for layer in self.layers],
        }

    def to_bytes(self) -> bytes:
        """The bytes to store: the original ones if read unchanged, else Go's encoding + "\\n"."""
        if self._raw is not None and self._raw_fields == self.to_dict():
            return self._raw
        return (go_json(self.to_dict()) + "\n").encode("utf-8")

    @property
    def digest(self) -> str:
        """Hex sha256 of :meth:`to_bytes` (what ``/api/tags`` shows as ``digest``)."""
        return hashlib.sha256(self.to_bytes()).hexdigest()

    @property
    def size(self) -> int:
        """Sum of layer and config sizes (the ``size`` of ``/api/tags``)."""
        return self.config.size + sum(layer.size for layer in self.layers)

    def all_layers(self) -> list[Layer]:
        """The layers plus the config blob: every blob this manifest keeps alive."""
        return [*self.layers, self.config]

    def digests(self) -> set[str]:
        return {layer.digest for layer in self.all_layers()}

    def layers_of(self, *media_types: str) -> list[Layer]:
        return [layer for layer in self.layers if layer.mediaType in media_types]

    def first_layer(self, *media_types: str) -> Layer | None:
        found = self.layers_of(*media_types)
        return found[0] if found else None

    @property
    def model_layer(self) -> Layer | None:
        return self.first_layer(MEDIA_TYPE_MODEL)


# -- config blob -------------------------------------------------------------------------------

_CONFIG_OMITEMPTY = frozenset(
    {
        "renderer",
        "parser",
        "requires",
        "remote_host",
        "remote_model",
        "capabilities",
        "context_length",
        "embedding_length",
        "base_name",
        "draft",
    }
)


class ModelConfig(BaseModel):
    """The config blob (``types/model/config.go: ConfigV2``); unknown fields are ignored.

    ``/api/tags`` and ``/api/show`` take ``details`` from here: ``model_type`` is shown as the
    parameter size and ``file_type`` as the quantization level.
    """

    model_config = ConfigDict(extra="ignore")

    model_format: str = ""
    model_family: str = ""
    model_families: list[str] | None = None
    model_type: str = ""
    file_type: str = ""
    renderer: str = ""
    parser: str = ""
    requires: str = ""
    remote_host: str = ""
    remote_model: str = ""
    capabilities: list[str] = Field(default_factory=list)
    context_length: int = 0
    embedding_length: int = 0
    base_name: str = ""
    draft: dict[str, Any] | None = None
    architecture: str = ""
    os: str = ""

    @classmethod
    def for_gguf(cls, info: Any) -> ModelConfig:
        """The config Ollama writes for a GGUF model layer (``info`` is a ``GGUFInfo``)."""
        return cls(
            model_format="gguf",
            model_family=info.family,
            model_families=info.families,
            model_type=info.parameter_size,
            file_type=info.file_type,
            architecture="amd64",
            os="linux",
        )

    @field_validator(
        "model_format",
        "model_family",
        "model_type",
        "file_type",
        "renderer",
        "parser",
        "requires",
        "remote_host",
        "remote_model",
        "base_name",
        "architecture",
        "os",
        mode="before",
    )
    @classmethod
    def _null_is_empty(cls, v: Any) -> Any:
        return "" if v is None else v  # Go decodes null into a string as ""

    @field_validator("capabilities", mode="before")
    @classmethod
    def _null_is_empty_list(cls, v: Any) -> Any:
        return [] if v is None else v

    @field_validator("context_length", "embedding_length", mode="before")
    @classmethod
    def _null_is_zero(cls, v: Any) -> Any:
        return 0 if v is None else v

    @classmethod
    def from_bytes(cls, data: bytes) -> ModelConfig:
        """Parse a config blob; raise :class:`InvalidManifest` when it is not a JSON object."""
        try:
            obj = json.loads(data)
        except ValueError as exc:  # includes UnicodeDecodeError
            raise InvalidManifest(f"config blob: not valid JSON ({exc})") from None
        if not isinstance(obj, dict):
            raise InvalidManifest("config blob: not a JSON object")
        try:
            return cls.model_validate(obj)
        except ValidationError as exc:
            raise InvalidManifest(f"config blob: {exc}".splitlines()[0]) from None

    def to_dict(self) -> dict[str, Any]:
        return _omit_empty(self.model_dump(), _CONFIG_OMITEMPTY)

    def to_bytes(self) -> bytes:
        """Go ``json.Encoder`` output (trailing newline), as ``createConfigLayer`` writes it."""
        return (go_json(self.to_dict()) + "\n").encode("utf-8")

"""What defines a remote backend, and the ones a kernel knows before anyone types a magic.

A JupyterHub admin preconfigures a shared cluster for every user with an environment variable
on the single-user servers (``OLLAMA_NB_BACKENDS``) or a traitlet in an IPython profile
(``c.OllamaMagics.backends``); both hold the same shape, a JSON object of named backends::

    {"gpu": {"url": "http://gpu-box:11434"},
     "vllm": {"url": "http://vllm.cluster:8000/v1", "kind": "openai", "api_key_env": "VLLM_API_KEY"}}

A bare string is short for ``{"url": ...}`` (an Ollama server). The API key itself never appears
here: only the name of the environment variable it is read from, at each request, so a notebook
that is shared or saved carries no secret.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..base.errors import InvalidRequest

__all__ = ["ENV_BACKENDS", "ENV_ROUTE", "KINDS", "LOCAL", "BackendSpec", "route_from_env", "specs_from_env",
           "specs_from_mapping"]

ENV_BACKENDS = "OLLAMA_NB_BACKENDS"
ENV_ROUTE = "OLLAMA_NB_ROUTE_BACKENDS"
#: The name of the kernel's own models, the default backend.
LOCAL = "local"
Kind = Literal["ollama", "openai"]
KINDS: tuple[str, ...] = ("ollama", "openai")

# A backend name is the first part of "NAME/model": no slash, dot or colon, so it can never be
# mistaken for a registry host (which has a dot or a port) or a tag.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")
_ENV_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True)
class BackendSpec:
    """One remote backend: its name, base URL, protocol and where its API key comes from."""

    name: str
    url: str
    kind: Kind = "ollama"
    api_key_env: str | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.name or ""):
            raise InvalidRequest(f"invalid backend name {self.name!r}",
                                 hint="use letters, digits, '-' and '_' (no '/', '.' or ':')")
        if self.name == LOCAL:
            raise InvalidRequest(f"{LOCAL!r} is the name of this kernel's own models",
                                 hint="choose another name for the backend")
        if self.kind not in KINDS:
            raise InvalidRequest(f"unknown backend kind {self.kind!r}", hint=f"use one of {', '.join(KINDS)}")
        if not self.url or not isinstance(self.url, str):
            raise InvalidRequest(f"backend {self.name!r} needs a URL")
        if self.api_key_env is not None and not _ENV_VAR.match(self.api_key_env):
            raise InvalidRequest(f"invalid environment variable name {self.api_key_env!r}",
                                 hint="the API key is read from an environment variable: give its name")

    def api_key(self) -> str | None:
        """The key, read now from the environment (None when no variable is named or it is unset)."""
        return os.environ.get(self.api_key_env) or None if self.api_key_env else None


def specs_from_mapping(data: Mapping[str, Any], *, source: str) -> list[BackendSpec]:
    """Backends from the documented JSON shape; ``source`` names where it came from in errors."""
    if not isinstance(data, Mapping):
        raise InvalidRequest(f"{source} must be a JSON object of named backends")
    specs = []
    for name, value in data.items():
        entry = {"url": value} if isinstance(value, str) else value
        if not isinstance(entry, Mapping):
            raise InvalidRequest(f"{source}: backend {name!r} must be a URL or an object with a url")
        unknown = set(entry) - {"url", "kind", "api_key_env"}
        if unknown:
            raise InvalidRequest(f"{source}: backend {name!r} has unknown settings {sorted(unknown)}",
                                 hint="a backend has url, kind and api_key_env")
        specs.append(BackendSpec(name=str(name), url=str(entry.get("url") or ""),
                                 kind=entry.get("kind", "ollama"), api_key_env=entry.get("api_key_env")))
    return specs


def specs_from_env(environ: Mapping[str, str] | None = None) -> list[BackendSpec]:
    """``OLLAMA_NB_BACKENDS``; none when unset. Malformed JSON is an error, not silence: an
    admin's typo must not quietly leave every user without the cluster."""
    text = (environ if environ is not None else os.environ).get(ENV_BACKENDS, "").strip()
    if not text:
        return []
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InvalidRequest(f"{ENV_BACKENDS} is not valid JSON: {exc}") from None
    return specs_from_mapping(data, source=ENV_BACKENDS)


def route_from_env(environ: Mapping[str, str] | None = None) -> bool:
    """``OLLAMA_NB_ROUTE_BACKENDS``: whether the kernel's HTTP server routes ``NAME/model`` to the
    named backends (off by default: a local URL that reaches a cluster is a choice)."""
    value = (environ if environ is not None else os.environ).get(ENV_ROUTE, "").strip().lower()
    return value in ("1", "true", "yes", "on")

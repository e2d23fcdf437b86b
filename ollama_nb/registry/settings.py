"""Knobs of the downloader, with Ollama's defaults, overridable from the environment.

Read on every pull (like :mod:`ollama_nb.base.config`), so a notebook or a test can change them with
``os.environ`` and the next pull sees it; a CLI subprocess inherits them the same way.

=================================  ================================================  ==========
variable                           meaning                                            default
=================================  ================================================  ==========
``OLLAMA_NB_PULL_PART_SIZE``       bytes per ranged part (0: size/16, clamped to      0
                                   16 MB .. 1000 MB; Ollama's floor is 100 MB)
``OLLAMA_NB_PULL_CONCURRENCY``     ranged parts in flight per blob                    16
``OLLAMA_NB_PULL_RETRIES``         failed attempts in a row (no new bytes) per part   6
``OLLAMA_NB_PULL_STALL_TIMEOUT``   seconds without a byte before a part is retried    30
``OLLAMA_NB_PULL_BACKOFF``         first retry delay in seconds (doubles, max 30 s)   1
=================================  ================================================  ==========

Credentials for a registry of your own (pull and push send them to the model's host only,
never on a redirect to another host): ``OLLAMA_NB_REGISTRY_TOKEN`` (sent as a bearer token), or
``OLLAMA_NB_REGISTRY_USER`` with ``OLLAMA_NB_REGISTRY_PASSWORD`` (HTTP basic).
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

MB = 1000 * 1000  # Ollama's format.MegaByte
# Ollama's floor is 100 MB, which cuts a 250 MB model into 3 parts; 16 MB keeps all 16
# connections busy on small models (5x faster on capped connections, bench/results/pull.md).
MIN_PART_SIZE = 16 * MB
MAX_PART_SIZE = 1000 * MB
NUM_PARTS = 16
MAX_REDIRECTS = 10  # Go's http.Client default, and Ollama's directURL limit
MAX_MANIFEST_BYTES = 4 << 20  # a real manifest is a few hundred bytes


def _env_number(name: str, default: float, *, minimum: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        return default
    return value if value >= minimum else default


@dataclass(frozen=True)
class PullSettings:
    part_size: int = 0
    concurrency: int = NUM_PARTS
    max_retries: int = 6
    stall_seconds: float = 30.0
    backoff_seconds: float = 1.0
    max_backoff_seconds: float = 30.0
    connect_seconds: float = 30.0
    max_redirects: int = MAX_REDIRECTS
    max_manifest_bytes: int = MAX_MANIFEST_BYTES
    progress_interval: float = 0.1  # at most ~10 progress events a second per blob
    state_interval: float = 0.5  # how often a part's resume state is written while it runs

    @classmethod
    def from_env(cls) -> PullSettings:
        return cls(
            part_size=int(_env_number("OLLAMA_NB_PULL_PART_SIZE", 0, minimum=1)),
            concurrency=int(_env_number("OLLAMA_NB_PULL_CONCURRENCY", NUM_PARTS, minimum=1)),
            max_retries=int(_env_number("OLLAMA_NB_PULL_RETRIES", 6, minimum=1)),
            stall_seconds=_env_number("OLLAMA_NB_PULL_STALL_TIMEOUT", 30.0, minimum=0.05),
            backoff_seconds=_env_number("OLLAMA_NB_PULL_BACKOFF", 1.0, minimum=0.0),
        )

    def part_size_for(self, total: int) -> int:
        """Ollama's split: a sixteenth of the blob, at least 100 MB and at most 1000 MB."""
        if self.part_size > 0:
            return self.part_size
        return min(max(total // NUM_PARTS, MIN_PART_SIZE), MAX_PART_SIZE)

    def backoff(self, attempt: int) -> float:
        """Delay before retry ``attempt`` (1-based): 1 s, 2 s, 4 s ... capped, as Ollama's
        per-part retry does."""
        return min(self.backoff_seconds * (2 ** (attempt - 1)), self.max_backoff_seconds)


#: What a 401 from a registry tells the user to set.
CREDENTIALS_HINT = ("set OLLAMA_NB_REGISTRY_TOKEN (a bearer token), or OLLAMA_NB_REGISTRY_USER and "
                    "OLLAMA_NB_REGISTRY_PASSWORD, to the registry's credentials")


def registry_auth_headers() -> dict[str, str]:
    """The ``Authorization`` header for the user's own registry, from the environment (read
    on every call, so a notebook can set it and retry)."""
    token = os.environ.get("OLLAMA_NB_REGISTRY_TOKEN", "").strip()
    if token:
        return {"Authorization": f"Bearer {token}"}
    user = os.environ.get("OLLAMA_NB_REGISTRY_USER", "")
    if user:
        secret = f"{user}:{os.environ.get('OLLAMA_NB_REGISTRY_PASSWORD', '')}".encode()
        return {"Authorization": "Basic " + base64.b64encode(secret).decode()}
    return {}

"""Settings read from the environment, with Ollama's names and defaults.

Read on every call (not cached at import) so a notebook can change ``os.environ`` and the next
request sees it, as a restarted ``ollama serve`` would.
"""

from __future__ import annotations

import logging
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from .durations import keep_alive_seconds


def _env(name: str) -> str:
    return os.environ.get(name, "").strip().strip("'\"")


def _truthy(name: str) -> bool:
    return _env(name).lower() in {"1", "true", "yes", "on", "t"}


def models_dir() -> Path:
    """``$OLLAMA_MODELS`` or ``~/.ollama/models``: the same store a real Ollama uses."""
    value = _env("OLLAMA_MODELS")
    return Path(value).expanduser() if value else Path.home() / ".ollama" / "models"


def keep_alive_default() -> float:
    """``OLLAMA_KEEP_ALIVE`` in seconds (default 5 minutes; negative = forever)."""
    value = _env("OLLAMA_KEEP_ALIVE")
    if not value:
        return 300.0
    return keep_alive_seconds(value, allow_bare_number_string=True)


def max_loaded_models() -> int:
    """``OLLAMA_MAX_LOADED_MODELS``; 0 (default) means 3 per GPU, 3 on CPU."""
    value = _env("OLLAMA_MAX_LOADED_MODELS")
    n = int(value) if value.isdigit() else 0
    return n if n > 0 else 3


def context_length_default() -> int:
    """``OLLAMA_CONTEXT_LENGTH`` or 4096 (Ollama's tier for machines under 24 GiB of VRAM)."""
    value = _env("OLLAMA_CONTEXT_LENGTH")
    return int(value) if value.isdigit() and int(value) > 0 else 4096


def flash_attention() -> bool | None:
    """``OLLAMA_FLASH_ATTENTION``: True/False when set, None for automatic."""
    value = _env("OLLAMA_FLASH_ATTENTION").lower()
    if not value:
        return None
    return value in {"1", "true", "yes", "on", "t"}


KV_CACHE_TYPES = {"f16": 1, "q8_0": 8, "q4_0": 2}  # ggml type ids


def kv_cache_type() -> str:
    """``OLLAMA_KV_CACHE_TYPE``: f16 (default), q8_0 (half the memory) or q4_0 (a quarter).

    As in Ollama, a quantized cache needs flash attention; without it the cache stays f16.
    """
    value = _env("OLLAMA_KV_CACHE_TYPE").lower()
    return value if value in KV_CACHE_TYPES else "f16"


def force_cpu() -> bool:
    """``OLLAMA_LLM_LIBRARY=cpu`` (or any ``cpu*`` variant) keeps every layer on the CPU."""
    return _env("OLLAMA_LLM_LIBRARY").lower().startswith("cpu")


def gpu_overhead_bytes() -> int:
    """``OLLAMA_GPU_OVERHEAD``: VRAM bytes to leave free per GPU."""
    value = _env("OLLAMA_GPU_OVERHEAD")
    return int(value) if value.isdigit() else 0


def debug_level() -> int:
    """``OLLAMA_DEBUG``: 0 off, 1 debug, 2 trace."""
    value = _env("OLLAMA_DEBUG").lower()
    if value.isdigit():
        return int(value)
    return 1 if value in {"true", "yes", "on", "t"} else 0


def no_prune() -> bool:
    """``OLLAMA_NOPRUNE``: keep unreferenced blobs and partial downloads."""
    return _truthy("OLLAMA_NOPRUNE")


def num_parallel() -> int:
    value = _env("OLLAMA_NUM_PARALLEL")
    return int(value) if value.isdigit() and int(value) > 0 else 1


def lazy_memory() -> bool:
    """``OLLAMA_NB_LAZY_MEMORY`` (on unless ``0``/``false``): keep llama.cpp's zeroed KV cache
    out of resident memory until tokens are written to it (see ``runtime.memory``)."""
    return _env("OLLAMA_NB_LAZY_MEMORY").lower() not in {"0", "false", "no", "off", "f"}


def huge_pages() -> bool:
    """``OLLAMA_NB_HUGE_PAGES`` (on unless ``0``/``false``): put llama.cpp's resident buffers
    (the weights above all) in 2 MiB pages, and on the CPU read the weights in rather than map
    them when ``use_mmap`` is not given (see ``runtime.huge_pages``)."""
    return _env("OLLAMA_NB_HUGE_PAGES").lower() not in {"0", "false", "no", "off", "f"}


def kv_unified() -> bool:
    """``OLLAMA_NB_KV_UNIFIED`` (off unless ``1``/``true``): with ``OLLAMA_NUM_PARALLEL`` above 1,
    one pool of KV cells for every sequence, as llama-server's ``--kv-unified``, instead of a
    stream of cells per sequence (llama-server's default). A prompt that begins like another
    sequence's conversation then starts from its very cells, with no copy; but every token's
    attention looks over every sequence's cells (8 clients: 0.90x the tokens/s of streams)."""
    return _env("OLLAMA_NB_KV_UNIFIED").lower() in {"1", "true", "yes", "on", "t"}


def prompt_cache_mb() -> int:
    """``OLLAMA_NB_PROMPT_CACHE_MB`` (default 256; 0 turns it off): how much RAM a loaded model
    may use for conversations whose KV cells another request took (``runtime.prompt_cache``),
    and as much again for a sliding-window model's checkpoints (``runtime.window_checkpoints``)."""
    value = _env("OLLAMA_NB_PROMPT_CACHE_MB")
    return int(value) if value.isdigit() else 256


def extra_buffers() -> bool | None:
    """``OLLAMA_NB_EXTRA_BUFFERS``: True/False forces llama.cpp's CPU extra buffer types (AMX,
    repacked weights) on or off; unset (or ``auto``) lets the CPU probe decide (``runtime.probe``)."""
    value = _env("OLLAMA_NB_EXTRA_BUFFERS").lower()
    if value in {"1", "true", "yes", "on", "t"}:
        return True
    if value in {"0", "false", "no", "off", "f"}:
        return False
    return None


def cache_dir() -> Path:
    """Where ollama_nb keeps what it measured about this machine: ``$XDG_CACHE_HOME/ollama_nb``
    or ``~/.cache/ollama_nb``. Nothing in it is a model; deleting it only costs a re-measure."""
    value = _env("XDG_CACHE_HOME")
    return (Path(value).expanduser() if value else Path.home() / ".cache") / "ollama_nb"


def max_queue() -> int:
    value = _env("OLLAMA_MAX_QUEUE")
    return int(value) if value.isdigit() and int(value) > 0 else 512


def configure_logging() -> None:
    """Verbose logs (ours and llama.cpp's) on stderr only when ``OLLAMA_DEBUG`` asks for them."""
    logger = logging.getLogger("ollama_nb")
    if debug_level():
        logger.setLevel(logging.DEBUG)
        if not logger.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
            logger.addHandler(handler)
    else:
        logger.setLevel(logging.WARNING)


# ---- the HTTP server -------------------------------------------------------------------------

DEFAULT_PORT = 11434
# What /api/version reports. Some clients gate features on the server's version (logprobs came
# in Ollama 0.12.11, thinking in 0.9, structured outputs in 0.5), so we report the oldest Ollama
# release whose native API we cover; OLLAMA_NB_API_VERSION overrides it for a stricter client.
OLLAMA_API_VERSION = "0.12.11"


@dataclass(frozen=True)
class HostSetting:
    """Where to listen, from ``OLLAMA_HOST``; ``explicit`` is False when the variable is unset."""

    scheme: str
    host: str
    port: int
    explicit: bool

    @property
    def address(self) -> str:
        """``host:port`` with IPv6 hosts bracketed, as Go's ``net.JoinHostPort`` writes it."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _split_host_port(hostport: str) -> tuple[str, str] | None:
    """Go's ``net.SplitHostPort``: None where Go returns an error (no port, too many colons)."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0 or hostport[end + 1 : end + 2] != ":":
            return None
        return hostport[1:end], hostport[end + 2 :]
    host, sep, port = hostport.rpartition(":")
    if not sep or ":" in host:
        return None
    return host, port


def host() -> HostSetting:
    """``OLLAMA_HOST`` parsed as Ollama's ``envconfig.Host`` does.

    ``host``, ``host:port``, ``:port`` and ``scheme://host[:port][/path]`` are accepted; the port
    defaults to 11434 (80 or 443 when an http/https scheme is written), an empty host means every
    interface (Go listens on all for ``:port``), and a malformed port falls back to the default.
    """
    raw = _env("OLLAMA_HOST")
    scheme, sep, hostport = raw.partition("://")
    default_port = DEFAULT_PORT
    if not sep:
        scheme, hostport = "http", raw
    elif scheme == "http":
        default_port = 80
    elif scheme == "https":
        default_port = 443
    hostport = hostport.split("/", 1)[0]
    split = _split_host_port(hostport)
    if split is None:
        host_, port_text = (hostport.strip("[]") or "127.0.0.1"), str(default_port)
    else:
        host_, port_text = split
        host_ = host_ or "0.0.0.0"
    port = int(port_text) if port_text.isdigit() and int(port_text) <= 65535 else default_port
    return HostSetting(scheme=scheme, host=host_, port=port, explicit=bool(raw))


def origins() -> list[str]:
    """CORS origins, Ollama's ``AllowedOrigins``: ``OLLAMA_ORIGINS`` (comma separated, ``*``
    wildcards) plus localhost/127.0.0.1/0.0.0.0 on any port and the desktop-app schemes."""
    value = _env("OLLAMA_ORIGINS")
    out = [o.strip() for o in value.split(",") if o.strip()] if value else []
    for name in ("localhost", "127.0.0.1", "0.0.0.0"):
        out += [f"http://{name}", f"https://{name}", f"http://{name}:*", f"https://{name}:*"]
    out += ["app://*", "file://*", "tauri://*", "vscode-webview://*", "vscode-file://*"]
    return out


def api_key() -> str | None:
    """``OLLAMA_NB_API_KEY``: when set, every request must send ``Authorization: Bearer <key>``."""
    return _env("OLLAMA_NB_API_KEY") or None


def _host_name(entry: str) -> str:
    """The host name in ``hub.example.org``, ``hub.example.org:8443`` or a URL such as
    ``https://hub.example.org/user/me/`` (lower case, no port); ``*`` stays ``*``."""
    entry = entry.strip().lower()
    if entry == "*" or ("//" not in entry and entry.count(":") > 1 and "[" not in entry):  # bare IPv6
        return entry
    try:
        return urllib.parse.urlsplit(entry if "//" in entry else "//" + entry).hostname or ""
    except ValueError:
        return entry


def allowed_hosts() -> list[str]:
    """Extra ``Host`` names a loopback-bound server accepts: ``OLLAMA_NB_ALLOWED_HOSTS``
    (comma-separated names or URLs; ``*`` turns the check off), plus the public names JupyterHub
    gives its single-user servers (``JUPYTERHUB_PUBLIC_URL``, ``JUPYTERHUB_HOST``).

    Behind jupyter-server-proxy the server sees the ``Host`` the browser sent to Jupyter: a local
    name for a Jupyter on this machine (accepted anyway), the hub's public name on a JupyterHub
    or Binder, which is what this list is for. A name the user or the hub's admin declared is
    safe to accept: a DNS-rebinding page can only send its own name.
    """
    names = [_host_name(h) for h in _env("OLLAMA_NB_ALLOWED_HOSTS").split(",") if h.strip()]
    names += [_host_name(_env(var)) for var in ("JUPYTERHUB_PUBLIC_URL", "JUPYTERHUB_HOST") if _env(var)]
    return [n for n in dict.fromkeys(names) if n]


def api_version() -> str:
    """The version ``/api/version`` reports (``OLLAMA_NB_API_VERSION`` or OLLAMA_API_VERSION)."""
    return _env("OLLAMA_NB_API_VERSION") or OLLAMA_API_VERSION

"""Go-style durations and keep_alive values, parsed the way Ollama parses them.

Ollama's ``keep_alive`` is a JSON number of seconds or a Go duration string ("5m", "1h30m",
"-1m"); a bare numeric *string* is an error in the API but accepted in ``OLLAMA_KEEP_ALIVE``.
Negative means forever, zero means unload as soon as the request finishes.
"""

from __future__ import annotations

import math
import re

from .errors import InvalidRequest

FOREVER = math.inf

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str) -> float:
    """Seconds for a Go duration string such as ``"1h30m"``, ``"-1m"`` or ``"0"``."""
    s = text.strip()
    sign = -1.0 if s.startswith("-") else 1.0
    body = s.lstrip("+-")
    if body == "0":
        return 0.0
    if not body:
        raise InvalidRequest(f'time: invalid duration "{text}"')
    pos, total = 0, 0.0
    while pos < len(body):
        m = _PART.match(body, pos)
        if not m:
            if re.fullmatch(r"[\d.]+", body[pos:]):
                raise InvalidRequest(f'time: missing unit in duration "{text}"')
            raise InvalidRequest(f'time: invalid duration "{text}"')
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return sign * total


def keep_alive_seconds(value: object, *, allow_bare_number_string: bool = False) -> float:
    """Seconds to keep a model loaded; ``math.inf`` for forever, 0 for unload-now."""
    if isinstance(value, bool):
        raise InvalidRequest("json: cannot unmarshal bool into Go value of type api.Duration")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        stripped = value.strip()
        if allow_bare_number_string and re.fullmatch(r"-?\d+(\.\d+)?", stripped):
            seconds = float(stripped)
        else:
            seconds = parse_go_duration(stripped)
    else:
        raise InvalidRequest("json: cannot unmarshal value into Go value of type api.Duration")
    return FOREVER if seconds < 0 else seconds


def format_duration(seconds: float) -> str:
    """Human form used by `ps` ("4 minutes from now" is built on top of this)."""
    if math.isinf(seconds):
        return "Forever"
    seconds = max(0, int(round(seconds)))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"

"""Sizes and times as the ``ollama`` CLI prints them ("98 MB", "About a minute ago"), for every
face that shows them to a person (the CLI's tables, the notebook's DataFrames)."""

from __future__ import annotations

import datetime as dt


def human_bytes(n: int) -> str:
    """Decimal units as Ollama prints them ("98 MB", "1.2 GB")."""
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.1f} {unit}" if value < 10 and unit != "B" else f"{value:.0f} {unit}"
        value /= 1000
    return f"{n} B"


def human_since(when: dt.datetime, now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.timezone.utc)
    seconds = (now - when).total_seconds()
    future = seconds < 0
    seconds = abs(seconds)
    if seconds < 1:
        return "Less than a second ago" if not future else "Less than a second from now"
    for unit, size in (("year", 31536000), ("month", 2592000), ("week", 604800), ("day", 86400),
                       ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds >= size:
            count = int(seconds // size)
            text = f"{count} {unit}{'s' if count != 1 else ''}"
            if count == 1:
                text = f"About a{'n' if unit == 'hour' else ''} {unit}"
            return f"{text} from now" if future else f"{text} ago"
    return ""

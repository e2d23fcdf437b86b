"""``{var}`` in a prompt, filled in from the notebook's namespace.

Only a plain reference is replaced: a name, optionally followed by ``[index]`` and ``.attr``
steps (``{df}``, ``{In[3]}``, ``{Out[3]}``, ``{cfg["key"]}``, ``{obj.name}``). Anything else in
braces — JSON, code, set literals — stays exactly as written, and so does a reference that does
not resolve (unknown name, missing key), so a prompt full of code is never mangled and never
fails. ``{{name}}`` writes a literal ``{name}``. Unlike ``str.format`` nothing is evaluated:
no calls, no private attributes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_REF = r"[A-Za-z_]\w*(?:\[[^\[\]{}\n]+\]|\.[A-Za-z_]\w*)*"
_FIELD = re.compile(r"\{\{(" + _REF + r")\}\}|\{(" + _REF + r")\}")
_STEP = re.compile(r"\[([^\[\]{}\n]+)\]|\.([A-Za-z_]\w*)")
_NAME = re.compile(r"[A-Za-z_]\w*")


class _Unresolved(Exception):
    pass


def _key(text: str) -> Any:
    text = text.strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def resolve(ref: str, namespace: Mapping[str, Any]) -> Any:
    """The value of a reference like ``Out[3]`` or ``cfg.name``; raises when it has none."""
    head = _NAME.match(ref)
    assert head is not None
    if head.group(0) not in namespace:
        raise _Unresolved(ref)
    value = namespace[head.group(0)]
    for step in _STEP.finditer(ref, head.end()):
        index, attr = step.groups()
        try:
            if attr is not None:
                if attr.startswith("_"):
                    raise _Unresolved(ref)
                value = getattr(value, attr)
            else:
                value = value[_key(index)]
        except (LookupError, AttributeError, TypeError, ValueError):
            raise _Unresolved(ref) from None
    return value


def interpolate(text: str, namespace: Mapping[str, Any]) -> str:
    """``text`` with every resolvable ``{reference}`` replaced by ``str(value)``."""

    def replace(match: re.Match[str]) -> str:
        escaped, ref = match.groups()
        if escaped is not None:
            return "{" + escaped + "}"
        try:
            return str(resolve(ref, namespace))
        except _Unresolved:
            return match.group(0)

    return _FIELD.sub(replace, text)


__all__ = ["interpolate", "resolve"]

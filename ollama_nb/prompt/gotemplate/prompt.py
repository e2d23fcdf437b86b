"""Ollama's rules for turning a chat request into the data a template sees, and how often.

These are Ollama server behaviour, not Go's: system texts are collated, a template without
``.Messages`` runs once per turn and stops where the reply starts, and messages and tools reach
the template as Go structs whose JSON keeps Ollama's tag names and order. Kept apart from the
template language so the engine stays a plain ``text/template``.
"""

from __future__ import annotations

import json as _json
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from .execute import GoTemplate
from .values import GoStruct, JsonList, JsonMap


@lru_cache(maxsize=64)
def _prepared(template: str) -> GoTemplate:
    t = GoTemplate(template)
    return t if t.references("messages") or t.references("response") else t.with_response()


def references_messages(template: str) -> bool:
    """Whether ``template`` uses ``.Messages`` (then Ollama renders the whole chat in one pass)."""
    return _prepared(template).references("messages")


def _plain(m: Any) -> dict[str, Any]:
    return dict(m.model_dump() if hasattr(m, "model_dump") else m)


def _prop(p: Mapping[str, Any]) -> GoStruct:
    p = _plain(p)
    t = p.get("type")
    nested = p.get("properties")
    props = JsonMap({k: _prop(v) for k, v in nested.items()}) if nested else None
    if props is not None:
        props.ordered = True
    return GoStruct({
        "AnyOf": [_prop(x) for x in p.get("anyOf") or []] or None,
        "Type": t[0] if isinstance(t, list) and len(t) == 1 else t,
        "Items": p.get("items"), "Description": p.get("description") or "",
        "Enum": p.get("enum"), "Properties": props, "Required": p.get("required"),
    }, {k: k[0].lower() + k[1:] + ",omitempty" for k in
        ("AnyOf", "Type", "Items", "Description", "Enum", "Properties", "Required")})


def _tool(tool: Any) -> GoStruct:
    """An API tool as Ollama's ``templateTool`` (fields ``.Function.Parameters.Properties`` ...)."""
    t = _plain(tool)
    fn = _plain(t.get("function") or {})
    ps = _plain(fn.get("parameters") or {})
    params = GoStruct({
        "Type": ps.get("type", ""), "Defs": ps.get("$defs"), "Items": ps.get("items"),
        "Required": ps.get("required"),
        "Properties": JsonMap({k: _prop(v) for k, v in (ps.get("properties") or {}).items()}),
    }, {"Type": "type", "Defs": "$defs,omitempty", "Items": "items,omitempty",
        "Required": "required,omitempty", "Properties": "properties"})
    func = GoStruct({"Name": fn.get("name", ""), "Description": fn.get("description") or "",
                     "Parameters": params},
                    {"Name": "name", "Description": "description", "Parameters": "parameters"})
    return GoStruct({"Type": t.get("type", "function"), "Items": t.get("items"), "Function": func},
                    {"Type": "type", "Items": "items,omitempty", "Function": "function"})


def _message(m: Mapping[str, Any]) -> GoStruct:
    """An API message as Ollama's ``templateMessage`` (``.Role``, ``.Content``, ``.ToolCalls``)."""
    calls = []
    for tc in m.get("tool_calls") or []:
        tc = _plain(tc)
        fn = _plain(tc.get("function") or {})
        args = fn.get("arguments") or {}
        if isinstance(args, str):  # OpenAI-style clients send a JSON string
            try:
                args = _json.loads(args)
            except ValueError:
                args = {}
        calls.append(GoStruct({"ID": tc.get("id") or "", "Function": GoStruct({
            "Index": fn.get("index") or 0, "Name": fn.get("name", ""),
            "Arguments": JsonMap(args if isinstance(args, Mapping) else {})})}))
    return GoStruct({"Role": m.get("role", ""), "Content": m.get("content") or "",
                     "Thinking": m.get("thinking") or "", "Images": m.get("images") or None,
                     "ToolCalls": calls or None, "ToolName": m.get("tool_name") or "",
                     "ToolCallID": m.get("tool_call_id") or ""})


def _collate(msgs: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Ollama's ``collate``: join all system texts; merge runs of one role (except tool)."""
    system = [m.get("content") or "" for m in msgs if m.get("role") == "system"]
    out: list[dict[str, Any]] = []
    for m in msgs:
        if out and out[-1].get("role") == m.get("role") and m.get("role") != "tool":
            out[-1] = {**out[-1], "content": f"{out[-1].get('content') or ''}\n\n"
                                             f"{m.get('content') or ''}"}
        else:
            out.append(m)
    return "\n\n".join(system), out


def render_prompt(template: str, *, system: str | None = None,
                  messages: Sequence[Mapping[str, Any] | Any],
                  tools: Sequence[Mapping[str, Any] | Any] | None = None,
                  suffix: str | None = None, response: str = "",
                  think: bool | str | None = None) -> str:
    """Build the raw prompt exactly as Ollama's ``Template.Execute`` does.

    ``messages`` are API messages (dicts or pydantic models: role, content, tool_calls, ...).
    ``system`` is the Modelfile/request SYSTEM text, prepended as a system message unless the
    conversation already opens with one (Ollama's chat rule). With ``suffix`` (fill-in-the-middle)
    the template gets ``.Prompt`` (last user message) and ``.Suffix``. A template using
    ``.Messages`` renders once with the whole collated chat; older ``.System/.Prompt/.Response``
    templates render once per turn and the last turn stops where ``.Response`` would start.
    ``response`` is ``.Response`` for the single-pass paths (Ollama always passes "").
    """
    tmpl = _prepared(template)
    msgs = [_plain(m) for m in messages]
    if system and not (msgs and msgs[0].get("role") == "system"):
        msgs.insert(0, {"role": "system", "content": system})
    level = think if isinstance(think, str) else ("medium" if think else "")
    flags = {"Think": think is True or think in ("high", "medium", "low", "max"),
             "ThinkLevel": level, "IsThinkSet": think is not None}
    if suffix:
        prompt = next((m.get("content") or "" for m in reversed(msgs) if m.get("role") == "user"),
                      "")
        if prompt:
            return tmpl.execute({"Prompt": prompt, "Suffix": suffix, "Response": response,
                                 **flags})
    system_text, turns = _collate(msgs)
    if tmpl.references("messages"):
        return tmpl.execute({
            "System": system_text, "Messages": [_message(m) for m in turns],
            "Tools": None if tools is None else JsonList(_tool(t) for t in tools),
            "Prompt": "", "Suffix": "", "Response": response, **flags})

    out: list[str] = []
    turn = {"System": "", "Prompt": "", "Response": ""}
    for m in turns:  # legacy: one execution per system/user/assistant exchange
        role, content = m.get("role"), m.get("content") or ""
        if (role == "system" and (turn["Prompt"] or turn["Response"])) or (
                role == "user" and turn["Response"]):
            out.append(tmpl.execute({**turn, **flags}))
            turn = {"System": "", "Prompt": "", "Response": ""}
        if role in ("system", "user", "assistant"):
            turn[{"system": "System", "user": "Prompt", "assistant": "Response"}[role]] = content
    out.append(tmpl.execute({**turn, **flags}, cut_at_response=True))
    return "".join(out)

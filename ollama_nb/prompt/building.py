"""What the model actually sees: messages + template -> prompt text -> tokens.

Ollama's order of precedence: a request ``template`` (Go syntax), then the model's TEMPLATE
layer (Go syntax), then the GGUF's Jinja chat template (what current Ollama renders natively),
then the default ``{{ .Prompt }}``. The Modelfile SYSTEM applies unless the conversation brings
its own system message; Modelfile MESSAGEs come first.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

from ..api.types import Message, Tool
from ..base.errors import InvalidRequest, UnsupportedCapability
from ..models.catalog import ModelSpec
from ..runtime import Engine, render_jinja_chat
from ..runtime.vision import NO_PROJECTOR
from .gotemplate import render_prompt

DEFAULT_TEMPLATE = "{{ .Prompt }}"


def _jinja_message(m: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["tool_calls"] = [
            {
                "type": "function",
                "id": call.id,
                "function": {"name": call.function.name, "arguments": call.function.arguments},
            }
            for call in m.tool_calls
        ]
    if m.tool_name:
        out["name"] = m.tool_name
    if m.tool_call_id:
        out["tool_call_id"] = m.tool_call_id
    return out


def conversation(spec: ModelSpec, messages: list[Message], system: str | None = None) -> list[Message]:
    """Modelfile MESSAGEs + SYSTEM folded into the request's messages, as Ollama does."""
    seeded = [Message(**m) for m in spec.messages] + list(messages)
    if system is not None:
        seeded = [m for m in seeded if m.role != "system"]
        return [Message(role="system", content=system)] + seeded if system else seeded
    if spec.system and not (seeded and seeded[0].role == "system"):
        return [Message(role="system", content=spec.system)] + seeded
    return seeded


def render_chat(
    engine: Engine,
    spec: ModelSpec,
    messages: list[Message],
    *,
    tools: list[Tool] | None = None,
    template: str | None = None,
    think: bool | str | None = None,
) -> str:
    """The prompt text for a conversation, with the generation prompt for the next reply;
    ``think`` reaches Go templates as ``.Think``/``.ThinkLevel`` and Jinja ones as
    ``enable_thinking``."""
    tool_dicts = [t.to_dict() for t in tools] if tools else None
    go_template = template or spec.template
    if go_template is None and spec.chat_template:
        return render_jinja_chat(
            spec.chat_template,
            [_jinja_message(m) for m in messages],
            tools=tool_dicts,
            bos_token=engine.bos_text,
            eos_token=engine.eos_text,
            extra={"enable_thinking": think is not False} if think is not None else None,
        )
    return render_prompt(
        go_template or DEFAULT_TEMPLATE,
        messages=[m.to_dict() for m in messages],
        tools=tool_dicts,
        think=think,
    )


def decode_image(data: str) -> bytes:
    """An image's base64 text as bytes; Go's error text for bad base64 (Ollama decodes images
    with Go's JSON, so a client sees ``illegal base64 data at input byte N``)."""
    text = data.replace("\r", "").replace("\n", "")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        bad = next((i for i, ch in enumerate(text) if ch not in _BASE64), None)
        where = bad if bad is not None else max(0, len(text.rstrip("=")) // 4 * 4)
        raise InvalidRequest(f"illegal base64 data at input byte {where}") from None


_BASE64 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


def has_images(messages: list[Message]) -> bool:
    return any(m.images for m in messages)


def with_image_markers(messages: list[Message], marker: str) -> tuple[list[Message], list[bytes]]:
    """Messages whose images are marked in their text, and the images in prompt order: each
    image replaces the next ``[img]`` of its message or, where there is none, goes before the
    text (Ollama's ``imageTaggedMessages``)."""
    marked, images = [], []
    for m in messages:
        if not m.images:
            marked.append(m)
            continue
        content, prefix = m.content, ""
        for data in m.images:
            images.append(decode_image(data))
            if "[img]" in content:
                content = content.replace("[img]", marker, 1)
            else:
                prefix += marker
        marked.append(m.model_copy(update={"content": prefix + content, "images": None}))
    return marked, images


def chat_tokens(
    engine: Engine,
    spec: ModelSpec,
    messages: list[Message],
    *,
    tools: list[Tool] | None = None,
    think: bool | str | None = None,
    on_text: Callable[[str], None] | None = None,
) -> list[int] | Any:
    """The prompt's tokens, or (when the messages carry images) a ``runtime.vision.MediaPrompt``
    whose text and image chunks the engine evaluates. ``on_text`` sees the rendered prompt
    (whether it opens a thinking tag decides how the reply is read)."""
    images: list[bytes] = []
    if has_images(messages):
        marker = engine.media_marker
        if marker is None:
            raise InvalidRequest(NO_PROJECTOR)
        messages, images = with_image_markers(messages, marker)
    text = render_chat(engine, spec, messages, tools=tools, think=think)
    if on_text is not None:
        on_text(text)
    if images:
        return engine.media_prompt(text, images)
    return engine.tokenize(text, add_special=True, parse_special=True)


def generate_tokens(
    engine: Engine,
    spec: ModelSpec,
    *,
    prompt: str,
    system: str | None,
    template: str | None,
    suffix: str | None,
    raw: bool,
    context: list[int] | None,
    images: list[str] | None = None,
    think: bool | str | None = None,
    on_text: Callable[[str], None] | None = None,
) -> list[int] | Any:
    """Tokens for /api/generate: raw text, fill-in-the-middle, or the templated conversation
    (a ``MediaPrompt`` when images come with the prompt)."""
    if images:
        marker = engine.media_marker
        if marker is None:
            raise InvalidRequest(NO_PROJECTOR)
        if suffix or context:
            raise InvalidRequest("images cannot be combined with suffix or context here; use /api/chat, "
                                 "which keeps the earlier turns and their images")
        if raw:
            if template or system:
                raise InvalidRequest("raw mode does not support template, system, or context")
            marked, data = with_image_markers([Message(role="user", content=prompt, images=images)], marker)
            return engine.media_prompt(marked[0].content, data)
        marked, data = with_image_markers(conversation(spec, [Message(role="user", content=prompt, images=images)],
                                                       system), marker)
        text = render_chat(engine, spec, marked, template=template, think=think)
        if on_text is not None:
            on_text(text)
        return engine.media_prompt(text, data)
    if raw:
        if template or system or context:
            raise InvalidRequest("raw mode does not support template, system, or context")
        return engine.tokenize(prompt, add_special=True, parse_special=True)
    if suffix:
        return _insert_tokens(engine, spec, prompt, suffix, system, template)
    user = Message(role="user", content=prompt)
    if context and (min(context) < 0 or max(context) >= engine.n_vocab):
        raise InvalidRequest(f"context holds token ids outside this model's vocabulary (0..{engine.n_vocab - 1})")
    if context:
        # A continuation: the earlier turns are already in ``context``; only the new turn is rendered.
        turn = ([Message(role="system", content=system)] if system else []) + [user]
        text = render_chat(engine, spec, turn, template=template)
        return list(context) + engine.tokenize(text, add_special=False, parse_special=True)
    text = render_chat(engine, spec, conversation(spec, [user], system), template=template, think=think)
    if on_text is not None:
        on_text(text)
    return engine.tokenize(text, add_special=True, parse_special=True)


def _insert_tokens(
    engine: Engine,
    spec: ModelSpec,
    prompt: str,
    suffix: str,
    system: str | None,
    template: str | None,
) -> list[int]:
    go_template = template or spec.template
    if go_template and ".Suffix" in go_template:
        text = render_prompt(
            go_template,
            system=system or spec.system,
            messages=[{"role": "user", "content": prompt}],
            suffix=suffix,
        )
        return engine.tokenize(text, add_special=True, parse_special=True)
    fim = engine.fim_tokens()
    if fim is None:
        raise UnsupportedCapability(f"{spec.ref.full} does not support insert")
    pre, suf, mid = fim
    body = engine.tokenize(prompt, add_special=False, parse_special=False)
    after = engine.tokenize(suffix, add_special=False, parse_special=False)
    start = [engine.bos_id] if engine.add_bos and engine.bos_id >= 0 else []
    return start + [pre] + body + [suf] + after + [mid]


"""GGUF Jinja chat templates: compiled once per template, not once per request, and a template
that cannot compile is the request's error, not the server's."""

from __future__ import annotations

import pytest

from ollama_nb.base.errors import InvalidRequest
from ollama_nb.runtime.library import _jinja_formatter, render_jinja_chat

TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def test_a_template_is_compiled_once_and_renders_each_conversation() -> None:
    _jinja_formatter.cache_clear()
    one = render_jinja_chat(TEMPLATE, [{"role": "user", "content": "hi"}], eos_token="</s>")
    two = render_jinja_chat(TEMPLATE, [{"role": "user", "content": "bye"}], eos_token="</s>")
    assert one == "<|user|>hi</s>\n<|assistant|>" and two == "<|user|>bye</s>\n<|assistant|>"
    info = _jinja_formatter.cache_info()
    assert (info.misses, info.hits) == (1, 1)
    other_eos = render_jinja_chat(TEMPLATE, [{"role": "user", "content": "hi"}], eos_token="<eos>")
    assert other_eos == "<|user|>hi<eos>\n<|assistant|>"  # what the template is compiled with is its key


def test_a_template_that_does_not_compile_is_an_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="^template error: "):
        render_jinja_chat("{% for m in messages %}{{ m['content'] }}", [{"role": "user", "content": "hi"}])

"""Thinking: the template is rendered with ``think``, a thinking model's reply is split into
``thinking`` and ``content`` at its template's tags, and every face shows the two apart. The model
is smollm2 with a thinking template and one example exchange, which the tiny model imitates."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import anthropic
import openai
import pytest

from ollama_nb.prompt.thinking import ThinkingParser, infer_tags

from .conftest import SMOLLM

THINKER = "thinker:latest"
TEMPLATE = """{{- range $i, $_ := .Messages }}{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ if .Thinking }}<think>
{{ .Thinking }}
</think>

{{ end }}{{ .Content }}<|im_end|>
{{ end }}{{- if and (ne .Role "assistant") $last }}<|im_start|>assistant
{{ if $.Think }}<think>
{{ end }}{{ end }}{{- end }}"""
QUESTION = [{"role": "user", "content": "What is 3+3?"}]
GREEDY = {"temperature": 0, "num_predict": 40}


def split(pieces: list[str], **kwargs: Any) -> tuple[str, str]:
    parser = ThinkingParser(**kwargs)
    thought = content = ""
    for piece in pieces:
        t, c = parser.feed(piece)
        thought, content = thought + t, content + c
    t, c = parser.flush()
    return thought + t, content + c


def test_the_parser_splits_at_tags_that_arrive_in_pieces() -> None:
    assert split(["<th", "ink>Let me", " see.\n</th", "ink>\n\nThe ", "answer."]) == ("Let me see.", "The answer.")
    assert split(["  Hello", " world"]) == ("", "  Hello world")  # no thinking at all
    assert split(["I reason", "</think>Done"], started=True) == ("I reason", "Done")  # the prompt opened it
    assert split(["cut off before the end"], started=True) == ("cut off before the end", "")
    assert infer_tags(TEMPLATE) == ("<think>", "</think>")
    assert infer_tags("{{ .Prompt }}") is None


@pytest.fixture(scope="module")
def thinker(manager: Any) -> str:
    modelfile = (f'FROM {SMOLLM}\nTEMPLATE """{TEMPLATE}"""\nPARAMETER temperature 0\nPARAMETER num_predict 40\n'
                 "MESSAGE user What is 2+2?\n"
                 'MESSAGE assistant """<think>\nTwo plus two is four.\n</think>\n\nThe answer is 4."""\n')
    assert [e.status for e in manager.create(THINKER, modelfile)][-1] == "success"
    assert "thinking" in manager.show(THINKER).capabilities
    yield THINKER
    manager.unload(THINKER)
    manager.delete(THINKER)


def test_a_thinking_model_thinks_by_default_and_not_when_told(manager, thinker) -> None:
    chunks = list(manager.chat(model=thinker, messages=QUESTION, stream=True, options=GREEDY))
    kinds = [("thinking" if c.message.thinking else "content") for c in chunks if c.message.thinking or c.message.content]
    assert kinds == sorted(kinds, key=lambda k: k != "thinking") and {"thinking", "content"} <= set(kinds)
    whole = manager.chat(model=thinker, messages=QUESTION, stream=False, options=GREEDY)
    assert whole.message.thinking == "".join(c.message.thinking or "" for c in chunks)
    assert whole.message.content == "".join(c.message.content for c in chunks)
    assert "</think>" not in whole.message.content and "<think>" not in whole.message.thinking
    for level in ("high", "max"):
        leveled = manager.chat(model=thinker, messages=QUESTION, think=level, stream=False, options=GREEDY)
        assert leveled.message.thinking == whole.message.thinking
    off = manager.chat(model=thinker, messages=QUESTION, think=False, stream=False, options=GREEDY)
    assert off.message.thinking is None  # no <think> opened in the prompt, nothing parsed
    generated = manager.generate(model=thinker, prompt="What is 3+3?", stream=False, options=GREEDY)
    assert (generated.thinking, generated.response) == (whole.message.thinking, whole.message.content)


def test_every_api_shows_the_thinking_apart(server, manager, thinker) -> None:
    whole = manager.chat(model=thinker, messages=QUESTION, stream=False, options=GREEDY)
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    chat = client.chat.completions.create(model=thinker, messages=QUESTION, max_tokens=40, temperature=0)
    assert chat.choices[0].message.reasoning == whole.message.thinking  # Ollama's field
    assert chat.choices[0].message.content == whole.message.content
    response = client.responses.create(model=thinker, input=QUESTION, max_output_tokens=40, temperature=0)
    assert [item.type for item in response.output] == ["reasoning", "message"]
    assert response.output[0].summary[0].text == whole.message.thinking
    message = anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0).messages.create(
        model=thinker, max_tokens=40, messages=QUESTION, extra_body={"temperature": 0},
        thinking={"type": "enabled", "budget_tokens": 1024})
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == whole.message.thinking


def test_the_cli_frames_the_thinking_or_hides_it(models_env, manager, thinker) -> None:
    def run(*flags: str) -> str:
        done = subprocess.run([sys.executable, "-m", "ollama_nb.cli", "run", thinker, *flags, "What is 3+3?"],
                              capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout

    whole = manager.chat(model=thinker, messages=QUESTION, stream=False,
                         options={"temperature": 0, "num_predict": 40})
    shown = run()
    assert shown.startswith("Thinking...\n") and "...done thinking.\n\n" in shown
    assert whole.message.thinking in shown and shown.rstrip().endswith(whole.message.content.rstrip())
    hidden = run("--hidethinking")
    assert "Thinking..." not in hidden and whole.message.thinking not in hidden
    assert hidden.strip() == whole.message.content.strip()
    assert json.dumps(whole.message.content)  # plain text, no tags

"""Go ``text/template`` for Modelfile ``TEMPLATE`` text, plus Ollama's prompt-building rules.

Why our own: Modelfiles (and the Ollama library) carry prompt templates in Go template syntax and
we must render them byte-for-byte as Ollama's ``template/template.go`` does, in pure Python. This is
a parser + tree-walking executor for the subset those templates use: actions with ``{{-``/``-}}``
trimming, comments, ``if``/``else if``/``else``/``with``/``range`` (with ``break``/``continue``),
variables (``:=``, ``=``, ``$``), fields, parentheses, pipelines, literals and the builtin functions
(``and or not len index slice eq ne lt le gt ge print printf``) plus Ollama's ``json``,
``currentDate``, ``yesterdayDate`` and ``toTypeScriptType``. ``define``/``template``/``block`` are
rejected. Deliberate leniency: a missing key or a field of a missing value is empty (never
``<no value>``), and ``eq`` on mismatched types is simply false.

The language (``values``, ``functions``, ``syntax``, ``execute``) is kept apart from Ollama's
server-side rules for what a chat request hands the template (``prompt``).
"""

from __future__ import annotations

from .execute import GoTemplate
from .prompt import references_messages, render_prompt
from .syntax import TemplateError
from .values import GoStruct, JsonMap, go_json

__all__ = ["GoStruct", "GoTemplate", "JsonMap", "TemplateError", "go_json", "references_messages",
           "render_prompt"]

"""Tests for the Go text/template renderer and Ollama's prompt rules (ollama_nb.prompt.gotemplate).

Expected strings are written out by hand from Go template semantics and Ollama's golden files
(template/testdata/<name>.gotmpl/*), never captured from this renderer.
"""

from __future__ import annotations

import datetime as dt

import pytest

from ollama_nb.base.errors import InvalidRequest, ModelfileError
from ollama_nb.prompt.gotemplate import (
    GoTemplate,
    TemplateError,
    references_messages,
    render_prompt,
)

# ---- Ollama library templates (template/*.gotmpl) --------------------------------------------

CHATML = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""

LLAMA3_INSTRUCT = """{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>

{{ .Content }}<|eot_id|>
{{- end }}<|start_header_id|>assistant<|end_header_id|>

"""

GEMMA_INSTRUCT = """{{- $system := "" }}
{{- range .Messages }}
{{- if eq .Role "system" }}
{{- if not $system }}{{ $system = .Content }}
{{- else }}{{ $system = printf "%s\\n\\n%s" $system .Content }}
{{- end }}
{{- continue }}
{{- else if eq .Role "user" }}<start_of_turn>user
{{- if $system }}
{{ $system }}
{{- $system = "" }}
{{- end }}
{{- else if eq .Role "assistant" }}<start_of_turn>model
{{- end }}
{{ .Content }}<end_of_turn>
{{ end }}<start_of_turn>model
"""

GEMMA3_INSTRUCT = """{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}<start_of_turn>user
{{- if and (eq $i 1) $.System }}
{{ $.System }}
{{ end }}
{{ .Content }}<end_of_turn>
{{ else if eq .Role "assistant" }}<start_of_turn>model
{{ .Content }}<end_of_turn>
{{ end }}
{{- if $last }}<start_of_turn>model
{{ end }}
{{- end }}
"""

MISTRAL_INSTRUCT = """[INST] {{ range $index, $_ := .Messages }}
{{- if eq .Role "system" }}{{ .Content }}

{{ else if eq .Role "user" }}{{ .Content }}[/INST]
{{- else if eq .Role "assistant" }} {{ .Content }}</s>[INST] {{ end }}
{{- end }}"""

Q1 = "Hello, how are you?"
A1 = "I'm doing great. How can I help you today?"
Q2 = "I'd like to show off how chat templating works!"
SYS = "You are a helpful assistant."

CONVERSATIONS = {
    "user": [{"role": "user", "content": Q1}],
    "user-assistant-user": [
        {"role": "user", "content": Q1},
        {"role": "assistant", "content": A1},
        {"role": "user", "content": Q2},
    ],
    "system-user-assistant-user": [
        {"role": "system", "content": SYS},
        {"role": "user", "content": Q1},
        {"role": "assistant", "content": A1},
        {"role": "user", "content": Q2},
    ],
}

EXPECTED = {
    (CHATML, "user"): f"<|im_start|>user\n{Q1}<|im_end|>\n<|im_start|>assistant\n",
    (CHATML, "user-assistant-user"): (
        f"<|im_start|>user\n{Q1}<|im_end|>\n<|im_start|>assistant\n{A1}<|im_end|>\n"
        f"<|im_start|>user\n{Q2}<|im_end|>\n<|im_start|>assistant\n"
    ),
    (CHATML, "system-user-assistant-user"): (
        f"<|im_start|>system\n{SYS}<|im_end|>\n"
        f"<|im_start|>user\n{Q1}<|im_end|>\n<|im_start|>assistant\n{A1}<|im_end|>\n"
        f"<|im_start|>user\n{Q2}<|im_end|>\n<|im_start|>assistant\n"
    ),
    (LLAMA3_INSTRUCT, "user"): (
        f"<|start_header_id|>user<|end_header_id|>\n\n{Q1}<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
    (LLAMA3_INSTRUCT, "user-assistant-user"): (
        f"<|start_header_id|>user<|end_header_id|>\n\n{Q1}<|eot_id|>"
        f"<|start_header_id|>assistant<|end_header_id|>\n\n{A1}<|eot_id|>"
        f"<|start_header_id|>user<|end_header_id|>\n\n{Q2}<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
    (LLAMA3_INSTRUCT, "system-user-assistant-user"): (
        f"<|start_header_id|>system<|end_header_id|>\n\n{SYS}<|eot_id|>"
        f"<|start_header_id|>user<|end_header_id|>\n\n{Q1}<|eot_id|>"
        f"<|start_header_id|>assistant<|end_header_id|>\n\n{A1}<|eot_id|>"
        f"<|start_header_id|>user<|end_header_id|>\n\n{Q2}<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
    (GEMMA_INSTRUCT, "user"): f"<start_of_turn>user\n{Q1}<end_of_turn>\n<start_of_turn>model\n",
    (GEMMA_INSTRUCT, "user-assistant-user"): (
        f"<start_of_turn>user\n{Q1}<end_of_turn>\n<start_of_turn>model\n{A1}<end_of_turn>\n"
        f"<start_of_turn>user\n{Q2}<end_of_turn>\n<start_of_turn>model\n"
    ),
    # the system text is held in $system and printed inside the first user turn
    (GEMMA_INSTRUCT, "system-user-assistant-user"): (
        f"<start_of_turn>user\n{SYS}\n{Q1}<end_of_turn>\n<start_of_turn>model\n{A1}<end_of_turn>\n"
        f"<start_of_turn>user\n{Q2}<end_of_turn>\n<start_of_turn>model\n"
    ),
    (GEMMA3_INSTRUCT, "user"): (
        f"<start_of_turn>user\n{Q1}<end_of_turn>\n<start_of_turn>model\n\n"
    ),
    (GEMMA3_INSTRUCT, "system-user-assistant-user"): (
        f"<start_of_turn>user\n{SYS}\n\n{Q1}<end_of_turn>\n"
        f"<start_of_turn>model\n{A1}<end_of_turn>\n"
        f"<start_of_turn>user\n{Q2}<end_of_turn>\n<start_of_turn>model\n\n"
    ),
    (MISTRAL_INSTRUCT, "user-assistant-user"): f"[INST] {Q1}[/INST] {A1}</s>[INST] {Q2}[/INST]",
    (MISTRAL_INSTRUCT, "system-user-assistant-user"): (
        f"[INST] {SYS}\n\n{Q1}[/INST] {A1}</s>[INST] {Q2}[/INST]"
    ),
}


@pytest.mark.parametrize(("template", "conversation"), list(EXPECTED), ids=lambda x: (
    x[:24] if "{{" in x else x))
def test_library_templates_match_ollama_golden_output(template: str, conversation: str) -> None:
    messages = CONVERSATIONS[conversation]
    assert render_prompt(template, messages=messages) == EXPECTED[(template, conversation)]


def test_render_prompt_does_not_mutate_messages() -> None:
    msgs = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    render_prompt(CHATML, messages=msgs)
    assert msgs == [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]


# ---- Ollama prompt rules ---------------------------------------------------------------------


def test_collation_merges_same_role_runs_and_collects_system_messages() -> None:
    tmpl = "[{{ .System }}]{{ range .Messages }}<{{ .Role }}:{{ .Content }}>{{ end }}"
    msgs = [
        {"role": "system", "content": "s1"},
        {"role": "user", "content": "u1"},
        {"role": "user", "content": "u2"},
        {"role": "system", "content": "s2"},
        {"role": "tool", "content": "t1"},
        {"role": "tool", "content": "t2"},
    ]
    # .System joins every system message; Messages keeps them (merged per run); tools not merged
    assert render_prompt(tmpl, messages=msgs) == (
        "[s1\n\ns2]<system:s1><user:u1\n\nu2><system:s2><tool:t1><tool:t2>"
    )


def test_system_argument_is_prepended_unless_conversation_opens_with_one() -> None:
    user = [{"role": "user", "content": "hi"}]
    assert render_prompt(CHATML, system="be brief", messages=user) == (
        "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    own = [{"role": "system", "content": "mine"}, *user]
    assert render_prompt(CHATML, system="be brief", messages=own).startswith(
        "<|im_start|>system\nmine<|im_end|>\n<|im_start|>user")


def test_messages_template_with_missing_fields_renders_empty_not_no_value() -> None:
    tmpl = "{{ .Prompt }}|{{ .Suffix }}|{{ .Nope }}|{{ .Nope.Deeper }}|{{ range .Messages }}" \
           "{{ .Content }}{{ .Unknown }}{{ end }}"
    out = render_prompt(tmpl, messages=[{"role": "user", "content": "x"}])
    assert out == "||||x"
    assert "<no value>" not in out


def test_suffix_uses_prompt_and_suffix() -> None:
    tmpl = """{{- if .Suffix }}<PRE> {{ .Prompt }} <SUF>{{ .Suffix }} <MID>
{{- else }}{{ .Prompt }}
{{- end }}"""
    assert render_prompt(tmpl, messages=[{"role": "user", "content": "hello"}]) == "hello"
    assert render_prompt(tmpl, messages=[{"role": "user", "content": "def add("}],
                         suffix="return x") == "<PRE> def add( <SUF>return x <MID>"


def test_think_values_are_visible() -> None:
    tmpl = "{{ range .Messages }}{{ end }}{{ .Think }} {{ .ThinkLevel }} {{ .IsThinkSet }}"
    msgs = [{"role": "user", "content": "q"}]
    assert render_prompt(tmpl, messages=msgs) == "false  false"
    assert render_prompt(tmpl, messages=msgs, think=True) == "true medium true"
    assert render_prompt(tmpl, messages=msgs, think="high") == "true high true"


# ---- legacy (.System/.Prompt/.Response) templates --------------------------------------------

LEGACY_CHATML = """{{ if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}{{ if .Prompt }}<|im_start|>user
{{ .Prompt }}<|im_end|>
{{ end }}<|im_start|>assistant
{{ .Response }}<|im_end|>
"""


def test_legacy_template_runs_once_per_turn_and_cuts_the_last_at_response() -> None:
    msgs = CONVERSATIONS["system-user-assistant-user"]
    # turn 1: system+user+assistant rendered whole; turn 2 stops where .Response starts
    assert render_prompt(LEGACY_CHATML, messages=msgs) == (
        f"<|im_start|>system\n{SYS}<|im_end|>\n<|im_start|>user\n{Q1}<|im_end|>\n"
        f"<|im_start|>assistant\n{A1}<|im_end|>\n"
        f"<|im_start|>user\n{Q2}<|im_end|>\n<|im_start|>assistant\n"
    )


def test_legacy_template_equals_messages_template_output() -> None:
    msgs = CONVERSATIONS["system-user-assistant-user"]
    assert render_prompt(LEGACY_CHATML, messages=msgs) == render_prompt(CHATML, messages=msgs)


def test_legacy_final_assistant_message_is_continued() -> None:
    tmpl = "[INST] {{ .Prompt }}[/INST] {{ .Response }}"
    msgs = [
        {"role": "user", "content": "Hello friend!"},
        {"role": "assistant", "content": "Hello human!"},
        {"role": "user", "content": "What is your name?"},
        {"role": "assistant", "content": "My name is Ollama and I"},
    ]
    assert render_prompt(tmpl, messages=msgs) == (
        "[INST] Hello friend![/INST] Hello human![INST] What is your name?[/INST] "
        "My name is Ollama and I"
    )


def test_legacy_template_without_response_gets_it_appended() -> None:
    # Ollama appends {{ .Response }} so earlier replies are not lost
    tmpl = "[INST] {{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }}[/INST] "
    msgs = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]
    assert render_prompt(tmpl, messages=msgs) == "[INST] S\n\na[/INST] b[INST] c[/INST] "


def test_legacy_cut_drops_everything_after_response_even_nested() -> None:
    tmpl = "{{ if .Prompt }}U:{{ .Prompt }} A:{{ .Response }} END{{ end }} TAIL"
    msgs = [{"role": "user", "content": "1"}, {"role": "assistant", "content": "2"},
            {"role": "user", "content": "3"}]
    assert render_prompt(tmpl, messages=msgs) == "U:1 A:2 END TAILU:3 A:"


def test_legacy_cut_also_drops_an_else_branch_after_response() -> None:
    # Go would panic here (deleteNode on a nil else list); we render the kept part instead
    tmpl = "{{ .Prompt }}:{{ if .Response }}{{ .Response }}{{ else }}(none){{ end }};"
    msgs = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"}]
    assert render_prompt(tmpl, messages=msgs) == "a:b;c:"


def test_default_prompt_template() -> None:
    msgs = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"}]
    assert render_prompt("{{ .Prompt }}", messages=msgs) == "abc"


# ---- Go template language --------------------------------------------------------------------


def run(src: str, data: object = None) -> str:
    return GoTemplate.parse(src).execute(data or {})


@pytest.mark.parametrize(("src", "want"), [
    ("a  \n {{- .X }}", "a1"),
    ("{{ .X -}} \n\t b", "1b"),
    ("a \n{{- .X -}}\n b", "a1b"),
    ("x {{- /* comment */ -}} y", "xy"),
    ("x {{/* multi\nline */}} y", "x  y"),
    ("{{-3}}", "-3"),  # no space after '-': a negative number, not a trim marker
    ("{{ .X  -}}   z", "1z"),
])
def test_whitespace_trimming_and_comments(src: str, want: str) -> None:
    assert run(src, {"X": 1}) == want


@pytest.mark.parametrize(("data", "want"), [
    ({"A": 1}, "a"), ({"B": "x"}, "b"), ({"C": [0]}, "c"), ({}, "d"),
    ({"A": 0, "B": "", "C": []}, "d"),  # Go truthiness: zero, empty string, empty list
])
def test_if_else_if_else(data: dict[str, object], want: str) -> None:
    tmpl = "{{ if .A }}a{{ else if .B }}b{{ else if .C }}c{{ else }}d{{ end }}"
    assert run(tmpl, data) == want


def test_with_and_else_with() -> None:
    tmpl = "{{ with .X }}[{{ . }}]{{ else with .Y }}<{{ . }}>{{ else }}none{{ end }}"
    assert run(tmpl, {"X": "x"}) == "[x]"
    assert run(tmpl, {"Y": "y"}) == "<y>"
    assert run(tmpl, {}) == "none"


def test_range_with_index_variables_break_continue_and_else() -> None:
    tmpl = ("{{ range $i, $m := .L }}{{ if eq $i 1 }}{{ continue }}{{ end }}"
            "{{ if eq $i 3 }}{{ break }}{{ end }}{{ $i }}={{ $m }},{{ end }}")
    assert run(tmpl, {"L": ["a", "b", "c", "d", "e"]}) == "0=a,2=c,"
    assert run("{{ range .L }}x{{ else }}empty{{ end }}", {"L": []}) == "empty"
    assert run("{{ range .Missing }}x{{ else }}none{{ end }}") == "none"
    # one variable gets the element; maps range in sorted key order
    assert run("{{ range $v := .L }}{{ $v }}{{ end }}", {"L": [7, 8]}) == "78"
    assert run("{{ range $k, $v := .M }}{{ $k }}:{{ $v }} {{ end }}", {"M": {"b": 2, "a": 1}}) \
        == "a:1 b:2 "


def test_variables_scope_and_assignment() -> None:
    # '=' in a nested block updates the outer variable; ':=' inside a block is popped after it
    tmpl = "{{ $x := 1 }}{{ range .L }}{{ $x = . }}{{ $y := 0 }}{{ end }}{{ $x }}"
    assert run(tmpl, {"L": [5, 6]}) == "6"
    with pytest.raises(TemplateError, match='undefined variable "\\$y"'):
        GoTemplate("{{ if true }}{{ $y := 1 }}{{ end }}{{ $y }}")


def test_root_access_inside_range_and_last_element() -> None:
    tmpl = ("{{ range $i, $_ := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}"
            "{{ .Content }}@{{ $.System }}{{ if $last }}!{{ else }},{{ end }}{{ end }}")
    data = {"System": "S", "Messages": [{"Content": "a"}, {"Content": "b"}, {"Content": "c"}]}
    assert run(tmpl, data) == "a@S,b@S,c@S!"


@pytest.mark.parametrize(("src", "want"), [
    ('{{ eq .R "user" }}', "true"),
    ('{{ eq .R "a" "b" "user" }}', "true"),  # eq is true when any later argument matches
    ('{{ ne .R "user" }}', "false"),
    ("{{ and 1 0 2 }}|{{ and 1 2 }}", "0|2"),  # and/or return the deciding value
    ('{{ or 0 "" "x" }}|{{ or 0 "" }}', "x|"),
    ("{{ not .Nope }}|{{ not .R }}", "true|false"),
    ("{{ len .L }}|{{ len .R }}|{{ len \"héllo\" }}", "3|4|6"),  # strings count bytes, like Go
    ("{{ index .L 1 }}|{{ index .M \"k\" }}|{{ slice .L 1 }}|{{ slice .R 1 3 }}",
     "2|v|[2 3]|se"),
    ("{{ lt 1 2 }}{{ ge 2 2 }}{{ gt \"a\" \"b\" }}", "truetruefalse"),
    ("{{ and false (index .L 99) }}", "false"),  # short-circuit: index is never evaluated
    ('{{ printf "%s=%d %q" "n" 3 "q" }}', 'n=3 "q"'),
    ('{{ print 1 2 "a" 3 }}', "1 2a3"),  # Sprint spaces only between non-strings
    ('{{ "x" | printf "%s-%s" "a" }}', "a-x"),  # the piped value is the last argument
    ("{{ .M | len }}", "1"),
    ("{{ (index .L 0) }}|{{ (index .N 0).Name }}", "1|n"),
    ("{{ 1.5 }} {{ 3.0 }} {{ 1e6 }} {{ 0x1F }} {{ true }}", "1.5 3 1e+06 31 true"),
    ('{{ "}}" }}{{ `raw\\n` }}', "}}raw\\n"),
])
def test_functions_and_pipelines(src: str, want: str) -> None:
    data = {"R": "user", "L": [1, 2, 3], "M": {"k": "v"}, "N": [{"Name": "n"}]}
    assert run(src, data) == want


def test_json_matches_go_marshal() -> None:
    data = {"M": {"b": 1, "a": "<&>"}, "F": [1.0, 0.5, 1e21, 1e-7], "S": 'say "hi"\n', "N": None}
    assert run("{{ json .M }}", data) == '{"a":"\\u003c\\u0026\\u003e","b":1}'  # sorted, escaped
    assert run("{{ json .F }}", data) == "[1,0.5,1e+21,1e-7]"
    assert run("{{ .S | json }}", data) == '"say \\"hi\\"\\n"'
    assert run("{{ json .N }}|{{ .N }}", data) == "null|"
    assert run("{{ json .B }}|{{ .B }}", {"B": [True, 2]}) == "[true,2]|[true 2]"


# ---- tools -----------------------------------------------------------------------------------

TOOLS_TEMPLATE = """{{- if .Tools }}TOOLS
{{ range .Tools }}{{ . }}
{{ end }}{{ end }}
{{- range .Messages }}
{{- if eq .Role "assistant" }}
{{- range .ToolCalls }}CALL {"name": "{{ .Function.Name }}", "args": {{ json .Function.Arguments -}}
}
{{ end }}
{{- else if eq .Role "tool" }}RESULT {{ .Content }}
{{ else }}{{ .Role }}: {{ .Content }}
{{ end }}
{{- end }}"""

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather <now>",
        "parameters": {
            "type": "object",
            "required": ["city"],
            "properties": {"unit": {"type": "string", "enum": ["c", "f"]},
                           "city": {"type": "string", "description": "City"}},
        },
    },
}


def test_tool_definitions_and_tool_calls_render_as_go_json() -> None:
    msgs = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "get_weather", "arguments": {"unit": "c", "city": "Paris"}}}]},
        {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
    ]
    tool_json = (
        '{"type":"function","function":{"name":"get_weather","description":"Weather \\u003cnow'
        '\\u003e","parameters":{"type":"object","required":["city"],"properties":{"city":'
        '{"type":"string","description":"City"},"unit":{"type":"string","enum":["c","f"]}}}}}'
    )
    assert render_prompt(TOOLS_TEMPLATE, messages=msgs, tools=[WEATHER_TOOL]) == (
        f"TOOLS\n{tool_json}\n"
        "user: Weather in Paris?\n"
        'CALL {"name": "get_weather", "args": {"city":"Paris","unit":"c"}}\n'
        "RESULT sunny\n"
    )
    # without tools the block is skipped
    assert render_prompt(TOOLS_TEMPLATE, messages=msgs[:1]) == "user: Weather in Paris?\n"


def test_tool_call_arguments_print_as_json_and_properties_range_sorted() -> None:
    tmpl = ("{{ range .Messages }}{{ range .ToolCalls }}{{ .Function.Arguments }}{{ end }}{{ end }}"
            "|{{ range $.Tools }}{{ range $name, $p := .Function.Parameters.Properties }}"
            "{{ $name }}:{{ $p.Type }};{{ end }}{{ end }}")
    msgs = [{"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": "f", "arguments": '{"n": 2.0, "a": [1, "x"]}'}}]}]
    assert render_prompt(tmpl, messages=msgs, tools=[WEATHER_TOOL]) == (
        '{"a":[1,"x"],"n":2}|city:string;unit:string;'
    )


# ---- references_messages and errors ----------------------------------------------------------


@pytest.mark.parametrize(("src", "want"), [
    (CHATML, True), (GEMMA3_INSTRUCT, True), ("{{ len $.Messages }}", True),
    (LEGACY_CHATML, False), ("{{ .Prompt }}", False), ("messages: {{ .Prompt }}", False),
])
def test_references_messages(src: str, want: bool) -> None:
    assert references_messages(src) is want


@pytest.mark.parametrize(("src", "message"), [
    ("{{ .Prompt ", "unclosed action"),
    ("{{ if .X }}never closed", "unexpected EOF"),
    ("{{ end }}", "unexpected {{end}}"),
    ("{{ frobnicate .X }}", 'function "frobnicate" not defined'),
    ("{{ $nope }}", 'undefined variable "$nope"'),
    ("{{ break }}", "{{break}} outside {{range}}"),
    ("{{/* no end", "unclosed comment"),
    ('{{ "open }}', "unterminated quoted string"),
    ("{{ (len .X }}", "unclosed left paren"),
    ("{{ .X .Y }}", "can't give argument to non-function .X"),
    ('{{ define "x" }}{{ end }}', "{{define}} is not supported"),
    ("line one\n{{ # }}", ":2: unrecognized character"),
])
def test_syntax_errors_are_clear(src: str, message: str) -> None:
    with pytest.raises(TemplateError) as info:
        GoTemplate.parse(src)
    assert message in str(info.value)
    assert str(info.value).startswith("template: :")


def test_template_error_is_a_400_modelfile_error() -> None:
    with pytest.raises(ModelfileError) as info:
        render_prompt("{{ nosuchfunc }}", messages=[])
    assert isinstance(info.value, InvalidRequest)
    assert info.value.status == 400


@pytest.mark.parametrize(("src", "message"), [
    ("{{ .S.Field }}", "can't evaluate field Field in type string"),
    ('{{ lt 1 "a" }}', "incompatible types for comparison"),
    ("{{ index .L 5 }}", "index out of range: 5"),
    ("{{ range .S }}{{ end }}", "range can't iterate over"),
])
def test_execution_errors(src: str, message: str) -> None:
    with pytest.raises(TemplateError, match="executing") as info:
        run(src, {"S": "str", "L": [1]})
    assert message in str(info.value)


def test_date_functions() -> None:
    today = dt.date.today()
    out = run("{{ currentDate }} {{ yesterdayDate }}")
    assert out in {
        f"{d.isoformat()} {(d - dt.timedelta(days=1)).isoformat()}"
        for d in (today, today + dt.timedelta(days=1))  # tolerate a midnight rollover
    }

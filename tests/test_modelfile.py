"""Modelfile grammar (Ollama's parser/parser.go), errors, paths, ollama-show rendering, create body."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import pytest

from ollama_nb.base.errors import InvalidRequest, ModelfileError
from ollama_nb.models.modelfile import (
    ERR_INVALID_COMMAND,
    Modelfile,
    collect_files,
    is_local_path,
    parse_modelfile,
    render_modelfile,
    to_create_request,
)

INVALID_COMMAND = (
    'command must be one of "from", "license", "template", "system", "adapter", "draft", '
    '"renderer", "parser", "parameter", "message", or "requires"'
)
INVALID_ROLE = 'message role must be one of "system", "user", or "assistant"'


def system_of(value_text: str) -> str | None:
    return parse_modelfile(f"FROM foo\nSYSTEM {value_text}\n").system


# --------------------------------------------------------------------------------------------
# values and quoting


@pytest.mark.parametrize(
    "value_text,expected",
    [
        ("You are a bot.", "You are a bot."),
        ("   padded   value   ", "padded   value"),  # bare: trimmed, inner spaces kept
        ("\tTabbed", "Tabbed"),
        ('"quoted"', "quoted"),
        ('"  keep my spaces  "', "  keep my spaces  "),
        ('"""triple"""', "triple"),
        ('"""  triple keeps spaces  """   ', "  triple keeps spaces  "),
        ('""""""', ""),
        ('""', ""),
        ('"\'"', "'"),
        ('"""\'\'"\'""\'""\'"\'\'\'\'\'""\'""\'"""', "''\"'\"\"'\"\"'\"'''''\"\"'\"\"'"),
        ('"a \\"b\\" c"', 'a \\"b\\" c'),  # no escapes: backslashes are literal
        ('say "hi" now', 'say "hi" now'),  # quotes inside a bare value are kept
        ('"a" and "b"', 'a" and "b'),  # only the outermost pair is removed
        ("hash # not a comment", "hash # not a comment"),
        ("你好👋", "你好👋"),
        ("bell\x07 and nul\x00 dropped", "bell and nul dropped"),  # Go drops non-printables
        ("nbsp\u00a0dropped", "nbspdropped"),
    ],
)
def test_single_line_values(value_text, expected):
    assert system_of(value_text) == expected


@pytest.mark.parametrize(
    "text,expected",
    [
        ('SYSTEM """\nThis is a\nmultiline system.\n"""\n', "\nThis is a\nmultiline system.\n"),
        ('SYSTEM """\nThis is a\nmultiline system."""\n', "\nThis is a\nmultiline system."),
        ('SYSTEM """This is a\nmultiline system."""', "This is a\nmultiline system."),
        ('SYSTEM """This is one line."""', "This is one line."),
        ('SYSTEM """\nWith "quotes" inside.\n"""\n', '\nWith "quotes" inside.\n'),
        ('SYSTEM """first\n\n\nafter blank lines"""', "first\n\n\nafter blank lines"),
        ('SYSTEM """\n  # not a comment\n"""', "\n  # not a comment\n"),
        ('SYSTEM """\nFROM inside is text\n"""', "\nFROM inside is text\n"),
        ('SYSTEM "single quotes\nalso span lines"', "single quotes\nalso span lines"),
        ('SYSTEM """a"b\n"c" """', 'a"b\n"c" '),
        ('SYSTEM """crlf\r\nkept"""', "crlf\r\nkept"),
        ('SYSTEM """\n\ttabs kept\n"""', "\n\ttabs kept\n"),
    ],
)
def test_multiline_values(text, expected):
    mf = parse_modelfile(f"FROM foo\n{text}\nPARAMETER seed 1\n")
    assert mf.system == expected
    assert mf.parameters == {"seed": 1}  # parsing resumes correctly after the block


def test_template_like_ollama_test():
    text = 'FROM foo\nTEMPLATE """{{ if .System }}<|sys|>\n\n{{ .System }}{{ end }}{{ .Prompt }}"""    \n'
    assert parse_modelfile(text).template == "{{ if .System }}<|sys|>\n\n{{ .System }}{{ end }}{{ .Prompt }}"


@pytest.mark.parametrize(
    "text,from_",
    [
        ('FROM "FOO  BAR  "', "FOO  BAR  "),
        ("FROM     FOOO BAR    ", "FOOO BAR"),
        ("FROM /what/is/the path ", "/what/is/the path"),
        ("FROM llama3:7b-instruct-q4_K_M", "llama3:7b-instruct-q4_K_M"),
        ("FROM hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M", "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M"),
        ("FROM ./model.gguf", "./model.gguf"),
        ("FROM llama # trailing", "llama # trailing"),
        ("PARAMETER seed 1\nFROM lemons make lemonade ", "lemons make lemonade"),
        ("\ufeffFROM bom", "bom"),
    ],
)
def test_from_values(text, from_):
    assert parse_modelfile(text).from_ == from_


# --------------------------------------------------------------------------------------------
# structure


def test_full_modelfile():
    mf = parse_modelfile(
        """
# a comment line
    # an indented comment
FROM llama3.2
ADAPTER ./lora.gguf
ADAPTER ./lora2.gguf
LICENSE MIT
LICENSE \"\"\"
Second license
\"\"\"
PARAMETER temperature 0.7
PARAMETER num_ctx 8192
PARAMETER use_mmap false
PARAMETER stop <|start_header_id|>
PARAMETER stop "<|eot_id|>"
PARAMETER stop \"\"\"### User:
\"\"\"
TEMPLATE {{ .Prompt }}
SYSTEM You are Mario.
MESSAGE user Is Toronto in Canada?
MESSAGE assistant yes: it is
MESSAGE system \"\"\"
multi
\"\"\"
REQUIRES 0.14.0
DRAFT ./draft.gguf
RENDERER qwen3
PARSER qwen3
"""
    )
    assert mf == Modelfile(
        from_="llama3.2",
        parameters={
            "temperature": 0.7,
            "num_ctx": 8192,
            "use_mmap": False,
            "stop": ["<|start_header_id|>", "<|eot_id|>", "### User:\n"],
        },
        template="{{ .Prompt }}",
        system="You are Mario.",
        messages=[
            {"role": "user", "content": "Is Toronto in Canada?"},
            {"role": "assistant", "content": "yes: it is"},
            {"role": "system", "content": "\nmulti\n"},
        ],
        adapters=["./lora.gguf", "./lora2.gguf"],
        license=["MIT", "\nSecond license\n"],
        requires="0.14.0",
        draft="./draft.gguf",
        renderer="qwen3",
        parser="qwen3",
    )
    assert mf.commands[0] == ("model", "llama3.2")
    assert ("message", "assistant: yes: it is") in mf.commands
    assert ("stop", "<|eot_id|>") in mf.commands


def _alternating(word: str) -> str:
    return "".join(c.upper() if i % 2 else c.lower() for i, c in enumerate(word))


@pytest.mark.parametrize("case", [str.upper, str.lower, str.capitalize, _alternating])
def test_instruction_names_are_case_insensitive(case):
    lines = [("from", "base"), ("parameter", "top_k 7"), ("system", "hello"), ("template", "t"),
             ("message", "user hi"), ("license", "L"), ("adapter", "a"), ("requires", "1.2")]
    mf = parse_modelfile("\n".join(f"{case(keyword)} {rest}" for keyword, rest in lines))
    assert (mf.from_, mf.parameters, mf.system, mf.template) == ("base", {"top_k": 7}, "hello", "t")
    assert (mf.messages, mf.license, mf.adapters, mf.requires) == ([{"role": "user", "content": "hi"}], ["L"], ["a"], "1.2")


def test_repeats_last_wins_for_single_values_and_stop_accumulates():
    mf = parse_modelfile(
        "FROM a\nSYSTEM one\nSYSTEM two\nTEMPLATE x\nTEMPLATE y\n"
        "PARAMETER temperature 0.1\nPARAMETER temperature 0.9\n"
        "PARAMETER stop A\nPARAMETER stop B\nPARAMETER stop A\nFROM /proj.gguf\n"
    )
    assert (mf.system, mf.template) == ("two", "y")
    assert mf.parameters == {"temperature": 0.9, "stop": ["A", "B", "A"]}
    assert (mf.from_, mf.extra_from) == ("a", ["/proj.gguf"])


def test_parameter_names_are_case_sensitive():
    with pytest.raises(ModelfileError) as exc:
        parse_modelfile("FROM a\nPARAMETER Temperature 1\n")
    assert str(exc.value) == "(line 2): unknown parameter 'Temperature'"


def test_windows_line_endings_and_utf16():
    text = "FROM bob\r\nPARAMETER num_ctx 4096\r\nSYSTEM You are a utf16 file.\r\n"
    expected = parse_modelfile(text)
    assert (expected.from_, expected.parameters, expected.system) == ("bob", {"num_ctx": 4096}, "You are a utf16 file.")
    assert parse_modelfile(text.encode("utf-8")) == expected
    assert parse_modelfile(b"\xef\xbb\xbf" + text.encode("utf-8")) == expected
    assert parse_modelfile(b"\xff\xfe" + text.encode("utf-16-le")) == expected
    assert parse_modelfile(b"\xfe\xff" + text.encode("utf-16-be")) == expected


def test_deprecated_parameters(caplog):
    with caplog.at_level(logging.WARNING):
        mf = parse_modelfile(
            "FROM a\nPARAMETER penalize_newline true\nPARAMETER numa whatever\n"
            "PARAMETER mirostat 2\nPARAMETER mirostat_tau 4.5\nPARAMETER mirostat_eta 0.2\n"
        )
    assert mf.parameters == {"mirostat": 2, "mirostat_tau": 4.5, "mirostat_eta": 0.2}
    assert "penalize_newline is deprecated" in caplog.text


def test_extra_blanks_between_parts_are_tolerated():
    mf = parse_modelfile("FROM a\nPARAMETER   top_k    5\nMESSAGE   user    hi there  \n")
    assert mf.parameters == {"top_k": 5}
    assert mf.messages == [{"role": "user", "content": "hi there"}]


def test_explicit_empty_values_differ_from_absent():
    mf = parse_modelfile('FROM a\nSYSTEM ""\nPARAMETER stop ""\n')
    assert mf.system == "" and mf.template is None and mf.parameters == {"stop": [""]}


@pytest.mark.parametrize("version,stored", [("0.14.0", "0.14.0"), ("v0.14.0", "0.14.0"), ("1", "1"),
                                            ("1.2", "1.2"), ("1.2.3-rc.1+build.5", "1.2.3-rc.1+build.5")])
def test_requires_valid(version, stored):
    assert parse_modelfile(f"FROM a\nREQUIRES {version}\n").requires == stored


# --------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(
    "text,message",
    [
        ("", "no FROM line"),
        ("# only a comment\n\n", "no FROM line"),
        ("PARAMETER temperature 1", "no FROM line"),
        ("PARAMETER bogus 1\nSYSTEM x", "no FROM line"),  # FROM is checked before parameters
        ("\nFROM foo\nBADCOMMAND param1 value1\n", f"(line 3): {INVALID_COMMAND}"),
        ("FROM foo\nFROM2 x\n", f"(line 2): {INVALID_COMMAND}"),
        ("FROM foo\nSYSTEM: x\n", f"(line 2): {INVALID_COMMAND}"),
        ("FROM foo\nBOGUS", f"(line 2): {INVALID_COMMAND}"),
        ("FROM foo\n\nMESSAGE badguy I'm a bad guy!\n", f"(line 3): {INVALID_ROLE}"),
        ("FROM foo\nMESSAGE tool result\n", f"(line 2): {INVALID_ROLE}"),
        ("FROM foo\nMESSAGE User hi\n", f"(line 2): {INVALID_ROLE}"),
        ("FROM foo\nMESSAGE user: hi\n", f"(line 2): {INVALID_ROLE}"),
        ("FROM foo\nMESSAGE system\n", "(line 2): unexpected EOF: MESSAGE system has no value"),
        ("FROM foo\nMESSAGE system", "(line 2): unexpected EOF: MESSAGE system has no value"),
        ("FROM foo\nPARAMETER param1\n", "(line 2): unexpected EOF: PARAMETER param1 has no value"),
        ("FROM foo\nPARAMETER", "(line 2): unexpected EOF: PARAMETER has no value"),
        ("FROM\n", "(line 1): unexpected EOF: FROM has no value"),
        ("FROM foo\nSYSTEM", "(line 2): unexpected EOF: SYSTEM has no value"),
        ("FROM foo\nPARAMETER temp-erature 1\n", "(line 2): invalid character '-' in PARAMETER name 'temp'"),
        ('FROM foo\nSYSTEM """This is a multiline system.""\n', '(line 2): unexpected EOF: unterminated """ quote'),
        ('FROM foo\nSYSTEM """\nnever\nclosed\n', '(line 2): unexpected EOF: unterminated """ quote'),
        ('FROM foo\nSYSTEM """closed""" then text\n', '(line 2): unexpected EOF: unterminated """ quote'),
        ('FROM foo\n\n\nSYSTEM "\n', '(line 4): unexpected EOF: unterminated " quote'),
        ("FROM foo\r\nSYSTEM x\r\nBAD y\r\n", f"(line 3): {INVALID_COMMAND}"),
        ("FROM foo\nPARAMETER bogus 1\n", "(line 2): unknown parameter 'bogus'"),
        ("FROM foo\nPARAMETER num_ctx 4k\n", "(line 2): invalid int value [4k]"),
        ("FROM foo\nPARAMETER temperature hot\n", "(line 2): invalid float value [hot]"),
        ("FROM foo\nPARAMETER use_mmap yes\n", "(line 2): invalid bool value [yes]"),
        ("FROM foo\nREQUIRES latest\n", "(line 2): requires must be a valid semver (e.g. 0.14.0)"),
        ("FROM foo\nREQUIRES 1.2.3.4\n", "(line 2): requires must be a valid semver (e.g. 0.14.0)"),
        ("FROM foo\nREQUIRES 01.2.3\n", "(line 2): requires must be a valid semver (e.g. 0.14.0)"),
        ("FROM foo\nREQUIRES 1.2-rc\n", "(line 2): requires must be a valid semver (e.g. 0.14.0)"),
    ],
)
def test_errors(text, message):
    with pytest.raises(ModelfileError) as exc:
        parse_modelfile(text)
    assert str(exc.value) == message
    assert isinstance(exc.value, InvalidRequest) and exc.value.status == 400


def test_invalid_command_text_is_ollamas():
    assert ERR_INVALID_COMMAND == INVALID_COMMAND


# --------------------------------------------------------------------------------------------
# paths


def test_is_local_path(tmp_path):
    (tmp_path / "weights.gguf").write_bytes(b"x")
    (tmp_path / "llama3").mkdir()
    assert is_local_path("./x.gguf", tmp_path)
    assert is_local_path("../x.gguf", tmp_path)
    assert is_local_path("/abs/x.gguf", tmp_path)
    assert is_local_path("~/x.gguf", tmp_path)
    assert is_local_path("weights.gguf", tmp_path)  # exists next to the Modelfile
    assert is_local_path("llama3", tmp_path)  # an existing directory wins over the model name
    assert not is_local_path("llama3.2", tmp_path)
    assert not is_local_path("library/llama3:8b", tmp_path)
    assert not is_local_path("hf.co/user/repo:Q4_K_M", tmp_path)
    assert not is_local_path("", tmp_path)


def test_resolve_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "weights.gguf").write_bytes(b"x")
    mf = parse_modelfile(
        "FROM weights.gguf\nFROM ../proj.gguf\nADAPTER ./lora.gguf\nADAPTER ~/loras/b.gguf\n"
        "ADAPTER /abs/c.gguf\nDRAFT small-model\n"
    )
    resolved = mf.resolve_paths(tmp_path)
    assert resolved.from_ == str(tmp_path / "weights.gguf")
    assert resolved.extra_from == [str(tmp_path.parent / "proj.gguf")]
    assert resolved.adapters == [str(tmp_path / "lora.gguf"), str(tmp_path / "home" / "loras" / "b.gguf"), "/abs/c.gguf"]
    assert resolved.draft == "small-model"
    assert mf.from_ == "weights.gguf", "resolve_paths returns a copy"
    assert parse_modelfile("FROM llama3.2\n").resolve_paths(tmp_path).from_ == "llama3.2"


def test_resolve_unknown_user(tmp_path):
    with pytest.raises(ModelfileError, match="failed to find user 'no_such_user_xyz'"):
        parse_modelfile("FROM ~no_such_user_xyz/m.gguf\n").resolve_paths(tmp_path)


# --------------------------------------------------------------------------------------------
# ollama show --modelfile


def test_render_exact_text():
    text = render_modelfile(
        "llama3.2:latest",
        "/models/blobs/sha256-aaa",
        template="{{ .System }}\n{{ .Prompt }}",
        system="You are Mario.",
        parameters={"stop": ["<|eot_id|>"], "temperature": 1.0, "num_ctx": 8192},
        messages=[{"role": "user", "content": 'say "hi"\nplease'}],
        licenses=["MIT"],
        adapters=["/models/blobs/sha256-bbb"],
        projectors=["/models/blobs/sha256-ccc"],
    )
    assert text == (
        '# Modelfile generated by "ollama show"\n'
        "# To build a new Modelfile based on this, replace FROM with:\n"
        "# FROM llama3.2:latest\n"
        "\n"
        "FROM /models/blobs/sha256-aaa\n"
        "ADAPTER /models/blobs/sha256-bbb\n"
        "FROM /models/blobs/sha256-ccc\n"
        'TEMPLATE "{{ .System }}\n{{ .Prompt }}"\n'
        "SYSTEM You are Mario.\n"
        "PARAMETER stop <|eot_id|>\n"
        "PARAMETER temperature 1\n"
        "PARAMETER num_ctx 8192\n"
        "LICENSE MIT\n"
        'MESSAGE user """say "hi"\nplease"""\n'
    )


@pytest.mark.parametrize(
    "value,line",
    [
        ("plain words", "SYSTEM plain words"),  # Ollama leaves single-line values bare
        ('has "quotes"', 'SYSTEM has "quotes"'),
        ("two\nlines", 'SYSTEM "two\nlines"'),  # newline, no double quote: "..."
        ('two\n"lines"', 'SYSTEM """two\n"lines""""'),  # newline and a quote: """..."""
        (" lead", 'SYSTEM " lead"'),
        ("trail ", 'SYSTEM "trail "'),
        ('"starts with quote', 'SYSTEM """"starts with quote"""'),
        ("\ttab", 'SYSTEM "\ttab"'),
    ],
)
def test_render_quoting(value, line):
    text = render_modelfile("m", "/b", system=value)
    assert text.rstrip("\n").endswith(line)
    assert parse_modelfile(text).system == value


def test_render_omits_absent_parts():
    text = render_modelfile("m:latest", "/blob", system="", template=None)
    assert text.endswith("FROM /blob\n")
    assert "TEMPLATE" not in text and "SYSTEM" not in text
    assert "TEMPLATE \n" in render_modelfile("m", "/blob", template="")  # present but empty


ROUND_TRIPS = [
    {},
    {"template": "{{ .Prompt }}", "system": "You are a bot."},
    {"template": '{{ if .System }}<|sys|>\n{{ .System }}{{ end }}"{{ .Prompt }}"\n', "system": "\nmulti\nline\n"},
    {"system": "  padded  ", "licenses": ["MIT", "Line one\nLine two", '"quoted" license', ""]},
    {"parameters": {"stop": ["<|eot_id|>", "\n\n", " ", "User:"], "temperature": 0.7, "top_k": 20,
                    "use_mmap": False, "min_p": 0.05, "num_predict": -1, "num_ctx": 1048576,
                    "repeat_penalty": 1.0, "mirostat_eta": 1e-05}},
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": 'a "quote"\nsecond'},
                  {"role": "assistant", "content": "role: like text"}, {"role": "user", "content": ""}]},
    {"adapters": ["/blobs/sha256-a", "/blobs/sha256-b"], "projectors": ["/blobs/sha256-p"],
     "draft": "/blobs/sha256-d", "renderer": "qwen3", "parser": "qwen3"},
    {"system": "crlf\r\ninside", "template": "\ttabbed\t"},
]


@pytest.mark.parametrize("parts", ROUND_TRIPS)
def test_render_parse_round_trip(parts):
    text = render_modelfile("name:tag", "/models/blobs/sha256-main", **parts)
    mf = parse_modelfile(text)
    assert mf.from_ == "/models/blobs/sha256-main"
    assert mf.extra_from == list(parts.get("projectors", []))
    assert mf.template == parts.get("template")
    assert mf.system == (parts.get("system") or None)
    assert mf.parameters == parts.get("parameters", {})
    assert mf.messages == parts.get("messages", [])
    assert mf.license == parts.get("licenses", [])
    assert mf.adapters == parts.get("adapters", [])
    assert (mf.draft, mf.renderer, mf.parser) == (parts.get("draft"), parts.get("renderer"), parts.get("parser"))


def test_parse_render_parse_is_stable():
    source = 'FROM x\nSYSTEM """a "b"\nc"""\nPARAMETER stop END\nPARAMETER stop "  "\nMESSAGE user hi\nLICENSE L\n'
    first = parse_modelfile(source)
    text = render_modelfile("x", first.from_, system=first.system, parameters=first.parameters,
                            messages=first.messages, licenses=first.license)
    assert parse_modelfile(text) == first


# --------------------------------------------------------------------------------------------
# /api/create body


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_create_request_for_model_name():
    mf = parse_modelfile(
        "FROM llama3.2\nPARAMETER temperature 0.5\nPARAMETER top_k 1\nPARAMETER stop a\nPARAMETER stop b\n"
        "SYSTEM You are a bot.\nLICENSE license1\nLICENSE license2\nMESSAGE user Hello there!\n"
        'TEMPLATE ""\nREQUIRES v0.14.0\n'
    )
    assert to_create_request(mf) == {
        "from": "llama3.2",
        "system": "You are a bot.",
        "requires": "0.14.0",
        "license": ["license1", "license2"],
        "parameters": {"temperature": 0.5, "top_k": 1, "stop": ["a", "b"]},
        "messages": [{"role": "user", "content": "Hello there!"}],
    }


def test_create_request_with_local_files(tmp_path):
    (tmp_path / "model.gguf").write_bytes(b"weights")
    (tmp_path / "adapters").mkdir()
    (tmp_path / "adapters" / "lora.gguf").write_bytes(b"lora")
    (tmp_path / "adapters" / "notes.txt").write_text("ignored")
    mf = parse_modelfile("FROM ./model.gguf\nADAPTER adapters\n")
    req = to_create_request(mf, tmp_path)
    assert req == {"files": {"model.gguf": _sha(b"weights")}, "adapters": {"lora.gguf": _sha(b"lora")}}
    assert collect_files(tmp_path / "adapters") == {"lora.gguf": tmp_path / "adapters" / "lora.gguf"}
    # already-resolved absolute paths give the same body from any directory
    assert to_create_request(mf.resolve_paths(tmp_path), os.sep) == req


def test_create_request_missing_local_file(tmp_path):
    mf = parse_modelfile("FROM ./missing.gguf\n")
    with pytest.raises(ModelfileError, match="no such file or directory"):
        to_create_request(mf, tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelfileError, match="no GGUF files found"):
        to_create_request(parse_modelfile("FROM ./empty\n"), tmp_path)


def test_create_request_copies_lists(tmp_path: Path):
    mf = parse_modelfile("FROM m\nPARAMETER stop x\n")
    req = to_create_request(mf, tmp_path)
    req["parameters"]["stop"].append("y")  # type: ignore[index]
    assert mf.parameters["stop"] == ["x"]

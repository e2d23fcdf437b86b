"""Options table, JSON validation (Go FromMap), Modelfile strings (Go FormatParams), /api/show text."""

from __future__ import annotations

import logging
import math

import pytest

from ollama_nb.base.errors import InvalidRequest
from ollama_nb.models.options import (
    LOAD_OPTIONS,
    OPTION_SPECS,
    default_options,
    format_parameters,
    format_value,
    go_quote,
    merge_options,
    parse_parameter_value,
    validate_options,
)

# name, type, Ollama default (DefaultOptions / documented), load_time, deprecated, ignored
TABLE = [
    ("num_ctx", int, 4096, True, False, False),
    ("num_batch", int, 512, True, False, False),
    ("num_gpu", int, -1, True, False, False),
    ("main_gpu", int, None, True, False, False),
    ("use_mmap", bool, None, True, False, False),
    ("num_thread", int, 0, True, False, False),
    ("draft_num_predict", int, 0, False, False, False),  # Ollama: 4 with a draft model, else 0
    ("num_keep", int, 4, False, False, False),
    ("seed", int, -1, False, False, False),
    ("num_predict", int, -1, False, False, False),
    ("top_k", int, 40, False, False, False),
    ("top_p", float, 0.9, False, False, False),
    ("min_p", float, 0.0, False, False, False),
    ("typical_p", float, 1.0, False, False, False),
    ("repeat_last_n", int, 64, False, False, False),
    ("temperature", float, 0.8, False, False, False),
    ("repeat_penalty", float, 1.0, False, False, False),
    ("presence_penalty", float, 0.0, False, False, False),
    ("frequency_penalty", float, 0.0, False, False, False),
    ("stop", list, [], False, False, False),
    ("mirostat", int, 0, False, True, False),
    ("mirostat_tau", float, 5.0, False, True, False),
    ("mirostat_eta", float, 0.1, False, True, False),
    ("penalize_newline", bool, True, False, True, True),
    ("low_vram", bool, False, True, True, True),
    ("f16_kv", bool, True, True, True, True),
    ("logits_all", bool, False, True, True, True),
    ("vocab_only", bool, False, True, True, True),
    ("use_mlock", bool, False, True, True, True),
    ("numa", bool, False, True, True, True),
    ("tfs_z", float, 1.0, False, True, True),
]


@pytest.mark.parametrize("name,typ,default,load_time,deprecated,ignored", TABLE)
def test_spec_table(name, typ, default, load_time, deprecated, ignored):
    spec = OPTION_SPECS[name]
    assert spec.name == name
    assert spec.type is typ
    assert spec.default == default
    assert spec.load_time is load_time
    assert spec.deprecated is deprecated
    assert spec.ignored is ignored
    assert spec.doc


def test_no_unexpected_specs():
    assert set(OPTION_SPECS) == {row[0] for row in TABLE}


def test_load_options_are_exactly_the_runner_options():
    assert LOAD_OPTIONS == {"num_ctx", "num_batch", "num_gpu", "main_gpu", "use_mmap", "num_thread"}


def test_default_options(monkeypatch):
    monkeypatch.delenv("OLLAMA_CONTEXT_LENGTH", raising=False)
    d = default_options()
    assert d["num_ctx"] == 4096
    assert d["temperature"] == 0.8 and d["top_k"] == 40 and d["seed"] == -1
    assert d["stop"] == [] and d["mirostat"] == 0
    # unset options and ignored ones are absent, not None
    for absent in ("main_gpu", "use_mmap", "low_vram", "tfs_z", "numa", "penalize_newline"):
        assert absent not in d
    d["stop"].append("x")
    assert default_options()["stop"] == [], "the spec default must not be shared"
    monkeypatch.setenv("OLLAMA_CONTEXT_LENGTH", "32768")
    assert default_options()["num_ctx"] == 32768


# --------------------------------------------------------------------------------------------
# validate_options


@pytest.mark.parametrize(
    "key,value,expected",
    [
        ("num_ctx", 8192, 8192),
        ("num_ctx", 8192.0, 8192),  # JSON numbers are float64 in Go; int64(f) accepts them
        ("num_predict", 5.7, 5),  # ...and truncates toward zero
        ("seed", -2.9, -2),
        ("main_gpu", 0, 0),
        ("main_gpu", 1.0, 1),
        ("temperature", 1, 1.0),
        ("temperature", 0.25, 0.25),
        ("top_p", 0, 0.0),
        ("use_mmap", False, False),
        ("use_mmap", True, True),
        ("stop", ["a", "b"], ["a", "b"]),
        ("stop", [], []),
        ("stop", "USER:", ["USER:"]),
        ("stop", ("x",), ["x"]),
        ("mirostat", 2, 2),
        ("mirostat_tau", 4, 4.0),
    ],
)
@pytest.mark.parametrize("strict", [False, True])
def test_validate_accepts(key, value, expected, strict):
    out = validate_options({key: value}, strict=strict)
    assert out == {key: expected}
    assert type(out[key]) is type(expected)


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("num_ctx", "4096", 'option "num_ctx" must be of type integer'),
        ("num_ctx", True, 'option "num_ctx" must be of type integer'),
        ("num_ctx", [1], 'option "num_ctx" must be of type integer'),
        ("num_ctx", math.nan, 'option "num_ctx" must be of type integer'),
        ("main_gpu", "0", 'option "main_gpu" must be of type integer'),
        ("temperature", "0.7", 'option "temperature" must be of type float32'),
        ("temperature", False, 'option "temperature" must be of type float32'),
        ("top_p", {"v": 1}, 'option "top_p" must be of type float32'),
        ("use_mmap", 1, 'option "use_mmap" must be of type boolean'),
        ("use_mmap", "true", 'option "use_mmap" must be of type boolean'),
        ("stop", 5, 'option "stop" must be of type array'),
        ("stop", {"a": 1}, 'option "stop" must be of type array'),
        ("stop", ["a", 1], 'option "stop" must be of an array of strings'),
        ("mirostat", "2", 'option "mirostat" must be of type integer'),
    ],
)
@pytest.mark.parametrize("strict", [False, True])
def test_validate_type_errors(key, value, message, strict):
    with pytest.raises(InvalidRequest) as exc:
        validate_options({key: value}, strict=strict)
    assert str(exc.value) == message
    assert exc.value.status == 400


def test_lenient_ignores_unknown_with_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="ollama_nb.options"):
        out = validate_options({"temperature": 0.5, "bogus": 1, "Temperature": 2}, strict=False)
    assert out == {"temperature": 0.5}
    assert "bogus" in caplog.text and "Temperature" in caplog.text


@pytest.mark.parametrize("key", ["bogus", "num_gqa", "Temperature", ""])
def test_strict_rejects_unknown(key):
    with pytest.raises(InvalidRequest) as exc:
        validate_options({"temperature": 0.5, key: 1}, strict=True)
    assert str(exc.value) == f"unknown parameter '{key}'"


@pytest.mark.parametrize("strict", [False, True])
def test_ignored_deprecated_are_dropped_unchecked(strict, caplog):
    with caplog.at_level(logging.WARNING, logger="ollama_nb.options"):
        out = validate_options({"low_vram": "not even a bool", "numa": True, "top_k": 3}, strict=strict)
    assert out == {"top_k": 3}
    assert "low_vram" in caplog.text


def test_null_values_are_unset_and_none_is_empty():
    assert validate_options({"temperature": None, "stop": None}, strict=True) == {}
    assert validate_options(None, strict=False) == {}


def test_validate_keeps_order_and_rejects_non_mapping():
    assert list(validate_options({"top_k": 1, "seed": 2, "stop": []}, strict=True)) == ["top_k", "seed", "stop"]
    with pytest.raises(InvalidRequest):
        validate_options(["temperature"], strict=False)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# parse_parameter_value (Go strconv via FormatParams)


@pytest.mark.parametrize(
    "name,text,expected",
    [
        ("num_ctx", "4096", 4096),
        ("seed", "-1", -1),
        ("top_k", "+5", 5),
        ("num_predict", "9223372036854775807", 2**63 - 1),
        ("main_gpu", "0", 0),
        ("temperature", "0.7", 0.7),
        ("temperature", "1", 1.0),
        ("top_p", "1.0", 1.0),
        ("min_p", "0.05", 0.05),
        ("min_p", ".5", 0.5),
        ("min_p", "5.", 5.0),
        ("repeat_penalty", "1e-3", 0.001),
        ("repeat_penalty", "1E+2", 100.0),
        ("repeat_penalty", "-0.25", -0.25),
        ("repeat_penalty", "1_000.5", 1000.5),  # Go float syntax allows digit separators
        ("repeat_penalty", "0x1p-2", 0.25),  # and hex floats
        ("temperature", "0.1234567891", 0.12345679),  # rounded to float32, shortest digits
        ("use_mmap", "true", True),
        ("use_mmap", "1", True),
        ("use_mmap", "0", False),
        ("stop", "### User:", ["### User:"]),
        ("stop", "", [""]),
        ("mirostat", "2", 2),
        ("mirostat_eta", "0.1", 0.1),
    ],
)
def test_parse_parameter_value(name, text, expected):
    value = parse_parameter_value(name, text)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize("text", ["1", "t", "T", "TRUE", "true", "True"])
def test_parse_bool_true_spellings(text):
    assert parse_parameter_value("use_mmap", text) is True


@pytest.mark.parametrize("text", ["0", "f", "F", "FALSE", "false", "False"])
def test_parse_bool_false_spellings(text):
    assert parse_parameter_value("use_mmap", text) is False


@pytest.mark.parametrize(
    "name,text,message",
    [
        ("num_ctx", "abc", "invalid int value [abc]"),
        ("num_ctx", "1.5", "invalid int value [1.5]"),
        ("num_ctx", "1_000", "invalid int value [1_000]"),
        ("num_ctx", " 5", "invalid int value [ 5]"),
        ("num_ctx", "", "invalid int value []"),
        ("num_ctx", "0x10", "invalid int value [0x10]"),
        ("seed", "9223372036854775808", "invalid int value [9223372036854775808]"),
        ("main_gpu", "one", "invalid int value [one]"),
        ("temperature", "abc", "invalid float value [abc]"),
        ("temperature", "", "invalid float value []"),
        ("temperature", "1.2.3", "invalid float value [1.2.3]"),
        ("temperature", "1__0", "invalid float value [1__0]"),
        ("temperature", "_1", "invalid float value [_1]"),
        ("temperature", "0.7 ", "invalid float value [0.7 ]"),
        ("temperature", "1e39", "invalid float value [1e39]"),  # beyond float32: Go ErrRange
        ("temperature", "inf", "invalid float value [inf]"),
        ("temperature", "NaN", "invalid float value [NaN]"),
        ("use_mmap", "yes", "invalid bool value [yes]"),
        ("use_mmap", "tRuE", "invalid bool value [tRuE]"),
        ("use_mmap", "2", "invalid bool value [2]"),
        ("bogus", "1", "unknown parameter 'bogus'"),
        ("Temperature", "1", "unknown parameter 'Temperature'"),
    ],
)
def test_parse_parameter_value_errors(name, text, message):
    with pytest.raises(InvalidRequest) as exc:
        parse_parameter_value(name, text)
    assert str(exc.value) == message


# --------------------------------------------------------------------------------------------
# merge_options


def test_merge_precedence_defaults_model_request():
    defaults = {"temperature": 0.8, "top_k": 40, "num_ctx": 4096}
    model = {"temperature": 0.2, "num_ctx": 8192}
    request = {"temperature": 1.5}
    assert merge_options(defaults, model, request) == {"temperature": 1.5, "top_k": 40, "num_ctx": 8192}


def test_merge_stop_is_replaced_not_extended():
    merged = merge_options({"stop": []}, {"stop": ["<|eot|>", "User:"]}, {"stop": ["END"]})
    assert merged["stop"] == ["END"]
    assert merge_options({"stop": ["a"]}, {"stop": []})["stop"] == []  # explicit [] clears


def test_merge_none_never_overrides_and_layers_may_be_missing():
    assert merge_options({"seed": 3}, None, {"seed": None}, {}) == {"seed": 3}


def test_merge_does_not_alias_lists():
    model = {"stop": ["a"]}
    merged = merge_options(model)
    merged["stop"].append("b")
    assert model == {"stop": ["a"]}


# --------------------------------------------------------------------------------------------
# /api/show parameters text


def test_format_parameters_exact_text():
    text = format_parameters({"stop": ["<|eot_id|>", 'say "x"'], "temperature": 0.7, "num_ctx": 8192, "use_mmap": False})
    assert text == (
        'stop                           "<|eot_id|>"\n'
        'stop                           "say \\"x\\""\n'
        "temperature                    0.7\n"
        "num_ctx                        8192\n"
        "use_mmap                       false"
    )


def test_format_parameters_matches_ollama_test_after_whitespace_normalising():
    # server/routes_test.go: seed 42, top_p 0.9, stop [foo bar] -> normalised, sorted lines
    text = format_parameters({"seed": 42, "top_p": 0.9, "stop": ["foo", "bar"]})
    lines = sorted(" ".join(line.split()) for line in text.split("\n"))
    assert lines == ["seed 42", 'stop "bar"', 'stop "foo"', "top_p 0.9"]
    for line in text.split("\n"):
        assert line[30] == " " and line[:30].rstrip() in ("seed", "top_p", "stop")


def test_format_parameters_long_key_and_empty():
    assert format_parameters({}) == ""
    key = "k" * 35
    assert format_parameters({key: 1}) == f"{key} 1"


@pytest.mark.parametrize(
    "value,text",
    [
        (1.0, "1"),
        (0.7, "0.7"),
        (-2.5, "-2.5"),
        (0.0, "0"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (1.5e-7, "1.5e-07"),
        (123456.7, "123456.7"),
        (100000.0, "100000"),
        (1000000.0, "1e+06"),
        (1234567.0, "1.234567e+06"),
        (1e21, "1e+21"),
        (1e100, "1e+100"),
        (1000000, "1000000"),  # ints stay whole (Ollama would print 1e+06 and fail to re-parse it)
        (-1, "-1"),
        (True, "true"),
        (False, "false"),
        ("raw", "raw"),
    ],
)
def test_format_value_go_v(value, text):
    assert format_value(value) == text


@pytest.mark.parametrize(
    "raw,quoted",
    [
        ("plain", '"plain"'),
        ('a"b', '"a\\"b"'),
        ("back\\slash", '"back\\\\slash"'),
        ("\n\t\r", '"\\n\\t\\r"'),
        ("\x01\x7f", '"\\x01\\x7f"'),
        ("\a\b\f\v", '"\\a\\b\\f\\v"'),
        ("héllo 👋", '"héllo 👋"'),
        ("\u200b\u00a0", '"\\u200b\\u00a0"'),
        ("", '""'),
    ],
)
def test_go_quote(raw, quoted):
    assert go_quote(raw) == quoted

"""Runtime options (Modelfile ``PARAMETER`` / API ``options``): one table, Ollama's rules.

Every place that reads an option (the API, ``/api/create``, the Modelfile parser, the loader
deciding whether a model must be reloaded, ``/api/show``) goes through :data:`OPTION_SPECS`, so a
name, a type or a default can never disagree between two code paths. Error texts are Ollama's
(``api/types.go``: ``Options.FromMap`` for JSON, ``FormatParams`` for Modelfile strings) because
clients and scripts string-match them.
"""

from __future__ import annotations

import logging
import math
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from ..base import config
from ..base.errors import InvalidRequest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OptionSpec:
    """One option. ``type`` is int, float, bool or list (a list of strings: only ``stop``).

    ``load_time`` options are baked into the loaded llama.cpp context, so a request that changes
    one forces a reload. ``deprecated`` follows Ollama; ``ignored`` options are accepted and
    dropped with a warning (Ollama does the same), the deprecated-but-honoured ones (mirostat*)
    reach llama.cpp because it still implements them.
    """

    name: str
    type: type
    default: object
    load_time: bool = False
    deprecated: bool = False
    doc: str = ""
    ignored: bool = False


def _spec(name: str, typ: type, default: object, doc: str, **kw: bool) -> OptionSpec:
    return OptionSpec(name=name, type=typ, default=default, doc=doc, **kw)


_SPECS = [
    # Runner options (api/types.go Runner): fixed when the model is loaded.
    _spec("num_ctx", int, 4096, "context window in tokens; default from OLLAMA_CONTEXT_LENGTH", load_time=True),
    _spec("num_batch", int, 512, "prompt-processing batch size", load_time=True),
    _spec("num_gpu", int, -1, "layers to offload to the GPU; -1 automatic, 0 CPU only", load_time=True),
    _spec("main_gpu", int, None, "GPU that holds small tensors; unset by default", load_time=True),
    _spec("use_mmap", bool, None, "memory-map the weights; unset means automatic", load_time=True),
    _spec("num_thread", int, 0, "CPU threads; 0 lets the runtime decide", load_time=True),
    # Speculative decoding from the prompt (runtime/drafting.py). Off by default, as in Ollama
    # without a draft model: past 256 cached tokens llama.cpp sums a one-token step and a
    # many-token batch in different orders, so a near-tie may go the other way with it on.
    _spec("draft_num_predict", int, 0,
          "most tokens drafted per step from the prompt and the reply so far (speculative decoding); 0 off"),
    # Sampling options (api/types.go Options): may change on every request.
    _spec("num_keep", int, 4, "prompt tokens kept when the context shifts"),
    _spec("seed", int, -1, "RNG seed; -1 random"),
    _spec("num_predict", int, -1, "max tokens to generate; -1 unbounded (done_reason 'length')"),
    _spec("top_k", int, 40, "sample from the k most likely tokens"),
    _spec("top_p", float, 0.9, "nucleus sampling mass"),
    _spec("min_p", float, 0.0, "drop tokens below min_p * p(best)"),
    _spec("typical_p", float, 1.0, "locally typical sampling; 1.0 off"),
    _spec("repeat_last_n", int, 64, "window for repetition penalties; 0 off, -1 num_ctx"),
    _spec("temperature", float, 0.8, "sampling temperature"),
    _spec("repeat_penalty", float, 1.0, "penalty for repeated tokens; 1.0 off"),
    _spec("presence_penalty", float, 0.0, "flat penalty for tokens already present"),
    _spec("frequency_penalty", float, 0.0, "penalty scaled by token frequency"),
    _spec("stop", list, [], "stop sequences; a layer's list replaces, never extends"),
    # Deprecated by Ollama but still implemented by llama.cpp, so honoured here.
    _spec("mirostat", int, 0, "Mirostat sampling: 0 off, 1 v1, 2 v2", deprecated=True),
    _spec("mirostat_tau", float, 5.0, "Mirostat target entropy", deprecated=True),
    _spec("mirostat_eta", float, 0.1, "Mirostat learning rate", deprecated=True),
    # Deprecated and ignored (accepted so old Modelfiles keep working).
    _spec("penalize_newline", bool, True, "ignored", deprecated=True, ignored=True),
    _spec("low_vram", bool, False, "ignored", load_time=True, deprecated=True, ignored=True),
    _spec("f16_kv", bool, True, "ignored", load_time=True, deprecated=True, ignored=True),
    _spec("logits_all", bool, False, "ignored", load_time=True, deprecated=True, ignored=True),
    _spec("vocab_only", bool, False, "ignored", load_time=True, deprecated=True, ignored=True),
    _spec("use_mlock", bool, False, "ignored", load_time=True, deprecated=True, ignored=True),
    _spec("numa", bool, False, "ignored", load_time=True, deprecated=True, ignored=True),
    _spec("tfs_z", float, 1.0, "ignored (removed from llama.cpp)", deprecated=True, ignored=True),
]

OPTION_SPECS: dict[str, OptionSpec] = {s.name: s for s in _SPECS}

#: Options whose change requires reloading the model (ignored ones never trigger a reload).
LOAD_OPTIONS: frozenset[str] = frozenset(s.name for s in _SPECS if s.load_time and not s.ignored)

def default_options() -> dict[str, object]:
    """Ollama's ``DefaultOptions()``: the bottom layer for :func:`merge_options`.

    Unset options (main_gpu, use_mmap) and ignored ones are left out so "not given" stays
    distinguishable from a value; num_ctx is read from the environment on each call.
    """
    out: dict[str, object] = {}
    for spec in _SPECS:
        if spec.ignored or spec.default is None:
            continue
        out[spec.name] = list(spec.default) if isinstance(spec.default, list) else spec.default
    out["num_ctx"] = config.context_length_default()
    return out


# ---------------------------------------------------------------------------------------------
# JSON values (API options, /api/create parameters)


def validate_options(raw: Mapping[str, object] | None, *, strict: bool) -> dict[str, object]:
    """Typed copy of ``raw`` checked like Go's ``Options.FromMap``.

    strict=False is the API ``options`` field: Ollama logs and ignores unknown keys so old
    clients keep working. strict=True is ``/api/create`` ``parameters``: a typo there would be
    stored in the model forever, so it is refused (``unknown parameter 'x'``, the CLI's text).
    Numbers follow Go's JSON decoding: every number is a float64, so an integer option accepts
    5.0 (and truncates 5.7 to 5, as Go's ``int64(f)`` does); a float option accepts 1.
    """
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise InvalidRequest("options must be an object")
    out: dict[str, object] = {}
    for key, value in raw.items():
        spec = OPTION_SPECS.get(key)
        if spec is None:
            if strict:
                raise InvalidRequest(f"unknown parameter '{key}'")
            log.warning("invalid option provided: %s", key)
            continue
        if spec.ignored:
            log.warning("parameter %s is deprecated and ignored", key)
            continue
        if value is None:  # Go: a JSON null leaves the option unset
            continue
        out[key] = _coerce_json(spec, value)
    return out


def _coerce_json(spec: OptionSpec, value: object) -> object:
    q = go_quote(spec.name)
    if spec.type is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and math.isfinite(value):
            return int(value)
        raise InvalidRequest(f"option {q} must be of type integer")
    if spec.type is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise InvalidRequest(f"option {q} must be of type float32")
    if spec.type is bool:
        if isinstance(value, bool):
            return value
        raise InvalidRequest(f"option {q} must be of type boolean")
    # list of strings (stop). A bare string is accepted too: OpenAI-style clients send one.
    if isinstance(value, str):
        return [value]
    if not isinstance(value, (list, tuple)):
        raise InvalidRequest(f"option {q} must be of type array")
    if not all(isinstance(item, str) for item in value):
        raise InvalidRequest(f"option {q} must be of an array of strings")
    return list(value)


# ---------------------------------------------------------------------------------------------
# Modelfile strings


_INT_RE = re.compile(r"[+-]?[0-9]+")
_DIGITS = r"[0-9](?:_?[0-9])*"
_DEC_FLOAT_RE = re.compile(rf"[+-]?(?:{_DIGITS}(?:\.(?:{_DIGITS})?)?|\.{_DIGITS})(?:[eE][+-]?{_DIGITS})?")
_HEX_FLOAT_RE = re.compile(r"[+-]?0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)[pP][+-]?[0-9]+")
_BOOLS = {
    **dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True),
    **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), False),
}


def parse_parameter_value(name: str, text: str) -> object:
    """The typed value of ``PARAMETER name text``, parsed with Go's strconv rules.

    Ollama's CLI runs ``api.FormatParams`` on every PARAMETER line, so the accepted spellings
    (``true``/``T``/``1`` for booleans, no ``_`` in integers) and the error texts
    (``invalid int value [abc]``: Go prints the one-element slice) are exactly Go's. Floats are
    rounded to float32 and kept as their shortest decimal, which is what Ollama stores.
    ``stop`` gives a one-element list; callers accumulate repeated lines.
    """
    spec = OPTION_SPECS.get(name)
    if spec is None:
        raise InvalidRequest(f"unknown parameter '{name}'")
    if spec.type is int:
        if _INT_RE.fullmatch(text) and -(2**63) <= int(text) < 2**63:
            return int(text)
        raise InvalidRequest(f"invalid int value [{text}]")
    if spec.type is float:
        value = _parse_float32(text)
        if value is None:
            raise InvalidRequest(f"invalid float value [{text}]")
        return value
    if spec.type is bool:
        if text in _BOOLS:
            return _BOOLS[text]
        raise InvalidRequest(f"invalid bool value [{text}]")
    return [text]


def _parse_float32(text: str) -> float | None:
    """Go's ``strconv.ParseFloat(text, 32)`` as the shortest float32 decimal, else None.

    Non-finite values are refused: Go would parse "inf" but then fail to encode it as JSON,
    so refusing early gives the clearer error.
    """
    if _DEC_FLOAT_RE.fullmatch(text):
        value = float(text.replace("_", ""))
    elif _HEX_FLOAT_RE.fullmatch(text):
        value = float.fromhex(text)
    else:  # includes "inf"/"nan", see above
        return None
    try:
        (f32,) = struct.unpack("f", struct.pack("f", value))
    except OverflowError:  # beyond float32 range: Go's ErrRange
        return None
    if not math.isfinite(f32):
        return None
    for digits in range(1, 10):
        short = float(f"{f32:.{digits}g}")
        if struct.pack("f", short) == struct.pack("f", f32):
            return short
    return f32


# ---------------------------------------------------------------------------------------------
# Layers and text


def merge_options(*layers: Mapping[str, object] | None) -> dict[str, object]:
    """Later layers win (defaults < model params < request options).

    A list value (``stop``) replaces the lower layer's list rather than extending it, as Go's
    FromMap assigns the whole slice; an explicit ``[]`` therefore clears inherited stops.
    None values mean "not given" and never override.
    """
    out: dict[str, object] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if value is None:
                continue
            out[key] = list(value) if isinstance(value, (list, tuple)) else value
    return out


def format_parameters(params: Mapping[str, object]) -> str:
    """The ``parameters`` field of ``/api/show``: ``fmt.Sprintf("%-30s %#v", key, value)``.

    One line per value (each stop string on its own line), strings Go-quoted, numbers in Go's
    ``%v`` form (``1`` for 1.0, ``1e-05``), lines joined by ``\\n`` without a trailing newline.
    Integers are printed whole: Ollama prints them through float64 (``1e+06``), which its own
    Modelfile parser then rejects, so that quirk is not reproduced.
    """
    lines: list[str] = []
    for key, value in params.items():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            shown = go_quote(item) if isinstance(item, str) else format_value(item)
            lines.append(f"{key:<30} {shown}")
    return "\n".join(lines)


def format_value(value: object) -> str:
    """Go's ``fmt.Sprintf("%v", value)`` for a JSON scalar (the Modelfile PARAMETER text)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_float(value)
    return str(value)


def _go_float(value: float) -> str:
    """``%v`` of a float64, so ``/api/show`` text matches Ollama's byte for byte.

    Go's 'g' with shortest precision switches to ``d.ddde±XX`` when the decimal exponent is
    below -4 or at least 6 (``strconv.formatDigits`` sets eprec = 6), and never prints a
    trailing ``.0`` (1.0 is ``1``). Python's repr gives the same shortest digits.
    """
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign = "-" if value < 0 else ""
    _, digit_tuple, exponent = Decimal(repr(abs(value))).as_tuple()
    digits = "".join(map(str, digit_tuple))
    stripped = digits.rstrip("0")
    exponent = int(exponent) + len(digits) - len(stripped)
    digits = stripped
    point = len(digits) + exponent  # value = 0.<digits> * 10**point
    exp10 = point - 1
    if exp10 < -4 or exp10 >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return f"{sign}{digits}{'0' * (point - len(digits))}"
    return f"{sign}{digits[:point]}.{digits[point:]}"


_GO_ESCAPES = {"\a": r"\a", "\b": r"\b", "\f": r"\f", "\n": r"\n", "\r": r"\r", "\t": r"\t", "\v": r"\v"}


def go_quote(text: str) -> str:
    """Go's ``strconv.Quote``: printable runes kept (including non-ASCII), the rest escaped."""
    out = ['"']
    for ch in text:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        elif ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        elif 0xD800 <= ord(ch) <= 0xDFFF:  # not a valid rune: Go substitutes U+FFFD
            out.append("\\ufffd")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)

"""Model names and digests (Ollama's types/model/name.go and manifest/paths.go rules)."""

from __future__ import annotations

import doctest

import pytest

import ollama_nb.base.refs as refs_module
from ollama_nb.base.errors import InvalidDigest, InvalidModelName
from ollama_nb.base.refs import ModelRef, blob_filename, is_valid_name, parse_digest

PART80 = "8" * 80
PART350 = "3" * 350
HEX = "0123456789abcdef" * 4


def test_doctests() -> None:
    result = doctest.testmod(refs_module)
    assert result.attempted > 10
    assert result.failed == 0


@pytest.mark.parametrize(
    ("name", "full", "display"),
    [
        ("llama3.2", "registry.ollama.ai/library/llama3.2:latest", "llama3.2:latest"),
        ("llama3.2:1b", "registry.ollama.ai/library/llama3.2:1b", "llama3.2:1b"),
        ("user/m:tag", "registry.ollama.ai/user/m:tag", "user/m:tag"),
        ("library/m", "registry.ollama.ai/library/m:latest", "m:latest"),
        (
            "registry.ollama.ai/library/dolphin-mistral:7b-v2.6-dpo-laser-q6_K",
            "registry.ollama.ai/library/dolphin-mistral:7b-v2.6-dpo-laser-q6_K",
            "dolphin-mistral:7b-v2.6-dpo-laser-q6_K",
        ),
        ("REGISTRY.OLLAMA.AI/LIBRARY/M:T", "REGISTRY.OLLAMA.AI/LIBRARY/M:T", "M:T"),
        ("host/namespace/model:tag", "host/namespace/model:tag", "host/namespace/model:tag"),
        ("host/library/model:tag", "host/library/model:tag", "host/library/model:tag"),
        ("host:1234/ns/m", "host:1234/ns/m:latest", "host:1234/ns/m:latest"),
        (
            "host:https/namespace/model:tag",
            "host:https/namespace/model:tag",
            "host:https/namespace/model:tag",
        ),
        (
            "scheme://host:port/namespace/model:tag",
            "host:port/namespace/model:tag",
            "host:port/namespace/model:tag",
        ),
        (
            "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
            "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
            "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
        ),
        ("huggingface.co/u/r", "huggingface.co/u/r:latest", "huggingface.co/u/r:latest"),
        ("_why/_the/_lucky:_stiff", "_why/_the/_lucky:_stiff", "_why/_the/_lucky:_stiff"),
        ("h/nn/mm:t", "h/nn/mm:t", "h/nn/mm:t"),
        ("a..b", "registry.ollama.ai/library/a..b:latest", "a..b:latest"),
        (f"{PART80}/{PART80}/{PART80}:{PART80}", f"{PART80}/{PART80}/{PART80}:{PART80}", None),
        (f"{PART350}/{PART80}/{PART80}:{PART80}", f"{PART350}/{PART80}/{PART80}:{PART80}", None),
    ],
)
def test_valid_names(name: str, full: str, display: str | None) -> None:
    ref = ModelRef.parse(name)
    assert ref.full == full
    if display is not None:
        assert ref.display == display
    assert ModelRef.parse(ref.full) == ModelRef(*ref.manifest_parts)  # full form round-trips
    assert is_valid_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        ":",
        "/",
        "//",
        "//mm",
        "/nn/mm",
        "hh//",
        "m:",
        "n/m:",
        "mm:",
        "@",
        "@t",
        "m@d",
        "00@",
        "^",
        "-m",
        "hh/-nn/mm:tt",
        "hh/nn/-mm:tt",
        "hh/nn/mm:-tt",
        "-hh/nn/mm:tt",
        ".hidden",
        "..",
        "../x",
        "../../etc/passwd",
        "a/../b",
        "x/..",
        "bad name",
        "tab\tname",
        "m:t ag",
        "ns.dot/m",  # no dots in the namespace
        "host/name:space/model:tag",  # ":" only in the host
        "a/b/c/d",  # four parts
        "h/n/m:a:b",
        "m:t/x",
        "m:" + "t" * 81,
        "n" * 81 + "/m",
        "m" * 81,
        "h" * 351 + "/n/m",
        "mödel",  # ASCII only
        "m\x00",
        "m/",
        "http://m",
        "https://ns/m",  # the scheme applies only to a host
    ],
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidModelName) as info:
        ModelRef.parse(name)
    assert str(info.value) == "invalid model name"  # Ollama's error text, status 400
    assert info.value.status == 400
    assert not is_valid_name(name)


def test_parts_and_scheme() -> None:
    ref = ModelRef.parse("http://localhost:5000/me/model:v1")
    assert ref.manifest_parts == ("localhost:5000", "me", "model", "v1")
    assert ref.scheme == "http"
    assert ref.registry_url == "http://localhost:5000"
    assert ref.repository == "me/model"
    assert ModelRef.parse("m").registry_url == "https://registry.ollama.ai"


def test_huggingface_and_equality() -> None:
    assert ModelRef.parse("hf.co/u/r:Q4_K_M").is_huggingface
    assert ModelRef.parse("HF.CO/u/r").is_huggingface
    assert ModelRef.parse("huggingface.co/u/r").is_huggingface
    assert not ModelRef.parse("u/r").is_huggingface
    a, b = ModelRef.parse("Llama3:Latest"), ModelRef.parse("llama3")
    assert a != b and a.equal_fold(b)
    assert a.fold_key() == b.fold_key()
    assert str(a) == "Llama3:Latest"


def test_from_parts() -> None:
    assert ModelRef.from_parts("h", "n", "m", "t") == ModelRef.parse("h/n/m:t")
    for parts in [
        ("..", "n", "m", "t"),
        ("h", ".", "m", "t"),
        ("h", "n", "m", ".t"),
        ("h", "n", "", "t"),
    ]:
        assert ModelRef.from_parts(*parts) is None


def test_direct_construction_is_validated() -> None:
    with pytest.raises(InvalidModelName):
        ModelRef("registry.ollama.ai", "library", "../x", "latest")


@pytest.mark.parametrize(
    ("text", "want"),
    [
        (f"sha256:{HEX}", f"sha256:{HEX}"),
        (f"sha256-{HEX}", f"sha256:{HEX}"),
        (f"sha256:{HEX.upper()}", f"sha256:{HEX}"),
    ],
)
def test_valid_digests(text: str, want: str) -> None:
    assert parse_digest(text) == want
    assert blob_filename(text) == want.replace(":", "-")


@pytest.mark.parametrize(
    "text",
    [
        "",
        HEX,
        f"sha256:{HEX[:-1]}",
        f"sha256:{HEX}0",
        f"sha512:{HEX}",
        f"SHA256:{HEX}",
        f"sha256:{HEX[:-1]}g",
        "sha256:../../etc/passwd",
        f"sha256:{HEX}/../x",
        f"sha256:{HEX}\n",
        f" sha256:{HEX}",
        f"sha256_{HEX}",
        f"sha256:{HEX[:62]}/.",
    ],
)
def test_invalid_digests(text: str) -> None:
    with pytest.raises(InvalidDigest) as info:
        parse_digest(text)
    assert str(info.value) == "invalid digest format"
    with pytest.raises(InvalidDigest):
        blob_filename(text)

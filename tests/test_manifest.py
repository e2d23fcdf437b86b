"""Manifest and config blob JSON, byte for byte as Ollama writes them."""

from __future__ import annotations

import doctest
import hashlib
import json

import pytest

import ollama_nb.models.manifest as manifest_module
from ollama_nb.api.types import ModelDetails
from ollama_nb.base.errors import InvalidDigest
from ollama_nb.models.manifest import (
    MEDIA_TYPE_CONFIG,
    MEDIA_TYPE_MANIFEST,
    MEDIA_TYPE_MODEL,
    MEDIA_TYPE_PARAMS,
    MEDIA_TYPE_PROMPT,
    MEDIA_TYPE_TEMPLATE,
    TEMPLATE_MEDIA_TYPES,
    InvalidManifest,
    Layer,
    Manifest,
    ModelConfig,
    go_json,
)

D1, D2, D3 = ("sha256:" + c * 64 for c in "abc")

# What Go's json.NewEncoder(f).Encode(manifest.Manifest{...}) writes (manifest.WriteManifest).
OLLAMA_MANIFEST = (
    '{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",'
    f'"config":{{"mediaType":"application/vnd.docker.container.image.v1+json",'
    f'"digest":"{D1}","size":487}},'
    f'"layers":[{{"mediaType":"application/vnd.ollama.image.model","digest":"{D2}","size":98362432,'
    '"from":"/root/.ollama/models/blobs/sha256-x"},'
    f'{{"mediaType":"application/vnd.ollama.image.template","digest":"{D3}","size":1429}}]}}\n'
).encode()


def test_doctests() -> None:
    assert doctest.testmod(manifest_module).failed == 0


def test_media_types() -> None:
    assert MEDIA_TYPE_MANIFEST == "application/vnd.docker.distribution.manifest.v2+json"
    assert MEDIA_TYPE_CONFIG == "application/vnd.docker.container.image.v1+json"
    assert MEDIA_TYPE_MODEL == "application/vnd.ollama.image.model"
    assert MEDIA_TYPE_PARAMS == "application/vnd.ollama.image.params"
    assert TEMPLATE_MEDIA_TYPES == {MEDIA_TYPE_TEMPLATE, MEDIA_TYPE_PROMPT}
    assert MEDIA_TYPE_PROMPT == "application/vnd.ollama.image.prompt"


def test_serialises_exactly_as_ollama() -> None:
    m = Manifest(
        config=Layer(mediaType=MEDIA_TYPE_CONFIG, digest=D1, size=487),
        layers=[
            Layer(
                mediaType=MEDIA_TYPE_MODEL,
                digest=D2,
                size=98362432,
                from_="/root/.ollama/models/blobs/sha256-x",
            ),
            Layer(mediaType=MEDIA_TYPE_TEMPLATE, digest=D3, size=1429),
        ],
    )
    assert m.to_bytes() == OLLAMA_MANIFEST
    assert m.digest == hashlib.sha256(OLLAMA_MANIFEST).hexdigest()
    assert m.size == 487 + 98362432 + 1429


def test_layer_omits_empty_from_and_name() -> None:
    for layer in (
        Layer(mediaType=MEDIA_TYPE_MODEL, digest=D1, size=1),
        Layer(mediaType=MEDIA_TYPE_MODEL, digest=D1, size=1, from_=""),
        Layer.model_validate(
            {"mediaType": MEDIA_TYPE_MODEL, "digest": D1, "size": 1, "from": None}
        ),
    ):
        assert list(layer.to_dict()) == ["mediaType", "digest", "size"]
    layer = Layer.model_validate(
        {"mediaType": MEDIA_TYPE_MODEL, "digest": D1, "size": 1, "from": "llama3"}
    )
    assert layer.from_ == "llama3"
    assert layer.to_dict() == {
        "mediaType": MEDIA_TYPE_MODEL,
        "digest": D1,
        "size": 1,
        "from": "llama3",
    }


def test_read_keeps_original_bytes() -> None:
    # A registry may format its manifest differently: the digest is of the bytes as stored.
    pretty = json.dumps(json.loads(OLLAMA_MANIFEST), indent=3).encode()
    m = Manifest.from_bytes(pretty)
    assert m.to_bytes() == pretty
    assert m.digest == hashlib.sha256(pretty).hexdigest()
    assert m.model_layer is not None and m.model_layer.digest == D2
    assert m.digests() == {D1, D2, D3}
    assert [layer.digest for layer in m.layers_of(*TEMPLATE_MEDIA_TYPES)] == [D3]
    # ...until it is changed: then it is encoded afresh.
    changed = m.model_copy(update={"layers": m.layers[:1]})
    assert changed.to_bytes() != pretty
    assert Manifest.from_bytes(changed.to_bytes()).layers == m.layers[:1]


def test_round_trip_and_unknown_fields() -> None:
    obj = json.loads(OLLAMA_MANIFEST)
    obj["annotations"] = {"x": "y"}
    obj["layers"][0]["annotations"] = {"org.opencontainers.image.title": "model.gguf"}
    m = Manifest.from_bytes(json.dumps(obj).encode())
    assert Manifest.model_validate(m.to_dict()).to_bytes() == OLLAMA_MANIFEST


def test_file_form_digest_is_normalised() -> None:
    obj = json.loads(OLLAMA_MANIFEST)
    obj["layers"][1]["digest"] = D3.replace(":", "-").upper().replace("SHA256-", "sha256-")
    m = Manifest.from_bytes(json.dumps(obj).encode())
    assert m.layers[1].digest == D3


@pytest.mark.parametrize(
    "bad",
    [
        "sha256:../../etc/passwd",
        "../../../etc/passwd",
        "sha256:" + "a" * 63,
        "sha256:" + "a" * 64 + "/../../x",
        "md5:abc",
        "",
    ],
)
@pytest.mark.parametrize("where", ["config", "layer"])
def test_bad_digest_is_rejected(bad: str, where: str) -> None:
    obj = json.loads(OLLAMA_MANIFEST)
    if where == "config":
        obj["config"]["digest"] = bad
    else:
        obj["layers"][1]["digest"] = bad
    with pytest.raises(InvalidDigest):
        Manifest.from_bytes(json.dumps(obj).encode())


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"[]",
        b'{"schemaVersion":2}',
        b'{"config":{"mediaType":"x","digest":1}}',
        b"\xff\xfe",
    ],
)
def test_malformed_manifest(data: bytes) -> None:
    with pytest.raises((InvalidManifest, InvalidDigest)):
        Manifest.from_bytes(data)


def test_negative_size_rejected() -> None:
    obj = json.loads(OLLAMA_MANIFEST)
    obj["layers"][0]["size"] = -1
    with pytest.raises(InvalidManifest):
        Manifest.from_bytes(json.dumps(obj).encode())


def test_null_layers() -> None:
    obj = json.loads(OLLAMA_MANIFEST)
    obj["layers"] = None
    assert Manifest.from_bytes(json.dumps(obj).encode()).layers == []


def test_model_config_as_ollama_writes_it() -> None:
    cfg = ModelConfig(
        model_format="gguf",
        model_family="llama",
        model_families=["llama"],
        model_type="134.52M",
        file_type="Q4_1",
        architecture="amd64",
        os="linux",
    )
    assert cfg.to_bytes() == (
        b'{"model_format":"gguf","model_family":"llama","model_families":["llama"],'
        b'"model_type":"134.52M","file_type":"Q4_1","architecture":"amd64","os":"linux"}\n'
    )
    with_extras = cfg.model_copy(update={"renderer": "r", "parser": "p", "requires": "0.12"})
    assert list(with_extras.to_dict())[5:8] == ["renderer", "parser", "requires"]
    assert ModelConfig().to_bytes() == (
        b'{"model_format":"","model_family":"","model_families":null,"model_type":"",'
        b'"file_type":"","architecture":"","os":""}\n'
    )


def test_model_config_reading_is_lenient() -> None:
    cfg = ModelConfig.from_bytes(
        b'{"model_format":"gguf","model_family":"gemma3","model_families":null,'
        b'"model_type":"268.10M","file_type":"Q4_K_M","renderer":null,"rootfs":{"type":"layers"},'
        b'"future_field":[1,2,3],"context_length":32768,"architecture":"arm64","os":"darwin"}'
    )
    assert cfg.model_family == "gemma3"
    assert cfg.model_families is None
    assert cfg.renderer == ""
    assert cfg.context_length == 32768
    assert cfg.os == "darwin"
    for bad in (b"", b"[1]", b'{"model_type": {"x": 1}}'):
        with pytest.raises(InvalidManifest):
            ModelConfig.from_bytes(bad)


def test_model_details_json() -> None:
    d = ModelDetails(format="gguf", family="llama", families=["llama"], parameter_size="1B")
    assert d.to_dict() == {
        "parent_model": "",
        "format": "gguf",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "1B",
        "quantization_level": "",
    }
    assert ModelDetails(context_length=8192).to_dict()["context_length"] == 8192


def test_go_json_escaping() -> None:
    assert (
        go_json('a"b\\c\n\t\x01<>&\u2028é')
        == '"a\\"b\\\\c\\n\\t\\u0001\\u003c\\u003e\\u0026\\u2028é"'
    )
    assert (
        go_json({"b": 1, "a": [0.5, 1e-7, 1e21, 2.0]}, sort_keys=True)
        == '{"a":[0.5,1e-7,1e+21,2],"b":1}'
    )
    with pytest.raises(ValueError):
        go_json(float("nan"))

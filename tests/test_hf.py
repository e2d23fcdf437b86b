"""``hf.co/<user>/<repo>[:<quant>]`` pulls: huggingface_hub lists the repository (pointed at
the local fixture with ``HF_ENDPOINT``), ollama_nb's downloader fetches the GGUF into the store.
The GGUF served is the real bundled SmolLM2 file, so the pulled model is a real model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ollama_nb.base.errors import (
    NotSupported,
    RegistryError,
    RegistryUnauthorized,
    RegistryUnreachable,
)
from ollama_nb.models.manifest import MEDIA_TYPE_MODEL, MEDIA_TYPE_PARAMS, MEDIA_TYPE_SYSTEM
from ollama_nb.models.store import Store
from ollama_nb.registry import pull_model
from ollama_nb.registry.hf import choose_gguf, quant_of

from .conftest import SMOLLM
from .registry_fixture import Blob, RegistryFixture, free_port

GGUF_NAME = "SmolLM2-135M-Instruct-Q4_K_M.gguf"
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY",
              "http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(autouse=True)
def _hf_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub.constants as hc

    for var in (*PROXY_VARS, "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    # no token or cache of the machine's own Hugging Face login may leak into a test
    monkeypatch.setattr(hc, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hf-home" / "hub"))
    monkeypatch.setenv("OLLAMA_NB_PULL_PART_SIZE", str(32 << 20))
    monkeypatch.setenv("OLLAMA_NB_PULL_BACKOFF", "0.01")


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> RegistryFixture:
    fx = RegistryFixture().start()
    monkeypatch.setenv("HF_ENDPOINT", fx.url)
    yield fx
    fx.stop()


@pytest.fixture
def smol_blob(shared_models: Path) -> Blob:
    store = Store(shared_models)
    layer = store.read_manifest(SMOLLM).model_layer
    return Blob(path=store.blob_path(layer.digest), digest=layer.digest)


def statuses(events) -> list[str]:
    out: list[str] = []
    for ev in events:
        if not out or out[-1] != ev.status:
            out.append(ev.status)
    return out


# -- choosing the GGUF -------------------------------------------------------------------------


FILES = ["README.md", "m-Q4_K_M.gguf", "m-Q4_K_S.gguf", "m.Q8_0.gguf", "m-IQ3_M.gguf",
         "mmproj-m-f16.gguf", "big/m-Q6_K-00001-of-00002.gguf", "big/m-Q6_K-00002-of-00002.gguf"]


@pytest.mark.parametrize(("tag", "expected"), [
    ("latest", "m-Q4_K_M.gguf"),  # Ollama's default quantization
    ("q4_k_s", "m-Q4_K_S.gguf"),  # case-insensitive
    ("Q8_0", "m.Q8_0.gguf"),
    ("iq3_m", "m-IQ3_M.gguf"),
    ("m-IQ3_M.gguf", "m-IQ3_M.gguf"),  # a file name is a tag too
])
def test_choose_gguf(tag, expected):
    assert choose_gguf(FILES, tag, "hf.co/u/m") == expected


def test_choose_gguf_without_q4_k_m_takes_a_reasonable_quant():
    assert choose_gguf(["x-Q8_0.gguf", "x-Q5_K_M.gguf", "x-F16.gguf"], "latest", "n") == "x-Q5_K_M.gguf"
    assert choose_gguf(["only.gguf"], "latest", "n") == "only.gguf"


def test_choose_gguf_errors_name_the_choices():
    with pytest.raises(RegistryError) as err:
        choose_gguf(FILES, "Q4_K", "hf.co/u/m")  # a prefix of Q4_K_M is not Q4_K_M
    assert str(err.value) == ('pull model manifest: file does not exist: hf.co/u/m has no GGUF file '
                              'for "Q4_K" (available: IQ3_M, Q4_K_M, Q4_K_S, Q6_K, Q8_0)')
    with pytest.raises(NotSupported, match="split into 2 files"):
        choose_gguf(FILES, "Q6_K", "hf.co/u/m")
    with pytest.raises(RegistryError, match="has no GGUF file$"):
        choose_gguf(["README.md", "model.safetensors"], "latest", "hf.co/u/m")
    assert quant_of("x/Model-bf16-00001-of-00003.gguf") == "BF16"


# -- pulls -------------------------------------------------------------------------------------


def test_pull_default_quant_from_hugging_face(hub, smol_blob):
    decoy = Blob.of(b"not a gguf" * 1000)
    hub.add_hf_repo("test-org/SmolLM2-GGUF", {
        "README.md": b"# SmolLM2\n",
        GGUF_NAME: smol_blob,
        "SmolLM2-135M-Instruct-Q8_0.gguf": decoy,
        "params": b'{"temperature": 0.2, "stop": ["<|im_end|>"]}',
        "system": b"You are terse.",
    })
    store = Store()
    events = list(pull_model(store, "hf.co/test-org/SmolLM2-GGUF"))
    manifest = store.read_manifest("hf.co/test-org/SmolLM2-GGUF:latest")
    assert (store.root / "manifests/hf.co/test-org/SmolLM2-GGUF/latest").is_file()
    assert statuses(events) == (["pulling manifest"]
                                + [f"pulling {layer.digest[7:19]}" for layer in manifest.all_layers()]
                                + ["verifying sha256 digest", "writing manifest", "success"])
    assert [layer.mediaType for layer in manifest.layers] == [MEDIA_TYPE_MODEL, MEDIA_TYPE_SYSTEM,
                                                              MEDIA_TYPE_PARAMS]
    assert manifest.model_layer.digest == smol_blob.digest
    assert store.verify_blob(smol_blob.digest) == smol_blob.size
    # params are stored as Go encodes them (sorted keys, HTML-safe escapes), as Ollama does
    assert store.read_layer_text(manifest.layers[2]) == r'{"stop":["\u003c|im_end|\u003e"],"temperature":0.2}'
    assert store.read_config(manifest).model_family == "llama"
    assert hub.sent[smol_blob.digest] == smol_blob.size and hub.sent[decoy.digest] == 0
    # the Hub redirected the GGUF to its CDN (another host): the bytes came from there
    cdn = [r for r in hub.requests if r.path.startswith("/cdn/")]
    assert cdn and {r.host for r in cdn} == {f"localhost:{hub.port}"}

    from ollama_nb.manager.core import ModelManager

    shown = ModelManager(store).show("hf.co/test-org/SmolLM2-GGUF")
    assert shown.details.family == "llama" and shown.system == "You are terse."


def test_explicit_quant_tag_and_huggingface_co_host(hub, smol_blob):
    hub.add_hf_repo("u/r", {GGUF_NAME: smol_blob, "r-Q8_0.gguf": Blob.of(b"x" * 10)})
    store = Store()
    assert list(pull_model(store, "huggingface.co/u/r:q4_k_m"))[-1].status == "success"
    assert store.read_manifest("huggingface.co/u/r:q4_k_m").model_layer.digest == smol_blob.digest


def test_private_repo_needs_hf_token(hub, smol_blob, monkeypatch):
    hub.add_hf_repo("me/private-GGUF", {GGUF_NAME: smol_blob}, token="hf_secret")
    store = Store()
    with pytest.raises(RegistryUnauthorized) as err:
        list(pull_model(store, "hf.co/me/private-GGUF"))
    assert "HF_TOKEN" in str(err.value) and str(err.value).startswith("pull model manifest: 401")
    assert not store.root.exists()

    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    hub.reset_counters()
    assert list(pull_model(store, "hf.co/me/private-GGUF"))[-1].status == "success"
    to_hub = [r for r in hub.requests if not r.path.startswith("/cdn/")]
    to_cdn = [r for r in hub.requests if r.path.startswith("/cdn/")]
    assert to_hub and all(r.authorization == "Bearer hf_secret" for r in to_hub)
    assert to_cdn and all(r.authorization is None for r in to_cdn)  # never forwarded to the CDN
    assert store.verify_blob(smol_blob.digest) == smol_blob.size


def test_gated_file_download_names_hf_token(hub, smol_blob, monkeypatch):
    """A gated repository lists without a token but answers 401 to the file download."""
    repo = hub.add_hf_repo("org/gated-GGUF", {GGUF_NAME: smol_blob}, token="hf_ok", gated=True)
    store = Store()
    with pytest.raises(RegistryUnauthorized, match="is private or gated: set HF_TOKEN"):
        list(pull_model(store, "hf.co/org/gated-GGUF"))
    resolved = {r.path for r in hub.requests if "/resolve/" in r.path}
    assert resolved == {f"/org/gated-GGUF/resolve/{repo.sha}/{GGUF_NAME}"}  # pinned to the commit
    assert not (store.root / "manifests").exists() and not store.has_blob(smol_blob.digest)
    assert not list(store.blobs_dir.glob("*partial*"))

    monkeypatch.setenv("HF_TOKEN", "hf_ok")
    assert list(pull_model(store, "hf.co/org/gated-GGUF"))[-1].status == "success"


def test_missing_repo_and_missing_quant(hub, smol_blob):
    hub.add_hf_repo("u/r", {GGUF_NAME: smol_blob})
    with pytest.raises(RegistryError, match="^pull model manifest: file does not exist$"):
        list(pull_model(Store(), "hf.co/u/nope"))
    with pytest.raises(RegistryError, match=r'no GGUF file for "Q2_K" \(available: Q4_K_M\)$'):
        list(pull_model(Store(), "hf.co/u/r:Q2_K"))
    assert not Store().root.exists()


def test_split_gguf_is_refused(hub):
    parts = {f"m-Q4_K_M-0000{i}-of-00002.gguf": Blob.of(bytes([i]) * 100) for i in (1, 2)}
    hub.add_hf_repo("u/split", parts)
    with pytest.raises(NotSupported, match="split into 2 files"):
        list(pull_model(Store(), "hf.co/u/split"))
    assert not Store().root.exists()


def test_file_already_in_the_hugging_face_cache_is_not_downloaded(hub, smol_blob, tmp_path):
    import huggingface_hub.constants as hc

    repo = hub.add_hf_repo("u/cached", {GGUF_NAME: smol_blob})
    # the cache layout huggingface_hub writes: snapshots/<sha>/<file> -> ../../blobs/<etag>
    cache = Path(hc.HF_HUB_CACHE) / "models--u--cached"
    (cache / "blobs").mkdir(parents=True)
    target = cache / "blobs" / smol_blob.digest[7:]
    try:
        os.link(smol_blob.path, target)
    except OSError:
        target.write_bytes(smol_blob.path.read_bytes())
    (cache / "snapshots" / repo.sha).mkdir(parents=True)
    (cache / "snapshots" / repo.sha / GGUF_NAME).symlink_to(f"../../blobs/{smol_blob.digest[7:]}")
    store = Store()
    assert list(pull_model(store, "hf.co/u/cached"))[-1].status == "success"
    assert hub.sent[smol_blob.digest] == 0
    blob = store.blob_path(smol_blob.digest)
    assert not blob.is_symlink() and store.verify_blob(smol_blob.digest) == smol_blob.size


def test_hub_unreachable(monkeypatch):
    port = free_port()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(RegistryUnreachable) as err:
        list(pull_model(Store(), "hf.co/u/r"))
    assert str(err.value) == (f'pull model manifest: Get "http://127.0.0.1:{port}/api/models/u/r": '
                              f"dial tcp 127.0.0.1:{port}: connect: connection refused")
    assert not Store().root.exists()


def test_a_vision_repo_brings_its_projector(hub, smol_blob, tmp_path):
    """An ``mmproj`` GGUF beside the model is pulled along and becomes the projector layer, as
    Ollama pulls vision models from Hugging Face; the model then takes images."""
    import base64

    from ollama_nb.manager.core import ModelManager
    from ollama_nb.models.manifest import MEDIA_TYPE_PROJECTOR

    from .vision_projector import png, write_projector

    projector = Blob.of(write_projector(tmp_path / "p.gguf").read_bytes())
    hub.add_hf_repo("test-org/SmolVision-GGUF", {
        GGUF_NAME: smol_blob,
        "mmproj-SmolVision-f32.gguf": Blob.of(b"a projector in another precision" * 10),
        "mmproj-SmolVision-f16.gguf": projector,
    })
    manager = ModelManager(Store())
    try:
        name = "hf.co/test-org/SmolVision-GGUF"
        assert [e.status for e in manager.pull(name)][-1] == "success"
        layers = manager.store.read_manifest(f"{name}:latest").layers
        assert [(layer.mediaType, layer.digest) for layer in layers if layer.mediaType == MEDIA_TYPE_PROJECTOR] == [
            (MEDIA_TYPE_PROJECTOR, projector.digest)]  # the F16 one, verified by its sha256
        assert "vision" in manager.show(name).capabilities
        reply = manager.chat(model=name, stream=False, options={"temperature": 0, "num_predict": 4}, messages=[
            {"role": "user", "content": "What is this?", "images": [base64.b64encode(png(1)).decode()]}])
        assert reply.eval_count > 0 and reply.prompt_eval_count > 16
    finally:
        manager.close()

"""Images through llama.cpp's multimodal library, on smollm2:135m with a tiny projector written
here (``tests/vision_projector.py``): the real loader, the real vision encoder, the real decode.
The projector's weights are random, so what is checked is the mechanism: an image's tokens reach
the model, different images steer it differently and the same image the same way, the cached
prefix survives a turn with an image, and bad images and bad projectors get clear errors."""

from __future__ import annotations

import base64
import datetime
import json
import urllib.request
from pathlib import Path
from typing import Any

import ollama
import openai
import pytest

from ollama_nb.base.errors import CorruptModel, InvalidRequest

from .conftest import SMOLLM
from .vision_projector import IMAGE_TOKENS, png, write_projector

VISION = "vis-smol:latest"
GREEDY = {"temperature": 0, "num_predict": 8}
QUESTION = "What is in this picture?"


@pytest.fixture(scope="module")
def projector(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_projector(tmp_path_factory.mktemp("projector") / "mmproj-tiny.gguf")


@pytest.fixture(scope="module")
def vision(manager: Any, projector: Path) -> str:
    """smollm2 with the projector as a second FROM, as ``ollama show`` writes a vision model."""
    events = list(manager.create(VISION, f"FROM {SMOLLM}\nFROM {projector}\n"))
    assert events[-1].status == "success"
    yield VISION
    manager.unload(VISION)
    manager.delete(VISION)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def ask(manager: Any, images: list[bytes] | None, logprobs: bool = False, **extra: Any) -> Any:
    message = {"role": "user", "content": QUESTION, **({"images": [b64(i) for i in images]} if images else {})}
    return manager.chat(model=VISION, messages=[message], stream=False, options={**GREEDY, **extra},
                        **({"logprobs": True, "top_logprobs": 5} if logprobs else {}))


def scores(reply: Any) -> list[tuple[str, float]]:
    """The reply's tokens with their log-probabilities: what the image did to the model, to the
    last bit, where a random projector may leave the words themselves alike."""
    return [(lp.token, lp.logprob) for lp in reply.logprobs]


def test_a_projector_layer_makes_a_vision_model(manager, vision, projector) -> None:
    info = manager.show(vision)
    assert "vision" in info.capabilities
    assert info.projector_info["general.architecture"] == "clip"
    assert info.projector_info["clip.projector_type"] == "mlp"
    assert f"\nFROM {manager.store.blob_path(manager.store.read_manifest(vision).layers[-1].digest)}" in info.modelfile
    entry = next(m for m in manager.list().models if m.name == vision)
    assert "vision" in entry.capabilities
    layers = [layer.mediaType for layer in manager.store.read_manifest(vision).layers]
    assert layers.count("application/vnd.ollama.image.projector") == 1


def test_an_image_takes_its_tokens_and_steers_the_reply(manager, vision) -> None:
    manager.unload(vision)  # nothing cached: each count below is the whole prompt
    plain = ask(manager, None, num_ctx=2048)
    manager.unload(vision)
    first = ask(manager, [png(1)], logprobs=True, num_ctx=2048)
    assert first.prompt_eval_count == plain.prompt_eval_count + IMAGE_TOKENS  # the marker is no token
    manager.unload(vision)
    again = ask(manager, [png(1)], logprobs=True, num_ctx=2048)
    manager.unload(vision)
    other = ask(manager, [png(2)], logprobs=True, num_ctx=2048)
    assert again.message.content == first.message.content  # the same image, the same greedy reply
    assert scores(again) == scores(first)
    assert scores(other) != scores(first)  # another image steers the model another way
    assert first.message.content != plain.message.content  # and an image at all changes the reply
    manager.unload(vision)
    two = ask(manager, [png(1), png(2)], num_ctx=2048)
    assert two.prompt_eval_count == plain.prompt_eval_count + 2 * IMAGE_TOKENS


def test_the_next_turn_reuses_the_cached_image(manager, vision) -> None:
    first = ask(manager, [png(3)])
    turn = [{"role": "user", "content": QUESTION, "images": [b64(png(3))]},
            {"role": "assistant", "content": first.message.content},
            {"role": "user", "content": "Describe the colours."}]
    follow = manager.chat(model=VISION, messages=turn, stream=False, options=GREEDY)
    assert follow.eval_count > 0
    new_turn = manager.tokenize(VISION, "<|im_end|>\n<|im_start|>user\nDescribe the colours.<|im_end|>\n"
                                        "<|im_start|>assistant\n")
    # only the new turn (and the reply's last token, which renders back a little differently):
    # the image stayed in the KV cache
    assert follow.prompt_eval_count <= len(new_turn) + 2
    # and the cache never mixes images up: the same words with another image start over there
    turn[0]["images"] = [b64(png(4))]
    switched = manager.chat(model=VISION, messages=turn, stream=False, options=GREEDY)
    assert switched.prompt_eval_count >= IMAGE_TOKENS + len(new_turn)


def test_generate_takes_images_too(manager, vision) -> None:
    chat = ask(manager, [png(5)])
    reply = manager.generate(model=VISION, prompt=QUESTION, images=[b64(png(5))], stream=False, options=GREEDY)
    assert reply.response == chat.message.content
    raw = manager.generate(model=VISION, prompt="Picture: [img] Caption:", images=[b64(png(5))], raw=True,
                           stream=False, options=GREEDY)
    assert raw.eval_count > 0


def test_bad_images_get_clear_errors_and_text_models_refuse_them(manager, vision) -> None:
    with pytest.raises(InvalidRequest, match="illegal base64 data at input byte 3"):
        manager.chat(model=VISION, messages=[{"role": "user", "content": "x", "images": ["abc$"]}], stream=False)
    with pytest.raises(InvalidRequest, match="Failed to load image or audio file: image 0"):
        manager.chat(model=VISION, messages=[{"role": "user", "content": "x", "images": [b64(b"not an image")]}],
                     stream=False)
    with pytest.raises(InvalidRequest, match="image input is not supported - hint"):
        manager.chat(model=SMOLLM, messages=[{"role": "user", "content": "x", "images": [b64(png(1))]}], stream=False)
    assert ask(manager, [png(1)]).done  # the model still works after the refusals


def test_webp_and_tiff_are_read_as_the_same_pixels(manager, vision) -> None:
    import io

    from PIL import Image

    expected = ask(manager, [png(12)]).message.content
    for fmt in ("WEBP", "TIFF"):  # llama.cpp reads neither; Pillow converts them, as Ollama converts WebP
        out = io.BytesIO()
        Image.open(io.BytesIO(png(12))).save(out, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
        assert ask(manager, [out.getvalue()]).message.content == expected, fmt


def test_a_malformed_projector_is_a_clear_error_and_the_kernel_lives(manager, tmp_path) -> None:
    broken = write_projector(tmp_path / "mmproj-broken.gguf", drop=("mm.2.weight",))  # segfaults llama.cpp
    assert [e.status for e in manager.create("vis-broken", f"FROM {SMOLLM}\nFROM {broken}\n")][-1] == "success"
    try:
        with pytest.raises(CorruptModel, match="crashed the loader with SIGSEGV"):
            manager.chat(model="vis-broken", messages=[{"role": "user", "content": "x", "images": [b64(png(1))]}],
                         stream=False)
    finally:
        manager.delete("vis-broken")
    wrong_type = write_projector(tmp_path / "mmproj-int.gguf", image_size_type="int32")  # aborts llama.cpp
    assert [e.status for e in manager.create("vis-int", f"FROM {SMOLLM}\nFROM {wrong_type}\n")][-1] == "success"
    try:
        with pytest.raises(CorruptModel, match="SIGABRT"):
            manager.generate(model="vis-int", prompt="x", stream=False)
    finally:
        manager.delete("vis-int")
    with pytest.raises(InvalidRequest, match="is not a vision projector"):
        list(manager.create("vis-text", f"FROM {SMOLLM}\nFROM {manager.spec(SMOLLM).model_path}\n"))
    assert manager.generate(model=SMOLLM, prompt="Hi", stream=False, options=GREEDY).done  # still alive


def test_a_projector_beside_a_gguf_comes_along(manager, tmp_path, projector) -> None:
    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / "model.gguf").symlink_to(manager.spec(SMOLLM).model_path)
    (folder / "mmproj-model-f32.gguf").write_bytes(projector.read_bytes())
    assert [e.status for e in manager.create("vis-dir", f"FROM {folder}\n")][-1] == "success"
    try:
        assert "vision" in manager.show("vis-dir").capabilities
    finally:
        manager.delete("vis-dir")


# ---- through the APIs ----------------------------------------------------------------------


def test_images_through_every_api(server, manager, vision) -> None:
    expected = ask(manager, [png(6)]).message.content
    url = f"data:image/png;base64,{b64(png(6))}"
    native = ollama.Client(host=server.url).chat(
        model=VISION, options=GREEDY, messages=[{"role": "user", "content": QUESTION, "images": [png(6)]}])
    assert native.message.content == expected
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    chat = client.chat.completions.create(model=VISION, max_tokens=8, temperature=0, messages=[
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                     {"type": "text", "text": QUESTION}]}])
    assert chat.choices[0].message.content == expected
    response = client.responses.create(model=VISION, max_output_tokens=8, temperature=0, input=[
        {"role": "user", "content": [{"type": "input_image", "image_url": url, "detail": "auto"},
                                     {"type": "input_text", "text": QUESTION}]}])
    assert response.output_text == expected
    body = json.dumps({"model": VISION, "max_tokens": 8, "temperature": 0, "messages": [
        {"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                  "data": b64(png(6))}},
                                     {"type": "text", "text": QUESTION}]}]}).encode()
    request = urllib.request.Request(server.url + "/v1/messages", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as answer:
        assert json.loads(answer.read())["content"][0]["text"] == expected


# ---- in the notebook -----------------------------------------------------------------------


def test_chat_takes_a_path_bytes_or_a_pil_image(manager, vision, tmp_path) -> None:
    import io

    from PIL import Image

    from ollama_nb.notebook.functions import chat, generate
    from ollama_nb.notebook.images import ImageError

    expected = ask(manager, [png(7)]).message.content
    path = tmp_path / "seven.png"
    path.write_bytes(png(7))
    pil = Image.open(io.BytesIO(png(7)))
    for value in (path, str(path), png(7), pil):
        reply = chat(VISION, QUESTION, images=value, options=GREEDY, backend=manager)
        if value is pil:  # re-encoded as PNG, but the same pixels
            assert reply.done
        else:
            assert reply.message.content == expected, type(value)
    assert generate(VISION, QUESTION, images=[png(7)], options=GREEDY, backend=manager).response == expected
    with pytest.raises(ImageError, match="no such image file"):
        chat(VISION, QUESTION, images=str(tmp_path / "missing.png"), backend=manager)
    with pytest.raises(ImageError, match="web URLs are not fetched"):
        chat(VISION, QUESTION, images="https://example.com/cat.png", backend=manager)


def test_chat_magic_sends_images_and_shows_them(manager, vision, tmp_path, capsys) -> None:
    from IPython.core.displaypub import CapturingDisplayPublisher
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.extension_manager.load_extension("ollama_nb")
    magics = shell.magics_manager.registry["OllamaMagics"]
    magics.use_manager(manager)
    magics.stream_to, magics.stream_interval = "display", 0.0
    magics.sessions.reset_all()
    shell.display_pub = CapturingDisplayPublisher()
    try:
        path = tmp_path / "eight.png"
        path.write_bytes(png(8))
        shell.user_ns["picture"] = png(8)
        expected = ask(manager, [png(8)]).message.content
        shell.run_cell_magic("chat", f"-m {VISION} --image picture --options '{json.dumps(GREEDY)}' -o first",
                             QUESTION)
        assert shell.user_ns["first"].text == expected
        thumbs = [o for o in shell.display_pub.outputs if "text/html" in o["data"]
                  and "ollama-nb-images" in o["data"]["text/html"]]
        assert len(thumbs) == 1 and thumbs[0]["data"]["text/html"].count("<img ") == 1
        shell.run_cell_magic("chat", f"--image {path} --options '{json.dumps(GREEDY)}' -o second",
                             "Describe the colours.")
        session = magics.sessions.get()
        assert [len(t.images or []) for t in session.turns] == [1, 1]  # each turn keeps its image
        shell.run_cell_magic("chat", f"-m {VISION} --image nothing_here.png", QUESTION)
        assert "no such image file" in capsys.readouterr().err
    finally:
        magics.use_manager(None)
        shell.extension_manager.unload_extension("ollama_nb")


def test_the_chat_panel_attaches_uploaded_images(manager, vision) -> None:
    from ollama_nb.notebook.widgets import ChatPanel

    expected = ask(manager, [png(9)]).message.content
    panel = ChatPanel(manager, model=VISION, temperature=0, options={"num_predict": 8}, interval=0)
    panel.images.value = ({"name": "nine.png", "type": "image/png", "size": len(png(9)), "content": memoryview(png(9)),
                           "last_modified": datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)},)
    panel.prompt.value = QUESTION
    panel.send.click()
    assert panel.wait(120)
    assert panel.last_result.text == expected
    user = panel.transcript.children[0]
    assert any("<img " in o["data"].get("text/html", "") for o in user.outputs)  # the thumbnail
    assert panel.images.value == () and panel.session.turns[0].images  # sent once, kept in the session


def test_generate_context_holds_only_real_tokens(manager, vision) -> None:
    reply = manager.generate(model=VISION, prompt=QUESTION, images=[b64(png(10))], stream=False, options=GREEDY)
    assert reply.context and min(reply.context) >= 0
    with pytest.raises(InvalidRequest, match="outside this model's vocabulary"):
        manager.generate(model=VISION, prompt="And?", context=[1, -5, 2], stream=False, options=GREEDY)


def test_ps_counts_the_projector(manager, vision, projector) -> None:
    ask(manager, [png(11)])
    plain = manager.chat(model=SMOLLM, messages=[{"role": "user", "content": "Hi"}], stream=False, options=GREEDY)
    assert plain.done
    sizes = {m.name: m.size for m in manager.ps().models}
    assert sizes[VISION] == sizes[SMOLLM] + projector.stat().st_size  # same weights and context, plus the projector

"""Images as a notebook holds them (a file path, bytes, a PIL image, a data URL) turned into the
base64 text the API carries, and shown back as thumbnails under the reply that used them.

Nothing here reaches the network: a web URL is refused, as the API refuses it.
"""

from __future__ import annotations

import base64
import binascii
import html
import io
import os
from collections.abc import Iterable
from typing import Any

__all__ = ["ImageError", "as_base64", "images_base64", "thumbnails_html"]

THUMBNAIL_PX = 96


class ImageError(ValueError):
    """A value that is not an image this notebook can send."""


def _pil_png(image: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def as_base64(value: Any) -> str:
    """One image as base64: ``bytes`` are the file's bytes, ``str``/``PathLike`` a path (or a
    ``data:image/...;base64,`` URL), a PIL image is encoded as PNG."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        if not data:
            raise ImageError("an empty bytes value is not an image")
        return base64.b64encode(data).decode()
    if hasattr(value, "save") and hasattr(value, "mode"):  # a PIL image, without importing PIL
        return base64.b64encode(_pil_png(value)).decode()
    if isinstance(value, (os.PathLike, str)):
        text = os.fspath(value)
        if text.startswith("data:") and ";base64," in text:
            payload = text.split(";base64,", 1)[1]
            try:
                base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError):
                raise ImageError("the data URL's base64 is damaged") from None
            return payload
        if text.startswith(("http://", "https://")):
            raise ImageError(f"{text}: web URLs are not fetched; download the image and pass its path or bytes")
        path = os.path.expanduser(text)
        if not os.path.isfile(path):
            raise ImageError(f"{text}: no such image file")
        with open(path, "rb") as f:
            return base64.b64encode(f.read()).decode()
    raise ImageError(f"{type(value).__name__} is not an image: pass a path, bytes or a PIL image")


def images_base64(values: Any) -> list[str]:
    """Several images (one value alone is one image)."""
    if values is None:
        return []
    if isinstance(values, (str, bytes, bytearray, memoryview, os.PathLike)) or hasattr(values, "save"):
        values = [values]
    return [as_base64(v) for v in values]


def thumbnails_html(images: Iterable[str]) -> str:
    """A row of small previews of the images a turn sent (base64), for the reply's output."""
    tags = [f'<img src="data:image;base64,{html.escape(data)}" alt="image {i + 1}" '
            f'style="max-height:{THUMBNAIL_PX}px;max-width:{THUMBNAIL_PX}px;margin-right:4px;'
            'border:1px solid #ccc;border-radius:3px">'
            for i, data in enumerate(images)]
    return f'<div class="ollama-nb-images">{"".join(tags)}</div>' if tags else ""

"""Images of a selection as exports reference them: files written beside the export, data URIs, or URIs."""

from __future__ import annotations

import base64
import io
import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from alray.errors import InputError

# Pillow's format name to the extension and MIME type of the file an export writes.
_FORMATS = {"PNG": ("png", "image/png"), "JPEG": ("jpg", "image/jpeg"), "WEBP": ("webp", "image/webp"),
            "BMP": ("bmp", "image/bmp"), "TIFF": ("tif", "image/tiff"), "GIF": ("gif", "image/gif")}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class ImageInfo:
    """An encoded image's size and kind."""

    width: int
    height: int
    extension: str
    mime: str


def image_info(data: bytes, name: str) -> ImageInfo:
    """Width, height, extension and MIME type of encoded image bytes; InputError naming ``name`` otherwise."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            extension, mime = _FORMATS.get(image.format or "", ("png", "image/png"))
            return ImageInfo(image.width, image.height, extension, mime)
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"id {name!r}: not a readable image ({exc.__class__.__name__})") from None


def data_uri(data: bytes, info: ImageInfo) -> str:
    """The image inline, as a ``data:`` URI (a task that needs no file server)."""
    return f"data:{info.mime};base64,{base64.b64encode(data).decode('ascii')}"


class FileNames:
    """Unique, file-system-safe names for ids (``a/b.png`` -> ``a_b.png``), stable for one export."""

    def __init__(self) -> None:
        self._taken: set[str] = set()

    def name(self, item_id: str, extension: str) -> str:
        """A new file name for ``item_id`` with ``extension`` (the id's own extension is dropped)."""
        stem = _UNSAFE.sub("_", re.sub(r"\.(png|jpe?g|webp|bmp|tiff?|gif)$", "", item_id, flags=re.I)).strip("._")
        stem = stem or "image"
        candidate, n = f"{stem}.{extension}", 1
        while candidate in self._taken:
            n += 1
            candidate = f"{stem}-{n}.{extension}"
        self._taken.add(candidate)
        return candidate


def write_image(folder: Path, name: str, data: bytes) -> Path:
    """Write image bytes as ``folder/name``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return path

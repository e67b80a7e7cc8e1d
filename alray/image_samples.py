"""Images of the kinds real collections hold, encoded: every Pillow mode, the common formats,
EXIF orientations, animations, and images too large to decode whole (decompression bombs).

What the tests and ``benchmarks/bad_input_matrix.py`` feed the scoring stage. Nothing here is
random unless seeded; the real photographs come from scikit-image's bundled data (a dev extra).
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

# Every mode a pool must score, each with a format that keeps it when read back.
MODE_FORMATS = {
    "1": "PNG", "L": "PNG", "LA": "PNG", "P": "GIF", "PA": "TIFF", "RGB": "JPEG", "RGBA": "PNG",
    "CMYK": "JPEG", "YCbCr": "TIFF", "I;16": "PNG", "I": "TIFF", "F": "TIFF",
}


def image_of_mode(mode: str, *, width: int = 48, height: int = 40, seed: int = 0) -> Image.Image:
    """A textured image in Pillow ``mode``; high bit depths use their whole range (up to 65535)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    ramp = (x + y) / max(1, width + height - 2)
    texture = np.clip(ramp + 0.2 * rng.standard_normal((height, width)), 0, 1)
    if mode == "I;16":
        return Image.fromarray((texture * 65535).astype(np.uint16))
    if mode == "I":
        return Image.fromarray((texture * 65535).astype(np.int32))
    if mode == "F":
        return Image.fromarray(texture.astype(np.float32))
    colour = np.stack([texture, texture[:, ::-1], 1 - texture], axis=2)
    rgb = Image.fromarray((colour * 255).astype(np.uint8))
    if mode == "PA":
        return rgb.convert("P").convert("PA")
    return rgb.convert(mode)


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    """``image`` encoded as ``fmt`` (PNG, JPEG, WEBP, GIF, BMP, TIFF)."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def every_kind(seed: int = 0) -> dict[str, bytes]:
    """One encoded image per mode of :data:`MODE_FORMATS`, per format, and an EXIF-rotated,
    an animated and a 16-bit-colour case: names such as ``mode-I;16.png`` to bytes."""
    images = {f"mode-{mode}.{fmt.lower()}": encode(image_of_mode(mode, seed=seed), fmt)
              for mode, fmt in MODE_FORMATS.items()}
    rgb = image_of_mode("RGB", seed=seed)
    for fmt in ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"):
        images[f"format-{fmt.lower()}"] = encode(rgb, fmt)
    images["exif-rotated.jpg"] = exif_rotated_jpeg(width=60, height=30, seed=seed)
    frames = [image_of_mode("P", seed=seed + i) for i in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    images["animated.gif"] = buffer.getvalue()
    images["rgba-transparent.webp"] = encode(image_of_mode("RGBA", seed=seed), "WEBP", lossless=True)
    return images


def exif_rotated_jpeg(*, width: int, height: int, seed: int = 0) -> bytes:
    """A JPEG stored ``width`` x ``height`` whose EXIF orientation (6) shows it rotated by 90 degrees."""
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    return encode(image_of_mode("RGB", width=width, height=height, seed=seed), "JPEG", exif=exif.tobytes())


def png_bomb(width: int, height: int) -> bytes:
    """A black 8-bit grayscale PNG of ``width`` x ``height``: a few hundred KB that decode to
    width x height bytes. Written row by row, so making it needs no more than a row of memory."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte 0, then the row's pixels
    parts = [compressor.compress(row) for _ in range(height)]
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def large_jpeg(width: int, height: int, *, seed: int = 0) -> bytes:
    """A textured RGB JPEG of ``width`` x ``height`` (made from a small image scaled up)."""
    small = image_of_mode("RGB", width=max(1, width // 16), height=max(1, height // 16), seed=seed)
    return encode(small.resize((width, height), Image.Resampling.BILINEAR), "JPEG", quality=80)


def photo_crops(n: int, *, size: int = 96, seed: int = 0, grayscale_every: int = 10) -> list[bytes]:
    """``n`` JPEG crops of scikit-image's bundled photographs, every ``grayscale_every``-th one grayscale.

    Crops are of random size and place (from ``size`` to twice that), so a batch mixes sizes.
    Raises ImportError when scikit-image is not installed.
    """
    import skimage.data

    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket(),
              skimage.data.camera(), skimage.data.coins()]
    rng = np.random.default_rng(seed)
    crops = []
    for i in range(n):
        photo = photos[i % len(photos)]
        side_y = int(rng.integers(size, min(2 * size, photo.shape[0]) + 1))
        side_x = int(rng.integers(size, min(2 * size, photo.shape[1]) + 1))
        top = int(rng.integers(0, photo.shape[0] - side_y + 1))
        left = int(rng.integers(0, photo.shape[1] - side_x + 1))
        image = Image.fromarray(photo[top: top + side_y, left: left + side_x])
        if grayscale_every and i % grayscale_every == grayscale_every - 1:
            image = image.convert("L")
        crops.append(encode(image, "JPEG", quality=90))
    return crops

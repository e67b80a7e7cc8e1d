"""Decoding pool payloads: every image mode and format, EXIF orientation, high bit depths, the pixel limit."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from alray.image_samples import MODE_FORMATS, every_kind, exif_rotated_jpeg, image_of_mode, large_jpeg, png_bomb
from alray.payloads import DEFAULT_MAX_IMAGE_PIXELS, PayloadError, decode_image, max_image_bytes, read_uri


@pytest.mark.parametrize("channels", [1, 3])
def test_every_mode_and_format_decodes_to_one_shape(channels):
    kinds = every_kind()
    for mode, fmt in MODE_FORMATS.items():
        with Image.open(io.BytesIO(kinds[f"mode-{mode}.{fmt.lower()}"])) as image:
            assert image.mode == mode, f"the sample of {mode} reads back as {image.mode}"
    for name, data in kinds.items():
        decoded = decode_image(data, channels=channels, size=16)
        assert decoded.pixels.shape == (channels, 16, 16), name
        assert decoded.pixels.dtype == np.float32 and 0.0 <= decoded.pixels.min() <= decoded.pixels.max() <= 1.0
        assert len(decoded.channel_mean) == 3 and len(decoded.channel_std) == 3, name
        assert 0.0 < decoded.quality["luminance"] < 1.0, name


def test_grayscale_channel_statistics_repeat_the_gray_value():
    decoded = decode_image(every_kind()["mode-L.png"], channels=1, size=16)
    assert decoded.channel_mean[0] == decoded.channel_mean[1] == decoded.channel_mean[2]
    assert decoded.channel_mean[0] == pytest.approx(decoded.quality["luminance"])


@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_high_bit_depths_are_scaled_not_clipped(mode):
    image = image_of_mode(mode)
    values = np.asarray(image, dtype=np.float64)
    full_scale = 1.0 if mode == "F" else 65535.0
    decoded = decode_image(every_kind()[f"mode-{mode}.{MODE_FORMATS[mode].lower()}"], channels=1, size=16)
    # Pillow's own conversion clips every value above 255 to white: luminance near 1.
    assert decoded.quality["luminance"] == pytest.approx(values.mean() / full_scale, abs=1 / 255)
    assert decoded.quality["contrast"] == pytest.approx(values.std() / full_scale, abs=1 / 255)


def test_exif_orientation_is_applied():
    decoded = decode_image(exif_rotated_jpeg(width=60, height=30), channels=3, size=16)
    assert (decoded.quality["width"], decoded.quality["height"]) == (30, 60)


def test_an_image_over_the_limit_is_rejected_with_its_size_before_decoding():
    bomb = png_bomb(14000, 14000)  # beyond Pillow's own bomb limit (2 x 89,478,485 pixels)
    assert len(bomb) < 1_000_000
    with pytest.raises(PayloadError, match=r"14000x14000 pixels \(196,000,000\) exceed score.max_image_pixels "
                                           r"50,000,000"):
        decode_image(bomb, channels=1, size=16)
    with pytest.raises(PayloadError, match=r"3000x2000 pixels .* exceed score.max_image_pixels 5,000,000"):
        decode_image(png_bomb(3000, 2000), channels=1, size=16, max_pixels=5_000_000)


def test_a_jpeg_over_the_limit_is_decoded_reduced():
    data = large_jpeg(4000, 3000)
    whole = decode_image(data, channels=3, size=16)
    assert whole.reduced_by == 1 and whole.quality["width"] == 4000
    reduced = decode_image(data, channels=3, size=16, max_pixels=1_000_000)
    assert reduced.reduced_by == 4 and (reduced.quality["width"], reduced.quality["height"]) == (1000, 750)
    assert np.abs(reduced.pixels - whole.pixels).mean() < 0.02  # the same picture
    with pytest.raises(PayloadError, match="even at 1/8 scale"):
        decode_image(data, channels=3, size=16, max_pixels=100_000)


def test_the_pixel_limit_decides_not_pillows_own(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow alone would refuse a 100x100 image
    decoded = decode_image(image_bytes := every_kind()["format-png"], channels=3, size=16)
    assert decoded.quality["width"] == 48
    assert Image.MAX_IMAGE_PIXELS == 1000, "the decoder must restore Pillow's limit"
    with pytest.raises(PayloadError, match=r"exceed score\.max_image_pixels 100"):
        decode_image(image_bytes, channels=3, size=16, max_pixels=100)


@pytest.mark.parametrize("data, reason", [
    (b"", "image: empty payload"),
    (b"%PDF-1.4 not an image", "image: not a decodable image"),
    (every_kind()["format-png"][:200], "image: corrupt or truncated"),
])
def test_bad_bytes_have_a_reason(data, reason):
    with pytest.raises(PayloadError, match=reason):
        decode_image(data, channels=1, size=16)


def test_a_uri_larger_than_any_image_within_the_limit_is_not_read(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(b"\x00" * 2000)
    assert read_uri(str(path), max_bytes=2000) == b"\x00" * 2000
    with pytest.raises(PayloadError, match=r"is 2,000 bytes, more than an image within score.max_image_pixels"):
        read_uri(str(path), max_bytes=1999)
    assert max_image_bytes(DEFAULT_MAX_IMAGE_PIXELS) > 8 * DEFAULT_MAX_IMAGE_PIXELS

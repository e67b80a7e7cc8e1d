"""Image quality metrics of decoded images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from alray.quality import laplacian_variance, statistics_of, to_gray


def test_flat_image():
    quality = statistics_of(np.full((16, 20), 128, dtype=np.uint8)).quality
    assert quality["sharpness"] == 0.0
    assert quality["luminance"] == pytest.approx(128 / 255)
    assert quality["contrast"] == 0.0
    assert quality["snr"] == 0.0
    assert quality["uniform_row_ratio"] == 1.0
    assert (quality["width"], quality["height"]) == (20, 16)


def test_blur_lowers_sharpness():
    rng = np.random.default_rng(0)
    sharp = (rng.random((32, 32)) * 255).astype(np.uint8)
    blurred = np.asarray(Image.fromarray(sharp).filter(ImageFilter.GaussianBlur(2)))
    assert statistics_of(sharp).quality["sharpness"] > 10 * statistics_of(blurred).quality["sharpness"]


def test_laplacian_of_a_single_bright_pixel():
    image = np.zeros((5, 5))
    image[2, 2] = 1.0
    # interior 3x3 Laplacian: -4 at the centre, 1 at its four neighbours, 0 at the corners
    values = np.array([0, 1, 0, 1, -4, 1, 0, 1, 0], dtype=float)
    assert laplacian_variance(image) == pytest.approx(values.var())


def test_rgb_luma_and_channel_stats():
    red = np.zeros((4, 4, 3), dtype=np.uint8)
    red[..., 0] = 255
    assert to_gray(red)[0, 0] == pytest.approx(0.2126 * 255)
    stats = statistics_of(red)
    mean, std = stats.channel_mean, stats.channel_std
    assert mean == pytest.approx([1.0, 0.0, 0.0]) and std == pytest.approx([0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="pixels"):
        to_gray(np.zeros((2, 2, 4)))

"""Image quality metrics of one decoded image: sharpness, luminance, contrast and friends."""

from __future__ import annotations

import numpy as np

QUALITY_COLUMNS = ("sharpness", "luminance", "contrast", "snr", "uniform_row_ratio", "width", "height")

# ITU-R BT.709 luma weights: the usual luminance of an RGB pixel.
_LUMA = np.array([0.2126, 0.7152, 0.0722])


def to_gray(pixels: np.ndarray) -> np.ndarray:
    """Grayscale float64 image (H, W) from (H, W) or (H, W, 3) pixels in 0..255."""
    array = np.asarray(pixels, dtype=np.float64)
    if array.ndim == 2:
        return array
    if array.ndim == 3 and array.shape[2] == 3:
        return array @ _LUMA
    if array.ndim == 3 and array.shape[2] == 1:
        return array[:, :, 0]
    raise ValueError(f"pixels: expected shape (H, W) or (H, W, 3), got {array.shape}")


def laplacian_variance(gray: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian over the interior pixels; 0 for images under 3x3.

    Low values mean blurred or flat images.
    """
    if gray.shape[0] < 3 or gray.shape[1] < 3:
        return 0.0
    lap = (
        gray[:-2, 1:-1] + gray[2:, 1:-1] + gray[1:-1, :-2] + gray[1:-1, 2:] - 4.0 * gray[1:-1, 1:-1]
    )
    return float(lap.var())


def image_quality(pixels: np.ndarray) -> dict[str, float]:
    """Quality metrics of one image.

    Parameters
    ----------
    pixels : array of shape (H, W) or (H, W, 3), values in 0..255

    Returns
    -------
    dict
        ``sharpness`` (variance of the Laplacian), ``luminance`` (mean luma, 0..1),
        ``contrast`` (std of luma, 0..1), ``snr`` (mean / std of luma, 0 for a flat image),
        ``uniform_row_ratio`` (share of rows of one single value), ``width``, ``height``.
    """
    gray = to_gray(pixels)
    height, width = gray.shape
    mean = float(gray.mean()) if gray.size else 0.0
    std = float(gray.std()) if gray.size else 0.0
    uniform_rows = (gray.max(axis=1) == gray.min(axis=1)).mean() if gray.size else 1.0
    return {
        "sharpness": laplacian_variance(gray),
        "luminance": mean / 255.0,
        "contrast": std / 255.0,
        "snr": mean / std if std > 0 else 0.0,
        "uniform_row_ratio": float(uniform_rows),
        "width": float(width),
        "height": float(height),
    }


def channel_stats(pixels: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in 0..1: one entry for grayscale, three for RGB."""
    array = np.asarray(pixels, dtype=np.float64) / 255.0
    if array.ndim == 2:
        array = array[:, :, None]
    flat = array.reshape(-1, array.shape[2])
    return flat.mean(axis=0).tolist(), flat.std(axis=0).tolist()

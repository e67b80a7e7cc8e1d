"""Image quality metrics of one decoded image: sharpness, luminance, contrast and friends.

The metrics are computed strip by strip, so a large image costs a few MiB of working memory
on top of its pixels, whatever its size; for an image of one strip the arithmetic is NumPy's
own ``mean``/``var``, and larger images combine the strips' moments exactly (Chan et al.).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from alray.tables import IMAGE_COLUMNS

# The image columns of alray.tables.SCORES that one decoded image measures (the encoded size aside).
QUALITY_COLUMNS = tuple(name for name in IMAGE_COLUMNS if name != "size_in_bytes")

# ITU-R BT.709 luma weights: the usual luminance of an RGB pixel.
_LUMA = np.array([0.2126, 0.7152, 0.0722])

# Pixels per strip: a strip's float64 temporaries stay under about 10 MiB.
STRIP_PIXELS = 1 << 18


def to_gray(pixels: np.ndarray) -> np.ndarray:
    """Grayscale float64 image (H, W) from (H, W), (H, W, 1) or (H, W, 3) pixels in 0..255."""
    array = np.asarray(pixels, dtype=np.float64)
    if array.ndim == 2:
        return array
    if array.ndim == 3 and array.shape[2] == 3:
        return array @ _LUMA
    if array.ndim == 3 and array.shape[2] == 1:
        return array[:, :, 0]
    raise ValueError(f"pixels: expected shape (H, W), (H, W, 1) or (H, W, 3), got {array.shape}")


def _laplacian(gray: np.ndarray) -> np.ndarray:
    # 4-neighbour Laplacian of the interior pixels of ``gray`` (rows and columns 1..n-2).
    return gray[:-2, 1:-1] + gray[2:, 1:-1] + gray[1:-1, :-2] + gray[1:-1, 2:] - 4.0 * gray[1:-1, 1:-1]


def laplacian_variance(gray: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian over the interior pixels; 0 for images under 3x3.

    Low values mean blurred or flat images.
    """
    if gray.shape[0] < 3 or gray.shape[1] < 3:
        return 0.0
    return float(_laplacian(gray).var())


@dataclass
class _Moments:
    """Count, mean and sum of squared deviations of a stream of values (per column when 2-D)."""

    n: int = 0
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    m2: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def add(self, values: np.ndarray) -> None:
        """Add the rows of ``values`` (N,) or (N, C)."""
        count = values.shape[0]
        if count == 0:
            return
        mean = values.mean(axis=0)
        m2 = ((values - mean) ** 2).sum(axis=0)
        if self.n == 0:
            self.n, self.mean, self.m2 = count, mean, m2
            return
        total = self.n + count
        delta = mean - self.mean
        self.mean = self.mean + delta * (count / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.n * count / total)
        self.n = total

    def variance(self) -> np.ndarray:
        return self.m2 / self.n if self.n else np.zeros_like(self.mean)


@dataclass(frozen=True)
class ImageStatistics:
    """What one image measures: the :data:`QUALITY_COLUMNS` and per-channel statistics.

    ``channel_mean`` and ``channel_std`` always hold three values, R, G, B in 0..1, whatever
    the image's mode: a grayscale image has three equal values.
    """

    quality: dict[str, float]
    channel_mean: list[float]
    channel_std: list[float]


def image_statistics(rows: Callable[[int, int], np.ndarray], *, height: int, width: int) -> ImageStatistics:
    """Quality metrics and channel statistics of an image read in strips of rows.

    Parameters
    ----------
    rows : ``rows(start, stop)`` gives the image's rows ``start..stop-1`` as an array of shape
        (stop - start, W), (stop - start, W, 1) or (stop - start, W, 3), values in 0..255
    height, width : the image's size

    Returns
    -------
    ImageStatistics
        ``sharpness`` (variance of the Laplacian over the interior pixels), ``luminance`` (mean
        luma, 0..1), ``contrast`` (std of luma, 0..1), ``snr`` (mean / std of luma, 0 for a flat
        image), ``uniform_row_ratio`` (share of rows of one single value), ``width``, ``height``,
        and the per-channel mean and std in 0..1.
    """
    step = max(1, STRIP_PIXELS // max(1, width))
    luma, laplacian, channels = _Moments(), _Moments(), _Moments()
    uniform_rows = 0
    for start in range(0, height, step):
        stop = min(height, start + step)
        # One row of halo on each side, so the Laplacian of the strip's own rows can be taken.
        low, high = max(0, start - 1), min(height, stop + 1)
        pixels = np.asarray(rows(low, high))
        gray = to_gray(pixels)
        own = gray[start - low: start - low + stop - start]
        luma.add(own.reshape(-1))
        uniform_rows += int((own.max(axis=1) == own.min(axis=1)).sum()) if own.size else 0
        colour = pixels[start - low: start - low + stop - start]
        colour = colour.reshape(-1, 1 if colour.ndim == 2 else colour.shape[2])
        channels.add(colour.astype(np.float64) / 255.0)
        if gray.shape[0] >= 3 and gray.shape[1] >= 3:
            # Laplacian rows low+1 .. high-2, of which those in start..stop-1 are this strip's.
            first, last = max(start, 1), min(stop, height - 1)
            lap = _laplacian(gray)[first - (low + 1): last - (low + 1)]
            laplacian.add(lap.reshape(-1))
    mean = float(luma.mean) if luma.n else 0.0
    std = float(np.sqrt(luma.variance())) if luma.n else 0.0
    quality = {
        "sharpness": float(laplacian.variance()) if laplacian.n else 0.0,
        "luminance": mean / 255.0,
        "contrast": std / 255.0,
        "snr": mean / std if std > 0 else 0.0,
        "uniform_row_ratio": uniform_rows / height if height else 1.0,
        "width": float(width),
        "height": float(height),
    }
    channel_mean = np.atleast_1d(channels.mean).tolist() if channels.n else [0.0]
    channel_std = np.sqrt(np.atleast_1d(channels.variance())).tolist() if channels.n else [0.0]
    if len(channel_mean) == 1:
        channel_mean, channel_std = channel_mean * 3, channel_std * 3
    return ImageStatistics(quality, channel_mean[:3], channel_std[:3])


def statistics_of(pixels: np.ndarray) -> ImageStatistics:
    """:func:`image_statistics` of an image held whole: ``pixels`` (H, W) or (H, W, 3) in 0..255."""
    array = np.asarray(pixels)
    return image_statistics(lambda a, b: array[a:b], height=array.shape[0], width=array.shape[1])

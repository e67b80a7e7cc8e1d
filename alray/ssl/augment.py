"""The two-view augmentations of contrastive training, batched in plain torch: random resized
crops, horizontal flips, colour jitter, random grey and Gaussian blur.

Each sample's draws (crop box, flip, jitter factors, blur sigma) come from a generator seeded by
the run seed, the epoch, the view and the sample's 64-bit id key alone, so a sample is augmented
the same way whatever worker, batch or position it lands in, and a resumed run draws what an
undisturbed one would have.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

# Uniform draws per sample and view, in this order (see Augment._draws).
_N_DRAWS = 12


@dataclass(frozen=True)
class AugmentParams:
    """How strong each augmentation is.

    Attributes
    ----------
    crop_min_scale : smallest share of the image's area a crop keeps (SimCLR: 0.08; small,
        centred objects such as digits want more)
    flip_probability : chance of a horizontal flip (0 for pools where a mirror changes meaning)
    jitter : brightness, contrast and saturation factors are drawn from [1 - jitter, 1 + jitter]
    jitter_probability : chance that a view is colour-jittered at all
    grayscale_probability : chance that an RGB view is turned grey (ignored for grey images)
    blur_probability : chance of a Gaussian blur
    blur_max_sigma : largest blur sigma, as a share of the image side (sigma is drawn from
        [0.1 px, blur_max_sigma x side])
    """

    crop_min_scale: float = 0.2
    flip_probability: float = 0.5
    jitter: float = 0.4
    jitter_probability: float = 0.8
    grayscale_probability: float = 0.2
    blur_probability: float = 0.5
    blur_max_sigma: float = 0.05


class Augment(nn.Module):
    """One random view of each image of a batch, keyed by sample.

    Parameters
    ----------
    params : the strengths (:class:`AugmentParams`)
    """

    def __init__(self, params: AugmentParams | None = None) -> None:
        super().__init__()
        self.params = params or AugmentParams()

    def forward(self, images: torch.Tensor, keys: np.ndarray | torch.Tensor, *, seed: int, epoch: int,
                view: int) -> torch.Tensor:
        """A view of ``images``.

        Parameters
        ----------
        images : (B, C, S, S) floats in 0..1, C = 1 or 3
        keys : (B,) 64-bit sample keys (:func:`alray.models.id_keys`), uint64 or the same bits as int64
        seed, epoch, view : what, with the key, seeds a sample's draws

        Returns
        -------
        (B, C, S, S) floats in 0..1 on the device and of the dtype of ``images``.
        """
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected images (B, 1 or 3, S, S), got {tuple(images.shape)}")
        draws = torch.as_tensor(self._draws(keys, seed=seed, epoch=epoch, view=view), dtype=images.dtype,
                                device=images.device)
        x = self._crop_and_flip(images, draws)
        x = self._jitter(x, draws)
        return self._blur(x, draws)

    @staticmethod
    def _draws(keys: np.ndarray | torch.Tensor, *, seed: int, epoch: int, view: int) -> np.ndarray:
        """(B, 12) uniforms in [0, 1), row b a function of (seed, epoch, view, keys[b]) alone."""
        raw = keys.cpu().numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
        unsigned = raw.astype(np.int64).view(np.uint64) if raw.dtype != np.uint64 else raw
        mask = (1 << 64) - 1
        return np.stack([
            np.random.default_rng([seed & mask, epoch, view, int(key)]).random(_N_DRAWS) for key in unsigned
        ]) if len(unsigned) else np.zeros((0, _N_DRAWS))

    def _crop_and_flip(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        # A random resized crop: area share in [min_scale, 1], aspect ratio in [3/4, 4/3], resampled
        # to the full side by one affine grid; a flip is the same map with x mirrored.
        p = self.params
        scale = p.crop_min_scale + (1.0 - p.crop_min_scale) * u[:, 0]
        log_ratio = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * u[:, 1]
        ratio = torch.exp(log_ratio)
        width = torch.sqrt(scale * ratio).clamp(max=1.0)
        height = torch.sqrt(scale / ratio).clamp(max=1.0)
        centre_x = (1.0 - width) * (2 * u[:, 2] - 1)  # in the [-1, 1] coordinates of affine_grid
        centre_y = (1.0 - height) * (2 * u[:, 3] - 1)
        flip = torch.where(u[:, 4] < p.flip_probability, -1.0, 1.0).to(x.dtype)
        zero = torch.zeros_like(width)
        theta = torch.stack([torch.stack([width * flip, zero, centre_x], dim=1),
                             torch.stack([zero, height, centre_y], dim=1)], dim=1)
        grid = nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
        return nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    def _jitter(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        p = self.params
        apply = (u[:, 5] < p.jitter_probability).to(x.dtype)[:, None, None, None]

        def factor(column: int) -> torch.Tensor:
            drawn = 1.0 - p.jitter + 2 * p.jitter * u[:, column]
            return (1.0 + apply[:, 0, 0, 0] * (drawn - 1.0))[:, None, None, None]

        x = (x * factor(6)).clamp(0, 1)  # brightness
        mean = _grey(x).mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - mean) * factor(7) + mean).clamp(0, 1)  # contrast
        if x.shape[1] == 3:
            grey = _grey(x)
            x = ((x - grey) * factor(8) + grey).clamp(0, 1)  # saturation
            to_grey = (u[:, 9] < p.grayscale_probability).to(x.dtype)[:, None, None, None]
            x = to_grey * _grey(x).expand_as(x) + (1 - to_grey) * x
        return x

    def _blur(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        p = self.params
        side = x.shape[-1]
        max_sigma = max(0.1, p.blur_max_sigma * side)
        radius = max(1, math.ceil(3 * max_sigma))
        sigma = 0.1 + (max_sigma - 0.1) * u[:, 11]
        offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
        kernel = torch.exp(-0.5 * (offsets[None, :] / sigma[:, None]) ** 2)
        kernel = kernel / kernel.sum(dim=1, keepdim=True)
        identity = (offsets == 0).to(x.dtype)[None, :].expand_as(kernel)
        blurred = (u[:, 10] < p.blur_probability)[:, None]
        kernel = torch.where(blurred, kernel, identity)  # (B, K)
        batch, channels = x.shape[:2]
        per_channel = kernel.repeat_interleave(channels, dim=0)  # (B * C, K)
        # One depthwise convolution over the batch folded into channels: each image its own kernel.
        h = nn.functional.pad(x.reshape(1, batch * channels, side, side), (radius, radius, radius, radius),
                              mode="reflect" if radius < side else "replicate")
        h = nn.functional.conv2d(h, per_channel[:, None, None, :], groups=batch * channels)
        h = nn.functional.conv2d(h, per_channel[:, None, :, None], groups=batch * channels)
        return h.reshape(batch, channels, side, side)


def _grey(x: torch.Tensor) -> torch.Tensor:
    """Luminance (B, 1, S, S) of images (B, C, S, S) (ITU-R BT.601 weights for RGB)."""
    if x.shape[1] == 1:
        return x
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device)[None, :, None, None]
    return (x * weights).sum(dim=1, keepdim=True)

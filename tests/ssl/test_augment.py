"""Augmentations: values in range, shapes kept, draws keyed by seed, epoch, view and sample id."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alray.models import id_keys
from alray.ssl import Augment, AugmentParams


def _images(n: int, channels: int, size: int = 16) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("channels", [1, 3])
def test_views_keep_shape_and_range_and_differ(channels):
    images = _images(6, channels)
    keys = id_keys([f"img-{i}" for i in range(6)])
    augment = Augment()
    first = augment(images, keys, seed=0, epoch=0, view=0)
    second = augment(images, keys, seed=0, epoch=0, view=1)
    assert first.shape == images.shape and first.dtype == images.dtype
    assert float(first.min()) >= 0.0 and float(first.max()) <= 1.0
    assert not torch.equal(first, second)
    assert not torch.equal(first, augment(images, keys, seed=0, epoch=1, view=0))
    assert not torch.equal(first, augment(images, keys, seed=1, epoch=0, view=0))


def test_a_sample_is_augmented_the_same_in_any_batch_or_position():
    images = _images(8, 3)
    keys = id_keys([f"img-{i}" for i in range(8)])
    augment = Augment()
    whole = augment(images, keys, seed=3, epoch=2, view=1)
    order = torch.tensor([5, 2, 7])
    part = augment(images[order], keys[order.numpy()], seed=3, epoch=2, view=1)
    assert torch.allclose(part, whole[order], atol=1e-6)
    # the int64 bits of the keys (how Ray batches carry them) draw the same
    signed = augment(images, torch.from_numpy(keys.view(np.int64)), seed=3, epoch=2, view=1)
    assert torch.equal(signed, whole)


def test_geometry_alone_keeps_flat_images_and_a_flip_mirrors():
    geometry_only = AugmentParams(flip_probability=0.0, jitter_probability=0.0, blur_probability=1.0,
                                  grayscale_probability=0.0)
    flat = torch.linspace(0.1, 0.9, 4)[:, None, None, None].expand(4, 3, 16, 16).contiguous()
    keys = id_keys(list("abcd"))
    # crops, resampling and blur of a flat image give it back
    assert torch.allclose(Augment(geometry_only)(flat, keys, seed=0, epoch=0, view=0), flat, atol=1e-5)
    ramp = torch.linspace(0, 1, 16)[None, None, None, :].expand(4, 1, 16, 16).contiguous()
    kept = Augment(AugmentParams(flip_probability=0.0, jitter_probability=0.0, blur_probability=0.0))
    flipped = Augment(AugmentParams(flip_probability=1.0, jitter_probability=0.0, blur_probability=0.0))
    assert (kept(ramp, keys, seed=0, epoch=0, view=0).diff(dim=-1) >= -1e-6).all()  # still rising
    assert (flipped(ramp, keys, seed=0, epoch=0, view=0).diff(dim=-1) <= 1e-6).all()  # now falling


def test_blur_smooths():
    images = _images(4, 1, size=32)
    blur = Augment(AugmentParams(crop_min_scale=1.0, flip_probability=0.0, jitter_probability=0.0,
                                 blur_probability=1.0, blur_max_sigma=0.1))
    plain = Augment(AugmentParams(crop_min_scale=1.0, flip_probability=0.0, jitter_probability=0.0,
                                  blur_probability=0.0))
    keys = id_keys(list("wxyz"))

    def roughness(x):
        return float((x[..., 1:] - x[..., :-1]).abs().mean())

    blurred, kept = blur(images, keys, seed=0, epoch=0, view=0), plain(images, keys, seed=0, epoch=0, view=0)
    assert roughness(blurred) < roughness(kept)


def test_refuses_images_of_other_shapes():
    with pytest.raises(ValueError, match="expected images"):
        Augment()(torch.rand(2, 2, 8, 8), id_keys(["a", "b"]), seed=0, epoch=0, view=0)

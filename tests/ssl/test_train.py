"""One SimCLR epoch in plain torch: the loss falls, seeded runs repeat, undecodable rows are left out."""

from __future__ import annotations

import numpy as np
import torch

from alray.models import id_keys
from alray.models.encoders import ConvEncoder
from alray.ssl import Augment, AugmentParams, NTXentLoss, SimCLR, cosine_learning_rate, train_epoch

# Strong enough to be a task, mild enough for 32 images to learn it in a few epochs.
MILD = Augment(AugmentParams(crop_min_scale=0.6, jitter=0.2, blur_probability=0.0))


def _batches(n_batches: int = 4, size: int = 8, side: int = 16, valid: bool = False) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    batches = []
    for b in range(n_batches):
        coarse = torch.rand(size, 1, 4, 4, generator=generator)  # distinct, smooth images: views keep their look
        pixels = torch.nn.functional.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False)
        batch = {"pixels": pixels,
                 "key": torch.from_numpy(id_keys([f"s{b}-{i}" for i in range(size)]).view(np.int64))}
        if valid:
            batch["valid"] = torch.tensor([i != 0 for i in range(size)])
        batches.append(batch)
    return batches


def _run(epochs: int, batches: list[dict[str, torch.Tensor]]) -> tuple[list[float], SimCLR]:
    torch.manual_seed(0)
    model = SimCLR(ConvEncoder(in_channels=1, image_size=16, width=8), projection_dim=16)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for epoch in range(epochs):
        totals = train_epoch(model, optimizer, batches, augment=MILD, loss=NTXentLoss(0.2), seed=0, epoch=epoch)
        losses.append(totals.loss_sum / totals.steps)
    return losses, model


def test_the_loss_falls_and_a_seeded_run_repeats_bitwise():
    batches = _batches()
    losses, model = _run(6, batches)
    assert losses[-1] < losses[0]
    again, other = _run(6, batches)
    assert again == losses
    for (name, a), (_, b) in zip(model.state_dict().items(), other.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_invalid_rows_are_counted_and_left_out():
    torch.manual_seed(0)
    model = SimCLR(ConvEncoder(in_channels=1, image_size=16, width=4), projection_dim=8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    totals = train_epoch(model, optimizer, _batches(2, valid=True), augment=Augment(), loss=NTXentLoss(), seed=0,
                         epoch=0)
    assert (totals.steps, totals.images, totals.skipped) == (2, 14, 2)
    # a batch with fewer than two usable rows still steps (data-parallel workers step together)
    lonely = [{"pixels": torch.rand(2, 1, 16, 16), "key": torch.tensor([1, 2]), "valid": torch.tensor([True, False])}]
    totals = train_epoch(model, optimizer, lonely, augment=Augment(), loss=NTXentLoss(), seed=0, epoch=0)
    assert (totals.steps, totals.images, totals.skipped) == (0, 0, 1)


def test_cosine_schedule():
    assert cosine_learning_rate(1.0, 0, 10) == 1.0
    assert abs(cosine_learning_rate(1.0, 5, 10) - 0.5) < 1e-12
    assert cosine_learning_rate(1.0, 9, 10) > 0

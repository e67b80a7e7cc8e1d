"""alray checkpoints: weights only, refused when they need pickle, unreadable, missing or not fitting."""

from __future__ import annotations

import pytest
import torch

from alray.errors import InputError
from alray.models import SmallCNN, load_checkpoint, save_checkpoint


class NeedsPickle:
    """An arbitrary object: loading it would run pickle's code paths."""


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = SmallCNN(image_size=16, n_classes=4)
    save_checkpoint(model, tmp_path / "m.pt")
    loaded = load_checkpoint(tmp_path / "m.pt", expected_classes=4)
    x = torch.rand(3, 1, 16, 16)
    model.eval()
    torch.testing.assert_close(loaded(x), model(x))
    assert not loaded.training


def test_checkpoint_that_needs_pickle_is_refused(tmp_path):
    torch.save({"format": "alray-checkpoint/1", "obj": NeedsPickle()}, tmp_path / "p.pt")
    with pytest.raises(InputError, match="refused, it needs pickle"):
        load_checkpoint(tmp_path / "p.pt")
    torch.save(SmallCNN(), tmp_path / "whole.pt")  # a pickled module, not a state dict
    with pytest.raises(InputError, match="needs pickle"):
        load_checkpoint(tmp_path / "whole.pt")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a checkpoint at all", "unreadable checkpoint"),
        (None, "file not found"),
    ],
)
def test_unreadable_or_missing_checkpoint(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        load_checkpoint(path)


def test_incompatible_checkpoints(tmp_path):
    model = SmallCNN(n_classes=10)
    save_checkpoint(model, tmp_path / "m.pt")
    with pytest.raises(InputError, match="has 10 classes, expected 3"):
        load_checkpoint(tmp_path / "m.pt", expected_classes=3)
    torch.save({"format": "alray-checkpoint/1", "architecture": "resnet9000", "params": {}, "state_dict": {}},
               tmp_path / "arch.pt")
    with pytest.raises(InputError, match="unknown architecture 'resnet9000'"):
        load_checkpoint(tmp_path / "arch.pt")
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("classifier")}
    torch.save({"format": "alray-checkpoint/1", "architecture": "small_cnn", "params": model.params,
                "state_dict": state}, tmp_path / "partial.pt")
    with pytest.raises(InputError, match="weights do not fit small_cnn"):
        load_checkpoint(tmp_path / "partial.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(InputError, match="not an alray checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")

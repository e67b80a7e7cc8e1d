"""load_model: which loader a file goes to (by its content, not its name), the order of its checks,
and pick_device."""

from __future__ import annotations

import pytest
import torch

from alray.errors import InputError
from alray.models import (
    ScriptedModel,
    SmallCNN,
    TaskModel,
    load_model,
    pick_device,
    save_checkpoint,
    save_torchscript,
)


def test_load_model_picks_the_format_by_content(tmp_path):
    torch.manual_seed(0)
    cnn = SmallCNN(image_size=8, n_classes=4)
    save_checkpoint(cnn, tmp_path / "model.ts")  # an alray checkpoint, whatever its suffix
    loaded = load_model(tmp_path / "model.ts", expected_classes=4)
    assert type(loaded) is SmallCNN and isinstance(loaded, TaskModel) and not loaded.training
    net = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    save_torchscript(net, tmp_path / "scripted.ckpt", input_kind="features", n_classes=3, n_features=5)
    scripted = load_model(tmp_path / "scripted.ckpt", expected_classes=3)
    assert type(scripted) is ScriptedModel and isinstance(scripted, TaskModel) and not scripted.training
    with pytest.raises(InputError, match="has 4 classes, expected 3"):
        load_model(tmp_path / "model.ts", expected_classes=3)
    with pytest.raises(InputError, match="has 3 classes, expected 4"):
        load_model(tmp_path / "scripted.ckpt", expected_classes=4)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(InputError, match="not an alray checkpoint"):
        load_model(tmp_path / "foreign.pt")


def test_missing_file_is_not_found_for_every_source(tmp_path):
    for architecture in (None, "torchvision:resnet18"):
        with pytest.raises(InputError, match=r"model\.checkpoint: .*none\.pt: file not found"):
            load_model(tmp_path / "none.pt", architecture=architecture)


def test_architecture_is_checked_before_the_file(tmp_path):
    with pytest.raises(InputError, match=r"model\.architecture: expected 'torchvision:NAME', got 'timm:resnet18'"):
        load_model(tmp_path / "none.pt", architecture="timm:resnet18")


def test_a_file_that_is_no_zip_archive_is_unreadable_for_every_source(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x08\x07\x12\x07pytorch")
    for architecture in (None, "torchvision:resnet18"):
        with pytest.raises(InputError, match=r"unreadable checkpoint \(not a torch\.save or TorchScript file\)"):
            load_model(path, architecture=architecture)


def test_pick_device():
    assert pick_device("cpu") == torch.device("cpu")
    if torch.cuda.is_available():
        assert pick_device("auto") == pick_device("cuda") == torch.device("cuda")
    else:
        assert pick_device("auto") == torch.device("cpu")
        with pytest.raises(InputError, match=r"model\.device: cuda was asked for but no GPU is visible"):
            pick_device("cuda")

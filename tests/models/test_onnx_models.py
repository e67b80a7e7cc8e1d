"""ONNX models: the same network exported to ONNX and TorchScript gives the same features and ranking."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import alray
from alray.errors import InputError
from alray.image_samples import encode, image_of_mode
from alray.models import SmallCNN, load_model, save_checkpoint, save_torchscript
from alray.models.onnx_models import OnnxModel
from tests.models.test_torchscript import SplitNet

pytest.importorskip("onnxruntime")


class Split(SplitNet):
    """The split network with a forward that gives both outputs, as the ONNX export names them."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        embedding = self.backbone(x)
        return embedding, self.classifier(embedding)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    cnn = SmallCNN(n_classes=10).eval()
    root = tmp_path_factory.mktemp("onnx")
    save_checkpoint(cnn, root / "model.pt")
    x = torch.zeros(2, cnn.in_channels, cnn.image_size, cnn.image_size)
    torch.onnx.export(Split(cnn), (x,), str(root / "model.onnx"), input_names=["input"],
                      output_names=["embedding", "logits"], dynamic_axes={"input": {0: "b"}}, dynamo=False)
    save_torchscript(SplitNet(cnn), root / "model.ts", input_kind="image", n_classes=10,
                     in_channels=cnn.in_channels, image_size=cnn.image_size, dropout=cnn.dropout_p)
    pool = pd.DataFrame({"id": [f"img-{i:03d}" for i in range(64)],
                         "image": [encode(image_of_mode("L", width=20, height=20, seed=i), "PNG") for i in range(64)]})
    return root, cnn, pool


def test_onnx_reads_the_head_and_matches_the_torch_model(exported):
    root, cnn, _pool = exported
    model = load_model(root / "model.onnx", dropout=cnn.dropout_p)
    assert isinstance(model, OnnxModel) and model.splits_head and model.n_classes == 10
    x = torch.rand(5, cnn.in_channels, cnn.image_size, cnn.image_size)
    with torch.no_grad():
        np.testing.assert_allclose(model.encode(x)[0].numpy(), cnn.encode(x)[0].numpy(), atol=1e-5)
        np.testing.assert_allclose(model.head(cnn.encode(x)[0]).numpy(), cnn.head(cnn.encode(x)[0]).numpy(),
                                   atol=1e-5)


def test_onnx_torchscript_and_checkpoint_give_the_same_features_and_ranking(exported):
    root, _cnn, pool = exported
    features = {name: alray.score(pool, str(root / name), mc_samples=8, seed=3)
                for name in ("model.pt", "model.onnx", "model.ts")}
    reference = features["model.pt"]
    for name in ("model.onnx", "model.ts"):
        ours = features[name]
        assert ours.id.tolist() == reference.id.tolist()
        for column in ("embedding", "probs"):
            np.testing.assert_allclose(np.stack(ours[column]), np.stack(reference[column]), atol=1e-4)
        for column in ("entropy", "margin", "bald", "variation_ratio"):
            np.testing.assert_allclose(ours[column].to_numpy(), reference[column].to_numpy(), atol=1e-4)
    picks = {name: alray.select(f, n_samples=12, strategies=["diversity", "weights:entropy"])
             for name, f in features.items()}
    assert picks["model.onnx"].id.tolist()[:12] == picks["model.pt"].id.tolist()[:12]
    assert picks["model.ts"].id.tolist()[:12] == picks["model.pt"].id.tolist()[:12]


def test_onnx_outputs_that_do_not_match_are_one_line_errors(exported, tmp_path):
    _root, cnn, _pool = exported
    x = torch.zeros(1, cnn.in_channels, cnn.image_size, cnn.image_size)
    torch.onnx.export(SplitNet(cnn), (x,), str(tmp_path / "scores.onnx"), input_names=["input"],
                      output_names=["scores"], dynamo=False)
    with pytest.raises(InputError, match=r"ONNX outputs \['scores'\]: expected one named 'logits'"):
        load_model(tmp_path / "scores.onnx")


class Encoder(torch.nn.Module):
    """Only the backbone: an ONNX graph with an ``embedding`` output and no ``logits``."""

    def __init__(self, cnn: SmallCNN) -> None:
        super().__init__()
        self.cnn = cnn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cnn.encode(x)[0]


def test_an_onnx_encoder_gives_embeddings_only(exported, tmp_path):
    _root, cnn, pool = exported
    x = torch.zeros(2, cnn.in_channels, cnn.image_size, cnn.image_size)
    torch.onnx.export(Encoder(cnn), (x,), str(tmp_path / "encoder.onnx"), input_names=["input"],
                      output_names=["embedding"], dynamic_axes={"input": {0: "b"}}, dynamo=False)
    model = load_model(tmp_path / "encoder.onnx", model_format="onnx")
    assert (model.n_classes, model.embedding_dim) == (0, cnn.embedding_dim)
    features = alray.score(pool, str(tmp_path / "encoder.onnx"), mc_samples=4)
    reference = alray.score(pool, str(_root / "model.pt"), mc_samples=4)
    np.testing.assert_allclose(np.stack(features.embedding), np.stack(reference.embedding), atol=1e-4)
    assert features.bald.isna().all() and features.probs.isna().all() and features.pred.isna().all()

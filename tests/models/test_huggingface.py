"""Hugging Face models from save_pretrained directories (built from configs with random weights, no download):
image and text classifiers, and feature-extraction models that give embeddings only."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

import alray
from alray.cli import main as alray_main
from alray.errors import InputError
from alray.image_samples import encode, image_of_mode
from alray.lake import Lake
from alray.models import load_model
from alray.models.huggingface import HuggingFaceModel
from alray.tables import MC_SCORES

transformers = pytest.importorskip("transformers")

WORDS = ["the", "a", "cat", "dog", "sat", "ran", "on", "mat", "fast", "slow", "red", "blue", "big", "small"]
TEXTS = [" ".join(np.random.default_rng(i).choice(WORDS, size=3 + i % 7)) for i in range(40)]


def _vit_config(**extra):
    return transformers.ViTConfig(image_size=16, patch_size=4, hidden_size=16, num_hidden_layers=1,
                                  num_attention_heads=2, intermediate_size=32, **extra)


def _save_processor(path):
    transformers.ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.5] * 3,
                                   image_std=[0.25] * 3).save_pretrained(str(path))


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vit")
    transformers.ViTForImageClassification(_vit_config(num_labels=3)).save_pretrained(str(path))
    _save_processor(path)
    return path


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    vocab = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    return transformers.BertTokenizer(vocab_file=str(vocab))


def _bert_config(**extra):
    return transformers.BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=32, max_position_embeddings=64, **extra)


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory, tokenizer):
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("bert")
    transformers.BertForSequenceClassification(_bert_config(num_labels=4)).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


def test_a_vit_directory_loads_and_splits_at_its_classifier(vit_dir):
    model = load_model(vit_dir, dropout=0.3)
    assert isinstance(model, HuggingFaceModel) and model.input_kind == "image"
    assert (model.n_classes, model.embedding_dim, model.image_size, model.in_channels) == (3, 16, 16, 3)
    network = transformers.ViTForImageClassification.from_pretrained(str(vit_dir)).eval()
    x = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        expected = network(pixel_values=(x - 0.5) / 0.25).logits
        embedding, _ = model.encode(x)
        np.testing.assert_allclose(model.head(embedding).numpy(), expected.numpy(), atol=1e-5)


def _image_pool(n: int = 24) -> pd.DataFrame:
    images = [encode(image_of_mode("RGB", width=20, height=20, seed=i), "PNG") for i in range(n)]
    return pd.DataFrame({"id": [f"img-{i:02d}" for i in range(n)], "image": images})


def test_a_vit_directory_scores_a_pool_end_to_end(vit_dir):
    features = alray.score(_image_pool(), str(vit_dir), mc_samples=10, seed=0)
    assert len(features) == 24 and len(features.embedding.iloc[0]) == 16
    assert (features.bald > 0).all()  # MC dropout on the head: the passes disagree
    ranking = alray.select(features, n_samples=5, strategies=["diversity", "weights:bald"])
    assert ranking.selected.sum() == 5


def test_a_feature_extraction_vit_gives_its_pooled_output_and_no_scores(tmp_path):
    torch.manual_seed(2)
    network = transformers.ViTModel(_vit_config()).eval()
    network.save_pretrained(str(tmp_path))
    _save_processor(tmp_path)
    model = load_model(tmp_path)
    assert (model.n_classes, model.embedding_dim) == (0, 16)
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        np.testing.assert_allclose(model.encode(x)[0].numpy(),
                                   network(pixel_values=(x - 0.5) / 0.25).pooler_output.numpy(), atol=1e-6)
    features = alray.score(_image_pool(12), str(tmp_path), mc_samples=5)
    assert len(features) == 12 and features.embedding.map(len).eq(16).all()
    assert features[["probs", "pred", *MC_SCORES]].isna().all().all()
    assert features.sharpness.notna().all()  # quality metrics still come from the pixels
    assert alray.select(features, n_samples=4, strategies=["diversity"]).selected.sum() == 4


def test_a_bert_classifier_splits_at_its_classifier_and_tokenises_to_a_fixed_length(bert_dir):
    model = load_model(bert_dir, dropout=0.2, max_tokens=12)
    assert isinstance(model, HuggingFaceModel) and model.input_kind == "text"
    assert (model.n_classes, model.embedding_dim, model.max_tokens) == (4, 16, 12)
    tokens = model.tokenize(TEXTS[:5])
    assert tokens.shape == (5, 2, 12) and tokens.dtype == np.int64
    network = transformers.BertForSequenceClassification.from_pretrained(str(bert_dir)).eval()
    x = torch.from_numpy(tokens)
    with torch.no_grad():
        expected = network(input_ids=x[:, 0], attention_mask=x[:, 1]).logits
        np.testing.assert_allclose(model.head(model.encode(x)[0]).numpy(), expected.numpy(), atol=1e-5)
    assert load_model(bert_dir).max_tokens == 64  # the default 256, capped by max_position_embeddings


def test_a_bert_classifier_scores_texts_the_same_in_any_batching(bert_dir):
    pool = pd.DataFrame({"id": [f"t{i:02d}" for i in range(len(TEXTS))], "text": TEXTS})
    one = alray.score(pool, str(bert_dir), mc_samples=8, seed=3, batch_size=64)
    many = alray.score(pool, str(bert_dir), mc_samples=8, seed=3, batch_size=7)
    assert len(one) == 40 and (one.bald > 0).all()
    for name in ("bald", "entropy", "margin"):
        np.testing.assert_array_equal(one[name].to_numpy(), many[name].to_numpy())
    np.testing.assert_array_equal(np.stack(one.embedding), np.stack(many.embedding))


def test_a_roberta_style_head_is_sampled_at_its_last_linear_layer(tmp_path, tokenizer):
    torch.manual_seed(4)
    config = transformers.RobertaConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                        intermediate_size=32, max_position_embeddings=40, num_labels=3,
                                        pad_token_id=0)
    network = transformers.RobertaForSequenceClassification(config).eval()
    network.save_pretrained(str(tmp_path))
    tokenizer.save_pretrained(str(tmp_path))
    model = load_model(tmp_path)
    assert model.classifier is network.classifier.out_proj or model.classifier.out_features == 3
    x = torch.from_numpy(model.tokenize(TEXTS[:4]))
    with torch.no_grad():
        expected = network(input_ids=x[:, 0], attention_mask=x[:, 1]).logits
        np.testing.assert_allclose(model.head(model.encode(x)[0]).numpy(), expected.numpy(), atol=1e-5)


def test_a_feature_extraction_bert_gives_the_masked_mean_of_its_last_hidden_state(tmp_path, tokenizer):
    torch.manual_seed(5)
    network = transformers.BertModel(_bert_config()).eval()
    network.save_pretrained(str(tmp_path))
    tokenizer.save_pretrained(str(tmp_path))
    model = load_model(tmp_path, max_tokens=10)
    assert (model.input_kind, model.n_classes) == ("text", 0)
    short = torch.from_numpy(model.tokenize(["cat"]))
    with torch.no_grad():
        hidden = network(input_ids=short[:, 0, :3]).last_hidden_state  # [CLS] cat [SEP], no padding
        np.testing.assert_allclose(model.encode(short)[0].numpy(), hidden.mean(dim=1).numpy(), atol=1e-5)


def test_directories_without_their_preprocessing_are_one_line_errors(vit_dir, bert_dir, tmp_path):
    transformers.ViTForImageClassification.from_pretrained(str(vit_dir)).save_pretrained(str(tmp_path / "bare"))
    with pytest.raises(InputError, match=r"needs its preprocessor_config\.json"):
        load_model(tmp_path / "bare")
    transformers.BertForSequenceClassification.from_pretrained(str(bert_dir)).save_pretrained(str(tmp_path / "txt"))
    with pytest.raises(InputError, match=r"a Hugging Face text model needs its tokenizer") as caught:
        load_model(tmp_path / "txt")
    assert "\n" not in str(caught.value)


def test_model_format_names_the_format_and_refuses_another(vit_dir, tmp_path):
    assert load_model(vit_dir, model_format="huggingface").n_classes == 3
    (tmp_path / "model.onnx").write_text("not a graph")
    with pytest.raises(InputError, match=r"model.onnx: not an ONNX file, as model.format onnx says"):
        load_model(tmp_path / "model.onnx", model_format="onnx")
    with pytest.raises(InputError, match=r"not a TorchScript file, as model.format torchscript says"):
        load_model(vit_dir, model_format="torchscript")


def _run(tmp_path, config: dict) -> tuple[int, str, str]:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = alray_main(["run", str(path), "--run-id", "hf", "--json", "--quiet"])
    return code, out.getvalue(), err.getvalue()


def test_a_bert_directory_runs_the_job_on_a_text_pool(ray_session, spark, bert_dir, tmp_path):
    texts = [*TEXTS, None]
    pq.write_table(pa.table({"id": [f"t{i:02d}" for i in range(len(texts))], "text": texts}),
                   str(tmp_path / "texts.parquet"))
    config = {"run": {"seed": 0}, "pool": {"path": str(tmp_path / "texts.parquet")},
              "model": {"checkpoint": str(bert_dir), "max_tokens": 16},
              "score": {"batch_size": 16, "mc_samples": 6},
              "selection": {"n_samples": 5, "n_partitions": 2,
                            "strategies": [{"input": "embeddings", "strategy": "diversity"},
                                           {"input": "bald", "strategy": "weights"}]},
              "output": {"path": str(tmp_path / "lake")}}
    code, out, err = _run(tmp_path, config)
    assert code == 0, err[-2000:]
    assert json.loads(out.strip().splitlines()[-1])["counts"]["selected"] == 5
    lake = Lake(str(tmp_path / "lake"))
    assert [r["id"] for r in lake.read_run("rejects", "hf").to_pylist()] == ["t40"]
    features = lake.read_run("features", "hf", columns=["id", "bald"]).sort_by("id")
    expected = alray.score(pd.DataFrame({"id": [f"t{i:02d}" for i in range(40)], "text": TEXTS}), str(bert_dir),
                           mc_samples=6, seed=0, max_tokens=16)
    np.testing.assert_array_equal(features.column("bald").to_numpy(), expected.bald.to_numpy())


def test_an_embeddings_only_model_refuses_a_selection_that_needs_predictions(spark, vit_dir, tmp_path):
    path = tmp_path / "vit-features"
    transformers.ViTModel(_vit_config()).save_pretrained(str(path))
    _save_processor(path)
    pool = _image_pool(6)
    pq.write_table(pa.Table.from_pandas(pool), str(tmp_path / "pool.parquet"))
    config = {"pool": {"path": str(tmp_path / "pool.parquet")}, "model": {"checkpoint": str(path)},
              "selection": {"n_samples": 2, "strategies": [{"input": "embeddings", "strategy": "diversity"},
                                                           {"input": "bald", "strategy": "weights"}]},
              "output": {"path": str(tmp_path / "lake")}}
    code, _, err = _run(tmp_path, config)
    assert code == 2
    assert err.strip().splitlines()[-1].endswith(
        f"selection.strategies.1: 'bald' needs a model (model.checkpoint) or mc_probs in the pool; "
        f"model.checkpoint {path} gives embeddings only")

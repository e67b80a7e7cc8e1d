"""Hugging Face models from a local ``save_pretrained`` directory: image and text classifiers, and
feature-extraction models (no head) that give embeddings only.

The directory holds ``config.json`` and the weights, and the model's own preprocessing saved
beside them: an image processor (``preprocessor_config.json``: input size, mean and std; alray
decodes and resizes, the processor's normalisation is applied here) or a tokenizer.

What the directory's ``config.json`` names decides the route:

- ``...ForImageClassification`` / ``...ForSequenceClassification``: a classifier through
  ``AutoModelForImageClassification`` / ``AutoModelForSequenceClassification``. The embedding is
  what the model's last linear layer to its labels receives (BERT's and ViT's ``classifier``,
  RoBERTa's ``classifier.out_proj``: the pooled output), the head is that layer, and MC dropout
  samples the head with alray's masks, as for a built-in model, at ``model.dropout`` (0.5 when
  unset).
- any other architecture (``ViTModel``, ``BertModel``, ...): a feature extractor through
  ``AutoModel``, ``n_classes`` 0. Images give the model's pooled output (its ``pooler_output``,
  else the first token or the spatial mean of the last hidden state), texts the mean of the last
  hidden state over the attention mask. Its scores are null: use it for task-independent
  selection.

Whether the model takes images or texts comes from its architecture (the ``transformers`` auto
mappings), else from the preprocessing files present. Texts are tokenised by the directory's
tokenizer to a fixed ``max_tokens`` (truncated and padded), so a text's numbers do not depend
on the batch it arrives in. Needs ``transformers`` (the ``hf`` extra).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from alray.errors import InputError
from alray.models.files import first_line

EXTRA_HINT = "Hugging Face models need the hf extra: pip install 'alray[hf]'"
# Tokens a text is cut or padded to when model.max_tokens is unset (also capped by the model's own limit).
DEFAULT_MAX_TOKENS = 256
_TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "vocab.txt", "vocab.json", "spiece.model")
_PROCESSOR_FILE = "preprocessor_config.json"


def is_huggingface(path: Path) -> bool:
    """Whether ``path`` is a directory saved by ``save_pretrained`` (it holds ``config.json``)."""
    return path.is_dir() and (path / "config.json").is_file()


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise InputError(EXTRA_HINT) from None
    return transformers


def _route(path: Path, config: dict[str, Any]) -> tuple[str, bool]:
    """(input kind "image" or "text", whether the model is a classifier) of a directory's config."""
    architectures = [str(a) for a in config.get("architectures") or []]
    if any(a.endswith("ForImageClassification") for a in architectures):
        return "image", True
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        return "text", True
    from transformers.models.auto import modeling_auto

    model_type = str(config.get("model_type", ""))
    if model_type in modeling_auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES:
        return "image", False
    if model_type in modeling_auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES:
        return "text", False
    if (path / _PROCESSOR_FILE).is_file():
        return "image", False
    if any((path / name).is_file() for name in _TOKENIZER_FILES):
        return "text", False
    name = architectures or model_type
    raise InputError(f"model.checkpoint {path}: cannot tell whether the Hugging Face model {name} "
                     f"takes images or texts: save its image processor or tokenizer with save_pretrained beside it")


def _head_layer(network: nn.Module, n_labels: int) -> nn.Linear | None:
    """The last linear layer to the labels: inside the model's ``classifier`` (or ``score``) when it has one."""
    for name in ("classifier", "score"):
        module = getattr(network, name, None)
        if isinstance(module, nn.Module):
            layers = [m for m in module.modules() if isinstance(m, nn.Linear) and m.out_features == n_labels]
            if layers:
                return layers[-1]
    layers = [m for m in network.modules() if isinstance(m, nn.Linear) and m.out_features == n_labels]
    return layers[-1] if layers else None


class HuggingFaceModel(nn.Module):
    """A Hugging Face model behind the :class:`~alray.models.contract.TaskModel` contract (module docstring)."""

    has_loss_head = False
    splits_head = True
    text_encoder: str | None = None
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, path: Path, *, dropout: float | None, max_tokens: int | None = None) -> None:
        super().__init__()
        transformers = _transformers()
        config = json.loads((path / "config.json").read_text())
        self.input_kind, classifier = _route(path, config)
        self.n_features, self.in_channels, self.image_size = 0, 0, 0
        self.dropout_p = float(dropout if dropout is not None else 0.5)
        if self.input_kind == "image":
            self._read_image_processor(path)
        else:
            self._read_tokenizer(path, config, max_tokens)
        auto = (transformers.AutoModel if not classifier else transformers.AutoModelForImageClassification
                if self.input_kind == "image" else transformers.AutoModelForSequenceClassification)
        try:
            self.network = auto.from_pretrained(str(path), local_files_only=True).eval()
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"model.checkpoint {path}: cannot load it with transformers' {auto.__name__} "
                             f"({first_line(exc)})") from None
        if self.input_kind == "image":
            self.in_channels = int(getattr(self.network.config, "num_channels", 3))
        self.n_classes = int(self.network.config.num_labels) if classifier else 0
        self._captured: dict[str, torch.Tensor] = {}
        self.classifier: nn.Module = nn.Identity()
        if classifier:
            layer = _head_layer(self.network, self.n_classes)
            if layer is None:
                raise InputError(f"model.checkpoint {path}: no linear layer to its {self.n_classes} labels found")
            self.classifier = layer
            layer.register_forward_pre_hook(lambda module, args: self._captured.__setitem__("input", args[0]))
        with torch.no_grad():
            embedding, _ = self.encode(self._blank())
        if embedding.dim() != 2:
            raise InputError(f"model.checkpoint {path}: its classification layer takes {tuple(embedding.shape)} "
                             "token states, not one pooled vector per input; alray cannot sample its head")
        self.embedding_dim = int(embedding.shape[1])

    def _read_image_processor(self, path: Path) -> None:
        processor = path / _PROCESSOR_FILE
        if not processor.is_file():
            raise InputError(f"model.checkpoint {path}: a Hugging Face image model needs its {_PROCESSOR_FILE} "
                             "(save the image processor with save_pretrained too)")
        settings = json.loads(processor.read_text())
        size = settings.get("size") or {}
        side = size.get("height") or size.get("shortest_edge") if isinstance(size, dict) else size
        self.image_size = int(side or settings.get("crop_size", {}).get("height") or 224)
        channels = len(settings.get("image_mean") or [0.0, 0.0, 0.0])
        mean = np.asarray(settings.get("image_mean") or [0.0] * channels, dtype=np.float32)
        std = np.asarray(settings.get("image_std") or [1.0] * channels, dtype=np.float32)
        self.register_buffer("mean", torch.from_numpy(mean).reshape(1, -1, 1, 1))
        self.register_buffer("std", torch.from_numpy(std).reshape(1, -1, 1, 1))

    def _read_tokenizer(self, path: Path, config: dict[str, Any], max_tokens: int | None) -> None:
        transformers = _transformers()
        if not any((path / name).is_file() for name in _TOKENIZER_FILES):
            raise InputError(f"model.checkpoint {path}: a Hugging Face text model needs its tokenizer (save it with "
                             f"save_pretrained too: none of {', '.join(_TOKENIZER_FILES)} is there)")
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"model.checkpoint {path}: a Hugging Face text model needs its tokenizer (save it with "
                             f"save_pretrained too; {first_line(exc)})") from None
        limits = [max_tokens or DEFAULT_MAX_TOKENS, int(config.get("max_position_embeddings") or 1 << 30)]
        model_max = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(model_max, int) and 0 < model_max < 1 << 30:
            limits.append(model_max)
        self.max_tokens = min(limits)

    def _blank(self) -> torch.Tensor:
        if self.input_kind == "image":
            return torch.zeros(1, self.in_channels, self.image_size, self.image_size)
        return torch.from_numpy(self.tokenize([""]))

    def tokenize(self, texts: Sequence[str]) -> np.ndarray:
        """Token ids and attention masks of texts: int64 (B, 2, max_tokens)."""
        encoded = self.tokenizer(list(texts), padding="max_length", truncation=True, max_length=self.max_tokens,
                                 return_tensors="np")
        return np.stack([encoded["input_ids"], encoded["attention_mask"]], axis=1).astype(np.int64)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Embeddings (B, D) of pixels (B, C, H, W) in 0..1 or tokens (B, 2, L) of :meth:`tokenize`."""
        self._captured.clear()
        if self.input_kind == "image":
            outputs = self.network(pixel_values=(x - self.mean) / self.std)
        else:
            outputs = self.network(input_ids=x[:, 0], attention_mask=x[:, 1])
        if self.n_classes:
            return self._captured["input"], None
        return self._pooled(outputs, x), None

    def _pooled(self, outputs: Any, x: torch.Tensor) -> torch.Tensor:
        hidden = outputs.last_hidden_state
        if self.input_kind == "text":
            mask = x[:, 1].to(hidden.dtype).unsqueeze(-1)
            return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        pooled = getattr(outputs, "pooler_output", None)
        if pooled is not None:
            return pooled.flatten(1)
        return hidden[:, 0] if hidden.dim() == 3 else hidden.mean(dim=(2, 3))

    def head(self, embedding: torch.Tensor) -> torch.Tensor:
        """Logits (..., C) of the classification layer."""
        shape = embedding.shape
        logits = self.classifier(embedding.reshape(-1, shape[-1]))
        return logits.reshape(*shape[:-1], logits.shape[-1])

    def stochastic_logits(self, x: torch.Tensor, seeds: np.ndarray, n_samples: int) -> Any:
        """Not used: the model splits at its classification layer."""
        raise NotImplementedError


def load_huggingface(path: Path, *, dropout: float | None, max_tokens: int | None = None) -> HuggingFaceModel:
    """The model saved in directory ``path``; InputError naming what is missing."""
    return HuggingFaceModel(path, dropout=dropout, max_tokens=max_tokens)

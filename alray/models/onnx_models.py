"""ONNX models through onnxruntime, behind the :class:`~alray.models.contract.TaskModel` contract.

Outputs are found by name: ``logits`` (B, C) and, optionally, ``embedding`` (B, D). When the
graph computes ``logits`` from ``embedding`` by one linear layer whose weights are initializers
(a ``Gemm``, or ``MatMul`` then ``Add``), that layer is read into torch and MC dropout samples
only it, with alray's masks, exactly as for a built-in model. Otherwise the model does not split:
each of the T passes is the deterministic graph, so the MC scores (BALD, variation ratio, mean
std) are 0 and only the single-pass scores tell uncertainty. A graph with an ``embedding`` output
and no ``logits`` is an encoder: it gives embeddings only (``n_classes`` 0, null scores), for
task-independent selection. The input is the graph's first: rank
4 is an image (B, C, H, W), rank 2 feature vectors (B, F). Needs the ``onnx`` extra.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from alray.errors import InputError

EXTRA_HINT = "ONNX models need the onnx extra: pip install 'alray[onnx]'"


def _modules() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise InputError(EXTRA_HINT) from None
    return onnx, onnxruntime


def is_onnx(path: Path) -> bool:
    """Whether ``path`` holds an ONNX model (parsed, not judged by its name); False without the extra."""
    try:
        import onnx
    except ImportError:
        return path.suffix.lower() == ".onnx"  # load_onnx then names the extra
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception:  # any parse failure means "not ONNX"
        return False
    return bool(model.ir_version) and len(model.graph.node) > 0 and len(model.opset_import) > 0


def _linear_head(graph: Any, embedding: str, logits: str) -> nn.Linear | None:
    """The linear layer from ``embedding`` to ``logits`` when its weights are initializers, else None."""
    from onnx import numpy_helper

    weights = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    node = producers.get(logits)
    if node is None:
        return None
    if node.op_type == "Gemm" and node.input[0] == embedding and node.input[1] in weights:
        attrs = {a.name: a for a in node.attribute}
        if "transA" in attrs and attrs["transA"].i:
            return None
        alpha = attrs["alpha"].f if "alpha" in attrs else 1.0
        beta = attrs["beta"].f if "beta" in attrs else 1.0
        w = weights[node.input[1]].astype(np.float32) * alpha
        w = w if ("transB" in attrs and attrs["transB"].i) else w.T  # Linear keeps (out, in)
        b = weights.get(node.input[2]) if len(node.input) > 2 else None
        bias = None if b is None else (np.broadcast_to(b, (w.shape[0],)).astype(np.float32) * beta)
    elif node.op_type == "Add":
        matmul = producers.get(node.input[0])
        if (matmul is None or matmul.op_type != "MatMul" or matmul.input[0] != embedding
                or matmul.input[1] not in weights or node.input[1] not in weights):
            return None
        w = weights[matmul.input[1]].astype(np.float32).T
        bias = np.broadcast_to(weights[node.input[1]], (w.shape[0],)).astype(np.float32)
    else:
        return None
    layer = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
        if bias is not None:
            layer.bias.copy_(torch.from_numpy(np.ascontiguousarray(bias)))
    return layer


class OnnxModel(nn.Module):
    """An onnxruntime session with the contract's encode / head / stochastic_logits (module docstring)."""

    has_loss_head = False
    text_encoder: str | None = None

    def __init__(self, path: Path, *, image_size: int, dropout: float | None) -> None:
        super().__init__()
        onnx, onnxruntime = _modules()
        graph = onnx.load_model(str(path), load_external_data=False).graph
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                     if p in onnxruntime.get_available_providers()]
        self.session = onnxruntime.InferenceSession(str(path), providers=providers)
        outputs = [o.name for o in self.session.get_outputs()]
        if "logits" not in outputs and "embedding" not in outputs:
            raise InputError(f"model.checkpoint {path}: ONNX outputs {outputs}: expected one named 'logits' "
                             "and optionally 'embedding' (or only 'embedding', for embeddings only)")
        self._embedding_name = "embedding" if "embedding" in outputs else "logits"
        self._logits_name = "logits" if "logits" in outputs else None
        first = self.session.get_inputs()[0]
        self._input_name = first.name
        shape = list(first.shape)
        if len(shape) == 4:
            self.input_kind, self.n_features = "image", 0
            self.in_channels = int(shape[1]) if isinstance(shape[1], int) else 3
            self.image_size = int(shape[2]) if isinstance(shape[2], int) else image_size
            blank = np.zeros((1, self.in_channels, self.image_size, self.image_size), np.float32)
        elif len(shape) == 2 and isinstance(shape[1], int):
            self.input_kind, self.in_channels, self.image_size, self.n_features = "features", 0, 0, int(shape[1])
            blank = np.zeros((1, self.n_features), np.float32)
        else:
            raise InputError(f"model.checkpoint {path}: ONNX input {first.name!r} of shape {shape}: expected "
                             "(B, C, H, W) images or (B, F) feature vectors")
        embedding = self.session.run([self._embedding_name], {self._input_name: blank})[0]
        self.embedding_dim = int(embedding.shape[1])
        self.n_classes = (int(self.session.run([self._logits_name], {self._input_name: blank})[0].shape[1])
                          if self._logits_name else 0)
        head = (_linear_head(graph, "embedding", "logits")
                if self._embedding_name == "embedding" and self._logits_name else None)
        self.splits_head = head is not None or self._logits_name is None
        self.classifier = head if head is not None else nn.Identity()
        self.dropout_p = float(dropout if dropout is not None else 0.5)

    def _run(self, x: torch.Tensor, names: list[str]) -> list[torch.Tensor]:
        feed = {self._input_name: x.detach().cpu().float().numpy()}
        return [torch.from_numpy(a).to(x.device) for a in self.session.run(names, feed)]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Embeddings (B, D) of the ``embedding`` output (the logits when the graph has none)."""
        return self._run(x, [self._embedding_name])[0], None

    def head(self, embedding: torch.Tensor) -> torch.Tensor:
        """Logits (..., C) of the linear head read from the graph."""
        return self.classifier(embedding)

    def stochastic_logits(self, x: torch.Tensor, seeds: np.ndarray, n_samples: int) -> torch.Tensor:
        """Logits (B, T, C) of a graph that does not split: T copies of the deterministic logits."""
        logits = self._run(x, ["logits"])[0]
        return logits[:, None, :].expand(-1, n_samples, -1)


def load_onnx(path: Path, *, image_size: int, dropout: float | None) -> OnnxModel:
    """An :class:`OnnxModel` of the ONNX file ``path``; InputError naming the file or the extra."""
    _modules()
    try:
        return OnnxModel(path, image_size=image_size, dropout=dropout)
    except InputError:
        raise
    except Exception as exc:  # onnxruntime raises its own types
        raise InputError(f"model.checkpoint {path}: cannot load the ONNX model ({str(exc).splitlines()[0]})") from None

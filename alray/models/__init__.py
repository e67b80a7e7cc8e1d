"""Task models: what scoring needs of a model, the built-in networks, the formats a model is loaded
from (never through pickle), and MC-dropout prediction.

- :mod:`~alray.models.contract`: the :class:`TaskModel` protocol, the input kinds and text encoders;
- :mod:`~alray.models.networks`: the built-in networks (SmallCNN, FeatureMLP) and the loss
  prediction head;
- :mod:`~alray.models.checkpoints`: alray checkpoints, a registered architecture and its weights;
- :mod:`~alray.models.torchscript`: TorchScript files with ``alray.json`` metadata;
- :mod:`~alray.models.torchvision_models`: torchvision architectures by name (torchvision optional);
- :mod:`~alray.models.loading`: :func:`load_model`, which tells the format, and :func:`pick_device`;
- :mod:`~alray.models.files`: the checks and weights-only reads the formats' loaders share;
- :mod:`~alray.models.dropout`: MC dropout, masks keyed by sample id and seed, :func:`mc_predict`.

Their public names are importable from ``alray.models`` itself.
"""

from alray.models.checkpoints import CHECKPOINT_FORMAT, architecture_name, load_checkpoint, save_checkpoint
from alray.models.contract import INPUT_KINDS, TEXT_ENCODERS, TaskModel
from alray.models.dropout import Prediction, dropout_masks, dropout_masks_torch, id_keys, mc_predict, sample_seeds
from alray.models.loading import load_model, pick_device
from alray.models.networks import ARCHITECTURES, FeatureMLP, LossPredictionHead, SequenceCNN, SmallCNN
from alray.models.torchscript import (
    TORCHSCRIPT_METADATA,
    ScriptedModel,
    is_torchscript,
    load_torchscript,
    save_torchscript,
)
from alray.models.torchvision_models import TorchvisionModel

__all__ = [
    "ARCHITECTURES",
    "CHECKPOINT_FORMAT",
    "INPUT_KINDS",
    "TEXT_ENCODERS",
    "TORCHSCRIPT_METADATA",
    "FeatureMLP",
    "LossPredictionHead",
    "Prediction",
    "ScriptedModel",
    "SequenceCNN",
    "SmallCNN",
    "TaskModel",
    "TorchvisionModel",
    "architecture_name",
    "dropout_masks",
    "dropout_masks_torch",
    "id_keys",
    "is_torchscript",
    "load_checkpoint",
    "load_model",
    "load_torchscript",
    "mc_predict",
    "pick_device",
    "sample_seeds",
    "save_checkpoint",
    "save_torchscript",
]

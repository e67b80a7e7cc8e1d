"""Self-supervised learning on the pool's own images, in plain torch: the NT-Xent loss, the
augmentations and one training epoch; the Ray Train adapter is :mod:`alray.stages.embed`.

- :mod:`~alray.ssl.losses`: :class:`NTXentLoss` (SimCLR, Chen et al., ICML 2020);
- :mod:`~alray.ssl.augment`: :class:`Augment`, crops, flips, colour jitter, grey and blur, with
  each sample's draws a function of the seed, the epoch, the view and its id alone;
- :mod:`~alray.ssl.train`: :class:`SimCLR` (an encoder and its projection head) and
  :func:`train_epoch`.
"""

from alray.ssl.augment import Augment, AugmentParams
from alray.ssl.losses import NTXentLoss, nt_xent
from alray.ssl.train import SimCLR, cosine_learning_rate, train_epoch

__all__ = ["Augment", "AugmentParams", "NTXentLoss", "SimCLR", "cosine_learning_rate", "nt_xent", "train_epoch"]

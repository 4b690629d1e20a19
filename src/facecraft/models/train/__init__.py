"""Resumable training loops for the target network, the WGAN-GP prior and the amortizer.

Every loop keeps its progress in a *partial* checkpoint (weights, optimizer
state, RNG state and step) written atomically at regular points, and writes
the final checkpoint (weights + JSON metadata with metrics) when done. Run
again after a kill, a loop continues from its last partial checkpoint; run
again after it finished, it just loads the result. With the same seed an
interrupted-and-resumed run gives the same weights as an uninterrupted one.

- :mod:`~facecraft.models.train.target`: :func:`train_target`, :func:`train_head`
  and :func:`predict_logits`.
- :mod:`~facecraft.models.train.prior`: :func:`train_wgan_gp`.
- :mod:`~facecraft.models.train.amortizer`: :func:`train_amortizer`.

References:
    CRAFTER.md sections 1-2 and 4; Gulrajani et al., "Improved Training of
    Wasserstein GANs", NeurIPS 2017, https://arxiv.org/abs/1704.00028.
"""

from facecraft.models.train._loop import load_weights
from facecraft.models.train.amortizer import train_amortizer
from facecraft.models.train.prior import train_wgan_gp
from facecraft.models.train.target import predict_logits, train_head, train_target

__all__ = [
    "train_target",
    "train_wgan_gp",
    "train_amortizer",
    "train_head",
    "load_weights",
    "predict_logits",
]

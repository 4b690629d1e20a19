"""Privacy and utility metrics (CRAFTER.md section 5), one family per module.

- :mod:`~facecraft.metrics.image`: SSIM and PSNR of reconstructions.
- :mod:`~facecraft.metrics.identity`: top-k identity accuracy (Eval Acc) and
  embedding cosine (the paper's FSIM).
- :mod:`~facecraft.metrics.utility`: attribute AUC (mean AUC) and accuracy.
- :mod:`~facecraft.metrics.dlib_oracle`: dlib's face-recognition ResNet as a
  third-party identity oracle with a gallery.
- :mod:`~facecraft.metrics.evalnet`: the paper's Eval-network, trained on ``eval_train``.
- :mod:`~facecraft.metrics.pii`: epsilon-PII via a WGAN-GP critic, and exact EMD via POT.
- :mod:`~facecraft.metrics.stats`: intervals of Eval Acc (identity bootstrap, Wilson) and paired
  tests of two defences (exact McNemar, paired bootstrap).
"""

from facecraft.metrics.dlib_oracle import (
    CELEBA_CROP_FRACTION,
    LFW_FULL_FRAME_CROP_FRACTION,
    DlibOracle,
)
from facecraft.metrics.evalnet import EvalNet, train_evalnet
from facecraft.metrics.identity import feature_cosine, identity_accuracy, topk_accuracy, topk_hits
from facecraft.metrics.image import psnr, ssim
from facecraft.metrics.pii import epsilon_pii, exact_emd
from facecraft.metrics.utility import attribute_accuracy, attribute_auc, mean_auc

__all__ = [
    "CELEBA_CROP_FRACTION",
    "LFW_FULL_FRAME_CROP_FRACTION",
    "DlibOracle",
    "EvalNet",
    "attribute_accuracy",
    "attribute_auc",
    "epsilon_pii",
    "exact_emd",
    "feature_cosine",
    "identity_accuracy",
    "mean_auc",
    "psnr",
    "ssim",
    "topk_accuracy",
    "topk_hits",
    "train_evalnet",
]

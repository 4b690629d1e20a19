r"""Distilled Crafter: Crafter's releases learned by regression, one edge forward pass (issue 16).

Crafter (:mod:`facecraft.defenses.crafter`) optimises every release: seconds
per face on a CPU. Its fast configuration (``crafter-fast``) has already
released the adaptive attacker's public faces in every study (the study stores
them, :meth:`facecraft.experiments.runner.StudyRunner.public_released`). The
distilled protector fits a small residual network ``C``
(:class:`~facecraft.defenses.feature_crafter.FeatureCrafter`) to those
pairs,

.. code-block:: text

    F' = Enc(X) + C(Enc(X)),     min_C  E_X || C(Enc(X)) - (F*_teacher(X) - Enc(X)) ||^2 / dim(F)

with Adam, optional Gaussian noise on the input feature (``input_noise``) and
early stopping on a seeded held-out share of the pairs (``val_fraction``,
``patience``; the best epoch's weights are kept). Unlike the amortized Crafter
(issue 5), ``C`` gets a dense target instead of a noisy per-batch hypergradient;
at deployment it is the encoder plus three convolutions, so it exports to ONNX
or TorchScript (:mod:`facecraft.experiments.export`).

References:
    Wang et al., "Crafter", NDSS 2024, https://arxiv.org/abs/2401.07205 (section 4: the
    releases distilled here); CRAFTER.md section 3; Hinton, Vinyals and Dean, "Distilling
    the Knowledge in a Neural Network", 2015, https://arxiv.org/abs/1503.02531.

Note:
    Beyond the paper. The regression can only learn the part of the teacher's change
    that is a function of ``Enc(X)``; what the teacher adds that depends on its batch,
    critic and optimisation path is averaged out (docs/BENCHMARKS.md, session 8, measures
    how much that is).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch
from torch import nn

from facecraft._io import CheckpointError
from facecraft._torchutils import frozen, make_generator, query_in_batches
from facecraft._validation import check_number, validate_images
from facecraft.defenses._critic import seeded_init
from facecraft.defenses._fitting import (
    EarlyStopping,
    epoch_batches,
    load_fit_state,
    save_fit_state,
)
from facecraft.defenses.base import FeatureDefense
from facecraft.defenses.feature_crafter import FeatureCrafter
from facecraft.defenses.registry import register_defense

__all__ = ["DistilledCrafter", "EdgeProtector"]

ProgressFn = Callable[[int, int, str], None]
_KIND = "distilled-crafter-fit"


class EdgeProtector(nn.Module):
    """Encoder and residual crafter as one module: images ``(N, 3, S, S)`` in [0, 1] ->
    ``Enc(X) + C(Enc(X))``.

    What :mod:`facecraft.experiments.export` writes to ONNX or TorchScript (issue 16).
    """

    def __init__(self, encoder: nn.Module, crafter: Optional[nn.Module]) -> None:
        super().__init__()
        self.encoder = encoder
        self.crafter = crafter

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        f0 = self.encoder(images)
        return f0 if self.crafter is None else f0 + self.crafter(f0)


@dataclass
class _Regression:
    """One :meth:`DistilledCrafter.fit`'s state: ``C``, the best epoch's copy, Adam, the noise
    generator and the early stopping."""

    crafter: nn.Module
    best: nn.Module
    opt: torch.optim.Optimizer
    noise_gen: torch.Generator
    stop: EarlyStopping

    @property
    def modules(self) -> Dict[str, nn.Module]:
        return {"crafter": self.crafter, "best": self.best}


class DistilledCrafter(FeatureDefense):
    r"""``F' = Enc(X) + C(Enc(X))``, ``C`` regressed on a teacher defence's releases (module doc).

    Args:
        encoder: the edge encoder ``Enc``.
        head: the cloud head ``f`` (kept for utility measurement).
        crafter: an already trained ``C`` (e.g. rebuilt by
            :func:`~facecraft.defenses.load_protector`) (Default: None: :meth:`fit` trains one).
        beta: the teacher's utility weight: the teacher setting distilled is
            ``teacher`` with ``{**teacher_kwargs, "beta": beta}`` (Default: 0.1).
        teacher: registered name of the defence whose releases are distilled
            (Default: ``"crafter-fast"``).
        teacher_kwargs: the teacher's other constructor arguments, so the study finds its stored
            releases (Default: none).
        width: channels of ``C`` (Default: 32: about 1.4x the small profile's encoder at batch 1).
        epochs: most passes over the training pairs (Default: 100).
        batch_size: pairs per Adam step (Default: 64).
        lr: Adam learning rate (Default: 1e-3).
        weight_decay: Adam weight decay (Default: 0.0).
        input_noise: std of Gaussian noise added to ``Enc(X)`` in training (Default: 0.0).
        val_fraction: share of the pairs held out for early stopping (Default: 0.1).
        patience: epochs without a lower held-out loss before stopping (Default: 10).
        seed: seeds ``C``'s initialisation, the held-out split, batches and noise (Default: 0).

    Shape:
        - images: ``(N, 3, S, S)`` in [0, 1]; output ``(N, *F)`` like ``Enc(X)``.

    Attributes:
        history: one dict per epoch: ``epoch``, ``train`` and ``val`` (mean squared error to the
            teacher's residual per element), ``val_identity`` (the same for ``C = 0``).
        best_epoch: the epoch whose weights :attr:`crafter` holds after :meth:`fit`.

    Example:
        >>> from facecraft.models import build_target
        >>> t = build_target("resnet18", num_outputs=4, width=0.25).eval()
        >>> d = DistilledCrafter(t.encoder, t.head, epochs=2, batch_size=4, val_fraction=0.25)
        >>> x = torch.rand(8, 3, 32, 32)
        >>> d = d.fit(x, teacher_features=t.encoder(x).detach() + 0.1)
        >>> d(x).shape
        torch.Size([8, 16, 8, 8])
    """

    fits_on = "teacher"

    #: one forward pass of fixed networks: :mod:`facecraft.experiments.export` can write it to a
    #: file
    exportable = True

    def __init__(
        self,
        encoder: nn.Module,
        head: Optional[nn.Module] = None,
        crafter: Optional[nn.Module] = None,
        *,
        beta: float = 0.1,
        teacher: str = "crafter-fast",
        teacher_kwargs: Optional[Dict[str, Any]] = None,
        width: int = 32,
        epochs: int = 100,
        batch_size: int = 64,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        input_noise: float = 0.0,
        val_fraction: float = 0.1,
        patience: int = 10,
        seed: int = 0,
    ) -> None:
        super().__init__(encoder, head)
        for name, value in (
            ("width", width),
            ("epochs", epochs),
            ("batch_size", batch_size),
            ("patience", patience),
        ):
            check_number(name, value, low=1, integer=True)
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        for name, value in (
            ("lr", lr),
            ("weight_decay", weight_decay),
            ("input_noise", input_noise),
        ):
            check_number(name, value, low=0.0)
        self.crafter = crafter
        self.beta = beta
        self.teacher = teacher
        self.teacher_kwargs: Dict[str, Any] = dict(teacher_kwargs or {})
        self.width = width
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.input_noise = input_noise
        self.val_fraction = val_fraction
        self.patience = patience
        self.seed = seed
        self.best_epoch: Optional[int] = None

    @classmethod
    def name(cls) -> str:
        return "distilled-crafter"

    def teacher_setting(self) -> Tuple[str, float, Dict[str, Any]]:
        """``(name, param, kwargs)`` of the teacher whose releases :meth:`fit` regresses on."""
        return self.teacher, float(self.beta), {**self.teacher_kwargs, "beta": float(self.beta)}

    def networks(self) -> Dict[str, nn.Module]:
        nets = super().networks()
        if self.crafter is not None:
            nets["crafter"] = self.crafter
        return nets

    def edge_module(self) -> nn.Module:
        """Images in [0, 1] -> released features as one module (what export writes); raises if not
        fitted."""
        if self.crafter is None:
            raise RuntimeError("distilled-crafter is not trained: call fit() first")
        return EdgeProtector(self.encoder, self.crafter).eval()

    def fit(
        self,
        public_images: torch.Tensor,
        public_attributes: Optional[torch.Tensor] = None,
        *,
        teacher_features: Optional[torch.Tensor] = None,
        progress: Optional[ProgressFn] = None,
        checkpoint_stem: Optional[Union[str, Path]] = None,
    ) -> "DistilledCrafter":
        """Regress ``C`` on ``(Enc(X), F*_teacher - Enc(X))`` (resumable from ``checkpoint_stem``).

        Args:
            public_images: ``(N, 3, S, S)`` float in [0, 1] or uint8: the faces the teacher
                released.
            public_attributes: ignored (accepted for the common ``fit`` signature).
            teacher_features: ``(N, *F)`` the teacher's releases of ``public_images``, row for row.
            progress: optional ``progress(epoch, epochs, desc)``.
            checkpoint_stem: the state is saved there after every epoch (atomically) and resumed
                from; a finished fit there is loaded instead of training.

        Returns:
            ``self`` with :attr:`crafter` set to the best held-out epoch's weights.

        Raises:
            ValueError: missing or mismatched ``teacher_features``, or too few pairs to hold
                some out.
            CheckpointError: a checkpoint at ``checkpoint_stem`` was written with other settings.
        """
        f0, target = self._pairs(public_images, teacher_features)
        n, dev = f0.shape[0], self.device
        val, train = self._split(n)
        crafter = seeded_init(
            lambda: FeatureCrafter(f0.shape[1], self.width), make_generator(self.seed)
        ).to(dev)
        fit = _Regression(
            crafter,
            copy.deepcopy(crafter),
            torch.optim.Adam(crafter.parameters(), lr=self.lr, weight_decay=self.weight_decay),
            make_generator(self.seed + 11),
            EarlyStopping(self.patience),
        )
        self.best_epoch, self.history = None, []
        start = self._resume(fit, checkpoint_stem, n) if checkpoint_stem is not None else 0
        identity = float(target[val].pow(2).mean())
        self.fit_trained = start < self.epochs
        for epoch in range(start, self.epochs):
            train_loss = self._train_epoch(fit, f0, target, train, epoch)
            crafter.eval()
            with torch.no_grad():
                v = float((crafter(f0[val.to(dev)]) - target[val.to(dev)]).pow(2).mean())
            if fit.stop.update(v, epoch):
                fit.best.load_state_dict(crafter.state_dict())
            self.best_epoch = fit.stop.best_epoch
            self.history.append(
                {"epoch": epoch, "train": train_loss, "val": v, "val_identity": identity}
            )
            if checkpoint_stem is not None:
                self._save(fit, checkpoint_stem, epoch, n)
            if progress is not None:
                progress(epoch + 1, self.epochs, "distilled crafter (regressing C)")
            if fit.stop.stopped:
                break
        self.crafter = fit.best.eval()
        return self

    def _pairs(
        self, public_images: torch.Tensor, teacher_features: Optional[torch.Tensor]
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Validated ``(Enc(X), F*_teacher - Enc(X))`` on the encoder's device."""
        if public_images.dim() != 4 or public_images.shape[0] == 0:
            raise ValueError(
                f"expected public images (N, 3, S, S), got {tuple(public_images.shape)}"
            )
        if public_images.dtype != torch.uint8:
            validate_images(public_images)
        if teacher_features is None:
            raise ValueError(
                f"distilled-crafter learns from a teacher's releases: pass teacher_features "
                f"(the {self.teacher} release of public_images)"
            )
        dev = self.device
        with frozen(self.encoder):
            f0 = query_in_batches(self.encoder, public_images, dev, 256)
        if tuple(teacher_features.shape) != tuple(f0.shape):
            raise ValueError(
                f"teacher_features: expected shape {tuple(f0.shape)} (one release per image), "
                f"got {tuple(teacher_features.shape)}"
            )
        return f0, teacher_features.to(dev, f0.dtype) - f0

    def _split(self, n: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """The seeded held-out and training indices of ``n`` pairs."""
        n_val = int(round(self.val_fraction * n))
        if n_val < 1 or n - n_val < 1:
            raise ValueError(
                f"{n} pairs cannot be split {1 - self.val_fraction:.2f}/{self.val_fraction:.2f} "
                "into training and held-out pairs"
            )
        perm = torch.randperm(n, generator=make_generator(self.seed + 7))
        return perm[:n_val], perm[n_val:]

    def _train_epoch(
        self,
        fit: _Regression,
        f0: torch.Tensor,
        target: torch.Tensor,
        train: torch.Tensor,
        epoch: int,
    ) -> float:
        """One pass over the training pairs in the epoch's seeded order; the mean loss per pair."""
        fit.crafter.train()
        total, count = 0.0, 0
        for b in epoch_batches(train.numel(), self.batch_size, self.seed, epoch):
            idx = train[b].to(self.device)
            x = f0[idx]
            if self.input_noise > 0:
                x = x + self.input_noise * torch.randn(x.shape, generator=fit.noise_gen).to(x)
            loss = (fit.crafter(x) - target[idx]).pow(2).mean()
            fit.opt.zero_grad(set_to_none=True)
            loss.backward()
            fit.opt.step()
            total, count = total + float(loss.detach()) * idx.numel(), count + idx.numel()
        return total / count

    def _resume(self, fit: _Regression, checkpoint_stem: Union[str, Path], n: int) -> int:
        """Load a fit saved at ``checkpoint_stem`` (if any) into ``fit``; the epoch to go on."""
        meta = load_fit_state(
            checkpoint_stem,
            kind=_KIND,
            modules=fit.modules,
            optimizers={"crafter": fit.opt},
            config=self.get_config(),
        )
        if meta is None:
            return 0
        if meta.get("n_pairs") != n:
            raise CheckpointError(
                f"{checkpoint_stem}: fitted on {meta.get('n_pairs')} pairs, given {n}"
            )
        fit.stop.stale, fit.stop.best_val = int(meta["stale"]), float(meta["best_val"])
        fit.stop.best_epoch = self.best_epoch = meta["best_epoch"]
        self.history = list(meta.get("history", []))
        fit.noise_gen.set_state(torch.tensor(meta["noise_state"], dtype=torch.uint8))
        # stopped early: nothing left to learn (more epochs change nothing)
        return max(int(meta["epoch"]), self.epochs) if fit.stop.stopped else int(meta["epoch"])

    def _save(
        self, fit: _Regression, checkpoint_stem: Union[str, Path], epoch: int, n: int
    ) -> None:
        """Save the fit after ``epoch`` (atomically) to ``checkpoint_stem``."""
        save_fit_state(
            checkpoint_stem,
            kind=_KIND,
            modules=fit.modules,
            optimizers={"crafter": fit.opt},
            meta={
                "defense": self.name(),
                "config": self.get_config(),
                "epoch": epoch + 1,
                "history": self.history,
                "best_val": fit.stop.best_val,
                "best_epoch": fit.stop.best_epoch,
                "stale": fit.stop.stale,
                "stopped": fit.stop.stopped,
                "n_pairs": n,
                "noise_state": fit.noise_gen.get_state().tolist(),
            },
        )

    def protect(self, images: torch.Tensor) -> torch.Tensor:
        """``Enc(X) + C(Enc(X))``: one forward pass of the encoder and ``C``."""
        if self.crafter is None:
            raise RuntimeError("distilled-crafter is not trained: call fit() first")
        with torch.no_grad():  # C has no mode-dependent layer and is left in eval mode by fit()
            f0 = self.encoder(images)
            return f0 + self.crafter(f0)

    def get_config(self) -> Dict[str, Any]:
        return {k: v for k, v in super().get_config().items() if k != "crafter"}


register_defense("distilled-crafter", DistilledCrafter)

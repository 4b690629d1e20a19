"""Small helpers shared by the learning attacks: image sets, shuffling, held-out rows, states.

The A1 adaptive attacks' ``fit`` scaffolding is
:class:`~facecraft.attacks._adaptive.AdaptiveAttack`.
"""

from __future__ import annotations

import copy
from typing import Dict, Iterator, Mapping, Optional, Tuple, TypeVar

import torch
from torch import nn

from facecraft._torchutils import make_generator
from facecraft._validation import validate_images

__all__ = [
    "check_image_set",
    "copy_states",
    "epoch_batches",
    "held_out_split",
    "load_states",
    "prefixed_tensors",
    "trainable_copy",
]

M = TypeVar("M", bound=nn.Module)


def check_image_set(images: torch.Tensor) -> None:
    """Accept ``(N, 3, S, S)`` images as uint8 in [0, 255] or float in [0, 1]."""
    if not torch.is_tensor(images):
        raise TypeError(f"expected images as a torch.Tensor, got {type(images).__name__}")
    if images.dtype == torch.uint8:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(
                f"expected uint8 images of shape (N, 3, S, S), got {tuple(images.shape)}"
            )
    else:
        validate_images(images)
    if images.shape[0] == 0:
        raise ValueError("expected at least one image, got none")


def epoch_batches(n: int, batch_size: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """Index batches of one shuffled epoch over ``n`` items (CPU indices)."""
    perm = torch.randperm(n, generator=gen)
    for i in range(0, n, batch_size):
        yield perm[i : i + batch_size]


def held_out_split(
    n: int, fraction: float, seed: int, *, min_train: int = 1
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Seeded ``(training rows, held-out rows or None)`` of ``n`` rows, each sorted (CPU indices).

    ``round(fraction * n)`` rows (at least 1) are held out for early stopping;
    ``fraction`` 0 holds out none. The permutation comes from a generator of its
    own seeded with ``seed``.

    Raises:
        ValueError: fewer than ``min_train`` rows would be left to train on.
    """
    if fraction == 0:
        return torch.arange(n), None
    n_val = max(1, round(fraction * n))
    if n - n_val < min_train:
        left = n - n_val
        raise ValueError(
            f"val_fraction={fraction} holds out {n_val} of {n} rows, leaving {left or 'none'} to "
            f"train on (at least {min_train} needed); give more rows or val_fraction=0"
        )
    perm = torch.randperm(n, generator=make_generator(seed))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def trainable_copy(module: M) -> M:
    """A deep copy of ``module``, every parameter trainable and without ``.grad``.

    What an adaptive attack starts training from; the original is left untouched.
    """
    out = copy.deepcopy(module)
    for p in out.parameters():
        p.requires_grad_(True)
        p.grad = None
    return out


def prefixed_tensors(tensors: Mapping[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    """The entries of ``tensors`` whose key starts with ``prefix``, with it removed."""
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def copy_states(modules: Mapping[str, nn.Module]) -> Dict[str, Dict[str, torch.Tensor]]:
    """Detached clones of each module's state dict, by name."""
    return {
        name: {k: v.detach().clone() for k, v in m.state_dict().items()}
        for name, m in modules.items()
    }


def load_states(
    modules: Mapping[str, nn.Module], states: Mapping[str, Mapping[str, torch.Tensor]]
) -> None:
    """Copy ``states`` into ``modules`` in place (the optimisers keep their parameters)."""
    for name, m in modules.items():
        m.load_state_dict(dict(states[name]), strict=True)

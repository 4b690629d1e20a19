"""In-memory face sets as the rest of facecraft sees them.

Images are cached as uint8 ``(N, 3, S, S)`` tensors so training never decodes
JPEGs; identities are 0-based indices into ``identity_names``; attributes are
``{0, 1}`` floats (converted once here from CelebA's ``{-1, 1}``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import torch

__all__ = ["FaceSet", "PreparedData", "ProgressFn"]

#: Progress callback ``progress(done, total, description)``; the CLI draws bars from it.
ProgressFn = Callable[[int, int, str], None]


@dataclass
class FaceSet:
    """A set of face images with identity labels and optional attributes.

    Attributes:
        images: uint8 ``(N, 3, S, S)``.
        identities: int64 ``(N,)``, 0-based indices into ``identity_names``.
        identity_names: the dataset's own identity label for each index.
        attributes: float32 ``(N, A)`` in {0, 1}, or ``None`` (e.g. LFW).
        files: the source file of each image (relative to the dataset root).
    """

    images: torch.Tensor
    identities: torch.Tensor
    identity_names: List[str]
    attributes: Optional[torch.Tensor] = None
    files: List[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or self.images.shape[1] != 3:
            raise ValueError(
                f"images must be uint8 (N, 3, S, S), "
                f"got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.identities.shape != (n,):
            raise ValueError(
                f"identities must have shape ({n},), got {tuple(self.identities.shape)}"
            )
        if self.attributes is not None and self.attributes.shape[0] != n:
            raise ValueError(f"attributes must have {n} rows, got {self.attributes.shape[0]}")
        if self.files and len(self.files) != n:
            raise ValueError(f"files must have {n} entries, got {len(self.files)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]

    @property
    def num_identities(self) -> int:
        return len(self.identity_names)

    def float_images(
        self,
        index: Union[slice, Sequence[int], torch.Tensor, None] = None,
        device: Union[str, torch.device] = "cpu",
    ) -> torch.Tensor:
        """Images (all, or ``index``) as float ``(n, 3, S, S)`` in [0, 1] on ``device``."""
        x = self.images if index is None else self.images[index]
        return x.to(device).float().div_(255.0)

    def subset(self, index: Union[Sequence[int], torch.Tensor]) -> "FaceSet":
        """A new FaceSet with the rows in ``index`` (identity indexing unchanged)."""
        idx = torch.as_tensor(index, dtype=torch.long)
        return FaceSet(
            images=self.images[idx],
            identities=self.identities[idx],
            identity_names=self.identity_names,
            attributes=None if self.attributes is None else self.attributes[idx],
            files=[self.files[i] for i in idx.tolist()] if self.files else [],
        )


@dataclass
class PreparedData:
    """The identity-disjoint split of one dataset (CRAFTER.md section 1).

    Attributes:
        public: faces of the public identities (attacker and provider have them).
        eval_train: private faces used only to build the identity oracle.
        eval_test: private faces that are protected and attacked; shares
            identity indexing with ``eval_train``.
        attribute_names: names of the attribute columns (empty if none).
        manifest: counts, identities per split, hashes (see ``data.prepare``).
        synthetic: True for the procedurally generated smoke-test set.
    """

    public: FaceSet
    eval_train: FaceSet
    eval_test: FaceSet
    attribute_names: List[str]
    manifest: Dict[str, Any]
    synthetic: bool = False

    @property
    def image_size(self) -> int:
        return self.public.image_size

    @property
    def has_attributes(self) -> bool:
        return self.public.attributes is not None and len(self.attribute_names) > 0

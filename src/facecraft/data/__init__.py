"""Face data: dataset adapters, identity-disjoint splits and the uint8 cache."""

from facecraft.data.types import FaceSet, PreparedData

__all__ = ["FaceSet", "PreparedData"]

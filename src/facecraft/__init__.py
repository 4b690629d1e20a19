"""facecraft: feature crafting against inversion-based identity theft.

Implements Crafter (Wang et al., "Crafter: Facial Feature Crafting against
Inversion-based Identity Theft on Deep Models", NDSS 2024, arXiv:2401.07205),
the inversion attacks it defends against, baseline defences, privacy/utility
metrics and an experiment runner.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]

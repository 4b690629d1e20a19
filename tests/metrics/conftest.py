"""Fixtures for the metric tests."""

from __future__ import annotations

from typing import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Run these small-tensor tests on one intra-op thread (restored afterwards).

    On a loaded shared machine, two OpenMP threads on tiny convolutions with
    double backward (the gradient penalty) ran ~25x slower than one.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)

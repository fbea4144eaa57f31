"""Fixtures that several test modules share. Plain helpers and constants are in helpers.py.

A module opts in to a fixture it does not name in its tests with
`pytestmark = pytest.mark.usefixtures("one_torch_thread")`.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models and small batches: one torch thread is as fast, and far faster when other
    jobs share the cores. Restores the previous thread count after the module."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

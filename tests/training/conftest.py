"""Training tests run torch on one thread: tiny networks gain nothing from more, and on a
shared CPU extra threads spin-wait (a step took 40x longer with two threads under load)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

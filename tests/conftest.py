"""Fixtures shared by several test modules (none is autouse)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="module")
def torch_one_thread() -> Iterator[None]:
    """Tiny bootstrap tensors: intra-op threads only add overhead (7x on 2 cores). Modules
    that bootstrap use it with `pytestmark = pytest.mark.usefixtures("torch_one_thread")`."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)

"""Shared fixtures of the downstream tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def one_thread():
    """One faiss and one torch thread: OpenMP spins badly on busy shared cores, and the tests check
    results, not speed. Opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import faiss
    import torch

    before = faiss.omp_get_max_threads(), torch.get_num_threads()
    faiss.omp_set_num_threads(1)
    torch.set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before[0])
    torch.set_num_threads(before[1])

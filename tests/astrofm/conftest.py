"""Fixtures shared by the embedding, index, search and retrieval tests."""

from __future__ import annotations

import pytest

from tests.astrofm.search_helpers import search_world


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """A small dataset, an untrained tiny model and its embedding folder (built once per session)."""
    return search_world(tmp_path_factory)

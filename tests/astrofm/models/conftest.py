"""Fixtures for the model tests: TINY_SPEC's manifest blocks and a batch of four objects."""

from __future__ import annotations

import pytest

from tests.astrofm.models.helpers import make_batch, tiny_manifest


@pytest.fixture
def manifest() -> dict:
    return tiny_manifest()


@pytest.fixture
def batch() -> dict:
    return make_batch()

"""Leave-one-out kNN R^2: the validation check of how well embeddings order objects by a label."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from astrofm.retrieval import leave_one_out_knn_r2


def _on_circle(angles: torch.Tensor, extra_dims: int = 6) -> torch.Tensor:
    """Unit vectors whose first two coordinates trace the angle (plus small noise elsewhere)."""
    generator = torch.Generator().manual_seed(0)
    noise = 0.01 * torch.randn(len(angles), extra_dims, generator=generator)
    return F.normalize(torch.cat([torch.stack([angles.cos(), angles.sin()], dim=1), noise], dim=1), dim=1)


def test_an_embedding_ordered_by_the_label_predicts_it_and_a_random_one_does_not():
    generator = torch.Generator().manual_seed(1)
    label = torch.rand(500, generator=generator)  # in [0, 1): half a turn of the circle, no wrap-around
    assert leave_one_out_knn_r2(_on_circle(label * math.pi), label, k=8) > 0.99
    scrambled = F.normalize(torch.randn(500, 8, generator=generator), dim=1)
    assert leave_one_out_knn_r2(scrambled, label, k=8) < 0.1


def test_an_object_is_never_its_own_neighbour():
    # Each label appears twice, on far-apart points: with self excluded the nearest neighbours carry
    # unrelated labels, so R^2 stays low; counting self would give 1.
    label = torch.arange(100, dtype=torch.float32)
    generator = torch.Generator().manual_seed(2)
    embeddings = F.normalize(torch.randn(100, 16, generator=generator), dim=1)
    assert leave_one_out_knn_r2(embeddings, label, k=1) < 0.5


def test_degenerate_input_gives_nan_or_a_clear_error():
    embeddings = F.normalize(torch.randn(10, 4), dim=1)
    assert math.isnan(leave_one_out_knn_r2(embeddings, torch.ones(10)))  # a constant label has no variance
    assert math.isnan(leave_one_out_knn_r2(embeddings[:2], torch.arange(2.0)))
    with pytest.raises(ValueError, match=r"labels \(9,\) must be \(10,\)"):
        leave_one_out_knn_r2(embeddings, torch.arange(9.0))

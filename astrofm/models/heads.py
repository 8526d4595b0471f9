"""Projection heads: an encoder's features -> the shared embedding space, L2-normalised."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ProjectionHead(nn.Module):
    """Linear (hidden_dim None) or Linear-GELU-Linear projection, then L2 normalisation.

    (B, in_dim) -> (B, embed_dim), each row of unit length, in float32 even under autocast (the
    contrastive logits are sensitive to rounding).
    """

    def __init__(self, in_dim: int, embed_dim: int, hidden_dim: int | None = None):
        super().__init__()
        self.in_dim, self.embed_dim, self.hidden_dim = in_dim, embed_dim, hidden_dim
        if hidden_dim:
            self.proj = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, embed_dim))
        else:
            self.proj = nn.Linear(in_dim, embed_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(features).float(), dim=-1)  # (B, embed_dim)

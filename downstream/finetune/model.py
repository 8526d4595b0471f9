"""The fine-tuned network: an encoder and its projection head (pretrained, or rebuilt with fresh
weights), then a new regression head with the MLP probe's trunk.

    inputs --encoder--> features --projection head--> embedding (L2-normalised, as in `model.embed`)
           --(embedding - mean) / scale--> MLP (two hidden layers) --> standardised target

The encoder normalises its inputs with the statistics stored in the model (set_statistics), so the
network sees the raw collated arrays, as pretraining and `model.embed` did. The embedding standardiser
(like the probe's feature standardiser) is fixed at the start from the training rows' initial embeddings.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from astrofm.models.multimodal import MultiModalModel
from downstream.regression.probes import mlp_trunk


class Regressor(nn.Module):
    def __init__(self, encoder: nn.Module, projection: nn.Module, hidden: int = 64, dropout: float = 0.1):
        super().__init__()
        self.encoder, self.projection = encoder, projection
        dim = projection.embed_dim
        self.head = mlp_trunk(dim, hidden, dropout)
        self.register_buffer("embedding_mean", torch.zeros(dim))
        self.register_buffer("embedding_scale", torch.ones(dim))
        self.register_buffer("target_mean", torch.zeros((), dtype=torch.float64))
        self.register_buffer("target_scale", torch.ones((), dtype=torch.float64))

    def embed(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.projection(self.encoder(inputs))  # (B, embed_dim)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The standardised prediction, (B,)."""
        z = (self.embed(inputs) - self.embedding_mean) / self.embedding_scale
        return self.head(z).squeeze(1)

    def encoder_parameters(self) -> list[nn.Parameter]:
        return [*self.encoder.parameters(), *self.projection.parameters()]

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())

    @torch.no_grad()
    def set_scales(self, embeddings: torch.Tensor, y: np.ndarray) -> None:
        """Fix the embedding standardiser and target scale from the training rows (constant features
        keep scale 1; a one-label subset keeps target scale 1)."""
        scale = embeddings.std(dim=0, unbiased=False) if len(embeddings) > 1 else torch.ones(embeddings.shape[1])
        self.embedding_mean.copy_(embeddings.mean(dim=0))
        self.embedding_scale.copy_(torch.where(scale > 1e-8, scale, torch.ones_like(scale)))
        self.target_mean.fill_(float(np.mean(y)))
        self.target_scale.fill_(float(np.std(y)) or 1.0)

    def to_target(self, standardised: torch.Tensor) -> np.ndarray:
        return standardised.double().numpy() * float(self.target_scale) + float(self.target_mean)

    def standardise(self, y: np.ndarray) -> torch.Tensor:
        return torch.from_numpy((np.asarray(y, np.float64) - float(self.target_mean)) / float(self.target_scale)).float()


def build_regressor(pretrained: MultiModalModel, modality: str, scratch: bool, seed: int, hidden: int = 64,
                    dropout: float = 0.1) -> Regressor:
    """A regressor from the pretrained model's `modality` encoder and projection head (copied, so the
    loaded model stays as it is) or, with `scratch`, from the same config with fresh random weights
    (normalisation statistics included: from_config restores them)."""
    import copy

    if modality not in pretrained.encoders:
        raise ValueError(f"the model has no {modality} encoder (it has {pretrained.modalities})")
    torch.manual_seed(seed)
    if scratch:
        source = MultiModalModel.from_config(pretrained.to_config())
        encoder, projection = source.encoders[modality], source.heads[modality]
    else:
        encoder, projection = copy.deepcopy(pretrained.encoders[modality]), copy.deepcopy(pretrained.heads[modality])
    torch.manual_seed(seed + 1)  # the new head: the same initialisation for both, given the seed
    return Regressor(encoder, projection, hidden, dropout)

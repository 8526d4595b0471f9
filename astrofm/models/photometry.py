"""The photometry encoder: one token per band, a CLS token, and a small transformer.

Steps of `forward`, for B objects measured in NB bands:
    1. valid bands: flux_err > 0 and finite, flux finite; objects without photometry come as all-zero
       rows, so every band of theirs is invalid
    2. per band, with the manifest statistics (median m, robust scale s):
         value = asinh((flux - m) / s)   linear within a few s of the median, logarithmic (a magnitude
                                         up to sign and offset) for bright objects
         error = asinh(flux_err / s)
       both zeroed for invalid bands, so their flux is never read
    3. token = linear(value, error) + learned band embedding; invalid bands are masked out of attention
    4. [CLS] + band tokens -> transformer -> CLS token (B, dim)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from astrofm.models.common import EncoderConfigMixin, Transformer, init_weights, read_statistic, require


@dataclass
class PhotometryEncoderConfig(EncoderConfigMixin):
    n_bands: int = 5  # bands NB; must equal the dataset's (default g, r, z, W1, W2)
    dim: int = 64  # token width = output_dim
    n_layers: int = 2  # transformer blocks
    n_heads: int = 4  # attention heads; dim must be divisible by it
    mlp_ratio: float = 2.0  # MLP hidden width / dim
    dropout: float = 0.0  # dropout in attention and MLP outputs

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"dim": 64, "n_layers": 2, "n_heads": 4, "mlp_ratio": 2.0},
        "small": {"dim": 128, "n_layers": 4, "n_heads": 4, "mlp_ratio": 4.0},
        "base": {"dim": 256, "n_layers": 6, "n_heads": 8, "mlp_ratio": 4.0},
    }
    SPEC_FIELDS: ClassVar[tuple[str, ...]] = ("n_bands",)

    def __post_init__(self):
        require(self.n_bands >= 1, f"n_bands must be positive, got {self.n_bands}")
        require(self.dim % self.n_heads == 0, f"dim {self.dim} is not divisible by n_heads {self.n_heads}")

    @classmethod
    def spec_values(cls, spec: dict[str, Any]) -> dict[str, Any]:
        return {"n_bands": len(spec["bands"])}


class PhotometryEncoder(nn.Module):
    config_class = PhotometryEncoderConfig
    modality = "photometry"

    def __init__(self, config: PhotometryEncoderConfig | None = None):
        super().__init__()
        self.config = config = config or PhotometryEncoderConfig()
        self.output_dim = config.dim
        D = config.dim
        self.value_embed = nn.Linear(2, D)  # (value, error) -> token
        self.band_embed = nn.Parameter(torch.zeros(1, config.n_bands, D))  # which band a token is
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.transformer = Transformer(D, config.n_layers, config.n_heads, config.mlp_ratio, config.dropout)
        self.apply(init_weights)
        nn.init.normal_(self.band_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=0.02)
        # Identity normalisation until set_statistics is called.
        self.register_buffer("flux_median", torch.zeros(config.n_bands))
        self.register_buffer("flux_scale", torch.ones(config.n_bands))

    def set_statistics(self, spec: dict[str, Any], statistics: dict[str, Any]) -> None:
        """Take the normalisation from the manifest's `modalities.photometry` and `statistics.photometry`."""
        bands = list(spec.get("bands", []))
        if len(bands) != self.config.n_bands:
            raise ValueError(f"photometry has {len(bands)} bands {bands} but the encoder expects "
                             f"{self.config.n_bands}; build it with PhotometryEncoderConfig(n_bands={len(bands)})")
        device = self.flux_median.device
        n = self.config.n_bands
        self.register_buffer("flux_median", read_statistic(statistics, "flux_median", "photometry", n).to(device))
        self.register_buffer("flux_scale", read_statistic(statistics, "flux_scale", "photometry", n,
                                                          positive=True).to(device))

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        flux, flux_err = inputs["flux"], inputs["flux_err"]  # (B, NB), (B, NB)
        if flux.ndim != 2 or flux.shape[1] != self.config.n_bands or flux_err.shape != flux.shape:
            raise ValueError(f"photometry flux {tuple(flux.shape)} and flux_err {tuple(flux_err.shape)}: "
                             f"expected (B, {self.config.n_bands}) each")
        B = flux.shape[0]
        valid = (flux_err > 0) & torch.isfinite(flux_err) & torch.isfinite(flux)  # (B, NB)
        zero = flux.new_zeros(())
        value = torch.asinh((flux - self.flux_median) / self.flux_scale)  # (B, NB)
        error = torch.asinh(flux_err / self.flux_scale)  # (B, NB)
        features = torch.where(valid[..., None], torch.stack([value, error], dim=-1), zero)  # (B, NB, 2)
        tokens = self.value_embed(features) + self.band_embed  # (B, NB, D)
        sequence = torch.cat([self.cls_token.expand(B, 1, -1), tokens], dim=1)  # (B, 1 + NB, D)
        keep = torch.cat([valid.new_ones(B, 1), valid], dim=1)  # (B, 1 + NB), CLS always kept
        return self.transformer(sequence, keep)[:, 0]  # (B, D)

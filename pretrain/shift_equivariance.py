"""Shift equivariance for the spectrum embedding: a redshift coordinate, learned without labels.

Why: the contrastive terms reward whatever tells objects apart most cheaply. On the mock that is brightness
and colour, so spectrum neighbours agree on redshift only to a photometric redshift's precision (NMAD
about 0.02, README) and a kNN redshift stays below the MLP probe on the same embeddings. Moving a spectrum
by a factor e^delta in wavelength changes its ln(1 + z) by exactly delta and nothing else the spectrum
shows. This term asks that such a move shift the embedding by a fixed amount along one learned direction:

    w . (e(x moved by delta_b) - e(x moved by delta_a)) = distance_per_shift * (delta_b - delta_a)

for two independent moves of each spectrum. An embedding that obeys it for every spectrum holds ln(1 + z)
as a straight coordinate along w, distance_per_shift per unit, beside everything else it holds: so
nearest neighbours in embedding space agree on redshift to the precision that the lines allow. No label
is used: the moves are drawn, not looked up.

Per object with a spectrum, in `ContrastivePretrainer.training_step`:
    0. up to max_objects of the batch's objects with a spectrum, the first ones (the batch is shuffled);
    1. delta_a, delta_b ~ U(-max_shift, max_shift) in ln(1 + z);
    2. each copy: flux and ivar at observed wavelength lambda are the pixel nearest lambda / e^delta
       (nearest pixel, not interpolation, which would smooth the noise and give the move away);
    3. both copies lose the same fixed edges, [wave_min, wave_min e^max_shift) and (wave_max e^-max_shift,
       wave_max]: every kept pixel has its source on the grid whatever the move, so a missing edge never
       tells the move;
    4. a new noise draw for each copy (the spectrum augmentation), one encoder pass for both;
    5. loss: mean over those objects of (w . (e_b - e_a) - distance_per_shift (delta_b - delta_a))^2,
       divided by (distance_per_shift * max_shift)^2 so that it starts near 2/3; w is a learned unit vector.

The ivar moves with the flux: the mock's noise is a flat sky term plus a term following the source flux,
so a moved spectrum is a spectrum at another redshift. Real spectra carry sky lines fixed in the observed
frame; there, moving the ivar would move them, and a model could read the move off the sky lines instead of
the object's own features.

Rows are scored independently (no all-gather), so under DDP each rank scores its own objects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class ShiftEquivarianceConfig:
    weight: float = 0.0  # weight beside the other terms; 0 switches it off
    max_shift: float = 0.05  # largest |delta ln(1 + z)| of a copy; it also sets the edges both copies lose
    # Embedding distance along w per unit of ln(1 + z). The mock's 0 < z < 1 spans 0.69 in ln(1 + z), so 2
    # lays the redshift range over 1.4 of the unit sphere's diameter of 2; tiny.yaml's 4 (better on the
    # mock) asks for more than the sphere holds, so the coordinate is straight only over a few moves and
    # bends over the whole range.
    distance_per_shift: float = 2.0
    # Objects per step given the moved copies (None: every object with a spectrum). The term scores each
    # object on its own, with no negatives, so a subset serves it as well and saves two encoder passes
    # over the rest: on 2 CPU cores, copies of the whole batch double the time of a step.
    max_objects: int | None = None

    def __post_init__(self):
        if self.weight < 0:
            raise ValueError(f"shift_equivariance.weight must be >= 0, got {self.weight}")
        if not 0 < self.max_shift < 0.5:
            raise ValueError(f"shift_equivariance.max_shift is in ln(1 + z) and must be in (0, 0.5), got "
                             f"{self.max_shift}: both copies lose e^max_shift of the grid at each end")
        if self.distance_per_shift <= 0:
            raise ValueError(f"shift_equivariance.distance_per_shift must be positive, got {self.distance_per_shift}")
        if self.max_objects is not None and self.max_objects < 1:
            raise ValueError(f"shift_equivariance.max_objects must be >= 1 or null, got {self.max_objects}")

    @property
    def enabled(self) -> bool:
        return self.weight > 0


def draw_shifts(n: int, max_shift: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """(n,) moves in ln(1 + z), uniform in [-max_shift, max_shift]."""
    return (2 * torch.rand(n, generator=generator, dtype=torch.float64) - 1) * max_shift


def moved_copy(spectrum: dict[str, torch.Tensor], shift: torch.Tensor, wave_min: float, wave_step: float,
               max_shift: float) -> dict[str, torch.Tensor]:
    """{"flux", "ivar"} (B, L) moved by a factor e^shift (B,) in wavelength (nearest pixel), with ivar 0 on
    the fixed edges that some move within max_shift could push off the grid (steps 2-3 above)."""
    flux, ivar = spectrum["flux"], spectrum["ivar"]
    length = flux.shape[1]
    wave = wave_min + wave_step * torch.arange(length, dtype=torch.float64, device=flux.device)  # (L,)
    source = wave[None, :] * torch.exp(-shift.to(device=flux.device, dtype=torch.float64))[:, None]  # (B, L)
    index = torch.round((source - wave_min) / wave_step).clamp(0, length - 1).long()  # (B, L)
    wave_max = wave_min + wave_step * (length - 1)
    kept = (wave >= wave_min * math.exp(max_shift)) & (wave <= wave_max * math.exp(-max_shift))  # (L,)
    zero = flux.new_zeros(())
    return {**spectrum, "flux": torch.where(kept, torch.gather(flux, 1, index), zero),
            "ivar": torch.where(kept, torch.gather(ivar, 1, index), zero)}


class ShiftEquivarianceHead(nn.Module):
    """The learned direction w and the loss of step 5; training only (export keeps the model alone)."""

    def __init__(self, embed_dim: int, config: ShiftEquivarianceConfig):
        super().__init__()
        self.config = config
        self.direction = nn.Parameter(torch.randn(embed_dim) / math.sqrt(embed_dim))

    def forward(self, first: torch.Tensor, second: torch.Tensor, first_shift: torch.Tensor,
                second_shift: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Scalar loss for (B, D) embeddings of two copies moved by (B,) shifts; rows (B,) bool: scored."""
        config = self.config
        w = self.direction / self.direction.norm().clamp(min=1e-12)
        moved = (second - first) @ w  # (B,)
        target = config.distance_per_shift * (second_shift - first_shift).to(moved)
        residual = (moved - target)[rows]
        if residual.numel() == 0:
            return moved.sum() * 0.0  # keeps the graph for DDP
        return residual.square().mean() / (config.distance_per_shift * config.max_shift) ** 2

"""Redshifted hard negatives for the spectrum self view: the same spectrum moved to another redshift.

Why: the contrastive terms reward whatever tells objects apart most cheaply, and on the mock that is
brightness. The 10 nearest spectrum neighbours agree on r magnitude to 0.07 of the random-pair spread but
on redshift only to 0.39 (README), so a kNN redshift leans on brightness and stays below the MLP probe on
the same embeddings. This term gives every spectrum a copy of itself at another redshift: the same
brightness, noise level, type and lines, with every feature moved by a factor e^delta in wavelength. The
spectrum's embedding must lie nearer its own second view than this copy, and only the positions of lines
and breaks tell the two apart. Embedding distances then grow with redshift at fixed brightness, which is
what a redshift by nearest neighbours needs. No label is used: the shift is drawn, not looked up.

Per object with a spectrum, in `ContrastivePretrainer.training_step`:
    1. delta = +-exp(U(ln min_shift, ln max_shift)) in ln(1 + z), the sign at random;
    2. the copy: flux and ivar at observed wavelength lambda are the pixel nearest lambda / e^delta (nearest
       pixel, not interpolation, which would smooth the noise and give the copy away); pixels whose source
       falls off the grid become invalid (ivar 0);
    3. the second (positive) view loses one edge the same way, for another draw of delta, so a missing edge
       does not tell the copy from the view; then both get the view's treatment (a new noise draw, and the
       masked spans when the masked spectrum is the self view);
    4. loss: the mean over those objects of the cross-entropy of the two logits scale * (a . p, a . n),
       target p, with a the embedding of the spectrum, p its second view, n its copy, and scale the model's
       clamped logit scale, detached (so this term does not drive the temperature).

Rows are scored independently (no all-gather), so under DDP each rank scores its own objects and DDP's
mean of the gradients is that of the global mean when local batches have equal size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class RedshiftNegativesConfig:
    weight: float = 0.0  # weight beside the other terms; 0 switches it off
    min_shift: float = 0.005  # smallest |delta ln(1 + z)| of a copy (0.005: 9 pixels at 3600 A, 25 at 9800 A)
    max_shift: float = 0.1  # largest; |delta| is log-uniform in between, so small shifts are common
    # None: the view must always win (a hard negative). A value s: the view's target probability is
    # sigmoid(|delta| / s), so the loss is lowest when scale * (a.p - a.n) = |delta| / s: embedding
    # similarity falls linearly with the shift instead of any shift being pushed away alike.
    shift_scale: float | None = None

    def __post_init__(self):
        if self.weight < 0:
            raise ValueError(f"redshift_negatives.weight must be >= 0, got {self.weight}")
        if not 0 < self.min_shift <= self.max_shift:
            raise ValueError(f"redshift_negatives needs 0 < min_shift <= max_shift, got "
                             f"{self.min_shift} and {self.max_shift}")
        if self.shift_scale is not None and self.shift_scale <= 0:
            raise ValueError(f"redshift_negatives.shift_scale must be positive or null, got {self.shift_scale}")
        if self.max_shift >= 1.0:
            raise ValueError(f"redshift_negatives.max_shift is in ln(1 + z) and moves features by e^max_shift; "
                             f"{self.max_shift} would leave little of the spectrum on the grid")

    @property
    def enabled(self) -> bool:
        return self.weight > 0


def draw_shifts(n: int, config: RedshiftNegativesConfig, device=None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """(n,) shifts in ln(1 + z): log-uniform magnitude in [min_shift, max_shift], random sign."""
    low, high = math.log(config.min_shift), math.log(config.max_shift)
    magnitude = torch.exp(low + (high - low) * torch.rand(n, generator=generator))
    sign = torch.randint(0, 2, (n,), generator=generator) * 2 - 1
    return (sign * magnitude).to(device)


def source_pixels(length: int, wave_min: float, wave_step: float, shift: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """For spectra on the grid wave_min + wave_step * i moved by e^shift (B,): the (B, L) index of the pixel
    each output pixel takes, and (B, L) bool, False where that source lies off the grid."""
    wave = wave_min + wave_step * torch.arange(length, dtype=torch.float64, device=shift.device)  # (L,)
    source = wave[None, :] * torch.exp(-shift.to(torch.float64))[:, None]  # (B, L) rest of the copy
    index = torch.round((source - wave_min) / wave_step)  # (B, L)
    inside = (index >= 0) & (index <= length - 1)
    return index.clamp(0, length - 1).long(), inside


def redshifted(spectrum: dict[str, torch.Tensor], shift: torch.Tensor, wave_min: float, wave_step: float
               ) -> dict[str, torch.Tensor]:
    """{"flux", "ivar"} (B, L) moved by a factor e^shift (B,) in wavelength; off-grid pixels invalid."""
    flux, ivar = spectrum["flux"], spectrum["ivar"]
    index, inside = source_pixels(flux.shape[1], wave_min, wave_step, shift)
    zero = flux.new_zeros(())
    return {**spectrum, "flux": torch.where(inside, torch.gather(flux, 1, index), zero),
            "ivar": torch.where(inside, torch.gather(ivar, 1, index), zero)}


def without_edge(spectrum: dict[str, torch.Tensor], shift: torch.Tensor, wave_min: float, wave_step: float
                 ) -> dict[str, torch.Tensor]:
    """The spectrum unmoved, with ivar 0 on the edge that a move by e^shift would push off the grid."""
    ivar = spectrum["ivar"]
    _, inside = source_pixels(ivar.shape[1], wave_min, wave_step, shift)
    return {**spectrum, "ivar": torch.where(inside, ivar, ivar.new_zeros(()))}


def view_target(shift: torch.Tensor, config: RedshiftNegativesConfig) -> torch.Tensor | None:
    """(B,) probability that the view, not the copy moved by `shift`, is the match; None: always (hard)."""
    if config.shift_scale is None:
        return None
    return torch.sigmoid(shift.abs().float() / config.shift_scale)


def hard_negative_loss(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                       rows: torch.Tensor, scale: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over `rows` (B,) bool of CE(scale * [a.p, a.n], [t, 1 - t]) for (B, D) unit embeddings, with
    t = target (B,) or 1; 0 with no row."""
    logits = scale * torch.stack([(anchor * positive).sum(-1), (anchor * negative).sum(-1)], dim=1)  # (B, 2)
    logits = logits[rows]
    if logits.shape[0] == 0:
        return (anchor.sum() + positive.sum() + negative.sum()) * 0.0  # keeps the graph for DDP
    if target is None:
        return F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device))
    t = target.to(logits)[rows]
    return F.cross_entropy(logits, torch.stack([t, 1 - t], dim=1))

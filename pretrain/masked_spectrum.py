"""Masked-spectrum modelling: an auxiliary pretraining term that makes the spectrum encoder read lines.

The cross-modal loss keeps only what spectra share with photometry and images: broad colours, which
pin redshift to photometric precision. AstroCLIP's SpecFormer is first pretrained by filling in masked
stretches of the spectrum, which needs the exact positions of lines and breaks. Here the same task runs
beside the contrastive loss:

    1. spans of `span_pixels` pixels, each masked with probability `mask_fraction` (a random phase per
       object), are hidden by zeroing their inverse variance: the encoder treats them as missing, so it
       never reads their flux;
    2. the encoder's outputs at patches lying wholly inside hidden spans are decoded by a linear head to
       the patch's pixels, in the standardised units the encoder reads (SpectrumEncoder.standardised of
       the whole spectrum; the masked input is scaled over its shown pixels, a small difference that
       its brightness token tells the encoder);
    3. the loss is the mean squared error over those pixels that were valid before masking, over the
       objects that have a spectrum.

The head lives in the training module, not the exported model: downstream users see the same encoder.

With `self_view: true` the masked spectrum is also the spectrum's second view for the self-view InfoNCE
(as iBOT's masked view serves both its patch and its CLS objectives): its pooled output is matched
against the unmasked spectrum's embedding, so one encoder pass serves two terms. That saves one of the
three spectrum passes per step (about 28% of a `tiny` step on 2 CPU cores, measured), and the self view
becomes harder: the embedding must survive 30% of the spectrum hidden, not only a new noise draw.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class MaskedSpectrumConfig:
    weight: float = 0.0  # weight of the term beside the contrastive loss; 0 switches it off
    mask_fraction: float = 0.3  # probability that a span is hidden
    span_pixels: int = 160  # length of a hidden span (tiny: 160 pixels hold 3-4 whole patches of 40)
    self_view: bool = False  # with self_views [spectrum] and weight > 0: the masked spectrum is that self view

    def __post_init__(self):
        if self.weight < 0:
            raise ValueError(f"masked_spectrum.weight must be >= 0, got {self.weight}")
        if not 0 < self.mask_fraction < 1:
            raise ValueError(f"masked_spectrum.mask_fraction must be in (0, 1), got {self.mask_fraction}")
        if self.span_pixels < 1:
            raise ValueError(f"masked_spectrum.span_pixels must be positive, got {self.span_pixels}")

    @property
    def enabled(self) -> bool:
        return self.weight > 0


def span_mask(batch: int, length: int, config: MaskedSpectrumConfig, device=None,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """(batch, length) bool, True where hidden: aligned spans of span_pixels with a random phase per row."""
    span = config.span_pixels
    phase = torch.randint(0, span, (batch, 1), generator=generator, device=device)  # (B, 1)
    block = (torch.arange(length, device=device)[None, :] + phase) // span  # (B, L) span index
    hidden = torch.rand(batch, length // span + 2, generator=generator, device=device) < config.mask_fraction
    return torch.gather(hidden, 1, block)


class MaskedSpectrumHead(nn.Module):
    """Decodes the encoder's patch outputs back to the patch pixels; computes the masked-spectrum loss."""

    def __init__(self, encoder: nn.Module, config: MaskedSpectrumConfig):
        super().__init__()
        if not hasattr(encoder, "standardised"):
            raise ValueError(f"masked-spectrum pretraining needs a SpectrumEncoder, got {type(encoder).__name__}")
        self.config = config
        self.patch_size, self.patch_stride = encoder.config.patch_size, encoder.config.patch_stride
        self.padded_length = encoder.config.padded_length
        self.decode = nn.Linear(encoder.output_dim, self.patch_size)

    def _patches(self, values: torch.Tensor, fill) -> torch.Tensor:
        """(B, L) -> (B, N, P), padded at the end with `fill` as the encoder pads."""
        padded = nn.functional.pad(values, (0, self.padded_length - values.shape[1]), value=fill)
        return padded.unfold(1, self.patch_size, self.patch_stride)

    def forward(self, encoder: nn.Module, spectrum: dict[str, torch.Tensor], has_spectrum: torch.Tensor,
                hidden: torch.Tensor | None = None, return_pooled: bool = False):
        """Scalar loss. spectrum: {"flux", "ivar"} (B, L); has_spectrum (B,) bool; hidden: (B, L) bool
        mask of hidden pixels (default: drawn with span_mask). With return_pooled: (loss, the encoder's
        pooled output of the masked spectrum (B, dim)), for the shared self view."""
        flux, ivar = spectrum["flux"], spectrum["ivar"]
        if hidden is None:
            hidden = span_mask(flux.shape[0], flux.shape[1], self.config, device=flux.device)
        with torch.no_grad():
            target, valid, _ = encoder.standardised(spectrum)  # (B, L), (B, L)
        masked = {"flux": flux, "ivar": torch.where(hidden, torch.zeros_like(ivar), ivar)}
        pooled, outputs = encoder(masked, return_patches=True)  # (B, D), (B, N, D)
        predicted = self.decode(outputs)  # (B, N, P)
        whole = self._patches(hidden, True).all(-1)  # (B, N): no pixel of the patch was shown
        scored = whole[..., None] & self._patches(valid & hidden, False) & has_spectrum[:, None, None]
        weight = scored.to(predicted.dtype)
        error = (predicted - self._patches(target, 0.0)).square() * weight
        loss = error.sum() / weight.sum().clamp(min=1.0)
        return (loss, pooled) if return_pooled else loss

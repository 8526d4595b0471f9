"""Physics-respecting augmentations of a collated batch (layout in astrofm.data.collate).

- images: rotations by multiples of 90 degrees and mirror flips, drawn per object (the sky has no
  preferred orientation); every per-pixel array of the image (flux, ivar) gets the same transform,
  so pixels keep their weights and the total flux is unchanged; optionally (`image_noise`, off by
  default) a new noise draw per pixel, flux + N(0, 1 / sqrt(ivar)) where ivar > 0, after the transform;
- spectra: a new noise draw from the inverse variance, flux + N(0, 1 / sqrt(ivar)) where ivar > 0;
- photometry: flux + N(0, flux_err) where flux_err > 0.

Pixels with no information (ivar 0, flux_err 0, or non-finite) and rows of objects that lack the
modality (batch["mask"][m] False) are left untouched. The noise draws are augmentations, not new
observations: ivar and flux_err are returned unchanged (the augmented flux scatters by sqrt(2) times
the stated error about the truth when `noise_scale` is 1). The input batch is never modified; the
returned batch shares every tensor that no augmentation touched.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from astrofm.data.manifest import Manifest


@dataclass
class AugmentConfig:
    image_rot90: bool = True  # rotations by multiples of 90 degrees (sky has no preferred orientation)
    image_flip: bool = True  # mirror flips (each of the two axes independently, per object)
    # A new pixel-noise draw from the stamp's ivar. Off by default; with `self_views: [image]` it teaches the
    # image encoder that two noise draws of one galaxy are the same object (the noise is a nuisance a kNN sees).
    image_noise: bool = False
    spectrum_noise: bool = True  # a new noise draw from the ivar: flux + N(0, 1/sqrt(ivar)) where ivar > 0
    photometry_noise: bool = True  # flux + N(0, flux_err) where flux_err > 0
    noise_scale: float = 1.0  # multiplies the standard deviation of every noise draw


def check_images_carry_ivar(manifest: Manifest, where: str) -> None:
    """For `image_noise`, which draws pixel noise from each stamp's ivar: an image stored without one is
    collated as ivar 1 and would get unit noise, whatever its units. Raise if the train split holds such
    images (the manifest counts them); warn if the manifest predates the count. `where` names the manifest."""
    images = manifest.modality_counts.get("train", {}).get("image", 0)
    if manifest.optional_array_counts is None:
        # stacklevel 1: one location, so the command line's early check and the fit's setup warn once
        warnings.warn(f"{where} does not count the images stored with ivar (written by an older astrofm); "
                      "image_noise takes any image without ivar as ivar 1", stacklevel=1)
        return
    with_ivar = manifest.optional_array_counts.get("train", {}).get("image.ivar", 0)
    if with_ivar < images:
        raise ValueError(f"{where}: field 'optional_array_counts' says {with_ivar} of the train split's "
                         f"{images} images carry 'image.ivar'; augment.image_noise draws pixel noise from it: "
                         "ingest the stamps with their IVAR extension, or leave image_noise off")


def augment_batch(batch: dict, config: AugmentConfig, generator: torch.Generator | None = None) -> dict:
    """A new batch with the switched-on augmentations applied to the modalities the batch holds.

    Randomness comes from `generator` (a CPU generator by default: seed it for reproducible draws);
    draws are made for every row in a fixed order, so the result depends only on the seed and shapes.
    """
    out = dict(batch)
    masks = batch.get("mask", {})
    if "image" in batch and (config.image_rot90 or config.image_flip):
        out["image"] = _augment_image(batch["image"], _row_mask(masks, "image", batch["image"]), config,
                                      generator)
    if "image" in batch and config.image_noise:
        arrays = out["image"]
        out["image"] = {**arrays, "flux": _add_noise(arrays["flux"], _sigma_from_ivar(arrays["ivar"]),
                                                     _row_mask(masks, "image", arrays), config.noise_scale,
                                                     generator)}
    if "spectrum" in batch and config.spectrum_noise:
        arrays = batch["spectrum"]
        out["spectrum"] = {**arrays, "flux": _add_noise(arrays["flux"], _sigma_from_ivar(arrays["ivar"]),
                                                        _row_mask(masks, "spectrum", arrays), config.noise_scale,
                                                        generator)}
    if "photometry" in batch and config.photometry_noise:
        arrays = batch["photometry"]
        out["photometry"] = {**arrays, "flux": _add_noise(arrays["flux"], arrays["flux_err"],
                                                          _row_mask(masks, "photometry", arrays),
                                                          config.noise_scale, generator)}
    return out


def _sigma_from_ivar(ivar: torch.Tensor) -> torch.Tensor:
    """1 / sqrt(ivar) where ivar > 0, else 0 (no draw there)."""
    return torch.where(ivar > 0, ivar.clamp(min=torch.finfo(ivar.dtype).tiny).rsqrt(), 0.0)


def _row_mask(masks: dict, modality: str, arrays: dict) -> torch.Tensor:
    """(B,) bool: rows that hold the modality (all of them when the batch has no mask for it)."""
    flux = arrays["flux"]
    mask = masks.get(modality)
    if mask is None:
        return torch.ones(flux.shape[0], dtype=torch.bool, device=flux.device)
    return mask.to(device=flux.device, dtype=torch.bool)


def _draw(kind: str, shape, generator: torch.Generator | None, high: int = 2) -> torch.Tensor:
    device = generator.device if generator is not None else torch.device("cpu")
    if kind == "normal":
        return torch.randn(shape, generator=generator, device=device)
    return torch.randint(0, high, shape, generator=generator, device=device)


def _add_noise(flux: torch.Tensor, sigma: torch.Tensor, rows: torch.Tensor, scale: float,
               generator: torch.Generator | None) -> torch.Tensor:
    """flux + scale * sigma * N(0, 1) where sigma > 0 (finite) and the row is present; else flux."""
    noise = _draw("normal", flux.shape, generator).to(device=flux.device, dtype=flux.dtype)
    use = (sigma > 0) & torch.isfinite(sigma) & rows.reshape(-1, *([1] * (flux.ndim - 1)))
    return torch.where(use, flux + scale * sigma.to(flux.dtype) * noise, flux)


def _augment_image(arrays: dict, rows: torch.Tensor, config: AugmentConfig,
                   generator: torch.Generator | None) -> dict:
    """Per-object dihedral transform of every (B, C, H, W) array that has the flux's shape."""
    flux = arrays["flux"]
    batch, height, width = flux.shape[0], flux.shape[-2], flux.shape[-1]
    # Draws for every row, in a fixed order, whatever the switches and masks: reproducible per seed.
    turns = _draw("int", (batch,), generator, high=4).to(flux.device)
    flips = _draw("int", (batch, 2), generator).to(flux.device).bool()
    if not config.image_rot90:
        turns = torch.zeros_like(turns)
    elif height != width:  # a quarter turn would change the stamp's shape: half turns only
        turns = turns - turns % 2
    if not config.image_flip:
        flips = torch.zeros_like(flips)
    turns = torch.where(rows, turns, 0)
    flips = flips & rows[:, None]

    def transform(x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        for k in (1, 2, 3):
            idx = (turns == k).nonzero().squeeze(1)
            if idx.numel():
                x[idx] = torch.rot90(x[idx], k, dims=(-2, -1))
        for axis, dim in ((0, -1), (1, -2)):  # left-right, then up-down
            idx = flips[:, axis].nonzero().squeeze(1)
            if idx.numel():
                x[idx] = torch.flip(x[idx], dims=(dim,))
        return x

    return {name: transform(value) if torch.is_tensor(value) and value.shape == flux.shape else value
            for name, value in arrays.items()}

"""A tiny dataset (TINY_SPEC: 100-pixel spectra, g r photometry, 3x8x8 images) whose modalities share two
latent numbers, so the source carries what the target needs; and an untrained model folder for it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from astrofm.data import DatasetWriter, Sample, WriterConfig, load_manifest
from tests.conftest import TINY_SPEC

N_OBJECTS = 240
SPECTRUM_NOISE = 0.1  # sigma per pixel (ivar 100)


def latent_sample(index: int, rng: np.random.Generator, missing: str | None = None) -> Sample:
    """Spectrum: a continuum whose tilt is z0 and an emission line whose strength is z1; photometry and
    image: affine in (z0, z1); redshift: monotone in z0."""
    z = rng.normal(size=2)
    x = np.linspace(0.0, 1.0, TINY_SPEC.spectrum.n_pixels)
    clean = 5.0 + 1.5 * z[0] * (x - 0.5) + 2.0 * (z[1] + 2.0) * np.exp(-0.5 * ((x - 0.6) / 0.03) ** 2)
    sample = Sample(
        id=f"gen-{index:05d}", labels={"redshift": float(np.clip(0.5 + 0.15 * z[0], 0.01, 1.0))},
        spectrum={"flux": clean + rng.normal(size=x.size) * SPECTRUM_NOISE,
                  "ivar": np.full(x.size, 1.0 / SPECTRUM_NOISE ** 2)},
        photometry={"flux": 10.0 + 3.0 * z, "flux_err": np.full(2, 0.1)},
        image={"flux": np.tile(np.array([z[0], z[1], z[0] + z[1]])[:, None, None], (1, 8, 8))
               + rng.normal(size=(3, 8, 8)) * 0.1, "ivar": np.full((3, 8, 8), 100.0)})
    if missing:
        setattr(sample, missing, None)
    return sample


def build_latent_dataset(out: Path, n: int = N_OBJECTS, seed: int = 0) -> Path:
    """Every 11th object lacks its spectrum, so pairing by modality is exercised."""
    rng = np.random.default_rng(seed)
    with DatasetWriter(out, TINY_SPEC, config=WriterConfig(shard_size=40), provenance={"generator": "tests"}) as w:
        for i in range(n):
            w.add(latent_sample(i, rng, missing="spectrum" if i % 11 == 5 else None))
    return out


def build_untrained_model(dataset: Path, out: Path, embed_dim: int = 32, seed: int = 0,
                          modalities: tuple[str, ...] = ("spectrum", "photometry", "image")) -> Path:
    """An untrained model for TINY_SPEC normalised with the dataset's statistics: its embeddings are random
    but smooth functions of the inputs, so they still carry the latent numbers."""
    import torch

    from astrofm.models import MultiModalModel, save_model
    from tests.astrofm.models.helpers import tiny_encoders

    encoders = {m: e for m, e in tiny_encoders().items() if m in modalities}
    torch.manual_seed(seed)
    model = MultiModalModel(encoders, embed_dim=embed_dim)
    model.set_statistics(load_manifest(dataset).to_dict())
    return save_model(model, out)

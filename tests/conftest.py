"""Shared fixtures: tiny synthetic datasets built in tmp_path, and an environment that never calls out."""

from __future__ import annotations

import os

import numpy as np
import pytest

from astrofm.data import (
    DatasetSpec,
    DatasetWriter,
    ImageSpec,
    PhotometrySpec,
    Sample,
    SpectrumSpec,
    WriterConfig,
)

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY_SPEC = DatasetSpec(
    spectrum=SpectrumSpec(wave_min=3600.0, wave_max=3798.0, wave_step=2.0),  # 100 pixels
    photometry=PhotometrySpec(bands=["g", "r"], filters=["decam2014-g", "decam2014-r"]),
    image=ImageSpec(bands=["g", "r", "z"], size=8),
)


def synthetic_sample(index: int, spec: DatasetSpec = TINY_SPEC, missing: str | None = None) -> Sample:
    """An object with random arrays of the right shapes; its label `index` identifies it."""
    rng = np.random.default_rng(index)
    sample = Sample(id=f"obj-{index:05d}", labels={"index": index, "redshift": float(rng.uniform(0, 1)),
                                                    "kind": "synthetic"},
                    meta={"survey": "test", "domain": "observed"})
    n_pix, n_bands = spec.spectrum.n_pixels, len(spec.photometry.bands)
    size = spec.image.size
    sample.spectrum = {"flux": rng.normal(size=n_pix), "ivar": rng.uniform(0.5, 2.0, n_pix)}
    sample.photometry = {"flux": rng.normal(10, 1, n_bands), "flux_err": np.full(n_bands, 0.5)}
    sample.image = {"flux": rng.normal(size=(len(spec.image.bands), size, size)),
                    "ivar": np.ones((len(spec.image.bands), size, size))}
    if missing:
        setattr(sample, missing, None)
    return sample


@pytest.fixture
def make_dataset(tmp_path):
    """make_dataset(n, shard_size, all_train=False, missing_every=0) -> dataset folder."""

    def build(n: int = 40, shard_size: int = 5, all_train: bool = False, missing_every: int = 0,
              name: str = "ds"):
        fractions = {"train": 1.0, "val": 0.0, "test": 0.0} if all_train else None
        config = WriterConfig(shard_size=shard_size, **({"split_fractions": fractions} if fractions else {}))
        out = tmp_path / name
        with DatasetWriter(out, TINY_SPEC, config=config, provenance={"generator": "tests"}) as writer:
            for i in range(n):
                missing = "spectrum" if missing_every and i % missing_every == 0 else None
                writer.add(synthetic_sample(i, missing=missing))
        return out

    return build

"""A small dataset with the default spec (3101-pixel spectra, 5 bands, 3x32x32 images), shared by the
pretraining tests: each object's modalities carry the same 8 latent numbers, so there is something to
learn."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from astrofm.data import DatasetSpec, DatasetWriter, Sample, WriterConfig
from astrofm.data.format import ImageSpec, PhotometrySpec

REPO = Path(__file__).resolve().parents[2]
TINY_RECIPE = REPO / "configs" / "pretrain" / "tiny.yaml"


def latent_sample(index: int, spec: DatasetSpec, rng: np.random.Generator) -> Sample:
    n_pix, n_phot, n_img = spec.spectrum.n_pixels, len(spec.photometry.bands), len(spec.image.bands)
    z = rng.normal(size=8)
    return Sample(
        id=f"latent-{index:05d}", labels={"redshift": float(abs(z[0]) / 3)},
        spectrum={"flux": np.repeat(z, n_pix // 8 + 1)[:n_pix] + rng.normal(size=n_pix) * 0.3,
                  "ivar": np.full(n_pix, 10.0)},
        photometry={"flux": z[:n_phot] * 3 + 10, "flux_err": np.full(n_phot, 0.1)},
        image={"flux": np.tile(z[:n_img, None, None], (1, 32, 32)) + rng.normal(size=(n_img, 32, 32)) * 0.3,
               "ivar": np.ones((n_img, 32, 32))})


def write_latent_dataset(out: Path, spec: DatasetSpec, n: int = 320) -> Path:
    rng = np.random.default_rng(0)
    with DatasetWriter(out, spec, config=WriterConfig(shard_size=40)) as writer:
        for i in range(n):
            writer.add(latent_sample(i, spec, rng))
    return out


@pytest.fixture(scope="session")
def latent_dataset(tmp_path_factory) -> Path:
    return write_latent_dataset(tmp_path_factory.mktemp("pretrain") / "latent", DatasetSpec())


@pytest.fixture(scope="session")
def griz_latent_dataset(tmp_path_factory) -> Path:
    """The same with g, r, i, z stamps and six photometry bands, as configs/mock/observed_griz.yaml writes."""
    spec = DatasetSpec(photometry=PhotometrySpec(bands=["g", "r", "i", "z", "W1", "W2"], filters=[
        "decam2014-g", "decam2014-r", "decam2014-i", "decam2014-z", "wise2010-W1", "wise2010-W2"]),
        image=ImageSpec(bands=["g", "r", "i", "z"]))
    return write_latent_dataset(tmp_path_factory.mktemp("pretrain") / "griz", spec, n=160)


@pytest.fixture
def no_ivar_dataset(tmp_path) -> Path:
    """A latent dataset whose stamps were stored without ivar (an ingest of stamps with no IVAR extension)."""
    rng = np.random.default_rng(1)
    with DatasetWriter(tmp_path / "no_ivar", DatasetSpec(), config=WriterConfig(shard_size=40)) as writer:
        for i in range(40):
            sample = latent_sample(i, DatasetSpec(), rng)
            del sample.image["ivar"]
            writer.add(sample)
    return tmp_path / "no_ivar"


def astrofm_command(*args: str) -> list[str]:
    """The real console entry point, as a user runs it (DDP relaunches this same command for rank 1)."""
    return [sys.executable, "-m", "astrofm.cli.main", *args]


def quiet_env() -> dict[str, str]:
    return {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1",
            "PYTHONWARNINGS": "ignore"}


FAST = ["--trainer.log_every_n_steps", "1", "--data.batch_size", "16", "--data.val_batch_size", "64",
        "--data.num_workers", "1", "--data.shuffle_buffer", "32", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--data.samples_per_epoch", "48"]  # 3 steps per epoch

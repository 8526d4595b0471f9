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

REPO = Path(__file__).resolve().parents[2]
TINY_RECIPE = REPO / "configs" / "pretrain" / "tiny.yaml"


def latent_sample(index: int, spec: DatasetSpec, rng: np.random.Generator) -> Sample:
    n_pix = spec.spectrum.n_pixels
    z = rng.normal(size=8)
    return Sample(
        id=f"latent-{index:05d}", labels={"redshift": float(abs(z[0]) / 3)},
        spectrum={"flux": np.repeat(z, n_pix // 8 + 1)[:n_pix] + rng.normal(size=n_pix) * 0.3,
                  "ivar": np.full(n_pix, 10.0)},
        photometry={"flux": z[:5] * 3 + 10, "flux_err": np.full(5, 0.1)},
        image={"flux": np.tile(z[:3, None, None], (1, 32, 32)) + rng.normal(size=(3, 32, 32)) * 0.3,
               "ivar": np.ones((3, 32, 32))})


@pytest.fixture(scope="session")
def latent_dataset(tmp_path_factory) -> Path:
    spec, rng = DatasetSpec(), np.random.default_rng(0)
    out = tmp_path_factory.mktemp("pretrain") / "latent"
    with DatasetWriter(out, spec, config=WriterConfig(shard_size=40)) as writer:
        for i in range(320):
            writer.add(latent_sample(i, spec, rng))
    return out


def astrofm_command(*args: str) -> list[str]:
    """The real console entry point, as a user runs it (DDP relaunches this same command for rank 1)."""
    return [sys.executable, "-m", "astrofm.cli.main", *args]


def quiet_env() -> dict[str, str]:
    return {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1",
            "PYTHONWARNINGS": "ignore"}


FAST = ["--trainer.log_every_n_steps", "1", "--data.batch_size", "16", "--data.val_batch_size", "64",
        "--data.num_workers", "1", "--data.shuffle_buffer", "32", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--data.samples_per_epoch", "48"]  # 3 steps per epoch

"""Builders for the fine-tuning tests: a tiny dataset (TINY_SPEC, 100-pixel spectra, some objects without a
spectrum) split 60/20/20, and untrained tiny model folders normalised with its statistics."""

from __future__ import annotations

from pathlib import Path

from astrofm.data import DatasetWriter, WriterConfig, load_manifest
from tests.conftest import TINY_SPEC, synthetic_sample

N_OBJECTS = 90
SPLIT_FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}


def build_dataset(out: Path, n: int = N_OBJECTS, label_every: dict[str, int] | None = None) -> Path:
    """`label_every={"mass": 3}` adds a float label `mass` to every object but each third one."""
    config = WriterConfig(shard_size=10, split_fractions=SPLIT_FRACTIONS)
    with DatasetWriter(out, TINY_SPEC, config=config, provenance={"generator": "tests"}) as writer:
        for i in range(n):
            sample = synthetic_sample(i, missing="spectrum" if i % 9 == 0 else None)
            for name, every in (label_every or {}).items():
                if i % every:
                    sample.labels[name] = 9.0 + sample.labels["redshift"] + 0.01 * i
            writer.add(sample)
    return out


def build_model(dataset: Path, out: Path, modalities: tuple[str, ...] = ("spectrum", "photometry", "image"),
                seed: int = 0) -> Path:
    """An untrained model folder with the tiny encoders of `modalities`, normalised with the dataset."""
    import torch

    from astrofm.models import MultiModalModel, save_model
    from tests.astrofm.models.helpers import tiny_encoders

    encoders = {m: e for m, e in tiny_encoders().items() if m in modalities}
    torch.manual_seed(seed)
    model = MultiModalModel(encoders, embed_dim=16)
    model.set_statistics(load_manifest(dataset).to_dict())
    return save_model(model, out)

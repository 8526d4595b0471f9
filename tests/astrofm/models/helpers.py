"""Helpers for the model tests: tiny encoders shaped to TINY_SPEC, its statistics, and batches."""

from __future__ import annotations

import torch

from astrofm.data.collate import collate_samples
from astrofm.data.statistics import StatisticsAccumulator
from astrofm.models.image import (
    ImageCNNEncoder,
    ImageCNNEncoderConfig,
    ImageViTEncoder,
    ImageViTEncoderConfig,
)
from astrofm.models.photometry import PhotometryEncoder, PhotometryEncoderConfig
from astrofm.models.spectrum import SpectrumEncoder, SpectrumEncoderConfig
from tests.conftest import TINY_SPEC, synthetic_sample

SPEC = TINY_SPEC.to_dict()


def tiny_manifest(n: int = 16) -> dict:
    """The `modalities` and `statistics` blocks a manifest of TINY_SPEC objects would hold."""
    accumulator = StatisticsAccumulator(TINY_SPEC)
    for i in range(n):
        accumulator.add(synthetic_sample(i))
    return {"modalities": TINY_SPEC.to_dict(), "statistics": accumulator.result()}


def make_batch(n: int = 4, start: int = 0, missing: dict[int, str] | None = None) -> dict:
    """collate_samples of synthetic objects start..start+n-1; `missing` maps an index to a modality it lacks."""
    missing = missing or {}
    samples = [synthetic_sample(i, missing=missing.get(i)) for i in range(start, start + n)]
    return collate_samples(samples, ["spectrum", "photometry", "image"])


def tiny_encoders(image: str = "cnn") -> dict:
    """image: "cnn" or "vit", either with "_apertures" for the aperture-photometry branch."""
    torch.manual_seed(0)
    radii = (1.5, 2.5, 4.0) if image.endswith("_apertures") else ()
    if image.startswith("vit"):
        image_encoder = ImageViTEncoder(ImageViTEncoderConfig.for_spec(SPEC["image"], aperture_radii=radii))
    else:
        image_encoder = ImageCNNEncoder(ImageCNNEncoderConfig.for_spec(SPEC["image"], aperture_radii=radii))
    return {
        "spectrum": SpectrumEncoder(SpectrumEncoderConfig.for_spec(SPEC["spectrum"])),
        "photometry": PhotometryEncoder(PhotometryEncoderConfig.for_spec(SPEC["photometry"])),
        "image": image_encoder,
    }


def assert_same_embeddings(expected: dict, got: dict) -> None:
    """The same modalities, bit for bit."""
    assert list(expected) == list(got)
    for modality in expected:
        assert torch.equal(expected[modality], got[modality]), modality

"""Encoders per modality, projection heads, the multi-modal model, and its folder format.

    spectrum.py     SpectrumEncoder      transformer over overlapping patches (AstroCLIP SpecFormer-like)
    photometry.py   PhotometryEncoder    one token per band, missing bands masked
    image.py        ImageViTEncoder      transformers' ViT, trained from scratch
                    ImageCNNEncoder      a small conv net for CPUs
    heads.py        ProjectionHead       -> shared embedding space, L2-normalised
    multimodal.py   MultiModalModel      encoders + heads + logit scale; to_config / from_config
    io.py           save_model, load_model   config.json + model.safetensors, no pickle

Names are imported on first use, so `import astrofm.models` costs nothing.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SpectrumEncoder": "spectrum", "SpectrumEncoderConfig": "spectrum",
    "PhotometryEncoder": "photometry", "PhotometryEncoderConfig": "photometry",
    "ImageViTEncoder": "image", "ImageViTEncoderConfig": "image",
    "ImageCNNEncoder": "image", "ImageCNNEncoderConfig": "image",
    "ProjectionHead": "heads",
    "MultiModalModel": "multimodal",
    "save_model": "io", "load_model": "io", "read_model_config": "io",
    "build_encoder": "registry", "encoder_for_spec": "registry", "resolve_encoder_class": "registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'astrofm.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"astrofm.models.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)

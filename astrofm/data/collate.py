"""Collating objects into a batch of tensors, with one mask per modality.

A modality an object lacks is absent in the dataset; in the batch its rows are zero-filled and its
mask is False, so models and losses can skip them.

Batch layout (B objects):
    batch["id"]                  list of B object ids
    batch["meta"]                list of B dicts: labels and meta as stored (strings included)
    batch["labels"][name]        float tensor (B,), NaN where an object lacks a numeric label
    batch["mask"][modality]      bool tensor (B,)
    batch["spectrum"]            {"flux": (B, L), "ivar": (B, L)}
    batch["photometry"]          {"flux": (B, NB), "flux_err": (B, NB)}
    batch["image"]               {"flux": (B, C, H, W), "ivar": (B, C, H, W)}
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from astrofm.data.format import MODALITY_ARRAYS, Sample


def _numeric(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def collate_samples(samples: Sequence[Sample], modalities: Sequence[str],
                    shapes: dict[str, tuple[int, ...]] | None = None) -> dict:
    """Stack `samples` into a batch. With `shapes` (modality -> array shape, from the dataset spec), a
    modality that no object of the batch has still gets zero arrays and an all-False mask, so every
    encoder runs on every batch (DDP expects every parameter to take part in every step)."""
    batch: dict = {
        "id": [s.id for s in samples],
        "meta": [{**s.meta, **s.labels} for s in samples],
        "mask": {},
    }
    label_names = sorted({name for s in samples for name, v in s.labels.items() if not isinstance(v, str)})
    batch["labels"] = {name: torch.tensor([_numeric(s.labels.get(name, math.nan)) for s in samples],
                                          dtype=torch.float32) for name in label_names}
    for modality in modalities:
        present = [getattr(s, modality) for s in samples]
        batch["mask"][modality] = torch.tensor([p is not None for p in present], dtype=torch.bool)
        template = next((p for p in present if p is not None), None)
        if template is not None:
            shape = np.asarray(template["flux"]).shape
        elif shapes and modality in shapes:
            shape = tuple(shapes[modality])
        else:  # nobody in this batch has the modality and its shape is unknown: leave it out
            continue
        arrays = {}
        for name in MODALITY_ARRAYS[modality]:
            stacked = np.zeros((len(samples), *shape), dtype=np.float32)
            for row, item in enumerate(present):
                if item is None:
                    continue
                # An image stored without ivar is taken as unit weight; spectra and photometry always carry theirs.
                stacked[row] = item[name] if name in item else 1.0
            arrays[name] = torch.from_numpy(stacked)
        batch[modality] = arrays
    return batch

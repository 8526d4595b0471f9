"""The multi-modal model: one encoder and one projection head per modality, a shared logit scale.

    batch[modality] --encoder--> (B, output_dim) --head--> (B, embed_dim), L2-normalised

`forward` embeds every modality the model has an encoder for and the batch carries; rows whose
`batch["mask"][modality]` is False (objects lacking the modality, zero-filled) are computed all the
same, and the loss masks them; `embed` (inference) returns NaN for them. `logit_scale` is the log of the InfoNCE inverse temperature; the loss
exponentiates and clamps it.

The model describes itself with `to_config()` (JSON: encoder class paths and configs, head settings,
and the dataset spec and statistics it was normalised with) and is rebuilt with `from_config`, which
builds only classes under `astrofm.models` and restores the normalisation buffers' shapes, so a
safetensors state dict loads strictly (see astrofm.models.io).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from astrofm.data.format import MODALITIES
from astrofm.models.heads import ProjectionHead
from astrofm.models.registry import build_encoder, encoder_config


class MultiModalModel(nn.Module):
    def __init__(self, encoders: Mapping[str, nn.Module], embed_dim: int = 128,
                 logit_scale_init: float = math.log(1 / 0.07), head_hidden_dim: int | None = None):
        super().__init__()
        if not encoders:
            raise ValueError("MultiModalModel needs at least one encoder")
        unknown = sorted(set(encoders) - set(MODALITIES))
        if unknown:
            raise ValueError(f"encoders for unknown modalities {unknown}; modalities are {list(MODALITIES)}")
        self.embed_dim = int(embed_dim)
        self.head_hidden_dim = head_hidden_dim
        self.logit_scale_init = float(logit_scale_init)
        # Modalities in the canonical order, whatever order the dict came in.
        self.encoders = nn.ModuleDict({m: encoders[m] for m in MODALITIES if m in encoders})
        self.heads = nn.ModuleDict({m: ProjectionHead(encoder.output_dim, self.embed_dim, head_hidden_dim)
                                    for m, encoder in self.encoders.items()})
        self.logit_scale = nn.Parameter(torch.tensor(self.logit_scale_init))  # scalar, log of the scale
        self.spec: dict[str, Any] = {}  # manifest modalities[m] per modality, once set_statistics ran
        self.statistics: dict[str, Any] = {}  # manifest statistics[m] per modality, and "labels"

    @property
    def modalities(self) -> list[str]:
        return list(self.encoders)

    def set_statistics(self, manifest: Mapping[str, Any] | Any) -> None:
        """Normalise every encoder with a manifest (its to_dict(): keys "modalities" and "statistics")."""
        if hasattr(manifest, "to_dict"):
            manifest = manifest.to_dict()
        modalities, statistics = manifest.get("modalities", {}), manifest.get("statistics", {})
        for m in self.encoders:
            if m not in modalities:
                raise ValueError(f"the model has a {m} encoder but the dataset has no {m} "
                                 f"(it has {sorted(modalities)})")
            if m not in statistics:
                raise ValueError(f"the dataset's statistics lack {m} (they have {sorted(statistics)})")
        for m, encoder in self.encoders.items():
            encoder.set_statistics(modalities[m], statistics[m])
        self.spec = {m: copy.deepcopy(modalities[m]) for m in self.encoders}
        self.statistics = {m: copy.deepcopy(statistics[m]) for m in self.encoders}
        if "labels" in statistics:
            self.statistics["labels"] = copy.deepcopy(statistics["labels"])

    def encode(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Encoder features before the heads: modality -> (B, output_dim)."""
        return {m: encoder(batch[m]) for m, encoder in self.encoders.items() if batch.get(m) is not None}

    def forward(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """modality -> (B, embed_dim) L2-normalised, for every modality with an encoder and in the batch.

        Every row gets a vector, including objects without the modality (batch["mask"][m] False): collation
        fills those with zeros, and their vectors look valid but describe nothing. The losses mask them;
        `embed` sets them to NaN."""
        return {m: self.heads[m](features) for m, features in self.encode(batch).items()}

    @torch.no_grad()
    def embed(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """`forward` without gradients, for inference, with NaN rows for the objects that lack the modality
        (batch["mask"][m] False), so that a zero-filled input can never pass for an embedding. It does not
        switch modes: call `.eval()` first (load_model returns the model in eval mode)."""
        vectors = self.forward(batch)
        masks = batch.get("mask") or {}
        for modality, values in vectors.items():
            present = masks.get(modality)
            if present is not None and not bool(present.all()):
                vectors[modality] = values.masked_fill(~present.to(values.device, torch.bool)[:, None], float("nan"))
        return vectors

    def to_config(self) -> dict[str, Any]:
        """JSON-serialisable description; `from_config` rebuilds the same architecture from it."""
        return {
            "embed_dim": self.embed_dim,
            "head_hidden_dim": self.head_hidden_dim,
            "logit_scale_init": self.logit_scale_init,
            "encoders": {m: encoder_config(encoder) for m, encoder in self.encoders.items()},
            "spec": copy.deepcopy(self.spec),
            "statistics": copy.deepcopy(self.statistics),
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> MultiModalModel:
        """Rebuild from `to_config()` output (other top-level keys are ignored); weights are random.

        Only encoder classes under `astrofm.models` are built; any other class_path raises ValueError.
        """
        entries = config.get("encoders")
        if not isinstance(entries, Mapping) or not entries:
            raise ValueError("model config has no 'encoders' mapping (modality -> class_path, init_args)")
        encoders = {}
        for m, entry in entries.items():
            if not isinstance(entry, Mapping) or "class_path" not in entry:
                raise ValueError(f"model config: encoder {m!r} needs a 'class_path', got {entry!r}")
            encoders[m] = build_encoder(entry["class_path"], entry.get("init_args"))
        model = cls(encoders, embed_dim=config.get("embed_dim", 128),
                    logit_scale_init=config.get("logit_scale_init", math.log(1 / 0.07)),
                    head_hidden_dim=config.get("head_hidden_dim"))
        if config.get("spec"):
            model.set_statistics({"modalities": config["spec"], "statistics": config.get("statistics", {})})
        return model

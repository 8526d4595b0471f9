"""Objects having both the source and the target modality, per split: frozen source embeddings, raw
source arrays, target arrays, the target's own embedding (the label-consistency ceiling) and a label.

Photometry's flux_err is carried as ivar = 1 / flux_err^2 (0 where flux_err <= 0), so both target
modalities share one chi-square formula.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from astrofm.data.format import MODALITIES
from astrofm.data.loader import LoaderConfig, make_dataloader
from astrofm.data.reader import Dataset
from downstream.generation.progress import Progress

SPLITS = ("train", "val", "test")
TARGETS = ("spectrum", "photometry")


@dataclass
class Pairs:
    ids: list[str]
    embedding: np.ndarray  # (N, D) frozen source embeddings, L2-normalised
    source: dict[str, np.ndarray]  # flux, ivar of the source modality
    target: dict[str, np.ndarray]  # flux, ivar of the target modality
    target_embedding: np.ndarray  # (N, D) the true target's embedding
    label: np.ndarray  # (N,) the consistency label, NaN where absent

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, rows: np.ndarray) -> Pairs:
        return Pairs([self.ids[i] for i in rows], self.embedding[rows],
                     {k: v[rows] for k, v in self.source.items()}, {k: v[rows] for k, v in self.target.items()},
                     self.target_embedding[rows], self.label[rows])


def check_modalities(model, dataset: Dataset, source: str, target: str, model_path: str) -> None:
    """Clear errors for a source or target the model or the dataset lacks."""
    if source not in MODALITIES:
        raise ValueError(f"--source {source!r}: unknown modality; choose from {list(MODALITIES)}")
    if target not in TARGETS:
        raise ValueError(f"--target {target!r}: can generate {' or '.join(TARGETS)} only")
    if source == target:
        raise ValueError(f"--source and --target are both {source!r}; generation needs two modalities")
    for role, modality in (("source", source), ("target", target)):
        if modality not in model.modalities:
            raise ValueError(f"{model_path}: the model has no {modality} encoder (--{role}; it has "
                             f"{model.modalities})")
        if modality not in dataset.spec.modalities:
            raise ValueError(f"{dataset.path}/manifest.json: the dataset has no {modality} (--{role}; it has "
                             f"{dataset.spec.modalities})")


def _arrays(batch: dict, modality: str, keep: torch.Tensor) -> dict[str, np.ndarray]:
    data = batch[modality]
    flux = data["flux"][keep].numpy()
    if modality == "photometry":
        err = data["flux_err"][keep].numpy()
        ivar = np.where(err > 0, 1.0 / np.where(err > 0, err, 1.0) ** 2, 0.0).astype(np.float32)
    else:
        ivar = data["ivar"][keep].numpy()
    return {"flux": flux, "ivar": ivar}


@torch.no_grad()
def load_split(model, path: str, split: str, source: str, target: str, label: str, batch_size: int = 256,
               progress: bool = True) -> Pairs:
    """Read `split` once: embed the source and the target with the frozen model, keep objects having both."""
    config = LoaderConfig(path=str(path), split=split, batch_size=batch_size, num_workers=0, shuffle=False,
                          modalities=[m for m in MODALITIES if m in (source, target)])
    ids, embedding, target_embedding, labels = [], [], [], []
    sources: dict[str, list] = {"flux": [], "ivar": []}
    targets: dict[str, list] = {"flux": [], "ivar": []}
    seen, start, bar = 0, time.time(), Progress(progress)
    for batch in make_dataloader(config):
        seen += len(batch["id"])
        keep = batch["mask"][source] & batch["mask"][target]
        if keep.any():
            vectors = model.embed(batch)
            rows = keep.nonzero().squeeze(1).tolist()
            ids.extend(batch["id"][i] for i in rows)
            embedding.append(vectors[source][keep].float().numpy())
            target_embedding.append(vectors[target][keep].float().numpy())
            values = batch["labels"].get(label)
            labels.append(values[keep].double().numpy() if values is not None else np.full(len(rows), np.nan))
            for store, modality in ((sources, source), (targets, target)):
                for key, value in _arrays(batch, modality, keep).items():
                    store[key].append(value)
        bar.update(f"embedding {split}: {seen} objects read, {len(ids)} with {source} and {target} "
                   f"({time.time() - start:.0f} s)")
    bar.done()
    if len(ids) < 2:
        raise ValueError(f"{path}: the {split} split has {len(ids)} objects with both {source} and {target}; "
                         f"need at least 2")
    return Pairs(ids, np.concatenate(embedding), {k: np.concatenate(v) for k, v in sources.items()},
                 {k: np.concatenate(v) for k, v in targets.items()}, np.concatenate(target_embedding),
                 np.concatenate(labels))


def load_splits(model, path: str, source: str, target: str, label: str, batch_size: int = 256,
                progress: bool = True) -> dict[str, Pairs]:
    return {split: load_split(model, path, split, source, target, label, batch_size, progress) for split in SPLITS}

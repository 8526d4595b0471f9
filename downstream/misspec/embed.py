"""Datasets -> one embedding matrix per dataset for the chosen modality, with labels and pairing indices.

`concat` joins the model's modalities' embeddings for objects having them all (each part L2-normalised,
so every modality weighs the same). Labels are the numeric labels plus `early_type` (1 for galaxy_type
'early'), so that categorical labels take part in "what differs".
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CONCAT = "concat"
_INDEX = re.compile(r"-(\d+)$")


@dataclass
class Embedded:
    name: str
    path: str
    ids: np.ndarray  # (N,) object ids
    index: np.ndarray  # (N,) int64: the object index within its suite (pairs same-seed suites)
    split: np.ndarray  # (N,) split names
    x: np.ndarray  # (N, D) float32
    labels: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (N,) float64, NaN where absent

    def subset(self, rows: np.ndarray) -> Embedded:
        return Embedded(self.name, self.path, self.ids[rows], self.index[rows], self.split[rows], self.x[rows],
                        {k: v[rows] for k, v in self.labels.items()})

    def __len__(self) -> int:
        return len(self.ids)


def object_index(object_id: str) -> int:
    """The trailing integer of an id such as `sim_slight-s0-0000042` (astrofm.sims.generate.object_id): the
    same index in two same-seed suites is the same draw with other knobs. Ids without one get a stable hash,
    i.e. are treated as unpaired."""
    match = _INDEX.search(object_id)
    if match:
        return int(match.group(1))
    return (1 << 40) + zlib.crc32(object_id.encode("utf-8"))


def modality_parts(model_modalities: list[str], modality: str) -> list[str]:
    if modality == CONCAT:
        return list(model_modalities)
    if modality not in model_modalities:
        raise ValueError(f"--modality {modality!r}: the model has {list(model_modalities)} (or use {CONCAT!r})")
    return [modality]


def embed_dataset(model, path: str, name: str, modality: str, splits: tuple[str, ...], batch_size: int = 256,
                  progress: bool = True) -> Embedded:
    """Embed the objects of `splits` of the dataset at `path`; keep those having every part of `modality`."""
    import torch
    from tqdm import tqdm

    from astrofm.data.loader import LoaderConfig, make_dataloader
    from astrofm.data.reader import Dataset

    folder = Path(path)
    if not (folder / "manifest.json").is_file():
        raise FileNotFoundError(f"{name}: {path}: not a dataset folder (no manifest.json)")
    dataset = Dataset(folder)
    parts = modality_parts(list(model.modalities), modality)
    missing = [p for p in parts if p not in dataset.spec.modalities]
    if missing:
        raise ValueError(f"{name}: {path}: the dataset has no {missing} (it has {dataset.spec.modalities})")
    ids, split_names, vectors, keeps, meta_rows, label_batches = [], [], [], [], [], []
    model.eval()
    for split in splits:
        if not dataset.manifest.shards(split):
            continue
        config = LoaderConfig(path=str(folder), split=split, batch_size=batch_size, num_workers=0, shuffle=False,
                              modalities=parts)
        total = -(-dataset.manifest.count(split) // batch_size)
        for batch in tqdm(make_dataloader(config), total=total, desc=f"embed {name} {split}", unit="batch",
                          disable=not progress, leave=False):
            with torch.no_grad():
                out = model.embed(batch)
            keep = torch.stack([batch["mask"][p].bool() for p in parts]).all(dim=0)
            vectors.append(torch.cat([out[p].float() for p in parts], dim=1).numpy())
            keeps.append(keep.numpy())
            ids.extend(batch["id"])
            split_names.extend([split] * len(batch["id"]))
            meta_rows.extend(batch["meta"])
            label_batches.append((len(batch["id"]), batch["labels"]))
    if not ids:
        raise ValueError(f"{name}: {path}: no objects in splits {list(splits)}")
    keep = np.concatenate(keeps)
    if not keep.any():
        raise ValueError(f"{name}: {path}: no object has all of {parts}")
    label_names = sorted({n for _, labels in label_batches for n in labels})
    labels = {n: np.concatenate([labels[n].double().numpy() if n in labels else np.full(size, np.nan)
                                 for size, labels in label_batches]) for n in label_names}
    if any("galaxy_type" in m for m in meta_rows):
        labels["early_type"] = np.array([{"early": 1.0, "late": 0.0}.get(m.get("galaxy_type"), np.nan)
                                         for m in meta_rows])
    ids_array = np.array(ids, dtype=object)
    rows = np.flatnonzero(keep)
    return Embedded(name=name, path=str(path), ids=ids_array, index=np.array([object_index(i) for i in ids]),
                    split=np.array(split_names, dtype=object), x=np.concatenate(vectors).astype(np.float32),
                    labels=labels).subset(rows)

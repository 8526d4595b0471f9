"""One split's labelled objects of one modality, read once into memory as tensors.

Label subsets of a few thousand objects are small, so fine-tuning indexes tensors instead of streaming:
every epoch then sees exactly the subset, in a seeded order. Rows are sorted by object id, so which rows
a seed picks does not depend on how many loader workers read the shards.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from astrofm.data import Dataset
from astrofm.data.loader import LoaderConfig, make_dataloader


@dataclass
class Rows:
    ids: list[str]
    inputs: dict[str, torch.Tensor]  # the modality's arrays as the collated batch has them, (N, ...)
    y: np.ndarray  # (N,) float64: the target being fitted (finite), or NaN before `for_target` picks one
    labels: dict[str, np.ndarray] = field(default_factory=dict)  # every requested label, (N,), NaN where absent

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, index) -> Rows:
        index = np.asarray(index, dtype=np.int64)
        rows = torch.from_numpy(index)
        return Rows([self.ids[i] for i in index], {k: v[rows] for k, v in self.inputs.items()}, self.y[index],
                    {name: values[index] for name, values in self.labels.items()})

    def labelled(self, target: str) -> np.ndarray:
        """Row indices whose `target` is finite."""
        return np.flatnonzero(np.isfinite(self.labels[target]))

    def for_target(self, target: str) -> Rows:
        """The rows with a finite `target`, with y set to it."""
        rows = self.take(self.labelled(target))
        rows.y = rows.labels[target]
        return rows

    def batch(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: v[index] for k, v in self.inputs.items()}


def check_inputs(data: str, modality: str, targets: str | list[str], model_spec: dict | None = None) -> Dataset:
    """The dataset, after checking it has the modality, numeric `targets` labels and the model's shapes."""
    dataset = Dataset(data)
    manifest = dataset.manifest
    where = dataset.path / "manifest.json"
    if modality not in dataset.spec.modalities:
        raise ValueError(f"{where}: the dataset has no {modality} (it has {dataset.spec.modalities})")
    for target in [targets] if isinstance(targets, str) else targets:
        if target not in manifest.labels:
            raise ValueError(f"{where}: no label {target!r} (labels: {', '.join(sorted(manifest.labels)) or 'none'})")
        if manifest.labels[target] not in ("float", "int"):
            raise ValueError(f"{where}: label {target!r} is {manifest.labels[target]}, not numeric")
    if model_spec is not None:
        data_spec = manifest.to_dict()["modalities"][modality]
        if model_spec != data_spec:
            raise ValueError(f"{where}: the {modality} spec differs from the model's ({data_spec} vs {model_spec}); "
                             f"the encoder cannot read this dataset")
    return dataset


def load_split(data: str, modality: str, targets: list[str], split: str, num_workers: int = 1,
               batch_size: int = 256) -> Rows:
    """Objects of `split` having `modality` and at least one finite target, sorted by id; every target's
    values in `labels` (NaN where an object lacks it). Read once, whatever the number of targets."""
    shards = len(Dataset(data).shard_paths(split))
    config = LoaderConfig(path=data, split=split, batch_size=batch_size, shuffle=False, modalities=[modality],
                          num_workers=min(num_workers, shards), split_by_node=False)
    ids, labels, arrays = [], {t: [] for t in targets}, {}
    for batch in make_dataloader(config):
        n = len(batch["id"])
        values = {t: batch["labels"].get(t, torch.full((n,), float("nan"))).double() for t in targets}
        keep = batch["mask"][modality] & torch.stack([torch.isfinite(v) for v in values.values()]).any(0)
        if not keep.any():
            continue
        ids += [oid for oid, k in zip(batch["id"], keep.tolist(), strict=True) if k]
        for t in targets:
            labels[t].append(values[t][keep].numpy())
        for name, value in batch[modality].items():
            arrays.setdefault(name, []).append(value[keep])
    if not ids:
        return Rows([], {}, np.zeros(0), {t: np.zeros(0) for t in targets})
    order = np.argsort(np.array(ids), kind="stable")
    index = torch.from_numpy(order)
    columns = {t: np.concatenate(v)[order] for t, v in labels.items()}
    return Rows([ids[i] for i in order], {k: torch.cat(v)[index] for k, v in arrays.items()},
                np.full(len(ids), np.nan), columns)


def require_rows(n: int, data: str, modality: str, target: str, split: str) -> None:
    """Refuse a split with fewer than two objects for `target` (nothing to fit, stop on or score)."""
    if n < 2:
        raise ValueError(f"{data}: the {split} split has {n} {modality} objects with a finite {target!r}; "
                         f"need at least 2")


def load_rows(data: str, modality: str, target: str, split: str, num_workers: int = 1,
              batch_size: int = 256) -> Rows:
    """Objects of `split` having `modality` and a finite `target`, sorted by id."""
    rows = load_split(data, modality, [target], split, num_workers, batch_size).for_target(target)
    require_rows(len(rows), data, modality, target, split)
    return rows

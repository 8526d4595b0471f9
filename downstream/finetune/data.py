"""One split's labelled objects of one modality, read once into memory as tensors.

Label subsets of a few thousand objects are small, so fine-tuning indexes tensors instead of streaming:
every epoch then sees exactly the subset, in a seeded order. Rows are sorted by object id, so which rows
a seed picks does not depend on how many loader workers read the shards.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from astrofm.data import Dataset
from astrofm.data.loader import LoaderConfig, make_dataloader


@dataclass
class Rows:
    ids: list[str]
    inputs: dict[str, torch.Tensor]  # the modality's arrays as the collated batch has them, (N, ...)
    y: np.ndarray  # (N,) float64, finite

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, index) -> Rows:
        index = np.asarray(index, dtype=np.int64)
        rows = torch.from_numpy(index)
        return Rows([self.ids[i] for i in index], {k: v[rows] for k, v in self.inputs.items()}, self.y[index])

    def batch(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: v[index] for k, v in self.inputs.items()}


def check_inputs(data: str, modality: str, target: str, model_spec: dict | None = None) -> Dataset:
    """The dataset, after checking it has the modality, a numeric `target` label and the model's shapes."""
    dataset = Dataset(data)
    manifest = dataset.manifest
    where = dataset.path / "manifest.json"
    if modality not in dataset.spec.modalities:
        raise ValueError(f"{where}: the dataset has no {modality} (it has {dataset.spec.modalities})")
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


def load_rows(data: str, modality: str, target: str, split: str, num_workers: int = 1,
              batch_size: int = 256) -> Rows:
    """Objects of `split` having `modality` and a finite `target`, sorted by id."""
    shards = len(Dataset(data).shard_paths(split))
    config = LoaderConfig(path=data, split=split, batch_size=batch_size, shuffle=False, modalities=[modality],
                          num_workers=min(num_workers, shards), split_by_node=False)
    ids, ys, arrays = [], [], {}
    for batch in make_dataloader(config):
        n = len(batch["id"])
        label = batch["labels"].get(target, torch.full((n,), float("nan")))
        keep = batch["mask"][modality] & torch.isfinite(label)
        if not keep.any():
            continue
        ids += [oid for oid, k in zip(batch["id"], keep.tolist(), strict=True) if k]
        ys.append(label[keep].double().numpy())
        for name, value in batch[modality].items():
            arrays.setdefault(name, []).append(value[keep])
    if len(ids) < 2:
        raise ValueError(f"{data}: the {split} split has {len(ids)} {modality} objects with a finite {target!r}; "
                         f"need at least 2")
    order = np.argsort(np.array(ids), kind="stable")
    index = torch.from_numpy(order)
    return Rows([ids[i] for i in order], {k: torch.cat(v)[index] for k, v in arrays.items()},
                np.concatenate(ys)[order])

"""Frozen embeddings of a dataset split: a loaded model run over the shard loader, in batches."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from astrofm.data.loader import LoaderConfig, make_dataloader


@dataclass
class SplitEmbeddings:
    ids: list[str] = field(default_factory=list)
    embeddings: dict[str, torch.Tensor] = field(default_factory=dict)  # modality -> (N, D), L2-normalised
    masks: dict[str, torch.Tensor] = field(default_factory=dict)  # modality -> (N,) bool: object has it
    labels: dict[str, torch.Tensor] = field(default_factory=dict)  # numeric label -> (N,), NaN where absent


@torch.no_grad()
def embed_split(model, path: str, split: str = "test", batch_size: int = 256, num_workers: int = 0,
                max_objects: int | None = None) -> SplitEmbeddings:
    """Embed every object of `split` (in shard order) with `model` (a loaded MultiModalModel)."""
    model.eval()
    config = LoaderConfig(path=str(path), split=split, batch_size=batch_size, num_workers=num_workers,
                          shuffle=False, modalities=list(model.modalities))
    ids: list[str] = []
    embeddings: dict[str, list[torch.Tensor]] = {}
    masks: dict[str, list[torch.Tensor]] = {}
    label_batches: list[tuple[int, dict[str, torch.Tensor]]] = []
    for batch in make_dataloader(config):
        ids.extend(batch["id"])
        for modality, values in model.embed(batch).items():
            embeddings.setdefault(modality, []).append(values.float())
            masks.setdefault(modality, []).append(batch["mask"][modality])
        label_batches.append((len(batch["id"]), batch["labels"]))
        if max_objects is not None and len(ids) >= max_objects:
            break
    n = len(ids) if max_objects is None else min(len(ids), max_objects)
    # A label that some batch lacks entirely is NaN for that batch's objects.
    names = sorted({name for _, labels in label_batches for name in labels})
    labels = {name: torch.cat([labels.get(name, torch.full((size,), float("nan"))) for size, labels in label_batches])[:n]
              for name in names}
    return SplitEmbeddings(ids=ids[:n], embeddings={m: torch.cat(v)[:n] for m, v in embeddings.items()},
                           masks={m: torch.cat(v)[:n] for m, v in masks.items()}, labels=labels)

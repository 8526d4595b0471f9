"""Lightning predict over a dataset: a stream of batches split over ranks, a module wrapping the loaded
model, and a writer callback whose ranks each write part files that rank 0 merges.

Ranks get contiguous, equal slices of the objects of the requested splits (in dataset order: split,
shard, position), so every rank has work whenever there are at least as many objects as ranks, and
each row carries its global index, by which the merge restores dataset order whatever the number of
ranks and workers.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pyarrow.parquet as pq
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from astrofm.data.collate import collate_samples
from astrofm.data.format import MODALITIES, decode_sample
from astrofm.data.reader import Dataset, iter_shard_members
from astrofm.embedstore.store import merge_parts, parquet_name, rows_table


def _slice(total: int, part: int, parts: int) -> tuple[int, int]:
    return total * part // parts, total * (part + 1) // parts


class EmbedStream(IterableDataset):
    """Collated batches of one rank's slice of the objects; each batch also holds "split" (list of str)
    and "index" (int64 tensor, the object's position in the whole pass)."""

    def __init__(self, data: str, splits: list[str], modalities: list[str], batch_size: int):
        dataset = Dataset(data)
        self.shards = [(split, str(dataset.path / shard.path), shard.count)
                       for split in splits for shard in dataset.manifest.shards(split)]
        self.total = sum(count for _, _, count in self.shards)
        self.modalities = list(modalities)
        self.shapes = {m: dataset.spec.expected_shape(m) for m in self.modalities}
        self.batch_size = batch_size
        self.rank, self.world_size, self.num_workers = 0, 1, 0

    def set_partition(self, rank: int, world_size: int, num_workers: int) -> None:
        self.rank, self.world_size, self.num_workers = rank, world_size, num_workers

    def _range(self, worker: int, workers: int) -> tuple[int, int]:
        start, stop = _slice(self.total, self.rank, self.world_size)
        offset, end = _slice(stop - start, worker, workers)
        return start + offset, start + end

    def __len__(self) -> int:
        """Batches this rank yields (summed over its workers): what the progress bar counts to."""
        workers = max(self.num_workers, 1)
        return sum(math.ceil((stop - start) / self.batch_size)
                   for start, stop in (self._range(w, workers) for w in range(workers)))

    def _collate(self, rows: list[tuple[int, str, Any]]) -> dict:
        batch = collate_samples([sample for _, _, sample in rows], self.modalities, self.shapes)
        batch["split"] = [split for _, split, _ in rows]
        batch["index"] = torch.tensor([index for index, _, _ in rows], dtype=torch.int64)
        return batch

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        start, stop = self._range(*((info.id, info.num_workers) if info else (0, 1)))
        drop = [m for m in MODALITIES if m not in self.modalities]
        index, rows = 0, []
        for split, path, count in self.shards:
            if index >= stop:
                break
            if index + count <= start:  # the whole shard lies before this slice: not even opened
                index += count
                continue
            for members in iter_shard_members(path):
                if start <= index < stop:
                    sample = decode_sample(members, source=path)
                    for modality in drop:
                        setattr(sample, modality, None)
                    rows.append((index, split, sample))
                    if len(rows) == self.batch_size:
                        yield self._collate(rows)
                        rows = []
                index += 1
                if index >= stop:
                    break
        if rows:
            yield self._collate(rows)


class EmbedModule(pl.LightningModule):
    """The loaded model in Lightning's predict loop: batch -> embeddings and masks as numpy."""

    def __init__(self, model: torch.nn.Module, stream: EmbedStream, num_workers: int = 0):
        super().__init__()
        self.model = model
        self.stream = stream
        self.num_workers = num_workers

    def predict_dataloader(self) -> DataLoader:
        self.stream.set_partition(self.trainer.global_rank, self.trainer.world_size, self.num_workers)
        return DataLoader(self.stream, batch_size=None, num_workers=self.num_workers)

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        embeddings = self.model.embed(batch)  # modality -> (B, D)
        return {"embeddings": {m: v.float().cpu().numpy() for m, v in embeddings.items()},
                "mask": {m: batch["mask"][m].cpu().numpy() for m in embeddings}}


class _Buffer:
    def __init__(self):
        self.ids: list[str] = []
        self.splits: list[str] = []
        self.order: list[np.ndarray] = []
        self.vectors: list[np.ndarray] = []
        self.fields: list[dict] = []

    def __len__(self) -> int:
        return len(self.ids)


class PartWriter(BasePredictionWriter):
    """Each rank buffers its rows per modality and writes part files of up to `flush_rows` rows into
    STAGING/parts/rank-R/; at the end of predict rank 0 merges them into STAGING/{modality}.parquet,
    calls `finish(staging, tables)` (which writes the manifest and moves the folder into place).

    STAGING is made by rank 0 beside the output folder and broadcast to the other ranks."""

    def __init__(self, out: Path, modalities: list[str], dimension: int, first_columns: list[str],
                 finish: Callable[[Path, dict], Any], flush_rows: int = 65536):
        super().__init__(write_interval="batch")
        self.out, self.modalities, self.dimension = Path(out), list(modalities), dimension
        self.first_columns, self.finish, self.flush_rows = list(first_columns), finish, flush_rows
        self.staging: Path | None = None
        self.result: Any = None
        self._buffers = {m: _Buffer() for m in self.modalities}
        self._written = {m: 0 for m in self.modalities}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        staging = None
        if trainer.global_rank == 0:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            staging = tempfile.mkdtemp(prefix=f".{self.out.name}.", suffix=".tmp", dir=self.out.parent)
        self.staging = Path(trainer.strategy.broadcast(staging, src=0))
        self._parts(trainer.global_rank).mkdir(parents=True, exist_ok=True)

    def _parts(self, rank: int) -> Path:
        return self.staging / "parts" / f"rank-{rank:03d}"

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx=0) -> None:
        order = batch["index"].cpu().numpy()
        for modality, vectors in prediction["embeddings"].items():
            keep = np.flatnonzero(prediction["mask"][modality])
            if keep.size == 0:
                continue
            buffer = self._buffers[modality]
            buffer.ids.extend(batch["id"][i] for i in keep)
            buffer.splits.extend(batch["split"][i] for i in keep)
            buffer.fields.extend(batch["meta"][i] for i in keep)
            buffer.order.append(order[keep])
            buffer.vectors.append(vectors[keep])
            if len(buffer) >= self.flush_rows:
                self._flush(trainer.global_rank, modality)

    def _flush(self, rank: int, modality: str) -> None:
        buffer = self._buffers[modality]
        if not len(buffer):
            return
        table = rows_table(buffer.ids, buffer.splits, np.concatenate(buffer.order),
                           np.concatenate(buffer.vectors), buffer.fields)
        pq.write_table(table, self._parts(rank) / f"{modality}-{self._written[modality]:05d}.parquet")
        self._written[modality] += 1
        self._buffers[modality] = _Buffer()

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for modality in self.modalities:
            self._flush(trainer.global_rank, modality)
        trainer.strategy.barrier("astrofm-embed-parts")
        if trainer.global_rank != 0:
            return
        tables = {}
        for modality in self.modalities:
            parts = sorted((self.staging / "parts").glob(f"rank-*/{modality}-*.parquet"))
            tables[modality] = merge_parts(parts, self.staging / parquet_name(modality), self.dimension,
                                           self.first_columns)
        shutil.rmtree(self.staging / "parts")
        self.result = self.finish(self.staging, tables)

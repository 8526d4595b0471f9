"""The streaming loader: one explicit webdataset pipeline over a dataset split.

Stages, in order (as in open_clip's webdataset pipeline):
    1. shard list           the split's shards; reshuffled per epoch from (seed, epoch), or drawn with
                            replacement in resampled mode
    2. split by node        rank r keeps shards r, r + world, ...
    3. split by worker      DataLoader worker w keeps every num_workers-th of those
    4. read                 tar members grouped into raw samples (webdataset)
    5. decode               npz and json members into `Sample`s; unrequested modalities dropped
    6. shuffle              a sample buffer seeded from (seed, epoch, rank, worker)
    7. batch                `collate_samples`, with one mask per modality
    8. epoch size           optional: each worker stops after a fixed number of batches

Without resampling and without an epoch size, one epoch over all ranks and workers visits every object
of the split exactly once. Same seed and epoch give the same order; call `set_epoch` every epoch.
A persistent resampled stream (`persistent=True`) is made once per reader, seeded from the epoch then,
and each later epoch takes the next batches of it.
"""

from __future__ import annotations

import itertools
import math
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from astrofm.data.collate import collate_samples
from astrofm.data.format import MODALITIES, decode_sample
from astrofm.data.reader import Dataset


@dataclass
class LoaderConfig:
    path: str  # dataset folder
    split: str = "train"
    batch_size: int = 64
    num_workers: int = 2  # DataLoader worker processes per rank
    shuffle: bool = True  # reshuffle shards every epoch and shuffle samples through a buffer
    shuffle_buffer: int = 1000  # samples held by the shuffle buffer (memory: buffer x sample size)
    seed: int = 0
    resampled: bool = False  # draw shards with replacement, endlessly; requires samples_per_epoch
    # Resampled mode: each reader keeps one endless stream across epochs (with DataLoader
    # persistent_workers), so an epoch neither restarts workers nor refills shuffle buffers.
    persistent: bool = False
    samples_per_epoch: int | None = None  # epoch size summed over ranks; None: one pass over the split
    modalities: list[str] | None = None  # keep only these modalities; None: all the dataset has
    partial_batches: bool = True  # yield the last, smaller batch of each worker
    split_by_node: bool = True  # False: every rank reads the whole split (small evaluation splits)
    max_objects: int | None = None  # read only the first shards (manifest order) that hold this many; None: all
    rank: int | None = None  # None: from torch.distributed, else $RANK, else 0
    world_size: int | None = None  # None: from torch.distributed, else $WORLD_SIZE, else 1

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.resampled and not self.samples_per_epoch:
            raise ValueError("resampled mode draws shards endlessly: set samples_per_epoch")
        if self.persistent and not self.resampled:
            raise ValueError("persistent streams need resampled mode (an unresampled epoch is one pass "
                             "over the split, which must restart)")
        if self.max_objects is not None and self.max_objects < 1:
            raise ValueError(f"max_objects must be at least 1 (or None for the whole split), got {self.max_objects}")
        unknown = set(self.modalities or []) - set(MODALITIES)
        if unknown:
            raise ValueError(f"unknown modalities {sorted(unknown)}; choose from {MODALITIES}")


def distributed_rank_and_size(config: LoaderConfig) -> tuple[int, int]:
    if not config.split_by_node:
        return 0, 1
    if config.rank is not None and config.world_size is not None:
        return config.rank, config.world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _worker() -> tuple[int, int]:
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


def first_shards(shards: list, max_objects: int | None) -> list:
    """The shortest prefix of `shards` (manifest ShardInfo, in order) holding at least max_objects objects;
    all of them when max_objects is None. Validation reads only its retrieval pool this way."""
    if max_objects is None:
        return list(shards)
    kept, total = [], 0
    for shard in shards:
        if total >= max_objects:
            break
        kept.append(shard)
        total += shard.count
    return kept


def check_shard_count(n_shards: int, world_size: int, num_workers: int, split: str, path: str) -> None:
    consumers = world_size * max(num_workers, 1)
    if n_shards < consumers:
        raise ValueError(
            f"{path}: split {split!r} has {n_shards} shards but {world_size} ranks x {max(num_workers, 1)} "
            f"workers = {consumers} readers; each reader needs at least one shard. Use fewer workers, "
            f"resampled mode, or rewrite the dataset with a smaller --shard-size.")


class ShardStream(IterableDataset):
    """An IterableDataset of collated batches; wrap it in `DataLoader(stream, batch_size=None)`."""

    def __init__(self, config: LoaderConfig):
        self.config = config
        dataset = Dataset(config.path)
        self.shards = [str(dataset.path / shard.path)
                       for shard in first_shards(dataset.manifest.shards(config.split), config.max_objects)]
        if not self.shards:
            raise ValueError(f"{config.path}: split {config.split!r} has no shards")
        available = dataset.spec.modalities
        missing = set(config.modalities or []) - set(available)
        if missing:
            raise ValueError(f"{config.path}: dataset has no {sorted(missing)} (it has {available})")
        self.modalities = list(config.modalities or available)
        self.shapes = {m: dataset.spec.expected_shape(m) for m in self.modalities}
        self.epoch = 0
        self._endless: Iterator[dict] | None = None  # persistent mode: this process's stream, made once

    def __getstate__(self) -> dict:
        # A running generator cannot be pickled, and a new worker must start its own stream anyway.
        return {**self.__dict__, "_endless": None}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    # Stages 1-3 -------------------------------------------------------------------------------
    def _shard_urls(self) -> Iterator[dict]:
        config = self.config
        rank, world = distributed_rank_and_size(config)
        worker, workers = _worker()
        if config.resampled:
            rng = random.Random(f"{config.seed}/{self.epoch}/{rank}/{worker}")
            while True:
                yield {"url": rng.choice(self.shards)}
        check_shard_count(len(self.shards), world, workers, config.split, config.path)
        shards = list(self.shards)
        if config.shuffle:
            random.Random(f"{config.seed}/{self.epoch}").shuffle(shards)  # same order on every rank
        for url in shards[rank::world][worker::workers]:
            yield {"url": url}

    # Stage 5 ----------------------------------------------------------------------------------
    def _decode(self, raw_samples: Iterator[dict]) -> Iterator:
        keep = set(self.modalities)
        for raw in raw_samples:
            sample = decode_sample(raw, source=raw.get("__url__"))
            for modality in MODALITIES:
                if modality not in keep:
                    setattr(sample, modality, None)
            if sample.modalities:
                yield sample

    # Stage 6 ----------------------------------------------------------------------------------
    def _shuffle(self, samples: Iterator) -> Iterator:
        if not self.config.shuffle:
            yield from samples
            return
        rank, _ = distributed_rank_and_size(self.config)
        worker, _ = _worker()
        rng = random.Random(f"{self.config.seed}/{self.epoch}/{rank}/{worker}/samples")
        buffer = self.config.shuffle_buffer
        yield from wds.filters._shuffle(samples, bufsize=buffer, initial=buffer, rng=rng)

    def batches_per_worker(self, num_workers: int) -> int | None:
        """Batches each worker yields when the epoch is sized, else None (one natural pass)."""
        if not self.config.samples_per_epoch:
            return None
        _, world = distributed_rank_and_size(self.config)
        readers = world * max(num_workers, 1)
        return math.ceil(self.config.samples_per_epoch / (readers * self.config.batch_size))

    def __len__(self) -> int:
        """Batches per rank in a sized epoch (what progress bars and schedulers need)."""
        per_worker = self.batches_per_worker(self.config.num_workers)
        if per_worker is None:
            raise TypeError("an unsized pass has no length: set samples_per_epoch")
        return per_worker * max(self.config.num_workers, 1)

    def __iter__(self) -> Iterator[dict]:
        _, workers = _worker()
        limit = self.batches_per_worker(workers)
        if self.config.persistent:
            # Seeded by the epoch of the first call; later epochs continue the same random stream, so
            # none repeats another even though set_epoch no longer reaches persistent workers.
            if self._endless is None:
                self._endless = iter(self._pipeline())
            return itertools.islice(self._endless, limit)
        pipeline = self._pipeline()
        if limit is not None:
            pipeline = pipeline.with_epoch(limit)
        return iter(pipeline)

    def _pipeline(self) -> wds.DataPipeline:
        return wds.DataPipeline(
            self._shard_urls,
            wds.tarfile_to_samples(),
            self._decode,
            self._shuffle,
            wds.batched(self.config.batch_size, partial=self.config.partial_batches,
                        collation_fn=partial(collate_samples, modalities=self.modalities, shapes=self.shapes)),
        )


def make_dataloader(config: LoaderConfig, epoch: int = 0) -> DataLoader:
    """A DataLoader over `config.split`; checks up front that every reader will get a shard."""
    stream = ShardStream(config)
    stream.set_epoch(epoch)
    if not config.resampled:
        _, world = distributed_rank_and_size(config)
        check_shard_count(len(stream.shards), world, config.num_workers, config.split, config.path)
    return DataLoader(stream, batch_size=None, num_workers=config.num_workers,
                      persistent_workers=config.persistent and config.num_workers > 0, pin_memory=False)

"""The LightningDataModule over astrofm's shard loader."""

from __future__ import annotations

import lightning.pytorch as pl
from torch.utils.data import DataLoader

from astrofm.data.loader import LoaderConfig, ShardStream, first_shards
from astrofm.data.manifest import Manifest, load_manifest


class ShardDataModule(pl.LightningDataModule):
    """Streams a dataset folder: resampled, epoch-sized training (equal batch counts on every rank, so
    DDP never waits on a rank that ran out) and a fixed, unshuffled validation pass that every rank
    reads whole (retrieval metrics need the full pool, and no gather is needed). Validation reads only
    the first val shards that hold `val_max_objects` objects: the retrieval pool, and its loss."""

    def __init__(
        self,
        path: str,
        batch_size: int = 64,
        num_workers: int = 2,
        modalities: list[str] | None = None,
        shuffle_buffer: int = 1000,
        seed: int = 0,
        resampled: bool = True,
        persistent_stream: bool = True,
        samples_per_epoch: int | None = None,
        val_split: str = "val",
        val_batch_size: int = 256,
        val_max_objects: int = 1000,
    ):
        """
        Args:
            path: dataset folder (manifest.json + shards/).
            batch_size: objects per batch on each rank.
            num_workers: loader worker processes per rank.
            modalities: modalities to load (default: all the dataset has).
            shuffle_buffer: samples held by each worker's shuffle buffer.
            seed: seed of shard and sample shuffling.
            resampled: draw training shards with replacement (equal work per rank under DDP).
            persistent_stream: resampled mode: keep the loader workers and each one's stream across
                epochs, so a new epoch neither restarts workers nor refills shuffle buffers (short GPU
                epochs spent seconds on that).
            samples_per_epoch: objects per epoch summed over ranks (default: the train split's size).
            val_split: split used for validation.
            val_batch_size: objects per validation batch.
            val_max_objects: retrieval pool size for validation metrics (the first N val objects);
                validation reads the first val shards holding that many, not the whole split.
        """
        super().__init__()
        self.save_hyperparameters()
        self.path = path
        self.manifest: Manifest = load_manifest(path)
        self.train_stream: ShardStream | None = None

    def _world_size(self) -> int:
        return self.trainer.world_size if self.trainer is not None else 1

    def set_epoch(self, epoch: int) -> None:
        if self.train_stream is not None:
            self.train_stream.set_epoch(epoch)

    def train_dataloader(self) -> DataLoader:
        h = self.hparams
        config = LoaderConfig(
            path=self.path, split="train", batch_size=h.batch_size, num_workers=h.num_workers,
            shuffle=True, shuffle_buffer=h.shuffle_buffer, seed=h.seed, resampled=h.resampled,
            samples_per_epoch=h.samples_per_epoch or self.manifest.count("train"), modalities=h.modalities,
            partial_batches=False, persistent=h.resampled and h.persistent_stream)
        self.train_stream = ShardStream(config)
        if self.trainer is not None:  # also right when resuming mid-run from a checkpoint
            self.train_stream.set_epoch(self.trainer.current_epoch)
        return DataLoader(self.train_stream, batch_size=None, num_workers=h.num_workers,
                          persistent_workers=config.persistent and h.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        h = self.hparams
        shards = len(first_shards(self.manifest.shards(h.val_split), h.val_max_objects))
        if shards == 0:
            raise ValueError(f"{self.path}: the {h.val_split!r} split is empty; validation needs objects")
        workers = min(h.num_workers, shards)
        config = LoaderConfig(
            path=self.path, split=h.val_split, batch_size=h.val_batch_size, num_workers=workers, shuffle=False,
            modalities=h.modalities, split_by_node=False, samples_per_epoch=None, max_objects=h.val_max_objects)
        return DataLoader(ShardStream(config), batch_size=None, num_workers=workers)

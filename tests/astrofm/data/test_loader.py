"""The streaming loader's invariants: exact coverage across ranks and workers, seeded order, masks."""

from __future__ import annotations

import collections

import pytest
import torch
from torch.utils.data import DataLoader

from astrofm.data.loader import LoaderConfig, ShardStream, make_dataloader


def _ids(config: LoaderConfig, epoch: int = 0) -> list[str]:
    return [i for batch in make_dataloader(config, epoch=epoch) for i in batch["id"]]


def test_two_ranks_two_workers_visit_every_object_exactly_once(make_dataset):
    path = make_dataset(n=48, shard_size=4, all_train=True)  # 12 shards for 4 readers
    seen = collections.Counter()
    per_rank = []
    for rank in range(2):
        config = LoaderConfig(path=str(path), batch_size=5, num_workers=2, rank=rank, world_size=2, seed=3)
        ids = _ids(config)
        per_rank.append(set(ids))
        seen.update(ids)
    assert len(seen) == 48 and set(seen.values()) == {1}
    assert per_rank[0].isdisjoint(per_rank[1]) and per_rank[0] and per_rank[1]


def test_same_seed_and_epoch_give_the_same_order_and_another_epoch_another(make_dataset):
    path = make_dataset(n=40, shard_size=5, all_train=True)
    config = LoaderConfig(path=str(path), batch_size=4, num_workers=2, seed=7, shuffle_buffer=16)
    first, again, next_epoch = _ids(config, 0), _ids(config, 0), _ids(config, 1)
    assert first == again
    assert first != next_epoch and sorted(first) == sorted(next_epoch)
    other_seed = _ids(LoaderConfig(path=str(path), batch_size=4, num_workers=2, seed=8, shuffle_buffer=16), 0)
    assert other_seed != first


def test_unshuffled_single_reader_reads_in_shard_order(make_dataset):
    path = make_dataset(n=12, shard_size=4, all_train=True)
    ids = _ids(LoaderConfig(path=str(path), batch_size=5, num_workers=0, shuffle=False))
    assert ids == [f"obj-{i:05d}" for i in range(12)]


def test_fewer_shards_than_ranks_times_workers_is_a_clear_error(make_dataset):
    path = make_dataset(n=12, shard_size=4, all_train=True)  # 3 shards
    config = LoaderConfig(path=str(path), num_workers=2, rank=0, world_size=2)
    with pytest.raises(ValueError, match=r"3 shards but 2 ranks x 2 workers = 4 readers"):
        make_dataloader(config)


def test_collated_batches_carry_masks_and_zero_filled_missing_modalities(make_dataset):
    path = make_dataset(n=12, shard_size=12, all_train=True, missing_every=3)
    batch = next(iter(make_dataloader(LoaderConfig(path=str(path), batch_size=12, num_workers=0,
                                                   shuffle=False))))
    mask = batch["mask"]["spectrum"]
    assert mask.tolist() == [i % 3 != 0 for i in range(12)]
    assert batch["spectrum"]["flux"].shape == (12, 100)
    assert torch.all(batch["spectrum"]["flux"][~mask] == 0) and torch.all(batch["spectrum"]["ivar"][~mask] == 0)
    assert batch["image"]["flux"].shape == (12, 3, 8, 8) and batch["mask"]["image"].all()
    assert batch["photometry"]["flux_err"].shape == (12, 2)
    assert batch["labels"]["index"].tolist() == list(range(12))
    assert "kind" not in batch["labels"] and batch["meta"][0]["kind"] == "synthetic"


def test_modality_selection_drops_the_others(make_dataset):
    path = make_dataset(n=8, shard_size=8, all_train=True)
    batch = next(iter(make_dataloader(LoaderConfig(path=str(path), batch_size=8, num_workers=0,
                                                   modalities=["image"]))))
    assert set(batch["mask"]) == {"image"} and "spectrum" not in batch


def test_resampled_mode_is_endless_but_sized_by_samples_per_epoch(make_dataset):
    path = make_dataset(n=12, shard_size=4, all_train=True)
    config = LoaderConfig(path=str(path), batch_size=4, num_workers=2, resampled=True, samples_per_epoch=40)
    batches = list(make_dataloader(config))
    assert len(batches) == 2 * 5  # ceil(40 / (1 rank x 2 workers x 4)) = 5 batches per worker
    assert all(len(b["id"]) == 4 for b in batches)


def test_epoch_size_caps_a_natural_pass(make_dataset):
    path = make_dataset(n=40, shard_size=5, all_train=True)
    stream = ShardStream(LoaderConfig(path=str(path), batch_size=4, num_workers=0, samples_per_epoch=12))
    assert len(list(DataLoader(stream, batch_size=None))) == 3


def test_config_refuses_resampling_without_epoch_size_and_unknown_modalities(make_dataset):
    with pytest.raises(ValueError, match="samples_per_epoch"):
        LoaderConfig(path="x", resampled=True)
    with pytest.raises(ValueError, match="unknown modalities"):
        LoaderConfig(path="x", modalities=["radio"])


def test_max_objects_reads_only_the_first_shards_that_hold_that_many(make_dataset):
    path = make_dataset(n=12, shard_size=4, all_train=True)  # 3 shards of 4
    read = {limit: _ids(LoaderConfig(path=str(path), batch_size=5, num_workers=0, shuffle=False, max_objects=limit))
            for limit in (1, 4, 5, 100)}
    assert read[1] == read[4] == [f"obj-{i:05d}" for i in range(4)]  # one shard holds them
    assert read[5] == [f"obj-{i:05d}" for i in range(8)]  # the pool is whole shards
    assert read[100] == [f"obj-{i:05d}" for i in range(12)]
    with pytest.raises(ValueError, match="max_objects must be at least 1"):
        LoaderConfig(path=str(path), max_objects=0)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_persistent_stream_keeps_its_workers_and_continues_across_epochs(make_dataset, workers):
    path = make_dataset(n=48, shard_size=4, all_train=True)

    def epochs(persistent: bool) -> tuple[list[list[str]], list[set[int]]]:
        config = LoaderConfig(path=str(path), batch_size=4, num_workers=workers, resampled=True,
                              samples_per_epoch=24, shuffle_buffer=8, seed=5, persistent=persistent)
        loader = make_dataloader(config)  # set_epoch is not called: persistent workers would not see it
        ids, pids = [], []
        for _ in range(3):
            batches = list(loader)
            ids.append([i for batch in batches for i in batch["id"]])
            iterator = getattr(loader, "_iterator", None)  # torch keeps it only for persistent workers
            pids.append({w.pid for w in iterator._workers} if iterator is not None else set())
        return ids, pids

    ids, pids = epochs(persistent=True)
    assert all(len(epoch) == 24 for epoch in ids)  # each epoch still sized by samples_per_epoch
    assert ids[0] != ids[1] != ids[2]  # the stream continues rather than restarting
    if workers:
        assert pids[0] == pids[1] == pids[2] and len(pids[0]) == workers  # the same processes every epoch
    restarted, _ = epochs(persistent=False)
    assert restarted[0] == restarted[1]  # without it, an epoch whose number nobody sets repeats the last


def test_a_persistent_stream_needs_resampled_mode():
    with pytest.raises(ValueError, match="persistent streams need resampled mode"):
        LoaderConfig(path="x", persistent=True)

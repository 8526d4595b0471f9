"""Writing a dataset folder atomically.

Everything is written into a hidden staging folder beside the destination and renamed into place
only when the manifest is complete, so a failed ingest or generation leaves no partial dataset and no
half-written shard; each shard is itself written under a temporary name first.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from astrofm.atomic import replace_folder
from astrofm.data.format import (
    DEFAULT_SPLIT_FRACTIONS,
    OPTIONAL_ARRAYS,
    SPLITS,
    DatasetSpec,
    DataValidationError,
    Sample,
    assign_split,
    encode_sample,
    sample_key,
    shard_name,
    validate_sample,
)
from astrofm.data.manifest import MANIFEST_NAME, Manifest, ShardInfo, sha256_file, write_json_atomic
from astrofm.data.statistics import StatisticsAccumulator


@dataclass
class WriterConfig:
    shard_size: int = 1000  # objects per shard; a few hundred MB per shard suits cluster file systems
    split_fractions: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_SPLIT_FRACTIONS))
    overwrite: bool = False  # replace an existing dataset folder (only once the new one is complete)

    def __post_init__(self):
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be at least 1, got {self.shard_size}")
        if set(self.split_fractions) - set(SPLITS) or abs(sum(self.split_fractions.values()) - 1) > 1e-9:
            raise ValueError(f"split_fractions must map {SPLITS} to fractions summing to 1, "
                             f"got {self.split_fractions}")


def _optional_arrays_held(sample: Sample) -> list[str]:
    """The optional arrays the sample holds, as "modality.array" (e.g. "image.ivar")."""
    return [f"{modality}.{name}" for modality in sample.modalities for name in OPTIONAL_ARRAYS[modality]
            if name in getattr(sample, modality)]


class _SplitShards:
    """The open shard of one split; rolls over every `shard_size` objects."""

    def __init__(self, folder: Path, split: str, shard_size: int):
        self.folder, self.split, self.shard_size = folder, split, shard_size
        self.done: list[ShardInfo] = []
        self.modality_counts: dict[str, int] = {}
        self.optional_array_counts: dict[str, int] = {}  # "image.ivar" -> objects holding it
        self._writer = None  # webdataset.TarWriter of the open shard
        self._handle = None
        self._count = 0

    def _tmp_path(self) -> Path:
        return self.folder / (shard_name(self.split, len(self.done)) + ".tmp")

    def write(self, members: dict[str, Any], modalities: list[str], optional_arrays: list[str]) -> None:
        if self._writer is None:
            import webdataset as wds  # here, not at module level: it imports torch, which `data mock` workers skip

            self._handle = open(self._tmp_path(), "wb")
            # mtime 0 and fixed owner: the same objects give byte-identical shards (and checksums).
            self._writer = wds.TarWriter(self._handle, user="astrofm", group="astrofm", encoder=False, mtime=0)
            self._count = 0
        self._writer.write(members)
        self._count += 1
        for modality in modalities:
            self.modality_counts[modality] = self.modality_counts.get(modality, 0) + 1
        for name in optional_arrays:
            self.optional_array_counts[name] = self.optional_array_counts.get(name, 0) + 1
        if self._count >= self.shard_size:
            self.close_shard()

    def close_shard(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        self._handle.close()
        tmp = self._tmp_path()
        final = tmp.with_suffix("")  # drop ".tmp"
        os.replace(tmp, final)
        self.done.append(ShardInfo(path=f"shards/{final.name}", count=self._count,
                                   sha256=sha256_file(final), bytes=final.stat().st_size))
        self._writer, self._handle = None, None


    def discard(self) -> None:
        if self._writer is not None:
            self._writer.close()  # closes the tar stream first, so nothing writes to a closed file later
            self._handle.close()
            self._writer, self._handle = None, None


class DatasetWriter:
    """Collects objects into a new dataset folder.

    Use as a context manager: leaving the block by an exception removes everything written;
    leaving it normally calls `finish()`, which writes the manifest and moves the folder into place.
    """

    def __init__(self, out_dir: str | os.PathLike, spec: DatasetSpec, *, name: str | None = None,
                 provenance: dict[str, Any] | None = None, config: WriterConfig | None = None):
        self.out_dir = Path(out_dir)
        self.spec = spec
        self.config = config or WriterConfig()
        self.name = name or self.out_dir.name
        self.provenance = provenance or {}
        if self.out_dir.exists() and any(self.out_dir.iterdir()) and not self.config.overwrite:
            raise FileExistsError(f"{self.out_dir} exists and is not empty; choose a new folder or overwrite")
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self.staging = self.out_dir.parent / f".{self.out_dir.name}.partial-{uuid.uuid4().hex[:8]}"
        (self.staging / "shards").mkdir(parents=True)
        self._splits = {s: _SplitShards(self.staging / "shards", s, self.config.shard_size) for s in SPLITS}
        self._keys: dict[str, str] = {}  # tar key -> object id, to refuse duplicates
        self._labels: dict[str, str] = {}
        self._stats = StatisticsAccumulator(spec)
        self.manifest: Manifest | None = None

    def add(self, sample: Sample, *, source: str | None = None) -> str:
        """Validate and write one object; returns the split it went to."""
        validate_sample(sample, self.spec, source=source)
        key = sample_key(sample.id)
        if key in self._keys:
            other = self._keys[key]
            detail = "duplicate id" if other == sample.id else f"id maps to the same key as {other!r}"
            raise DataValidationError(detail, file=source, object_id=sample.id, field="id")
        self._keys[key] = sample.id
        split = assign_split(sample.id, self.config.split_fractions)
        sample.meta = {**sample.meta, "split": split}
        self._record_label_types(sample)
        self._splits[split].write(encode_sample(sample), sample.modalities, _optional_arrays_held(sample))
        if split == "train":
            self._stats.add(sample)
        return split

    def __len__(self) -> int:
        return len(self._keys)

    def _record_label_types(self, sample: Sample) -> None:
        for name, value in sample.labels.items():
            kind = "str" if isinstance(value, str) else "int" if isinstance(value, (bool, int)) else "float"
            previous = self._labels.get(name)
            if previous and previous != kind:
                kind = "float" if {previous, kind} == {"int", "float"} else "str"
            self._labels[name] = kind

    def finish(self) -> Manifest:
        if len(self._keys) == 0:
            raise ValueError(f"{self.out_dir}: no objects were written; refusing to create an empty dataset")
        for shards in self._splits.values():
            shards.close_shard()
        self.manifest = Manifest(
            name=self.name,
            spec=self.spec,
            splits={s: shards.done for s, shards in self._splits.items()},
            split_fractions=self.config.split_fractions,
            modality_counts={s: shards.modality_counts for s, shards in self._splits.items()},
            optional_array_counts={s: shards.optional_array_counts for s, shards in self._splits.items()},
            labels=dict(sorted(self._labels.items())),
            statistics=self._stats.result(),
            provenance=self.provenance,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        write_json_atomic(self.staging / MANIFEST_NAME, self.manifest.to_dict())
        self._move_into_place()
        return self.manifest

    def _move_into_place(self) -> None:
        replace_folder(self.staging, self.out_dir)

    def abort(self) -> None:
        """Close open shards and remove the staging folder: nothing of this write survives."""
        for shards in self._splits.values():
            shards.discard()
        shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
            return
        try:
            self.finish()
        except BaseException:
            self.abort()
            raise

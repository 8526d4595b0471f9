"""Reading a dataset folder sequentially, without torch: iteration, checksums, summaries."""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from astrofm.data.format import SPLITS, Sample, decode_sample
from astrofm.data.manifest import Manifest, load_manifest, sha256_file


@dataclass
class ShardProblem:
    path: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


class Dataset:
    """A dataset folder opened for reading: `Dataset(path).manifest`, `.iter_samples(split)`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.manifest: Manifest = load_manifest(self.path)

    @property
    def spec(self):
        return self.manifest.spec

    def shard_paths(self, split: str) -> list[Path]:
        return [self.path / shard.path for shard in self.manifest.shards(split)]

    def iter_samples(self, split: str | None = None) -> Iterator[Sample]:
        splits = [split] if split else list(SPLITS)
        for name in splits:
            for path in self.shard_paths(name):
                yield from iter_shard(path)

    def verify(self) -> list[ShardProblem]:
        """Check that every shard exists with its recorded size, checksum and object count."""
        problems = []
        for shards in self.manifest.splits.values():
            for shard in shards:
                path = self.path / shard.path
                if not path.is_file():
                    problems.append(ShardProblem(shard.path, "missing"))
                    continue
                if path.stat().st_size != shard.bytes:
                    problems.append(ShardProblem(shard.path, f"size {path.stat().st_size} bytes, "
                                                             f"manifest says {shard.bytes}"))
                    continue
                digest = sha256_file(path)
                if digest != shard.sha256:
                    problems.append(ShardProblem(shard.path, f"sha256 {digest[:12]}..., manifest says "
                                                             f"{shard.sha256[:12]}..."))
                    continue
                count = sum(1 for _ in iter_shard_members(path))
                if count != shard.count:
                    problems.append(ShardProblem(shard.path, f"{count} objects, manifest says {shard.count}"))
        return problems


def iter_shard_members(path: str | os.PathLike) -> Iterator[dict]:
    """Raw samples of one tar shard: dicts of member bytes keyed by suffix, as webdataset groups them
    (the key is the member name up to the first dot of its base name; members of a key are adjacent)."""
    current: dict = {}
    try:
        with tarfile.open(path, "r:") as archive:
            for member in archive:
                if not member.isfile():
                    continue
                key, _, suffix = member.name.partition(".")
                if current and current["__key__"] != key:
                    yield current
                    current = {}
                current.setdefault("__key__", key)
                current[suffix] = archive.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError) as error:
        raise ValueError(f"{path}: corrupt or truncated tar shard ({error})") from error
    if current:
        yield current


def iter_shard(path: str | os.PathLike) -> Iterator[Sample]:
    for members in iter_shard_members(path):
        yield decode_sample(members, source=str(path))

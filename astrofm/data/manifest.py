"""`manifest.json`: the one file that says what a dataset folder holds."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from astrofm.data.format import FORMAT_NAME, FORMAT_VERSION, SPLITS, DatasetSpec

MANIFEST_NAME = "manifest.json"


@dataclass
class ShardInfo:
    path: str  # relative to the dataset folder, e.g. "shards/train-000000.tar"
    count: int  # objects in the shard
    sha256: str
    bytes: int


@dataclass
class Manifest:
    name: str
    spec: DatasetSpec
    splits: dict[str, list[ShardInfo]] = field(default_factory=lambda: {s: [] for s in SPLITS})
    split_fractions: dict[str, float] = field(default_factory=dict)
    modality_counts: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> modality -> n
    # split -> "image.ivar" -> objects holding that optional array; None for datasets written before it was counted
    optional_array_counts: dict[str, dict[str, int]] | None = None
    labels: dict[str, str] = field(default_factory=dict)  # label name -> "float" | "int" | "str"
    statistics: dict[str, Any] = field(default_factory=dict)  # normalisation stats from the train split
    provenance: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION

    def count(self, split: str | None = None) -> int:
        splits = [split] if split else list(self.splits)
        return sum(shard.count for s in splits for shard in self.splits.get(s, []))

    def shards(self, split: str) -> list[ShardInfo]:
        if split not in self.splits:
            raise KeyError(f"unknown split {split!r}; the dataset has {sorted(self.splits)}")
        return self.splits[split]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "format_version": self.format_version,
            "name": self.name,
            "created": self.created,
            "modalities": self.spec.to_dict(),
            "split_fractions": self.split_fractions,
            "splits": {
                split: {"count": sum(s.count for s in shards), "shards": [asdict(s) for s in shards]}
                for split, shards in self.splits.items()
            },
            "modality_counts": self.modality_counts,
            **({} if self.optional_array_counts is None else {"optional_array_counts": self.optional_array_counts}),
            "labels": self.labels,
            "statistics": self.statistics,
            "provenance": self.provenance,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        return cls(
            name=data["name"],
            spec=DatasetSpec.from_dict(data["modalities"]),
            splits={split: [ShardInfo(**s) for s in entry["shards"]] for split, entry in data["splits"].items()},
            split_fractions=data.get("split_fractions", {}),
            modality_counts=data.get("modality_counts", {}),
            optional_array_counts=data.get("optional_array_counts"),
            labels=data.get("labels", {}),
            statistics=data.get("statistics", {}),
            provenance=data.get("provenance", {}),
            created=data.get("created", ""),
            format=data["format"],
            format_version=data["format_version"],
        )


def load_manifest(dataset_dir: str | os.PathLike) -> Manifest:
    path, data = read_folder_json(dataset_dir, MANIFEST_NAME, "dataset",
                                  missing="no manifest; is {folder} an astrofm dataset?")
    if data.get("format") != FORMAT_NAME:
        raise ValueError(f"{path}: field 'format' is {data.get('format')!r}, expected {FORMAT_NAME!r}")
    if data.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: field 'format_version' is {data.get('format_version')!r}; "
                         f"this astrofm reads version {FORMAT_VERSION}")
    try:
        return Manifest.from_dict(data)
    except (KeyError, TypeError) as error:
        raise ValueError(f"{path}: malformed manifest ({error!r})") from error


def read_folder_json(folder: str | os.PathLike, name: str, kind: str,
                     missing: str = "missing; is {folder} an astrofm {kind} folder?") -> tuple[Path, dict]:
    """`folder/name` parsed as a JSON object; errors name the folder or file and what is wrong.

    Shared by the dataset manifest, model folders and index folders.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such {kind} folder")
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: " + missing.format(folder=folder, kind=kind))
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return path, data


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file in the same folder, then rename it into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2, sort_keys=False)
            handle.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a dataset is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()

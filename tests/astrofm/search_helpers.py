"""Shared builders for the embed / index / search tests: a tiny dataset (TINY_SPEC, some objects lacking a
modality), an untrained model folder for it, its embedding store, and clustered unit vectors.

`search_world(tmp_path_factory)` builds them once per test session, whichever test module asks first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from astrofm.data import DatasetWriter, WriterConfig, load_manifest
from astrofm.embedstore.store import EMBEDDINGS_FORMAT, MANIFEST_NAME, vectors_array
from tests.conftest import TINY_SPEC, synthetic_sample

N_OBJECTS = 60
EMBED_DIM = 32


def missing_modality(index: int) -> str | None:
    """Every 5th object lacks an image, every 7th (not a 5th) a spectrum."""
    if index % 5 == 0:
        return "image"
    if index % 7 == 0:
        return "spectrum"
    return None


def build_dataset(out: Path, n: int = N_OBJECTS, shard_size: int = 8) -> Path:
    with DatasetWriter(out, TINY_SPEC, config=WriterConfig(shard_size=shard_size),
                       provenance={"generator": "tests"}) as writer:
        for i in range(n):
            writer.add(synthetic_sample(i, missing=missing_modality(i)))
    return out


def build_model(dataset: Path, out: Path, embed_dim: int = EMBED_DIM, seed: int = 0) -> Path:
    """An untrained model for TINY_SPEC, normalised with the dataset's statistics, saved as a folder."""
    import torch

    from astrofm.models import MultiModalModel, save_model
    from tests.astrofm.models.helpers import tiny_encoders

    encoders = tiny_encoders()
    torch.manual_seed(seed)
    model = MultiModalModel(encoders, embed_dim=embed_dim)
    model.set_statistics(load_manifest(dataset).to_dict())
    return save_model(model, out)


def embed_folder(model: Path, data: Path, out: Path, **kwargs) -> Path:
    from astrofm.embedstore import EmbedConfig, embed

    config = EmbedConfig(model=str(model), data=str(data), out=str(out), batch_size=16, progress=False, **kwargs)
    return embed(config).path


@dataclass
class World:
    root: Path
    dataset: Path
    model: Path
    embeddings: Path


_WORLD: World | None = None


@pytest.fixture(autouse=True)
def faiss_one_thread():
    """faiss's OpenMP threads spin badly when the cores are busy elsewhere (a 0.1 s build can take 10 s);
    the tests check results, not speed, so they run faiss on one thread."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def search_world(tmp_path_factory) -> World:
    global _WORLD
    if _WORLD is None:
        root = tmp_path_factory.mktemp("search")
        dataset = build_dataset(root / "data")
        model = build_model(dataset, root / "model")
        _WORLD = World(root, dataset, model, embed_folder(model, dataset, root / "emb"))
    return _WORLD


def clustered_unit_vectors(n: int, dim: int, clusters: int, spread: float = 0.3, seed: int = 0) -> np.ndarray:
    """Points scattered around `clusters` random directions, normalised: how embeddings tend to fall."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    points = centres[rng.integers(clusters, size=n)] + spread * rng.normal(size=(n, dim)) / np.sqrt(dim)
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def write_store(out: Path, vectors: np.ndarray, modality: str = "spectrum", ids: list[str] | None = None,
                model_sha256: str = "0" * 64) -> Path:
    """A minimal embedding folder holding `vectors` as one modality (ids v00000, ...), without a model."""
    out.mkdir(parents=True)
    ids = ids or [f"v{i:05d}" for i in range(len(vectors))]
    table = pa.table({"id": pa.array(ids, pa.string()), "split": pa.array(["train"] * len(ids), pa.string()),
                      "embedding": vectors_array(vectors) if len(vectors) else
                      pa.array([], pa.list_(pa.float32(), vectors.shape[1])),
                      "redshift": pa.array(np.linspace(0, 1, len(ids)))})
    pq.write_table(table, out / f"{modality}.parquet")
    import json

    (out / MANIFEST_NAME).write_text(json.dumps({
        "format": EMBEDDINGS_FORMAT, "format_version": 1, "dimension": int(vectors.shape[1]),
        "model": {"sha256": model_sha256}, "dataset": {},
        "modalities": {modality: {"file": f"{modality}.parquet", "count": len(ids)}}}))
    return out

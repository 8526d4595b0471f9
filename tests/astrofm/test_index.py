"""`astrofm index build`: kinds, the folder format, exact search against numpy, approximate recall,
checksums, memory mapping, atomic writes and bad input."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from astrofm.cli.main import main
from astrofm.data.manifest import sha256_file
from astrofm.embedstore.store import table_vectors
from astrofm.index import IndexChecksumError, IndexConfig, build_index, load_index, read_index_info
from tests.astrofm.search_helpers import (  # noqa: F401  (faiss_one_thread: an autouse fixture)
    clustered_unit_vectors,
    faiss_one_thread,
    search_world,
    write_store,
)


@pytest.fixture(scope="module")
def clustered(tmp_path_factory):
    """3,000 vectors in 30 clusters on the unit sphere in 32 dimensions, as an embedding folder."""
    vectors = clustered_unit_vectors(3000, 32, clusters=30, seed=1)
    return write_store(tmp_path_factory.mktemp("clustered") / "emb", vectors), vectors


def _build(embeddings, out, modality="spectrum", **kwargs):
    return build_index(IndexConfig(embeddings=str(embeddings), modality=modality, out=str(out), **kwargs))


def _brute_force(vectors, queries, k):
    scores = queries @ vectors.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


def test_auto_picks_flat_and_writes_the_folder(world, tmp_path, capsys):
    out = tmp_path / "idx"
    assert main(["index", "build", "--embeddings", str(world.embeddings), "--modality", "spectrum",
                 "--out", str(out)]) == 0
    assert "flat index" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["ids.parquet", "index.faiss", "index.json"]
    info = read_index_info(out)
    source = pq.read_table(world.embeddings / "spectrum.parquet")
    assert info["kind"] == "flat" and info["requested_kind"] == "auto"
    assert info["count"] == len(source) and info["dimension"] == 32 and info["modality"] == "spectrum"
    assert info["sha256"] == sha256_file(out / "index.faiss")
    assert info["embeddings"]["sha256"] == sha256_file(world.embeddings / "spectrum.parquet")
    assert info["embeddings"]["model"]["sha256"] == sha256_file(world.model / "model.safetensors")
    ids = pq.read_table(out / "ids.parquet")
    assert ids.column("id").equals(source.column("id"))
    assert "embedding" not in ids.column_names and "redshift" in ids.column_names


def test_exact_search_agrees_with_numpy(world, tmp_path):
    out = _build(world.embeddings, tmp_path / "idx", modality="image")
    loaded = load_index(out)
    vectors = table_vectors(pq.read_table(world.embeddings / "image.parquet"))
    queries = clustered_unit_vectors(5, 32, clusters=2, seed=3)
    scores, positions = loaded.search(queries, 10)
    expected_scores, expected_positions = _brute_force(vectors, queries, 10)
    np.testing.assert_allclose(scores, expected_scores, atol=1e-5)
    np.testing.assert_array_equal(positions, expected_positions)
    np.testing.assert_allclose(loaded.vector(loaded.table.column("id")[3].as_py()), vectors[3], atol=1e-6)


def test_auto_switches_to_approximate_above_the_limit(clustered, tmp_path):
    emb, _ = clustered
    out = _build(emb, tmp_path / "idx", exact_limit=1000)
    assert read_index_info(out)["kind"] == "ivfpq"


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_approximate_kinds_have_good_recall(clustered, tmp_path, kind):
    emb, vectors = clustered
    out = _build(emb, tmp_path / kind, kind=kind)
    loaded = load_index(out)
    assert loaded.kind == kind and loaded.count == len(vectors)
    queries = vectors[np.random.default_rng(5).choice(len(vectors), 200, replace=False)]
    _, found = loaded.search(queries, 10)
    _, exact = _brute_force(vectors, queries, 10)
    recall = np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact, strict=True)])
    assert recall >= 0.9, recall
    info = read_index_info(out)
    assert info["params"] and info["bytes"] > 0
    if kind == "ivfpq":
        assert info["bytes"] / len(vectors) < 32 * 4  # smaller than the float vectors


def test_checksum_is_verified_unless_skipped(world, tmp_path):
    out = _build(world.embeddings, tmp_path / "idx")
    data = bytearray((out / "index.faiss").read_bytes())
    data[-1] ^= 0xFF  # a bit flip inside the last vector
    (out / "index.faiss").write_bytes(bytes(data))
    with pytest.raises(IndexChecksumError, match="index.faiss"):
        load_index(out)
    assert load_index(out, verify=False).count == read_index_info(out)["count"]


def test_flat_index_is_memory_mapped(world, tmp_path):
    out = _build(world.embeddings, tmp_path / "idx")
    assert load_index(out).mmapped
    assert not load_index(out, mmap=False).mmapped


def test_build_is_atomic_and_does_not_overwrite_by_default(world, tmp_path, monkeypatch):
    import faiss

    def broken(*args):
        raise RuntimeError("disk full")

    monkeypatch.setattr(faiss, "write_index", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        _build(world.embeddings, tmp_path / "idx")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    out = _build(world.embeddings, tmp_path / "idx")
    with pytest.raises(FileExistsError, match="exists"):
        _build(world.embeddings, out)
    _build(world.embeddings, out, modality="image", overwrite=True)
    assert read_index_info(out)["modality"] == "image"
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]


def test_empty_input_is_refused(tmp_path, capsys):
    emb = write_store(tmp_path / "emb", np.zeros((0, 8), dtype=np.float32))
    code = main(["index", "build", "--embeddings", str(emb), "--modality", "spectrum", "--out", str(tmp_path / "i")])
    err = capsys.readouterr().err
    assert code == 1 and "no spectrum embeddings" in err and "Traceback" not in err
    assert not (tmp_path / "i").exists()


def test_bad_inputs_name_the_problem(world, tmp_path, capsys):
    code = main(["index", "build", "--embeddings", str(tmp_path / "missing"), "--modality", "spectrum",
                 "--out", str(tmp_path / "i")])
    assert code == 1 and "missing" in capsys.readouterr().err
    vectors = np.ones((3, 4), dtype=np.float32)
    vectors[1, 2] = np.nan
    emb = write_store(tmp_path / "nan", vectors)
    with pytest.raises(ValueError, match="NaN"):
        _build(emb, tmp_path / "i")
    code = main(["index", "build", "--embeddings", str(emb), "--modality", "image", "--out", str(tmp_path / "i")])
    assert code == 1 and "no image embeddings" in capsys.readouterr().err
    code = main(["index", "info", str(tmp_path / "nope")])
    assert code == 1 and "nope" in capsys.readouterr().err


def test_info_command_verifies(world, tmp_path, capsys):
    out = _build(world.embeddings, tmp_path / "idx", kind="hnsw")
    assert main(["index", "info", str(out), "--verify"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["verified"] and info["kind"] == "hnsw" and info["params"]["m"] == 32

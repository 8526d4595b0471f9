"""`astrofm retrieval`: the metrics against hand-computed values, and the report folder."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from astrofm.cli.main import main
from astrofm.embedstore.store import EMBEDDINGS_FORMAT, vectors_array
from astrofm.neighbour_agreement import agreement
from astrofm.retrieval_report import (
    RetrievalReportConfig,
    compute_metrics,
    curve_from_ranks,
    neighbour_dz,
    true_match_ranks,
)
from tests.astrofm.search_helpers import clustered_unit_vectors


def _store(folder, modalities: dict[str, np.ndarray], z: np.ndarray):
    folder.mkdir()
    entries = {}
    for modality, vectors in modalities.items():
        ids = [f"o{i:04d}" for i in range(len(vectors))]
        pq.write_table(pa.table({"id": ids, "split": ["test"] * len(ids), "embedding": vectors_array(vectors),
                                 "redshift": z}), folder / f"{modality}.parquet")
        entries[modality] = {"file": f"{modality}.parquet", "count": len(ids)}
    (folder / "manifest.json").write_text(json.dumps({"format": EMBEDDINGS_FORMAT, "format_version": 1,
                                                      "dimension": 16, "modalities": entries}))
    return folder


def test_ranks_curve_and_neighbours_by_hand():
    queries = np.eye(3)
    candidates = np.array([[0.5, 0, 0], [1.0, 0.1, 0], [0, 0, 1.0]])
    ranks = true_match_ranks(queries, candidates)
    assert ranks.tolist() == [2, 1, 1]  # query 0 scores its own candidate 0.5, candidate 1 scores 1.0
    np.testing.assert_allclose(curve_from_ranks(ranks, 3), [2 / 3, 1, 1])
    features = np.array([[1.0, 0], [0.99, 0.1], [0, 1.0]])
    z = np.array([0.0, 0.1, 1.0])
    # neighbours with k=1: 0 -> 1, 1 -> 0, 2 -> 1 ; |dz|/(1+z): 0.1, 0.1/1.1, 0.9/2
    assert neighbour_dz(features, z, k=1) == pytest.approx(np.median([0.1, 0.1 / 1.1, 0.45]))


def test_identical_modalities_retrieve_perfectly_and_random_ones_do_not(tmp_path):
    vectors = clustered_unit_vectors(200, 16, clusters=20, seed=2)
    noise = clustered_unit_vectors(200, 16, clusters=20, seed=3)
    z = np.linspace(0, 2, 200)
    emb = _store(tmp_path / "emb", {"spectrum": vectors, "photometry": vectors, "image": noise}, z)
    metrics, curves = compute_metrics(RetrievalReportConfig(embeddings=str(emb), out=str(tmp_path / "r")))
    perfect = metrics["pairs"]["spectrum-photometry"]
    assert perfect["top1"] == 1.0 and perfect["top10"] == 1.0 and perfect["area"] == 1.0
    chance = metrics["pairs"]["spectrum-image"]
    assert chance["top1"] < 0.1 and abs(chance["area"] - chance["random"]["area"]) < 0.1
    assert len(curves["spectrum-image"]) == 200
    assert metrics["neighbours"]["spectrum"]["random"] > 0 and metrics["raw_baseline"] is None


def test_report_folder_through_the_cli(world, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["retrieval", "--embeddings", str(world.embeddings), "--out", str(out), "--split", "all"]) == 0
    printed = capsys.readouterr().out
    assert "spectrum-image" in printed and "spectrum               neighbours agree most on" in printed
    assert sorted(p.name for p in out.iterdir()) == [
        "label_consistency.png", "metrics.json", "neighbour_agreement.png", "neighbours.png", "retrieval_curves.png"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["pairs"]) == {"spectrum-photometry", "spectrum-image", "photometry-image"}
    assert metrics["neighbours"]["spectrum"]["raw_knn"] is not None  # the dataset is found via the manifest
    assert "redshift" in metrics["neighbour_agreement"]["spectrum"]
    assert main(["retrieval", "--embeddings", str(world.embeddings), "--out", str(out)]) == 1
    assert "exists" in capsys.readouterr().err


def test_neighbour_agreement_ranks_the_label_the_embedding_is_ordered_by_first():
    n, rng = 400, np.random.default_rng(0)
    ordered = rng.uniform(0, 1, n)  # the embedding is a half circle parametrised by this label
    angle = np.pi * ordered
    vectors = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    unrelated = rng.normal(size=n)
    partly_missing = ordered.copy()
    partly_missing[::3] = np.nan
    found = agreement(vectors, {"unrelated": unrelated, "ordered": ordered, "constant": np.ones(n),
                                "partly_missing": partly_missing, "absent": np.full(n, np.nan)})
    assert set(found) == {"ordered", "partly_missing", "unrelated"}  # constant and all-NaN labels say nothing
    assert list(found)[-1] == "unrelated"  # sorted from the closest agreement
    assert found["ordered"]["ratio"] < 0.05 and found["partly_missing"]["ratio"] < 0.05
    assert 0.7 < found["unrelated"]["ratio"] < 1.3
    assert found["ordered"]["ratio"] == found["ordered"]["neighbours"] / found["ordered"]["random"]


def test_colour_stamps_take_the_bluest_a_middle_and_the_reddest_band():
    from astrofm.neighbour_plot import _colour_stamp

    flux = np.zeros((4, 8, 8))  # g, r, i, z: only z has light
    flux[3] = 1.0
    rgb = _colour_stamp(flux)
    assert rgb.shape == (8, 8, 3) and np.all(rgb[..., 0] > 0.5) and np.all(rgb[..., 1:] == 0)
    flux = np.zeros((4, 8, 8))
    flux[2] = 1.0  # i is the green of g, i, z; r is not drawn
    assert np.all(_colour_stamp(flux)[..., 1] > 0.5)
    grey = _colour_stamp(np.ones((1, 8, 8)))  # one band: the same in every channel
    assert grey.shape == (8, 8, 3) and np.all(grey == grey[..., :1])

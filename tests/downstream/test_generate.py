"""`astrofm generate`: end to end on a tiny dataset whose modalities share two latent numbers, the kNN
baseline's choice of k, the test split kept out of fitting, and the errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from astrofm.cli.main import main
from astrofm.data import DatasetSpec, DatasetWriter, WriterConfig
from astrofm.data.reader import Dataset
from downstream.generation import GenerateConfig, evaluate
from downstream.generation.codecs import PhotometryCodec
from downstream.generation.data import Pairs, load_splits
from downstream.generation.methods import fit_knn
from tests.conftest import TINY_SPEC
from tests.downstream.generation_helpers import build_latent_dataset, build_untrained_model, latent_sample

FAST = ["--epochs", "60", "--patience", "15", "--components", "8", "--k-grid", "1", "4", "16", "--no-progress",
        "--threads", "1", "--examples", "2"]
METHODS = ["decoder", "knn", "raw", "train_mean"]


@pytest.fixture(autouse=True)
def faiss_one_thread():
    """faiss's OpenMP threads spin badly on busy shared cores; the tests check results, not speed."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("generate")
    data = build_latent_dataset(root / "data")
    return {"root": root, "data": data, "model": build_untrained_model(data, root / "model")}


def _paired_ids(data, split: str, source: str, target: str) -> set[str]:
    return {s.id for s in Dataset(data).iter_samples(split)
            if getattr(s, source) is not None and getattr(s, target) is not None}


def _generate(world, source: str, target: str, name: str, *extra: str) -> dict:
    out = world["root"] / name
    code = main(["generate", "--model", str(world["model"]), "--data", str(world["data"]), "--source", source,
                 "--target", target, "--out", str(out), *FAST, *extra])
    assert code == 0
    return {"out": out, "metrics": json.loads((out / "metrics.json").read_text())}


@pytest.fixture(scope="module")
def photometry_to_spectrum(world):
    return _generate(world, "photometry", "spectrum", "p2s")


def test_cli_writes_a_report_with_one_record_per_method(world, photometry_to_spectrum):
    out, metrics = photometry_to_spectrum["out"], photometry_to_spectrum["metrics"]
    records = metrics["records"]
    assert [r["method"] for r in records] == METHODS
    n_test = len(_paired_ids(world["data"], "test", "photometry", "spectrum"))
    for r in records:
        assert r["n_test"] == n_test and r["seed"] == 0 and r["source"] == "photometry"
        for key in ("chi2_median", "chi2_mean", "mse_median", "mse_mean"):
            assert math.isfinite(r[key]) and r[key] >= 0, (r["method"], key)
        assert set(r["consistency"]) >= {"r2", "nmad", "outlier_fraction"}
    assert metrics["consistency_ceiling"]["n"] == n_test
    report = (out / "report.md").read_text()
    for image in ("generated_vs_true.png", "chi2_distribution.png", "consistency.png"):
        assert (out / image).stat().st_size > 1000
        assert f"]({image})" in report
    assert not list(out.parent.glob(".p2s.*"))  # no staging folder left behind


def test_decoder_beats_the_train_mean_when_the_source_carries_the_target(photometry_to_spectrum):
    records = {r["method"]: r for r in photometry_to_spectrum["metrics"]["records"]}
    trivial = records["train_mean"]
    for method in ("decoder", "raw"):
        assert records[method]["chi2_median"] < 0.25 * trivial["chi2_median"], method
        assert records[method]["mse_mean"] < 0.25 * trivial["mse_mean"], method
    # The redshift read back from generated spectra follows the truth; from the mean spectrum it cannot.
    assert records["decoder"]["consistency"]["r2"] > 0.5 > trivial["consistency"]["r2"]


def test_knn_k_is_the_best_of_the_grid_on_val(photometry_to_spectrum):
    chosen = {r["method"]: r for r in photometry_to_spectrum["metrics"]["records"]}["knn"]["chosen"]
    scores = {int(k): v for k, v in chosen["val_median_mse_by_k"].items()}
    assert sorted(scores) == [1, 4, 16]
    assert chosen["k"] == min(scores, key=scores.get)


def _pairs(embedding: np.ndarray, flux: np.ndarray) -> Pairs:
    n = len(embedding)
    ivar = np.ones_like(flux)
    return Pairs([f"o{i}" for i in range(n)], embedding.astype(np.float32), {"flux": flux, "ivar": ivar},
                 {"flux": flux.astype(np.float32), "ivar": ivar.astype(np.float32)},
                 embedding.astype(np.float32), np.zeros(n))


def test_knn_picks_k_by_val_error():
    """Noisy neighbours sharing one embedding: averaging many wins; distinct noiseless neighbours: k = 1."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(10, 4))
    codec = PhotometryCodec(np.zeros(3), np.ones(3))
    config = GenerateConfig(model="", data="", source="image", target="photometry", out="", k_grid=[1, 4, 16])
    clean = rng.normal(size=(10, 3))
    train = _pairs(np.repeat(centres, 16, axis=0), np.repeat(clean, 16, axis=0) + rng.normal(size=(160, 3)))
    val = _pairs(centres, clean)
    assert fit_knn(train, val, codec, config).chosen["k"] == 16
    points = rng.normal(size=(200, 4))
    targets = rng.normal(size=(200, 3)) * 3
    assert fit_knn(_pairs(points, targets), _pairs(points[:30] + 1e-3, targets[:30]), codec, config).chosen["k"] == 1


def test_spectrum_to_photometry(world):
    result = _generate(world, "spectrum", "photometry", "s2p", "--method", "decoder", "knn", "train_mean")
    records = {r["method"]: r for r in result["metrics"]["records"]}
    assert list(records) == ["decoder", "knn", "train_mean"]
    assert set(records["decoder"]["chi2_median_by_band"]) == {"g", "r"}
    assert records["decoder"]["consistency"]["g-r"]["n"] > 0
    assert records["decoder"]["chi2_median"] < 0.25 * records["train_mean"]["chi2_median"]
    assert (result["out"] / "flux_pred_vs_true.png").is_file()
    assert "consistency_ceiling" not in result["metrics"]


def test_test_split_is_never_used_to_fit(world):
    """Scrambling the test targets changes no choice and no generated test object; splits are disjoint."""
    import astrofm

    model = astrofm.load_model(world["model"])
    config = GenerateConfig(model=str(world["model"]), data=str(world["data"]), source="image", target="spectrum",
                            out="", epochs=15, n_components=8, k_grid=[1, 4], progress=False)
    manifest = Dataset(world["data"]).manifest.to_dict()
    splits = load_splits(model, config.data, "image", "spectrum", "redshift", progress=False)
    ids = [set(splits[s].ids) for s in ("train", "val", "test")]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    first, shown = evaluate(splits, config, manifest["statistics"], manifest["modalities"], model)
    test = splits["test"]
    rng = np.random.default_rng(1)
    splits["test"] = Pairs(test.ids, test.embedding, test.source,
                           {"flux": rng.permutation(test.target["flux"]) * 50.0, "ivar": test.target["ivar"]},
                           rng.permutation(test.target_embedding), test.label)
    second, shown_again = evaluate(splits, config, manifest["statistics"], manifest["modalities"], model)
    for a, b in zip(first["records"], second["records"], strict=True):
        assert a["chosen"] == b["chosen"], a["method"]
        np.testing.assert_array_equal(shown["generated"][a["method"]], shown_again["generated"][a["method"]])
        assert a["chi2_median"] != b["chi2_median"]  # the scores did see the scrambled truth


def test_errors(world, tmp_path, capsys):
    base = ["generate", "--model", str(world["model"]), "--data", str(world["data"]), "--quiet"]
    cases = [
        (["--source", "radio", "--target", "spectrum"], "unknown modality"),
        (["--source", "spectrum", "--target", "spectrum"], "both 'spectrum'"),
        (["--source", "spectrum", "--target", "image"], "spectrum or photometry"),
    ]
    for args, message in cases:
        assert main([*base, *args, "--out", str(tmp_path / "r")]) == 1
        assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()

    existing = tmp_path / "existing"
    existing.mkdir()
    assert main([*base, "--source", "photometry", "--target", "spectrum", "--out", str(existing)]) == 1
    assert "exists (pass --overwrite" in capsys.readouterr().err

    no_image = build_untrained_model(world["data"], tmp_path / "no_image", modalities=("spectrum", "photometry"))
    assert main(["generate", "--model", str(no_image), "--data", str(world["data"]), "--source", "image",
                 "--target", "spectrum", "--out", str(tmp_path / "r")]) == 1
    assert "has no image encoder" in capsys.readouterr().err

    spec = DatasetSpec(spectrum=TINY_SPEC.spectrum, photometry=TINY_SPEC.photometry, image=None)
    lacking = tmp_path / "no_image_data"
    rng = np.random.default_rng(0)
    with DatasetWriter(lacking, spec, config=WriterConfig(shard_size=20)) as writer:
        for i in range(20):
            writer.add(latent_sample(i, rng, missing="image"))
    assert main(["generate", "--model", str(world["model"]), "--data", str(lacking), "--source", "image",
                 "--target", "spectrum", "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "manifest.json" in err and "has no image" in err

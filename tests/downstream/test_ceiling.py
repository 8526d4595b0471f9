"""Information ceilings: the MLP probe on noise-free catalogue columns, fitted on train, scored on test."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from astrofm.embedstore.store import EMBEDDINGS_FORMAT, EmbeddingStore, vectors_array
from downstream.regression.ceiling import (
    CEILING_COLUMNS,
    PROFILE_COLUMNS,
    catalogue_ceilings,
    catalogue_features,
    ceiling_columns,
    information_ceilings,
    mock_bands,
)
from tests.downstream.test_regression import split_labels


def catalogue_store(folder, n: int = 900, seed: int = 0):
    """Redshift is a smooth function of two "fluxes" (fitted in log10); a third column is pure noise."""
    rng = np.random.default_rng(seed)
    log_g, log_r = rng.uniform(-1, 1, n), rng.uniform(-1, 1, n)
    columns = {"flux_true_g": 10 ** log_g, "flux_true_r": 10 ** log_r, "noise": rng.normal(size=n),
               "redshift": 0.5 + 0.2 * log_g - 0.1 * log_r ** 2}
    folder.mkdir()
    table = pa.table({"id": [f"o{i:04d}" for i in range(n)], "split": split_labels(n, seed + 1),
                      "embedding": vectors_array(rng.normal(size=(n, 4)).astype(np.float32)), **columns})
    pq.write_table(table, folder / "spectrum.parquet")
    (folder / "manifest.json").write_text(json.dumps({
        "format": EMBEDDINGS_FORMAT, "format_version": 1, "dimension": 4,
        "modalities": {"spectrum": {"file": "spectrum.parquet", "count": n}}}))
    return EmbeddingStore.open(folder)


def test_a_target_fixed_by_the_columns_has_a_ceiling_near_one_and_noise_has_none(tmp_path, one_thread):
    store = catalogue_store(tmp_path / "emb")
    ceilings = information_ceilings(store, "redshift", {"fluxes": ("flux_true_g", "flux_true_r"),
                                                        "noise": ("noise",)}, seeds=1)
    assert ceilings["fluxes"]["mean"]["r2"] > 0.95
    assert ceilings["noise"]["mean"]["r2"] < 0.1
    assert ceilings["fluxes"]["n_test"] == split_labels(900, 1).count("test")  # scored on the test split only
    assert ceilings["fluxes"]["columns"] == ["flux_true_g", "flux_true_r"]


def test_fluxes_are_fitted_in_log_and_a_missing_column_is_named(tmp_path):
    store = catalogue_store(tmp_path / "emb", n=60)
    table = store.read("spectrum", splits=["train", "val", "test"])
    features = catalogue_features(table, ["flux_true_g", "noise"], "here")
    np.testing.assert_allclose(features[:, 0], np.log10(table.column("flux_true_g").to_numpy()))
    np.testing.assert_allclose(features[:, 1], table.column("noise").to_numpy())
    with pytest.raises(ValueError, match=r"here: no catalogue column\(s\) \['half_light_radius_arcsec'\]"):
        catalogue_features(table, ["flux_true_g", "half_light_radius_arcsec"], "here")


def test_catalogue_ceilings_agree_with_the_store_route_and_refuse_an_empty_catalogue(tmp_path, one_thread):
    store = catalogue_store(tmp_path / "emb")
    table = store.read("spectrum", splits=["train", "val", "test"])
    catalogue = {name: table.column(name).to_numpy(zero_copy_only=False)
                 for name in ("split", "flux_true_g", "flux_true_r", "noise", "redshift")}
    columns = {"fluxes": ("flux_true_g", "flux_true_r"), "noise": ("noise",)}
    from_catalogue = catalogue_ceilings(catalogue, "redshift", columns, seeds=1)
    from_store = information_ceilings(store, "redshift", columns, seeds=1)
    for name in columns:  # the same rows, splits and probe: the same numbers
        assert from_catalogue[name]["mean"] == pytest.approx(from_store[name]["mean"])
    assert from_catalogue["fluxes"]["mean"]["r2"] > 0.95
    with pytest.raises(ValueError, match="suite x: the catalogue has no objects"):
        catalogue_ceilings({"split": np.array([]), "redshift": np.array([])}, where="suite x")


def test_the_default_columns_follow_the_survey_bands(one_thread):
    # a g, r, i, z mock's labels: psf_fwhm per image band, flux_true per photometry band, and one extra
    # speclite filter column (named by the filter) that is not a survey band
    names = ["redshift", "psf_fwhm_g", "psf_fwhm_r", "psf_fwhm_i", "psf_fwhm_z", "flux_true_g", "flux_true_r",
             "flux_true_i", "flux_true_z", "flux_true_W1", "flux_true_W2", "flux_true_decam2014-Y"]
    image, photometry = mock_bands(names)
    assert image == ["g", "r", "i", "z"] and photometry == ["g", "r", "i", "z", "W1", "W2"]
    columns = ceiling_columns(image, photometry)
    assert columns["image_fluxes"] == ("flux_true_g", "flux_true_r", "flux_true_i", "flux_true_z")
    assert columns["image"][:4] == columns["image_fluxes"] and "sersic_index" in columns["image"]
    assert ceiling_columns() == CEILING_COLUMNS and CEILING_COLUMNS["image_fluxes"][-1] == "flux_true_z"

    # catalogue_ceilings without columns reads the bands from the catalogue itself
    rng = np.random.default_rng(1)
    n = 600
    catalogue = {"split": np.array(split_labels(n, 2)), "psf_fwhm_r": np.ones(n),
                 **{f"flux_true_{b}": 10 ** rng.uniform(-1, 1, n) for b in ("g", "r", "z", "W1", "W2")},
                 **{name: rng.uniform(0.5, 2, n) for name in PROFILE_COLUMNS}}
    catalogue["redshift"] = np.log10(catalogue["flux_true_r"])
    ceilings = catalogue_ceilings(catalogue, "redshift", seeds=1)
    assert set(ceilings) == {"image", "image_fluxes", "photometry"}
    assert ceilings["image_fluxes"]["columns"] == ["flux_true_r"]
    assert ceilings["image_fluxes"]["mean"]["r2"] > 0.95

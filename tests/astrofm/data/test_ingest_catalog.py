"""Ingest of photometry catalogues (CSV and Parquet): columns, bands, filters, bad rows."""

from __future__ import annotations

import numpy as np
import pytest

from astrofm.data import Dataset, DataValidationError
from astrofm.data.ingest import IngestConfig, ingest
from tests.astrofm.data.fits_factories import (
    assert_names,
    assert_nothing_written,
    ingest_cli,
    photometry_rows,
    write_catalog,
)


def _samples(out):
    return {s.id: s for s in Dataset(out).iter_samples()}


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_catalogue_round_trip_with_default_bands(tmp_path, suffix):
    rows = photometry_rows(["0007", "NA", "spec-0266-51602-0001"])
    path = write_catalog(tmp_path / f"phot{suffix}", rows)
    out = tmp_path / "ds"
    assert ingest_cli(out, "--catalog", path) == 0

    dataset = Dataset(out)
    assert dataset.spec.modalities == ["photometry"]
    assert dataset.spec.photometry.bands == ["g", "r", "z", "W1", "W2"]
    assert dataset.spec.photometry.filters[3] == "wise2010-W1"
    samples = _samples(out)
    assert sorted(samples) == ["0007", "NA", "spec-0266-51602-0001"]  # ids are text, kept verbatim
    for row in rows:
        got = samples[row["id"]].photometry
        np.testing.assert_allclose(got["flux"], [row[f"flux_{b}"] for b in ("g", "r", "z", "W1", "W2")])
        np.testing.assert_allclose(got["flux_err"], 0.5)
        assert samples[row["id"]].meta == {"survey": "unknown", "domain": "observed",
                                           "split": samples[row["id"]].meta["split"]}


def test_chosen_bands_leave_out_columns_the_catalogue_lacks(tmp_path):
    rows = photometry_rows(["a", "b"], bands=("g", "r", "z"))
    path = write_catalog(tmp_path / "phot.parquet", rows)
    out = tmp_path / "ds"
    assert ingest_cli(out, "--catalog", path, "--bands", "g,r,z") == 0
    spec = Dataset(out).spec.photometry
    assert spec.bands == ["g", "r", "z"] and spec.filters == ["decam2014-g", "decam2014-r", "decam2014-z"]

    with pytest.raises(DataValidationError) as info:  # without --bands the default W1, W2 are required
        ingest(IngestConfig(out=tmp_path / "ds2", catalog=path), progress=False)
    assert_names(info.value, path, None, "flux_W1")
    assert "--bands" in str(info.value)
    assert_nothing_written(tmp_path / "ds2")


def test_filters_name_the_bands_and_an_id_column_can_be_chosen(tmp_path):
    rows = [{"objid": str(i), "flux_u": 1.0 + i, "flux_err_u": 0.1, "flux_i": 2.0, "flux_err_i": 0.2}
            for i in range(3)]
    path = write_catalog(tmp_path / "phot.csv", rows)
    config = IngestConfig(out=tmp_path / "ds", catalog=path, id_column="objid",
                          filters=["sdss2010-u", "sdss2010-i"])
    result = ingest(config, progress=False)
    assert result.manifest.spec.photometry.bands == ["u", "i"]
    np.testing.assert_allclose(_samples(result.path)["2"].photometry["flux"], [3.0, 2.0])

    with pytest.raises(ValueError, match="speclite filter"):
        ingest(IngestConfig(out=tmp_path / "ds2", catalog=path, id_column="objid", filters=["nope-u"]),
               progress=False)
    with pytest.raises(ValueError, match="--filters"):
        ingest(IngestConfig(out=tmp_path / "ds2", catalog=path, id_column="objid", bands=["u"]), progress=False)


def _with(rows, index, **values):
    rows[index].update(values)
    return rows


BAD_ROWS = {
    "nan_flux": (lambda: _with(photometry_rows(["a", "b", "c"]), 1, flux_r=float("nan")), "b", "flux_r", "missing"),
    "inf_error": (lambda: _with(photometry_rows(["a", "b", "c"]), 2, flux_err_W2=float("inf")), "c",
                  "flux_err_W2", "inf"),
    "empty_cell": (lambda: _with(photometry_rows(["a", "b", "c"]), 0, flux_g=None), "a", "flux_g", "missing"),
    "negative_error": (lambda: _with(photometry_rows(["a", "b", "c"]), 1, flux_err_z=-1.0), "b", "flux_err_z",
                       "negative"),
    "duplicate_id": (lambda: photometry_rows(["a", "b", "a"]), "a", "id", "duplicate id"),
}


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
@pytest.mark.parametrize("kind", sorted(BAD_ROWS))
def test_a_bad_row_stops_the_ingest_naming_file_object_and_column(tmp_path, kind, suffix):
    make, object_id, field, words = BAD_ROWS[kind]
    path = write_catalog(tmp_path / f"phot{suffix}", make())
    out = tmp_path / "ds"
    with pytest.raises(DataValidationError) as info:
        ingest(IngestConfig(out=out, catalog=path), progress=False)
    assert_names(info.value, path, object_id, field)
    assert words in str(info.value)
    assert_nothing_written(out)


def test_missing_id_column_and_unreadable_catalogue(tmp_path):
    path = write_catalog(tmp_path / "phot.csv", photometry_rows(["a"]))
    with pytest.raises(DataValidationError) as info:
        ingest(IngestConfig(out=tmp_path / "ds", catalog=path, id_column="objid"), progress=False)
    assert_names(info.value, path, None, "objid")

    broken = tmp_path / "phot.parquet"
    broken.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataValidationError) as info:
        ingest(IngestConfig(out=tmp_path / "ds", catalog=broken), progress=False)
    assert_names(info.value, broken, None, "file")
    assert_nothing_written(tmp_path / "ds")

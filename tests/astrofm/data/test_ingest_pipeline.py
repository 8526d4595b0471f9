"""Ingest as a whole: joining modalities by id, duplicates, --skip-bad and rejects.json, CLI errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from astrofm.data import Dataset, DataValidationError
from astrofm.data.ingest import IngestConfig, ingest
from tests.astrofm.data.fits_factories import (
    assert_names,
    assert_nothing_written,
    ingest_cli,
    photometry_rows,
    stamp,
    truncate,
    write_catalog,
    write_image_cube,
    write_sdss_spectrum,
)

A, B, C, D, E = (f"spec-0266-51602-000{i}" for i in range(1, 6))


def test_three_modalities_join_by_object_id(tmp_path):
    spectra = [write_sdss_spectrum(tmp_path / f"{oid}.fits", z=0.05 * i) for i, oid in enumerate((A, B, C))]
    (tmp_path / "cutouts").mkdir()
    images = [write_image_cube(tmp_path / "cutouts" / f"{oid}.fits", data=stamp(seed=i))
              for i, oid in enumerate((A, B, D))]
    catalog = write_catalog(tmp_path / "phot.parquet", photometry_rows([A, C, E]))
    out = tmp_path / "ds"
    assert ingest_cli(out, "--spectra", *spectra, "--images", *images, "--catalog", catalog,
                      "--shard-size", "1") == 0

    dataset = Dataset(out)
    assert dataset.spec.modalities == ["spectrum", "photometry", "image"]
    samples = {s.id: s for s in dataset.iter_samples()}
    assert {oid: s.modalities for oid, s in samples.items()} == {
        A: ["spectrum", "photometry", "image"], B: ["spectrum", "image"], C: ["spectrum", "photometry"],
        D: ["image"], E: ["photometry"]}
    assert samples[B].labels["redshift"] == pytest.approx(0.05)
    np.testing.assert_allclose(samples[D].image["flux"], stamp(seed=2).astype(np.float32))
    assert samples[A].meta["survey"] == "sdss" and samples[D].meta["survey"] == "unknown"
    assert all(shard.count == 1 for shards in dataset.manifest.splits.values() for shard in shards)
    files = dataset.manifest.provenance["source_files"]
    assert [f["modality"] for f in files] == ["photometry"] + ["spectrum"] * 3 + ["image"] * 3
    assert dataset.verify() == []


def test_two_spectra_with_one_stem_are_a_duplicate_id(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        write_sdss_spectrum(tmp_path / folder / f"{A}.fits")
    out = tmp_path / "ds"
    with pytest.raises(DataValidationError) as info:
        ingest(IngestConfig(out=out, spectra=[tmp_path / "a", tmp_path / "b"]), progress=False)
    assert_names(info.value, tmp_path / "b" / f"{A}.fits", A, "id")
    assert "duplicate id" in str(info.value) and str(tmp_path / "a" / f"{A}.fits") in str(info.value)
    assert_nothing_written(out)


def test_a_bad_input_gives_one_line_on_stderr_a_failing_status_and_no_output(tmp_path, capsys):
    good = write_sdss_spectrum(tmp_path / f"{A}.fits")
    bad = write_sdss_spectrum(tmp_path / f"{B}.fits", drop_columns=("loglam",))
    out = tmp_path / "ds"
    assert ingest_cli(out, "--spectra", good, bad) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(bad) in err and B in err and "COADD.loglam" in err
    assert_nothing_written(out)


def test_skip_bad_ingests_the_rest_and_writes_rejects_json(tmp_path, capsys):
    good = [write_sdss_spectrum(tmp_path / f"{oid}.fits") for oid in (A, B)]
    truncated = truncate(write_sdss_spectrum(tmp_path / f"{C}.fits"))
    nan_flux = tmp_path / f"{D}.fits"
    write_sdss_spectrum(nan_flux, flux=np.full(3700, np.nan))
    (tmp_path / "dup").mkdir()
    duplicate = write_sdss_spectrum(tmp_path / "dup" / f"{B}.fits")
    (tmp_path / "cutouts").mkdir()
    image = write_image_cube(tmp_path / "cutouts" / f"{C}.fits")
    rows = photometry_rows([A, C, E, "spare"])
    rows[2]["flux_g"] = float("nan")
    catalog = write_catalog(tmp_path / "phot.csv", rows)
    out = tmp_path / "ds"
    assert ingest_cli(out, "--spectra", *good, truncated, nan_flux, duplicate, "--images", image,
                      "--catalog", catalog, "--skip-bad") == 0

    printed = capsys.readouterr().out
    assert "rejected 4 objects (5 problems)" in printed
    rejects = json.loads((out / "rejects.json").read_text())
    assert sorted((r["object"], r["field"]) for r in rejects) == sorted([
        (B, "id"), (B, "id"), (C, "file"), (D, "COADD.flux"), (E, "flux_g")])
    assert {r["file"] for r in rejects if r["object"] == B} == {str(good[1]), str(duplicate)}
    assert all(set(r) == {"file", "object", "field", "error"} and r["error"] for r in rejects)

    samples = {s.id: s for s in Dataset(out).iter_samples()}
    # C's spectrum was bad, so C is left out entirely, its good image and catalogue row too.
    assert sorted(samples) == sorted([A, "spare"])
    assert samples[A].modalities == ["spectrum", "photometry"]
    assert Dataset(out).manifest.provenance["rejected_objects"] == 4
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]


def test_skip_bad_with_nothing_good_writes_nothing(tmp_path):
    bad = truncate(write_sdss_spectrum(tmp_path / f"{A}.fits"))
    out = tmp_path / "ds"
    with pytest.raises(DataValidationError, match="no object left"):
        ingest(IngestConfig(out=out, spectra=[bad], skip_bad=True), progress=False)
    assert_nothing_written(out)


def test_an_existing_dataset_is_kept_unless_overwrite_and_survives_a_failed_overwrite(tmp_path):
    first = write_sdss_spectrum(tmp_path / f"{A}.fits")
    out = tmp_path / "ds"
    ingest(IngestConfig(out=out, spectra=[first]), progress=False)
    with pytest.raises(FileExistsError, match="--overwrite"):
        ingest(IngestConfig(out=out, spectra=[first]), progress=False)

    bad = write_sdss_spectrum(tmp_path / f"{B}.fits", coadd_name="OTHER")
    with pytest.raises(DataValidationError):
        ingest(IngestConfig(out=out, spectra=[first, bad], overwrite=True), progress=False)
    assert [s.id for s in Dataset(out).iter_samples()] == [A]

    second = write_sdss_spectrum(tmp_path / f"{C}.fits")
    ingest(IngestConfig(out=out, spectra=[first, second], overwrite=True), progress=False)
    assert sorted(s.id for s in Dataset(out).iter_samples()) == [A, C]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ds.")]


def test_a_file_changed_between_the_passes_aborts_the_write(tmp_path, monkeypatch):
    from astrofm.data.ingest import pipeline

    spectra = [write_sdss_spectrum(tmp_path / f"{oid}.fits") for oid in (A, B)]
    original = pipeline._build_sample

    def change_then_build(object_id, entries, spec, survey):
        if object_id == B:  # A is already in a shard when B turns out to have changed
            write_sdss_spectrum(spectra[1], z=0.3)
        return original(object_id, entries, spec, survey)

    monkeypatch.setattr(pipeline, "_build_sample", change_then_build)
    out = tmp_path / "ds"
    with pytest.raises(DataValidationError) as info:
        ingest(IngestConfig(out=out, spectra=spectra, shard_size=1), progress=False)
    assert_names(info.value, spectra[1], B, "file")
    assert_nothing_written(out)


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match="nothing to ingest"):
        IngestConfig(out=tmp_path / "ds")
    with pytest.raises(FileNotFoundError, match="no such spectrum file"):
        ingest(IngestConfig(out=tmp_path / "ds", spectra=[tmp_path / "missing.fits"]), progress=False)
    assert_nothing_written(tmp_path / "ds")

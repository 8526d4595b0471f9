"""Ingest of SDSS/BOSS spectrum files: labels, flux-conserving resampling, masks, bad files."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from astropy.io import fits

from astrofm.data import Dataset, DataValidationError, SpectrumSpec
from astrofm.data.ingest import IngestConfig, ingest
from astrofm.data.resample import pixel_edges
from tests.astrofm.data.fits_factories import (
    LINE_AMPLITUDE,
    LINE_SIGMA,
    assert_names,
    assert_nothing_written,
    ingest_cli,
    line_spectrum,
    sdss_loglam,
    truncate,
    write_sdss_spectrum,
)


def _read_one(out):
    samples = list(Dataset(out).iter_samples())
    assert len(samples) == 1
    return samples[0]


def test_spectra_round_trip_through_the_cli_with_labels_and_provenance(tmp_path):
    paths = [write_sdss_spectrum(tmp_path / f"spec-0266-51602-000{i}.fits", z=0.1 * i,
                                 spectral_class="QSO" if i == 2 else "GALAXY") for i in (1, 2, 3)]
    out = tmp_path / "ds"
    assert ingest_cli(out, "--spectra", *paths, "--shard-size", "2") == 0

    dataset = Dataset(out)
    assert dataset.spec.modalities == ["spectrum"]
    samples = {s.id: s for s in dataset.iter_samples()}
    assert sorted(samples) == ["spec-0266-51602-0001", "spec-0266-51602-0002", "spec-0266-51602-0003"]
    for i in (1, 2, 3):
        sample = samples[f"spec-0266-51602-000{i}"]
        assert sample.labels["redshift"] == pytest.approx(0.1 * i, rel=1e-6)
        assert sample.labels["spectral_class"] == ("QSO" if i == 2 else "GALAXY")
        assert sample.labels["zwarning"] == 0 and sample.labels["redshift_err"] == pytest.approx(1e-4)
        assert sample.meta["survey"] == "sdss" and sample.meta["domain"] == "observed"
        assert sample.spectrum["flux"].shape == (SpectrumSpec().n_pixels,)

    provenance = json.loads((out / "manifest.json").read_text())["provenance"]
    assert provenance["astrofm_version"]
    assert provenance["config"]["spectra"] == [str(p) for p in paths]
    assert [f["sha256"] for f in provenance["source_files"]] == [
        hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
    assert not (out / "rejects.json").exists()


def test_resampling_conserves_flux_and_keeps_the_emission_line(tmp_path):
    path = write_sdss_spectrum(tmp_path / "spec-0001-50000-0001.fits")
    result = ingest(IngestConfig(out=tmp_path / "ds", spectra=[path]), progress=False)
    flux_out = _read_one(result.path).spectrum["flux"].astype(np.float64)

    with fits.open(path) as hdul:  # the float32 values the file holds, not the float64 ones we wrote
        loglam, flux_in = (np.asarray(hdul["COADD"].data[name], dtype=np.float64) for name in ("loglam", "flux"))
    edges_in = pixel_edges(10.0**loglam)
    cumulative_in = np.concatenate([[0.0], np.cumsum(flux_in * np.diff(edges_in))])
    grid_edges = pixel_edges(SpectrumSpec().wavelength())
    for first, last in ((600, 800), (700, 701), (200, 2500)):  # output pixel ranges inside the coverage
        a, b = grid_edges[first], grid_edges[last + 1]
        expected = np.interp(b, edges_in, cumulative_in) - np.interp(a, edges_in, cumulative_in)
        got = np.sum(flux_out[first:last + 1] * np.diff(grid_edges)[first:last + 1])
        assert got == pytest.approx(expected, rel=1e-5)
    # The line's integrated flux survives the change from 69 km/s log pixels to 2 A pixels.
    window = slice(690, 711)  # 4980-5020 A
    line_flux = np.sum(flux_out[window] - 5.0) * 2.0
    assert line_flux == pytest.approx(LINE_AMPLITUDE * LINE_SIGMA * np.sqrt(2 * np.pi), rel=0.01)


def test_ivar_is_zero_outside_the_coverage_and_at_masked_input_pixels(tmp_path):
    loglam = sdss_loglam()
    wave = 10.0**loglam
    ivar = np.full(loglam.shape, 4.0)
    ivar[(wave > 6000) & (wave < 6020)] = 0.0  # SDSS marks bad pixels with ivar 0
    path = write_sdss_spectrum(tmp_path / "spec-0001-50000-0002.fits", ivar=ivar)
    sample = _read_one(ingest(IngestConfig(out=tmp_path / "ds", spectra=[path]), progress=False).path)
    grid, out_ivar = SpectrumSpec().wavelength(), sample.spectrum["ivar"]

    assert np.all(out_ivar[grid < wave[0]] == 0) and np.all(out_ivar[grid > wave[-1]] == 0)
    assert np.all(sample.spectrum["flux"][grid < wave[0] - 2] == 0)
    assert np.all(out_ivar[(grid > 6002) & (grid < 6018)] == 0)
    inside = (grid > wave[0] + 2) & (grid < wave[-1] - 2) & ((grid < 5995) | (grid > 6025))
    assert np.all(out_ivar[inside] > 0)
    # Inverse variance of a 2 A average of pixels with ivar 4 each is larger than 4.
    assert np.median(out_ivar[inside]) > 4.0


def test_a_gzipped_spectrum_and_a_folder_of_spectra_are_read(tmp_path):
    import gzip

    folder = tmp_path / "spectra"
    folder.mkdir()
    plain = write_sdss_spectrum(folder / "spec-0001-50000-0003.fits")
    zipped = folder / "spec-0001-50000-0004.fits.gz"
    zipped.write_bytes(gzip.compress(write_sdss_spectrum(tmp_path / "x.fits").read_bytes()))
    result = ingest(IngestConfig(out=tmp_path / "ds", spectra=[folder]), progress=False)
    samples = {s.id: s for s in Dataset(result.path).iter_samples()}
    assert sorted(samples) == ["spec-0001-50000-0003", "spec-0001-50000-0004"]
    np.testing.assert_array_equal(samples["spec-0001-50000-0003"].spectrum["flux"],
                                  samples["spec-0001-50000-0004"].spectrum["flux"])
    assert plain.exists()


def _corrupt(path):
    data = bytearray(path.read_bytes())
    data[2880 + 300:2880 + 700] = b"\xfe" * 400  # inside the COADD header
    path.write_bytes(bytes(data))


def _write(path, data):
    path.write_bytes(data)
    return path


def _nan_flux(tmp_path, name):
    flux = line_spectrum(sdss_loglam())
    flux[100] = np.nan
    return write_sdss_spectrum(tmp_path / name, flux=flux)


BAD_SPECTRA = {
    "truncated": (lambda d, n: truncate(write_sdss_spectrum(d / n)), "file", "truncated"),
    "corrupt": (lambda d, n: _corrupt(write_sdss_spectrum(d / n)) or d / n, "file", "not a readable FITS"),
    "missing_coadd": (lambda d, n: write_sdss_spectrum(d / n, coadd_name="SPECTRUM"), "COADD", "no COADD HDU"),
    "missing_loglam": (lambda d, n: write_sdss_spectrum(d / n, drop_columns=("loglam",)), "COADD.loglam",
                       "no column"),
    "nan_flux": (_nan_flux, "COADD.flux", "non-finite"),
    "not_fits": (lambda d, n: _write(d / n, b"SIMPLE? no, just text\n" * 50), "file", "not a readable FITS"),
}


@pytest.mark.parametrize("kind", sorted(BAD_SPECTRA))
def test_a_bad_spectrum_stops_the_ingest_naming_file_object_and_field(tmp_path, kind):
    make, field, words = BAD_SPECTRA[kind]
    good = write_sdss_spectrum(tmp_path / "spec-0001-50000-0001.fits")
    bad = make(tmp_path, "spec-0001-50000-0009.fits")
    out = tmp_path / "ds"
    with pytest.raises(DataValidationError) as info:
        ingest(IngestConfig(out=out, spectra=[good, bad]), progress=False)
    assert_names(info.value, bad, "spec-0001-50000-0009", field)
    assert words in str(info.value)
    assert_nothing_written(out)


def test_specobj_without_redshift_is_an_error_and_no_specobj_means_no_labels(tmp_path):
    path = write_sdss_spectrum(tmp_path / "spec-0001-50000-0005.fits")
    with fits.open(path) as hdul:
        hdul["SPECOBJ"].columns.del_col("Z")
        hdul.writeto(tmp_path / "spec-0001-50000-0006.fits")
    with pytest.raises(DataValidationError) as info:
        ingest(IngestConfig(out=tmp_path / "ds", spectra=[tmp_path / "spec-0001-50000-0006.fits"]), progress=False)
    assert_names(info.value, tmp_path / "spec-0001-50000-0006.fits", "spec-0001-50000-0006", "SPECOBJ.Z")

    bare = write_sdss_spectrum(tmp_path / "spec-0001-50000-0007.fits", specobj=False)
    sample = _read_one(ingest(IngestConfig(out=tmp_path / "ds2", spectra=[bare]), progress=False).path)
    assert sample.labels == {}


def test_a_spectrum_that_misses_the_grid_is_an_error(tmp_path):
    path = write_sdss_spectrum(tmp_path / "spec-0001-50000-0008.fits", loglam=sdss_loglam(500, start=4.1))
    with pytest.raises(DataValidationError) as info:
        ingest(IngestConfig(out=tmp_path / "ds", spectra=[path]), progress=False)
    assert_names(info.value, path, "spec-0001-50000-0008", "COADD.loglam")
    assert "no valid pixel" in str(info.value)

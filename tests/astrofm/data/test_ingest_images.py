"""Ingest of FITS cut-outs: cube and per-band layouts, band order, stamp size, pixel scale, bad files."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from astrofm.data import Dataset, DataValidationError
from astrofm.data.ingest import IngestConfig, ingest
from astrofm.data.summary import format_summary, summarize
from tests.astrofm.data.fits_factories import (
    assert_names,
    assert_nothing_written,
    ingest_cli,
    stamp,
    truncate,
    write_image_bands,
    write_image_cube,
)


def _samples(out):
    return {s.id: s for s in Dataset(out).iter_samples()}


def test_image_cubes_round_trip_through_the_cli(tmp_path):
    data = stamp(seed=1)
    with_ivar = write_image_cube(tmp_path / "obj-a.fits", data=data)
    in_extension = write_image_cube(tmp_path / "obj-b.fits", data=data, bands=None, ivar=False, in_extension=True)
    out = tmp_path / "ds"
    assert ingest_cli(out, "--images", with_ivar, in_extension, "--survey", "legacysurvey") == 0

    dataset = Dataset(out)
    assert dataset.spec.modalities == ["image"]
    assert dataset.spec.image.bands == ["g", "r", "z"] and dataset.spec.image.size == 32
    samples = _samples(out)
    np.testing.assert_allclose(samples["obj-a"].image["flux"], data.astype(np.float32))
    np.testing.assert_allclose(samples["obj-a"].image["ivar"], 100.0)
    np.testing.assert_allclose(samples["obj-b"].image["flux"], data.astype(np.float32))
    assert "ivar" not in samples["obj-b"].image
    assert samples["obj-a"].meta["survey"] == "legacysurvey"
    # The manifest counts who carries the optional ivar, so image_noise can refuse stamps without one.
    counts = dataset.manifest.optional_array_counts
    assert sum(per_split.get("image.ivar", 0) for per_split in counts.values()) == 1
    assert "image ivar: held by 1 of 2 (the rest taken as unit weight)" in format_summary(summarize(dataset))


def test_the_bands_keyword_picks_and_orders_the_configured_bands(tmp_path):
    data = stamp(bands=4, seed=2)  # planes z, i, r, g
    path = write_image_cube(tmp_path / "obj-c.fits", data=data, bands="z,i,r,g")
    result = ingest(IngestConfig(out=tmp_path / "ds", images=[path]), progress=False)
    image = _samples(result.path)["obj-c"].image
    np.testing.assert_allclose(image["flux"], data[[3, 2, 0]].astype(np.float32))
    np.testing.assert_allclose(image["ivar"].shape, (3, 32, 32))


def test_one_hdu_per_band_with_ivar_hdus_and_a_cd_matrix(tmp_path):
    data = stamp(seed=3)
    path = write_image_bands(tmp_path / "obj-d.fits", data=data)
    result = ingest(IngestConfig(out=tmp_path / "ds", images=[path]), progress=False)
    image = _samples(result.path)["obj-d"].image
    np.testing.assert_allclose(image["flux"], data.astype(np.float32))
    np.testing.assert_allclose(image["ivar"], 50.0)


def test_image_size_and_bands_options(tmp_path):
    data = stamp(bands=2, size=16, seed=4)
    path = write_image_bands(tmp_path / "obj-e.fits", data=data, bands=("r", "z"), ivar=False)
    out = tmp_path / "ds"
    assert ingest_cli(out, "--images", path, "--image-size", "16", "--image-bands", "z,r") == 0
    spec = Dataset(out).spec.image
    assert spec.bands == ["z", "r"] and spec.size == 16
    np.testing.assert_allclose(_samples(out)["obj-e"].image["flux"], data[::-1].astype(np.float32))


def _nan_cube(path):
    data = stamp()
    data[1, 5, 7] = np.nan
    return write_image_cube(path, data=data)


def _bad_ivar_band(path):
    write_image_bands(path)
    with fits.open(path, mode="update") as hdul:
        del hdul["IVAR_r"]
    return path


BAD_IMAGES = {
    "wrong_stamp_size": (lambda p: write_image_cube(p, data=stamp(size=30)), "PRIMARY", "30 x 30"),
    "two_dimensional": (lambda p: write_image_cube(p, data=stamp()[0], bands=None), "PRIMARY", "shape (32, 32)"),
    "planes_without_bands_keyword": (lambda p: write_image_cube(p, data=stamp(bands=4), bands=None), "PRIMARY",
                                     "4 planes"),
    "band_missing_from_keyword": (lambda p: write_image_cube(p, bands="g,r,i"), "PRIMARY.BANDS", "'z'"),
    "pixel_scale": (lambda p: write_image_cube(p, pixscale=0.396), "PRIMARY.PIXSCALE", "0.396"),
    "cd_matrix_scale": (lambda p: write_image_bands(p, cd_scale_deg=0.2 / 3600), "g.CD1_1", "0.2"),
    "missing_band_hdu": (lambda p: write_image_bands(p, data=stamp(bands=2), bands=("g", "r")), "z", "band 'z'"),
    "ivar_for_some_bands": (_bad_ivar_band, "IVAR_r", "every band or for none"),
    "nan_pixel": (_nan_cube, "PRIMARY", "non-finite"),
    "ivar_shape": (lambda p: _replace_ivar(write_image_cube(p), np.ones((3, 16, 16))), "IVAR", "shape"),
    "negative_ivar": (lambda p: _replace_ivar(write_image_cube(p), -np.ones((3, 32, 32))), "IVAR", "negative"),
    # (cut at 60%: a cut at an HDU boundary, here 50%, leaves a valid FITS file without its IVAR HDU)
    "truncated": (lambda p: truncate(write_image_cube(p), 0.6), "file", "truncated"),
}


def _replace_ivar(path, ivar):
    with fits.open(path) as hdul:
        hdul["IVAR"] = fits.ImageHDU(ivar.astype(np.float32), name="IVAR")
        hdul.writeto(path, overwrite=True)
    return path


@pytest.mark.parametrize("kind", sorted(BAD_IMAGES))
def test_a_bad_cut_out_stops_the_ingest_naming_file_object_and_field(tmp_path, kind):
    make, field, words = BAD_IMAGES[kind]
    good = write_image_cube(tmp_path / "obj-good.fits")
    bad = make(tmp_path / "obj-bad.fits")
    out = tmp_path / "ds"
    with pytest.raises(DataValidationError) as info:
        ingest(IngestConfig(out=out, images=[good, bad]), progress=False)
    assert_names(info.value, bad, "obj-bad", field)
    assert words in str(info.value)
    assert_nothing_written(out)

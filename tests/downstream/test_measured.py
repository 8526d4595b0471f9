"""The measured-image reference: aperture fluxes and adaptive moments of the noisy stamps, then the MLP probe."""

from __future__ import annotations

import numpy as np
import pytest

from astrofm.data import DatasetSpec, DatasetWriter, ImageSpec, Sample
from downstream.regression.measured import (
    MeasurementConfig,
    aperture_radii,
    measure_image,
    measured_image_reference,
)
from tests.conftest import TINY_SPEC, synthetic_sample

SIZE = 16
CONFIG = MeasurementConfig(aperture_radii=(1.5, 3.0, 7.5, 20.0))  # 20 does not fit a 16-pixel stamp


def gaussian_stamp(fluxes, sigma: float) -> np.ndarray:
    """(C, SIZE, SIZE) a centred round Gaussian of the given total flux per band."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] - (SIZE - 1) / 2
    profile = np.exp(-(xx**2 + yy**2) / (2 * sigma**2))
    return np.stack([f * profile / profile.sum() for f in fluxes])


def test_aperture_fluxes_grow_outwards_to_the_total_and_moments_measure_the_size():
    stamp = gaussian_stamp([2.0, 5.0], sigma=1.2)
    features = measure_image(stamp, CONFIG)
    radii = aperture_radii(SIZE, CONFIG)
    assert radii == [1.5, 3.0, 7.5]
    fluxes = np.sinh(features[: 2 * len(radii)].reshape(2, len(radii))) * CONFIG.flux_softening
    assert np.all(np.diff(fluxes, axis=1) > 0)  # cumulative apertures
    np.testing.assert_allclose(fluxes[:, -1], [2.0, 5.0], rtol=1e-3)  # the widest holds all the light
    sigma, e1, e2, failed = features[-4:]
    assert failed == 0 and sigma == pytest.approx(1.2, rel=0.02) and abs(e1) < 1e-3 and abs(e2) < 1e-3
    assert measure_image(gaussian_stamp([2.0, 5.0], sigma=2.4), CONFIG)[-4] == pytest.approx(2.4, rel=0.02)


def test_a_stamp_whose_moments_fail_is_flagged_not_dropped():
    features = measure_image(np.zeros((3, SIZE, SIZE)), CONFIG)
    assert np.all(np.isfinite(features))
    np.testing.assert_array_equal(features[-4:], [0.0, 0.0, 0.0, 1.0])


def test_bad_stamps_and_radii_are_refused():
    with pytest.raises(ValueError, match=r"\(C, H, W\) with H == W, got shape \(16, 16\)"):
        measure_image(np.zeros((SIZE, SIZE)), CONFIG)
    with pytest.raises(ValueError, match="no aperture radius of \\[20.0\\] fits a 16-pixel stamp"):
        aperture_radii(SIZE, MeasurementConfig(aperture_radii=(20.0,)))


def write_image_dataset(folder, n: int, informative: bool, seed: int = 0, label=None):
    """Galaxies whose redshift sets their g/r colour and size (informative), or a redshift unrelated to
    the stamps; Gaussian sky noise on every pixel. Every 50th object has photometry but no image."""
    rng = np.random.default_rng(seed)
    spec = DatasetSpec(spectrum=None, photometry=TINY_SPEC.photometry, image=ImageSpec(bands=["g", "r"], size=SIZE))
    with DatasetWriter(folder, spec) as writer:
        for i in range(n):
            z = rng.uniform(0.05, 1.0)
            shown = z if informative else rng.uniform(0.05, 1.0)
            stamp = gaussian_stamp([10.0 * (1.0 - 0.8 * shown), 10.0], sigma=0.8 + 2.0 * shown)
            stamp += rng.normal(0.0, 0.01, stamp.shape)
            sample = Sample(id=f"gal-{i:05d}", labels={"redshift": z if label is None else label},
                            meta={"survey": "test", "domain": "observed"})
            sample.photometry = {"flux": stamp.sum(axis=(1, 2)), "flux_err": np.full(2, 0.1)}
            sample.image = None if i % 50 == 0 else {"flux": stamp}
            writer.add(sample)
    return folder


@pytest.mark.usefixtures("one_thread")
def test_the_reference_recovers_a_label_the_images_show_and_not_one_they_hide(tmp_path):
    shown = measured_image_reference(write_image_dataset(tmp_path / "shown", 600, True), "redshift",
                                     seeds=1, config=CONFIG, progress=False)
    hidden = measured_image_reference(write_image_dataset(tmp_path / "hidden", 600, False), "redshift",
                                      seeds=1, config=CONFIG, progress=False)
    assert shown["mean"]["r2"] > 0.9
    assert hidden["mean"]["r2"] < 0.15
    assert shown["n_train"] + shown["n_val"] + shown["n_test"] == 600 - 600 // 50  # the imageless are skipped
    assert "[1.5, 3.0, 7.5] pixels" in shown["features"]


def test_a_dataset_without_images_or_a_text_label_is_named(tmp_path):
    spectra_only = tmp_path / "spectra"
    spectrum = synthetic_sample(0)
    spectrum.photometry = spectrum.image = None
    with DatasetWriter(spectra_only, DatasetSpec(spectrum=TINY_SPEC.spectrum, photometry=None, image=None)) as writer:
        writer.add(spectrum)
    with pytest.raises(ValueError, match="spectra: the dataset has no image modality"):
        measured_image_reference(spectra_only, progress=False)
    texts = write_image_dataset(tmp_path / "texts", 3, True, label="high")
    with pytest.raises(ValueError, match="texts: object gal-00001: label 'redshift' is not numeric"):
        measured_image_reference(texts, progress=False)

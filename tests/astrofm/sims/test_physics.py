"""The physics agrees with itself: band fluxes match speclite, magnitudes match their definitions,
lines land at (1+z) times their rest wavelength, spectra, photometry and images carry the same flux."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import speclite.filters

from astrofm.sims.observe import render_image, true_spectrum
from astrofm.sims.population import ObjectStreams, draw_population, line_labels
from astrofm.sims.sed import LINE_NAMES, calzetti_k, rest_grid

from .conftest import suite_with


def test_rest_grid_resolves_lines_and_reaches_wise():
    wave = rest_grid()
    assert wave[0] == pytest.approx(900.0) and wave[-1] > 55500 / 1.01
    assert np.allclose(np.diff(np.log(wave)), 1e-4)


def test_calzetti_normalisation_and_tail():
    k = calzetti_k(np.array([5500.0, 22000.0, 34000.0, 46000.0]), 4.05)
    assert k[0] == pytest.approx(4.05, abs=0.01)  # k(V) = R_V by definition
    assert np.all(np.diff(k) < 0) and np.all(k > 0)


def test_band_fluxes_match_speclite(simulator, truth):
    filters = speclite.filters.load_filters(*simulator.spec.photometry.filters)
    params = truth["params"]
    for i in range(3):
        wave, flux = simulator.sed.observed_sed(params, i, 3000.0, 59000.0)
        table = filters.get_ab_maggies(flux, wave)
        expected = np.array([table[name][0] for name in table.colnames]) * 1e9
        np.testing.assert_allclose(truth["flux_true"][i], expected, rtol=1e-6)


def test_magnitudes_follow_their_definitions(simulator, truth):
    params = truth["params"]
    # Apparent r: the label and the true flux are the same number, and all pass the limit.
    mag_r = 22.5 - 2.5 * np.log10(truth["flux_true"][:, 1])
    np.testing.assert_allclose(params["mag_r"], mag_r, atol=1e-9)
    assert np.all(mag_r <= simulator.suite.population.mag_limit_r + 1e-9)
    # Absolute r of the continuum alone (lines switched off) is the drawn M_r.
    no_lines = {**params, "line_flux_10pc": np.zeros_like(params["line_flux_10pc"])}
    absolute = -2.5 * np.log10(simulator.sed.band_maggies("r", no_lines, rest=True))
    np.testing.assert_allclose(absolute, params["abs_mag_r"], atol=1e-9)
    # Dimming is Planck18's luminosity distance; redshifts sit on the ln(1+z) grid.
    from astropy.cosmology import Planck18

    d_l = Planck18.luminosity_distance(params["redshift"]).to_value("pc")
    np.testing.assert_allclose(params["dimming"], (10.0 / d_l) ** 2, rtol=1e-10)
    np.testing.assert_allclose(np.log1p(params["redshift"]) / 1e-4, params["shift"], atol=1e-6)
    assert params["redshift"].min() >= 0.01 and params["redshift"].max() <= 1.0


def test_magnitude_limit_is_a_knob(simulator):
    suite = suite_with(population=dataclasses.replace(simulator.suite.population, mag_limit_r=19.5))
    streams = [ObjectStreams.for_object(3, i) for i in range(24)]
    params = draw_population(streams, suite, simulator.sed, simulator.cosmo)
    assert params["mag_r"].max() <= 19.5


def test_emission_lines_land_at_one_plus_z(quiet_simulator):
    truth = quiet_simulator.truth(0, 40)
    params, spec = truth["params"], quiet_simulator.spec.spectrum
    grid = spec.wavelength()
    labels = line_labels(params, quiet_simulator.sed)
    checked = 0
    for i in np.argsort(-labels["halpha_ew"])[:12]:
        flux = true_spectrum(quiet_simulator.sed, params, i, spec)
        z = params["redshift"][i]
        for rest in (6564.61, 5008.24):  # Halpha, [OIII]5008
            centre = rest * (1 + z)
            if not grid[0] + 30 < centre < grid[-1] - 30:
                continue
            window = np.abs(grid - centre) < 25
            assert abs(grid[window][np.argmax(flux[window])] - centre) <= spec.wave_step, (i, rest, z)
            checked += 1
    assert checked >= 5


def test_line_flux_in_spectrum_matches_label(quiet_simulator):
    truth = quiet_simulator.truth(0, 40)
    params, spec = truth["params"], quiet_simulator.spec.spectrum
    grid = spec.wavelength()
    labels = line_labels(params, quiet_simulator.sed)
    i = int(np.argmax(np.where(params["redshift"] < 0.45, labels["halpha_flux"], -1)))
    flux = true_spectrum(quiet_simulator.sed, params, i, spec)
    centre = 6564.61 * (1 + params["redshift"][i])
    window = np.abs(grid - centre) < 40  # Halpha and both [NII] lines
    side = (np.abs(grid - centre) > 60) & (np.abs(grid - centre) < 120)
    measured = ((flux[window] - np.median(flux[side])) * spec.wave_step).sum()
    expected = labels["halpha_flux"][i] * (1 + quiet_simulator.suite.lines.nii_halpha_ratio * (1 + 1 / 3.05))
    assert measured == pytest.approx(expected, rel=0.05)


def test_photometry_matches_the_spectrum_synthetic_flux(simulator, truth):
    band = speclite.filters.load_filter("decam2014-r")
    spec = simulator.spec.spectrum
    grid = spec.wavelength()
    for i in range(8):
        flux = true_spectrum(simulator.sed, truth["params"], i, spec) * 1e-17
        padded, wave = band.pad_spectrum(flux, grid, method="zero")  # r has a faint tail past 9800 A
        synthetic = band.get_ab_maggies(padded, wave) * 1e9
        assert synthetic == pytest.approx(truth["flux_true"][i, 1], rel=0.01)


def test_noiseless_image_holds_the_photometric_flux(simulator, truth):
    morph, image = truth["morph"], simulator.spec.image
    for i in range(16):
        fluxes = truth["flux_true"][i, simulator.image_columns]
        stamp = render_image(morph, i, fluxes, image.bands, image, simulator.suite.observing.psf_beta)
        ratio = stamp.sum(axis=(1, 2)) / fluxes
        assert np.all(ratio <= 1.005) and np.all(ratio > 0.7), (i, ratio)  # light beyond the stamp is lost
        if morph["half_light_radius_arcsec"][i] < 0.5:
            assert np.all(ratio > 0.97), (i, ratio)


def test_generated_samples_agree_across_modalities(simulator):
    samples = simulator.simulate(0, 24)
    band = speclite.filters.load_filter("decam2014-r")
    grid = simulator.spec.spectrum.wavelength()
    for sample in samples:
        labels = sample.labels
        true = np.array([labels[f"flux_true_{b}"] for b in simulator.spec.photometry.bands])
        if sample.photometry is not None:  # observed = true + noise at the stated error
            pull = (sample.photometry["flux"] - true) / sample.photometry["flux_err"]
            assert np.all(np.abs(pull) < 6)
        if sample.image is not None:
            total = sample.image["flux"].sum(axis=(1, 2))
            sigma = np.sqrt((1.0 / sample.image["ivar"]).sum(axis=(1, 2)))
            expected = true[simulator.image_columns]
            small = labels["half_light_radius_arcsec"] < 0.5
            tolerance = 5 * sigma + (0.03 if small else 0.3) * expected
            assert np.all(np.abs(total - expected) < tolerance), (sample.id, total, expected)
        if sample.spectrum is not None:
            padded, wave = band.pad_spectrum(sample.spectrum["flux"] * 1e-17, grid, method="zero")
            synthetic = float(band.get_ab_maggies(padded, wave)) * 1e9
            # ~1000 pixels of sigma ~0.35 average down to ~0.05 nanomaggy: 0.25 is about 5 sigma.
            assert synthetic == pytest.approx(labels["flux_true_r"], abs=0.02 * labels["flux_true_r"] + 0.25)


def test_line_labels_are_consistent(truth, simulator):
    labels = line_labels(truth["params"], simulator.sed)
    assert set(labels) >= {"halpha_flux", "hbeta_flux", "oii_flux", "oiii_flux", "halpha_ew"}
    assert np.all(labels["halpha_flux"] > 0) and np.all(labels["halpha_ew"] > 0)
    # Hbeta / Halpha: intrinsic 1/2.86, reddened further by the gas dust.
    assert np.all(labels["hbeta_flux"] / labels["halpha_flux"] <= 1 / 2.86 + 1e-9)
    assert LINE_NAMES.index("halpha") >= 0

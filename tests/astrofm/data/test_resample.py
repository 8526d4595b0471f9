"""Flux-conserving resampling: integrals preserved, ivar propagated, masks and coverage respected."""

from __future__ import annotations

import numpy as np
import pytest

from astrofm.data.resample import pixel_edges, resample_spectrum


def _sdss_grid(n=3000):
    return 10 ** (3.58 + 1e-4 * np.arange(n))  # log-lambda pixels as SDSS uses


def test_integrated_flux_is_conserved_over_whole_output_pixels():
    wave_in = _sdss_grid()
    rng = np.random.default_rng(0)
    flux_in = rng.normal(5, 2, wave_in.size)
    wave_out = np.arange(3900.0, 7000.0, 2.0)
    flux_out, ivar_out = resample_spectrum(wave_in, flux_in, np.ones_like(flux_in), wave_out)
    edges_in, edges_out = pixel_edges(wave_in), pixel_edges(wave_out)
    # integrate the piecewise-constant input exactly over the output range
    lo, hi = edges_out[0], edges_out[-1]
    cumulative = np.concatenate([[0], np.cumsum(flux_in * np.diff(edges_in))])
    expected = np.interp(hi, edges_in, cumulative) - np.interp(lo, edges_in, cumulative)
    assert np.sum(flux_out * np.diff(edges_out)) == pytest.approx(expected, rel=1e-10)
    assert np.all(ivar_out > 0)


def test_constant_flux_stays_constant_and_ivar_grows_when_binning_up():
    wave_in = np.arange(4000.5, 5000.0, 1.0)  # pixel edges on whole Angstroms
    flux_out, ivar_out = resample_spectrum(wave_in, np.full(wave_in.size, 3.0), np.full(wave_in.size, 4.0),
                                           np.arange(4102.0, 4900.0, 4.0))  # edges 4100, 4104, ...
    np.testing.assert_allclose(flux_out, 3.0)
    np.testing.assert_allclose(ivar_out, 16.0)  # mean of 4 pixels: variance / 4


def test_outside_coverage_and_masked_pixels_get_zero_ivar():
    wave_in = np.arange(4000.0, 5000.0, 1.0)
    ivar_in = np.ones(wave_in.size)
    ivar_in[500] = 0.0  # 4500 A
    wave_out = np.arange(3600.0, 5400.0, 2.0)
    _, ivar_out = resample_spectrum(wave_in, np.ones(wave_in.size), ivar_in, wave_out)
    assert np.all(ivar_out[wave_out < 3999] == 0) and np.all(ivar_out[wave_out > 5000] == 0)
    assert ivar_out[np.searchsorted(wave_out, 4500.0)] == 0
    assert np.all(ivar_out[(wave_out > 4010) & (wave_out < 4490)] > 0)


def test_an_emission_line_keeps_its_flux_and_position():
    wave_in = _sdss_grid()
    line = 50 * np.exp(-0.5 * ((wave_in - 6564.6) / 3.0) ** 2)
    wave_out = np.arange(3600.0, 9800.0, 2.0)
    flux_out, _ = resample_spectrum(wave_in, line, None, wave_out)
    assert abs(wave_out[np.argmax(flux_out)] - 6564.6) <= 1.0
    line_flux_in = np.sum(line * np.diff(pixel_edges(wave_in)))
    assert np.sum(flux_out * 2.0) == pytest.approx(line_flux_in, rel=1e-6)


def test_bad_grids_are_refused():
    with pytest.raises(ValueError, match="strictly increasing"):
        resample_spectrum(np.array([1.0, 3.0, 2.0]), np.ones(3), None, np.arange(5.0))
    with pytest.raises(ValueError, match="shape"):
        resample_spectrum(np.arange(5.0), np.ones(4), None, np.arange(5.0))

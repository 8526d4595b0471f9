"""Observing the galaxies: photometry, spectra and images, with noise.

Units:
- photometry: nanomaggies (AB: m = 22.5 - 2.5 log10 flux), per band of the PhotometrySpec;
- spectra: 1e-17 erg/s/cm^2/A on the SpectrumSpec grid (vacuum A), ivar in the inverse square;
- images: nanomaggies per pixel, so a band's image summed over all pixels (out to infinity) is the
  band's true photometric flux; ivar per pixel in 1/nanomaggy^2.
"""

from __future__ import annotations

import numpy as np

from astrofm.data.format import ImageSpec, SpectrumSpec
from astrofm.data.resample import resample_spectrum
from astrofm.sims.sed import SedModel
from astrofm.sims.suite import ObservingConfig

# galsim accuracy: 1% folding, a coarser maxk and 1e-4 k-space accuracy (halves the one-off cost of
# each new Sersic index) keep a 3-band render at a few ms; the stamp is far
# smaller than the FFT box, so the stamp's pixels do not notice.
GSPARAMS_KW = {"folding_threshold": 1e-2, "maxk_threshold": 2e-3, "kvalue_accuracy": 1e-4}


# ---------------------------------------------------------------------------------------------
# Photometry.
# ---------------------------------------------------------------------------------------------


def true_fluxes(sed: SedModel, params: dict[str, np.ndarray]) -> np.ndarray:
    """(n, B) noiseless fluxes in nanomaggies, in the order of the model's bands."""
    return np.stack([sed.band_maggies(band.name, params) for band in sed.bands], axis=1) * 1e9


def photometry_sigma(flux_true: np.ndarray, bands: list[str], obs: ObservingConfig) -> np.ndarray:
    """(n, B) 1-sigma errors in nanomaggies: sky-limited term from the 5-sigma depth, plus a
    fractional calibration floor, in quadrature, times noise_scale."""
    depth = np.array([obs.depth[b] for b in bands])
    sky = 10.0 ** (-0.4 * (depth - 22.5)) / 5.0  # (B,) nanomaggies
    return obs.noise_scale * np.sqrt(sky**2 + (obs.photometry_floor * flux_true) ** 2)


# ---------------------------------------------------------------------------------------------
# Spectra.
# ---------------------------------------------------------------------------------------------


def true_spectrum(sed: SedModel, params: dict[str, np.ndarray], i: int, spec: SpectrumSpec) -> np.ndarray:
    """(L,) noiseless spectrum of object i on the dataset grid, 1e-17 erg/s/cm^2/A (flux-conserving)."""
    grid = spec.wavelength()
    wave, flux = sed.observed_sed(params, i, grid[0] - spec.wave_step, grid[-1] + spec.wave_step)
    resampled, _ = resample_spectrum(wave, flux * 1e17, None, grid)
    return resampled


def spectrum_variance(true: np.ndarray, obs: ObservingConfig) -> np.ndarray:
    """(L,) per-pixel variance: a sky term plus a Poisson-like term growing with the source flux."""
    return obs.noise_scale**2 * (obs.spectrum_sky_sigma**2 + obs.spectrum_poisson * np.maximum(true, 0.0))


# ---------------------------------------------------------------------------------------------
# Images.
# ---------------------------------------------------------------------------------------------


def _profile(galsim, morph: dict[str, np.ndarray], i: int, gsparams, trunc: float = 0.0):
    """Bulge + disk light profile of object i with unit total flux, sheared to its axis ratio."""
    disk_re = float(morph["half_light_radius_arcsec"][i])
    bulge_fraction = float(morph["bulge_fraction"][i])
    parts = []
    if bulge_fraction > 1e-4:
        parts.append(galsim.Sersic(float(morph["sersic_index_bulge"][i]), half_light_radius=float(
            morph["bulge_half_light_radius_arcsec"][i]), flux=bulge_fraction, trunc=trunc, gsparams=gsparams))
    if bulge_fraction < 1 - 1e-4:
        parts.append(galsim.Sersic(float(morph["sersic_index_disk"][i]), half_light_radius=disk_re,
                                   flux=1.0 - bulge_fraction, trunc=trunc, gsparams=gsparams))
    profile = parts[0] if len(parts) == 1 else galsim.Add(parts, gsparams=gsparams)
    angle = float(morph["position_angle"][i]) * galsim.degrees
    return profile.shear(q=float(morph["axis_ratio"][i]), beta=angle)


_GSPARAMS = None


def _gsparams():
    global _GSPARAMS
    if _GSPARAMS is None:  # one object per process: galsim caches Sersic tables per (n, gsparams)
        import galsim

        _GSPARAMS = galsim.GSParams(**GSPARAMS_KW)
    return _GSPARAMS


def render_image(morph: dict[str, np.ndarray], i: int, fluxes: np.ndarray, bands: list[str],
                 image: ImageSpec, psf_beta: float) -> np.ndarray:
    """(C, H, W) noiseless stamp of object i in nanomaggies per pixel, one PSF-convolved band each.

    `fluxes` (C,) are the bands' true total fluxes; the stamp holds that flux minus what falls outside.
    """
    import galsim

    gsparams = _gsparams()
    out = np.empty((len(bands), image.size, image.size), dtype=np.float64)
    fwhm = [float(morph[f"psf_fwhm_{band}"][i]) for band in bands]
    try:
        profile = _profile(galsim, morph, i, gsparams)
        for c in range(len(bands)):
            out[c] = _draw(galsim, profile, fluxes[c], fwhm[c], psf_beta, image, gsparams)
    except galsim.GalSimFFTSizeError:
        # A huge, cuspy profile: truncate it well outside the stamp, which changes no pixel we keep.
        profile = _profile(galsim, morph, i, gsparams, trunc=4.0 * image.size * image.pixel_scale)
        for c in range(len(bands)):
            out[c] = _draw(galsim, profile, fluxes[c], fwhm[c], psf_beta, image, gsparams)
    return out


def _draw(galsim, profile, flux: float, fwhm: float, beta: float, image: ImageSpec, gsparams) -> np.ndarray:
    psf = galsim.Moffat(beta=beta, fwhm=fwhm, gsparams=gsparams)
    final = galsim.Convolve([profile.withFlux(flux), psf], gsparams=gsparams)
    return final.drawImage(nx=image.size, ny=image.size, scale=image.pixel_scale).array


def image_sigma(bands: list[str], obs: ObservingConfig) -> np.ndarray:
    """(C,) sky noise per pixel in nanomaggies."""
    return obs.noise_scale * np.array([obs.sky_sigma[b] for b in bands])

"""Drawing the physical parameters of galaxies: redshift, luminosity, type, star formation, dust, shape.

Every object has its own random streams (`ObjectStreams`), derived from (seed, index) only, so an
object comes out the same whatever chunk or worker process draws it. Draws are made per object in a
fixed order; the arithmetic on them is vectorised over the chunk.

The magnitude limit is applied by redrawing: each still-unaccepted object draws one more candidate per
round, and a candidate is accepted when its apparent r magnitude, computed exactly from its redshifted
SED through the DECam r curve (no K-correction approximation), is at most `mag_limit_r`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from astrofm.sims.sed import FOUR_PI_10PC2, LINE_NAMES, SedModel, ab_maggies_to_mag, line_luminosities
from astrofm.sims.suite import SuiteConfig

M_SUN_R = 4.65  # AB absolute magnitude of the Sun in r (Willmer 2018)
MAX_ROUNDS = 500  # candidates per object before giving up (a magnitude limit nothing can pass)
TYPE_GRID = np.array([0.0, 1.0, 2.0, 3.0])  # E, Sbc, Scd, Im
SERSIC_STEP = 0.05  # galsim caches one lookup table per Sersic index: a grid keeps rendering fast


@dataclass
class ObjectStreams:
    """Independent generators of one object: population draws, morphology draws, observation noise."""

    population: np.random.Generator
    morphology: np.random.Generator
    noise: np.random.Generator

    @classmethod
    def for_object(cls, seed: int, index: int) -> ObjectStreams:
        # Separate child streams: the number of redraws an object needs (which depends on the knobs)
        # never shifts its shape or noise draws, so suites run with one seed stay paired object by object.
        children = np.random.SeedSequence([seed, index]).spawn(3)
        return cls(*(np.random.default_rng(child) for child in children))


class Cosmology:
    """Planck 2018 distances (astropy's bundled realisation; no download)."""

    def __init__(self):
        from astropy.cosmology import Planck18

        self.cosmo = Planck18

    def luminosity_distance_pc(self, z: np.ndarray) -> np.ndarray:
        return self.cosmo.luminosity_distance(np.asarray(z, dtype=np.float64)).to_value("pc")

    def kpc_per_arcsec(self, z: np.ndarray) -> np.ndarray:
        d_a_kpc = self.cosmo.angular_diameter_distance(np.asarray(z, dtype=np.float64)).to_value("kpc")
        return d_a_kpc * math.pi / (180.0 * 3600.0)


# ---------------------------------------------------------------------------------------------
# Stellar population, star formation, dust, lines (with the magnitude limit).
# ---------------------------------------------------------------------------------------------


def _candidate_draws(rngs: list[np.random.Generator], suite: SuiteConfig) -> dict[str, np.ndarray]:
    """One candidate per generator: (n,) uniform, normal and gamma variates, in a fixed order."""
    shapes = np.array([2.0, suite.dust.av_shape])
    u = np.stack([rng.random(3) for rng in rngs])  # (n, 3): type, late t, [OIII]/Hbeta
    g = np.stack([rng.standard_normal(5) for rng in rngs])  # (n, 5): early t, M_r, M/L, sSFR, [OII]
    gam = np.stack([rng.standard_gamma(shapes) for rng in rngs])  # (n, 2): redshift, A_V
    return {"u": u, "g": g, "gam": gam}


def _candidate_params(draws: dict[str, np.ndarray], suite: SuiteConfig) -> dict[str, np.ndarray]:
    pop, dust, lines = suite.population, suite.dust, suite.lines
    u, g, gam = draws["u"], draws["g"], draws["gam"]
    # p(z) ∝ z^2 exp(-(z/z0)^1.5): with x = (z/z0)^1.5, p(x) ∝ x e^-x, a Gamma(2) variate.
    # Then onto the grid's ln(1+z) step (30 km/s), which makes redshifting an integer pixel shift.
    shift = SedModel.redshift_shift(pop.z0 * gam[:, 0] ** (2.0 / 3.0))
    z = SedModel.shift_redshift(shift)
    early = u[:, 0] < pop.early_type_fraction
    t = np.where(early, np.minimum(np.abs(g[:, 0]) * pop.early_type_width, 1.0),
                 pop.late_type_min + (3.0 - pop.late_type_min) * u[:, 1])
    abs_mag = pop.abs_mag_mean + pop.abs_mag_sigma * g[:, 1]
    log_ml = np.interp(t, TYPE_GRID, pop.log_ml_by_type) + pop.log_ml_scatter * g[:, 2]
    log_mass = 0.4 * (M_SUN_R - abs_mag) + log_ml
    log_ssfr = np.interp(t, TYPE_GRID, pop.log_ssfr_by_type) + pop.log_ssfr_scatter * g[:, 3]
    # Star-forming galaxies are dustier: the mean A_V moves smoothly from the passive to the full value.
    active = 1.0 / (1.0 + np.exp(-(log_ssfr + 10.8) / 0.25))
    av_mean = dust.av_mean * (dust.av_passive_factor + (1.0 - dust.av_passive_factor) * active)
    av = np.minimum(av_mean * gam[:, 1] / dust.av_shape, dust.av_max)
    low, high = lines.oiii_hbeta_log_range
    return {
        "redshift": z, "shift": shift, "early": early, "sed_type": t, "abs_mag_r": abs_mag,
        "log_stellar_mass": log_mass,
        "log_ssfr": log_ssfr, "log_sfr": log_mass + log_ssfr, "dust_av": av,
        "oii_halpha_ratio": lines.oii_halpha_ratio * 10.0 ** (lines.oii_scatter * g[:, 4]),
        "oiii_hbeta_log_ratio": low + (high - low) * u[:, 2],
    }


def _complete(params: dict[str, np.ndarray], suite: SuiteConfig, sed: SedModel, cosmo: Cosmology) -> None:
    """Add normalisation, line fluxes, distances and the apparent r magnitude, in place."""
    cont_rest, _ = sed.band_parts("r", np.zeros_like(params["shift"]), params["sed_type"], params["dust_av"])
    params["norm"] = 10.0 ** (-0.4 * params["abs_mag_r"]) / cont_rest  # continuum alone has M_r at 10 pc
    lum = line_luminosities(10.0 ** params["log_sfr"], params["oii_halpha_ratio"],
                            params["oiii_hbeta_log_ratio"], suite.lines)  # (n, L) erg/s, dust-free
    params["line_flux_10pc"] = lum / FOUR_PI_10PC2  # (n, L) erg/s/cm^2 at 10 pc, before dust
    d_l = cosmo.luminosity_distance_pc(params["redshift"])
    params["luminosity_distance_mpc"] = d_l / 1e6
    params["dimming"] = (10.0 / d_l) ** 2
    params["mag_r"] = ab_maggies_to_mag(sed.band_maggies("r", params))


def _take(params: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    return {key: value[rows] for key, value in params.items()}


def draw_population(streams: list[ObjectStreams], suite: SuiteConfig, sed: SedModel, cosmo: Cosmology
                    ) -> dict[str, np.ndarray]:
    """Physical parameters of len(streams) galaxies that pass the magnitude limit; arrays of shape (n,).

    Units: redshift (on a grid of 1e-4 in ln(1+z); `shift` is that grid index); abs_mag_r, mag_r
    AB; log_stellar_mass dex Msun; log_ssfr dex 1/yr; log_sfr dex Msun/yr; dust_av mag; norm
    (continuum scale); line_flux_10pc (n, L) erg/s/cm^2 at 10 pc before dust; dimming (10pc/D_L)^2.
    """
    pop = suite.population
    n = len(streams)
    accepted: dict[str, np.ndarray] | None = None
    pending = np.arange(n)
    for _ in range(MAX_ROUNDS):
        params = _candidate_params(_candidate_draws([streams[i].population for i in pending], suite), suite)
        ok = ((params["redshift"] >= pop.z_min) & (params["redshift"] <= pop.z_max)
              & (params["abs_mag_r"] >= pop.abs_mag_range[0]) & (params["abs_mag_r"] <= pop.abs_mag_range[1]))
        rows = np.flatnonzero(ok)
        if rows.size == 0:
            continue
        params = _take(params, rows)
        _complete(params, suite, sed, cosmo)
        passed = params["mag_r"] <= pop.mag_limit_r
        params = _take(params, passed)
        if accepted is None:
            accepted = {key: np.zeros((n, *value.shape[1:]), dtype=value.dtype) for key, value in params.items()}
        for key, value in params.items():
            accepted[key][pending[rows[passed]]] = value
        pending = np.delete(pending, rows[passed])
        if pending.size == 0:
            return accepted
    raise ValueError(f"population: no galaxy passed mag_limit_r={pop.mag_limit_r} after {MAX_ROUNDS} "
                     f"draws for {pending.size} objects; the magnitude limit is too bright for the knobs")


def line_labels(params: dict[str, np.ndarray], sed: SedModel) -> dict[str, np.ndarray]:
    """Observed (dust-attenuated) Halpha, Hbeta, [OII], [OIII] fluxes in 1e-17 erg/s/cm^2 and the
    rest-frame Halpha equivalent width in A (line and continuum both attenuated)."""
    attenuated = params["line_flux_10pc"] * sed.line_attenuation(params["dust_av"])  # (n, L) at 10 pc
    observed = attenuated * params["dimming"][:, None] * 1e17
    col = {name: k for k, name in enumerate(LINE_NAMES)}
    halpha_cont = sed.continuum_at(params, 6564.61)
    return {
        "halpha_flux": observed[:, col["halpha"]],
        "hbeta_flux": observed[:, col["hbeta"]],
        "oii_flux": observed[:, col["oii_3727"]] + observed[:, col["oii_3730"]],
        "oiii_flux": observed[:, col["oiii_5008"]],
        "halpha_ew": attenuated[:, col["halpha"]] / halpha_cont,
    }


# ---------------------------------------------------------------------------------------------
# Morphology and seeing.
# ---------------------------------------------------------------------------------------------


def draw_morphology(streams: list[ObjectStreams], params: dict[str, np.ndarray], suite: SuiteConfig,
                    cosmo: Cosmology, pixel_scale: float) -> dict[str, np.ndarray]:
    """Bulge + disk shape and per-object seeing, arrays of shape (n,).

    half_light_radius_kpc/arcsec is the disk's R_e (the bulge has bulge_size_ratio of it), after
    clipping to `max_radius_fraction` of the stamp (`size_clipped` says where that happened).
    """
    morph, obs = suite.morphology, suite.observing
    u = np.stack([s.morphology.random(4) for s in streams])  # (n, 4): n_bulge, n_disk, q, angle
    g = np.stack([s.morphology.standard_normal(3) for s in streams])  # (n, 3): size, B/T, seeing
    log_re = (morph.size_log_re_at_m0 + morph.size_slope * (params["abs_mag_r"] - morph.size_m0)
              + morph.size_early_offset * params["early"] + morph.size_scatter * g[:, 0])
    kpc_per_arcsec = cosmo.kpc_per_arcsec(params["redshift"])
    re_arcsec = 10.0 ** log_re / kpc_per_arcsec
    max_arcsec = morph.max_radius_fraction * obs.stamp_size * pixel_scale
    clipped = re_arcsec > max_arcsec
    re_arcsec = np.clip(re_arcsec, 0.02, max_arcsec)

    def on_grid(low: float, high: float, x: np.ndarray) -> np.ndarray:
        return np.round((low + (high - low) * x) / SERSIC_STEP) * SERSIC_STEP

    bulge_fraction = np.clip(np.interp(params["sed_type"], TYPE_GRID, morph.bulge_fraction_by_type)
                             + morph.bulge_fraction_scatter * g[:, 1], 0.0, 1.0)
    n_bulge = on_grid(*morph.sersic_bulge_range, u[:, 0])
    n_disk = on_grid(*morph.sersic_disk_range, u[:, 1])
    q_min = np.where(params["early"], morph.axis_ratio_min_early, morph.axis_ratio_min_late)
    axis_ratio = q_min + (1.0 - q_min) * u[:, 2]
    seeing = np.exp(obs.psf_fwhm_scatter * g[:, 2])  # common to all bands of one object
    out = {
        "half_light_radius_arcsec": re_arcsec,
        "half_light_radius_kpc": re_arcsec * kpc_per_arcsec,
        "bulge_half_light_radius_arcsec": morph.bulge_size_ratio * re_arcsec,
        "size_clipped": clipped,
        "bulge_fraction": bulge_fraction,
        "sersic_index_bulge": n_bulge,
        "sersic_index_disk": n_disk,
        "sersic_index": bulge_fraction * n_bulge + (1.0 - bulge_fraction) * n_disk,  # flux-weighted
        "axis_ratio": axis_ratio,
        "ellipticity": 1.0 - axis_ratio,
        "position_angle": 180.0 * u[:, 3],  # degrees
    }
    for band in obs.image_bands:
        out[f"psf_fwhm_{band}"] = obs.psf_fwhm[band] * seeing
    return out

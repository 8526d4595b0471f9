"""Galaxy SEDs: CWW templates, Calzetti dust, emission lines, redshifting and band fluxes.

Everything lives on one fine rest-frame grid, log-spaced at R = 10,000 (30 km/s per pixel) from 900 A
to 60,000 A, so emission lines of 80-100 km/s are resolved by ~3 pixels and the grid reaches WISE W2
(5.5 um) at z = 0.01.

Units:
- `f_10pc`: rest-frame flux density the galaxy would have at 10 pc, erg/s/cm^2/A.
- observed: f_obs(lambda (1+z)) = f_10pc(lambda) (10 pc / D_L)^2 / (1+z), erg/s/cm^2/A.
- band fluxes: AB maggies (x 1e9 for nanomaggies), photon-weighted as speclite does, through the
  speclite filter curves; `SedModel.band_maggies` agrees with speclite's `get_ab_maggies` on the
  same observed-frame SED (checked by a test) but is vectorised over objects and redshifts.

Redshifts are quantised to the grid step in ln(1+z) (30 km/s), which makes redshifting an integer
pixel shift. A band flux is linear in the SED, so it is computed as continuum part + sum over lines,
each line a short sum over its few dozen pixels, instead of building a full SED per candidate galaxy.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from astrofm.sims.suite import SED_TYPES, DustConfig, EmissionLineConfig

WAVE_MIN = 900.0  # A, rest frame
WAVE_MAX = 60000.0  # A
LOG_STEP = 1.0e-4  # d ln(lambda) per pixel: R = 10,000
C_KMS = 299792.458
PC_CM = 3.0856775814913673e18
FOUR_PI_10PC2 = 4.0 * math.pi * (10.0 * PC_CM) ** 2  # cm^2: luminosity -> flux at 10 pc
HC_ERG_A = 1.9864458571489284e-08  # h c in erg A (speclite's photon weighting constant)
KENNICUTT = 7.9e-42  # SFR [Msun/yr] = 7.9e-42 L(Halpha) [erg/s] (Kennicutt 1998)
AB_FNU = 3631e-23  # erg/s/cm^2/Hz
C_AS = 2.99792458e18  # A/s

# Vacuum rest wavelengths [A]. [OII] is the 3727/3730 doublet.
LINES = (
    ("oii_3727", 3727.09), ("oii_3730", 3729.88), ("hbeta", 4862.68), ("oiii_4960", 4960.30),
    ("oiii_5008", 5008.24), ("nii_6550", 6549.86), ("halpha", 6564.61), ("nii_6585", 6585.27),
)
LINE_NAMES = tuple(name for name, _ in LINES)
LINE_WAVES = np.array([wave for _, wave in LINES])
# The empirical Scd and Im templates carry [OII], Hbeta and [OIII] emission smeared over their 40 A
# sampling; their tabulated points inside these rest windows (A) are dropped and bridged linearly, so
# the only lines are the resolved ones added from the star-formation rate.
TEMPLATE_LINE_WINDOWS = ((3690.0, 3760.0), (4840.0, 4880.0), (4930.0, 5040.0))
TEMPLATES_WITH_LINES = ("Scd", "Im")
NORM_WINDOW = (5500.0, 6500.0)  # A, rest: each template is scaled to mean f_lambda 1 here before mixing


def rest_grid() -> np.ndarray:
    """(N,) rest-frame pixel centres in A, log-spaced."""
    n = int(math.floor(math.log(WAVE_MAX / WAVE_MIN) / LOG_STEP)) + 1
    return WAVE_MIN * np.exp(LOG_STEP * np.arange(n))


def load_cww_templates(wave: np.ndarray) -> np.ndarray:
    """(4, N) CWW E, Sbc, Scd, Im templates (galsim's copies) interpolated onto `wave`.

    Their smeared emission lines are removed (TEMPLATE_LINE_WINDOWS). The files stop at 22,050 A;
    WISE W1/W2 at low redshift need rest 2.2-5.5 um, so beyond the last tabulated point the
    continuum follows a Rayleigh-Jeans tail, f_lambda ∝ lambda^-4, matched there.
    """
    import galsim

    out = np.empty((len(SED_TYPES), wave.size))
    for k, name in enumerate(SED_TYPES):
        path = os.path.join(galsim.meta_data.share_dir, "SEDs", f"CWW_{name}_ext.sed")
        table = np.loadtxt(path)  # columns: wavelength [A], f_lambda [arbitrary]
        lam, flux = table[:, 0], table[:, 1]
        if name in TEMPLATES_WITH_LINES:
            keep = np.ones(lam.size, dtype=bool)
            for low, high in TEMPLATE_LINE_WINDOWS:
                keep &= (lam <= low) | (lam >= high)
            lam, flux = lam[keep], flux[keep]
        sed = np.interp(wave, lam, flux)
        red = wave > lam[-1]
        sed[red] = flux[-1] * (wave[red] / lam[-1]) ** -4.0
        in_window = (wave >= NORM_WINDOW[0]) & (wave <= NORM_WINDOW[1])
        out[k] = sed / sed[in_window].mean()
    return out


def calzetti_k(wave: np.ndarray, r_v: float) -> np.ndarray:
    """Calzetti et al. (2000) k(lambda) = A(lambda) / E(B-V), wavelength in A.

    The UV polynomial is extrapolated below 1200 A (never observed here: g at z = 1 starts at rest
    ~1700 A). Beyond 2.2 um the published law turns negative near 3 um; it is continued instead as
    the near-IR power law k ∝ lambda^-1.7, so WISE bands see a little dust and never gain flux.
    """
    x = np.asarray(wave, dtype=np.float64) / 1e4  # um
    k = np.where(
        x < 0.63,
        2.659 * (-2.156 + 1.509 / x - 0.198 / x**2 + 0.011 / x**3) + r_v,
        2.659 * (-1.857 + 1.040 / x) + r_v,
    )
    k_22 = 2.659 * (-1.857 + 1.040 / 2.2) + r_v
    return np.where(x > 2.2, k_22 * (x / 2.2) ** -1.7, np.maximum(k, 0.0))


@dataclass
class Band:
    """One speclite filter: its curve and the AB reference integral, ready for vectorised use."""

    name: str  # short band name, e.g. "r"
    filter_name: str  # speclite name, e.g. "decam2014-r"
    wave: np.ndarray  # (M,) A
    response: np.ndarray  # (M,)
    zeropoint: float  # erg/s/cm^2: integral of f_AB R lambda dlambda (photon-weighted AB reference x hc)


def load_bands(bands: list[str], filters: list[str]) -> list[Band]:
    import speclite.filters

    curves = speclite.filters.load_filters(*filters)
    out = []
    for band, name, curve in zip(bands, filters, curves, strict=True):
        out.append(Band(name=band, filter_name=name, wave=np.asarray(curve.wavelength, dtype=np.float64),
                        response=np.asarray(curve.response, dtype=np.float64),
                        zeropoint=float(curve.ab_zeropoint.value) * HC_ERG_A))
    return out


class SedModel:
    """Templates, dust curve, line profiles and filters on the fine rest grid; built once per process.

    Redshifts live on the grid's own step in ln(1+z) (1e-4, i.e. 30 km/s): then lambda_i (1+z) is
    exactly pixel i + shift of the same grid, so redshifting is an index shift, and every band's
    weights are precomputed once instead of interpolated per galaxy.
    """

    def __init__(self, lines: EmissionLineConfig, dust: DustConfig, bands: list[str], filters: list[str]):
        self.wave = rest_grid()  # (N,) A
        self.ln_wave0 = math.log(self.wave[0])
        # Trapezoid weight of each pixel: half the distance between its neighbours, in A.
        self.dwave = self.wave * math.sinh(LOG_STEP)  # (N,)
        self.templates = load_cww_templates(self.wave)  # (4, N)
        self.dust = dust
        self.k_dust = calzetti_k(self.wave, dust.r_v)  # (N,)
        self.k_lines = calzetti_k(LINE_WAVES, dust.r_v)  # (L,)
        self.bands = load_bands(bands, filters)
        self.band_index = {band.name: i for i, band in enumerate(self.bands)}
        self.band_windows = [self._band_window(band) for band in self.bands]  # (start, weights (W,))
        self._line_profiles(lines.velocity_dispersion)

    # --- grid ------------------------------------------------------------------------------

    def index_of(self, wave: float) -> int:
        return int(round((math.log(wave) - self.ln_wave0) / LOG_STEP))

    @staticmethod
    def redshift_shift(z: np.ndarray) -> np.ndarray:
        """(n,) integer pixel shift nearest to ln(1+z) / LOG_STEP."""
        return np.round(np.log1p(np.asarray(z, dtype=np.float64)) / LOG_STEP).astype(np.int64)

    @staticmethod
    def shift_redshift(shift: np.ndarray) -> np.ndarray:
        """(n,) the redshift of an integer pixel shift: exp(shift LOG_STEP) - 1."""
        return np.expm1(np.asarray(shift, dtype=np.float64) * LOG_STEP)

    def _band_window(self, band: Band) -> tuple[int, np.ndarray]:
        """Observed-frame pixels covering a filter, and their weights G_j = R(lambda_j) lambda_j dlambda_j / zp.

        Photon-weighted AB maggies of an observed SED are then sum_j f_obs[j] G_j (trapezoid rule on the
        grid, as speclite does): maggies = dimming / (1+z) sum_j f_10pc[j - shift] G_j.
        """
        lo = max(int(np.searchsorted(self.wave, band.wave[0])) - 1, 0)
        hi = int(np.searchsorted(self.wave, band.wave[-1])) + 1
        if hi > self.wave.size:
            raise ValueError(f"band {band.name} ({band.wave[-1]:.0f} A) is redder than the grid ({WAVE_MAX} A)")
        wave = self.wave[lo:hi]
        response = np.interp(wave, band.wave, band.response, left=0.0, right=0.0)
        return lo, response * wave * self.dwave[lo:hi] / band.zeropoint

    # --- emission line profiles ------------------------------------------------------------

    def _line_profiles(self, sigma_kms: float) -> None:
        """Unit-flux Gaussian per line: `line_idx` (L, S) pixel indices, `line_prof` (L, S) in 1/A."""
        sigma_pix = sigma_kms / C_KMS / LOG_STEP
        half = int(math.ceil(6.0 * sigma_pix)) + 1
        centre = (np.log(LINE_WAVES) - self.ln_wave0) / LOG_STEP  # (L,) fractional pixel
        idx = np.round(centre).astype(int)[:, None] + np.arange(-half, half + 1)  # (L, S)
        prof = np.exp(-0.5 * ((idx - centre[:, None]) / sigma_pix) ** 2)
        # Normalised on the trapezoid measure, so every line integrates to exactly its flux.
        prof /= (prof * self.dwave[idx]).sum(axis=1, keepdims=True)
        self.line_idx, self.line_prof = idx, prof

    # --- continuum -------------------------------------------------------------------------

    def continuum(self, sed_type: np.ndarray, av: np.ndarray, start: np.ndarray, width: int) -> np.ndarray:
        """Dust-attenuated template mix on rest pixels [start, start + width) -> (n, width), per unit norm.

        sed_type t in [0, 3] mixes the two adjacent templates linearly (t = 1.4: 60% Sbc, 40% Scd).
        """
        t = np.clip(np.asarray(sed_type, dtype=np.float64), 0.0, 3.0)
        low = np.minimum(np.floor(t).astype(np.int64), 2)  # (n,)
        w = (t - low)[:, None]
        start = np.asarray(start, dtype=np.int64)
        if start.min() < 0 or start.max() + width > self.wave.size:
            raise ValueError("continuum window falls off the rest grid")
        # Row gathers from sliding-window views: each row is one contiguous copy.
        templates = sliding_window_view(self.templates, width, axis=1)  # (4, N - width + 1, width)
        mix = (1.0 - w) * templates[low, start] + w * templates[low + 1, start]
        k = sliding_window_view(self.k_dust, width)[start]  # (n, width)
        return mix * np.exp((-0.4 * math.log(10.0) / self.dust.r_v) * np.asarray(av)[:, None] * k)

    def line_attenuation(self, av: np.ndarray) -> np.ndarray:
        """(n, L) transmission of each line: gas sees A_V / stellar_to_gas (Calzetti 2000)."""
        gas_av = np.asarray(av)[:, None] / self.dust.stellar_to_gas
        return 10.0 ** (-0.4 * gas_av * self.k_lines[None, :] / self.dust.r_v)

    # --- band fluxes -----------------------------------------------------------------------

    def band_parts(self, band: str, shift: np.ndarray, sed_type: np.ndarray, av: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
        """The linear pieces of a band flux: (continuum (n,), lines (n, L)).

        sum_j f_10pc[j - shift] G_j for the continuum per unit norm, and for each line per unit line
        flux at 10 pc [erg/s/cm^2] after dust. Multiply by dimming / (1+z) for observed maggies.
        """
        lo, weights = self.band_windows[self.band_index[band]]
        shift = np.asarray(shift, dtype=np.int64)
        # Elementwise product and a row sum, not a matmul: BLAS sums rows in an order that depends on
        # how many rows there are, and an object must not depend on the chunk it is drawn in.
        cont = (self.continuum(sed_type, av, lo - shift, weights.size) * weights).sum(axis=1)  # (n,)
        # Lines: their pixels i land on observed pixels i + shift; weights outside the window are 0.
        j = self.line_idx[None, :, :] + shift[:, None, None] - lo  # (n, L, S)
        inside = (j >= 0) & (j < weights.size)
        line_w = np.where(inside, weights[np.clip(j, 0, weights.size - 1)], 0.0)
        lines = (line_w * self.line_prof[None]).sum(axis=2) * self.line_attenuation(av)  # (n, L)
        return cont, lines

    def band_maggies(self, band: str, params: dict[str, np.ndarray], *, rest: bool = False) -> np.ndarray:
        """(n,) AB maggies of galaxies `params` (see population.py) in `band`, observed frame.

        With rest=True: the rest-frame SED at 10 pc (no redshift, no dimming): absolute flux.
        """
        shift = np.zeros_like(params["shift"]) if rest else params["shift"]
        cont, lines = self.band_parts(band, shift, params["sed_type"], params["dust_av"])
        total = params["norm"] * cont + (lines * params["line_flux_10pc"]).sum(axis=1)
        return total if rest else total * params["dimming"] / (1.0 + params["redshift"])

    # --- full SEDs -------------------------------------------------------------------------

    def sed_10pc(self, params: dict[str, np.ndarray], i: int, start: int, width: int) -> np.ndarray:
        """Rest-frame f_10pc [erg/s/cm^2/A] of object i on pixels [start, start + width): continuum + lines."""
        flux = params["norm"][i] * self.continuum(params["sed_type"][i:i + 1], params["dust_av"][i:i + 1],
                                                  np.array([start]), width)[0]
        line_flux = params["line_flux_10pc"][i] * self.line_attenuation(params["dust_av"][i:i + 1])[0]  # (L,)
        for k in range(len(LINES)):
            lo, hi = int(self.line_idx[k, 0]) - start, int(self.line_idx[k, -1]) + 1 - start
            a, b = max(lo, 0), min(hi, width)
            if a < b:
                flux[a:b] += line_flux[k] * self.line_prof[k, a - lo:b - lo]
        return flux

    def observed_sed(self, params: dict[str, np.ndarray], i: int, wave_min: float, wave_max: float
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Object i's observed-frame SED on the grid pixels covering [wave_min, wave_max] A, one to spare.

        Returns (wavelength (W,) A, f_obs (W,) erg/s/cm^2/A); f_obs[j] = f_10pc[j - shift] dimming / (1+z).
        """
        lo = max(int(np.searchsorted(self.wave, wave_min)) - 2, 0)
        hi = min(int(np.searchsorted(self.wave, wave_max)) + 2, self.wave.size)
        shift = int(params["shift"][i])
        scale = float(params["dimming"][i]) / (1.0 + float(params["redshift"][i]))
        return self.wave[lo:hi], self.sed_10pc(params, i, lo - shift, hi - lo) * scale

    def continuum_at(self, params: dict[str, np.ndarray], wave: float) -> np.ndarray:
        """(n,) attenuated continuum f_10pc [erg/s/cm^2/A] at one rest wavelength (for equivalent widths)."""
        start = np.full(len(params["redshift"]), self.index_of(wave))
        return params["norm"] * self.continuum(params["sed_type"], params["dust_av"], start, 1)[:, 0]


def line_luminosities(sfr: np.ndarray, oii_ratio: np.ndarray, oiii_log_ratio: np.ndarray,
                      lines: EmissionLineConfig) -> np.ndarray:
    """(n, L) intrinsic (dust-free) line luminosities in erg/s, in the order of LINES.

    Halpha from the SFR (Kennicutt 1998) times `emission_line_scale`; Hbeta = Halpha / 2.86 (case B);
    [OII] = oii_ratio Halpha split 1 : 1.3 between 3727 and 3730; [OIII]5008 = Hbeta 10^oiii_log_ratio
    and 4960 = 5008 / 2.98; [NII]6585 = nii_halpha_ratio Halpha and 6550 = 6585 / 3.05.
    """
    halpha = lines.emission_line_scale * np.asarray(sfr) / KENNICUTT
    hbeta = halpha / 2.86
    oii = oii_ratio * halpha
    oiii = hbeta * 10.0 ** np.asarray(oiii_log_ratio)
    nii = lines.nii_halpha_ratio * halpha
    columns = {
        "oii_3727": oii / 2.3, "oii_3730": oii * 1.3 / 2.3, "hbeta": hbeta, "oiii_4960": oiii / 2.98,
        "oiii_5008": oiii, "nii_6550": nii / 3.05, "halpha": halpha, "nii_6585": nii,
    }
    return np.stack([columns[name] for name in LINE_NAMES], axis=1)


def ab_maggies_to_mag(maggies: np.ndarray) -> np.ndarray:
    return -2.5 * np.log10(np.maximum(maggies, 1e-30))

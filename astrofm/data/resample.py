"""Flux-conserving resampling of a binned spectrum onto another wavelength grid, with ivar propagated.

Each pixel is a bin of constant flux density; an output pixel gets the overlap-weighted mean of the
input pixels it covers, so the integral of flux density over any range of whole output pixels is
conserved. Pixels with ivar 0 are masked: they contribute nothing, and an output pixel that they (or
the end of the input coverage) leave partly uncovered gets ivar 0.
"""

from __future__ import annotations

import numpy as np


def pixel_edges(centres: np.ndarray) -> np.ndarray:
    """Bin edges for ascending pixel centres: midpoints inside, half a pixel beyond each end."""
    centres = np.asarray(centres, dtype=np.float64)
    if centres.ndim != 1 or centres.size < 2:
        raise ValueError("wavelength grid must be one-dimensional with at least two pixels")
    if np.any(np.diff(centres) <= 0):
        raise ValueError("wavelength grid must be strictly increasing")
    mid = 0.5 * (centres[1:] + centres[:-1])
    return np.concatenate([[centres[0] - (mid[0] - centres[0])], mid, [centres[-1] + (centres[-1] - mid[-1])]])


def resample_spectrum(wave_in: np.ndarray, flux_in: np.ndarray, ivar_in: np.ndarray | None,
                      wave_out: np.ndarray, min_coverage: float = 0.999) -> tuple[np.ndarray, np.ndarray]:
    """Resample (flux, ivar) from pixel centres `wave_in` onto pixel centres `wave_out`.

    Returns float64 (flux, ivar) on `wave_out`. An output pixel whose width is covered by valid input
    pixels for less than `min_coverage` of its width gets ivar 0 (its flux is the mean over what is
    covered, or 0 with no coverage). With `ivar_in=None` every input pixel counts as valid and the
    returned ivar is 1 where covered (use it as a coverage mask).
    """
    flux_in = np.asarray(flux_in, dtype=np.float64)
    edges_in, edges_out = pixel_edges(wave_in), pixel_edges(wave_out)
    if flux_in.shape != (edges_in.size - 1,):
        raise ValueError(f"flux has shape {flux_in.shape}, wavelength grid has {edges_in.size - 1} pixels")
    if ivar_in is None:
        valid, variance = np.ones_like(flux_in, dtype=bool), np.zeros_like(flux_in)
    else:
        ivar_in = np.asarray(ivar_in, dtype=np.float64)
        valid = ivar_in > 0
        variance = np.where(valid, 1.0 / np.where(valid, ivar_in, 1.0), 0.0)

    # Every interval between consecutive merged edges is the overlap of exactly one input and one
    # output pixel, so the overlap matrix comes out as flat arrays, without loops.
    lo, hi = max(edges_in[0], edges_out[0]), min(edges_in[-1], edges_out[-1])
    merged = np.union1d(edges_in, edges_out)
    merged = merged[(merged >= lo) & (merged <= hi)]
    n_out = edges_out.size - 1
    width_out = np.diff(edges_out)
    if merged.size < 2:
        return np.zeros(n_out), np.zeros(n_out)
    length = np.diff(merged)
    centre = 0.5 * (merged[1:] + merged[:-1])
    i = np.clip(np.searchsorted(edges_in, centre) - 1, 0, flux_in.size - 1)
    j = np.clip(np.searchsorted(edges_out, centre) - 1, 0, n_out - 1)

    weight = length * valid[i]
    covered = np.bincount(j, weights=weight, minlength=n_out)
    safe = np.where(covered > 0, covered, 1.0)
    flux_out = np.bincount(j, weights=weight * flux_in[i], minlength=n_out) / safe
    var_out = np.bincount(j, weights=weight**2 * variance[i], minlength=n_out) / safe**2
    good = covered >= min_coverage * width_out
    if ivar_in is None:
        ivar_out = good.astype(np.float64)
    else:
        ivar_out = np.where(good & (var_out > 0), 1.0 / np.where(var_out > 0, var_out, 1.0), 0.0)
    flux_out = np.where(covered > 0, flux_out, 0.0)
    return flux_out, ivar_out

"""Point and interval metrics of a regression, on arrays of true values `y` and predictions `p`.

    r2                1 - sum (p - y)^2 / sum (y - mean y)^2
    rmse              sqrt(mean (p - y)^2)
    bias              mean of the residual r
    nmad              1.4826 * median |r - median r|   (a robust standard deviation of r)
    outlier_fraction  redshift-like targets: fraction with |r| > 0.15;
                      other targets: fraction with |r - median r| > 3 nmad
    coverage          fraction of y inside [lo, hi] (coverage_68 / coverage_95 for the two intervals)
    gaussian_nll      mean of 0.5 log(2 pi sigma^2) + (y - mu)^2 / (2 sigma^2), for a predicted N(mu, sigma^2)
    gaussian_crps     mean continuous ranked probability score of N(mu, sigma^2) at y (target units, lower is
                      better; the mean |p - y| of a point estimate is its sigma -> 0 limit): the proper score
                      photo-z challenges rank probabilistic redshifts by
    pit               probability integral transform Phi((y - mu) / sigma): uniform on [0, 1] for a calibrated
                      predictor; a U shape is too narrow, a hump too wide, a slope biased
    pit_ks            Kolmogorov-Smirnov distance of the PIT values from the uniform distribution

The residual r is (p - y) / (1 + y) for a redshift-like target (the usual photo-z convention, dz/(1+z))
and p - y otherwise. So for redshift, bias, nmad and outlier_fraction are in units of dz/(1+z), while
r2 and rmse are always in the target's own units.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

NMAD_SCALE = 1.4826  # makes the MAD of a Gaussian equal its standard deviation
REDSHIFT_OUTLIER = 0.15  # |dz|/(1+z) beyond which a redshift estimate is an outlier
OUTLIER_NMADS = 3.0  # for other targets: |r - median r| beyond this many NMADs


def is_redshift_like(target: str) -> bool:
    """Targets named like a redshift get the dz/(1+z) residual."""
    name = target.lower()
    return name in {"z", "zspec", "z_spec", "zphot", "z_phot"} or "redshift" in name


def residuals(y: np.ndarray, p: np.ndarray, redshift_like: bool = False) -> np.ndarray:
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    return (p - y) / (1.0 + y) if redshift_like else p - y


def r2(y: np.ndarray, p: np.ndarray) -> float:
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    total = np.sum((y - y.mean()) ** 2)
    if total == 0:
        return float("nan")
    return float(1.0 - np.sum((p - y) ** 2) / total)


def rmse(y: np.ndarray, p: np.ndarray) -> float:
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    return float(np.sqrt(np.mean((p - y) ** 2)))


def bias(y: np.ndarray, p: np.ndarray, redshift_like: bool = False) -> float:
    return float(np.mean(residuals(y, p, redshift_like)))


def nmad(y: np.ndarray, p: np.ndarray, redshift_like: bool = False) -> float:
    r = residuals(y, p, redshift_like)
    return float(NMAD_SCALE * np.median(np.abs(r - np.median(r))))


def outlier_fraction(y: np.ndarray, p: np.ndarray, redshift_like: bool = False) -> float:
    r = residuals(y, p, redshift_like)
    if redshift_like:
        return float(np.mean(np.abs(r) > REDSHIFT_OUTLIER))
    spread = NMAD_SCALE * np.median(np.abs(r - np.median(r)))
    return float(np.mean(np.abs(r - np.median(r)) > OUTLIER_NMADS * spread))


def coverage(y: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    y = np.asarray(y, dtype=np.float64)
    return float(np.mean((y >= lo) & (y <= hi)))


def point_metrics(y: np.ndarray, p: np.ndarray, redshift_like: bool = False) -> dict[str, float]:
    return {"r2": r2(y, p), "rmse": rmse(y, p), "bias": bias(y, p, redshift_like),
            "nmad": nmad(y, p, redshift_like), "outlier_fraction": outlier_fraction(y, p, redshift_like)}


def gaussian_nll(y: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> float:
    """Mean negative log-likelihood of y under N(mu, sigma^2), in the target's own units."""
    y, mu, sigma = (np.asarray(a, dtype=np.float64) for a in (y, mu, sigma))
    return float(np.mean(0.5 * np.log(2 * np.pi * sigma ** 2) + (y - mu) ** 2 / (2 * sigma ** 2)))


def _normal_cdf(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.vectorize(math.erf, otypes=[np.float64])(np.asarray(z, np.float64) / math.sqrt(2.0)))


def gaussian_crps(y: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> float:
    """Mean CRPS of N(mu, sigma^2) at y, in closed form (Gneiting & Raftery 2007, eq. 21):
    sigma [z (2 Phi(z) - 1) + 2 phi(z) - 1/sqrt(pi)], z = (y - mu) / sigma."""
    y, mu, sigma = (np.asarray(a, dtype=np.float64) for a in (y, mu, sigma))
    z = (y - mu) / sigma
    density = np.exp(-0.5 * z ** 2) / math.sqrt(2 * math.pi)
    return float(np.mean(sigma * (z * (2 * _normal_cdf(z) - 1) + 2 * density - 1 / math.sqrt(math.pi))))


def gaussian_pit(y: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """(N,) Phi((y - mu) / sigma): where each truth falls in its predicted distribution."""
    y, mu, sigma = (np.asarray(a, dtype=np.float64) for a in (y, mu, sigma))
    return _normal_cdf((y - mu) / sigma)


def pit_ks(pit: np.ndarray) -> float:
    """Kolmogorov-Smirnov distance between the empirical distribution of `pit` and U(0, 1)."""
    u = np.sort(np.asarray(pit, dtype=np.float64))
    n = len(u)
    if n == 0:
        return float("nan")
    steps = np.arange(1, n + 1) / n
    return float(max(np.max(steps - u), np.max(u - (steps - 1 / n))))


def normal_z(level: float) -> float:
    """The half-width in sigmas of a central Gaussian interval holding `level` (0.68 -> 0.994)."""
    if not 0 < level < 1:
        raise ValueError(f"coverage level {level} is not between 0 and 1")
    return NormalDist().inv_cdf(0.5 + level / 2)

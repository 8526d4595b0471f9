"""Split-conformal intervals: calibrated on the validation split's absolute residuals, applied on test.

For a level a (0.68, 0.95) and n calibration residuals s_1 <= ... <= s_n, the half-width is
q = s_k with k = ceil((n + 1) a) (the finite-sample correction); when k > n the interval is infinite.
The interval for a test prediction p is [p - q, p + q]; if calibration and test objects are exchangeable
its coverage is at least a (and below a + 1/(n + 1)).

Adaptive (normalised) intervals: with a per-object scale u(x) > 0 fixed before calibration (a neighbour
spread or a predicted sigma, a function of x and the training rows only), the scores are |y - p| / u and
the interval is [p - q u, p + q u]. The same guarantee holds on average over objects, and the width follows
how hard each object is: a bright galaxy gets a narrow interval, a faint one a wide one, instead of one
width for all that over-covers the first and under-covers the second.
"""

from __future__ import annotations

import math

import numpy as np

LEVELS = (0.68, 0.95)


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The split-conformal half-width for `level` from calibration scores |y - p|."""
    if not 0 < level < 1:
        raise ValueError(f"coverage level {level} is not between 0 and 1")
    scores = np.sort(np.asarray(scores, dtype=np.float64))
    n = scores.size
    k = math.ceil((n + 1) * level)
    if n == 0 or k > n:
        return float("inf")
    return float(scores[k - 1])


def calibrate(y_cal: np.ndarray, p_cal: np.ndarray, levels=LEVELS) -> dict[float, float]:
    """level -> half-width, from the calibration (validation) split only."""
    scores = np.abs(np.asarray(y_cal, dtype=np.float64) - np.asarray(p_cal, dtype=np.float64))
    return {level: conformal_quantile(scores, level) for level in levels}


def intervals(p: np.ndarray, half_width: float) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(p, dtype=np.float64)
    return p - half_width, p + half_width


def calibrate_scaled(y_cal: np.ndarray, p_cal: np.ndarray, scale_cal: np.ndarray, levels=LEVELS) -> dict[float, float]:
    """level -> the multiplier q of the adaptive interval p +- q u, from the calibration (validation) split."""
    scale_cal = np.asarray(scale_cal, dtype=np.float64)
    if not (np.isfinite(scale_cal).all() and (scale_cal > 0).all()):
        raise ValueError("adaptive conformal intervals need a positive, finite scale for every calibration row")
    scores = np.abs(np.asarray(y_cal, dtype=np.float64) - np.asarray(p_cal, dtype=np.float64)) / scale_cal
    return {level: conformal_quantile(scores, level) for level in levels}

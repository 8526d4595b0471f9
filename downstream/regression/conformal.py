"""Split-conformal intervals: calibrated on the validation split's absolute residuals, applied on test.

For a level a (0.68, 0.95) and n calibration residuals s_1 <= ... <= s_n, the half-width is
q = s_k with k = ceil((n + 1) a) (the finite-sample correction); when k > n the interval is infinite.
The interval for a test prediction p is [p - q, p + q]; if calibration and test objects are exchangeable
its coverage is at least a (and below a + 1/(n + 1)).

Adaptive (normalised) intervals: with a per-object scale u(x) > 0 fixed before calibration (a neighbour
spread or a predicted sigma, a function of x and the training rows only), the scores are |y - p| / u and
the interval is [p - q u, p + q u]. The same guarantee holds on average over objects, and the width follows
how hard each object is: a bright galaxy gets a narrow interval, a faint one a wide one, instead of one
width for all that over-covers the first and under-covers the second. Grouped (Mondrian) calibration
(calibrate_grouped) fits one q per equal-count group of predicted value, so that the guarantee holds in
each group.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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


# Fewest calibration rows a group of predicted value keeps (rows from which it gets its own multiplier): 19 are
# the least that give a finite 95% quantile; with 200 its coverage moves by about 0.015 from one val draw to the
# next. With fewer, the groups' noisier quantiles widen the intervals more than the grouping corrects.
MIN_GROUP_ROWS = 200


@dataclass
class GroupedMultiplier:
    """Adaptive-interval multipliers q per group of predicted value (Mondrian conformal, Vovk et al. 2005): the
    calibration rows are cut into equal-count groups by their prediction p, and each group's q is the
    conformal quantile of its own scores |y - p| / u. The guarantee then holds within each group, not only on
    average: where the scale u(x) is right on average but off at one end of the label range (the kNN's
    neighbours all lie above z ~ 0 for the nearest galaxies), that end gets its own q. The groups depend on
    the prediction, a function of x, so test objects are assigned by theirs."""

    edges: np.ndarray  # (G - 1,) inner edges between the groups, in predicted value
    q: dict[float, np.ndarray]  # level -> (G,) multiplier per group

    @property
    def n_groups(self) -> int:
        return len(self.edges) + 1

    def group(self, predicted: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.edges, np.asarray(predicted, np.float64), side="right")

    def __call__(self, level: float, predicted: np.ndarray) -> np.ndarray:
        """(N,) the multiplier of each object at `level`, from its prediction."""
        return self.q[level][self.group(predicted)]


def group_edges(p_cal: np.ndarray, n_groups: int, min_rows: int = MIN_GROUP_ROWS) -> np.ndarray:
    """Inner edges of at most `n_groups` equal-count groups of the calibration predictions, each keeping at least
    `min_rows` rows (fewer groups where there are too few rows or tied predictions)."""
    p_cal = np.asarray(p_cal, np.float64)
    n_groups = max(1, min(n_groups, p_cal.size // min_rows))
    edges = np.unique(np.quantile(p_cal, np.linspace(0.0, 1.0, n_groups + 1)[1:-1]))
    while edges.size:
        counts = np.bincount(np.searchsorted(edges, p_cal, side="right"), minlength=edges.size + 1)
        smallest = int(np.argmin(counts))
        if counts[smallest] >= min_rows:
            break
        # merge the smallest group into its smaller neighbour by dropping the edge between them
        if smallest == 0:
            drop = 0
        elif smallest == edges.size:
            drop = edges.size - 1
        else:
            drop = smallest - 1 if counts[smallest - 1] <= counts[smallest + 1] else smallest
        edges = np.delete(edges, drop)
    return edges


def calibrate_grouped(y_cal: np.ndarray, p_cal: np.ndarray, scale_cal: np.ndarray, n_groups: int,
                      levels=LEVELS, min_rows: int = MIN_GROUP_ROWS) -> GroupedMultiplier:
    """The adaptive multipliers of calibrate_scaled, one per group of predicted value (GroupedMultiplier);
    n_groups 1 gives calibrate_scaled's single q."""
    p_cal = np.asarray(p_cal, np.float64)
    edges = group_edges(p_cal, n_groups, min_rows)
    which = np.searchsorted(edges, p_cal, side="right")
    per_group = [calibrate_scaled(np.asarray(y_cal)[which == g], p_cal[which == g], np.asarray(scale_cal)[which == g],
                                  levels) for g in range(edges.size + 1)]
    return GroupedMultiplier(edges, {level: np.array([q[level] for q in per_group]) for level in levels})

"""What differs: label distributions of the objects a suite gets wrong, against the other side.

Per numeric label: the standardised mean difference (mean_flagged - mean_other) / sqrt((var_f + var_o) / 2)
and the two-sample Kolmogorov-Smirnov statistic; labels ranked by KS (robust to skew and outliers), the
sign of the SMD saying in which direction (e.g. SMD > 0 on half_light_radius_kpc: the suite's galaxies
are too large).
"""

from __future__ import annotations

from typing import Any

import numpy as np

MIN_OBJECTS = 5


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """sup |F_a - F_b| of the two empirical distribution functions."""
    a, b = np.sort(a), np.sort(b)
    points = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, points, side="right") / len(a)
    cdf_b = np.searchsorted(b, points, side="right") / len(b)
    return float(np.max(np.abs(cdf_a - cdf_b)))


def standardised_mean_difference(a: np.ndarray, b: np.ndarray) -> float:
    pooled = np.sqrt((np.var(a, ddof=1) + np.var(b, ddof=1)) / 2.0)
    return float((a.mean() - b.mean()) / pooled) if pooled > 0 else 0.0


def compare_labels(flagged: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """One row per label present on both sides with >= MIN_OBJECTS finite values, ranked by KS."""
    rows = []
    for name in sorted(set(flagged) & set(other)):
        a = flagged[name][np.isfinite(flagged[name])]
        b = other[name][np.isfinite(other[name])]
        if len(a) < MIN_OBJECTS or len(b) < MIN_OBJECTS or (np.ptp(a) == 0 and np.ptp(b) == 0 and a[0] == b[0]):
            continue
        rows.append({"label": name, "ks": ks_statistic(a, b), "smd": standardised_mean_difference(a, b),
                     "mean_flagged": float(a.mean()), "mean_other": float(b.mean()),
                     "n_flagged": int(len(a)), "n_other": int(len(b))})
    return sorted(rows, key=lambda r: (-r["ks"], r["label"]))


def rank_by_excess(rows: list[dict[str, Any]], selection: dict[str, float]) -> list[dict[str, Any]]:
    """Add `ks_selection` (the KS the flagging rule alone produces on the observed side) and `ks_excess`
    (ks - ks_selection) to each row, and rank by the excess: what the selection cannot explain."""
    out = [{**row, "ks_selection": selection.get(row["label"], 0.0),
            "ks_excess": row["ks"] - selection.get(row["label"], 0.0)} for row in rows]
    return sorted(out, key=lambda r: (-r["ks_excess"], r["label"]))


def top_fraction(scores: np.ndarray, fraction: float) -> np.ndarray:
    """Rows of the `fraction` highest scores (at least one), ties broken by row order."""
    n = max(1, int(round(fraction * len(scores))))
    return np.sort(np.argsort(-scores, kind="stable")[:n])


def take(labels: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[rows] for k, v in labels.items()}

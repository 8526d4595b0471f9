"""Rank statistics for classifier two-sample tests: ROC AUC, its permutation p-value and bootstrap interval,
and the calibration of probabilistic classifiers (expected calibration error, reliability bins)."""

from __future__ import annotations

import numpy as np


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of `x`, ties sharing their average rank (as in the Mann-Whitney U statistic)."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    # Runs of equal values: each gets the mean of the ranks it spans.
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]
    mean_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def _auc_from_ranks(ranks: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """AUC for one label vector (n,) or many (B, n) over fixed ranks: (R+ - n+(n+ + 1)/2) / (n+ n-)."""
    n_pos = positive.sum(axis=-1)
    n_neg = positive.shape[-1] - n_pos
    rank_sum = positive.astype(np.float64) @ ranks
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative) + 0.5 P(tie): the Mann-Whitney AUC."""
    positive = _check(labels, scores)
    return float(_auc_from_ranks(average_ranks(scores), positive))


Folds = list[tuple[np.ndarray, np.ndarray]]  # (labels, scores) of each cross-fitting fold's held-out part


def cross_fitted_auc(folds: Folds) -> float:
    """The mean held-out AUC over the folds (each fold scored by the classifier not trained on it)."""
    return float(np.mean([roc_auc(labels, scores) for labels, scores in folds]))


def permutation_p_value(folds: Folds, n_permutations: int = 1000, seed: int = 0, chunk: int = 250) -> float:
    """One-sided p-value of mean AUC > 0.5: each fold's held-out labels permuted against its fixed scores.

    Valid conditionally on the (already trained) classifiers, since each fold's held-out objects are
    exchangeable under the null whatever its classifier; (1 + #{AUC_perm >= AUC}) / (1 + B), never 0."""
    checked = [(_check(labels, scores), average_ranks(scores)) for labels, scores in folds]
    observed = np.mean([_auc_from_ranks(ranks, positive) for positive, ranks in checked])
    rng = np.random.default_rng(seed)
    exceed, done = 0, 0
    while done < n_permutations:
        size = min(chunk, n_permutations - done)
        total = np.zeros(size)
        for positive, ranks in checked:
            permuted = rng.permuted(np.broadcast_to(positive, (size, len(positive))), axis=1)
            total += _auc_from_ranks(ranks, permuted)
        exceed += int(np.sum(total / len(checked) >= observed - 1e-12))
        done += size
    return (1 + exceed) / (1 + n_permutations)


def bootstrap_auc_interval(folds: Folds, n_boot: int = 1000, seed: int = 0,
                           level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mean AUC, resampling each class of each fold with replacement."""
    rng = np.random.default_rng(seed)
    values = np.zeros(n_boot)
    for labels, scores in folds:
        positive = _check(labels, scores)
        scores = np.asarray(scores, dtype=np.float64)
        pos, neg = scores[positive], scores[~positive]
        joint_labels = np.r_[np.ones(len(pos), bool), np.zeros(len(neg), bool)]
        for b in range(n_boot):
            joint = np.concatenate([pos[rng.integers(0, len(pos), len(pos))], neg[rng.integers(0, len(neg), len(neg))]])
            values[b] += _auc_from_ranks(average_ranks(joint), joint_labels)
    values /= len(folds)
    tail = (1 - level) / 2
    return float(np.quantile(values, tail)), float(np.quantile(values, 1 - tail))


def _check(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    positive = np.asarray(labels).astype(bool)
    if positive.shape != np.shape(scores) or positive.ndim != 1:
        raise ValueError(f"labels {positive.shape} and scores {np.shape(scores)} must be equal-length vectors")
    if positive.all() or not positive.any():
        raise ValueError("an AUC needs at least one object of each class")
    return positive


def reliability(probabilities: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> dict:
    """Top-label calibration of a (N, K) probability matrix against integer labels (N,): expected
    calibration error (confidence-weighted gap, equal-width bins) and the per-bin table for a diagram."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        inside = which == b
        if not inside.any():
            continue
        conf, acc = float(confidence[inside].mean()), float(correct[inside].mean())
        ece += inside.mean() * abs(acc - conf)
        bins.append({"lower": float(edges[b]), "upper": float(edges[b + 1]), "count": int(inside.sum()),
                     "confidence": conf, "accuracy": acc})
    return {"ece": float(ece), "accuracy": float(correct.mean()), "bins": bins}

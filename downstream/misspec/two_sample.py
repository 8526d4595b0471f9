"""Classifier two-sample test, simulated suite against observed objects, cross-fitted over two halves.

Both datasets are split into halves by object index (halves.py). In each half the classes are balanced by
seeded subsampling. A classifier (simulated = 1) fitted on half A scores half B, and one fitted on half B
scores half A; the statistic is the mean of the two held-out ROC AUCs (0.5 when the classifiers cannot tell
the two apart), which uses every object for testing once and halves the variance of a single split.
p-value: each half's held-out labels permuted against its fixed scores (exact given the trained
classifiers); 95% interval: stratified bootstrap within each half.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from downstream.misspec import classifiers, stats
from downstream.misspec.embed import Embedded
from downstream.misspec.halves import balanced_rows, first_half

MIN_PER_HALF = 10


@dataclass
class TwoSampleResult:
    metrics: dict[str, Any]
    observed_scores: np.ndarray  # (N_observed,) out-of-fold P(simulated) of every observed object
    simulated_scores: np.ndarray  # (N_suite,) out-of-fold P(simulated) of every suite object


def two_sample_test(observed: Embedded, simulated: Embedded, kind: str = "logistic", seed: int = 0,
                    n_permutations: int = 1000, n_bootstrap: int = 1000) -> TwoSampleResult:
    obs_a, sim_a = first_half(observed.index, seed), first_half(simulated.index, seed)
    halves = {}
    for h, (obs_in, sim_in) in enumerate(((obs_a, sim_a), (~obs_a, ~sim_a))):
        for data, inside in ((observed, obs_in), (simulated, sim_in)):
            if inside.sum() < MIN_PER_HALF:
                raise ValueError(f"{data.name}: only {int(inside.sum())} objects in index half {'AB'[h]}; "
                                 f"need at least {MIN_PER_HALF} per half")
        halves[h] = balanced_rows([np.flatnonzero(obs_in), np.flatnonzero(sim_in)], seed + h)
    obs_scores, sim_scores = np.full(len(observed), np.nan), np.full(len(simulated), np.nan)
    folds, epochs = [], []
    for train, test in ((0, 1), (1, 0)):
        rows_obs, rows_sim = halves[train]
        x = np.concatenate([observed.x[rows_obs], simulated.x[rows_sim]])
        y = np.r_[np.zeros(len(rows_obs), np.int64), np.ones(len(rows_sim), np.int64)]
        model = classifiers.fit(x, y, 2, kind=kind, seed=seed + train)
        epochs.append(model.epochs)
        # Every object of the held-out half is scored (for "what differs"); the statistic uses the
        # balanced subsample, so that its null distribution is symmetric about 0.5.
        held_obs, held_sim = (~obs_a, ~sim_a) if test == 1 else (obs_a, sim_a)
        obs_scores[held_obs] = model.probabilities(observed.x[held_obs])[:, 1]
        sim_scores[held_sim] = model.probabilities(simulated.x[held_sim])[:, 1]
        test_obs, test_sim = halves[test]
        folds.append((np.r_[np.zeros(len(test_obs), bool), np.ones(len(test_sim), bool)],
                      np.r_[obs_scores[test_obs], sim_scores[test_sim]]))
    labels_all = np.concatenate([f[0] for f in folds])
    scores_all = np.concatenate([f[1] for f in folds])
    metrics = {
        "auc": stats.cross_fitted_auc(folds),
        "auc_ci95": list(stats.bootstrap_auc_interval(folds, n_boot=n_bootstrap, seed=seed)),
        "p_value": stats.permutation_p_value(folds, n_permutations=n_permutations, seed=seed),
        "auc_per_half": [stats.roc_auc(*fold) for fold in folds],
        "accuracy": float(np.mean((scores_all > 0.5) == labels_all)),
        "n_test_per_class": int(len(labels_all) // 2), "classifier": kind, "epochs": epochs,
    }
    return TwoSampleResult(metrics, obs_scores, sim_scores)

"""Model comparison: which simulated suite do the observed objects most resemble?

A softmax classifier over the suites is trained on simulated objects only (half A of each suite by object
index, classes balanced: equal priors). Half B is split by index into a calibration part, which fits a
softmax temperature, and an evaluation part, on which calibration is checked (reliability bins, expected
calibration error, before and after the temperature). Applied to the observed objects, it gives per object
posterior model probabilities P(suite | embedding) under equal priors, and their mean per suite.

The classifier never sees observed objects, so every observed (held-out) object can be scored. Observed
objects lying outside every suite get extrapolated probabilities: read them with the coverage results.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from downstream.misspec import classifiers, stats
from downstream.misspec.embed import Embedded
from downstream.misspec.halves import balanced_rows, first_half, index_uniform


@dataclass
class ComparisonResult:
    metrics: dict[str, Any]
    probabilities: np.ndarray  # (N_observed, K): per observed object, P(suite k)
    reliability_before: dict[str, Any]
    reliability_after: dict[str, Any]


def compare_models(observed: Embedded, suites: dict[str, Embedded], kind: str = "logistic",
                   seed: int = 0) -> ComparisonResult:
    names = list(suites)
    if len(names) < 2:
        return _single(observed, names[0])
    train, calibrate, evaluate = [], [], []
    for name in names:
        suite = suites[name]
        a = first_half(suite.index, seed)
        # Half B split in two by a second index-hash stream, so paired objects stay together there too.
        c = index_uniform(suite.index, seed, stream=1) < 0.5
        parts = np.flatnonzero(a), np.flatnonzero(~a & c), np.flatnonzero(~a & ~c)
        for part, rows in zip(("train", "calibration", "evaluation"), parts, strict=True):
            if len(rows) < 5:
                raise ValueError(f"{name}: only {len(rows)} objects in the model-comparison {part} part; "
                                 "need at least 5")
        train.append(parts[0])
        calibrate.append(parts[1])
        evaluate.append(parts[2])
    train = balanced_rows(train, seed)  # equal class sizes: equal prior model probabilities

    def stack(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        x = np.concatenate([suites[n].x[r] for n, r in zip(names, rows, strict=True)])
        y = np.concatenate([np.full(len(r), k, np.int64) for k, r in enumerate(rows)])
        return x, y

    model = classifiers.fit(*stack(train), len(names), kind=kind, seed=seed)
    x_eval, y_eval = stack(balanced_rows(evaluate, seed + 1))
    before = stats.reliability(model.probabilities(x_eval), y_eval)
    temperature = classifiers.fit_temperature(model, *stack(balanced_rows(calibrate, seed + 2)))
    after = stats.reliability(model.probabilities(x_eval), y_eval)
    probabilities = model.probabilities(observed.x)
    winner = probabilities.argmax(axis=1)
    metrics = {
        "suites": names,
        "mean_probability": {n: float(probabilities[:, k].mean()) for k, n in enumerate(names)},
        "argmax_fraction": {n: float(np.mean(winner == k)) for k, n in enumerate(names)},
        "temperature": temperature,
        "heldout_accuracy": after["accuracy"],
        "ece_before_temperature": before["ece"],
        "ece": after["ece"],
        "n_train_per_suite": int(len(train[0])), "n_evaluation": int(len(y_eval)),
        "n_observed": int(len(observed)), "classifier": kind, "epochs": model.epochs,
    }
    return ComparisonResult(metrics, probabilities, before, after)


def _single(observed: Embedded, name: str) -> ComparisonResult:
    """One suite: nothing to compare, its posterior probability is 1."""
    empty = {"ece": 0.0, "accuracy": 1.0, "bins": []}
    metrics = {"suites": [name], "mean_probability": {name: 1.0}, "argmax_fraction": {name: 1.0},
               "temperature": 1.0, "heldout_accuracy": 1.0, "ece_before_temperature": 0.0, "ece": 0.0,
               "n_train_per_suite": 0, "n_evaluation": 0, "n_observed": int(len(observed)), "classifier": None,
               "epochs": 0, "note": "a single simulated suite: model comparison needs two or more"}
    return ComparisonResult(metrics, np.ones((len(observed), 1)), empty, empty)

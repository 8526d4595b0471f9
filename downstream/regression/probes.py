"""Probes on frozen embeddings. Each `fit_*` sees only training rows (to fit) and validation rows (to choose
hyper-parameters or stop early), and returns a `Probe`: a predict function plus what was chosen.

    knn     distance-weighted k nearest neighbours (weights 1/d^p; an exact match, d = 0, takes that
            neighbour's value). Distances are Euclidean on the embeddings, or on the embeddings whitened
            by the training rows' shrunk covariance (a Mahalanobis distance, `Whitener`), the shrinkage
            picked on validation MSE from KNN_WHITEN_GRID (None: no whitening) together with k from
            KNN_GRID and p from KNN_POWER_GRID; each can be fixed (AstroCLIP's zero-shot protocol: k = 64,
            no whitening, p = 1)
    local_linear  a weighted ridge plane through each object's nearest neighbours in the kNN's space, read
            at the object (SDSS DR12's photo-z estimator; local_linear.py): the kNN without its bias where
            the labels thin out
    linear  ridge regression on standardised features, alpha picked on validation MSE from a log grid
    mlp     two hidden layers of 64 (GELU, dropout 0.1), AdamW, early stopping on validation MSE
    gaussian  the mlp's trunk with two outputs, mean and log-variance, trained by Gaussian negative
            log-likelihood with early stopping on validation NLL; its `predict_sigma` gives a per-object
            standard deviation, and `chosen["sigma_scale"]` the factor s fitted on val so that the val
            z-scores (y - mean) / (s sigma) have unit variance (a variance recalibration)

The point probes' adaptive conformal intervals (conformal.calibrate_scaled) need a per-object scale that
depends on x and the training rows only. Two are offered (ADAPTIVE_SCALES):
    residual  `neighbour_residual`: the mean absolute training residual of the probe itself over an object's
              nearest training neighbours: how wrong this probe is around there (the kNN's residuals are
              leave-one-out, `Probe.train_residuals`, else every training row would be its own match);
    spread    `neighbour_spread`: the standard deviation of those neighbours' labels. It also holds how much
              the mean varies across the neighbourhood, which is not an error, so it narrows the coverage
              gap between quiet and noisy objects less.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

METHODS = ("knn", "linear", "mlp")  # the default methods of `astrofm regress`
RIDGE_ALPHAS = tuple(10.0 ** e for e in range(-4, 5))
KNN_GRID = (4, 8, 16, 32, 64, 128)  # k tried on validation when none is fixed
# Shrinkage of the whitening tried on validation, as a fraction of the covariance's largest eigenvalue;
# None: plain Euclidean distances. Why: a contrastive embedding spends most of its variance on what tells
# objects apart most cheaply (brightness, colour on the mock); a physical parameter read from fine
# features lives in directions of small variance, which plain distances drown. Whitening gives every
# direction the same weight; the shrinkage keeps the noise of the smallest ones from dominating in turn.
KNN_WHITEN_GRID = (None, 1e-4, 1e-3, 1e-2, 1e-1)
# Exponents p of the weights 1/d^p tried on validation (1: scikit-learn's and AstroCLIP's "distance"
# weights). A higher p leans on the nearest neighbours, which matters where k neighbours reach past a
# sharp feature or the edge of the label range (the mock's z near 0); Shepard's interpolation uses 2.
KNN_POWER_GRID = (1, 2, 4)
# Neighbours whose label spread scales an object's adaptive interval: enough for a stable standard deviation
# (on the mock's image features 16, 32 and 64 gave the same conditional coverage within 0.02), few enough
# to stay local.
SPREAD_K = 32
SPREAD_FLOOR = 0.01  # of the training labels' standard deviation: keeps a scale positive where neighbours agree
ADAPTIVE_SCALES = ("residual", "spread")  # the point probes' adaptive interval scales, the default first


@dataclass
class Probe:
    predict: Callable[[np.ndarray], np.ndarray]  # (N, D) -> (N,)
    chosen: dict[str, Any] = field(default_factory=dict)  # the hyper-parameters used
    predict_sigma: Callable[[np.ndarray], np.ndarray] | None = None  # (N, D) -> (N,); probabilistic probes
    space: Callable[[np.ndarray], np.ndarray] | None = None  # the kNN's distance space (whitening or none)
    # () -> (N_train,) |y - prediction| on the training rows (the kNN leaves each row out of its neighbours):
    # computed on demand, for the adaptive intervals' `neighbour_residual` scale; None for the gaussian
    train_residuals: Callable[[], np.ndarray] | None = None


def _standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Training mean and standard deviation per feature (1 where a feature is constant)."""
    scale = x.std(axis=0)
    return x.mean(axis=0), np.where(scale > 1e-8, scale, 1.0).astype(x.dtype)


@dataclass
class Whitener:
    """x -> ((x - mean) V) / sqrt(eigenvalue + shrinkage * largest eigenvalue), V the eigenvectors of the
    covariance of the rows it was fitted on: Euclidean distances after it are Mahalanobis distances
    under the shrunk covariance."""

    mean: np.ndarray  # (D,)
    projection: np.ndarray  # (D, D): eigenvectors scaled column by column

    @classmethod
    def fit(cls, x: np.ndarray, shrinkage: float) -> Whitener:
        if shrinkage <= 0:
            raise ValueError(f"whitening shrinkage must be positive, got {shrinkage}")
        x = np.asarray(x, np.float64)
        mean = x.mean(axis=0)
        if len(x) < 2:  # no covariance to speak of: distances stay as they are
            return cls(mean, np.eye(x.shape[1]))
        eigenvalues, vectors = np.linalg.eigh(np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1]))
        eigenvalues = np.clip(eigenvalues, 0.0, None)
        if eigenvalues.max() <= 0:  # constant rows
            return cls(mean, np.eye(x.shape[1]))
        return cls(mean, vectors / np.sqrt(eigenvalues + shrinkage * eigenvalues.max()))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, np.float64) - self.mean) @ self.projection).astype(np.float32)


def _neighbours(x_train: np.ndarray, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, k) Euclidean distances and train row indices of each row of x's k nearest training rows."""
    import faiss

    index = faiss.IndexFlatL2(x_train.shape[1])
    index.add(np.ascontiguousarray(x_train, dtype=np.float32))
    squared, nearest = index.search(np.ascontiguousarray(x, dtype=np.float32), k)
    return np.sqrt(np.maximum(squared.astype(np.float64), 0.0)), nearest


def inverse_distance_weights(distance: np.ndarray, power: float) -> np.ndarray:
    """(N, k) weights 1/d^power of each row's neighbours; a row with an exact match (d = 0) puts equal
    weight on its exact matches and none elsewhere."""
    exact = distance <= 1e-12
    return np.where(exact.any(axis=1, keepdims=True), exact.astype(np.float64),
                    np.maximum(distance, 1e-12) ** -float(power))


def _weighted_mean(distance: np.ndarray, values: np.ndarray, power: float) -> np.ndarray:
    """Inverse-distance-weighted mean of each row's neighbour values (`inverse_distance_weights`)."""
    weights = inverse_distance_weights(distance, power)
    return (weights * values).sum(axis=1) / weights.sum(axis=1)


def knn_predict(x_train: np.ndarray, y_train: np.ndarray, x: np.ndarray, k: int, power: float = 1.0) -> np.ndarray:
    k = max(1, min(k, len(x_train)))
    distance, nearest = _neighbours(x_train, x, k)
    return _weighted_mean(distance, np.asarray(y_train, np.float64)[nearest], power)


def knn_leave_one_out(z_train: np.ndarray, y_train: np.ndarray, k: int, power: float = 1.0) -> np.ndarray:
    """(N,) each training row's kNN prediction from the other training rows (its own row left out; where
    exact duplicates tie with it, whichever faiss returns last is dropped instead); a lone row predicts
    itself."""
    n = len(z_train)
    y_train = np.asarray(y_train, np.float64)
    if n < 2:
        return y_train.copy()
    distance, nearest = neighbours_without_self(z_train, max(1, min(k, n - 1)))
    return _weighted_mean(distance, y_train[nearest], power)


def neighbours_without_self(z: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, k) distances and indices of each row's k nearest other rows of z, nearest first (where exact
    duplicates tie with a row, whichever faiss returns last is dropped instead of the row itself)."""
    distance, nearest = _neighbours(z, z, k + 1)
    # the first k columns that are not the row itself (a stable sort keeps faiss's nearest-first order)
    columns = np.argsort(nearest == np.arange(len(z))[:, None], axis=1, kind="stable")[:, :k]
    return np.take_along_axis(distance, columns, axis=1), np.take_along_axis(nearest, columns, axis=1)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _options(value, grid, name: str, valid: bool, expected: str) -> list:
    """The settings to try: the whole grid for "auto", else the one value given (valid: it is acceptable)."""
    if isinstance(value, str) and value == "auto":
        return list(grid)
    if not valid:
        raise ValueError(f"kNN {name} must be {expected} or 'auto', got {value!r}")
    return [value]


def fit_knn(x_train, y_train, x_val, y_val, k: int | None = None, whiten: float | str | None = "auto",
            power: float | str = "auto", grid=KNN_GRID, whiten_grid=KNN_WHITEN_GRID,
            power_grid=KNN_POWER_GRID, **_) -> Probe:
    """k fixed, or (k=None) the k of `grid` with the lowest validation MSE; whiten a shrinkage (`Whitener`),
    None for plain distances, or "auto": the one of `whiten_grid` with the lowest validation MSE; power the
    exponent of the weights 1/d^power, or "auto": chosen from `power_grid`. All that is chosen is chosen
    jointly; fixing everything needs no validation rows."""
    x_train, y_train = np.asarray(x_train, np.float32).copy(), np.asarray(y_train, np.float64).copy()
    ks = sorted({max(1, min(g, len(x_train))) for g in grid}) if k is None else [max(1, min(k, len(x_train)))]
    shrinkages = _options(whiten, whiten_grid, "whiten", whiten is None or _is_number(whiten), "a shrinkage > 0, None")
    powers = _options(power, power_grid, "power", _is_number(power) and power >= 0, "a number >= 0")
    if len(ks) * len(shrinkages) * len(powers) > 1 and (x_val is None or len(x_val) == 0):
        raise ValueError("choosing the kNN's k, whitening or power needs validation rows; fix all three to fit "
                         "without")

    spaces = {w: (lambda x: np.asarray(x, np.float32)) if w is None else Whitener.fit(x_train, w) for w in shrinkages}
    chosen: dict[str, Any] = {}
    if len(ks) * len(shrinkages) * len(powers) > 1:
        y_val = np.asarray(y_val, np.float64)
        mse = {}  # (shrinkage, power, k) -> validation MSE
        for shrinkage in shrinkages:
            # one search at the largest k serves every smaller k: faiss returns neighbours nearest first
            distance, nearest = _neighbours(spaces[shrinkage](x_train), spaces[shrinkage](x_val), ks[-1])
            values = y_train[nearest]
            for p in powers:
                for g in ks:
                    predicted = _weighted_mean(distance[:, :g], values[:, :g], p)
                    mse[shrinkage, p, g] = float(np.mean((predicted - y_val) ** 2))
        best_shrinkage, best_power, best_k = min(mse, key=mse.get)
        if k is None:
            chosen["val_mse_by_k"] = {g: mse[best_shrinkage, best_power, g] for g in ks}
        if len(shrinkages) > 1:  # the best over k and power for each whitening
            chosen["val_mse_by_whiten"] = {"none" if w is None else f"{w:g}": min(
                v for (s, _, _), v in mse.items() if s == w) for w in shrinkages}
        if len(powers) > 1:  # the best over k and whitening for each power
            chosen["val_mse_by_power"] = {f"{p:g}": min(v for (_, q, _), v in mse.items() if q == p) for p in powers}
    else:
        best_shrinkage, best_power, best_k = shrinkages[0], powers[0], ks[0]
    transform = spaces[best_shrinkage]
    z_train = transform(x_train)
    return Probe(lambda x: knn_predict(z_train, y_train, transform(x), best_k, best_power),
                 {"k": best_k, "whiten": best_shrinkage, "power": best_power, **chosen}, space=transform,
                 train_residuals=lambda: np.abs(y_train - knn_leave_one_out(z_train, y_train, best_k, best_power)))


def _over_neighbours(x_train: np.ndarray, y_train: np.ndarray, values: np.ndarray,
                     space: Callable[[np.ndarray], np.ndarray], k: int, reduce) -> Callable[[np.ndarray], np.ndarray]:
    """x -> (N,) reduce(values of each row's k nearest training rows in `space`, axis=1) plus SPREAD_FLOOR of the
    training labels' standard deviation (1 where they are all equal: a constant, positive scale)."""
    z_train = space(np.asarray(x_train, np.float32))
    values = np.asarray(values, np.float64)
    k = max(1, min(k, len(z_train)))
    floor = SPREAD_FLOOR * float(np.std(y_train)) or 1.0

    def scale(x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.zeros(0)
        _, nearest = _neighbours(z_train, space(x), k)
        return reduce(values[nearest], axis=1) + floor

    return scale


def neighbour_spread(x_train: np.ndarray, y_train: np.ndarray, space: Callable[[np.ndarray], np.ndarray],
                     k: int = SPREAD_K) -> Callable[[np.ndarray], np.ndarray]:
    """x -> (N,) standard deviation of the labels of each row's k nearest training rows in `space` (the kNN
    probe's distances), plus SPREAD_FLOOR of the training labels' spread: a difficulty per object that
    depends on x and the training rows only, as a conformal scale must."""
    return _over_neighbours(x_train, y_train, y_train, space, k, np.std)


def neighbour_residual(x_train: np.ndarray, y_train: np.ndarray, residuals: np.ndarray,
                       space: Callable[[np.ndarray], np.ndarray],
                       k: int = SPREAD_K) -> Callable[[np.ndarray], np.ndarray]:
    """x -> (N,) mean of the probe's absolute training `residuals` (Probe.train_residuals) over each row's k
    nearest training rows in `space`, plus SPREAD_FLOOR of the training labels' spread: the probe's own error
    around an object, from x and the training rows only."""
    return _over_neighbours(x_train, y_train, residuals, space, k, np.mean)


def fit_linear(x_train, y_train, x_val, y_val, alphas=RIDGE_ALPHAS, **_) -> Probe:
    """Ridge on features standardised with training statistics; intercept unpenalised."""
    x_train, y_train = np.asarray(x_train, np.float64), np.asarray(y_train, np.float64)
    mean, scale = _standardiser(x_train)
    y_mean = y_train.mean()
    u, s, vt = np.linalg.svd((x_train - mean) / scale, full_matrices=False)
    uty = u.T @ (y_train - y_mean)
    xv = (np.asarray(x_val, np.float64) - mean) / scale
    best = None
    for alpha in alphas:
        coef = vt.T @ (s / (s ** 2 + alpha) * uty)
        mse = float(np.mean((xv @ coef + y_mean - y_val) ** 2))
        if best is None or mse < best[0]:
            best = (mse, alpha, coef)
    _, alpha, coef = best

    def predict(x):
        return ((np.asarray(x, np.float64) - mean) / scale) @ coef + y_mean

    # in-sample residuals: alpha is chosen on val, and with far more rows than features they differ little
    # from leave-one-out ones
    return Probe(predict, {"alpha": float(alpha), "val_mse": best[0]},
                 train_residuals=lambda: np.abs(y_train - predict(x_train)))


def mlp_trunk(in_dim: int, hidden: int = 64, dropout: float = 0.1, outputs: int = 1):
    """The probes' network: two hidden layers of `hidden` (GELU, dropout), then `outputs` linear outputs."""
    from torch import nn

    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, outputs))


def train_early_stopped(net, loss_fn, xt, yt, xv, yv, seed: int, lr: float, weight_decay: float,
                        batch_size: int, max_epochs: int, patience: int, min_gain: float = 0.0,
                        tolerance: float = 1e-6, on_epoch=None) -> tuple[float, int, int]:
    """AdamW on (xt, yt) minimising `loss_fn(net(x), y)`; keeps the weights of the best validation loss
    (better by more than `tolerance`) and stops `patience` epochs after the last gain that also beat the
    best by the fraction `min_gain`, so that a slow crawl does not reset the patience.
    `on_epoch(epoch, val, best, best_epoch)` is called after each epoch (progress).
    Returns (best validation loss, its epoch, epochs run)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    best, best_state, best_epoch, gain_epoch, epoch = float("inf"), None, 0, 0, 0
    for epoch in range(1, max_epochs + 1):
        net.train()
        for rows in torch.randperm(len(xt), generator=generator).split(batch_size):
            loss = loss_fn(net(xt[rows]), yt[rows])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        net.eval()
        with torch.no_grad():
            val = float(loss_fn(net(xv), yv))
        if best_state is None or val < best * (1 - min_gain) - tolerance:
            gain_epoch = epoch
        if best_state is None or val < best - tolerance:
            best, best_epoch = val, epoch
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        if on_epoch is not None:
            on_epoch(epoch, val, best, best_epoch)
        if epoch - gain_epoch >= patience:
            break
    net.load_state_dict(best_state)
    net.eval()
    return best, best_epoch, epoch


def _scaled(x_train, y_train):
    """Feature standardiser and target centre/scale from the training rows, as torch converters."""
    import torch

    x_train, y_train = np.asarray(x_train, np.float32), np.asarray(y_train, np.float64)
    mean, scale = _standardiser(x_train)
    y_mean, y_scale = float(y_train.mean()), float(y_train.std()) or 1.0  # a one-label subset has std 0

    def features(x):
        return torch.from_numpy(((np.asarray(x, np.float32) - mean) / scale).astype(np.float32))

    def targets(y):
        return torch.from_numpy(((np.asarray(y, np.float64) - y_mean) / y_scale).astype(np.float32))

    return features, targets, y_mean, y_scale


def fit_mlp(x_train, y_train, x_val, y_val, seed: int = 0, hidden: int = 64, dropout: float = 0.1,
            lr: float = 1e-3, weight_decay: float = 1e-4, batch_size: int = 256, max_epochs: int = 300,
            patience: int = 15, **_) -> Probe:
    import torch
    from torch import nn

    features, targets, y_mean, y_scale = _scaled(x_train, y_train)
    torch.manual_seed(seed)
    net = mlp_trunk(np.shape(x_train)[1], hidden, dropout)
    best, best_epoch, epochs = train_early_stopped(
        net, lambda out, y: nn.functional.mse_loss(out.squeeze(1), y), features(x_train), targets(y_train),
        features(x_val), targets(y_val), seed, lr, weight_decay, batch_size, max_epochs, patience)

    def predict(x):
        with torch.no_grad():
            return net(features(x)).squeeze(1).double().numpy() * y_scale + y_mean

    # in-sample residuals: early stopping on val keeps this small network from fitting its training rows
    # much more closely than new ones (cross-fitting would cost a network per fold for little change)
    return Probe(predict, {"best_epoch": best_epoch, "epochs": epochs, "val_mse": best * y_scale ** 2},
                 train_residuals=lambda: np.abs(np.asarray(y_train, np.float64) - predict(x_train)))


LOG_VAR_RANGE = (-12.0, 6.0)  # clamp of the log-variance (standardised target units): keeps NLL finite


def gaussian_nll(out, y):
    """Mean Gaussian negative log-likelihood, without the 0.5 log(2 pi) constant; out (N, 2) = mean, log var."""
    import torch

    log_var = out[:, 1].clamp(*LOG_VAR_RANGE)
    return 0.5 * torch.mean(log_var + (y - out[:, 0]) ** 2 * torch.exp(-log_var))


def fit_gaussian(x_train, y_train, x_val, y_val, seed: int = 0, hidden: int = 64, dropout: float = 0.1,
                 lr: float = 1e-3, weight_decay: float = 1e-4, batch_size: int = 256, max_epochs: int = 300,
                 patience: int = 15, **_) -> Probe:
    """Heteroscedastic regression: mean and sigma per object, by Gaussian NLL, early stopped on val NLL."""
    import torch

    features, targets, y_mean, y_scale = _scaled(x_train, y_train)
    torch.manual_seed(seed)
    net = mlp_trunk(np.shape(x_train)[1], hidden, dropout, outputs=2)
    best, best_epoch, epochs = train_early_stopped(
        net, gaussian_nll, features(x_train), targets(y_train), features(x_val), targets(y_val), seed, lr,
        weight_decay, batch_size, max_epochs, patience)

    def predict_both(x):
        with torch.no_grad():
            out = net(features(x)).double()
        sigma = torch.exp(0.5 * out[:, 1].clamp(*LOG_VAR_RANGE))
        return out[:, 0].numpy() * y_scale + y_mean, sigma.numpy() * y_scale

    mu_val, sigma_val = predict_both(x_val)
    z_val = (np.asarray(y_val, np.float64) - mu_val) / sigma_val
    sigma_scale = float(np.sqrt(np.mean(z_val ** 2)))  # s: val z-scores / s have unit variance
    val_nll = best + 0.5 * np.log(2 * np.pi) + np.log(y_scale)  # in the target's own units
    return Probe(lambda x: predict_both(x)[0],
                 {"best_epoch": best_epoch, "epochs": epochs, "val_nll": float(val_nll), "sigma_scale": sigma_scale},
                 predict_sigma=lambda x: predict_both(x)[1])


def fit_local_linear(*args, **kwargs) -> Probe:
    """kNN local linear regression (downstream/regression/local_linear.py), built on `fit_knn`'s space."""
    from downstream.regression.local_linear import fit_local_linear as fit

    return fit(*args, **kwargs)


PROBES: dict[str, Callable[..., Probe]] = {"knn": fit_knn, "linear": fit_linear, "mlp": fit_mlp,
                                           "gaussian": fit_gaussian, "local_linear": fit_local_linear}

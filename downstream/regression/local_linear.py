"""The `local_linear` probe: k-nearest-neighbour local linear regression, the estimator of SDSS DR12's
photometric redshifts (Beck et al. 2016; Csabai et al. 2003 before them).

Where the kNN averages its neighbours' labels, this fits a weighted ridge plane through them, centred on
the query, and reads its intercept. An average is biased wherever the labels' density changes across the
neighbourhood: at the ends of the label range (the mock's bright sample thins out above z = 0.34, where the
image kNN loses most of its R^2 to the MLP probe) the neighbours lean to the denser side. A plane follows
the local slope instead.

    space       the kNN probe's distance space (its whitening, chosen on val by `probes.fit_knn`), rotated
                onto its principal axes: distances are unchanged, and the first d axes carry the most variance
    neighbours  the k nearest training rows in that whole space, weighted 1 / distance^2 (an exact match takes
                all the weight, as in the kNN)
    plane       y ~ a + b . (z_d - q_d) over the first d axes, ridge penalty lambda on b (not on a), the
                weights normalised to sum 1 so that lambda means the same for every k

k, d and lambda are chosen together on validation MSE from LOCAL_K_GRID, LOCAL_COMPONENTS_GRID and
LOCAL_RIDGE_GRID; `astrofm regress`'s --k, --knn-whiten and --knn-power set the kNN whose space the planes
share. With few labels k and d are clipped to the rows and axes there are.
"""

from __future__ import annotations

import numpy as np

from downstream.regression import probes

LOCAL_K_GRID = (64, 128, 256)  # neighbours of each plane; more than the kNN's: a plane has d + 1 parameters
LOCAL_COMPONENTS_GRID = (8, 16, 24, 32)  # principal axes the plane spans
LOCAL_RIDGE_GRID = (1e-3, 1e-2, 1e-1)  # penalty on the slopes, in units of the (normalised) weights
WEIGHT_POWER = 2.0  # weights 1 / distance^2 (Shepard's)
CHUNK_ROWS = 1024  # queries solved at once: (rows, k, d + 1) float64 stays below ~70 MB at k 256, d 32


def principal_rotation(z_train: np.ndarray):
    """z -> (z - mean) V, V the eigenvectors of the training rows' covariance, largest variance first."""
    z_train = np.asarray(z_train, np.float64)
    mean = z_train.mean(axis=0)
    if len(z_train) < 2:
        vectors = np.eye(z_train.shape[1])
    else:
        eigenvalues, vectors = np.linalg.eigh(np.cov(z_train, rowvar=False).reshape(z_train.shape[1], -1))
        vectors = vectors[:, np.argsort(eigenvalues)[::-1]]
    return lambda z: ((np.asarray(z, np.float64) - mean) @ vectors).astype(np.float32)


def plane_intercepts(r_train: np.ndarray, y_train: np.ndarray, r_query: np.ndarray, distance: np.ndarray,
                     nearest: np.ndarray, components: int, ridge: float) -> np.ndarray:
    """(Q,) the intercept of each query's weighted ridge plane through its neighbours (`distance`, `nearest`:
    (Q, k), nearest first), over the first `components` axes of the rotated space."""
    d = min(components, r_train.shape[1])
    penalty = np.diag([0.0] + [ridge] * d)  # the intercept is not shrunk
    out = np.empty(len(r_query))
    for start in range(0, len(r_query), CHUNK_ROWS):
        rows = slice(start, start + CHUNK_ROWS)
        dist, near = distance[rows], nearest[rows]
        weights = probes.inverse_distance_weights(dist, WEIGHT_POWER)
        weights /= weights.sum(axis=1, keepdims=True)
        offsets = r_train[near][:, :, :d].astype(np.float64) - r_query[rows, None, :d]  # (q, k, d)
        design = np.concatenate([np.ones((*offsets.shape[:2], 1)), offsets], axis=2)  # (q, k, d + 1)
        weighted = design * weights[:, :, None]
        normal = np.einsum("qki,qkj->qij", weighted, design) + penalty
        rhs = np.einsum("qki,qk->qi", weighted, y_train[near])
        out[rows] = np.linalg.solve(normal, rhs[:, :, None])[:, 0, 0]
    return out


def fit_local_linear(x_train, y_train, x_val, y_val, k: int | None = None, whiten: float | str | None = "auto",
                     power: float | str = "auto", k_grid=LOCAL_K_GRID, components_grid=LOCAL_COMPONENTS_GRID,
                     ridge_grid=LOCAL_RIDGE_GRID, **_) -> probes.Probe:
    """The planes' neighbours, axes and ridge penalty chosen together on validation MSE from the grids; `k`,
    `whiten` and `power` go to the kNN probe whose distance space the planes live in."""
    x_train, y_train = np.asarray(x_train, np.float32), np.asarray(y_train, np.float64)
    if x_val is None or len(x_val) == 0:
        raise ValueError("local_linear chooses its neighbours, axes and ridge penalty on validation rows; "
                         "none were given")
    knn = probes.fit_knn(x_train, y_train, x_val, y_val, k=k, whiten=whiten, power=power)
    rotate = principal_rotation(knn.space(x_train))
    space = lambda x: rotate(knn.space(x))  # noqa: E731 (a distance space, as Probe.space expects)
    r_train, r_val = space(x_train), space(x_val)
    ks = sorted({max(1, min(g, len(r_train))) for g in k_grid})
    components = sorted({min(c, r_train.shape[1]) for c in components_grid})
    distance, nearest = probes._neighbours(r_train, r_val, ks[-1])  # nearest first: one search serves every k
    mse = {}
    for g in ks:
        for c in components:
            for ridge in ridge_grid:
                predicted = plane_intercepts(r_train, y_train, r_val, distance[:, :g], nearest[:, :g], c, ridge)
                mse[g, c, ridge] = float(np.mean((predicted - np.asarray(y_val, np.float64)) ** 2))
    best_k, best_components, best_ridge = min(mse, key=mse.get)

    def predict(x: np.ndarray) -> np.ndarray:
        r = space(x)
        if len(r) == 0:
            return np.zeros(0)
        dist, near = probes._neighbours(r_train, r, best_k)
        return plane_intercepts(r_train, y_train, r, dist, near, best_components, best_ridge)

    def train_residuals() -> np.ndarray:  # leave-one-out: each row's plane from the other rows
        if len(r_train) < 2:
            return np.zeros(len(r_train))
        dist, near = probes.neighbours_without_self(r_train, min(best_k, len(r_train) - 1))
        return np.abs(y_train - plane_intercepts(r_train, y_train, r_train, dist, near, best_components, best_ridge))

    chosen = {"k": best_k, "components": best_components, "ridge": best_ridge, "whiten": knn.chosen["whiten"],
              "val_mse": mse[best_k, best_components, best_ridge]}
    return probes.Probe(predict, chosen, space=space, train_residuals=train_residuals)

"""Probes on frozen embeddings. Each `fit_*` sees only training rows (to fit) and validation rows (to choose
hyper-parameters or stop early), and returns a `Probe`: a predict function plus what was chosen.

    knn     distance-weighted k nearest neighbours (Euclidean on the embeddings, weights 1/d, k = 64 by
            default: AstroCLIP's zero-shot protocol); an exact match (d = 0) takes that neighbour's value
    linear  ridge regression on standardised features, alpha picked on validation MSE from a log grid
    mlp     two hidden layers of 64 (GELU, dropout 0.1), AdamW, early stopping on validation MSE
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

METHODS = ("knn", "linear", "mlp")
RIDGE_ALPHAS = tuple(10.0 ** e for e in range(-4, 5))


@dataclass
class Probe:
    predict: Callable[[np.ndarray], np.ndarray]  # (N, D) -> (N,)
    chosen: dict[str, Any] = field(default_factory=dict)  # the hyper-parameters used


def _standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Training mean and standard deviation per feature (1 where a feature is constant)."""
    scale = x.std(axis=0)
    return x.mean(axis=0), np.where(scale > 1e-8, scale, 1.0).astype(x.dtype)


def knn_predict(x_train: np.ndarray, y_train: np.ndarray, x: np.ndarray, k: int) -> np.ndarray:
    import faiss

    k = max(1, min(k, len(x_train)))
    index = faiss.IndexFlatL2(x_train.shape[1])
    index.add(np.ascontiguousarray(x_train, dtype=np.float32))
    squared, nearest = index.search(np.ascontiguousarray(x, dtype=np.float32), k)
    distance = np.sqrt(np.maximum(squared.astype(np.float64), 0.0))
    exact = distance <= 1e-12
    weights = np.where(exact.any(axis=1, keepdims=True), exact.astype(np.float64), 1.0 / np.maximum(distance, 1e-12))
    return (weights * y_train[nearest]).sum(axis=1) / weights.sum(axis=1)


def fit_knn(x_train, y_train, x_val, y_val, k: int = 64, **_) -> Probe:
    x_train, y_train = np.asarray(x_train, np.float32).copy(), np.asarray(y_train, np.float64).copy()
    k_used = max(1, min(k, len(x_train)))
    return Probe(lambda x: knn_predict(x_train, y_train, x, k_used), {"k": k_used})


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
    return Probe(lambda x: ((np.asarray(x, np.float64) - mean) / scale) @ coef + y_mean,
                 {"alpha": float(alpha), "val_mse": best[0]})


def fit_mlp(x_train, y_train, x_val, y_val, seed: int = 0, hidden: int = 64, dropout: float = 0.1,
            lr: float = 1e-3, weight_decay: float = 1e-4, batch_size: int = 256, max_epochs: int = 300,
            patience: int = 15, **_) -> Probe:
    import torch
    from torch import nn

    x_train, y_train = np.asarray(x_train, np.float32), np.asarray(y_train, np.float64)
    mean, scale = _standardiser(x_train)
    y_mean, y_scale = float(y_train.mean()), float(y_train.std()) or 1.0  # a one-label subset has std 0

    def features(x):
        return torch.from_numpy(((np.asarray(x, np.float32) - mean) / scale).astype(np.float32))

    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(x_train.shape[1], hidden), nn.GELU(), nn.Dropout(dropout),
                        nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, 1))
    optimiser = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    xt, yt = features(x_train), torch.from_numpy(((y_train - y_mean) / y_scale).astype(np.float32))
    xv, yv = features(x_val), torch.from_numpy(((np.asarray(y_val) - y_mean) / y_scale).astype(np.float32))
    best, best_state, best_epoch, epoch = float("inf"), None, 0, 0
    for epoch in range(1, max_epochs + 1):
        net.train()
        for rows in torch.randperm(len(xt), generator=generator).split(batch_size):
            loss = nn.functional.mse_loss(net(xt[rows]).squeeze(1), yt[rows])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        net.eval()
        with torch.no_grad():
            val = float(nn.functional.mse_loss(net(xv).squeeze(1), yv))
        if val < best - 1e-6:
            best, best_epoch = val, epoch
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        elif epoch - best_epoch >= patience:
            break
    net.load_state_dict(best_state)
    net.eval()

    def predict(x):
        with torch.no_grad():
            return net(features(x)).squeeze(1).double().numpy() * y_scale + y_mean

    return Probe(predict, {"best_epoch": best_epoch, "epochs": epoch, "val_mse": best * y_scale ** 2})


PROBES: dict[str, Callable[..., Probe]] = {"knn": fit_knn, "linear": fit_linear, "mlp": fit_mlp}

"""Small softmax classifiers on embeddings, used both for the two-sample tests (2 classes) and for model
comparison (one class per simulated suite).

    logistic  a linear softmax layer (multinomial logistic regression)
    mlp       one hidden layer of 64 (GELU, dropout 0.1)

Features are standardised with the training rows' statistics; AdamW with weight decay; the epoch with the
lowest loss on an inner validation part (a seeded fraction of the training rows) is kept (early
stopping). Optional temperature scaling on separate calibration rows. Seeded and deterministic on CPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

KINDS = ("logistic", "mlp")


@dataclass
class Classifier:
    mean: np.ndarray
    scale: np.ndarray
    network: object  # torch.nn.Module
    temperature: float = 1.0
    epochs: int = 0  # epochs trained until the best inner-validation loss

    def logits(self, x: np.ndarray) -> np.ndarray:
        import torch

        z = (np.asarray(x, np.float32) - self.mean) / self.scale
        with torch.no_grad(), single_thread():
            return self.network(torch.from_numpy(np.ascontiguousarray(z))).double().numpy() / self.temperature

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        logits = self.logits(x)
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)


@contextmanager
def single_thread() -> Iterator[None]:
    """Tiny matrices: one torch thread is faster, and far faster on a shared, busy machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scale = x.std(axis=0)
    return x.mean(axis=0).astype(np.float32), np.where(scale > 1e-8, scale, 1.0).astype(np.float32)


def fit(x: np.ndarray, y: np.ndarray, n_classes: int, **options) -> Classifier:
    """Fit on rows (x, y in 0..n_classes-1); a seeded share of them only decides when to stop."""
    with single_thread():
        return _fit(x, y, n_classes, **options)


def _fit(x: np.ndarray, y: np.ndarray, n_classes: int, kind: str = "logistic", seed: int = 0,
        weight_decay: float = 1e-2, lr: float = 1e-2, batch_size: int = 256, max_epochs: int = 200,
        patience: int = 10, val_fraction: float = 0.2) -> Classifier:
    import torch
    from torch import nn

    if kind not in KINDS:
        raise ValueError(f"unknown classifier {kind!r}; choose from {list(KINDS)}")
    x, y = np.asarray(x, np.float32), np.asarray(y, np.int64)
    if len(np.unique(y)) < 2:
        raise ValueError("a classifier needs training objects of at least two classes")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    n_val = max(1, int(round(val_fraction * len(y))))
    val, train = order[:n_val], order[n_val:]
    mean, scale = standardiser(x[train])
    xt = torch.from_numpy((x[train] - mean) / scale)
    yt = torch.from_numpy(y[train])
    xv = torch.from_numpy((x[val] - mean) / scale)
    yv = torch.from_numpy(y[val])

    torch.manual_seed(seed)
    dim = x.shape[1]
    if kind == "logistic":
        network = nn.Linear(dim, n_classes)
    else:
        network = nn.Sequential(nn.Linear(dim, 64), nn.GELU(), nn.Dropout(0.1), nn.Linear(64, n_classes))
    optimiser = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    best = (float("inf"), 0, {k: v.clone() for k, v in network.state_dict().items()})
    for epoch in range(1, max_epochs + 1):
        network.train()
        for batch in torch.randperm(len(yt), generator=generator).split(batch_size):
            optimiser.zero_grad()
            loss_fn(network(xt[batch]), yt[batch]).backward()
            optimiser.step()
        network.eval()
        with torch.no_grad():
            val_loss = float(loss_fn(network(xv), yv))
        if val_loss < best[0] - 1e-6:
            best = (val_loss, epoch, {k: v.clone() for k, v in network.state_dict().items()})
        elif epoch - best[1] >= patience:
            break
    network.load_state_dict(best[2])
    network.eval()
    return Classifier(mean=mean, scale=scale, network=network, epochs=best[1])


def fit_temperature(classifier: Classifier, x: np.ndarray, y: np.ndarray) -> float:
    """Set the softmax temperature minimising the negative log-likelihood of calibration rows (x, y);
    a 1-D search over log T (grid, then refined), which cannot change the predicted class."""
    classifier.temperature = 1.0
    logits = classifier.logits(x)
    y = np.asarray(y, np.int64)

    def nll(log_t: float) -> float:
        z = logits / np.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y]))

    grid = np.linspace(-3.0, 3.0, 61)
    best = grid[int(np.argmin([nll(t) for t in grid]))]
    fine = np.linspace(best - 0.1, best + 0.1, 41)
    classifier.temperature = float(np.exp(fine[int(np.argmin([nll(t) for t in fine]))]))
    return classifier.temperature

"""Generators of the target modality. Each `fit_*` sees the train split (to fit) and the val split (to stop
early or choose k) only, and returns a `Generator` whose `predict(pairs)` reads only the pairs' source
(embedding or raw arrays), never their target.

    decoder     MLP on the frozen source embedding -> target code (codecs.py), decoded to flux
    knn         mean target flux of the k nearest train objects in source-embedding space (faiss flat L2
                on the L2-normalised embeddings, i.e. cosine order); k chosen on the median val MSE from a grid
    raw         the decoder's MLP on the raw source (codecs.RawFeatures) instead of the embedding
    train_mean  the train split's mean target flux for every object: the trivial predictor
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from downstream.generation.data import Pairs
from downstream.generation.progress import Progress
from downstream.regression.probes import train_early_stopped

MIN_GAIN = 2e-3  # relative val-loss gain that restarts the early-stopping patience
KNN_CHUNK = 128  # test rows whose neighbours' spectra are gathered at once (k x L floats each)


@dataclass
class Generator:
    predict: Callable[[Pairs], np.ndarray]  # pairs -> (N, *target shape) flux
    chosen: dict[str, Any] = field(default_factory=dict)


def normalised_mse(codec, flux: np.ndarray, truth: np.ndarray, ivar: np.ndarray) -> np.ndarray:
    """Per object: mean over valid entries of the squared difference in the codec's normalised space."""
    valid = (ivar > 0) & np.isfinite(ivar)
    squared = np.where(valid, (codec.normalise(flux) - codec.normalise(truth)) ** 2, 0.0)
    return squared.sum(axis=1) / np.maximum(valid.sum(axis=1), 1)


def train_mlp(x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, weights: np.ndarray,
              hidden: int, epochs: int, batch_size: int, lr: float, seed: int, patience: int,
              name: str, progress: bool) -> tuple[Callable[[np.ndarray], np.ndarray], dict[str, Any]]:
    """Two hidden GELU layers, AdamW, weighted MSE on the code; keeps the epoch of lowest val loss and stops
    `patience` epochs after the last gain of at least MIN_GAIN (relative)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(x.shape[1], hidden), nn.GELU(), nn.Dropout(0.1),
                        nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, y.shape[1]))
    w = torch.from_numpy(np.asarray(weights, np.float32))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    xv, yv = torch.from_numpy(x_val), torch.from_numpy(y_val)

    def loss_of(pred, truth):
        return ((pred - truth) ** 2 * w).sum(1).mean()

    bar = Progress(progress)

    def report(epoch, val, best, best_epoch):
        bar.update(f"{name}: epoch {epoch}/{epochs}, val loss {val:.4f} (best {best:.4f} at epoch {best_epoch})")

    best, best_epoch, epoch = train_early_stopped(net, loss_of, xt, yt, xv, yv, seed, lr, 1e-4, batch_size, epochs,
                                                  patience, min_gain=MIN_GAIN, tolerance=0.0, on_epoch=report)
    bar.done()

    def predict(features: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.cat([net(part) for part in torch.from_numpy(features).split(4096)]).numpy()

    return predict, {"best_epoch": best_epoch, "epochs_run": epoch, "val_loss": best, "hidden": hidden}


def fit_mlp_generator(train: Pairs, val: Pairs, codec, features: Callable[[Pairs], np.ndarray], name: str,
                      config) -> Generator:
    x, x_val = features(train), features(val)
    y = codec.encode(train.target["flux"], train.target["ivar"])
    y_val = codec.encode(val.target["flux"], val.target["ivar"])
    predict, chosen = train_mlp(x, y, x_val, y_val, codec.weights, config.hidden, config.epochs,
                                config.batch_size, config.lr, config.seed, config.patience, name, config.progress)
    return Generator(lambda pairs: codec.decode(predict(features(pairs))), {**chosen, "input_dim": x.shape[1]})


def fit_decoder(train: Pairs, val: Pairs, codec, config) -> Generator:
    # Embedding columns standardised on train: their spread can be tiny next to their mean (an L2-normalised
    # vector whose direction varies little), which an MLP with default initialisation would barely see.
    mean, sd = train.embedding.mean(0), train.embedding.std(0)
    sd = np.where(sd > 1e-8, sd, 1.0)
    return fit_mlp_generator(train, val, codec, lambda pairs: ((pairs.embedding - mean) / sd).astype(np.float32),
                             "decoder", config)


def fit_raw(train: Pairs, val: Pairs, codec, raw, config) -> Generator:
    """`raw`: an unfitted codecs.RawFeatures; fitted here on the train split's source."""
    raw.fit(train.source["flux"], train.source["ivar"])
    return fit_mlp_generator(train, val, codec, lambda pairs: raw(pairs.source["flux"], pairs.source["ivar"]),
                             "raw", config)


def _neighbour_means(train: Pairs, nearest: np.ndarray, ks: list[int], fallback: np.ndarray) -> dict[int, np.ndarray]:
    """k -> (N, ...) mean flux of the first k neighbours, pixel by pixel over neighbours valid there."""
    out = {k: np.empty((len(nearest), *fallback.shape), np.float32) for k in ks}
    for start in range(0, len(nearest), KNN_CHUNK):
        rows = nearest[start:start + KNN_CHUNK]
        flux, ivar = train.target["flux"][rows], train.target["ivar"][rows]  # (n, kmax, ...)
        valid = ((ivar > 0) & np.isfinite(ivar)).astype(np.float32)
        total, count = np.cumsum(flux * valid, axis=1), np.cumsum(valid, axis=1)
        for k in ks:
            n = count[:, k - 1]
            out[k][start:start + KNN_CHUNK] = np.where(n > 0, total[:, k - 1] / np.maximum(n, 1), fallback)
    return out


def fit_knn(train: Pairs, val: Pairs, codec, config) -> Generator:
    import faiss

    index = faiss.IndexFlatL2(train.embedding.shape[1])
    index.add(np.ascontiguousarray(train.embedding, np.float32))
    fallback = train.target["flux"].mean(axis=0)
    ks = sorted({max(1, min(int(k), len(train))) for k in config.k_grid})
    _, nearest = index.search(np.ascontiguousarray(val.embedding, np.float32), ks[-1])
    means = _neighbour_means(train, nearest, ks, fallback)
    # Median, not mean: the mean MSE is dominated by the few brightest val objects and flips between k.
    scores = {k: float(np.median(normalised_mse(codec, means[k], val.target["flux"], val.target["ivar"])))
              for k in ks}
    k = min(ks, key=lambda key: scores[key])

    def predict(pairs: Pairs) -> np.ndarray:
        _, found = index.search(np.ascontiguousarray(pairs.embedding, np.float32), k)
        return _neighbour_means(train, found, [k], fallback)[k]

    return Generator(predict, {"k": k, "val_median_mse_by_k": {str(key): value for key, value in scores.items()}})


def fit_train_mean(train: Pairs, val: Pairs, codec, config) -> Generator:
    valid = ((train.target["ivar"] > 0) & np.isfinite(train.target["ivar"])).astype(np.float64)
    mean = ((train.target["flux"] * valid).sum(0) / np.maximum(valid.sum(0), 1)).astype(np.float32)
    return Generator(lambda pairs: np.broadcast_to(mean, (len(pairs), *mean.shape)).copy(), {})


METHODS = ("decoder", "knn", "raw", "train_mean")
ROLES = {"decoder": "model", "knn": "baseline", "raw": "baseline", "train_mean": "reference"}

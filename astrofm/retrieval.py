"""Cross-modal retrieval accuracy: is an object's own embedding in another modality among its nearest?

Used by pretraining's validation (and by later retrieval reports). Embeddings are L2-normalised, so
cosine similarity is a dot product.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def retrieval_accuracy(queries: torch.Tensor, candidates: torch.Tensor, ks: Sequence[int] = (1, 10)) -> dict[int, float]:
    """Fraction of rows i whose candidate i ranks within the top k of query i, for each k.

    queries, candidates: (N, D), row i of both is the same object. Ties count against the query
    (a candidate scoring equal to the true one is ranked ahead), so chance is k / N.
    """
    if queries.shape != candidates.shape or queries.ndim != 2:
        raise ValueError(f"queries {tuple(queries.shape)} and candidates {tuple(candidates.shape)} must be equal (N, D)")
    n = queries.shape[0]
    if n == 0:
        return {k: float("nan") for k in ks}
    similarity = queries.float() @ candidates.float().T  # (N, N)
    true_score = similarity.diagonal().unsqueeze(1)  # (N, 1)
    others_ahead = (similarity >= true_score).sum(dim=1) - 1  # candidates scoring at least as high, minus itself
    rank = others_ahead + 1  # 1-based rank of the true match
    return {k: float((rank <= k).float().mean()) for k in ks}


def pairwise_retrieval(embeddings: dict[str, torch.Tensor], masks: dict[str, torch.Tensor],
                       ks: Sequence[int] = (1, 10), max_objects: int | None = None) -> dict[str, float]:
    """Retrieval accuracy for every pair of modalities, averaged over both directions (a->b and b->a).

    Returns {"top1/spectrum-image": ..., "top10/spectrum-image": ..., ...} over the objects having both
    modalities (the first `max_objects` of them, for a fixed pool size such as 1,000).
    """
    names = [m for m in ("spectrum", "photometry", "image") if m in embeddings]
    results: dict[str, float] = {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            both = masks[a] & masks[b]
            ea, eb = embeddings[a][both], embeddings[b][both]
            if max_objects is not None:
                ea, eb = ea[:max_objects], eb[:max_objects]
            if ea.shape[0] < 2:
                continue
            forward, backward = retrieval_accuracy(ea, eb, ks), retrieval_accuracy(eb, ea, ks)
            for k in ks:
                results[f"top{k}/{a}-{b}"] = 0.5 * (forward[k] + backward[k])
            results[f"pool/{a}-{b}"] = float(ea.shape[0])
    return results


def leave_one_out_knn_r2(embeddings: torch.Tensor, labels: torch.Tensor, k: int = 16) -> float:
    """R^2 of a label predicted, for each object, from its k nearest other objects (weights 1/distance).

    A cheap check of how well the embedding orders objects by a physical label, for pretraining's
    validation pool; `astrofm regress` is the full protocol (train/val/test, k chosen on val).
    embeddings: (N, D) L2-normalised; labels: (N,) finite. NaN when fewer than 3 objects or a constant label.
    """
    n = embeddings.shape[0]
    if labels.shape != (n,):
        raise ValueError(f"labels {tuple(labels.shape)} must be ({n},), one per embedding")
    labels = labels.double()
    spread = ((labels - labels.mean()) ** 2).sum()
    if n < 3 or spread <= 0:
        return float("nan")
    x = embeddings.float()
    similarity = x @ x.T
    similarity.fill_diagonal_(-float("inf"))  # an object is not its own neighbour
    top, nearest = similarity.topk(min(k, n - 1), dim=1)
    distance = (2.0 - 2.0 * top.double()).clamp_min(0.0).sqrt()  # Euclidean, for unit vectors
    weights = 1.0 / distance.clamp_min(1e-6)  # a duplicate dominates rather than dividing by zero
    predicted = (weights * labels[nearest]).sum(dim=1) / weights.sum(dim=1)
    return float(1.0 - ((predicted - labels) ** 2).sum() / spread)

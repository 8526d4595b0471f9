"""Coverage in embedding space: which observed objects does a suite reproduce, and which of a suite's
objects fall among the observations?

Distance of an object to a reference set: the Euclidean distance to its k-th nearest neighbour there
(faiss, exact). A suite S covers an object x when x's distance to S is no larger than the conformal
`level` quantile of the distances of S's own held-out objects to S: a conformal one-class test, so a
suite covers about `level` (95%) of objects drawn like its own, whatever its density or dimension. Each
object also gets the conformal p-value (1 + #{own distances >= its distance}) / (1 + n_own); its misfit
score for S is 1 - p: near 1 when S never makes anything so far from its own objects.

Reference and queries come from different index halves (cross-fitted: each half queried against the
other), so a same-seed twin is never a query's neighbour. Symmetrically the observed held-out objects are
the reference for "the fraction of each suite's objects that fall among observations".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from downstream.misspec.embed import Embedded
from downstream.misspec.halves import first_half


def kth_distance(reference: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    import faiss

    k = max(1, min(k, len(reference)))
    index = faiss.IndexFlatL2(reference.shape[1])
    index.add(np.ascontiguousarray(reference, dtype=np.float32))
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # small searches: threads only contend on a shared machine
    try:
        squared, _ = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    finally:
        faiss.omp_set_num_threads(threads)
    return np.sqrt(np.maximum(squared[:, -1].astype(np.float64), 0.0))


def conformal_threshold(own: np.ndarray, level: float) -> float:
    """The ceil((n + 1) level)-th smallest own distance (infinite when n is too small for that level)."""
    rank = int(np.ceil((len(own) + 1) * level))
    return float(np.sort(own)[rank - 1]) if rank <= len(own) else float("inf")


def conformal_p_value(own: np.ndarray, distances: np.ndarray) -> np.ndarray:
    own = np.sort(own)
    at_least = len(own) - np.searchsorted(own, distances, side="left")
    return (1.0 + at_least) / (1.0 + len(own))


@dataclass
class Covered:
    covered: np.ndarray  # (N_query,) bool
    misfit: np.ndarray  # (N_query,) 1 - conformal p-value
    distance_ratio: np.ndarray  # (N_query,) distance / threshold (> 1: not covered)


def coverage_of(reference: Embedded, queries: Embedded, k: int, level: float, seed: int) -> Covered:
    """Is each query covered by `reference`? Cross-fitted over the index halves."""
    ref_a, query_a = first_half(reference.index, seed), first_half(queries.index, seed)
    covered = np.zeros(len(queries), bool)
    misfit = np.zeros(len(queries))
    ratio = np.zeros(len(queries))
    for half in (True, False):
        ref_rows, own_rows = np.flatnonzero(ref_a != half), np.flatnonzero(ref_a == half)
        rows = np.flatnonzero(query_a == half)
        if len(ref_rows) == 0 or len(own_rows) == 0:
            raise ValueError(f"{reference.name}: an index half is empty; too few objects for coverage")
        if len(rows) == 0:
            continue
        own = kth_distance(reference.x[ref_rows], reference.x[own_rows], k)
        distance = kth_distance(reference.x[ref_rows], queries.x[rows], k)
        threshold = conformal_threshold(own, level)
        covered[rows] = distance <= threshold
        misfit[rows] = 1.0 - conformal_p_value(own, distance)
        ratio[rows] = distance / threshold if np.isfinite(threshold) and threshold > 0 else 0.0
    return Covered(covered, misfit, ratio)

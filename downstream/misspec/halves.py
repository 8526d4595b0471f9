"""Splitting objects into halves by their object index, never by row.

Same-seed suites are paired with the observed dataset (index i is the same random draw with other knobs),
so observed object i and simulated object i must fall in the same half: a classifier or a neighbour search
fitted on one half then never sees the twin of an object it is evaluated on.
"""

from __future__ import annotations

import numpy as np

_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return (z ^ (z >> np.uint64(31))) & _MASK


def index_uniform(index: np.ndarray, seed: int, stream: int = 0) -> np.ndarray:
    """A uniform number in [0, 1) per object index: a pure function of (index, seed, stream)."""
    with np.errstate(over="ignore"):
        key = np.asarray(index, dtype=np.uint64) ^ _splitmix64(np.uint64(seed * 1_000_003 + stream + 1))
    return (_splitmix64(key) >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def first_half(index: np.ndarray, seed: int) -> np.ndarray:
    """(N,) bool: True for objects in half A (training half), False for half B (held-out half)."""
    return index_uniform(index, seed) < 0.5


def balanced_rows(counts_rows: list[np.ndarray], seed: int) -> list[np.ndarray]:
    """Seeded equal-size subsamples (the smallest group's size) of each group of row indices, sorted."""
    size = min(len(rows) for rows in counts_rows)
    rng = np.random.default_rng(seed)
    return [np.sort(rng.choice(rows, size=size, replace=False)) if len(rows) > size else np.sort(rows)
            for rows in counts_rows]

"""Normalisation statistics, measured on the train split while a dataset is written.

Models read these from the manifest instead of hard-coding constants. Robust statistics (median and
1.4826 x MAD) on a bounded reservoir of objects keep memory flat for any dataset size.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from astrofm.data.format import DatasetSpec, Sample

RESERVOIR_SIZE = 2048


def _robust(values: np.ndarray) -> tuple[float, float]:
    if values.size == 0:
        return 0.0, 1.0
    median = float(np.median(values))
    scale = float(1.4826 * np.median(np.abs(values - median)))
    return median, scale if scale > 0 else 1.0


class StatisticsAccumulator:
    """Feed train objects with `add`; `result()` gives the manifest's `statistics` block."""

    def __init__(self, spec: DatasetSpec, capacity: int = RESERVOIR_SIZE, seed: int = 0):
        self.spec = spec
        self.capacity = capacity
        self.rng = np.random.default_rng(seed)  # fixed: same data, same statistics
        self.reservoirs: dict[str, list[dict[str, np.ndarray]]] = {m: [] for m in spec.modalities}
        self.seen: dict[str, int] = {m: 0 for m in spec.modalities}
        self.label_sums: dict[str, list[float]] = {}  # name -> [n, sum, sum of squares, min, max]

    def add(self, sample: Sample) -> None:
        for modality in sample.modalities:
            self.seen[modality] += 1
            reservoir = self.reservoirs[modality]
            if len(reservoir) < self.capacity:
                reservoir.append(getattr(sample, modality))
            else:
                slot = int(self.rng.integers(0, self.seen[modality]))
                if slot < self.capacity:
                    reservoir[slot] = getattr(sample, modality)
        for name, value in sample.labels.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            n, total, squares, low, high = self.label_sums.get(name, [0, 0.0, 0.0, math.inf, -math.inf])
            self.label_sums[name] = [n + 1, total + value, squares + value * value,
                                     min(low, value), max(high, value)]

    def _channel_stats(self, modality: str) -> dict[str, Any]:
        reservoir = self.reservoirs[modality]
        if not reservoir:
            return {"count": 0}
        flux = np.stack([item["flux"] for item in reservoir]).astype(np.float64)
        if modality == "photometry":
            noise = np.stack([item["flux_err"] for item in reservoir]).astype(np.float64)
            valid = noise > 0
        else:
            ivar = np.stack([item.get("ivar", np.ones_like(item["flux"])) for item in reservoir])
            valid = ivar > 0
            noise = np.where(valid, 1.0 / np.sqrt(np.where(valid, ivar, 1.0)), 0.0)
        if modality == "spectrum":  # one channel: the whole spectrum
            flux, noise, valid = flux[:, None, :], noise[:, None, :], valid[:, None, :]
        elif modality == "photometry":  # one channel per band, one value each
            flux, noise, valid = flux[:, :, None], noise[:, :, None], valid[:, :, None]
        else:  # images: channel = band, values = pixels
            flux = flux.reshape(*flux.shape[:2], -1)
            noise, valid = noise.reshape(flux.shape), valid.reshape(flux.shape)
        medians, scales, noises = [], [], []
        for channel in range(flux.shape[1]):
            median, scale = _robust(flux[:, channel][valid[:, channel]])
            medians.append(median)
            scales.append(scale)
            channel_noise = noise[:, channel][valid[:, channel]]
            noises.append(float(np.median(channel_noise)) if channel_noise.size else 0.0)
        if modality == "spectrum":
            medians, scales, noises = medians[0], scales[0], noises[0]
        return {"count": len(reservoir), "flux_median": medians, "flux_scale": scales, "noise_median": noises}

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": f"train split, up to {self.capacity} objects per modality"}
        for modality in self.spec.modalities:
            out[modality] = self._channel_stats(modality)
        labels = {}
        for name, (n, total, squares, low, high) in sorted(self.label_sums.items()):
            mean = total / n
            labels[name] = {"count": n, "mean": mean, "std": math.sqrt(max(squares / n - mean * mean, 0.0)),
                            "min": low, "max": high}
        out["labels"] = labels
        return out

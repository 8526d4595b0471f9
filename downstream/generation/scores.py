"""Scores of generated targets against the truth, per test object and summarised.

    chi2 per object   mean over entries with ivar > 0 of (generated - true)^2 * ivar (pixels of a
                      spectrum, bands of photometry); the truth's noise, so a perfect noiseless
                      prediction scores about 1
    mse per object    mean over the same entries of the squared difference in the codec's normalised space
    consistency       spectrum target: the redshift read back from the generated spectrum by the frozen
                      spectrum encoder and a kNN regressor fitted on the train split's true spectrum
                      embeddings (generated spectra are embedded with the truth's ivar, so the encoder sees
                      the same valid pixels and noise channel as for the real spectrum);
                      photometry target: the error of adjacent-band colours (mag) where both fluxes are
                      positive in the truth and the prediction
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from downstream.generation.methods import normalised_mse
from downstream.regression import probes
from downstream.regression.metrics import NMAD_SCALE, point_metrics


def chi2_per_object(flux: np.ndarray, truth: np.ndarray, ivar: np.ndarray) -> np.ndarray:
    valid = (ivar > 0) & np.isfinite(ivar)
    terms = np.where(valid, (flux.astype(np.float64) - truth) ** 2 * np.where(valid, ivar, 0.0), 0.0)
    return terms.sum(axis=1) / np.maximum(valid.sum(axis=1), 1)


def accuracy(flux: np.ndarray, truth: np.ndarray, ivar: np.ndarray, codec,
             bands: list[str] | None) -> tuple[dict[str, Any], np.ndarray]:
    chi2 = chi2_per_object(flux, truth, ivar)
    mse = normalised_mse(codec, flux, truth, ivar)
    out: dict[str, Any] = {"chi2_median": float(np.median(chi2)), "chi2_mean": float(np.mean(chi2)),
                           "mse_median": float(np.median(mse)), "mse_mean": float(np.mean(mse))}
    if bands:  # photometry: per band too
        valid = (ivar > 0) & np.isfinite(ivar)
        per_band = (flux.astype(np.float64) - truth) ** 2 * np.where(valid, ivar, 0.0)
        out["chi2_median_by_band"] = {b: float(np.median(per_band[valid[:, j], j])) if valid[:, j].any() else None
                                      for j, b in enumerate(bands)}
    return out, chi2


@torch.no_grad()
def embed_spectra(model, flux: np.ndarray, ivar: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Spectrum embeddings of arrays (flux, ivar) through the frozen model."""
    parts = []
    for start in range(0, len(flux), batch_size):
        batch = {"spectrum": {"flux": torch.from_numpy(np.ascontiguousarray(flux[start:start + batch_size])),
                              "ivar": torch.from_numpy(np.ascontiguousarray(ivar[start:start + batch_size]))}}
        parts.append(model.embed(batch)["spectrum"].float().numpy())
    return np.concatenate(parts) if parts else np.zeros((0, model.embed_dim), np.float32)


class RedshiftReader:
    """kNN regressor (downstream.regression.probes.fit_knn) from true spectrum embeddings to the label,
    fitted on the train split's objects with a finite label."""

    def __init__(self, model, train_embedding: np.ndarray, train_label: np.ndarray, label: str, k: int):
        keep = np.isfinite(train_label)
        if keep.sum() < 2:
            raise ValueError(f"label consistency needs the label {label!r} on at least 2 train objects; "
                             f"{int(keep.sum())} have it (pass --no-consistency to skip the check)")
        self.model, self.label = model, label
        self.probe = probes.fit_knn(train_embedding[keep], train_label[keep], None, None, k=k, whiten=None, power=1)

    def score(self, embedding: np.ndarray, label: np.ndarray) -> dict[str, Any]:
        keep = np.isfinite(label)
        predicted = self.probe.predict(embedding[keep])
        return {"label": self.label, "regressor": "knn", **self.probe.chosen, "n": int(keep.sum()),
                **point_metrics(label[keep], predicted, redshift_like=True), "predicted": predicted,
                "true": label[keep]}

    def of_spectra(self, flux: np.ndarray, ivar: np.ndarray, label: np.ndarray) -> dict[str, Any]:
        return self.score(embed_spectra(self.model, flux, ivar), label)


def colour_errors(flux: np.ndarray, truth: np.ndarray, bands: list[str]) -> dict[str, Any]:
    """Adjacent-band colours: generated minus true (mag), where all four fluxes are positive."""
    out: dict[str, Any] = {"kind": "colours"}
    for j in range(len(bands) - 1):
        ok = (flux[:, j] > 0) & (flux[:, j + 1] > 0) & (truth[:, j] > 0) & (truth[:, j + 1] > 0)
        name = f"{bands[j]}-{bands[j + 1]}"
        if not ok.any():
            out[name] = {"n": 0}
            continue
        generated = -2.5 * np.log10(flux[ok, j] / flux[ok, j + 1])
        true = -2.5 * np.log10(truth[ok, j] / truth[ok, j + 1])
        r = generated - true
        out[name] = {"n": int(ok.sum()), "fraction_positive": float(ok.mean()), "bias": float(r.mean()),
                     "median_abs": float(np.median(np.abs(r))),
                     "nmad": float(NMAD_SCALE * np.median(np.abs(r - np.median(r))))}
    return out

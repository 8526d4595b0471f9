"""Target codecs (what the generators predict) and raw-source features (what the supervised baseline reads).

A codec maps a target modality's arrays to a fixed-length code and back to flux units; it is fitted on
the train split only.

    SpectrumCodec     code = [log s, PCA coefficients of flux / s]: s is the object's mean flux over
                      valid pixels (floored at 0.1 x the manifest's flux_scale), the shape flux / s is
                      projected on the top principal components of the higher-S/N half of the train
                      shapes. Separating the brightness from the shape keeps the PCA from spending its
                      components on the huge spread of object brightness.
    PhotometryCodec   code = asinh((flux - median) / scale) per band, the photometry encoder's own value.

Codes are standardised per column with train statistics; `weights` make the training loss of a spectrum
code proportional to (log-scale error)^2 + (shape error per pixel)^2 / (shape variance per pixel), so
every PCA component counts by the pixel variance it explains, not equally.

`normalise` is the space in which MSE is reported: the manifest standardisation (flux - median) / scale
for spectra, the asinh value for photometry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

PCA_MAX_ROWS = 8000  # most train shapes used to find the components (the highest-S/N ones)
SCALE_FLOOR = 0.1  # smallest per-object scale, in units of the manifest's flux_scale


def _valid(ivar: np.ndarray) -> np.ndarray:
    return (ivar > 0) & np.isfinite(ivar)


def _column_stats(code: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sd = code.std(axis=0)
    return code.mean(axis=0), np.where(sd > 1e-8, sd, 1.0)


@dataclass
class SpectrumCodec:
    median: float
    scale: float
    n_components: int = 64
    seed: int = 0

    def _split(self, flux: np.ndarray, ivar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(log s (N,), shape (N, L)) with invalid pixels filled by the train mean shape (or 1 before fit)."""
        valid = _valid(ivar)
        counts = np.maximum(valid.sum(axis=1), 1)
        mean = np.where(valid, flux, 0.0).sum(axis=1) / counts
        s = np.maximum(mean, SCALE_FLOOR * self.scale)
        shape = flux / s[:, None]
        fill = getattr(self, "mean_shape", None)
        shape = np.where(valid, shape, 1.0 if fill is None else fill[None, :])
        return np.log(s), shape.astype(np.float32)

    def fit(self, flux: np.ndarray, ivar: np.ndarray) -> SpectrumCodec:
        import torch

        _, shape = self._split(flux, ivar)
        valid = _valid(ivar)
        self.mean_shape = (np.where(valid, shape, 0.0).sum(0) / np.maximum(valid.sum(0), 1)).astype(np.float32)
        _, shape = self._split(flux, ivar)  # refilled with the mean shape
        # Components from the higher-S/N half: fitted on all objects they would spend themselves on the
        # pixel noise of the many faint spectra, and decoded spectra would carry that noise.
        sigma = np.where(valid, 1.0 / np.sqrt(np.where(valid, ivar, 1.0)), np.inf)
        snr = np.median(np.abs(flux) / sigma, axis=1)
        rows = np.argsort(-snr, kind="stable")[:max(1, min(PCA_MAX_ROWS, len(shape) // 2))]
        centred = torch.from_numpy(shape[rows] - self.mean_shape)
        k = max(1, min(self.n_components, *centred.shape))
        torch.manual_seed(self.seed)
        _, _, v = torch.svd_lowrank(centred, q=min(k + 10, *centred.shape), niter=4)
        self.basis = v[:, :k].T.contiguous().numpy()  # (K, L), orthonormal rows
        self.pixel_variance = float(((shape - self.mean_shape) ** 2).mean())
        code = self._raw_code(flux, ivar)
        self.code_mean, self.code_sd = _column_stats(code)
        # log s error counts once; the shape error counts per pixel relative to the shape variance.
        coefficient = self.code_sd[1:] ** 2 / (self.pixel_variance * shape.shape[1])
        self.weights = np.concatenate([[1.0], coefficient]).astype(np.float32)
        return self

    def _raw_code(self, flux: np.ndarray, ivar: np.ndarray) -> np.ndarray:
        log_s, shape = self._split(flux, ivar)
        coefficients = (shape - self.mean_shape) @ self.basis.T
        return np.concatenate([log_s[:, None], coefficients], axis=1)

    def encode(self, flux: np.ndarray, ivar: np.ndarray) -> np.ndarray:
        return ((self._raw_code(flux, ivar) - self.code_mean) / self.code_sd).astype(np.float32)

    def decode(self, code: np.ndarray) -> np.ndarray:
        raw = np.asarray(code, np.float64) * self.code_sd + self.code_mean
        shape = self.mean_shape + raw[:, 1:] @ self.basis
        return (np.exp(raw[:, :1]) * shape).astype(np.float32)

    def normalise(self, flux: np.ndarray) -> np.ndarray:
        return (flux - self.median) / self.scale

    def describe(self) -> dict[str, Any]:
        return {"codec": "log mean flux + PCA of flux / mean flux", "n_components": int(self.basis.shape[0]),
                "normalised_space": "(flux - flux_median) / flux_scale (manifest statistics)"}


@dataclass
class PhotometryCodec:
    median: np.ndarray  # (B,)
    scale: np.ndarray  # (B,)

    def _value(self, flux: np.ndarray) -> np.ndarray:
        return np.arcsinh((flux - self.median) / self.scale)

    def fit(self, flux: np.ndarray, ivar: np.ndarray) -> PhotometryCodec:
        valid = _valid(ivar)
        value = self._value(flux)
        self.fill = np.where(valid, value, 0.0).sum(0) / np.maximum(valid.sum(0), 1)
        self.code_mean, self.code_sd = _column_stats(np.where(valid, value, self.fill))
        self.weights = np.ones(len(self.median), np.float32)
        return self

    def encode(self, flux: np.ndarray, ivar: np.ndarray) -> np.ndarray:
        value = np.where(_valid(ivar), self._value(flux), self.fill)
        return ((value - self.code_mean) / self.code_sd).astype(np.float32)

    def decode(self, code: np.ndarray) -> np.ndarray:
        value = np.asarray(code, np.float64) * self.code_sd + self.code_mean
        return (np.sinh(value) * self.scale + self.median).astype(np.float32)

    def normalise(self, flux: np.ndarray) -> np.ndarray:
        return self._value(flux)

    def describe(self) -> dict[str, Any]:
        return {"codec": "asinh((flux - flux_median) / flux_scale) per band",
                "normalised_space": "asinh((flux - flux_median) / flux_scale) (manifest statistics)"}


def make_codec(modality: str, statistics: dict[str, Any], n_components: int, seed: int):
    """An unfitted codec for `modality`, normalised with the manifest's statistics block for it."""
    if modality == "spectrum":
        return SpectrumCodec(float(statistics["flux_median"]), float(statistics["flux_scale"]), n_components, seed)
    if modality == "photometry":
        return PhotometryCodec(np.asarray(statistics["flux_median"], np.float64),
                               np.asarray(statistics["flux_scale"], np.float64))
    raise ValueError(f"no codec for target modality {modality!r}; targets are spectrum and photometry")


class RawFeatures:
    """The raw source, as the supervised baseline reads it: photometry asinh values and errors with a
    validity flag; image pixels as asinh((flux - median) / scale) per band (invalid pixels 0), flattened;
    spectra through a SpectrumCodec fitted on the train split. Columns are then standardised on train."""

    def __init__(self, modality: str, statistics: dict[str, Any], n_components: int, seed: int):
        self.modality = modality
        self.statistics = statistics
        self.codec = make_codec("spectrum", statistics, n_components, seed) if modality == "spectrum" else None

    def _features(self, flux: np.ndarray, ivar: np.ndarray) -> np.ndarray:
        valid = _valid(ivar)
        if self.modality == "spectrum":
            return self.codec.encode(flux, ivar)
        median = np.asarray(self.statistics["flux_median"], np.float64)
        scale = np.asarray(self.statistics["flux_scale"], np.float64)
        if self.modality == "photometry":
            err = np.where(valid, 1.0 / np.sqrt(np.where(valid, ivar, 1.0)), 0.0)
            value = np.where(valid, np.arcsinh((flux - median) / scale), 0.0)
            return np.concatenate([value, np.arcsinh(err / scale), valid], axis=1).astype(np.float32)
        # image (N, C, H, W): per-band statistics broadcast over pixels
        value = np.arcsinh((flux - median[:, None, None]) / scale[:, None, None])
        return np.where(valid, value, 0.0).reshape(len(flux), -1).astype(np.float32)

    def fit(self, flux: np.ndarray, ivar: np.ndarray) -> RawFeatures:
        if self.codec is not None:
            self.codec.fit(flux, ivar)
        self.mean, self.sd = _column_stats(self._features(flux, ivar))
        return self

    def __call__(self, flux: np.ndarray, ivar: np.ndarray) -> np.ndarray:
        return ((self._features(flux, ivar) - self.mean) / self.sd).astype(np.float32)

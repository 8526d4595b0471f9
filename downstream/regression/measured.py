"""The measured-image reference: a label predicted from classical measurements of the noisy images.

The information ceiling (ceiling.py) bounds an image encoder from above with the exact, noise-free
fluxes and profile. This is the other side: what an astronomer's pipeline gets from the same noisy,
PSF-blurred stamps the encoder sees. Per band, fluxes in circular apertures about the stamp centre
(survey cut-outs are centred on the object), and on the band-summed stamp galsim's HSM adaptive
moments (size and ellipticity); the MLP probe fitted on them (train, early-stopped on val, scored on
test) is the photo-z a catalogue of aperture photometry and shapes would give. An encoder's kNN well
below it leaves information in the images; one near it has taken what the noise lets through.

    reference = measured_image_reference("DATA_DIR", "redshift", seeds=2)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from downstream.regression.ceiling import probe_scores
from downstream.regression.report import SPLITS


@dataclass(frozen=True)
class MeasurementConfig:
    aperture_radii: tuple[float, ...] = (1.5, 2.5, 4.0, 6.0, 9.0, 13.0)  # pixels; those past the stamp's edge are dropped
    flux_softening: float = 0.05  # flux units (nanomaggies): arcsinh(f / b) keeps noisy negative fluxes finite


DEFAULT_MEASUREMENTS = MeasurementConfig()


def aperture_radii(size: int, config: MeasurementConfig) -> list[float]:
    """The configured radii that fit inside a size x size stamp about its centre."""
    radii = [r for r in config.aperture_radii if 0 < r <= size / 2]
    if not radii:
        raise ValueError(f"no aperture radius of {list(config.aperture_radii)} fits a {size}-pixel stamp")
    return radii


def measure_image(flux: np.ndarray, config: MeasurementConfig = DEFAULT_MEASUREMENTS) -> np.ndarray:
    """(C * R + 4,) features of one (C, H, W) stamp: arcsinh of the aperture fluxes, band by band and
    radius by radius (cumulative), then HSM's size sigma (pixels), e1, e2 and a flag, 1 where the moments
    failed (then the three are 0: a faint or odd stamp is still measured, and the probe sees the flag)."""
    import galsim

    flux = np.asarray(flux, dtype=np.float64)
    if flux.ndim != 3 or flux.shape[1] != flux.shape[2]:
        raise ValueError(f"an image must be (C, H, W) with H == W, got shape {flux.shape}")
    size = flux.shape[1]
    centre = (size - 1) / 2.0
    radius = np.hypot(*(np.mgrid[0:size, 0:size] - centre))  # (H, W) pixels from the centre
    apertures = [flux[:, radius < r].sum(axis=1) for r in aperture_radii(size, config)]  # R x (C,)
    fluxes = np.arcsinh(np.stack(apertures, axis=1) / config.flux_softening).ravel()  # (C * R,)
    moments = galsim.hsm.FindAdaptiveMom(galsim.Image(flux.sum(axis=0)), strict=False)
    if moments.moments_status == 0:
        shape = [moments.moments_sigma, moments.observed_shape.e1, moments.observed_shape.e2, 0.0]
    else:
        shape = [0.0, 0.0, 0.0, 1.0]
    return np.concatenate([fluxes, shape])


def measure_dataset(data_dir: str | Path, target: str, config: MeasurementConfig = DEFAULT_MEASUREMENTS,
                    progress: bool = True) -> dict[str, np.ndarray]:
    """{"x": (N, F) measurements, "y": (N,) the target (NaN where an object lacks it), "split": (N,),
    "radii": the apertures' radii} over every object of the dataset that has an image."""
    from tqdm import tqdm

    from astrofm.data.reader import Dataset

    dataset = Dataset(data_dir)
    if dataset.spec.image is None:
        raise ValueError(f"{data_dir}: the dataset has no image modality to measure")
    radii = aperture_radii(dataset.spec.image.size, config)
    total = sum(dataset.manifest.count(split) for split in SPLITS)
    features, labels, splits = [], [], []
    with tqdm(total=total, desc="measuring images", unit="obj", disable=not progress) as bar:
        for split in SPLITS:
            for sample in dataset.iter_samples(split):
                bar.update()
                if sample.image is None:
                    continue
                features.append(measure_image(sample.image["flux"], config))
                labels.append(_label(sample, target, data_dir))
                splits.append(split)
    if not features:
        raise ValueError(f"{data_dir}: no object has an image to measure")
    return {"x": np.stack(features), "y": np.array(labels), "split": np.array(splits, dtype=object),
            "radii": radii}


def _label(sample, target: str, data_dir) -> float:
    value = sample.labels.get(target)
    if value is None:
        return np.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{data_dir}: object {sample.id}: label {target!r} is not numeric ({value!r})") from None


def measured_image_reference(data_dir: str | Path, target: str = "redshift", seeds: int = 2,
                             config: MeasurementConfig = DEFAULT_MEASUREMENTS,
                             progress: bool = True) -> dict[str, Any]:
    """The MLP probe's test metrics (mean and std over seeds) from the measurements to `target`."""
    measured = measure_dataset(data_dir, target, config, progress)
    where = f"{data_dir} (measured images)"
    if not np.isfinite(measured["y"]).any():
        raise ValueError(f"{where}: no object with an image has a numeric label {target!r}")
    return {"features": f"arcsinh aperture fluxes per band at radii {measured['radii']} pixels, "
                        "HSM adaptive moments of the band-summed stamp",
            **probe_scores(measured["x"], measured["y"], measured["split"], target, seeds, where)}

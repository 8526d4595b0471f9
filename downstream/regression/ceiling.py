"""Information ceilings: how well a label can be predicted from noise-free catalogue columns.

The mock universe records every object's true fluxes and shape beside its noisy observations. An MLP
probe fitted on those true columns (train split, early-stopped on val, scored on test, as `astrofm
regress` does) bounds what an encoder of the noisy, PSF-blurred data can reach: no image encoder knows
more about redshift than the galaxy's exact fluxes in the image bands and its profile. A quality target above the
ceiling asks for information the data do not hold.

    ceilings = information_ceilings(EmbeddingStore.open("EMB_DIR"), "redshift", CEILING_COLUMNS, seeds=2)

The same from a suite's true catalogue alone, before any survey is rendered or encoder trained (what a
new suite's images could at best say; benchmarks/bench_mock_ceiling.py):

    ceilings = catalogue_ceilings(truth_catalogue(load_suite("observed"), 20000, seed=0))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from downstream.regression import probes
from downstream.regression.metrics import is_redshift_like, point_metrics
from downstream.regression.report import SPLITS, label_values

PROFILE_COLUMNS = ("half_light_radius_arcsec", "sersic_index", "axis_ratio", "bulge_fraction")


def ceiling_columns(image_bands: Sequence[str] = ("g", "r", "z"),
                    photometry_bands: Sequence[str] = ("g", "r", "z", "W1", "W2")) -> dict[str, tuple[str, ...]]:
    """What each modality could at best measure of an object, as mock catalogue columns: a perfect image
    (the exact fluxes in the image bands and the exact light profile), its fluxes alone, and perfect photometry."""
    image_fluxes = tuple(f"flux_true_{band}" for band in image_bands)
    return {"image": (*image_fluxes, *PROFILE_COLUMNS), "image_fluxes": image_fluxes,
            "photometry": tuple(f"flux_true_{band}" for band in photometry_bands)}


def mock_bands(column_names: Sequence[str]) -> tuple[list[str], list[str]]:
    """(image bands, photometry bands) of a mock survey from its label columns: an image band has a
    psf_fwhm_{band} label, a photometry band a flux_true_{band} one (columns of extra speclite filters,
    flux_true_decam2014-i, name the filter, with a '-', and are not survey bands)."""
    image = [name.removeprefix("psf_fwhm_") for name in column_names if name.startswith("psf_fwhm_")]
    photometry = [name.removeprefix("flux_true_") for name in column_names
                  if name.startswith("flux_true_") and "-" not in name]
    return image, photometry


CEILING_COLUMNS = ceiling_columns()  # the default g, r, z mock's
LOG_PREFIXES = ("flux_", "half_light_radius")  # positive, spanning decades: fitted in log10
LOG_FLOOR = 1e-6  # log10 of a non-positive true flux (none in the mock) would be -inf


def catalogue_features(table, columns: Sequence[str], where: str) -> np.ndarray:
    """(N, len(columns)) float64; fluxes and radii in log10. Unknown columns raise, naming them."""
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ValueError(f"{where}: no catalogue column(s) {missing} for the information ceiling "
                         f"(a store of a mock survey has them)")
    out = []
    for name in columns:
        values = label_values(table, name, where)
        out.append(np.log10(np.clip(values, LOG_FLOOR, None)) if name.startswith(LOG_PREFIXES) else values)
    return np.stack(out, axis=1)


def ceiling(table, target: str, columns: Sequence[str], seeds: int, where: str) -> dict[str, Any]:
    """Mean and std over seeds of the MLP probe's test metrics, from `columns` to `target`."""
    x = catalogue_features(table, columns, where)
    y = label_values(table, target, where)
    split = np.array(table.column("split").to_pylist(), dtype=object)
    return {"columns": list(columns), **probe_scores(x, y, split, target, seeds, where)}


def probe_scores(x: np.ndarray, y: np.ndarray, split: np.ndarray, target: str, seeds: int,
                 where: str) -> dict[str, Any]:
    """The MLP probe from features x (N, F) to y (N,): fitted on the train rows, early-stopped on val,
    scored on test; mean and std of the test metrics over seeds. Rows with a NaN are left out."""
    rows = {}
    for name in SPLITS:
        keep = np.flatnonzero((split == name) & np.isfinite(y) & np.isfinite(x).all(axis=1))
        if keep.size < 2:
            raise ValueError(f"{where}: the {name} split has {keep.size} objects with finite {target!r} and "
                             f"features; need at least 2")
        rows[name] = keep
    redshift_like = is_redshift_like(target)
    runs = []
    for seed in range(seeds):
        probe = probes.fit_mlp(x[rows["train"]], y[rows["train"]], x[rows["val"]], y[rows["val"]], seed=seed)
        runs.append(point_metrics(y[rows["test"]], probe.predict(x[rows["test"]]), redshift_like))
    keys = runs[0].keys()
    return {"seeds": seeds, **{f"n_{name}": int(rows[name].size) for name in SPLITS},
            "mean": {k: float(np.mean([r[k] for r in runs])) for k in keys},
            "std": {k: float(np.std([r[k] for r in runs])) for k in keys}}


def catalogue_ceilings(catalogue: Mapping[str, np.ndarray], target: str = "redshift",
                       columns: Mapping[str, Sequence[str]] | None = None, seeds: int = 1,
                       where: str = "catalogue") -> dict[str, dict[str, Any]]:
    """name -> ceiling(...) for each entry of `columns` (default: ceiling_columns of the catalogue's own
    bands), from a mock's true catalogue as columns with a "split" (astrofm.sims.generate.truth_catalogue):
    the ceilings of a suite before its survey is generated."""
    import pyarrow as pa

    if len(catalogue.get("split", ())) == 0:
        raise ValueError(f"{where}: the catalogue has no objects (or no 'split' column)")
    table = pa.table({key: np.asarray(value) for key, value in catalogue.items()})
    columns = ceiling_columns(*mock_bands(table.column_names)) if columns is None else columns
    return {name: ceiling(table, target, cols, seeds, where) for name, cols in columns.items()}


def information_ceilings(store, target: str = "redshift",
                         columns: Mapping[str, Sequence[str]] | None = None,
                         seeds: int = 2) -> dict[str, dict[str, Any]]:
    """name -> ceiling(...) for each entry of `columns` (default: ceiling_columns of the survey's own bands),
    read from any modality of an embedding store (every modality's table carries the same labels)."""
    if not store.modalities:
        raise ValueError(f"{store.path}: the embedding store has no modalities")
    modality = store.modalities[0]
    table = store.read(modality, splits=list(SPLITS))
    where = f"{store.path} ({modality})"
    columns = ceiling_columns(*mock_bands(table.column_names)) if columns is None else columns
    return {name: ceiling(table, target, cols, seeds, where) for name, cols in columns.items()}

"""A picture of what retrieval finds: a few query objects, each with its nearest neighbours.

For each query, the neighbours are found across modalities (its spectrum embedding against the image
embeddings of the pool, "the galaxies that look like this spectrum"), and shown as g, r, z colour
stamps above their spectra, so a person can judge at a glance whether the matches make sense.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _colour_stamp(flux: np.ndarray) -> np.ndarray:
    """(C, H, W) fluxes, bands blue to red -> (H, W, 3) RGB in [0, 1] with an asinh stretch: the reddest band
    as red, the bluest as blue and a middle one as green (g, r, z; g, i, z of g, r, i, z); one band as grey."""
    flux = np.asarray(flux, dtype=np.float64)
    bands = flux.shape[0]
    rgb = np.moveaxis(flux[[bands - 1, bands // 2, 0]], 0, -1)
    scale = np.percentile(np.abs(rgb), 99.5) or 1.0
    return np.clip(np.arcsinh(rgb / (0.1 * scale)) / np.arcsinh(10.0), 0.0, 1.0)


def _samples_by_id(data: str, ids: set[str]) -> tuple[dict, np.ndarray | None]:
    """The raw objects with these ids, and the dataset's wavelength grid (None without spectra)."""
    from astrofm.data.reader import Dataset

    dataset, found = Dataset(data), {}
    for sample in dataset.iter_samples():
        if sample.id in ids:
            found[sample.id] = sample
            if len(found) == len(ids):
                break
    spectrum = dataset.spec.spectrum
    return found, spectrum.wavelength() if spectrum is not None else None


def plot_query_neighbours(tables: dict, data: str, out_png: Path, n_queries: int = 3, k: int = 5,
                          query_modality: str = "spectrum", target_modality: str = "image",
                          seed: int = 0) -> bool:
    """Write `out_png`; returns False (and writes nothing) when the modalities or raw data are missing.

    tables: modality -> {"ids": [...], "vectors": (N, D) unit vectors, "z": (N,)} as the report reads them.
    """
    if query_modality not in tables or target_modality not in tables or not Path(data or "").is_dir():
        return False
    queries, targets = tables[query_modality], tables[target_modality]
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(queries["ids"]), size=min(n_queries, len(queries["ids"])), replace=False)
    rows = []
    for index in picks:
        scores = targets["vectors"] @ queries["vectors"][index]  # (N,) cosine similarities
        order = [j for j in np.argsort(-scores) if targets["ids"][j] != queries["ids"][index]][:k]
        rows.append((queries["ids"][index], [(targets["ids"][j], float(scores[j])) for j in order]))
    samples, wavelength = _samples_by_id(data, {qid for qid, _ in rows} | {nid for _, ns in rows for nid, _ in ns})

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = k + 1
    fig = plt.figure(figsize=(1.6 * columns, 4.0 * len(rows)))
    grid = fig.add_gridspec(2 * len(rows), columns, height_ratios=[1, 1.1] * len(rows), hspace=0.75)
    for r, (query_id, neighbours) in enumerate(rows):
        shown = [(query_id, None)] + neighbours
        spectrum_axis = fig.add_subplot(grid[2 * r + 1, :])
        for c, (object_id, score) in enumerate(shown):
            sample = samples.get(object_id)
            axis = fig.add_subplot(grid[2 * r, c])
            axis.set_axis_off()
            redshift = sample.labels.get("redshift") if sample else None
            title = "query" if score is None else f"#{c}  {score:.3f}"
            axis.set_title(f"{title}\nz={redshift:.3f}" if redshift is not None else title, fontsize=7)
            if sample is not None and sample.image is not None:
                axis.imshow(_colour_stamp(sample.image["flux"]), origin="lower")
            if sample is not None and sample.spectrum is not None:
                flux = np.convolve(sample.spectrum["flux"], np.ones(9) / 9, mode="same")  # 18 A boxcar for the eye
                x = wavelength if wavelength is not None and wavelength.size == flux.size else np.arange(flux.size)
                spectrum_axis.plot(x, flux / (np.percentile(np.abs(flux), 99) or 1.0) + 1.2 * c,
                                   lw=1.2 if score is None else 0.6, color="k" if score is None else None)
        spectrum_axis.set(yticks=[], xlabel="observed wavelength (Angstrom)",
                          title=f"{query_id}: its {query_modality} against {target_modality} embeddings; "
                                f"spectra offset in rank order", )
        spectrum_axis.title.set_fontsize(8)
    fig.savefig(out_png, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True

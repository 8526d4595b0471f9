"""A retrieval report over an embedding store: how well each modality finds the same object in another,
and how physically alike an object's nearest neighbours are.

For every pair of modalities (a, b), over a pool of objects having both (the first `max_objects` in
store order):
    top1, top10         fraction of a-queries whose own b-embedding ranks first / within 10 (and b->a)
    curve               fraction correct vs rank r = 1..pool (both directions averaged), and its area
                        (the mean of the curve over all ranks: 1 for perfect, about 0.5 for random)
    random              the chance values: k / pool, area (pool + 1) / (2 pool)
For every modality and for every cross-modal direction a->b, the neighbour label consistency:
    median |dz| / (1 + z) over each object's 10 nearest neighbours (z: `label`, e.g. redshift)
beside two baselines: 10 random objects of the pool, and 10 nearest neighbours in the raw inputs
(cosine on standardised flux; the dataset folder is found through the store's manifest, or given).
For every modality and every numeric label column, the neighbour agreement (astrofm.neighbour_agreement):
median |dlabel| over the 10 nearest neighbours / over random pairs, which says what the neighbourhoods
are organised by (brightness, redshift, galaxy type, ...).

Output: REPORT_DIR/metrics.json, REPORT_DIR/retrieval_curves.png, REPORT_DIR/label_consistency.png,
REPORT_DIR/neighbour_agreement.png.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from astrofm.atomic import staged_folder
from astrofm.embedstore.store import EmbeddingStore, table_vectors
from astrofm.neighbour_agreement import agreement, plot_agreement
from astrofm.neighbour_plot import plot_query_neighbours
from astrofm.reports import check_report_target, write_metrics

NEIGHBOURS = 10


@dataclass
class RetrievalReportConfig:
    embeddings: str  # embedding folder (astrofm embed)
    out: str  # report folder to write
    split: str | None = "test"  # objects of this split only; None: all
    max_objects: int = 1000  # pool size per modality pair (an N x N similarity matrix)
    label: str = "redshift"  # numeric label for the neighbour consistency
    data: str | None = None  # dataset folder for the raw-input baseline; None: the store's, if present
    raw_baseline: bool = True  # compute the raw-input kNN baseline
    seed: int = 0
    overwrite: bool = False


def true_match_ranks(queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """1-based rank of candidate i among all candidates for query i (ties count against it)."""
    similarity = queries @ candidates.T
    true = np.diagonal(similarity)[:, None]
    return (similarity >= true).sum(axis=1)


def curve_from_ranks(ranks: np.ndarray, pool: int) -> np.ndarray:
    """Fraction of queries whose true match is within rank r, for r = 1..pool."""
    counts = np.bincount(np.clip(ranks, 1, pool), minlength=pool + 1)[1:]
    return np.cumsum(counts) / len(ranks)


def neighbour_dz(features: np.ndarray, z: np.ndarray, candidates: np.ndarray | None = None,
                 z_candidates: np.ndarray | None = None, own: np.ndarray | None = None,
                 k: int = NEIGHBOURS) -> float:
    """Median |dz|/(1+z) between each object and its k nearest candidates (cosine), never counting the
    object itself: with no `candidates` they are the objects themselves; else `own[i]` is the row of
    object i among the candidates (-1 if absent)."""
    if candidates is None:
        candidates, z_candidates, own = features, z, np.arange(len(features))
    similarity = features @ candidates.T
    if own is not None:
        rows = np.flatnonzero(own >= 0)
        similarity[rows, own[rows]] = -np.inf
    k = min(k, candidates.shape[0] - (own is not None and bool((own >= 0).any())))
    nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    dz = np.abs(z_candidates[nearest] - z[:, None]) / (1 + z[:, None])
    return float(np.nanmedian(dz))


def random_dz(z: np.ndarray, rng: np.random.Generator, k: int = NEIGHBOURS) -> float:
    picks = rng.integers(0, len(z), size=(len(z), k))
    return float(np.nanmedian(np.abs(z[picks] - z[:, None]) / (1 + z[:, None])))


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def raw_features(data: str, ids: list[str], modality: str, splits: list[str]) -> np.ndarray | None:
    """Standardised raw inputs of `ids` (rows in that order), unit length; None if some are missing."""
    from astrofm.data.reader import Dataset

    wanted, rows = set(ids), {}
    dataset = Dataset(data)
    for split in splits:
        for sample in dataset.iter_samples(split):
            if sample.id in wanted and getattr(sample, modality) is not None:
                flux = np.asarray(getattr(sample, modality)["flux"], dtype=np.float64).ravel()
                rows[sample.id] = np.arcsinh(flux) if modality == "photometry" else flux
    if len(rows) != len(wanted):
        return None
    x = np.stack([rows[i] for i in ids])
    x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-12)
    return _unit(x)


def _pool(tables: dict, a: str, b: str, max_objects: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    ids_b = {oid: i for i, oid in enumerate(tables[b]["ids"])}
    both = [(i, ids_b[oid]) for i, oid in enumerate(tables[a]["ids"]) if oid in ids_b][:max_objects]
    rows_a, rows_b = [i for i, _ in both], [j for _, j in both]
    return [tables[a]["ids"][i] for i in rows_a], tables[a]["vectors"][rows_a], tables[b]["vectors"][rows_b]


def numeric_labels(table) -> dict[str, np.ndarray]:
    """Every numeric (or boolean) column but the embedding, as float64 arrays (nulls as NaN)."""
    import pyarrow as pa

    out = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        kind = column.type
        if name != "embedding" and (pa.types.is_integer(kind) or pa.types.is_floating(kind)
                                    or pa.types.is_boolean(kind)):
            out[name] = np.asarray(column.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    return out


def read_tables(config: RetrievalReportConfig) -> tuple[EmbeddingStore, dict[str, dict]]:
    """modality -> {"ids", "vectors" (unit), "z", "labels"} for the report's split, modalities with 2+
    objects; "labels" holds every numeric column (numeric_labels)."""
    store = EmbeddingStore.open(config.embeddings)
    splits = [config.split] if config.split else None
    tables = {}
    for modality in store.modalities:
        table = store.read(modality, splits=splits)
        if len(table) < 2:
            continue
        z = (np.asarray(table.column(config.label).to_numpy(zero_copy_only=False), dtype=np.float64)
             if config.label in table.column_names else np.full(len(table), np.nan))
        tables[modality] = {"ids": table.column("id").to_pylist(), "vectors": _unit(table_vectors(table)), "z": z,
                            "labels": numeric_labels(table)}
    if not tables:
        raise ValueError(f"{config.embeddings}: fewer than 2 objects in every modality"
                         f"{f' of split {config.split!r}' if config.split else ''}; nothing to report")
    return store, tables


def dataset_path(config: RetrievalReportConfig, store: EmbeddingStore) -> str | None:
    return config.data or store.manifest.get("dataset", {}).get("path")


def compute_metrics(config: RetrievalReportConfig, store: EmbeddingStore | None = None,
                    tables: dict[str, dict] | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    if store is None or tables is None:
        store, tables = read_tables(config)
    data = dataset_path(config, store)
    use_raw = config.raw_baseline and data is not None and Path(data).is_dir()
    rng = np.random.default_rng(config.seed)
    metrics: dict[str, Any] = {"embeddings": str(store.path), "split": config.split, "label": config.label,
                               "max_objects": config.max_objects, "pairs": {}, "neighbours": {},
                               "neighbour_agreement": {}, "raw_baseline": data if use_raw else None}
    curves: dict[str, np.ndarray] = {}
    names = list(tables)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            ids, va, vb = _pool(tables, a, b, config.max_objects)
            if len(ids) < 2:
                continue
            pool = len(ids)
            forward, backward = true_match_ranks(va, vb), true_match_ranks(vb, va)
            curve = 0.5 * (curve_from_ranks(forward, pool) + curve_from_ranks(backward, pool))
            curves[f"{a}-{b}"] = curve
            metrics["pairs"][f"{a}-{b}"] = {
                "pool": pool,
                "top1": float(0.5 * ((forward <= 1).mean() + (backward <= 1).mean())),
                "top10": float(0.5 * ((forward <= 10).mean() + (backward <= 10).mean())),
                f"top1/{a}->{b}": float((forward <= 1).mean()), f"top1/{b}->{a}": float((backward <= 1).mean()),
                "area": float(curve.mean()), "median_rank": float(np.median(np.concatenate([forward, backward]))),
                "random": {"top1": 1 / pool, "top10": min(10, pool) / pool, "area": (pool + 1) / (2 * pool)},
            }
    for a in names:
        entry = tables[a]
        labels = {name: values[: config.max_objects] for name, values in entry.get("labels", {}).items()}
        metrics["neighbour_agreement"][a] = agreement(entry["vectors"][: config.max_objects], labels, config.seed)
        keep = np.flatnonzero(np.isfinite(entry["z"]))[: config.max_objects]
        if keep.size < 2:
            continue
        z, vectors = entry["z"][keep], entry["vectors"][keep]
        result = {"pool": int(keep.size), "embedding": neighbour_dz(vectors, z), "random": random_dz(z, rng)}
        if use_raw:
            raw = raw_features(data, [entry["ids"][i] for i in keep], a, store.manifest.get("splits", []))
            result["raw_knn"] = neighbour_dz(raw, z) if raw is not None else None
        metrics["neighbours"][a] = result
        for b in names:
            if b == a:
                continue
            other = tables[b]
            cand = np.flatnonzero(np.isfinite(other["z"]))[: config.max_objects]
            if cand.size < 2:
                continue
            row_of = {other["ids"][j]: r for r, j in enumerate(cand)}
            own = np.array([row_of.get(entry["ids"][i], -1) for i in keep])
            metrics["neighbours"][f"{a}->{b}"] = {
                "pool": int(cand.size),
                "embedding": neighbour_dz(vectors, z, other["vectors"][cand], other["z"][cand], own)}
    return metrics, curves


def _plots(folder: Path, metrics: dict[str, Any], curves: dict[str, np.ndarray]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for pair, curve in curves.items():
        ranks = np.arange(1, len(curve) + 1)
        ax.plot(ranks, curve, label=f"{pair} (area {metrics['pairs'][pair]['area']:.3f})")
    if curves:
        longest = max(len(c) for c in curves.values())
        chance = np.arange(1, longest + 1)  # random ranking: rank r within a pool of N has chance r / N
        ax.plot(chance, chance / longest, "k:", label="random")
    ax.set(xscale="log", xlabel="rank", ylabel="fraction with the true match within rank",
           title="cross-modal retrieval", ylim=(0, 1.02))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "retrieval_curves.png", dpi=120)
    plt.close(fig)

    rows = [(m, v) for m, v in metrics["neighbours"].items() if "->" not in m]
    fig, ax = plt.subplots(figsize=(6, 4))
    width, x = 0.27, np.arange(len(rows))
    for offset, key in zip((-width, 0, width), ("embedding", "raw_knn", "random"), strict=True):
        values = [v.get(key) if v.get(key) is not None else np.nan for _, v in rows]
        ax.bar(x + offset, values, width, label=key.replace("_", " "))
    ax.set_xticks(x, [m for m, _ in rows])
    ax.set(ylabel=f"median |Δ{metrics['label']}| / (1 + {metrics['label']})",
           title=f"{NEIGHBOURS} nearest neighbours' label consistency")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "label_consistency.png", dpi=120)
    plt.close(fig)
    plot_agreement(folder / "neighbour_agreement.png", metrics["neighbour_agreement"])


def write_report(config: RetrievalReportConfig) -> Path:
    """Compute the metrics and write REPORT_DIR (atomically: a temporary sibling renamed into place)."""
    out = check_report_target(config.out, config.overwrite, "retrieval report")
    store, tables = read_tables(config)
    metrics, curves = compute_metrics(config, store, tables)
    out.parent.mkdir(parents=True, exist_ok=True)
    with staged_folder(out) as staging:
        write_metrics(staging, metrics)
        _plots(staging, metrics, curves)
        # A query with its neighbours, when the raw objects can be read (the store's dataset or --data).
        plot_query_neighbours(tables, dataset_path(config, store), staging / "neighbours.png")
    return out
